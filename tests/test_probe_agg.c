/* Risk aggregation (issue 23): each aggregation against an independent computation on a known
 * sequence; config.json's aggregation keys (absent = the MVP's smoothing, bad values named by file
 * and key); the guard acting on the configured aggregation on the tiny Gemma 4 (every probe event's
 * smoothed risk recomputed from the event risks; an old config guards exactly as the MVP's window
 * mean; max_rolling_mean keeps a pause that last releases). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agg_ref.h"
#include "check.h"
#include "opencon/guard.h"

/* ---- aggregations on a known sequence ---- */

static void test_known_sequence(void) {
  const double r[] = {0.1, 0.9, 0.2, 0.8, 0.95, 0.05, 0.5, 0.0, 0.0, 0.0, 1.0};
  const int n = (int)(sizeof r / sizeof r[0]);
  for (int k = OC_AGG_LAST; k <= OC_AGG_MAX_ROLLING_MEAN; k++) {
    for (int w = 1; w <= 5; w += 2) {
      oc_probe_config c;
      oc_probe_config_defaults(&c);
      c.aggregation = (oc_aggregation)k;
      c.smoothing_window = w;         /* last */
      c.aggregation_window = w;       /* rolling_mean, max_rolling_mean */
      c.aggregation_alpha = 0.3;      /* ema */
      oc_risk_agg a;
      oc_error err;
      REQUIRE(oc_risk_agg_init(&a, &c, &err) == 0, "%s", err.msg);
      double worst = 0;
      for (int pass = 0; pass < 2; pass++) { /* after a reset it starts over */
        for (int t = 0; t < n; t++) {
          double got = oc_risk_agg_push(&a, r[t]), want = ref((oc_aggregation)k, r, t, w, 0.3);
          if (fabs(got - want) > worst) worst = fabs(got - want);
        }
        oc_risk_agg_reset(&a);
      }
      CHECK(worst < 1e-12, "%s window %d: max deviation from the reference %g", oc_aggregation_name((oc_aggregation)k), w, worst);
      oc_risk_agg_free(&a);
    }
  }
  /* max_rolling_mean stays at its peak: window 2 peaks at (0.8 + 0.95) / 2 after the fifth reading */
  oc_probe_config c;
  oc_probe_config_defaults(&c);
  c.aggregation = OC_AGG_MAX_ROLLING_MEAN;
  c.aggregation_window = 2;
  oc_risk_agg a;
  oc_error err;
  REQUIRE(oc_risk_agg_init(&a, &c, &err) == 0, "%s", err.msg);
  double v = 0;
  for (int t = 0; t < 8; t++) v = oc_risk_agg_push(&a, r[t]);
  CHECK(fabs(v - 0.875) < 1e-15, "max_rolling_mean after the peak: %.17g", v);
  oc_risk_agg_free(&a);
  /* names round-trip; an unknown name is refused */
  oc_aggregation g;
  for (int k = OC_AGG_LAST; k <= OC_AGG_MAX_ROLLING_MEAN; k++)
    CHECK(oc_aggregation_parse(oc_aggregation_name((oc_aggregation)k), &g) == 0 && (int)g == k, "name %d round trip", k);
  CHECK(oc_aggregation_parse("median", &g) == -1 && oc_aggregation_parse("", &g) == -1 && oc_aggregation_parse("LAST", &g) == -1, "unknown names refused");
}

/* ---- config.json ---- */

static char TMP[256];

static void write_config(const char *name, const char *extra) {
  char path[512], text[2048];
  snprintf(path, sizeof path, "%s/%s", TMP, name);
  snprintf(text, sizeof text, "{\"model_id\": \"tiny\", \"layer\": -4, \"smoothing_window\": 3, \"probe_every_n_tokens\": 1%s}", extra);
  FILE *f = fopen(path, "w");
  REQUIRE(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
}

static int load_config(const char *name, oc_probe_config *c, oc_error *err) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", TMP, name);
  return oc_probe_config_load(path, c, err);
}

static void test_config(void) {
  oc_probe_config c;
  oc_error err;
  write_config("old.json", "");
  REQUIRE(load_config("old.json", &c, &err) == 0, "%s", err.msg);
  CHECK(c.aggregation == OC_AGG_LAST && c.smoothing_window == 3 && c.aggregation_window == 3 && c.aggregation_alpha == 0.5,
        "an old config: last over its smoothing window (%s, %d)", oc_aggregation_name(c.aggregation), c.aggregation_window);
  oc_probe_config_free(&c);
  write_config("mrm.json", ", \"aggregation\": \"max_rolling_mean\", \"aggregation_window\": 7");
  REQUIRE(load_config("mrm.json", &c, &err) == 0, "%s", err.msg);
  CHECK(c.aggregation == OC_AGG_MAX_ROLLING_MEAN && c.aggregation_window == 7, "max_rolling_mean, window 7");
  oc_probe_config_free(&c);
  write_config("ema.json", ", \"aggregation\": \"ema\", \"aggregation_alpha\": 1");
  REQUIRE(load_config("ema.json", &c, &err) == 0, "%s", err.msg);
  CHECK(c.aggregation == OC_AGG_EMA && c.aggregation_alpha == 1.0, "ema, alpha 1");
  oc_probe_config_free(&c);
  static const struct { const char *extra, *key; } bad[] = {
      {", \"aggregation\": \"median\"", "\"aggregation\""},        {", \"aggregation\": 1", "\"aggregation\""},
      {", \"aggregation\": \"\"", "\"aggregation\""},              {", \"aggregation_window\": 0", "\"aggregation_window\""},
      {", \"aggregation_window\": 4097", "\"aggregation_window\""}, {", \"aggregation_window\": 2.5", "\"aggregation_window\""},
      {", \"aggregation_window\": -1e300", "\"aggregation_window\""}, {", \"aggregation_window\": \"4\"", "\"aggregation_window\""},
      {", \"aggregation_alpha\": 0", "\"aggregation_alpha\""},     {", \"aggregation_alpha\": 1.0000001", "\"aggregation_alpha\""},
      {", \"aggregation_alpha\": -0.5", "\"aggregation_alpha\""},  {", \"aggregation_alpha\": \"0.5\"", "\"aggregation_alpha\""},
      {", \"aggregation\": \"ema\", \"aggregation_alpha\": 0", "\"aggregation_alpha\""},
      {", \"aggregation\": \"rolling_mean\", \"aggregation_window\": 0", "\"aggregation_window\""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_config("bad.json", bad[i].extra);
    int rc = load_config("bad.json", &c, &err);
    CHECK(rc == -1 && strstr(err.msg, "bad.json") && strstr(err.msg, bad[i].key), "bad config%s refused naming file and key: %s", bad[i].extra,
          rc ? err.msg : "(loaded)");
    if (!rc) oc_probe_config_free(&c);
  }
  /* a hand-built config is checked the same way */
  oc_probe_config_defaults(&c);
  c.aggregation = OC_AGG_ROLLING_MEAN;
  c.aggregation_window = 0;
  CHECK(oc_probe_config_check(&c, "here", &err) == -1 && strstr(err.msg, "aggregation_window"), "check: window 0");
  c.aggregation = OC_AGG_EMA;
  c.aggregation_alpha = NAN;
  CHECK(oc_probe_config_check(&c, "here", &err) == -1 && strstr(err.msg, "aggregation_alpha"), "check: alpha NaN");
  c.aggregation = (oc_aggregation)7;
  CHECK(oc_probe_config_check(&c, "here", &err) == -1 && strstr(err.msg, "aggregation"), "check: unknown aggregation");
}

/* ---- the guard ---- */

static oc_model *M;
static oc_chat *CH;
static const char *PROMPT = "How do I bake bread at home?";
enum { MAXNEW = 12, MAXEV = 64 };

/* the tokens a quiet guard generates, then the probe layer's hidden state at each of them from one
 * pass over prompt + tokens (the guard reads token k's state at step k) */
static int generated_states(float *hs, int layer) {
  oc_error err;
  const int H = oc_model_cfg(M)->hidden;
  float *zero = calloc((size_t)H, sizeof(float));
  oc_probe quiet = {H, zero, -10.0f};
  oc_probe_config c;
  oc_probe_config_defaults(&c);
  c.model_id = (char *)"tiny";
  oc_guard *g;
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = MAXNEW;
  oc_guard_result r;
  REQUIRE(zero && oc_guard_new(M, CH, &quiet, &c, NULL, &g, &err) == 0 && oc_guard_generate(g, PROMPT, &o, NULL, NULL, NULL, &r, &err) == 0, "%s", err.msg);
  char *text;
  oc_encoding e;
  REQUIRE(oc_chat_format_exchange(CH, PROMPT, NULL, 1, &text, &err) == 0 && oc_chat_encode(CH, text, 0, 0, &e, &err) == 0, "%s", err.msg);
  const int n = r.n_tokens, total = e.n + n;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)total);
  int *pos = malloc(sizeof(int) * (size_t)(n ? n : 1));
  memcpy(ids, e.ids, sizeof(int32_t) * (size_t)e.n);
  memcpy(ids + e.n, r.tokens, sizeof(int32_t) * (size_t)n);
  for (int k = 0; k < n; k++) pos[k] = e.n + k;
  oc_taps taps = {1, &layer, n, pos, hs};
  oc_session *s = oc_session_new(M, total, &err);
  REQUIRE(s && oc_forward(s, ids, total, &taps, NULL, 0, &err) == 0, "%s", err.msg);
  oc_session_free(s);
  oc_guard_result_free(&r);
  oc_guard_free(g);
  oc_encoding_free(&e);
  free(text); free(ids); free(pos); free(zero);
  return n;
}

typedef struct { int n; int step[MAXEV]; double risk[MAXEV], sm[MAXEV]; char dec[MAXEV][16]; char all[16384]; } events;
static void on_event(void *ud, const char *json) {
  events *e = ud;
  strncat(e->all, json, sizeof e->all - strlen(e->all) - 1);
  cJSON *j = cJSON_Parse(json);
  const cJSON *ev = cJSON_GetObjectItem(j, "event");
  if (cJSON_IsString(ev) && strcmp(ev->valuestring, "probe") == 0 && e->n < MAXEV) {
    e->step[e->n] = cJSON_GetObjectItem(j, "step")->valueint;
    e->risk[e->n] = cJSON_GetObjectItem(j, "risk")->valuedouble;
    e->sm[e->n] = cJSON_GetObjectItem(j, "smoothed_risk")->valuedouble;
    snprintf(e->dec[e->n], sizeof e->dec[e->n], "%s", cJSON_GetObjectItem(j, "decision")->valuestring);
    e->n++;
  }
  cJSON_Delete(j);
}

/* the guard in observe mode (every reading taken, nothing stopped), no classifier */
static void guard_run(const oc_probe *p, const oc_probe_config *c, events *e, oc_guard_result *r) {
  oc_guard *g;
  oc_error err;
  REQUIRE(oc_guard_new(M, CH, p, c, NULL, &g, &err) == 0, "%s", err.msg);
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = MAXNEW;
  o.observe = 1;
  memset(e, 0, sizeof *e);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, NULL, on_event, e, r, &err) == 0, "%s", err.msg);
  oc_guard_free(g);
}

static void test_guard(const char *pt_path) {
  oc_error err;
  const int H = oc_model_cfg(M)->hidden;
  float *hs = malloc(sizeof(float) * MAXNEW * (size_t)H);
  int ntok = generated_states(hs, -4);
  REQUIRE(ntok >= 8, "the tiny model must generate at least 8 tokens (got %d)", ntok);

  /* an old probe directory (the MVP's probe.pt, a config without aggregation keys) guards with the
   * MVP's window mean: every smoothed risk is the mean of the last 3 risks; naming "last" changes nothing */
  oc_probe mvp;
  REQUIRE(oc_probe_load(pt_path, &mvp, &err) == 0, "%s", err.msg);
  REQUIRE(mvp.hidden == H, "the MVP probe reads %d features", mvp.hidden);
  oc_probe_config old, named;
  write_config("old.json", "");
  write_config("named.json", ", \"aggregation\": \"last\", \"aggregation_window\": 9, \"aggregation_alpha\": 0.1");
  REQUIRE(load_config("old.json", &old, &err) == 0 && load_config("named.json", &named, &err) == 0, "%s", err.msg);
  static events e1, e2;
  oc_guard_result r1, r2;
  guard_run(&mvp, &old, &e1, &r1);
  guard_run(&mvp, &named, &e2, &r2);
  double worst = 0;
  for (int i = 0; i < e1.n; i++) worst = fmax(worst, fabs(e1.sm[i] - ref_mean(e1.risk, i, 3)));
  CHECK(e1.n == ntok && worst < 1e-9, "old config: %d readings, smoothed = mean of the last 3 risks (max deviation %g)", e1.n, worst);
  CHECK(strcmp(e1.all, e2.all) == 0 && r1.status == r2.status && r1.max_risk == r2.max_risk && r1.probe_calls == r2.probe_calls,
        "an explicit \"last\" guards exactly as the old config");
  oc_guard_result_free(&r1);
  oc_guard_result_free(&r2);

  /* every aggregation: each event's smoothed risk is the reference aggregate of the event risks */
  for (int k = OC_AGG_LAST; k <= OC_AGG_MAX_ROLLING_MEAN; k++) {
    oc_probe_config c = old;
    c.aggregation = (oc_aggregation)k;
    c.aggregation_window = 2;
    c.aggregation_alpha = 0.25;
    guard_run(&mvp, &c, &e2, &r2);
    worst = 0;
    for (int i = 0; i < e2.n; i++) worst = fmax(worst, fabs(e2.sm[i] - ref((oc_aggregation)k, e2.risk, i, k == OC_AGG_LAST ? 3 : 2, 0.25)));
    CHECK(e2.n == ntok && worst < 1e-9, "guard with %s: smoothed risks match the reference (max deviation %g)", oc_aggregation_name((oc_aggregation)k), worst);
    double mx = -1;
    for (int i = 0; i < e2.n; i++) mx = fmax(mx, e2.sm[i]);
    /* (the events' values come through JSON: cJSON prints 15 significant digits when they read back
     * within its own epsilon, so they may differ from the double in the last place) */
    CHECK(fabs(r2.max_risk - mx) <= 1e-14, "guard with %s: max_risk is the highest aggregate (%.17g vs %.17g)",
          oc_aggregation_name((oc_aggregation)k), r2.max_risk, mx);
    oc_guard_result_free(&r2);
  }

  /* falls: high at the step-4 token (logit +5), low at the step-8 token (-5), probed every 4 tokens.
   * last (window 1) pauses at 4 and releases at 8; max_rolling_mean (window 1) still pauses at 8. */
  float *w = malloc(sizeof(float) * (size_t)H);
  double d2 = 0, dot8 = 0;
  for (int j = 0; j < H; j++) { double d = hs[3 * H + j] - hs[7 * H + j]; d2 += d * d; }
  for (int j = 0; j < H; j++) { w[j] = (float)(10.0 * (hs[3 * H + j] - hs[7 * H + j]) / d2); dot8 += w[j] * hs[7 * H + j]; }
  oc_probe falls = {H, w, (float)(-dot8 - 5.0)};
  oc_probe_config c = old;
  c.probe_every_n_tokens = 4;
  c.smoothing_window = 1;
  guard_run(&falls, &c, &e1, &r1);
  c.aggregation = OC_AGG_MAX_ROLLING_MEAN;
  c.aggregation_window = 1;
  guard_run(&falls, &c, &e2, &r2);
  CHECK(e1.n >= 2 && e1.step[0] == 4 && e1.step[1] == 8 && strcmp(e1.dec[0], "pause") == 0 && strcmp(e1.dec[1], "release") == 0,
        "last: pause at step 4 (%.3f), release at step 8 (%.3f)", e1.sm[0], e1.n > 1 ? e1.sm[1] : NAN);
  CHECK(e2.n >= 2 && strcmp(e2.dec[0], "pause") == 0 && strcmp(e2.dec[1], "pause") == 0 && e2.sm[1] == e2.sm[0] && e2.risk[1] < 0.01,
        "max_rolling_mean: still paused at step 8 (risk %.4f, aggregate %.3f)", e2.n > 1 ? e2.risk[1] : NAN, e2.n > 1 ? e2.sm[1] : NAN);
  oc_guard_result_free(&r1);
  oc_guard_result_free(&r2);

  /* fail closed under every aggregation: an overflowing logit blocks at the first reading */
  for (int j = 0; j < H; j++) w[j] = 3e38f;
  oc_probe huge = {H, w, 0};
  for (int k = OC_AGG_LAST; k <= OC_AGG_MAX_ROLLING_MEAN; k++) {
    c.aggregation = (oc_aggregation)k;
    c.aggregation_window = 3;
    oc_guard *g;
    REQUIRE(oc_guard_new(M, CH, &huge, &c, NULL, &g, &err) == 0, "%s", err.msg);
    oc_guard_opts o;
    oc_guard_opts_defaults(&o);
    o.max_new_tokens = MAXNEW;
    REQUIRE(oc_guard_generate(g, PROMPT, &o, NULL, NULL, NULL, &r1, &err) == 0, "%s", err.msg);
    CHECK(r1.status == OC_GUARD_BLOCKED && r1.stop_reason == OC_STOP_NONFINITE && r1.n_tokens == 4 && r1.nonfinite == 1,
          "%s: a non-finite reading blocks (%s after %d tokens)", oc_aggregation_name((oc_aggregation)k), oc_guard_status_name(r1.status), r1.n_tokens);
    oc_guard_result_free(&r1);
    oc_guard_free(g);
  }
  free(w);
  oc_probe_config_free(&old);
  oc_probe_config_free(&named);
  oc_probe_free(&mvp);
  free(hs);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_probe_agg MODEL_DIR TORCH_PROBE_PT");
  oc_set_threads(2);
  snprintf(TMP, sizeof TMP, "/tmp/oc_probe_agg_XXXXXX");
  REQUIRE(mkdtemp(TMP), "mkdtemp");
  test_known_sequence();
  test_config();
  oc_error err;
  REQUIRE(oc_model_load(argv[1], &M, &err) == 0 && oc_chat_load(argv[1], &CH, &err) == 0, "%s", err.msg);
  test_guard(argv[2]);
  oc_chat_free(CH);
  oc_model_free(M);
  remove_tmpdir(TMP);
  printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
