/* guarded-generate, benchmark-latency */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/guard.h"
#include "opts.h"

int guard_spec(const cli_args *a, oc_guard_spec *s, oc_error *err) {
  oc_guard_spec_defaults(s);
  s->model_id = arg_str(a, "model_id");
  s->probe_path = arg_str(a, "probe_path");
  s->config_path = arg_str(a, "config_path");
  s->classifier_dir = arg_str(a, "classifier_dir");
  s->allow_threshold = arg_double(a, "classifier_allow_threshold");
  s->block_threshold = arg_double(a, "classifier_block_threshold");
  s->weights = arg_weights(a);
  return cli_template_opts(&s->template_opts, err);
}

/* the generation flags both commands take, over the bundle's defaults */
static void gen_opts(const cli_args *a, const oc_guard_bundle *b, oc_guard_opts *g) {
  oc_guard_bundle_opts(b, g);
  g->max_new_tokens = arg_int(a, "max_new_tokens");
  g->use_chat_template = g->use_chat_template && !arg_flag(a, "no_chat_template");
}

static void emit_stdout(void *ud, const char *t, size_t n) { (void)ud; fwrite(t, 1, n, stdout); fflush(stdout); }
static void event_stderr(void *ud, const char *json) { (void)ud; fprintf(stderr, "guard: %s\n", json); }

/* ---- guarded-generate ---- */
static int run_guarded_generate(const cli_args *a) {
  oc_error err = {0};
  oc_guard_spec spec;
  oc_guard_bundle *b = NULL;
  FILE *trace = NULL;
  int rc = 1;
  if (guard_spec(a, &spec, &err) || oc_guard_open(&spec, &b, &err)) goto fail;
  oc_guard_opts go;
  gen_opts(a, b, &go);
  go.temperature = arg_double(a, "temperature");
  go.top_p = arg_double(a, "top_p");
  go.top_k = arg_int(a, "top_k");
  go.seed = (uint64_t)arg_i64(a, "seed");
  go.final_classifier_check = arg_flag(a, "final_classifier_check");
  go.skip_classifier = arg_flag(a, "skip_classifier");
  if (arg_given(a, "trace_path") && !(trace = fopen(arg_str(a, "trace_path"), "w"))) {
    oc_fail_code(&err, OC_ERR_IO, "%s: cannot write", arg_str(a, "trace_path"));
    goto fail;
  }
  go.trace = trace;
  oc_guard_result r;
  if (oc_guard_generate(oc_guard_bundle_guard(b), arg_str(a, "prompt"), &go, emit_stdout, event_stderr, NULL, &r, &err)) { printf("\n"); goto fail; }
  cJSON *j = oc_guard_result_json(&r);
  char *js = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  oc_guard_result_free(&r);
  if (!js) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  printf("\n%s\n", js);
  int wrc = arg_given(a, "out_path") && oc_write_file_atomic(arg_str(a, "out_path"), js, strlen(js), &err);
  free(js);
  if (wrc) goto fail;
  rc = 0;
  goto done;
fail:
  rc = die(&err);
done:
  if (trace) fclose(trace);
  oc_guard_close(b);
  return rc;
}

static const opt_spec guarded_generate_opts[] = {
    GUARD_OPTS,
    O_FLAG("final_classifier_check", "classify the whole response at the end (block -> refusal, uncertain -> held)"),
    O_FLAG("skip_classifier", "behave as if no classifier were given (a pause stops with status paused)"),
    O_("prompt", OPT_STR, OPT_REQUIRED | OPT_EMPTY_OK, NULL, "the user's prompt"),
    O_INT("max_new_tokens", "80", 1, 1 << 20, "tokens to generate at most"),
    O_FLAG("no_chat_template", "the MVP's plain \"User:\\n...\\n\\nAssistant:\\n\" prompt instead of the chat template"),
    O_DBL("temperature", "0", 0, 100, "sampling temperature (0 = greedy, the MVP's)"),
    O_DBL("top_p", "1", 1e-6, 1, "nucleus sampling mass (1 = off)"),
    O_INT("top_k", "0", 0, 1 << 30, "sample from the k most likely tokens (0 = off)"),
    O_I64("seed", "0", 0, INT64_MAX, "sampling seed"),
    O_OUT("trace_path", NULL, "a JSONL trace: one line per step (risk, smoothed risk, decisions)"),
    O_OUT("out_path", NULL, "also write the result JSON here"),
    O_THREADS, O_END};
const cli_command cmd_guarded_generate = {
    "guarded-generate", "decode with the probe every N tokens; the classifier decides on pauses",
    "Streams released text to stdout as the guard clears it, guard events to stderr, then the result JSON (status\n"
    "completed / paused / uncertain / blocked, response, risk, smoothed_risk, classifier_score, classifier_verdict,\n"
    "held_response_chars, final_classifier_check, counts and timings). The probe config's model_id must equal --model_id.",
    guarded_generate_opts, run_guarded_generate};

/* ---- benchmark-latency ---- */
static int run_benchmark_latency(const cli_args *a) {
  static const char *const defaults[] = {"Explain SQL injection at a high level", "Explain browser security headers at a high level",
                                         "Write a short poem about the ocean", "How should a web application store user passwords?"};
  oc_error err = {0};
  oc_guard_spec spec;
  if (guard_spec(a, &spec, &err)) return die(&err);
  int np, repeats = arg_int(a, "repeats");
  const char *const *prompts = arg_all(a, "prompt", &np);
  if (!np) { prompts = defaults; np = 4; }
  oc_guard_bundle *b = NULL;
  cJSON *rep = NULL;
  if (oc_guard_open(&spec, &b, &err)) return die(&err);
  oc_guard_opts base;
  gen_opts(a, b, &base);
  oc_progress prog;
  oc_progress_start(&prog, "benchmark-latency", "generations", (int64_t)np * repeats * 3, NULL);
  int rc = oc_guard_benchmark_latency(b, prompts, np, repeats, &base, &prog, &rep, &err) ? die(&err) : 0;
  oc_progress_end(&prog, NULL);
  oc_guard_close(b);
  if (rc) return rc;
  char *js = cJSON_Print(rep);
  cJSON_Delete(rep);
  if (!js) { fprintf(stderr, "error: out of memory\n"); return 1; }
  printf("%s\n", js);
  if (arg_given(a, "out_path") && oc_write_file_atomic(arg_str(a, "out_path"), js, strlen(js), &err)) rc = die(&err);
  free(js);
  return rc;
}

static const opt_spec benchmark_latency_opts[] = {
    GUARD_OPTS,
    {.name = "prompt", .type = OPT_STR, .attr = OPT_REPEAT | OPT_EMPTY_OK, .help = "a prompt to time (default: the MVP's four)"},
    O_INT("max_new_tokens", "64", 1, 1 << 20, "tokens to generate per run"),
    O_FLAG("no_chat_template", "the MVP's plain \"User:\\n...\\n\\nAssistant:\\n\" prompt instead of the chat template"),
    O_INT("repeats", "1", 1, 1000, "runs of each prompt in each mode"),
    O_OUT("out_path", NULL, "also write the report here"),
    O_THREADS, O_END};
const cli_command cmd_benchmark_latency = {"benchmark-latency", "baseline vs probe-only vs full guard: ms, tokens/s, time to first token",
                                           "Prints mean/p50/p95 ms, tokens/s and time to first token, probe and classifier calls, per prompt\n"
                                           "and overall.",
                                           benchmark_latency_opts, run_benchmark_latency};
