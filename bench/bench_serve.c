/* Serving throughput of the continuous-batching engine (the scheduler behind `opencon serve`, without
 * HTTP) on a guard bundle, one JSON line per measurement:
 *   streams S = 1, 2, 4, 8: S generations of NEW tokens from PROMPT-token prompts, all submitted at
 *     once into S slots: aggregate decode tokens/s (decode steps only, the engine's own clock) and
 *     end to end (all tokens / wall time), with the probe every N tokens (never pausing); in rounds
 *     (S = 1, 2, 4, 8 in each), each round's ratios to its own one stream, and their medians;
 *   load: 4 slots, 16 requests arriving every 150 ms: time to first token (submission to the
 *     first generated token, queueing included) p50 / p95, and to the first released text;
 *   classifier: 4 streams whose every probe reading calls the classifier (a pause threshold of 0,
 *     an always-allowing classifier) against 4 without it;
 *   neighbour: 4 streams beside a CPU-bound process (one busy loop per core), with the engine's team
 *     adapting to it (the default) and kept whole;
 *   probe cost: S = 1 and 8 sessions decoding together, steps with the probe's work (the taps of
 *     its layers, then its logit on every row: more than the engine does, which taps only when a
 *     stream's reading is due) alternating with steps without it (ABBA), so the machine's drift
 *     cancels: the mean extra time per step and its 95 % interval; and that work alone (the taps'
 *     copy and the logits) timed over many repetitions, against the step.
 * usage: bench_serve MODEL_DIR PROBE_PATH [CLASSIFIER_DIR|-] [threads] [NEW] [PROMPT] [stored|q8] [rounds (3)] */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "opencon/serve.h"

static const char *CPU = "", *WEIGHTS = "stored";
#define MAX_ROUNDS 16

typedef struct {
  double tps_decode, tps_e2e, ttft_p50, ttft_p95, release_p50, release_p95;
  int64_t tokens, classifier_calls;
} result;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double pct(double *v, int n, double p) { /* nearest rank */
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int k = (int)ceil(p * n) - 1;
  return v[k < 0 ? 0 : k];
}

/* n requests into an engine of `slots` slots, arriving every gap_s seconds */
/* adapt: the engine's adapt_team */
static int run_adapt(const oc_guard *g, int slots, int threads, int n, double gap_s, int new_tokens, int prompt_len, const oc_guard_opts *base, int adapt, result *out) {
  oc_error err = {0};
  oc_engine_opts eo;
  oc_engine_opts_defaults(&eo);
  eo.parallel = slots;
  eo.queue = n;
  eo.threads = threads;
  eo.ctx_size = prompt_len + new_tokens + 8;
  eo.adapt_team = adapt;
  oc_engine *e;
  if (oc_engine_new(g, &eo, &e, &err)) { fprintf(stderr, "error: %s\n", err.msg); return -1; }
  const int V = oc_model_cfg(oc_guard_model(g))->vocab;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)prompt_len);
  oc_job **jobs = calloc((size_t)n, sizeof *jobs);
  double *t_sub = calloc((size_t)n, sizeof(double)), *ttft = calloc((size_t)n, sizeof(double)), *rel = calloc((size_t)n, sizeof(double));
  size_t *toff = calloc((size_t)n, sizeof(size_t)), *eoff = calloc((size_t)n, sizeof(size_t));
  int *done = calloc((size_t)n, sizeof(int));
  const double t0 = oc_now();
  int submitted = 0, finished = 0, rc = 0;
  while (finished < n) {
    while (submitted < n && oc_now() - t0 >= submitted * gap_s) {
      for (int t = 0; t < prompt_len; t++) ids[t] = (int32_t)(((int64_t)(submitted * 131 + t) * 7919 + 13) % (V - 10) + 5);
      oc_guard_opts o = *base;
      o.max_new_tokens = new_tokens;
      t_sub[submitted] = oc_now();
      if (oc_engine_submit(e, ids, prompt_len, "Explain SQL injection at a high level", &o, 0, &jobs[submitted], &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        rc = -1;
        goto out;
      }
      rel[submitted] = NAN;
      submitted++;
    }
    for (int i = 0; i < submitted; i++) {
      if (done[i]) continue;
      oc_job_news nw;
      oc_job_poll(jobs[i], &toff[i], &eoff[i], 0, &nw);
      if (nw.text_len && isnan(rel[i])) rel[i] = oc_now() - t_sub[i];
      if (nw.done) {
        const oc_guard_result *r;
        if (oc_job_result(jobs[i], &r, NULL, &err)) { fprintf(stderr, "error: %s\n", err.msg); rc = -1; oc_job_news_free(&nw); goto out; }
        ttft[i] = oc_job_queued_ms(jobs[i]) / 1e3 + r->ttft_ms / 1e3;
        out->tokens += r->n_tokens;
        out->classifier_calls += r->classifier_calls;
        if (isnan(rel[i])) rel[i] = oc_now() - t_sub[i];
        done[i] = 1;
        finished++;
      }
      oc_job_news_free(&nw);
    }
    usleep(10000); /* (a client waking every 200 us cost the 2-thread decode ~20 % here; 10 ms: first-release times to 10 ms) */
  }
  const double wall = oc_now() - t0;
  oc_engine_stats st;
  oc_engine_get_stats(e, &st);
  out->tps_decode = (double)st.decode_tokens / st.decode_s;
  out->tps_e2e = (double)out->tokens / wall;
  out->ttft_p50 = pct(ttft, n, 0.5);
  out->ttft_p95 = pct(ttft, n, 0.95);
  out->release_p50 = pct(rel, n, 0.5);
  out->release_p95 = pct(rel, n, 0.95);
out:
  for (int i = 0; i < submitted; i++) oc_job_release(jobs[i]);
  oc_engine_free(e);
  free(ids); free(jobs); free(t_sub); free(ttft); free(rel); free(toff); free(eoff); free(done);
  return rc;
}

static int run(const oc_guard *g, int slots, int threads, int n, double gap_s, int new_tokens, int prompt_len, const oc_guard_opts *base, result *out) {
  return run_adapt(g, slots, threads, n, gap_s, new_tokens, prompt_len, base, 1, out);
}

/* The probe's logit of each of S streams from the taps [nl][S][H]: a stream's row of each layer
 * gathered side by side into row[nl * H], as the guard reads them; their sum. */
static double probe_logits(const oc_probe *pr, const float *tap, int S, int nl, size_t H, float *row) {
  double sum = 0;
  for (int k = 0; k < S; k++) {
    for (int li = 0; li < nl; li++) memcpy(row + (size_t)li * H, tap + ((size_t)li * (size_t)S + (size_t)k) * H, sizeof(float) * H);
    sum += oc_probe_logit(pr, row);
  }
  return sum;
}

/* The probe's share of a decode step at S sessions, measured by alternating steps with and without
 * it (module comment). */
static int probe_cost(const oc_guard *g, const oc_probe *pr, int S, int pairs, int prompt_len, int threads) {
  const oc_model *m = oc_guard_model(g);
  const oc_model_config *c = oc_model_cfg(m);
  const int *layers;
  const int nl = oc_guard_probe_layers(g, &layers);
  oc_error err = {0};
  oc_set_threads(threads);
  oc_session *ss[8] = {0};
  int32_t ids[8], *prompt = malloc(sizeof(int32_t) * (size_t)prompt_len);
  const size_t H = (size_t)c->hidden;
  float *logits = malloc(sizeof(float) * (size_t)S * (size_t)c->vocab), *tap = malloc(sizeof(float) * (size_t)S * (size_t)nl * H),
        *row = malloc(sizeof(float) * (size_t)nl * H);
  double *diff = calloc((size_t)pairs, sizeof(double)), with = 0, without = 0, sink = 0;
  int rc = -1;
  if (S > 8 || pairs != 16) { oc_fail(&err, "probe_cost takes up to 8 sessions and 16 pairs (t quantile below)"); goto out; }
  if (!prompt || !logits || !tap || !row || !diff) { oc_fail(&err, "out of memory"); goto out; }
  for (int k = 0; k < S; k++) {
    for (int t = 0; t < prompt_len; t++) prompt[t] = (int32_t)(((int64_t)(k * 131 + t) * 7919 + 13) % (c->vocab - 10) + 5);
    if (!(ss[k] = oc_session_new(m, prompt_len + 4 * pairs + 8, &err)) || oc_forward(ss[k], prompt, prompt_len, NULL, NULL, 0, &err)) goto out;
    ids[k] = 100 + k;
  }
  const oc_taps taps = {nl, layers, 0, NULL, tap};
  for (int p = 0; p < pairs; p++) {
    double t[4];
    for (int i = 0; i < 4; i++) { /* ABBA: with, without, without, with */
      const int probe = i == 0 || i == 3;
      const double t0 = oc_now();
      if (oc_forward_batch(ss, S, ids, probe ? &taps : NULL, logits, &err)) goto out;
      if (probe) sink += probe_logits(pr, tap, S, nl, H, row);
      t[i] = oc_now() - t0;
    }
    diff[p] = (t[0] + t[3] - t[1] - t[2]) / 2;
    with += t[0] + t[3];
    without += t[1] + t[2];
  }
  /* the probe's own work alone, timed over many repetitions: the tap's copy of each row (what the
   * forward does for it) and the gathered rows' logits */
  const int reps = 2000;
  float *copy = malloc(sizeof(float) * (size_t)S * (size_t)nl * H);
  if (!copy) { oc_fail(&err, "out of memory"); goto out; }
  const double w0 = oc_now();
  for (int r = 0; r < reps; r++) {
    memcpy(copy, tap, sizeof(float) * (size_t)S * (size_t)nl * H);
    sink += probe_logits(pr, copy, S, nl, H, row);
  }
  const double work = (oc_now() - w0) / reps;
  free(copy);
  double mean = 0, var = 0;
  for (int p = 0; p < pairs; p++) mean += diff[p] / pairs;
  for (int p = 0; p < pairs; p++) var += (diff[p] - mean) * (diff[p] - mean) / (pairs - 1);
  const double step = without / (2.0 * pairs), half = 2.131 * sqrt(var / pairs); /* (Student's t, 15 degrees of freedom, 97.5 %) */
  printf("{\"bench\": \"serve\", \"cpu\": \"%s\", \"weights\": \"%s\", \"what\": \"probe cost, steps with and without it alternating\", \"streams\": %d, "
         "\"threads\": %d, \"steps\": %d, \"step_ms_without\": %.2f, \"step_ms_with\": %.2f, \"extra_ms\": %.3f, \"extra_ms_95ci\": [%.3f, %.3f], "
         "\"probe_overhead_pct\": %.3f, \"probe_overhead_pct_95ci\": [%.3f, %.3f], \"probe_work_us_per_step\": %.2f, \"probe_work_pct\": %.4f%s}\n",
         CPU, WEIGHTS, S, threads, 4 * pairs, 1e3 * step, 1e3 * with / (2.0 * pairs), 1e3 * mean, 1e3 * (mean - half), 1e3 * (mean + half),
         100 * mean / step, 100 * (mean - half) / step, 100 * (mean + half) / step, 1e6 * work, 100 * work / step,
         isfinite(sink) ? "" : ", \"note\": \"non-finite probe logits\"");
  fflush(stdout);
  rc = 0;
out:
  if (rc) fprintf(stderr, "error: probe cost: %s\n", err.msg);
  for (int k = 0; k < S && k < 8; k++) oc_session_free(ss[k]);
  free(prompt); free(logits); free(tap); free(row); free(diff);
  return rc;
}

static void print(const char *what, int streams, int threads, const result *r, const char *extra) {
  printf("{\"bench\": \"serve\", \"cpu\": \"%s\", \"weights\": \"%s\", \"what\": \"%s\", \"streams\": %d, \"threads\": %d, \"decode_tokens_per_s\": %.3f, "
         "\"end_to_end_tokens_per_s\": %.3f, \"ttft_p50_s\": %.3f, \"ttft_p95_s\": %.3f, \"first_release_p50_s\": %.3f, \"first_release_p95_s\": %.3f, "
         "\"tokens\": %lld, \"classifier_calls\": %lld%s}\n",
         CPU, WEIGHTS, what, streams, threads, r->tps_decode, r->tps_e2e, r->ttft_p50, r->ttft_p95, r->release_p50, r->release_p95, (long long)r->tokens,
         (long long)r->classifier_calls, extra ? extra : "");
  fflush(stdout);
}

static char *cpu_name(void) {
  static char name[128] = "unknown";
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "model name", 10) == 0) {
      char *p = strchr(line, ':');
      if (p) { snprintf(name, sizeof name, "%s", p + 2); name[strcspn(name, "\n")] = 0; }
      break;
    }
  if (f) fclose(f);
  return name;
}

int main(int argc, char **argv) {
  oc_blas_reexec(argv); /* OpenBLAS's generic kernels on a CPU it does not know: run again with its family */
  if (argc < 3) { fprintf(stderr, "usage: bench_serve MODEL_DIR PROBE_PATH [CLASSIFIER_DIR|-] [threads] [NEW] [PROMPT] [stored|q8] [rounds]\n"); return 2; }
  CPU = cpu_name();
  const char *cls = argc > 3 && strcmp(argv[3], "-") ? argv[3] : NULL;
  const int threads = argc > 4 ? atoi(argv[4]) : 2, NEW = argc > 5 ? atoi(argv[5]) : 64, PROMPT = argc > 6 ? atoi(argv[6]) : 128;
  const int ROUNDS = argc > 8 ? atoi(argv[8]) : 3;
  if (ROUNDS < 1 || ROUNDS > MAX_ROUNDS) { fprintf(stderr, "error: rounds must be in [1, %d]\n", MAX_ROUNDS); return 2; }
  oc_guard_spec spec;
  oc_guard_spec_defaults(&spec);
  spec.model_id = argv[1];
  spec.probe_path = argv[2];
  spec.classifier_dir = cls;
  oc_error err = {0};
  if (argc > 7 && oc_weight_mode_parse(argv[7], &spec.weights, &err)) { fprintf(stderr, "error: %s\n", err.msg); return 2; }
  WEIGHTS = oc_weight_mode_name(spec.weights);
  if (cls) spec.allow_threshold = 0.999999, spec.block_threshold = 1.0; /* the classifier always allows: streams run to their end */
  oc_guard_bundle *b;
  if (oc_guard_open(&spec, &b, &err)) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
  /* measure within memory: this VM pages out file pages it sees little use of (DAMON), which put
   * disk reads into decode steps; locked, the weights stay (the whole checkpoint: ~9.3 GB for E2B) */
  if (mlockall(MCL_CURRENT)) perror("bench_serve: mlockall (the weights may be paged out mid-run)");
  const oc_guard *g = oc_guard_bundle_guard(b);
  oc_guard_opts probe;
  oc_guard_bundle_opts(b, &probe);
  probe.use_chat_template = 0;
  probe.skip_classifier = 1;
  result r1 = {0};
  /* a warm-up run pages the weights in */
  if (run(g, 1, threads, 1, 0, 8, PROMPT, &probe, &r1)) return 1;
  /* the streams in rounds of 1, 2, 4, 8: this VM's speed drifts by tens of percent within minutes,
   * so each ratio is taken within its round, and the summary rows give the medians */
  double tps[4][MAX_ROUNDS], ratio[4][MAX_ROUNDS];
  for (int r = 0; r < ROUNDS; r++)
    for (int k = 0; k < 4; k++) {
      const int S = 1 << k;
      result rp = {0};
      if (run(g, S, threads, S, 0, NEW, PROMPT, &probe, &rp)) return 1;
      tps[k][r] = rp.tps_decode;
      ratio[k][r] = rp.tps_decode / tps[0][r];
      char extra[96];
      snprintf(extra, sizeof extra, ", \"round\": %d, \"speedup_vs_1_in_round\": %.2f", r + 1, ratio[k][r]);
      print("streams", S, threads, &rp, extra);
    }
  for (int k = 0; k < 4; k++) {
    double lo = ratio[k][0], hi = lo;
    for (int r = 1; r < ROUNDS; r++) { lo = fmin(lo, ratio[k][r]); hi = fmax(hi, ratio[k][r]); }
    const double t = pct(tps[k], ROUNDS, 0.5), x = pct(ratio[k], ROUNDS, 0.5);
    printf("{\"bench\": \"serve\", \"cpu\": \"%s\", \"weights\": \"%s\", \"what\": \"streams, median of %d rounds\", \"streams\": %d, \"threads\": %d, "
           "\"decode_tokens_per_s\": %.3f, \"speedup_vs_1\": %.2f, \"speedup_vs_1_range\": [%.2f, %.2f]}\n",
           CPU, WEIGHTS, ROUNDS, 1 << k, threads, t, x, lo, hi);
  }
  fflush(stdout);
  oc_probe pr;
  if (oc_probe_load(argv[2], &pr, &err)) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
  const int cost_rc = probe_cost(g, &pr, 1, 16, PROMPT, threads) || probe_cost(g, &pr, 8, 16, PROMPT, threads);
  oc_probe_free(&pr);
  if (cost_rc) return 1;
  result rl = {0};
  if (run(g, 4, threads, 16, 0.15, NEW, PROMPT, &probe, &rl)) return 1;
  print("load: 16 requests every 150 ms into 4 slots", 4, threads, &rl, NULL);
  if (cls) {
    oc_guard_opts every = probe;
    every.skip_classifier = 0;
    every.pause_threshold = 0; /* every reading pauses and asks the classifier */
    result rc = {0}, rn = {0};
    if (run(g, 4, threads, 4, 0, NEW, PROMPT, &every, &rc) || run(g, 4, threads, 4, 0, NEW, PROMPT, &probe, &rn)) return 1;
    char extra[96];
    snprintf(extra, sizeof extra, ", \"without_classifier_end_to_end_tokens_per_s\": %.3f", rn.tps_e2e);
    print("classifier at every probe reading", 4, threads, &rc, extra);
  }
  /* a CPU-bound neighbour: one busy loop per core */
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  pid_t kids[64];
  int nk = 0;
  for (long c = 0; c < cores && nk < 64; c++) {
    pid_t p = fork();
    if (p == 0) { volatile unsigned long x = 0; for (;;) x++; }
    if (p > 0) kids[nk++] = p;
  }
  result rb = {0}, rf = {0};
  int brc = run(g, 4, threads, 4, 0, NEW, PROMPT, &probe, &rb) || run_adapt(g, 4, threads, 4, 0, NEW, PROMPT, &probe, 0, &rf);
  for (int k = 0; k < nk; k++) { kill(kids[k], SIGKILL); waitpid(kids[k], NULL, 0); }
  if (brc) return 1;
  print("beside a busy loop per core", 4, threads, &rb, NULL);
  print("beside a busy loop per core, the team kept whole (no adapt_team)", 4, threads, &rf, NULL);
  oc_guard_close(b);
  return 0;
}
