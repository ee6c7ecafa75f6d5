/* An independent reference for the guard's risk aggregations (tests only): each aggregate computed
 * from the whole history with explicit windows and powers, no ring and no running state. */
#ifndef OC_TEST_AGG_REF_H
#define OC_TEST_AGG_REF_H
#include <math.h>

#include "opencon/probe.h"

static inline double ref_mean(const double *r, int t, int w) { /* mean of r[max(0, t-w+1) .. t] */
  int lo = t - w + 1 < 0 ? 0 : t - w + 1;
  double s = 0;
  for (int i = lo; i <= t; i++) s += r[i];
  return s / (t - lo + 1);
}
static inline double ref_ema(const double *r, int t, double alpha) { /* sum of alpha (1-alpha)^(t-i) r[i], the first reading weighted (1-alpha)^t */
  double s = pow(1 - alpha, t) * r[0];
  for (int i = 1; i <= t; i++) s += alpha * pow(1 - alpha, t - i) * r[i];
  return s;
}
/* the aggregate after reading t (0-based) of r: window w (the smoothing window for last) */
static inline double ref(oc_aggregation k, const double *r, int t, int w, double alpha) {
  if (k == OC_AGG_EMA) return ref_ema(r, t, alpha);
  if (k == OC_AGG_MAX_ROLLING_MEAN) {
    double m = -1;
    for (int i = 0; i <= t; i++) if (ref_mean(r, i, w) > m) m = ref_mean(r, i, w);
    return m;
  }
  return ref_mean(r, t, w);
}
#endif
