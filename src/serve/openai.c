/* The OpenAI chat-completions and moderations formats: requests read into engine terms, results
 * written as the objects and SSE chunks the official SDKs parse. No HTTP here (server.c). */
#include "serve/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/version.h"

static int bad(oc_api_error *e, int status, const char *type, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int bad(oc_api_error *e, int status, const char *type, const char *code, const char *param, const char *fmt, ...) {
  e->status = status;
  e->type = type;
  e->code = code;
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
  return -1;
}
#define INVALID(e, param, ...) bad(e, 400, "invalid_request_error", NULL, param, __VA_ARGS__)

void oc_chat_request_free(oc_chat_request *r) {
  cJSON_Delete(r->messages);
  free(r->cls_prompt);
  for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
  memset(r, 0, sizeof *r);
}

/* a message's content: a string, or an array of {"type": "text", "text": ...} parts joined */
static char *content_text(const cJSON *c, int i, oc_api_error *e) {
  char param[64];
  snprintf(param, sizeof param, "messages[%d].content", i);
  if (cJSON_IsString(c)) {
    char *s = strdup(c->valuestring);
    if (!s) bad(e, 500, "server_error", NULL, NULL, "out of memory");
    return s;
  }
  if (!cJSON_IsArray(c)) { INVALID(e, param, "%s must be a string or an array of text parts", param); return NULL; }
  size_t len = 0;
  int k = 0;
  for (const cJSON *p = c->child; p; p = p->next, k++) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type"), *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
    if (!cJSON_IsObject(p) || !cJSON_IsString(ty)) { INVALID(e, param, "%s[%d] must be an object with a \"type\"", param, k); return NULL; }
    if (strcmp(ty->valuestring, "text") != 0) {
      INVALID(e, param, "%s[%d] is of type \"%s\": only text parts are supported", param, k, ty->valuestring);
      return NULL;
    }
    if (!cJSON_IsString(tx)) { INVALID(e, param, "%s[%d].text must be a string", param, k); return NULL; }
    len += strlen(tx->valuestring);
  }
  char *s = malloc(len + 1);
  if (!s) { bad(e, 500, "server_error", NULL, NULL, "out of memory"); return NULL; }
  s[0] = 0;
  size_t at = 0;
  for (const cJSON *p = c->child; p; p = p->next) {
    size_t n = strlen(cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring);
    memcpy(s + at, cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring, n);
    at += n;
  }
  s[at] = 0;
  return s;
}

/* append s to *buf (a growing string), separated by sep when not empty */
static int join(char **buf, size_t *len, const char *s, const char *sep) {
  size_t n = strlen(s), m = *len ? strlen(sep) : 0;
  char *t = realloc(*buf, *len + m + n + 1);
  if (!t) return -1;
  memcpy(t + *len, sep, m);
  memcpy(t + *len + m, s, n + 1);
  *buf = t;
  *len += m + n;
  return 0;
}

/* messages -> [{role, content: string}] (developer read as system) and the classifier's prompt */
static int read_messages(const cJSON *msgs, oc_chat_request *r, oc_api_error *e) {
  if (!cJSON_IsArray(msgs) || !msgs->child) return INVALID(e, "messages", "messages must be a non-empty array");
  if (cJSON_GetArraySize(msgs) > OC_API_MAX_MESSAGES) return INVALID(e, "messages", "at most %d messages", OC_API_MAX_MESSAGES);
  if (!(r->messages = cJSON_CreateArray())) return bad(e, 500, "server_error", NULL, NULL, "out of memory");
  size_t plen = 0;
  int i = 0, last_role = 0;
  for (const cJSON *m = msgs->child; m; m = m->next, i++) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d]", i);
    if (!cJSON_IsObject(m)) return INVALID(e, param, "%s must be an object", param);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role"), *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!cJSON_IsString(role)) return INVALID(e, param, "%s.role must be a string", param);
    const char *rl = role->valuestring;
    if (strcmp(rl, "developer") == 0) rl = "system";
    if (strcmp(rl, "system") && strcmp(rl, "user") && strcmp(rl, "assistant"))
      return INVALID(e, param, "%s.role \"%s\" is not supported (system, developer, user, assistant)", param, role->valuestring);
    if (cJSON_GetObjectItemCaseSensitive(m, "tool_calls") || cJSON_GetObjectItemCaseSensitive(m, "function_call"))
      return INVALID(e, param, "%s: tool calls are not supported", param);
    char *text = content_text(content, i, e);
    if (!text) return -1;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "role", rl) || !cJSON_AddStringToObject(o, "content", text)) {
      cJSON_Delete(o);
      free(text);
      return bad(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    cJSON_AddItemToArray(r->messages, o);
    /* the classifier reads the whole conversation as the prompt: earlier assistant turns too (a
     * client writes them, so a made-up "assistant" turn could carry what the user asks for) */
    if (join(&r->cls_prompt, &plen, text, "\n\n")) { free(text); return bad(e, 500, "server_error", NULL, NULL, "out of memory"); }
    last_role = strcmp(rl, "assistant") == 0;
    free(text);
  }
  if (last_role) return INVALID(e, "messages", "the last message must not be the assistant's (continuing an assistant turn is not supported)");
  if (!r->cls_prompt && !(r->cls_prompt = strdup(""))) return bad(e, 500, "server_error", NULL, NULL, "out of memory");
  return 0;
}

static int get_number(const cJSON *body, const char *key, double lo, double hi, double *out, oc_api_error *e) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) return INVALID(e, key, "%s must be a number in [%g, %g]", key, lo, hi);
  *out = v->valuedouble;
  return 0;
}

static int get_int(const cJSON *body, const char *key, double lo, double hi, int64_t *out, oc_api_error *e) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || !(v->valuedouble >= lo && v->valuedouble <= hi))
    return INVALID(e, key, "%s must be an integer in [%.0f, %.0f]", key, lo, hi);
  *out = (int64_t)v->valuedouble;
  return 0;
}

static int get_bool(const cJSON *obj, const char *key, const char *param, int *out, oc_api_error *e) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsBool(v)) return INVALID(e, param, "%s must be true or false", param);
  *out = cJSON_IsTrue(v);
  return 0;
}

/* fields that would change what a response means: refused rather than ignored */
static int refuse_unsupported(const cJSON *body, oc_api_error *e) {
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(body, "n");
  if (n && !cJSON_IsNull(n) && !(cJSON_IsNumber(n) && n->valuedouble == 1)) return INVALID(e, "n", "n must be 1: one choice per request is supported");
  static const char *never[] = {"tools", "functions", "tool_choice", "function_call", "audio", "prediction"};
  for (size_t i = 0; i < sizeof never / sizeof *never; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, never[i]);
    if (v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && !v->child)) return INVALID(e, never[i], "%s is not supported", never[i]);
  }
  const cJSON *rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
  if (rf && !cJSON_IsNull(rf)) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text") != 0)
      return INVALID(e, "response_format", "response_format is not supported (only {\"type\": \"text\"})");
  }
  const cJSON *lp = cJSON_GetObjectItemCaseSensitive(body, "logprobs"), *tlp = cJSON_GetObjectItemCaseSensitive(body, "top_logprobs");
  if ((lp && !cJSON_IsNull(lp) && !cJSON_IsFalse(lp)) || (tlp && !cJSON_IsNull(tlp)))
    return INVALID(e, "logprobs", "logprobs are not supported");
  static const char *zero[] = {"frequency_penalty", "presence_penalty"};
  for (size_t i = 0; i < 2; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, zero[i]);
    if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0)) return INVALID(e, zero[i], "%s is not supported (only 0)", zero[i]);
  }
  const cJSON *lb = cJSON_GetObjectItemCaseSensitive(body, "logit_bias");
  if (lb && !cJSON_IsNull(lb) && !(cJSON_IsObject(lb) && !lb->child)) return INVALID(e, "logit_bias", "logit_bias is not supported");
  return 0;
}

static int read_stop(const cJSON *body, oc_chat_request *r, oc_api_error *e) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(body, "stop");
  if (!s || cJSON_IsNull(s)) return 0;
  const cJSON *one = cJSON_IsString(s) ? s : NULL;
  if (!one && !cJSON_IsArray(s)) return INVALID(e, "stop", "stop must be a string or an array of strings");
  if (!one && cJSON_GetArraySize(s) > OC_GUARD_MAX_STOP) return INVALID(e, "stop", "at most %d stop strings", OC_GUARD_MAX_STOP);
  for (const cJSON *v = one ? one : s->child; v; v = one ? NULL : v->next) {
    if (!cJSON_IsString(v)) return INVALID(e, "stop", "stop must be a string or an array of strings");
    size_t n = strlen(v->valuestring);
    if (n < 1 || n > OC_GUARD_MAX_STOP_BYTES) return INVALID(e, "stop", "each stop string must be 1 to %d bytes long", OC_GUARD_MAX_STOP_BYTES);
    if (!(r->stop[r->n_stop] = strdup(v->valuestring))) return bad(e, 500, "server_error", NULL, NULL, "out of memory");
    r->n_stop++;
  }
  return 0;
}

/* the "guard" extension: events, observe mode, stricter thresholds */
static int read_guard(const cJSON *body, oc_chat_request *r, oc_api_error *e) {
  const cJSON *g = cJSON_GetObjectItemCaseSensitive(body, "guard");
  if (!g || cJSON_IsNull(g)) return 0;
  if (!cJSON_IsObject(g)) return INVALID(e, "guard", "guard must be an object");
  static const char *known[] = {"events", "mode", "pause_threshold", "classifier_allow_threshold", "classifier_block_threshold"};
  for (const cJSON *k = g->child; k; k = k->next) {
    size_t i = 0;
    while (i < sizeof known / sizeof *known && strcmp(k->string, known[i]) != 0) i++;
    if (i == sizeof known / sizeof *known) return INVALID(e, "guard", "guard.%s is not a guard setting (events, mode, pause_threshold, classifier_allow_threshold, classifier_block_threshold)", k->string);
  }
  if (get_bool(g, "events", "guard.events", &r->events, e)) return -1;
  const cJSON *mode = cJSON_GetObjectItemCaseSensitive(g, "mode");
  if (mode && !cJSON_IsNull(mode)) {
    if (!cJSON_IsString(mode) || (strcmp(mode->valuestring, "observe") && strcmp(mode->valuestring, "enforce")))
      return INVALID(e, "guard.mode", "guard.mode must be \"enforce\" or \"observe\"");
    r->observe = strcmp(mode->valuestring, "observe") == 0;
  }
  static const char *th[] = {"pause_threshold", "classifier_allow_threshold", "classifier_block_threshold"};
  double *dst[] = {&r->pause_threshold, &r->allow_threshold, &r->block_threshold};
  for (int i = 0; i < 3; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(g, th[i]);
    if (!v || cJSON_IsNull(v)) continue;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1)) return INVALID(e, th[i], "guard.%s must be a number in [0, 1]", th[i]);
    *dst[i] = v->valuedouble;
  }
  return 0;
}

int oc_chat_request_parse(const cJSON *body, oc_chat_request *r, oc_api_error *e) {
  memset(r, 0, sizeof *r);
  r->temperature = 1.0;
  r->top_p = 1.0;
  r->pause_threshold = r->allow_threshold = r->block_threshold = NAN;
  if (!cJSON_IsObject(body)) return INVALID(e, NULL, "the request body must be a JSON object");
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
  if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) return INVALID(e, "model", "model must be a string");
  if (refuse_unsupported(body, e) || read_messages(cJSON_GetObjectItemCaseSensitive(body, "messages"), r, e)) return -1;
  if (get_bool(body, "stream", "stream", &r->stream, e)) return -1;
  const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
  if (so && !cJSON_IsNull(so)) {
    if (!cJSON_IsObject(so)) return INVALID(e, "stream_options", "stream_options must be an object");
    if (!r->stream) return INVALID(e, "stream_options", "stream_options is only allowed with stream: true");
    if (get_bool(so, "include_usage", "stream_options.include_usage", &r->include_usage, e)) return -1;
  }
  int64_t mt = 0, mct = 0, seed = -1;
  if (get_int(body, "max_tokens", 1, OC_GUARD_MAX_NEW_TOKENS, &mt, e) || get_int(body, "max_completion_tokens", 1, OC_GUARD_MAX_NEW_TOKENS, &mct, e))
    return -1;
  r->max_tokens = (int)(mct ? mct : mt);
  if (get_number(body, "temperature", 0, 2, &r->temperature, e) || get_number(body, "top_p", 0, 1, &r->top_p, e)) return -1;
  if (!(r->top_p > 0)) return INVALID(e, "top_p", "top_p must be greater than 0");
  if (get_int(body, "seed", -9007199254740991.0, 9007199254740991.0, &seed, e)) return -1;
  const cJSON *sv = cJSON_GetObjectItemCaseSensitive(body, "seed");
  r->has_seed = sv && !cJSON_IsNull(sv);
  r->seed = (uint64_t)seed;
  if (read_stop(body, r, e) || read_guard(body, r, e)) return -1;
  return 0;
}

/* ---- responses ---- */
const char *oc_finish_reason(const oc_guard_result *res, int observe) {
  if (res->status != OC_GUARD_COMPLETED && !observe) return "content_filter";
  return res->stop_reason == OC_STOP_MAX_NEW_TOKENS ? "length" : "stop";
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

cJSON *oc_guard_summary_json(const oc_guard_result *res, int observe) {
  cJSON *g = cJSON_CreateObject();
  cJSON_AddStringToObject(g, "status", oc_guard_status_name(res->status));
  cJSON_AddStringToObject(g, "mode", observe ? "observe" : "enforce");
  cJSON_AddItemToObject(g, "risk", num_or_null(res->risk));
  cJSON_AddItemToObject(g, "smoothed_risk", num_or_null(res->smoothed_risk));
  cJSON_AddItemToObject(g, "max_risk", num_or_null(res->max_risk));
  cJSON_AddItemToObject(g, "classifier_score", num_or_null(res->classifier_score));
  if (res->classifier_calls > 0) cJSON_AddStringToObject(g, "classifier_verdict", oc_verdict_name(res->classifier_verdict));
  else cJSON_AddNullToObject(g, "classifier_verdict");
  cJSON_AddNumberToObject(g, "probe_calls", res->probe_calls);
  cJSON_AddNumberToObject(g, "classifier_calls", res->classifier_calls);
  cJSON_AddNumberToObject(g, "held_ms", res->classifier_ms);
  cJSON_AddStringToObject(g, "stop_reason", oc_stop_reason_name(res->stop_reason));
  return g;
}

cJSON *oc_usage_json(int prompt_tokens, int completion_tokens) {
  cJSON *u = cJSON_CreateObject();
  cJSON_AddNumberToObject(u, "prompt_tokens", prompt_tokens);
  cJSON_AddNumberToObject(u, "completion_tokens", completion_tokens);
  cJSON_AddNumberToObject(u, "total_tokens", prompt_tokens + completion_tokens);
  return u;
}

/* what a completion and its chunks start with: id, object, created, model, system_fingerprint */
static cJSON *completion_head(const oc_completion_ids *ids, const char *object) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", ids->id);
  cJSON_AddStringToObject(o, "object", object);
  cJSON_AddNumberToObject(o, "created", (double)ids->created);
  cJSON_AddStringToObject(o, "model", ids->model);
  cJSON_AddStringToObject(o, "system_fingerprint", "opencon-" OPENCON_VERSION_STRING);
  return o;
}

cJSON *oc_completion_json(const oc_completion_ids *ids, const oc_guard_result *res, int observe, int prompt_tokens) {
  const char *fr = oc_finish_reason(res, observe);
  cJSON *o = completion_head(ids, "chat.completion");
  cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
  cJSON_AddItemToArray(ch, c);
  cJSON_AddNumberToObject(c, "index", 0);
  cJSON *m = cJSON_AddObjectToObject(c, "message");
  cJSON_AddStringToObject(m, "role", "assistant");
  /* a guard stop: the refusal, never held text */
  cJSON_AddStringToObject(m, "content", strcmp(fr, "content_filter") == 0 ? OC_REFUSAL : res->response);
  cJSON_AddNullToObject(m, "refusal");
  cJSON_AddNullToObject(c, "logprobs");
  cJSON_AddStringToObject(c, "finish_reason", fr);
  cJSON_AddItemToObject(o, "usage", oc_usage_json(prompt_tokens, res->n_tokens));
  cJSON_AddItemToObject(o, "guard", oc_guard_summary_json(res, observe));
  return o;
}

cJSON *oc_chunk_json(const oc_completion_ids *ids, int include_usage) {
  cJSON *o = completion_head(ids, "chat.completion.chunk");
  cJSON_AddArrayToObject(o, "choices");
  if (include_usage) cJSON_AddNullToObject(o, "usage");
  return o;
}

cJSON *oc_chunk_choice(cJSON *chunk, const char *role, const char *content, const char *finish_reason) {
  cJSON *c = cJSON_CreateObject();
  cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), c);
  cJSON_AddNumberToObject(c, "index", 0);
  cJSON *d = cJSON_AddObjectToObject(c, "delta");
  if (role) cJSON_AddStringToObject(d, "role", role);
  if (content) cJSON_AddStringToObject(d, "content", content);
  cJSON_AddNullToObject(c, "logprobs");
  if (finish_reason) cJSON_AddStringToObject(c, "finish_reason", finish_reason);
  else cJSON_AddNullToObject(c, "finish_reason");
  return c;
}

/* ---- moderations ---- */
void oc_moderation_inputs_free(oc_moderation_inputs *in) {
  for (int i = 0; i < in->n; i++) { free(in->prompt[i]); free(in->response[i]); }
  free(in->prompt);
  free(in->response);
  memset(in, 0, sizeof *in);
}

int oc_moderation_parse(const cJSON *body, oc_moderation_inputs *in, oc_api_error *e) {
  memset(in, 0, sizeof *in);
  if (!cJSON_IsObject(body)) return INVALID(e, NULL, "the request body must be a JSON object");
  const cJSON *input = cJSON_GetObjectItemCaseSensitive(body, "input");
  if (!input) return INVALID(e, "input", "input is required");
  const cJSON *one = cJSON_IsString(input) || cJSON_IsObject(input) ? input : NULL;
  if (!one && (!cJSON_IsArray(input) || !input->child)) return INVALID(e, "input", "input must be a string, an array of strings, or {\"prompt\", \"response\"} objects");
  int n = one ? 1 : cJSON_GetArraySize(input);
  if (n > OC_API_MAX_MODERATION_INPUTS) return INVALID(e, "input", "at most %d inputs per request", OC_API_MAX_MODERATION_INPUTS);
  in->prompt = calloc((size_t)n, sizeof *in->prompt);
  in->response = calloc((size_t)n, sizeof *in->response);
  if (!in->prompt || !in->response) return bad(e, 500, "server_error", NULL, NULL, "out of memory");
  for (const cJSON *v = one ? one : input->child; v; v = one ? NULL : v->next) {
    char param[48];
    snprintf(param, sizeof param, "input[%d]", in->n);
    const char *p, *r = "";
    if (cJSON_IsString(v)) {
      p = v->valuestring;
    } else if (cJSON_IsObject(v)) {
      const cJSON *pp = cJSON_GetObjectItemCaseSensitive(v, "prompt"), *rr = cJSON_GetObjectItemCaseSensitive(v, "response");
      if (!cJSON_IsString(pp) || (rr && !cJSON_IsString(rr))) return INVALID(e, param, "%s must have a string \"prompt\" and optionally a string \"response\"", param);
      p = pp->valuestring;
      if (rr) r = rr->valuestring;
    } else {
      return INVALID(e, param, "%s must be a string or a {\"prompt\", \"response\"} object", param);
    }
    if (!(in->prompt[in->n] = strdup(p)) || !(in->response[in->n] = strdup(r))) { in->n++; return bad(e, 500, "server_error", NULL, NULL, "out of memory"); }
    in->n++;
  }
  return 0;
}

cJSON *oc_moderation_result_json(const oc_classifier *c, const oc_decision *d) {
  const oc_mbert_config *mc = oc_mbert_cfg(c->m);
  cJSON *r = cJSON_CreateObject();
  const int flagged = d->verdict == OC_VERDICT_BLOCK;
  cJSON_AddBoolToObject(r, "flagged", flagged);
  cJSON *cat = cJSON_AddObjectToObject(r, "categories"), *sc = cJSON_AddObjectToObject(r, "category_scores");
  for (int k = 0; k < d->n_labels; k++) {
    cJSON_AddBoolToObject(cat, mc->labels[k], k == c->unsafe_label && flagged);
    cJSON_AddItemToObject(sc, mc->labels[k], num_or_null(d->probs[k]));
  }
  cJSON *g = cJSON_AddObjectToObject(r, "guard");
  cJSON_AddStringToObject(g, "verdict", oc_verdict_name(d->verdict));
  cJSON_AddItemToObject(g, "score", num_or_null(d->score));
  cJSON_AddStringToObject(g, "unsafe_label", mc->labels[c->unsafe_label]);
  return r;
}
