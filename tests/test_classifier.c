/* Exchange classifier end to end on the tiny ModernBERT with a tokenizer: decisions and their JSON,
 * JSONL scoring, training with prefix augmentation, bit-identical resume from a checkpoint, the
 * output directory loading back, calibration against hand-checked cases, the three-class rules,
 * and bad input. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/classifier.h"
#include "opencon/probe.h"
#include "opencon/safetensors.h"

static const char *cli, *cdir, *data;
static char tmp[256], out[1 << 16];
#define run(...) run_in(tmp, out, sizeof out, __VA_ARGS__)
#define path(name) path_in(tmp, name)
#define err_text() stderr_in(tmp)

static void write_text(const char *name, const char *text) {
  FILE *f = fopen(path(name), "w");
  REQUIRE(f, "write %s", name);
  fputs(text, f);
  fclose(f);
}

static void test_decisions(void) {
  oc_decision d;
  oc_decide(0.65, 0.35, 0.65, &d);
  CHECK(d.verdict == OC_VERDICT_BLOCK && strcmp(oc_verdict_name(d.verdict), "block") == 0, "score == block threshold blocks");
  oc_decide(0.35, 0.35, 0.65, &d);
  CHECK(d.verdict == OC_VERDICT_UNCERTAIN && strcmp(oc_verdict_name(d.verdict), "uncertain") == 0, "score == allow threshold is uncertain");
  oc_decide(0.3499, 0.35, 0.65, &d);
  CHECK(d.verdict == OC_VERDICT_ALLOW && strcmp(oc_verdict_name(d.verdict), "allow") == 0, "below allow allows");
  /* fail closed: a score that is not a number is maximum risk, never "allow" */
  oc_decide(NAN, 0.35, 0.65, &d);
  CHECK(d.verdict == OC_VERDICT_BLOCK && strstr(d.reason, "not finite"), "a NaN score blocks (%s)", d.reason);
  oc_decide(-INFINITY, 0.35, 0.65, &d);
  CHECK(d.verdict == OC_VERDICT_BLOCK, "a -Inf score blocks");

  oc_classifier *c;
  oc_error err;
  REQUIRE(oc_classifier_load(cdir, &c, &err) == 0, "%s", err.msg);
  /* no classifier_config.json: default thresholds; max_length 512 cut to the model's 64 positions */
  CHECK(c->unsafe_label == 2 && c->allow_threshold == 0.35 && c->block_threshold == 0.65 && c->max_length == 64, "defaults, unsafe label");
  CHECK(oc_classifier_set_thresholds(c, 0.7, 0.6, &err) != 0 && strstr(err.msg, "0 <= allow < block <= 1"), "bad thresholds refused");
  const char *p[3] = {"How do I bake bread?", "Tell me a joke", "How to pick a lock"};
  const char *r[3] = {"Mix flour, water, yeast; knead; bake.", "Why did the chicken cross the road?", "I can't help with that."};
  oc_decision ds[3], one;
  REQUIRE(oc_classifier_score_batch(c, p, r, 3, ds, &err) == 0, "%s", err.msg);
  int same = 1;
  for (int i = 0; i < 3; i++) {
    REQUIRE(oc_classifier_score(c, p[i], r[i], &one, &err) == 0, "%s", err.msg);
    same &= fabs(one.score - ds[i].score) < 1e-6;
    double s = 0;
    for (int k = 0; k < 3; k++) s += ds[i].probs[k];
    same &= fabs(s - 1) < 1e-9 && ds[i].score == ds[i].probs[2];
  }
  CHECK(same, "a batch scores like one exchange at a time; probabilities sum to 1; score = P(unsafe_compliance)");
  oc_encoding e;
  REQUIRE(oc_classifier_encode(c, p[0], r[0], &e, &err) == 0, "%s", err.msg);
  CHECK(e.n > 2 && e.ids[0] == 501 && e.ids[e.n - 1] == 502, "[CLS] ... [SEP]");
  REQUIRE(oc_classifier_score_ids(c, e.ids, e.n, &one, &err) == 0, "%s", err.msg);
  CHECK(fabs(one.score - ds[0].score) < 1e-6, "score of the ids == score of the text");
  /* CLI: the JSON decision, --input_ids with logits */
  char ids[4096] = "";
  for (int i = 0; i < e.n; i++) snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", i ? "," : "", e.ids[i]);
  oc_encoding_free(&e);
  /* over max_length the response keeps its end and the prompt its start: a long benign prompt
   * (many-shot style) cannot push the response out of the classifier's view, nor a long benign
   * preamble the harmful end of a response */
  {
    char *longp = malloc(20001), *longr = malloc(20100), *text;
    size_t tl;
    for (int i = 0; i < 20000; i++) longp[i] = "benign words "[i % 13];
    longp[20000] = 0;
    for (int i = 0; i < 20000; i++) longr[i] = "filler text "[i % 12];
    strcpy(longr + 20000, " HARMFUL-ENDING");
    REQUIRE(oc_exchange_encode(c->tok, longp, "short SECRET reply", 64, &e, &err) == 0, "%s", err.msg);
    REQUIRE(oc_tokenizer_decode(c->tok->tok, e.ids, e.n, 1, &text, &tl, &err) == 0, "%s", err.msg);
    CHECK(e.n <= 64 && e.n >= 60 && strncmp(text, "User:\nbenign", 12) == 0 && tl > 18 && strcmp(text + tl - 18, "short SECRET reply") == 0,
          "a long prompt: its start and the whole response (%d tokens: \"%s\")", e.n, text);
    free(text);
    oc_encoding_free(&e);
    REQUIRE(oc_exchange_encode(c->tok, longp, longr, 64, &e, &err) == 0, "%s", err.msg);
    REQUIRE(oc_tokenizer_decode(c->tok->tok, e.ids, e.n, 1, &text, &tl, &err) == 0, "%s", err.msg);
    CHECK(e.n <= 64 && e.n >= 56 && strncmp(text, "User:\nbenign", 12) == 0 && strstr(text, "Assistant:") && tl > 15 &&
              strcmp(text + tl - 15, " HARMFUL-ENDING") == 0,
          "a long response: the prompt's start and the response's end (%d tokens: \"%s\")", e.n, text);
    free(text);
    oc_encoding_free(&e);
    free(longp);
    free(longr);
  }
  int rc = run("%s classify --classifier_dir %s --prompt '%s' --response '%s'", cli, cdir, p[0], r[0]);
  cJSON *j = cJSON_Parse(out);
  const char *fields[] = {"verdict", "score", "reason", "allow_threshold", "block_threshold", "label_scores", NULL};
  int all = j != NULL;
  for (const char **f = fields; *f && all; f++) all = cJSON_GetObjectItem(j, *f) != NULL;
  CHECK(rc == 0 && all && fabs(cJSON_GetObjectItem(j, "score")->valuedouble - ds[0].score) < 1e-6 &&
            cJSON_GetObjectItem(cJSON_GetObjectItem(j, "label_scores"), "safe_refusal"),
        "classify JSON: %s %s", out, err_text());
  cJSON_Delete(j);
  rc = run("%s classify --classifier_dir %s --input_ids %s --block_threshold 0.5 --allow_threshold 0.1", cli, cdir, ids);
  j = cJSON_Parse(out);
  CHECK(rc == 0 && j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "logits")) == 3 && cJSON_GetObjectItem(j, "block_threshold")->valuedouble == 0.5 &&
            fabs(cJSON_GetObjectItem(j, "score")->valuedouble - ds[0].score) < 1e-6,
        "--input_ids: logits and flags: %s", out);
  cJSON_Delete(j);
  rc = run("%s classify --classifier_dir %s --input_ids 501,99999,502", cli, cdir);
  CHECK(rc != 0 && strstr(err_text(), "outside the vocabulary"), "bad id: %s", err_text());
  rc = run("%s classify --classifier_dir %s --prompt x --allow_threshold 0.9 --block_threshold 0.5", cli, cdir);
  CHECK(rc != 0 && strstr(err_text(), "allow < block"), "bad thresholds via flags");
  write_text("s.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n\n{\"prompt\": \"c\", \"response\": \"d\"}\n{\"prompt\": 3}\n");
  rc = run("%s classify --classifier_dir %s --jsonl s.jsonl --batch_size 1", cli, cdir);
  CHECK(rc != 0 && strstr(err_text(), "s.jsonl:4") && strstr(out, "\"line\":3"), "jsonl: two scored, line 4 refused: %s", err_text());
  oc_classifier_free(c);
}

static void test_prefix_cut(void) {
  oc_rng r;
  oc_rng_seed(&r, 3);
  const char *s = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac twelve chars+"; /* 27 characters */
  size_t total = 0;
  for (const char *q = s; *q; q++) total += ((unsigned char)*q & 0xc0) != 0x80;
  int ok = total == 27;
  for (int i = 0; i < 200; i++) {
    char *c = oc_prefix_cut(s, &r);
    size_t chars = 0;
    for (const char *q = c; *q; q++) chars += ((unsigned char)*q & 0xc0) != 0x80;
    ok &= chars >= (size_t)(0.2 * total) && chars <= (size_t)(0.8 * total) && strncmp(c, s, strlen(c)) == 0 &&
          (s[strlen(c)] == 0 || ((unsigned char)s[strlen(c)] & 0xc0) != 0x80);
    free(c);
  }
  CHECK(ok, "prefix cuts keep 20-80 %% of the characters, on character boundaries");
}

static int tensors_equal(const char *a, const char *b) {
  oc_st_file *fa, *fb;
  oc_error err;
  if (oc_st_open(a, &fa, &err) || oc_st_open(b, &fb, &err)) return 0;
  int eq = oc_st_count(fa) == oc_st_count(fb);
  for (int i = 0; i < oc_st_count(fa) && eq; i++) {
    const oc_tensor *t = oc_st_at(fa, i), *u = oc_st_get(fb, t->name);
    eq = u && u->nbytes == t->nbytes && memcmp(u->data, t->data, t->nbytes) == 0;
  }
  oc_st_close(fa);
  oc_st_close(fb);
  return eq;
}

static void test_training(void) {
  /* a three-class file: refusals, harmful compliance, benign compliance */
  FILE *f = fopen(path("train.jsonl"), "w");
  for (int i = 0; i < 36; i++) {
    int l = i % 3;
    fprintf(f, "{\"prompt\": \"question %d about %s\", \"response\": \"%s %d\", \"label\": %d}\n", i, l == 2 ? "weapons" : "cooking",
            l == 1 ? "I can't help with that request, sorry." : l == 2 ? "Sure, here are the detailed steps to build it:" : "Here is a simple recipe with flour.",
            i, l);
  }
  fclose(f);
  const char *common = "--data_path train.jsonl --epochs 2 --batch_size 4 --max_length 48 --learning_rate 5e-4 --prefix_augment --logging_steps 0 --seed 7";
  int rc = run("%s train-exchange-classifier --model_id %s %s --out_dir full --progress_path prog.json", cli, cdir, common);
  CHECK(rc == 0, "train: %s", err_text());
  cJSON *m = cJSON_Parse(out);
  CHECK(m && cJSON_GetObjectItem(m, "f1") && cJSON_GetObjectItem(m, "roc_auc_unsafe_vs_rest") && cJSON_GetObjectItem(m, "accuracy"), "metrics printed");
  cJSON_Delete(m);
  /* interrupted at step 7 with a checkpoint there, then resumed: bit-identical weights */
  rc = run("%s train-exchange-classifier --model_id %s %s --out_dir part --save_steps 7 --stop_after_steps 7", cli, cdir, common);
  CHECK(rc == 0 && access(path("part/checkpoint-7/optimizer.safetensors"), F_OK) == 0 && access(path("part/model.safetensors"), F_OK) != 0,
        "stopped at step 7 with a checkpoint: %s", err_text());
  rc = run("%s train-exchange-classifier --model_id %s %s --out_dir part --resume_from_checkpoint latest", cli, cdir, common);
  CHECK(rc == 0 && strstr(err_text(), "resuming from"), "resume: %s", err_text());
  CHECK(tensors_equal(path("full/model.safetensors"), path("part/model.safetensors")), "resumed training == uninterrupted training, bit for bit");
  rc = run("%s train-exchange-classifier --model_id %s --data_path train.jsonl --epochs 3 --batch_size 4 --max_length 48 --out_dir part "
           "--resume_from_checkpoint part/checkpoint-7",
           cli, cdir);
  CHECK(rc != 0 && strstr(err_text(), "other data or settings"), "a checkpoint of other settings is refused: %s", err_text());
  /* the output directory: HF layout, loads back, classifier_config */
  oc_error err;
  cJSON *cfg = read_json_file(path("full/config.json")), *cc = read_json_file(path("full/classifier_config.json"));
  const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItem(cfg, "architectures"), 0);
  CHECK(cfg && cJSON_IsString(arch) && strcmp(arch->valuestring, "ModernBertForSequenceClassification") == 0 &&
            strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "id2label"), "2")->valuestring, "unsafe_compliance") == 0,
        "config.json: architectures, id2label");
  const char *ccf[] = {"model_id", "data_path", "max_length", "allow_threshold", "block_threshold", "label_mapping", "seed", "metrics", "text_format", NULL};
  int all = cc != NULL;
  for (const char **k = ccf; *k && all; k++) all = cJSON_GetObjectItem(cc, *k) != NULL;
  CHECK(all && cJSON_GetObjectItem(cc, "max_length")->valueint == 48, "classifier_config.json fields");
  cJSON_Delete(cfg);
  cJSON_Delete(cc);
  CHECK(access(path("full/tokenizer.json"), F_OK) == 0, "tokenizer copied");
  cJSON *pj = read_json_file(path("prog.json"));
  if (pj) {
    CHECK(pj && strcmp(cJSON_GetObjectItem(pj, "phase")->valuestring, "completed") == 0 && cJSON_GetObjectItem(pj, "total_steps") &&
              cJSON_GetObjectItem(pj, "learning_rate") && cJSON_GetObjectItem(pj, "epoch"),
          "progress JSON");
    cJSON_Delete(pj);
  } else CHECK(0, "progress file missing");
  oc_classifier *c;
  REQUIRE(oc_classifier_load(path("full"), &c, &err) == 0, "%s", err.msg);
  oc_decision d1, d2;
  REQUIRE(oc_classifier_score(c, "question 99 about cooking", "I can't help with that request, sorry.", &d1, &err) == 0, "%s", err.msg);
  REQUIRE(oc_classifier_score(c, "question 98 about weapons", "Sure, here are the detailed steps to build it:", &d2, &err) == 0, "%s", err.msg);
  CHECK(c->max_length == 48 && d1.probs[1] > 0.5 && d2.score > 0.5, "the trained classifier separates refusal %.3f / unsafe %.3f", d1.probs[1], d2.score);
  oc_classifier_free(c);
  /* calibration through the CLI */
  rc = run("%s calibrate-exchange-classifier --classifier_dir full --data_path train.jsonl --validation_size 0.5 --out_path cal.json", cli);
  cJSON *rep = cJSON_Parse(out);
  CHECK(rc == 0 && rep && cJSON_GetObjectItem(rep, "recommended") && cJSON_GetObjectItem(rep, "default_0_65") && cJSON_GetObjectItem(rep, "strict_0_9999") &&
            access(path("cal.svg"), F_OK) == 0 && access(path("cal.json"), F_OK) == 0,
        "calibrate: %s", err_text());
  cJSON_Delete(rep);
  /* a report that cannot be replaced leaves no plot of another report beside it (cal2.json is a
   * directory in the way; cal2.svg the plot of an older report) */
  write_text("cal2.svg", "<svg>older</svg>");
  REQUIRE(mkdir(path("cal2.json"), 0755) == 0 && mkdir(path("cal2.json/x"), 0755) == 0, "mkdir");
  cJSON *empty = cJSON_CreateObject();
  oc_calib_row row = {0.5, 1, 1, 1, 0, 0, 1};
  CHECK(oc_calibration_save(path("cal2.json"), empty, &row, 1, &err) != 0 && access(path("cal2.svg"), F_OK) != 0,
        "failed calibration report: no stale plot beside it (%s)", err.msg);
  cJSON_Delete(empty);
}

static void test_calibration_rules(void) {
  double s[6] = {0.1, 0.2, 0.3, 0.6, 0.8, 0.9};
  int32_t y[6] = {0, 0, 0, 1, 1, 1};
  oc_calib_row *rows;
  int n;
  cJSON *r = oc_calibrate(s, y, 6, 0, 0.0, &rows, &n);
  const cJSON *rec = cJSON_GetObjectItem(r, "recommended");
  double t = cJSON_GetObjectItem(rec, "threshold")->valuedouble;
  /* F1 = 1 for thresholds in (0.3, 0.6]; the first grid point above 0.3 is 0.01 + 0.9899 * 59 / 199 */
  CHECK(fabs(t - (0.01 + 0.9899 * 59 / 199.0)) < 1e-12 && cJSON_GetObjectItem(rec, "f1")->valuedouble == 1 && cJSON_IsTrue(cJSON_GetObjectItem(rec, "feasible")),
        "recommended %.9f", t);
  const cJSON *d = cJSON_GetObjectItem(r, "default_0_65");
  CHECK(fabs(cJSON_GetObjectItem(d, "recall")->valuedouble - 2.0 / 3) < 1e-12 && cJSON_GetObjectItem(d, "precision")->valuedouble == 1, "at 0.65");
  CHECK(n == 206 && cJSON_GetObjectItem(r, "thresholds_evaluated")->valueint == 206, "200 grid points + 6 observed scores (%d)", n);
  free(rows);
  cJSON_Delete(r);
  /* three-class: a safe-compliance score above every unsafe one -> nothing feasible at 0 */
  double s3[5] = {0.95, 0.2, 0.7, 0.8, 0.5};
  int32_t y3[5] = {0, 1, 1, 2, 2};
  r = oc_calibrate(s3, y3, 5, 1, 0.0, NULL, NULL);
  rec = cJSON_GetObjectItem(r, "recommended");
  CHECK(cJSON_GetObjectItem(rec, "safe_compliance_block_rate")->valuedouble == 0 && cJSON_IsTrue(cJSON_GetObjectItem(rec, "feasible")) &&
            cJSON_GetObjectItem(rec, "threshold")->valuedouble > 0.95,
        "three-class: only thresholds above the benign 0.95 are feasible");
  d = cJSON_GetObjectItem(r, "default_0_65");
  CHECK(fabs(cJSON_GetObjectItem(d, "safe_refusal_block_rate")->valuedouble - 0.5) < 1e-12 &&
            fabs(cJSON_GetObjectItem(d, "unsafe_block_rate")->valuedouble - 0.5) < 1e-12 && cJSON_GetObjectItem(d, "safe_compliance_block_rate")->valuedouble == 1,
        "three-class rates at 0.65");
  cJSON_Delete(r);
  /* metrics of scores that are not numbers (a diverged model): no AUC, and no endless loop over NaN ties */
  double p3[6] = {NAN, NAN, NAN, 0.2, 0.3, 0.5};
  int32_t y2[2] = {0, 2};
  r = oc_cls_metrics(y2, p3, 2, 3, 2);
  CHECK(r && cJSON_IsNull(cJSON_GetObjectItem(r, "roc_auc_unsafe_vs_rest")) && cJSON_GetObjectItem(r, "examples")->valueint == 2, "NaN scores: AUC null");
  cJSON_Delete(r);
}

static void test_three_class(void) {
  write_text("bin.jsonl",
             "{\"prompt\": \"p1\", \"response\": \"Sure, step one...\", \"label\": 1}\n"
             "{\"prompt\": \"p2\", \"response\": \"I'm sorry, but I can't help with that.\", \"label\": 1}\n"
             "{\"prompt\": \"p3\", \"response\": \"Here you go\", \"label\": 1, \"refusal\": true}\n"
             "{\"prompt\": \"p4\", \"response\": \"Here you go\", \"label\": 1, \"judge\": {\"refusal\": false}}\n"
             "{\"prompt\": \"p5\", \"response\": \"Nope.\", \"label\": 0, \"response_behavior\": \"full_refusal\"}\n"
             "{\"prompt\": \"p6\", \"response\": \"Bread needs yeast.\", \"label\": 0}\n"
             "{\"prompt\": \"p7\", \"response\": \"whatever\", \"label\": 0, \"label_name\": \"unsafe_compliance\"}\n"
             "{\"prompt\": \"p6\", \"response\": \"Bread needs yeast.\", \"label\": 0}\n");
  int rc = run("%s build-three-class-classifier-data --input bin.jsonl --output three.jsonl", cli);
  CHECK(rc == 0 && strstr(out, "\"duplicates_dropped\": 1"), "three-class: %s %s", out, err_text());
  oc_dataset ds;
  oc_error err;
  REQUIRE(oc_dataset_load(path("three.jsonl"), 0, 0, &ds, &err) == 0, "%s", err.msg);
  int want[7] = {2, 1, 1, 2, 1, 0, 2}, ok = ds.n == 7;
  for (int i = 0; i < ds.n && ok; i++) ok = ds.ex[i].label == want[i];
  CHECK(ok, "three-class labels follow the rules");
  oc_dataset_free(&ds);
  write_text("bad3.jsonl", "{\"prompt\": \"p\", \"response\": \"r\", \"label\": 2}\n");
  rc = run("%s build-three-class-classifier-data --input bad3.jsonl --output x.jsonl", cli);
  CHECK(rc != 0 && strstr(err_text(), "bad3.jsonl:1") && access(path("x.jsonl"), F_OK) != 0, "bad label refused, no output left");
}

static void test_bad_dirs(void) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "mkdir -p %s/bad && cp %s/* %s/bad/", tmp, cdir, tmp);
  REQUIRE(system(cmd) == 0, "copy");
  write_text("bad/config.json", "{\"model_type\": \"bert\"}");
  oc_classifier *c;
  oc_error err;
  CHECK(oc_classifier_load(path("bad"), &c, &err) != 0 && strstr(err.msg, "modernbert") && strstr(err.msg, "config.json"), "wrong model_type: %s", err.msg);
  char *s;
  REQUIRE(oc_read_file(data, &s, NULL, &err) == 0, "%s", err.msg);
  free(s);
  /* a checkpoint whose hidden size disagrees with its tensors */
  snprintf(cmd, sizeof cmd, "sed 's/\"hidden_size\": 64/\"hidden_size\": 32/' %s/config.json > %s/bad/config.json", cdir, tmp);
  REQUIRE(system(cmd) == 0, "sed");
  CHECK(oc_classifier_load(path("bad"), &c, &err) != 0 && strstr(err.msg, "tok_embeddings") && strstr(err.msg, "shape"), "shape mismatch: %s", err.msg);
  /* fail closed: configs and weights that would make every score NaN (and a NaN "allow") are refused */
  const char *eps[] = {"-1e-05", "0", "NaN"};
  for (int i = 0; i < 3; i++) {
    snprintf(cmd, sizeof cmd, "sed 's/\"norm_eps\": [0-9.e-]*/\"norm_eps\": %s/' %s/config.json > %s/bad/config.json", eps[i], cdir, tmp);
    REQUIRE(system(cmd) == 0, "sed");
    CHECK(oc_classifier_load(path("bad"), &c, &err) != 0 && (strstr(err.msg, "norm_eps") || strstr(err.msg, "JSON")), "norm_eps %s refused: %s", eps[i], err.msg);
  }
  snprintf(cmd, sizeof cmd, "cp %s/config.json %s/bad/config.json", cdir, tmp);
  REQUIRE(system(cmd) == 0, "cp");
  /* one NaN in the classifier head's weight */
  oc_st_file *f;
  char wp[600];
  snprintf(wp, sizeof wp, "%s/model.safetensors", cdir);
  REQUIRE(oc_st_open(wp, &f, &err) == 0, "%s", err.msg);
  oc_st_writer *w = oc_st_writer_new();
  float *nanw = NULL;
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    const void *d = t->data;
    if (strcmp(t->name, "classifier.weight") == 0) {
      REQUIRE(t->dtype == OC_DT_F32, "F32 fixture");
      nanw = malloc(t->nbytes);
      memcpy(nanw, t->data, t->nbytes);
      nanw[5] = NAN;
      d = nanw;
    }
    REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, d, &err) == 0, "%s", err.msg);
  }
  REQUIRE(nanw && oc_st_writer_write(w, path("bad/model.safetensors"), &err) == 0, "%s", err.msg);
  oc_st_writer_free(w);
  oc_st_close(f);
  free(nanw);
  CHECK(oc_classifier_load(path("bad"), &c, &err) != 0 && strstr(err.msg, "classifier.weight") && strstr(err.msg, "non-finite") &&
            strstr(err.msg, "element 5"),
        "a NaN classifier weight is refused naming the tensor: %s", err.msg);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 4, "usage: test_classifier OPENCON CLASSIFIER_DIR DATA.jsonl");
  cli = argv[1];
  cdir = argv[2];
  data = argv[3];
  snprintf(tmp, sizeof tmp, "/tmp/oc_cls_test_XXXXXX");
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  oc_set_threads(2);
  test_decisions();
  test_prefix_cut();
  test_training();
  test_calibration_rules();
  test_three_class();
  test_bad_dirs();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (g_fail == 0 && system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmp);
  return check_summary("test_classifier");
}
