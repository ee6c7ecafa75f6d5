/* Guarded generation on the tiny Gemma 4 with a tokenizer and the tiny ModernBERT classifier, with
 * probes and thresholds built to force each path: completed, paused, allow-then-continue, uncertain,
 * blocked mid-stream, blocked by the final check. Released text is exactly the cleared prefix, the
 * trace matches the decisions, and the KV-cached guarded run produces the unguarded tokens. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/guard.h"
#include "opencon/safetensors.h"

static oc_model *M;
static oc_chat *CH;
static oc_classifier *CLS;
static const char *PROMPT = "How do I bake bread at home?";
enum { MAXNEW = 16 };

typedef struct { char buf[8192]; size_t n; int calls; } sink;
static void emit(void *ud, const char *t, size_t n) {
  sink *s = ud;
  if (s->n + n < sizeof s->buf) { memcpy(s->buf + s->n, t, n); s->n += n; s->buf[s->n] = 0; }
  s->calls++;
}

/* unguarded greedy decode with the KV cache, the same prompt format; hidden state of layer `layer`
 * at each generated token (the probe's view) */
static int unguarded(int32_t *out, float *hs, int layer) {
  oc_error err;
  char *text;
  oc_encoding e;
  REQUIRE(oc_chat_format_exchange(CH, PROMPT, NULL, 1, &text, &err) == 0 && oc_chat_encode(CH, text, 0, 0, &e, &err) == 0, "%s", err.msg);
  free(text);
  const oc_model_config *c = oc_model_cfg(M);
  oc_session *s = oc_session_new(M, e.n + MAXNEW + 1, &err);
  float *logits = malloc(sizeof(float) * (size_t)c->vocab);
  REQUIRE(oc_forward(s, e.ids, e.n, NULL, logits, 0, &err) == 0, "%s", err.msg);
  int n = 0;
  for (; n < MAXNEW; n++) {
    int32_t t = oc_argmax(logits, c->vocab);
    if (oc_is_eos(c, t)) break;
    out[n] = t;
    int last = -1;
    oc_taps taps = {1, &layer, 1, &last, hs + (size_t)n * c->hidden};
    REQUIRE(oc_forward(s, &t, 1, &taps, logits, 0, &err) == 0, "%s", err.msg);
  }
  oc_session_free(s);
  oc_encoding_free(&e);
  free(logits);
  return n;
}

static char *decode(const int32_t *ids, int n) {
  char *t;
  size_t len;
  oc_error err;
  REQUIRE(oc_tokenizer_decode(CH->tok, ids, n, 1, &t, &len, &err) == 0, "%s", err.msg);
  return t;
}

static int run(const oc_probe *p, const oc_probe_config *pc, oc_classifier *cls, int final_check, sink *out, oc_guard_result *r, FILE *trace) {
  oc_guard *g;
  oc_error err;
  REQUIRE(oc_guard_new(M, CH, p, pc, cls, &g, &err) == 0, "%s", err.msg);
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = MAXNEW;
  o.final_classifier_check = final_check;
  o.trace = trace;
  memset(out, 0, sizeof *out);
  int rc = oc_guard_generate(g, PROMPT, &o, emit, NULL, out, r, &err);
  REQUIRE(rc == 0, "%s", err.msg);
  oc_guard_free(g);
  return rc;
}

/* A copy of the model directory whose layer-0 MLP down projection is all NaN: every hidden state
 * after layer 0 is NaN at run time (the probe's reading with it), while every file is valid. */
static void make_nan_model(const char *src, const char *dst) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/config.json %s/tokenizer.json %s/tokenizer_config.json %s/chat_template.jinja %s/", dst, src, src, src, src, dst);
  REQUIRE(system(cmd) == 0, "%s", cmd);
  oc_error err;
  oc_st_file *f;
  char in[1024], out[1024];
  snprintf(in, sizeof in, "%s/model.safetensors", src);
  snprintf(out, sizeof out, "%s/model.safetensors", dst);
  REQUIRE(oc_st_open(in, &f, &err) == 0, "%s", err.msg);
  oc_st_writer *w = oc_st_writer_new();
  uint16_t *nan = NULL;
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    const void *data = t->data;
    if (strcmp(t->name, "model.language_model.layers.0.mlp.down_proj.weight") == 0) {
      REQUIRE(t->dtype == OC_DT_BF16, "BF16 fixture");
      nan = malloc(t->nbytes);
      for (int64_t k = 0; k < t->numel; k++) nan[k] = 0x7fc0; /* BF16 quiet NaN */
      data = nan;
    }
    REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data, &err) == 0, "%s", err.msg);
  }
  REQUIRE(nan && oc_st_writer_write(w, out, &err) == 0, "%s", err.msg);
  oc_st_writer_free(w);
  oc_st_close(f);
  free(nan);
}

/* released text and events of one generation (emit and on_event share the user pointer; the sink
 * comes first so emit sees it) */
typedef struct { char buf[4096]; size_t n; } events;
typedef struct { sink out; events ev; } capture;
static void on_event(void *ud, const char *json) {
  events *e = &((capture *)ud)->ev;
  size_t k = strlen(json);
  if (e->n + k + 2 < sizeof e->buf) { memcpy(e->buf + e->n, json, k); e->n += k; e->buf[e->n++] = '\n'; e->buf[e->n] = 0; }
}

/* fail closed: a non-finite probe reading or classifier score blocks; nothing held is released */
static void test_nonfinite(const char *mdir, const oc_probe *quiet, const oc_probe *high, const oc_probe_config *pc) {
  oc_error err;
  char dir[] = "/tmp/oc_guard_nan_XXXXXX";
  REQUIRE(mkdtemp(dir), "mkdtemp");
  make_nan_model(mdir, dir);
  oc_model *nm;
  oc_chat *nc;
  REQUIRE(oc_model_load(dir, &nm, &err) == 0 && oc_chat_load(dir, &nc, &err) == 0, "%s", err.msg);
  oc_guard *g;
  REQUIRE(oc_guard_new(nm, nc, quiet, pc, NULL, &g, &err) == 0, "%s", err.msg);
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = MAXNEW;
  oc_guard_result r;
  capture cap;
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  /* a quiet probe (bias -10) on NaN activations: without the checks the risk was NaN, never >= pause;
   * the NaN logits of the prompt's forward block before the first token */
  CHECK(r.status == OC_GUARD_BLOCKED && r.stop_reason == OC_STOP_NONFINITE && r.nonfinite == 1 && r.n_tokens == 0 && strcmp(r.response, OC_REFUSAL) == 0 &&
            cap.out.n == 0 && strstr(cap.ev.buf, "\"event\":\"nonfinite\"") && strstr(cap.ev.buf, "\"what\":\"logits\""),
        "NaN activations: blocked before the first token, nothing released (%s, %s, events %s)", oc_guard_status_name(r.status),
        oc_stop_reason_name(r.stop_reason), cap.ev.buf);
  oc_guard_result r2;
  o.temperature = 1.0;
  o.top_k = 5;
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r2, &err) == 0, "%s", err.msg);
  CHECK(r2.status == OC_GUARD_BLOCKED && r2.stop_reason == OC_STOP_NONFINITE && cap.out.n == 0, "NaN logits block when sampling too (%s)",
        oc_stop_reason_name(r2.stop_reason));
  oc_guard_result_free(&r2);
  o.temperature = 0;
  o.top_k = 0;
  cJSON *j = oc_guard_result_json(&r);
  CHECK(strcmp(cJSON_GetObjectItem(j, "stop_reason")->valuestring, "nonfinite") == 0 && strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "blocked") == 0,
        "the result JSON says blocked / nonfinite");
  cJSON_Delete(j);
  oc_guard_result_free(&r);
  oc_guard_free(g);
  oc_chat_free(nc);
  oc_model_free(nm);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: cannot remove %s\n", dir);

  /* a classifier whose head overflows: logits +-Inf, softmax NaN, the verdict must be a block */
  int ci = -1;
  for (int i = 0; i < oc_mbert_n_params(CLS->m); i++)
    if (strcmp(oc_mbert_param_name(CLS->m, i), "classifier.weight") == 0) ci = i;
  int64_t numel;
  float *cw = oc_mbert_param(CLS->m, ci, &numel, NULL, NULL), *saved = malloc(sizeof(float) * (size_t)numel);
  memcpy(saved, cw, sizeof(float) * (size_t)numel);
  for (int64_t k = 0; k < numel; k++) cw[k] = (k % 2 ? -3e38f : 3e38f);
  REQUIRE(oc_classifier_set_thresholds(CLS, 0.999999, 1.0, &err) == 0, "%s", err.msg); /* any finite score would allow */
  REQUIRE(oc_guard_new(M, CH, high, pc, CLS, &g, &err) == 0, "%s", err.msg);
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  CHECK(r.status == OC_GUARD_BLOCKED && r.stop_reason == OC_STOP_NONFINITE && r.classifier_calls == 1 && r.classifier_verdict == OC_VERDICT_BLOCK &&
            isnan(r.classifier_score) && cap.out.n == 0 && strstr(cap.ev.buf, "classifier_score"),
        "a NaN classifier score blocks (%s, %s, events %s)", oc_guard_status_name(r.status), oc_stop_reason_name(r.stop_reason), cap.ev.buf);
  oc_guard_result_free(&r);
  oc_guard_free(g);
  memcpy(cw, saved, sizeof(float) * (size_t)numel);
  free(saved);

  /* NaN weights never reach a generation */
  oc_probe bad = *quiet;
  bad.w = malloc(sizeof(float) * (size_t)quiet->hidden);
  memcpy(bad.w, quiet->w, sizeof(float) * (size_t)quiet->hidden);
  bad.w[quiet->hidden / 2] = NAN;
  CHECK(oc_guard_new(M, CH, &bad, pc, NULL, &g, &err) != 0 && strstr(err.msg, "head.weight") && strstr(err.msg, "non-finite"), "a NaN probe weight is refused: %s",
        err.msg);
  bad.w[quiet->hidden / 2] = 0;
  bad.b = INFINITY;
  CHECK(oc_guard_new(M, CH, &bad, pc, NULL, &g, &err) != 0 && strstr(err.msg, "head.bias"), "an Inf probe bias is refused: %s", err.msg);
  free(bad.w);
}

/* infinite scores read as finite ones after a sigmoid or a softmax (risk 0, unsafe probability 0):
 * they must block too; and generations the guard cannot run as asked are refused up front */
static void test_infinite_and_contracts(const float *hs4, const oc_probe_config *pc, const char *cdir) {
  const int H = oc_model_cfg(M)->hidden;
  oc_error err;
  oc_guard *g;
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = MAXNEW;
  oc_guard_result r;
  capture cap;
  /* a probe whose logit overflows to -Inf at the step-4 token (each product -3e38 |h|): risk 0 before */
  float *w = malloc(sizeof(float) * (size_t)H);
  for (int j = 0; j < H; j++) w[j] = hs4[j] >= 0 ? -3e38f : 3e38f;
  oc_probe neg = {H, w, 0.0f};
  REQUIRE(oc_guard_new(M, CH, &neg, pc, NULL, &g, &err) == 0, "%s", err.msg);
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  CHECK(r.status == OC_GUARD_BLOCKED && r.stop_reason == OC_STOP_NONFINITE && r.probe_calls == 1 && cap.out.n == 0,
        "a -Inf probe logit blocks (%s, %s, released \"%s\")", oc_guard_status_name(r.status), oc_stop_reason_name(r.stop_reason), cap.out.buf);
  oc_guard_result_free(&r);
  oc_guard_free(g);
  free(w);
  /* a classifier whose unsafe logit is -Inf: probability 0 read as "allow" before */
  int bi = -1;
  for (int i = 0; i < oc_mbert_n_params(CLS->m); i++)
    if (strcmp(oc_mbert_param_name(CLS->m, i), "classifier.bias") == 0) bi = i;
  float *cb = oc_mbert_param(CLS->m, bi, NULL, NULL, NULL), saved = cb[CLS->unsafe_label];
  cb[CLS->unsafe_label] = -INFINITY;
  REQUIRE(oc_classifier_set_thresholds(CLS, 0.5, 0.9, &err) == 0, "%s", err.msg);
  float *wh = malloc(sizeof(float) * (size_t)H);
  for (int j = 0; j < H; j++) wh[j] = 0;
  oc_probe high = {H, wh, 10.0f};
  REQUIRE(oc_guard_new(M, CH, &high, pc, CLS, &g, &err) == 0, "%s", err.msg);
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  CHECK(r.status == OC_GUARD_BLOCKED && r.stop_reason == OC_STOP_NONFINITE && r.classifier_verdict == OC_VERDICT_BLOCK && cap.out.n == 0,
        "a -Inf unsafe logit blocks (%s, %s)", oc_guard_status_name(r.status), oc_stop_reason_name(r.stop_reason));
  oc_guard_result_free(&r);
  oc_guard_free(g);
  cb[CLS->unsafe_label] = saved;
  /* the probe asked for on a guard without one: an error, not an unguarded "completed" */
  REQUIRE(oc_guard_new(M, CH, NULL, NULL, NULL, &g, &err) == 0, "%s", err.msg);
  CHECK(oc_guard_generate(g, PROMPT, &o, emit, NULL, &cap, &r, &err) != 0 && strstr(err.msg, "no probe"), "use_probe without a probe: %s", err.msg);
  /* more tokens than the model has positions: refused before anything is generated */
  o.use_probe = 0;
  o.max_new_tokens = 5000;
  memset(&cap, 0, sizeof cap);
  CHECK(oc_guard_generate(g, PROMPT, &o, emit, NULL, &cap, &r, &err) != 0 && strstr(err.msg, "max_position_embeddings") && cap.out.n == 0,
        "past the model's positions: %s", err.msg);
  /* top_k above the partial-selection range takes the sorted path: k = 1000 >= V samples like top_k off */
  o.max_new_tokens = MAXNEW;
  o.temperature = 1.0;
  o.seed = 5;
  o.top_k = 1000;
  oc_guard_result r2;
  REQUIRE(oc_guard_generate(g, PROMPT, &o, NULL, NULL, NULL, &r, &err) == 0, "%s", err.msg);
  o.top_k = 0;
  REQUIRE(oc_guard_generate(g, PROMPT, &o, NULL, NULL, NULL, &r2, &err) == 0, "%s", err.msg);
  CHECK(r.n_tokens == r2.n_tokens && memcmp(r.tokens, r2.tokens, sizeof(int32_t) * (size_t)r.n_tokens) == 0, "top_k >= vocab is top_k off");
  oc_guard_result_free(&r);
  oc_guard_result_free(&r2);
  oc_guard_free(g);
  /* a guard without a chat, or with a classifier that has no tokenizer, is refused at once */
  CHECK(oc_guard_new(M, NULL, NULL, NULL, NULL, &g, &err) != 0 && strstr(err.msg, "chat"), "no chat: %s", err.msg);
  oc_classifier *ids_only;
  REQUIRE(oc_classifier_load_ids_only(cdir, &ids_only, &err) == 0, "%s", err.msg);
  CHECK(oc_guard_new(M, CH, &high, pc, ids_only, &g, &err) != 0 && strstr(err.msg, "tokenizer"), "ids-only classifier: %s", err.msg);
  oc_classifier_free(ids_only);
  free(wh);
}

/* tokens after the last probe step (a stream shorter than probe_every_n_tokens, or one that ends
 * between steps) are read once more before they are released: they never pass unprobed */
static void test_tail(const oc_probe *quiet, const oc_probe *high, const oc_probe_config *pc, const char *prefix3) {
  oc_guard *g;
  oc_error err;
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = 3; /* probe_every_n_tokens 4: no regular probe step */
  oc_guard_result r;
  capture cap;
  REQUIRE(oc_guard_new(M, CH, high, pc, NULL, &g, &err) == 0, "%s", err.msg);
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  CHECK(r.status == OC_GUARD_PAUSED && r.probe_calls == 1 && cap.out.n == 0 && r.held_response_chars > 0,
        "3 tokens, a pausing probe: read at the end, held (%s, %d probe calls, released \"%s\")", oc_guard_status_name(r.status), r.probe_calls, cap.out.buf);
  oc_guard_result_free(&r);
  oc_guard_free(g);
  REQUIRE(oc_guard_new(M, CH, quiet, pc, NULL, &g, &err) == 0, "%s", err.msg);
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  CHECK(r.status == OC_GUARD_COMPLETED && r.probe_calls == 1 && strcmp(cap.out.buf, prefix3) == 0 && strcmp(r.response, prefix3) == 0,
        "3 tokens, a quiet probe: read at the end, released (%s, %d probe calls)", oc_guard_status_name(r.status), r.probe_calls);
  oc_guard_result_free(&r);
  o.max_new_tokens = 6; /* one regular step (4), then tokens 5 and 6 read at the end */
  REQUIRE(oc_guard_generate(g, PROMPT, &o, NULL, NULL, NULL, &r, &err) == 0, "%s", err.msg);
  CHECK(r.status == OC_GUARD_COMPLETED && r.probe_calls == 2, "6 tokens: the step-4 reading and a final one (%d)", r.probe_calls);
  oc_guard_result_free(&r);
  o.max_new_tokens = 8; /* the last token is a probe step: no extra reading */
  REQUIRE(oc_guard_generate(g, PROMPT, &o, NULL, NULL, NULL, &r, &err) == 0, "%s", err.msg);
  CHECK(r.probe_calls == 2, "8 tokens: two readings (%d)", r.probe_calls);
  oc_guard_result_free(&r);
  oc_guard_free(g);
}

/* the abort callback stops a generation between tokens: OC_ERR_CANCELLED, nothing more is emitted */
/* the events of a generation, one JSON object per line, as an array */
static cJSON *event_list(const char *buf) {
  cJSON *a = cJSON_CreateArray();
  for (const char *l = buf; *l;) {
    const char *nl = strchr(l, '\n');
    REQUIRE(nl, "an event line without its newline");
    cJSON *e = cJSON_ParseWithLength(l, (size_t)(nl - l));
    REQUIRE(e, "an event that is not JSON: %.*s", (int)(nl - l), l);
    cJSON_AddItemToArray(a, e);
    l = nl + 1;
  }
  return a;
}

/* o's number under key; NaN when there is none */
static double number_of(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItem(o, key);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* event i is {"event": name, "step": step, ...} (and "decision": decision when given) */
static int event_is(const cJSON *evs, int i, const char *name, int step, const char *decision) {
  const cJSON *e = cJSON_GetArrayItem(evs, i), *n = cJSON_GetObjectItem(e, "event"), *st = cJSON_GetObjectItem(e, "step"),
              *d = cJSON_GetObjectItem(e, "decision");
  return cJSON_IsString(n) && strcmp(n->valuestring, name) == 0 && cJSON_IsNumber(st) && st->valueint == step &&
         (!decision || (cJSON_IsString(d) && strcmp(d->valuestring, decision) == 0));
}

/* A "probe" event at every reading (a client draws the risk per probe step from the events alone),
 * with the risks the trace records and what the guard made of the reading; the tail reading too. */
static void test_probe_events(const oc_probe *rises, const oc_probe *quiet, const oc_probe_config *pc) {
  oc_guard *g;
  oc_error err;
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = MAXNEW;
  oc_guard_result r;
  capture cap;
  FILE *tf = tmpfile();
  REQUIRE(tf, "tmpfile");
  o.trace = tf;
  REQUIRE(oc_guard_new(M, CH, rises, pc, NULL, &g, &err) == 0, "%s", err.msg);
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  cJSON *evs = event_list(cap.ev.buf);
  /* low at step 4 (released), high at step 8 (paused, no classifier) */
  CHECK(r.status == OC_GUARD_PAUSED && cJSON_GetArraySize(evs) == 3 && event_is(evs, 0, "probe", 4, "release") && event_is(evs, 1, "probe", 8, "pause") &&
            event_is(evs, 2, "pause", 8, NULL),
        "a probe event per reading, then the pause: %s", cap.ev.buf);
  rewind(tf);
  char line[4096];
  int readings = 0;
  while (fgets(line, sizeof line, tf)) {
    cJSON *t = cJSON_Parse(line);
    const cJSON *risk = cJSON_GetObjectItem(t, "risk");
    if (risk) {
      const cJSON *e = cJSON_GetArrayItem(evs, readings++);
      CHECK(number_of(e, "step") == number_of(t, "step") && number_of(e, "risk") == risk->valuedouble &&
                number_of(e, "smoothed_risk") == number_of(t, "smoothed_risk"),
            "probe event %d: the trace's risks (%s)", readings, line);
    }
    cJSON_Delete(t);
  }
  fclose(tf);
  CHECK(readings == 2 && r.probe_calls == 2, "two readings in the trace (%d), two probe calls (%d)", readings, r.probe_calls);
  cJSON_Delete(evs);
  oc_guard_result_free(&r);
  oc_guard_free(g);
  /* the tail reading (tokens 5 and 6 read at the end) has its event */
  o.trace = NULL;
  o.max_new_tokens = 6;
  REQUIRE(oc_guard_new(M, CH, quiet, pc, NULL, &g, &err) == 0, "%s", err.msg);
  memset(&cap, 0, sizeof cap);
  REQUIRE(oc_guard_generate(g, PROMPT, &o, emit, on_event, &cap, &r, &err) == 0, "%s", err.msg);
  evs = event_list(cap.ev.buf);
  CHECK(r.status == OC_GUARD_COMPLETED && r.probe_calls == 2 && cJSON_GetArraySize(evs) == 2 && event_is(evs, 0, "probe", 4, "release") &&
            event_is(evs, 1, "probe", 6, "release"),
        "6 tokens: probe events at 4 and at the tail reading 6: %s", cap.ev.buf);
  cJSON_Delete(evs);
  oc_guard_result_free(&r);
  oc_guard_free(g);
}

static int abort_after(void *ud) { return --*(int *)ud < 0; }
static void test_cancel(const char *full) {
  oc_guard *g;
  oc_error err;
  REQUIRE(oc_guard_new(M, CH, NULL, NULL, NULL, &g, &err) == 0, "%s", err.msg);
  oc_guard_opts o;
  oc_guard_opts_defaults(&o);
  o.max_new_tokens = MAXNEW;
  o.use_probe = 0;
  int budget = 5; /* the prefill check + 4 tokens */
  o.should_abort = abort_after;
  o.abort_ud = &budget;
  oc_guard_result r;
  sink out = {0};
  CHECK(oc_guard_generate(g, PROMPT, &o, emit, NULL, &out, &r, &err) != 0 && err.code == OC_ERR_CANCELLED && strstr(err.msg, "after 4 tokens") &&
            strncmp(out.buf, full, out.n) == 0 && r.tokens == NULL,
        "cancelled after 4 tokens: %s (released \"%s\")", err.msg, out.buf);
  oc_guard_free(g);
}

/* one guard, two threads generating at once (each call has its own KV cache and classifier
 * workspace): the same results as one after the other */
typedef struct { const oc_guard *g; oc_guard_opts o; oc_guard_result r; int rc; sink out; } job;
static void *gen_thread(void *p) {
  job *j = p;
  oc_error err;
  j->rc = oc_guard_generate(j->g, PROMPT, &j->o, emit, NULL, &j->out, &j->r, &err);
  return NULL;
}
static void test_threads(const oc_probe *high, const oc_probe_config *pc) {
  oc_guard *g;
  oc_error err;
  REQUIRE(oc_classifier_set_thresholds(CLS, 0.999999, 1.0, &err) == 0, "%s", err.msg);
  REQUIRE(oc_guard_new(M, CH, high, pc, CLS, &g, &err) == 0, "%s", err.msg);
  job jobs[3];
  memset(jobs, 0, sizeof jobs);
  oc_mbert_ws *ws = oc_mbert_ws_new(); /* a caller-owned workspace for one of the threads (a server's worker keeps one) */
  for (int i = 0; i < 3; i++) {
    jobs[i].g = g;
    oc_guard_opts_defaults(&jobs[i].o);
    jobs[i].o.max_new_tokens = MAXNEW;
    jobs[i].o.final_classifier_check = 1;
  }
  jobs[2].o.cls_ws = ws;
  gen_thread(&jobs[0]);
  pthread_t t[2];
  for (int i = 0; i < 2; i++) REQUIRE(pthread_create(&t[i], NULL, gen_thread, &jobs[1 + i]) == 0, "pthread_create");
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  for (int i = 1; i < 3; i++)
    CHECK(jobs[i].rc == 0 && jobs[i].r.n_tokens == jobs[0].r.n_tokens && memcmp(jobs[i].r.tokens, jobs[0].r.tokens, sizeof(int32_t) * (size_t)jobs[0].r.n_tokens) == 0 &&
              jobs[i].r.classifier_calls == jobs[0].r.classifier_calls && jobs[i].r.classifier_score == jobs[0].r.classifier_score &&
              strcmp(jobs[i].out.buf, jobs[0].out.buf) == 0,
          "concurrent generation %d equals the sequential one (%d classifier calls, score %g vs %g)", i, jobs[i].r.classifier_calls,
          jobs[i].r.classifier_score, jobs[0].r.classifier_score);
  for (int i = 0; i < 3; i++) oc_guard_result_free(&jobs[i].r);
  oc_mbert_ws_free(ws);
  oc_guard_free(g);
}

/* the result JSON: the last line of the output */
static const char *last_line(char *out) {
  size_t n = strlen(out);
  while (n > 0 && out[n - 1] == '\n') out[--n] = 0;
  char *nl = strrchr(out, '\n');
  return nl ? nl + 1 : out;
}

int main(int argc, char **argv) {
  REQUIRE(argc == 5, "usage: test_guard OPENCON MODEL_DIR CLASSIFIER_DIR TORCH_PROBE_PT");
  const char *cli = argv[1], *mdir = argv[2], *cdir = argv[3];
  oc_set_threads(2);
  oc_error err;
  REQUIRE(oc_model_load(mdir, &M, &err) == 0 && oc_chat_load(mdir, &CH, &err) == 0 && oc_classifier_load(cdir, &CLS, &err) == 0, "%s", err.msg);
  const int H = oc_model_cfg(M)->hidden;
  int32_t toks[MAXNEW];
  float *hs = malloc(sizeof(float) * MAXNEW * (size_t)H);
  int ntok = unguarded(toks, hs, -4);
  REQUIRE(ntok >= 8, "the tiny model must generate at least 8 tokens (got %d)", ntok);
  char *full = decode(toks, ntok), *prefix4 = decode(toks, 4);

  oc_probe_config pc;
  oc_probe_config_defaults(&pc); /* layer -4, threshold 0.65, pause 0.75, every 4 tokens */
  pc.smoothing_window = 1;
  float *w = calloc((size_t)H, sizeof(float));
  oc_probe low = {H, w, -10.0f}, high = {H, w, 10.0f};
  /* rises: low at the step-4 token, high at the step-8 token */
  float *w2 = malloc(sizeof(float) * (size_t)H);
  double d2 = 0, dot4 = 0;
  for (int j = 0; j < H; j++) { double d = hs[7 * H + j] - hs[3 * H + j]; d2 += d * d; }
  for (int j = 0; j < H; j++) { w2[j] = (float)(10.0 * (hs[7 * H + j] - hs[3 * H + j]) / d2); dot4 += w2[j] * hs[3 * H + j]; }
  oc_probe rises = {H, w2, (float)(-dot4 - 5.0)};
  oc_guard_result r;
  sink s;

  /* completed: a quiet probe, no classifier */
  run(&low, &pc, NULL, 0, &s, &r, NULL);
  int same = r.n_tokens == ntok && memcmp(r.tokens, toks, sizeof(int32_t) * (size_t)ntok) == 0;
  CHECK(r.status == OC_GUARD_COMPLETED && same && strcmp(r.response, full) == 0 && strcmp(s.buf, full) == 0 && r.held_response_chars == 0,
        "completed: same tokens as the unguarded run, all text released (%s, %d tokens)", oc_guard_status_name(r.status), r.n_tokens);
  CHECK(r.probe_calls == ntok / 4 && r.classifier_calls == 0 && r.smoothed_risk < 1e-3, "completed: probe calls %d", r.probe_calls);
  oc_guard_result_free(&r);

  /* paused at step 8: the step-4 text was released, the rest is held */
  run(&rises, &pc, NULL, 0, &s, &r, NULL);
  CHECK(r.status == OC_GUARD_PAUSED && r.n_tokens == 8 && r.probe_calls == 2 && strcmp(r.response, prefix4) == 0 && strcmp(s.buf, prefix4) == 0 &&
            r.held_response_chars > 0,
        "paused: released exactly the step-4 prefix (\"%s\" vs \"%s\"), risk %.3f", s.buf, prefix4, r.risk);
  oc_guard_result_free(&r);

  /* allow-then-continue: every probe step pauses, the classifier allows every time */
  REQUIRE(oc_classifier_set_thresholds(CLS, 0.999999, 1.0, &err) == 0, "%s", err.msg);
  run(&high, &pc, CLS, 0, &s, &r, NULL);
  CHECK(r.status == OC_GUARD_COMPLETED && r.classifier_calls == ntok / 4 && strcmp(r.response, full) == 0 && strcmp(s.buf, full) == 0 &&
            r.classifier_verdict == OC_VERDICT_ALLOW,
        "allow then continue: %s, %d classifier calls", oc_guard_status_name(r.status), r.classifier_calls);
  oc_guard_result_free(&r);

  /* uncertain at step 8: hold */
  REQUIRE(oc_classifier_set_thresholds(CLS, 0.0, 1.0, &err) == 0, "%s", err.msg);
  char tpath[] = "/tmp/oc_guard_trace_XXXXXX";
  int fd = mkstemp(tpath);
  FILE *tf = fdopen(fd, "w+");
  run(&rises, &pc, CLS, 0, &s, &r, tf);
  CHECK(r.status == OC_GUARD_UNCERTAIN && strcmp(r.response, prefix4) == 0 && strcmp(s.buf, prefix4) == 0 && r.held_response_chars > 0 &&
            r.classifier_calls == 1,
        "uncertain: holds everything after the step-4 prefix (%s)", oc_guard_status_name(r.status));
  /* the trace: one line per step, decisions at the probe steps */
  rewind(tf);
  char line[4096];
  int lines = 0, ok = 1;
  while (fgets(line, sizeof line, tf)) {
    cJSON *j = cJSON_Parse(line);
    lines++;
    const cJSON *st = cJSON_GetObjectItem(j, "step"), *dec = cJSON_GetObjectItem(j, "decision"), *tok = cJSON_GetObjectItem(j, "token");
    ok &= cJSON_IsNumber(st) && st->valueint == lines && cJSON_IsNumber(tok) && tok->valueint == toks[lines - 1];
    if (lines == 4) ok &= cJSON_IsString(dec) && strcmp(dec->valuestring, "release") == 0;
    else if (lines == 8) ok &= cJSON_IsString(dec) && strcmp(dec->valuestring, "uncertain") == 0 && cJSON_GetObjectItem(j, "classifier_score");
    else ok &= dec == NULL;
    cJSON_Delete(j);
  }
  fclose(tf);
  unlink(tpath);
  CHECK(ok && lines == 8, "trace: %d lines match the decisions", lines);
  oc_guard_result_free(&r);

  /* blocked mid-stream at step 8 */
  REQUIRE(oc_classifier_set_thresholds(CLS, 0.0, 1e-9, &err) == 0, "%s", err.msg);
  run(&rises, &pc, CLS, 0, &s, &r, NULL);
  CHECK(r.status == OC_GUARD_BLOCKED && strcmp(r.response, OC_REFUSAL) == 0 && strcmp(s.buf, prefix4) == 0 && r.n_tokens == 8,
        "blocked mid-stream: refusal, only the step-4 prefix was ever released");
  oc_guard_result_free(&r);

  /* blocked by the final check (the probe never pauses) */
  run(&low, &pc, CLS, 1, &s, &r, NULL);
  CHECK(r.status == OC_GUARD_BLOCKED && strcmp(r.response, OC_REFUSAL) == 0 && r.classifier_calls == 1 && r.final_classifier_check,
        "blocked by the final check");
  oc_guard_result_free(&r);
  /* skip_classifier with a pausing probe: paused */
  {
    oc_guard *g;
    REQUIRE(oc_guard_new(M, CH, &high, &pc, CLS, &g, &err) == 0, "%s", err.msg);
    oc_guard_opts o;
    oc_guard_opts_defaults(&o);
    o.max_new_tokens = MAXNEW;
    o.skip_classifier = 1;
    REQUIRE(oc_guard_generate(g, PROMPT, &o, NULL, NULL, NULL, &r, &err) == 0, "%s", err.msg);
    CHECK(r.status == OC_GUARD_PAUSED && r.classifier_calls == 0 && r.n_tokens == 4, "skip_classifier pauses");
    oc_guard_result_free(&r);
    oc_guard_free(g);
  }

  /* sampling: top_k 1 is greedy; a seed reproduces; top_p runs */
  {
    oc_guard *gs;
    REQUIRE(oc_guard_new(M, CH, &low, &pc, NULL, &gs, &err) == 0, "%s", err.msg);
    oc_guard_opts o;
    oc_guard_opts_defaults(&o);
    o.max_new_tokens = MAXNEW;
    o.temperature = 1.0;
    o.top_k = 1;
    REQUIRE(oc_guard_generate(gs, PROMPT, &o, NULL, NULL, NULL, &r, &err) == 0, "%s", err.msg);
    CHECK(r.n_tokens == ntok && memcmp(r.tokens, toks, sizeof(int32_t) * (size_t)ntok) == 0, "top_k 1 == greedy");
    oc_guard_result_free(&r);
    o.top_k = 0;
    o.top_p = 0.9;
    o.seed = 11;
    oc_guard_result r2;
    REQUIRE(oc_guard_generate(gs, PROMPT, &o, NULL, NULL, NULL, &r, &err) == 0 && oc_guard_generate(gs, PROMPT, &o, NULL, NULL, NULL, &r2, &err) == 0, "%s",
            err.msg);
    CHECK(r.n_tokens == r2.n_tokens && memcmp(r.tokens, r2.tokens, sizeof(int32_t) * (size_t)r.n_tokens) == 0, "the same seed samples the same tokens");
    oc_guard_result_free(&r);
    oc_guard_result_free(&r2);
    oc_guard_free(gs);
  }

  test_nonfinite(mdir, &low, &high, &pc);
  test_infinite_and_contracts(hs + 3 * (size_t)H, &pc, cdir);
  char *prefix3 = decode(toks, 3);
  test_tail(&low, &high, &pc, prefix3);
  test_probe_events(&rises, &low, &pc);
  free(prefix3);
  test_cancel(full);
  test_threads(&high, &pc);

  /* checks before any generation */
  oc_probe wrong = {H / 2, w, 0};
  oc_guard *g;
  CHECK(oc_guard_new(M, CH, &wrong, &pc, NULL, &g, &err) != 0 && strstr(err.msg, "hidden size"), "probe of another hidden size refused");
  CHECK(oc_guard_check_probe("org/a", "org/b", &err) != 0 && strstr(err.msg, "org/b"), "probe of another model refused");
  CHECK(oc_guard_check_probe("org/a", NULL, &err) != 0 && strstr(err.msg, "names no model_id"), "a config without model_id refused: %s", err.msg);
  char spelled[1100];
  snprintf(spelled, sizeof spelled, "%s/./", mdir);
  CHECK(oc_guard_check_probe(spelled, mdir, &err) == 0, "one directory spelled two ways is one model: %s", err.msg);
  CHECK(oc_guard_check_probe(cdir, mdir, &err) != 0, "another directory is another model");
  /* the family the probe config names must be this model's (a directory named like another model) */
  oc_probe_config fam = pc;
  fam.model_family = "llama";
  CHECK(oc_guard_new(M, CH, &low, &fam, NULL, &g, &err) != 0 && strstr(err.msg, "\"llama\" model") && strstr(err.msg, "gemma4"),
        "a probe trained on another family refused: %s", err.msg);
  fam.model_family = "gemma4_text";
  CHECK(oc_guard_new(M, CH, &low, &fam, NULL, &g, &err) == 0, "the family by model_type (gemma4_text) accepted: %s", err.msg);
  oc_guard_free(g);
  const char *u = "ab\xc3\xa9"; /* "abé" */
  CHECK(oc_utf8_safe_prefix(u, 4) == 4 && oc_utf8_safe_prefix(u, 3) == 2 && oc_utf8_safe_prefix("a\xe2\x82", 3) == 1 &&
            oc_utf8_safe_prefix("ab\xef\xbf\xbd", 5) == 2 && oc_utf8_safe_prefix("\xf0\x9f\x98\x80", 4) == 4,
        "UTF-8: whole characters only, no trailing replacement character");

  /* CLI: guarded-generate with the MVP's probe.pt (hidden 64) and a probe directory */
  char dir[] = "/tmp/oc_guard_cli_XXXXXX", cmd[4096], outb[1 << 15];
  REQUIRE(mkdtemp(dir), "mkdtemp");
  char pp[600], cp[600];
  snprintf(pp, sizeof pp, "%s/probe.safetensors", dir);
  REQUIRE(oc_probe_save(&low, pp, &err) == 0, "%s", err.msg);
  snprintf(cp, sizeof cp, "%s/config.json", dir);
  char cfg[1024];
  snprintf(cfg, sizeof cfg, "{\"model_id\": \"%s\", \"layer\": -4, \"hidden_size\": %d, \"threshold\": 0.65, \"pause_threshold\": 0.75, "
                            "\"probe_every_n_tokens\": 4, \"smoothing_window\": 4, \"use_chat_template\": true}", mdir, H);
  REQUIRE(oc_write_file_atomic(cp, cfg, strlen(cfg), &err) == 0, "%s", err.msg);
  snprintf(cmd, sizeof cmd, "%s guarded-generate --model_id %s --probe_path %s --classifier_dir %s --prompt '%s' --max_new_tokens %d --trace_path %s/t.jsonl --out_path %s/r.json 2>/dev/null",
           cli, mdir, pp, cdir, PROMPT, MAXNEW, dir, dir);
  int rc = run_capture(cmd, outb, sizeof outb);
  cJSON *j = cJSON_Parse(last_line(outb));
  CHECK(rc == 0 && j && strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "completed") == 0 && strncmp(outb, full, strlen(full)) == 0,
        "guarded-generate streams the text then the JSON: %s", outb);
  cJSON_Delete(j);
  /* the MVP's probe.pt (written by torch.save; hidden 64 like the tiny model) with a config beside the probe */
  snprintf(cmd, sizeof cmd, "%s guarded-generate --model_id %s --probe_path %s --config_path %s --prompt '%s' --max_new_tokens 8 --no_chat_template 2>/dev/null",
           cli, mdir, argv[4], cp, PROMPT);
  rc = run_capture(cmd, outb, sizeof outb);
  j = cJSON_Parse(last_line(outb));
  CHECK(rc == 0 && j && cJSON_GetObjectItem(j, "status") && cJSON_GetObjectItem(j, "probe_calls")->valueint == 2, "guarded-generate with a torch.save probe.pt: %s", outb);
  cJSON_Delete(j);
  snprintf(cmd, sizeof cmd, "%s guarded-generate --model_id other/model --probe_path %s --prompt hi 2>&1", cli, pp);
  rc = run_capture(cmd, outb, sizeof outb);
  CHECK(rc != 0 && strstr(outb, "trained for model_id"), "a probe of another model is refused before loading: %s", outb);
  snprintf(cmd, sizeof cmd, "%s guarded-generate --model_id %s --probe_path %s --config_path %s --classifier_dir %s --classifier_allow_threshold 0.9 "
                            "--classifier_block_threshold 0.5 --prompt hi 2>&1", cli, mdir, pp, cp, cdir);
  rc = run_capture(cmd, outb, sizeof outb);
  CHECK(rc != 0 && strstr(outb, "allow < block"), "unordered thresholds refused: %s", outb);
  snprintf(cmd, sizeof cmd, "%s benchmark-latency --model_id %s --probe_path %s --classifier_dir %s --prompt a --prompt b --max_new_tokens 8 2>/dev/null",
           cli, mdir, pp, cdir);
  rc = run_capture(cmd, outb, sizeof outb);
  j = cJSON_Parse(outb);
  const cJSON *ov = cJSON_GetObjectItem(j, "overall");
  CHECK(rc == 0 && ov && cJSON_GetObjectItem(cJSON_GetObjectItem(ov, "full_guard"), "ms") && cJSON_GetArraySize(cJSON_GetObjectItem(j, "prompts")) == 2 &&
            cJSON_GetObjectItem(cJSON_GetObjectItem(ov, "baseline"), "probe_calls")->valueint == 0 &&
            cJSON_GetObjectItem(cJSON_GetObjectItem(ov, "probe_only"), "probe_calls")->valueint > 0,
        "benchmark-latency report");
  cJSON_Delete(j);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: cannot remove %s\n", dir);

  free(full); free(prefix4); free(w); free(w2); free(hs);
  oc_classifier_free(CLS);
  oc_chat_free(CH);
  oc_model_free(M);
  return check_summary("test_guard");
}
