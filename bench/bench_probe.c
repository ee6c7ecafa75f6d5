/* Probe-stage benchmarks.
 *   bench_probe data [ROWS]        : stream-load a ROWS-row JSONL (default 259000, written to /tmp once)
 *                                    with --max_examples 20000 and with all rows; seconds and peak RSS
 *   bench_probe prefill MODEL_DIR  : tokens/s of a tap-only forward (no LM head, final-token tap of
 *                                    layer -2) by sequence length: is packing several examples into
 *                                    one prefill worth it? Then packed prefills of k x len tokens.
 *   bench_probe tokens MODEL_DIR [N] [TOKENS]
 *                                  : train-probe --token_level's collection against the final-token
 *                                    one on the same N synthetic exchanges (default 16) cut to TOKENS
 *                                    tokens each (default 200), one forward pass per exchange either
 *                                    way, layer -4, every response token kept (best of 3, alternating); then the token-level
 *                                    fit (10 epochs, cummax) on rows in memory and streamed from the
 *                                    journal, and the memory each holds for rows. MODEL_DIR needs a
 *                                    tokenizer (e.g. build/e2e/gemma4-tiny-chat). */
#include <math.h>
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

/* N exchanges of random words with both labels, long enough to fill any TOKENS */
static int synthetic_exchanges(const char *path, int n) {
  FILE *f = fopen(path, "w");
  if (!f) return 1;
  oc_rng r;
  oc_rng_seed(&r, 7);
  static const char *words[] = {"river", "stone", "light", "paper", "garden", "signal", "window", "market", "engine", "cloud"};
  for (int i = 0; i < n; i++) {
    fprintf(f, "{\"prompt\": \"Tell me about item %d and the", i);
    for (int k = 0; k < 20; k++) fprintf(f, " %s", words[oc_rng_below(&r, 10)]);
    fprintf(f, "\", \"response\": \"Here it is:");
    for (int k = 0; k < 1500; k++) fprintf(f, " %s", words[oc_rng_below(&r, 10)]);
    fprintf(f, "\", \"label\": %d}\n", i % 2);
  }
  return fclose(f) != 0;
}

static int bench_tokens(const char *dir, int n, int tokens) {
  oc_error err;
  oc_model *m;
  oc_chat *ch;
  oc_dataset ds;
  if (n < 4 || n > 100000 || tokens < 16 || tokens > 8192) { fprintf(stderr, "tokens: N in [4, 100000], TOKENS in [16, 8192]\n"); return 2; }
  char data[] = "/tmp/oc_bench_tokens_XXXXXX", jpath[64];
  if (!mkdtemp(data)) return 1;
  snprintf(jpath, sizeof jpath, "%s/tokens.partial", data);
  char dpath[64];
  snprintf(dpath, sizeof dpath, "%s/data.jsonl", data);
  if (synthetic_exchanges(dpath, n) || oc_model_load(dir, &m, &err) || oc_chat_load(dir, &ch, &err) || oc_dataset_load(dpath, 0, 0, &ds, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const int layer = -4;
  const oc_collect_opts fo = {"bench", 0, tokens, 1, &layer, NULL, 1}; /* one exchange a pass, as token-level collection */
  const oc_token_collect_opts to = {"bench", 0, tokens, layer, 0, 1, jpath, 1, 0, NULL};
  oc_activations fa;
  oc_token_activations st, mem;
  double t_final = 1e30, t_tokens = 1e30, t0;
  for (int rep = 0; rep < 3; rep++) { /* alternating, best of 3 (the first also pages the weights in) */
    if (rep) { oc_activations_free(&fa); oc_token_activations_free(&st); }
    unlink(jpath);
    t0 = oc_now();
    if (oc_collect_activations(m, ch, &ds, &fo, &fa, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    t_final = fmin(t_final, oc_now() - t0);
    t0 = oc_now();
    if (oc_collect_tokens(m, ch, &ds, &to, &st, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    t_tokens = fmin(t_tokens, oc_now() - t0);
  }
  oc_token_collect_opts tm = to;
  tm.stream_rows = 0; /* the same journal read back into memory: no forward pass */
  if (oc_collect_tokens(m, ch, &ds, &tm, &mem, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  t.epochs = 10;
  t.standardize = 1;
  oc_probe_fit f1, f2;
  t0 = oc_now();
  if (oc_probe_fit_tokens(&mem, OC_TOKEN_CUMMAX, 0.25, 1, 0.01, &t, &f1, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  const double t_fit_mem = oc_now() - t0;
  t0 = oc_now();
  if (oc_probe_fit_tokens(&st, OC_TOKEN_CUMMAX, 0.25, 1, 0.01, &t, &f2, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  const double t_fit_stream = oc_now() - t0;
  const int H = st.hidden, same = f1.probe.b == f2.probe.b && memcmp(f1.probe.w, f2.probe.w, sizeof(float) * (size_t)H) == 0;
  printf("{\"threads\": %d, \"hidden\": %d, \"exchanges\": %d, \"max_length\": %d, \"token_level_forward_passes\": %lld, \"token_rows\": %lld, "
         "\"final_token_collect_s\": %.3f, \"token_level_collect_s\": %.3f, \"token_over_final\": %.3f, "
         "\"fit_10_epochs_in_memory_s\": %.3f, \"fit_10_epochs_streamed_s\": %.3f, \"rows_memory_in_memory_mb\": %.2f, "
         "\"rows_memory_streamed_mb\": %.3f, \"same_probe\": %s}\n",
         oc_get_threads(), H, ds.n, tokens, (long long)st.forward_passes, (long long)st.n_rows, t_final, t_tokens, t_tokens / t_final, t_fit_mem,
         t_fit_stream, (double)mem.n_rows * H * 4 / 1e6, (double)st.max_rows * H * 6 / 1e6, same ? "true" : "false");
  oc_probe_fit_free(&f1);
  oc_probe_fit_free(&f2);
  oc_token_activations_free(&st);
  oc_token_activations_free(&mem);
  oc_activations_free(&fa);
  oc_dataset_free(&ds);
  oc_chat_free(ch);
  oc_model_free(m);
  unlink(jpath);
  unlink(dpath);
  rmdir(data);
  return same ? 0 : 1;
}

int main(int argc, char **argv) {
  oc_blas_reexec(argv); /* OpenBLAS's generic kernels on a CPU it does not know: run again with its family */
  oc_set_threads(0);
  if (argc >= 2 && strcmp(argv[1], "data") == 0) return bench_data(argc > 2 ? atol(argv[2]) : 259000);
  if (argc >= 3 && strcmp(argv[1], "prefill") == 0) return bench_prefill(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "tokens") == 0) return bench_tokens(argv[2], argc > 3 ? atoi(argv[3]) : 16, argc > 4 ? atoi(argv[4]) : 200);
  fprintf(stderr, "usage: bench_probe data [ROWS] | bench_probe prefill MODEL_DIR | bench_probe tokens MODEL_DIR [N] [TOKENS]\n");
  return 2;
}
