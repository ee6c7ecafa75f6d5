/* The continuous-batching engine: a queue of jobs, `parallel` slots, and one scheduler thread that
 * steps every slot's guard stream (include/opencon/serve.h says how a step is made up). */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "opencon/serve.h"

const double OC_ENGINE_CLS_BUCKETS[OC_ENGINE_N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 1e300};

enum { JOB_GENERATE, JOB_CLASSIFY };

struct oc_job {
  int kind;
  /* set at submission, read by the engine */
  int32_t *ids;
  int n;
  char *cls_prompt, *response;
  oc_guard_opts o;
  char **stop;
  int want_events;
  double t_submit, t_start;
  /* shared with the reader, under mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs;            /* the reader's and the engine's */
  int cancelled, done, failed;
  oc_error err;
  char *text, *events;
  size_t text_len, text_cap, events_len, events_cap;
  oc_guard_result res;
  oc_decision dec;
  double *scores;      /* classifier scores */
  int n_scores, cap_scores;
};

typedef struct {
  oc_job *job;
  oc_guard_stream *st;
  oc_session *s;
} slot;

/* a bounded FIFO of jobs (under the engine's lock) */
typedef struct {
  oc_job **items;
  int cap, head, len;
} jobring;

static void ring_push(jobring *r, oc_job *j) { r->items[(r->head + r->len++) % r->cap] = j; }

static oc_job *ring_pop(jobring *r) {
  if (!r->len) return NULL;
  oc_job *j = r->items[r->head];
  r->head = (r->head + 1) % r->cap;
  r->len--;
  return j;
}

struct oc_engine {
  const oc_guard *g;
  oc_engine_opts o;
  pthread_t thread;
  int started;
  pthread_mutex_t mu;  /* the queue, the stats, stop */
  pthread_cond_t cv;
  int stop;
  jobring queue;       /* generation jobs waiting for a slot */
  jobring cq;          /* classify jobs */
  slot *slots;
  int next_prefill, next_classify; /* round-robin starts */
  oc_mbert_ws *ws;     /* the classifier's workspace: only this thread runs it */
  /* decode step buffers, [parallel] rows */
  oc_session **bs;
  int32_t *bids;
  int *bwho;
  float *blogits, *btaps;
  oc_engine_stats stats;
  double recent_t0;
  int64_t recent_tok0;
  /* the team's size against a busy machine (adapt_team) */
  int team, full_team;
  double team_since, mark_t;
  pid_t *tids;          /* the team's threads (thread 0 first) */
  double mark_delay;    /* their summed run delay at mark_t (s) */
};

void oc_engine_opts_defaults(oc_engine_opts *o) {
  o->parallel = 4;
  o->ctx_size = 4096;
  o->queue = 64;
  o->threads = 0;
  o->prefill_chunk = 256;
  o->adapt_team = 1;
}

/* ---- jobs ---- */
static oc_job *job_new(int kind) {
  oc_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->kind = kind;
  j->refs = 2;
  j->t_submit = oc_now();
  pthread_mutex_init(&j->mu, NULL);
  pthread_condattr_t ca; /* timed waits on the monotonic clock: a wall-clock step must not stall readers */
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&j->cv, &ca);
  pthread_condattr_destroy(&ca);
  return j;
}

static void job_unref(oc_job *j) {
  pthread_mutex_lock(&j->mu);
  int last = --j->refs == 0;
  pthread_mutex_unlock(&j->mu);
  if (!last) return;
  free(j->ids); free(j->cls_prompt); free(j->response); free(j->text); free(j->events); free(j->scores);
  for (int i = 0; i < j->o.n_stop; i++) free(j->stop[i]);
  free(j->stop);
  oc_guard_result_free(&j->res);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
}

void oc_job_release(oc_job *j) {
  if (j) job_unref(j);
}

void oc_job_cancel(oc_job *j) {
  pthread_mutex_lock(&j->mu);
  j->cancelled = 1;
  pthread_mutex_unlock(&j->mu);
}

static int job_cancelled(oc_job *j) {
  pthread_mutex_lock(&j->mu);
  int c = j->cancelled;
  pthread_mutex_unlock(&j->mu);
  return c;
}

/* Job buffers grow with oc_buf_append under the job's lock; on out of memory the bytes are
 * dropped and the job fails at its end (a reader must never see text with a hole in it). */
static void on_text(void *ud, const char *text, size_t n) {
  oc_job *j = ud;
  pthread_mutex_lock(&j->mu);
  if (!j->failed && oc_buf_append(&j->text, &j->text_len, &j->text_cap, text, n)) j->failed = 1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
}

/* guard events: the classifier's scores are kept for the audit log; the whole event for a reader
 * who asked for events */
static void on_event(void *ud, const char *json) {
  oc_job *j = ud;
  double score = NAN;
  int is_cls = strstr(json, "\"event\":\"classifier\"") || strstr(json, "\"event\":\"final_check\"");
  if (is_cls) {
    const char *p = strstr(json, "\"score\":");
    if (p) score = strtod(p + 8, NULL); /* "null" (a non-finite score) reads as 0: recorded as NaN below */
    if (p && strncmp(p + 8, "null", 4) == 0) score = NAN;
  }
  pthread_mutex_lock(&j->mu);
  if (is_cls) {
    if (j->n_scores == j->cap_scores) {
      int c = j->cap_scores ? 2 * j->cap_scores : 8;
      double *t = realloc(j->scores, sizeof(double) * (size_t)c);
      if (t) { j->scores = t; j->cap_scores = c; }
    }
    if (j->n_scores < j->cap_scores) j->scores[j->n_scores++] = score;
  }
  if (j->want_events && !j->failed && (oc_buf_append(&j->events, &j->events_len, &j->events_cap, json, strlen(json)) ||
                         oc_buf_append(&j->events, &j->events_len, &j->events_cap, "\n", 1)))
    j->failed = 1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
}

/* the engine is done with a job: err NULL for success */
static void job_finish(oc_job *j, const oc_error *err) {
  pthread_mutex_lock(&j->mu);
  if (err) { j->failed = 1; j->err = *err; }
  else if (j->failed) { j->err.code = OC_ERR_NOMEM; snprintf(j->err.msg, sizeof j->err.msg, "out of memory while streaming"); }
  j->done = 1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  job_unref(j);
}

static void job_fail(oc_job *j, oc_errcode code, const char *msg) {
  oc_error e = {0};
  oc_fail_code(&e, code, "%s", msg);
  job_finish(j, &e);
}

/* buf[*off, len) as a malloc'd NUL-terminated copy (none when nothing is new); *off moves past it */
static int take_new(const char *buf, size_t len, size_t *off, char **out, size_t *out_len) {
  if (len <= *off) return 0;
  if (!(*out = malloc(len - *off + 1))) return -1;
  *out_len = len - *off;
  memcpy(*out, buf + *off, *out_len);
  (*out)[*out_len] = 0;
  *off = len;
  return 0;
}

int oc_job_poll(oc_job *j, size_t *text_off, size_t *events_off, int timeout_ms, oc_job_news *news) {
  memset(news, 0, sizeof *news);
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
  pthread_mutex_lock(&j->mu);
  while (!j->done && j->text_len == *text_off && j->events_len == *events_off)
    if (pthread_cond_timedwait(&j->cv, &j->mu, &until)) break;
  int rc = take_new(j->text, j->text_len, text_off, &news->text, &news->text_len) |
           take_new(j->events, j->events_len, events_off, &news->events, &news->events_len);
  /* done only once everything was read */
  news->done = j->done && *text_off == j->text_len && *events_off == j->events_len;
  pthread_mutex_unlock(&j->mu);
  return rc;
}

void oc_job_news_free(oc_job_news *n) {
  free(n->text);
  free(n->events);
  memset(n, 0, sizeof *n);
}

int oc_job_result(oc_job *j, const oc_guard_result **res, const oc_decision **dec, oc_error *err) {
  pthread_mutex_lock(&j->mu);
  int done = j->done, failed = j->failed;
  if (failed) *err = j->err;
  pthread_mutex_unlock(&j->mu);
  if (!done) return oc_fail(err, "the job is not finished");
  if (failed) return -1;
  if (res) *res = j->kind == JOB_GENERATE ? &j->res : NULL;
  if (dec) *dec = j->kind == JOB_CLASSIFY ? &j->dec : NULL;
  return 0;
}

int oc_job_classifier_scores(oc_job *j, double **scores) {
  *scores = NULL;
  pthread_mutex_lock(&j->mu);
  int n = j->n_scores;
  if (n && (*scores = malloc(sizeof(double) * (size_t)n))) memcpy(*scores, j->scores, sizeof(double) * (size_t)n);
  pthread_mutex_unlock(&j->mu);
  return n && !*scores ? -1 : n;
}

double oc_job_queued_ms(oc_job *j) {
  pthread_mutex_lock(&j->mu);
  double ms = j->t_start > 0 ? 1e3 * (j->t_start - j->t_submit) : NAN;
  pthread_mutex_unlock(&j->mu);
  return ms;
}

/* ---- submission ---- */
static int enqueue(oc_engine *e, oc_job *j, oc_error *err) {
  pthread_mutex_lock(&e->mu);
  int full, stopping = e->stop;
  jobring *r = j->kind == JOB_GENERATE ? &e->queue : &e->cq;
  /* generation jobs: the queue plus the slots free now (admission happens at the next step) */
  full = j->kind == JOB_GENERATE ? r->len >= e->o.queue + e->o.parallel - e->stats.busy_slots : r->len >= r->cap;
  if (!full && !stopping) ring_push(r, j);
  e->stats.queued = e->queue.len + e->cq.len;
  if (!full && !stopping) pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  if (stopping) return oc_fail_code(err, OC_ERR_BUSY, "the engine is stopping");
  if (full) return oc_fail_code(err, OC_ERR_BUSY, "the queue is full (%d waiting)", e->o.queue);
  return 0;
}

int oc_engine_submit(oc_engine *e, const int32_t *ids, int n, const char *cls_prompt, const oc_guard_opts *o, int want_events, oc_job **out,
                     oc_error *err) {
  *out = NULL;
  if (n <= 0) return oc_fail(err, "the prompt encodes to no tokens");
  if (o->max_new_tokens < 1 || (int64_t)n + o->max_new_tokens + 1 > e->o.ctx_size)
    return oc_fail(err, "the prompt (%d tokens) and max_tokens (%d) do not fit the context of %d positions", n, o->max_new_tokens, e->o.ctx_size);
  if (oc_guard_check_opts(e->g, n, o, err)) return -1;
  oc_job *j = job_new(JOB_GENERATE);
  if (!j) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  j->o = *o;
  j->o.n_stop = 0;
  j->o.stop = NULL;
  j->want_events = want_events;
  j->ids = malloc(sizeof(int32_t) * (size_t)n);
  j->cls_prompt = strdup(cls_prompt ? cls_prompt : "");
  if (o->n_stop) j->stop = calloc((size_t)o->n_stop, sizeof *j->stop);
  int ok = j->ids && j->cls_prompt && (!o->n_stop || j->stop);
  for (int i = 0; ok && i < o->n_stop; i++, j->o.n_stop++) ok = (j->stop[i] = strdup(o->stop[i])) != NULL;
  j->o.stop = (const char *const *)j->stop;
  if (!ok) { j->refs = 1; job_unref(j); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  memcpy(j->ids, ids, sizeof(int32_t) * (size_t)n);
  j->n = n;
  if (enqueue(e, j, err)) { j->refs = 1; job_unref(j); return -1; }
  *out = j;
  return 0;
}

int oc_engine_submit_classify(oc_engine *e, const char *prompt, const char *response, oc_job **out, oc_error *err) {
  *out = NULL;
  if (!oc_guard_classifier(e->g)) return oc_fail_code(err, OC_ERR_UNSUPPORTED, "the server has no exchange classifier");
  oc_job *j = job_new(JOB_CLASSIFY);
  if (!j) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  j->cls_prompt = strdup(prompt ? prompt : "");
  j->response = strdup(response ? response : "");
  if (!j->cls_prompt || !j->response) { j->refs = 1; job_unref(j); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  if (enqueue(e, j, err)) { j->refs = 1; job_unref(j); return -1; }
  *out = j;
  return 0;
}

/* ---- the scheduler ---- */

static void count_classifier(oc_engine *e, double seconds) {
  pthread_mutex_lock(&e->mu);
  e->stats.classifier_calls++;
  e->stats.cls_seconds += seconds;
  for (int b = 0; b < OC_ENGINE_N_BUCKETS; b++) if (seconds <= OC_ENGINE_CLS_BUCKETS[b]) e->stats.cls_bucket[b]++;
  pthread_mutex_unlock(&e->mu);
}

/* a slot's job is over (err NULL: finished normally) */
static void slot_end(oc_engine *e, slot *sl, const oc_error *err) {
  oc_job *j = sl->job;
  oc_error fe = {0};
  if (!err && oc_guard_stream_finish(sl->st, &j->res, &fe)) err = &fe;
  if (!err) {
    pthread_mutex_lock(&e->mu);
    e->stats.probe_calls += j->res.probe_calls;
    pthread_mutex_unlock(&e->mu);
  }
  oc_guard_stream_free(sl->st);
  sl->st = NULL;
  sl->job = NULL;
  oc_session_reset(sl->s);
  /* the slot is free before the reader hears the job is done: a client that sends its next
   * request at once must find it free, not a full queue */
  pthread_mutex_lock(&e->mu);
  e->stats.busy_slots--;
  pthread_mutex_unlock(&e->mu);
  job_finish(j, err);
}

/* queued jobs into free slots */
static void admit(oc_engine *e) {
  for (int i = 0; i < e->o.parallel; i++) {
    slot *sl = &e->slots[i];
    if (sl->job) continue;
    pthread_mutex_lock(&e->mu);
    oc_job *j = ring_pop(&e->queue);
    if (j) {
      e->stats.busy_slots++;
      e->stats.queued = e->queue.len + e->cq.len;
    }
    pthread_mutex_unlock(&e->mu);
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    j->t_start = oc_now();
    pthread_mutex_unlock(&j->mu);
    sl->job = j;
    j->o.cls_ws = e->ws;
    oc_error err = {0};
    if (job_cancelled(j) ) { oc_fail_code(&err, OC_ERR_CANCELLED, "cancelled before it started"); slot_end(e, sl, &err); continue; }
    if (oc_guard_stream_new(e->g, j->ids, j->n, j->cls_prompt, sl->s, &j->o, on_text, on_event, j, &sl->st, &err)) slot_end(e, sl, &err);
  }
}

/* one batched decode step over every slot that needs a forward */
static void decode_step(oc_engine *e) {
  const oc_model_config *c = oc_model_cfg(oc_guard_model(e->g));
  const size_t V = (size_t)c->vocab, H = (size_t)c->hidden;
  int n = 0, tap = 0;
  for (int i = 0; i < e->o.parallel; i++) {
    slot *sl = &e->slots[i];
    if (!sl->st || oc_guard_stream_need(sl->st) != OC_NEED_FORWARD) continue;
    e->bs[n] = oc_guard_stream_session(sl->st);
    e->bids[n] = oc_guard_stream_token(sl->st);
    e->bwho[n++] = i;
    tap |= oc_guard_stream_wants_tap(sl->st);
  }
  if (!n) return;
  const double t0 = oc_now();
  const int *layers;
  const int nl = oc_guard_probe_layers(e->g, &layers); /* every layer the probe reads: [nl][n][hidden] */
  oc_taps taps = {nl, layers, 0, NULL, e->btaps};
  oc_error err = {0};
  if (oc_forward_batch(e->bs, n, e->bids, tap ? &taps : NULL, e->blogits, &err)) {
    for (int k = 0; k < n; k++) slot_end(e, &e->slots[e->bwho[k]], &err);
    return;
  }
  const double dt = oc_now() - t0;
  pthread_mutex_lock(&e->mu);
  e->stats.decode_steps++;
  e->stats.decode_tokens += n;
  e->stats.decode_s += dt;
  double now = oc_now();
  if (now - e->recent_t0 >= 2.0) { /* a rate over windows of a few seconds of decoding */
    e->stats.recent_tokens_per_s = (double)(e->stats.decode_tokens - e->recent_tok0) / (now - e->recent_t0);
    e->recent_t0 = now;
    e->recent_tok0 = e->stats.decode_tokens;
  }
  pthread_mutex_unlock(&e->mu);
  for (int k = 0; k < n; k++) {
    slot *sl = &e->slots[e->bwho[k]];
    if (oc_guard_stream_fed_layers(sl->st, e->blogits + (size_t)k * V, tap ? e->btaps + (size_t)k * H : NULL, (size_t)n * H, &err))
      slot_end(e, sl, &err);
  }
}

/* the first slot from *next on (round robin) whose stream needs `need` */
static slot *next_needing(oc_engine *e, int *next, oc_stream_need need) {
  for (int k = 0; k < e->o.parallel; k++) {
    int i = (*next + k) % e->o.parallel;
    slot *sl = &e->slots[i];
    if (sl->st && oc_guard_stream_need(sl->st) == need) { *next = (i + 1) % e->o.parallel; return sl; }
  }
  return NULL;
}

static int decoding(const oc_engine *e) {
  for (int i = 0; i < e->o.parallel; i++)
    if (e->slots[i].st && oc_guard_stream_need(e->slots[i].st) == OC_NEED_FORWARD) return 1;
  return 0;
}

static void prefill_step(oc_engine *e) {
  slot *sl = next_needing(e, &e->next_prefill, OC_NEED_PREFILL);
  if (!sl) return;
  /* beside running streams, a chunk per step; alone, pieces of at least 512 tokens (a slot's
   * scratch grows with its largest piece and stays grown) */
  int chunk = decoding(e) ? e->o.prefill_chunk : e->o.prefill_chunk > 512 ? e->o.prefill_chunk : 512;
  int left = oc_guard_stream_prompt_left(sl->st);
  oc_error err = {0};
  if (oc_guard_stream_prefill(sl->st, chunk, &err)) { slot_end(e, sl, &err); return; }
  pthread_mutex_lock(&e->mu);
  e->stats.prefill_tokens += left - oc_guard_stream_prompt_left(sl->st);
  pthread_mutex_unlock(&e->mu);
}

static void classify_step(oc_engine *e) {
  slot *sl = next_needing(e, &e->next_classify, OC_NEED_CLASSIFY);
  if (!sl) return;
  oc_error err = {0};
  double t0 = oc_now();
  int rc = oc_guard_stream_classify(sl->st, &err);
  count_classifier(e, oc_now() - t0);
  if (rc) slot_end(e, sl, &err);
}

static void moderation_step(oc_engine *e) {
  pthread_mutex_lock(&e->mu);
  oc_job *j = ring_pop(&e->cq);
  e->stats.queued = e->queue.len + e->cq.len;
  pthread_mutex_unlock(&e->mu);
  if (!j) return;
  pthread_mutex_lock(&j->mu);
  j->t_start = oc_now();
  pthread_mutex_unlock(&j->mu);
  if (job_cancelled(j)) { job_fail(j, OC_ERR_CANCELLED, "cancelled before it started"); return; }
  oc_error err = {0};
  double t0 = oc_now();
  int rc = oc_classifier_score_ws(oc_guard_classifier(e->g), e->ws, j->cls_prompt, j->response, &j->dec, &err);
  count_classifier(e, oc_now() - t0);
  job_finish(j, rc ? &err : NULL);
}

static int busy(oc_engine *e) {
  for (int i = 0; i < e->o.parallel; i++) if (e->slots[i].job) return 1;
  return e->queue.len || e->cq.len;
}

/* A team of threads on cores that another process is using waits at every barrier for whichever
 * thread is descheduled (3.5x slower beside two busy loops on 2 cores, far worse beside another
 * OpenMP program spinning at its own barriers). The sign is run delay: time the team's threads were
 * ready but not running (/proc/self/task/TID/schedstat), next to nothing when the engine has the
 * cores to itself (the server's own HTTP threads wake briefly). Past CONTENDED of the team's time,
 * the engine runs on one thread (no barriers to wait at: it gets its share of a core and nothing
 * stalls); every TEAM_RETRY_S it tries the full team again. Results do not depend on the team's
 * size (docs/architecture.md, numerics), only speed does. */
#define CONTENDED 0.10
#define TEAM_RETRY_S 2.0

/* the team's threads' summed run delay in seconds (-1 when unreadable) */
static double team_run_delay(const oc_engine *e, int team) {
  double sum = 0;
  for (int t = 0; t < team; t++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)e->tids[t]);
    FILE *f = fopen(path, "r");
    unsigned long long run = 0, delay = 0;
    int ok = f && fscanf(f, "%llu %llu", &run, &delay) == 2;
    if (f) fclose(f);
    if (!ok) return -1;
    sum += (double)delay * 1e-9;
  }
  return sum;
}

static void record_team(oc_engine *e) {
#pragma omp parallel
  e->tids[omp_get_thread_num()] = (pid_t)syscall(SYS_gettid);
}

static void adapt_team(oc_engine *e) {
  if (e->full_team <= 1 || !e->tids) return;
  const double now = oc_now(), dt = now - e->mark_t;
  if (dt < 0.25) return; /* judge over a quarter of a second at least */
  int team = e->team;
  if (team > 1) {
    const double delay = team_run_delay(e, team);
    if (delay < 0) return;
    const double waited = (delay - e->mark_delay) / (dt * team);
    e->mark_delay = delay;
    if (waited > CONTENDED) team = 1;
  } else if (now - e->team_since >= TEAM_RETRY_S) {
    team = e->full_team;
  }
  e->mark_t = now;
  if (team == e->team) return;
  omp_set_num_threads(team);
  e->team = team;
  e->team_since = now;
  if (team > 1) { /* the pool's threads, and a fresh mark for them */
    record_team(e);
    e->mark_delay = team_run_delay(e, team);
  }
  pthread_mutex_lock(&e->mu);
  e->stats.team_threads = team;
  e->stats.team_changes++;
  pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg) {
  oc_engine *e = arg;
  oc_set_threads(e->o.threads); /* this thread's OpenMP team: the only one */
  e->team = e->full_team = omp_get_max_threads();
  e->team_since = e->mark_t = oc_now();
  if ((e->tids = calloc((size_t)e->full_team, sizeof *e->tids))) {
    record_team(e);
    e->mark_delay = team_run_delay(e, e->team);
  }
  pthread_mutex_lock(&e->mu);
  e->stats.team_threads = e->team;
  pthread_mutex_unlock(&e->mu);
  for (;;) {
    pthread_mutex_lock(&e->mu);
    while (!e->stop && !busy(e)) pthread_cond_wait(&e->cv, &e->mu);
    int stopping = e->stop;
    pthread_mutex_unlock(&e->mu);
    if (stopping) break;
    for (int i = 0; i < e->o.parallel; i++) { /* readers that went away */
      slot *sl = &e->slots[i];
      if (sl->job && job_cancelled(sl->job)) {
        oc_error err = {0};
        oc_fail_code(&err, OC_ERR_CANCELLED, "cancelled by the client after %d tokens", oc_guard_stream_progress(sl->st)->n_tokens);
        slot_end(e, sl, &err);
      }
    }
    admit(e);
    if (e->o.adapt_team) adapt_team(e);
    decode_step(e);
    prefill_step(e);
    classify_step(e);
    moderation_step(e);
    for (int i = 0; i < e->o.parallel; i++) {
      slot *sl = &e->slots[i];
      if (sl->st && oc_guard_stream_need(sl->st) == OC_NEED_NOTHING) slot_end(e, sl, NULL);
    }
  }
  /* stopping: whatever is left ends as cancelled */
  for (int i = 0; i < e->o.parallel; i++)
    if (e->slots[i].job) {
      oc_error err = {0};
      oc_fail_code(&err, OC_ERR_CANCELLED, "the server stopped");
      slot_end(e, &e->slots[i], &err);
    }
  pthread_mutex_lock(&e->mu);
  for (oc_job *j; (j = ring_pop(&e->queue)) || (j = ring_pop(&e->cq));) {
    pthread_mutex_unlock(&e->mu);
    job_fail(j, OC_ERR_CANCELLED, "the server stopped");
    pthread_mutex_lock(&e->mu);
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

void oc_engine_get_stats(oc_engine *e, oc_engine_stats *s) {
  pthread_mutex_lock(&e->mu);
  *s = e->stats;
  pthread_mutex_unlock(&e->mu);
}

void oc_engine_free(oc_engine *e) {
  if (!e) return;
  if (e->started) {
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
  }
  if (e->slots)
    for (int i = 0; i < e->o.parallel; i++) oc_session_free(e->slots[i].s);
  free(e->tids);
  free(e->slots); free(e->queue.items); free(e->cq.items); free(e->bs); free(e->bids); free(e->bwho); free(e->blogits); free(e->btaps);
  oc_mbert_ws_free(e->ws);
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  free(e);
}

int oc_engine_new(const oc_guard *g, const oc_engine_opts *o, oc_engine **out, oc_error *err) {
  *out = NULL;
  const oc_model *m = oc_guard_model(g);
  const oc_model_config *c = oc_model_cfg(m);
  if (o->parallel < 1 || o->parallel > 256) return oc_fail(err, "parallel must be in [1, 256], got %d", o->parallel);
  if (o->queue < 0 || o->queue > 65536) return oc_fail(err, "queue must be in [0, 65536], got %d", o->queue);
  if (o->ctx_size < 2 || o->ctx_size > c->max_position_embeddings)
    return oc_fail(err, "ctx_size must be in [2, %d] (the model's max_position_embeddings), got %d", c->max_position_embeddings, o->ctx_size);
  if (o->prefill_chunk < 1) return oc_fail(err, "prefill_chunk must be at least 1, got %d", o->prefill_chunk);
  oc_engine *e = calloc(1, sizeof *e);
  if (!e) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  e->g = g;
  e->o = *o;
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  const size_t P = (size_t)o->parallel;
  e->stats.parallel = o->parallel;
  e->slots = calloc(P, sizeof *e->slots);
  e->queue.cap = o->queue + o->parallel;
  e->cq.cap = o->queue + 1;
  e->queue.items = calloc((size_t)e->queue.cap, sizeof *e->queue.items);
  e->cq.items = calloc((size_t)e->cq.cap, sizeof *e->cq.items);
  e->bs = calloc(P, sizeof *e->bs);
  e->bids = calloc(P, sizeof *e->bids);
  e->bwho = calloc(P, sizeof *e->bwho);
  e->blogits = malloc(sizeof(float) * P * (size_t)c->vocab);
  const int *pl;
  e->btaps = malloc(sizeof(float) * P * (size_t)c->hidden * (size_t)oc_guard_probe_layers(g, &pl));
  e->ws = oc_mbert_ws_new();
  if (!e->slots || !e->queue.items || !e->cq.items || !e->bs || !e->bids || !e->bwho || !e->blogits || !e->btaps || !e->ws) {
    oc_engine_free(e);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  for (size_t i = 0; i < P; i++)
    if (!(e->slots[i].s = oc_session_new(m, o->ctx_size, err))) { oc_engine_free(e); return -1; }
  e->recent_t0 = oc_now();
  /* The engine thread is to be the only one running compute: the caller's idle OpenMP workers
   * (from loading the model) would halve its decode speed (base.h; one E2B stream on 2 cores:
   * 200 against 105 ms a token). */
  oc_release_threads();
  if (pthread_create(&e->thread, NULL, engine_main, e)) { oc_engine_free(e); return oc_fail_code(err, OC_ERR_NOMEM, "cannot start the engine thread"); }
  e->started = 1;
  *out = e;
  return 0;
}
