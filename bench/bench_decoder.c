/* Decoder speed and memory on a (random-weight) checkpoint, beside the machine's ceilings:
 *   decode tokens/s (128-token prompt, 64 new tokens) vs memory bandwidth / bytes per token, and
 *   in paired rounds (bandwidth measured beside each 8 decode tokens)
 *   prefill tokens/s (512 tokens) vs measured sgemm GFLOP/s and vs the measured f32 FMA peak
 *   peak RSS vs 1.15 x (weights without the per-layer-embedding table) + KV cache
 * usage: bench_decoder MODEL_DIR [threads] [--json OUT]
 * Two short modes print one JSON line each, for comparisons run from outside (bench/ggml):
 *   bench_decoder --bandwidth [threads]             the 1 GiB read (best of 2 passes, as the paired
 *                                                   rounds take it) and the plain one-stream read
 *   bench_decoder MODEL_DIR [threads] --decode-only the headline decode alone (128-token prompt,
 *                                                   a warm-up token, 64 timed) and its bytes/token
 *   bench_decoder MODEL_DIR [threads] --batch 1,4,8 [--rounds R]
 *                                                   the server's decode step without the server:
 *                                                   oc_forward_batch over n sessions, ms a step */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "opencon/model.h"

void openblas_set_num_threads(int);

/* Pure AVX2 loads with 4 independent accumulators over k streams read side by side: the k
 * consecutive parts of `part` bytes (a multiple of 128) from p, 128 bytes of each in turn, with
 * or without a software prefetch 512 bytes ahead (as the decode kernel). Kept out of the OpenMP
 * regions: an outlined region does not inherit the target attribute under clang. */
__attribute__((target("avx2"))) static float sum_streams(const char *p, size_t part, int k, int prefetch) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t o = 0; o + 128 <= part; o += 128)
    for (int j = 0; j < k; j++) {
      const char *q = p + (size_t)j * part + o;
      if (prefetch) {
        _mm_prefetch(q + 512, _MM_HINT_T0);
        _mm_prefetch(q + 576, _MM_HINT_T0);
      }
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps((const float *)q));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps((const float *)(q + 32)));
      s2 = _mm256_add_ps(s2, _mm256_loadu_ps((const float *)(q + 64)));
      s3 = _mm256_add_ps(s3, _mm256_loadu_ps((const float *)(q + 96)));
    }
  float o[8], t = 0;
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (int j = 0; j < 8; j++) t += o[j];
  return t;
}

/* Thread `me` of `nt`: its contiguous share of the 128-byte blocks of p[0 .. nbytes), read as k
 * streams. With k > 1 the parts are 5 blocks short of an equal split so that the streams do not
 * sit a power of two apart (which measured slower here: they alias in the caches); *bytes gets
 * what was read. */
static float sum_share(const char *p, size_t nbytes, int me, int nt, int k, int prefetch, double *bytes) {
  const size_t n = nbytes / 128, a = n * (size_t)me / (size_t)nt, b = n * (size_t)(me + 1) / (size_t)nt;
  size_t blocks = (b - a) / (size_t)k;
  if (k > 1) blocks = blocks > 5 ? blocks - 5 : 0;
  *bytes = 128.0 * (double)blocks * k;
  return sum_streams(p + 128 * a, 128 * blocks, k, prefetch);
}

/* Read bandwidth with AVX2 loads over 1 GiB, each thread reading its half as 1, 2, 3 or 4
 * streams (3 streams per thread measured 13-47 % faster than 1 on this machine, and the decode
 * kernel reads 4), with and without software prefetch, best of `reps` passes of each of these 8
 * patterns: the most a streaming kernel can pull on this machine. *plain (if not NULL) gets the
 * best of the first pattern alone, one stream per thread without prefetch: a plain sequential
 * read, the ceiling this bench used before the multi-stream kernel (bench/README rows 1-17). */
static double measure_bandwidth(int threads, int reps, double *plain) {
  const size_t n = (size_t)1 << 28; /* 1 GiB of floats */
  float *a = aligned_alloc((size_t)2 << 20, n * sizeof(float));
  if (!a) return 0;
  /* on huge pages, as the decode's weights are (--weights stored or q8): a 4 KiB-page read is
   * slower by its TLB misses, a ceiling the decode would seem to exceed */
  madvise(a, n * sizeof(float), MADV_HUGEPAGE);
#pragma omp parallel for num_threads(threads)
  for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
  double best = 0;
  for (int rep = 0; rep < reps; rep++)
    for (int v = 0; v < 8; v++) {
      const int k = 1 + v / 2, pf = v & 1;
      double t0 = oc_now(), bytes = 0;
      float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total, bytes)
      {
        double mine;
        total += sum_share((const char *)a, n * sizeof(float), omp_get_thread_num(), omp_get_num_threads(), k, pf, &mine);
        bytes += mine;
      }
      double dt = oc_now() - t0;
      if (total < 0) printf("?");
      if (bytes / dt / 1e9 > best) best = bytes / dt / 1e9;
      if (plain && v == 0 && (rep == 0 || bytes / dt / 1e9 > *plain)) *plain = bytes / dt / 1e9;
    }
  free(a);
  return best;
}

/* The same pure loads over the model's own weight pages (every tensor but the per-layer
 * embedding table; page cache, mmap'd), each thread reading its share of every tensor as 4
 * streams with prefetch (the decode kernel's pattern), one pass: the rate at which these very
 * bytes stream in at that moment. */
static double measure_weights_read(const oc_weights *w, int threads) {
  double t0 = oc_now(), bytes = 0;
  float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total, bytes)
  for (int i = 0; i < oc_weights_count(w); i++) {
    const oc_tensor *t = oc_weights_at(w, i);
    double mine;
    if (!strstr(t->name, "embed_tokens_per_layer")) {
      total += sum_share((const char *)t->data, t->nbytes, omp_get_thread_num(), omp_get_num_threads(), 4, 1, &mine);
      bytes += mine;
    }
  }
  double dt = oc_now() - t0;
  if (total == 12345.678f) printf("?");
  return bytes / dt / 1e9;
}

static void sort_doubles(double *a, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && a[j] < a[j - 1]; j--) { double x = a[j]; a[j] = a[j - 1]; a[j - 1] = x; }
}

static double median_sorted(const double *a, int n) { return n % 2 ? a[n / 2] : (a[n / 2 - 1] + a[n / 2]) / 2; }

static int count_at_least(const double *a, int n, double v) {
  int k = 0;
  for (int i = 0; i < n; i++) k += a[i] >= v;
  return k;
}

/* One thread's f32 FMA throughput: 12 independent chains of 8-lane fused multiply-adds (Zen 3:
 * latency 4 cycles x 2 FMA pipes needs at least 8 in flight), `iters` steps; returns the FLOPs
 * done. The values converge to 1 (x * 0.5 + 0.5), so nothing overflows or goes subnormal. */
__attribute__((target("avx2,fma"))) static double fma_chains(long iters, float *sink) {
  const __m256 m = _mm256_set1_ps(0.5f), a = _mm256_set1_ps(0.5f);
  __m256 v[12];
  for (int j = 0; j < 12; j++) v[j] = _mm256_set1_ps((float)j);
  for (long i = 0; i < iters; i++)
    for (int j = 0; j < 12; j++) v[j] = _mm256_fmadd_ps(v[j], m, a);
  __m256 t = v[0];
  for (int j = 1; j < 12; j++) t = _mm256_add_ps(t, v[j]);
  float o[8];
  _mm256_storeu_ps(o, t);
  *sink = o[0] + o[7];
  return 2.0 * 8 * 12 * (double)iters;
}

/* The machine's f32 FMA peak with `threads` threads: every thread runs fma_chains at once (about
 * 60 ms), best of 5 (the prefill target is a fraction of this figure). */
static double measure_fma_peak(int threads) {
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = oc_now(), flops = 0;
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops, sink)
    {
      float mine;
      flops += fma_chains(1L << 25, &mine);
      sink += mine;
    }
    double g = flops / (oc_now() - t0) / 1e9;
    if (sink == 12345.678f) printf("?");
    if (g > best) best = g;
  }
  return best;
}

static double measure_sgemm(int threads) {
  const int M = 512, N = 6144, K = 1536;
  float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * (size_t)N * K), *C = malloc(sizeof(float) * (size_t)M * N);
  for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)((i * 7) % 13) * 0.01f;
  for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)((i * 5) % 11) * 0.01f;
  openblas_set_num_threads(threads);
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = oc_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
    double g = 2.0 * M * N * K / (oc_now() - t0) / 1e9;
    if (g > best) best = g;
  }
  openblas_set_num_threads(1);
  free(A); free(B); free(C);
  return best;
}

/* The bench's token ids: spread over the vocabulary, clear of the first few (special) ids; `seq`
 * gives each of several sessions a prompt of its own (0: the headline prompt). */
static void bench_ids(int32_t *ids, int n, int V, int seq) {
  for (int i = 0; i < n; i++) ids[i] = (int32_t)(((int64_t)i * 7919 + (int64_t)seq * 104729 + 13) % (V - 10)) + 5;
}

/* `n` greedy decode steps from the current logits, tokens/s (-1 on error). */
static double decode_steps(oc_session *s, float *logits, int V, int n, oc_error *e) {
  double t0 = oc_now();
  for (int k = 0; k < n; k++) {
    int32_t next = oc_argmax(logits, V);
    if (oc_forward(s, &next, 1, NULL, logits, 0, e)) return -1;
  }
  return n / (oc_now() - t0);
}

/* The headline decode: a warm-up step, then `n` timed greedy tokens after the logits of a
 * prefilled prompt, tokens/s. */
static double time_decode(oc_session *s, float *logits, int V, int n, oc_error *e) {
  if (decode_steps(s, logits, V, 1, e) < 0) return -1;
  return decode_steps(s, logits, V, n, e);
}

/* --batch: for each round and each n of the list (in order), n sessions with 8-token prompts of
 * their own take a warm-up step and then `steps` timed greedy steps through oc_forward_batch (logits
 * included, as a server samples them). One JSON line per measurement, then the median per n. */
static int bench_batch(oc_model *m, int threads, const int *ns, int nn, int rounds, int steps, oc_error *e) {
  const int V = oc_model_cfg(m)->vocab;
  int maxn = 0;
  for (int i = 0; i < nn; i++) maxn = ns[i] > maxn ? ns[i] : maxn;
  oc_session **ss = calloc((size_t)maxn, sizeof *ss);
  float *logits = malloc(sizeof(float) * (size_t)V * (size_t)maxn);
  int32_t *next = malloc(sizeof(int32_t) * (size_t)maxn), prompt[8];
  double *ms = malloc(sizeof(double) * (size_t)nn * (size_t)rounds);
  int rc = 1;
  if (!ss || !logits || !next || !ms) { oc_fail_code(e, OC_ERR_NOMEM, "bench_decoder: out of memory"); goto out; }
  for (int i = 0; i < maxn; i++)
    if (!(ss[i] = oc_session_new(m, 16 + steps, e))) goto out;
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < nn; k++) {
      const int n = ns[k];
      for (int i = 0; i < n; i++) {
        oc_session_reset(ss[i]);
        bench_ids(prompt, 8, V, i);
        if (oc_forward(ss[i], prompt, 8, NULL, logits + (size_t)i * V, 0, e)) goto out;
      }
      double t0 = 0;
      for (int step = 0; step <= steps; step++) {
        if (step == 1) t0 = oc_now(); /* step 0 warms up */
        for (int i = 0; i < n; i++) next[i] = oc_argmax(logits + (size_t)i * V, V);
        if (oc_forward_batch(ss, n, next, NULL, logits, e)) goto out;
      }
      ms[k * rounds + r] = (oc_now() - t0) * 1e3 / steps;
      printf("{\"threads\": %d, \"weights\": \"%s\", \"batch\": %d, \"round\": %d, \"ms_per_step\": %.1f, \"tok_s\": %.2f}\n", threads,
             oc_model_weights_kind(m), n, r + 1, ms[k * rounds + r], n * 1e3 / ms[k * rounds + r]);
      fflush(stdout);
    }
  for (int k = 0; k < nn; k++) {
    sort_doubles(ms + k * rounds, rounds);
    const double med = median_sorted(ms + k * rounds, rounds);
    printf("{\"threads\": %d, \"weights\": \"%s\", \"batch\": %d, \"rounds\": %d, \"median_ms_per_step\": %.1f, \"median_tok_s\": %.2f}\n", threads,
           oc_model_weights_kind(m), ns[k], rounds, med, ns[k] * 1e3 / med);
  }
  rc = 0;
out:
  for (int i = 0; ss && i < maxn; i++) oc_session_free(ss[i]);
  free(ss);
  free(logits);
  free(next);
  free(ms);
  return rc;
}

/* kB of this process's memory on transparent huge pages (the weights' arena, when the kernel gave them) */
static long huge_kb(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
  if (f) fclose(f);
  return kb;
}

int main(int argc, char **argv) {
  oc_blas_reexec(argv); /* OpenBLAS's generic kernels on a CPU it does not know: run again with its family */
  const char *usage = "usage: bench_decoder MODEL_DIR [threads] [--json OUT] [--decode-only [--prefill] | --batch N,N,... [--rounds R]] (N: 1..64 sessions, up to 16 counts) [--weights stored|q8]\n"
                      "       bench_decoder --bandwidth [threads]\n";
  if (argc < 2) { fputs(usage, stderr); return 2; }
  if (strcmp(argv[1], "--bandwidth") == 0) {
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (threads < 1) { fputs(usage, stderr); return 2; }
    double plain = 0, bw = measure_bandwidth(threads, 2, &plain);
    printf("{\"threads\": %d, \"bandwidth_gbs\": %.3f, \"plain_bandwidth_gbs\": %.3f}\n", threads, bw, plain);
    return bw > 0 ? 0 : 1;
  }
  int threads = argc > 2 && argv[2][0] != '-' ? atoi(argv[2]) : 2, decode_only = 0, with_prefill = 0;
  const char *json = NULL;
  enum { MAX_NS = 16 };
  int batch_ns[MAX_NS], n_batch = 0, rounds = 3;
  oc_model_opts mo = {OC_WEIGHTS_STORED};
  oc_error e;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) json = argv[++i];
    else if (strcmp(argv[i], "--decode-only") == 0) decode_only = 1;
    else if (strcmp(argv[i], "--prefill") == 0) with_prefill = 1;
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      char *end;
      rounds = (int)strtol(argv[++i], &end, 10);
      if (*end) rounds = 0;
    } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc && !n_batch) {
      /* 1 to 16 counts of 1 to 64 sessions, comma-separated */
      for (char *p = argv[++i];; p++) {
        char *end;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 64 || n_batch == MAX_NS || (*end && *end != ',')) { fputs(usage, stderr); return 2; }
        batch_ns[n_batch++] = (int)v;
        if (!*end) break;
        p = end;
      }
    } else if (strcmp(argv[i], "--weights") == 0 && i + 1 < argc) {
      if (oc_weight_mode_parse(argv[++i], &mo.weights, &e)) { fprintf(stderr, "error: %s\n", e.msg); return 2; }
    } else if (i > 2 || argv[i][0] == '-') { /* (argv[2] may be the thread count) */
      fputs(usage, stderr);
      return 2;
    }
  }
  if (threads < 1 || rounds < 1 || rounds > 100 || (n_batch && (decode_only || json))) { fputs(usage, stderr); return 2; }
  oc_set_threads(threads);
  double plain_bw = 0, bw = 0, fma = 0, gf = 0;
  if (!decode_only && !n_batch) { /* the ceilings, before the model is mapped */
    bw = measure_bandwidth(threads, 5, &plain_bw), fma = measure_fma_peak(threads), gf = measure_sgemm(threads);
    oc_set_threads(threads); /* OpenBLAS's OpenMP build resets the OpenMP thread count */
    fprintf(stderr, "memory read bandwidth %.2f GB/s (plain one-stream read %.2f), f32 FMA peak %.1f GFLOP/s, sgemm %.1f GFLOP/s (%d threads)\n", bw,
            plain_bw, fma, gf, threads);
  }

  double t0 = oc_now();
  oc_model *m;
  if (oc_model_load_ex(argv[1], &mo, &m, &e)) { fprintf(stderr, "error: %s\n", e.msg); return 1; }
  double t_load = oc_now() - t0;
  /* measure within memory: this VM pages out file pages it sees little use of (DAMON), which put
   * disk reads into decode steps (the per-layer-embedding rows, the norms); locked, they stay */
  if (mlockall(MCL_CURRENT)) perror("bench_decoder: mlockall (pages may be paged out mid-run)");
  if (n_batch) {
    const int rc = bench_batch(m, threads, batch_ns, n_batch, rounds, 5, &e);
    if (rc) fprintf(stderr, "error: %s\n", e.msg);
    oc_model_free(m);
    return rc;
  }
  const oc_model_config *c = oc_model_cfg(m);
  const int V = c->vocab;
  float *logits = malloc(sizeof(float) * (size_t)V);
  int32_t *ids = malloc(sizeof(int32_t) * 512);
  if (!logits || !ids) { fprintf(stderr, "error: out of memory\n"); return 1; }
  bench_ids(ids, 512, V, 0);

  /* FLOPs per token of the linear layers (weights multiplied per token) */
  double lin_params = 0;
  const oc_weights *w = oc_model_weights(m);
  size_t ple_bytes = 0;
  for (int i = 0; i < oc_weights_count(w); i++) {
    const oc_tensor *t = oc_weights_at(w, i);
    if (strstr(t->name, "embed_tokens_per_layer")) ple_bytes += t->nbytes;
  }
  lin_params = (double)oc_model_decode_bytes(m) / 2.0; /* BF16 */

  /* decode: 128-token prompt, 64 new tokens (greedy) */
  oc_session *s = oc_session_new(m, 1024, &e);
  if (!s) { fprintf(stderr, "%s\n", e.msg); return 1; }
  if (oc_forward(s, ids, 128, NULL, logits, 0, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
  double decode_tps = time_decode(s, logits, V, 64, &e);
  if (decode_tps < 0) { fprintf(stderr, "%s\n", e.msg); return 1; }
  if (decode_only) {
    double prefill_s = -1; /* --prefill: 512 tokens in one chunk, best of 2 */
    for (int rep = 0; with_prefill && rep < 2; rep++) {
      oc_session_reset(s);
      double tp = oc_now();
      if (oc_forward(s, ids, 512, NULL, logits, 0, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
      tp = oc_now() - tp;
      if (prefill_s < 0 || tp < prefill_s) prefill_s = tp;
    }
    printf("{\"threads\": %d, \"weights\": \"%s\", \"load_s\": %.2f, \"decode_tps\": %.3f, \"decode_bytes_per_token\": %zu, \"prefill512_tps\": %.2f, "
           "\"huge_page_mb\": %ld}\n",
           threads, oc_model_weights_kind(m), t_load, decode_tps, oc_model_decode_bytes(m), prefill_s > 0 ? 512 / prefill_s : -1.0, huge_kb() / 1024);
    oc_session_free(s);
    oc_model_free(m);
    free(logits);
    free(ids);
    return 0;
  }
  double bytes_per_tok = (double)oc_model_decode_bytes(m);
  double decode_ceiling = bw * 1e9 / bytes_per_tok;

  /* prefill: 512 tokens in one chunk */
  double best_prefill = 1e30;
  for (int rep = 0; rep < 2; rep++) {
    oc_session_reset(s);
    double tp = oc_now();
    if (oc_forward(s, ids, 512, NULL, logits, 0, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    double dt = oc_now() - tp;
    if (dt < best_prefill) best_prefill = dt;
  }
  double prefill_tps = 512 / best_prefill;
  double prefill_gflops = 2.0 * lin_params * 512 / best_prefill / 1e9;

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double rss_gb = (double)ru.ru_maxrss * 1024 / 1e9;
  double kv_bytes = 0;
  for (int i = 0; i < c->n_layers; i++)
    if (oc_config_kv_source(c, i) < 0) kv_bytes += 2.0 * 1024 * c->n_kv_heads * oc_config_layer_head_dim(c, i) * 4;
  double weights_no_ple = (double)(oc_weights_bytes(w) - ple_bytes);
  double rss_target = (1.15 * weights_no_ple + kv_bytes) / 1e9;

  /* Paired rounds (after the RSS reading: the bandwidth buffer is 1 GiB): this VM's bandwidth
   * drifts by +-15 % over minutes and swings 20-48 GB/s from one 1 GiB read to the next, so each
   * round takes two ceilings right beside its 8 decode tokens and the ratio is taken per round:
   *  - the 1 GiB read of measure_bandwidth (best of 2 passes of its 8 patterns), before;
   *  - one pure read of the decode's own weight pages before and one after (mean of the two):
   *    the same bytes, read the way the kernel reads them, in the same few seconds. */
  enum { ROUNDS = 8, PER = 8 };
  double ratios[ROUNDS], wratios[ROUNDS], pair_tps = 0, pair_bw = 0, pair_wbw = 0;
  oc_session_reset(s);
  if (oc_forward(s, ids, 128, NULL, logits, 0, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
  for (int r = 0; r < ROUNDS; r++) {
    double b = measure_bandwidth(threads, 2, NULL), wb = measure_weights_read(w, threads);
    double tps = decode_steps(s, logits, V, PER, &e);
    if (tps < 0) { fprintf(stderr, "%s\n", e.msg); return 1; }
    wb = (wb + measure_weights_read(w, threads)) / 2;
    ratios[r] = tps / (b * 1e9 / bytes_per_tok);
    wratios[r] = tps / (wb * 1e9 / bytes_per_tok);
    pair_tps += tps / ROUNDS;
    pair_bw += b / ROUNDS;
    pair_wbw += wb / ROUNDS;
  }
  sort_doubles(ratios, ROUNDS);
  sort_doubles(wratios, ROUNDS);
  const double pair_median = median_sorted(ratios, ROUNDS), wpair_median = median_sorted(wratios, ROUNDS);

  printf("model: %s (%s), %d layers, hidden %d, vocab %d, threads %d\n", argv[1], c->architecture, c->n_layers, c->hidden, V, threads);
  printf("load: %.2f s (mmap)\n", t_load);
  printf("decode: %.2f tok/s; ceiling %.2f tok/s (%.2f GB/s / %.2f GB per token) = %.0f%% of ceiling\n", decode_tps,
         decode_ceiling, bw, bytes_per_tok / 1e9, 100 * decode_tps / decode_ceiling);
  printf("  against the plain one-stream read (%.2f GB/s, best of 5): %.0f%%\n", plain_bw, 100 * decode_tps / (plain_bw * 1e9 / bytes_per_tok));
  printf("decode, paired rounds (%d tokens each, x%d): %.2f tok/s\n", PER, ROUNDS, pair_tps);
  printf("  against the 1 GiB read before each (%.2f GB/s mean): min %.0f%%, median %.0f%%, max %.0f%%; >= 80%% in %d of %d rounds\n",
         pair_bw, 100 * ratios[0], 100 * pair_median, 100 * ratios[ROUNDS - 1], count_at_least(ratios, ROUNDS, 0.8), ROUNDS);
  printf("  against a read of the weights' own pages before and after each (%.2f GB/s mean): min %.0f%%, median %.0f%%, max %.0f%%; >= 80%% in %d of %d rounds\n",
         pair_wbw, 100 * wratios[0], 100 * wpair_median, 100 * wratios[ROUNDS - 1], count_at_least(wratios, ROUNDS, 0.8), ROUNDS);
  printf("prefill (512): %.1f tok/s, %.1f GFLOP/s of linear layers = %.0f%% of sgemm %.1f GFLOP/s, %.0f%% of the f32 FMA peak %.1f GFLOP/s\n",
         prefill_tps, prefill_gflops, 100 * prefill_gflops / gf, gf, 100 * prefill_gflops / fma, fma);
  printf("peak RSS: %.2f GB; target <= %.2f GB (1.15 x %.2f GB weights w/o PLE table + %.3f GB KV)\n", rss_gb, rss_target,
         weights_no_ple / 1e9, kv_bytes / 1e9);
  if (json) {
    FILE *f = fopen(json, "w");
    if (f) {
      fprintf(f, "{\"threads\": %d, \"bandwidth_gbs\": %.3f, \"plain_bandwidth_gbs\": %.3f, \"sgemm_gflops\": %.2f, \"fma_peak_gflops\": %.2f, \"decode_tps\": %.3f, \"decode_ceiling_tps\": %.3f, "
                 "\"prefill_tps\": %.2f, \"prefill_gflops\": %.2f, \"peak_rss_gb\": %.3f, \"rss_target_gb\": %.3f, "
                 "\"paired_decode_tps\": %.3f, \"paired_bandwidth_gbs\": %.3f, \"paired_ceiling_fraction_median\": %.3f, \"paired_weights_read_gbs\": %.3f, \"paired_weights_fraction_median\": %.3f, \"paired_rounds\": %d, "
                 "\"paired_rounds_at_80\": %d, \"paired_weights_rounds_at_80\": %d}\n",
              threads, bw, plain_bw, gf, fma, decode_tps, decode_ceiling, prefill_tps, prefill_gflops, rss_gb, rss_target, pair_tps, pair_bw, pair_median, pair_wbw, wpair_median, ROUNDS,
              count_at_least(ratios, ROUNDS, 0.8), count_at_least(wratios, ROUNDS, 0.8));
      fclose(f);
    }
  }
  oc_session_free(s);
  oc_model_free(m);
  free(logits);
  free(ids);
  return 0;
}
