/* Guarded generation with the MVP's semantics on a KV cache: the token chosen at step k is fed
 * once, and that same forward pass yields its hidden state for the probe (every N steps) and the
 * logits of step k+1. Text is held in a pending buffer until a probe reading clears it.
 * Fail closed: a probe or classifier score that is not a number is maximum risk and blocks. */
#include "opencon/guard.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct oc_guard {
  const oc_model *m;
  const oc_chat *chat;
  const oc_probe *probe;
  const oc_probe_config *cfg;
  const oc_classifier *cls;
  int layer;
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
  }
  return "blocked";
}

void oc_guard_opts_defaults(oc_guard_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_new_tokens = 80;
  o->use_chat_template = 1;
  o->use_probe = 1;
  o->top_p = 1.0;
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
  int layer = 0;
  if (probe) {
    if (!cfg) return oc_fail(err, "a probe needs its config (layer, thresholds)");
    if (oc_probe_config_check(cfg, "probe config", err) || oc_probe_check(probe, "probe", err)) return -1;
    if (probe->hidden != c->hidden) return oc_fail(err, "the probe reads %d features, the model's hidden size is %d", probe->hidden, c->hidden);
    /* a probe config that names its model family must name this one: a local directory named like
     * another model's Hub id cannot pass the model_id check with another architecture behind it */
    const char *fam = oc_family_name(c->family);
    if (cfg->model_family && cfg->model_family[0] && strncasecmp(cfg->model_family, fam, strlen(fam)) != 0)
      return oc_fail(err, "the probe was trained on a \"%s\" model; this model is \"%s\" (a probe reads one model's hidden states)", cfg->model_family, fam);
    if ((layer = oc_hidden_index(c, cfg->layer, err)) < 0) return oc_wrap(err, "probe layer");
  }
  oc_guard *g = calloc(1, sizeof *g);
  if (!g) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  g->m = m;
  g->chat = chat;
  g->probe = probe;
  g->cfg = cfg;
  g->cls = cls;
  g->layer = layer;
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

static int detok_put(detok *d, size_t at, const char *s, size_t n, oc_error *err) {
  if (at + n + 1 > d->cap) {
    size_t cap = d->cap ? d->cap : 256;
    while (cap < at + n + 1) cap *= 2;
    char *t = realloc(d->text, cap);
    if (!t) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    d->text = t;
    d->cap = cap;
  }
  memcpy(d->text + at, s, n);
  d->len = at + n;
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

static void release(releaser *r, const char *text, size_t n, int final) {
  size_t s = final ? n : oc_utf8_safe_prefix(text, n);
  if (s > r->released) {
    if (r->emit) r->emit(r->ud, text + r->released, s - r->released);
    r->released = s;
  }
}

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

/* ---- one generation ---- */
typedef struct {
  const oc_guard *g;
  const oc_guard_opts *o;
  const char *prompt;
  oc_guard_event_fn ev;
  void *ud;
  oc_guard_result *res;
  oc_mbert_ws *ws;        /* this generation's classifier workspace (made at its first call) when the caller gives none */
  int use_cls;
  double *risks;          /* the last W readings, a ring */
  int W, nrisk;
  int probed;             /* tokens covered by the last probe reading */
  detok dt;               /* the text generated so far */
  releaser rel;           /* what of it was released */
  oc_guard_status status;
  int stopped;
} run;

static int cancelled(const run *r, oc_error *err) {
  if (r->o->should_abort && r->o->should_abort(r->o->abort_ud))
    return oc_fail_code(err, OC_ERR_CANCELLED, "generation cancelled by the caller after %d tokens", r->res->n_tokens);
  return 0;
}

/* classify prompt + text; the verdict is a block when the score is not finite (oc_decide) */
static int classify(run *r, const char *name, int step, const char *text, oc_decision *d, oc_error *err) {
  if (cancelled(r, err)) return -1;
  oc_mbert_ws *ws = r->o->cls_ws;
  if (!ws && !(ws = r->ws) && !(ws = r->ws = oc_mbert_ws_new())) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  double t0 = oc_now();
  if (oc_classifier_score_ws(r->g->cls, ws, r->prompt, text, d, err)) return oc_wrap(err, "exchange classifier");
  oc_guard_result *res = r->res;
  res->classifier_ms += 1e3 * (oc_now() - t0);
  res->classifier_calls++;
  res->classifier_score = isfinite(d->score) ? d->score : NAN;
  res->classifier_verdict = d->verdict;
  if (!isfinite(d->score)) nonfinite_event(r->ev, r->ud, "classifier_score", step, res);
  cJSON *e = new_event(name, step);
  cJSON_AddStringToObject(e, "verdict", oc_verdict_name(d->verdict));
  cJSON_AddItemToObject(e, "score", isfinite(d->score) ? cJSON_CreateNumber(d->score) : cJSON_CreateNull());
  event(r->ev, r->ud, e);
  return 0;
}

/* stop the stream with a status and its reason */
static void stop(run *r, oc_guard_status status, oc_stop_reason why) {
  r->status = status;
  r->res->stop_reason = why;
  r->stopped = 1;
}

/* the stop of a verdict other than allow */
static void stop_on(run *r, const oc_decision *d) {
  stop(r, d->verdict == OC_VERDICT_BLOCK ? OC_GUARD_BLOCKED : OC_GUARD_UNCERTAIN,
       !isfinite(d->score) ? OC_STOP_NONFINITE : d->verdict == OC_VERDICT_BLOCK ? OC_STOP_BLOCKED : OC_STOP_UNCERTAIN);
}

/* A probe reading of the hidden state h of the newest token (step k): the MVP's smoothing and
 * decisions. Below the pause threshold the pending text is released (all of it when final);
 * at or above it the classifier decides, or the stream pauses. A logit that is not finite is
 * maximum risk: blocked without asking anyone (a -Inf logit would read as risk 0). */
static int probe_reading(run *r, int k, const float *h, int final, cJSON *tr, oc_error *err) {
  const oc_guard *g = r->g;
  oc_guard_result *res = r->res;
  const float logit = oc_probe_logit(g->probe, h);
  const double risk = oc_sigmoid(logit);
  res->probe_calls++;
  r->probed = res->n_tokens;
  if (tr && final) cJSON_AddBoolToObject(tr, "final_probe", 1);
  if (!isfinite(logit)) {
    nonfinite_event(r->ev, r->ud, "probe_risk", k, res);
    res->risk = res->smoothed_risk = 1.0;
    stop(r, OC_GUARD_BLOCKED, OC_STOP_NONFINITE);
    if (tr) cJSON_AddStringToObject(tr, "decision", "nonfinite");
    return 0;
  }
  r->risks[r->nrisk % r->W] = risk;
  r->nrisk++;
  int cnt = r->nrisk < r->W ? r->nrisk : r->W;
  double sm = 0;
  for (int i = 0; i < cnt; i++) sm += r->risks[i];
  sm /= cnt;
  res->risk = risk;
  res->smoothed_risk = sm;
  if (tr) { cJSON_AddNumberToObject(tr, "risk", risk); cJSON_AddNumberToObject(tr, "smoothed_risk", sm); }
  if (sm < g->cfg->pause_threshold) {
    release(&r->rel, r->dt.text, r->dt.len, final);
    if (tr) cJSON_AddStringToObject(tr, "decision", sm >= g->cfg->threshold ? "suspicious" : "release");
    if (sm >= g->cfg->threshold) risk_event(r->ev, r->ud, "suspicious", k, sm);
    return 0;
  }
  risk_event(r->ev, r->ud, "pause", k, sm);
  if (!r->use_cls) {
    stop(r, OC_GUARD_PAUSED, OC_STOP_PAUSED);
    if (tr) cJSON_AddStringToObject(tr, "decision", "paused");
    return 0;
  }
  oc_decision d;
  if (classify(r, "classifier", k, r->dt.text, &d, err)) return -1;
  if (tr) {
    cJSON_AddStringToObject(tr, "decision", oc_verdict_name(d.verdict));
    cJSON_AddItemToObject(tr, "classifier_score", isfinite(d.score) ? cJSON_CreateNumber(d.score) : cJSON_CreateNull());
  }
  if (d.verdict == OC_VERDICT_ALLOW) release(&r->rel, r->dt.text, r->dt.len, final);
  else stop_on(r, &d);
  return 0;
}

static void trace_line(const run *r, cJSON *tr) {
  if (!tr) return;
  cJSON_AddNumberToObject(tr, "released_bytes", (double)r->rel.released);
  char *line = cJSON_PrintUnformatted(tr);
  if (line) fprintf(r->o->trace, "%s\n", line);
  free(line);
  cJSON_Delete(tr);
}

int oc_guard_generate(const oc_guard *g, const char *prompt, const oc_guard_opts *o, oc_guard_emit_fn emit, oc_guard_event_fn ev, void *ud,
                      oc_guard_result *res, oc_error *err) {
  memset(res, 0, sizeof *res);
  res->risk = res->smoothed_risk = res->classifier_score = NAN;
  res->final_classifier_check = o->final_classifier_check;
  const double t_start = oc_now();
  const oc_model_config *c = oc_model_cfg(g->m);
  const int V = c->vocab, probing = o->use_probe && g->probe;
  const int N = probing ? g->cfg->probe_every_n_tokens : 1;
  if (o->max_new_tokens < 1 || o->max_new_tokens > OC_GUARD_MAX_NEW_TOKENS)
    return oc_fail(err, "max_new_tokens must be in [1, %d], got %d", OC_GUARD_MAX_NEW_TOKENS, o->max_new_tokens);
  /* fail closed: asking for the probe on a guard without one would otherwise release every token */
  if (o->use_probe && !g->probe) return oc_fail(err, "this guard has no probe: set use_probe to 0 for plain (unguarded) generation");
  if (!(o->temperature >= 0) || !(o->top_p > 0 && o->top_p <= 1) || o->top_k < 0)
    return oc_fail(err, "sampling settings out of range (temperature %g >= 0, top_p %g in (0, 1], top_k %d >= 0)", o->temperature, o->top_p, o->top_k);
  run r = {.g = g, .o = o, .prompt = prompt, .ev = ev, .ud = ud, .res = res, .use_cls = g->cls && !o->skip_classifier,
           .W = probing ? g->cfg->smoothing_window : 1, .rel = {emit, ud, 0}, .status = OC_GUARD_COMPLETED};
  char *ptext = NULL;
  oc_encoding enc = {0};
  oc_session *s = NULL;
  float *logits = malloc(sizeof(float) * (size_t)V), *tap = malloc(sizeof(float) * (size_t)c->hidden);
  cand *cands = NULL;
  r.risks = calloc((size_t)r.W, sizeof(double));
  res->tokens = malloc(sizeof(int32_t) * (size_t)o->max_new_tokens);
  int rc = -1, fed = 0; /* fed: tokens fed back to the model (the tap holds the last one's hidden state) */
  if (!logits || !tap || !r.risks || !res->tokens) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (o->temperature > 0 && !(cands = malloc(sizeof *cands * (size_t)V))) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (oc_chat_format_exchange(g->chat, prompt, NULL, o->use_chat_template, &ptext, err) ||
      oc_chat_encode(g->chat, ptext, !o->use_chat_template, 0, &enc, err))
    goto done;
  if (enc.n == 0) { oc_fail(err, "the prompt encodes to no tokens"); goto done; }
  if (oc_config_check_positions(c, enc.n, o->max_new_tokens, err)) { oc_wrap(err, "the prompt"); goto done; }
  if (cancelled(&r, err) || !(s = oc_session_new(g->m, enc.n + o->max_new_tokens + 1, err))) goto done;
  if (oc_forward(s, enc.ids, enc.n, NULL, logits, 0, err)) goto done;
  oc_rng rng;
  oc_rng_seed(&rng, o->seed);
  oc_taps taps = {1, &g->layer, 1, (int[]){-1}, tap};
  res->stop_reason = OC_STOP_MAX_NEW_TOKENS;
  for (int k = 1; k <= o->max_new_tokens && !r.stopped; k++) {
    if (cancelled(&r, err)) goto done;
    if (oc_find_nonfinite(logits, (size_t)V) < (size_t)V) { /* a broken forward: nothing it produced may be trusted */
      nonfinite_event(ev, ud, "logits", k, res);
      stop(&r, OC_GUARD_BLOCKED, OC_STOP_NONFINITE);
      break;
    }
    int32_t next = sample(logits, V, o, &rng, cands);
    if (k == 1) res->ttft_ms = 1e3 * (oc_now() - t_start);
    if (oc_is_eos(c, next) || next == g->eos_extra) { res->stop_reason = OC_STOP_EOS; break; }
    res->tokens[res->n_tokens++] = next;
    if (detok_step(&r.dt, g->chat->tok, res->tokens, res->n_tokens, err)) goto done;
    int do_probe = probing && k % N == 0;
    if (do_probe || k < o->max_new_tokens) { /* the last token is fed only when a reading needs it */
      if (oc_forward(s, &next, 1, probing ? &taps : NULL, logits, 0, err)) goto done;
      fed = k;
    }
    cJSON *tr = o->trace ? cJSON_CreateObject() : NULL;
    if (tr) { cJSON_AddNumberToObject(tr, "step", k); cJSON_AddNumberToObject(tr, "token", next); }
    if (do_probe && probe_reading(&r, k, tap, 0, tr, err)) { cJSON_Delete(tr); goto done; }
    if (!probing) release(&r.rel, r.dt.text, r.dt.len, 0); /* no probe: nothing holds the stream */
    trace_line(&r, tr);
  }
  /* Tokens after the last reading (a stream that ended between probe steps) are read once more
   * before anything of them is released: a short answer must not pass unprobed. */
  if (!r.stopped && probing && res->n_tokens > r.probed) {
    if (fed < res->n_tokens) {
      if (oc_forward(s, &res->tokens[res->n_tokens - 1], 1, &taps, logits, 0, err)) goto done;
      fed = res->n_tokens;
    }
    cJSON *tr = o->trace ? cJSON_CreateObject() : NULL;
    if (tr) { cJSON_AddNumberToObject(tr, "step", res->n_tokens); cJSON_AddNumberToObject(tr, "token", res->tokens[res->n_tokens - 1]); }
    if (probe_reading(&r, res->n_tokens, tap, 1, tr, err)) { cJSON_Delete(tr); goto done; }
    trace_line(&r, tr);
  }
  if (!r.stopped && r.use_cls && o->final_classifier_check) {
    oc_decision d;
    if (classify(&r, "final_check", 0, r.dt.text ? r.dt.text : "", &d, err)) goto done;
    if (d.verdict != OC_VERDICT_ALLOW) stop_on(&r, &d);
  }
  if (!r.stopped && r.dt.text) release(&r.rel, r.dt.text, r.dt.len, 1);
  res->status = r.status;
  res->held_response_chars = r.dt.text ? (int)utf8_chars(r.dt.text + r.rel.released, r.dt.len - r.rel.released) : 0;
  if (r.status == OC_GUARD_BLOCKED) res->response = strdup(OC_REFUSAL);
  else res->response = strndup(r.dt.text ? r.dt.text : "", r.rel.released);
  if (!res->response) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  res->total_ms = 1e3 * (oc_now() - t_start);
  rc = 0;
done:
  oc_session_free(s);
  oc_mbert_ws_free(r.ws);
  oc_encoding_free(&enc);
  free(ptext); free(r.dt.text); free(logits); free(tap); free(r.risks); free(cands);
  if (rc) { free(res->tokens); free(res->response); memset(res, 0, sizeof *res); }
  return rc;
}
