/* Unit tests of the probe stage: JSONL loader and sampler, split, metrics against hand-checked
 * values, AdamW against an independent double-precision recurrence, training on a separable set,
 * thread-count independence, artifacts (safetensors, torch.save zip) and hostile .pt files. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/probe.h"

static char tmpdir[256];

static char *tmp_file(const char *name, const char *content) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  REQUIRE(f, "cannot write %s", path);
  fputs(content, f);
  fclose(f);
  return path;
}

static void test_loader(void) {
  oc_dataset d;
  oc_error err;
  const char *p = tmp_file("ok.jsonl",
                           "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0, \"extra\": [1]}\n"
                           "\n"
                           "{\"prompt\": \"c\", \"response\": \"d\\u00e9\", \"label\": 1}\n"
                           "   \n"
                           "{\"prompt\": \"e\", \"response\": \"f\", \"label\": 2}\n");
  CHECK(oc_dataset_load(p, 0, 0, &d, &err) == 0, "load: %s", err.msg);
  CHECK(d.n == 3 && d.rows_in_file == 3, "n %d", d.n);
  if (d.n == 3) {
    CHECK(strcmp(d.ex[1].response, "d\xc3\xa9") == 0 && d.ex[1].line == 3 && d.ex[2].line == 5 && d.ex[2].label == 2,
          "rows in file order with line numbers");
    CHECK(d.max_label == 2 && d.label_counts[0] == 1 && d.label_counts[1] == 1, "label counts");
  }
  oc_dataset_free(&d);
  struct { const char *name, *text, *expect; } bad[] = {
      {"missing.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0}\n{\"prompt\": \"a\", \"label\": 1}\n", ":2: missing key \"response\""},
      {"label3.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 3}\n", ":1: label must be 0, 1 or 2, got 3"},
      {"labelstr.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": \"1\"}\n", ":1: label must be 0, 1 or 2"},
      {"labelfrac.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0.5}\n", ":1: label must be"},
      {"badjson.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0}\n\n{\"prompt\": \"a\", \n", ":3: not valid JSON"},
      {"notobj.jsonl", "[1, 2]\n", ":1: expected a JSON object"},
      {"prompt_num.jsonl", "{\"prompt\": 5, \"response\": \"b\", \"label\": 0}\n", ":1: \"prompt\" must be a string"},
      {"lfs.jsonl", "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 211000000\n", "git lfs pull"},
      {"empty.jsonl", "\n\n", "no examples"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    p = tmp_file(bad[i].name, bad[i].text);
    int rc = oc_dataset_load(p, 0, 0, &d, &err);
    CHECK(rc != 0 && strstr(err.msg, bad[i].expect) && strstr(err.msg, bad[i].name), "%s: rc %d msg \"%s\"", bad[i].name, rc,
          rc ? err.msg : "");
    if (!rc) oc_dataset_free(&d);
  }
  CHECK(oc_dataset_load("/nonexistent/x.jsonl", 0, 0, &d, &err) != 0 && strstr(err.msg, "/nonexistent/x.jsonl"), "missing file");

  /* label-balanced sampling: 10 rows of label 0, 100 of label 1 */
  char *big = malloc(200000);
  size_t k = 0;
  for (int i = 0; i < 110; i++)
    k += (size_t)sprintf(big + k, "{\"prompt\": \"p%d\", \"response\": \"r\", \"label\": %d}\n", i, i % 11 == 0 ? 0 : 1);
  p = tmp_file("big.jsonl", big);
  free(big);
  oc_dataset a, b, c;
  REQUIRE(oc_dataset_load(p, 20, 7, &a, &err) == 0, "%s", err.msg);
  REQUIRE(oc_dataset_load(p, 20, 7, &b, &err) == 0, "%s", err.msg);
  REQUIRE(oc_dataset_load(p, 20, 8, &c, &err) == 0, "%s", err.msg);
  CHECK(a.n == 20 && a.label_counts[0] == 10 && a.label_counts[1] == 10, "balanced: %lld/%lld", (long long)a.label_counts[0],
        (long long)a.label_counts[1]);
  int same = 1, diff = 0, dup = 0;
  for (int i = 0; i < 20; i++) {
    same &= strcmp(a.ex[i].prompt, b.ex[i].prompt) == 0;
    diff |= strcmp(a.ex[i].prompt, c.ex[i].prompt) != 0;
    for (int j = 0; j < i; j++) dup |= a.ex[i].line == a.ex[j].line;
  }
  CHECK(same && diff && !dup, "deterministic for a seed (%d), differs across seeds (%d), no duplicates (%d)", same, diff, !dup);
  int zeros_first = 1; /* the selection is shuffled: labels are not grouped */
  for (int i = 0; i < 10; i++) zeros_first &= a.ex[i].label == 0;
  CHECK(!zeros_first, "selection shuffled");
  oc_dataset_free(&a); oc_dataset_free(&b); oc_dataset_free(&c);
  REQUIRE(oc_dataset_load(p, 1000, 7, &a, &err) == 0, "%s", err.msg);
  CHECK(a.n == 110, "max_examples above the row count takes all rows (%d)", a.n);
  oc_dataset_free(&a);
}

static void test_split(void) {
  int32_t y[23];
  for (int i = 0; i < 23; i++) y[i] = i < 13 ? 0 : 1; /* 13 safe, 10 unsafe */
  int64_t *tr, *va;
  int nt, nv;
  oc_error err;
  REQUIRE(oc_stratified_split(y, 23, 0.2, 3, &tr, &nt, &va, &nv, &err) == 0, "%s", err.msg);
  int vpos = 0, seen[23] = {0};
  for (int i = 0; i < nv; i++) { vpos += y[va[i]]; seen[va[i]]++; }
  for (int i = 0; i < nt; i++) seen[tr[i]]++;
  int cover = 1;
  for (int i = 0; i < 23; i++) cover &= seen[i] == 1;
  /* round(0.2 * 13) = 3 safe and round(0.2 * 10) = 2 unsafe held out */
  CHECK(nv == 5 && nt == 18 && vpos == 2 && cover, "stratified: nv %d vpos %d cover %d", nv, vpos, cover);
  free(tr); free(va);
  CHECK(oc_stratified_split(y, 23, 1.0, 3, &tr, &nt, &va, &nv, &err) != 0, "validation_size 1 refused");
}

static void test_metrics_nan(void) {
  /* a NaN score (a broken probe) has no ranking: NaN, not a loop that never ends */
  float sc[4] = {0.2f, NAN, 0.7f, 0.9f};
  int32_t y[4] = {0, 0, 1, 1};
  CHECK(isnan(oc_roc_auc(sc, y, 4)), "ROC AUC with a NaN score is NaN");
  oc_metrics m;
  oc_binary_metrics(sc, y, 4, 0.01, &m);
  CHECK(isnan(m.roc_auc), "binary metrics with a NaN score finish");
}

static void test_metrics(void) {
  /* sklearn's documented example: roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8]) == 0.75 */
  float s1[] = {0.1f, 0.4f, 0.35f, 0.8f};
  int32_t y1[] = {0, 0, 1, 1};
  CHECK(fabs(oc_roc_auc(s1, y1, 4) - 0.75) < 1e-12, "auc %g", oc_roc_auc(s1, y1, 4));
  float s2[] = {0.5f, 0.5f, 0.5f, 0.5f};
  int32_t y2[] = {0, 1, 0, 1};
  CHECK(fabs(oc_roc_auc(s2, y2, 4) - 0.5) < 1e-12, "ties give 0.5");
  /* one tie across classes: pairs (pos,neg): (0.9>0.2) (0.9>0.6) (0.6=0.6 -> 1/2) (0.6>0.2) = 3.5 / 4 */
  float s3[] = {0.2f, 0.6f, 0.6f, 0.9f};
  int32_t y3[] = {0, 0, 1, 1};
  CHECK(fabs(oc_roc_auc(s3, y3, 4) - 0.875) < 1e-12, "auc with tie %g", oc_roc_auc(s3, y3, 4));
  int32_t y4[] = {1, 1, 1, 1};
  CHECK(isnan(oc_roc_auc(s3, y4, 4)), "one class: NaN");

  /* at 0.5: preds 0,0,1,1,1,0 vs labels 0,1,1,0,1,1 -> tp 2 fp 1 fn 2 tn 1 */
  float s5[] = {0.1f, 0.3f, 0.7f, 0.55f, 0.5f, 0.2f};
  int32_t y5[] = {0, 1, 1, 0, 1, 1};
  oc_metrics m;
  oc_binary_metrics(s5, y5, 6, 0.0, &m);
  CHECK(fabs(m.accuracy - 0.5) < 1e-12 && fabs(m.precision - 2.0 / 3) < 1e-12 && fabs(m.recall - 0.5) < 1e-12 &&
            fabs(m.f1 - 4.0 / 7) < 1e-12,
        "acc %g prec %g rec %g f1 %g", m.accuracy, m.precision, m.recall, m.f1);
  /* target FPR 0 over negatives {0.1, 0.55}: threshold just above 0.55 -> positives 0.7 only */
  CHECK(m.threshold_at_fpr > 0.55f && m.threshold_at_fpr <= nextafterf(0.55f, 1) && m.fpr_at_threshold == 0 &&
            fabs(m.tpr_at_threshold - 0.25) < 1e-12,
        "thr %.9g fpr %g tpr %g", m.threshold_at_fpr, m.fpr_at_threshold, m.tpr_at_threshold);
  oc_binary_metrics(s5, y5, 6, 0.5, &m); /* one of two negatives may pass: threshold just above 0.1 */
  CHECK(m.threshold_at_fpr > 0.1f && m.threshold_at_fpr < 0.11f && fabs(m.fpr_at_threshold - 0.5) < 1e-12 &&
            fabs(m.tpr_at_threshold - 1.0) < 1e-12,
        "thr %.9g fpr %g tpr %g", m.threshold_at_fpr, m.fpr_at_threshold, m.tpr_at_threshold);
  int total = 0;
  for (int k = 0; k < OC_CALIB_BINS; k++) total += m.calib_count[k];
  CHECK(total == 6 && m.calib_count[5] == 2 && fabs(m.calib_frac_pos[5] - 0.5) < 1e-12, "calibration bins");
}

/* AdamW reference in double: torch.optim.AdamW's documented algorithm, written from the paper's
 * update rule, for a logistic model on fixed full batches. */
static void test_adamw_steps(void) {
  enum { N = 6, H = 3, STEPS = 4 };
  float X[N * H] = {1, 0, 2, -1, 1, 0, 0.5f, -2, 1, 3, 1, -1, -0.5f, 0.25f, 0.75f, 2, -1, 0};
  int32_t y[N] = {1, 0, 1, 0, 1, 0};
  int64_t idx[N] = {0, 1, 2, 3, 4, 5};
  float w0[H] = {0.1f, -0.2f, 0.05f};
  double w[H + 1] = {0.1, -0.2, 0.05, 0.3}, m[H + 1] = {0}, v[H + 1] = {0};
  const double lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (int t = 1; t <= STEPS; t++) {
    double g[H + 1] = {0};
    for (int i = 0; i < N; i++) { /* batch = all rows: the shuffle does not change the mean gradient */
      double z = w[H];
      for (int j = 0; j < H; j++) z += w[j] * X[i * H + j];
      double d = (1 / (1 + exp(-z)) - y[i]) / N;
      for (int j = 0; j < H; j++) g[j] += d * X[i * H + j];
      g[H] += d;
    }
    for (int j = 0; j <= H; j++) {
      w[j] -= lr * wd * w[j];
      m[j] = b1 * m[j] + (1 - b1) * g[j];
      v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
      double mh = m[j] / (1 - pow(b1, t)), vh = v[j] / (1 - pow(b2, t));
      w[j] -= lr * mh / (sqrt(vh) + eps);
    }
  }
  oc_probe_train_opts o;
  oc_probe_train_defaults(&o);
  o.epochs = STEPS;
  o.batch_size = N;
  o.lr = lr;
  o.weight_decay = wd;
  o.init_w = w0;
  o.init_b = 0.3f;
  oc_probe p;
  oc_error err;
  double loss;
  REQUIRE(oc_probe_train(X, H, y, idx, N, &o, &p, &loss, NULL, &err) == 0, "%s", err.msg);
  double md = 0;
  for (int j = 0; j < H; j++) md = fmax(md, fabs(p.w[j] - w[j]));
  md = fmax(md, fabs(p.b - w[H]));
  CHECK(md < 2e-6, "AdamW after %d steps: max |diff| %.3g vs double reference", STEPS, md);
  oc_probe_free(&p);
}

/* two Gaussian-ish blobs along a random direction, far apart: separable */
static void make_blobs(int n, int H, uint64_t seed, float offset, float scale, float *X, int32_t *y) {
  oc_rng r;
  oc_rng_seed(&r, seed);
  for (int i = 0; i < n; i++) {
    y[i] = i % 3 == 0;
    for (int j = 0; j < H; j++) {
      float noise = (float)(oc_rng_uniform(&r) - 0.5);
      float dir = (j % 2 ? 1.0f : -1.0f) * (y[i] ? 1.0f : -1.0f);
      X[(size_t)i * H + j] = offset + scale * (noise + 0.6f * dir);
    }
  }
}

static void test_separable(void) {
  enum { N = 300, H = 40 };
  float *X = malloc(sizeof(float) * N * H);
  int32_t y[N];
  make_blobs(N, H, 11, 0, 1, X, y);
  oc_activations a = {0};
  int layer = -4;
  a.n = N; a.hidden = H; a.n_layers = 1; a.n_hidden_states = 10; a.layers = &layer; a.X = &X; a.y = y;
  oc_probe_train_opts o;
  oc_probe_train_defaults(&o);
  o.epochs = 5;
  oc_probe_fit f1, f2;
  oc_error err;
  omp_set_num_threads(1);
  REQUIRE(oc_probe_fit_layer(&a, 0, 0.2, 0, 0.01, &o, &f1, NULL, &err) == 0, "%s", err.msg);
  omp_set_num_threads(2);
  REQUIRE(oc_probe_fit_layer(&a, 0, 0.2, 0, 0.01, &o, &f2, NULL, &err) == 0, "%s", err.msg);
  CHECK(f1.n_val == 60 && f1.n_train == 240, "split %d/%d", f1.n_train, f1.n_val);
  CHECK(f1.val.accuracy == 1.0 && f1.val.roc_auc == 1.0 && f1.val.f1 == 1.0, "separable: acc %g auc %g", f1.val.accuracy,
        f1.val.roc_auc);
  CHECK(memcmp(f1.probe.w, f2.probe.w, sizeof(float) * H) == 0 && f1.probe.b == f2.probe.b, "1 vs 2 threads: bit-identical");
  oc_probe_fit_free(&f2);

  /* standardize: a huge offset and a tiny scale; the folded probe scores raw activations */
  make_blobs(N, H, 11, 1000, 1e-3f, X, y);
  o.standardize = 1;
  REQUIRE(oc_probe_fit_layer(&a, 0, 0.2, 0, 0.01, &o, &f2, NULL, &err) == 0, "%s", err.msg);
  CHECK(f2.val.roc_auc == 1.0 && f2.val.accuracy == 1.0, "standardized: auc %g acc %g", f2.val.roc_auc, f2.val.accuracy);
  oc_probe_fit_free(&f2);

  int32_t three[N];
  memcpy(three, y, sizeof three);
  three[5] = 2;
  a.y = three;
  CHECK(oc_probe_fit_layer(&a, 0, 0.2, 0, 0.01, &o, &f2, NULL, &err) != 0 && strstr(err.msg, "binary"), "label 2 refused");
  a.n = 3;
  a.y = y;
  CHECK(oc_probe_fit_layer(&a, 0, 0.2, 0, 0.01, &o, &f2, NULL, &err) != 0 && strstr(err.msg, "at least 4"), "fewer than 4");

  /* save / load round trip */
  char path[512];
  snprintf(path, sizeof path, "%s/probe.safetensors", tmpdir);
  REQUIRE(oc_probe_save(&f1.probe, path, &err) == 0, "%s", err.msg);
  oc_probe q;
  REQUIRE(oc_probe_load(path, &q, &err) == 0, "%s", err.msg);
  CHECK(q.hidden == H && memcmp(q.w, f1.probe.w, sizeof(float) * H) == 0 && q.b == f1.probe.b, "safetensors round trip");
  oc_probe_free(&q);
  oc_probe_fit_free(&f1);
  free(X);
}

static void test_torch_pt(const char *pt) {
  oc_probe p;
  oc_error err;
  REQUIRE(oc_probe_load(pt, &p, &err) == 0, "%s", err.msg);
  int ok = p.hidden == 64 && p.b == 0.25f;
  for (int i = 0; i < 64 && ok; i++) ok = p.w[i] == (float)(i - 32) / 64;
  CHECK(ok, "mvp_probe.pt: hidden %d bias %g", p.hidden, p.b);
  oc_probe_free(&p);
  /* hostile copies: every truncation, and flipped bytes, must give an error or a valid probe */
  char *data;
  size_t len;
  REQUIRE(oc_read_file(pt, &data, &len, &err) == 0, "%s", err.msg);
  char path[512];
  snprintf(path, sizeof path, "%s/bad.pt", tmpdir);
  int errors = 0, loaded = 0;
  for (size_t cut = 0; cut < len; cut += 7) {
    REQUIRE(oc_write_file_atomic(path, data, cut, &err) == 0, "%s", err.msg);
    if (oc_probe_load(path, &p, &err) == 0) { loaded++; oc_probe_free(&p); } else errors++;
  }
  CHECK(loaded == 0 && errors > 0, "truncated .pt files are refused (%d loaded)", loaded);
  oc_rng r;
  oc_rng_seed(&r, 5);
  int crc_caught = 0;
  for (int t = 0; t < 2000; t++) {
    char *c = malloc(len);
    memcpy(c, data, len);
    size_t at = (size_t)oc_rng_below(&r, len);
    c[at] ^= (char)(1 + oc_rng_below(&r, 255));
    REQUIRE(oc_write_file_atomic(path, c, len, &err) == 0, "%s", err.msg);
    if (oc_probe_load(path, &p, &err) == 0) oc_probe_free(&p);
    else crc_caught += strstr(err.msg, "CRC") != NULL;
    free(c);
  }
  CHECK(crc_caught > 0, "flipped data bytes are caught by the CRC check");
  free(data);
}

static void test_svg(void) {
  int layers[3] = {-2, -4, -6};
  double auc[3] = {0.9, 0.8, NAN}, f1[3] = {0.7, 0.6, 0.5};
  char path[512];
  snprintf(path, sizeof path, "%s/sweep.svg", tmpdir);
  oc_error err;
  REQUIRE(oc_sweep_svg(path, layers, 3, auc, f1, &err) == 0, "%s", err.msg);
  char *s;
  REQUIRE(oc_read_file(path, &s, NULL, &err) == 0, "%s", err.msg);
  CHECK(strstr(s, "<svg") && strstr(s, ">-6</text>") && strstr(s, "ROC AUC at -2: 0.9000") && !strstr(s, "ROC AUC at -6"),
        "svg content");
  free(s);
}

/* Probe configs and weights that would weaken the guard are refused at load, naming the file. */
static void test_guard_settings(void) {
  oc_probe_config c;
  oc_error err;
  const char *ok = "{\"model_id\": \"org/m\", \"layer\": -4, \"hidden_size\": 8, \"threshold\": 0.65, \"pause_threshold\": 0.75, "
                   "\"probe_every_n_tokens\": 4, \"smoothing_window\": 4, \"use_chat_template\": true}";
  REQUIRE(oc_probe_config_load(tmp_file("ok.json", ok), &c, &err) == 0, "%s", err.msg);
  CHECK(strcmp(c.model_id, "org/m") == 0 && c.layer == -4 && c.probe_every_n_tokens == 4 && c.smoothing_window == 4, "a valid config loads");
  oc_probe_config_free(&c);
  struct { const char *json, *want; } bad[] = {
      {"{\"layer\": -4}", "model_id"},                                     /* the foreign-probe check must not be skippable */
      {"{\"model_id\": \"\", \"layer\": -4}", "model_id"},
      {"{\"model_id\": 7}", "model_id"},
      {"{\"model_id\": \"m\", \"probe_every_n_tokens\": 0}", "probe_every_n_tokens"},
      {"{\"model_id\": \"m\", \"probe_every_n_tokens\": 1e9}", "probe_every_n_tokens"},
      {"{\"model_id\": \"m\", \"probe_every_n_tokens\": 2.5}", "integer"},
      {"{\"model_id\": \"m\", \"smoothing_window\": -3}", "smoothing_window"},
      {"{\"model_id\": \"m\", \"smoothing_window\": 1e300}", "smoothing_window"},
      {"{\"model_id\": \"m\", \"layer\": 1e20}", "layer"},
      {"{\"model_id\": \"m\", \"pause_threshold\": 1.5}", "pause_threshold"},
      {"{\"model_id\": \"m\", \"pause_threshold\": \"0.5\"}", "pause_threshold"},
      {"{\"model_id\": \"m\", \"threshold\": -0.1}", "threshold"},
      {"{\"model_id\": \"m\", \"calibrated_threshold\": 2}", "calibrated_threshold"},
      {"{\"model_id\": \"m\", \"use_chat_template\": \"no\"}", "use_chat_template"},
      {"{\"model_id\": \"m\", \"hidden_size\": -8}", "hidden_size"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *path = tmp_file("bad.json", bad[i].json);
    CHECK(oc_probe_config_load(path, &c, &err) != 0 && strstr(err.msg, bad[i].want) && strstr(err.msg, "bad.json"), "refused %s: %s", bad[i].json, err.msg);
  }
  /* a probe.safetensors with one NaN weight */
  float w[8] = {0.1f, 0.2f, 0.3f, 0.4f, NAN, 0.6f, 0.7f, 0.8f};
  oc_probe p = {8, w, 0.5f}, q;
  char path[600];
  snprintf(path, sizeof path, "%s/nan_probe.safetensors", tmpdir);
  REQUIRE(oc_probe_save(&p, path, &err) == 0, "%s", err.msg);
  CHECK(oc_probe_load(path, &q, &err) != 0 && strstr(err.msg, "nan_probe.safetensors") && strstr(err.msg, "head.weight") && strstr(err.msg, "element 4"),
        "a NaN probe weight is a load error naming file, tensor and element: %s", err.msg);
  w[4] = 0.5f;
  p.b = -INFINITY;
  REQUIRE(oc_probe_save(&p, path, &err) == 0, "%s", err.msg);
  CHECK(oc_probe_load(path, &q, &err) != 0 && strstr(err.msg, "head.bias"), "an Inf probe bias is a load error: %s", err.msg);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_probe mvp_probe.pt torch_probe.pt");
  snprintf(tmpdir, sizeof tmpdir, "/tmp/oc_probe_test_XXXXXX");
  REQUIRE(mkdtemp(tmpdir), "mkdtemp");
  test_loader();
  test_split();
  test_metrics();
  test_metrics_nan();
  test_adamw_steps();
  test_separable();
  test_torch_pt(argv[1]); /* torch.save's layout rebuilt with the standard library */
  test_torch_pt(argv[2]); /* written by real torch.save (python3-torch 1.13) */
  test_svg();
  test_guard_settings();
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
  return check_summary("test_probe");
}
