/* Guarded generation with the MVP's semantics on a KV cache: the token chosen at step k is fed
 * once, and that same forward pass yields its hidden state for the probe (every N steps) and the
 * logits of step k+1. Text is held in a pending buffer until a probe reading clears it. */
#include "opencon/guard.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct oc_guard {
  const oc_model *m;
  const oc_chat *chat;
  const oc_probe *probe;
  const oc_probe_config *cfg;
  oc_classifier *cls;
  int layer;
  int eos_extra; /* tokenizer's eos token id (end of turn), -1 if none */
};

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
  cJSON_AddStringToObject(o, "status", r->status);
  cJSON_AddStringToObject(o, "response", r->response ? r->response : "");
  cJSON_AddItemToObject(o, "risk", num(r->risk));
  cJSON_AddItemToObject(o, "smoothed_risk", num(r->smoothed_risk));
  cJSON_AddItemToObject(o, "classifier_score", num(r->classifier_score));
  if (r->classifier_verdict) cJSON_AddStringToObject(o, "classifier_verdict", r->classifier_verdict);
  else cJSON_AddNullToObject(o, "classifier_verdict");
  cJSON_AddNumberToObject(o, "held_response_chars", r->held_response_chars);
  cJSON_AddBoolToObject(o, "final_classifier_check", r->final_classifier_check);
  cJSON_AddNumberToObject(o, "generated_tokens", r->n_tokens);
  cJSON_AddNumberToObject(o, "probe_calls", r->probe_calls);
  cJSON_AddNumberToObject(o, "classifier_calls", r->classifier_calls);
  cJSON_AddStringToObject(o, "stop_reason", r->stop_reason ? r->stop_reason : "");
  cJSON_AddNumberToObject(o, "time_to_first_token_ms", r->ttft_ms);
  cJSON_AddNumberToObject(o, "total_ms", r->total_ms);
  return o;
}

int oc_guard_check_probe(const char *model_id, const char *config_model_id, oc_error *err) {
  if (config_model_id && model_id && strcmp(model_id, config_model_id) != 0)
    return oc_fail(err, "the probe was trained for model_id \"%s\", not \"%s\" (a probe reads one model's hidden states)", config_model_id, model_id);
  return 0;
}

int oc_guard_new(const oc_model *m, const oc_chat *chat, const oc_probe *probe, const oc_probe_config *cfg, oc_classifier *cls, oc_guard **out,
                 oc_error *err) {
  *out = NULL;
  const oc_model_config *c = oc_model_cfg(m);
  int layer = 0;
  if (probe) {
    if (!cfg) return oc_fail(err, "a probe needs its config (layer, thresholds)");
    if (probe->hidden != c->hidden) return oc_fail(err, "the probe reads %d features, the model's hidden size is %d", probe->hidden, c->hidden);
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

static const float *g_sort_p; /* qsort context (sampling is single-threaded) */
static int by_prob_desc(const void *a, const void *b) {
  float x = g_sort_p[*(const int *)a], y = g_sort_p[*(const int *)b];
  return (x < y) - (x > y);
}

/* greedy, or temperature sampling with optional top-k and top-p (nucleus) filtering */
static int sample(const float *logits, int V, const oc_guard_opts *o, oc_rng *r, float *p, int *idx) {
  if (!(o->temperature > 0)) return oc_argmax(logits, V);
  float mx = logits[oc_argmax(logits, V)];
  for (int i = 0; i < V; i++) { p[i] = expf((logits[i] - mx) / (float)o->temperature); idx[i] = i; }
  int keep = V;
  if (o->top_k > 0 && o->top_k < V) { /* partial selection of the k most likely, in order */
    keep = o->top_k;
    for (int i = 0; i < keep; i++) {
      int best = i;
      for (int j = i + 1; j < V; j++) if (p[idx[j]] > p[idx[best]]) best = j;
      int t = idx[i]; idx[i] = idx[best]; idx[best] = t;
    }
  } else if (o->top_p < 1.0) {
    g_sort_p = p;
    qsort(idx, (size_t)V, sizeof *idx, by_prob_desc);
  }
  if (o->top_p < 1.0) {
    double total = 0, acc = 0;
    for (int i = 0; i < keep; i++) total += p[idx[i]];
    for (int i = 0; i < keep; i++) { acc += p[idx[i]] / total; if (acc >= o->top_p) { keep = i + 1; break; } }
  }
  double total = 0;
  for (int i = 0; i < keep; i++) total += p[idx[i]];
  double u = oc_rng_uniform(r) * total, acc = 0;
  for (int i = 0; i < keep; i++) { acc += p[idx[i]]; if (u < acc) return idx[i]; }
  return idx[keep - 1];
}

static size_t utf8_chars(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
  return c;
}

/* Length of text that may be released: whole characters, and not a trailing U+FFFD (an incomplete
 * multi-byte character at the end decodes to U+FFFD until its next byte arrives). */
size_t oc_utf8_safe_prefix(const char *t, size_t n) {
  const unsigned char *u = (const unsigned char *)t;
  while (n >= 3 && u[n - 3] == 0xef && u[n - 2] == 0xbf && u[n - 1] == 0xbd) n -= 3;
  size_t i = n; /* start of the last character */
  while (i > 0 && (u[i - 1] & 0xc0) == 0x80 && n - i < 3) i--;
  if (i == 0) return 0; /* only continuation bytes */
  unsigned lead = u[i - 1];
  size_t need = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return n - (i - 1) < need ? i - 1 : n;
}

static size_t safe_len(const char *t, size_t n, int final) { return final ? n : oc_utf8_safe_prefix(t, n); }

typedef struct {
  oc_guard_emit_fn emit;
  void *ud;
  size_t released;
} releaser;

static void release(releaser *r, const char *text, size_t n, int final) {
  size_t s = safe_len(text, n, final);
  if (s > r->released) {
    if (r->emit) r->emit(r->ud, text + r->released, s - r->released);
    r->released = s;
  }
}

static void event(oc_guard_event_fn fn, void *ud, cJSON *e) {
  if (fn) {
    char *s = cJSON_PrintUnformatted(e);
    fn(ud, s);
    free(s);
  }
  cJSON_Delete(e);
}

/* a "pause" or "suspicious" event: the step and the smoothed risk that raised it */
static void risk_event(oc_guard_event_fn fn, void *ud, const char *name, int step, double smoothed) {
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "event", name);
  cJSON_AddNumberToObject(e, "step", step);
  cJSON_AddNumberToObject(e, "smoothed_risk", smoothed);
  event(fn, ud, e);
}

static int classify(oc_guard *g, const char *prompt, const char *text, oc_guard_result *res, oc_decision *d, oc_error *err) {
  double t0 = oc_now();
  if (oc_classifier_score(g->cls, prompt, text, d, err)) return oc_wrap(err, "exchange classifier");
  res->classifier_ms += 1e3 * (oc_now() - t0);
  res->classifier_calls++;
  res->classifier_score = d->score;
  res->classifier_verdict = d->verdict;
  return 0;
}

int oc_guard_generate(oc_guard *g, const char *prompt, const oc_guard_opts *o, oc_guard_emit_fn emit, oc_guard_event_fn ev, void *ud,
                      oc_guard_result *res, oc_error *err) {
  memset(res, 0, sizeof *res);
  res->risk = res->smoothed_risk = res->classifier_score = NAN;
  res->final_classifier_check = o->final_classifier_check;
  const double t_start = oc_now();
  const oc_model_config *c = oc_model_cfg(g->m);
  const int V = c->vocab, probing = o->use_probe && g->probe;
  const int use_cls = g->cls && !o->skip_classifier;
  const int N = probing ? g->cfg->probe_every_n_tokens : 1, W = probing ? g->cfg->smoothing_window : 1;
  if (o->max_new_tokens < 1) return oc_fail(err, "max_new_tokens must be >= 1");
  char *ptext = NULL, *text = NULL;
  oc_encoding enc = {0};
  oc_session *s = NULL;
  float *logits = malloc(sizeof(float) * (size_t)V), *tap = malloc(sizeof(float) * (size_t)c->hidden), *scratch = NULL;
  int *idx = NULL;
  double *risks = calloc((size_t)W, sizeof(double));
  res->tokens = malloc(sizeof(int32_t) * (size_t)o->max_new_tokens);
  int rc = -1, nrisk = 0;
  size_t tlen = 0;
  releaser rel = {emit, ud, 0};
  if (!logits || !tap || !risks || !res->tokens) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (o->temperature > 0 && (!(scratch = malloc(sizeof(float) * (size_t)V)) || !(idx = malloc(sizeof(int) * (size_t)V)))) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (oc_chat_format_exchange(g->chat, prompt, NULL, o->use_chat_template, &ptext, err) ||
      oc_chat_encode(g->chat, ptext, !o->use_chat_template, 0, &enc, err))
    goto done;
  if (enc.n == 0) { oc_fail(err, "the prompt encodes to no tokens"); goto done; }
  if (!(s = oc_session_new(g->m, enc.n + o->max_new_tokens + 1, err))) goto done;
  if (oc_forward(s, enc.ids, enc.n, NULL, logits, 0, err)) goto done;
  oc_rng rng;
  oc_rng_seed(&rng, o->seed);
  const char *status = NULL;
  res->stop_reason = "max_new_tokens";
  for (int k = 1; k <= o->max_new_tokens; k++) {
    int32_t next = sample(logits, V, o, &rng, scratch, idx);
    if (k == 1) res->ttft_ms = 1e3 * (oc_now() - t_start);
    if (oc_is_eos(c, next) || next == g->eos_extra) { res->stop_reason = "eos"; break; }
    res->tokens[res->n_tokens++] = next;
    free(text);
    text = NULL;
    if (oc_tokenizer_decode(g->chat->tok, res->tokens, res->n_tokens, 1, &text, &tlen, err)) goto done;
    int do_probe = probing && k % N == 0;
    if (do_probe || k < o->max_new_tokens) {
      oc_taps taps = {1, &g->layer, 1, (int[]){-1}, tap};
      if (oc_forward(s, &next, 1, do_probe ? &taps : NULL, logits, 0, err)) goto done;
    }
    cJSON *tr = o->trace ? cJSON_CreateObject() : NULL;
    if (tr) { cJSON_AddNumberToObject(tr, "step", k); cJSON_AddNumberToObject(tr, "token", next); }
    if (do_probe) {
      double risk = oc_sigmoid(oc_probe_logit(g->probe, tap));
      risks[nrisk % W] = risk;
      nrisk++;
      int cnt = nrisk < W ? nrisk : W;
      double sm = 0;
      for (int i = 0; i < cnt; i++) sm += risks[i];
      sm /= cnt;
      res->probe_calls++;
      res->risk = risk;
      res->smoothed_risk = sm;
      if (tr) { cJSON_AddNumberToObject(tr, "risk", risk); cJSON_AddNumberToObject(tr, "smoothed_risk", sm); }
      if (sm >= g->cfg->pause_threshold) {
        risk_event(ev, ud, "pause", k, sm);
        if (!use_cls) {
          status = "paused";
          res->stop_reason = "paused";
          if (tr) cJSON_AddStringToObject(tr, "decision", "paused");
        } else {
          oc_decision d;
          if (classify(g, prompt, text, res, &d, err)) { cJSON_Delete(tr); goto done; }
          cJSON *e = cJSON_CreateObject();
          cJSON_AddStringToObject(e, "event", "classifier");
          cJSON_AddNumberToObject(e, "step", k);
          cJSON_AddStringToObject(e, "verdict", d.verdict);
          cJSON_AddNumberToObject(e, "score", d.score);
          event(ev, ud, e);
          if (tr) { cJSON_AddStringToObject(tr, "decision", d.verdict); cJSON_AddNumberToObject(tr, "classifier_score", d.score); }
          if (strcmp(d.verdict, "allow") == 0) release(&rel, text, tlen, 0);
          else { status = strcmp(d.verdict, "block") == 0 ? "blocked" : "uncertain"; res->stop_reason = status; }
        }
      } else {
        release(&rel, text, tlen, 0);
        if (tr) cJSON_AddStringToObject(tr, "decision", sm >= g->cfg->threshold ? "suspicious" : "release");
        if (sm >= g->cfg->threshold) risk_event(ev, ud, "suspicious", k, sm);
      }
    } else if (!probing) {
      release(&rel, text, tlen, 0); /* no probe: nothing holds the stream */
    }
    if (tr) {
      cJSON_AddNumberToObject(tr, "released_bytes", (double)rel.released);
      char *line = cJSON_PrintUnformatted(tr);
      fprintf(o->trace, "%s\n", line);
      free(line);
      cJSON_Delete(tr);
    }
    if (status) break;
  }
  if (!status) {
    if (use_cls && o->final_classifier_check) {
      oc_decision d;
      if (classify(g, prompt, text ? text : "", res, &d, err)) goto done;
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "event", "final_check");
      cJSON_AddStringToObject(e, "verdict", d.verdict);
      cJSON_AddNumberToObject(e, "score", d.score);
      event(ev, ud, e);
      if (strcmp(d.verdict, "block") == 0) status = "blocked";
      else if (strcmp(d.verdict, "uncertain") == 0) status = "uncertain";
      if (status) res->stop_reason = status;
    }
    if (!status) {
      status = "completed";
      if (text) release(&rel, text, tlen, 1);
    }
  }
  res->status = status;
  res->held_response_chars = text ? (int)utf8_chars(text + rel.released, tlen - rel.released) : 0;
  if (strcmp(status, "blocked") == 0) res->response = strdup(OC_REFUSAL);
  else res->response = strndup(text ? text : "", rel.released);
  if (!res->response) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  res->total_ms = 1e3 * (oc_now() - t_start);
  rc = 0;
done:
  oc_session_free(s);
  oc_encoding_free(&enc);
  free(ptext); free(text); free(logits); free(tap); free(risks); free(scratch); free(idx);
  if (rc) { free(res->tokens); res->tokens = NULL; }
  return rc;
}
