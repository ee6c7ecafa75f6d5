/* What the web console needs from the server (src/serve/console.c): the console's files, embedded
 * in the binary at build time (web/ -> cmake/embed_files.cmake -> a generated C array source), and
 * the guard settings it shows (GET /v1/guard/config). */
#ifndef OPENCON_SERVE_CONSOLE_H
#define OPENCON_SERVE_CONSOLE_H
#include <cjson/cJSON.h>
#include <stddef.h>

#include "opencon/serve.h"

typedef struct oc_web_file {
  const char *name;          /* "index.html", "console.js", ... (web/'s file names) */
  const char *type;          /* its Content-Type */
  const unsigned char *data; /* len bytes (and a NUL after them) */
  size_t len;
} oc_web_file;
extern const oc_web_file OC_WEB_FILES[]; /* generated */
extern const int OC_WEB_N_FILES;

/* The file a console URL names: "/" is index.html, "/console/NAME" the file NAME; NULL for any
 * other path (names are looked up in the table, never on a file system). */
const oc_web_file *oc_web_file_for_url(const char *url);

/* Response headers every console file is sent with: a content security policy that allows only
 * the server's own scripts, styles and API (no inline script, no other origin), no sniffing,
 * no referrer, no framing. NULL-terminated name, value pairs. */
extern const char *const OC_WEB_HEADERS[];

/* GET /v1/guard/config: {"object": "guard.config", "model", "api_key_required", "refusal",
 * "probe": null | {layer, hidden_state_index, probe_every_n_tokens, smoothing_window, threshold,
 * pause_threshold}, "classifier": null | {labels, unsafe_label, allow_threshold, block_threshold},
 * "final_classifier_check", "allow_observe", "ctx_size", "default_max_tokens"}. base: the
 * server's guard options (final_classifier_check as it runs). */
cJSON *oc_guard_config_json(const oc_serve_opts *o, const oc_guard_bundle *b, const oc_guard_opts *base, int api_key_required);

#endif
