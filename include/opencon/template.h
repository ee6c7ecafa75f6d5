/* opencon — a Jinja2 interpreter for chat templates, rendering as transformers'
 * apply_chat_template does (Python jinja2 3.1 in an ImmutableSandboxedEnvironment with
 * trim_blocks, lstrip_blocks, the loopcontrols extension, and the globals raise_exception and
 * strftime_now). docs/architecture.md ("Chat templates") lists what matches jinja2 and what is
 * unsupported. */
#ifndef OPENCON_TEMPLATE_H
#define OPENCON_TEMPLATE_H
#include <cjson/cJSON.h>
#include <stdint.h>

#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hard limits. A template or a render that exceeds one fails with an error (code
 * OC_ERR_INVALID) naming the template line; real chat templates stay far below them (a
 * thousands-of-messages conversation renders to a few MB with a few million steps).
 *
 * Parsing: a template's source is at most this long (real ones are under 20 KB) ... */
#define OC_TEMPLATE_MAX_SOURCE ((size_t)4 << 20)
/* ... and its expressions (operators, filter chains, attribute and call chains, brackets) and
 * blocks nest at most this deep. */
#define OC_TEMPLATE_MAX_NESTING 256
/* Rendering: nested evaluation (expressions, blocks and macro calls together, like Python's
 * recursion limit), and the nesting of values that are printed, compared or serialized. */
#define OC_TEMPLATE_MAX_DEPTH 1000
/* Bytes of rendered text, and of any one string value. */
#define OC_TEMPLATE_MAX_OUTPUT ((size_t)32 << 20)
/* Items of one list or dict value. */
#define OC_TEMPLATE_MAX_ITEMS (1 << 20)
/* Items of one range(), as in Jinja's sandbox (jinja2.sandbox.MAX_RANGE). */
#define OC_TEMPLATE_MAX_RANGE 100000
/* Bytes one render may allocate for values and output buffers (and a parse for its syntax tree). */
#define OC_TEMPLATE_MAX_MEMORY ((size_t)512 << 20)
/* Work budget of one render: one step per evaluated expression or statement, one per 64 bytes
 * of strings and lists built or searched, one per item compared or copied, one per 4 names a
 * local-scope lookup passes (about a second of work in all). */
#define OC_TEMPLATE_MAX_STEPS 100000000LL

typedef struct oc_template oc_template;

/* Render options; all-zero (or NULL) gives transformers' behaviour. */
typedef struct oc_template_opts {
  /* nonzero: strftime_now() formats `now` instead of the current time (reproducible renders) */
  int pin_clock;
  int64_t now; /* seconds since the Unix epoch, shown in local time like Python's datetime.now() */
} oc_template_opts;

/* Parse with transformers' settings. Syntax errors and unsupported constructs name the line
 * and column. */
int oc_template_parse(const char *src, const char *name, oc_template **out, oc_error *err);
void oc_template_free(oc_template *t);
/* the name given to oc_template_parse (errors name it) */
const char *oc_template_name(const oc_template *t);
/* Render with the variables of a JSON object (messages, add_generation_prompt, bos_token, ...;
 * of a name given twice the last counts, as in Python's json). raise_exception(msg) in the
 * template becomes an error carrying msg. opts may be NULL. */
int oc_template_render_opts(const oc_template *t, const cJSON *vars, const oc_template_opts *opts, char **out,
                            size_t *out_len, oc_error *err);
/* oc_template_render_opts with opts NULL. */
int oc_template_render(const oc_template *t, const cJSON *vars, char **out, size_t *out_len, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
