/* Probes over several layers (issue 23): fitting a concatenated or logit-averaged probe, the
 * combination names, the --combinations list, and the sweep over single layers and combinations.
 * Either combination is stored as one linear head over the concatenated hidden states
 * [layers[0] | layers[1] | ...], which is what the guard taps in one forward step. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/json.h"
#include "opencon/probe.h"
#include "train.h"

/* fit.c: the label checks of a fit, and its metrics on both sides of the split from rows X */
int oc_probe_fit_check_labels(const oc_activations *a, oc_error *err);
int oc_probe_fit_score(const oc_activations *a, const float *X, const int64_t *tr, int n_train, const int64_t *va, int n_val, double target_fpr,
                       oc_probe_fit *out, oc_error *err);

const char *oc_probe_combine_name(int combine) {
  return combine == OC_COMBINE_CONCAT ? "concat" : combine == OC_COMBINE_MEAN ? "mean" : "none";
}

int oc_probe_combine_from_name(const char *name) {
  if (name && strcmp(name, "concat") == 0) return OC_COMBINE_CONCAT;
  if (name && strcmp(name, "mean") == 0) return OC_COMBINE_MEAN;
  return -1;
}

int oc_probe_config_layers(const oc_probe_config *c, const int **layers) {
  if (c->n_layers > 0) { *layers = c->layers; return c->n_layers; }
  *layers = &c->layer;
  return 1;
}

int64_t oc_probe_fit_steps(int n, int nl, int combine, const oc_probe_train_opts *o) {
  const int64_t per = (int64_t)o->epochs * ((n + o->batch_size - 1) / o->batch_size);
  return nl > 1 && combine == OC_COMBINE_MEAN ? per * nl : per;
}

/* rows [n][nl * H]: row i is a->X[lis[0]][i] | a->X[lis[1]][i] | ... */
static float *concat_rows(const oc_activations *a, const int *lis, int nl, oc_error *err) {
  const size_t H = (size_t)a->hidden, W = H * (size_t)nl;
  float *X = (size_t)a->n <= SIZE_MAX / sizeof(float) / W ? malloc(sizeof(float) * W * (size_t)a->n) : NULL;
  if (!X) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory (%d examples x %d layers x %d)", a->n, nl, a->hidden); return NULL; }
  for (size_t i = 0; i < (size_t)a->n; i++)
    for (int k = 0; k < nl; k++) memcpy(X + i * W + (size_t)k * H, a->X[lis[k]] + i * H, sizeof(float) * H);
  return X;
}

void oc_probe_mean_put(float *w, int l, int nl, const oc_probe *one, double *bias) {
  const size_t H = (size_t)one->hidden;
  for (size_t j = 0; j < H; j++) w[(size_t)l * H + j] = one->w[j] / (float)nl;
  *bias += one->b;
}

/* MEAN: one probe per layer on the same split, folded into one head over the concatenation:
 * mean_k (w_k . h_k + b_k) == sum_k (w_k / nl) . h_k + mean_k b_k */
static int train_mean(const oc_activations *a, const int *lis, int nl, const int64_t *tr, int n_train, const oc_probe_train_opts *o, oc_probe *out,
                      double *final_loss, oc_progress *prog, oc_error *err) {
  const size_t H = (size_t)a->hidden;
  memset(out, 0, sizeof *out);
  out->hidden = (int)(H * (size_t)nl);
  if (!(out->w = malloc(sizeof(float) * H * (size_t)nl))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  const int64_t base = prog ? prog->base : 0, per = oc_probe_fit_steps(n_train, 1, OC_COMBINE_CONCAT, o);
  double bias = 0, loss = 0;
  for (int k = 0; k < nl; k++) {
    oc_probe one;
    double lk;
    if (prog) prog->base = base + per * k;
    if (oc_probe_train(a->X[lis[k]], a->hidden, a->y, tr, n_train, o, &one, &lk, prog, err)) {
      if (prog) prog->base = base;
      oc_probe_free(out);
      return oc_wrap(err, "layer %d", a->layers[lis[k]]);
    }
    oc_probe_mean_put(out->w, k, nl, &one, &bias);
    loss += lk;
    oc_probe_free(&one);
  }
  if (prog) prog->base = base;
  out->b = (float)(bias / nl);
  if (final_loss) *final_loss = loss / nl; /* the mean of the per-layer probes' final losses */
  return 0;
}

int oc_probe_fit_layers(const oc_activations *a, const int *lis, int nl, int combine, double validation_size, uint64_t split_seed,
                        double target_fpr, const oc_probe_train_opts *o, oc_probe_fit *out, oc_progress *prog, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (nl < 1 || nl > OC_PROBE_MAX_LAYERS) return oc_fail(err, "a probe reads 1 to %d layers, not %d", OC_PROBE_MAX_LAYERS, nl);
  for (int k = 0; k < nl; k++) {
    if (lis[k] < 0 || lis[k] >= a->n_layers) return oc_fail(err, "layer index %d out of range", lis[k]);
    for (int j = 0; j < k; j++)
      if (lis[j] == lis[k]) return oc_fail(err, "layer %d is given twice (as %d and %d)", a->layers[lis[k]], a->layers[lis[j]], a->layers[lis[k]]);
  }
  if (nl == 1) return oc_probe_fit_layer(a, lis[0], validation_size, split_seed, target_fpr, o, out, prog, err);
  if (combine != OC_COMBINE_CONCAT && combine != OC_COMBINE_MEAN) return oc_fail(err, "a probe over %d layers needs combine concat or mean", nl);
  int rc = oc_probe_fit_check_labels(a, err);
  if (rc) return rc;
  float *X = concat_rows(a, lis, nl, err);
  if (!X) return -1;
  int64_t *tr = NULL, *va = NULL;
  rc = -1;
  if (oc_stratified_split(a->y, a->n, validation_size, split_seed, &tr, &out->n_train, &va, &out->n_val, err)) goto done;
  if (combine == OC_COMBINE_CONCAT) {
    oc_probe_train_opts oc = *o;
    oc.standardize = 1; /* layers differ in scale by orders of magnitude: standardize every feature */
    oc.init_w = NULL;
    if (oc_probe_train(X, a->hidden * nl, a->y, tr, out->n_train, &oc, &out->probe, &out->final_loss, prog, err)) goto done;
  } else if (train_mean(a, lis, nl, tr, out->n_train, o, &out->probe, &out->final_loss, prog, err)) {
    goto done;
  }
  rc = oc_probe_fit_score(a, X, tr, out->n_train, va, out->n_val, target_fpr, out, err);
done:
  free(X); free(tr); free(va);
  if (rc) oc_probe_free(&out->probe);
  return rc;
}

int oc_parse_layer_groups(const char *s, int **layers, int **sizes, int *n_groups, oc_error *err) {
  *layers = NULL;
  *sizes = NULL;
  *n_groups = 0;
  int cap = 0, used = 0, ng = 0, *L = NULL, *S = NULL;
  const char *p = s;
  for (;;) {
    size_t len = strcspn(p, ";");
    if (ng == 256) { oc_fail(err, "more than 256 groups"); goto fail; }
    char *g = strndup(p, len);
    int64_t *v = NULL;
    int n = 0;
    if (!g) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto fail; }
    int prc = len == 0 ? oc_fail(err, "group %d is empty", ng + 1) : oc_parse_int_list(g, &v, &n, err);
    free(g);
    if (prc) { oc_wrap(err, "group %d", ng + 1); goto fail; }
    if (n > OC_PROBE_MAX_LAYERS) { free(v); oc_fail(err, "group %d has %d layers (at most %d)", ng + 1, n, OC_PROBE_MAX_LAYERS); goto fail; }
    if (used + n > cap) {
      cap = (used + n) * 2;
      int *nl = realloc(L, sizeof *L * (size_t)cap);
      if (!nl) { free(v); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto fail; }
      L = nl;
    }
    int *ns = realloc(S, sizeof *S * (size_t)(ng + 1));
    if (!ns) { free(v); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto fail; }
    S = ns;
    for (int k = 0; k < n; k++) {
      if (v[k] < -100000 || v[k] > 100000) {
        oc_fail(err, "group %d: item %d is %lld; each must be in [-100000, 100000]", ng + 1, k + 1, (long long)v[k]);
        free(v);
        goto fail;
      }
      for (int j = 0; j < k; j++)
        if (v[j] == v[k]) { oc_fail(err, "group %d: layer %lld is given twice", ng + 1, (long long)v[k]); free(v); goto fail; }
      L[used + k] = (int)v[k];
    }
    free(v);
    used += n;
    S[ng++] = n;
    if (!p[len]) break;
    p += len + 1;
    if (!*p) { oc_fail(err, "group %d is empty", ng + 1); goto fail; } /* a trailing ';' */
  }
  *layers = L;
  *sizes = S;
  *n_groups = ng;
  return 0;
fail:
  free(L); free(S);
  return -1;
}

/* "-4" or "-4,-8,-12" */
static char *variant_label(const int *layers, int n) {
  char *s = malloc((size_t)n * 12 + 1);
  if (!s) return NULL;
  size_t at = 0;
  for (int k = 0; k < n; k++) at += (size_t)sprintf(s + at, "%s%d", k ? "," : "", layers[k]);
  return s;
}

int oc_sweep_variants(const oc_activations *a, const int *layers, const int *sizes, int n, int combine, double validation_size, uint64_t split_seed,
                      double target_fpr, const oc_probe_train_opts *t, oc_progress *prog, cJSON **report, char ***labels, double *auc, double *f1,
                      oc_error *err) {
  *report = NULL;
  *labels = NULL;
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += oc_probe_fit_steps(a->n, sizes[i], combine, t);
  oc_progress_keys(prog, "step", "total_steps");
  prog->unit = "steps";
  oc_progress_phase(prog, "training_probe", 0, total);
  cJSON *res = cJSON_CreateObject();
  char **lab = calloc((size_t)(n ? n : 1), sizeof *lab);
  if (!res || !lab) { cJSON_Delete(res); free(lab); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  int rc = -1, at = 0, i = 0;
  prog->base = 0;
  for (; i < n; at += sizes[i++]) {
    int lis[OC_PROBE_MAX_LAYERS];
    if (sizes[i] < 1 || sizes[i] > OC_PROBE_MAX_LAYERS) { oc_fail(err, "variant %d has %d layers (1..%d)", i + 1, sizes[i], OC_PROBE_MAX_LAYERS); goto done; }
    if (!(lab[i] = variant_label(layers + at, sizes[i]))) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
    for (int k = 0; k < sizes[i]; k++)
      if ((lis[k] = oc_activations_find(a, layers[at + k])) < 0) { oc_fail(err, "layer %d is not in the collection", layers[at + k]); goto done; }
    oc_probe_fit fit;
    if (oc_probe_fit_layers(a, lis, sizes[i], combine, validation_size, split_seed, target_fpr, t, &fit, prog, err)) goto done;
    cJSON *m = oc_probe_fit_metrics_json(&fit, validation_size);
    if (sizes[i] > 1) {
      cJSON *ls = cJSON_AddArrayToObject(m, "layers");
      for (int k = 0; k < sizes[i]; k++) cJSON_AddItemToArray(ls, cJSON_CreateNumber(layers[at + k]));
      cJSON_AddStringToObject(m, "combine", oc_probe_combine_name(combine));
    }
    cJSON_AddItemToObject(res, lab[i], m);
    auc[i] = fit.val.roc_auc;
    f1[i] = fit.val.f1;
    prog->base += oc_probe_fit_steps(a->n, sizes[i], combine, t);
    oc_probe_fit_free(&fit);
  }
  rc = 0;
done:
  prog->base = 0;
  if (rc) {
    if (lab[i]) oc_wrap(err, "layers %s", lab[i]);
    for (int k = 0; k < n; k++) free(lab[k]);
    free(lab);
    cJSON_Delete(res);
    return -1;
  }
  *report = res;
  *labels = lab;
  return 0;
}
