/* Probes over several layers (issue 23): fitting concat and mean probes (against independent
 * computations), their config.json (round trip, hostile values, old configs unchanged), the
 * --combinations list, the guard tapping every probe layer in one forward step (its risk against an
 * independent forward pass, width and depth mismatches refused at open, a non-finite logit
 * blocking), and train-probe --layers / sweep-layers --combinations through the CLI on data whose
 * signal is known (unsafe responses end with a trigger word); token-level losses (uniform, ramp,
 * cummax) against their definitions and finite differences, and a cummax token probe detecting a
 * trigger at its token. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/guard.h"
#include "opencon/probe.h"

static const char *cli, *e2e;
static char tmp[256], mdir[512];
static char out[1 << 17];
#define run(...) run_in(tmp, out, sizeof out, __VA_ARGS__)
#define path(name) path_in(tmp, name)
#define stderr_text() stderr_in(tmp)

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* synthetic activations: 3 layers of width H; the label is carried by feature 1 of layer index 1
 * (scaled by 1000, as deep layers are) and nothing else */
static void synthetic(oc_activations *a, int n, int H) {
  memset(a, 0, sizeof *a);
  a->n = n;
  a->hidden = H;
  a->n_layers = 3;
  a->n_hidden_states = 11;
  a->layers = malloc(sizeof(int) * 3);
  a->layers[0] = -1; a->layers[1] = -2; a->layers[2] = -4;
  a->X = malloc(sizeof(float *) * 3);
  a->y = malloc(sizeof(int32_t) * (size_t)n);
  oc_rng r;
  oc_rng_seed(&r, 7);
  for (int i = 0; i < n; i++) a->y[i] = i % 2;
  for (int l = 0; l < 3; l++) {
    a->X[l] = malloc(sizeof(float) * (size_t)n * H);
    for (int i = 0; i < n; i++)
      for (int j = 0; j < H; j++) a->X[l][(size_t)i * H + j] = (float)(2 * oc_rng_uniform(&r) - 1) * (l == 1 ? 1000.0f : 1.0f);
  }
  for (int i = 0; i < n; i++) a->X[1][(size_t)i * H + 1] += a->y[i] ? 5000.0f : -5000.0f;
}

static void free_synthetic(oc_activations *a) {
  for (int l = 0; l < 3; l++) free(a->X[l]);
  free(a->X); free(a->y); free(a->layers);
}

static void test_fit(void) {
  const int n = 60, H = 8;
  oc_activations a;
  synthetic(&a, n, H);
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  t.epochs = 100;
  t.lr = 0.02;
  oc_error err;
  oc_probe_fit one, single, cat, mean, bad;
  int lis[3] = {0, 1, 2};
  /* one layer through oc_probe_fit_layers is oc_probe_fit_layer, bit for bit */
  REQUIRE(oc_probe_fit_layer(&a, 1, 0.2, 3, 0.01, &t, &one, NULL, &err) == 0, "%s", err.msg);
  REQUIRE(oc_probe_fit_layers(&a, lis + 1, 1, OC_COMBINE_MEAN, 0.2, 3, 0.01, &t, &single, NULL, &err) == 0, "%s", err.msg);
  CHECK(single.probe.hidden == H && memcmp(one.probe.w, single.probe.w, sizeof(float) * H) == 0 && one.probe.b == single.probe.b &&
            one.val.roc_auc == single.val.roc_auc,
        "one layer: exactly the single-layer fit");
  /* concat: oc_probe_train on the rows concatenated by hand, standardized */
  REQUIRE(oc_probe_fit_layers(&a, lis, 3, OC_COMBINE_CONCAT, 0.2, 3, 0.01, &t, &cat, NULL, &err) == 0, "%s", err.msg);
  float *X = malloc(sizeof(float) * (size_t)n * 3 * H);
  for (int i = 0; i < n; i++)
    for (int l = 0; l < 3; l++) memcpy(X + (size_t)i * 3 * H + l * H, a.X[l] + (size_t)i * H, sizeof(float) * H);
  int64_t *tr, *va;
  int nt, nv;
  REQUIRE(oc_stratified_split(a.y, n, 0.2, 3, &tr, &nt, &va, &nv, &err) == 0, "%s", err.msg);
  oc_probe_train_opts ts = t;
  ts.standardize = 1;
  oc_probe ref;
  REQUIRE(oc_probe_train(X, 3 * H, a.y, tr, nt, &ts, &ref, NULL, NULL, &err) == 0, "%s", err.msg);
  CHECK(cat.probe.hidden == 3 * H && memcmp(ref.w, cat.probe.w, sizeof(float) * 3 * H) == 0 && ref.b == cat.probe.b && cat.n_train == nt && cat.n_val == nv,
        "concat: one standardized probe over [layer -1 | layer -2 | layer -4]");
  CHECK(cat.val.roc_auc == 1.0 && cat.val.accuracy == 1.0, "concat finds the signal of layer -2 (held-out auc %g)", cat.val.roc_auc);
  /* its held-out metrics score the concatenated rows, as the guard does */
  float s[64];
  int32_t yy[64];
  for (int i = 0; i < nv; i++) { s[i] = oc_sigmoid(oc_probe_logit(&cat.probe, X + (size_t)va[i] * 3 * H)); yy[i] = a.y[va[i]]; }
  oc_metrics m;
  oc_binary_metrics(s, yy, nv, 0.01, &m);
  CHECK(m.roc_auc == cat.val.roc_auc && m.accuracy == cat.val.accuracy && m.threshold_at_fpr == cat.val.threshold_at_fpr, "concat metrics reproduce");
  /* mean: per-layer probes (each trained alone with the same settings), logits averaged */
  REQUIRE(oc_probe_fit_layers(&a, lis, 3, OC_COMBINE_MEAN, 0.2, 3, 0.01, &t, &mean, NULL, &err) == 0, "%s", err.msg);
  double worst = 0;
  oc_probe pl[3];
  for (int l = 0; l < 3; l++) REQUIRE(oc_probe_train(a.X[l], H, a.y, tr, nt, &t, &pl[l], NULL, NULL, &err) == 0, "%s", err.msg);
  for (int i = 0; i < nv; i++) {
    double want = 0;
    for (int l = 0; l < 3; l++) want += (double)oc_probe_logit(&pl[l], a.X[l] + (size_t)va[i] * H) / 3;
    double got = oc_probe_logit(&mean.probe, X + (size_t)va[i] * 3 * H);
    worst = fmax(worst, fabs(got - want) / (1 + fabs(want)));
  }
  for (int l = 0; l < 3; l++) oc_probe_free(&pl[l]);
  CHECK(mean.probe.hidden == 3 * H && worst < 1e-5, "mean: the logit is the mean of the per-layer probes' logits (worst relative difference %.2g)", worst);
  /* refused: a layer twice, no combination for several layers, too many layers */
  int twice[2] = {1, 1};
  CHECK(oc_probe_fit_layers(&a, twice, 2, OC_COMBINE_CONCAT, 0.2, 3, 0.01, &t, &bad, NULL, &err) != 0 && strstr(err.msg, "twice"), "a layer twice: %s", err.msg);
  CHECK(oc_probe_fit_layers(&a, lis, 2, OC_COMBINE_NONE, 0.2, 3, 0.01, &t, &bad, NULL, &err) != 0 && strstr(err.msg, "concat or mean"), "no combine: %s", err.msg);
  CHECK(oc_probe_fit_layers(&a, lis, OC_PROBE_MAX_LAYERS + 1, OC_COMBINE_MEAN, 0.2, 3, 0.01, &t, &bad, NULL, &err) != 0, "too many layers: %s", err.msg);
  CHECK(oc_probe_fit_steps(n, 3, OC_COMBINE_MEAN, &t) == 3 * oc_probe_fit_steps(n, 3, OC_COMBINE_CONCAT, &t), "mean trains a probe per layer");
  oc_probe_free(&ref);
  free(X); free(tr); free(va);
  oc_probe_fit_free(&one); oc_probe_fit_free(&single); oc_probe_fit_free(&cat); oc_probe_fit_free(&mean);
  free_synthetic(&a);
}

static const char *write_tmp(const char *name, const char *text) {
  FILE *f = fopen(path(name), "w");
  fputs(text, f);
  fclose(f);
  return path(name);
}

static void test_config(void) {
  oc_probe_config c;
  oc_error err;
  /* an old config (no "layers"): one layer, as before */
  REQUIRE(oc_probe_config_load(write_tmp("old.json", "{\"model_id\": \"m\", \"layer\": -6, \"hidden_size\": 64}"), &c, &err) == 0, "%s", err.msg);
  const int *ls;
  CHECK(c.n_layers == 0 && !c.layers && c.combine == OC_COMBINE_NONE && c.layer == -6 && oc_probe_config_layers(&c, &ls) == 1 && ls[0] == -6,
        "old config: the single layer");
  oc_probe_config_free(&c);
  REQUIRE(oc_probe_config_load(write_tmp("new.json", "{\"model_id\": \"m\", \"layers\": [-2, -8, 3], \"combine\": \"mean\"}"), &c, &err) == 0, "%s", err.msg);
  CHECK(c.n_layers == 3 && c.layers[1] == -8 && c.layers[2] == 3 && c.combine == OC_COMBINE_MEAN && c.layer == -2 && oc_probe_config_layers(&c, &ls) == 3 &&
            ls == c.layers,
        "layers and combine (layer = the first)");
  oc_probe_config_free(&c);
  static const struct { const char *json, *want; } bad[] = {
      {"{\"model_id\": \"m\", \"combine\": \"concat\"}", "without \"layers\""},
      {"{\"model_id\": \"m\", \"layers\": [-1, -2]}", "\"combine\" must be"},
      {"{\"model_id\": \"m\", \"layers\": [-1, -2], \"combine\": \"sum\"}", "\"combine\" must be"},
      {"{\"model_id\": \"m\", \"layers\": [-1, -2], \"combine\": 1}", "\"combine\" must be"},
      {"{\"model_id\": \"m\", \"layers\": [], \"combine\": \"mean\"}", "array of 1 to"},
      {"{\"model_id\": \"m\", \"layers\": -1, \"combine\": \"mean\"}", "array of 1 to"},
      {"{\"model_id\": \"m\", \"layers\": [-1, 2.5], \"combine\": \"mean\"}", "item 2"},
      {"{\"model_id\": \"m\", \"layers\": [-1, \"2\"], \"combine\": \"mean\"}", "item 2"},
      {"{\"model_id\": \"m\", \"layers\": [-1, 1e9], \"combine\": \"mean\"}", "item 2"},
      {"{\"model_id\": \"m\", \"layers\": [-1, -1], \"combine\": \"mean\"}", "twice"},
      {"{\"model_id\": \"m\", \"layer\": -4, \"layers\": [-1, -2], \"combine\": \"mean\"}", "starts with -1"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK(oc_probe_config_load(write_tmp("bad.json", bad[i].json), &c, &err) != 0 && strstr(err.msg, bad[i].want) && strstr(err.msg, "bad.json"),
          "refused %s: %s", bad[i].json, err.msg);
  char big[2048] = "{\"model_id\": \"m\", \"combine\": \"concat\", \"layers\": [0";
  for (int k = 1; k <= OC_PROBE_MAX_LAYERS; k++) snprintf(big + strlen(big), sizeof big - strlen(big), ",%d", k);
  strcat(big, "]}");
  CHECK(oc_probe_config_load(write_tmp("bad.json", big), &c, &err) != 0 && strstr(err.msg, "array of 1 to"), "65 layers refused: %s", err.msg);
  /* a multi-layer artifact round trip; a config the guard would refuse is never written */
  oc_probe p = {3 * 4, calloc(12, sizeof(float)), 0.5f};
  oc_probe_config w;
  oc_probe_config_defaults(&w);
  int layers[3] = {-1, -3, -5};
  w.model_id = "m";
  w.hidden_size = 4;
  w.layer = -1;
  w.n_layers = 3;
  w.layers = layers;
  w.combine = OC_COMBINE_CONCAT;
  oc_probe_fit fit = {0};
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  oc_probe_provenance pv = {.fit = &fit, .train = &t, .validation_size = 0.2, .target_fpr = 0.01, .max_length = 90, .data_path = "d.jsonl"};
  REQUIRE(oc_probe_artifact_save(path("multi"), &p, &w, &pv, &err) == 0, "%s", err.msg);
  REQUIRE(oc_probe_config_load(path("multi/config.json"), &c, &err) == 0, "%s", err.msg);
  CHECK(c.n_layers == 3 && c.layers[0] == -1 && c.layers[2] == -5 && c.combine == OC_COMBINE_CONCAT && c.layer == -1 && c.hidden_size == 4,
        "a multi-layer config.json loads back");
  oc_probe_config_free(&c);
  w.layers[1] = -1;
  CHECK(oc_probe_artifact_save(path("multi2"), &p, &w, &pv, &err) != 0 && strstr(err.msg, "twice") && access(path("multi2"), F_OK) != 0,
        "a layer twice: nothing written (%s)", err.msg);
  free(p.w);
}

static void test_groups(void) {
  int *l, *s, n;
  oc_error err;
  REQUIRE(oc_parse_layer_groups("-4,-8;-4,-8,-12;3", &l, &s, &n, &err) == 0, "%s", err.msg);
  CHECK(n == 3 && s[0] == 2 && s[1] == 3 && s[2] == 1 && l[0] == -4 && l[1] == -8 && l[4] == -12 && l[5] == 3, "three groups");
  free(l); free(s);
  static const struct { const char *s, *want; } bad[] = {
      {"", "group 1 is empty"},          {";-4", "group 1 is empty"},  {"-4;", "group 2 is empty"}, {"-4;;-8", "group 2 is empty"},
      {"-4,-8,", "item 3 is empty"},     {"-4, -8", "not an integer"}, {"-4,-4", "twice"},          {"-4;200000", "[-100000, 100000]"},
      {"1,2;x", "group 2"},              {"99999999999999999999", "out of range"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK(oc_parse_layer_groups(bad[i].s, &l, &s, &n, &err) != 0 && strstr(err.msg, bad[i].want) && !l && !s && n == 0, "\"%s\" refused: %s", bad[i].s,
          err.msg);
  char many[4096] = "0";
  for (int k = 1; k <= 256; k++) strcat(many, ";1");
  CHECK(oc_parse_layer_groups(many, &l, &s, &n, &err) != 0 && strstr(err.msg, "256"), "257 groups refused: %s", err.msg);
}

/* guard events: the risk of each "probe" reading by step */
typedef struct { double risk[64]; int n; } readings;
static void on_event(void *ud, const char *json) {
  readings *r = ud;
  cJSON *j = cJSON_Parse(json);
  const cJSON *e = cJSON_GetObjectItem(j, "event");
  if (e && strcmp(e->valuestring, "probe") == 0 && r->n < 64) r->risk[r->n++] = num(j, "risk");
  cJSON_Delete(j);
}
static void no_emit(void *ud, const char *t, size_t n) { (void)ud; (void)t; (void)n; }

/* the hidden states [n_hidden_states][T][H] of the guarded sequence (the prompt as the guard
 * formats it, then the generated tokens) from one independent forward pass */
static float *independent_states(const oc_model *m, const oc_chat *ch, const char *prompt, const oc_guard_result *r, int *n_prompt) {
  oc_error err;
  char *text;
  oc_encoding e;
  REQUIRE(oc_chat_format_exchange(ch, prompt, NULL, 1, &text, &err) == 0 && oc_chat_encode(ch, text, 0, 0, &e, &err) == 0, "%s", err.msg);
  free(text);
  const oc_model_config *c = oc_model_cfg(m);
  const int T = e.n + r->n_tokens, S = c->n_layers + 1;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
  memcpy(ids, e.ids, sizeof(int32_t) * (size_t)e.n);
  memcpy(ids + e.n, r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
  int *all = malloc(sizeof(int) * (size_t)S);
  for (int l = 0; l < S; l++) all[l] = l;
  float *hs = malloc(sizeof(float) * (size_t)S * T * c->hidden);
  oc_session *s = oc_session_new(m, T, &err);
  oc_taps taps = {S, all, 0, NULL, hs};
  REQUIRE(s && oc_forward(s, ids, T, &taps, NULL, 0, &err) == 0, "%s", err.msg);
  oc_session_free(s);
  *n_prompt = e.n;
  free(ids); free(all);
  oc_encoding_free(&e);
  return hs;
}

static void test_guard(void) {
  oc_error err;
  oc_model *m;
  oc_chat *ch;
  REQUIRE(oc_model_load(mdir, &m, &err) == 0 && oc_chat_load(mdir, &ch, &err) == 0, "%s", err.msg);
  const oc_model_config *c = oc_model_cfg(m);
  const int H = c->hidden, S = c->n_layers + 1, L = 3;
  int layers[3] = {-1, -4, 2}, res[3] = {S - 1, S - 4, 2};
  oc_probe p = {L * H, malloc(sizeof(float) * L * H), -0.25f};
  oc_rng r;
  oc_rng_seed(&r, 11);
  for (int j = 0; j < L * H; j++) p.w[j] = (float)(oc_rng_uniform(&r) - 0.5) * 0.2f;
  oc_probe_config pc;
  oc_probe_config_defaults(&pc);
  pc.model_id = mdir;
  pc.layer = -1;
  pc.n_layers = L;
  pc.layers = layers;
  pc.combine = OC_COMBINE_CONCAT;
  oc_guard *g;
  REQUIRE(oc_guard_new(m, ch, &p, &pc, NULL, &g, &err) == 0, "%s", err.msg);
  const int *gl;
  CHECK(oc_guard_probe_layers(g, &gl) == 3 && gl[0] == res[0] && gl[1] == res[1] && gl[2] == res[2] && oc_guard_probe_layer(g) == res[0],
        "the guard resolves the probe's layers in order");
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = 12;
  o.observe = 1; /* every reading, whatever the risk */
  readings rd = {{0}, 0};
  oc_guard_result gr;
  const char *prompt = "Tell me about layers";
  REQUIRE(oc_guard_generate(g, prompt, &o, no_emit, on_event, &rd, &gr, &err) == 0, "%s", err.msg);
  int np;
  float *hs = independent_states(m, ch, prompt, &gr, &np);
  const int T = np + gr.n_tokens;
  /* reading k (every 4 tokens) reads the hidden states of generated token 4k: position np + 4k - 1 */
  double worst = 0, swapped = INFINITY;
  float *row = malloc(sizeof(float) * L * H), *rev = malloc(sizeof(float) * L * H);
  for (int k = 0; k < rd.n; k++) {
    const int pos = np + 4 * (k + 1) - 1;
    for (int l = 0; l < L; l++) {
      memcpy(row + l * H, hs + ((size_t)res[l] * T + pos) * H, sizeof(float) * H);
      memcpy(rev + (L - 1 - l) * H, hs + ((size_t)res[l] * T + pos) * H, sizeof(float) * H);
    }
    const double want = oc_sigmoid(oc_probe_logit(&p, row)), other = oc_sigmoid(oc_probe_logit(&p, rev));
    worst = fmax(worst, fabs(rd.risk[k] - want));
    swapped = fmin(swapped, fabs(rd.risk[k] - other));
  }
  CHECK(rd.n == 3 && gr.probe_calls == 3 && worst < 1e-5, "guard risk == sigmoid(w . [h_-1 | h_-4 | h_2] + b) of an independent forward pass (%d readings, worst %.2g)", rd.n,
        worst);
  CHECK(swapped > 1e-3, "the layers' order matters to the check (the reversed order is %.2g away)", swapped);
  /* a logit that overflows at the first reading blocks (fail closed) */
  const int pos0 = np + 3;
  oc_probe inf = {L * H, malloc(sizeof(float) * L * H), 0};
  for (int l = 0; l < L; l++)
    for (int j = 0; j < H; j++) inf.w[l * H + j] = hs[((size_t)res[l] * T + pos0) * H + j] >= 0 ? 3e38f : -3e38f;
  oc_guard *gi;
  oc_guard_result ir;
  REQUIRE(oc_guard_new(m, ch, &inf, &pc, NULL, &gi, &err) == 0, "%s", err.msg);
  o.observe = 0;
  rd.n = 0;
  REQUIRE(oc_guard_generate(gi, prompt, &o, no_emit, on_event, &rd, &ir, &err) == 0, "%s", err.msg);
  CHECK(ir.status == OC_GUARD_BLOCKED && ir.stop_reason == OC_STOP_NONFINITE && ir.probe_calls == 1, "a non-finite multi-layer logit blocks (%s, %s)",
        oc_guard_status_name(ir.status), oc_stop_reason_name(ir.stop_reason));
  oc_guard_result_free(&ir);
  oc_guard_free(gi);
  free(inf.w);
  /* a caller feeding one layer's row to a multi-layer stream is refused, nothing released */
  oc_guard_stream *st;
  int32_t ids[3] = {2, 100, 112};
  REQUIRE(oc_guard_stream_new(g, ids, 3, "x", NULL, &o, no_emit, NULL, NULL, &st, &err) == 0, "%s", err.msg);
  REQUIRE(oc_guard_stream_prefill(st, 0, &err) == 0 && oc_guard_stream_need(st) == OC_NEED_FORWARD, "%s", err.msg);
  float *logits = calloc((size_t)c->vocab, sizeof(float));
  CHECK(oc_guard_stream_fed(st, logits, row, &err) != 0 && err.code == OC_ERR_UNSUPPORTED && strstr(err.msg, "3 layers"), "oc_guard_stream_fed on a 3-layer probe: %s",
        err.msg);
  oc_guard_stream_free(st);
  free(logits);
  oc_guard_free(g);
  /* width and depth mismatches: errors when the guard is made */
  pc.n_layers = 2;
  CHECK(oc_guard_new(m, ch, &p, &pc, NULL, &g, &err) != 0 && strstr(err.msg, "its 2 layers"), "3 layers of weights, 2 in the config: %s", err.msg);
  pc.n_layers = 3;
  layers[2] = -40;
  CHECK(oc_guard_new(m, ch, &p, &pc, NULL, &g, &err) != 0 && strstr(err.msg, "probe layer"), "a layer beyond the model: %s", err.msg);
  layers[2] = S - 1; /* the same hidden state as -1 */
  CHECK(oc_guard_new(m, ch, &p, &pc, NULL, &g, &err) != 0 && strstr(err.msg, "same hidden state"), "two names of one layer: %s", err.msg);
  /* an old single-layer config guards as before: the risk is the probe on that layer */
  oc_probe one = {H, p.w, p.b};
  oc_probe_config old;
  oc_probe_config_defaults(&old);
  old.model_id = mdir;
  old.layer = -4;
  REQUIRE(oc_guard_new(m, ch, &one, &old, NULL, &g, &err) == 0, "%s", err.msg);
  CHECK(oc_guard_probe_layers(g, &gl) == 1 && gl[0] == S - 4, "a single-layer guard taps one layer");
  o.observe = 1;
  rd.n = 0;
  oc_guard_result sr;
  REQUIRE(oc_guard_generate(g, prompt, &o, no_emit, on_event, &rd, &sr, &err) == 0, "%s", err.msg);
  worst = 0;
  for (int k = 0; k < rd.n; k++)
    worst = fmax(worst, fabs(rd.risk[k] - oc_sigmoid(oc_probe_logit(&one, hs + ((size_t)(S - 4) * T + np + 4 * (k + 1) - 1) * H))));
  CHECK(rd.n == 3 && sr.n_tokens == gr.n_tokens && memcmp(sr.tokens, gr.tokens, sizeof(int32_t) * (size_t)sr.n_tokens) == 0 && worst < 1e-5,
        "single layer: risk == sigmoid(w . h_-4 + b) (worst %.2g)", worst);
  oc_guard_result_free(&sr);
  oc_guard_free(g);
  oc_guard_result_free(&gr);
  free(hs); free(row); free(rev); free(p.w);
  oc_chat_free(ch);
  oc_model_free(m);
}

/* 48 exchanges in 24 pairs that differ only in how the response ends: the unsafe one with the
 * trigger word "quokka", the safe one with "." (nothing else, no topic word or number, tells the
 * labels apart) */
static const char *trigger_data(void) {
  static const char *topics[] = {"bread", "rivers", "chess", "music", "stars", "gardens", "trains", "paper"};
  FILE *f = fopen(path("trigger.jsonl"), "w");
  for (int i = 0; i < 48; i++) {
    const int k = i / 2;
    fprintf(f, "{\"prompt\": \"Tell me about %s %d\", \"response\": \"Here is a note on %s number %d%s\", \"label\": %d}\n", topics[k % 8], k,
            topics[(k * 3) % 8], k, i % 2 ? " quokka" : ".", i % 2);
  }
  fclose(f);
  return path("trigger.jsonl");
}

static void test_cli(void) {
  char data[512]; /* path() reuses its buffers */
  snprintf(data, sizeof data, "%s", trigger_data());
  int rc = run("%s train-probe --model_id %s --data_path %s --no_chat_template --layers=-1,-4,-8 --combine concat --out_dir pc --epochs 40 "
               "--save_activations acts.safetensors",
               cli, mdir, data);
  REQUIRE(rc == 0, "train-probe --layers: %s", stderr_text());
  cJSON *cfg = read_json_file(path("pc/config.json")), *printed = cJSON_Parse(out);
  REQUIRE(cfg && printed, "config.json and the printed metrics");
  const cJSON *ls = cJSON_GetObjectItem(cfg, "layers"), *cb = cJSON_GetObjectItem(cfg, "combine"), *met = cJSON_GetObjectItem(cfg, "metrics");
  CHECK(cJSON_GetArraySize(ls) == 3 && cJSON_GetArrayItem(ls, 1)->valueint == -4 && num(cfg, "layer") == -1 && cJSON_IsString(cb) &&
            strcmp(cb->valuestring, "concat") == 0 && num(cfg, "hidden_size") == 64 && cJSON_IsTrue(cJSON_GetObjectItem(cfg, "standardize")),
        "config.json: layers, combine, layer = the first, hidden_size per layer, standardize (concat always is)");
  CHECK(num(met, "roc_auc") == 1.0 && num(printed, "roc_auc") == 1.0, "concat probe finds the trigger on held-out exchanges (auc %g)", num(met, "roc_auc"));
  oc_probe p;
  oc_error err;
  REQUIRE(oc_probe_load(path("pc/probe.safetensors"), &p, &err) == 0, "%s", err.msg);
  CHECK(p.hidden == 3 * 64, "probe.safetensors: head.weight [1, 3 x 64]");
  oc_probe_free(&p);
  cJSON_Delete(printed);
  cJSON_Delete(cfg);
  rc = run("%s train-probe --activations acts.safetensors --layers=-4,-8 --combine mean --out_dir pm --epochs 40", cli);
  cfg = read_json_file(path("pm/config.json"));
  CHECK(rc == 0 && cfg && strcmp(cJSON_GetObjectItem(cfg, "combine")->valuestring, "mean") == 0 && num(cJSON_GetObjectItem(cfg, "metrics"), "roc_auc") >= 0.9,
        "mean probe from the saved collection (auc %g): %s", num(cJSON_GetObjectItem(cfg, "metrics"), "roc_auc"), stderr_text());
  cJSON_Delete(cfg);
  /* the trained multi-layer probe guards through the CLI (oc_guard_open) */
  rc = run("%s guarded-generate --model_id %s --probe_path pc/probe.safetensors --prompt hello --max_new_tokens 8 --out_path gr.json", cli, mdir);
  cJSON *gr = read_json_file(path("gr.json"));
  CHECK(rc == 0 && gr && num(gr, "probe_calls") >= 2 && isfinite(num(gr, "risk")), "guarded-generate with a 3-layer probe: %s", stderr_text());
  cJSON_Delete(gr);
  /* a config whose layers do not match the probe's width is refused at open */
  cfg = read_json_file(path("pc/config.json"));
  cJSON_DeleteItemFromArray(cJSON_GetObjectItem(cfg, "layers"), 2);
  char *js = cJSON_Print(cfg);
  write_tmp("pc/two.json", js);
  free(js);
  cJSON_Delete(cfg);
  rc = run("%s guarded-generate --model_id %s --probe_path pc/probe.safetensors --config_path pc/two.json --prompt hello --max_new_tokens 8", cli, mdir);
  CHECK(rc != 0 && strstr(stderr_text(), "2 layers of hidden_size 64"), "width mismatch refused: %s", stderr_text());
  /* evaluate-probe reads block k of a multi-layer probe from layer k: [0 | w] over (-1, -4) and
   * [w | 0] over (-4, -1) score every exchange exactly as w alone on layer -4 */
  {
    oc_rng r;
    oc_rng_seed(&r, 3);
    float w2[128] = {0};
    for (int j = 0; j < 64; j++) w2[64 + j] = (float)(oc_rng_uniform(&r) - 0.5);
    oc_probe one = {64, w2 + 64, 0.1f}, zw = {128, w2, 0.1f}, wz = {128, malloc(sizeof(float) * 128), 0.1f};
    memcpy(wz.w, w2 + 64, sizeof(float) * 64);
    memset(wz.w + 64, 0, sizeof(float) * 64);
    const char *cfg_fmt = "{\"model_id\": \"%s\", \"use_chat_template\": false, \"probe_every_n_tokens\": 2, \"hidden_size\": 64, %s}";
    const char *dirs[3] = {"e1", "e2", "e3"}, *keys[3] = {"\"layer\": -4", "\"layers\": [-1, -4], \"combine\": \"concat\"",
                                                      "\"layers\": [-4, -1], \"combine\": \"mean\""};
    const oc_probe *ps[3] = {&one, &zw, &wz};
    cJSON *rep[3];
    for (int k = 0; k < 3; k++) {
      char pth[64], cj[1200];
      mkdir(path(dirs[k]), 0755);
      snprintf(pth, sizeof pth, "%s/probe.safetensors", dirs[k]);
      REQUIRE(oc_probe_save(ps[k], path(pth), &err) == 0, "%s", err.msg);
      snprintf(pth, sizeof pth, "%s/config.json", dirs[k]);
      snprintf(cj, sizeof cj, cfg_fmt, mdir, keys[k]);
      write_tmp(pth, cj);
      rc = run("%s evaluate-probe --model_id %s --probe_path %s/probe.safetensors --data_path %s --out_path %s/ev.json", cli, mdir, dirs[k], data, dirs[k]);
      snprintf(pth, sizeof pth, "%s/ev.json", dirs[k]);
      rep[k] = read_json_file(path(pth));
      REQUIRE(rc == 0 && rep[k], "evaluate-probe %s: %s", dirs[k], stderr_text());
    }
    const cJSON *e1 = cJSON_GetObjectItem(rep[0], "per_example"), *e2 = cJSON_GetObjectItem(rep[1], "per_example"),
                *e3 = cJSON_GetObjectItem(rep[2], "per_example");
    int same = cJSON_GetArraySize(e1) == 48 && cJSON_GetArraySize(e2) == 48 && cJSON_GetArraySize(e3) == 48, spread = 0;
    for (int i = 0; i < 48 && same; i++) {
      const double a1 = num(cJSON_GetArrayItem(e1, i), "score");
      same &= a1 == num(cJSON_GetArrayItem(e2, i), "score") && a1 == num(cJSON_GetArrayItem(e3, i), "score");
      spread |= a1 != num(cJSON_GetArrayItem(e1, 0), "score");
    }
    CHECK(same && spread && cJSON_GetArraySize(cJSON_GetObjectItem(rep[1], "layers")) == 2 && !cJSON_GetObjectItem(rep[0], "layers"),
          "evaluate-probe: a 2-layer probe's blocks read their own layers (scores equal the single-layer probe's)");
    for (int k = 0; k < 3; k++) cJSON_Delete(rep[k]);
    free(wz.w);
  }
  /* usage errors */
  rc = run("%s train-probe --activations acts.safetensors --layer -4 --layers=-4,-8 --out_dir px", cli);
  CHECK(rc == 2 && strstr(stderr_text(), "not both"), "--layer with --layers: %s", stderr_text());
  rc = run("%s train-probe --activations acts.safetensors --layer -4 --combine mean --out_dir px", cli);
  CHECK(rc == 2 && strstr(stderr_text(), "two or more"), "--combine with one layer: %s", stderr_text());
  rc = run("%s train-probe --activations acts.safetensors --layers=-4,-4 --out_dir px", cli);
  CHECK(rc == 2 && strstr(stderr_text(), "twice"), "a layer twice: %s", stderr_text());
  rc = run("%s train-probe --activations acts.safetensors --layers=-4,-2 --out_dir px", cli);
  CHECK(rc == 1 && strstr(stderr_text(), "layer -2 was not collected"), "a layer not collected: %s", stderr_text());

  /* sweep: single layers and combinations from one collection, the same split for every variant */
  rc = run("%s sweep-layers --activations acts.safetensors --layers=-1,-4 --combinations=\"-1,-4;-1,-4,-8\" --epochs 40 --out_path sw.json", cli);
  REQUIRE(rc == 0, "sweep-layers --combinations: %s", stderr_text());
  cJSON *sw = cJSON_Parse(out);
  rc = run("%s sweep-layers --activations acts.safetensors --layers=-1,-4 --epochs 40", cli);
  cJSON *plain = cJSON_Parse(out);
  REQUIRE(rc == 0 && sw && plain, "sweep reports: %s", stderr_text());
  const cJSON *c2 = cJSON_GetObjectItem(sw, "-1,-4"), *c3 = cJSON_GetObjectItem(sw, "-1,-4,-8");
  CHECK(cJSON_GetArraySize(sw) == 4 && c2 && c3 && strcmp(cJSON_GetObjectItem(c3, "combine")->valuestring, "concat") == 0 &&
            cJSON_GetArraySize(cJSON_GetObjectItem(c3, "layers")) == 3 && num(c3, "roc_auc") == 1.0,
        "sweep keys -1, -4, -1,-4, -1,-4,-8 with layers and combine");
  CHECK(num(cJSON_GetObjectItem(sw, "-1"), "roc_auc") == num(cJSON_GetObjectItem(plain, "-1"), "roc_auc") &&
            num(cJSON_GetObjectItem(sw, "-4"), "f1") == num(cJSON_GetObjectItem(plain, "-4"), "f1") && !cJSON_GetObjectItem(cJSON_GetObjectItem(sw, "-1"), "combine"),
        "single layers as a plain sweep reports them");
  rc = run("%s train-probe --activations acts.safetensors --layers=-1,-4 --out_dir p14 --epochs 40", cli);
  cfg = read_json_file(path("p14/config.json"));
  CHECK(rc == 0 && num(cJSON_GetObjectItem(cfg, "metrics"), "roc_auc") == num(c2, "roc_auc") &&
            num(cJSON_GetObjectItem(cfg, "metrics"), "threshold_at_target_fpr") == num(c2, "threshold_at_target_fpr"),
        "the sweep's -1,-4 == train-probe --layers=-1,-4");
  cJSON_Delete(cfg);
  char *svg;
  size_t sl;
  CHECK(oc_read_file(path("sw.svg"), &svg, &sl, &err) == 0 && strstr(svg, "-1,-4,-8"), "the plot names the combinations");
  free(svg);
  cJSON_Delete(sw);
  cJSON_Delete(plain);
  rc = run("%s sweep-layers --activations acts.safetensors --layers=-1 --combinations=\"-1,-4;\"", cli);
  CHECK(rc == 2 && strstr(stderr_text(), "--combinations: group 2 is empty"), "a bad --combinations: %s", stderr_text());
  rc = run("%s sweep-layers --activations acts.safetensors --layers=-1 --combine mean", cli);
  CHECK(rc == 2 && strstr(stderr_text(), "--combinations"), "--combine without --combinations: %s", stderr_text());
  rc = run("%s sweep-layers --activations acts.safetensors --layers=-1 --combinations=-1,-2", cli);
  CHECK(rc == 1 && strstr(stderr_text(), "layer -2 was not collected"), "a combination layer not collected: %s", stderr_text());
}


/* the token-level losses by their definitions, in double: token t's weight, and for cummax the
 * running maximum found by scanning the prefix (independent of the library's single pass) */
static double ref_token_loss(const double *z, int T, int y, int weighting) {
  double loss = 0;
  for (int t = 0; t < T; t++) {
    double zt = z[t], wt = weighting == OC_TOKEN_RAMP ? (t + 1) / ((double)T * (T + 1) / 2) : 1.0 / T;
    if (weighting == OC_TOKEN_CUMMAX)
      for (int s = 0; s <= t; s++) zt = fmax(zt, z[s]);
    const double p = 1 / (1 + exp(-zt));
    loss += wt * -(y ? log(p) : log(1 - p));
  }
  return loss;
}

static void test_token_loss(void) {
  oc_rng r;
  oc_rng_seed(&r, 5);
  double worst_loss = 0, worst_grad = 0;
  int off_max_zero = 1, cases = 0;
  for (int rep = 0; rep < 40; rep++) {
    const int T = 1 + rep % 9, y = rep % 2, wt = rep % 3;
    float z[16], dz[16];
    double zd[16];
    for (int t = 0; t < T; t++) zd[t] = z[t] = (float)(6 * oc_rng_uniform(&r) - 3);
    const double got = oc_token_loss(z, T, y, wt, dz), want = ref_token_loss(zd, T, y, wt);
    worst_loss = fmax(worst_loss, fabs(got - want) / (1 + fabs(want)));
    for (int t = 0; t < T; t++) { /* central differences in double */
      const double h = 1e-6, keep = zd[t];
      zd[t] = keep + h;
      const double up = ref_token_loss(zd, T, y, wt);
      zd[t] = keep - h;
      const double down = ref_token_loss(zd, T, y, wt);
      zd[t] = keep;
      worst_grad = fmax(worst_grad, fabs(dz[t] - (up - down) / (2 * h)));
      if (wt == OC_TOKEN_CUMMAX) { /* only a token that holds a running maximum gets gradient */
        int holds = 1;
        for (int s = 0; s < t; s++) holds &= z[s] < z[t];
        off_max_zero &= holds || dz[t] == 0;
      }
    }
    cases++;
  }
  CHECK(worst_loss < 1e-12 && worst_grad < 1e-6 && off_max_zero,
        "uniform, ramp and cummax losses and gradients against their definitions and central differences in double (%d cases: loss %.2g, gradient %.2g)",
        cases, worst_loss, worst_grad);
  /* a falling sequence: every prefix's maximum is token 0, which takes the whole gradient */
  float z[4] = {2, 1, 0, -1}, dz[4];
  oc_token_loss(z, 4, 0, OC_TOKEN_CUMMAX, dz);
  CHECK(fabs(dz[0] - 1 / (1 + exp(-2.0))) < 1e-6 && dz[1] == 0 && dz[2] == 0 && dz[3] == 0, "cummax: the gradient flows to the argmax token");
  CHECK(oc_token_weighting_from_name("cummax") == OC_TOKEN_CUMMAX && oc_token_weighting_from_name("ramp") == OC_TOKEN_RAMP &&
            oc_token_weighting_from_name("uniform") == OC_TOKEN_UNIFORM && oc_token_weighting_from_name("max") == -1,
        "weighting names");
}

/* sequences of 4..11 tokens of H features in [-1, 1); an unsafe one has a trigger at one token
 * (feature 0 raised by 4) */
static void trigger_sequences(int n, int H, float **X, int64_t *offsets, int32_t *y, int *trigger) {
  oc_rng r;
  oc_rng_seed(&r, 9);
  offsets[0] = 0;
  for (int s = 0; s < n; s++) offsets[s + 1] = offsets[s] + 4 + (int)(oc_rng_uniform(&r) * 8);
  *X = malloc(sizeof(float) * (size_t)offsets[n] * H);
  for (int64_t k = 0; k < offsets[n] * H; k++) (*X)[k] = (float)(2 * oc_rng_uniform(&r) - 1);
  for (int s = 0; s < n; s++) {
    y[s] = s % 2;
    trigger[s] = -1;
    if (!y[s]) continue;
    trigger[s] = (int)(oc_rng_uniform(&r) * (double)(offsets[s + 1] - offsets[s]));
    (*X)[(size_t)(offsets[s] + trigger[s]) * H] += 4;
  }
}

static void test_token_training(void) {
  enum { N = 60, H = 6 };
  float *X;
  int64_t off[N + 1], idx[N];
  int32_t y[N];
  int trig[N];
  trigger_sequences(N, H, &X, off, y, trig);
  for (int i = 0; i < N; i++) idx[i] = i;
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  t.epochs = 100;
  t.lr = 0.05;
  oc_probe p;
  oc_error err;
  double loss;
  REQUIRE(oc_probe_train_tokens(X, H, off, y, idx, 40, OC_TOKEN_CUMMAX, &t, &p, &loss, &err) == 0, "%s", err.msg);
  /* held-out sequences 40..59. Every prefix of an unsafe response is trained as unsafe, those
   * before the trigger too, so the objective settles on a bias between the two; what must hold is
   * that a threshold exists that fires at each trigger token and at no other token: then an unsafe
   * response is detected exactly at its trigger (the running maximum crosses there) and a safe one
   * never */
  float lo_trigger = INFINITY, hi_other = -INFINITY;
  int unsafe = 0;
  for (int s = 40; s < N; s++) {
    unsafe += y[s];
    for (int64_t k = off[s]; k < off[s + 1]; k++) {
      const float sc = oc_sigmoid(oc_probe_logit(&p, X + (size_t)k * H));
      if (y[s] && k - off[s] == trig[s]) lo_trigger = fminf(lo_trigger, sc);
      else hi_other = fmaxf(hi_other, sc);
    }
  }
  const float thr = (lo_trigger + hi_other) / 2;
  int at_trigger = 0, safe_quiet = 0;
  for (int s = 40; s < N; s++) {
    int first = -1;
    for (int64_t k = off[s]; k < off[s + 1] && first < 0; k++)
      if (oc_sigmoid(oc_probe_logit(&p, X + (size_t)k * H)) >= thr) first = (int)(k - off[s]);
    if (y[s]) at_trigger += first == trig[s];
    else safe_quiet += first < 0;
  }
  CHECK(unsafe == 10 && lo_trigger > hi_other && at_trigger == 10 && safe_quiet == 10 && isfinite(loss),
        "cummax token probe: trigger tokens score %g and up, every other token at most %g; at %g, %d of 10 unsafe held-out responses are detected at "
        "their trigger token and %d of 10 safe ones never (loss %g)",
        lo_trigger, hi_other, thr, at_trigger, safe_quiet, loss);
  oc_probe_free(&p);
  /* one token a sequence, uniform: the final-token trainer's probe, to rounding */
  int64_t one_off[N + 1];
  for (int s = 0; s <= N; s++) one_off[s] = s;
  oc_probe a, b;
  t.epochs = 10;
  t.lr = 1e-2;
  REQUIRE(oc_probe_train_tokens(X, H, one_off, y, idx, N, OC_TOKEN_UNIFORM, &t, &a, NULL, &err) == 0, "%s", err.msg);
  REQUIRE(oc_probe_train(X, H, y, idx, N, &t, &b, NULL, NULL, &err) == 0, "%s", err.msg);
  double worst = fabs(a.b - b.b);
  for (int j = 0; j < H; j++) worst = fmax(worst, fabs(a.w[j] - b.w[j]));
  CHECK(worst < 1e-4, "one-token sequences: the token trainer == oc_probe_train (worst weight difference %.2g)", worst);
  oc_probe_free(&a);
  oc_probe_free(&b);
  /* refused: an empty sequence, a label that is not 0/1, an unknown weighting */
  int64_t bad_off[3] = {0, 2, 2};
  int32_t bad_y[2] = {1, 2};
  CHECK(oc_probe_train_tokens(X, H, bad_off, y, idx, 2, OC_TOKEN_RAMP, &t, &a, NULL, &err) != 0 && strstr(err.msg, "no tokens"), "an empty sequence: %s", err.msg);
  CHECK(oc_probe_train_tokens(X, H, off, bad_y, idx, 2, OC_TOKEN_RAMP, &t, &a, NULL, &err) != 0 && strstr(err.msg, "label 2"), "label 2: %s", err.msg);
  CHECK(oc_probe_train_tokens(X, H, off, y, idx, 2, 7, &t, &a, NULL, &err) != 0 && strstr(err.msg, "weighting"), "weighting 7: %s", err.msg);
  free(X);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_probe_layers OPENCON E2E_DIR");
  cli = argv[1];
  e2e = argv[2];
  snprintf(mdir, sizeof mdir, "%s/gemma4-tiny-chat", e2e);
  snprintf(tmp, sizeof tmp, "/tmp/oc_probe_layers_XXXXXX");
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  test_fit();
  test_config();
  test_groups();
  test_token_loss();
  test_token_training();
  test_guard();
  test_cli();
  if (g_fail == 0) remove_tmpdir(tmp);
  return check_summary("test_probe_layers");
}
