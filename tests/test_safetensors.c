/* safetensors reader/writer: round trip, sharded directories, and hostile headers. */
#include <math.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"
#include "opencon/model.h"
#include "opencon/safetensors.h"

static char tmpdir[256];

/* 8-byte length + header (+ spaces to pad) + data */
static unsigned char *mk(const char *hdr, size_t data_len, size_t *len) {
  size_t hl = strlen(hdr);
  *len = 8 + hl + data_len;
  unsigned char *b = calloc(1, *len);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
  memcpy(b + 8, hdr, hl);
  return b;
}

static void expect_error(const char *hdr, size_t data_len, const char *needle) {
  size_t len;
  unsigned char *b = mk(hdr, data_len, &len);
  oc_st_file *f = NULL;
  oc_error e = {0};
  int rc = oc_st_parse(b, len, "x.safetensors", &f, &e);
  CHECK(rc != 0 && f == NULL, "header accepted but should fail: %s", hdr);
  CHECK(rc != 0 && strstr(e.msg, needle) && strstr(e.msg, "x.safetensors"), "error for %s should mention \"%s\", got: %s", hdr, needle, e.msg);
  free(b);
}

static void hostile(void) {
  size_t len;
  oc_st_file *f;
  oc_error e;
  /* valid baseline: header padded to 8 bytes so F32 data is aligned */
  const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ";
  unsigned char *b = mk(ok, 8, &len);
  CHECK(oc_st_parse(b, len, "ok", &f, &e) == 0, "valid header rejected: %s", e.msg);
  if (f) { CHECK(oc_st_count(f) == 1 && oc_st_get(f, "a") && oc_st_get(f, "a")->numel == 2, "parsed tensor"); oc_st_close(f); }
  /* truncated: fewer bytes than the header claims, or than 8 */
  CHECK(oc_st_parse(b, 5, "short", &f, &e) != 0 && strstr(e.msg, "truncated"), "5-byte file: %s", e.msg);
  CHECK(oc_st_parse(b, 20, "cut", &f, &e) != 0 && strstr(e.msg, "truncated"), "cut header: %s", e.msg);
  CHECK(oc_st_parse(b, len - 4, "cutdata", &f, &e) != 0 && strstr(e.msg, "\"a\"") && strstr(e.msg, "past the end"), "cut data: %s", e.msg);
  free(b);
  /* unaligned but valid: served from an aligned copy */
  const char *odd = "{\"h\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}    ";
  b = mk(odd, 8, &len);
  float one = 1.0f;
  memcpy(b + len - 8 + 2, &one, 4);
  CHECK(oc_st_parse(b, len, "odd", &f, &e) == 0, "unaligned tensor rejected: %s", e.msg);
  if (f) {
    const oc_tensor *t = oc_st_get(f, "a");
    CHECK(t && ((uintptr_t)t->data % 4) == 0 && *(const float *)t->data == 1.0f, "unaligned tensor copy");
    oc_st_close(f);
  }
  free(b);
  /* absurd header length */
  unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
  CHECK(oc_st_parse(big, sizeof big, "big", &f, &e) != 0 && strstr(e.msg, "limit"), "huge header length: %s", e.msg);
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "malformed");
  expect_error("[1,2,3]                 ", 0, "not a JSON object");
  expect_error("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}   ", 8, "dtype");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}   ", 8, "needs 12 bytes");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}  ", 8, "shape[0]");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}} ", 8, "shape[0]");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}   ", 8, "begin <= end");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}     ", 8, "data_offsets");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}      ", 8, "overflow");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "overlap");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "duplicate key \"a\"");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x  ", 8, "unexpected text after the JSON value");
  /* two __metadata__ entries overflowed the heap (the second table was sized for its own entries,
   * filled after the first's) */
  expect_error("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"},\"__metadata__\":{\"d\":\"4\"}}", 0, "duplicate key \"__metadata__\"");
  /* an empty tensor sorted between two overlapping ones hid the overlap */
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "tensors \"a\" and \"b\" overlap");
  expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[100],\"data_offsets\":[0,100]},\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[10,10]},"
               "\"c\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[20,30]}}", 100, "tensors \"a\" and \"c\" overlap");
  /* empty tensors occupy no bytes: inside or at the edge of another tensor is fine */
  const char *empties = "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]},"
                        "\"f\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[8,8]},\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}}";
  b = mk(empties, 16, &len);
  CHECK(oc_st_parse(b, len, "empties", &f, &e) == 0 && oc_st_count(f) == 4, "empty tensors rejected: %s", e.msg);
  oc_st_close(f);
  free(b);
  /* unaligned tensors are copied only after the overlap check: 2000 overlapping views of the
   * whole data section are an error, not 2000 copies of it */
  size_t hcap = 200000, hk = 0;
  char *many = malloc(hcap);
  hk += (size_t)snprintf(many + hk, hcap - hk, "{");
  for (int i = 0; i < 2000; i++)
    hk += (size_t)snprintf(many + hk, hcap - hk, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[262144],\"data_offsets\":[1,1048577]}", i ? "," : "", i);
  hk += (size_t)snprintf(many + hk, hcap - hk, "}");
  while (hk % 8) many[hk++] = ' '; /* data section 8-aligned: offset 1 is misaligned for F32 */
  many[hk] = 0;
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  expect_error(many, 1048577 + 3, "overlap");
  getrusage(RUSAGE_SELF, &ru1);
  CHECK(ru1.ru_maxrss - ru0.ru_maxrss < 200 * 1024, "the rejected header grew the peak RSS by %ld KB", ru1.ru_maxrss - ru0.ru_maxrss);
  free(many);
  expect_error("{\"__metadata__\":{\"k\":1}}               ", 0, "__metadata__");
  expect_error("{\"a\":7}                                  ", 0, "not an object");
}

static void roundtrip(void) {
  oc_error e;
  char path[300];
  snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
  float a[6] = {1, 2, 3, 4, 5, 6};
  uint16_t h[3] = {oc_f32_to_bf16(1.5f), oc_f32_to_bf16(-2.25f), oc_f32_to_bf16(3e-3f)};
  int32_t ids[2] = {7, -9};
  oc_st_writer *w = oc_st_writer_new();
  int64_t s1[2] = {2, 3}, s2[1] = {3}, s3[1] = {2};
  CHECK(oc_st_writer_add(w, "a", OC_DT_F32, 2, s1, a, &e) == 0, "add");
  CHECK(oc_st_writer_add(w, "h", OC_DT_BF16, 1, s2, h, &e) == 0, "add");
  CHECK(oc_st_writer_add(w, "ids", OC_DT_I32, 1, s3, ids, &e) == 0, "add");
  CHECK(oc_st_writer_add(w, "a", OC_DT_F32, 1, s3, a, &e) != 0, "duplicate name must fail");
  CHECK(oc_st_writer_set_metadata(w, "format", "pt", &e) == 0, "meta");
  CHECK(oc_st_writer_write(w, path, &e) == 0, "write: %s", e.msg);
  oc_st_writer_free(w);
  oc_st_file *f;
  REQUIRE(oc_st_open(path, &f, &e) == 0, "%s", e.msg);
  const oc_tensor *ta = oc_st_get(f, "a"), *th = oc_st_get(f, "h"), *ti = oc_st_get(f, "ids");
  CHECK(ta && ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3 && memcmp(ta->data, a, sizeof a) == 0, "f32 round trip");
  float hf[3];
  oc_to_f32(th->dtype, th->data, hf, 3);
  CHECK(hf[0] == 1.5f && hf[1] == -2.25f && fabsf(hf[2] - 3e-3f) < 1e-5f, "bf16 round trip");
  CHECK(ti && memcmp(ti->data, ids, sizeof ids) == 0, "i32 round trip");
  CHECK(oc_st_metadata(f, "format") && strcmp(oc_st_metadata(f, "format"), "pt") == 0, "metadata");
  oc_st_close(f);
  /* no temp files left behind */
  char cmd[400];
  snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp > /dev/null", tmpdir);
  CHECK(system(cmd) != 0, "temporary file left in %s", tmpdir);
  CHECK(oc_bf16_to_f32(oc_f32_to_bf16(1.00390625f)) == 1.0f, "bf16 ties to even");
  CHECK(oc_f16_to_f32(0x3c00) == 1.0f && oc_f16_to_f32(0xc000) == -2.0f && oc_f16_to_f32(0x0001) == 5.9604644775390625e-8f, "f16 decode");
}

/* Split a fixture into two shards + index.json; the model must load and give the same logits. */
static void sharded(const char *fixture) {
  oc_error e;
  oc_weights *w;
  REQUIRE(oc_weights_open(fixture, &w, &e) == 0, "%s", e.msg);
  char dir[300], p1[400], p2[400], idx[400], cfg[400], src[400];
  snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
  REQUIRE(oc_mkdirs(dir, &e) == 0, "%s", e.msg);
  snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
  snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
  oc_st_writer *a = oc_st_writer_new(), *b = oc_st_writer_new();
  size_t cap = 1 << 16, len = 0;
  char *json = malloc(cap);
  len += (size_t)snprintf(json, cap, "{\"metadata\": {}, \"weight_map\": {");
  int n = oc_weights_count(w);
  for (int i = 0; i < n; i++) {
    const oc_tensor *t = oc_weights_at(w, i);
    oc_st_writer *dst = i < n / 2 ? a : b;
    CHECK(oc_st_writer_add(dst, t->name, t->dtype, t->ndim, t->shape, t->data, &e) == 0, "%s", e.msg);
    len += (size_t)snprintf(json + len, cap - len, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", t->name, i < n / 2 ? 1 : 2);
  }
  snprintf(json + len, cap - len, "}}");
  CHECK(oc_st_writer_write(a, p1, &e) == 0 && oc_st_writer_write(b, p2, &e) == 0, "%s", e.msg);
  oc_st_writer_free(a);
  oc_st_writer_free(b);
  snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
  CHECK(oc_write_file_atomic(idx, json, strlen(json), &e) == 0, "%s", e.msg);
  snprintf(src, sizeof src, "%s/config.json", fixture);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  char *ctext;
  size_t clen;
  REQUIRE(oc_read_file(src, &ctext, &clen, &e) == 0, "%s", e.msg);
  CHECK(oc_write_file_atomic(cfg, ctext, clen, &e) == 0, "%s", e.msg);

  oc_model *m1, *m2;
  REQUIRE(oc_model_load(fixture, &m1, &e) == 0, "%s", e.msg);
  CHECK(oc_model_load(dir, &m2, &e) == 0, "sharded load: %s", e.msg);
  if (m2) {
    const int V = oc_model_cfg(m1)->vocab;
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    int32_t ids[5] = {2, 10, 20, 30, 40};
    oc_session *s1 = oc_session_new(m1, 8, &e), *s2 = oc_session_new(m2, 8, &e);
    CHECK(oc_forward(s1, ids, 5, NULL, l1, 0, &e) == 0 && oc_forward(s2, ids, 5, NULL, l2, 0, &e) == 0, "%s", e.msg);
    CHECK(memcmp(l1, l2, sizeof(float) * V) == 0, "sharded model gives other logits");
    oc_session_free(s1);
    oc_session_free(s2);
    free(l1);
    free(l2);
    oc_model_free(m2);
  }
  /* index naming a shard outside the directory */
  const char *bad = "{\"weight_map\": {\"model.norm.weight\": \"../../etc/passwd\"}}";
  CHECK(oc_write_file_atomic(idx, bad, strlen(bad), &e) == 0, "%s", e.msg);
  unlink(p1);
  oc_weights *w2 = NULL;
  /* model.safetensors absent, index hostile */
  CHECK(oc_weights_open(dir, &w2, &e) != 0 && strstr(e.msg, "not a file name"), "hostile index: %s", e.msg);
  /* index whose promised tensor is not in its shard */
  const char *liar = "{\"weight_map\": {\"model.nothing\": \"model-00002-of-00002.safetensors\"}}";
  CHECK(oc_write_file_atomic(idx, liar, strlen(liar), &e) == 0, "%s", e.msg);
  CHECK(oc_weights_open(dir, &w2, &e) != 0 && strstr(e.msg, "model.nothing") && strstr(e.msg, "missing"), "lying index: %s", e.msg);
  free(json);
  free(ctext);
  oc_model_free(m1);
  oc_weights_close(w);
}

/* A model whose tensor has the wrong shape, or is missing, or an unknown architecture. */
static void model_errors(const char *fixture) {
  oc_error e;
  char dir[300], path[400];
  snprintf(dir, sizeof dir, "%s/broken", tmpdir);
  REQUIRE(oc_mkdirs(dir, &e) == 0, "%s", e.msg);
  snprintf(path, sizeof path, "%s/config.json", dir);
  const char *cfg = "{\"architectures\":[\"MambaForCausalLM\"],\"model_type\":\"mamba\"}";
  oc_write_file_atomic(path, cfg, strlen(cfg), &e);
  oc_model *m = NULL;
  CHECK(oc_model_load(dir, &m, &e) != 0 && strstr(e.msg, "unsupported architecture") && strstr(e.msg, "LlamaForCausalLM") && strstr(e.msg, "config.json"),
        "unknown architecture: %s", e.msg);
  /* copy a real config, write weights with one tensor reshaped and one dropped */
  char src[400], *ctext;
  size_t clen;
  snprintf(src, sizeof src, "%s/config.json", fixture);
  REQUIRE(oc_read_file(src, &ctext, &clen, &e) == 0, "%s", e.msg);
  oc_write_file_atomic(path, ctext, clen, &e);
  free(ctext);
  oc_weights *w;
  REQUIRE(oc_weights_open(fixture, &w, &e) == 0, "%s", e.msg);
  for (int mode = 0; mode < 2; mode++) {
    oc_st_writer *wr = oc_st_writer_new();
    for (int i = 0; i < oc_weights_count(w); i++) {
      const oc_tensor *t = oc_weights_at(w, i);
      int64_t shape[OC_MAX_DIMS];
      memcpy(shape, t->shape, sizeof shape);
      int hit = strcmp(t->name, "model.layers.1.mlp.up_proj.weight") == 0;
      if (hit && mode == 1) continue;
      if (hit) { shape[0] = t->shape[1]; shape[1] = t->shape[0]; }
      oc_st_writer_add(wr, t->name, t->dtype, t->ndim, shape, t->data, &e);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(oc_st_writer_write(wr, path, &e) == 0, "%s", e.msg);
    oc_st_writer_free(wr);
    int rc = oc_model_load(dir, &m, &e);
    if (mode == 0) CHECK(rc != 0 && strstr(e.msg, "model.layers.1.mlp.up_proj.weight") && strstr(e.msg, "shape") && strstr(e.msg, "model.safetensors"), "wrong shape: %s", e.msg);
    else CHECK(rc != 0 && strstr(e.msg, "missing tensor") && strstr(e.msg, "model.layers.1.mlp.up_proj.weight"), "missing tensor: %s", e.msg);
  }
  oc_weights_close(w);
  /* missing files */
  CHECK(oc_model_load("/nonexistent/model", &m, &e) != 0 && strstr(e.msg, "/nonexistent/model/config.json"), "missing dir: %s", e.msg);
  /* malformed config */
  snprintf(path, sizeof path, "%s/config.json", dir);
  oc_write_file_atomic(path, "{\"architectures\": [", 19, &e);
  CHECK(oc_model_load(dir, &m, &e) != 0 && strstr(e.msg, "malformed"), "malformed config: %s", e.msg);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_safetensors LLAMA_FIXTURE_DIR");
  snprintf(tmpdir, sizeof tmpdir, "/tmp/oc_test_st_XXXXXX");
  REQUIRE(mkdtemp(tmpdir), "mkdtemp");
  hostile();
  roundtrip();
  sharded(argv[1]);
  model_errors(argv[1]);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd)) {}
  return check_summary("safetensors");
}
