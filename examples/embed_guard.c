/* Guard one prompt through libopencon's public API: load a model directory, a probe with its
 * config.json and (optionally) an exchange classifier, then generate with the guard and print the
 * released text as it is cleared, the guard's events, and the result.
 *
 *   cc embed_guard.c $(pkg-config --cflags --libs opencon) -o embed_guard
 *   ./embed_guard MODEL_DIR PROBE_DIR CLASSIFIER_DIR|- "prompt"
 *
 * PROBE_DIR holds probe.safetensors (or the MVP's probe.pt) and config.json, as train-probe writes
 * them; the config's model_id must be MODEL_DIR as given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opencon/guard.h>
#include <opencon/version.h>

static void on_text(void *ud, const char *text, size_t n) {
  (void)ud;
  fwrite(text, 1, n, stdout);
  fflush(stdout);
}

static void on_event(void *ud, const char *json) {
  (void)ud;
  fprintf(stderr, "guard event: %s\n", json);
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s MODEL_DIR PROBE_DIR CLASSIFIER_DIR|- PROMPT\n", argv[0]);
    return 2;
  }
  const char *model_dir = argv[1], *probe_dir = argv[2], *cls_dir = argv[3], *prompt = argv[4];
  fprintf(stderr, "libopencon %s (headers %s)\n", oc_version(), OPENCON_VERSION_STRING);
  oc_error err = {0};
  oc_model *model = NULL;
  oc_chat *chat = NULL;
  oc_probe probe = {0};
  oc_probe_config cfg = {0};
  oc_classifier *cls = NULL;
  oc_guard *guard = NULL;
  int rc = 1, have_probe = 0, have_cfg = 0;
  char *probe_path = join(probe_dir, "probe.safetensors"), *cfg_path = join(probe_dir, "config.json");
  if (probe_path && !oc_file_exists(probe_path)) { free(probe_path); probe_path = join(probe_dir, "probe.pt"); }
  if (!probe_path || !cfg_path) { fprintf(stderr, "out of memory\n"); goto done; }

  /* the cheap checks first: the probe must have been trained on this model */
  if (oc_probe_config_load(cfg_path, &cfg, &err)) goto fail;
  have_cfg = 1;
  if (oc_guard_check_probe(model_dir, cfg.model_id, &err) || oc_probe_load(probe_path, &probe, &err)) goto fail;
  have_probe = 1;
  if (strcmp(cls_dir, "-") != 0 && oc_classifier_load(cls_dir, &cls, &err)) goto fail;
  if (oc_model_load(model_dir, &model, &err) || oc_chat_load(model_dir, &chat, &err)) goto fail;
  if (oc_guard_new(model, chat, &probe, &cfg, cls, &guard, &err)) goto fail;

  oc_guard_opts opts;
  oc_guard_opts_defaults(&opts);
  opts.max_new_tokens = 32;
  opts.use_chat_template = cfg.use_chat_template;
  opts.final_classifier_check = cls != NULL;
  oc_guard_result res;
  if (oc_guard_generate(guard, prompt, &opts, on_text, on_event, NULL, &res, &err)) goto fail;
  cJSON *j = oc_guard_result_json(&res);
  char *s = cJSON_PrintUnformatted(j);
  printf("\n%s\n", s ? s : "{}");
  free(s);
  cJSON_Delete(j);
  fprintf(stderr, "status %s, stop reason %s, %d tokens, %d probe calls\n", oc_guard_status_name(res.status), oc_stop_reason_name(res.stop_reason),
          res.n_tokens, res.probe_calls);
  oc_guard_result_free(&res);
  rc = 0;
  goto done;
fail:
  fprintf(stderr, "error (%s): %s\n", oc_errcode_name(err.code), err.msg);
done:
  oc_guard_free(guard);
  oc_classifier_free(cls);
  if (have_probe) oc_probe_free(&probe);
  if (have_cfg) oc_probe_config_free(&cfg);
  oc_chat_free(chat);
  oc_model_free(model);
  free(probe_path);
  free(cfg_path);
  return rc;
}
