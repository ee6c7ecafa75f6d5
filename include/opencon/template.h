/* opencon — a Jinja2 interpreter for chat templates (the subset real templates use). */
#ifndef OPENCON_TEMPLATE_H
#define OPENCON_TEMPLATE_H
#include <cjson/cJSON.h>

#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct oc_template oc_template;

/* Parse with transformers' settings (trim_blocks, lstrip_blocks, loop controls). Syntax
 * errors and unsupported constructs name the line and column. */
int oc_template_parse(const char *src, const char *name, oc_template **out, oc_error *err);
void oc_template_free(oc_template *t);
/* Render with the variables of a JSON object (messages, add_generation_prompt, bos_token, ...).
 * raise_exception(msg) in the template becomes an error carrying msg. */
int oc_template_render(const oc_template *t, const cJSON *vars, char **out, size_t *out_len, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
