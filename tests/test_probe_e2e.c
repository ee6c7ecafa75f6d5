/* End to end on the tiny fixture models with a tokenizer and chat template: collect-activations,
 * train-probe and sweep-layers through the CLI; artifacts load back; activations equal an
 * independent forward pass; a sweep's per-layer activations equal single-layer collections; an
 * interrupted collection resumes from its journal; bad input gets a clear error. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/probe.h"

/* the tiny byte-level tokenizer makes ~2.5 characters a token: truncating keeps the test fast
 * (and exercises truncation); MVP default is 2048. Not a multiple of 12: see check_against_forward. */
#define MAXLEN 90
static const char *cli, *e2e, *data;
static char tmp[256];
static char out[1 << 16];
#define run(...) run_in(tmp, out, sizeof out, __VA_ARGS__)
#define path(name) path_in(tmp, name)
#define stderr_text() stderr_in(tmp)

/* X.<layer> rows of a collection equal the last-token hidden states of an independent forward
 * pass of each example, to rounding: a collection packs consecutive examples into one prefill,
 * and OpenBLAS's sgemm rounds a row by its place among the rows of the call (in 12-row tiles on
 * the dev VM's EPYC), so an example that does not start on that grid differs from its pass alone
 * in the last bits. The exchanges are longer than MAXLEN 90 tokens, so the packed examples start
 * at 90, 180, 270: off the grid (at 96 they were on it, and a bit-for-bit check passed). A wrong
 * layer or position is off by far more than the bound (checked against the layer below). The
 * first five examples span two packs of the default --pack_tokens 400. */
static void check_against_forward(const char *model_dir, const oc_activations *a, int use_template) {
  oc_error err;
  oc_dataset ds;
  REQUIRE(oc_dataset_load(data, 0, 0, &ds, &err) == 0, "%s", err.msg);
  oc_model *m;
  oc_chat *c;
  REQUIRE(oc_model_load(model_dir, &m, &err) == 0 && oc_chat_load(model_dir, &c, &err) == 0, "%s", err.msg);
  const oc_model_config *cfg = oc_model_cfg(m);
  int checked = 0, ok = 1;
  double worst = 0, nearest_wrong = INFINITY; /* largest |difference| / (1 + |value|); the same against the layer below */
  for (int i = 0; i < 5; i++) {
    /* the collection is in dataset order when max_examples is 0 */
    char *text;
    oc_encoding e;
    REQUIRE(oc_chat_format_exchange(c, ds.ex[i].prompt, ds.ex[i].response, use_template, &text, &err) == 0, "%s", err.msg);
    REQUIRE(oc_chat_encode(c, text, !use_template, MAXLEN, &e, &err) == 0, "%s", err.msg);
    free(text);
    int nh = cfg->n_layers + 1;
    float *hs = malloc(sizeof(float) * (size_t)nh * (size_t)e.n * cfg->hidden);
    int *all = malloc(sizeof(int) * (size_t)nh);
    for (int l = 0; l < nh; l++) all[l] = l;
    oc_session *s = oc_session_new(m, e.n, &err);
    oc_taps t = {nh, all, 0, NULL, hs};
    REQUIRE(s && oc_forward(s, e.ids, e.n, &t, NULL, 0, &err) == 0, "%s", err.msg);
    for (int l = 0; l < a->n_layers; l++) {
      int hl = a->layers[l] < 0 ? a->layers[l] + nh : a->layers[l];
      const float *want = hs + ((size_t)hl * e.n + (size_t)(e.n - 1)) * cfg->hidden;
      const float *got = a->X[l] + (size_t)i * a->hidden, *below = hl > 0 ? want - (size_t)e.n * cfg->hidden : NULL;
      double wrong = 0;
      for (int k = 0; k < a->hidden; k++) {
        const double d = fabs((double)got[k] - want[k]) / (1 + fabs((double)want[k]));
        if (!(d <= worst)) worst = d; /* NaN sticks */
        if (below) wrong = fmax(wrong, fabs((double)got[k] - below[k]) / (1 + fabs((double)below[k])));
      }
      if (below && wrong < nearest_wrong) nearest_wrong = wrong;
      checked++;
    }
    ok &= a->y[i] == ds.ex[i].label && a->line[i] == ds.ex[i].line && a->hash[i] == oc_example_hash(&ds.ex[i]);
    oc_session_free(s);
    free(hs); free(all);
    oc_encoding_free(&e);
  }
  CHECK(ok && checked == 5 * a->n_layers && worst <= 1e-4, "%s: collected rows equal an independent full forward pass (%d rows, worst relative difference %.2g)",
        model_dir, checked, worst);
  CHECK(nearest_wrong > 1e-2, "%s: the bound tells layers apart (a row against the layer below it: %.2g)", model_dir, nearest_wrong);
  oc_chat_free(c);
  oc_model_free(m);
  oc_dataset_free(&ds);
}

static void test_collect(const char *model) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/%s", e2e, model);
  int tmpl = strstr(model, "llama") == NULL; /* llama3 runs the plain User:/Assistant: format */
  const char *nct = tmpl ? "" : "--no_chat_template";
  const char *layers = tmpl ? "-2,-4,-6" : "-1,-4,-5"; /* llama3-tiny has 4 layers */
  unlink(path("all.safetensors"));
  int rc = run("%s collect-activations --max_length 90 --model_id %s --data_path %s --layers=%s --max_examples 0 --out all.safetensors "
               "--progress_path prog.json --threads 2 %s", cli, dir, data, layers, nct);
  CHECK(rc == 0, "collect-activations %s: %s", model, stderr_text());
  oc_activations a, b;
  oc_error err;
  REQUIRE(oc_activations_load(path("all.safetensors"), &a, &err) == 0, "%s", err.msg);
  CHECK(a.n == 50 && a.n_layers == 3 && a.hidden == 64 && a.layers[1] == -4 && strcmp(a.model_id, dir) == 0 &&
            a.use_chat_template == tmpl,
        "shapes and metadata: n %d layers %d hidden %d", a.n, a.n_layers, a.hidden);
  CHECK(access(path("all.safetensors.partial"), F_OK) != 0, "journal removed after success");
  cJSON *pj = read_json_file(path("prog.json"));
  const cJSON *ph = cJSON_GetObjectItem(pj, "phase"), *ep = cJSON_GetObjectItem(pj, "examples_processed");
  CHECK(pj && cJSON_IsString(ph) && strcmp(ph->valuestring, "completed") == 0 && cJSON_IsNumber(ep) && ep->valueint == 50 &&
            cJSON_GetObjectItem(pj, "eta_seconds") && cJSON_GetObjectItem(pj, "updated_at"),
        "progress JSON");
  cJSON_Delete(pj);
  check_against_forward(dir, &a, tmpl);

  /* a sweep's per-layer activations equal a single-layer collection, with 1 thread */
  rc = run("%s collect-activations --max_length 90 --model_id %s --data_path %s --layers=-4 --max_examples 0 --out one.safetensors --threads 1 %s", cli,
           dir, data, nct);
  REQUIRE(rc == 0, "%s", stderr_text());
  REQUIRE(oc_activations_load(path("one.safetensors"), &b, &err) == 0, "%s", err.msg);
  CHECK(b.n_layers == 1 && memcmp(b.X[0], a.X[1], sizeof(float) * 50 * 64) == 0 && memcmp(b.y, a.y, sizeof(int32_t) * 50) == 0,
        "layer -4 alone (1 thread) == layer -4 of the 3-layer pass (2 threads)");
  oc_activations_free(&b);
  oc_activations_free(&a);
}

static void test_resume(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/gemma4-tiny-chat", e2e);
  oc_error err;
  oc_dataset ds;
  REQUIRE(oc_dataset_load(data, 20, 1, &ds, &err) == 0, "%s", err.msg);
  oc_model *m;
  oc_chat *c;
  REQUIRE(oc_model_load(dir, &m, &err) == 0 && oc_chat_load(dir, &c, &err) == 0, "%s", err.msg);
  int layers[2] = {-1, 3};
  const char *jp = path("resume.partial");
  FILE *z = fopen(jp, "w"); /* a crash while the header was written: a torn header, nothing collected */
  fputs("OCAC", z);
  fclose(z);
  oc_collect_opts o = {dir, 1, MAXLEN, 2, layers, jp, 192};
  oc_activations full, again;
  REQUIRE(oc_collect_activations(m, c, &ds, &o, &full, NULL, &err) == 0, "%s", err.msg);
  /* tear the journal in the middle of record 8 (an interrupted run) */
  FILE *f = fopen(jp, "rb");
  REQUIRE(f, "journal kept");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fclose(f);
  long rec = (long)(sizeof(uint32_t) * 2 + sizeof(int32_t) * 2 + 16 + 2 * 64 * 4 + 8), header = size - 20 * rec;
  REQUIRE(truncate(jp, header + 7 * rec + rec / 2) == 0, "truncate");
  oc_progress prog;
  oc_progress_start(&prog, "test", "examples", 0, NULL);
  REQUIRE(oc_collect_activations(m, c, &ds, &o, &again, &prog, &err) == 0, "%s", err.msg);
  CHECK(prog.base > 0 && prog.base <= 7, "resumed at the last pack boundary within the 7 complete records (base %lld)", (long long)prog.base);
  int same = 1;
  for (int l = 0; l < 2; l++) same &= memcmp(full.X[l], again.X[l], sizeof(float) * 20 * 64) == 0;
  same &= memcmp(full.hash, again.hash, sizeof(uint64_t) * 20) == 0;
  CHECK(same, "resumed collection equals the uninterrupted one");
  oc_activations_free(&again);
  /* a corrupt record stops the replay there */
  f = fopen(jp, "r+b");
  fseek(f, header + 3 * rec + 40, SEEK_SET);
  fputc(0x5a, f);
  fclose(f);
  oc_progress_start(&prog, "test", "examples", 0, NULL);
  REQUIRE(oc_collect_activations(m, c, &ds, &o, &again, &prog, &err) == 0, "%s", err.msg);
  CHECK(prog.base <= 3, "checksum stops replay at the corrupt record (base %lld)", (long long)prog.base);
  same = memcmp(full.X[0], again.X[0], sizeof(float) * 20 * 64) == 0;
  CHECK(same, "recomputed records equal the originals");
  oc_activations_free(&again);
  /* other settings: refused, journal kept */
  layers[1] = 2;
  CHECK(oc_collect_activations(m, c, &ds, &o, &again, NULL, &err) != 0 && strstr(err.msg, "other settings") && access(jp, F_OK) == 0,
        "journal of other settings refused: %s", err.msg);
  oc_activations_free(&full);
  oc_chat_free(c);
  oc_model_free(m);
  oc_dataset_free(&ds);
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void test_train_and_sweep(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/gemma4-tiny-chat", e2e);
  int rc = run("%s train-probe --max_length 90 --model_id %s --data_path %s --layer -4 --out_dir probe_a --epochs 30 --save_activations a4.safetensors "
               "--progress_path tp.json",
               cli, dir, data);
  CHECK(rc == 0, "train-probe: %s", stderr_text());
  cJSON *cfg = read_json_file(path("probe_a/config.json"));
  REQUIRE(cfg, "config.json");
  const char *fields[] = {"model_id", "model_family", "layer", "hidden_size", "threshold", "pause_threshold", "probe_every_n_tokens",
                          "smoothing_window", "use_chat_template", "metrics", "note", "calibrated_threshold", "train_metrics", NULL};
  int all = 1;
  for (const char **f = fields; *f; f++) if (!cJSON_GetObjectItem(cfg, *f)) { all = 0; fprintf(stderr, "missing %s\n", *f); }
  const cJSON *met = cJSON_GetObjectItem(cfg, "metrics");
  CHECK(all && num(cfg, "layer") == -4 && num(cfg, "hidden_size") == 64 && num(cfg, "threshold") == 0.65 &&
            num(cfg, "pause_threshold") == 0.75 && num(cfg, "probe_every_n_tokens") == 4 &&
            strcmp(cJSON_GetObjectItem(cfg, "model_family")->valuestring, "gemma4") == 0 && num(met, "examples") == 10 &&
            num(cfg, "n_train") == 40 && num(met, "roc_auc") >= 0 && num(met, "roc_auc") <= 1,
        "config.json fields");
  oc_probe_config pc;
  oc_error err;
  CHECK(oc_probe_config_load(path("probe_a/config.json"), &pc, &err) == 0 && pc.layer == -4 && pc.smoothing_window == 4 &&
            strcmp(pc.model_id, dir) == 0 && isfinite(pc.calibrated_threshold),
        "probe config loads");
  oc_probe_config_free(&pc);
  oc_probe p, q;
  REQUIRE(oc_probe_load(path("probe_a/probe.safetensors"), &p, &err) == 0, "%s", err.msg);
  CHECK(p.hidden == 64, "probe hidden");
  /* metrics recomputed from the saved probe and activations match config.json's held-out metrics */
  oc_activations a;
  REQUIRE(oc_activations_load(path("a4.safetensors"), &a, &err) == 0, "%s", err.msg);
  int64_t *tr, *va;
  int nt, nv;
  REQUIRE(oc_stratified_split(a.y, a.n, 0.2, 0, &tr, &nt, &va, &nv, &err) == 0, "%s", err.msg);
  float s[64];
  int32_t yy[64];
  for (int i = 0; i < nv; i++) { s[i] = oc_sigmoid(oc_probe_logit(&p, a.X[0] + (size_t)va[i] * 64)); yy[i] = a.y[va[i]]; }
  oc_metrics m;
  oc_binary_metrics(s, yy, nv, 0.01, &m);
  CHECK(fabs(m.roc_auc - num(met, "roc_auc")) < 1e-9 && fabs(m.accuracy - num(met, "accuracy")) < 1e-9,
        "held-out metrics reproduce from the artifacts (auc %g vs %g)", m.roc_auc, num(met, "roc_auc"));
  free(tr); free(va);
  oc_activations_free(&a);
  cJSON_Delete(cfg);
  cJSON *tp = read_json_file(path("tp.json"));
  CHECK(tp && strcmp(cJSON_GetObjectItem(tp, "phase")->valuestring, "completed") == 0, "train-probe progress completed");
  cJSON_Delete(tp);
  CHECK(access(path("probe_a/activations.partial"), F_OK) != 0, "train-probe removes its journal");

  /* --activations reuse gives the same probe */
  rc = run("%s train-probe --max_length 90 --activations a4.safetensors --layer -4 --out_dir probe_b --epochs 30", cli);
  CHECK(rc == 0, "train-probe --activations: %s", stderr_text());
  REQUIRE(oc_probe_load(path("probe_b/probe.safetensors"), &q, &err) == 0, "%s", err.msg);
  CHECK(memcmp(p.w, q.w, sizeof(float) * 64) == 0 && p.b == q.b, "probe from --activations == probe from the model");
  oc_probe_free(&q);
  /* --pause_at_calibrated: config.json pauses at the held-out threshold of --target_fpr (the default
   * "suspicious" threshold lowered to it when above) */
  rc = run("%s train-probe --activations a4.safetensors --layer -4 --out_dir probe_d --epochs 30 --target_fpr 0.2 --pause_at_calibrated", cli);
  cJSON *cd = read_json_file(path("probe_d/config.json"));
  double cal = num(cd, "calibrated_threshold");
  CHECK(rc == 0 && cal >= 0 && cal <= 1 && cal == num(cJSON_GetObjectItem(cd, "metrics"), "threshold_at_target_fpr") &&
            num(cd, "pause_threshold") == cal && num(cd, "threshold") == (cal < 0.65 ? cal : 0.65),
        "--pause_at_calibrated: pause %g, threshold %g, calibrated %g (%s)", num(cd, "pause_threshold"), num(cd, "threshold"), cal, stderr_text());
  cJSON_Delete(cd);
  oc_probe_config_defaults(&pc);
  pc.calibrated_threshold = 0.9;
  CHECK(oc_probe_config_pause_at_calibrated(&pc, &err) == 0 && pc.pause_threshold == 0.9 && pc.threshold == 0.65, "calibrated above 0.65");
  pc.calibrated_threshold = NAN;
  CHECK(oc_probe_config_pause_at_calibrated(&pc, &err) != 0 && strstr(err.msg, "no calibrated threshold") && pc.pause_threshold == 0.9,
        "no calibrated threshold: an error, the config unchanged (%s)", err.msg);
  rc = run("%s train-probe --max_length 90 --activations a4.safetensors --layer -2 --out_dir probe_c", cli);
  CHECK(rc != 0 && strstr(stderr_text(), "layer -2 was not collected"), "missing layer in --activations: %s", stderr_text());
  rc = run("%s train-probe --max_length 90 --model_id other/model --activations a4.safetensors --layer -4 --out_dir probe_c", cli);
  CHECK(rc != 0 && strstr(stderr_text(), "collected with model_id"), "model mismatch refused");

  /* sweep: layer keys as given, held-out metrics equal train-probe's for the same layer */
  rc = run("%s sweep-layers --max_length 90 --model_id %s --data_path %s --layers=-2,-4,-6 --epochs 30 --out_path sweep.json", cli, dir, data);
  CHECK(rc == 0, "sweep-layers: %s", stderr_text());
  cJSON *sw = cJSON_Parse(out), *sf = read_json_file(path("sweep.json"));
  REQUIRE(sw && sf, "sweep JSON on stdout and in --out_path");
  const cJSON *l4 = cJSON_GetObjectItem(sw, "-4");
  CHECK(cJSON_GetObjectItem(sw, "-2") && cJSON_GetObjectItem(sw, "-6") && l4 && fabs(num(l4, "roc_auc") - m.roc_auc) < 1e-9 &&
            fabs(num(l4, "f1") - m.f1) < 1e-9 && num(cJSON_GetObjectItem(sf, "-6"), "accuracy") == num(cJSON_GetObjectItem(sw, "-6"), "accuracy"),
        "sweep layer -4 == train-probe layer -4");
  CHECK(access(path("sweep.svg"), F_OK) == 0, "SVG beside the JSON");
  cJSON_Delete(sw);
  cJSON_Delete(sf);
  oc_probe_free(&p);
  /* a report that cannot be replaced leaves no plot of another report beside it (sweep2.json is a
   * directory in the way; sweep2.svg the plot of an older report) */
  FILE *f = fopen(path("sweep2.svg"), "w");
  fputs("<svg>older</svg>", f);
  fclose(f);
  REQUIRE(mkdir(path("sweep2.json"), 0755) == 0 && mkdir(path("sweep2.json/x"), 0755) == 0, "mkdir");
  int lay = -4;
  double one = 1;
  CHECK(oc_sweep_save(path("sweep2.json"), "{}", &lay, 1, &one, &one, &err) != 0 && access(path("sweep2.svg"), F_OK) != 0,
        "failed sweep report: no stale plot beside it (%s)", err.msg);
}

static void test_errors(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/gemma4-tiny-chat", e2e);
  FILE *f = fopen(path("three.jsonl"), "w");
  for (int i = 0; i < 6; i++) fprintf(f, "{\"prompt\": \"q%d\", \"response\": \"r\", \"label\": %d}\n", i, i % 3);
  fclose(f);
  int rc = run("%s train-probe --max_length 90 --model_id %s --data_path three.jsonl --out_dir p3", cli, dir);
  CHECK(rc != 0 && strstr(stderr_text(), "three.jsonl:3: label 2"), "three-class data refused with its line: %s", stderr_text());
  rc = run("%s collect-activations --max_length 90 --model_id %s --data_path three.jsonl --layers=-1 --out three.safetensors", cli, dir);
  CHECK(rc == 0, "collect-activations keeps three-class labels: %s", stderr_text());
  f = fopen(path("lfs.jsonl"), "w");
  fprintf(f, "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n");
  fclose(f);
  rc = run("%s train-probe --max_length 90 --model_id %s --data_path lfs.jsonl --out_dir p4", cli, dir);
  CHECK(rc != 0 && strstr(stderr_text(), "git lfs pull"), "LFS pointer refused");
  rc = run("%s sweep-layers --max_length 90 --model_id %s --data_path %s --layers=-2,40", cli, dir, data);
  CHECK(rc != 0 && strstr(stderr_text(), "40"), "out-of-range layer: %s", stderr_text());
  rc = run("%s train-probe --max_length 90 --model_id %s --data_path %s --out_dir p5 --epochs x", cli, dir, data);
  CHECK(rc != 0 && strstr(stderr_text(), "--epochs"), "bad --epochs");
}

int main(int argc, char **argv) {
  REQUIRE(argc == 4, "usage: test_probe_e2e OPENCON E2E_DIR DATA.jsonl");
  cli = argv[1];
  e2e = argv[2];
  data = argv[3];
  snprintf(tmp, sizeof tmp, "/tmp/oc_probe_e2e_XXXXXX");
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  test_collect("gemma4-tiny-chat");
  test_collect("llama3-tiny-chat");
  test_resume();
  test_train_and_sweep();
  test_errors();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (g_fail == 0 && system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmp);
  return check_summary("test_probe_e2e");
}
