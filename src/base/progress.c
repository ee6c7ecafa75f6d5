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

static double rate_of(const oc_progress *p, double el) {
  return el > 0 ? (double)(p->done - p->base) / el : 0;
}

static double eta_of(const oc_progress *p, double el) {
  double r = rate_of(p, el);
  return (r > 0 && p->total > 0) ? (double)(p->total - p->done) / r : 0;
}

/* JSON numbers: integers print exactly, others with enough digits. */
static int put_num(char *buf, size_t cap, double v) {
  if (v == (double)(long long)v && v > -1e15 && v < 1e15) return snprintf(buf, cap, "%lld", (long long)v);
  return snprintf(buf, cap, "%.6g", v);
}

static void write_json(oc_progress *p) {
  if (!p->json_path) return;
  char buf[2048], num[64];
  double el = oc_now() - p->t0;
  double pct = p->total > 0 ? 100.0 * (double)p->done / (double)p->total : 0;
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  int n = snprintf(buf, sizeof buf,
                   "{\"phase\": \"%s\", \"%s\": %lld, \"%s\": %lld, \"percent\": %.2f, \"elapsed_seconds\": %.3f, "
                   "\"eta_seconds\": %.1f, \"updated_at\": \"%s\"",
                   p->phase ? p->phase : "", p->done_key, (long long)p->done, p->total_key, (long long)p->total, pct, el,
                   eta_of(p, el), ts);
  for (int i = 0; i < p->n_extra && n > 0 && (size_t)n < sizeof buf - 128; i++) {
    put_num(num, sizeof num, p->extra_val[i]);
    n += snprintf(buf + n, sizeof buf - (size_t)n, ", \"%s\": %s", p->extra_key[i], num);
  }
  n += snprintf(buf + n, sizeof buf - (size_t)n, "}\n");
  oc_error e;
  oc_write_file_atomic(p->json_path, buf, (size_t)n, &e); /* best effort: progress must not stop the job */
}

void oc_progress_start(oc_progress *p, const char *label, const char *unit, int64_t total, const char *json_path) {
  memset(p, 0, sizeof *p);
  p->label = label;
  p->unit = unit;
  p->total = total;
  p->json_path = json_path;
  p->done_key = "examples_processed";
  p->total_key = "total_examples";
  p->t0 = p->last = oc_now();
  p->tty = isatty(2);
}

void oc_progress_keys(oc_progress *p, const char *done_key, const char *total_key) {
  p->done_key = done_key;
  p->total_key = total_key;
}

void oc_progress_phase(oc_progress *p, const char *phase, int64_t done, int64_t total) {
  p->phase = phase;
  p->done = p->base = done;
  p->total = total;
  p->t0 = p->last = oc_now();
  write_json(p);
}

void oc_progress_set(oc_progress *p, const char *key, double value) {
  for (int i = 0; i < p->n_extra; i++)
    if (strcmp(p->extra_key[i], key) == 0) { p->extra_val[i] = value; return; }
  if (p->n_extra == OC_PROGRESS_MAX_EXTRA) return;
  p->extra_key[p->n_extra] = key;
  p->extra_val[p->n_extra++] = value;
}

static void draw(oc_progress *p, int final) {
  double el = oc_now() - p->t0, rate = rate_of(p, el);
  const char *ph = p->phase ? p->phase : "";
  if (p->total > 0)
    fprintf(stderr, "\r%s %s %lld/%lld %s  %.2f %s/s  ETA %.0fs   %s", p->label, ph, (long long)p->done,
            (long long)p->total, p->unit, rate, p->unit, eta_of(p, el), final ? "\n" : "");
  else
    fprintf(stderr, "\r%s %s %lld %s  %.2f %s/s   %s", p->label, ph, (long long)p->done, p->unit, rate, p->unit,
            final ? "\n" : "");
  fflush(stderr);
}

void oc_progress_update(oc_progress *p, int64_t done) {
  p->done = done;
  double t = oc_now();
  if (t - p->last < 0.25) return;
  p->last = t;
  if (p->tty) draw(p, 0);
  write_json(p);
}

void oc_progress_end(oc_progress *p, const char *final_phase) {
  if (p->tty) draw(p, 1);
  if (final_phase) p->phase = final_phase;
  write_json(p);
}
