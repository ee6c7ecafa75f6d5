/* Aggregation of a probe's readings into the risk the guard acts on: one implementation for the
 * guard (every reading of a stream) and evaluate-probe (every reading of a replayed response). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/probe.h"

static const char *const agg_names[] = {"last", "ema", "rolling_mean", "max_rolling_mean"};

const char *oc_aggregation_name(oc_aggregation a) { return a >= OC_AGG_LAST && a <= OC_AGG_MAX_ROLLING_MEAN ? agg_names[a] : "?"; }

int oc_aggregation_parse(const char *s, oc_aggregation *out) {
  for (int i = 0; i <= OC_AGG_MAX_ROLLING_MEAN; i++)
    if (s && strcmp(s, agg_names[i]) == 0) { *out = (oc_aggregation)i; return 0; }
  return -1;
}

int oc_risk_agg_init(oc_risk_agg *a, const oc_probe_config *c, oc_error *err) {
  memset(a, 0, sizeof *a);
  a->kind = c->aggregation;
  a->alpha = c->aggregation_alpha;
  a->window = c->aggregation == OC_AGG_LAST ? c->smoothing_window : c->aggregation == OC_AGG_EMA ? 1 : c->aggregation_window;
  if (a->window < 1 || a->window > OC_PROBE_MAX_WINDOW) return oc_fail(err, "aggregation window %d out of range [1, %d]", a->window, OC_PROBE_MAX_WINDOW);
  if (!(a->ring = calloc((size_t)a->window, sizeof *a->ring))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  a->max = -INFINITY;
  return 0;
}

void oc_risk_agg_reset(oc_risk_agg *a) {
  memset(a->ring, 0, sizeof *a->ring * (size_t)a->window);
  a->n = 0;
  a->ema = 0;
  a->max = -INFINITY;
}

void oc_risk_agg_free(oc_risk_agg *a) {
  free(a->ring);
  memset(a, 0, sizeof *a);
}

/* the mean of the ring's readings (the last min(n, window)), summed in ring order as the MVP's
 * smoothing did */
static double ring_mean(const oc_risk_agg *a) {
  int cnt = a->n < a->window ? (int)a->n : a->window;
  double s = 0;
  for (int i = 0; i < cnt; i++) s += a->ring[i];
  return s / cnt;
}

double oc_risk_agg_push(oc_risk_agg *a, double risk) {
  a->ring[a->n % a->window] = risk;
  a->n++;
  switch (a->kind) {
    case OC_AGG_EMA: a->ema = a->n == 1 ? risk : a->alpha * risk + (1.0 - a->alpha) * a->ema; return a->ema;
    case OC_AGG_MAX_ROLLING_MEAN: {
      double m = ring_mean(a);
      if (!(a->max >= m)) a->max = m;
      return a->max;
    }
    default: return ring_mean(a); /* last (smoothing_window) and rolling_mean (aggregation_window) */
  }
}
