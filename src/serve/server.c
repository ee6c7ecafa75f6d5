/* `opencon serve`: HTTP (libmicrohttpd, a thread per connection) in front of the engine. Routes,
 * keys, the request lifecycle, SSE streaming, metrics and the audit log. Request and response
 * formats are in openai.c; the scheduling is the engine's (engine.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "opencon/json.h"
#include "opencon/serve.h"
#include "serve/console.h"
#include "serve/openai.h"

enum { LOADING, READY, FAILED, DRAINING };
#define KEEPALIVE_S 2.0  /* an SSE comment at least this often while tokens are held */
#define POLL_MS 100      /* how often a waiting request checks for its client */
#define MAX_KEYS 1024

/* HTTP statuses counted in /metrics */
static const int STATUSES[] = {200, 400, 401, 404, 405, 413, 429, 500, 503};
#define N_STATUSES ((int)(sizeof STATUSES / sizeof *STATUSES))

struct oc_server {
  oc_serve_opts o;
  struct MHD_Daemon *d;
  int port;
  pthread_t loader;
  int loader_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int state;
  oc_error load_err;
  oc_guard_bundle *b;
  oc_engine *e;
  oc_guard_opts base;       /* the server's guard settings */
  char **keys;
  int n_keys;
  int audit_fd;
  atomic_int closing;       /* readers give up and cancel their jobs */
  atomic_int active;        /* requests with a job */
  atomic_llong next_id;
  /* metrics */
  atomic_llong by_status[N_STATUSES + 1]; /* the last: any other status */
  atomic_llong prompt_tokens, completion_tokens;
  atomic_llong outcomes[4]; /* by oc_guard_status */
};

/* ---- small helpers ---- */
static int state_of(oc_server *s) {
  pthread_mutex_lock(&s->mu);
  int st = s->state;
  pthread_mutex_unlock(&s->mu);
  return st;
}

static void count_status(oc_server *s, int status) {
  int i = 0;
  while (i < N_STATUSES && STATUSES[i] != status) i++;
  atomic_fetch_add(&s->by_status[i], 1);
}

static enum MHD_Result send_text(oc_server *s, struct MHD_Connection *c, int status, const char *type, char *body, const char *retry_after) {
  struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
  if (!r) { free(body); return MHD_NO; }
  MHD_add_response_header(r, "Content-Type", type);
  if (retry_after) MHD_add_response_header(r, "Retry-After", retry_after);
  if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
  enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  count_status(s, status);
  return rc;
}

static enum MHD_Result send_json(oc_server *s, struct MHD_Connection *c, int status, cJSON *j) {
  char *body = j ? cJSON_PrintUnformatted(j) : NULL;
  cJSON_Delete(j);
  if (!body) body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
  if (!body) return MHD_NO;
  return send_text(s, c, status, "application/json", body, status == 429 || status == 503 ? "1" : NULL);
}

static cJSON *error_json(const oc_api_error *e) {
  cJSON *o = cJSON_CreateObject(), *er = cJSON_AddObjectToObject(o, "error");
  cJSON_AddStringToObject(er, "message", e->message);
  cJSON_AddStringToObject(er, "type", e->type ? e->type : "invalid_request_error");
  if (e->param[0]) cJSON_AddStringToObject(er, "param", e->param);
  else cJSON_AddNullToObject(er, "param");
  if (e->code) cJSON_AddStringToObject(er, "code", e->code);
  else cJSON_AddNullToObject(er, "code");
  return o;
}

/* fills e (a message formatted like printf) and returns it */
static const oc_api_error *api_error_v(oc_api_error *e, int status, const char *type, const char *code, const char *fmt, va_list ap) {
  *e = (oc_api_error){.status = status, .type = type, .code = code};
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  return e;
}

static const oc_api_error *api_error(oc_api_error *e, int status, const char *type, const char *code, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static const oc_api_error *api_error(oc_api_error *e, int status, const char *type, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  api_error_v(e, status, type, code, fmt, ap);
  va_end(ap);
  return e;
}

/* an engine or library error as an API error: busy -> 429 (503 while draining), invalid -> 400, else 500 */
static const oc_api_error *api_error_from(oc_server *s, const oc_error *err, oc_api_error *e) {
  if (err->code == OC_ERR_BUSY)
    return state_of(s) == DRAINING ? api_error(e, 503, "unavailable_error", NULL, "the server is shutting down")
                                   : api_error(e, 429, "rate_limit_error", "rate_limit_exceeded", "%s; retry later", err->msg);
  if (err->code == OC_ERR_INVALID) {
    int ctx = strstr(err->msg, "do not fit") != NULL || strstr(err->msg, "positions") != NULL;
    return api_error(e, 400, "invalid_request_error", ctx ? "context_length_exceeded" : NULL, "%s", err->msg);
  }
  return api_error(e, 500, "server_error", NULL, "%s", err->msg);
}

static enum MHD_Result send_api_error(oc_server *s, struct MHD_Connection *c, const oc_api_error *e) {
  return send_json(s, c, e->status, error_json(e));
}

static enum MHD_Result send_error(oc_server *s, struct MHD_Connection *c, int status, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_error(oc_server *s, struct MHD_Connection *c, int status, const char *type, const char *code, const char *fmt, ...) {
  oc_api_error e;
  va_list ap;
  va_start(ap, fmt);
  api_error_v(&e, status, type, code, fmt, ap);
  va_end(ap);
  return send_api_error(s, c, &e);
}

static enum MHD_Result send_oc_error(oc_server *s, struct MHD_Connection *c, const oc_error *err) {
  oc_api_error e;
  return send_api_error(s, c, api_error_from(s, err, &e));
}

/* the client closed its connection (a peek reads end of file) */
static int client_gone(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (!ci) return 1;
  char b;
  ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* ---- keys ---- */
static int constant_time_equal(const char *a, size_t an, const char *b, size_t bn) {
  unsigned char d = an != bn;
  for (size_t i = 0; i < an && i < bn; i++) d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

/* the index of the request's key (0.. n_keys-1), -1 without a key set, -2 when wrong or missing */
static int check_key(oc_server *s, struct MHD_Connection *c) {
  if (!s->n_keys) return -1;
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  if (!h || strncasecmp(h, "Bearer ", 7) != 0) return -2;
  const char *k = h + 7;
  int found = -2;
  for (int i = 0; i < s->n_keys; i++)
    if (constant_time_equal(k, strlen(k), s->keys[i], strlen(s->keys[i])) && found == -2) found = i;
  return found;
}

static int add_key(oc_server *s, const char *k, size_t n, oc_error *err) {
  if (s->n_keys >= MAX_KEYS) return oc_fail(err, "at most %d API keys", MAX_KEYS);
  if (n == 0) return oc_fail(err, "an API key must not be empty");
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)k[i] <= 0x20 || k[i] == 0x7f) return oc_fail(err, "an API key must be printable characters without spaces");
  char **t = realloc(s->keys, sizeof *t * (size_t)(s->n_keys + 1));
  if (!t) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  s->keys = t;
  if (!(s->keys[s->n_keys] = strndup(k, n))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  s->n_keys++;
  return 0;
}

static int load_keys(oc_server *s, oc_error *err) {
  if (s->o.api_key && add_key(s, s->o.api_key, strlen(s->o.api_key), err)) return oc_wrap(err, "--api_key");
  if (!s->o.api_key_file) return 0;
  char *text = NULL;
  size_t len = 0;
  if (oc_read_file(s->o.api_key_file, &text, &len, err)) return -1;
  int line = 0, rc = 0;
  for (size_t i = 0; i < len && !rc;) {
    size_t j = i;
    while (j < len && text[j] != '\n') j++;
    line++;
    size_t a = i, b = j;
    while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
    while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r')) b--;
    if (b > a && text[a] != '#' && add_key(s, text + a, b - a, err)) rc = oc_wrap(err, "%s:%d", s->o.api_key_file, line);
    i = j + 1;
  }
  free(text);
  if (!rc && !s->n_keys) rc = oc_fail(err, "%s holds no API key", s->o.api_key_file);
  return rc;
}

/* ---- the audit log: one line per request, one write ---- */
typedef struct {
  const char *route, *id, *finish_reason;
  int key, status, prompt_tokens;
  const oc_guard_result *res;
  const double *scores;
  int n_scores;
  double latency_ms;
  const char *prompt, *response; /* with --log_content */
  const char *error;
} audit_row;

static void audit(oc_server *s, const audit_row *a) {
  if (s->audit_fd < 0) return;
  cJSON *o = cJSON_CreateObject();
  char t[40];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(t + strlen(t), sizeof t - strlen(t), ".%03ldZ", ts.tv_nsec / 1000000L);
  cJSON_AddStringToObject(o, "time", t);
  cJSON_AddStringToObject(o, "request_id", a->id);
  cJSON_AddStringToObject(o, "route", a->route);
  if (a->key >= 0) {
    char kid[16];
    snprintf(kid, sizeof kid, "key%d", a->key + 1);
    cJSON_AddStringToObject(o, "key_id", kid);
  } else {
    cJSON_AddNullToObject(o, "key_id");
  }
  cJSON_AddNumberToObject(o, "status", a->status);
  cJSON_AddNumberToObject(o, "prompt_tokens", a->prompt_tokens);
  if (a->res) {
    cJSON_AddNumberToObject(o, "completion_tokens", a->res->n_tokens);
    cJSON_AddStringToObject(o, "guard_status", oc_guard_status_name(a->res->status));
    cJSON_AddItemToObject(o, "max_risk", isfinite(a->res->max_risk) ? cJSON_CreateNumber(a->res->max_risk) : cJSON_CreateNull());
    cJSON_AddNumberToObject(o, "probe_calls", a->res->probe_calls);
    cJSON_AddNumberToObject(o, "classifier_calls", a->res->classifier_calls);
  }
  cJSON *sc = cJSON_AddArrayToObject(o, "classifier_scores");
  for (int i = 0; i < a->n_scores; i++) cJSON_AddItemToArray(sc, isfinite(a->scores[i]) ? cJSON_CreateNumber(a->scores[i]) : cJSON_CreateNull());
  if (a->finish_reason) cJSON_AddStringToObject(o, "finish_reason", a->finish_reason);
  else cJSON_AddNullToObject(o, "finish_reason");
  cJSON_AddNumberToObject(o, "latency_ms", a->latency_ms);
  if (a->error) cJSON_AddStringToObject(o, "error", a->error);
  if (s->o.log_content) {
    if (a->prompt) cJSON_AddStringToObject(o, "prompt", a->prompt);
    if (a->response) cJSON_AddStringToObject(o, "response", a->response);
  }
  char *line = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (!line) return;
  size_t n = strlen(line);
  line[n] = '\n'; /* replaces the NUL: the line is written with one append */
  ssize_t w = write(s->audit_fd, line, n + 1);
  (void)w; /* a full disk loses a line, never the request */
  free(line);
}

/* ---- a request's body ---- */
typedef struct {
  char *body;
  size_t len, cap;
  int too_large;
  size_t dropped;   /* bytes of a too-large body read and dropped */
  double t0;     /* when its headers came */
} upload;

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)cls; (void)c; (void)toe;
  upload *u = *con_cls;
  if (u) { free(u->body); free(u); }
  *con_cls = NULL;
}

/* ---- chat completions ---- */
typedef struct {
  oc_server *s;
  struct MHD_Connection *conn;
  oc_job *job;
  oc_chat_request req;
  oc_completion_ids ids;
  char model[256];
  int key, prompt_tokens;
  double t0;
  /* streaming */
  size_t text_off, ev_off;
  char *out;
  size_t out_len, out_off, out_cap;
  double last_write;
  int finished, released_any;
  char *released;            /* the text sent (for --log_content) */
  size_t rel_len, rel_cap;
} chat_ctx;

static int sse(chat_ctx *x, cJSON *chunk) {
  char *s = cJSON_PrintUnformatted(chunk);
  cJSON_Delete(chunk);
  if (!s) return -1;
  int rc = oc_buf_append(&x->out, &x->out_len, &x->out_cap, "data: ", 6) || oc_buf_append(&x->out, &x->out_len, &x->out_cap, s, strlen(s)) ||
           oc_buf_append(&x->out, &x->out_len, &x->out_cap, "\n\n", 2);
  free(s);
  return rc;
}

/* the end of a generation: metrics and the audit line (once) */
static void chat_end(chat_ctx *x, int status, const oc_guard_result *res, const char *error) {
  oc_server *s = x->s;
  double *scores = NULL;
  int n_scores = x->job ? oc_job_classifier_scores(x->job, &scores) : 0;
  if (n_scores < 0) n_scores = 0;
  if (res) {
    atomic_fetch_add(&s->completion_tokens, res->n_tokens);
    atomic_fetch_add(&s->outcomes[res->status], 1);
  }
  audit_row a = {.route = "/v1/chat/completions", .id = x->ids.id, .key = x->key, .status = status, .prompt_tokens = x->prompt_tokens, .res = res,
                 .scores = scores, .n_scores = n_scores, .latency_ms = 1e3 * (oc_now() - x->t0),
                 .finish_reason = res ? oc_finish_reason(res, x->req.observe) : NULL, .prompt = x->req.cls_prompt,
                 .response = x->released ? x->released : (res ? res->response : NULL), .error = error};
  audit(s, &a);
  free(scores);
}

/* a generation ended before its answer: the client went away (nginx's 499), or the server stopped
 * waiting (the drain ran out of time) */
static void chat_end_early(chat_ctx *x) {
  if (atomic_load(&x->s->closing)) chat_end(x, 503, NULL, "the server stopped before the answer was finished");
  else chat_end(x, 499, NULL, "the client went away");
}

static void chat_ctx_free(chat_ctx *x) {
  if (!x) return;
  if (x->job) { oc_job_cancel(x->job); oc_job_release(x->job); atomic_fetch_sub(&x->s->active, 1); }
  oc_chat_request_free(&x->req);
  free(x->out);
  free(x->released);
  free(x);
}

/* a chat request refused before it was queued: its audit line, then the error */
static enum MHD_Result chat_refuse(chat_ctx *x, const oc_api_error *e) {
  oc_server *s = x->s;
  struct MHD_Connection *c = x->conn;
  chat_end(x, e->status, NULL, e->message);
  chat_ctx_free(x);
  return send_api_error(s, c, e);
}

/* the final chunks of a stream: the refusal after a guard stop, finish_reason and guard summary,
 * usage, [DONE] */
static int stream_tail(chat_ctx *x) {
  const oc_guard_result *res = NULL;
  oc_error err = {0};
  if (oc_job_result(x->job, &res, NULL, &err)) {
    /* not a guard decision: a failure (an error event the SDKs raise), and nothing held is sent */
    chat_end(x, 500, NULL, err.msg);
    oc_api_error e = {.status = 500, .type = "server_error"};
    snprintf(e.message, sizeof e.message, "%s", err.msg);
    cJSON *o = error_json(&e);
    return sse(x, o) || oc_buf_append(&x->out, &x->out_len, &x->out_cap, "data: [DONE]\n\n", 14);
  }
  const char *fr = oc_finish_reason(res, x->req.observe);
  if (strcmp(fr, "content_filter") == 0) {
    /* after released text, the refusal starts a paragraph of its own */
    cJSON *c = oc_chunk_json(&x->ids, x->req.include_usage);
    oc_chunk_choice(c, NULL, x->released_any ? "\n\n" OC_REFUSAL : OC_REFUSAL, NULL);
    if (sse(x, c)) return -1;
  }
  cJSON *c = oc_chunk_json(&x->ids, x->req.include_usage);
  oc_chunk_choice(c, NULL, NULL, fr);
  cJSON_AddItemToObject(c, "guard", oc_guard_summary_json(res, x->req.observe));
  if (sse(x, c)) return -1;
  if (x->req.include_usage) {
    cJSON *u = oc_chunk_json(&x->ids, 0);
    cJSON_AddItemToObject(u, "usage", oc_usage_json(x->prompt_tokens, res->n_tokens));
    if (sse(x, u)) return -1;
  }
  chat_end(x, 200, res, NULL);
  return oc_buf_append(&x->out, &x->out_len, &x->out_cap, "data: [DONE]\n\n", 14);
}

/* released text and events as chunks */
static int stream_news(chat_ctx *x, const oc_job_news *n) {
  for (const char *ev = n->events; ev && *ev;) {
    const char *nl = strchr(ev, '\n');
    size_t len = nl ? (size_t)(nl - ev) : strlen(ev);
    cJSON *e = cJSON_ParseWithLength(ev, len);
    ev += len + (nl != NULL);
    if (!e) continue;
    cJSON *c = oc_chunk_json(&x->ids, x->req.include_usage);
    oc_chunk_choice(c, NULL, NULL, NULL);
    cJSON *g = cJSON_AddObjectToObject(c, "guard"), *arr = cJSON_AddArrayToObject(g, "events");
    cJSON_AddItemToArray(arr, e);
    if (sse(x, c)) return -1;
  }
  if (n->text_len) {
    cJSON *c = oc_chunk_json(&x->ids, x->req.include_usage);
    oc_chunk_choice(c, NULL, n->text, NULL);
    if (sse(x, c)) return -1;
    x->released_any = 1;
    if (x->s->o.log_content && oc_buf_append(&x->released, &x->rel_len, &x->rel_cap, n->text, n->text_len)) return -1;
  }
  return 0;
}

/* MHD's content reader for a stream: blocks (a thread per connection) until there is something to
 * send, sending a comment line while tokens are held; a client that went away cancels the job. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  chat_ctx *x = cls;
  for (;;) {
    if (x->out_off < x->out_len) {
      size_t n = x->out_len - x->out_off < max ? x->out_len - x->out_off : max;
      memcpy(buf, x->out + x->out_off, n);
      x->out_off += n;
      x->last_write = oc_now();
      return (ssize_t)n;
    }
    x->out_len = x->out_off = 0;
    if (x->finished) return MHD_CONTENT_READER_END_OF_STREAM;
    if (atomic_load(&x->s->closing)) return MHD_CONTENT_READER_END_WITH_ERROR;
    oc_job_news n;
    int rc = oc_job_poll(x->job, &x->text_off, &x->ev_off, POLL_MS, &n);
    if (rc || stream_news(x, &n)) { oc_job_news_free(&n); return MHD_CONTENT_READER_END_WITH_ERROR; }
    if (n.done) {
      x->finished = 1;
      if (stream_tail(x)) { oc_job_news_free(&n); return MHD_CONTENT_READER_END_WITH_ERROR; }
    }
    oc_job_news_free(&n);
    if (x->out_len) continue;
    if (client_gone(x->conn)) return MHD_CONTENT_READER_END_WITH_ERROR; /* the free callback cancels the job */
    if (oc_now() - x->last_write >= KEEPALIVE_S && oc_buf_append(&x->out, &x->out_len, &x->out_cap, ": guard holding\n\n", 17))
      return MHD_CONTENT_READER_END_WITH_ERROR;
  }
}

static void stream_free(void *cls) {
  chat_ctx *x = cls;
  if (!x->finished) chat_end_early(x);
  chat_ctx_free(x);
}

/* messages -> the prompt's ids and the model's text */
static int encode_messages(oc_server *s, const cJSON *messages, char **text, oc_encoding *enc, oc_api_error *e) {
  const oc_chat *chat = oc_guard_bundle_chat(s->b);
  oc_error err = {0};
  *text = NULL;
  int rc;
  if (s->base.use_chat_template) {
    cJSON *opts = cJSON_CreateObject();
    cJSON_AddFalseToObject(opts, "enable_thinking"); /* Qwen3: as the probe was trained (oc_chat_format_exchange) */
    rc = oc_chat_render_opts(chat->tmpl, chat->config, messages, 1, opts, &chat->render_opts, text, &err);
    cJSON_Delete(opts);
  } else { /* the MVP's plain frame, one block per message */
    size_t len = 0;
    rc = 0;
    for (const cJSON *m = messages->child; m && !rc; m = m->next) {
      const char *role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring, *content = cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring;
      const char *label = strcmp(role, "user") == 0 ? "User" : strcmp(role, "assistant") == 0 ? "Assistant" : "System";
      size_t need = strlen(label) + strlen(content) + 4;
      char *t = realloc(*text, len + need + 16);
      if (!t) { rc = oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); break; }
      *text = t;
      len += (size_t)snprintf(*text + len, need + 16, "%s:\n%s\n\n", label, content);
    }
    if (!rc) {
      char *t = realloc(*text, len + 16);
      if (!t) rc = oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
      else { *text = t; snprintf(*text + len, 16, "Assistant:\n"); }
    }
  }
  if (!rc && !*text) rc = oc_fail(&err, "the model has no chat template");
  if (!rc) rc = oc_chat_encode(chat, *text, !s->base.use_chat_template, 0, enc, &err);
  if (rc) {
    e->status = err.code == OC_ERR_NOMEM ? 500 : 400;
    e->type = e->status == 500 ? "server_error" : "invalid_request_error";
    e->code = NULL;
    e->param[0] = 0;
    snprintf(e->message, sizeof e->message, "the messages cannot be rendered with the model's chat template: %s", err.msg);
    free(*text);
    *text = NULL;
  }
  return rc;
}

/* A request may tighten the guard's thresholds, never loosen them (the rule oc_guard_stream_new
 * enforces): checked here, so that a looser one is a 400 before anything is queued rather than a
 * failed job after a stream's headers went out. */
static int check_thresholds(oc_server *s, const oc_chat_request *r, oc_api_error *e) {
  const oc_probe_config *pc = oc_guard_bundle_probe_config(s->b);
  const oc_classifier *cls = oc_guard_bundle_classifier(s->b);
  const double own_pause = pc ? pc->pause_threshold : 1.0, own_allow = cls ? cls->allow_threshold : 1.0, own_block = cls ? cls->block_threshold : 1.0;
  const double allow = isnan(r->allow_threshold) ? own_allow : r->allow_threshold, block = isnan(r->block_threshold) ? own_block : r->block_threshold;
  const char *param = NULL;
  double v = 0, own = 0;
  if (!isnan(r->pause_threshold) && r->pause_threshold > own_pause) param = "guard.pause_threshold", v = r->pause_threshold, own = own_pause;
  else if (!isnan(r->allow_threshold) && r->allow_threshold > own_allow) param = "guard.classifier_allow_threshold", v = r->allow_threshold, own = own_allow;
  else if (!isnan(r->block_threshold) && r->block_threshold > own_block) param = "guard.classifier_block_threshold", v = r->block_threshold, own = own_block;
  *e = (oc_api_error){.status = 400, .type = "invalid_request_error"};
  if (param) {
    snprintf(e->param, sizeof e->param, "%s", param);
    snprintf(e->message, sizeof e->message, "%s %g is looser than the server's %g: a request may only make the guard stricter", param, v, own);
    return -1;
  }
  if (allow > block) {
    snprintf(e->param, sizeof e->param, "guard.classifier_allow_threshold");
    snprintf(e->message, sizeof e->message, "guard.classifier_allow_threshold %g must be at most the block threshold %g", allow, block);
    return -1;
  }
  return 0;
}

static enum MHD_Result chat_completions(oc_server *s, struct MHD_Connection *c, const cJSON *body, int key) {
  chat_ctx *x = calloc(1, sizeof *x);
  if (!x) return send_error(s, c, 500, "server_error", NULL, "out of memory");
  x->s = s;
  x->conn = c;
  x->key = key;
  x->t0 = oc_now();
  snprintf(x->ids.id, sizeof x->ids.id, "chatcmpl-%016llx", (unsigned long long)atomic_fetch_add(&s->next_id, 1));
  x->ids.created = (int64_t)time(NULL);
  x->ids.model = s->o.model_name ? s->o.model_name : s->o.spec.model_id;
  oc_api_error e = {0};
  if (oc_chat_request_parse(body, &x->req, &e)) return chat_refuse(x, &e);
  if (x->req.observe && !s->o.allow_observe)
    return chat_refuse(x, api_error(&e, 400, "invalid_request_error", NULL, "guard mode \"observe\" is not allowed on this server (start it with --allow_observe)"));
  if (check_thresholds(s, &x->req, &e)) return chat_refuse(x, &e);
  char *text = NULL;
  oc_encoding enc = {0};
  if (encode_messages(s, x->req.messages, &text, &enc, &e)) return chat_refuse(x, &e);
  free(text);
  oc_guard_opts o = s->base;
  x->prompt_tokens = enc.n;
  const int room = s->o.engine.ctx_size - enc.n - 1;
  int max_tokens = x->req.max_tokens ? x->req.max_tokens : s->o.default_max_tokens > 0 && s->o.default_max_tokens < room ? s->o.default_max_tokens : room;
  if (room < 1 || max_tokens > room) {
    oc_encoding_free(&enc);
    return chat_refuse(x, api_error(&e, 400, "invalid_request_error", "context_length_exceeded",
                                    "this model's context is %d tokens per request; the messages take %d and max_tokens asks for %d more",
                                    s->o.engine.ctx_size, x->prompt_tokens, max_tokens));
  }
  o.max_new_tokens = max_tokens;
  o.temperature = x->req.temperature;
  o.top_p = x->req.top_p;
  o.seed = x->req.has_seed ? x->req.seed : (uint64_t)(oc_now() * 1e9) ^ (uint64_t)atomic_fetch_add(&s->next_id, 1) * 0x9e3779b97f4a7c15ULL;
  o.stop = (const char *const *)x->req.stop;
  o.n_stop = x->req.n_stop;
  o.observe = x->req.observe;
  o.pause_threshold = x->req.pause_threshold;
  o.allow_threshold = x->req.allow_threshold;
  o.block_threshold = x->req.block_threshold;
  oc_error err = {0};
  atomic_fetch_add(&s->active, 1);
  int rc = oc_engine_submit(s->e, enc.ids, enc.n, x->req.cls_prompt, &o, x->req.events, &x->job, &err);
  oc_encoding_free(&enc);
  if (rc) {
    atomic_fetch_sub(&s->active, 1);
    return chat_refuse(x, api_error_from(s, &err, &e));
  }
  atomic_fetch_add(&s->prompt_tokens, x->prompt_tokens);
  if (x->req.stream) {
    cJSON *first = oc_chunk_json(&x->ids, x->req.include_usage);
    oc_chunk_choice(first, "assistant", "", NULL);
    struct MHD_Response *r = sse(x, first) ? NULL : MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, x, stream_free);
    if (!r) return chat_refuse(x, api_error(&e, 500, "server_error", NULL, "out of memory"));
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result q = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    count_status(s, 200);
    return q;
  }
  /* not streamed: wait here (a thread per connection) for the whole answer */
  for (;;) {
    oc_job_news n;
    oc_job_poll(x->job, &x->text_off, &x->ev_off, POLL_MS, &n);
    int done = n.done;
    oc_job_news_free(&n);
    if (done) break;
    if (atomic_load(&s->closing) || client_gone(c)) {
      chat_end_early(x);
      chat_ctx_free(x);
      return MHD_NO;
    }
  }
  const oc_guard_result *res;
  if (oc_job_result(x->job, &res, NULL, &err)) {
    chat_end(x, 500, NULL, err.msg);
    chat_ctx_free(x);
    return send_error(s, c, 500, "server_error", NULL, "%s", err.msg);
  }
  cJSON *out = oc_completion_json(&x->ids, res, x->req.observe, x->prompt_tokens);
  chat_end(x, 200, res, NULL);
  enum MHD_Result q = send_json(s, c, 200, out);
  chat_ctx_free(x);
  return q;
}

/* ---- moderations ---- */
/* The classifier's decisions on the inputs, as the response's results; NULL with e when they cannot
 * all be had (status 499: the client went away). scores: each input's score, for the audit log. */
static cJSON *moderate(oc_server *s, struct MHD_Connection *c, const oc_moderation_inputs *in, double *scores, oc_api_error *e) {
  const oc_classifier *cls = oc_guard_bundle_classifier(s->b);
  cJSON *results = cJSON_CreateArray();
  oc_job **jobs = calloc((size_t)in->n, sizeof *jobs);
  oc_error err = {0};
  int failed = !jobs || !results, gone = 0;
  if (failed) oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
  /* one input at a time (the engine scores one per iteration anyway): a request of more inputs
   * than the classify queue holds must not be refused as a full queue */
  for (int i = 0; i < in->n && !failed; i++) {
    if (oc_engine_submit_classify(s->e, in->prompt[i], in->response[i], &jobs[i], &err)) { failed = 1; break; }
    oc_job_news n;
    size_t a = 0, b = 0;
    for (;;) {
      oc_job_poll(jobs[i], &a, &b, POLL_MS, &n);
      int done = n.done;
      oc_job_news_free(&n);
      if (done) break;
      if (atomic_load(&s->closing) || client_gone(c)) { failed = gone = 1; break; }
    }
    const oc_decision *d;
    if (!failed && oc_job_result(jobs[i], NULL, &d, &err)) failed = 1;
    if (!failed) {
      scores[i] = d->score;
      cJSON_AddItemToArray(results, oc_moderation_result_json(cls, d));
    }
  }
  for (int i = 0; jobs && i < in->n; i++) if (jobs[i]) { oc_job_cancel(jobs[i]); oc_job_release(jobs[i]); }
  free(jobs);
  if (!failed) return results;
  cJSON_Delete(results);
  if (gone) api_error(e, 499, "invalid_request_error", NULL, "the client went away");
  else api_error_from(s, &err, e);
  return NULL;
}

static enum MHD_Result moderations(oc_server *s, struct MHD_Connection *c, const cJSON *body, int key) {
  char id[48];
  snprintf(id, sizeof id, "modr-%016llx", (unsigned long long)atomic_fetch_add(&s->next_id, 1));
  const double t0 = oc_now();
  oc_moderation_inputs in = {0};
  oc_api_error e = {0};
  cJSON *results = NULL;
  double *scores = NULL;
  atomic_fetch_add(&s->active, 1);
  if (!oc_guard_bundle_classifier(s->b)) api_error(&e, 400, "invalid_request_error", NULL, "this server has no exchange classifier (start it with --classifier_dir)");
  else if (oc_moderation_parse(body, &in, &e)) {}
  else if (!(scores = calloc((size_t)in.n, sizeof *scores))) api_error(&e, 500, "server_error", NULL, "out of memory");
  else results = moderate(s, c, &in, scores, &e);
  atomic_fetch_sub(&s->active, 1);
  audit_row a = {.route = "/v1/moderations", .id = id, .key = key, .status = results ? 200 : e.status, .scores = scores, .n_scores = results ? in.n : 0,
                 .latency_ms = 1e3 * (oc_now() - t0), .error = results ? NULL : e.message, .prompt = in.n ? in.prompt[0] : NULL};
  audit(s, &a);
  oc_moderation_inputs_free(&in);
  free(scores);
  if (!results) return e.status == 499 ? MHD_NO : send_api_error(s, c, &e);
  cJSON *out = cJSON_CreateObject();
  cJSON_AddStringToObject(out, "id", id);
  cJSON_AddStringToObject(out, "model", s->o.spec.classifier_dir);
  cJSON_AddItemToObject(out, "results", results);
  return send_json(s, c, 200, out);
}

/* ---- debugging routes (llama.cpp's names) ---- */
static enum MHD_Result tokenize(oc_server *s, struct MHD_Connection *c, const cJSON *body) {
  const cJSON *content = cJSON_GetObjectItemCaseSensitive(body, "content"), *special = cJSON_GetObjectItemCaseSensitive(body, "add_special");
  if (!cJSON_IsString(content)) return send_error(s, c, 400, "invalid_request_error", NULL, "content must be a string");
  if (special && !cJSON_IsBool(special)) return send_error(s, c, 400, "invalid_request_error", NULL, "add_special must be true or false");
  oc_encoding enc = {0};
  oc_error err = {0};
  if (oc_chat_encode(oc_guard_bundle_chat(s->b), content->valuestring, cJSON_IsTrue(special), 0, &enc, &err)) return send_oc_error(s, c, &err);
  cJSON *o = cJSON_CreateObject(), *t = cJSON_AddArrayToObject(o, "tokens");
  for (int i = 0; i < enc.n; i++) cJSON_AddItemToArray(t, cJSON_CreateNumber(enc.ids[i]));
  oc_encoding_free(&enc);
  return send_json(s, c, 200, o);
}

static enum MHD_Result detokenize(oc_server *s, struct MHD_Connection *c, const cJSON *body) {
  const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(body, "tokens");
  const oc_model_config *mc = oc_model_cfg(oc_guard_bundle_model(s->b));
  if (!cJSON_IsArray(tokens)) return send_error(s, c, 400, "invalid_request_error", NULL, "tokens must be an array of token ids");
  int n = cJSON_GetArraySize(tokens), k = 0;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
  if (!ids) return send_error(s, c, 500, "server_error", NULL, "out of memory");
  for (const cJSON *v = tokens->child; v; v = v->next, k++)
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 || v->valuedouble >= mc->vocab) {
      free(ids);
      return send_error(s, c, 400, "invalid_request_error", NULL, "tokens[%d] is not a token id in [0, %d)", k, mc->vocab);
    } else ids[k] = (int32_t)v->valuedouble;
  char *text = NULL;
  size_t len = 0;
  oc_error err = {0};
  int rc = oc_tokenizer_decode(oc_guard_bundle_chat(s->b)->tok, ids, n, 0, &text, &len, &err);
  free(ids);
  if (rc) return send_oc_error(s, c, &err);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "content", text);
  free(text);
  return send_json(s, c, 200, o);
}

static enum MHD_Result apply_template(oc_server *s, struct MHD_Connection *c, const cJSON *body) {
  oc_chat_request r = {0};
  oc_api_error e = {0};
  cJSON *just = cJSON_CreateObject();
  cJSON_AddItemReferenceToObject(just, "messages", cJSON_GetObjectItemCaseSensitive(body, "messages"));
  int rc = oc_chat_request_parse(just, &r, &e);
  cJSON_Delete(just);
  char *text = NULL;
  oc_encoding enc = {0};
  if (rc || encode_messages(s, r.messages, &text, &enc, &e)) { oc_chat_request_free(&r); return send_api_error(s, c, &e); }
  oc_encoding_free(&enc);
  oc_chat_request_free(&r);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "prompt", text);
  free(text);
  return send_json(s, c, 200, o);
}

/* ---- metrics (Prometheus text format) ---- */
static enum MHD_Result metrics(oc_server *s, struct MHD_Connection *c) {
  char *b = NULL;
  size_t len = 0, cap = 0;
  char line[256];
#define PUT(...) do { int k_ = snprintf(line, sizeof line, __VA_ARGS__); if (k_ > 0) oc_buf_append(&b, &len, &cap, line, (size_t)k_); } while (0)
  PUT("# HELP opencon_requests_total HTTP requests by status.\n# TYPE opencon_requests_total counter\n");
  for (int i = 0; i <= N_STATUSES; i++) {
    if (i < N_STATUSES) PUT("opencon_requests_total{status=\"%d\"} %lld\n", STATUSES[i], (long long)atomic_load(&s->by_status[i]));
    else PUT("opencon_requests_total{status=\"other\"} %lld\n", (long long)atomic_load(&s->by_status[i]));
  }
  PUT("# TYPE opencon_prompt_tokens_total counter\nopencon_prompt_tokens_total %lld\n", (long long)atomic_load(&s->prompt_tokens));
  PUT("# TYPE opencon_generated_tokens_total counter\nopencon_generated_tokens_total %lld\n", (long long)atomic_load(&s->completion_tokens));
  PUT("# HELP opencon_guard_outcomes_total Finished generations by guard status.\n# TYPE opencon_guard_outcomes_total counter\n");
  for (int k = 0; k < 4; k++) PUT("opencon_guard_outcomes_total{status=\"%s\"} %lld\n", oc_guard_status_name((oc_guard_status)k), (long long)atomic_load(&s->outcomes[k]));
  oc_engine_stats st = {0};
  pthread_mutex_lock(&s->mu); /* the loader publishes the engine under the lock */
  oc_engine *eng = s->e;
  pthread_mutex_unlock(&s->mu);
  if (eng) oc_engine_get_stats(eng, &st);
  PUT("# TYPE opencon_probe_calls_total counter\nopencon_probe_calls_total %lld\n", (long long)st.probe_calls);
  PUT("# TYPE opencon_classifier_calls_total counter\nopencon_classifier_calls_total %lld\n", (long long)st.classifier_calls);
  PUT("# HELP opencon_classifier_latency_seconds Exchange classifier calls.\n# TYPE opencon_classifier_latency_seconds histogram\n");
  for (int k = 0; k < OC_ENGINE_N_BUCKETS; k++) {
    if (k == OC_ENGINE_N_BUCKETS - 1) PUT("opencon_classifier_latency_seconds_bucket{le=\"+Inf\"} %lld\n", (long long)st.cls_bucket[k]);
    else PUT("opencon_classifier_latency_seconds_bucket{le=\"%g\"} %lld\n", OC_ENGINE_CLS_BUCKETS[k], (long long)st.cls_bucket[k]);
  }
  PUT("opencon_classifier_latency_seconds_sum %.6f\nopencon_classifier_latency_seconds_count %lld\n", st.cls_seconds, (long long)st.classifier_calls);
  PUT("# TYPE opencon_queue_depth gauge\nopencon_queue_depth %d\n", st.queued);
  PUT("# TYPE opencon_busy_slots gauge\nopencon_busy_slots %d\n", st.busy_slots);
  PUT("# TYPE opencon_slots gauge\nopencon_slots %d\n", s->o.engine.parallel);
  PUT("# HELP opencon_engine_threads Threads of the engine's team (1 while another process contends for the cores).\n# TYPE opencon_engine_threads gauge\n");
  PUT("opencon_engine_threads %d\n", st.team_threads);
  PUT("# TYPE opencon_engine_team_changes_total counter\nopencon_engine_team_changes_total %lld\n", (long long)st.team_changes);
  PUT("# TYPE opencon_decode_tokens_total counter\nopencon_decode_tokens_total %lld\n", (long long)st.decode_tokens);
  PUT("# TYPE opencon_decode_steps_total counter\nopencon_decode_steps_total %lld\n", (long long)st.decode_steps);
  PUT("# HELP opencon_decode_tokens_per_second Decode tokens/s over the last seconds of decoding.\n# TYPE opencon_decode_tokens_per_second gauge\n");
  PUT("opencon_decode_tokens_per_second %.3f\n", st.recent_tokens_per_s);
#undef PUT
  if (!b) return send_error(s, c, 500, "server_error", NULL, "out of memory");
  return send_text(s, c, 200, "text/plain; version=0.0.4", b, NULL);
}

/* ---- the web console: its files (embedded) and the settings it shows ---- */
static enum MHD_Result web_file(oc_server *s, struct MHD_Connection *c, const oc_web_file *f) {
  struct MHD_Response *r = MHD_create_response_from_buffer(f->len, (void *)f->data, MHD_RESPMEM_PERSISTENT);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", f->type);
  for (int i = 0; OC_WEB_HEADERS[i]; i += 2) MHD_add_response_header(r, OC_WEB_HEADERS[i], OC_WEB_HEADERS[i + 1]);
  enum MHD_Result rc = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  count_status(s, 200);
  return rc;
}

static enum MHD_Result guard_config(oc_server *s, struct MHD_Connection *c) {
  return send_json(s, c, 200, oc_guard_config_json(&s->o, s->b, &s->base, s->n_keys > 0));
}

/* ---- routing ---- */
static enum MHD_Result health(oc_server *s, struct MHD_Connection *c) {
  int st = state_of(s);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "status", st == READY ? "ok" : st == LOADING ? "loading" : st == DRAINING ? "draining" : "failed");
  if (st == FAILED) {
    pthread_mutex_lock(&s->mu);
    cJSON_AddStringToObject(o, "error", s->load_err.msg);
    pthread_mutex_unlock(&s->mu);
  }
  return send_json(s, c, st == READY ? 200 : 503, o);
}

static enum MHD_Result models(oc_server *s, struct MHD_Connection *c) {
  cJSON *o = cJSON_CreateObject(), *d = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "object", "list");
  cJSON_AddStringToObject(m, "id", s->o.model_name ? s->o.model_name : s->o.spec.model_id);
  cJSON_AddStringToObject(m, "object", "model");
  cJSON_AddNumberToObject(m, "created", 0);
  cJSON_AddStringToObject(m, "owned_by", "opencon");
  cJSON_AddItemToArray(d, m);
  return send_json(s, c, 200, o);
}

/* a request refused before its route's handler ran; chat completions and moderations (audited: the
 * route) get their audit line: one per request, whatever became of it */
static enum MHD_Result refuse(oc_server *s, struct MHD_Connection *c, const char *audited, int key, const upload *u, const oc_api_error *e) {
  if (audited) {
    char id[48];
    snprintf(id, sizeof id, "%s-%016llx", strcmp(audited, "/v1/moderations") == 0 ? "modr" : "chatcmpl", (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    audit_row a = {.route = audited, .id = id, .key = key, .status = e->status, .latency_ms = 1e3 * (oc_now() - u->t0), .error = e->message};
    audit(s, &a);
  }
  return send_api_error(s, c, e);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls) {
  (void)version;
  oc_server *s = cls;
  const int post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
  upload *u = *con_cls;
  if (!u) { /* the headers: a body too large is refused before it is read */
    if (!(u = calloc(1, sizeof *u))) return MHD_NO;
    *con_cls = u;
    u->t0 = oc_now();
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > s->o.max_body_bytes) u->too_large = 1;
    if (!u->too_large) return MHD_YES;
  }
  if (*upload_data_size) {
    /* a body found too large while it is read (no Content-Length: chunked) is read to its end and
     * dropped: MHD takes a response only before the body or after all of it. After a 413 queued
     * with the headers (Content-Length too large) MHD still passes the body on: dropped too. */
    if (u->too_large) { /* dropped; a client that keeps sending far past the limit is cut off */
      u->dropped += *upload_data_size;
      if (u->dropped > 4 * s->o.max_body_bytes + ((size_t)1 << 20)) { *upload_data_size = 0; return MHD_NO; }
    }
    if (!u->too_large && u->len + *upload_data_size > s->o.max_body_bytes) {
      u->too_large = 1;
      free(u->body);
      u->body = NULL;
      u->len = u->cap = 0;
    } else if (!u->too_large && oc_buf_append(&u->body, &u->len, &u->cap, upload_data, *upload_data_size)) {
      *upload_data_size = 0;
      return MHD_NO;
    }
    *upload_data_size = 0;
    return MHD_YES;
  }
  /* routes */
  static const char *posts[] = {"/v1/chat/completions", "/v1/moderations", "/tokenize", "/detokenize", "/apply-template"};
  static const char *gets[] = {"/v1/models", "/metrics", "/v1/guard/config"};
  int route = -1, route_get = -1;
  for (int i = 0; i < 5; i++) if (strcmp(url, posts[i]) == 0) route = i;
  for (int i = 0; i < 3; i++) if (strcmp(url, gets[i]) == 0) route_get = i;
  const char *audited = post && (route == 0 || route == 1) ? posts[route] : NULL;
  const int key = check_key(s, c);
  oc_api_error e;
  if (u->too_large)
    return refuse(s, c, audited, key, u, api_error(&e, 413, "invalid_request_error", "request_too_large", "the request body is larger than %zu bytes", s->o.max_body_bytes));
  if (strcmp(url, "/health") == 0) return get ? health(s, c) : send_error(s, c, 405, "invalid_request_error", NULL, "use GET");
  /* the console's files need no key (the page asks for one when the API wants it) */
  const oc_web_file *wf = oc_web_file_for_url(url);
  if (wf) return get ? web_file(s, c, wf) : send_error(s, c, 405, "invalid_request_error", NULL, "use GET");
  if (route < 0 && route_get < 0) return send_error(s, c, 404, "not_found_error", NULL, "no route %s %s", method, url);
  if ((route >= 0 && !post) || (route_get >= 0 && !get)) return send_error(s, c, 405, "invalid_request_error", NULL, "%s takes %s", url, route >= 0 ? "POST" : "GET");
  if (key == -2) return refuse(s, c, audited, key, u, api_error(&e, 401, "invalid_request_error", "invalid_api_key", "a valid API key is required (Authorization: Bearer KEY)"));
  if (route_get == 1) return metrics(s, c);
  const int st = state_of(s);
  if (st != READY)
    return refuse(s, c, audited, key, u, api_error(&e, 503, "unavailable_error", NULL, "%s", st == LOADING ? "the model is loading" : st == FAILED ? "the model failed to load" : "the server is shutting down"));
  if (route_get == 0) return models(s, c);
  if (route_get == 2) return guard_config(s, c);
  cJSON *body = NULL;
  oc_error err = {0};
  if (oc_json_parse(u->body ? u->body : "", u->len, "request body", 1, &body, &err))
    return refuse(s, c, audited, key, u, api_error(&e, 400, "invalid_request_error", NULL, "the body is not valid JSON: %s", err.msg));
  enum MHD_Result rc;
  switch (route) {
    case 0: rc = chat_completions(s, c, body, key); break;
    case 1: rc = moderations(s, c, body, key); break;
    case 2: rc = tokenize(s, c, body); break;
    case 3: rc = detokenize(s, c, body); break;
    default: rc = apply_template(s, c, body); break;
  }
  cJSON_Delete(body);
  return rc;
}

/* ---- lifecycle ---- */
static void *load_main(void *arg) {
  oc_server *s = arg;
  oc_error err = {0};
  oc_guard_bundle *b = NULL;
  oc_engine *e = NULL;
  int rc = oc_guard_open(&s->o.spec, &b, &err);
  if (!rc) {
    oc_guard_bundle_opts(b, &s->base);
    s->base.final_classifier_check = s->o.final_classifier_check && oc_guard_bundle_classifier(b);
    rc = oc_engine_new(oc_guard_bundle_guard(b), &s->o.engine, &e, &err);
  }
  pthread_mutex_lock(&s->mu);
  if (rc) {
    s->state = FAILED;
    s->load_err = err;
    oc_guard_close(b);
  } else {
    s->b = b;
    s->e = e;
    if (s->state == LOADING) s->state = READY;
  }
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

void oc_serve_opts_defaults(oc_serve_opts *o) {
  memset(o, 0, sizeof *o);
  oc_guard_spec_defaults(&o->spec);
  oc_engine_opts_defaults(&o->engine);
  o->host = "127.0.0.1";
  o->port = 8080;
  o->max_body_bytes = (size_t)1 << 20;
}

int oc_server_port(const oc_server *s) { return s->port; }

int oc_server_wait_ready(oc_server *s, oc_error *err) {
  pthread_mutex_lock(&s->mu);
  while (s->state == LOADING) pthread_cond_wait(&s->cv, &s->mu);
  int rc = s->state == FAILED ? -1 : 0;
  if (rc) *err = s->load_err;
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int oc_server_load_status(oc_server *s, oc_error *err) {
  pthread_mutex_lock(&s->mu);
  int rc = s->state == LOADING ? 1 : s->state == FAILED ? -1 : 0;
  if (rc < 0) *err = s->load_err;
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void oc_server_drain(oc_server *s, double drain_s) {
  pthread_mutex_lock(&s->mu);
  if (s->state == READY || s->state == LOADING) s->state = DRAINING;
  pthread_mutex_unlock(&s->mu);
  const double until = oc_now() + drain_s;
  while (atomic_load(&s->active) > 0 && oc_now() < until) usleep(20000);
  atomic_store(&s->closing, 1); /* what is left gives up */
}

void oc_server_free(oc_server *s) {
  if (!s) return;
  atomic_store(&s->closing, 1);
  if (s->d) MHD_stop_daemon(s->d); /* joins the connection threads */
  if (s->loader_started) pthread_join(s->loader, NULL);
  oc_engine_free(s->e);
  oc_guard_close(s->b);
  if (s->audit_fd >= 0) { fsync(s->audit_fd); close(s->audit_fd); }
  for (int i = 0; i < s->n_keys; i++) { memset(s->keys[i], 0, strlen(s->keys[i])); free(s->keys[i]); }
  free(s->keys);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}

int oc_server_start(const oc_serve_opts *o, oc_server **out, oc_error *err) {
  *out = NULL;
  if (!o->spec.model_id) return oc_fail(err, "serve needs a model (--model_id)");
  /* fail closed: without a probe every token would be released unread */
  if (!o->spec.probe_path) return oc_fail(err, "serve needs a probe (--probe_path): a server without one would release every token unguarded");
  if (o->port < 0 || o->port > 65535) return oc_fail(err, "port must be in [0, 65535], got %d", o->port);
  if (o->max_body_bytes < 1024 || o->max_body_bytes > ((size_t)1 << 30)) return oc_fail(err, "max_body_bytes must be in [1024, 2^30], got %zu", o->max_body_bytes);
  if (o->api_key && o->api_key_file) return oc_fail(err, "give --api_key or --api_key_file, not both");
  oc_server *s = calloc(1, sizeof *s);
  if (!s) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  oc_release_threads(); /* the engine's thread runs all compute from now on (the demo trained on this one) */
  s->o = *o;
  s->audit_fd = -1;
  s->state = LOADING;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  if (load_keys(s, err)) { oc_server_free(s); return -1; }
  if (o->audit_log && (s->audit_fd = open(o->audit_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0) {
    oc_fail_code(err, oc_errno_code(errno), "%s: cannot open the audit log: %s", o->audit_log, strerror(errno));
    oc_server_free(s);
    return -1;
  }
  struct sockaddr_in a4 = {0};
  struct sockaddr_in6 a6 = {0};
  const struct sockaddr *addr;
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (inet_pton(AF_INET, o->host, &a4.sin_addr) == 1) {
    a4.sin_family = AF_INET;
    a4.sin_port = htons((uint16_t)o->port);
    addr = (const struct sockaddr *)&a4;
  } else if (inet_pton(AF_INET6, o->host, &a6.sin6_addr) == 1) {
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons((uint16_t)o->port);
    addr = (const struct sockaddr *)&a6;
    flags |= MHD_USE_IPv6;
  } else {
    oc_server_free(s);
    return oc_fail(err, "--host must be an IPv4 or IPv6 address, got \"%s\"", o->host);
  }
  const unsigned limit = (unsigned)(o->engine.queue + o->engine.parallel + 64);
  s->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, handler, s, MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_NOTIFY_COMPLETED, request_completed, s,
                          MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
  if (!s->d) {
    oc_fail_code(err, OC_ERR_IO, "cannot listen on %s port %d (in use, or not an address of this machine)", o->host, o->port);
    oc_server_free(s);
    return -1;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? di->port : o->port;
  if (pthread_create(&s->loader, NULL, load_main, s)) {
    oc_server_free(s);
    return oc_fail_code(err, OC_ERR_NOMEM, "cannot start the loading thread");
  }
  s->loader_started = 1;
  *out = s;
  return 0;
}
