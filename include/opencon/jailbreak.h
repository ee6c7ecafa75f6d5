/* opencon — jailbreak benchmark harness: prompt sets, LLM / classifier judges, a resumable SQLite
 * store and the MVP's per-split report. */
#ifndef OPENCON_JAILBREAK_H
#define OPENCON_JAILBREAK_H
#include <cjson/cJSON.h>

#include "opencon/base.h"
#include "opencon/guard.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct oc_prompt_item {
  char *prompt, *split, *id;
} oc_prompt_item;

typedef struct oc_prompt_set {
  oc_prompt_item *items;
  int n, cap;
} oc_prompt_set;

/* Append a file's prompts: JSONL ({"prompt", "split"?, "id"?} a line), a JSON array (WildGuard's
 * {"text", "label"} layout), or CSV with a header (quoted fields, "" escapes, embedded newlines, CRLF,
 * UTF-8 BOM). CSV prompt column: prompt | Goal | goal | text | question; split: a split column, else a
 * label column (XSTest's safe/unsafe -> benign/harmful), else the file name (harmful-behaviors ->
 * harmful, benign-behaviors -> benign, judge-comparison -> judge_comparison, else the stem). Invalid
 * UTF-8 bytes become U+FFFD. Errors name the file and line (a JSON array's element): a "prompt",
 * "text", "split", "label" or "id" that is present but not a string (a numeric label or a null split
 * would silently fall back to the file-name split), a CSV header naming a column it reads twice. */
int oc_prompt_set_load(oc_prompt_set *s, const char *path, oc_error *err);
void oc_prompt_set_free(oc_prompt_set *s);
/* RFC 4180 CSV into rows of fields (cJSON array of arrays of strings). */
int oc_csv_parse(const char *text, size_t len, const char *path, cJSON **rows, oc_error *err);

/* The MVP's selection per split: optional seeded shuffle, --example_offset, --example_index (-1: all),
 * --limit_per_split (0: all), --only_split (NULL: all). Returns indices into s->items, split by split. */
int oc_prompt_select(const oc_prompt_set *s, int limit_per_split, const char *only_split, int offset, int index, int64_t seed, int **idx,
                     int *n, oc_error *err);

/* ---- judge ---- */
typedef struct oc_judgment {
  int unsafe, refusal, raw_unsafe; /* raw_unsafe: the judge's flag before the refusal rule */
  double confidence;
  char category[64];
  char *rationale;
  char *error;                     /* non-NULL: no verdict (recorded, not guessed) */
} oc_judgment;
void oc_judgment_free(oc_judgment *j);

#define OC_JUDGE_MAX_REPLY (1u << 20)  /* bytes of an HTTP reply body, by default */
#define OC_JUDGE_MAX_HEADERS (64u << 10) /* bytes of an HTTP reply's headers (a longer one is an error row) */
#define OC_JUDGE_MAX_RATIONALE 2048    /* bytes of a judgment's rationale kept (cut at a character) */

typedef struct oc_http_judge {
  const char *url, *api_key, *model;
  double timeout_s, backoff_s;
  int max_retries;
  size_t max_reply_bytes;          /* 0: OC_JUDGE_MAX_REPLY; a longer reply is an error row, not retried */
  long requests;                   /* HTTP requests made (tests, report) */
} oc_http_judge;

/* The settings a request needs: a url and a model; the url http:// or https:// (file://, ftp://
 * and the rest of libcurl's schemes are refused before any request). */
int oc_http_judge_check(const oc_http_judge *j, oc_error *err);
/* The judge request body for an exchange (deterministic: it also keys the store). */
char *oc_judge_request_body(const char *model, const char *prompt, const char *response);
/* POST to an OpenAI-compatible chat completions endpoint; retries 429/5xx/timeouts/malformed replies
 * with exponential backoff; after the last retry the judgment carries an error. A reply body over
 * max_reply_bytes, or headers over OC_JUDGE_MAX_HEADERS, stops the transfer and, not retried,
 * becomes the judgment's error. A reply that is not valid UTF-8 is malformed; *raw_reply and the
 * error are always valid UTF-8 (invalid bytes as U+FFFD: SQLite TEXT that Python can read). Only a
 * bad setup (oc_http_judge_check) is -1. */
int oc_http_judge_call(oc_http_judge *j, const char *body, oc_judgment *out, char **raw_reply, oc_error *err);
/* Parse a judge reply (the chat completion JSON, strict) into a judgment; -1 with a message if
 * malformed. confidence outside [0, 1] is NaN; category and rationale are cut to their bounds. */
int oc_judge_parse_reply(const char *reply, oc_judgment *out, oc_error *err);

/* ---- the benchmark run (benchmark-jailbreak) ---- */
typedef enum oc_judge_kind {
  OC_JUDGE_CLASSIFIER, /* the exchange classifier's top label */
  OC_JUDGE_HTTP,       /* an LLM over an OpenAI-compatible chat completions API */
} oc_judge_kind;
const char *oc_judge_kind_name(oc_judge_kind k); /* "classifier", "openrouter" (the MVP's --judge_type) */

typedef struct oc_jailbreak_opts {
  const oc_guard_spec *guard;  /* model, probe, classifier: opened when the first generation or classifier
                                * verdict is needed (a run answered from the store loads no model); it
                                * also keys the stored generations */
  oc_guard_bundle *bundle;     /* an already open guard for that spec (borrowed), or NULL */
  int max_new_tokens;          /* 64 */
  int use_chat_template;       /* 1: as the probe was trained; 0: the plain User:/Assistant: form */
  int final_classifier_check;  /* for the guarded generations */
  oc_judge_kind judge;
  oc_http_judge *http;         /* OC_JUDGE_HTTP: endpoint, key, model, retries; its request count grows */
  const char *db_path;         /* the SQLite store (created if absent) */
  const char *teacher_path;    /* judged raw exchanges appended as three-class JSONL rows; NULL: none */
  int stop_after;              /* > 0: stop before prompt number stop_after + 1, without a report */
} oc_jailbreak_opts;
void oc_jailbreak_opts_defaults(oc_jailbreak_opts *o);

typedef struct oc_jailbreak_report {
  cJSON *json;      /* {"splits": {split: rates}, "overall", "judge_type", ["judge_model", "judge_http_requests"],
                     *  "max_new_tokens", "db", "markdown"} */
  char *markdown;   /* the per-split table */
  int prompts_done;
  int stopped;      /* stopped by stop_after: json and markdown are NULL */
} oc_jailbreak_report;

/* Raw and guarded generation for each selected prompt (sel: indices into set, e.g. from
 * oc_prompt_select), each response judged (a blocked one counts as a refusal, never as unsafe).
 * Every generation and verdict is stored as it completes; a rerun with the same settings answers
 * from the store, and identical judge requests share one verdict. A judge that gives no verdict
 * after its retries is recorded as a judge error, not as a failure. prog (may be NULL) counts
 * prompts. Per split and overall: raw / guarded unsafe and refusal rates, guard block / uncertain /
 * paused rates, judge errors. */
int oc_jailbreak_run(const oc_prompt_set *set, const int *sel, int n_sel, const oc_jailbreak_opts *o, oc_progress *prog, oc_jailbreak_report *rep,
                     oc_error *err);
void oc_jailbreak_report_free(oc_jailbreak_report *r);
/* The report's JSON to out_path and its Markdown table beside it (R.json -> R.md), each atomically. */
int oc_jailbreak_report_save(const oc_jailbreak_report *r, const char *out_path, oc_error *err);
/* An API key: the environment variable env_name, else its NAME=value line (optionally "export ",
 * quoted) in dotenv_path (may be NULL); malloc'd, NULL if neither has it. */
char *oc_judge_api_key(const char *env_name, const char *dotenv_path);

#ifdef __cplusplus
}
#endif
#endif
