/* Probe-stage benchmarks.
 *   bench_probe data [ROWS]        : stream-load a ROWS-row JSONL (default 259000, written to /tmp once)
 *                                    with --max_examples 20000 and with all rows; seconds and peak RSS
 *   bench_probe prefill MODEL_DIR  : tokens/s of a tap-only forward (no LM head, final-token tap of
 *                                    layer -2) by sequence length: is packing several examples into
 *                                    one prefill worth it? Then packed prefills of k x len tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "opencon/probe.h"

static double peak_rss_gb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1048576.0;
}

static int bench_data(long rows) {
  char path[256];
  snprintf(path, sizeof path, "/tmp/oc_bench_%ld.jsonl", rows);
  if (access(path, R_OK) != 0) {
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    oc_rng r;
    oc_rng_seed(&r, 1);
    for (long i = 0; i < rows; i++) {
      int pl = 100 + (int)oc_rng_below(&r, 400), rl = 200 + (int)oc_rng_below(&r, 1200);
      fprintf(f, "{\"prompt\": \"");
      for (int k = 0; k < pl; k++) fputc(k % 7 == 6 ? ' ' : 'a' + (int)oc_rng_below(&r, 26), f);
      fprintf(f, " \\\"quoted\\\" \\u00e9\", \"response\": \"");
      for (int k = 0; k < rl; k++) fputc(k % 6 == 5 ? ' ' : 'a' + (int)oc_rng_below(&r, 26), f);
      fprintf(f, "\\n\", \"label\": %d, \"source\": \"bench\", \"id\": \"b-%ld\"}\n", (int)oc_rng_below(&r, 3), i);
    }
    fclose(f);
  }
  FILE *f = fopen(path, "r");
  fseek(f, 0, SEEK_END);
  double mb = ftell(f) / 1e6;
  fclose(f);
  oc_error err;
  oc_dataset d;
  double t0 = oc_now();
  if (oc_dataset_load(path, 20000, 0, &d, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  double t1 = oc_now();
  int n1 = d.n;
  oc_dataset_free(&d);
  double rss1 = peak_rss_gb();
  double t2 = oc_now();
  if (oc_dataset_load(path, 0, 0, &d, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  double t3 = oc_now();
  printf("{\"rows\": %ld, \"file_mb\": %.1f, \"sample_20000_s\": %.2f, \"selected\": %d, \"peak_rss_gb_after_sample\": %.3f, "
         "\"all_rows_s\": %.2f, \"peak_rss_gb_after_all\": %.3f}\n",
         rows, mb, t1 - t0, n1, rss1, t3 - t2, peak_rss_gb());
  oc_dataset_free(&d);
  return 0;
}

static int bench_prefill(const char *dir) {
  oc_error err;
  oc_model *m;
  if (oc_model_load(dir, &m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  const oc_model_config *c = oc_model_cfg(m);
  oc_session *s = oc_session_new(m, 1024, &err);
  int lens[] = {50, 100, 200, 400, 800};
  int32_t *ids = malloc(sizeof(int32_t) * 800);
  for (int i = 0; i < 800; i++) ids[i] = 100 + (i * 7919) % 20000;
  float *tap = malloc(sizeof(float) * (size_t)c->hidden);
  int layer = -2, last = -1;
  oc_taps t = {1, &layer, 1, &last, tap};
  printf("{\"threads\": %d", oc_get_threads());
  for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
    double best = 1e30;
    for (int rep = 0; rep < 2; rep++) {
      oc_session_reset(s);
      double t0 = oc_now();
      if (oc_forward(s, ids, lens[k], &t, NULL, 0, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
      double dt = oc_now() - t0;
      if (dt < best) best = dt;
    }
    printf(", \"tok_s_%d\": %.1f", lens[k], lens[k] / best);
    fflush(stdout);
  }
  /* packed: k sequences of len tokens in one prefill, final-token tap of each */
  int packs[][2] = {{4, 50}, {8, 50}, {2, 100}, {4, 100}, {2, 200}};
  float *taps4 = malloc(sizeof(float) * 8 * (size_t)c->hidden);
  for (size_t k = 0; k < sizeof packs / sizeof *packs; k++) {
    int ns = packs[k][0], len = packs[k][1], lens[8], lasts[8];
    for (int j = 0; j < ns; j++) { lens[j] = len; lasts[j] = (j + 1) * len - 1; }
    oc_taps tp = {1, &layer, ns, lasts, taps4};
    double best = 1e30;
    for (int rep = 0; rep < 2; rep++) {
      oc_session_reset(s);
      double t0 = oc_now();
      if (oc_forward_packed(s, ids, lens, ns, &tp, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
      double dt = oc_now() - t0;
      if (dt < best) best = dt;
    }
    printf(", \"packed_%dx%d_tok_s\": %.1f", ns, len, ns * len / best);
    fflush(stdout);
  }
  free(taps4);
  printf("}\n");
  free(ids); free(tap);
  oc_session_free(s);
  oc_model_free(m);
  return 0;
}

int main(int argc, char **argv) {
  oc_blas_reexec(argv); /* OpenBLAS's generic kernels on a CPU it does not know: run again with its family */
  oc_set_threads(0);
  if (argc >= 2 && strcmp(argv[1], "data") == 0) return bench_data(argc > 2 ? atol(argv[2]) : 259000);
  if (argc >= 3 && strcmp(argv[1], "prefill") == 0) return bench_prefill(argv[2]);
  fprintf(stderr, "usage: bench_probe data [ROWS] | bench_probe prefill MODEL_DIR\n");
  return 2;
}
