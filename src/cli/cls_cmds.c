/* classify, train-exchange-classifier, calibrate-exchange-classifier, build-three-class-classifier-data */
#include <cjson/cJSON.h>
#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/classifier.h"
#include "opencon/hub.h"
#include "opencon/probe.h"
#include "opencon/json.h"
#include "opts.h"

static int print_json(cJSON *o) {
  int rc = cli_print_json(o, 0, NULL);
  cJSON_Delete(o);
  return rc;
}

static int run_classify(const cli_args *o) {
  int modes = arg_given(o, "prompt") + arg_given(o, "jsonl") + arg_given(o, "input_ids");
  if (modes != 1) return cli_usage_error(o, "give one of --prompt (with --response), --jsonl or --input_ids");
  if (arg_given(o, "response") && !arg_given(o, "prompt")) return cli_usage_error(o, "--response needs --prompt");
  oc_error err;
  oc_classifier *c = NULL;
  int rc = 1, bs = arg_int(o, "batch_size");
  if (oc_classifier_open(arg_str(o, "classifier_dir"), arg_given(o, "input_ids"), arg_double(o, "allow_threshold"), arg_double(o, "block_threshold"), &c,
                      &err)) {
    die(&err);
    goto done;
  }
  oc_decision d;
  if (arg_given(o, "input_ids")) {
    int n;
    const int64_t *v = arg_list(o, "input_ids", &n);
    if (n > c->max_length) { oc_fail(&err, "--input_ids has %d ids; the classifier takes at most %d (its max_length)", n, c->max_length); die(&err); goto done; }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    if (!ids) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); die(&err); goto done; }
    for (int i = 0; i < n; i++) ids[i] = (int32_t)v[i]; /* each in [0, INT32_MAX] (the option's range) */
    int src = oc_classifier_score_ids(c, ids, n, &d, &err);
    free(ids);
    if (src) { die(&err); goto done; }
    print_json(oc_decision_json(c, &d, 1));
  } else if (arg_given(o, "jsonl")) {
    const char *path = arg_str(o, "jsonl");
    FILE *f = oc_fopen_regular(path, &err);
    if (!f) { die(&err); goto done; }
    char *line = NULL, *pr[1024], *rs[1024];
    int64_t lines[1024];
    size_t cap = 0;
    int n = 0, ok = 1;
    int64_t ln = 0;
    oc_decision ds[1024];
    for (;;) {
      ssize_t got = getline(&line, &cap, f);
      if (got > 0) {
        ln++;
        if (oc_json_blank(line, (size_t)got)) continue;
        cJSON *row = NULL;
        oc_error jerr;
        if (oc_json_parse(line, (size_t)got, path, ln, &row, &jerr)) {
          fprintf(stderr, "error: %s\n", jerr.msg);
          ok = 0;
          break;
        }
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(row, "prompt"), *r = cJSON_GetObjectItemCaseSensitive(row, "response");
        if (!cJSON_IsString(p) || (r && !cJSON_IsString(r))) {
          fprintf(stderr, "error: %s:%lld: expected an object with string \"prompt\" (and \"response\")\n", path, (long long)ln);
          cJSON_Delete(row);
          ok = 0;
          break;
        }
        pr[n] = strdup(p->valuestring);
        rs[n] = strdup(r ? r->valuestring : "");
        cJSON_Delete(row);
        if (!pr[n] || !rs[n]) {
          free(pr[n]); free(rs[n]);
          fprintf(stderr, "error: out of memory\n");
          ok = 0;
          break;
        }
        lines[n++] = ln;
      }
      if ((got <= 0 && n > 0) || n == bs) {
        if (oc_classifier_score_batch(c, (const char *const *)pr, (const char *const *)rs, n, ds, &err)) { die(&err); ok = 0; }
        for (int i = 0; i < n && ok; i++) {
          cJSON *j = oc_decision_json(c, &ds[i], 0);
          cJSON_AddNumberToObject(j, "line", (double)lines[i]);
          print_json(j);
        }
        for (int i = 0; i < n; i++) { free(pr[i]); free(rs[i]); }
        n = 0;
        if (!ok) break;
      }
      if (got <= 0) break;
    }
    for (int i = 0; i < n; i++) { free(pr[i]); free(rs[i]); }
    free(line);
    fclose(f);
    if (!ok) goto done;
  } else {
    if (oc_classifier_score(c, arg_str(o, "prompt"), arg_str(o, "response"), &d, &err)) { die(&err); goto done; }
    print_json(oc_decision_json(c, &d, 0));
  }
  rc = 0;
done:
  oc_classifier_free(c);
  return rc;
}

static const opt_spec classify_opts[] = {
    O_("classifier_dir", OPT_STR, OPT_REQUIRED, NULL, "the classifier: a directory or a Hub id"),
    O_("prompt", OPT_STR, OPT_EMPTY_OK, NULL, "the user turn of the exchange to classify"),
    O_("response", OPT_STR, OPT_EMPTY_OK, "", "the assistant turn (with --prompt)"),
    O_IN("jsonl", "{\"prompt\", \"response\"?} a line; one decision printed per line (with \"line\")"),
    O_INTS("input_ids", NULL, 0, INT32_MAX, "classify these token ids (the decision gets the logits); needs no tokenizer files"),
    {.name = "allow_threshold", .type = OPT_DOUBLE, .dlo = 0, .dhi = 1, .help = "below it: allow (default: the classifier's own)"},
    {.name = "block_threshold", .type = OPT_DOUBLE, .dlo = 0, .dhi = 1, .help = "from it: block (default: the classifier's own)"},
    O_INT("batch_size", "8", 1, 1024, "--jsonl exchanges scored per batch"),
    O_THREADS, O_END};
const cli_command cmd_classify = {"classify", "ModernBERT exchange classifier decision (JSON) for an exchange, a JSONL file or token ids",
                                  "--classifier_dir is required; give one of --prompt [--response], --jsonl or --input_ids. Prints the MVP's\n"
                                  "decision: verdict (allow / uncertain / block), score, reason, thresholds, label_scores.",
                                  classify_opts, run_classify};


static int run_train_exchange_classifier(const cli_args *o) {
  oc_cls_train_opts t;
  oc_cls_train_defaults(&t);
  oc_error err;
  char *dir = NULL;
  t.epochs = arg_int(o, "epochs");
  t.batch_size = arg_int(o, "batch_size");
  t.learning_rate = arg_double(o, "learning_rate");
  t.weight_decay = arg_double(o, "weight_decay");
  t.max_length = arg_int(o, "max_length");
  t.validation_size = arg_double(o, "validation_size");
  t.seed = (uint64_t)arg_i64(o, "seed");
  t.prefix_augment = arg_flag(o, "prefix_augment");
  t.prefix_copies = arg_int(o, "prefix_copies");
  t.allow_threshold = arg_double(o, "allow_threshold");
  t.block_threshold = arg_double(o, "block_threshold");
  t.logging_steps = arg_int(o, "logging_steps");
  t.save_steps = arg_int(o, "save_steps");
  t.stop_after_steps = arg_i64(o, "stop_after_steps");
  t.max_grad_norm = arg_double(o, "max_grad_norm");
  t.model_id = arg_str(o, "model_id");
  t.data_path = arg_str(o, "data_path");
  t.out_dir = arg_str(o, "out_dir");
  t.progress_path = arg_str(o, "progress_path");
  t.resume_from = arg_str(o, "resume_from_checkpoint");
  if (oc_resolve_model(t.model_id, NULL, &dir, &err)) return die(&err);
  t.model_dir = dir;
  cJSON *metrics = NULL;
  int rc = oc_cls_train(&t, &metrics, &err) ? die(&err) : 0;
  if (metrics) {
    if (cli_print_json(metrics, 1, NULL)) rc = 1;
    cJSON_Delete(metrics);
    fprintf(stderr, "wrote %s\n", t.out_dir);
  }
  free(dir);
  return rc;
}

static const opt_spec train_cls_opts[] = {
    O_STR("model_id", "answerdotai/ModernBERT-base", "the ModernBERT to fine-tune (a directory or a Hub id)"),
    O_("data_path", OPT_IN, OPT_REQUIRED, NULL, "JSONL {\"prompt\", \"response\", \"label\"} a line (labels 0/1 or 0/1/2)"),
    O_("out_dir", OPT_OUTDIR, OPT_REQUIRED, NULL, "gets a transformers-loadable classifier directory and checkpoint-N/"),
    O_INT("epochs", "5", 1, 1000000, "training epochs"),
    O_INT("batch_size", "8", 1, 1024, "batch size"),
    O_DBL("learning_rate", "2e-5", 1e-12, 1, "AdamW learning rate (linear decay, no warmup)"),
    O_DBL("weight_decay", "0.01", 0, 10, "AdamW weight decay (not on biases and norms)"),
    O_INT("max_length", "512", 2, 1 << 20, "truncate each exchange to this many tokens"),
    O_DBL("validation_size", "0.2", 0, 0.9, "stratified validation fraction"),
    O_I64("seed", "0", 0, INT64_MAX, "seed of the split, the augmentation and the training"),
    O_FLAG("prefix_augment", "add copies whose response is cut to a random 20-80 %"),
    O_INT("prefix_copies", "1", 1, 1000, "cut copies per example (with --prefix_augment)"),
    O_DBL("allow_threshold", "0.35", 0, 1, "written to classifier_config.json"),
    O_DBL("block_threshold", "0.65", 0, 1, "written to classifier_config.json"),
    O_INT("logging_steps", "50", 0, 1 << 30, "log the loss every N steps (0 = never)"),
    O_INT("save_steps", "0", 0, 1 << 30, "a checkpoint every N steps (0 = none)"),
    {.name = "resume_from_checkpoint", .type = OPT_STR, .metavar = "DIR|latest", .help = "continue from a checkpoint (latest: the newest in --out_dir)"},
    O_OUT("progress_path", NULL, "a JSON progress file, rewritten atomically"),
    O_I64("stop_after_steps", "0", 0, INT64_MAX, "stop after N updates, the schedule kept (0 = run to the end)"),
    O_DBL("max_grad_norm", "1.0", 0, 1e30, "gradient-norm clip"),
    O_THREADS, O_END};
const cli_command cmd_train_exchange_classifier = {"train-exchange-classifier", "full fine-tuning of ModernBERT (HF Trainer defaults), checkpoints, resume",
                                                   "Prints the validation metrics.", train_cls_opts, run_train_exchange_classifier};

static int run_calibrate_exchange_classifier(const cli_args *o) {
  oc_error err;
  oc_classifier *c = NULL;
  oc_dataset ds = {0};
  int rc = 1, bs = arg_int(o, "batch_size");
  double vs = arg_double(o, "validation_size"), mx = arg_double(o, "max_safe_compliance_block_rate");
  int64_t seed = arg_i64(o, "seed");
  if (oc_classifier_open(arg_str(o, "classifier_dir"), 0, NAN, NAN, &c, &err) || oc_dataset_load(arg_str(o, "data_path"), 0, (uint64_t)seed, &ds, &err)) {
    die(&err);
    goto done;
  }
  oc_progress prog;
  oc_progress_start(&prog, "calibrate", "examples", 0, NULL);
  cJSON *rep = NULL;
  oc_calib_row *rows = NULL;
  int nr = 0;
  int crc = oc_calibrate_classifier(c, &ds, vs, (uint64_t)seed, mx, bs, &prog, &rep, &rows, &nr, &err);
  oc_progress_end(&prog, NULL);
  int print_failed = !crc && cli_print_json(rep, 1, NULL);
  if (!crc && !print_failed && arg_given(o, "out_path")) {
    char *svg = oc_path_sibling(arg_str(o, "out_path"), ".svg");
    if (!(crc = oc_calibration_save(arg_str(o, "out_path"), rep, rows, nr, &err))) fprintf(stderr, "wrote %s and %s\n", arg_str(o, "out_path"), svg);
    free(svg);
  }
  rc = crc ? die(&err) : print_failed;
  free(rows);
  cJSON_Delete(rep);
done:
  oc_dataset_free(&ds);
  oc_classifier_free(c);
  return rc;
}

static const opt_spec calibrate_opts[] = {
    O_("classifier_dir", OPT_STR, OPT_REQUIRED, NULL, "the classifier: a directory or a Hub id"),
    O_("data_path", OPT_IN, OPT_REQUIRED, NULL, "JSONL {\"prompt\", \"response\", \"label\"} a line"),
    O_DBL("validation_size", "0.1", 0, 1, "the stratified validation fraction scored (1 = the whole file)"),
    O_I64("seed", "42", 0, INT64_MAX, "seed of the split"),
    O_DBL("max_safe_compliance_block_rate", "0.02", 0, 1, "the recommended threshold blocks at most this share of safe compliances"),
    O_OUT("out_path", NULL, "also write the report here, with an SVG of the sweep beside it"),
    O_INT("batch_size", "8", 1, 1024, "exchanges scored per batch"),
    O_THREADS, O_END};
const cli_command cmd_calibrate_exchange_classifier = {"calibrate-exchange-classifier", "block-threshold sweep on a validation split (JSON + SVG)",
                                                       "Prints {recommended, default_0_65, strict_0_9999}.", calibrate_opts,
                                                       run_calibrate_exchange_classifier};


static int run_build_three_class(const cli_args *o) {
  oc_error err;
  oc_threeclass_stats st;
  if (oc_build_three_class(arg_str(o, "input"), arg_str(o, "output"), &st, &err)) return die(&err);
  printf("{\"rows\": %lld, \"written\": %lld, \"duplicates_dropped\": %lld, \"safe_compliance\": %lld, \"safe_refusal\": %lld, "
         "\"unsafe_compliance\": %lld}\n",
         (long long)st.rows, (long long)st.written, (long long)st.duplicates, (long long)st.by_label[0], (long long)st.by_label[1],
         (long long)st.by_label[2]);
  return 0;
}

static const opt_spec three_class_opts[] = {
    O_("input", OPT_IN, OPT_REQUIRED, NULL, "binary exchanges, JSONL {\"prompt\", \"response\", \"label\"} a line"),
    O_("output", OPT_OUT, OPT_REQUIRED, NULL, "the three-class JSONL to write"),
    O_END};
const cli_command cmd_build_three_class = {"build-three-class-classifier-data", "binary exchanges -> safe_compliance / safe_refusal / unsafe_compliance",
                                           NULL, three_class_opts, run_build_three_class};
