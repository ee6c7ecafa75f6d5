/* q8 weights on the tiny fixture models (argv: their directories):
 * - accuracy: every hidden state of a 40-token prefill and of 10 decode steps keeps cosine >= 0.998 on
 *   average at every state, 0.99 at worst, and relative error <= 6 % against the stored weights (hidden
 *   size 64: two blocks a row, random weights, every product's inputs quantized too; measured worst
 *   0.9939 / 4.9 % on gemma3-tiny, E2B-shaped states in bench/README.md), the decode logits likewise;
 *   a misread scale or block puts them far lower;
 * - the streamed matrices are q8 and a token streams about 0.53x the bytes;
 * - `quantize` output: loads without a flag as q8 and gives the same bits as --weights q8 on the
 *   original; quantizing it again changes nothing; its scales validated (missing, wrong dtype or
 *   shape, not finite, negative: each an error naming the tensor);
 * - a non-finite weight is refused when quantizing, naming tensor, row and column;
 * - q8 results do not depend on batching or chunking: a decode step of 20 sessions batched equals
 *   each decoded alone bit for bit (every q8 product takes the int8 kernel, whatever the rows), and a
 *   12-token prompt's states equal those of the same 12 tokens inside a 20-token prompt within f32
 *   rounding (only attention's summation order differs), not the ~1 % of quantized against f32 inputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/quant.h"

static char tmp[256];

static void ids_for(const oc_model *m, int32_t *ids, int n) {
  const int V = oc_model_cfg(m)->vocab;
  for (int t = 0; t < n; t++) ids[t] = (int32_t)(3 + (t * 37 + 11) % (V - 3));
}

static void check_accuracy(const char *dir, oc_model *ref, oc_model *q) {
  oc_error e;
  int32_t ids[40];
  ids_for(ref, ids, 40);
  oc_quant_report r;
  REQUIRE(oc_quant_compare(ref, q, ids, 40, 10, NULL, 0, &r, &e) == 0, "%s: %s", dir, e.msg);
  double worst = 1, worst_err = 0;
  for (int i = 0; i < r.n_states; i++) {
    const oc_quant_layer *ls[2] = {&r.prefill[i], &r.decode[i]};
    for (int k = 0; k < 2; k++) {
      CHECK(ls[k]->cos_mean >= 0.998 && ls[k]->cos_min >= 0.99 && ls[k]->rel_err <= 0.06, "%s %s state %d: cos mean %.6f min %.6f rel err %.4f", dir,
            k ? "decode" : "prefill", i, ls[k]->cos_mean, ls[k]->cos_min, ls[k]->rel_err);
      if (ls[k]->cos_min < worst) worst = ls[k]->cos_min;
      if (ls[k]->rel_err > worst_err) worst_err = ls[k]->rel_err;
    }
  }
  CHECK(r.logit_cos_min >= 0.99, "%s: decode logits cos %.6f", dir, r.logit_cos_min);
  printf("%s: worst hidden-state cosine %.6f, relative error %.4f; logits cos %.6f, greedy agreement %d/10\n", dir, worst, worst_err, r.logit_cos_min,
         r.top1_agree);
  oc_quant_report_free(&r);
}

/* logits and last hidden state of a 12-token prefill and 3 greedy steps, for bit comparison */
static void run_model(oc_model *m, float *out, size_t *n_out) {
  oc_error e;
  const oc_model_config *c = oc_model_cfg(m);
  oc_session *s = oc_session_new(m, 64, &e);
  REQUIRE(s, "%s", e.msg);
  int32_t ids[12];
  ids_for(m, ids, 12);
  int layer = -1;
  size_t k = 0;
  oc_taps taps = {1, &layer, 0, NULL, NULL};
  for (int step = 0; step < 4; step++) {
    taps.out = out + k;
    k += (size_t)(step ? 1 : 12) * c->hidden;
    REQUIRE(oc_forward(s, step ? ids : ids, step ? 1 : 12, &taps, out + k, 0, &e) == 0, "%s", e.msg);
    ids[0] = oc_argmax(out + k, c->vocab);
    k += (size_t)c->vocab;
  }
  *n_out = k;
  oc_session_free(s);
}

/* run_model on two models of the same shape: *a and *b (malloc'd), the count of each (-1 when they differ) */
static long run_both(oc_model *x, oc_model *y, float **a, float **b) {
  const oc_model_config *c = oc_model_cfg(x);
  const size_t cap = (size_t)(12 + 3) * c->hidden + 4 * (size_t)c->vocab;
  *a = malloc(sizeof(float) * cap);
  *b = malloc(sizeof(float) * cap);
  size_t na, nb;
  run_model(x, *a, &na);
  run_model(y, *b, &nb);
  return na == nb ? (long)na : -1;
}

/* A copy of the q8 checkpoint src with tensor `name` replaced (data NULL: left out). */
static void write_variant(const char *src, const char *dst, const char *name, oc_dtype dt, int ndim, const int64_t *shape, const void *data) {
  oc_error e;
  oc_st_file *f;
  char path[1100], cmd[2400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/config.json' '%s/'", dst, dst, src, dst);
  REQUIRE(system(cmd) == 0, "%s", cmd);
  snprintf(path, sizeof path, "%s/model.safetensors", src);
  REQUIRE(oc_st_open(path, &f, &e) == 0, "%s", e.msg);
  oc_st_writer *w = oc_st_writer_new();
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    if (strcmp(t->name, name) == 0) {
      if (data) REQUIRE(oc_st_writer_add(w, name, dt, ndim, shape, data, &e) == 0, "%s", e.msg);
    } else
      REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &e) == 0, "%s", e.msg);
  }
  snprintf(path, sizeof path, "%s/model.safetensors", dst);
  REQUIRE(oc_st_writer_write(w, path, &e) == 0, "%s", e.msg);
  oc_st_writer_free(w);
  oc_st_close(f);
}

/* dir/config.json with its quantization_config replaced by the JSON text q (NULL: removed). */
static void set_quant_config(const char *dir, const char *q) {
  char path[700];
  snprintf(path, sizeof path, "%s/config.json", dir);
  cJSON *c = read_json_file(path);
  REQUIRE(c, "%s", path);
  cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization_config");
  if (q) cJSON_AddItemToObject(c, "quantization_config", cJSON_Parse(q));
  char *s = cJSON_Print(c);
  FILE *f = fopen(path, "w");
  REQUIRE(f && fputs(s, f) >= 0 && fclose(f) == 0, "write %s", path);
  cJSON_free(s);
  cJSON_Delete(c);
}

static void expect_load_error(const char *dir, const char *what, const char *needle1, const char *needle2) {
  oc_error e;
  oc_model *m = NULL;
  int rc = oc_model_load(dir, &m, &e);
  CHECK(rc != 0 && strstr(e.msg, needle1) && strstr(e.msg, needle2), "%s: refused naming \"%s\" and \"%s\": %s", what, needle1, needle2,
        rc ? e.msg : "(loaded)");
  oc_model_free(m);
}

static void check_checkpoint(const char *dir, oc_model *q) {
  oc_error e;
  char out[512], again[512];
  snprintf(out, sizeof out, "%s/q8", tmp);
  snprintf(again, sizeof again, "%s/q8again", tmp);
  remove_tmpdir(out);
  remove_tmpdir(again);
  size_t bin = 0, bout = 0;
  REQUIRE(oc_model_quantize(dir, out, &bin, &bout, &e) == 0, "quantize %s: %s", dir, e.msg);
  CHECK(bout < bin, "%s: %zu bytes of tensors written for %zu read", dir, bout, bin);
  oc_model *l = NULL;
  REQUIRE(oc_model_load(out, &l, &e) == 0, "load the q8 checkpoint: %s", e.msg);
  CHECK(strcmp(oc_model_weights_kind(l), "q8") == 0, "the q8 checkpoint loads as q8, not %s", oc_model_weights_kind(l));
  CHECK(oc_model_decode_bytes(l) == oc_model_decode_bytes(q), "same bytes a token");
  float *a, *b;
  const long na = run_both(q, l, &a, &b);
  CHECK(na >= 0 && memcmp(a, b, sizeof(float) * (size_t)na) == 0, "%s: the q8 checkpoint gives the same bits as --weights q8", dir);
  /* quantizing a q8 checkpoint again: the same tensors */
  REQUIRE(oc_model_quantize(out, again, NULL, NULL, &e) == 0, "quantize again: %s", e.msg);
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "cmp -s '%s/model.safetensors' '%s/model.safetensors'", out, again);
  CHECK(system(cmd) == 0, "a q8 checkpoint quantized again is unchanged");
  /* into a directory that holds something (another model, or the source itself): refused, untouched */
  CHECK(oc_model_quantize(dir, again, NULL, NULL, &e) != 0 && strstr(e.msg, "not empty"), "quantize into a full directory refused: %s", e.msg);
  CHECK(oc_model_quantize(out, out, NULL, NULL, &e) != 0 && strstr(e.msg, "not empty"), "quantize into its source refused: %s", e.msg);
  CHECK(system(cmd) == 0, "the refused directories are untouched");
  free(a);
  free(b);
  /* hostile scale tensors, on the first layer's q_proj */
  const oc_tensor *qt = NULL;
  for (int i = 0; i < oc_weights_count(oc_model_weights(l)); i++) {
    const oc_tensor *t = oc_weights_at(oc_model_weights(l), i);
    if (strstr(t->name, "layers.0.self_attn.q_proj.weight_scale")) qt = t;
  }
  REQUIRE(qt, "q_proj scale tensor in the q8 checkpoint");
  char name[256], bad[512];
  snprintf(name, sizeof name, "%s", qt->name);
  snprintf(bad, sizeof bad, "%s/bad", tmp);
  const size_t ns = (size_t)qt->numel;
  uint16_t *s = malloc(sizeof(uint16_t) * ns);
  memcpy(s, qt->data, sizeof(uint16_t) * ns);
  write_variant(out, bad, name, OC_DT_F16, 0, NULL, NULL);
  expect_load_error(bad, "scale missing", "no \"", "_scale");
  s[3] = 0x7E00; /* NaN */
  write_variant(out, bad, name, OC_DT_F16, 2, qt->shape, s);
  expect_load_error(bad, "NaN scale", name, "not finite");
  s[3] = 0xBC00; /* -1 */
  write_variant(out, bad, name, OC_DT_F16, 2, qt->shape, s);
  expect_load_error(bad, "negative scale", name, "negative");
  memcpy(s, qt->data, sizeof(uint16_t) * ns);
  const int64_t flat[1] = {qt->numel};
  write_variant(out, bad, name, OC_DT_F16, 1, flat, s);
  expect_load_error(bad, "flat scales", name, "must be F16");
  const int64_t half[2] = {qt->shape[0], qt->shape[1]};
  write_variant(out, bad, name, OC_DT_BF16, 2, half, s);
  expect_load_error(bad, "BF16 scales", name, "must be F16");
  /* int8 without opencon_q8's quantization_config, or another format's: refused */
  write_variant(out, bad, "", OC_DT_F16, 0, NULL, NULL);
  set_quant_config(bad, NULL);
  expect_load_error(bad, "I8 without a quantization_config", "is I8", "quantization_config");
  set_quant_config(bad, "{\"quant_method\": \"gptq\", \"bits\": 8}");
  expect_load_error(bad, "gptq", "quant_method", "gptq");
  set_quant_config(bad, "{\"quant_method\": \"opencon_q8\", \"block_size\": 64, \"scale_dtype\": \"float16\"}");
  expect_load_error(bad, "block_size 64", "block_size 32", "opencon_q8");
  /* a scale beside no I8 matrix, and another format's zero points */
  const int64_t one[1] = {1};
  const uint16_t h1 = 0x3C00;
  write_variant(out, bad, "", OC_DT_F16, 0, NULL, NULL); /* the q8 checkpoint's own config.json again */
  oc_st_file *f;
  char path[1100];
  snprintf(path, sizeof path, "%s/model.safetensors", out);
  REQUIRE(oc_st_open(path, &f, &e) == 0, "%s", e.msg);
  const char *extra[] = {"model.layers.0.mlp.up_proj.weight_scale_orphan_scale", "model.layers.0.mlp.up_proj.weight_zero_point"};
  for (int k = 0; k < 2; k++) {
    oc_st_writer *w = oc_st_writer_new();
    for (int i = 0; i < oc_st_count(f); i++) {
      const oc_tensor *t = oc_st_at(f, i);
      REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &e) == 0, "%s", e.msg);
    }
    REQUIRE(oc_st_writer_add(w, extra[k], OC_DT_F16, 1, one, &h1, &e) == 0, "%s", e.msg);
    snprintf(path, sizeof path, "%s/model.safetensors", bad);
    REQUIRE(oc_st_writer_write(w, path, &e) == 0, "%s", e.msg);
    oc_st_writer_free(w);
    expect_load_error(bad, extra[k], extra[k], k ? "another int format" : "not in the checkpoint");
  }
  oc_st_close(f);
  free(s);
  oc_model_free(l);
}

/* A NaN in a BF16 matrix: --weights q8 refuses the checkpoint naming the tensor, row and column. */
static void check_nonfinite_weight(const char *dir) {
  oc_error e;
  oc_st_file *f;
  char path[1100], bad[512], cmd[2400];
  snprintf(bad, sizeof bad, "%s/nan", tmp);
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/config.json' '%s/'", bad, bad, dir, bad);
  REQUIRE(system(cmd) == 0, "%s", cmd);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  REQUIRE(oc_st_open(path, &f, &e) == 0, "%s", e.msg);
  oc_st_writer *w = oc_st_writer_new();
  void *copy = NULL;
  char target[256] = "";
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    const void *data = t->data;
    if (!target[0] && strstr(t->name, "mlp.down_proj.weight") && t->dtype == OC_DT_BF16) {
      snprintf(target, sizeof target, "%s", t->name);
      copy = malloc(t->nbytes);
      memcpy(copy, t->data, t->nbytes);
      ((uint16_t *)copy)[2 * t->shape[1] + 5] = 0x7FC0; /* row 2, column 5 */
      data = copy;
    }
    REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data, &e) == 0, "%s", e.msg);
  }
  REQUIRE(target[0], "a BF16 down_proj in %s", dir);
  snprintf(path, sizeof path, "%s/model.safetensors", bad);
  REQUIRE(oc_st_writer_write(w, path, &e) == 0, "%s", e.msg);
  oc_st_writer_free(w);
  oc_st_close(f);
  free(copy);
  oc_model *m = NULL;
  const oc_model_opts q8 = {OC_WEIGHTS_Q8};
  int rc = oc_model_load_ex(bad, &q8, &m, &e);
  CHECK(rc != 0 && strstr(e.msg, target) && strstr(e.msg, "row 2 column 5"), "NaN weight refused: %s", rc ? e.msg : "(loaded)");
  oc_model_free(m);
}

static void check_batch_independence(const char *dir, oc_model *q) {
  oc_error e;
  const oc_model_config *c = oc_model_cfg(q);
  enum { NS = 20 };
  oc_session *ss[NS];
  int32_t ids[NS], p[24];
  float *lb = malloc(sizeof(float) * NS * (size_t)c->vocab), *l1 = malloc(sizeof(float) * (size_t)c->vocab);
  for (int i = 0; i < NS; i++) {
    REQUIRE((ss[i] = oc_session_new(q, 64, &e)), "%s", e.msg);
    for (int t = 0; t < 3 + i % 5; t++) p[t] = (int32_t)(3 + (i * 31 + t * 7) % (c->vocab - 3));
    REQUIRE(oc_forward(ss[i], p, 3 + i % 5, NULL, NULL, 0, &e) == 0, "%s", e.msg);
    ids[i] = (int32_t)(5 + i);
  }
  REQUIRE(oc_forward_batch(ss, NS, ids, NULL, lb, &e) == 0, "%s", e.msg);
  int same = 1;
  for (int i = 0; i < NS; i++) {
    REQUIRE(oc_session_truncate(ss[i], oc_session_len(ss[i]) - 1, &e) == 0, "%s", e.msg);
    REQUIRE(oc_forward(ss[i], &ids[i], 1, NULL, l1, 0, &e) == 0, "%s", e.msg);
    same &= memcmp(l1, lb + (size_t)i * c->vocab, sizeof(float) * (size_t)c->vocab) == 0;
    oc_session_free(ss[i]);
  }
  CHECK(same, "%s: q8, a batch of %d sessions equals each decoded alone", dir, NS);
  /* a 12-token prompt alone and inside a 20-token one */
  int32_t pr[20];
  ids_for(q, pr, 20);
  const int H = c->hidden, layer = -1;
  float *h12 = malloc(sizeof(float) * 12 * (size_t)H), *h20 = malloc(sizeof(float) * 20 * (size_t)H);
  oc_taps t12 = {1, &layer, 0, NULL, h12}, t20 = {1, &layer, 0, NULL, h20};
  oc_session *s = oc_session_new(q, 64, &e);
  REQUIRE(s && oc_forward(s, pr, 12, &t12, NULL, 0, &e) == 0, "%s", e.msg);
  oc_session_reset(s);
  REQUIRE(oc_forward(s, pr, 20, &t20, NULL, 0, &e) == 0, "%s", e.msg);
  double worst = 0;
  for (int i = 0; i < 12 * H; i++) {
    const double d = fabs((double)h12[i] - h20[i]) / (1e-3 + fabs((double)h12[i]));
    if (!(d <= worst)) worst = d;
  }
  CHECK(worst < 1e-3, "%s: q8, a prompt's states alone and inside a longer prompt differ by %.2e (relative)", dir, worst);
  oc_session_free(s);
  free(h12); free(h20); free(lb); free(l1);
}

/* Rows of 512 values and more are interleaved in memory (nn/q8.h): a random Llama-shaped model
 * 512 wide, loaded with --weights q8, checked as the fixtures are (accuracy, quantize's checkpoint
 * written back in the file's layout and read back interleaved, batching); its q8 checkpoint loaded
 * with --weights mmap (the q8 matrices copied and interleaved all the same) gives the same bits.
 * (The interleaved kernels against the file's layout: test_kernels.) */
static void check_wide(void) {
  oc_error e;
  char cfg[512], dir[512], qdir[512];
  snprintf(cfg, sizeof cfg, "%s/wide.json", tmp);
  snprintf(dir, sizeof dir, "%s/wide", tmp);
  snprintf(qdir, sizeof qdir, "%s/wide_q8", tmp);
  FILE *f = fopen(cfg, "w");
  REQUIRE(f, "write %s", cfg);
  fputs("{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 512, \"intermediate_size\": 1024,"
        " \"num_attention_heads\": 8, \"num_key_value_heads\": 2, \"head_dim\": 64, \"num_hidden_layers\": 2, \"vocab_size\": 600,"
        " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"max_position_embeddings\": 4096, \"tie_word_embeddings\": true,"
        " \"hidden_act\": \"silu\", \"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"bfloat16\"}\n", f);
  fclose(f);
  REQUIRE(oc_random_model(cfg, dir, 7, &e) == 0, "random 512-wide model: %s", e.msg);
  const oc_model_opts q8 = {OC_WEIGHTS_Q8}, mm = {OC_WEIGHTS_MMAP};
  oc_model *ref = NULL, *q = NULL, *nat = NULL;
  REQUIRE(oc_model_load(dir, &ref, &e) == 0 && oc_model_load_ex(dir, &q8, &q, &e) == 0, "%s", e.msg);
  check_accuracy(dir, ref, q);
  check_checkpoint(dir, q);
  check_batch_independence(dir, q);
  REQUIRE(oc_model_quantize(dir, qdir, NULL, NULL, &e) == 0 && oc_model_load_ex(qdir, &mm, &nat, &e) == 0, "%s", e.msg);
  const oc_tensor *qp = oc_model_tensor(nat, "model.layers.0.self_attn.q_proj.weight");
  CHECK(qp && qp->dtype == OC_DT_Q8 && qp->q8_il, "512 wide, --weights mmap: the q8 checkpoint's matrices are held interleaved");
  float *a, *b;
  const long na = run_both(q, nat, &a, &b);
  CHECK(na >= 0 && memcmp(a, b, sizeof(float) * (size_t)na) == 0, "512 wide: the q8 checkpoint under --weights mmap gives the same bits as --weights q8");
  free(a);
  free(b);
  oc_model_free(ref);
  oc_model_free(q);
  oc_model_free(nat);
}

int main(int argc, char **argv) {
  REQUIRE(argc >= 2, "usage: test_q8_model <fixture model dir>...");
  snprintf(tmp, sizeof tmp, "%s/oc_q8_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  for (int i = 1; i < argc; i++) {
    oc_error e;
    oc_model *ref = NULL, *q = NULL;
    const oc_model_opts q8 = {OC_WEIGHTS_Q8};
    REQUIRE(oc_model_load(argv[i], &ref, &e) == 0 && oc_model_load_ex(argv[i], &q8, &q, &e) == 0, "%s", e.msg);
    CHECK(strcmp(oc_model_weights_kind(q), "q8") == 0, "%s: q8 weights (%s)", argv[i], oc_model_weights_kind(q));
    const double ratio = (double)oc_model_decode_bytes(q) / (double)oc_model_decode_bytes(ref);
    CHECK(ratio > 0.5 && ratio < 0.6, "%s: a token streams %.3fx the bytes", argv[i], ratio);
    check_accuracy(argv[i], ref, q);
    check_checkpoint(argv[i], q);
    check_batch_independence(argv[i], q);
    if (i == 1) check_nonfinite_weight(argv[i]);
    oc_model_free(ref);
    oc_model_free(q);
  }
  check_wide();
  remove_tmpdir(tmp);
  printf("q8 model: %d checks passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
