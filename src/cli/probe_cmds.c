/* collect-activations, train-probe, sweep-layers: the MVP's commands and flags on libopencon. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opencon/guard.h"
#include "opencon/probe.h"
#include "opts.h"

/* flags every activation-producing command takes */
#define DATA_OPTS                                                                                                                  \
  O_STR("model_id", "google/gemma-4-E2B-it", "the decoder: a local directory or a Hub id org/name"),                              \
      O_IN("data_path", "labelled exchanges, JSONL {\"prompt\", \"response\", \"label\"} a line"),                              \
      O_I64("max_examples", "20000", 0, INT32_MAX, "the MVP's label-balanced sample of this many rows (0 = every row)"),          \
      O_I64("sample_seed", "0", 0, INT64_MAX, "seed of the sample"),                                                              \
      O_OUT("progress_path", NULL, "a JSON progress file, rewritten atomically"),                                                 \
      O_FLAG("no_chat_template", "format exchanges as the MVP's plain \"User:\\n...\\n\\nAssistant:\\n...\""),             \
      O_INT("max_length", "2048", 1, 1 << 20, "truncate each exchange to this many tokens"),                                     \
      O_INT("pack_tokens", "400", 0, 1 << 20, "pack short examples into prefills of about this many tokens (0 or 1: one at a time)"), \
      O_WEIGHTS, O_THREADS
/* ... and the commands that train probes */
#define TRAIN_OPTS(epochs)                                                                                                       \
  O_IN("activations", "train from this activation file (collect-activations) instead of running the model"),                     \
      O_OUT("save_activations", NULL, "also save the collected activations here"),                                                 \
      O_INT("epochs", epochs, 1, 1000000, "training epochs"), O_DBL("lr", "1e-3", 1e-12, 10, "AdamW learning rate"),             \
      O_DBL("weight_decay", "0.01", 0, 10, "AdamW weight decay"), O_INT("batch_size", "16", 1, 1 << 20, "batch size"),           \
      O_I64("seed", "0", 0, INT64_MAX, "seed of the split and the training"),                                                     \
      O_DBL("validation_size", "0.2", 0, 0.9, "held-out fraction (stratified); metrics are on it"),                               \
      O_DBL("target_fpr", "0.01", 0, 1, "the calibrated threshold keeps the false-positive rate on safe examples at most this"),  \
      O_FLAG("standardize", "standardize the features (folded back into the probe's weights)")

typedef struct {
  const char *model_id, *data_path, *activations, *save_activations, *progress_path;
  int64_t max_examples, sample_seed;
  int use_chat_template, max_length, pack_tokens;
  oc_weight_mode weights;
} data_args;

/* train: the command takes --activations / --save_activations */
static int read_data_args(const cli_args *o, int train, data_args *d) {
  memset(d, 0, sizeof *d);
  d->model_id = arg_str(o, "model_id");
  d->data_path = arg_str(o, "data_path");
  d->activations = train ? arg_str(o, "activations") : NULL;
  d->save_activations = train ? arg_str(o, "save_activations") : NULL;
  d->progress_path = arg_str(o, "progress_path");
  d->use_chat_template = !arg_flag(o, "no_chat_template");
  d->max_examples = arg_i64(o, "max_examples");
  d->sample_seed = arg_i64(o, "sample_seed");
  d->max_length = arg_int(o, "max_length");
  d->pack_tokens = arg_int(o, "pack_tokens");
  d->weights = arg_weights(o);
  if (train && !d->data_path == !d->activations) return cli_usage_error(o, "give either --data_path or --activations");
  return 0;
}

static void read_train_args(const cli_args *o, oc_probe_train_opts *t, double *val_size, double *target_fpr, uint64_t *split_seed) {
  oc_probe_train_defaults(t);
  t->epochs = arg_int(o, "epochs");
  t->lr = arg_double(o, "lr");
  t->weight_decay = arg_double(o, "weight_decay");
  t->batch_size = arg_int(o, "batch_size");
  t->seed = (uint64_t)arg_i64(o, "seed");
  t->standardize = arg_flag(o, "standardize");
  *val_size = arg_double(o, "validation_size");
  *target_fpr = arg_double(o, "target_fpr");
  *split_seed = t->seed;
}

/* the --layers list as ints (each within the option's range) */
static int *layer_list(const cli_args *o, int *n, oc_error *err) {
  const int64_t *v = arg_list(o, "layers", n);
  int *layers = malloc(sizeof *layers * (size_t)*n);
  if (!layers) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); return NULL; }
  for (int i = 0; i < *n; i++) layers[i] = (int)v[i];
  return layers;
}

/* the activations of the requested layers (oc_activations_get), with the dataset's counts printed */
static int get_activations(const data_args *d, const int *layers, int n_layers, const char *journal, int binary, oc_progress *prog,
                           oc_activations *a, oc_error *err) {
  oc_activation_source src = {.activations = d->activations, .model_id = d->model_id, .data_path = d->data_path, .max_examples = d->max_examples,
                              .sample_seed = (uint64_t)d->sample_seed, .use_chat_template = d->use_chat_template, .max_length = d->max_length,
                              .pack_tokens = d->pack_tokens, .journal = journal, .save_to = d->save_activations, .binary = binary,
                              .weights = d->weights};
  oc_collection_counts n;
  if (cli_template_opts(&src.template_opts, err) || oc_activations_get(&src, layers, n_layers, prog, a, &n, err)) return -1;
  if (!d->activations)
    fprintf(stderr, "%s: %lld rows, %lld selected (label 0: %lld, 1: %lld, 2: %lld)\n", d->data_path, (long long)n.rows_in_file, (long long)n.selected,
            (long long)n.by_label[0], (long long)n.by_label[1], (long long)n.by_label[2]);
  return 0;
}

static char *joined(const char *a, const char *suffix) {
  char *s = malloc(strlen(a) + strlen(suffix) + 1);
  if (s) { strcpy(s, a); strcat(s, suffix); }
  return s;
}

static int run_collect_activations(const cli_args *o) {
  data_args d;
  oc_error err;
  int *layers = NULL, nl = 0, rc = 1;
  if (read_data_args(o, 0, &d)) return 2;
  const char *out = arg_str(o, "out");
  if (!(layers = layer_list(o, &nl, &err))) return die(&err);
  char *journal = joined(out, ".partial");
  oc_progress prog;
  oc_progress_start(&prog, "collect", "examples", 0, d.progress_path);
  oc_activations a;
  d.save_activations = out;
  if (get_activations(&d, layers, nl, journal, 0, &prog, &a, &err)) { oc_progress_end(&prog, "failed"); die(&err); free(journal); goto done; }
  oc_progress_end(&prog, "completed");
  unlink(journal);
  free(journal);
  fprintf(stderr, "wrote %s: %d examples x %d layers x %d\n", out, a.n, a.n_layers, a.hidden);
  oc_activations_free(&a);
  rc = 0;
done:
  free(layers);
  return rc;
}

static const opt_spec collect_opts[] = {
    DATA_OPTS,
    O_INTS("layers", "-4", -100000, 100000, "hidden states to collect: transformers' output_hidden_states indices, -k from the end"),
    O_("out", OPT_OUT, OPT_REQUIRED, NULL, "the activation file (safetensors); OUT.partial journals progress for a resume"),
    O_END};
const cli_command cmd_collect_activations = {"collect-activations", "final-token hidden states of labelled exchanges -> safetensors (resumable)",
                                             "--data_path and --out are required. Rerunning the same command after a crash continues from OUT.partial.",
                                             collect_opts, run_collect_activations};

/* train-probe --token_level: rows at the response tokens of --layer or --layers collected
 * (resumable at journal), a token-level fit with --token_weighting (and --combine); a holds the
 * collection's settings (no rows) for the probe's config */
static int fit_tokens(const cli_args *o, const data_args *d, const int *layers, int nl, int combine, const oc_probe_train_opts *t, double val_size,
                      uint64_t split_seed, double target_fpr, const char *journal, oc_progress *prog, oc_activations *a, oc_probe_fit *fit,
                      oc_error *err) {
  memset(a, 0, sizeof *a);
  oc_activation_source src = {.model_id = d->model_id, .data_path = d->data_path, .max_examples = d->max_examples,
                              .sample_seed = (uint64_t)d->sample_seed, .use_chat_template = d->use_chat_template, .max_length = d->max_length,
                              .journal = journal, .binary = 1, .weights = d->weights};
  /* the rows stay in the journal: training reads one exchange's at a time */
  const oc_token_collect_opts to = {d->model_id,           d->use_chat_template, d->max_length, layers[0], arg_int(o, "max_tokens_per_example"),
                                    t->seed,               journal,              1,             nl > 1 ? nl : 0, layers};
  oc_token_activations ta;
  oc_collection_counts n;
  if (cli_template_opts(&src.template_opts, err) || oc_token_activations_get(&src, &to, prog, &ta, &n, err)) return -1;
  fprintf(stderr, "%s: %lld rows, %lld selected; %lld token rows from %lld forward passes (%lld exchanges resumed)\n", d->data_path,
          (long long)n.rows_in_file, (long long)n.selected, (long long)ta.n_rows, (long long)ta.forward_passes, (long long)ta.resumed);
  oc_progress_phase(prog, "training_probe", 0, 0);
  int rc = oc_probe_fit_tokens_combined(&ta, combine, oc_token_weighting_from_name(arg_str(o, "token_weighting")), val_size, split_seed, target_fpr,
                                        t, fit, err);
  a->hidden = ta.hidden / (ta.n_layers > 0 ? ta.n_layers : 1); /* config.json's hidden_size: one layer's */
  a->max_length = ta.max_length;
  a->use_chat_template = ta.use_chat_template;
  a->model_id = ta.model_id;
  a->model_family = ta.model_family;
  ta.model_id = ta.model_family = NULL;
  oc_token_activations_free(&ta);
  if (rc) oc_activations_free(a);
  return rc;
}

static int run_train_probe(const cli_args *o) {
  data_args d;
  oc_probe_train_opts t;
  oc_probe_config pc;
  oc_probe_config_defaults(&pc);
  double val_size, target_fpr;
  uint64_t split_seed;
  int rc = 2, layer = arg_int(o, "layer"), nl = 1, *layers = &layer, lis[OC_PROBE_MAX_LAYERS];
  oc_error err;
  char *journal = NULL, *probe_path = NULL, *config_path = NULL;
  const char *out_dir = arg_str(o, "out_dir");
  const int combine = oc_probe_combine_from_name(arg_str(o, "combine"));
  const int token_level = arg_flag(o, "token_level");
  if (read_data_args(o, 1, &d)) return 2;
  if (!token_level && (arg_given(o, "token_weighting") || arg_given(o, "max_tokens_per_example")))
    return cli_usage_error(o, "--token_weighting and --max_tokens_per_example apply to --token_level");
  if (token_level && (d.activations || d.save_activations))
    return cli_usage_error(o, "--token_level collects its rows from the model: give --data_path, not --activations or --save_activations");
  if (token_level && arg_given(o, "pack_tokens"))
    return cli_usage_error(o, "--pack_tokens does not apply to --token_level (one forward pass per exchange, never packed)");
  if (arg_given(o, "layers")) { /* a probe over several layers */
    if (arg_given(o, "layer")) return cli_usage_error(o, "give --layer or --layers, not both");
    if (!(layers = layer_list(o, &nl, &err))) return die(&err);
    if (nl > OC_PROBE_MAX_LAYERS) { free(layers); return cli_usage_error(o, "--layers: at most %d layers", OC_PROBE_MAX_LAYERS); }
    for (int k = 0; k < nl; k++)
      for (int j = 0; j < k; j++)
        if (layers[j] == layers[k]) {
          const int twice = layers[k];
          free(layers);
          return cli_usage_error(o, "--layers: layer %d is given twice", twice);
        }
    layer = layers[0];
  }
  if (arg_given(o, "combine") && nl < 2) {
    if (layers != &layer) free(layers);
    return cli_usage_error(o, "--combine needs --layers with two or more layers");
  }
  read_train_args(o, &t, &val_size, &target_fpr, &split_seed);
  if (nl > 1 && combine == OC_COMBINE_CONCAT) t.standardize = 1; /* concat always standardizes (config.json says so) */
  pc.threshold = arg_double(o, "threshold");
  pc.pause_threshold = arg_double(o, "pause_threshold");
  pc.probe_every_n_tokens = arg_int(o, "probe_every_n_tokens");
  pc.smoothing_window = arg_int(o, "smoothing_window");
  if (oc_aggregation_parse(arg_str(o, "aggregation"), &pc.aggregation)) return cli_usage_error(o, "--aggregation: unknown aggregation");
  pc.aggregation_window = arg_given(o, "aggregation_window") ? arg_int(o, "aggregation_window") : pc.smoothing_window;
  pc.aggregation_alpha = arg_double(o, "aggregation_alpha");
  if (arg_given(o, "aggregation_window") && pc.aggregation != OC_AGG_ROLLING_MEAN && pc.aggregation != OC_AGG_MAX_ROLLING_MEAN)
    return cli_usage_error(o, "--aggregation_window applies to --aggregation rolling_mean or max_rolling_mean (last uses --smoothing_window)");
  if (arg_given(o, "aggregation_alpha") && pc.aggregation != OC_AGG_EMA) return cli_usage_error(o, "--aggregation_alpha applies to --aggregation ema");
  rc = 1;
  if (oc_artifact_dir_check(out_dir, &err) || oc_mkdirs(out_dir, &err)) { die(&err); goto done; }
  journal = oc_path_join(out_dir, token_level ? "token_activations.partial" : "activations.partial");
  probe_path = oc_path_join(out_dir, "probe.safetensors");
  config_path = oc_path_join(out_dir, "config.json");
  oc_progress prog;
  oc_progress_start(&prog, "train-probe", "examples", 0, d.progress_path);
  oc_activations a;
  oc_probe_fit fit;
  if (token_level) { /* rows at the response tokens, straight into a token-level fit */
    if (fit_tokens(o, &d, layers, nl, combine, &t, val_size, split_seed, target_fpr, journal, &prog, &a, &fit, &err)) {
      oc_progress_end(&prog, "failed");
      die(&err);
      goto done;
    }
  } else {
    if (get_activations(&d, layers, nl, journal, 1, &prog, &a, &err)) { oc_progress_end(&prog, "failed"); die(&err); goto done; }
    if (arg_given(o, "model_id") && a.model_id[0] && strcmp(a.model_id, d.model_id) != 0) {
      fprintf(stderr, "error: %s was collected with model_id %s, not %s\n", d.activations, a.model_id, d.model_id);
      oc_activations_free(&a);
      goto done;
    }
    for (int k = 0; k < nl; k++) lis[k] = oc_activations_find(&a, layers[k]);
    oc_progress_keys(&prog, "step", "total_steps");
    prog.unit = "steps";
    oc_progress_phase(&prog, "training_probe", 0, oc_probe_fit_steps(a.n, nl, combine, &t));
    if (oc_probe_fit_layers(&a, lis, nl, combine, val_size, split_seed, target_fpr, &t, &fit, &prog, &err)) {
      oc_progress_end(&prog, "failed");
      oc_activations_free(&a);
      die(&err);
      goto done;
    }
  }
  oc_probe_config_from_fit(&pc, &a, layer, &fit, d.model_id);
  if (nl > 1) {
    pc.n_layers = nl;
    pc.layers = layers;
    pc.combine = combine;
  }
  if (arg_flag(o, "pause_at_calibrated") && oc_probe_config_pause_at_calibrated(&pc, &err)) {
    oc_progress_end(&prog, "failed");
    oc_probe_fit_free(&fit);
    oc_activations_free(&a);
    die(&err);
    goto done;
  }
  oc_probe_provenance pv = {&fit, &t, val_size, target_fpr, a.max_length, d.data_path, d.activations, d.max_examples, d.sample_seed,
                            d.activations ? NULL : oc_weight_mode_name(d.weights), 0, 0, 0};
  if (token_level) {
    pv.token_level = 1;
    pv.token_weighting = oc_token_weighting_from_name(arg_str(o, "token_weighting"));
    pv.max_tokens_per_example = arg_int(o, "max_tokens_per_example");
  }
  int wrc = oc_probe_artifact_save(out_dir, &fit.probe, &pc, &pv, &err);
  cJSON *printed = oc_probe_fit_metrics_json(&fit, val_size);
  char *ms = cJSON_Print(printed);
  cJSON_Delete(printed);
  oc_probe_fit_free(&fit);
  oc_activations_free(&a);
  if (!wrc && !ms) wrc = oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
  if (wrc) { oc_progress_end(&prog, "failed"); die(&err); free(ms); goto done; }
  oc_progress_end(&prog, "completed");
  unlink(journal); /* the probe is written: the collection journal is no longer needed */
  printf("%s\n", ms);
  free(ms);
  fprintf(stderr, "wrote %s and %s\n", probe_path, config_path);
  rc = 0;
done:
  free(journal); free(probe_path); free(config_path);
  if (layers != &layer) free(layers);
  return rc;
}

static const opt_spec train_probe_opts[] = {
    DATA_OPTS, TRAIN_OPTS("100"),
    O_INT("layer", "-4", -100000, 100000, "the hidden state the probe reads: transformers' output_hidden_states index, -k from the end"),
    O_INTS("layers", NULL, -100000, 100000, "instead of --layer: a probe over these hidden states (one collection pass), combined by --combine"),
    {.name = "combine", .type = OPT_CHOICE, .def = "concat", .choices = "concat|mean",
     .help = "--layers: concat = one probe over the concatenated standardized layers; mean = one probe per layer, logits averaged"},
    O_("out_dir", OPT_OUTDIR, OPT_REQUIRED, NULL, "gets probe.safetensors and config.json"),
    O_DBL("threshold", "0.65", 0, 1, "config.json: smoothed risk from which the guard logs \"suspicious\""),
    O_DBL("pause_threshold", "0.75", 0, 1, "config.json: smoothed risk at which the guard pauses for the classifier"),
    O_FLAG("pause_at_calibrated", "config.json: pause at the calibrated threshold (held-out safe exchanges, --target_fpr) instead"),
    O_INT("probe_every_n_tokens", "4", 1, OC_PROBE_MAX_EVERY_N, "config.json: probe every N generated tokens"),
    O_INT("smoothing_window", "4", 1, OC_PROBE_MAX_WINDOW, "config.json: mean of the last N risks"),
    {.name = "aggregation", .type = OPT_CHOICE, .def = "last", .choices = "last|ema|rolling_mean|max_rolling_mean",
     .help = "config.json: how the guard aggregates readings: last (mean of the last --smoothing_window), ema, rolling_mean, "
             "max_rolling_mean (the highest rolling mean so far)"},
    {.name = "aggregation_window", .type = OPT_INT, .lo = 1, .hi = OC_PROBE_MAX_WINDOW,
     .help = "config.json: readings the rolling mean covers (rolling_mean, max_rolling_mean; default: --smoothing_window)"},
    O_DBL("aggregation_alpha", "0.5", 1e-9, 1, "config.json: weight of the newest reading (ema)"),
    O_FLAG("token_level", "train on the hidden states at every response token (one forward pass per exchange; OUT_DIR/token_activations.partial "
                          "journals them as F16 for a resume, and training reads them back from it one exchange at a time: memory for rows "
                          "is one exchange's, at most --max_tokens_per_example (else --max_length) x layers x hidden x 6 bytes), each token's target "
                          "the exchange's label; with --layers, their hidden states side by side, combined by --combine; "
                          "--pack_tokens does not apply"),
    O_INT("max_tokens_per_example", "0", 0, OC_TOKEN_MAX_PER_EXAMPLE,
          "--token_level: at most this many response tokens per exchange, the last always, the others drawn with --seed (0 = all)"),
    {.name = "token_weighting", .type = OPT_CHOICE, .def = "uniform", .choices = "uniform|ramp|cummax",
     .help = "--token_level: uniform = mean per-token loss; ramp = later tokens weigh more; cummax = loss of the running maximum score "
             "(Constitutional Classifiers)"},
    O_END};
const cli_command cmd_train_probe = {"train-probe", "linear probe on one layer or several -> probe.safetensors + config.json",
                                     "--out_dir and one of --data_path or --activations are required. Prints the held-out metrics.",
                                     train_probe_opts, run_train_probe};

/* sweep-layers --combinations: every --layers layer alone, then each combination, from one
 * collection of all their layers */
static int sweep_combinations(const cli_args *o, const data_args *d, const oc_probe_train_opts *t, double val_size, double target_fpr,
                              uint64_t split_seed) {
  oc_error err;
  int ns = 0, ng = 0, *single = NULL, *glayers = NULL, *gsizes = NULL, *vl = NULL, *vs = NULL, *all = NULL, na = 0, rc = 1, nv = 0, ngl = 0;
  char *journal = NULL, **labels = NULL, *js = NULL;
  double *auc = NULL, *f1 = NULL;
  const char *out_path = arg_str(o, "out_path");
  if (!(single = layer_list(o, &ns, &err))) return die(&err);
  if (oc_parse_layer_groups(arg_str(o, "combinations"), &glayers, &gsizes, &ng, &err)) {
    free(single);
    return cli_usage_error(o, "--combinations: %s", err.msg);
  }
  for (int g = 0; g < ng; g++) ngl += gsizes[g];
  nv = ns + ng;
  vl = malloc(sizeof(int) * (size_t)(ns + ngl));
  vs = malloc(sizeof(int) * (size_t)nv);
  all = malloc(sizeof(int) * (size_t)(ns + ngl));
  auc = malloc(sizeof(double) * (size_t)nv);
  f1 = malloc(sizeof(double) * (size_t)nv);
  if (!vl || !vs || !all || !auc || !f1) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); die(&err); goto done; }
  memcpy(vl, single, sizeof(int) * (size_t)ns);
  memcpy(vl + ns, glayers, sizeof(int) * (size_t)ngl);
  for (int i = 0; i < ns; i++) vs[i] = 1;
  memcpy(vs + ns, gsizes, sizeof(int) * (size_t)ng);
  for (int i = 0; i < ns + ngl; i++) { /* the layers to collect, each once */
    int seen = 0;
    for (int k = 0; k < na; k++) seen |= all[k] == vl[i];
    if (!seen) all[na++] = vl[i];
  }
  if (out_path) journal = joined(out_path, ".activations.partial");
  oc_progress prog;
  oc_progress_start(&prog, "sweep-layers", "examples", 0, d->progress_path);
  oc_activations a;
  if (get_activations(d, all, na, journal, 1, &prog, &a, &err)) { oc_progress_end(&prog, "failed"); die(&err); goto done; }
  cJSON *res = NULL;
  int src = oc_sweep_variants(&a, vl, vs, nv, oc_probe_combine_from_name(arg_str(o, "combine")), val_size, split_seed, target_fpr, t, &prog, &res,
                              &labels, auc, f1, &err);
  oc_activations_free(&a);
  if (!src && !(js = cJSON_Print(res))) src = oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
  cJSON_Delete(res);
  if (!src && out_path) {
    src = oc_sweep_save_labeled(out_path, js, (const char *const *)labels, nv, auc, f1, &err);
    if (!src) fprintf(stderr, "wrote %s and its .svg plot\n", out_path);
  }
  if (src) { oc_progress_end(&prog, "failed"); die(&err); goto done; }
  oc_progress_end(&prog, "completed");
  if (journal) unlink(journal);
  printf("%s\n", js);
  rc = 0;
done:
  if (labels) for (int i = 0; i < nv; i++) free(labels[i]);
  free(labels); free(js); free(journal); free(single); free(glayers); free(gsizes); free(vl); free(vs); free(all); free(auc); free(f1);
  return rc;
}

static int run_sweep_layers(const cli_args *o) {
  data_args d;
  oc_probe_train_opts t;
  double val_size, target_fpr;
  uint64_t split_seed;
  int rc = 1, *layers = NULL, nl = 0;
  oc_error err;
  char *journal = NULL;
  const char *out_path = arg_str(o, "out_path");
  if (read_data_args(o, 1, &d)) return 2;
  read_train_args(o, &t, &val_size, &target_fpr, &split_seed);
  if (arg_given(o, "combinations")) return sweep_combinations(o, &d, &t, val_size, target_fpr, split_seed);
  if (arg_given(o, "combine")) return cli_usage_error(o, "--combine applies to --combinations");
  if (!(layers = layer_list(o, &nl, &err))) return die(&err);
  if (out_path) journal = joined(out_path, ".activations.partial");
  oc_progress prog;
  oc_progress_start(&prog, "sweep-layers", "examples", 0, d.progress_path);
  oc_activations a;
  if (get_activations(&d, layers, nl, journal, 1, &prog, &a, &err)) { oc_progress_end(&prog, "failed"); die(&err); goto done; }
  cJSON *res = NULL;
  double *auc = malloc(sizeof(double) * (size_t)nl), *f1 = malloc(sizeof(double) * (size_t)nl);
  if (!auc || !f1 || oc_sweep_layers(&a, layers, nl, val_size, split_seed, target_fpr, &t, &prog, &res, auc, f1, &err)) {
    if (!auc || !f1) oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
    oc_progress_end(&prog, "failed");
    free(auc); free(f1);
    oc_activations_free(&a);
    die(&err);
    goto done;
  }
  oc_activations_free(&a);
  char *js = cJSON_Print(res);
  cJSON_Delete(res);
  int wrc = js ? 0 : oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
  if (out_path && !wrc) {
    wrc = oc_sweep_save(out_path, js, layers, nl, auc, f1, &err);
    if (!wrc) fprintf(stderr, "wrote %s and its .svg plot\n", out_path);
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
  return rc;
}

static const opt_spec sweep_opts[] = {
    DATA_OPTS, TRAIN_OPTS("60"),
    O_INTS("layers", "-2,-4,-6,-8,-10,-12", -100000, 100000, "one probe per hidden state: transformers' indices, -k from the end"),
    O_OUT("out_path", NULL, "also write the JSON here, with an SVG of ROC AUC and F1 by layer beside it"),
    O_STR("combinations", NULL, "also layer combinations, ';' between them: \"-4,-8;-4,-8,-12\" (keys \"-4,-8\", ...); one collection pass for all"),
    {.name = "combine", .type = OPT_CHOICE, .def = "concat", .choices = "concat|mean", .help = "how --combinations combine their layers (train-probe --combine)"},
    O_END};
const cli_command cmd_sweep_layers = {"sweep-layers", "one probe per layer from one pass per example -> JSON metrics (+ SVG)",
                                      "One of --data_path or --activations is required. Prints {\"<layer>\": metrics, ...}.", sweep_opts,
                                      run_sweep_layers};

/* evaluate-probe: the probe's guard decisions replayed on held-out exchanges (oc_probe_evaluate) */
static int run_evaluate_probe(const cli_args *o) {
  oc_error err;
  oc_guard_spec spec;
  oc_guard_spec_defaults(&spec);
  spec.model_id = arg_str(o, "model_id");
  spec.probe_path = arg_str(o, "probe_path");
  spec.config_path = arg_str(o, "config_path");
  const char *data_path = arg_str(o, "data_path"), *out_path = arg_str(o, "out_path");
  char *cfg_path = oc_guard_spec_config_path(&spec);
  oc_probe_config pc;
  oc_probe probe = {0};
  oc_model *m = NULL;
  oc_chat *chat = NULL;
  oc_dataset ds = {0};
  oc_probe_eval ev = {0};
  cJSON *report = NULL;
  int rc = 1, have_cfg = 0;
  oc_progress prog;
  oc_progress_start(&prog, "evaluate-probe", "examples", 0, arg_str(o, "progress_path"));
  oc_progress_phase(&prog, "loading_model", 0, 0);
  if (!cfg_path) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  if (oc_probe_config_load(cfg_path, &pc, &err)) goto fail;
  have_cfg = 1;
  if (oc_guard_check_probe(spec.model_id, pc.model_id, &err) || oc_probe_load(spec.probe_path, &probe, &err) ||
      oc_dataset_load(data_path, arg_i64(o, "max_examples"), 0, &ds, &err) || load_model(spec.model_id, arg_weights(o), &m, &err) ||
      load_chat(spec.model_id, &chat, &err) || cli_template_opts(&chat->render_opts, &err))
    goto fail;
  oc_progress_phase(&prog, "evaluating", 0, ds.n);
  oc_probe_eval_opts eo = {arg_double(o, "target_fpr"), arg_int(o, "max_length")};
  if (oc_probe_evaluate(m, chat, &probe, &pc, &ds, &eo, &prog, &ev, &err)) goto fail;
  if (!(report = oc_probe_eval_json(&ev, &pc, data_path))) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  if (out_path && oc_probe_eval_save(out_path, &ev, report, &err)) goto fail;
  if (arg_flag(o, "write_threshold") && oc_probe_config_write_calibration(cfg_path, &ev, data_path, &err)) goto fail;
  oc_progress_end(&prog, "completed");
  cJSON_DeleteItemFromObjectCaseSensitive(report, "per_example"); /* in the file; stdout gets the summary */
  rc = cli_print_json(report, 1, "");
  if (out_path) fprintf(stderr, "wrote %s and its plots (.roc.svg, .risk.svg)\n", out_path);
  if (arg_flag(o, "write_threshold")) fprintf(stderr, "wrote pause_threshold %.9g (FPR %.4g <= %g on %d exchanges) into %s\n", ev.threshold, ev.fpr_at_threshold, ev.target_fpr, ev.n, cfg_path);
  goto done;
fail:
  oc_progress_end(&prog, "failed");
  die(&err);
done:
  cJSON_Delete(report);
  oc_probe_eval_free(&ev);
  oc_dataset_free(&ds);
  oc_chat_free(chat);
  oc_model_free(m);
  oc_probe_free(&probe);
  if (have_cfg) oc_probe_config_free(&pc);
  free(cfg_path);
  return rc;
}

static const opt_spec evaluate_opts[] = {
    O_STR("model_id", "google/gemma-4-E2B-it", "the decoder: a local directory or a Hub id org/name"),
    O_("probe_path", OPT_IN, OPT_REQUIRED, NULL, "the probe: probe.safetensors or the MVP's probe.pt"),
    O_IN("config_path", "the probe's config.json (default: config.json beside the probe)"),
    O_("data_path", OPT_IN, OPT_REQUIRED, NULL, "held-out exchanges, JSONL {\"prompt\", \"response\", \"label\" 0|1} a line"),
    O_OUT("out_path", NULL, "the report (JSON), with R.roc.svg and R.risk.svg beside it"),
    O_DBL("target_fpr", "0.01", 0, 1, "the pause threshold keeps the false-positive rate on safe exchanges at most this"),
    O_I64("max_examples", "0", 0, INT32_MAX, "the MVP's label-balanced sample of this many rows (0 = every row)"),
    O_INT("max_length", "2048", 1, 1 << 20, "tokens of prompt + response per exchange (the response is cut)"),
    O_FLAG("write_threshold", "write the pause threshold (and \"calibration\": its target, FPR, TPR, data) into the probe's config.json"),
    O_OUT("progress_path", NULL, "a JSON progress file, rewritten atomically"),
    O_WEIGHTS, O_THREADS, O_END};
const cli_command cmd_evaluate_probe = {"evaluate-probe", "replay held-out exchanges as the guard reads them: ROC AUC, TPR at 1/5 % FPR, pause threshold, tokens to detection",
                                        "One teacher-forced pass per exchange; readings every probe_every_n_tokens and at the last token, aggregated as "
                                        "the probe's config says; an exchange's score is its highest aggregate. Prints the summary (the report file adds "
                                        "per_example).",
                                        evaluate_opts, run_evaluate_probe};
