/* Matrix products and attention of the decoder (src/nn/kernels.c) against double-precision references.
 * Products:
 * every shape class of the decode path (n < 8 input rows: BF16 rows dotted several at a time)
 * and of the prefill path (n >= 8: blocked sgemm, long inputs in pieces), BF16/F16/F32 weights mixed in one call,
 * row counts that do and do not divide among the threads and their streams, input widths
 * around the 16- and 32-element blocks. Results must not depend on the thread count nor on
 * which other matrices share the call (bit for bit).
 * Attention: the weighted row sums bit for bit as separate axpy passes; oc_attention, decode
 * (1 or 6 queries) and prefill (8 to 100 queries, sgemm over blocks), for GQA ratios that fill,
 * split and leave partial head groups, sliding windows and packed sequence starts, against a
 * double reference, the same bits with 1, 2 and 3 threads and for each head run alone;
 * oc_attention_batch (queries of different sequences, each over its own cache) the same bits as
 * oc_attention of each query alone, with 1, 2 and 3 threads. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/cpu.h"
#include "nn/kernels.h"
#include "nn/q8.h"
#include "opencon/base.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}
static float uniform(void) { return (float)(next_u32() & 0xFFFFFF) / (float)0x1000000 * 2.0f - 1.0f; }

/* Q8 matrices made with their rows interleaved where they can be (nn/q8.h), as the loader holds them */
static int g_q8_il;

/* A [out][in] tensor of the given dtype with random values; *vals gets them as f32. */
static oc_tensor make_matrix(oc_dtype dt, int out, int in, float **vals) {
  oc_tensor t;
  memset(&t, 0, sizeof t);
  t.name = "w";
  t.dtype = dt;
  t.ndim = 2;
  t.shape[0] = out;
  t.shape[1] = in;
  t.numel = (int64_t)out * in;
  t.nbytes = (size_t)t.numel * oc_dtype_size(dt);
  void *data = malloc(t.nbytes ? t.nbytes : 1);
  float *v = malloc(sizeof(float) * (size_t)(t.numel ? t.numel : 1));
  if (dt == OC_DT_Q8) { /* random rows quantized; vals: the dequantized values */
    const int64_t nb = oc_q8_nblocks(in);
    uint16_t *d = malloc(sizeof(uint16_t) * (size_t)(out > 0 && nb > 0 ? out * nb : 1));
    int64_t bad;
    for (int64_t i = 0; i < t.numel; i++) v[i] = uniform() * (i % 7 == 0 ? 4.0f : 1.0f);
    for (int r = 0; r < out; r++) {
      CHECK(oc_q8_quantize_row(v + (size_t)r * in, in, (int8_t *)data + (size_t)r * in, d + r * nb, &bad) == 0, "quantize row %d", r);
      oc_q8_dequantize((int8_t *)data + (size_t)r * in, d + r * nb, 0, 0, in, v + (size_t)r * in);
    }
    if (g_q8_il && oc_q8_interleavable(in)) {
      int8_t *il = malloc((size_t)t.numel);
      for (int r = 0; r < out; r++) oc_q8_interleave((int8_t *)data + (size_t)r * in, in, il + (size_t)r * in);
      free(data);
      data = il;
      t.q8_il = 1;
    }
    t.scales = d;
    t.data = data;
    *vals = v;
    return t;
  }
  for (int64_t i = 0; i < t.numel; i++) {
    if (dt == OC_DT_BF16) {
      uint16_t b = oc_f32_to_bf16(uniform());
      ((uint16_t *)data)[i] = b;
      v[i] = oc_bf16_to_f32(b);
    } else if (dt == OC_DT_F16) {
      /* sign, exponent 10..17 (2^-5 .. 2^2), random mantissa */
      uint16_t h = (uint16_t)(((next_u32() & 1u) << 15) | ((10u + next_u32() % 8u) << 10) | (next_u32() & 0x3FFu));
      ((uint16_t *)data)[i] = h;
      v[i] = oc_f16_to_f32(h);
    } else {
      v[i] = uniform();
      ((float *)data)[i] = v[i];
    }
  }
  t.data = data;
  *vals = v;
  return t;
}

typedef struct {
  oc_dtype dt[3];
  int outs[3], count, in;
} mcase;

static int run_multi(const float *X, int n, const mcase *c, const oc_tensor *W, float **Y, int threads) {
  oc_set_threads(threads);
  const oc_tensor *ws[3] = {&W[0], &W[1], &W[2]};
  for (int m = 0; m < c->count; m++) memset(Y[m], 0xFF, sizeof(float) * (size_t)n * (size_t)c->outs[m]);
  oc_matmul_multi(X, n, c->in, ws, c->outs, Y, c->count);
  return 0;
}

static void check_case(const mcase *c, int n) {
  float *vals[3];
  oc_tensor W[3];
  float *Y[3], *Yref[3];
  float *X = malloc(sizeof(float) * (size_t)n * (size_t)c->in);
  for (int i = 0; i < n * c->in; i++) X[i] = uniform();
  for (int m = 0; m < c->count; m++) {
    W[m] = make_matrix(c->dt[m], c->outs[m], c->in, &vals[m]);
    Y[m] = malloc(sizeof(float) * (size_t)n * (size_t)c->outs[m]);
    Yref[m] = malloc(sizeof(float) * (size_t)n * (size_t)c->outs[m]);
  }
  /* the decode kernels: below 8 rows, up to 32 rows of BF16 weights (with the AVX2 kernels and up),
   * any rows of Q8 weights */
  int all_matvec = 1;
  for (int m = 0; m < c->count; m++) all_matvec &= (c->dt[m] == OC_DT_BF16 && n <= 32 && oc_have_avx2()) || c->dt[m] == OC_DT_Q8;
  const int decode = n < 8 || all_matvec;
  /* Q8 weights always meet the inputs quantized per block: the reference is the exact sum of the
   * blocks' integer dots times their scales */
  oc_q8_act *acts = malloc(sizeof(oc_q8_act) * (size_t)n);
  char *act_buf = malloc(oc_q8_act_bytes(c->in) * (size_t)n);
  for (int t = 0; t < n; t++) oc_q8_act_quantize(X + (size_t)t * c->in, c->in, act_buf + oc_q8_act_bytes(c->in) * (size_t)t, &acts[t]);
  /* 1 thread: against the double reference, with the bound of any f32 summation order */
  run_multi(X, n, c, W, Y, 1);
  int bad = 0;
  for (int m = 0; m < c->count; m++)
    for (int t = 0; t < n; t++)
      for (int r = 0; r < c->outs[m]; r++) {
        double ref = 0, mag = 0;
        if (c->dt[m] == OC_DT_Q8) {
          const int64_t nb = oc_q8_nblocks(c->in);
          const int8_t *wq = (const int8_t *)W[m].data + (size_t)r * c->in;
          for (int64_t b = 0; b < nb; b++) { /* mag: of the element products (a kernel may split a block's dot) */
            long dot = 0, adot = 0;
            for (int k = (int)b * 32; k < c->in && k < (int)b * 32 + 32; k++) {
              const long wk = wq[W[m].q8_il ? oc_q8_il_pos(k) : k];
              dot += wk * acts[t].q[k];
              adot += labs(wk * acts[t].q[k]);
            }
            const double sc = (double)oc_f16_to_f32(W[m].scales[r * nb + b]) * acts[t].d[b];
            ref += sc * (double)dot;
            mag += fabs(sc) * (double)adot;
          }
        } else
          for (int k = 0; k < c->in; k++) {
            double p = (double)vals[m][(size_t)r * c->in + k] * X[(size_t)t * c->in + k];
            ref += p;
            mag += fabs(p);
          }
        double got = Y[m][(size_t)t * c->outs[m] + r], tol = (c->in + 8) * (double)FLT_EPSILON * mag + 1e-30;
        if (!(fabs(got - ref) <= tol) && bad++ < 5)
          CHECK(0, "in=%d n=%d matrix %d (%s) row %d token %d: %.9g vs reference %.9g (tolerance %.3g)", c->in, n, m,
                oc_dtype_name(c->dt[m]), r, t, got, ref, tol);
      }
  CHECK(bad == 0, "in=%d n=%d: %d outputs off the reference", c->in, n, bad);
  for (int m = 0; m < c->count; m++) memcpy(Yref[m], Y[m], sizeof(float) * (size_t)n * (size_t)c->outs[m]);
  /* other thread counts: the same bits */
  const int threads[] = {2, 3, 5};
  for (int k = 0; k < 3; k++) {
    run_multi(X, n, c, W, Y, threads[k]);
    for (int m = 0; m < c->count; m++)
      CHECK(memcmp(Y[m], Yref[m], sizeof(float) * (size_t)n * (size_t)c->outs[m]) == 0,
            "in=%d n=%d matrix %d: %d threads differ from 1 thread", c->in, n, m, threads[k]);
  }
  /* the decode kernels: a row of X alone gives the same bits as inside the batch, so a batched
   * decode equals decoding alone */
  if (n > 1 && decode) {
    oc_set_threads(2);
    float *y1[3];
    for (int m = 0; m < c->count; m++) y1[m] = malloc(sizeof(float) * (size_t)(c->outs[m] ? c->outs[m] : 1));
    int same = 1;
    for (int t = 0; t < n; t++) {
      run_multi(X + (size_t)t * c->in, 1, c, W, y1, 2);
      for (int m = 0; m < c->count; m++) same &= memcmp(y1[m], Yref[m] + (size_t)t * c->outs[m], sizeof(float) * (size_t)c->outs[m]) == 0;
    }
    CHECK(same, "in=%d n=%d: a row alone differs from the same row in the batch", c->in, n);
    for (int m = 0; m < c->count; m++) free(y1[m]);
  }
  /* each matrix alone, and (decode path: OpenBLAS's sgemm may round a row differently at another
   * position in its block) a sub-range of its rows alone: the same bits as inside the call */
  oc_set_threads(2);
  for (int m = 0; m < c->count; m++) {
    float *y = malloc(sizeof(float) * (size_t)n * (size_t)c->outs[m]);
    oc_matmul(X, n, c->in, &W[m], 0, c->outs[m], y);
    CHECK(memcmp(y, Yref[m], sizeof(float) * (size_t)n * (size_t)c->outs[m]) == 0, "in=%d n=%d matrix %d alone differs", c->in, n, m);
    if (c->outs[m] > 2 && n < 8) {
      const int r0 = 1, cnt = c->outs[m] - 2;
      oc_matmul(X, n, c->in, &W[m], r0, cnt, y);
      int same = 1;
      for (int t = 0; t < n; t++)
        same &= memcmp(y + (size_t)t * cnt, Yref[m] + (size_t)t * c->outs[m] + r0, sizeof(float) * (size_t)cnt) == 0;
      CHECK(same, "in=%d n=%d matrix %d rows %d..%d alone differ", c->in, n, m, r0, r0 + cnt);
    }
    free(y);
  }
  oc_set_threads(1);
  free(acts);
  free(act_buf);
  for (int m = 0; m < c->count; m++) {
    free((void *)W[m].scales);
    free((void *)W[m].data);
    free(vals[m]);
    free(Y[m]);
    free(Yref[m]);
  }
  free(X);
}

/* oc_weighted_rows: the same bits as G passes of oc_axpy_f32 over zeroed rows, and within the
 * bound of any f32 summation order of the double sums. */
static void check_weighted_rows(int G, int np, int hd) {
  const size_t vs = (size_t)hd + 3, as = (size_t)np + 2; /* strides wider than the rows */
  float *a = malloc(sizeof(float) * as * (size_t)G), *v = malloc(sizeof(float) * vs * (size_t)np);
  float *out = malloc(sizeof(float) * (size_t)G * (size_t)hd), *ref = malloc(sizeof(float) * (size_t)G * (size_t)hd);
  for (size_t i = 0; i < as * (size_t)G; i++) a[i] = uniform();
  for (size_t i = 0; i < vs * (size_t)np; i++) v[i] = uniform();
  memset(out, 0xFF, sizeof(float) * (size_t)G * (size_t)hd);
  oc_weighted_rows(a, as, G, v, vs, np, hd, out);
  memset(ref, 0, sizeof(float) * (size_t)G * (size_t)hd);
  for (int g = 0; g < G; g++)
    for (int p = 0; p < np; p++) oc_axpy_f32(a[(size_t)g * as + p], v + (size_t)p * vs, ref + (size_t)g * hd, hd);
  CHECK(memcmp(out, ref, sizeof(float) * (size_t)G * (size_t)hd) == 0, "weighted rows G=%d np=%d hd=%d differ from axpy passes", G, np, hd);
  int bad = 0;
  for (int g = 0; g < G; g++)
    for (int i = 0; i < hd; i++) {
      double r = 0, mag = 0;
      for (int p = 0; p < np; p++) {
        double t = (double)a[(size_t)g * as + p] * v[(size_t)p * vs + i];
        r += t;
        mag += fabs(t);
      }
      if (!(fabs(out[(size_t)g * hd + i] - r) <= (np + 2) * (double)FLT_EPSILON * mag + 1e-30)) bad++;
    }
  CHECK(bad == 0, "weighted rows G=%d np=%d hd=%d: %d sums off the double reference", G, np, hd, bad);
  free(a); free(v); free(out); free(ref);
}

/* q8 rows: every value within half a step of its block's scale, the scale the smallest f16 at or
 * above the block's largest magnitude / 127 (no value beyond 127 steps), exact values kept exact;
 * non-finite values and scales beyond f16 refused with the element's index. */
static void check_q8_format(void) {
  float x[100];
  int8_t q[100];
  uint16_t d[4];
  float back[100];
  int64_t bad = -1;
  for (int i = 0; i < 100; i++) x[i] = uniform() * (i < 32 ? 1e-6f : i < 64 ? 3.0f : 1000.0f);
  x[40] = 0; /* block 1 */
  for (int i = 64; i < 96; i++) x[i] = 0; /* block 2: all zero */
  CHECK(oc_q8_quantize_row(x, 100, q, d, &bad) == 0, "quantize");
  oc_q8_dequantize(q, d, 0, 0, 100, back);
  for (int b = 0; b < 4; b++) {
    float amax = 0;
    for (int i = b * 32; i < 100 && i < b * 32 + 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const double step = oc_f16_to_f32(d[b]);
    CHECK(step * 127 >= amax && (amax == 0 ? d[b] == 0 : oc_f16_to_f32((uint16_t)(d[b] - 1)) * 127.0 < amax),
          "block %d: scale %.9g for largest magnitude %.9g", b, step, amax);
    int ok = 1;
    for (int i = b * 32; i < 100 && i < b * 32 + 32; i++) ok &= fabs(back[i] - x[i]) <= step / 2 * 1.0001 && q[i] != -128;
    CHECK(ok, "block %d: a value off by more than half a step", b);
  }
  CHECK(back[40] == 0 && back[70] == 0, "zeros stay zero");
  float part[3] = {0};
  oc_q8_dequantize(q, d, 0, 97, 3, part);
  CHECK(part[0] == back[97] && part[2] == back[99], "a piece of a row dequantizes as the whole row");
  x[57] = NAN;
  CHECK(oc_q8_quantize_row(x, 100, q, d, &bad) != 0 && bad == 57, "NaN refused at its index (got %lld)", (long long)bad);
  x[57] = INFINITY;
  CHECK(oc_q8_quantize_row(x, 100, q, d, &bad) != 0 && bad == 57, "infinity refused");
  x[57] = 1;
  x[70] = 127.0f * 65504.0f * 1.01f;
  CHECK(oc_q8_quantize_row(x, 100, q, d, &bad) != 0 && bad == 70, "a scale beyond f16 refused at the value too large (got %lld)", (long long)bad);
  /* inputs: a block of values below ~4e-37 counts as zero (127 / max would overflow); a normal
   * block beside it is quantized as ever */
  float in[64];
  for (int i = 0; i < 64; i++) in[i] = i < 32 ? (i % 2 ? 1e-38f : -3e-38f) : (float)(i - 40);
  char buf[4096];
  oc_q8_act act;
  oc_q8_act_quantize(in, 64, buf, &act);
  int zero = act.d[0] == 0, exact = 1;
  for (int i = 0; i < 32; i++) zero &= act.q[i] == 0;
  for (int i = 32; i < 64; i++) exact &= fabsf(act.d[1] * act.q[i] - in[i]) <= act.d[1] / 2 * 1.0001f;
  CHECK(zero && exact, "input blocks: tiny values quantize to zero, others within half a step");
}

/* A NaN or infinity in an input row of a Q8 product makes its outputs NaN (never quantized away);
 * the other rows are untouched. */
static void check_q8_nonfinite(void) {
  const int in = 200, out = 13, n = 3;
  float *vals;
  oc_tensor W = make_matrix(OC_DT_Q8, out, in, &vals);
  float X[3 * 200], Y[3 * 13];
  for (int i = 0; i < n * in; i++) X[i] = uniform();
  X[in + 150] = NAN;
  X[2 * in + 3] = INFINITY;
  oc_matmul(X, n, in, &W, 0, out, Y);
  int ok = 1;
  for (int r = 0; r < out; r++) ok &= isfinite(Y[r]) && isnan(Y[out + r]) && isnan(Y[2 * out + r]);
  CHECK(ok, "Q8 product: non-finite inputs give NaN outputs, finite ones finite");
  free(vals);
  free((void *)W.data);
  free((void *)W.scales);
}

/* An input row quantized for the products (oc_q8_act_quantize, whichever level runs) against its
 * definition, byte for byte: per block of 32 the scale largest |x| / 127 and x * (127 / largest)
 * rounded to nearest even; NaN scale and zeros for a block holding a NaN or an infinity; a block
 * below ~4e-37 all zero; the interleaved copy; and for the 512-bit kernels the lanes' sums. Rows
 * with halfway values (x * inv = k + 0.5), signed zeros, tiny blocks and non-finite values. */
static void check_q8_act(int n) {
  float *x = malloc(sizeof(float) * (size_t)n);
  for (int i = 0; i < n; i++) x[i] = uniform() * (i % 5 == 0 ? 3.0f : 1.0f);
  const int nb = (int)oc_q8_nblocks(n);
  for (int b = 0; b < nb; b++) { /* a kind of block per block index */
    float *xb = x + 32 * b;
    const int len = n - 32 * b < 32 ? n - 32 * b : 32;
    switch (b % 6) {
      case 1: /* 127 / largest = 1: x * inv = x, halfway values among them (ties go to even) */
        for (int i = 0; i < len; i++) xb[i] = (float)(i - 16) * 0.5f;
        xb[0] = -127.0f;
        break;
      case 2: xb[len / 2] = b % 12 == 2 ? NAN : -INFINITY; break;
      case 3: for (int i = 0; i < len; i++) xb[i] = i % 2 ? 1e-38f : -0.0f; break;
      case 4: for (int i = 0; i < len; i++) xb[i] = i % 3 ? -0.0f : 0.0f; break;
      default: break;
    }
  }
  char *buf = malloc(oc_q8_act_bytes(n));
  oc_q8_act a;
  oc_q8_act_quantize(x, n, buf, &a);
  int q_ok = 1, d_ok = 1, il_ok = 1, sums_ok = 1;
  for (int b = 0; b < nb; b++) {
    const int b0 = 32 * b, len = n - b0 < 32 ? n - b0 : 32;
    float amax = 0;
    int finite = 1;
    for (int i = 0; i < len; i++) { finite &= isfinite(x[b0 + i]); if (fabsf(x[b0 + i]) > amax) amax = fabsf(x[b0 + i]); }
    float inv = finite && amax > 0 ? 127.0f / amax : 0.0f;
    if (!(inv < INFINITY)) inv = 0;
    const float d = !finite ? NAN : inv > 0 ? amax / 127.0f : 0.0f;
    d_ok &= isnan(d) ? isnan(a.d[b]) : memcmp(&d, &a.d[b], sizeof d) == 0;
    for (int i = 0; i < len; i++) {
      const float v = finite ? rintf(x[b0 + i] * inv) : 0.0f;
      q_ok &= a.q[b0 + i] == (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
  }
  if (oc_q8_interleavable(n)) {
    il_ok = a.qi != NULL;
    for (int c = 0; il_ok && c < n; c++) il_ok &= a.qi[oc_q8_il_pos(c)] == a.q[c];
  } else {
    il_ok = a.qi == NULL;
  }
  if (oc_cpu()->level >= OC_CPU_AVX512 && oc_have_avx512_vnni()) {
    for (int s = 0; s < n / 64; s++)
      for (int l = 0; l < 16; l++) {
        const int8_t *g = a.q + 64 * s + 4 * l;
        const float dl = a.d[2 * s + (l >= 8)];
        sums_ok &= a.init[16 * s + l] == -128 * (g[0] + g[1] + g[2] + g[3]) && memcmp(&a.dl[16 * s + l], &dl, sizeof dl) == 0;
      }
    for (int b = 0; a.ginit && b < n / 32; b++) {
      int sum = 0;
      for (int i = 0; i < 32; i++) sum += a.q[32 * b + i];
      sums_ok &= a.ginit[b] == -128 * sum;
    }
  }
  CHECK(q_ok && d_ok && il_ok && sums_ok, "input row of %d quantized by its definition (values %d, scales %d, interleaved %d, kernel sums %d)", n, q_ok,
        d_ok, il_ok, sums_ok);
  free(x);
  free(buf);
}

/* Ranges of interleaved rows read back in the natural layout (quantize's writer asks for pieces
 * that start and end inside rows): every range equals the same bytes of the rows deinterleaved
 * whole. */
static void check_q8_deinterleave_range(void) {
  const int cols = 1024, rows = 5;
  int8_t *nat = malloc((size_t)rows * cols), *il = malloc((size_t)rows * cols), *got = malloc((size_t)rows * cols), row[1024];
  for (int i = 0; i < rows * cols; i++) nat[i] = (int8_t)(i * 37 % 251 - 125);
  for (int r = 0; r < rows; r++) oc_q8_interleave(nat + (size_t)r * cols, cols, il + (size_t)r * cols);
  const size_t cuts[][2] = {{0, 5120}, {0, 1}, {1023, 2}, {700, 1500}, {1024, 1024}, {3000, 2120}, {5119, 1}, {17, 3000}};
  int ok = 1;
  for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
    memset(got, 0x7F, (size_t)rows * cols);
    oc_q8_deinterleave_range(il, cols, cuts[k][0], cuts[k][1], row, got);
    ok &= memcmp(got, nat + cuts[k][0], cuts[k][1]) == 0;
  }
  CHECK(ok, "ranges of interleaved rows read back as the natural bytes, inside rows too");
  free(nat); free(il); free(got);
}

/* Interleaved q8 rows: the layout is a permutation of each 512-value group that keeps runs of 4,
 * undone by oc_q8_deinterleave, and read back by oc_q8_dequantize (il) as the natural row. The
 * products of an interleaved matrix: at the scalar level the same bits as the natural matrix (the
 * same block dots, summed in the same order), at every level within the f32 bound of each other;
 * a non-finite input still gives NaN. */
static void check_q8_interleaved(int in, int out, int n) {
  float *vals;
  g_q8_il = 0;
  oc_tensor nat = make_matrix(OC_DT_Q8, out, in, &vals);
  int8_t *il = malloc((size_t)nat.numel), *back = malloc((size_t)in);
  int perm = 1;
  char *seen = calloc((size_t)in, 1);
  for (int c = 0; c < in; c++) {
    const int64_t p = oc_q8_il_pos(c);
    perm &= p >= 0 && p < in && !seen[p] && (c % 4 == 0 || p == oc_q8_il_pos(c - 1) + 1);
    if (p >= 0 && p < in) seen[p] = 1;
  }
  CHECK(perm, "in=%d: oc_q8_il_pos is a permutation keeping runs of 4", in);
  free(seen);
  int round = 1, deq = 1;
  for (int r = 0; r < out; r++) {
    const int8_t *src = (const int8_t *)nat.data + (size_t)r * in;
    oc_q8_interleave(src, in, il + (size_t)r * in);
    oc_q8_deinterleave(il + (size_t)r * in, in, back);
    round &= memcmp(back, src, (size_t)in) == 0;
    float a[8], b[8];
    const int64_t nb = oc_q8_nblocks(in), c0 = (r * 37) % (in - 8);
    oc_q8_dequantize(src, nat.scales + r * nb, 0, c0, 8, a);
    oc_q8_dequantize(il + (size_t)r * in, nat.scales + r * nb, 1, c0, 8, b);
    deq &= memcmp(a, b, sizeof a) == 0;
  }
  CHECK(round && deq, "in=%d: interleave/deinterleave round trip, dequantize reads the same values", in);
  oc_tensor itl = nat;
  itl.data = il;
  itl.q8_il = 1;
  float *X = malloc(sizeof(float) * (size_t)n * (size_t)in), *y0 = malloc(sizeof(float) * (size_t)n * (size_t)out),
        *y1 = malloc(sizeof(float) * (size_t)n * (size_t)out);
  for (int i = 0; i < n * in; i++) X[i] = uniform();
  if (n > 1) X[(size_t)(n - 1) * in + (size_t)in / 3] = NAN; /* (n = 1: values only) */
  oc_set_threads(2);
  oc_matmul(X, n, in, &nat, 0, out, y0);
  oc_matmul(X, n, in, &itl, 0, out, y1);
  const int scalar = oc_cpu()->level == OC_CPU_SCALAR;
  int close = 1, nan_ok = 1;
  for (int t = 0; t < n; t++)
    for (int r = 0; r < out; r++) {
      const float a = y0[(size_t)t * out + r], b = y1[(size_t)t * out + r];
      if (n > 1 && t == n - 1) { nan_ok &= isnan(a) && isnan(b); continue; }
      double mag = 0; /* the bound: |w| |x| summed */
      for (int k = 0; k < in; k++) mag += fabs((double)vals[(size_t)r * in + k] * X[(size_t)t * in + k]);
      close &= scalar ? memcmp(&a, &b, sizeof a) == 0 : fabs((double)a - b) <= 2 * (in + 8) * (double)FLT_EPSILON * mag;
    }
  CHECK(close && nan_ok, "in=%d n=%d: interleaved products %s the natural ones; NaN inputs give NaN", in, n,
        scalar ? "equal (scalar level)" : "within the f32 bound of");
  oc_set_threads(1);
  free(X); free(y0); free(y1); free(il); free(back); free(vals);
  free((void *)nat.data); free((void *)nat.scales);
}

typedef struct {
  int nh, nkv, hd, n, pos0, window, packed;
} acase;

static void run_attention(const acase *c, const float *q, const float *K, const float *V, const int *lo, int threads, float *out) {
  const int cap = c->pos0 + c->n;
  oc_set_threads(threads);
  float *scratch = malloc(sizeof(float) * oc_attention_scratch(threads, cap));
  memset(out, 0xFF, sizeof(float) * (size_t)c->n * c->nh * c->hd);
  oc_attention(q, c->n, c->nh, c->nkv, c->hd, K, V, c->pos0, lo, c->window, 0.125f, scratch, cap, out);
  free(scratch);
}

static void check_attention(const acase *c) {
  const int T = c->pos0 + c->n, rep = c->nh / c->nkv;
  const size_t qn = (size_t)c->n * c->nh * c->hd, kn = (size_t)T * c->nkv * c->hd;
  float *q = malloc(sizeof(float) * qn), *K = malloc(sizeof(float) * kn), *V = malloc(sizeof(float) * kn);
  float *out = malloc(sizeof(float) * qn), *ref = malloc(sizeof(float) * qn);
  int *lo = malloc(sizeof(int) * (size_t)c->n);
  for (size_t i = 0; i < qn; i++) q[i] = 4 * uniform();
  for (size_t i = 0; i < kn; i++) { K[i] = 4 * uniform(); V[i] = uniform(); }
  /* packed: a second sequence starts at the middle query */
  for (int t = 0; t < c->n; t++) lo[t] = c->packed && t >= c->n / 2 ? c->pos0 + c->n / 2 : 0;
  run_attention(c, q, K, V, lo, 1, ref);
  /* the double reference */
  int bad = 0;
  double *w = malloc(sizeof(double) * (size_t)T);
  for (int t = 0; t < c->n; t++)
    for (int h = 0; h < c->nh; h++) {
      const int qp = c->pos0 + t, kvh = h / rep;
      int first = lo[t];
      if (c->window > 0 && qp - c->window + 1 > first) first = qp - c->window + 1;
      double mx = -INFINITY, sum = 0;
      for (int p = first; p <= qp; p++) {
        double d = 0;
        for (int i = 0; i < c->hd; i++) d += (double)q[((size_t)t * c->nh + h) * c->hd + i] * K[((size_t)p * c->nkv + kvh) * c->hd + i];
        w[p] = d * 0.125;
        if (w[p] > mx) mx = w[p];
      }
      for (int p = first; p <= qp; p++) sum += (w[p] = exp(w[p] - mx));
      for (int i = 0; i < c->hd; i++) {
        double r = 0, mag = 0;
        for (int p = first; p <= qp; p++) {
          double x = w[p] / sum * V[((size_t)p * c->nkv + kvh) * c->hd + i];
          r += x;
          mag += fabs(x);
        }
        const double got = ref[((size_t)t * c->nh + h) * c->hd + i];
        if (!(fabs(got - r) <= 1e-5 * mag + 1e-7) && bad++ < 3)
          CHECK(0, "attention nh=%d nkv=%d hd=%d: query %d head %d element %d: %.9g vs reference %.9g", c->nh, c->nkv, c->hd, t, h, i, got, r);
      }
    }
  CHECK(bad == 0, "attention nh=%d nkv=%d hd=%d n=%d pos0=%d window=%d packed=%d: %d outputs off the reference", c->nh, c->nkv, c->hd,
        c->n, c->pos0, c->window, c->packed, bad);
  for (int threads = 2; threads <= 3; threads++) {
    run_attention(c, q, K, V, lo, threads, out);
    CHECK(memcmp(out, ref, sizeof(float) * qn) == 0, "attention nh=%d nkv=%d: %d threads differ from 1", c->nh, c->nkv, threads);
  }
  /* each head alone (its own query rows, its KV head's cache): the same bits as in its group */
  acase one = *c;
  one.nh = one.nkv = 1;
  float *q1 = malloc(sizeof(float) * (size_t)c->n * c->hd), *K1 = malloc(sizeof(float) * (size_t)T * c->hd);
  float *V1 = malloc(sizeof(float) * (size_t)T * c->hd), *o1 = malloc(sizeof(float) * (size_t)c->n * c->hd);
  int same = 1;
  for (int h = 0; h < c->nh; h++) {
    for (int t = 0; t < c->n; t++) memcpy(q1 + (size_t)t * c->hd, q + ((size_t)t * c->nh + h) * c->hd, sizeof(float) * (size_t)c->hd);
    for (int p = 0; p < T; p++) {
      memcpy(K1 + (size_t)p * c->hd, K + ((size_t)p * c->nkv + h / rep) * c->hd, sizeof(float) * (size_t)c->hd);
      memcpy(V1 + (size_t)p * c->hd, V + ((size_t)p * c->nkv + h / rep) * c->hd, sizeof(float) * (size_t)c->hd);
    }
    run_attention(&one, q1, K1, V1, lo, 2, o1);
    for (int t = 0; t < c->n; t++)
      same &= memcmp(o1 + (size_t)t * c->hd, ref + ((size_t)t * c->nh + h) * c->hd, sizeof(float) * (size_t)c->hd) == 0;
  }
  CHECK(same, "attention nh=%d nkv=%d hd=%d: a head run alone differs from the same head in its group", c->nh, c->nkv, c->hd);
  oc_set_threads(1);
  free(q); free(K); free(V); free(out); free(ref); free(lo); free(w); free(q1); free(K1); free(V1); free(o1);
}

/* n queries, query t over its own cache of pos[t] + 1 rows (pos: 0, 1, 2, ..., 3t, so some rows
 * are past the window and some not): the same bits as each one decoded alone by oc_attention. */
static void check_attention_batch(int nh, int nkv, int hd, int n, int window) {
  const size_t qrow = (size_t)nh * hd, krow = (size_t)nkv * hd;
  int *pos = malloc(sizeof(int) * (size_t)n), cap = 0;
  float **K = malloc(sizeof(float *) * (size_t)n), **V = malloc(sizeof(float *) * (size_t)n);
  float *q = malloc(sizeof(float) * n * qrow), *alone = malloc(sizeof(float) * n * qrow), *out = malloc(sizeof(float) * n * qrow);
  for (int t = 0; t < n; t++) {
    pos[t] = t % 2 ? 3 * t : t / 2;
    if (pos[t] + 1 > cap) cap = pos[t] + 1;
    K[t] = malloc(sizeof(float) * (size_t)(pos[t] + 1) * krow);
    V[t] = malloc(sizeof(float) * (size_t)(pos[t] + 1) * krow);
    for (size_t i = 0; i < (size_t)(pos[t] + 1) * krow; i++) { K[t][i] = 4 * uniform(); V[t][i] = uniform(); }
  }
  for (size_t i = 0; i < n * qrow; i++) q[i] = 4 * uniform();
  float *scratch = malloc(sizeof(float) * oc_attention_scratch(3, cap));
  const int lo0 = 0;
  oc_set_threads(1);
  for (int t = 0; t < n; t++)
    oc_attention(q + t * qrow, 1, nh, nkv, hd, K[t], V[t], pos[t], &lo0, window, 0.125f, scratch, pos[t] + 1, alone + t * qrow);
  for (int threads = 1; threads <= 3; threads++) {
    oc_set_threads(threads);
    memset(out, 0xFF, sizeof(float) * n * qrow);
    oc_attention_batch(q, n, nh, nkv, hd, (const float *const *)K, (const float *const *)V, pos, window, 0.125f, scratch, cap, out);
    CHECK(memcmp(out, alone, sizeof(float) * n * qrow) == 0, "attention batch nh=%d nkv=%d hd=%d n=%d window=%d, %d threads: differs from each query alone",
          nh, nkv, hd, n, window, threads);
  }
  oc_set_threads(1);
  for (int t = 0; t < n; t++) { free(K[t]); free(V[t]); }
  free(K); free(V); free(pos); free(q); free(alone); free(out); free(scratch);
}

int main(void) {
  const int ins[] = {1, 15, 16, 17, 31, 32, 33, 48, 100, 1536};
  const mcase shapes[] = {
      {{OC_DT_BF16}, {1}, 1, 0},
      {{OC_DT_BF16}, {37}, 1, 0},
      {{OC_DT_BF16, OC_DT_BF16, OC_DT_BF16}, {64, 16, 16}, 3, 0},
      {{OC_DT_BF16, OC_DT_F32, OC_DT_BF16}, {29, 3, 41}, 3, 0},
      {{OC_DT_F16, OC_DT_BF16}, {7, 260}, 2, 0},
      {{OC_DT_F32, OC_DT_F16, OC_DT_F32}, {5, 9, 2}, 3, 0},
      {{OC_DT_BF16, OC_DT_BF16, OC_DT_BF16}, {45, 0, 30}, 3, 0}, /* an empty matrix in between */
      {{OC_DT_BF16}, {0}, 1, 0},
      {{OC_DT_Q8}, {37}, 1, 0},
      {{OC_DT_Q8, OC_DT_Q8, OC_DT_Q8}, {64, 16, 16}, 3, 0},
      {{OC_DT_Q8, OC_DT_BF16, OC_DT_Q8}, {29, 3, 41}, 3, 0},
      {{OC_DT_Q8, OC_DT_F16}, {1, 9}, 2, 0},
  };
  const int ns[] = {1, 2, 3, 5, 8, 9, 16, 17, 32, 33}; /* BF16: tiles of 4 (AVX-512) or 2 inputs and their remainders; 32 the last decode count */
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (size_t i = 0; i < sizeof ins / sizeof *ins; i++)
      for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        mcase c = shapes[s];
        c.in = ins[i];
        if (c.in == 1536 && ns[k] > 3) continue; /* the prefill path is exercised by the smaller widths */
        check_case(&c, ns[k]);
      }
  /* long prefills: X taken in pieces of 512 rows (exactly one, one and a row, two and a part) */
  const int long_ns[] = {512, 513, 1100}, long_ins[] = {17, 100};
  const int long_shapes[] = {3, 4, 10}; /* mixed F32/F16/BF16, and Q8 beside BF16 (Q8: the decode kernel at any length) */
  for (size_t si = 0; si < sizeof long_shapes / sizeof *long_shapes; si++)
    for (size_t i = 0; i < sizeof long_ins / sizeof *long_ins; i++)
      for (size_t k = 0; k < sizeof long_ns / sizeof *long_ns; k++) {
        mcase c = shapes[long_shapes[si]];
        c.in = long_ins[i];
        check_case(&c, long_ns[k]);
      }
  check_q8_deinterleave_range();
  const int act_ns[] = {1, 31, 32, 33, 64, 100, 512, 1000, 1024, 1536, 6144};
  for (size_t i = 0; i < sizeof act_ns / sizeof *act_ns; i++) check_q8_act(act_ns[i]);
  const int hds[] = {1, 7, 8, 15, 16, 17, 33, 64, 100};
  for (int G = 1; G <= 9; G++)
    for (size_t i = 0; i < sizeof hds / sizeof *hds; i++)
      for (int np = 1; np <= 37; np += 12) check_weighted_rows(G, np, hds[i]);
  /* GQA ratios 1, 2, 3, 4, 5, 6 and 8: head groups full, split (8 = 4 + 4) and partial (5, 6) */
  const int heads[][2] = {{1, 1}, {4, 2}, {9, 3}, {8, 2}, {5, 1}, {12, 2}, {8, 1}};
  for (size_t hsel = 0; hsel < sizeof heads / sizeof *heads; hsel++)
    for (int variant = 0; variant < 4; variant++) {
      acase c = {heads[hsel][0], heads[hsel][1], variant & 1 ? 20 : 64, variant < 2 ? 1 : 6, variant < 2 ? 9 : 3, variant == 1 ? 4 : 0,
                 variant == 3};
      check_attention(&c);
    }
  for (size_t hsel = 0; hsel < sizeof heads / sizeof *heads; hsel++) {
    check_attention_batch(heads[hsel][0], heads[hsel][1], hsel & 1 ? 20 : 64, 1 + 2 * (int)hsel, 0);
    check_attention_batch(heads[hsel][0], heads[hsel][1], hsel & 1 ? 64 : 20, 11, 5);
  }
  /* prefill (8 queries and more: blocks of 32 through sgemm): one block exactly, one and a part,
   * three and a part; after a cached prefix; sliding windows shorter and longer than a block;
   * a packed second sequence starting inside a block */
  const int pre[][4] = {{8, 0, 0, 0}, {32, 5, 0, 1}, {45, 0, 7, 0}, {45, 11, 40, 1}, {100, 3, 0, 1}, {100, 0, 33, 0}};
  for (size_t hsel = 0; hsel < sizeof heads / sizeof *heads; hsel += 2)
    for (size_t v = 0; v < sizeof pre / sizeof *pre; v++) {
      acase c = {heads[hsel][0], heads[hsel][1], v & 1 ? 20 : 64, pre[v][0], pre[v][1], pre[v][2], pre[v][3]};
      check_attention(&c);
    }
  check_q8_format();
  check_q8_nonfinite();
  /* the products of interleaved rows, every shape with Q8 weights, batches up to 17 and a prefill */
  const int il_ins[] = {512, 1024, 1536}, il_ns[] = {1, 2, 3, 4, 5, 8, 9, 17};
  for (size_t i = 0; i < sizeof il_ins / sizeof *il_ins; i++)
    for (size_t k = 0; k < sizeof il_ns / sizeof *il_ns; k++) check_q8_interleaved(il_ins[i], 23, il_ns[k]);
  g_q8_il = 1;
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    int q8 = 0;
    for (int m = 0; m < shapes[s].count; m++) q8 |= shapes[s].dt[m] == OC_DT_Q8;
    for (size_t i = 0; q8 && i < sizeof il_ins / sizeof *il_ins; i++)
      for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        mcase c = shapes[s];
        c.in = il_ins[i];
        check_case(&c, ns[k]);
      }
  }
  mcase long_q8 = shapes[10];
  long_q8.in = 512;
  check_case(&long_q8, 513);
  g_q8_il = 0;
  const oc_cpu_info *cpu = oc_cpu();
  printf("kernels at level %s (CPU: %s, AVX-512 VNNI %d)\n", oc_cpu_level_name(cpu->level), oc_cpu_level_name(cpu->detected), cpu->avx512_vnni);
  printf("kernels: %d checks passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
