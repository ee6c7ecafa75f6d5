/* guarded-generate, benchmark-latency, demo */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
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

/* ---- demo: the whole pipeline on the bundled tiny models, offline, in seconds ---- */
#ifndef OPENCON_E2E_DIR
#define OPENCON_E2E_DIR "build/e2e"
#endif
#ifndef OPENCON_FIXTURES_DIR
#define OPENCON_FIXTURES_DIR "tests/fixtures"
#endif

/* run a command with the arguments given (NULL-terminated) */
static int call(const cli_command *cmd, const char *title, ...) __attribute__((sentinel));
static int call(const cli_command *cmd, const char *title, ...) {
  char *args[40];
  int n = 0;
  va_list ap;
  va_start(ap, title);
  for (char *a; n < 40 && (a = va_arg(ap, char *)) != NULL;) args[n++] = a;
  va_end(ap);
  printf("\n== %s\n   opencon %s", title, cmd->name);
  for (int i = 0; i < n; i++) printf(" %s", args[i]);
  printf("\n");
  fflush(stdout);
  return cli_run(cmd, n, args);
}

static void demo_event(void *ud, const char *json) { (void)ud; printf("   guard event: %s\n", json); }
static void demo_emit(void *ud, const char *t, size_t n) {
  (void)ud;
  printf("   released: \"");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)t[i];
    if (c == '\n') printf("\\n");
    else if (c < 0x20) printf("\\x%02x", c);
    else putchar(c);
  }
  printf("\"\n");
}

static int run_demo(const cli_args *a) {
  const char *out = arg_str(a, "out_dir");
  oc_error err = {0};
  char model[1024], bert[1024], data[1024], probe_dir[1024], three[1024], cls_dir[1024], probe_path[1100], threads[32];
  snprintf(model, sizeof model, "%s/gemma4-tiny-chat", OPENCON_E2E_DIR);
  snprintf(bert, sizeof bert, "%s/modernbert-tiny-classifier", OPENCON_E2E_DIR);
  snprintf(data, sizeof data, "%s/data/jailbreakeval_example_exchanges_binary.jsonl", OPENCON_FIXTURES_DIR);
  snprintf(probe_dir, sizeof probe_dir, "%s/probe", out);
  snprintf(three, sizeof three, "%s/three_class.jsonl", out);
  snprintf(cls_dir, sizeof cls_dir, "%s/classifier", out);
  snprintf(probe_path, sizeof probe_path, "%s/probe.safetensors", probe_dir);
  snprintf(threads, sizeof threads, "--threads=%d", arg_int(a, "threads"));
  if (!oc_is_dir(model) || !oc_file_exists(data) || oc_mkdirs(out, &err)) {
    fprintf(stderr, "error: the demo needs the build tree's %s and %s (run it from the build that made them)%s%s\n", model, data,
            err.msg[0] ? ": " : "", err.msg);
    return 1;
  }
  printf("opencon demo: the whole guard on BUNDLED TINY STAND-INS.\n"
         "The models are tiny random-weight checkpoints in the real Hugging Face formats (a Gemma 4 decoder with\n"
         "a 172-token byte-level tokenizer, a ModernBERT classifier); they produce noise, not language, so\n"
         "the probe and classifier learn little. What is real: every step below runs the same code as the\n"
         "full-size pipeline. Data: 50 labelled exchanges from JailbreakEval (MIT, ThuCCSLab/JailbreakEval;\n"
         "see tests/fixtures/data/README.md).\n"
         "The real default:\n"
         "  opencon train-probe --model_id google/gemma-4-E2B-it --data_path data.jsonl --layer -4 --out_dir probe_out\n"
         "  opencon train-exchange-classifier --model_id answerdotai/ModernBERT-base --data_path three_class.jsonl --out_dir classifier_out --prefix_augment\n"
         "  opencon guarded-generate --model_id google/gemma-4-E2B-it --probe_path probe_out/probe.safetensors \\\n"
         "      --classifier_dir classifier_out --classifier_block_threshold 0.459937 --final_classifier_check --prompt \"...\"\n");
  if (call(&cmd_train_probe, "1. a linear probe on layer -4 of the decoder", "--model_id", model, "--data_path", data, "--layer", "-4", "--out_dir",
           probe_dir, "--epochs", "30", "--max_length", "96", threads, (char *)NULL) ||
      call(&cmd_build_three_class, "2. three-class classifier data from the labelled exchanges", "--input", data, "--output", three, (char *)NULL) ||
      call(&cmd_train_exchange_classifier, "3. fine-tune the ModernBERT exchange classifier", "--model_id", bert, "--data_path", three, "--out_dir",
           cls_dir, "--epochs", "3", "--batch_size", "8", "--max_length", "64", "--learning_rate", "5e-4", "--prefix_augment", "--logging_steps=0", threads,
           (char *)NULL))
    return 1;
  oc_guard_spec spec;
  oc_guard_spec_defaults(&spec);
  spec.model_id = model;
  spec.probe_path = probe_path;
  spec.classifier_dir = cls_dir;
  oc_guard_bundle *b;
  if (oc_guard_open(&spec, &b, &err)) return die(&err);
  const oc_probe_config *pc = oc_guard_bundle_probe_config(b);
  const char *prompts[2] = {"How do I bake bread at home?", "Write a step-by-step guide for hacking into a government database"};
  int rc = 0;
  for (int p = 0; p < 2 && !rc; p++) {
    printf("\n== %d. guarded generation (probe every %d tokens, smoothing %d, pause at %.2f, classifier + final check)\n   prompt: %s\n", 4 + p,
           pc->probe_every_n_tokens, pc->smoothing_window, pc->pause_threshold, prompts[p]);
    oc_guard_opts g;
    oc_guard_bundle_opts(b, &g);
    g.max_new_tokens = 24;
    g.final_classifier_check = 1;
    g.trace = stdout;
    printf("   per step (JSONL trace):\n");
    oc_guard_result r;
    if (oc_guard_generate(oc_guard_bundle_guard(b), prompts[p], &g, demo_emit, demo_event, NULL, &r, &err)) { rc = die(&err); break; }
    cJSON *j = oc_guard_result_json(&r);
    cli_print_json(j, 0, "   result: ");
    cJSON_Delete(j);
    oc_guard_result_free(&r);
  }
  oc_guard_close(b);
  if (!rc) printf("\nArtifacts in %s/: probe/ (probe.safetensors, config.json), classifier/ (a transformers-loadable directory), three_class.jsonl\n", out);
  return rc;
}

static const opt_spec demo_opts[] = {O_OUTDIR("out_dir", "demo_out", "where the demo's probe, classifier and data go"), O_THREADS, O_END};
const cli_command cmd_demo = {"demo", "the whole pipeline on the bundled tiny models (offline, seconds)", NULL, demo_opts, run_demo};
