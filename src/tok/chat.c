#include "opencon/chat.h"

#include "opencon/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the special tokens of tokenizer_config.json that apply_chat_template passes to a template */
static const char *const SPECIAL_KEYS[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"};
enum { N_SPECIAL_KEYS = sizeof SPECIAL_KEYS / sizeof *SPECIAL_KEYS };

/* a special token's text: a string or {"content": string, ...} (transformers' AddedToken);
 * oc_chat_load has rejected any other shape */
static const char *special_value(const cJSON *cfg, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
  if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
  return cJSON_IsString(v) && *v->valuestring ? v->valuestring : NULL;
}

/* The special-token fields of a tokenizer_config.json or special_tokens_map.json (`path`): each
 * absent, null, a string or an object with a "content" string. Any other value (an object without
 * "content", a number) was once taken as no token at all, and a template then failed much later
 * with "'bos_token' is undefined". */
static int check_special_tokens(const cJSON *cfg, const char *path, oc_error *err) {
  for (int i = 0; i < N_SPECIAL_KEYS; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, SPECIAL_KEYS[i]);
    if (!v || cJSON_IsNull(v) || cJSON_IsString(v)) continue;
    const cJSON *content = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "content") : NULL;
    if (!cJSON_IsString(content))
      return oc_fail(err, "%s: \"%s\" must be a string or an object with a \"content\" string%s", path, SPECIAL_KEYS[i],
                     cJSON_IsObject(v) ? (content ? " (its \"content\" is not a string)" : " (the object has no \"content\")") : "");
  }
  return 0;
}

/* tokenizer_config.json's "chat_template": absent, null, a string, or a list of {"name": string,
 * "template": string} (the one named "default" is used); *src receives a malloc'd copy of the
 * template to use, or NULL */
static int config_template(const cJSON *cfg, const char *path, char **src, oc_error *err) {
  *src = NULL;
  const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
  if (!ct || cJSON_IsNull(ct)) return 0;
  if (cJSON_IsString(ct)) {
    if (!(*src = strdup(ct->valuestring))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    return 0;
  }
  if (!cJSON_IsArray(ct))
    return oc_fail(err, "%s: \"chat_template\" must be a string or a list of {\"name\", \"template\"} objects", path);
  int i = 0;
  for (const cJSON *x = ct->child; x; x = x->next, i++) {
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(x, "name"), *tp = cJSON_GetObjectItemCaseSensitive(x, "template");
    if (!cJSON_IsString(nm) || !cJSON_IsString(tp))
      return oc_fail(err, "%s: \"chat_template\"[%d] must be an object with \"name\" and \"template\" strings", path, i);
    if (!*src && !strcmp(nm->valuestring, "default") && !(*src = strdup(tp->valuestring)))
      return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  return 0;
}

/* chat_template.jinja: a NUL byte in it is an error (the template is parsed as a C string, so
 * everything after a NUL, the user's message included, would silently be lost) */
static int read_template_file(const char *path, char **src, oc_error *err) {
  size_t n;
  if (oc_read_file(path, src, &n, err)) return -1;
  const char *nul = memchr(*src, 0, n);
  if (!nul) return 0;
  oc_fail(err, "%s: the template contains a NUL byte (at byte %zu); a chat template is text", path, (size_t)(nul - *src));
  free(*src);
  *src = NULL;
  return -1;
}

int oc_chat_render(const oc_template *t, const cJSON *cfg, const cJSON *messages, int add_gen, const cJSON *options,
                   char **out, oc_error *err) {
  return oc_chat_render_opts(t, cfg, messages, add_gen, options, NULL, out, err);
}

int oc_chat_render_opts(const oc_template *t, const cJSON *cfg, const cJSON *messages, int add_gen, const cJSON *options,
                        const oc_template_opts *topts, char **out, oc_error *err) {
  cJSON *vars = cJSON_CreateObject();
  if (!vars) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  cJSON_AddItemToObject(vars, "messages", cJSON_Duplicate(messages, 1));
  cJSON_AddBoolToObject(vars, "add_generation_prompt", add_gen);
  const cJSON *tools = options ? cJSON_GetObjectItemCaseSensitive(options, "tools") : NULL;
  cJSON_AddItemToObject(vars, "tools", tools ? cJSON_Duplicate(tools, 1) : cJSON_CreateNull());
  cJSON_AddNullToObject(vars, "documents");
  for (int i = 0; i < N_SPECIAL_KEYS; i++) {
    const char *v = cfg ? special_value(cfg, SPECIAL_KEYS[i]) : NULL;
    if (v) cJSON_AddStringToObject(vars, SPECIAL_KEYS[i], v);
  }
  /* an option named like a variable above replaces it: the renderer takes the last of a name
   * given twice (deleting the earlier one here was quadratic in the number of options) */
  for (const cJSON *o = options ? options->child : NULL; o; o = o->next) {
    if (!strcmp(o->string, "tools")) continue;
    cJSON_AddItemToObject(vars, o->string, cJSON_Duplicate(o, 1));
  }
  size_t len;
  int rc = oc_template_render_opts(t, vars, topts, out, &len, err);
  cJSON_Delete(vars);
  /* the prompt goes on as a C string (to the tokenizer, the guard, the classifier): a NUL the
   * template wrote ('\x00') would cut it there, silently dropping what follows */
  const char *nul = rc ? NULL : memchr(*out, 0, len);
  if (nul) {
    oc_fail(err, "%s: the rendered prompt contains a NUL character (at byte %zu of %zu); a prompt is never passed on cut short",
            oc_template_name(t), (size_t)(nul - *out), len);
    free(*out);
    *out = NULL;
    return -1;
  }
  return rc;
}

void oc_chat_free(oc_chat *c) {
  if (!c) return;
  oc_tokenizer_free(c->tok);
  oc_template_free(c->tmpl);
  cJSON_Delete(c->config);
  free(c);
}

/* a JSON object file of the model directory into *out (an error unless it holds an object) */
static int read_object(const char *path, cJSON **out, oc_error *err) {
  *out = NULL;
  if (oc_json_parse_file(path, out, err)) return -1;
  if (cJSON_IsObject(*out)) return 0;
  cJSON_Delete(*out);
  *out = NULL;
  return oc_fail(err, "%s: malformed JSON: not an object", path);
}

/* tokenizer_config.json (+ special_tokens_map.json for the tokens it leaves out) into c->config,
 * and the template it holds (*src, NULL when none) */
static int load_config(oc_chat *c, const char *dir, char **src, oc_error *err) {
  char *p = oc_path_join(dir, "tokenizer_config.json");
  int rc = 0;
  int present = oc_file_present(p, err);
  if (present < 0) rc = -1;
  else if (present) rc = read_object(p, &c->config, err) || check_special_tokens(c->config, p, err) || config_template(c->config, p, src, err);
  else if (!(c->config = cJSON_CreateObject())) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  free(p);
  if (rc) return -1;
  p = oc_path_join(dir, "special_tokens_map.json");
  cJSON *m = NULL;
  if ((present = oc_file_present(p, err)) < 0) rc = -1;
  else if (present) rc = read_object(p, &m, err) || check_special_tokens(m, p, err);
  for (const cJSON *e = m ? m->child : NULL; e && !rc; e = e->next)
    if (!cJSON_GetObjectItemCaseSensitive(c->config, e->string)) cJSON_AddItemToObject(c->config, e->string, cJSON_Duplicate(e, 1));
  cJSON_Delete(m);
  free(p);
  return rc ? -1 : 0;
}

int oc_chat_load(const char *dir, oc_chat **out, oc_error *err) {
  *out = NULL;
  oc_chat *c = calloc(1, sizeof *c);
  if (!c) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  char *p = oc_path_join(dir, "tokenizer.json"), *src = NULL;
  int rc = oc_tokenizer_load_file(p, &c->tok, err);
  free(p);
  if (rc || load_config(c, dir, &src, err)) { free(src); oc_chat_free(c); return -1; }
  /* chat template: chat_template.jinja, else tokenizer_config.json's chat_template */
  p = oc_path_join(dir, "chat_template.jinja");
  int present = oc_file_present(p, err);
  if (present < 0) rc = -1;
  else if (present) {
    free(src);
    rc = read_template_file(p, &src, err);
  } else {
    free(p);
    p = oc_path_join(dir, "tokenizer_config.json");
  }
  if (!rc && src) rc = oc_template_parse(src, p, &c->tmpl, err);
  free(src);
  free(p);
  if (rc) { oc_chat_free(c); return -1; }
  *out = c;
  return 0;
}

int oc_chat_format_exchange(const oc_chat *c, const char *prompt, const char *response, int use_template, char **out,
                            oc_error *err) {
  *out = NULL;
  if (!use_template) {
    size_t n = strlen(prompt) + (response ? strlen(response) : 0) + 32;
    char *s = malloc(n);
    if (!s) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    snprintf(s, n, "User:\n%s\n\nAssistant:\n%s", prompt, response ? response : "");
    *out = s;
    return 0;
  }
  if (!c->tmpl) return oc_fail(err, "the model has no chat template (use --no_chat_template)");
  cJSON *msgs = cJSON_CreateArray(), *opts = cJSON_CreateObject();
  cJSON *u = cJSON_CreateObject();
  cJSON_AddStringToObject(u, "role", "user");
  cJSON_AddStringToObject(u, "content", prompt);
  cJSON_AddItemToArray(msgs, u);
  if (response) {
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "role", "assistant");
    cJSON_AddStringToObject(a, "content", response);
    cJSON_AddItemToArray(msgs, a);
  }
  /* Qwen3: the exchange format has thinking off */
  cJSON_AddFalseToObject(opts, "enable_thinking");
  int rc = oc_chat_render_opts(c->tmpl, c->config, msgs, response == NULL, opts, &c->render_opts, out, err);
  cJSON_Delete(msgs);
  cJSON_Delete(opts);
  return rc;
}

int oc_chat_encode(const oc_chat *c, const char *text, int add_special_tokens, int max_length, oc_encoding *out,
                   oc_error *err) {
  return oc_tokenizer_encode(c->tok, text, NULL, add_special_tokens, max_length, out, err);
}
