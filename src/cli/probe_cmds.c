/* collect-activations, train-probe, sweep-layers: the MVP's commands and flags on libopencon. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opencon/probe.h"
#include "opts.h"

#define DEFAULT_MODEL "google/gemma-4-E2B-it"

/* flags every activation-producing command takes */
#define DATA_KNOWN "model_id", "data_path", "max_examples", "sample_seed", "progress_path", "no_chat_template", \
                   "max_length", "threads", "activations", "save_activations", "pack_tokens"
#define TRAIN_KNOWN "epochs", "lr", "weight_decay", "batch_size", "seed", "validation_size", "target_fpr", "standardize"

typedef struct {
  const char *model_id, *data_path, *activations, *save_activations, *progress_path;
  int64_t max_examples, sample_seed;
  int use_chat_template, max_length, pack_tokens;
} data_args;

static int read_data_args(const opts *o, data_args *d) {
  memset(d, 0, sizeof *d);
  d->model_id = opt(o, "model_id") ? opt(o, "model_id") : DEFAULT_MODEL;
  d->data_path = opt(o, "data_path");
  d->activations = opt(o, "activations");
  d->save_activations = opt(o, "save_activations");
  d->progress_path = opt(o, "progress_path");
  d->use_chat_template = !opt(o, "no_chat_template");
  if (opt_i64(o, "max_examples", 20000, 0, INT32_MAX, &d->max_examples) || opt_i64(o, "sample_seed", 0, 0, INT64_MAX, &d->sample_seed) ||
      opt_int(o, "max_length", 2048, 1, 1 << 20, &d->max_length) || opt_int(o, "pack_tokens", 400, 0, 1 << 20, &d->pack_tokens))
    return -1;
  if (!d->data_path && !d->activations) { fprintf(stderr, "error: --data_path (or --activations) is required\n"); return -1; }
  return 0;
}

static int read_train_args(const opts *o, int default_epochs, oc_probe_train_opts *t, double *val_size, double *target_fpr,
                           uint64_t *split_seed) {
  oc_probe_train_defaults(t);
  int64_t seed;
  if (opt_int(o, "epochs", default_epochs, 1, 1000000, &t->epochs) || opt_double(o, "lr", 1e-3, 1e-12, 10, &t->lr) ||
      opt_double(o, "weight_decay", 0.01, 0, 10, &t->weight_decay) || opt_int(o, "batch_size", 16, 1, 1 << 20, &t->batch_size) ||
      opt_i64(o, "seed", 0, 0, INT64_MAX, &seed) || opt_double(o, "validation_size", 0.2, 0, 0.9, val_size) ||
      opt_double(o, "target_fpr", 0.01, 0, 1, target_fpr))
    return -1;
  t->seed = (uint64_t)seed;
  t->standardize = opt(o, "standardize") != NULL;
  *split_seed = (uint64_t)seed;
  return 0;
}

/* Resolved layer list of the user's --layers / --layer text. */
static int parse_layers(const char *s, int **layers, int *n, oc_error *err) {
  int64_t *v;
  if (oc_parse_int_list(s, &v, n, err)) return oc_wrap(err, "--layers");
  if (*n == 0) { free(v); return oc_fail(err, "--layers is empty"); }
  *layers = malloc(sizeof **layers * (size_t)*n);
  for (int i = 0; i < *n; i++) {
    if (v[i] < -100000 || v[i] > 100000) { free(v); free(*layers); return oc_fail(err, "--layers: %lld is not a layer index", (long long)v[i]); }
    (*layers)[i] = (int)v[i];
  }
  free(v);
  return 0;
}

/* Activations for the requested layers: from --activations, or collected with the model
 * (resumable through journal). binary: refuse three-class labels before running the model. */
static int get_activations(const data_args *d, const int *layers, int n_layers, const char *journal, int binary, oc_progress *prog,
                           oc_activations *a, oc_error *err) {
  if (d->activations) {
    if (oc_progress_phase(prog, "loading_activations", 0, 0), oc_activations_load(d->activations, a, err)) return -1;
    for (int i = 0; i < n_layers; i++)
      if (oc_activations_find(a, layers[i]) < 0) {
        char have[256] = "";
        for (int l = 0; l < a->n_layers && strlen(have) < 200; l++) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%d", l ? "," : "", a->layers[l]);
        oc_activations_free(a);
        return oc_fail(err, "%s: layer %d was not collected (it has %s)", d->activations, layers[i], have);
      }
    return 0;
  }
  oc_progress_phase(prog, "loading_model", 0, 0);
  oc_dataset ds;
  if (oc_dataset_load(d->data_path, d->max_examples, (uint64_t)d->sample_seed, &ds, err)) return -1;
  if (binary && ds.max_label > 1) {
    int64_t line = 0;
    for (int i = 0; i < ds.n && !line; i++) if (ds.ex[i].label > 1) line = ds.ex[i].line;
    oc_dataset_free(&ds);
    return oc_fail(err, "%s:%lld: label 2: a probe needs binary labels (0 safe, 1 unsafe)", d->data_path, (long long)line);
  }
  if (binary && ds.n < 4) { oc_dataset_free(&ds); return oc_fail(err, "%s: need at least 4 examples, got %d", d->data_path, ds.n); }
  fprintf(stderr, "%s: %lld rows, %d selected (label 0: %lld, 1: %lld, 2: %lld)\n", d->data_path, (long long)ds.rows_in_file, ds.n,
          (long long)ds.label_counts[0], (long long)ds.label_counts[1], (long long)ds.label_counts[2]);
  oc_model *m = NULL;
  oc_chat *c = NULL;
  int rc = -1;
  if (load_model(d->model_id, &m, err) || load_chat(d->model_id, &c, err)) goto done;
  oc_collect_opts co = {d->model_id, d->use_chat_template, d->max_length, n_layers, layers, journal, d->pack_tokens};
  if (oc_collect_activations(m, c, &ds, &co, a, prog, err)) goto done;
  if (d->save_activations && oc_activations_save(a, d->save_activations, err)) { oc_activations_free(a); goto done; }
  rc = 0;
done:
  oc_chat_free(c);
  oc_model_free(m);
  oc_dataset_free(&ds);
  return rc;
}

static char *joined(const char *a, const char *suffix) {
  char *s = malloc(strlen(a) + strlen(suffix) + 1);
  if (s) { strcpy(s, a); strcat(s, suffix); }
  return s;
}

int cmd_collect_activations(int argc, char **argv) {
  static const char *const known[] = {DATA_KNOWN, "layers", "out", NULL};
  static const char *const flags[] = {"no_chat_template", NULL};
  opts o;
  if (cli_begin(argc, argv, &o, known, flags)) return 2;
  data_args d;
  oc_error err;
  int *layers = NULL, nl = 0, rc = 2;
  if (read_data_args(&o, &d)) goto done;
  if (!d.data_path || !opt(&o, "out") || d.activations) {
    fprintf(stderr, "usage: opencon collect-activations --model_id M --data_path D.jsonl --layers -2,-4,-6 --out acts.safetensors\n"
                    "       [--max_examples 20000] [--sample_seed 0] [--no_chat_template] [--max_length 2048] [--progress_path P]\n");
    goto done;
  }
  rc = 1;
  if (parse_layers(opt(&o, "layers") ? opt(&o, "layers") : "-4", &layers, &nl, &err)) { die(&err); goto done; }
  char *journal = joined(opt(&o, "out"), ".partial");
  oc_progress prog;
  oc_progress_start(&prog, "collect", "examples", 0, d.progress_path);
  oc_activations a;
  d.save_activations = opt(&o, "out");
  if (get_activations(&d, layers, nl, journal, 0, &prog, &a, &err)) { oc_progress_end(&prog, "failed"); die(&err); free(journal); goto done; }
  oc_progress_end(&prog, "completed");
  unlink(journal);
  free(journal);
  fprintf(stderr, "wrote %s: %d examples x %d layers x %d\n", opt(&o, "out"), a.n, a.n_layers, a.hidden);
  oc_activations_free(&a);
  rc = 0;
done:
  free(layers);
  free_opts(&o);
  return rc;
}

static cJSON *metrics_with_split(const oc_probe_fit *f, double val_size) {
  return oc_probe_fit_metrics_json(f, val_size);
}

int cmd_train_probe(int argc, char **argv) {
  static const char *const known[] = {DATA_KNOWN, TRAIN_KNOWN, "layer", "out_dir", "threshold", "pause_threshold",
                                      "probe_every_n_tokens", "smoothing_window", NULL};
  static const char *const flags[] = {"no_chat_template", "standardize", NULL};
  opts o;
  if (cli_begin(argc, argv, &o, known, flags)) return 2;
  data_args d;
  oc_probe_train_opts t;
  oc_probe_config pc;
  oc_probe_config_defaults(&pc);
  double val_size, target_fpr;
  uint64_t split_seed;
  int rc = 2, layer;
  oc_error err;
  char *journal = NULL, *probe_path = NULL, *config_path = NULL;
  const char *out_dir = opt(&o, "out_dir");
  if (read_data_args(&o, &d) || read_train_args(&o, 100, &t, &val_size, &target_fpr, &split_seed) ||
      opt_int(&o, "layer", -4, -100000, 100000, &layer) || opt_double(&o, "threshold", 0.65, 0, 1, &pc.threshold) ||
      opt_double(&o, "pause_threshold", 0.75, 0, 1, &pc.pause_threshold) ||
      opt_int(&o, "probe_every_n_tokens", 4, 1, 1 << 20, &pc.probe_every_n_tokens) ||
      opt_int(&o, "smoothing_window", 4, 1, 1 << 20, &pc.smoothing_window))
    goto done;
  if (!out_dir) {
    fprintf(stderr, "usage: opencon train-probe --model_id M --data_path D.jsonl --layer -4 --out_dir DIR [--epochs 100] [--lr 1e-3]\n"
                    "       [--max_examples 20000] [--sample_seed 0] [--no_chat_template] [--progress_path P] [--validation_size 0.2]\n"
                    "       [--target_fpr 0.01] [--standardize] [--activations acts.safetensors] [--save_activations F]\n");
    goto done;
  }
  rc = 1;
  if (oc_mkdirs(out_dir, &err)) { die(&err); goto done; }
  journal = oc_path_join(out_dir, "activations.partial");
  probe_path = oc_path_join(out_dir, "probe.safetensors");
  config_path = oc_path_join(out_dir, "config.json");
  oc_progress prog;
  oc_progress_start(&prog, "train-probe", "examples", 0, d.progress_path);
  oc_activations a;
  if (get_activations(&d, &layer, 1, journal, 1, &prog, &a, &err)) { oc_progress_end(&prog, "failed"); die(&err); goto done; }
  if (opt(&o, "model_id") && a.model_id[0] && strcmp(a.model_id, d.model_id) != 0) {
    fprintf(stderr, "error: %s was collected with model_id %s, not %s\n", d.activations, a.model_id, d.model_id);
    oc_activations_free(&a);
    goto done;
  }
  int li = oc_activations_find(&a, layer);
  oc_probe_fit fit;
  oc_progress_keys(&prog, "step", "total_steps");
  prog.unit = "steps";
  oc_progress_phase(&prog, "training_probe", 0, (int64_t)t.epochs * ((a.n + t.batch_size - 1) / t.batch_size));
  if (oc_probe_fit_layer(&a, li, val_size, split_seed, target_fpr, &t, &fit, &prog, &err)) {
    oc_progress_end(&prog, "failed");
    oc_activations_free(&a);
    die(&err);
    goto done;
  }
  pc.model_id = a.model_id[0] ? a.model_id : (char *)d.model_id;
  pc.model_family = a.model_family;
  pc.layer = layer;
  pc.hidden_size = a.hidden;
  pc.use_chat_template = a.use_chat_template;
  pc.calibrated_threshold = fit.val.threshold_at_fpr;
  oc_probe_provenance pv = {&fit, &t, val_size, target_fpr, a.max_length, d.data_path, d.activations, d.max_examples, d.sample_seed};
  int wrc = oc_probe_artifact_save(out_dir, &fit.probe, &pc, &pv, &err);
  cJSON *printed = metrics_with_split(&fit, val_size);
  char *ms = cJSON_Print(printed);
  cJSON_Delete(printed);
  oc_probe_fit_free(&fit);
  oc_activations_free(&a);
  if (wrc) { oc_progress_end(&prog, "failed"); die(&err); free(ms); goto done; }
  oc_progress_end(&prog, "completed");
  unlink(journal); /* the probe is written: the collection journal is no longer needed */
  printf("%s\n", ms);
  free(ms);
  fprintf(stderr, "wrote %s and %s\n", probe_path, config_path);
  rc = 0;
done:
  free(journal); free(probe_path); free(config_path);
  free_opts(&o);
  return rc;
}

int cmd_sweep_layers(int argc, char **argv) {
  static const char *const known[] = {DATA_KNOWN, TRAIN_KNOWN, "layers", "out_path", NULL};
  static const char *const flags[] = {"no_chat_template", "standardize", NULL};
  opts o;
  if (cli_begin(argc, argv, &o, known, flags)) return 2;
  data_args d;
  oc_probe_train_opts t;
  double val_size, target_fpr;
  uint64_t split_seed;
  int rc = 2, *layers = NULL, nl = 0;
  oc_error err;
  char *journal = NULL;
  const char *out_path = opt(&o, "out_path");
  if (read_data_args(&o, &d) || read_train_args(&o, 60, &t, &val_size, &target_fpr, &split_seed)) goto done;
  rc = 1;
  if (parse_layers(opt(&o, "layers") ? opt(&o, "layers") : "-2,-4,-6,-8,-10,-12", &layers, &nl, &err)) { die(&err); goto done; }
  if (out_path) journal = joined(out_path, ".activations.partial");
  oc_progress prog;
  oc_progress_start(&prog, "sweep-layers", "examples", 0, d.progress_path);
  oc_activations a;
  if (get_activations(&d, layers, nl, journal, 1, &prog, &a, &err)) { oc_progress_end(&prog, "failed"); die(&err); goto done; }
  oc_progress_keys(&prog, "step", "total_steps");
  prog.unit = "steps";
  int64_t steps_per = (int64_t)t.epochs * ((a.n + t.batch_size - 1) / t.batch_size);
  oc_progress_phase(&prog, "training_probe", 0, steps_per * nl);
  cJSON *res = cJSON_CreateObject();
  double *auc = malloc(sizeof(double) * (size_t)nl), *f1 = malloc(sizeof(double) * (size_t)nl);
  for (int i = 0; i < nl; i++) {
    oc_probe_fit fit;
    prog.base = steps_per * i;
    if (oc_probe_fit_layer(&a, oc_activations_find(&a, layers[i]), val_size, split_seed, target_fpr, &t, &fit, &prog, &err)) {
      oc_wrap(&err, "layer %d", layers[i]);
      oc_progress_end(&prog, "failed");
      cJSON_Delete(res); free(auc); free(f1);
      oc_activations_free(&a);
      die(&err);
      goto done;
    }
    char key[32];
    snprintf(key, sizeof key, "%d", layers[i]);
    cJSON_AddItemToObject(res, key, metrics_with_split(&fit, val_size));
    auc[i] = fit.val.roc_auc;
    f1[i] = fit.val.f1;
    oc_probe_fit_free(&fit);
  }
  prog.base = 0;
  oc_activations_free(&a);
  char *js = cJSON_Print(res);
  cJSON_Delete(res);
  int wrc = 0;
  if (out_path) {
    char *svg = oc_path_sibling(out_path, ".svg");
    remove(svg); /* a plot beside a report is always that report's: removed before the report is replaced */
    wrc = oc_write_file_atomic(out_path, js, strlen(js), &err) || oc_sweep_svg(svg, layers, nl, auc, f1, &err);
    if (!wrc) fprintf(stderr, "wrote %s and %s\n", out_path, svg);
    free(svg);
  }
  free(auc); free(f1);
  if (wrc) { oc_progress_end(&prog, "failed"); die(&err); free(js); goto done; }
  oc_progress_end(&prog, "completed");
  if (journal) unlink(journal);
  printf("%s\n", js);
  free(js);
  rc = 0;
done:
  free(journal); free(layers);
  free_opts(&o);
  return rc;
}
