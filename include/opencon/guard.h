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

/* Called before every decode step (and before a classifier call): non-zero stops the generation,
 * which then fails with OC_ERR_CANCELLED (a server stops work for a client that went away). */
typedef int (*oc_guard_abort_fn)(void *ud);

#define OC_GUARD_MAX_NEW_TOKENS (1 << 20)
#define OC_GUARD_MAX_STOP 16
#define OC_GUARD_MAX_STOP_BYTES 256

typedef struct oc_guard_opts {
  int max_new_tokens;          /* 80; at most OC_GUARD_MAX_NEW_TOKENS, and the prompt plus these within the model's positions */
  int use_chat_template;       /* 1 */
  int final_classifier_check;  /* classify the whole response at the end */
  int skip_classifier;         /* behave as if no classifier were given */
  int use_probe;               /* 0: plain generation (benchmarks' baseline); 1 on a guard without a probe is an error */
  double temperature;          /* 0 = greedy (the MVP's) */
  double top_p;                /* 1 = off */
  int top_k;                   /* 0 = off */
  uint64_t seed;
  FILE *trace;                 /* JSONL per step, or NULL */
  oc_guard_abort_fn should_abort; /* NULL: never */
  void *abort_ud;
  int observe;                 /* report what the guard would do, hold and stop nothing: every token is released at once
                                  and the result's status is the first stop the guard would have made */
  const char *const *stop;     /* stop strings (OpenAI's `stop`): the response ends before the first one generated; text
                                  that may be the start of one is not released until it is known not to be */
  int n_stop;                  /* at most OC_GUARD_MAX_STOP, each 1..OC_GUARD_MAX_STOP_BYTES bytes */
  double pause_threshold;      /* NaN: the probe config's; else at most it (a caller may only be stricter) */
  double allow_threshold, block_threshold; /* NaN: the classifier's; else at most its own */
  oc_mbert_ws *cls_ws;         /* the classifier's workspace, owned by the caller and used by one generation at a time
                                  (a server keeps one per worker: its buffers stay grown); NULL: one per generation */
} oc_guard_opts;
void oc_guard_opts_defaults(oc_guard_opts *o);

/* released text, called as soon as the guard clears it (whole UTF-8 characters only) */
typedef void (*oc_guard_emit_fn)(void *ud, const char *text, size_t n);
/* guard events as one-line JSON objects {"event", "step" (the token it read; absent for the final
 * check), ...}: "probe" at every probe reading that is a number (risk, smoothed_risk, decision:
 * release, suspicious or pause), then "suspicious" or "pause" (smoothed_risk) when it is one;
 * "classifier" and "final_check" (verdict, score); "nonfinite" (what, action) */
typedef void (*oc_guard_event_fn)(void *ud, const char *json);

typedef enum oc_guard_status { OC_GUARD_COMPLETED, OC_GUARD_PAUSED, OC_GUARD_UNCERTAIN, OC_GUARD_BLOCKED } oc_guard_status;
const char *oc_guard_status_name(oc_guard_status s); /* "completed", "paused", "uncertain", "blocked" */
int oc_guard_status_from_name(const char *name, oc_guard_status *s); /* -1 for any other name */

typedef enum oc_stop_reason {
  OC_STOP_EOS,            /* the model ended its turn */
  OC_STOP_MAX_NEW_TOKENS,
  OC_STOP_PAUSED,         /* the probe paused and there is no classifier */
  OC_STOP_UNCERTAIN,      /* the classifier could not decide: held text is not released */
  OC_STOP_BLOCKED,        /* the classifier blocked (mid-stream or at the final check) */
  OC_STOP_NONFINITE,      /* a probe or classifier score was NaN/Inf: treated as maximum risk, blocked */
  OC_STOP_SEQUENCE,       /* a stop string was generated */
} oc_stop_reason;
const char *oc_stop_reason_name(oc_stop_reason r); /* "eos", "max_new_tokens", "paused", "uncertain", "blocked", "nonfinite", "stop_sequence" */

typedef struct oc_guard_result {
  oc_guard_status status;
  char *response;              /* what the caller may show: released text, or the refusal */
  double risk, smoothed_risk;  /* last probe reading (NaN if never probed; 1 after a non-finite one) */
  double max_risk;             /* the highest smoothed risk read (NaN if never probed) */
  double classifier_score;     /* last classifier score (NaN if never called or not finite) */
  oc_verdict classifier_verdict; /* the last verdict; meaningful when classifier_calls > 0 */
  int held_response_chars;     /* characters generated but not released */
  int final_classifier_check;
  int n_tokens, probe_calls, classifier_calls;
  int nonfinite;               /* non-finite scores seen (each ends the generation as a block) */
  oc_stop_reason stop_reason;
  double ttft_ms, total_ms, classifier_ms;
  int32_t *tokens;             /* generated ids (n_tokens) */
} oc_guard_result;
void oc_guard_result_free(oc_guard_result *r);
cJSON *oc_guard_result_json(const oc_guard_result *r);

typedef struct oc_guard oc_guard;
/* probe and cfg may be NULL only with use_probe 0; cls may be NULL. Checks: the probe config's
 * values (oc_probe_config_check), the probe's hidden size against the model, its layer against the
 * model's depth, finite probe weights. Nothing is copied or owned.
 * oc_guard_generate only reads the guard, the model, the probe and the classifier (each call has its
 * own KV cache and classifier workspace), so several threads may generate with one guard at once. */
int oc_guard_new(const oc_model *m, const oc_chat *chat, const oc_probe *probe, const oc_probe_config *cfg, const oc_classifier *cls,
                 oc_guard **out, oc_error *err);
void oc_guard_free(oc_guard *g);
int oc_guard_generate(const oc_guard *g, const char *prompt, const oc_guard_opts *o, oc_guard_emit_fn emit, oc_guard_event_fn event, void *ud,
                      oc_guard_result *res, oc_error *err);

/* ---- guarded generation step by step: what oc_guard_generate does, driven by a caller that runs the
 * model itself, e.g. a scheduler batching many streams' decode steps into one forward
 * (oc_forward_batch). Callbacks run in the caller's thread, inside these calls. ---- */
typedef struct oc_guard_stream oc_guard_stream;
typedef enum oc_stream_need {
  OC_NEED_PREFILL,  /* prompt tokens remain: oc_guard_stream_prefill */
  OC_NEED_FORWARD,  /* feed oc_guard_stream_token through the model on oc_guard_stream_session (one position, with a
                       tap of oc_guard_probe_layers when oc_guard_stream_wants_tap), then oc_guard_stream_fed_layers
                       (or oc_guard_stream_fed, single-layer probes only) */
  OC_NEED_CLASSIFY, /* the exchange classifier must decide held text: oc_guard_stream_classify (the slow step) */
  OC_NEED_NOTHING,  /* over: oc_guard_stream_finish */
} oc_stream_need;
/* ids: the prompt as the model reads it (chat template applied, encoded); cls_prompt: the prompt as
 * the exchange classifier reads it. s: an empty session with room for n + max_new_tokens + 1
 * positions, used and not owned (a server keeps one per slot), or NULL for one of the stream's own.
 * o is copied; should_abort is checked by the calls that take time (prefill, classify). */
int oc_guard_stream_new(const oc_guard *g, const int32_t *ids, int n, const char *cls_prompt, oc_session *s, const oc_guard_opts *o,
                        oc_guard_emit_fn emit, oc_guard_event_fn event, void *ud, oc_guard_stream **out, oc_error *err);
void oc_guard_stream_free(oc_guard_stream *st);
/* oc_guard_stream_new's checks of the options for a prompt of n_prompt tokens, alone: a caller that
 * queues the stream for later can refuse bad options at once */
int oc_guard_check_opts(const oc_guard *g, int n_prompt, const oc_guard_opts *o, oc_error *err);
oc_stream_need oc_guard_stream_need(const oc_guard_stream *st);
/* read up to max_tokens (<= 0: all) of the prompt; the last chunk's logits give the first step */
int oc_guard_stream_prefill(oc_guard_stream *st, int max_tokens, oc_error *err);
int oc_guard_stream_prompt_left(const oc_guard_stream *st);
int32_t oc_guard_stream_token(const oc_guard_stream *st);
int oc_guard_stream_wants_tap(const oc_guard_stream *st);
oc_session *oc_guard_stream_session(oc_guard_stream *st);
int oc_guard_probe_layer(const oc_guard *g); /* the hidden-state index the probe reads (its first, for a multi-layer probe) */
/* every hidden-state index the probe reads, in its order (*layers owned by the guard); the count
 * (1 for a single-layer probe) */
int oc_guard_probe_layers(const oc_guard *g, const int **layers);
const oc_model *oc_guard_model(const oc_guard *g);
const oc_chat *oc_guard_chat(const oc_guard *g);
const oc_classifier *oc_guard_classifier(const oc_guard *g); /* NULL without one */
/* the forward's logits [vocab] and, for a probing stream, the tapped hidden state [hidden] (both
 * read during the call only) */
int oc_guard_stream_fed(oc_guard_stream *st, const float *logits, const float *tap, oc_error *err);
/* the same for a probe over any number of layers (oc_guard_probe_layers): the hidden state of the
 * probe's layer k at taps + k * layer_stride (oc_forward with one position: stride hidden;
 * oc_forward_batch's [n_layers][n][hidden]: stride n * hidden, taps at row i). oc_guard_stream_fed
 * is this with stride hidden for a single-layer probe, and an OC_ERR_UNSUPPORTED error (nothing
 * released) for a probing stream of a multi-layer one. */
int oc_guard_stream_fed_layers(oc_guard_stream *st, const float *logits, const float *taps, size_t layer_stride, oc_error *err);
int oc_guard_stream_classify(oc_guard_stream *st, oc_error *err);
/* the result so far (tokens, probe and classifier readings; status and response only once finished) */
const oc_guard_result *oc_guard_stream_progress(const oc_guard_stream *st);
/* the result, moved to res (free it with oc_guard_result_free); the rest of the cleared text is emitted */
int oc_guard_stream_finish(oc_guard_stream *st, oc_guard_result *res, oc_error *err);

/* Bytes of decoded text that may be released mid-stream: whole characters, no trailing U+FFFD
 * (a multi-byte character whose last bytes have not been generated yet). */
size_t oc_utf8_safe_prefix(const char *t, size_t n);

/* Before any model is loaded: model_id must equal the probe config's, which must name one (the MVP
 * refuses a foreign probe; a config without a model_id is refused too, so leaving it out cannot
 * skip the check). */
int oc_guard_check_probe(const char *model_id, const char *config_model_id, oc_error *err);

/* ---- guard assembly: everything a guarded generation needs, loaded, checked and owned together ---- */
typedef struct oc_guard_spec {
  const char *model_id;       /* the decoder: a local directory or a Hub id org/name */
  const char *probe_path;     /* probe.safetensors or the MVP's probe.pt; NULL: no probe (plain generation only) */
  const char *config_path;    /* the probe's config.json; NULL: config.json beside probe_path */
  const char *classifier_dir; /* the exchange classifier (a directory or a Hub id); NULL: none */
  double allow_threshold, block_threshold; /* override the classifier's own; NaN: keep them */
  oc_template_opts template_opts; /* how the chat template renders (zero: transformers' behaviour, the current time) */
  oc_weight_mode weights;     /* the decoder's matrices in memory (OC_WEIGHTS_STORED by default) */
} oc_guard_spec;
void oc_guard_spec_defaults(oc_guard_spec *s); /* all NULL, thresholds NaN */
/* The probe config a spec names: config_path, else config.json beside probe_path (malloc'd; NULL
 * without a probe or when out of memory). */
char *oc_guard_spec_config_path(const oc_guard_spec *s);

typedef struct oc_guard_bundle oc_guard_bundle;
/* Loads and checks, the cheap parts first so a wrong probe or threshold is refused before the model
 * loads: the probe config (its model_id must equal model_id), the probe (its width against the
 * config's hidden_size), the classifier and its thresholds (0 <= allow < block <= 1; thresholds
 * without a classifier are an error); then the model and its chat template, and the guard (probe
 * width against the model, layer against its depth). The bundle owns all of it; open it once and
 * run many generations on its guard. */
int oc_guard_open(const oc_guard_spec *s, oc_guard_bundle **out, oc_error *err);
void oc_guard_close(oc_guard_bundle *b);
oc_guard *oc_guard_bundle_guard(const oc_guard_bundle *b);
const oc_probe_config *oc_guard_bundle_probe_config(const oc_guard_bundle *b); /* NULL without a probe */
const oc_classifier *oc_guard_bundle_classifier(const oc_guard_bundle *b);           /* NULL without one */
const oc_model *oc_guard_bundle_model(const oc_guard_bundle *b);
const oc_chat *oc_guard_bundle_chat(const oc_guard_bundle *b);
/* oc_guard_opts_defaults, then what the bundle implies: the chat template as the probe was trained
 * (the probe config's use_chat_template), no probe calls without a probe. */
void oc_guard_bundle_opts(const oc_guard_bundle *b, oc_guard_opts *o);

/* benchmark-latency: one warm-up generation, then each prompt `repeats` times in three modes with
 * base's settings: baseline (no probe, no classifier), probe_only, full_guard (probe, classifier and
 * the final check when the bundle has a classifier). Report: {"prompts": [per prompt, first repeat:
 * {"prompt", mode: {ms, tokens, tokens_per_s, time_to_first_token_ms, probe_calls, classifier_calls,
 * classifier_ms, status}}], "overall": {mode: {ms, tokens_per_s, time_to_first_token_ms: {mean, p50,
 * p95 (nearest rank)}, probe_calls, classifier_calls}}, "max_new_tokens", "repeats", "threads"}.
 * prog (may be NULL) counts generations. */
int oc_guard_benchmark_latency(oc_guard_bundle *b, const char *const *prompts, int n_prompts, int repeats, const oc_guard_opts *base,
                               oc_progress *prog, cJSON **report, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
