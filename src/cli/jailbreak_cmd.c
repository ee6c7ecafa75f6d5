/* benchmark-jailbreak: the flags of oc_jailbreak_run (raw vs guarded generation over benchmark
 * prompts, judged, stored in SQLite so a rerun resumes) and its report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/jailbreak.h"
#include "opts.h"

static int run_benchmark_jailbreak(const cli_args *a) {
  oc_error err = {0};
  oc_prompt_set set = {0};
  int *sel = NULL, nsel = 0, rc = 1, nds;
  char *api_key = NULL, *dbpath = NULL;
  oc_jailbreak_report rep = {0};
  const char *const *datasets = arg_all(a, "dataset_path", &nds);
  for (int i = 0; i < nds; i++)
    if (oc_prompt_set_load(&set, datasets[i], &err)) goto fail;
  if (oc_prompt_select(&set, arg_int(a, "limit_per_split"), arg_str(a, "only_split"), arg_int(a, "example_offset"), arg_int(a, "example_index"),
                       arg_i64(a, "seed"), &sel, &nsel, &err))
    goto fail;
  oc_guard_spec spec;
  if (guard_spec(a, &spec, &err)) goto fail;
  oc_http_judge hj = {.url = arg_str(a, "judge_url"),
                      .model = arg_str(a, "openrouter_model"),
                      .timeout_s = arg_double(a, "judge_timeout_s"),
                      .backoff_s = arg_double(a, "judge_backoff_s"),
                      .max_retries = arg_int(a, "judge_max_retries"),
                      .max_reply_bytes = (size_t)arg_i64(a, "judge_max_reply_bytes")};
  oc_jailbreak_opts jo;
  oc_jailbreak_opts_defaults(&jo);
  jo.guard = &spec;
  jo.max_new_tokens = arg_int(a, "max_new_tokens");
  jo.use_chat_template = !arg_flag(a, "no_chat_template");
  jo.final_classifier_check = arg_flag(a, "final_classifier_check");
  jo.judge = strcmp(arg_str(a, "judge_type"), "openrouter") == 0 ? OC_JUDGE_HTTP : OC_JUDGE_CLASSIFIER;
  jo.http = &hj;
  jo.teacher_path = arg_str(a, "teacher_data_path");
  jo.stop_after = arg_int(a, "stop_after");
  if (jo.judge == OC_JUDGE_HTTP) {
    const char *kenv = arg_str(a, "openrouter_api_key_env");
    hj.api_key = api_key = oc_judge_api_key(kenv, ".env.local");
    if (!api_key && strstr(hj.url, "openrouter.ai")) { oc_fail(&err, "no API key: set %s (or put it in .env.local)", kenv); goto fail; }
  } else if (!spec.classifier_dir) {
    rc = cli_usage_error(a, "--judge_type classifier needs --classifier_dir");
    goto done;
  }
  const char *out_path = arg_str(a, "out_path"), *base = out_path ? out_path : "jailbreak_benchmark.json";
  if (arg_given(a, "db")) dbpath = strdup(arg_str(a, "db"));
  else if ((dbpath = malloc(strlen(base) + 8))) sprintf(dbpath, "%s.sqlite", base);
  if (!(jo.db_path = dbpath)) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  oc_progress prog;
  oc_progress_start(&prog, "benchmark-jailbreak", "prompts", nsel, NULL);
  int jrc = oc_jailbreak_run(&set, sel, nsel, &jo, &prog, &rep, &err);
  oc_progress_end(&prog, NULL);
  if (jrc) goto fail;
  if (rep.stopped) {
    fprintf(stderr, "stopped after %d prompts (--stop_after)\n", rep.prompts_done);
    rc = 0;
    goto done;
  }
  char *js = cJSON_Print(rep.json);
  if (!js) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  printf("%s\n", js);
  free(js);
  fprintf(stderr, "%s", rep.markdown);
  if (out_path && oc_jailbreak_report_save(&rep, out_path, &err)) goto fail;
  rc = 0;
  goto done;
fail:
  rc = die(&err);
done:
  oc_jailbreak_report_free(&rep);
  free(api_key); free(dbpath); free(sel);
  oc_prompt_set_free(&set);
  return rc;
}

static const opt_spec benchmark_jailbreak_opts[] = {
    GUARD_OPTS,
    O_FLAG("final_classifier_check", "guarded runs classify the whole response at the end"),
    {.name = "dataset_path", .type = OPT_IN, .attr = OPT_REQUIRED | OPT_REPEAT,
     .help = "prompts: JSONL {\"prompt\", \"split\"}, a JSON array {\"text\", \"label\"} (WildGuard) or CSV (JailbreakBench, XSTest, AdvBench)"},
    O_INT("limit_per_split", "10", 0, 1 << 30, "prompts per split (0 = all)"),
    O_STR("only_split", NULL, "run this split only"),
    O_INT("example_offset", "0", 0, 1 << 30, "skip this many prompts of each split"),
    O_INT("example_index", "-1", -1, 1 << 30, "run only the prompt at this index of each split (-1 = all)"),
    O_I64("seed", "-1", -1, INT64_MAX, "shuffle each split with this seed first (-1 = file order)"),
    O_INT("max_new_tokens", "64", 1, 1 << 20, "tokens to generate per response"),
    {.name = "judge_type", .type = OPT_CHOICE, .def = "classifier", .choices = "classifier|openrouter",
     .help = "who judges the responses: the exchange classifier, or an LLM over an OpenAI-compatible API"},
    O_STR("openrouter_model", "openai/gpt-4o-mini", "the judge model"),
    O_STR("openrouter_api_key_env", "OPENROUTER_API_KEY", "the environment variable (or .env.local line) holding the API key"),
    O_STR("judge_url", "https://openrouter.ai/api/v1/chat/completions", "the chat completions endpoint"),
    O_DBL("judge_timeout_s", "60", 0.01, 3600, "per-request timeout in seconds"),
    O_INT("judge_max_retries", "4", 0, 100, "retries of a failed or malformed judge reply"),
    O_I64("judge_max_reply_bytes", "1048576", 1024, 1 << 30, "a longer judge reply is stored as an error row (not retried)"),
    O_DBL("judge_backoff_s", "2", 0, 600, "first retry delay in seconds (doubling)"),
    O_OUT("out_path", NULL, "also write the report here (JSON; the Markdown table beside it, R.md)"),
    O_OUT("db", NULL, "the SQLite store that makes reruns resume (default: OUT_PATH.sqlite, else jailbreak_benchmark.json.sqlite)"),
    O_OUT("teacher_data_path", NULL, "append the judged raw exchanges here as three-class training rows"),
    O_FLAG("no_chat_template", "the MVP's plain \"User:\\n...\\n\\nAssistant:\\n\" prompt instead of the chat template"),
    O_INT("stop_after", "0", 0, 1 << 30, "stop after this many prompts, without a report (0 = run them all)"),
    O_THREADS, O_END};
const cli_command cmd_benchmark_jailbreak = {
    "benchmark-jailbreak", "raw vs guarded generation on benchmark prompts, judged (LLM API or classifier), resumable",
    "--classifier_dir is also the judge with --judge_type classifier. Every generation and verdict goes into the SQLite store as it completes: rerunning the same command resumes and\n"
    "never regenerates or re-judges. Prints the report: per split raw/guarded unsafe and refusal rates, guard block\n"
    "rate, judge errors (JSON on stdout, the Markdown table on stderr).",
    benchmark_jailbreak_opts, run_benchmark_jailbreak};
