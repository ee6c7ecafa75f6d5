/* Guarded generation with the MVP's semantics on a KV cache: the token chosen at step k is fed
 * once, and that same forward pass yields its hidden state for the probe (every N steps) and the
 * logits of step k+1. Text is held in a pending buffer until a probe reading clears it.
 * Fail closed: a probe or classifier score that is not a number is maximum risk and blocks. */
#include "opencon/guard.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct oc_guard {
  const oc_model *m;
  const oc_chat *chat;
  const oc_probe *probe;
  const oc_probe_config *cfg;
  const oc_classifier *cls;
  int n_layers;                     /* the hidden states the probe reads (1 for a single-layer probe) */
  int layers[OC_PROBE_MAX_LAYERS];  /* resolved hidden-state indices, in the probe's order */
  int eos_extra; /* tokenizer's eos token id (end of turn), -1 if none */
};

const char *oc_guard_status_name(oc_guard_status s) {
  switch (s) {
    case OC_GUARD_COMPLETED: return "completed";
    case OC_GUARD_PAUSED: return "paused";
    case OC_GUARD_UNCERTAIN: return "uncertain";
    case OC_GUARD_BLOCKED: return "blocked";
  }
  return "blocked";
}

int oc_guard_status_from_name(const char *name, oc_guard_status *s) {
  for (int k = OC_GUARD_COMPLETED; k <= OC_GUARD_BLOCKED; k++)
    if (strcmp(name, oc_guard_status_name((oc_guard_status)k)) == 0) { *s = (oc_guard_status)k; return 0; }
  return -1;
}

const char *oc_stop_reason_name(oc_stop_reason r) {
  switch (r) {
    case OC_STOP_EOS: return "eos";
    case OC_STOP_MAX_NEW_TOKENS: return "max_new_tokens";
    case OC_STOP_PAUSED: return "paused";
    case OC_STOP_UNCERTAIN: return "uncertain";
    case OC_STOP_BLOCKED: return "blocked";
    case OC_STOP_NONFINITE: return "nonfinite";
    case OC_STOP_SEQUENCE: return "stop_sequence";
  }
  return "blocked";
}

void oc_guard_opts_defaults(oc_guard_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_new_tokens = 80;
  o->use_chat_template = 1;
  o->use_probe = 1;
  o->top_p = 1.0;
  o->pause_threshold = o->allow_threshold = o->block_threshold = NAN;
}

void oc_guard_result_free(oc_guard_result *r) {
  free(r->response);
  free(r->tokens);
  memset(r, 0, sizeof *r);
}

static cJSON *num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

cJSON *oc_guard_result_json(const oc_guard_result *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "status", oc_guard_status_name(r->status));
  cJSON_AddStringToObject(o, "response", r->response ? r->response : "");
  cJSON_AddItemToObject(o, "risk", num(r->risk));
  cJSON_AddItemToObject(o, "smoothed_risk", num(r->smoothed_risk));
  cJSON_AddItemToObject(o, "classifier_score", num(r->classifier_score));
  if (r->classifier_calls > 0) cJSON_AddStringToObject(o, "classifier_verdict", oc_verdict_name(r->classifier_verdict));
  else cJSON_AddNullToObject(o, "classifier_verdict");
  cJSON_AddNumberToObject(o, "held_response_chars", r->held_response_chars);
  cJSON_AddBoolToObject(o, "final_classifier_check", r->final_classifier_check);
  cJSON_AddNumberToObject(o, "generated_tokens", r->n_tokens);
  cJSON_AddNumberToObject(o, "probe_calls", r->probe_calls);
  cJSON_AddNumberToObject(o, "classifier_calls", r->classifier_calls);
  cJSON_AddStringToObject(o, "stop_reason", oc_stop_reason_name(r->stop_reason));
  if (r->nonfinite) cJSON_AddNumberToObject(o, "nonfinite", r->nonfinite);
  cJSON_AddNumberToObject(o, "time_to_first_token_ms", r->ttft_ms);
  cJSON_AddNumberToObject(o, "total_ms", r->total_ms);
  return o;
}

/* two spellings of one local directory ("m", "./m/", a symlink to it) */
static int same_directory(const char *a, const char *b) {
  char *ra = realpath(a, NULL), *rb = ra ? realpath(b, NULL) : NULL;
  int same = ra && rb && strcmp(ra, rb) == 0 && oc_is_dir(ra);
  free(ra);
  free(rb);
  return same;
}

int oc_guard_check_probe(const char *model_id, const char *config_model_id, oc_error *err) {
  if (!config_model_id || !config_model_id[0])
    return oc_fail(err, "the probe config names no model_id (a probe reads one model's hidden states; its config must say which)");
  if (!model_id || (strcmp(model_id, config_model_id) != 0 && !same_directory(model_id, config_model_id)))
    return oc_fail(err, "the probe was trained for model_id \"%s\", not \"%s\" (a probe reads one model's hidden states)", config_model_id,
                   model_id ? model_id : "(none)");
  return 0;
}

int oc_guard_new(const oc_model *m, const oc_chat *chat, const oc_probe *probe, const oc_probe_config *cfg, const oc_classifier *cls,
                 oc_guard **out, oc_error *err) {
  *out = NULL;
  if (!m || !chat) return oc_fail(err, "a guard needs a model and its chat (tokenizer + template)");
  if (cls && !cls->tok) return oc_fail(err, "the exchange classifier was loaded without its tokenizer: it cannot score text");
  const oc_model_config *c = oc_model_cfg(m);
  int layers[OC_PROBE_MAX_LAYERS] = {0}, nl = 1;
  if (probe) {
    if (!cfg) return oc_fail(err, "a probe needs its config (layer, thresholds)");
    if (oc_probe_config_check(cfg, "probe config", err) || oc_probe_check(probe, "probe", err)) return -1;
    const int *want;
    nl = oc_probe_config_layers(cfg, &want);
    if ((int64_t)probe->hidden != (int64_t)nl * c->hidden) {
      if (nl == 1) return oc_fail(err, "the probe reads %d features, the model's hidden size is %d", probe->hidden, c->hidden);
      return oc_fail(err, "the probe reads %d features; its %d layers of the model's hidden size %d make %lld", probe->hidden, nl, c->hidden,
                     (long long)nl * c->hidden);
    }
    /* a probe config that names its model family must name this one: a local directory named like
     * another model's Hub id cannot pass the model_id check with another architecture behind it */
    const char *fam = oc_family_name(c->family);
    if (cfg->model_family && cfg->model_family[0] && strncasecmp(cfg->model_family, fam, strlen(fam)) != 0)
      return oc_fail(err, "the probe was trained on a \"%s\" model; this model is \"%s\" (a probe reads one model's hidden states)", cfg->model_family, fam);
    for (int k = 0; k < nl; k++) {
      if ((layers[k] = oc_hidden_index(c, want[k], err)) < 0) return oc_wrap(err, "probe layer");
      for (int j = 0; j < k; j++)
        if (layers[j] == layers[k]) return oc_fail(err, "probe layers %d and %d are the same hidden state of this model", want[j], want[k]);
    }
  }
  oc_guard *g = calloc(1, sizeof *g);
  if (!g) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  g->m = m;
  g->chat = chat;
  g->probe = probe;
  g->cfg = cfg;
  g->cls = cls;
  g->n_layers = nl;
  memcpy(g->layers, layers, sizeof layers);
  g->eos_extra = -1;
  const cJSON *eos = chat && chat->config ? cJSON_GetObjectItemCaseSensitive(chat->config, "eos_token") : NULL;
  if (eos && cJSON_IsObject(eos)) eos = cJSON_GetObjectItemCaseSensitive(eos, "content");
  if (cJSON_IsString(eos)) g->eos_extra = oc_tokenizer_token_to_id(chat->tok, eos->valuestring);
  *out = g;
  return 0;
}

void oc_guard_free(oc_guard *g) { free(g); }

/* ---- sampling ---- */
typedef struct { float p; int id; } cand;
/* most likely first; equal probabilities by id, so the order never depends on qsort */
static int by_prob_desc(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->p != y->p) return x->p < y->p ? 1 : -1;
  return (x->id > y->id) - (x->id < y->id);
}

/* greedy, or temperature sampling with optional top-k and top-p (nucleus) filtering; c: [V] scratch */
static int sample(const float *logits, int V, const oc_guard_opts *o, oc_rng *r, cand *c) {
  if (!(o->temperature > 0)) return oc_argmax(logits, V);
  float mx = logits[oc_argmax(logits, V)];
  for (int i = 0; i < V; i++) { c[i].p = expf((logits[i] - mx) / (float)o->temperature); c[i].id = i; }
  int keep = V;
  if (o->top_k > 0 && o->top_k < V && o->top_k <= 64) { /* partial selection of the few most likely, in order: O(k V) */
    keep = o->top_k;
    for (int i = 0; i < keep; i++) {
      int best = i;
      for (int j = i + 1; j < V; j++) if (by_prob_desc(&c[j], &c[best]) < 0) best = j;
      cand t = c[i]; c[i] = c[best]; c[best] = t;
    }
  } else if (o->top_p < 1.0 || (o->top_k > 0 && o->top_k < V)) {
    qsort(c, (size_t)V, sizeof *c, by_prob_desc);
    if (o->top_k > 0 && o->top_k < V) keep = o->top_k;
  }
  if (o->top_p < 1.0) {
    double total = 0, acc = 0;
    for (int i = 0; i < keep; i++) total += c[i].p;
    for (int i = 0; i < keep; i++) { acc += c[i].p / total; if (acc >= o->top_p) { keep = i + 1; break; } }
  }
  double total = 0;
  for (int i = 0; i < keep; i++) total += c[i].p;
  double u = oc_rng_uniform(r) * total, acc = 0;
  for (int i = 0; i < keep; i++) { acc += c[i].p; if (u < acc) return c[i].id; }
  return c[keep - 1].id;
}

/* ---- text ---- */
static size_t utf8_chars(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
  return c;
}

static int ends_with_replacement(const char *t, size_t n) {
  return n >= 3 && (unsigned char)t[n - 3] == 0xef && (unsigned char)t[n - 2] == 0xbf && (unsigned char)t[n - 1] == 0xbd;
}

/* Length of text that may be released: whole characters, and not a trailing U+FFFD (an incomplete
 * multi-byte character at the end decodes to U+FFFD until its next byte arrives). */
size_t oc_utf8_safe_prefix(const char *t, size_t n) {
  const unsigned char *u = (const unsigned char *)t;
  while (ends_with_replacement(t, n)) n -= 3;
  size_t i = n; /* start of the last character */
  while (i > 0 && (u[i - 1] & 0xc0) == 0x80 && n - i < 3) i--;
  if (i == 0) return 0; /* only continuation bytes */
  unsigned lead = u[i - 1];
  size_t need = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return n - (i - 1) < need ? i - 1 : n;
}

/* Incremental detokenization, as text-generation-inference does it: only a short window of the
 * latest tokens is decoded at each step. Tokens [0, read) are committed into text[0, committed);
 * the window starts at `prefix` (the token before the committed ones, so a decoder's handling of a
 * sequence's first token, e.g. a stripped leading space, is the same on both sides of the
 * difference). The new tokens' text is decode(prefix..n) minus decode(prefix..read); it is
 * committed once it does not end in U+FFFD (an unfinished multi-byte character), else kept as the
 * tail after the committed text. text[0, len) = committed text + tail. */
#define DETOK_MAX_WINDOW 16 /* tokens: past this an unfinished tail is committed as it is */
typedef struct {
  char *text;
  size_t len, cap, committed;
  int prefix, read;
} detok;

/* Decoded text into the buffer at `at`. A NUL byte (a byte token such as <0x00>) becomes U+FFFD:
 * the text is a C string to the classifier, and a NUL in it would hide everything after it from
 * every later check while that text was still released. */
static int detok_put(detok *d, size_t at, const char *s, size_t n, oc_error *err) {
  size_t nul = 0;
  for (size_t i = 0; i < n; i++) nul += s[i] == 0;
  const size_t need = at + n + 2 * nul + 1;
  if (need > d->cap) {
    size_t cap = d->cap ? d->cap : 256;
    while (cap < need) cap *= 2;
    char *t = realloc(d->text, cap);
    if (!t) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    d->text = t;
    d->cap = cap;
  }
  char *o = d->text + at;
  for (size_t i = 0; i < n; i++)
    if (s[i]) *o++ = s[i];
    else { *o++ = (char)0xef; *o++ = (char)0xbf; *o++ = (char)0xbd; }
  d->len = (size_t)(o - d->text);
  d->text[d->len] = 0;
  return 0;
}

static int detok_step(detok *d, const oc_tokenizer *tok, const int32_t *ids, int n, oc_error *err) {
  char *head = NULL, *all = NULL;
  size_t hl = 0, al = 0;
  int rc = -1;
  if (oc_tokenizer_decode(tok, ids + d->prefix, d->read - d->prefix, 1, &head, &hl, err) ||
      oc_tokenizer_decode(tok, ids + d->prefix, n - d->prefix, 1, &all, &al, err))
    goto done;
  const char *fresh = all + (al > hl ? hl : al);
  size_t fl = al > hl ? al - hl : 0;
  if (detok_put(d, d->committed, fresh, fl, err)) goto done;
  /* commit whole characters; past DETOK_MAX_WINDOW tokens commit whatever there is (tokens that
   * decode to nothing, or an endless run of invalid bytes, must not grow the window) */
  if ((fl > 0 && !ends_with_replacement(all, al)) || n - d->prefix > DETOK_MAX_WINDOW) {
    d->committed = d->len;
    d->prefix = d->read;
    d->read = n;
  }
  rc = 0;
done:
  free(head);
  free(all);
  return rc;
}

typedef struct {
  oc_guard_emit_fn emit;
  void *ud;
  size_t released;
} releaser;

/* ---- events ---- */
static void event(oc_guard_event_fn fn, void *ud, cJSON *e) {
  if (fn) {
    char *s = cJSON_PrintUnformatted(e);
    if (s) fn(ud, s);
    free(s);
  }
  cJSON_Delete(e);
}

static cJSON *new_event(const char *name, int step) {
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "event", name);
  if (step > 0) cJSON_AddNumberToObject(e, "step", step);
  return e;
}

/* a "probe" event: every reading that is a number, with what the guard made of it ("release",
 * "suspicious" or "pause"), so a client can draw the risk step by step */
static void probe_event(oc_guard_event_fn fn, void *ud, int step, double risk, double smoothed, const char *decision) {
  if (!fn) return;
  cJSON *e = new_event("probe", step);
  cJSON_AddNumberToObject(e, "risk", risk);
  cJSON_AddNumberToObject(e, "smoothed_risk", smoothed);
  cJSON_AddStringToObject(e, "decision", decision);
  event(fn, ud, e);
}

/* a "pause" or "suspicious" event: the step and the smoothed risk that raised it */
static void risk_event(oc_guard_event_fn fn, void *ud, const char *name, int step, double smoothed) {
  cJSON *e = new_event(name, step);
  cJSON_AddNumberToObject(e, "smoothed_risk", smoothed);
  event(fn, ud, e);
}

/* a score that is not a number: recorded, then treated as maximum risk */
static void nonfinite_event(oc_guard_event_fn fn, void *ud, const char *what, int step, oc_guard_result *res) {
  res->nonfinite++;
  cJSON *e = new_event("nonfinite", step);
  cJSON_AddStringToObject(e, "what", what);
  cJSON_AddStringToObject(e, "action", "block");
  event(fn, ud, e);
}

/* ---- one generation, step by step ----
 * A stream is the MVP's loop turned inside out, so a scheduler can batch many streams' forwards:
 * step k samples a token from the last logits and, when it must be fed back (a probe reading is
 * due, or more steps follow), asks for a forward (OC_NEED_FORWARD); the forward's logits are step
 * k+1's and its tapped hidden state is step k's probe reading. A reading at or above the pause
 * threshold asks for the classifier (OC_NEED_CLASSIFY) before anything else happens. After the
 * last step come the tail reading (tokens after the last reading, fed if they were not) and the
 * final check. */
typedef enum { CLS_PAUSE, CLS_TAIL, CLS_FINAL_CHECK } cls_kind;

struct oc_guard_stream {
  const oc_guard *g;
  oc_guard_opts o;        /* a copy: the caller's may go away */
  char *prompt;           /* the prompt as the classifier reads it */
  oc_guard_event_fn ev;
  void *ud;
  oc_guard_result res;
  double t_start;
  oc_mbert_ws *ws;        /* this stream's classifier workspace (made at its first call) when the caller gives none */
  int use_cls, probing, N;
  oc_risk_agg agg;        /* the readings so far, aggregated as the probe's config says */
  int probed;             /* tokens covered by the last probe reading */
  detok dt;               /* the text generated so far */
  releaser rel;           /* what of it was released */
  oc_guard_status status;
  int stopped;            /* the guard stopped the stream */
  int ended;              /* the model ended its turn */
  oc_session *s;
  int own_session;
  int32_t *ids;           /* the prompt */
  int n_ids, prefilled;
  float *logits;          /* the next step's logits when they must outlive the caller's buffer */
  float *tap;             /* the hidden state of the last token fed (probe layer) */
  cand *cands;
  oc_rng rng;
  int k;                  /* the last step taken (1-based) */
  int fed;                /* tokens fed back: st->tap is the hidden state of token fed-1 */
  oc_stream_need need;
  int32_t pending;        /* OC_NEED_FORWARD: the token to feed */
  int pending_reading;    /* its forward yields a reading: 0 none, 1 at step k, 2 the tail reading */
  char **stop;            /* stop strings (copies) */
  int n_stop;
  double pause, allow, block; /* the thresholds in force */
  cls_kind cls;           /* OC_NEED_CLASSIFY: which call */
  int cls_step;
  cJSON *tr;              /* the current step's trace line */
};

/* Bytes at the end of text[0, n) that may be the start of a stop string: held back until the next
 * tokens show whether it is one. */
static size_t stop_holdback(const oc_guard_stream *st, const char *text, size_t n) {
  size_t hold = 0;
  for (int i = 0; i < st->n_stop; i++) {
    size_t L = strlen(st->stop[i]);
    for (size_t k = L - 1 < n ? L - 1 : n; k > hold; k--)
      if (memcmp(text + n - k, st->stop[i], k) == 0) { hold = k; break; }
  }
  return hold;
}

/* Emit the generated text not yet released: whole characters, short of a possible stop string;
 * final: all of it (the generation is over; a stop string found was already cut off). */
static void release(oc_guard_stream *st, int final) {
  const char *text = st->dt.text;
  size_t n = st->dt.len;
  if (!text) return;
  if (!final) { /* whole characters, short of what may start a stop string (among whole characters) */
    n = oc_utf8_safe_prefix(text, n);
    n = oc_utf8_safe_prefix(text, n - stop_holdback(st, text, n));
  }
  releaser *r = &st->rel;
  if (n > r->released) {
    if (r->emit) r->emit(r->ud, text + r->released, n - r->released);
    r->released = n;
  }
}

/* The earliest stop string in the text from `from` on (bytes; the text before it has been searched
 * already): the text is cut where it starts and the generation ends there. Released text cannot be
 * taken back: the cut is never before it (the holdback keeps a stop string's start from being
 * released in the first place). */
static void find_stop(oc_guard_stream *st, size_t from) {
  size_t cut = SIZE_MAX;
  for (int i = 0; i < st->n_stop; i++) {
    const size_t L = strlen(st->stop[i]);
    for (size_t p = from >= L - 1 ? from - (L - 1) : 0; p + L <= st->dt.len && p < cut; p++)
      if (memcmp(st->dt.text + p, st->stop[i], L) == 0) { cut = p; break; }
  }
  if (cut == SIZE_MAX) return;
  if (cut < st->rel.released) cut = st->rel.released;
  st->dt.len = cut;
  st->dt.text[cut] = 0;
  if (st->dt.committed > cut) st->dt.committed = cut;
  st->ended = 1;
  st->res.stop_reason = OC_STOP_SEQUENCE;
}

static int cancelled(const oc_guard_stream *st, oc_error *err) {
  if (st->o.should_abort && st->o.should_abort(st->o.abort_ud))
    return oc_fail_code(err, OC_ERR_CANCELLED, "generation cancelled by the caller after %d tokens", st->res.n_tokens);
  return 0;
}

/* classify prompt + text; the verdict is a block when the score is not finite (oc_decide) */
static int classify(oc_guard_stream *st, const char *name, int step, const char *text, oc_decision *d, oc_error *err) {
  if (cancelled(st, err)) return -1;
  oc_mbert_ws *ws = st->o.cls_ws;
  if (!ws && !(ws = st->ws) && !(ws = st->ws = oc_mbert_ws_new())) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  double t0 = oc_now();
  if (oc_classifier_score_ws(st->g->cls, ws, st->prompt, text, d, err)) return oc_wrap(err, "exchange classifier");
  oc_decide(d->score, st->allow, st->block, d);
  oc_guard_result *res = &st->res;
  res->classifier_ms += 1e3 * (oc_now() - t0);
  res->classifier_calls++;
  res->classifier_score = isfinite(d->score) ? d->score : NAN;
  res->classifier_verdict = d->verdict;
  if (!isfinite(d->score)) nonfinite_event(st->ev, st->ud, "classifier_score", step, res);
  cJSON *e = new_event(name, step);
  cJSON_AddStringToObject(e, "verdict", oc_verdict_name(d->verdict));
  cJSON_AddItemToObject(e, "score", isfinite(d->score) ? cJSON_CreateNumber(d->score) : cJSON_CreateNull());
  event(st->ev, st->ud, e);
  return 0;
}

/* stop the stream with a status and its reason */
static void stop(oc_guard_stream *st, oc_guard_status status, oc_stop_reason why) {
  if (st->o.observe) { /* only recorded: the first stop the guard would have made */
    if (st->status == OC_GUARD_COMPLETED) st->status = status;
    return;
  }
  st->status = status;
  st->res.stop_reason = why;
  st->stopped = 1;
}

/* the stop of a verdict other than allow */
static void stop_on(oc_guard_stream *st, const oc_decision *d) {
  stop(st, d->verdict == OC_VERDICT_BLOCK ? OC_GUARD_BLOCKED : OC_GUARD_UNCERTAIN,
       !isfinite(d->score) ? OC_STOP_NONFINITE : d->verdict == OC_VERDICT_BLOCK ? OC_STOP_BLOCKED : OC_STOP_UNCERTAIN);
}

static void trace_line(oc_guard_stream *st) {
  cJSON *tr = st->tr;
  st->tr = NULL;
  if (!tr) return;
  cJSON_AddNumberToObject(tr, "released_bytes", (double)st->rel.released);
  char *line = cJSON_PrintUnformatted(tr);
  if (line) fprintf(st->o.trace, "%s\n", line);
  free(line);
  cJSON_Delete(tr);
}

static void trace_begin(oc_guard_stream *st, int step, int32_t token) {
  if (!st->o.trace) return;
  cJSON_Delete(st->tr);
  if ((st->tr = cJSON_CreateObject())) {
    cJSON_AddNumberToObject(st->tr, "step", step);
    cJSON_AddNumberToObject(st->tr, "token", token);
  }
}

/* The final check is still to come: the tail (the text after the last mid-stream reading) waits for
 * it rather than being released by the tail reading (text released at earlier probe steps cannot
 * be recalled; the MVP's final check only decides the status). */
static int final_check_pending(const oc_guard_stream *st) { return st->use_cls && st->o.final_classifier_check && !st->o.observe; }

/* A probe reading of the hidden state h of the newest token (step k): aggregated with the readings
 * before it (the config's aggregation; the MVP's smoothing by default), and the MVP's decisions. Below the pause threshold the pending text is released (all of it when final); at or
 * above it the stream pauses without a classifier, or asks for one (returns 1). A logit that is
 * not finite is maximum risk: blocked without asking anyone (a -Inf logit would read as risk 0). */
static int probe_reading(oc_guard_stream *st, int k, const float *h, int final) {
  const oc_guard *g = st->g;
  oc_guard_result *res = &st->res;
  cJSON *tr = st->tr;
  const float logit = oc_probe_logit(g->probe, h);
  const double risk = oc_sigmoid(logit);
  res->probe_calls++;
  st->probed = res->n_tokens;
  if (tr && final) cJSON_AddBoolToObject(tr, "final_probe", 1);
  if (!isfinite(logit)) {
    nonfinite_event(st->ev, st->ud, "probe_risk", k, res);
    res->risk = res->smoothed_risk = res->max_risk = 1.0;
    stop(st, OC_GUARD_BLOCKED, OC_STOP_NONFINITE);
    if (tr) cJSON_AddStringToObject(tr, "decision", "nonfinite");
    return 0;
  }
  const double sm = oc_risk_agg_push(&st->agg, risk);
  res->risk = risk;
  res->smoothed_risk = sm;
  if (!(res->max_risk >= sm)) res->max_risk = sm;
  if (tr) { cJSON_AddNumberToObject(tr, "risk", risk); cJSON_AddNumberToObject(tr, "smoothed_risk", sm); }
  probe_event(st->ev, st->ud, k, risk, sm, sm >= st->pause ? "pause" : sm >= g->cfg->threshold ? "suspicious" : "release");
  if (sm < st->pause) {
    if (!(final && final_check_pending(st))) release(st, final);
    if (tr) cJSON_AddStringToObject(tr, "decision", sm >= g->cfg->threshold ? "suspicious" : "release");
    if (sm >= g->cfg->threshold) risk_event(st->ev, st->ud, "suspicious", k, sm);
    return 0;
  }
  risk_event(st->ev, st->ud, "pause", k, sm);
  if (!st->use_cls) {
    stop(st, OC_GUARD_PAUSED, OC_STOP_PAUSED);
    if (tr) cJSON_AddStringToObject(tr, "decision", "paused");
    return 0;
  }
  st->need = OC_NEED_CLASSIFY;
  st->cls = final ? CLS_TAIL : CLS_PAUSE;
  st->cls_step = k;
  return 1;
}

/* after the last step: the tail reading, then the final check, then done */
static void wind_up(oc_guard_stream *st) {
  oc_guard_result *res = &st->res;
  /* Tokens after the last reading (a stream that ended between probe steps) are read once more
   * before anything of them is released: a short answer must not pass unprobed. */
  if (!st->stopped && st->probing && res->n_tokens > st->probed) {
    trace_begin(st, res->n_tokens, res->tokens[res->n_tokens - 1]);
    if (st->fed < res->n_tokens) { /* the last token was never fed: its forward gives the reading */
      st->pending = res->tokens[res->n_tokens - 1];
      st->pending_reading = 2;
      st->need = OC_NEED_FORWARD;
      return;
    }
    if (probe_reading(st, res->n_tokens, st->tap, 1)) return;
    trace_line(st);
  }
  if (!st->stopped && st->use_cls && st->o.final_classifier_check) {
    st->need = OC_NEED_CLASSIFY;
    st->cls = CLS_FINAL_CHECK;
    st->cls_step = 0;
    return;
  }
  st->need = OC_NEED_NOTHING;
}

/* Steps from the logits of the last forward until one needs the model or the classifier again,
 * or the generation is over. */
static int advance(oc_guard_stream *st, const float *logits, oc_error *err) {
  const oc_model_config *c = oc_model_cfg(st->g->m);
  const int V = c->vocab, max = st->o.max_new_tokens;
  oc_guard_result *res = &st->res;
  while (!st->stopped && !st->ended && st->k < max) {
    const int k = ++st->k;
    if (oc_find_nonfinite(logits, (size_t)V) < (size_t)V) { /* a broken forward: nothing it produced may be trusted */
      nonfinite_event(st->ev, st->ud, "logits", k, res);
      stop(st, OC_GUARD_BLOCKED, OC_STOP_NONFINITE);
      st->ended = 1; /* in observe mode too: nothing can follow */
      res->stop_reason = OC_STOP_NONFINITE;
      break;
    }
    int32_t next = sample(logits, V, &st->o, &st->rng, st->cands);
    if (k == 1) res->ttft_ms = 1e3 * (oc_now() - st->t_start);
    if (oc_is_eos(c, next) || next == st->g->eos_extra) { res->stop_reason = OC_STOP_EOS; st->ended = 1; break; }
    res->tokens[res->n_tokens++] = next;
    const size_t rewritten = st->dt.committed; /* detok_step rewrites the text from here on */
    if (detok_step(&st->dt, st->g->chat->tok, res->tokens, res->n_tokens, err)) return -1;
    if (st->n_stop) find_stop(st, rewritten);
    trace_begin(st, k, next);
    const int do_probe = st->probing && k % st->N == 0;
    if (do_probe || (k < max && !st->ended)) { /* the last token is fed only when a reading needs it */
      st->pending = next;
      st->pending_reading = do_probe;
      st->need = OC_NEED_FORWARD;
      return 0;
    }
    if (!st->probing || st->o.observe) release(st, 0);
    trace_line(st);
  }
  wind_up(st);
  return 0;
}

oc_stream_need oc_guard_stream_need(const oc_guard_stream *st) { return st->need; }
int32_t oc_guard_stream_token(const oc_guard_stream *st) { return st->pending; }
int oc_guard_stream_wants_tap(const oc_guard_stream *st) { return st->probing; }
int oc_guard_stream_prompt_left(const oc_guard_stream *st) { return st->n_ids - st->prefilled; }
oc_session *oc_guard_stream_session(oc_guard_stream *st) { return st->s; }
const oc_guard_result *oc_guard_stream_progress(const oc_guard_stream *st) { return &st->res; }
int oc_guard_probe_layer(const oc_guard *g) { return g->layers[0]; }
int oc_guard_probe_layers(const oc_guard *g, const int **layers) {
  *layers = g->layers;
  return g->n_layers;
}
const oc_model *oc_guard_model(const oc_guard *g) { return g->m; }
const oc_chat *oc_guard_chat(const oc_guard *g) { return g->chat; }
const oc_classifier *oc_guard_classifier(const oc_guard *g) { return g->cls; }

int oc_guard_stream_prefill(oc_guard_stream *st, int max_tokens, oc_error *err) {
  if (st->need != OC_NEED_PREFILL) return oc_fail(err, "the stream's prompt is already read");
  if (cancelled(st, err)) return -1;
  int left = st->n_ids - st->prefilled, n = max_tokens > 0 && max_tokens < left ? max_tokens : left;
  const int last = n == left;
  if (oc_forward(st->s, st->ids + st->prefilled, n, NULL, last ? st->logits : NULL, 0, err)) return -1;
  st->prefilled += n;
  if (!last) return 0;
  st->need = OC_NEED_NOTHING; /* until advance says what comes next */
  return advance(st, st->logits, err);
}

int oc_guard_stream_fed(oc_guard_stream *st, const float *logits, const float *tap, oc_error *err) {
  if (st->probing && st->g->n_layers > 1) /* fail closed: one layer's row is not what this probe reads */
    return oc_fail_code(err, OC_ERR_UNSUPPORTED, "the probe reads %d layers: feed their hidden states with oc_guard_stream_fed_layers", st->g->n_layers);
  return oc_guard_stream_fed_layers(st, logits, tap, oc_model_cfg(st->g->m)->hidden, err);
}

int oc_guard_stream_fed_layers(oc_guard_stream *st, const float *logits, const float *taps, size_t layer_stride, oc_error *err) {
  if (st->need != OC_NEED_FORWARD) return oc_fail(err, "the stream asked for no forward");
  const int H = oc_model_cfg(st->g->m)->hidden;
  st->fed = st->pending_reading == 2 ? st->res.n_tokens : st->k;
  if (st->probing) {
    if (!taps) return oc_fail(err, "a probing stream needs the tapped hidden state of its forward");
    for (int k = 0; k < st->g->n_layers; k++) memcpy(st->tap + (size_t)k * H, taps + (size_t)k * layer_stride, sizeof(float) * (size_t)H);
  }
  const int reading = st->pending_reading;
  st->need = OC_NEED_NOTHING;
  if (reading == 2) { /* the tail reading */
    if (probe_reading(st, st->res.n_tokens, st->tap, 1)) return 0;
    trace_line(st);
    wind_up(st);
    return 0;
  }
  if (reading && probe_reading(st, st->k, st->tap, 0)) { /* the classifier decides before the next step */
    memcpy(st->logits, logits, sizeof(float) * (size_t)oc_model_cfg(st->g->m)->vocab);
    return 0;
  }
  if (!st->probing || st->o.observe) release(st, 0); /* nothing holds the stream */
  trace_line(st);
  return advance(st, logits, err);
}

int oc_guard_stream_classify(oc_guard_stream *st, oc_error *err) {
  if (st->need != OC_NEED_CLASSIFY) return oc_fail(err, "the stream asked for no classifier call");
  oc_decision d;
  const char *text = st->dt.text ? st->dt.text : "";
  if (classify(st, st->cls == CLS_FINAL_CHECK ? "final_check" : "classifier", st->cls_step, text, &d, err)) return -1;
  st->need = OC_NEED_NOTHING;
  if (st->cls == CLS_FINAL_CHECK) {
    if (d.verdict != OC_VERDICT_ALLOW) stop_on(st, &d);
    return 0;
  }
  if (st->tr) {
    cJSON_AddStringToObject(st->tr, "decision", oc_verdict_name(d.verdict));
    cJSON_AddItemToObject(st->tr, "classifier_score", isfinite(d.score) ? cJSON_CreateNumber(d.score) : cJSON_CreateNull());
  }
  const int final = st->cls == CLS_TAIL;
  if (d.verdict == OC_VERDICT_ALLOW && !(final && final_check_pending(st))) release(st, final);
  else stop_on(st, &d);
  trace_line(st);
  if (final) { /* the tail is read: on to the final check */
    wind_up(st);
    return 0;
  }
  return advance(st, st->logits, err);
}

void oc_guard_stream_free(oc_guard_stream *st) {
  if (!st) return;
  if (st->own_session) oc_session_free(st->s);
  oc_mbert_ws_free(st->ws);
  cJSON_Delete(st->tr);
  for (int i = 0; i < st->n_stop; i++) free(st->stop[i]);
  free(st->stop);
  free(st->prompt); free(st->ids); free(st->dt.text); free(st->logits); free(st->tap); oc_risk_agg_free(&st->agg); free(st->cands);
  oc_guard_result_free(&st->res);
  free(st);
}

/* the thresholds a generation runs with: the guard's, or the caller's stricter ones */
typedef struct { double pause, allow, block; } thresholds;

static int check_opts(const oc_guard *g, int n, const oc_guard_opts *o, thresholds *t, oc_error *err) {
  const oc_model_config *c = oc_model_cfg(g->m);
  const int probing = o->use_probe && g->probe;
  if (o->max_new_tokens < 1 || o->max_new_tokens > OC_GUARD_MAX_NEW_TOKENS)
    return oc_fail(err, "max_new_tokens must be in [1, %d], got %d", OC_GUARD_MAX_NEW_TOKENS, o->max_new_tokens);
  /* fail closed: asking for the probe on a guard without one would otherwise release every token */
  if (o->use_probe && !g->probe) return oc_fail(err, "this guard has no probe: set use_probe to 0 for plain (unguarded) generation");
  if (!(o->temperature >= 0) || !(o->top_p > 0 && o->top_p <= 1) || o->top_k < 0)
    return oc_fail(err, "sampling settings out of range (temperature %g >= 0, top_p %g in (0, 1], top_k %d >= 0)", o->temperature, o->top_p, o->top_k);
  if (n <= 0) return oc_fail(err, "the prompt encodes to no tokens");
  if (o->n_stop < 0 || o->n_stop > OC_GUARD_MAX_STOP) return oc_fail(err, "at most %d stop strings, got %d", OC_GUARD_MAX_STOP, o->n_stop);
  for (int i = 0; i < o->n_stop; i++) {
    size_t L = o->stop[i] ? strlen(o->stop[i]) : 0;
    if (L < 1 || L > OC_GUARD_MAX_STOP_BYTES) return oc_fail(err, "stop string %d must be 1 to %d bytes long", i, OC_GUARD_MAX_STOP_BYTES);
  }
  const double own_pause = probing ? g->cfg->pause_threshold : 1.0;
  const double own_allow = g->cls ? g->cls->allow_threshold : 1.0, own_block = g->cls ? g->cls->block_threshold : 1.0;
  t->pause = isnan(o->pause_threshold) ? own_pause : o->pause_threshold;
  t->allow = isnan(o->allow_threshold) ? own_allow : o->allow_threshold;
  t->block = isnan(o->block_threshold) ? own_block : o->block_threshold;
  /* a caller may tighten the guard, never loosen it */
  if (!(t->pause >= 0 && t->pause <= own_pause))
    return oc_fail(err, "pause_threshold %g must be in [0, %g] (the probe config's; a caller may only be stricter)", t->pause, own_pause);
  if (!(t->block >= 0 && t->block <= own_block))
    return oc_fail(err, "block_threshold %g must be in [0, %g] (the classifier's; a caller may only be stricter)", t->block, own_block);
  if (!(t->allow >= 0 && t->allow <= own_allow && t->allow <= t->block))
    return oc_fail(err, "allow_threshold %g must be in [0, %g] (the classifier's; a caller may only be stricter) and at most block_threshold %g", t->allow,
                   own_allow, t->block);
  if (oc_config_check_positions(c, n, o->max_new_tokens, err)) return oc_wrap(err, "the prompt");
  return 0;
}

int oc_guard_check_opts(const oc_guard *g, int n_prompt, const oc_guard_opts *o, oc_error *err) {
  thresholds t = {0, 0, 0};
  return check_opts(g, n_prompt, o, &t, err);
}

int oc_guard_stream_new(const oc_guard *g, const int32_t *ids, int n, const char *cls_prompt, oc_session *s, const oc_guard_opts *o,
                        oc_guard_emit_fn emit, oc_guard_event_fn ev, void *ud, oc_guard_stream **out, oc_error *err) {
  *out = NULL;
  const oc_model_config *c = oc_model_cfg(g->m);
  const int V = c->vocab, probing = o->use_probe && g->probe;
  thresholds t = {0, 0, 0};
  if (check_opts(g, n, o, &t, err)) return -1;
  if (s && oc_session_len(s) != 0) return oc_fail(err, "a stream needs an empty session (reset it)");
  oc_guard_stream *st = calloc(1, sizeof *st);
  if (!st) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  st->g = g;
  st->o = *o;
  st->ev = ev;
  st->ud = ud;
  st->t_start = oc_now();
  st->use_cls = g->cls && !o->skip_classifier;
  st->probing = probing;
  st->N = probing ? g->cfg->probe_every_n_tokens : 1;
  st->rel = (releaser){emit, ud, 0};
  st->status = OC_GUARD_COMPLETED;
  st->need = OC_NEED_PREFILL;
  st->pause = t.pause;
  st->allow = t.allow;
  st->block = t.block;
  st->n_ids = n;
  st->res.risk = st->res.smoothed_risk = st->res.max_risk = st->res.classifier_score = NAN;
  st->res.final_classifier_check = o->final_classifier_check;
  st->res.stop_reason = OC_STOP_MAX_NEW_TOKENS;
  oc_rng_seed(&st->rng, o->seed);
  st->prompt = strdup(cls_prompt ? cls_prompt : "");
  st->ids = malloc(sizeof(int32_t) * (size_t)n);
  st->logits = malloc(sizeof(float) * (size_t)V);
  st->tap = malloc(sizeof(float) * (size_t)c->hidden * (size_t)g->n_layers); /* [n_layers][hidden]: what the probe reads */
  st->res.tokens = malloc(sizeof(int32_t) * (size_t)o->max_new_tokens);
  if (o->temperature > 0) st->cands = malloc(sizeof *st->cands * (size_t)V);
  if (!st->prompt || !st->ids || !st->logits || !st->tap || !st->res.tokens || (o->temperature > 0 && !st->cands)) {
    oc_guard_stream_free(st);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  if (probing && oc_risk_agg_init(&st->agg, g->cfg, err)) { oc_guard_stream_free(st); return oc_wrap(err, "the probe's aggregation"); }
  memcpy(st->ids, ids, sizeof(int32_t) * (size_t)n);
  if (o->n_stop && !(st->stop = calloc((size_t)o->n_stop, sizeof *st->stop))) { oc_guard_stream_free(st); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (; st->n_stop < o->n_stop; st->n_stop++)
    if (!(st->stop[st->n_stop] = strdup(o->stop[st->n_stop]))) { oc_guard_stream_free(st); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  st->o.stop = NULL; /* the copies are st->stop */
  st->o.n_stop = 0;
  st->s = s;
  if (!s) {
    st->own_session = 1;
    if (!(st->s = oc_session_new(g->m, n + o->max_new_tokens + 1, err))) { oc_guard_stream_free(st); return -1; }
  }
  *out = st;
  return 0;
}

int oc_guard_stream_finish(oc_guard_stream *st, oc_guard_result *res, oc_error *err) {
  memset(res, 0, sizeof *res);
  if (st->need != OC_NEED_NOTHING) return oc_fail(err, "the stream is not finished");
  if (!st->stopped) release(st, 1);
  oc_guard_result *r = &st->res;
  r->status = st->status;
  if (st->rel.released > st->dt.len) st->rel.released = st->dt.len; /* never: find_stop cuts after what was released */
  r->held_response_chars = st->dt.text ? (int)utf8_chars(st->dt.text + st->rel.released, st->dt.len - st->rel.released) : 0;
  free(r->response);
  if (st->status == OC_GUARD_BLOCKED && !st->o.observe) r->response = strdup(OC_REFUSAL);
  else r->response = strndup(st->dt.text ? st->dt.text : "", st->rel.released);
  if (!r->response) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  r->total_ms = 1e3 * (oc_now() - st->t_start);
  *res = *r;
  memset(r, 0, sizeof *r);
  return 0;
}

/* one stream driven to its end on its own session: the model runs one token at a time */
int oc_guard_generate(const oc_guard *g, const char *prompt, const oc_guard_opts *o, oc_guard_emit_fn emit, oc_guard_event_fn ev, void *ud,
                      oc_guard_result *res, oc_error *err) {
  memset(res, 0, sizeof *res);
  char *ptext = NULL;
  oc_encoding enc = {0};
  oc_guard_stream *st = NULL;
  float *logits = NULL, *tap = NULL;
  int rc = -1;
  if (oc_chat_format_exchange(g->chat, prompt, NULL, o->use_chat_template, &ptext, err) ||
      oc_chat_encode(g->chat, ptext, !o->use_chat_template, 0, &enc, err))
    goto done;
  if (oc_guard_stream_new(g, enc.ids, enc.n, prompt, NULL, o, emit, ev, ud, &st, err)) goto done;
  const oc_model_config *c = oc_model_cfg(g->m);
  logits = malloc(sizeof(float) * (size_t)c->vocab);
  tap = malloc(sizeof(float) * (size_t)c->hidden * (size_t)g->n_layers);
  if (!logits || !tap) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  oc_taps taps = {g->n_layers, g->layers, 1, (int[]){-1}, tap}; /* every layer the probe reads, in one forward step */
  for (oc_stream_need need; (need = oc_guard_stream_need(st)) != OC_NEED_NOTHING;) {
    if (cancelled(st, err)) goto done;
    if (need == OC_NEED_PREFILL) {
      if (oc_guard_stream_prefill(st, 0, err)) goto done;
    } else if (need == OC_NEED_FORWARD) {
      int32_t t = oc_guard_stream_token(st);
      if (oc_forward(st->s, &t, 1, st->probing ? &taps : NULL, logits, 0, err) ||
          oc_guard_stream_fed_layers(st, logits, tap, (size_t)c->hidden, err))
        goto done;
    } else if (oc_guard_stream_classify(st, err)) {
      goto done;
    }
  }
  rc = oc_guard_stream_finish(st, res, err);
done:
  oc_guard_stream_free(st);
  oc_encoding_free(&enc);
  free(ptext); free(logits); free(tap);
  return rc;
}
