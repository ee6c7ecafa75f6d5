/* benchmark-jailbreak: the flags of oc_jailbreak_run (raw vs guarded generation over benchmark
 * prompts, judged, stored in SQLite so a rerun resumes) and its report; `opencon datasets`: what
 * prompt files load as, without a model. */
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
  for (int i = 0; i < set.n_sources; i++)
    if (set.sources[i].note) fprintf(stderr, "note: %s %s\n", set.sources[i].path, set.sources[i].note);
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
  jo.rubric = strcmp(arg_str(a, "judge_rubric"), "strongreject") == 0 ? OC_RUBRIC_STRONGREJECT : OC_RUBRIC_NONE;
  jo.teacher_path = arg_str(a, "teacher_data_path");
  jo.stop_after = arg_int(a, "stop_after");
  if (jo.judge == OC_JUDGE_HTTP || jo.rubric != OC_RUBRIC_NONE) {
    const char *kenv = arg_str(a, "openrouter_api_key_env");
    hj.api_key = api_key = oc_judge_api_key(kenv, ".env.local");
    if (!api_key && strstr(hj.url, "openrouter.ai")) { oc_fail(&err, "no API key: set %s (or put it in .env.local)", kenv); goto fail; }
  }
  if (jo.judge == OC_JUDGE_CLASSIFIER && !spec.classifier_dir) {
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
    {.name = "dataset_path", .type = OPT_IN, .attr = OPT_REQUIRED | OPT_REPEAT | OPT_DIR_OK, .metavar = "FILE|DIR",
     .help = "prompts as their authors publish them (`opencon datasets` lists the layouts); a directory: every file under it, each its own source"},
    O_INT("limit_per_split", "10", 0, 1 << 30, "prompts per split (0 = all)"),
    O_STR("only_split", NULL, "run this split only"),
    O_INT("example_offset", "0", 0, 1 << 30, "skip this many prompts of each split"),
    O_INT("example_index", "-1", -1, 1 << 30, "run only the prompt at this index of each split (-1 = all)"),
    O_I64("seed", "-1", -1, INT64_MAX, "shuffle each split with this seed first (-1 = file order)"),
    O_INT("max_new_tokens", "64", 1, 1 << 20, "tokens to generate per response"),
    {.name = "judge_type", .type = OPT_CHOICE, .def = "classifier", .choices = "classifier|openrouter",
     .help = "who judges the responses: the exchange classifier, or an LLM over an OpenAI-compatible API"},
    {.name = "judge_rubric", .type = OPT_CHOICE, .def = "none", .choices = "none|strongreject",
     .help = "also grade every response with the StrongREJECT rubric through the HTTP judge (--judge_url, --openrouter_model): mean score raw and guarded"},
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
    "never regenerates or re-judges. Prints the report: per split and per category the attack success rate (unsafe and not refused)\n"
    "raw and guarded with 95 % Wilson intervals, refusal and guard block rates, judge errors; over-refusal on benign prompts;\n"
    "with --judge_rubric strongreject the mean StrongREJECT score; the datasets and layouts (JSON on stdout, Markdown on stderr).",
    benchmark_jailbreak_opts, run_benchmark_jailbreak};

/* ---- opencon datasets ---- */
static void print_layouts(void) {
  printf("Prompt layouts, recognised by their header or keys (not by file name):\n\n");
  for (int l = 0; l < OC_LAYOUT_COUNT; l++) {
    const oc_prompt_layout_info *li = oc_prompt_layout_info_of((oc_prompt_layout)l);
    printf("  %-22s %s\n  %-22s   recognised by: %s\n  %-22s   %s\n", li->name, li->title, "", li->recognised, "", li->splits);
  }
}

/* one path's sources: "PATH: LAYOUT (TITLE), N prompts [, K skipped]: split n, ..." */
static void print_sources(const cJSON *sources) {
  for (const cJSON *s = sources->child; s; s = s->next) {
    const char *path = cJSON_GetObjectItem(s, "path")->valuestring, *note = cJSON_GetObjectItem(s, "note") ? cJSON_GetObjectItem(s, "note")->valuestring : NULL;
    if (note) { printf("%s: %s\n", path, note); continue; }
    int n = cJSON_GetObjectItem(s, "prompts")->valueint;
    printf("%s: %s (%s), %d prompt%s", path, cJSON_GetObjectItem(s, "layout")->valuestring, cJSON_GetObjectItem(s, "layout_title")->valuestring, n,
           n == 1 ? "" : "s");
    int skipped = cJSON_GetObjectItem(s, "skipped")->valueint, benign = cJSON_GetObjectItem(s, "benign")->valueint,
        cats = cJSON_GetObjectItem(s, "categories")->valueint;
    if (skipped) printf(", %d without a prompt skipped", skipped);
    if (benign) printf(", %d benign", benign);
    if (cats) printf(", %d categor%s", cats, cats == 1 ? "y" : "ies");
    const char *sep = ": ";
    for (const cJSON *x = cJSON_GetObjectItem(s, "splits")->child; x; x = x->next, sep = ", ") printf("%ssplit %s %d", sep, x->string, x->valueint);
    printf("\n");
  }
}

static int run_datasets(const cli_args *a) {
  int n_paths;
  const char *const *paths = arg_all(a, "path", &n_paths);
  if (!n_paths) { print_layouts(); return 0; }
  int rc = 0, json = arg_flag(a, "json");
  cJSON *all = cJSON_CreateArray();
  for (int i = 0; i < n_paths; i++) {
    oc_prompt_set set = {0};
    oc_error err;
    int failed = oc_prompt_set_load(&set, paths[i], &err);
    cJSON *src = failed ? NULL : oc_prompt_sources_json(&set, NULL, 0);
    oc_prompt_set_free(&set);
    if (failed) {
      fprintf(stderr, "error: %s\n", err.msg);
      rc = 1;
      continue;
    }
    if (!src) { fprintf(stderr, "error: out of memory\n"); rc = 1; continue; }
    if (!json) print_sources(src);
    cJSON *x;
    while ((x = cJSON_DetachItemFromArray(src, 0)) != NULL) cJSON_AddItemToArray(all, x);
    cJSON_Delete(src);
  }
  if (json && cli_print_json(all, 1, NULL)) rc = 1;
  cJSON_Delete(all);
  return rc;
}

static const opt_spec datasets_opts[] = {
    {.name = "path", .type = OPT_ARGS, .metavar = "PATH", .help = "a prompt file or a directory of them (as --dataset_path takes them)"},
    O_FLAG("json", "print the sources as JSON"), O_END};
const cli_command cmd_datasets = {
    "datasets", "the prompt layouts benchmark-jailbreak recognises; given paths, what each file loads as",
    "Without a PATH: the layouts, how each is recognised and what its splits and categories are. With paths (files or directories, as\n"
    "--dataset_path takes them): each file's layout, prompt count, splits and categories, without loading a model. A file that is not\n"
    "recognised is an error listing the layouts and naming the columns or keys it has (exit 1).",
    datasets_opts, run_datasets};
