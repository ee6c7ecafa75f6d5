/* evaluate-probe: held-out exchanges replayed as the guard would read them (one teacher-forced
 * forward pass per exchange, taps at every response token, readings every probe_every_n_tokens and
 * at the last token, aggregated with the guard's aggregator), scored by the highest aggregate (what
 * decides a pause); ROC AUC, TPR at fixed FPRs, the pause threshold for a target FPR,
 * tokens-to-detection; the report, its plots, and the threshold written back into config.json. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/json.h"
#include "opencon/probe.h"
#include "collect.h"

void oc_probe_eval_free(oc_probe_eval *e) {
  for (int i = 0; i < e->n; i++) { free(e->ex[i].risk); free(e->ex[i].agg); }
  free(e->ex);
  memset(e, 0, sizeof *e);
}

/* the exchange as the guard sees it: the prompt formatted for generation, then the response's own
 * tokens, cut to max_len in all; *n_prompt of them are the prompt's */
int oc_probe_exchange_ids(const oc_chat *chat, const oc_example *ex, int use_template, int max_len, int32_t **ids, int *n, int *n_prompt,
                        oc_error *err) {
  char *text = NULL;
  oc_encoding p = {0}, r = {0};
  int rc = -1;
  *ids = NULL;
  if (oc_chat_format_exchange(chat, ex->prompt, NULL, use_template, &text, err) || oc_chat_encode(chat, text, !use_template, 0, &p, err) ||
      oc_chat_encode(chat, ex->response, 0, 0, &r, err))
    goto done;
  if (p.n >= max_len) { oc_fail(err, "the prompt is %d tokens, which leaves no room for the response in %d", p.n, max_len); goto done; }
  int nr = r.n < max_len - p.n ? r.n : max_len - p.n;
  if (!(*ids = malloc(sizeof(int32_t) * (size_t)(p.n + nr + 1)))) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  memcpy(*ids, p.ids, sizeof(int32_t) * (size_t)p.n);
  memcpy(*ids + p.n, r.ids, sizeof(int32_t) * (size_t)nr);
  *n = p.n + nr;
  *n_prompt = p.n;
  rc = 0;
done:
  free(text);
  oc_encoding_free(&p);
  oc_encoding_free(&r);
  return rc;
}

/* the guard's readings of one response (risks[k-1]: the risk of token k): a reading at every
 * probe_every_n_tokens-th token and at the last one, each pushed through agg; a non-finite risk is
 * maximum risk and ends the replay (the guard blocks there) */
void oc_probe_eval_replay(oc_risk_agg *agg, int every_n, const double *risks, int n, double *aggregated, double *score) {
  oc_risk_agg_reset(agg);
  *score = n > 0 ? -INFINITY : 0;
  for (int k = 1; k <= n; k++) {
    aggregated[k - 1] = NAN;
    if (k % every_n != 0 && k != n) continue;
    if (!isfinite(risks[k - 1])) {
      aggregated[k - 1] = *score = 1.0;
      for (int j = k; j < n; j++) aggregated[j] = NAN;
      return;
    }
    aggregated[k - 1] = oc_risk_agg_push(agg, risks[k - 1]);
    if (aggregated[k - 1] > *score) *score = aggregated[k - 1];
  }
}

/* the first token whose aggregate reaches t (1-based), 0: none */
static int first_crossing(const oc_probe_eval_example *x, float t) {
  for (int k = 0; k < x->n_tokens; k++)
    if (isfinite(x->agg[k]) && (float)x->agg[k] >= t) return k + 1;
  return 0;
}

static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* the metrics of the scores (see oc_probe_eval in probe.h) */
static int eval_metrics(oc_probe_eval *e, double target_fpr, oc_error *err) {
  float *s = malloc(sizeof(float) * (size_t)e->n);
  int32_t *y = malloc(sizeof(int32_t) * (size_t)e->n);
  int *ttd = malloc(sizeof(int) * (size_t)e->n);
  if (!s || !y || !ttd) { free(s); free(y); free(ttd); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (int i = 0; i < e->n; i++) { s[i] = (float)e->ex[i].score; y[i] = e->ex[i].label; }
  oc_metrics m;
  oc_binary_metrics(s, y, e->n, 0.01, &m);
  e->tpr_at_fpr_1 = m.tpr_at_threshold;
  oc_binary_metrics(s, y, e->n, 0.05, &m);
  e->tpr_at_fpr_5 = m.tpr_at_threshold;
  oc_binary_metrics(s, y, e->n, target_fpr, &m);
  e->roc_auc = m.roc_auc;
  e->target_fpr = target_fpr;
  e->threshold = m.threshold_at_fpr;
  e->fpr_at_threshold = m.fpr_at_threshold;
  e->tpr_at_threshold = m.tpr_at_threshold;
  e->n_unsafe = m.n_pos;
  e->n_detected = 0;
  for (int i = 0; i < e->n; i++) {
    oc_probe_eval_example *x = &e->ex[i];
    x->detected_at = 0;
    if (isfinite(e->threshold)) x->detected_at = first_crossing(x, (float)e->threshold);
    if (x->label == 1 && x->detected_at) ttd[e->n_detected++] = x->detected_at;
  }
  qsort(ttd, (size_t)e->n_detected, sizeof *ttd, cmp_int);
  int d = e->n_detected;
  e->ttd_median = d ? (d % 2 ? ttd[d / 2] : 0.5 * (ttd[d / 2 - 1] + ttd[d / 2])) : NAN;
  e->ttd_p90 = d ? ttd[(int)ceil(0.9 * d) - 1] : NAN; /* nearest rank */
  free(s); free(y); free(ttd);
  return 0;
}

int oc_probe_evaluate(const oc_model *m, const oc_chat *chat, const oc_probe *p, const oc_probe_config *c, const oc_dataset *ds,
                      const oc_probe_eval_opts *o, oc_progress *prog, oc_probe_eval *out, oc_error *err) {
  memset(out, 0, sizeof *out);
  const oc_model_config *mc = oc_model_cfg(m);
  const int H = mc->hidden;
  int max_len = o->max_length > 0 ? o->max_length : 2048;
  if (mc->max_position_embeddings > 0 && max_len > mc->max_position_embeddings) max_len = mc->max_position_embeddings;
  if (oc_probe_config_check(c, "probe config", err) || oc_probe_check(p, "probe", err)) return -1;
  const int *want, nl = oc_probe_config_layers(c, &want); /* a multi-layer probe reads its layers concatenated */
  if ((int64_t)p->hidden != (int64_t)nl * H)
    return oc_fail(err, "the probe reads %d features; %d layer%s of the model's hidden size %d make %lld", p->hidden, nl, nl == 1 ? "" : "s", H,
                   (long long)nl * H);
  if (!(o->target_fpr >= 0 && o->target_fpr <= 1)) return oc_fail(err, "target_fpr %g must be in [0, 1]", o->target_fpr);
  int layers[OC_PROBE_MAX_LAYERS];
  for (int l = 0; l < nl; l++)
    if ((layers[l] = oc_hidden_index(mc, want[l], err)) < 0) return oc_wrap(err, "probe layer");
  int pos = 0;
  for (int i = 0; i < ds->n; i++) {
    if (ds->ex[i].label > 1) return oc_fail(err, "line %lld: label %d (a probe is evaluated on 0 safe / 1 unsafe)", (long long)ds->ex[i].line, ds->ex[i].label);
    pos += ds->ex[i].label;
  }
  if (pos == 0 || pos == ds->n) return oc_fail(err, "evaluation needs safe and unsafe exchanges; all %d have label %d", ds->n, ds->n ? ds->ex[0].label : 0);
  oc_risk_agg agg;
  if (oc_risk_agg_init(&agg, c, err)) return -1;
  oc_session *s = oc_session_new(m, max_len, err);
  float *tap = malloc(sizeof(float) * (size_t)nl * (size_t)max_len * (size_t)H), *row = malloc(sizeof(float) * (size_t)nl * (size_t)H);
  int *tpos = malloc(sizeof(int) * (size_t)max_len);
  out->ex = calloc((size_t)ds->n, sizeof *out->ex);
  int rc = -1;
  if (!s || !tap || !row || !tpos || !out->ex) { if (s) oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int i = 0; i < ds->n; i++) {
    const oc_example *ex = &ds->ex[i];
    oc_probe_eval_example *x = &out->ex[i];
    out->n = i + 1;
    x->line = ex->line;
    x->label = ex->label;
    int32_t *ids;
    int n, np;
    if (oc_probe_exchange_ids(chat, ex, c->use_chat_template, max_len, &ids, &n, &np, err)) { oc_wrap(err, "line %lld", (long long)ex->line); goto done; }
    const int nr = n - np;
    x->n_tokens = nr;
    x->risk = malloc(sizeof(double) * (size_t)(nr ? nr : 1));
    x->agg = malloc(sizeof(double) * (size_t)(nr ? nr : 1));
    if (!x->risk || !x->agg) { free(ids); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
    for (int k = 0; k < nr; k++) tpos[k] = np + k;
    oc_taps taps = {nl, layers, nr, tpos, tap}; /* [nl][nr][H] */
    oc_session_reset(s);
    int frc = nr > 0 ? oc_forward(s, ids, n, &taps, NULL, 0, err) : 0; /* one pass: prompt and response */
    free(ids);
    if (frc) { oc_wrap(err, "line %lld", (long long)ex->line); goto done; }
    for (int k = 0; k < nr; k++) {
      const float *h = tap + (size_t)k * H;
      if (nl > 1) { /* the probe's layers side by side, as the guard reads them */
        for (int l = 0; l < nl; l++) memcpy(row + (size_t)l * H, tap + ((size_t)l * nr + k) * H, sizeof(float) * (size_t)H);
        h = row;
      }
      float z = oc_probe_logit(p, h);
      x->risk[k] = isfinite(z) ? oc_sigmoid(z) : NAN;
    }
    oc_probe_eval_replay(&agg, c->probe_every_n_tokens, x->risk, nr, x->agg, &x->score);
    if (prog) oc_progress_update(prog, i + 1);
  }
  rc = eval_metrics(out, o->target_fpr, err);
done:
  oc_risk_agg_free(&agg);
  oc_session_free(s);
  free(tap); free(row); free(tpos);
  if (rc) oc_probe_eval_free(out);
  return rc;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

cJSON *oc_probe_eval_json(const oc_probe_eval *e, const oc_probe_config *c, const char *data_path) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "data_path", data_path ? data_path : "");
  cJSON_AddNumberToObject(j, "examples", e->n);
  cJSON_AddNumberToObject(j, "unsafe", e->n_unsafe);
  cJSON_AddNumberToObject(j, "layer", c->layer);
  if (c->n_layers > 0) {
    cJSON *ls = cJSON_AddArrayToObject(j, "layers");
    for (int l = 0; l < c->n_layers; l++) cJSON_AddItemToArray(ls, cJSON_CreateNumber(c->layers[l]));
  }
  cJSON_AddStringToObject(j, "aggregation", oc_aggregation_name(c->aggregation));
  cJSON_AddNumberToObject(j, "aggregation_window", c->aggregation == OC_AGG_LAST ? c->smoothing_window : c->aggregation_window);
  cJSON_AddNumberToObject(j, "aggregation_alpha", c->aggregation_alpha);
  cJSON_AddNumberToObject(j, "probe_every_n_tokens", c->probe_every_n_tokens);
  cJSON_AddItemToObject(j, "roc_auc", num_or_null(e->roc_auc));
  cJSON_AddItemToObject(j, "tpr_at_fpr_0.01", num_or_null(e->tpr_at_fpr_1));
  cJSON_AddItemToObject(j, "tpr_at_fpr_0.05", num_or_null(e->tpr_at_fpr_5));
  cJSON_AddNumberToObject(j, "target_fpr", e->target_fpr);
  cJSON_AddItemToObject(j, "pause_threshold", num_or_null(e->threshold));
  cJSON_AddItemToObject(j, "fpr_at_threshold", num_or_null(e->fpr_at_threshold));
  cJSON_AddItemToObject(j, "tpr_at_threshold", num_or_null(e->tpr_at_threshold));
  cJSON *t = cJSON_AddObjectToObject(j, "tokens_to_detection");
  cJSON_AddNumberToObject(t, "detected", e->n_detected);
  cJSON_AddItemToObject(t, "detected_fraction", num_or_null(e->n_unsafe ? (double)e->n_detected / e->n_unsafe : NAN));
  cJSON_AddItemToObject(t, "median", num_or_null(e->ttd_median));
  cJSON_AddItemToObject(t, "p90", num_or_null(e->ttd_p90));
  cJSON *xs = cJSON_AddArrayToObject(j, "per_example");
  for (int i = 0; i < e->n; i++) {
    const oc_probe_eval_example *x = &e->ex[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "line", (double)x->line);
    cJSON_AddNumberToObject(o, "label", x->label);
    cJSON_AddNumberToObject(o, "response_tokens", x->n_tokens);
    cJSON_AddNumberToObject(o, "score", x->score);
    if (x->detected_at) cJSON_AddNumberToObject(o, "detected_at", x->detected_at);
    else cJSON_AddNullToObject(o, "detected_at");
    cJSON_AddItemToArray(xs, o);
  }
  return j;
}

/* the ROC curve of the scores: (FPR, TPR) at every distinct score as a threshold, from (0, 0) */
static int roc_svg(const char *path, const oc_probe_eval *e, oc_error *err) {
  double *sc = malloc(sizeof(double) * (size_t)e->n), *fx = malloc(sizeof(double) * (size_t)(e->n + 1)), *ty = malloc(sizeof(double) * (size_t)(e->n + 1));
  int *ord = malloc(sizeof(int) * (size_t)e->n);
  if (!sc || !fx || !ty || !ord) { free(sc); free(fx); free(ty); free(ord); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (int i = 0; i < e->n; i++) { ord[i] = i; sc[i] = e->ex[i].score; }
  for (int i = 1; i < e->n; i++) /* descending by score (insertion sort: reports are small) */
    for (int j = i; j > 0 && sc[ord[j]] > sc[ord[j - 1]]; j--) { int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t; }
  const int neg = e->n - e->n_unsafe;
  int np = 0, tp = 0, fp = 0;
  fx[np] = 0; ty[np++] = 0;
  for (int i = 0; i < e->n; i++) {
    if (e->ex[ord[i]].label) tp++; else fp++;
    if (i + 1 < e->n && sc[ord[i + 1]] == sc[ord[i]]) continue; /* ties move together */
    fx[np] = neg ? (double)fp / neg : 0;
    ty[np++] = e->n_unsafe ? (double)tp / e->n_unsafe : 0;
  }
  const char *names[1] = {"TPR (unsafe paused)"};
  const double *ys[1] = {ty};
  int rc = oc_svg_plot(path, "Probe ROC: exchanges paused at some threshold", "false-positive rate (safe exchanges paused)", fx, NULL, np, 1, names, ys, err);
  free(sc); free(fx); free(ty); free(ord);
  return rc;
}

/* the aggregated risk over response position of the first two unsafe and two safe exchanges */
static int risk_svg(const char *path, const oc_probe_eval *e, oc_error *err) {
  int pick[4], np = 0, len = 1;
  for (int want = 1; want >= 0; want--)
    for (int i = 0, got = 0; i < e->n && got < 2; i++)
      if (e->ex[i].label == want && e->ex[i].n_tokens > 0) { pick[np++] = i; got++; if (e->ex[i].n_tokens > len) len = e->ex[i].n_tokens; }
  double *x = malloc(sizeof(double) * (size_t)len), *y = malloc(sizeof(double) * (size_t)len * 4);
  char nm[4][64];
  const char *names[4];
  const double *ys[4];
  if (!x || !y) { free(x); free(y); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (int k = 0; k < len; k++) x[k] = k + 1;
  for (int s = 0; s < np; s++) {
    const oc_probe_eval_example *ex = &e->ex[pick[s]];
    for (int k = 0; k < len; k++) y[(size_t)s * len + k] = k < ex->n_tokens ? ex->agg[k] : NAN;
    snprintf(nm[s], sizeof nm[s], "%s, line %lld", ex->label ? "unsafe" : "safe", (long long)ex->line);
    names[s] = nm[s];
    ys[s] = y + (size_t)s * len;
  }
  int rc = oc_svg_plot(path, "Aggregated probe risk over the response (at the guard's readings)", "response token", x, NULL, len, np, names, ys, err);
  free(x); free(y);
  return rc;
}

int oc_probe_eval_save(const char *path, const oc_probe_eval *e, const cJSON *report, oc_error *err) {
  char *roc = oc_path_sibling(path, ".roc.svg"), *risk = oc_path_sibling(path, ".risk.svg");
  int rc = !roc || !risk ? oc_fail_code(err, OC_ERR_NOMEM, "out of memory")
                         : oc_json_save(report, path, err) || roc_svg(roc, e, err) || risk_svg(risk, e, err) ? -1 : 0;
  free(roc); free(risk);
  return rc;
}

int oc_probe_config_write_calibration(const char *config_path, const oc_probe_eval *e, const char *data_path, oc_error *err) {
  if (!(e->threshold >= 0 && e->threshold <= 1))
    return oc_fail(err, "no pause threshold in [0, 1] keeps the false-positive rate at most %g on %s (a safe exchange scores 1): nothing written to %s",
                   e->target_fpr, data_path ? data_path : "the data", config_path);
  cJSON *j;
  if (oc_json_parse_file(config_path, &j, err)) return -1;
  if (!cJSON_IsObject(j)) { cJSON_Delete(j); return oc_fail(err, "%s: not a JSON object", config_path); }
  cJSON *cal = cJSON_CreateObject();
  cJSON_AddNumberToObject(cal, "pause_threshold", e->threshold);
  cJSON_AddNumberToObject(cal, "target_fpr", e->target_fpr);
  cJSON_AddItemToObject(cal, "fpr", num_or_null(e->fpr_at_threshold));
  cJSON_AddItemToObject(cal, "tpr", num_or_null(e->tpr_at_threshold));
  cJSON_AddStringToObject(cal, "data_path", data_path ? data_path : "");
  cJSON_AddNumberToObject(cal, "examples", e->n);
  cJSON_AddNumberToObject(cal, "unsafe", e->n_unsafe);
  cJSON_AddStringToObject(cal, "created_by", "opencon evaluate-probe");
  cJSON_DeleteItemFromObjectCaseSensitive(j, "pause_threshold");
  cJSON_DeleteItemFromObjectCaseSensitive(j, "calibration");
  int rc = !cJSON_AddNumberToObject(j, "pause_threshold", e->threshold) || !cJSON_AddItemToObject(j, "calibration", cal);
  if (rc) oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  else rc = oc_json_save(j, config_path, err);
  cJSON_Delete(j);
  return rc ? -1 : 0;
}
