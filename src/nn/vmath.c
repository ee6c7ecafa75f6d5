/* exp and GELU over rows, written as straight-line float arithmetic that GCC vectorizes (no
 * libm calls, no branches in the loops); an AVX2+FMA build of each loop is picked at run time.
 *
 * exp: Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r (the
 * Cephes expf coefficients), 2^k built in the exponent bits; relative error ~1e-7 over the
 * clamped range [-87, 88] (below it the result is ~1e-38 instead of a denormal: callers that
 * need exact zeros, the masked attention scores, never pass those entries; a NaN argument
 * gives e^-87, not NaN — a NaN activation still propagates through the products around it).
 * erf: Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7) with the polynomial exp above;
 * tanh(y) = 1 - 2 / (1 + e^{2y}) for the decoders' tanh-approximated GELU, silu = x / (1 + e^-x);
 * logit softcapping cap * tanh(x / cap) as sign(y) (1 - e) / (1 + e), e = e^{-2|y|} (absolute
 * error ~1e-7 of tanh; a NaN logit stays NaN).
 * tests/test_modernbert.c checks both against libm over a grid; the ModernBERT golden tests
 * run through them. Built with -fno-trapping-math so that GCC if-converts the clamps and
 * vectorizes the loops. */
#include "nn/vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/kernels.h"

static inline __attribute__((always_inline)) float vexp(float x) {
  x = x > -87.0f ? x : -87.0f; /* written so that NaN becomes -87: the int conversion below */
  x = x < 88.0f ? x : 88.0f;   /* then always has a value in range (no undefined behaviour) */
  float k = x * 1.44269504088896341f;
  k = (k + 12582912.0f) - 12582912.0f; /* round to nearest (|k| < 2^22) */
  float r = x - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  int32_t e = ((int32_t)k + 127) << 23;
  float s;
  memcpy(&s, &e, sizeof s);
  return p * s;
}

static inline __attribute__((always_inline)) float verf(float x) {
  float a = x < 0 ? -x : x;
  float t = 1.0f / (1.0f + 0.3275911f * a);
  float y = 1.061405429f;
  y = y * t - 1.453152027f;
  y = y * t + 1.421413741f;
  y = y * t - 0.284496736f;
  y = y * t + 0.254829592f;
  float v = 1.0f - y * t * vexp(-a * a);
  return x < 0 ? -v : v;
}

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT2PI 0.39894228040143268f

/* Each loop body once, instantiated for the default target and for AVX2+FMA. */
#define DEFINE_LOOPS(SUFFIX, ATTR)                                                              \
  ATTR static void exp_##SUFFIX(float *x, int n, float shift) {                                \
    for (int j = 0; j < n; j++) x[j] = vexp(x[j] - shift);                                      \
  }                                                                                             \
  ATTR static float exp_sum_##SUFFIX(float *x, int n, float shift) {                           \
    exp_##SUFFIX(x, n, shift);                                                                  \
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0, s = 0;                \
    int j = 0;                                                                                  \
    for (; j + 8 <= n; j += 8) {                                                                \
      a0 += x[j]; a1 += x[j + 1]; a2 += x[j + 2]; a3 += x[j + 3];                               \
      a4 += x[j + 4]; a5 += x[j + 5]; a6 += x[j + 6]; a7 += x[j + 7];                           \
    }                                                                                           \
    for (; j < n; j++) s += x[j];                                                               \
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + s;                               \
  }                                                                                             \
  ATTR static void act_mul_##SUFFIX(int gelu_tanh, float *g, const float *u, long n) {          \
    if (gelu_tanh)                                                                              \
      for (long j = 0; j < n; j++) {                                                            \
        float x = g[j], y = 0.7978845608028654f * (x + 0.044715f * x * x * x);                  \
        float th = 1.0f - 2.0f / (1.0f + vexp(2.0f * y));                                       \
        g[j] = 0.5f * x * (1.0f + th) * u[j];                                                   \
      }                                                                                         \
    else                                                                                        \
      for (long j = 0; j < n; j++) g[j] = g[j] / (1.0f + vexp(-g[j])) * u[j];                   \
  }                                                                                             \
  ATTR static void softcap_##SUFFIX(float *x, long n, float cap) {                             \
    const float inv = 1.0f / cap;                                                               \
    for (long j = 0; j < n; j++) {                                                              \
      float y = x[j] * inv, a = y < 0 ? -y : y, e = vexp(-2.0f * a);                            \
      float t = (1.0f - e) / (1.0f + e);                                                        \
      t = y < 0 ? -t : t;                                                                       \
      x[j] = y != y ? x[j] : cap * t;                                                           \
    }                                                                                           \
  }                                                                                             \
  ATTR static void glu_##SUFFIX(const float *u, float *g, int I) {                              \
    for (int j = 0; j < I; j++) {                                                               \
      float x = u[j];                                                                           \
      g[j] = 0.5f * x * (1.0f + verf(x * INV_SQRT2)) * u[I + j];                                \
    }                                                                                           \
  }                                                                                             \
  ATTR static void glu_bwd_##SUFFIX(const float *u, const float *dg, float *du, int I) {        \
    for (int j = 0; j < I; j++) {                                                               \
      float x = u[j], gate = u[I + j], d = dg[j];                                               \
      float cdf = 0.5f * (1.0f + verf(x * INV_SQRT2));                                          \
      float grad = cdf + x * vexp(-0.5f * x * x) * INV_SQRT2PI;                                 \
      du[j] = d * gate * grad;                                                                  \
      du[I + j] = d * x * cdf;                                                                  \
    }                                                                                           \
  }

DEFINE_LOOPS(generic, )
#if defined(__x86_64__) || defined(__i386__)
DEFINE_LOOPS(avx2, __attribute__((target("avx2,fma"))))
#define PICK(name, ...) (oc_have_avx2() ? name##_avx2(__VA_ARGS__) : name##_generic(__VA_ARGS__))
#else
#define PICK(name, ...) name##_generic(__VA_ARGS__)
#endif

float oc_vexp_shift_sum(float *x, int n, float shift) { return PICK(exp_sum, x, n, shift); }
void oc_vexp_shift(float *x, int n, float shift) { PICK(exp, x, n, shift); }
void oc_softmax_span(float *row, int n, int j0, int j1, float *lse) {
  float mx = -INFINITY;
  for (int j = j0; j < j1; j++) mx = row[j] > mx ? row[j] : mx;
  const float sum = oc_vexp_shift_sum(row + j0, j1 - j0, mx), inv = 1.0f / sum;
  for (int j = j0; j < j1; j++) row[j] *= inv;
  memset(row, 0, sizeof(float) * (size_t)j0);
  memset(row + j1, 0, sizeof(float) * (size_t)(n - j1));
  if (lse) *lse = mx + logf(sum);
}
void oc_gelu_glu_row(const float *u, float *g, int I) { PICK(glu, u, g, I); }
void oc_act_mul(int gelu_tanh, float *g, const float *u, long n) { PICK(act_mul, gelu_tanh, g, u, n); }
void oc_gelu_glu_backward_row(const float *u, const float *dg, float *du, int I) { PICK(glu_bwd, u, dg, du, I); }
void oc_softcap(float *x, long n, float cap) { PICK(softcap, x, n, cap); }
float oc_vexp1(float x) { return vexp(x); }
float oc_verf1(float x) { return verf(x); }
