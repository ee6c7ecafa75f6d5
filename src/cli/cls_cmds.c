/* classify, train-exchange-classifier, calibrate-exchange-classifier, build-three-class-classifier-data */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/classifier.h"
#include "opencon/hub.h"
#include "opencon/probe.h"
#include "opts.h"

static int resolve(const char *id, char **dir, oc_error *err) { return oc_resolve_model(id, NULL, dir, err); }

static int load_classifier(const opts *o, oc_classifier **c, oc_error *err) {
  char *dir;
  if (resolve(opt(o, "classifier_dir"), &dir, err)) return -1;
  int rc = oc_classifier_load(dir, c, err);
  free(dir);
  if (rc) return -1;
  double a, b;
  if (opt_double(o, "allow_threshold", (*c)->allow_threshold, 0, 1, &a) || opt_double(o, "block_threshold", (*c)->block_threshold, 0, 1, &b))
    return oc_fail(err, "bad threshold flag");
  return oc_classifier_set_thresholds(*c, a, b, err);
}

static void print_json(cJSON *o) {
  char *s = cJSON_PrintUnformatted(o);
  printf("%s\n", s);
  free(s);
  cJSON_Delete(o);
}

int cmd_classify(int argc, char **argv) {
  static const char *const known[] = {"classifier_dir", "prompt", "response", "jsonl", "input_ids", "allow_threshold", "block_threshold",
                                      "threads", "batch_size", NULL};
  opts o;
  if (cli_begin(argc, argv, &o, known, NULL)) return 2;
  oc_error err;
  oc_classifier *c = NULL;
  int rc = 2, bs;
  if (opt_int(&o, "batch_size", 8, 1, 1024, &bs)) goto done;
  if (!opt(&o, "classifier_dir") || (!opt(&o, "prompt") && !opt(&o, "jsonl") && !opt(&o, "input_ids"))) {
    fprintf(stderr, "usage: opencon classify --classifier_dir C (--prompt P --response R | --jsonl IN.jsonl | --input_ids 50281,...)\n"
                    "       [--allow_threshold A] [--block_threshold B] [--batch_size 8]\n");
    goto done;
  }
  rc = 1;
  if (load_classifier(&o, &c, &err)) { die(&err); goto done; }
  oc_decision d;
  if (opt(&o, "input_ids")) {
    int64_t *v;
    int n;
    if (oc_parse_int_list(opt(&o, "input_ids"), &v, &n, &err) || n == 0) { if (!n) oc_fail(&err, "empty"); oc_wrap(&err, "--input_ids"); die(&err); goto done; }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(v[i] < INT32_MIN || v[i] > INT32_MAX ? -1 : v[i]);
    free(v);
    int src = oc_classifier_score_ids(c, ids, n, &d, &err);
    free(ids);
    if (src) { die(&err); goto done; }
    print_json(oc_decision_json(c, &d, 1));
  } else if (opt(&o, "jsonl")) {
    FILE *f = fopen(opt(&o, "jsonl"), "rb");
    if (!f) { oc_fail_code(&err, OC_ERR_IO, "%s: cannot open", opt(&o, "jsonl")); die(&err); goto done; }
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
        cJSON *row = cJSON_ParseWithLength(line, (size_t)got);
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(row, "prompt"), *r = cJSON_GetObjectItemCaseSensitive(row, "response");
        int blank = row == NULL && strspn(line, " \t\r\n") == (size_t)got;
        if (blank) continue;
        if (!cJSON_IsString(p) || (r && !cJSON_IsString(r))) {
          fprintf(stderr, "error: %s:%lld: expected an object with string \"prompt\" (and \"response\")\n", opt(&o, "jsonl"), (long long)ln);
          cJSON_Delete(row);
          ok = 0;
          break;
        }
        pr[n] = strdup(p->valuestring);
        rs[n] = strdup(r ? r->valuestring : "");
        lines[n++] = ln;
        cJSON_Delete(row);
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
    if (oc_classifier_score(c, opt(&o, "prompt"), opt(&o, "response") ? opt(&o, "response") : "", &d, &err)) { die(&err); goto done; }
    print_json(oc_decision_json(c, &d, 0));
  }
  rc = 0;
done:
  oc_classifier_free(c);
  free_opts(&o);
  return rc;
}

int cmd_train_exchange_classifier(int argc, char **argv) {
  static const char *const known[] = {"model_id", "data_path", "out_dir", "epochs", "batch_size", "learning_rate", "weight_decay", "max_length",
                                      "validation_size", "seed", "prefix_augment", "prefix_copies", "allow_threshold", "block_threshold",
                                      "logging_steps", "save_steps", "resume_from_checkpoint", "progress_path", "threads", "stop_after_steps",
                                      "max_grad_norm", NULL};
  static const char *const flags[] = {"prefix_augment", NULL};
  opts o;
  if (cli_begin(argc, argv, &o, known, flags)) return 2;
  oc_cls_train_opts t;
  oc_cls_train_defaults(&t);
  oc_error err;
  int rc = 2;
  int64_t seed;
  char *dir = NULL;
  if (opt_int(&o, "epochs", 5, 1, 1000000, &t.epochs) || opt_int(&o, "batch_size", 8, 1, 1024, &t.batch_size) ||
      opt_double(&o, "learning_rate", 2e-5, 1e-12, 1, &t.learning_rate) || opt_double(&o, "weight_decay", 0.01, 0, 10, &t.weight_decay) ||
      opt_int(&o, "max_length", 512, 2, 1 << 20, &t.max_length) || opt_double(&o, "validation_size", 0.2, 0, 0.9, &t.validation_size) ||
      opt_i64(&o, "seed", 0, 0, INT64_MAX, &seed) || opt_int(&o, "prefix_copies", 1, 1, 1000, &t.prefix_copies) ||
      opt_double(&o, "allow_threshold", 0.35, 0, 1, &t.allow_threshold) || opt_double(&o, "block_threshold", 0.65, 0, 1, &t.block_threshold) ||
      opt_int(&o, "logging_steps", 50, 0, 1 << 30, &t.logging_steps) || opt_int(&o, "save_steps", 0, 0, 1 << 30, &t.save_steps) ||
      opt_i64(&o, "stop_after_steps", 0, 0, INT64_MAX, &t.stop_after_steps) || opt_double(&o, "max_grad_norm", 1.0, 0, 1e30, &t.max_grad_norm))
    goto done;
  t.seed = (uint64_t)seed;
  t.prefix_augment = opt(&o, "prefix_augment") != NULL;
  t.model_id = opt(&o, "model_id") ? opt(&o, "model_id") : "answerdotai/ModernBERT-base";
  t.data_path = opt(&o, "data_path");
  t.out_dir = opt(&o, "out_dir");
  t.progress_path = opt(&o, "progress_path");
  t.resume_from = opt(&o, "resume_from_checkpoint");
  if (!t.data_path || !t.out_dir) {
    fprintf(stderr, "usage: opencon train-exchange-classifier --model_id answerdotai/ModernBERT-base --data_path D.jsonl --out_dir DIR\n"
                    "       [--epochs 5] [--batch_size 8] [--learning_rate 2e-5] [--weight_decay 0.01] [--max_length 512]\n"
                    "       [--validation_size 0.2] [--seed 0] [--prefix_augment] [--prefix_copies 1] [--allow_threshold 0.35]\n"
                    "       [--block_threshold 0.65] [--logging_steps 50] [--save_steps N] [--resume_from_checkpoint DIR|latest]\n"
                    "       [--progress_path P]\n");
    goto done;
  }
  rc = 1;
  if (resolve(t.model_id, &dir, &err)) { die(&err); goto done; }
  t.model_dir = dir;
  cJSON *metrics = NULL;
  if (oc_cls_train(&t, &metrics, &err)) { die(&err); goto done; }
  if (metrics) {
    char *s = cJSON_Print(metrics);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(metrics);
    fprintf(stderr, "wrote %s\n", t.out_dir);
  }
  rc = 0;
done:
  free(dir);
  free_opts(&o);
  return rc;
}

int cmd_calibrate_exchange_classifier(int argc, char **argv) {
  static const char *const known[] = {"classifier_dir", "data_path", "validation_size", "seed", "max_safe_compliance_block_rate", "out_path",
                                      "threads", "batch_size", NULL};
  opts o;
  if (cli_begin(argc, argv, &o, known, NULL)) return 2;
  oc_error err;
  oc_classifier *c = NULL;
  oc_dataset ds = {0};
  int rc = 2, bs;
  double vs, mx;
  int64_t seed;
  if (opt_double(&o, "validation_size", 0.1, 0, 1, &vs) || opt_i64(&o, "seed", 42, 0, INT64_MAX, &seed) ||
      opt_double(&o, "max_safe_compliance_block_rate", 0.02, 0, 1, &mx) || opt_int(&o, "batch_size", 8, 1, 1024, &bs))
    goto done;
  if (!opt(&o, "classifier_dir") || !opt(&o, "data_path")) {
    fprintf(stderr, "usage: opencon calibrate-exchange-classifier --classifier_dir C --data_path D.jsonl [--validation_size 0.1] [--seed 42]\n"
                    "       [--max_safe_compliance_block_rate 0.02] [--out_path report.json]\n");
    goto done;
  }
  rc = 1;
  if (load_classifier(&o, &c, &err) || oc_dataset_load(opt(&o, "data_path"), 0, (uint64_t)seed, &ds, &err)) { die(&err); goto done; }
  int three = ds.max_label == 2;
  int32_t *y = malloc(sizeof(int32_t) * (size_t)ds.n);
  for (int i = 0; i < ds.n; i++) y[i] = ds.ex[i].label;
  int64_t *tr = NULL, *va = NULL;
  int nt, nv;
  if (vs >= 1) { /* the whole file */
    va = malloc(sizeof(int64_t) * (size_t)ds.n);
    for (int i = 0; i < ds.n; i++) va[i] = i;
    nv = ds.n;
  } else if (oc_stratified_split(y, ds.n, vs, (uint64_t)seed, &tr, &nt, &va, &nv, &err)) { free(y); die(&err); goto done; }
  double *scores = malloc(sizeof(double) * (size_t)(nv ? nv : 1));
  int32_t *yv = malloc(sizeof(int32_t) * (size_t)(nv ? nv : 1));
  oc_decision *dec = malloc(sizeof *dec * (size_t)bs);
  const char **pr = malloc(sizeof(char *) * (size_t)bs), **rs = malloc(sizeof(char *) * (size_t)bs);
  oc_progress prog;
  oc_progress_start(&prog, "calibrate", "examples", nv, NULL);
  int ok = 1;
  for (int s0 = 0; s0 < nv && ok; s0 += bs) {
    int nb = nv - s0 < bs ? nv - s0 : bs;
    for (int j = 0; j < nb; j++) { pr[j] = ds.ex[va[s0 + j]].prompt; rs[j] = ds.ex[va[s0 + j]].response; yv[s0 + j] = y[va[s0 + j]]; }
    if (oc_classifier_score_batch(c, pr, rs, nb, dec, &err)) { ok = 0; break; }
    for (int j = 0; j < nb; j++) scores[s0 + j] = dec[j].score;
    oc_progress_update(&prog, s0 + nb);
  }
  oc_progress_end(&prog, NULL);
  if (ok) {
    oc_calib_row *rows = NULL;
    int nr = 0;
    cJSON *rep = oc_calibrate(scores, yv, nv, three, mx, &rows, &nr);
    char *js = cJSON_Print(rep);
    printf("%s\n", js);
    if (opt(&o, "out_path")) {
      const char *op = opt(&o, "out_path");
      char *svg = oc_path_sibling(op, ".svg");
      double *x = malloc(sizeof(double) * (size_t)nr), *f1 = malloc(sizeof(double) * (size_t)nr), *br = malloc(sizeof(double) * (size_t)nr);
      for (int i = 0; i < nr; i++) { x[i] = rows[i].threshold; f1[i] = rows[i].f1; br[i] = rows[i].safe_compliance_block_rate; }
      const char *names[2] = {"F1", "safe-compliance block rate"};
      const double *ys[2] = {f1, br};
      remove(svg); /* a plot beside a report is always that report's: removed before the report is replaced */
      if (oc_write_file_atomic(op, js, strlen(js), &err) ||
          oc_svg_plot(svg, "Exchange classifier: block threshold sweep (validation)", "block threshold", x, NULL, nr, 2, names, ys, &err))
        ok = 0;
      else fprintf(stderr, "wrote %s and %s\n", op, svg);
      free(x); free(f1); free(br); free(svg);
    }
    free(js);
    free(rows);
    cJSON_Delete(rep);
  }
  if (!ok) die(&err);
  free(y); free(tr); free(va); free(scores); free(yv); free(dec); free(pr); free(rs);
  rc = ok ? 0 : 1;
done:
  oc_dataset_free(&ds);
  oc_classifier_free(c);
  free_opts(&o);
  return rc;
}

int cmd_build_three_class(int argc, char **argv) {
  static const char *const known[] = {"input", "output", NULL};
  opts o;
  if (cli_begin(argc, argv, &o, known, NULL)) return 2;
  int rc = 2;
  if (!opt(&o, "input") || !opt(&o, "output")) {
    fprintf(stderr, "usage: opencon build-three-class-classifier-data --input IN.jsonl --output OUT.jsonl\n");
    goto done;
  }
  oc_error err;
  oc_threeclass_stats st;
  if (oc_build_three_class(opt(&o, "input"), opt(&o, "output"), &st, &err)) { rc = die(&err); goto done; }
  printf("{\"rows\": %lld, \"written\": %lld, \"duplicates_dropped\": %lld, \"safe_compliance\": %lld, \"safe_refusal\": %lld, "
         "\"unsafe_compliance\": %lld}\n",
         (long long)st.rows, (long long)st.written, (long long)st.duplicates, (long long)st.by_label[0], (long long)st.by_label[1],
         (long long)st.by_label[2]);
  rc = 0;
done:
  free_opts(&o);
  return rc;
}
