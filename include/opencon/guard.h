/* opencon — guarded generation: KV-cached decode, a probe every N tokens, a smoothed risk, and
 * the exchange classifier deciding whether held text is released (the MVP's semantics). */
#ifndef OPENCON_GUARD_H
#define OPENCON_GUARD_H
#include <stdio.h>

#include "opencon/classifier.h"
#include "opencon/probe.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OC_REFUSAL "I can't help with that request. I can help with safe, lawful alternatives instead."

typedef struct oc_guard_opts {
  int max_new_tokens;          /* 80 */
  int use_chat_template;       /* 1 */
  int final_classifier_check;  /* classify the whole response at the end */
  int skip_classifier;         /* behave as if no classifier were given */
  int use_probe;               /* 0: plain generation (benchmarks' baseline) */
  double temperature;          /* 0 = greedy (the MVP's) */
  double top_p;                /* 1 = off */
  int top_k;                   /* 0 = off */
  uint64_t seed;
  FILE *trace;                 /* JSONL per step, or NULL */
} oc_guard_opts;
void oc_guard_opts_defaults(oc_guard_opts *o);

/* released text, called as soon as the guard clears it (whole UTF-8 characters only) */
typedef void (*oc_guard_emit_fn)(void *ud, const char *text, size_t n);
/* guard events (suspicious, pause, classifier decisions) as one-line JSON */
typedef void (*oc_guard_event_fn)(void *ud, const char *json);

typedef struct oc_guard_result {
  const char *status;          /* completed, paused, uncertain, blocked */
  char *response;              /* what the caller may show: released text, or the refusal */
  double risk, smoothed_risk;  /* last probe reading (NaN if never probed) */
  double classifier_score;     /* last classifier score (NaN if never called) */
  const char *classifier_verdict; /* NULL if never called */
  int held_response_chars;     /* characters generated but not released */
  int final_classifier_check;
  int n_tokens, probe_calls, classifier_calls;
  const char *stop_reason;     /* eos, max_new_tokens, paused, uncertain, blocked */
  double ttft_ms, total_ms, classifier_ms;
  int32_t *tokens;             /* generated ids (n_tokens) */
} oc_guard_result;
void oc_guard_result_free(oc_guard_result *r);
cJSON *oc_guard_result_json(const oc_guard_result *r);

typedef struct oc_guard oc_guard;
/* probe and cfg may be NULL only with use_probe 0; cls may be NULL. Checks: the probe's hidden size
 * against the model, its layer against the model's depth. Nothing is copied or owned. */
int oc_guard_new(const oc_model *m, const oc_chat *chat, const oc_probe *probe, const oc_probe_config *cfg, oc_classifier *cls,
                 oc_guard **out, oc_error *err);
void oc_guard_free(oc_guard *g);
int oc_guard_generate(oc_guard *g, const char *prompt, const oc_guard_opts *o, oc_guard_emit_fn emit, oc_guard_event_fn event, void *ud,
                      oc_guard_result *res, oc_error *err);

/* Bytes of decoded text that may be released mid-stream: whole characters, no trailing U+FFFD
 * (a multi-byte character whose last bytes have not been generated yet). */
size_t oc_utf8_safe_prefix(const char *t, size_t n);

/* Guard settings of a probe directory before any model is loaded: the probe (safetensors or .pt)
 * and config.json; model_id must equal the config's (the MVP refuses a foreign probe). */
int oc_guard_check_probe(const char *model_id, const char *config_model_id, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
