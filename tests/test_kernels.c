/* Matrix products of the decoder (src/nn/kernels.c) against a double-precision reference:
 * every shape class of the decode path (n < 8 input rows: BF16 rows dotted several at a time)
 * and of the prefill path (n >= 8: blocked sgemm), BF16/F16/F32 weights mixed in one call,
 * row counts that do and do not divide among the threads and their streams, input widths
 * around the 16- and 32-element blocks. Results must not depend on the thread count nor on
 * which other matrices share the call (bit for bit). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/kernels.h"
#include "opencon/base.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}
static float uniform(void) { return (float)(next_u32() & 0xFFFFFF) / (float)0x1000000 * 2.0f - 1.0f; }

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
  /* 1 thread: against the double reference, with the bound of any f32 summation order */
  run_multi(X, n, c, W, Y, 1);
  int bad = 0;
  for (int m = 0; m < c->count; m++)
    for (int t = 0; t < n; t++)
      for (int r = 0; r < c->outs[m]; r++) {
        double ref = 0, mag = 0;
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
  for (int m = 0; m < c->count; m++) {
    free((void *)W[m].data);
    free(vals[m]);
    free(Y[m]);
    free(Yref[m]);
  }
  free(X);
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
  };
  const int ns[] = {1, 2, 3, 8, 9};
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (size_t i = 0; i < sizeof ins / sizeof *ins; i++)
      for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        mcase c = shapes[s];
        c.in = ins[i];
        if (c.in == 1536 && ns[k] > 3) continue; /* the prefill path is exercised by the smaller widths */
        check_case(&c, ns[k]);
      }
  printf("kernels: %d checks passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
