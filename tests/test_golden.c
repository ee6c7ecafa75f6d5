/* Golden test of the decoder engine against a fixture's reference.safetensors:
 * hidden states, logits, teacher-forced KV-cache decode logits, greedy continuation,
 * taps, layer skipping and thread-count independence. */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "check.h"
#include "opencon/model.h"

static double atol_hs, rtol_hs, atol_lg, rtol_lg, atol_dl, rtol_dl;

static void load_tolerances(const char *dir) {
  char *p = oc_path_join(dir, "reference.json"), *txt;
  oc_error e;
  REQUIRE(oc_read_file(p, &txt, NULL, &e) == 0, "%s", e.msg);
  cJSON *r = cJSON_Parse(txt);
  REQUIRE(r, "reference.json parse");
  const cJSON *t = cJSON_GetObjectItem(r, "suggested_tolerances_for_a_correct_float32_C_engine");
  if (t) {
#define AR(key, a, rr) a = cJSON_GetObjectItem(cJSON_GetObjectItem(t, key), "atol")->valuedouble; rr = cJSON_GetObjectItem(cJSON_GetObjectItem(t, key), "rtol")->valuedouble
    AR("hidden_states", atol_hs, rtol_hs);
    AR("logits", atol_lg, rtol_lg);
    AR("decode_logits", atol_dl, rtol_dl);
  } else {
    t = cJSON_GetObjectItem(r, "suggested_tolerances");
    REQUIRE(t, "no tolerances in reference.json");
    atol_hs = cJSON_GetObjectItem(t, "hidden_states_max_abs")->valuedouble;
    atol_lg = cJSON_GetObjectItem(t, "logits_max_abs")->valuedouble;
    atol_dl = cJSON_GetObjectItem(t, "decode_logits_max_abs")->valuedouble;
    rtol_hs = rtol_lg = rtol_dl = 0;
  }
  cJSON_Delete(r);
  free(txt);
  free(p);
}

static double g_worst; /* the largest ratio of the run, printed at the end (the margin left) */

/* max of |got-ref| / (atol + rtol|ref|); <= 1 passes */
static double ratio(const float *got, const float *ref, size_t n, double atol, double rtol) {
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - (double)ref[i]) / (atol + rtol * fabs((double)ref[i]));
    if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
  }
  if (!(worst <= g_worst)) g_worst = worst;
  return worst;
}

static const oc_tensor *ref_t(oc_st_file *f, const char *fmt, int n) {
  char name[64];
  snprintf(name, sizeof name, fmt, n);
  const oc_tensor *t = oc_st_get(f, name);
  REQUIRE(t, "reference tensor %s missing", name);
  return t;
}

/* Write `src`'s tensors into dir/model.safetensors as dtype dt (values passed through
 * round_f16 first when asked) with src's config.json. */

/* float -> IEEE half, round to nearest even (subnormals, overflow to infinity, NaN kept); written
 * out because clang on x86-64 Debian 12 has no _Float16 */
static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) return (uint16_t)(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0));
  if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* >= 65520 rounds to infinity */
  if (ax < 0x38800000u) {                                      /* below 2^-14: a half subnormal */
    float a;
    memcpy(&a, &ax, sizeof a);
    return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f)); /* units of 2^-24, ties to even */
  }
  uint32_t r = ax - 0x38000000u; /* exponent rebiased from 127 to 15 */
  r += 0xFFFu + ((r >> 13) & 1u);
  return (uint16_t)(sign | (r >> 13));
}

static void write_copy(const char *src, const char *dir, oc_dtype dt, int round_f16) {
  oc_error e;
  oc_weights *w;
  REQUIRE(oc_weights_open(src, &w, &e) == 0, "%s", e.msg);
  oc_st_writer *wr = oc_st_writer_new();
  int n = oc_weights_count(w);
  void **bufs = calloc((size_t)n, sizeof *bufs);
  for (int i = 0; i < n; i++) {
    const oc_tensor *t = oc_weights_at(w, i);
    float *f = malloc(sizeof(float) * (size_t)t->numel);
    oc_to_f32(t->dtype, t->data, f, (size_t)t->numel);
    if (round_f16) for (int64_t k = 0; k < t->numel; k++) f[k] = oc_f16_to_f32(f32_to_f16(f[k]));
    if (dt == OC_DT_F16) {
      uint16_t *h = malloc(sizeof *h * (size_t)t->numel);
      for (int64_t k = 0; k < t->numel; k++) h[k] = f32_to_f16(f[k]);
      free(f);
      bufs[i] = h;
    } else {
      bufs[i] = f;
    }
    REQUIRE(oc_st_writer_add(wr, t->name, dt, t->ndim, t->shape, bufs[i], &e) == 0, "%s", e.msg);
  }
  char path[256];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  REQUIRE(oc_mkdirs(dir, &e) == 0 && oc_st_writer_write(wr, path, &e) == 0, "%s", e.msg);
  oc_st_writer_free(wr);
  for (int i = 0; i < n; i++) free(bufs[i]);
  free(bufs);
  oc_weights_close(w);
  char *cs = oc_path_join(src, "config.json"), *cd = oc_path_join(dir, "config.json"), *txt;
  size_t len;
  REQUIRE(oc_read_file(cs, &txt, &len, &e) == 0 && oc_write_file_atomic(cd, txt, len, &e) == 0, "%s", e.msg);
  free(txt);
  free(cs);
  free(cd);
}

/* prefill logits (all rows) + one decode step of reference sequence 0 */
static float *run_seq0(const char *dir, oc_st_file *ref, int *rows_out) {
  oc_error e;
  oc_model *m;
  REQUIRE(oc_model_load(dir, &m, &e) == 0, "%s", e.msg);
  const oc_tensor *ti = ref_t(ref, "input_ids.%d", 0), *tg = ref_t(ref, "generated_ids.%d", 0);
  const int T = (int)ti->numel, V = oc_model_cfg(m)->vocab;
  float *lg = malloc(sizeof(float) * (size_t)(T + 1) * V);
  oc_session *s = oc_session_new(m, T + 2, &e);
  REQUIRE(oc_forward(s, ti->data, T, NULL, lg, 1, &e) == 0, "%s", e.msg);
  REQUIRE(oc_forward(s, (const int32_t *)tg->data, 1, NULL, lg + (size_t)T * V, 0, &e) == 0, "%s", e.msg);
  oc_session_free(s);
  oc_model_free(m);
  *rows_out = T + 1;
  return lg;
}

/* The F32 and F16 weight paths: the checkpoint stored as F32 must reproduce the reference
 * (BF16 -> F32 is exact); stored as F16 it must agree with an F32 copy of the same
 * F16-rounded values. */
static void other_dtypes(const char *dir, oc_st_file *ref, int V) {
  char tmp[] = "/tmp/oc_dtype_XXXXXX";
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  char d32[64], d16[64], d16as32[64];
  snprintf(d32, sizeof d32, "%s/f32", tmp);
  snprintf(d16, sizeof d16, "%s/f16", tmp);
  snprintf(d16as32, sizeof d16as32, "%s/f16as32", tmp);
  write_copy(dir, d32, OC_DT_F32, 0);
  write_copy(dir, d16, OC_DT_F16, 1);
  write_copy(dir, d16as32, OC_DT_F32, 1);
  int rows;
  float *a = run_seq0(d32, ref, &rows);
  const oc_tensor *tl = ref_t(ref, "logits.%d", 0), *td = ref_t(ref, "decode_logits.%d", 0);
  double r = ratio(a, tl->data, (size_t)(rows - 1) * V, atol_lg, rtol_lg);
  CHECK(r <= 1, "F32 weights: logits error ratio %.3g", r);
  r = ratio(a + (size_t)(rows - 1) * V, (const float *)td->data + V, (size_t)V, atol_dl, rtol_dl);
  CHECK(r <= 1, "F32 weights: decode row 1 error ratio %.3g", r);
  free(a);
  a = run_seq0(d16, ref, &rows);
  float *b = run_seq0(d16as32, ref, &rows);
  r = ratio(a, b, (size_t)rows * V, atol_lg, rtol_lg);
  CHECK(r <= 1, "F16 weights vs the same values as F32: error ratio %.3g", r);
  free(a);
  free(b);
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd)) {}
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_golden FIXTURE_DIR");
  const char *dir = argv[1];
  oc_error e;
  load_tolerances(dir);
  oc_model *m;
  REQUIRE(oc_model_load(dir, &m, &e) == 0, "%s", e.msg);
  const oc_model_config *c = oc_model_cfg(m);
  char *rp = oc_path_join(dir, "reference.safetensors");
  oc_st_file *ref;
  REQUIRE(oc_st_open(rp, &ref, &e) == 0, "%s", e.msg);
  const int H = c->hidden, V = c->vocab, L = c->n_layers;

  const oc_tensor *inv = oc_st_get(ref, "rope_inv_freq");
  if (inv) {
    float mine[512];
    oc_rope_inv_freq(&c->rope[OC_LAYER_FULL], c->head_dim, mine);
    CHECK(ratio(mine, inv->data, (size_t)inv->numel, 1e-7, 1e-6) <= 1, "rope inv_freq differs");
  }

  for (int seq = 0; seq < 3; seq++) {
    const oc_tensor *ti = ref_t(ref, "input_ids.%d", seq), *ths = ref_t(ref, "hidden_states.%d", seq);
    const oc_tensor *tl = ref_t(ref, "logits.%d", seq), *tg = ref_t(ref, "generated_ids.%d", seq);
    const oc_tensor *td = ref_t(ref, "decode_logits.%d", seq);
    const int T = (int)ti->numel, G = (int)tg->numel;
    const int32_t *ids = ti->data, *gen = tg->data;
    REQUIRE(ths->shape[0] == L + 1 && ths->shape[1] == T && ths->shape[2] == H, "hidden_states shape");

    /* 1. full forward, every hidden state and every logit row, with 1 and 2 threads */
    int all[257];
    for (int i = 0; i <= L; i++) all[i] = i;
    float *hs[2], *lg[2];
    for (int th = 0; th < 2; th++) {
      oc_set_threads(th + 1);
      hs[th] = malloc(sizeof(float) * (size_t)(L + 1) * T * H);
      lg[th] = malloc(sizeof(float) * (size_t)T * V);
      oc_session *s = oc_session_new(m, T, &e);
      oc_taps taps = {L + 1, all, 0, NULL, hs[th]};
      REQUIRE(s && oc_forward(s, ids, T, &taps, lg[th], 1, &e) == 0, "%s", e.msg);
      oc_session_free(s);
    }
    for (int i = 0; i <= L; i++) {
      double r = ratio(hs[0] + (size_t)i * T * H, (const float *)ths->data + (size_t)i * T * H, (size_t)T * H, atol_hs, rtol_hs);
      CHECK(r <= 1, "seq %d hidden_states[%d]: error ratio %.3g", seq, i, r);
    }
    double rl = ratio(lg[0], tl->data, (size_t)T * V, atol_lg, rtol_lg);
    CHECK(rl <= 1, "seq %d logits: error ratio %.3g", seq, rl);
    CHECK(memcmp(hs[0], hs[1], sizeof(float) * (size_t)(L + 1) * T * H) == 0, "seq %d: hidden states differ between 1 and 2 threads", seq);
    CHECK(memcmp(lg[0], lg[1], sizeof(float) * (size_t)T * V) == 0, "seq %d: logits differ between 1 and 2 threads", seq);
    oc_set_threads(2);

    /* 2. taps: negative indices, chosen positions, only those rows */
    {
      int layers[3] = {-2, 0, -1}, pos[2] = {-1, 0};
      float *out = malloc(sizeof(float) * 3 * 2 * H);
      oc_session *s = oc_session_new(m, T, &e);
      oc_taps taps = {3, layers, 2, pos, out};
      REQUIRE(oc_forward(s, ids, T, &taps, NULL, 0, &e) == 0, "%s", e.msg);
      const int want_layer[3] = {L - 1, 0, L}, want_pos[2] = {T - 1, 0};
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 2; b++) {
          const float *r = (const float *)ths->data + ((size_t)want_layer[a] * T + want_pos[b]) * H;
          CHECK(ratio(out + ((size_t)a * 2 + b) * H, r, (size_t)H, atol_hs, rtol_hs) <= 1, "seq %d tap layer %d pos %d", seq, layers[a], pos[b]);
        }
      oc_session_free(s);
      /* 3. layer skipping: only layer 1 requested, no logits -> later layers skipped */
      int one = 1;
      s = oc_session_new(m, T, &e);
      oc_taps t1 = {1, &one, 1, pos, out};
      REQUIRE(oc_forward(s, ids, T, &t1, NULL, 0, &e) == 0, "%s", e.msg);
      CHECK(ratio(out, (const float *)ths->data + ((size_t)1 * T + T - 1) * H, (size_t)H, atol_hs, rtol_hs) <= 1, "seq %d early-exit tap", seq);
      CHECK(oc_forward(s, ids, 1, NULL, NULL, 0, &e) != 0 && strstr(e.msg, "incomplete"), "seq %d: truncated session must refuse to continue", seq);
      oc_session_free(s);
      free(out);
    }

    /* 4. teacher-forced KV-cache decode, row by row */
    {
      float *row = malloc(sizeof(float) * V);
      oc_session *s = oc_session_new(m, T + G, &e);
      REQUIRE(oc_forward(s, ids, T, NULL, row, 0, &e) == 0, "%s", e.msg);
      for (int k = 0; k < G; k++) {
        if (k > 0) REQUIRE(oc_forward(s, &gen[k - 1], 1, NULL, row, 0, &e) == 0, "%s", e.msg);
        double r = ratio(row, (const float *)td->data + (size_t)k * V, (size_t)V, atol_dl, rtol_dl);
        CHECK(r <= 1, "seq %d decode_logits row %d: error ratio %.3g", seq, k, r);
      }
      CHECK(oc_session_len(s) == T + G - 1, "session length");
      oc_session_free(s);
      free(row);
    }

    /* 5. greedy continuation, prompt prefilled in chunks of 3 (incremental path) */
    {
      float *row = malloc(sizeof(float) * V);
      oc_session *s = oc_session_new(m, T + G, &e);
      for (int p = 0; p < T; p += 3) {
        int nn = T - p < 3 ? T - p : 3;
        REQUIRE(oc_forward(s, ids + p, nn, NULL, row, 0, &e) == 0, "%s", e.msg);
      }
      int same = 1;
      for (int k = 0; k < G; k++) {
        int32_t next = oc_argmax(row, V);
        if (next != gen[k]) { same = 0; fprintf(stderr, "seq %d step %d: got %d want %d\n", seq, k, next, gen[k]); break; }
        if (k + 1 < G) REQUIRE(oc_forward(s, &next, 1, NULL, row, 0, &e) == 0, "%s", e.msg);
      }
      CHECK(same, "seq %d: greedy continuation differs from generated_ids", seq);
      oc_session_free(s);
      free(row);
    }
    for (int th = 0; th < 2; th++) { free(hs[th]); free(lg[th]); }
  }

  /* 6. packed prefill: the three sequences in one chunk, every layer at every position, must
   *    equal each sequence's own reference (positions restart, attention stays inside each) */
  {
    int lens[3], tot = 0;
    for (int q = 0; q < 3; q++) tot += lens[q] = (int)ref_t(ref, "input_ids.%d", q)->numel;
    int32_t *cat = malloc(sizeof(int32_t) * (size_t)tot);
    for (int q = 0, o = 0; q < 3; o += lens[q++]) memcpy(cat + o, ref_t(ref, "input_ids.%d", q)->data, sizeof(int32_t) * (size_t)lens[q]);
    int all[257];
    for (int i = 0; i <= L; i++) all[i] = i;
    float *hs = malloc(sizeof(float) * (size_t)(L + 1) * tot * H), *hs1 = malloc(sizeof(float) * (size_t)(L + 1) * tot * H);
    for (int th = 2; th >= 1; th--) {
      oc_set_threads(th);
      oc_session *s = oc_session_new(m, tot, &e);
      oc_taps taps = {L + 1, all, 0, NULL, th == 2 ? hs : hs1};
      REQUIRE(s && oc_forward_packed(s, cat, lens, 3, &taps, &e) == 0, "%s", e.msg);
      CHECK(oc_forward(s, cat, 1, NULL, NULL, 0, &e) != 0, "a packed session refuses to decode");
      oc_session_free(s);
    }
    oc_set_threads(2);
    CHECK(memcmp(hs, hs1, sizeof(float) * (size_t)(L + 1) * tot * H) == 0, "packed: 1 vs 2 threads bit-identical");
    double worst = 0;
    for (int q = 0, o = 0; q < 3; o += lens[q++]) {
      const float *want = ref_t(ref, "hidden_states.%d", q)->data;
      for (int i = 0; i <= L; i++) {
        double r = ratio(hs + ((size_t)i * tot + o) * H, want + (size_t)i * lens[q] * H, (size_t)lens[q] * H, atol_hs, rtol_hs);
        if (r > worst) worst = r;
      }
    }
    CHECK(worst <= 1, "packed prefill hidden states: worst error ratio %.3g", worst);
    free(cat); free(hs); free(hs1);
  }

  other_dtypes(dir, ref, V);

  /* bad input: out-of-vocabulary id, context overflow */
  {
    oc_session *s = oc_session_new(m, 4, &e);
    int32_t bad = V;
    CHECK(oc_forward(s, &bad, 1, NULL, NULL, 0, &e) != 0 && strstr(e.msg, "outside the vocabulary"), "oov id must fail: %s", e.msg);
    int32_t five[5] = {1, 1, 1, 1, 1};
    CHECK(oc_forward(s, five, 5, NULL, NULL, 0, &e) != 0 && strstr(e.msg, "exceeds"), "context overflow must fail");
    int bad_layer = L + 1;
    float buf[1];
    oc_taps t = {1, &bad_layer, 1, NULL, buf};
    CHECK(oc_forward(s, five, 1, &t, NULL, 0, &e) != 0 && strstr(e.msg, "out of range"), "bad tap index must fail");
    oc_session_free(s);
  }
  oc_st_close(ref);
  free(rp);
  oc_model_free(m);
  printf("%s: largest error ratio against the reference %.3g (1 = at the tolerance)\n", dir, g_worst);
  return check_summary(dir);
}
