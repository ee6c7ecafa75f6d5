/* opencon — serving: the continuous-batching engine (many guarded streams, one decode pass per step)
 * and `opencon serve`, an OpenAI-compatible HTTP server on top of it. */
#ifndef OPENCON_SERVE_H
#define OPENCON_SERVE_H
#include "opencon/guard.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the engine: one scheduler thread owns the model, the probe and the classifier ----
 * Requests become jobs in a bounded queue; up to `parallel` of them run at once, each in a slot with
 * its own KV cache (ctx_size positions) and guard stream. Every iteration runs one batched decode
 * step over all slots that need a token (oc_forward_batch: the weights are read once for all of
 * them), then at most one prefill chunk and one classifier call (so a long prompt or a pause's
 * classifier call delays the running streams by one chunk or one call, not by its whole length),
 * then at most one moderation input. Only this thread runs OpenMP teams: no two teams share the
 * cores. Released text and events are handed to the job's reader under the job's lock. */
typedef struct oc_engine oc_engine;
typedef struct oc_job oc_job;

typedef struct oc_engine_opts {
  int parallel;      /* slots (concurrent generations), 1..256 */
  int ctx_size;      /* positions per slot (prompt + generated + 1) */
  int queue;         /* jobs waiting for a slot, 0..65536; more are refused with OC_ERR_BUSY */
  int threads;       /* OpenMP threads of the engine thread (<= 0: all cores) */
  int prefill_chunk; /* prompt tokens per prefill step while other slots decode */
  int adapt_team;    /* run on one thread while the team waits for the CPU (another process busy on its cores; engine.c) */
} oc_engine_opts;
void oc_engine_opts_defaults(oc_engine_opts *o); /* 4 slots, 4096 positions, queue 64, all cores, chunks of 256, adapting */

/* g's classifier (if any) also answers classify jobs (moderations). Starts the scheduler thread. */
int oc_engine_new(const oc_guard *g, const oc_engine_opts *o, oc_engine **out, oc_error *err);
/* Stops the scheduler thread; jobs still queued or running end as cancelled. */
void oc_engine_free(oc_engine *e);

/* A guarded generation of an encoded prompt (oc_guard_stream_new's arguments; o is copied, its stop
 * strings too). want_events: keep the guard's events for the reader. OC_ERR_BUSY when the queue is
 * full, OC_ERR_INVALID when the prompt and max_new_tokens do not fit ctx_size. */
int oc_engine_submit(oc_engine *e, const int32_t *ids, int n, const char *cls_prompt, const oc_guard_opts *o, int want_events, oc_job **out,
                     oc_error *err);
/* One exchange for the classifier (response may be ""): a job whose result is a decision. */
int oc_engine_submit_classify(oc_engine *e, const char *prompt, const char *response, oc_job **out, oc_error *err);

typedef struct oc_engine_stats {
  int queued, busy_slots, parallel;
  int64_t decode_steps, decode_tokens, prefill_tokens;
  double decode_s;                 /* time spent in decode steps */
  double recent_tokens_per_s;      /* decode tokens/s over the last few seconds of decoding */
  int64_t probe_calls, classifier_calls;
  /* classifier call latency histogram: counts of calls taking at most OC_ENGINE_CLS_BUCKETS[i] s */
#define OC_ENGINE_N_BUCKETS 10
  int64_t cls_bucket[OC_ENGINE_N_BUCKETS];
  double cls_seconds;
  int team_threads;                /* threads of the current team */
  int64_t team_changes;            /* times the team was shrunk or grown back */
} oc_engine_stats;
extern const double OC_ENGINE_CLS_BUCKETS[OC_ENGINE_N_BUCKETS];
void oc_engine_get_stats(oc_engine *e, oc_engine_stats *s);

/* What a job has produced past the reader's offsets (bytes of released text, bytes of events: one
 * JSON object per line). Waits up to timeout_ms for something new. text and events are malloc'd
 * copies of the new bytes (NULL when none); *done once the job is over (its result is final). */
typedef struct oc_job_news {
  char *text;
  size_t text_len;
  char *events;
  size_t events_len;
  int done;
} oc_job_news;
int oc_job_poll(oc_job *j, size_t *text_off, size_t *events_off, int timeout_ms, oc_job_news *news);
void oc_job_news_free(oc_job_news *n);
/* After done: the generation's result (borrowed, valid until the job is released) or the decision
 * of a classify job; -1 with the error when the job failed or was cancelled. */
int oc_job_result(oc_job *j, const oc_guard_result **res, const oc_decision **dec, oc_error *err);
/* The scores of a generation's classifier calls so far, in order: a malloc'd copy in *scores (NULL
 * when there are none); returns their number, -1 when out of memory. Safe while the job runs. */
int oc_job_classifier_scores(oc_job *j, double **scores);
double oc_job_queued_ms(oc_job *j); /* time from submission to its slot */
/* The reader went away: the engine drops the job at its next step and frees its slot. */
void oc_job_cancel(oc_job *j);
/* The reader's reference; the job is freed when the engine is done with it too. */
void oc_job_release(oc_job *j);

/* ---- `opencon serve` ---- */
typedef struct oc_serve_opts {
  oc_guard_spec spec;              /* model, probe, classifier, thresholds */
  int final_classifier_check;
  oc_engine_opts engine;
  const char *host;                /* "127.0.0.1" (an IPv4 or IPv6 address) */
  int port;                        /* 8080; 0: any free port (oc_server_port tells which) */
  const char *api_key;             /* NULL: no key */
  const char *api_key_file;        /* one key per line (blank lines and # comments skipped) */
  const char *audit_log;           /* JSONL, one append per request; NULL: none */
  int log_content;                 /* the audit log holds prompts and responses */
  size_t max_body_bytes;           /* 1 MiB */
  int allow_observe;               /* requests may ask for guard mode "observe" */
  int default_max_tokens;          /* when a request names none: 0 = the rest of the slot's context */
  const char *model_name;          /* the id /v1/models lists (NULL: model_id) */
} oc_serve_opts;
void oc_serve_opts_defaults(oc_serve_opts *o);

typedef struct oc_server oc_server;
/* Opens the port at once (requests get 503 while loading) and loads the guard in the background. */
int oc_server_start(const oc_serve_opts *o, oc_server **out, oc_error *err);
int oc_server_port(const oc_server *s);
/* Blocks until loading is over: 0 ready, -1 with the load error. */
int oc_server_wait_ready(oc_server *s, oc_error *err);
/* Without blocking: 1 still loading, 0 ready (or draining), -1 with the load error. */
int oc_server_load_status(oc_server *s, oc_error *err);
/* Stops accepting work (new requests get 503), lets running requests finish for up to drain_s
 * seconds, then cancels what is left. */
void oc_server_drain(oc_server *s, double drain_s);
/* Stops the HTTP daemon, the engine and flushes the audit log. */
void oc_server_free(oc_server *s);

#ifdef __cplusplus
}
#endif
#endif
