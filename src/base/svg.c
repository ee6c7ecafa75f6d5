/* A small SVG line plot for reports (probe sweeps, classifier calibration). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/base.h"

static size_t esc(char *dst, size_t cap, const char *s) { /* XML text */
  size_t k = 0;
  for (; *s && k + 7 < cap; s++) {
    const char *r = *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '&' ? "&amp;" : NULL;
    if (r) { memcpy(dst + k, r, strlen(r)); k += strlen(r); }
    else dst[k++] = *s;
  }
  dst[k] = 0;
  return k;
}

int oc_svg_plot(const char *path, const char *title, const char *xlabel, const double *x, const char *const *xticks, int n, int nseries,
                const char *const *names, const double *const *ys, oc_error *err) {
  static const char *color[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  const double W = 680, Hh = 420, L = 60, R = 190, T = 40, B = 55;
  const double pw = W - L - R, ph = Hh - T - B;
  double x0 = 0, x1 = 1;
  if (n > 0 && !xticks) {
    x0 = x1 = x[0];
    for (int i = 1; i < n; i++) { if (x[i] < x0) x0 = x[i]; if (x[i] > x1) x1 = x[i]; }
  }
  if (x1 == x0) x1 = x0 + 1;
  size_t cap = 16384 + (size_t)n * (size_t)(nseries + 1) * 160;
  char *s = malloc(cap), t[512];
  if (!s) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  size_t k = 0;
#define P(...) k += (size_t)snprintf(s + k, cap - k, __VA_ARGS__)
#define XP(i) (xticks ? L + (n > 1 ? pw * (i) / (n - 1) : pw / 2) : L + pw * (x[i] - x0) / (x1 - x0))
  P("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, Hh, W, Hh);
  P("<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  esc(t, sizeof t, title);
  P("<text x=\"%.0f\" y=\"22\" font-size=\"15\">%s</text>\n", L, t);
  for (int g = 0; g <= 10; g += 2) {
    double y = T + ph * (1 - g / 10.0);
    P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, y, L + pw, y);
    P("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.1f</text>\n", L - 6, y + 4, g / 10.0);
  }
  P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L, T + ph, L + pw, T + ph);
  P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L, T, L, T + ph);
  if (xticks) {
    for (int i = 0; i < n; i++) { esc(t, sizeof t, xticks[i]); P("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", XP(i), T + ph + 18, t); }
  } else {
    for (int g = 0; g <= 4; g++) {
      double v = x0 + (x1 - x0) * g / 4, px = L + pw * g / 4;
      P("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3g</text>\n", px, T + ph + 18, v);
    }
  }
  esc(t, sizeof t, xlabel);
  P("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", L + pw / 2, Hh - 12, t);
  for (int sI = 0; sI < nseries; sI++) {
    const char *col = color[sI % 5];
    esc(t, sizeof t, names[sI]);
    P("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
    for (int i = 0; i < n; i++) if (isfinite(ys[sI][i])) P("%.1f,%.1f ", XP(i), T + ph * (1 - ys[sI][i]));
    P("\"/>\n");
    if (n <= 64)
      for (int i = 0; i < n; i++) {
        if (!isfinite(ys[sI][i])) continue;
        char xt[64];
        if (xticks) esc(xt, sizeof xt, xticks[i]); else snprintf(xt, sizeof xt, "%.4g", x[i]);
        P("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s at %s: %.4f</title></circle>\n", XP(i), T + ph * (1 - ys[sI][i]), col, t, xt,
          ys[sI][i]);
      }
    P("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", L + pw + 15, T + 20.0 + 20 * sI, L + pw + 40,
      T + 20.0 + 20 * sI, col);
    P("<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L + pw + 46, T + 24.0 + 20 * sI, t);
  }
  P("</svg>\n");
#undef P
#undef XP
  int rc = oc_write_file_atomic(path, s, k, err);
  free(s);
  return rc;
}
