#include "opencon/base.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double oc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void write_json(oc_progress *p, int64_t done, const char *status) {
  if (!p->json_path) return;
  char buf[512];
  double el = oc_now() - p->t0;
  double rate = el > 0 ? (double)done / el : 0;
  double eta = (rate > 0 && p->total > 0) ? (double)(p->total - done) / rate : -1;
  int n = snprintf(buf, sizeof buf,
                   "{\"label\": \"%s\", \"status\": \"%s\", \"done\": %lld, \"total\": %lld, "
                   "\"elapsed_s\": %.3f, \"rate_per_s\": %.3f, \"eta_s\": %.1f}\n",
                   p->label, status, (long long)done, (long long)p->total, el, rate, eta);
  oc_error e;
  oc_write_file_atomic(p->json_path, buf, (size_t)n, &e); /* best effort */
}

void oc_progress_start(oc_progress *p, const char *label, int64_t total, const char *json_path) {
  memset(p, 0, sizeof *p);
  p->label = label;
  p->total = total;
  p->json_path = json_path;
  p->t0 = p->last = oc_now();
  p->tty = isatty(2);
  write_json(p, 0, "running");
}

static void draw(oc_progress *p, int64_t done, const char *unit, int final) {
  double el = oc_now() - p->t0;
  double rate = el > 0 ? (double)done / el : 0;
  if (p->total > 0) {
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    fprintf(stderr, "\r%s %lld/%lld %s  %.2f %s/s  ETA %.0fs   %s", p->label, (long long)done,
            (long long)p->total, unit, rate, unit, eta, final ? "\n" : "");
  } else {
    fprintf(stderr, "\r%s %lld %s  %.2f %s/s   %s", p->label, (long long)done, unit, rate, unit, final ? "\n" : "");
  }
  fflush(stderr);
}

void oc_progress_update(oc_progress *p, int64_t done, const char *unit) {
  double t = oc_now();
  if (t - p->last < 0.25) return;
  p->last = t;
  if (p->tty) draw(p, done, unit, 0);
  write_json(p, done, "running");
}

void oc_progress_end(oc_progress *p, int64_t done, const char *unit) {
  if (p->tty) draw(p, done, unit, 1);
  write_json(p, done, "done");
}
