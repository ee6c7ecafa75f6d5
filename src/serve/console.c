/* The web console's side of the server: its embedded files by URL and the guard settings it reads
 * (GET /v1/guard/config). The files themselves are web/, compiled in by cmake/embed_files.cmake. */
#include "serve/console.h"

#include <math.h>
#include <string.h>

#include "opencon/modernbert.h"

const char *const OC_WEB_HEADERS[] = {
    "Content-Security-Policy",
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options", "nosniff",
    "Referrer-Policy", "no-referrer",
    "Cache-Control", "no-cache",
    NULL};

const oc_web_file *oc_web_file_for_url(const char *url) {
  const char *name = strcmp(url, "/") == 0 ? "index.html" : strncmp(url, "/console/", 9) == 0 ? url + 9 : NULL;
  if (!name) return NULL;
  for (int i = 0; i < OC_WEB_N_FILES; i++)
    if (strcmp(OC_WEB_FILES[i].name, name) == 0) return &OC_WEB_FILES[i];
  return NULL;
}

static cJSON *num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

cJSON *oc_guard_config_json(const oc_serve_opts *o, const oc_guard_bundle *b, const oc_guard_opts *base, int api_key_required) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "object", "guard.config");
  cJSON_AddStringToObject(j, "model", o->model_name ? o->model_name : o->spec.model_id);
  cJSON_AddBoolToObject(j, "api_key_required", api_key_required);
  cJSON_AddStringToObject(j, "refusal", OC_REFUSAL);
  const oc_probe_config *pc = oc_guard_bundle_probe_config(b);
  if (pc) {
    cJSON *p = cJSON_AddObjectToObject(j, "probe");
    cJSON_AddNumberToObject(p, "layer", pc->layer);
    cJSON_AddNumberToObject(p, "hidden_state_index", oc_guard_probe_layer(oc_guard_bundle_guard(b)));
    cJSON_AddNumberToObject(p, "probe_every_n_tokens", pc->probe_every_n_tokens);
    cJSON_AddNumberToObject(p, "smoothing_window", pc->smoothing_window);
    cJSON_AddItemToObject(p, "threshold", num(pc->threshold));
    cJSON_AddItemToObject(p, "pause_threshold", num(pc->pause_threshold));
  } else {
    cJSON_AddNullToObject(j, "probe");
  }
  const oc_classifier *cls = oc_guard_bundle_classifier(b);
  if (cls) {
    const oc_mbert_config *mc = oc_mbert_cfg(cls->m);
    cJSON *c = cJSON_AddObjectToObject(j, "classifier"), *labels = cJSON_AddArrayToObject(c, "labels");
    for (int k = 0; k < mc->n_labels; k++) cJSON_AddItemToArray(labels, cJSON_CreateString(mc->labels[k]));
    cJSON_AddStringToObject(c, "unsafe_label", mc->labels[cls->unsafe_label]);
    cJSON_AddItemToObject(c, "allow_threshold", num(cls->allow_threshold));
    cJSON_AddItemToObject(c, "block_threshold", num(cls->block_threshold));
  } else {
    cJSON_AddNullToObject(j, "classifier");
  }
  cJSON_AddBoolToObject(j, "final_classifier_check", base->final_classifier_check);
  cJSON_AddBoolToObject(j, "allow_observe", o->allow_observe);
  cJSON_AddNumberToObject(j, "ctx_size", o->engine.ctx_size);
  cJSON_AddNumberToObject(j, "default_max_tokens", o->default_max_tokens);
  return j;
}
