/* opencon — a model directory's tokenizer + chat template, and exchange formatting. */
#ifndef OPENCON_CHAT_H
#define OPENCON_CHAT_H
#include <cjson/cJSON.h>

#include "opencon/template.h"
#include "opencon/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct oc_chat {
  oc_tokenizer *tok;
  oc_template *tmpl;     /* NULL when the directory has no chat template */
  cJSON *config;         /* tokenizer_config.json (or an empty object) */
  oc_template_opts render_opts; /* how oc_chat_format_exchange renders (zero: the current time) */
} oc_chat;

/* Load tokenizer.json, tokenizer_config.json (+ special_tokens_map.json) and the chat
 * template (chat_template.jinja, else tokenizer_config's "chat_template") of a directory. */
int oc_chat_load(const char *dir, oc_chat **out, oc_error *err);
void oc_chat_free(oc_chat *c);

/* Render a conversation (JSON array of {role, content}) with the model's template: the
 * variables transformers' apply_chat_template passes (special tokens of tokenizer_config,
 * tools from options, documents=None, the other options as extra variables). */
int oc_chat_render(const oc_template *t, const cJSON *tokenizer_config, const cJSON *messages, int add_generation_prompt,
                   const cJSON *options, char **out, oc_error *err);
/* oc_chat_render with render options (topts NULL: the current time for strftime_now) */
int oc_chat_render_opts(const oc_template *t, const cJSON *tokenizer_config, const cJSON *messages, int add_generation_prompt,
                        const cJSON *options, const oc_template_opts *topts, char **out, oc_error *err);

/* The MVP's exchange text: with the model template (response NULL -> generation prompt;
 * Qwen3 gets enable_thinking=false), or the plain "User:\n...\n\nAssistant:\n..." form. */
int oc_chat_format_exchange(const oc_chat *c, const char *prompt, const char *response, int use_template, char **out,
                            oc_error *err);

/* Encode as transformers does for a fast tokenizer: the tokenizer.json post-processor adds
 * special tokens when add_special_tokens is set. */
int oc_chat_encode(const oc_chat *c, const char *text, int add_special_tokens, int max_length, oc_encoding *out,
                   oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
