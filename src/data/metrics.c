/* Metrics of binary scores against labels, shared by probes and the exchange classifier:
 * accuracy/precision/recall/F1 at 0.5, ROC AUC, the threshold for a target false-positive rate,
 * a calibration curve. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/dataset.h"

typedef struct { float s; int y; } scored;
static int cmp_scored(const void *a, const void *b) {
  float x = ((const scored *)a)->s, z = ((const scored *)b)->s;
  return (x > z) - (x < z);
}

double oc_roc_auc(const float *scores, const int32_t *y, int n) {
  scored *v = malloc(sizeof *v * (size_t)(n ? n : 1));
  if (!v) return NAN;
  int64_t np = 0;
  for (int i = 0; i < n; i++) {
    if (isnan(scores[i])) { free(v); return NAN; } /* no ranking (and NaN != NaN never ended the tie loop below) */
    v[i].s = scores[i];
    v[i].y = y[i] != 0;
    np += v[i].y;
  }
  int64_t nn = n - np;
  if (np == 0 || nn == 0) { free(v); return NAN; }
  qsort(v, (size_t)n, sizeof *v, cmp_scored);
  /* Mann-Whitney U with average ranks for ties (== sklearn's trapezoidal AUC) */
  double rank_sum = 0;
  for (int i = 0; i < n;) {
    int j = i;
    while (j < n && v[j].s == v[i].s) j++;
    double avg = 0.5 * ((double)(i + 1) + (double)j);
    for (int k = i; k < j; k++) if (v[k].y) rank_sum += avg;
    i = j;
  }
  free(v);
  return (rank_sum - (double)np * (double)(np + 1) / 2.0) / ((double)np * (double)nn);
}

static int cmp_desc_f(const void *a, const void *b) {
  float x = *(const float *)a, z = *(const float *)b;
  return (x < z) - (x > z);
}

void oc_binary_metrics(const float *scores, const int32_t *y, int n, double target_fpr, oc_metrics *m) {
  memset(m, 0, sizeof *m);
  m->n = n;
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  for (int i = 0; i < n; i++) {
    int pred = scores[i] >= 0.5f, pos = y[i] != 0;
    m->n_pos += pos;
    tp += pred && pos; fp += pred && !pos; tn += !pred && !pos; fn += !pred && pos;
    int bin = (int)(scores[i] * OC_CALIB_BINS);
    if (bin >= OC_CALIB_BINS) bin = OC_CALIB_BINS - 1;
    if (bin < 0) bin = 0;
    m->calib_count[bin]++;
    m->calib_mean_score[bin] += scores[i];
    m->calib_frac_pos[bin] += pos;
  }
  for (int k = 0; k < OC_CALIB_BINS; k++)
    if (m->calib_count[k]) { m->calib_mean_score[k] /= m->calib_count[k]; m->calib_frac_pos[k] /= m->calib_count[k]; }
  m->accuracy = n ? (double)(tp + tn) / n : 0;
  m->precision = tp + fp ? (double)tp / (double)(tp + fp) : 0; /* sklearn's zero_division=0 */
  m->recall = tp + fn ? (double)tp / (double)(tp + fn) : 0;
  m->f1 = m->precision + m->recall > 0 ? 2 * m->precision * m->recall / (m->precision + m->recall) : 0;
  m->roc_auc = oc_roc_auc(scores, y, n);
  m->target_fpr = target_fpr;
  int nneg = n - m->n_pos;
  m->threshold_at_fpr = m->fpr_at_threshold = m->tpr_at_threshold = NAN;
  if (nneg > 0) {
    float *neg = malloc(sizeof *neg * (size_t)nneg);
    if (!neg) return;
    int k = 0;
    for (int i = 0; i < n; i++) if (!y[i]) neg[k++] = scores[i];
    qsort(neg, (size_t)nneg, sizeof *neg, cmp_desc_f);
    int allowed = (int)floor(target_fpr * nneg + 1e-9);
    float t = allowed >= nneg ? neg[nneg - 1] : nextafterf(neg[allowed], INFINITY);
    free(neg);
    int64_t f_pos = 0, t_pos = 0;
    for (int i = 0; i < n; i++) if (scores[i] >= t) { if (y[i]) t_pos++; else f_pos++; }
    m->threshold_at_fpr = t;
    m->fpr_at_threshold = (double)f_pos / nneg;
    m->tpr_at_threshold = m->n_pos ? (double)t_pos / m->n_pos : NAN;
  }
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

cJSON *oc_metrics_json(const oc_metrics *m) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, "accuracy", num_or_null(m->accuracy));
  cJSON_AddItemToObject(o, "precision", num_or_null(m->precision));
  cJSON_AddItemToObject(o, "recall", num_or_null(m->recall));
  cJSON_AddItemToObject(o, "f1", num_or_null(m->f1));
  cJSON_AddItemToObject(o, "roc_auc", num_or_null(m->roc_auc));
  cJSON_AddNumberToObject(o, "examples", m->n);
  cJSON_AddNumberToObject(o, "positives", m->n_pos);
  cJSON_AddItemToObject(o, "target_fpr", num_or_null(m->target_fpr));
  cJSON_AddItemToObject(o, "threshold_at_target_fpr", num_or_null(m->threshold_at_fpr));
  cJSON_AddItemToObject(o, "fpr_at_threshold", num_or_null(m->fpr_at_threshold));
  cJSON_AddItemToObject(o, "tpr_at_threshold", num_or_null(m->tpr_at_threshold));
  cJSON *cal = cJSON_AddArrayToObject(o, "calibration_curve");
  for (int k = 0; k < OC_CALIB_BINS; k++) {
    if (!m->calib_count[k]) continue;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddNumberToObject(b, "bin_low", (double)k / OC_CALIB_BINS);
    cJSON_AddNumberToObject(b, "bin_high", (double)(k + 1) / OC_CALIB_BINS);
    cJSON_AddNumberToObject(b, "mean_score", m->calib_mean_score[k]);
    cJSON_AddNumberToObject(b, "fraction_unsafe", m->calib_frac_pos[k]);
    cJSON_AddNumberToObject(b, "count", m->calib_count[k]);
    cJSON_AddItemToArray(cal, b);
  }
  return o;
}
