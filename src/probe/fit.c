/* Fitting a probe on a collection: split, train, score both sides; probe config; sweep plot. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/probe.h"

static void score_rows(const oc_probe *p, const float *X, const int64_t *idx, int n, float *s, int32_t *y,
                       const int32_t *ysrc) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) {
    s[i] = oc_sigmoid(oc_probe_logit(p, X + (size_t)idx[i] * p->hidden));
    y[i] = ysrc[idx[i]];
  }
}

int oc_probe_fit_layer(const oc_activations *a, int li, double validation_size, uint64_t split_seed, double target_fpr,
                       const oc_probe_train_opts *o, oc_probe_fit *out, oc_progress *prog, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (li < 0 || li >= a->n_layers) return oc_fail(err, "layer index %d out of range", li);
  int64_t pos = 0;
  for (int i = 0; i < a->n; i++) {
    if (a->y[i] > 1)
      return oc_fail(err, "a probe needs binary labels (0 safe, 1 unsafe); example %d (line %lld) has label %d", i,
                     a->line ? (long long)a->line[i] : -1LL, a->y[i]);
    pos += a->y[i];
  }
  if (a->n < 4) return oc_fail(err, "need at least 4 examples to train a probe, got %d", a->n);
  if (pos == 0 || pos == a->n) return oc_fail(err, "a probe needs both labels; all %d examples have label %d", a->n, a->y[0]);
  int64_t *tr = NULL, *va = NULL;
  if (oc_stratified_split(a->y, a->n, validation_size, split_seed, &tr, &out->n_train, &va, &out->n_val, err)) return -1;
  float *s = malloc(sizeof(float) * (size_t)a->n);
  int32_t *yy = malloc(sizeof(int32_t) * (size_t)a->n);
  int rc = -1;
  if (!s || !yy) { oc_fail(err, "out of memory"); goto done; }
  if (oc_probe_train(a->X[li], a->hidden, a->y, tr, out->n_train, o, &out->probe, &out->final_loss, prog, err)) goto done;
  score_rows(&out->probe, a->X[li], tr, out->n_train, s, yy, a->y);
  oc_binary_metrics(s, yy, out->n_train, target_fpr, &out->train);
  if (out->n_val > 0) {
    score_rows(&out->probe, a->X[li], va, out->n_val, s, yy, a->y);
    oc_binary_metrics(s, yy, out->n_val, target_fpr, &out->val);
  } else {
    out->val = out->train;
  }
  rc = 0;
done:
  free(s); free(yy); free(tr); free(va);
  if (rc) oc_probe_free(&out->probe);
  return rc;
}

void oc_probe_fit_free(oc_probe_fit *f) { oc_probe_free(&f->probe); }

void oc_probe_config_defaults(oc_probe_config *c) {
  memset(c, 0, sizeof *c);
  c->layer = -4;
  c->threshold = 0.65;
  c->pause_threshold = 0.75;
  c->probe_every_n_tokens = 4;
  c->smoothing_window = 4;
  c->use_chat_template = 1;
  c->calibrated_threshold = NAN;
}

void oc_probe_config_free(oc_probe_config *c) {
  free(c->model_id);
  free(c->model_family);
  memset(c, 0, sizeof *c);
}

int oc_probe_config_load(const char *path, oc_probe_config *c, oc_error *err) {
  oc_probe_config_defaults(c);
  char *text;
  if (oc_read_file(path, &text, NULL, err)) return -1;
  cJSON *j = cJSON_Parse(text);
  free(text);
  if (!j || !cJSON_IsObject(j)) { cJSON_Delete(j); return oc_fail(err, "%s: not a JSON object", path); }
  int rc = -1;
  const cJSON *v;
#define NUM(key, dst, isint)                                                                              \
  if ((v = cJSON_GetObjectItemCaseSensitive(j, key)) && !cJSON_IsNull(v)) {                             \
    if (!cJSON_IsNumber(v)) { oc_fail(err, "%s: \"%s\" must be a number", path, key); goto done; }      \
    if (isint && v->valuedouble != (double)(int)v->valuedouble) { oc_fail(err, "%s: \"%s\" must be an integer", path, key); goto done; } \
    dst = v->valuedouble;                                                                                 \
  }
  NUM("layer", c->layer, 1)
  NUM("hidden_size", c->hidden_size, 1)
  NUM("threshold", c->threshold, 0)
  NUM("pause_threshold", c->pause_threshold, 0)
  NUM("probe_every_n_tokens", c->probe_every_n_tokens, 1)
  NUM("smoothing_window", c->smoothing_window, 1)
  NUM("calibrated_threshold", c->calibrated_threshold, 0)
#undef NUM
  if ((v = cJSON_GetObjectItemCaseSensitive(j, "use_chat_template"))) c->use_chat_template = cJSON_IsTrue(v);
  if ((v = cJSON_GetObjectItemCaseSensitive(j, "model_id")) && cJSON_IsString(v)) c->model_id = strdup(v->valuestring);
  if ((v = cJSON_GetObjectItemCaseSensitive(j, "model_family")) && cJSON_IsString(v)) c->model_family = strdup(v->valuestring);
  if (c->probe_every_n_tokens < 1 || c->smoothing_window < 1) { oc_fail(err, "%s: probe_every_n_tokens and smoothing_window must be >= 1", path); goto done; }
  if (!(c->threshold >= 0 && c->threshold <= 1 && c->pause_threshold >= 0 && c->pause_threshold <= 1)) {
    oc_fail(err, "%s: threshold and pause_threshold must be in [0, 1]", path);
    goto done;
  }
  rc = 0;
done:
  cJSON_Delete(j);
  if (rc) oc_probe_config_free(c);
  return rc;
}

int oc_sweep_svg(const char *path, const int *layers, int n, const double *auc, const double *f1, oc_error *err) {
  const double W = 640, Hh = 400, L = 60, R = 130, T = 40, B = 50;
  double pw = W - L - R, ph = Hh - T - B;
  size_t cap = 8192 + (size_t)n * 512;
  char *s = malloc(cap);
  if (!s) return oc_fail(err, "out of memory");
  size_t k = 0;
#define P(...) k += (size_t)snprintf(s + k, cap - k, __VA_ARGS__)
  P("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, Hh, W, Hh);
  P("<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  P("<text x=\"%.0f\" y=\"22\" font-size=\"15\">Probe quality by layer (held-out)</text>\n", L);
  for (int t = 0; t <= 10; t += 2) { /* y grid 0..1 */
    double y = T + ph * (1 - t / 10.0);
    P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, y, L + pw, y);
    P("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.1f</text>\n", L - 6, y + 4, t / 10.0);
  }
  P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L, T + ph, L + pw, T + ph);
  P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L, T, L, T + ph);
  for (int i = 0; i < n; i++) {
    double x = L + (n > 1 ? pw * i / (n - 1) : pw / 2);
    P("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n", x, T + ph + 18, layers[i]);
  }
  P("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">layer (hidden_states index)</text>\n", L + pw / 2, Hh - 10);
  const double *series[2] = {auc, f1};
  const char *color[2] = {"#1f77b4", "#d62728"}, *label[2] = {"ROC AUC", "F1"};
  for (int sI = 0; sI < 2; sI++) {
    P("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color[sI]);
    for (int i = 0; i < n; i++) {
      if (!isfinite(series[sI][i])) continue;
      double x = L + (n > 1 ? pw * i / (n - 1) : pw / 2), y = T + ph * (1 - series[sI][i]);
      P("%.1f,%.1f ", x, y);
    }
    P("\"/>\n");
    for (int i = 0; i < n; i++) {
      if (!isfinite(series[sI][i])) continue;
      double x = L + (n > 1 ? pw * i / (n - 1) : pw / 2), y = T + ph * (1 - series[sI][i]);
      P("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s layer %d: %.4f</title></circle>\n", x, y, color[sI],
        label[sI], layers[i], series[sI][i]);
    }
    P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", L + pw + 15, T + 20.0 + 20 * sI,
      L + pw + 40, T + 20.0 + 20 * sI, color[sI]);
    P("<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L + pw + 46, T + 24.0 + 20 * sI, label[sI]);
  }
  P("</svg>\n");
#undef P
  int rc = oc_write_file_atomic(path, s, k, err);
  free(s);
  return rc;
}
