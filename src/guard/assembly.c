/* Guard assembly: the probe, its config, the exchange classifier, the model and its chat template
 * loaded, checked against each other and owned together (oc_guard_open), so a caller (the CLI, a
 * server) opens one bundle and runs many guarded generations on it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/guard.h"
#include "opencon/hub.h"

struct oc_guard_bundle {
  oc_model *m;
  oc_chat *chat;
  oc_probe probe;
  oc_probe_config pc;
  int have_probe;
  oc_classifier *cls;
  oc_guard *g;
};

void oc_guard_spec_defaults(oc_guard_spec *s) {
  memset(s, 0, sizeof *s);
  s->allow_threshold = NAN;
  s->block_threshold = NAN;
}

void oc_guard_close(oc_guard_bundle *b) {
  if (!b) return;
  oc_guard_free(b->g);
  oc_classifier_free(b->cls);
  if (b->have_probe) {
    oc_probe_free(&b->probe);
    oc_probe_config_free(&b->pc);
  }
  oc_chat_free(b->chat);
  oc_model_free(b->m);
  free(b);
}

char *oc_guard_spec_config_path(const oc_guard_spec *s) {
  if (s->config_path) return strdup(s->config_path);
  if (!s->probe_path) return NULL;
  const char *sl = strrchr(s->probe_path, '/');
  char *dir = sl ? strndup(s->probe_path, (size_t)(sl - s->probe_path)) : strdup(".");
  char *p = dir ? oc_path_join(dir, "config.json") : NULL;
  free(dir);
  return p;
}

/* the probe and its config; the config must belong to model_id and agree with the probe's width */
static int open_probe(const oc_guard_spec *s, oc_guard_bundle *b, oc_error *err) {
  char *cfg_path = oc_guard_spec_config_path(s);
  if (!cfg_path) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  int rc = oc_probe_config_load(cfg_path, &b->pc, err);
  free(cfg_path);
  if (rc) return -1;
  if (oc_guard_check_probe(s->model_id, b->pc.model_id, err) || oc_probe_load(s->probe_path, &b->probe, err)) {
    oc_probe_config_free(&b->pc);
    return -1;
  }
  b->have_probe = 1;
  const int *layers, nl = oc_probe_config_layers(&b->pc, &layers);
  if (b->pc.hidden_size && (int64_t)b->pc.hidden_size * nl != b->probe.hidden) {
    if (nl == 1) return oc_fail(err, "%s has %d features but its config says hidden_size %d", s->probe_path, b->probe.hidden, b->pc.hidden_size);
    return oc_fail(err, "%s has %d features but its config says %d layers of hidden_size %d", s->probe_path, b->probe.hidden, nl, b->pc.hidden_size);
  }
  return 0;
}

int oc_guard_open(const oc_guard_spec *s, oc_guard_bundle **out, oc_error *err) {
  *out = NULL;
  if (!s->model_id || !*s->model_id) return oc_fail(err, "the guard needs a model_id");
  if (s->config_path && !s->probe_path) return oc_fail(err, "a probe config (%s) was given without a probe", s->config_path);
  if (!s->classifier_dir && (!isnan(s->allow_threshold) || !isnan(s->block_threshold)))
    return oc_fail(err, "classifier thresholds were given without a classifier");
  oc_guard_bundle *b = calloc(1, sizeof *b);
  if (!b) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  char *dir = NULL;
  /* the cheap checks first: a wrong probe or threshold is refused before the model loads */
  if ((s->probe_path && open_probe(s, b, err)) || (s->classifier_dir && oc_classifier_open(s->classifier_dir, 0, s->allow_threshold, s->block_threshold, &b->cls, err))) goto fail;
  if (oc_resolve_model(s->model_id, NULL, &dir, err) || oc_model_load_ex(dir, &(oc_model_opts){s->weights}, &b->m, err) || oc_chat_load(dir, &b->chat, err))
    goto fail;
  b->chat->render_opts = s->template_opts;
  if (oc_guard_new(b->m, b->chat, b->have_probe ? &b->probe : NULL, b->have_probe ? &b->pc : NULL, b->cls, &b->g, err))
    goto fail;
  free(dir);
  *out = b;
  return 0;
fail:
  free(dir);
  oc_guard_close(b);
  return -1;
}

oc_guard *oc_guard_bundle_guard(const oc_guard_bundle *b) { return b->g; }
const oc_probe_config *oc_guard_bundle_probe_config(const oc_guard_bundle *b) { return b->have_probe ? &b->pc : NULL; }
const oc_classifier *oc_guard_bundle_classifier(const oc_guard_bundle *b) { return b->cls; }
const oc_model *oc_guard_bundle_model(const oc_guard_bundle *b) { return b->m; }
const oc_chat *oc_guard_bundle_chat(const oc_guard_bundle *b) { return b->chat; }

void oc_guard_bundle_opts(const oc_guard_bundle *b, oc_guard_opts *o) {
  oc_guard_opts_defaults(o);
  if (b->have_probe) o->use_chat_template = b->pc.use_chat_template;
  else o->use_probe = 0;
}
