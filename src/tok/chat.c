#include "opencon/chat.h"

#include "opencon/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *special_value(const cJSON *cfg, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
  if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
  return cJSON_IsString(v) && *v->valuestring ? v->valuestring : NULL;
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
  static const char *keys[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    const char *v = cfg ? special_value(cfg, keys[i]) : NULL;
    if (v) cJSON_AddStringToObject(vars, keys[i], v);
  }
  /* an option named like a variable above replaces it: the renderer takes the last of a name
   * given twice (deleting the earlier one here was quadratic in the number of options) */
  for (const cJSON *o = options ? options->child : NULL; o; o = o->next) {
    if (!strcmp(o->string, "tools")) continue;
    cJSON_AddItemToObject(vars, o->string, cJSON_Duplicate(o, 1));
  }
  int rc = oc_template_render_opts(t, vars, topts, out, NULL, err);
  cJSON_Delete(vars);
  return rc;
}

void oc_chat_free(oc_chat *c) {
  if (!c) return;
  oc_tokenizer_free(c->tok);
  oc_template_free(c->tmpl);
  cJSON_Delete(c->config);
  free(c);
}

int oc_chat_load(const char *dir, oc_chat **out, oc_error *err) {
  *out = NULL;
  oc_chat *c = calloc(1, sizeof *c);
  if (!c) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  char *p = oc_path_join(dir, "tokenizer.json");
  int rc = oc_tokenizer_load_file(p, &c->tok, err);
  free(p);
  if (rc) { oc_chat_free(c); return -1; }
  p = oc_path_join(dir, "tokenizer_config.json");
  if (oc_file_exists(p)) {
    int prc = oc_json_parse_file(p, &c->config, err);
    if (prc || !cJSON_IsObject(c->config)) { if (!prc) oc_fail(err, "%s: malformed JSON: not an object", p); free(p); oc_chat_free(c); return -1; }
  } else c->config = cJSON_CreateObject();
  free(p);
  /* special_tokens_map.json fills tokens tokenizer_config.json leaves out */
  p = oc_path_join(dir, "special_tokens_map.json");
  if (oc_file_exists(p)) {
    cJSON *m;
    if (oc_json_parse_file(p, &m, err)) { free(p); oc_chat_free(c); return -1; }
    for (const cJSON *e = m ? m->child : NULL; e; e = e->next)
      if (!cJSON_GetObjectItemCaseSensitive(c->config, e->string)) cJSON_AddItemToObject(c->config, e->string, cJSON_Duplicate(e, 1));
    cJSON_Delete(m);
  }
  free(p);
  /* chat template: chat_template.jinja, else tokenizer_config.json's chat_template */
  p = oc_path_join(dir, "chat_template.jinja");
  char *src = NULL;
  if (oc_file_exists(p)) {
    if (oc_read_file(p, &src, NULL, err)) { free(p); oc_chat_free(c); return -1; }
  } else {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(c->config, "chat_template");
    if (cJSON_IsString(ct)) src = strdup(ct->valuestring);
    else if (cJSON_IsArray(ct)) /* [{name, template}]: the "default" one */
      for (const cJSON *x = ct->child; x && !src; x = x->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(x, "name"), *tp = cJSON_GetObjectItemCaseSensitive(x, "template");
        if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default") && cJSON_IsString(tp)) src = strdup(tp->valuestring);
      }
  }
  if (src) {
    rc = oc_template_parse(src, p, &c->tmpl, err);
    free(src);
    if (rc) { free(p); oc_chat_free(c); return -1; }
  }
  free(p);
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
