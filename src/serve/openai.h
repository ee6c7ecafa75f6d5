/* OpenAI request and response formats (src/serve/openai.c): the server's parsing and writing,
 * apart from HTTP so tests and fuzzers can drive them. */
#ifndef OPENCON_SERVE_OPENAI_H
#define OPENCON_SERVE_OPENAI_H
#include <cjson/cJSON.h>
#include <stdint.h>

#include "opencon/classifier.h"
#include "opencon/guard.h"

#define OC_API_MAX_MESSAGES 4096
#define OC_API_MAX_MODERATION_INPUTS 256

/* An error as OpenAI's {"error": {"message", "type", "param", "code"}} with its HTTP status. */
typedef struct oc_api_error {
  int status;
  const char *type;  /* invalid_request_error, authentication_error, ... */
  const char *code;  /* NULL: null */
  char param[64];    /* "": null */
  char message[1200];
} oc_api_error;

typedef struct oc_chat_request {
  cJSON *messages;   /* [{role, content}] as the chat template reads them (developer -> system, parts joined) */
  char *cls_prompt;  /* the prompt the classifier reads: every message's content, joined by blank lines */
  int stream, include_usage;
  int max_tokens;    /* 0: not given */
  double temperature, top_p; /* OpenAI's defaults: 1, 1 */
  int has_seed;
  uint64_t seed;
  char *stop[OC_GUARD_MAX_STOP];
  int n_stop;
  int events, observe;
  double pause_threshold, allow_threshold, block_threshold; /* NaN: the server's */
} oc_chat_request;
/* Reads a chat-completions body; -1 with e filled (400s: wrong types, out-of-range values, fields
 * that would change the meaning: n > 1, tools, response_format other than text, logprobs,
 * penalties, logit_bias). Unknown fields are ignored, as OpenAI's SDKs may send new ones. */
int oc_chat_request_parse(const cJSON *body, oc_chat_request *r, oc_api_error *e);
void oc_chat_request_free(oc_chat_request *r);

typedef struct oc_completion_ids {
  char id[48];
  int64_t created;
  const char *model;
} oc_completion_ids;
/* "stop", "length", or "content_filter" for a guard stop (not in observe mode) */
const char *oc_finish_reason(const oc_guard_result *res, int observe);
/* the "guard" extension: status, mode, risk, smoothed_risk, max_risk, classifier_score,
 * classifier_verdict, probe_calls, classifier_calls, held_ms (time the classifier held the stream),
 * stop_reason */
cJSON *oc_guard_summary_json(const oc_guard_result *res, int observe);
cJSON *oc_usage_json(int prompt_tokens, int completion_tokens);
/* a chat.completion; a guard stop's content is the refusal */
cJSON *oc_completion_json(const oc_completion_ids *ids, const oc_guard_result *res, int observe, int prompt_tokens);
/* a chat.completion.chunk with no choices yet ("usage": null when include_usage) */
cJSON *oc_chunk_json(const oc_completion_ids *ids, int include_usage);
/* adds choice 0 with a delta (role and content when not NULL) and finish_reason (NULL: null) */
cJSON *oc_chunk_choice(cJSON *chunk, const char *role, const char *content, const char *finish_reason);

typedef struct oc_moderation_inputs {
  char **prompt, **response; /* response "" for a plain string input */
  int n;
} oc_moderation_inputs;
/* input: a string, an array of strings, or (opencon's extension) {"prompt", "response"} objects */
int oc_moderation_parse(const cJSON *body, oc_moderation_inputs *in, oc_api_error *e);
void oc_moderation_inputs_free(oc_moderation_inputs *in);
/* one result: flagged (verdict block), categories and category_scores by the classifier's labels */
cJSON *oc_moderation_result_json(const oc_classifier *c, const oc_decision *d);

#endif
