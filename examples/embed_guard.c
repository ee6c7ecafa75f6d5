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

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s MODEL_DIR PROBE_DIR CLASSIFIER_DIR|- PROMPT\n", argv[0]);
    return 2;
  }
  fprintf(stderr, "libopencon %s (headers %s)\n", oc_version(), OPENCON_VERSION_STRING);
  oc_guard_spec spec;
  oc_guard_spec_defaults(&spec);
  spec.model_id = argv[1];
  char probe_path[4096];
  snprintf(probe_path, sizeof probe_path, "%s/probe.safetensors", argv[2]);
  if (!oc_file_exists(probe_path)) snprintf(probe_path, sizeof probe_path, "%s/probe.pt", argv[2]);
  spec.probe_path = probe_path; /* its config.json is read from beside it */
  spec.classifier_dir = strcmp(argv[3], "-") ? argv[3] : NULL;
  const char *prompt = argv[4];

  /* loads and checks everything, the cheap checks first: a probe trained on another model is
   * refused before the model loads */
  oc_error err = {0};
  oc_guard_bundle *bundle = NULL;
  if (oc_guard_open(&spec, &bundle, &err)) {
    fprintf(stderr, "error (%s): %s\n", oc_errcode_name(err.code), err.msg);
    return 1;
  }
  oc_guard_opts opts;
  oc_guard_bundle_opts(bundle, &opts); /* the chat template as the probe was trained */
  opts.max_new_tokens = 32;
  opts.final_classifier_check = spec.classifier_dir != NULL;
  oc_guard_result res;
  int rc = 1;
  if (oc_guard_generate(oc_guard_bundle_guard(bundle), prompt, &opts, on_text, on_event, NULL, &res, &err)) {
    fprintf(stderr, "error (%s): %s\n", oc_errcode_name(err.code), err.msg);
  } else {
    cJSON *j = oc_guard_result_json(&res);
    char *s = cJSON_PrintUnformatted(j);
    printf("\n%s\n", s ? s : "{}");
    free(s);
    cJSON_Delete(j);
    fprintf(stderr, "status %s, stop reason %s, %d tokens, %d probe calls\n", oc_guard_status_name(res.status), oc_stop_reason_name(res.stop_reason),
            res.n_tokens, res.probe_calls);
    oc_guard_result_free(&res);
    rc = 0;
  }
  oc_guard_close(bundle);
  return rc;
}
