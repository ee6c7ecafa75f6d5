/* Fitting a probe on a collection: split, train, score both sides; probe config; sweep plot. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/json.h"
#include "opencon/probe.h"

static void score_rows(const oc_probe *p, const float *X, const int64_t *idx, int n, float *s, int32_t *y,
                       const int32_t *ysrc) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++) {
    s[i] = oc_sigmoid(oc_probe_logit(p, X + (size_t)idx[i] * p->hidden));
    y[i] = ysrc[idx[i]];
  }
}

int oc_probe_fit_check_labels(const oc_activations *a, oc_error *err) {
  int64_t pos = 0;
  for (int i = 0; i < a->n; i++) {
    if (a->y[i] > 1)
      return oc_fail(err, "a probe needs binary labels (0 safe, 1 unsafe); example %d (line %lld) has label %d", i,
                     a->line ? (long long)a->line[i] : -1LL, a->y[i]);
    pos += a->y[i];
  }
  if (a->n < 4) return oc_fail(err, "need at least 4 examples to train a probe, got %d", a->n);
  if (pos == 0 || pos == a->n) return oc_fail(err, "a probe needs both labels; all %d examples have label %d", a->n, a->y[0]);
  return 0;
}

int oc_probe_fit_score(const oc_activations *a, const float *X, const int64_t *tr, int n_train, const int64_t *va, int n_val, double target_fpr,
                       oc_probe_fit *out, oc_error *err) {
  float *s = malloc(sizeof(float) * (size_t)a->n);
  int32_t *yy = malloc(sizeof(int32_t) * (size_t)a->n);
  if (!s || !yy) { free(s); free(yy); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  score_rows(&out->probe, X, tr, n_train, s, yy, a->y);
  oc_binary_metrics(s, yy, n_train, target_fpr, &out->train);
  if (n_val > 0) {
    score_rows(&out->probe, X, va, n_val, s, yy, a->y);
    oc_binary_metrics(s, yy, n_val, target_fpr, &out->val);
  } else {
    out->val = out->train;
  }
  free(s); free(yy);
  return 0;
}

int oc_probe_fit_layer(const oc_activations *a, int li, double validation_size, uint64_t split_seed, double target_fpr,
                       const oc_probe_train_opts *o, oc_probe_fit *out, oc_progress *prog, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (li < 0 || li >= a->n_layers) return oc_fail(err, "layer index %d out of range", li);
  if (oc_probe_fit_check_labels(a, err)) return -1;
  int64_t *tr = NULL, *va = NULL;
  if (oc_stratified_split(a->y, a->n, validation_size, split_seed, &tr, &out->n_train, &va, &out->n_val, err)) return -1;
  int rc = -1;
  if (oc_probe_train(a->X[li], a->hidden, a->y, tr, out->n_train, o, &out->probe, &out->final_loss, prog, err)) goto done;
  rc = oc_probe_fit_score(a, a->X[li], tr, out->n_train, va, out->n_val, target_fpr, out, err);
done:
  free(tr); free(va);
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
  c->aggregation = OC_AGG_LAST;
  c->aggregation_window = c->smoothing_window;
  c->aggregation_alpha = 0.5;
}

void oc_probe_config_free(oc_probe_config *c) {
  free(c->model_id);
  free(c->model_family);
  free(c->layers);
  memset(c, 0, sizeof *c);
}

/* "layers" and "combine": both absent (the single "layer"), or 1..OC_PROBE_MAX_LAYERS distinct
 * layers, the first of them "layer", combined as concat or mean */
static int probe_layers_check(const oc_probe_config *c, const char *where, oc_error *err) {
  if (c->n_layers == 0) {
    if (c->combine != OC_COMBINE_NONE) return oc_fail(err, "%s: \"combine\" is given without \"layers\"", where);
    return 0;
  }
  if (c->n_layers < 0 || c->n_layers > OC_PROBE_MAX_LAYERS || !c->layers)
    return oc_fail(err, "%s: \"layers\" must list 1 to %d layers, got %d", where, OC_PROBE_MAX_LAYERS, c->n_layers);
  if (c->combine != OC_COMBINE_CONCAT && c->combine != OC_COMBINE_MEAN)
    return oc_fail(err, "%s: \"combine\" must be \"concat\" or \"mean\" with \"layers\"", where);
  for (int k = 0; k < c->n_layers; k++)
    for (int j = 0; j < k; j++)
      if (c->layers[j] == c->layers[k]) return oc_fail(err, "%s: \"layers\" names layer %d twice", where, c->layers[k]);
  if (c->layer != c->layers[0]) return oc_fail(err, "%s: \"layer\" is %d but \"layers\" starts with %d", where, c->layer, c->layers[0]);
  return 0;
}

/* "layers" (an array of integers) and "combine" (a string) of a config; absent or null: none */
static int config_layers(const cJSON *j, oc_probe_config *c, const char *path, oc_error *err) {
  const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "layers"), *cb = cJSON_GetObjectItemCaseSensitive(j, "combine");
  if (cb && !cJSON_IsNull(cb)) {
    if (!cJSON_IsString(cb) || oc_probe_combine_from_name(cb->valuestring) < 0)
      return oc_fail(err, "%s: \"combine\" must be \"concat\" or \"mean\"", path);
    c->combine = oc_probe_combine_from_name(cb->valuestring);
  }
  if (!l || cJSON_IsNull(l)) return 0;
  const int n = cJSON_IsArray(l) ? cJSON_GetArraySize(l) : -1;
  if (n < 1 || n > OC_PROBE_MAX_LAYERS) return oc_fail(err, "%s: \"layers\" must be an array of 1 to %d integers", path, OC_PROBE_MAX_LAYERS);
  if (!(c->layers = malloc(sizeof(int) * (size_t)n))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  int k = 0;
  for (const cJSON *v = l->child; v; v = v->next, k++) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < -100000 || v->valuedouble > 100000)
      return oc_fail(err, "%s: \"layers\" item %d must be an integer in [-100000, 100000]", path, k + 1);
    c->layers[k] = (int)v->valuedouble;
  }
  c->n_layers = n;
  return 0;
}

int oc_probe_config_check(const oc_probe_config *c, const char *where, oc_error *err) {
  if (!(c->threshold >= 0 && c->threshold <= 1 && c->pause_threshold >= 0 && c->pause_threshold <= 1))
    return oc_fail(err, "%s: threshold and pause_threshold must be in [0, 1] (got %.17g and %.17g)", where, c->threshold, c->pause_threshold);
  if (c->probe_every_n_tokens < 1 || c->probe_every_n_tokens > OC_PROBE_MAX_EVERY_N)
    return oc_fail(err, "%s: probe_every_n_tokens must be in [1, %d], got %d", where, OC_PROBE_MAX_EVERY_N, c->probe_every_n_tokens);
  if (c->smoothing_window < 1 || c->smoothing_window > OC_PROBE_MAX_WINDOW)
    return oc_fail(err, "%s: smoothing_window must be in [1, %d], got %d", where, OC_PROBE_MAX_WINDOW, c->smoothing_window);
  if (c->aggregation < OC_AGG_LAST || c->aggregation > OC_AGG_MAX_ROLLING_MEAN) return oc_fail(err, "%s: \"aggregation\" is not one of last, ema, rolling_mean, max_rolling_mean", where);
  const int rolling = c->aggregation == OC_AGG_ROLLING_MEAN || c->aggregation == OC_AGG_MAX_ROLLING_MEAN;
  if (rolling && (c->aggregation_window < 1 || c->aggregation_window > OC_PROBE_MAX_WINDOW))
    return oc_fail(err, "%s: \"aggregation_window\" must be in [1, %d], got %d", where, OC_PROBE_MAX_WINDOW, c->aggregation_window);
  if (c->aggregation == OC_AGG_EMA && !(c->aggregation_alpha > 0 && c->aggregation_alpha <= 1))
    return oc_fail(err, "%s: \"aggregation_alpha\" must be in (0, 1], got %.17g", where, c->aggregation_alpha);
  if (c->hidden_size < 0 || c->hidden_size > OC_PROBE_MAX_HIDDEN) return oc_fail(err, "%s: hidden_size %d out of range", where, c->hidden_size);
  if (!isnan(c->calibrated_threshold) && !(c->calibrated_threshold >= 0 && c->calibrated_threshold <= 1))
    return oc_fail(err, "%s: calibrated_threshold must be in [0, 1] or null, got %g", where, c->calibrated_threshold);
  return probe_layers_check(c, where, err);
}

/* a number of the config: absent or null keeps *dst; an integer field must be a whole number
 * within int range (checked before any conversion) */
static int config_number(const cJSON *j, const char *key, int is_int, double *dst, const char *path, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return oc_fail(err, "%s: \"%s\" must be a finite number", path, key);
  double x = v->valuedouble;
  if (is_int && (x != floor(x) || x < -2147483648.0 || x > 2147483647.0)) return oc_fail(err, "%s: \"%s\" must be an integer in [-2147483648, 2147483647], got %.17g", path, key, x);
  *dst = x;
  return 0;
}

static int config_string(const cJSON *j, const char *key, char **dst, const char *path, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsString(v)) return oc_fail(err, "%s: \"%s\" must be a string", path, key);
  if (!(*dst = strdup(v->valuestring))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  return 0;
}

/* "aggregation" (a name), "aggregation_window" (default: the smoothing window) and
 * "aggregation_alpha"; absent keys keep the MVP's behaviour (the smoothing window's mean) */
static int config_aggregation(const cJSON *j, oc_probe_config *c, const char *path, oc_error *err) {
  char *name = NULL;
  double window = c->smoothing_window;
  if (config_string(j, "aggregation", &name, path, err) || config_number(j, "aggregation_window", 1, &window, path, err) ||
      config_number(j, "aggregation_alpha", 0, &c->aggregation_alpha, path, err)) {
    free(name);
    return -1;
  }
  int bad = name && oc_aggregation_parse(name, &c->aggregation);
  free(name);
  if (bad) return oc_fail(err, "%s: \"aggregation\" must be last, ema, rolling_mean or max_rolling_mean", path);
  const cJSON *wv = cJSON_GetObjectItemCaseSensitive(j, "aggregation_window");
  if (wv && !cJSON_IsNull(wv) && (window < 1 || window > OC_PROBE_MAX_WINDOW)) return oc_fail(err, "%s: \"aggregation_window\" must be in [1, %d], got %.17g", path, OC_PROBE_MAX_WINDOW, window);
  c->aggregation_window = (int)window;
  if (!(c->aggregation_alpha > 0 && c->aggregation_alpha <= 1))
    return oc_fail(err, "%s: \"aggregation_alpha\" must be in (0, 1], got %.17g", path, c->aggregation_alpha);
  return 0;
}

/* The text of DIR/config.json. A missing DIR may be a probe directory whose writer was killed
 * while replacing it: the recovery rule restores it, then the file is read again. */
static int read_probe_config(const char *path, char **text, size_t *len, oc_error *err) {
  if (oc_read_file(path, text, len, err) == 0) return 0;
  const char *slash = strrchr(path, '/');
  if (err->code != OC_ERR_NOT_FOUND || !slash || slash == path) return -1;
  char *dir = strndup(path, (size_t)(slash - path));
  int rc = -1;
  if (dir && !oc_is_dir(dir) && oc_artifact_dir_recover(dir, err) == 0) rc = oc_read_file(path, text, len, err);
  free(dir);
  return rc;
}

int oc_probe_config_load(const char *path, oc_probe_config *c, oc_error *err) {
  oc_probe_config_defaults(c);
  char *text;
  size_t len;
  if (read_probe_config(path, &text, &len, err)) return -1;
  cJSON *j;
  int prc = oc_json_parse(text, len, path, 1, &j, err);
  free(text);
  if (prc) return -1;
  if (!cJSON_IsObject(j)) { cJSON_Delete(j); return oc_fail(err, "%s: not a JSON object", path); }
  int rc = -1;
  double layer = c->layer, hidden = c->hidden_size, every = c->probe_every_n_tokens, window = c->smoothing_window;
  if (config_number(j, "layer", 1, &layer, path, err) || config_number(j, "hidden_size", 1, &hidden, path, err) ||
      config_number(j, "threshold", 0, &c->threshold, path, err) || config_number(j, "pause_threshold", 0, &c->pause_threshold, path, err) ||
      config_number(j, "probe_every_n_tokens", 1, &every, path, err) || config_number(j, "smoothing_window", 1, &window, path, err) ||
      config_number(j, "calibrated_threshold", 0, &c->calibrated_threshold, path, err) || config_string(j, "model_id", &c->model_id, path, err) ||
      config_string(j, "model_family", &c->model_family, path, err) || config_layers(j, c, path, err))
    goto done;
  c->layer = (int)layer;
  if (c->n_layers > 0 && !cJSON_GetObjectItemCaseSensitive(j, "layer")) c->layer = c->layers[0];
  c->hidden_size = (int)hidden;
  c->probe_every_n_tokens = (int)every;
  c->smoothing_window = (int)window;
  if (config_aggregation(j, c, path, err)) goto done;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "use_chat_template");
  if (v && !cJSON_IsBool(v)) { oc_fail(err, "%s: \"use_chat_template\" must be true or false", path); goto done; }
  if (v) c->use_chat_template = cJSON_IsTrue(v);
  if (!c->model_id || !c->model_id[0]) {
    oc_fail(err, "%s: \"model_id\" is missing (a probe reads one model's hidden states; its config must name the model)", path);
    goto done;
  }
  if (oc_probe_config_check(c, path, err)) goto done;
  rc = 0;
done:
  cJSON_Delete(j);
  if (rc) oc_probe_config_free(c);
  return rc;
}

cJSON *oc_probe_fit_metrics_json(const oc_probe_fit *f, double validation_size) {
  cJSON *m = oc_metrics_json(&f->val);
  cJSON_AddStringToObject(m, "split", validation_size > 0 && f->n_val > 0 ? "validation" : "train");
  return m;
}

/* config.json of a probe: the MVP's keys first, then how it was made. */
static cJSON *probe_config_json(const oc_probe_config *c, const oc_probe_provenance *p) {
  const oc_probe_fit *fit = p->fit;
  const oc_probe_train_opts *t = p->train;
  cJSON *cfg = cJSON_CreateObject();
  cJSON_AddStringToObject(cfg, "model_id", c->model_id ? c->model_id : "");
  cJSON_AddStringToObject(cfg, "model_family", c->model_family ? c->model_family : "");
  cJSON_AddNumberToObject(cfg, "layer", c->layer);
  if (c->n_layers > 0) { /* a multi-layer probe; "layer" is its first layer */
    cJSON *ls = cJSON_AddArrayToObject(cfg, "layers");
    for (int k = 0; k < c->n_layers; k++) cJSON_AddItemToArray(ls, cJSON_CreateNumber(c->layers[k]));
    cJSON_AddStringToObject(cfg, "combine", oc_probe_combine_name(c->combine));
  }
  cJSON_AddNumberToObject(cfg, "hidden_size", c->hidden_size);
  cJSON_AddNumberToObject(cfg, "threshold", c->threshold);
  cJSON_AddNumberToObject(cfg, "pause_threshold", c->pause_threshold);
  cJSON_AddNumberToObject(cfg, "probe_every_n_tokens", c->probe_every_n_tokens);
  cJSON_AddNumberToObject(cfg, "smoothing_window", c->smoothing_window);
  cJSON_AddBoolToObject(cfg, "use_chat_template", c->use_chat_template);
  cJSON_AddStringToObject(cfg, "aggregation", oc_aggregation_name(c->aggregation));
  if (c->aggregation == OC_AGG_ROLLING_MEAN || c->aggregation == OC_AGG_MAX_ROLLING_MEAN) cJSON_AddNumberToObject(cfg, "aggregation_window", c->aggregation_window);
  if (c->aggregation == OC_AGG_EMA) cJSON_AddNumberToObject(cfg, "aggregation_alpha", c->aggregation_alpha);
  cJSON_AddItemToObject(cfg, "metrics", oc_probe_fit_metrics_json(fit, p->validation_size));
  cJSON_AddItemToObject(cfg, "train_metrics", oc_metrics_json(&fit->train));
  if (p->token_level && c->n_layers > 0)
    cJSON_AddStringToObject(cfg, "note", "Linear probe on the hidden states of `layers` (transformers' hidden_states indices) at every response "
                                         "token, concatenated in that order, trained with `token_weighting` and combined as `combine` says; risk = "
                                         "sigmoid(head.weight . [h_layers[0] | h_layers[1] | ...] + head.bias). `metrics` score an exchange by "
                                         "its highest token risk on the held-out split.");
  else if (p->token_level)
    cJSON_AddStringToObject(cfg, "note", "Linear probe on the hidden state of `layer` (transformers' hidden_states index) at every response token, "
                                         "trained with `token_weighting`; risk = sigmoid(head.weight . h + head.bias). `metrics` score an exchange "
                                         "by its highest token risk on the held-out split.");
  else if (c->n_layers > 0)
    cJSON_AddStringToObject(cfg, "note", "Linear probe on the final-token hidden states of `layers` (transformers' hidden_states indices), "
                                         "concatenated in that order: risk = sigmoid(head.weight . [h_layers[0] | h_layers[1] | ...] + head.bias); "
                                         "`combine` says how it was trained. `metrics` are on the held-out split.");
  else
    cJSON_AddStringToObject(cfg, "note", "Linear probe on the final-token hidden state of `layer` (transformers' hidden_states index); "
                                         "risk = sigmoid(head.weight . h + head.bias). `metrics` are on the held-out split.");
  if (isfinite(c->calibrated_threshold)) cJSON_AddNumberToObject(cfg, "calibrated_threshold", c->calibrated_threshold);
  else cJSON_AddNullToObject(cfg, "calibrated_threshold");
  cJSON_AddNumberToObject(cfg, "target_fpr", p->target_fpr);
  cJSON_AddStringToObject(cfg, "probe_file", "probe.safetensors");
  cJSON_AddNumberToObject(cfg, "validation_size", p->validation_size);
  cJSON_AddNumberToObject(cfg, "n_train", fit->n_train);
  cJSON_AddNumberToObject(cfg, "n_validation", fit->n_val);
  cJSON_AddNumberToObject(cfg, "epochs", t->epochs);
  cJSON_AddNumberToObject(cfg, "lr", t->lr);
  cJSON_AddNumberToObject(cfg, "weight_decay", t->weight_decay);
  cJSON_AddNumberToObject(cfg, "batch_size", t->batch_size);
  cJSON_AddNumberToObject(cfg, "seed", (double)t->seed);
  cJSON_AddBoolToObject(cfg, "standardize", t->standardize);
  if (p->token_level) { /* trained on the response tokens (train-probe --token_level) */
    cJSON_AddBoolToObject(cfg, "token_level", 1);
    cJSON_AddStringToObject(cfg, "token_weighting", oc_token_weighting_name(p->token_weighting));
    cJSON_AddNumberToObject(cfg, "max_tokens_per_example", p->max_tokens_per_example);
  }
  cJSON_AddNumberToObject(cfg, "final_train_loss", fit->final_loss);
  cJSON_AddNumberToObject(cfg, "max_length", p->max_length);
  if (p->data_path) cJSON_AddStringToObject(cfg, "data_path", p->data_path);
  if (p->activations) cJSON_AddStringToObject(cfg, "activations", p->activations);
  if (p->weights) cJSON_AddStringToObject(cfg, "weights", p->weights);
  cJSON_AddNumberToObject(cfg, "max_examples", (double)p->max_examples);
  cJSON_AddNumberToObject(cfg, "sample_seed", (double)p->sample_seed);
  cJSON_AddStringToObject(cfg, "created_by", "opencon");
  return cfg;
}

int oc_probe_artifact_save(const char *dir, const oc_probe *probe, const oc_probe_config *c, const oc_probe_provenance *p,
                           oc_error *err) {
  /* never write a probe the guard would refuse to load */
  if (oc_probe_config_check(c, dir, err) || oc_probe_check(probe, dir, err)) return -1;
  if (!c->model_id || !c->model_id[0]) return oc_fail(err, "%s: the probe config names no model_id", dir);
  cJSON *cfg = probe_config_json(c, p);
  char *js = cfg ? cJSON_Print(cfg) : NULL;
  cJSON_Delete(cfg);
  if (!js) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  oc_atomic_dir d;
  if (oc_atomic_dir_open(&d, dir, err)) { free(js); return -1; }
  char *pp = oc_atomic_dir_file(&d, "probe.safetensors"), *cp = oc_atomic_dir_file(&d, "config.json");
  int rc = !pp || !cp ? oc_fail_code(err, OC_ERR_NOMEM, "out of memory")
                      : oc_probe_save(probe, pp, err) || oc_write_file_atomic(cp, js, strlen(js), err) ? -1 : 0;
  free(pp); free(cp); free(js);
  if (rc) { oc_atomic_dir_abort(&d); return oc_wrap(err, "%s", dir); }
  return oc_atomic_dir_commit(&d, err);
}

/* the plot of ROC AUC and F1 with the variants named by ticks */
static int sweep_svg_ticks(const char *path, const char *const *ticks, int n, const double *auc, const double *f1, oc_error *err) {
  double *x = calloc((size_t)(n ? n : 1), sizeof *x);
  if (!x) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (int i = 0; i < n; i++) x[i] = i;
  const char *names[2] = {"ROC AUC", "F1"};
  const double *ys[2] = {auc, f1};
  int rc = oc_svg_plot(path, "Probe quality by layer (held-out)", "layer (hidden_states index)", x, ticks, n, 2, names, ys, err);
  free(x);
  return rc;
}

int oc_sweep_svg(const char *path, const int *layers, int n, const double *auc, const double *f1, oc_error *err) {
  char (*ticks)[16] = calloc((size_t)(n ? n : 1), sizeof *ticks);
  const char **tp = calloc((size_t)(n ? n : 1), sizeof *tp);
  if (!ticks || !tp) { free(ticks); free(tp); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (int i = 0; i < n; i++) { snprintf(ticks[i], sizeof ticks[i], "%d", layers[i]); tp[i] = ticks[i]; }
  int rc = sweep_svg_ticks(path, tp, n, auc, f1, err);
  free(ticks); free(tp);
  return rc;
}

/* the report, then its plot (plot(svg) or the labeled one); the old plot removed first */
static int sweep_save(const char *path, const char *report_json, const int *layers, const char *const *labels, int n, const double *auc,
                      const double *f1, oc_error *err) {
  char *svg = oc_path_sibling(path, ".svg");
  if (!svg) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  remove(svg);
  int rc = oc_write_file_atomic(path, report_json, strlen(report_json), err) ||
                   (labels ? sweep_svg_ticks(svg, labels, n, auc, f1, err) : oc_sweep_svg(svg, layers, n, auc, f1, err))
               ? -1
               : 0;
  free(svg);
  return rc;
}

int oc_sweep_save(const char *path, const char *report_json, const int *layers, int n, const double *auc, const double *f1, oc_error *err) {
  return sweep_save(path, report_json, layers, NULL, n, auc, f1, err);
}

int oc_sweep_save_labeled(const char *path, const char *report_json, const char *const *labels, int n, const double *auc, const double *f1,
                          oc_error *err) {
  return sweep_save(path, report_json, NULL, labels, n, auc, f1, err);
}

int oc_sweep_layers(const oc_activations *a, const int *layers, int n, double validation_size, uint64_t split_seed, double target_fpr,
                    const oc_probe_train_opts *t, oc_progress *prog, cJSON **report, double *auc, double *f1, oc_error *err) {
  const int64_t steps_per = (int64_t)t->epochs * ((a->n + t->batch_size - 1) / t->batch_size);
  oc_progress_keys(prog, "step", "total_steps");
  prog->unit = "steps";
  oc_progress_phase(prog, "training_probe", 0, steps_per * n);
  cJSON *res = *report = cJSON_CreateObject();
  if (!res) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (int i = 0; i < n; i++) {
    oc_probe_fit fit;
    prog->base = steps_per * i;
    int li = oc_activations_find(a, layers[i]);
    if (li < 0 || oc_probe_fit_layer(a, li, validation_size, split_seed, target_fpr, t, &fit, prog, err)) {
      if (li < 0) oc_fail(err, "layer %d is not in the collection", layers[i]);
      cJSON_Delete(res);
      *report = NULL;
      prog->base = 0;
      return oc_wrap(err, "layer %d", layers[i]);
    }
    char key[32];
    snprintf(key, sizeof key, "%d", layers[i]);
    cJSON_AddItemToObject(res, key, oc_probe_fit_metrics_json(&fit, validation_size));
    auc[i] = fit.val.roc_auc;
    f1[i] = fit.val.f1;
    oc_probe_fit_free(&fit);
  }
  prog->base = 0;
  return 0;
}

void oc_probe_config_from_fit(oc_probe_config *c, const oc_activations *a, int layer, const oc_probe_fit *fit, const char *fallback_model_id) {
  c->model_id = a->model_id && a->model_id[0] ? a->model_id : (char *)fallback_model_id;
  c->model_family = a->model_family;
  c->layer = layer;
  c->hidden_size = a->hidden;
  c->use_chat_template = a->use_chat_template;
  c->calibrated_threshold = fit->val.threshold_at_fpr;
}

int oc_probe_config_pause_at_calibrated(oc_probe_config *c, oc_error *err) {
  if (!(c->calibrated_threshold >= 0 && c->calibrated_threshold <= 1))
    return oc_fail(err, "no calibrated threshold to pause at (it needs safe exchanges in the held-out split: --validation_size above 0)");
  c->pause_threshold = c->calibrated_threshold;
  if (c->threshold > c->pause_threshold) c->threshold = c->pause_threshold;
  return 0;
}
