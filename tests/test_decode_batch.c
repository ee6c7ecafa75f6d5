/* oc_forward_batch against one-at-a-time decoding on a tiny fixture model: NS sessions with prompts
 * of different lengths (longer than the Gemma fixtures' sliding window of 8 too) are prefilled, then
 * decoded greedily for STEPS steps two ways — one oc_forward per session per step, and one
 * oc_forward_batch per step — with the batch's membership and row order changing from step to step
 * (sessions joining late, pausing, leaving early; 1 to NS rows). Logits, the hidden state of a
 * middle layer, of the last layer's input and the final-normed output, and the greedy tokens are
 * compared. Until a session has been in a batch of 8 rows or more its results must equal the
 * single steps' bit for bit (below 8 rows the matmuls take the same per-row kernels, attention the
 * same per-query arithmetic); from 8 rows F32/F16 matmuls are sgemm calls, whose sums are ordered
 * differently, and the K/V rows they write differ in rounding from then on: within TOL (BF16
 * matmuls keep the per-row kernels up to 32 rows on an AVX2 CPU, q8 ones at any count, so for
 * them TOL is a loose bound). The batch results must not depend on the thread count (1 and 2).
 * With "q8" the model's matrices are q8. Then a batch of 24 sessions against their single steps
 * (bit for bit with BF16 weights on an AVX2 CPU and with q8). Then the errors: each returns -1 with a message and
 * leaves every session's length as it was, and the sessions decode correctly after. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "nn/cpu.h"
#include "opencon/model.h"

#define NS 9
#define STEPS 12
#define NTAP 3
/* |batch - single| <= TOL * (1 + |single|) from 8 rows on. The fixtures' reference tolerances for a
 * correct f32 engine are 2e-4 (Llama, Qwen: atol = rtol) and 5e-4 absolute (Gemma), set 10-100x above
 * f32-vs-f64 drift; batch against single is f32 against f32 with only the summation order of the
 * matmuls changed, so half the tightest of them. Measured: see the printed maxima. */
#define TOL 1e-4

static const int prompt_len[NS] = {3, 11, 1, 17, 6, 9, 2, 13, 20};
/* which sessions take part in each step (bit i: session i) */
static const unsigned members[STEPS] = {0x001, 0x007, 0x01F, 0x01E, 0x1FF, 0x1FE, 0x0F0, 0x155, 0x1AA, 0x100, 0x1FF, 0x007};

typedef struct {
  oc_model *m;
  int V, H, taps[NTAP];
  float *lg[STEPS][NS], *hs[STEPS][NS]; /* the batch's logits and taps per step and session (NULL: not in it) */
  int tok[STEPS][NS];
} run;

static double g_max_lg, g_max_hs, g_ratio; /* largest |batch - single| from 8 rows on; its largest share of TOL */

static oc_session *prefilled(oc_model *m, int i, int max_ctx) {
  oc_error e;
  oc_session *s = oc_session_new(m, max_ctx, &e);
  REQUIRE(s, "session: %s", e.msg);
  const int V = oc_model_cfg(m)->vocab;
  int32_t ids[32];
  for (int t = 0; t < prompt_len[i]; t++) ids[t] = (int32_t)(3 + (i * 37 + t * 11) % (V - 3));
  REQUIRE(oc_forward(s, ids, prompt_len[i], NULL, NULL, 0, &e) == 0, "prefill %d: %s", i, e.msg);
  return s;
}

/* differences of n floats: exact (below 8 rows) or within TOL, the largest kept in *worst */
static void compare(const float *b, const float *a, size_t n, int exact, double *worst, const char *what, int step, int i) {
  double mx = 0, over = 0;
  for (size_t j = 0; j < n; j++) {
    double d = fabs((double)b[j] - (double)a[j]);
    if (!(d <= mx)) mx = d;
    double r = d / (TOL * (1 + fabs((double)a[j])));
    if (!(r <= over)) over = r;
  }
  if (exact) CHECK(mx == 0, "%s of session %d at step %d: batch differs from single by %g (must be bit for bit below 8 rows)", what, i, step, mx);
  else {
    CHECK(over <= 1, "%s of session %d at step %d: batch differs from single by %g (%.2f of the tolerance)", what, i, step, mx, over);
    if (mx > *worst) *worst = mx;
    if (over > g_ratio) g_ratio = over;
  }
}

/* Both ways, with `threads` OpenMP threads; the batch's results kept in r. */
static void decode_both_ways(run *r, int threads) {
  oc_set_threads(threads);
  oc_error e;
  const int V = r->V, H = r->H;
  oc_session *single[NS], *batch[NS];
  int32_t next[NS];
  int sgemm_seen[NS] = {0}; /* been in a batch of 8 rows or more: its cache differs in rounding from then on */
  float *lg1 = malloc(sizeof(float) * V), *hs1 = malloc(sizeof(float) * NTAP * H);
  float *lgb = malloc(sizeof(float) * NS * V), *hsb = malloc(sizeof(float) * NTAP * NS * H);
  REQUIRE(lg1 && hs1 && lgb && hsb, "out of memory");
  for (int i = 0; i < NS; i++) {
    single[i] = prefilled(r->m, i, 0);
    batch[i] = prefilled(r->m, i, 0);
    next[i] = (int32_t)(5 + 3 * i);
  }
  for (int step = 0; step < STEPS; step++) {
    oc_session *rows[NS];
    int who[NS], n = 0;
    for (int k = 0; k < NS; k++) { /* odd steps in reverse order: the first row (whose scratch serves) changes */
      const int i = step % 2 ? NS - 1 - k : k;
      if (members[step] >> i & 1) { who[n] = i; rows[n] = batch[i]; n++; }
    }
    int32_t ids[NS];
    for (int t = 0; t < n; t++) ids[t] = next[who[t]];
    for (int t = 0; t < n; t++) sgemm_seen[who[t]] |= n >= 8;
    const oc_taps tb = {NTAP, r->taps, 0, NULL, hsb};
    REQUIRE(oc_forward_batch(rows, n, ids, &tb, lgb, &e) == 0, "batch step %d: %s", step, e.msg);
    for (int t = 0; t < n; t++) {
      const int i = who[t];
      CHECK(oc_session_len(batch[i]) == oc_session_len(single[i]) + 1, "session %d: batch length %d after step %d", i, oc_session_len(batch[i]), step);
      const int pos[1] = {-1};
      const oc_taps t1 = {NTAP, r->taps, 1, pos, hs1};
      REQUIRE(oc_forward(single[i], &ids[t], 1, &t1, lg1, 0, &e) == 0, "single step %d session %d: %s", step, i, e.msg);
      compare(lgb + (size_t)t * V, lg1, (size_t)V, !sgemm_seen[i], &g_max_lg, "logits", step, i);
      for (int k = 0; k < NTAP; k++)
        compare(hsb + ((size_t)k * n + t) * H, hs1 + (size_t)k * H, (size_t)H, !sgemm_seen[i], &g_max_hs, "hidden state", step, i);
      const int tb_tok = oc_argmax(lgb + (size_t)t * V, V), t1_tok = oc_argmax(lg1, V);
      CHECK(tb_tok == t1_tok, "session %d step %d: greedy token %d batched, %d alone", i, step, tb_tok, t1_tok);
      next[i] = (int32_t)t1_tok;
      r->tok[step][i] = tb_tok;
      r->lg[step][i] = malloc(sizeof(float) * V);
      r->hs[step][i] = malloc(sizeof(float) * NTAP * H);
      REQUIRE(r->lg[step][i] && r->hs[step][i], "out of memory");
      memcpy(r->lg[step][i], lgb + (size_t)t * V, sizeof(float) * V);
      for (int k = 0; k < NTAP; k++) memcpy(r->hs[step][i] + (size_t)k * H, hsb + ((size_t)k * n + t) * H, sizeof(float) * H);
    }
  }
  for (int i = 0; i < NS; i++) { oc_session_free(single[i]); oc_session_free(batch[i]); }
  free(lg1); free(hs1); free(lgb); free(hsb);
}

static void free_run(run *r) {
  for (int s = 0; s < STEPS; s++)
    for (int i = 0; i < NS; i++) { free(r->lg[s][i]); free(r->hs[s][i]); }
}

/* The batch's results with 1 and 2 threads, bit for bit. */
static void compare_threads(const run *a, const run *b) {
  size_t diffs = 0;
  for (int s = 0; s < STEPS; s++)
    for (int i = 0; i < NS; i++) {
      if (!a->lg[s][i]) continue;
      diffs += memcmp(a->lg[s][i], b->lg[s][i], sizeof(float) * a->V) != 0;
      diffs += memcmp(a->hs[s][i], b->hs[s][i], sizeof(float) * NTAP * a->H) != 0;
      diffs += a->tok[s][i] != b->tok[s][i];
    }
  CHECK(diffs == 0, "%zu batch results differ between 1 and 2 threads", diffs);
}

/* A failing batch: -1, a message containing `want`, no session's length changed. */
static void expect_error(oc_session *const *ss, int n, const int32_t *ids, const oc_taps *taps, oc_session *const *all, int n_all,
                         const char *want) {
  int before[8];
  for (int i = 0; i < n_all; i++) before[i] = oc_session_len(all[i]);
  oc_error e;
  e.msg[0] = 0;
  float lg[8 * 512];
  CHECK(oc_forward_batch(ss, n, ids, taps, lg, &e) == -1, "a batch that should fail (%s) succeeded", want);
  CHECK(strstr(e.msg, want) != NULL, "error \"%s\" does not say \"%s\"", e.msg, want);
  for (int i = 0; i < n_all; i++) CHECK(oc_session_len(all[i]) == before[i], "session %d: length %d after a failed batch (was %d; %s)", i, oc_session_len(all[i]), before[i], want);
}

/* A batch wider than the 8 rows from which F32/F16 matmuls turn to sgemm: with BF16 weights on a
 * CPU with the AVX2 kernels (the tiles take up to 32 rows) and with q8 weights (any count), the
 * batch's logits equal each session's single step bit for bit, as oc_forward_batch promises. */
static void wide_batch(oc_model *m, int q8) {
  if (!q8 && !(oc_have_avx2() && strcmp(oc_model_weights_kind(m), "bf16") == 0)) {
    printf("wide batch: skipped (weights %s, kernels %s)\n", oc_model_weights_kind(m), oc_cpu_level_name(oc_cpu()->level));
    return;
  }
  enum { WN = 24 };
  const int V = oc_model_cfg(m)->vocab;
  oc_session *a[WN], *b[WN];
  int32_t next[WN], ids[20];
  float *lb = malloc(sizeof(float) * (size_t)V * WN), *l1 = malloc(sizeof(float) * (size_t)V);
  REQUIRE(lb && l1, "out of memory");
  oc_error e;
  for (int i = 0; i < WN; i++) {
    const int len = 1 + i % 20;
    for (int t = 0; t < len; t++) ids[t] = (int32_t)(3 + (i * 37 + t * 11) % (V - 3));
    next[i] = (int32_t)(3 + (i * 53 + 7) % (V - 3));
    REQUIRE((a[i] = oc_session_new(m, 32, &e)) && (b[i] = oc_session_new(m, 32, &e)), "session: %s", e.msg);
    REQUIRE(oc_forward(a[i], ids, len, NULL, NULL, 0, &e) == 0 && oc_forward(b[i], ids, len, NULL, NULL, 0, &e) == 0, "prefill: %s", e.msg);
  }
  REQUIRE(oc_forward_batch(a, WN, next, NULL, lb, &e) == 0, "batch of %d: %s", WN, e.msg);
  int same = 0;
  for (int i = 0; i < WN; i++) {
    REQUIRE(oc_forward(b[i], &next[i], 1, NULL, l1, 0, &e) == 0, "single step: %s", e.msg);
    same += memcmp(l1, lb + (size_t)i * V, sizeof(float) * (size_t)V) == 0;
  }
  CHECK(same == WN, "a batch of %d (%s weights): %d of %d sessions' logits equal their single steps bit for bit", WN,
        oc_model_weights_kind(m), same, WN);
  for (int i = 0; i < WN; i++) { oc_session_free(a[i]); oc_session_free(b[i]); }
  free(lb);
  free(l1);
}

static void errors(const char *dir, oc_model *m) {
  oc_error e;
  const oc_model_config *c = oc_model_cfg(m);
  oc_model *other;
  REQUIRE(oc_model_load(dir, &other, &e) == 0, "%s", e.msg);
  oc_session *a = prefilled(m, 1, 0), *b = prefilled(m, 3, 0), *broken = prefilled(m, 0, 0), *full = prefilled(m, 2, prompt_len[2]);
  oc_session *foreign = prefilled(other, 4, 0);
  { /* layers skipped: only layer 1 tapped, no logits */
    float h[512];
    const int one[1] = {1};
    const oc_taps t = {1, one, 0, NULL, h};
    const int32_t id = 7;
    REQUIRE(c->hidden <= 512 && oc_forward(broken, &id, 1, &t, NULL, 0, &e) == 0, "%s", e.msg);
  }
  oc_session *all[] = {a, b, broken, full, foreign};
  const int n_all = 5;
  const int32_t ids[4] = {5, 6, 7, 8};
  oc_session *dup[] = {a, b, a}, *with_broken[] = {a, b, broken}, *with_full[] = {a, b, full}, *with_foreign[] = {a, foreign}, *ab[] = {a, b};
  expect_error(dup, 3, ids, NULL, all, n_all, "batch rows 0 and 2 are the same session");
  expect_error(with_broken, 3, ids, NULL, all, n_all, "batch row 2: session cache is incomplete");
  expect_error(with_full, 3, ids, NULL, all, n_all, "exceeds the session limit");
  expect_error(with_foreign, 2, ids, NULL, all, n_all, "another model");
  const int32_t bad[2] = {5, (int32_t)c->vocab};
  expect_error(ab, 2, bad, NULL, all, n_all, "outside the vocabulary");
  const int32_t neg[2] = {-1, 5};
  expect_error(ab, 2, neg, NULL, all, n_all, "outside the vocabulary");
  expect_error(ab, 0, ids, NULL, all, n_all, "a batch of 0 sessions");
  expect_error(ab, OC_MAX_BATCH + 1, ids, NULL, all, n_all, "a batch of 4097 sessions");
  float h[2 * 3 * 512];
  const int lay[1] = {-1}, pos[1] = {-1}, badlay[1] = {c->n_layers + 1};
  const oc_taps with_pos = {1, lay, 1, pos, h}, bad_layer = {1, badlay, 0, NULL, h};
  expect_error(ab, 2, ids, &with_pos, all, n_all, "pos must be NULL");
  expect_error(ab, 2, ids, &bad_layer, all, n_all, "out of range");
  /* after the failures the sessions still decode, as they would alone (the duplicate check leaves no mark) */
  oc_session *a1 = prefilled(m, 1, 0), *b1 = prefilled(m, 3, 0);
  float lgb[2 * 512], lg1[512];
  REQUIRE(c->vocab <= 512, "fixture vocab");
  CHECK(oc_forward_batch(ab, 2, ids, NULL, lgb, &e) == 0, "batch after the failures: %s", e.msg);
  CHECK(oc_forward(a1, &ids[0], 1, NULL, lg1, 0, &e) == 0 && memcmp(lg1, lgb, sizeof(float) * c->vocab) == 0, "session a after the failures");
  CHECK(oc_forward(b1, &ids[1], 1, NULL, lg1, 0, &e) == 0 && memcmp(lg1, lgb + c->vocab, sizeof(float) * c->vocab) == 0, "session b after the failures");
  CHECK(oc_session_len(a) == prompt_len[1] + 1 && oc_session_len(b) == prompt_len[3] + 1, "lengths after the batch");
  oc_session *again[] = {a, b, a1};
  CHECK(oc_forward_batch(again, 3, ids, NULL, NULL, &e) == 0, "a batch of sessions checked for duplicates before: %s", e.msg);
  for (int i = 0; i < n_all; i++) oc_session_free(all[i]);
  oc_session_free(a1);
  oc_session_free(b1);
  oc_model_free(other);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2 || (argc == 3 && strcmp(argv[2], "q8") == 0), "usage: test_decode_batch <fixture model dir> [q8]");
  oc_error e;
  oc_model *m;
  const oc_model_opts mo = {argc == 3 ? OC_WEIGHTS_Q8 : OC_WEIGHTS_STORED};
  REQUIRE(oc_model_load_ex(argv[1], &mo, &m, &e) == 0, "%s", e.msg);
  const oc_model_config *c = oc_model_cfg(m);
  static run r1, r2;
  r1.m = r2.m = m;
  r1.V = r2.V = c->vocab;
  r1.H = r2.H = c->hidden;
  const int taps[NTAP] = {c->n_layers / 2, c->n_layers - 1, -1};
  memcpy(r1.taps, taps, sizeof taps);
  memcpy(r2.taps, taps, sizeof taps);
  decode_both_ways(&r1, 1);
  decode_both_ways(&r2, 2);
  compare_threads(&r1, &r2);
  printf("largest |batch - single| once a session was in a batch of 8 rows or more: logits %.3g, hidden states %.3g (%.2f of the "
         "tolerance); before: bit for bit\n", g_max_lg, g_max_hs, g_ratio);
  wide_batch(m, argc == 3);
  errors(argv[1], m);
  free_run(&r1);
  free_run(&r2);
  oc_model_free(m);
  return check_summary("decode_batch");
}
