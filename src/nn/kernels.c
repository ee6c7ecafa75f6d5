#include "nn/kernels.h"
#include "nn/q8.h"
#include "nn/vmath.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define OC_X86 1
#endif

/* ---------------------------------------------------------------- scalar paths */
static float dot_f32_scalar(const float *a, const float *b, int n) {
  float acc[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

static float dot_bf16_scalar(const uint16_t *w, const float *x, int n) {
  float acc[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += oc_bf16_to_f32(w[i + k]) * x[i + k];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; i++) s += oc_bf16_to_f32(w[i]) * x[i];
  return s;
}

static float dot_f16_scalar(const uint16_t *w, const float *x, int n) {
  float acc[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += oc_f16_to_f32(w[i + k]) * x[i + k];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; i++) s += oc_f16_to_f32(w[i]) * x[i];
  return s;
}

/* ---------------------------------------------------------------- AVX2 paths */
#ifdef OC_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))
/* Software prefetch distance (bytes) of each stream of the decode kernel: 1 KiB had measured
 * +10-20 % streaming rate with one stream per thread on this machine's EPYC; with four streams
 * per thread 512 B measured ~3 % faster than 1 KiB, 0 and 2 KiB slower (bench/README.md).
 * 0 disables. */
#ifndef OC_PREFETCH
#define OC_PREFETCH 512
#endif


AVX2 static inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehl_ps(lo, lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_shuffle_ps(lo, lo, 1);
  return _mm_cvtss_f32(_mm_add_ss(lo, sh));
}

AVX2 static inline __m256 load_bf16x8(const uint16_t *p) {
  __m128i h = _mm_loadu_si128((const __m128i *)p);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 static inline __m256 load_f16x8(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

AVX2 static float dot_f32_avx2(const float *a, const float *b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* BF16 decode kernels. A 256-bit load holds 16 bf16 as 8 32-bit lanes (element 2k in the low
 * half, 2k+1 in the high half): a shift and a mask turn it into two f32 vectors with no
 * cross-lane shuffle, multiplied by x de-interleaved once per call (xp: per 16-element block, the
 * 8 even then the 8 odd elements; per 32-element block with AVX-512, deinterleave32).
 * A tile is K weight rows (K <= MV_STREAMS) against T inputs (a decode batch), one accumulator
 * per row and input:
 *  - the K rows are far apart in memory: K concurrent sequential streams per thread keep more
 *    cache-line fills in flight than one (on the EPYC a pure read with 3 streams per thread
 *    measured 13-47 % faster than with one, bench/README.md);
 *  - each load of x serves K rows, and each load and widening of weights serves T inputs, so an
 *    extra input costs two FMAs per 16 (AVX2) or 32 (AVX-512) weights (bench/README.md, "BF16 decode
 *    in tiles").
 * Every (row, input) sum is formed the same way whatever K and T are: over the blocks in order,
 * the even elements' product then the odd ones' into one accumulator, then its lanes reduced,
 * then the tail in order. So a row's value never depends on which rows or inputs it was grouped
 * with: not on the thread count, and the same for a token decoded alone or in a batch. The
 * AVX2 and AVX-512 kernels round differently (within the fixtures' tolerances). */
static void deinterleave16(const float *x, int n, float *xp) {
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 8; k++) { xp[i + k] = x[i + 2 * k]; xp[i + 8 + k] = x[i + 2 * k + 1]; }
}

AVX2 static inline float bf16_tail(const uint16_t *w, const float *x, int i, int n) {
  float s = 0;
  for (; i < n; i++) s += oc_bf16_to_f32(w[i]) * x[i];
  return s;
}

/* Rows dotted side by side: sequential streams per thread in the decode products. */
#define MV_STREAMS 4
/* Inputs per BF16 tile: the K x T accumulators, the widened weights and x fit the registers
 * (16 with AVX2, 32 with AVX-512). */
#define BF16_TILE_AVX2 2
#define BF16_TILE_512 4
_Static_assert(BF16_TILE_AVX2 >= 1 && BF16_TILE_AVX2 <= 4 && BF16_TILE_512 >= 1 && BF16_TILE_512 <= 4,
               "DEF_ROWS_BF16 dispatches tiles of 1 to 4 inputs");

/* out[t * K + j] = row w[j] . input t (xp[t] de-interleaved, x[t] as is, for the tail) */
AVX2 static inline __attribute__((always_inline)) void tile_bf16(const uint16_t *const *w, const int K, const float *const *xp,
                                                               const float *const *x, const int T, int n, float *out) {
  const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
  __m256 acc[MV_STREAMS][BF16_TILE_AVX2];
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) acc[j][t] = _mm256_setzero_ps();
  int i = 0;
#define BF16_BLOCK(I)                                                                                   \
  for (int j = 0; j < K; j++) {                                                                         \
    const __m256i v = _mm256_loadu_si256((const __m256i *)(w[j] + (I)));                                \
    const __m256 e = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), o = _mm256_castsi256_ps(_mm256_and_si256(v, hi)); \
    for (int t = 0; t < T; t++) {                                                                       \
      acc[j][t] = _mm256_fmadd_ps(e, _mm256_loadu_ps(xp[t] + (I)), acc[j][t]);                           \
      acc[j][t] = _mm256_fmadd_ps(o, _mm256_loadu_ps(xp[t] + (I) + 8), acc[j][t]);                       \
    }                                                                                                   \
  }
  for (; i + 32 <= n; i += 32) {
#if OC_PREFETCH > 0
    for (int j = 0; j < K; j++) _mm_prefetch((const char *)(w[j] + i) + OC_PREFETCH, _MM_HINT_T0);
#endif
    BF16_BLOCK(i)
    BF16_BLOCK(i + 16)
  }
  if (i + 16 <= n) {
    BF16_BLOCK(i)
    i += 16;
  }
#undef BF16_BLOCK
  for (int t = 0; t < T; t++)
    for (int j = 0; j < K; j++) out[t * K + j] = hsum8(acc[j][t]) + bf16_tail(w[j], x[t], i, n);
}

#define AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))
static void deinterleave32(const float *x, int n, float *xp) {
  int i = 0;
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 16; k++) { xp[i + k] = x[i + 2 * k]; xp[i + 16 + k] = x[i + 2 * k + 1]; }
}

/* The same with AVX-512 (when the CPU has it): a 512-bit load holds 32 bf16, widened by the same
 * shift and mask into 16 even and 16 odd f32: half the instructions per weight of the AVX2 tile. */
AVX512 static inline __attribute__((always_inline)) void tile_bf16_512(const uint16_t *const *w, const int K, const float *const *xp,
                                                                     const float *const *x, const int T, int n, float *out) {
  const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
  __m512 acc[MV_STREAMS][BF16_TILE_512];
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) acc[j][t] = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
#if OC_PREFETCH > 0
    for (int j = 0; j < K; j++) _mm_prefetch((const char *)(w[j] + i) + OC_PREFETCH, _MM_HINT_T0);
#endif
    for (int j = 0; j < K; j++) {
      const __m512i v = _mm512_loadu_si512((const void *)(w[j] + i));
      const __m512 e = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), o = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
      for (int t = 0; t < T; t++) {
        acc[j][t] = _mm512_fmadd_ps(e, _mm512_loadu_ps(xp[t] + i), acc[j][t]);
        acc[j][t] = _mm512_fmadd_ps(o, _mm512_loadu_ps(xp[t] + i + 16), acc[j][t]);
      }
    }
  }
  for (int t = 0; t < T; t++)
    for (int j = 0; j < K; j++) out[t * K + j] = _mm512_reduce_add_ps(acc[j][t]) + bf16_tail(w[j], x[t], i, n);
}

/* F16 and F32 rows the same way, x as it is (no de-interleaving), one input at a time: one
 * accumulator for elements 0-7 and one for 8-15 of each 16-element block, in order, then their
 * sum, then the tail. */
#define DEF_DOTK_PLAIN(NAME, WT, LOAD8, TO_F32)                                                         \
  AVX2 static inline __attribute__((always_inline)) void NAME(const WT *const *w, const int K, const float *x, \
                                                              int n, float *out) {                      \
    __m256 a0[MV_STREAMS], a1[MV_STREAMS];                                                              \
    for (int j = 0; j < K; j++) a0[j] = a1[j] = _mm256_setzero_ps();                                    \
    int i = 0;                                                                                          \
    for (; i + 16 <= n; i += 16) {                                                                      \
      if (OC_PREFETCH > 0)                                                                              \
        for (int j = 0; j < K; j++) _mm_prefetch((const char *)(w[j] + i) + OC_PREFETCH, _MM_HINT_T0);  \
      const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);                        \
      for (int j = 0; j < K; j++) {                                                                     \
        a0[j] = _mm256_fmadd_ps(LOAD8(w[j] + i), x0, a0[j]);                                            \
        a1[j] = _mm256_fmadd_ps(LOAD8(w[j] + i + 8), x1, a1[j]);                                        \
      }                                                                                                 \
    }                                                                                                   \
    for (int j = 0; j < K; j++) {                                                                       \
      float s = hsum8(_mm256_add_ps(a0[j], a1[j]));                                                     \
      for (int k = i; k < n; k++) s += TO_F32(w[j][k]) * x[k];                                          \
      out[j] = s;                                                                                       \
    }                                                                                                   \
  }
#define F32_AS_IS(v) (v)
DEF_DOTK_PLAIN(dotk_f16, uint16_t, load_f16x8, oc_f16_to_f32)
DEF_DOTK_PLAIN(dotk_f32, float, _mm256_loadu_ps, F32_AS_IS)

/* The products of a run of rows: K streams at once, `count` consecutive rows each (rows w[j] +
 * r*n, r < count), against `nx` inputs (rows of x and xp, n apart); row r of stream j and input t
 * goes to y[j][t * ystride[j] + r]. */
typedef struct {
  const void *const *w;
  int K, count, n, nx;
  const float *xp, *x;
  float *const *y;
  const size_t *ystride;
} mv_run;

/* FN(a, K) with K a constant (the streams' accumulators stay in registers) */
#define WITH_CONST_K(FN, a)   \
  switch ((a)->K) {           \
    case 4: FN(a, 4); break;  \
    case 3: FN(a, 3); break;  \
    case 2: FN(a, 2); break;  \
    default: FN(a, 1); break; \
  }

/* BF16: each row in tiles of TILE inputs (ATTR: the instruction set, TILE_FN: its tile kernel) */
#define DEF_ROWS_BF16(ATTR, NAME, TILE_FN, TILE)                                                        \
  ATTR static inline __attribute__((always_inline)) void NAME##_k(const mv_run *a, const int K) {        \
    for (int r = 0; r < a->count; r++) {                                                                \
      const uint16_t *p[MV_STREAMS];                                                                    \
      for (int j = 0; j < K; j++) p[j] = (const uint16_t *)a->w[j] + (size_t)r * (size_t)a->n;          \
      for (int t0 = 0; t0 < a->nx; t0 += TILE) {                                                        \
        const int T = a->nx - t0 < TILE ? a->nx - t0 : TILE;                                            \
        const float *xp[TILE], *x[TILE];                                                                \
        for (int t = 0; t < T; t++) {                                                                   \
          xp[t] = a->xp + (size_t)(t0 + t) * (size_t)a->n;                                              \
          x[t] = a->x + (size_t)(t0 + t) * (size_t)a->n;                                                \
        }                                                                                               \
        float v[MV_STREAMS * TILE];                                                                     \
        switch (T) { /* constant tile sizes: the accumulators stay in registers */                     \
          case 4: TILE_FN(p, K, xp, x, TILE >= 4 ? 4 : 1, a->n, v); break;                              \
          case 3: TILE_FN(p, K, xp, x, TILE >= 3 ? 3 : 1, a->n, v); break;                              \
          case 2: TILE_FN(p, K, xp, x, 2, a->n, v); break;                                              \
          default: TILE_FN(p, K, xp, x, 1, a->n, v); break;                                             \
        }                                                                                               \
        for (int t = 0; t < T; t++)                                                                     \
          for (int j = 0; j < K; j++) a->y[j][(size_t)(t0 + t) * a->ystride[j] + r] = v[t * K + j];     \
      }                                                                                                 \
    }                                                                                                   \
  }                                                                                                     \
  ATTR static void NAME(const mv_run *a) {                                                              \
    WITH_CONST_K(NAME##_k, a);                                                                          \
  }
DEF_ROWS_BF16(AVX2, rows_bf16, tile_bf16, BF16_TILE_AVX2)
DEF_ROWS_BF16(AVX512, rows_bf16_512, tile_bf16_512, BF16_TILE_512)

/* F16 and F32: one input at a time */
#define DEF_ROWS_PLAIN(NAME, WT, DOTK)                                                                  \
  AVX2 static inline __attribute__((always_inline)) void NAME##_k(const mv_run *a, const int K) {        \
    for (int t = 0; t < a->nx; t++)                                                                     \
      for (int r = 0; r < a->count; r++) {                                                              \
        const WT *p[MV_STREAMS];                                                                        \
        float v[MV_STREAMS];                                                                            \
        for (int j = 0; j < K; j++) p[j] = (const WT *)a->w[j] + (size_t)r * (size_t)a->n;              \
        DOTK(p, K, a->x + (size_t)t * (size_t)a->n, a->n, v);                                           \
        for (int j = 0; j < K; j++) a->y[j][(size_t)t * a->ystride[j] + r] = v[j];                      \
      }                                                                                                 \
  }                                                                                                     \
  AVX2 static void NAME(const mv_run *a) {                                                              \
    WITH_CONST_K(NAME##_k, a);                                                                          \
  }
DEF_ROWS_PLAIN(rows_f16, uint16_t, dotk_f16)
DEF_ROWS_PLAIN(rows_f32, float, dotk_f32)

/* A run of rows of one dtype (BF16 needs xp, the de-interleaved inputs). */
AVX2 static void dot_rows_avx2(oc_dtype dt, const mv_run *a) {
  if (dt == OC_DT_BF16 && oc_have_avx512()) rows_bf16_512(a); /* xp de-interleaved per 32 (deinterleave32) */
  else if (dt == OC_DT_BF16) rows_bf16(a);
  else if (dt == OC_DT_F16) rows_f16(a);
  else rows_f32(a);
}

AVX2 static void axpy_avx2(float a, const float *x, float *y, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

/* Weighted sums of rows for G (<= 4) sets of weights at once: out[g][i] = sum over p of
 * a[g][p] * v[p][i], p in order, one fused multiply-add per term starting from 0 - the same
 * operations, in the same order, as G passes of axpy_avx2 over a zeroed out[g]. The rows go
 * by in chunks of WSUM_ROWS; within a chunk NV vectors (8 floats each) of every output row stay
 * in registers while the chunk's rows stream by, and the next chunk is prefetched in row order
 * (in decode the KV cache is cold; read in whole column blocks it came in 1.3-2.9x slower in a
 * microbenchmark). */
#define WSUM_ROWS 8
AVX2 static inline __attribute__((always_inline)) void wsum_block(const float *a, size_t as, const int G, const float *v, size_t vs,
                                                                 int p0, int pn, int i, const int NV, float *out, int hd) {
  __m256 acc[4][4];
  for (int g = 0; g < G; g++)
    for (int k = 0; k < NV; k++) acc[g][k] = p0 ? _mm256_loadu_ps(out + (size_t)g * hd + i + 8 * k) : _mm256_setzero_ps();
  for (int p = p0; p < p0 + pn; p++) {
    const float *row = v + (size_t)p * vs + i;
    __m256 x[4];
    for (int k = 0; k < NV; k++) x[k] = _mm256_loadu_ps(row + 8 * k);
    for (int g = 0; g < G; g++) {
      const __m256 w = _mm256_broadcast_ss(a + (size_t)g * as + p);
      for (int k = 0; k < NV; k++) acc[g][k] = _mm256_fmadd_ps(w, x[k], acc[g][k]);
    }
  }
  for (int g = 0; g < G; g++)
    for (int k = 0; k < NV; k++) _mm256_storeu_ps(out + (size_t)g * hd + i + 8 * k, acc[g][k]);
}

AVX2 static inline __attribute__((always_inline)) void wsum_g(const float *a, size_t as, const int G, const float *v, size_t vs, int np,
                                                             int hd, float *out) {
  const int NV = G > 2 ? 2 : 4; /* G x NV accumulators: 8 independent chains */
  for (int p0 = 0; p0 < np; p0 += WSUM_ROWS) {
    const int pn = np - p0 < WSUM_ROWS ? np - p0 : WSUM_ROWS;
    for (int p = p0 + WSUM_ROWS; p < np && p < p0 + 2 * WSUM_ROWS; p++)
      for (int o = 0; o < hd; o += 16) _mm_prefetch((const char *)(v + (size_t)p * vs + o), _MM_HINT_T0);
    int i = 0;
    for (; i + 8 * NV <= hd; i += 8 * NV) wsum_block(a, as, G, v, vs, p0, pn, i, NV, out, hd);
    for (; i + 8 <= hd; i += 8) wsum_block(a, as, G, v, vs, p0, pn, i, 1, out, hd);
    for (; i < hd; i++)
      for (int g = 0; g < G; g++) {
        float t = p0 ? out[(size_t)g * hd + i] : 0;
        for (int p = p0; p < p0 + pn; p++) t = fmaf(a[(size_t)g * as + p], v[(size_t)p * vs + i], t);
        out[(size_t)g * hd + i] = t;
      }
  }
}

AVX2 static void wsum_avx2(const float *a, size_t as, int G, const float *v, size_t vs, int np, int hd, float *out) {
  switch (G) {
    case 4: wsum_g(a, as, 4, v, vs, np, hd, out); break;
    case 3: wsum_g(a, as, 3, v, vs, np, hd, out); break;
    case 2: wsum_g(a, as, 2, v, vs, np, hd, out); break;
    default: wsum_g(a, as, 1, v, vs, np, hd, out); break;
  }
}

AVX2 static void convert_bf16_avx2(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16x8(src + i));
  for (; i < n; i++) dst[i] = oc_bf16_to_f32(src[i]);
}
AVX2 static void convert_f16_avx2(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16x8(src + i));
  for (; i < n; i++) dst[i] = oc_f16_to_f32(src[i]);
}
#endif

float oc_dot_f32(const float *a, const float *b, int n) {
#ifdef OC_X86
  if (oc_have_avx2()) return dot_f32_avx2(a, b, n);
#endif
  return dot_f32_scalar(a, b, n);
}

void oc_axpy_f32(float a, const float *x, float *y, int n) {
#ifdef OC_X86
  if (oc_have_avx2()) { axpy_avx2(a, x, y, n); return; }
#endif
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void oc_weighted_rows(const float *a, size_t as, int G, const float *v, size_t vs, int np, int hd, float *out) {
  for (int g0 = 0; g0 < G; g0 += 4) {
    const int gc = G - g0 < 4 ? G - g0 : 4;
#ifdef OC_X86
    if (oc_have_avx2()) { wsum_avx2(a + (size_t)g0 * as, as, gc, v, vs, np, hd, out + (size_t)g0 * hd); continue; }
#endif
    for (int g = g0; g < g0 + gc; g++) {
      float *o = out + (size_t)g * hd;
      memset(o, 0, sizeof(float) * (size_t)hd);
      for (int p = 0; p < np; p++) oc_axpy_f32(a[(size_t)g * as + p], v + (size_t)p * vs, o, hd);
    }
  }
}

/* Fewer input rows than this take the decode paths (the matrix-vector kernels, attention query by
 * query); from it on, the prefill paths built on sgemm. */
#define GEMM_MIN_ROWS 8
/* BF16 weights: up to this many rows of X (a decode batch, a short prompt) take the decode
 * kernel's tiles (each weight row read once, dotted with the inputs a tile at a time) instead of
 * sgemm on converted weights. On E2B (2 threads, Intel, AVX-512, bench_decoder --batch, two
 * alternating runs of each build) a step of 8 / 16 / 32 rows took 371-404 / 642-690 / 1255-1413
 * ms this way against 1134-1235 / 1342-1436 / 1838-2078 through sgemm: converting every weight
 * to f32 costs the same at any row count, and the two met near 64 rows. Kept at 32 until the AMD
 * EPYC, whose sgemm was relatively faster, is measured (bench/README.md). A row's value is the
 * same as decoded alone. */
#define OC_MATVEC_MAX_ROWS 32
/* Queries per work item of the prefill attention. */
#define ATT_QBLOCK 32

/* Query heads h0 .. h0 + *G - 1 (returns h0): group `grp` of the heads on KV head kvh, rep heads
 * per KV head, OC_ATT_GROUP per group (the last group of a KV head may hold fewer). */
static int att_group(int kvh, int grp, int rep, int *G) {
  const int h0 = kvh * rep + grp * OC_ATT_GROUP, left = (kvh + 1) * rep - h0;
  *G = left < OC_ATT_GROUP ? left : OC_ATT_GROUP;
  return h0;
}

/* First cache index a query at index qp sees: lo (its sequence's first) or, when later, the
 * window's first. */
static int att_first(int qp, int lo, int window) {
  return window > 0 && qp - window + 1 > lo ? qp - window + 1 : lo;
}

/* Prefill: work items (block of ATT_QBLOCK queries, KV head, group of up to OC_ATT_GROUP of its
 * query heads) over the union of the block's key ranges. Per head, the scores are one sgemm
 * (scale * Q K^T), the softmax runs over each query's own range with the rest of its row set to
 * zero, and the output is a second sgemm (P V); the group's heads share the item so that its K
 * and V blocks are read from memory once. Each item is computed by one thread with
 * single-threaded sgemm, so the result does not depend on the thread count. */
static void attention_blocks(const float *q, int n, int nh, int nkv, int hd, const float *K, const float *V, int pos0,
                             const int *lo, int window, float scale, float *scratch, int cap, float *out) {
  const int rep = nh / nkv, ngrp = (rep + OC_ATT_GROUP - 1) / OC_ATT_GROUP, nblk = (n + ATT_QBLOCK - 1) / ATT_QBLOCK;
  const int items = nblk * nkv * ngrp;
  const size_t row = (size_t)nkv * (size_t)hd, qrow = (size_t)nh * (size_t)hd;
#pragma omp parallel for schedule(dynamic, 1)
  for (int it = 0; it < items; it++) {
    int G;
    const int b = it / (nkv * ngrp), kvh = it % (nkv * ngrp) / ngrp, h0 = att_group(kvh, it % ngrp, rep, &G);
    const int t0 = b * ATT_QBLOCK, tb = n - t0 < ATT_QBLOCK ? n - t0 : ATT_QBLOCK;
    int kmin = att_first(pos0 + t0, lo[t0], window);
    for (int t = t0 + 1; t < t0 + tb; t++) {
      const int f = att_first(pos0 + t, lo[t], window);
      if (f < kmin) kmin = f;
    }
    const int nk = pos0 + t0 + tb - kmin; /* keys kmin .. the block's last query */
    float *S = scratch + (size_t)omp_get_thread_num() * ATT_QBLOCK * (size_t)cap; /* [tb][nk] */
    const float *kb = K + (size_t)kmin * row + (size_t)kvh * hd, *vb = V + (size_t)kmin * row + (size_t)kvh * hd;
    for (int h = h0; h < h0 + G; h++) { /* the group's heads one after another: K and V blocks stay in cache */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tb, nk, hd, scale, q + ((size_t)t0 * nh + h) * hd, (int)qrow, kb, (int)row,
                  0.0f, S, nk);
      for (int t = 0; t < tb; t++) /* its keys: first .. its own position */
        oc_softmax_span(S + (size_t)t * nk, nk, att_first(pos0 + t0 + t, lo[t0 + t], window) - kmin, pos0 + t0 + t - kmin + 1, NULL);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tb, hd, nk, 1.0f, S, nk, vb, (int)row, 0.0f, out + ((size_t)t0 * nh + h) * hd,
                  (int)qrow);
    }
  }
}

/* Per thread: the decode path's [OC_ATT_GROUP][cap] scores or the prefill path's [ATT_QBLOCK][cap]. */
size_t oc_attention_scratch(int threads, int cap) {
  return (size_t)threads * (ATT_QBLOCK > OC_ATT_GROUP ? ATT_QBLOCK : OC_ATT_GROUP) * (size_t)cap;
}

/* Decode: work items are (query, KV head, group of up to OC_ATT_GROUP of its query heads): each
 * K and V row is fetched once per group (the group's other heads find it in L1) instead of once per
 * head. Query t sits at index pos[t] of K[t], V[t] and sees from lo[t] (0 when lo is NULL) or the
 * window's first. Each score is one oc_dot_f32, the output the fused multiply-adds over the
 * positions in order, so a head's arithmetic is the same in any group, any thread and beside any
 * other queries. */
static void attention_decode(const float *q, int n, int nh, int nkv, int hd, const float *const *K, const float *const *V, const int *pos,
                             const int *lo, int window, float scale, float *scratch, int cap, float *out) {
  const int rep = nh / nkv, ngrp = (rep + OC_ATT_GROUP - 1) / OC_ATT_GROUP, items = nkv * ngrp;
  const size_t row = (size_t)nkv * (size_t)hd;
#pragma omp parallel for collapse(2) schedule(static)
  for (int t = 0; t < n; t++)
    for (int it = 0; it < items; it++) {
      int G;
      const int kvh = it / ngrp, h0 = att_group(kvh, it % ngrp, rep, &G);
      float *sc = scratch + (size_t)omp_get_thread_num() * OC_ATT_GROUP * (size_t)cap; /* [G][cap] */
      const int first = att_first(pos[t], lo ? lo[t] : 0, window), np = pos[t] - first + 1;
      const float *qg = q + ((size_t)t * nh + h0) * hd, *k0 = K[t] + (size_t)first * row + (size_t)kvh * hd;
      for (int p = 0; p < np; p++)
        for (int g = 0; g < G; g++) sc[(size_t)g * cap + p] = oc_dot_f32(qg + (size_t)g * hd, k0 + (size_t)p * row, hd) * scale;
      for (int g = 0; g < G; g++) oc_softmax_span(sc + (size_t)g * cap, np, 0, np, NULL);
      oc_weighted_rows(sc, (size_t)cap, G, V[t] + (size_t)first * row + (size_t)kvh * hd, row, np, hd, out + ((size_t)t * nh + h0) * hd);
    }
}

void oc_attention(const float *q, int n, int nh, int nkv, int hd, const float *K, const float *V, int pos0, const int *lo,
                  int window, float scale, float *scratch, int cap, float *out) {
  if (n >= GEMM_MIN_ROWS) {
    attention_blocks(q, n, nh, nkv, hd, K, V, pos0, lo, window, scale, scratch, cap, out);
    return;
  }
  const float *Ks[GEMM_MIN_ROWS], *Vs[GEMM_MIN_ROWS];
  int pos[GEMM_MIN_ROWS];
  for (int t = 0; t < n; t++) { Ks[t] = K; Vs[t] = V; pos[t] = pos0 + t; }
  attention_decode(q, n, nh, nkv, hd, Ks, Vs, pos, lo, window, scale, scratch, cap, out);
}

size_t oc_attention_batch_scratch(int threads, int cap) { return (size_t)threads * OC_ATT_GROUP * (size_t)cap; }

void oc_attention_batch(const float *q, int n, int nh, int nkv, int hd, const float *const *K, const float *const *V, const int *pos,
                        int window, float scale, float *scratch, int cap, float *out) {
  attention_decode(q, n, nh, nkv, hd, K, V, pos, NULL, window, scale, scratch, cap, out);
}

static void convert_row(oc_dtype dt, const void *src, float *dst, size_t n) {
#ifdef OC_X86
  if (oc_have_avx2()) {
    if (dt == OC_DT_BF16) { convert_bf16_avx2(src, dst, n); return; }
    if (dt == OC_DT_F16) { convert_f16_avx2(src, dst, n); return; }
  }
#endif
  oc_to_f32(dt, src, dst, n);
}

/* Row `row` of a 2-D weight tensor of any dtype the decoder takes, elements [col0, col0 + n), as f32. */
static void weight_row(const oc_tensor *t, int64_t row, int64_t col0, int64_t n, float *dst) {
  const int64_t cols = t->ndim >= 2 ? t->shape[t->ndim - 1] : t->numel;
  if (t->dtype == OC_DT_Q8) {
    oc_q8_dequantize((const int8_t *)t->data + row * cols, t->scales + row * oc_q8_nblocks(cols), t->q8_il, col0, n, dst);
    return;
  }
  convert_row(t->dtype, (const char *)t->data + (size_t)(row * cols + col0) * oc_dtype_size(t->dtype), dst, (size_t)n);
}

void oc_tensor_row(const oc_tensor *t, int64_t row, int64_t col0, int64_t n, float *dst) { weight_row(t, row, col0, n, dst); }

/* Rows of X per sgemm call. OpenBLAS copies (packs) all of X at every call, once per block of
 * weight rows; X in 512-row pieces made a 2048-token E2B prefill 6-8 % faster (bench/README.md),
 * their copies coming more from the cache. Fixed, so results do not depend on the thread count;
 * up to 512 rows it is one call as before. */
#define GEMM_MAX_TOKENS 512

/* Rows of W per sgemm block. Depends only on the shapes, never on the thread count, so
 * every output element is produced by the same call whichever thread runs it. */
static int gemm_block_rows(int in, int out) {
  int block = (int)((1u << 20) / (unsigned)in); /* ~4 MiB of f32 weights */
  block = block < 16 ? 16 : block > 256 ? 256 : block;
  return block > out ? out : block;
}

/* Position of a row of the concatenated outputs of several matrices. */
typedef struct {
  int m, r;
} mv_row;

static void mv_settle(mv_row *p, const int *outs, int count) {
  while (p->m < count && p->r >= outs[p->m]) p->r -= outs[p->m++];
}

/* Row g of the concatenation (matrices with no rows are stepped over). */
static mv_row mv_locate(const int *outs, int count, int g) {
  mv_row p = {0, g};
  mv_settle(&p, outs, count);
  return p;
}

/* Advance by `k` rows (stepping over matrices with no rows). */
static void mv_skip(mv_row *p, const int *outs, int count, int k) {
  p->r += k;
  mv_settle(p, outs, count);
}

/* One row of W[m] dotted with each of the n rows of X, any dtype; with AVX2 the same kernel as
 * a group of rows would use, so a row's value does not depend on its grouping. */
static void mv_row_generic(const float *X, int n, int in, const oc_tensor *w, int r, const float *xp, const oc_q8_act *xq, float *Y,
                           int out) {
  (void)xp; /* only the AVX2 path reads it */
  if (w->dtype == OC_DT_Q8) {
    const int8_t *wr = (const int8_t *)w->data + (size_t)r * (size_t)in;
    const uint16_t *wd = w->scales + (size_t)r * (size_t)oc_q8_nblocks(in);
    if (xq) {
      float *yr = Y + r;
      const size_t stride = (size_t)out;
      oc_q8_rows(&wr, &wd, w->q8_il, 1, 1, xq, n, in, &yr, &stride);
      return;
    }
    /* no buffer for the quantized inputs (out of memory): slow but correct, the weights dequantized */
    for (int t = 0; t < n; t++) {
      float s = 0, chunk[OC_Q8_BLOCK];
      for (int i = 0; i < in; i += OC_Q8_BLOCK) {
        const int len = in - i < OC_Q8_BLOCK ? in - i : OC_Q8_BLOCK;
        oc_q8_dequantize(wr, wd, w->q8_il, i, len, chunk);
        s += dot_f32_scalar(chunk, X + (size_t)t * in + i, len);
      }
      Y[(size_t)t * out + r] = s;
    }
    return;
  }
  const size_t es = oc_dtype_size(w->dtype);
  const void *wr = (const char *)w->data + (size_t)r * (size_t)in * es;
#ifdef OC_X86
  /* (BF16 without xp, its buffer not allocated, takes the scalar path) */
  if (oc_have_avx2() && (w->dtype != OC_DT_BF16 || xp)) {
    float *yr = Y + r;
    const size_t stride = (size_t)out;
    const mv_run a = {&wr, 1, 1, in, n, xp, X, &yr, &stride};
    dot_rows_avx2(w->dtype, &a);
    return;
  }
#endif
  for (int t = 0; t < n; t++) {
    const float *x = X + (size_t)t * in;
    float v;
    if (w->dtype == OC_DT_F32) v = dot_f32_scalar(wr, x, in);
    else v = w->dtype == OC_DT_BF16 ? dot_bf16_scalar(wr, x, in) : dot_f16_scalar(wr, x, in);
    Y[(size_t)t * out + r] = v;
  }
}

/* Decode (few rows of X): every weight row streamed once, dotted with each input row. Several
 * matrices sharing X run in one parallel loop (one fork/join instead of one per matrix). Each
 * thread takes a contiguous share of the rows and walks it as MV_STREAMS
 * sub-ranges side by side (see the kernel above). */
/* A buffer per calling thread, grown on demand and freed when the thread exits (the decode
 * kernels' reordered or quantized copies of x). NULL when out of memory: callers take their plain path. */
typedef struct { void *p; size_t cap; } floatbuf;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static pthread_key_t buf_key;
static void free_floatbuf(void *b) { free(((floatbuf *)b)->p); free(b); }
static void make_buf_key(void) { pthread_key_create(&buf_key, free_floatbuf); }
static void *thread_bytes(size_t bytes) {
  pthread_once(&buf_once, make_buf_key);
  floatbuf *b = pthread_getspecific(buf_key);
  if (!b) {
    if (!(b = calloc(1, sizeof *b))) return NULL;
    if (pthread_setspecific(buf_key, b) != 0) { free(b); return NULL; }
  }
  if (bytes > b->cap) {
    void *np = realloc(b->p, bytes);
    if (!np) return NULL;
    b->p = np;
    b->cap = bytes;
  }
  return b->p;
}

static void matvec_multi(const float *X, int n, int in, const oc_tensor *const *W, const int *outs, float *const *Y, int count) {
  int total = 0;
  for (int m = 0; m < count; m++) total += outs[m];
  /* the inputs as the kernels take them: de-interleaved for BF16 (AVX2 level), quantized for Q8 */
  const float *xp = NULL;
  const oc_q8_act *xq = NULL;
  int any_bf16 = 0, any_q8 = 0;
  for (int m = 0; m < count; m++) { any_bf16 |= W[m]->dtype == OC_DT_BF16; any_q8 |= W[m]->dtype == OC_DT_Q8; }
  any_bf16 &= oc_have_avx2();
  /* (xp's share rounded up to 64 bytes: the quantized rows' descriptors after it stay aligned) */
  const size_t xp_bytes = any_bf16 ? (sizeof(float) * (size_t)n * (size_t)in + 63) & ~(size_t)63 : 0, act_bytes = oc_q8_act_bytes(in);
  char *buf = any_bf16 || any_q8 ? thread_bytes(xp_bytes + (any_q8 ? (size_t)n * (sizeof(oc_q8_act) + act_bytes) : 0)) : NULL;
  if (buf && any_bf16) {
#ifdef OC_X86
    for (int t = 0; t < n; t++) (oc_have_avx512() ? deinterleave32 : deinterleave16)(X + (size_t)t * in, in, (float *)buf + (size_t)t * in);
#endif
    xp = (const float *)buf;
  }
  if (buf && any_q8) {
    oc_q8_act *acts = (oc_q8_act *)(buf + xp_bytes);
    char *data = buf + xp_bytes + (size_t)n * sizeof(oc_q8_act);
#pragma omp parallel for schedule(static) if (n >= 2 && (int64_t)n * in >= 4096) /* (below: not worth a fork) */
    for (int t = 0; t < n; t++) oc_q8_act_quantize(X + (size_t)t * in, in, data + (size_t)t * act_bytes, &acts[t]);
    xq = acts;
  }
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), me = omp_get_thread_num();
    const int a = (int)((int64_t)total * me / nt), b = (int)((int64_t)total * (me + 1) / nt);
    int done = a;
#ifdef OC_X86
    const int K = MV_STREAMS, h = (b - a) / K;
    if (oc_have_avx2() && h > 0) {
      mv_row p[MV_STREAMS];
      for (int j = 0; j < K; j++) p[j] = mv_locate(outs, count, a + j * h);
      for (int i = 0; i < h;) {
        /* a run of rows that stays inside the current matrix of every stream */
        int run = h - i, same = 1;
        const oc_dtype dt = W[p[0].m]->dtype;
        const int il = W[p[0].m]->q8_il;
        const void *rows[MV_STREAMS];
        const uint16_t *scales[MV_STREAMS];
        float *ys[MV_STREAMS];
        size_t ystride[MV_STREAMS];
        for (int j = 0; j < K; j++) {
          const oc_tensor *w = W[p[j].m];
          const int left = outs[p[j].m] - p[j].r;
          if (left < run) run = left;
          same &= w->dtype == dt && w->q8_il == il;
          rows[j] = (const char *)w->data + (size_t)p[j].r * (size_t)in * oc_dtype_size(w->dtype);
          scales[j] = w->scales ? w->scales + (size_t)p[j].r * (size_t)oc_q8_nblocks(in) : NULL;
          ys[j] = Y[p[j].m] + p[j].r;
          ystride[j] = (size_t)outs[p[j].m];
        }
        if (!same || (dt == OC_DT_BF16 && !xp) || (dt == OC_DT_Q8 && !xq)) {
          run = 1;
          for (int j = 0; j < K; j++) mv_row_generic(X, n, in, W[p[j].m], p[j].r, xp, xq, Y[p[j].m], outs[p[j].m]);
        } else if (dt == OC_DT_Q8) { /* every input row in the kernel: each weight load serves several */
          oc_q8_rows((const int8_t *const *)rows, scales, il, K, run, xq, n, in, ys, ystride);
        } else {
          if (n > 1 && dt != OC_DT_BF16) run = 1; /* F16, F32: one input at a time, the rows from the caches after the first */
          const mv_run mr = {rows, K, run, in, n, xp, X, ys, ystride};
          dot_rows_avx2(dt, &mr);
        }
        for (int j = 0; j < K; j++) mv_skip(&p[j], outs, count, run);
        i += run;
      }
      done = a + K * h;
    }
#endif
    if (done < b) {
      mv_row p = mv_locate(outs, count, done);
      for (int g = done; g < b; g++, mv_skip(&p, outs, count, 1)) mv_row_generic(X, n, in, W[p.m], p.r, xp, xq, Y[p.m], outs[p.m]);
    }
  }
}

/* Whether W takes the decode kernels for n input rows: under GEMM_MIN_ROWS rows, BF16 up to
 * OC_MATVEC_MAX_ROWS (a decode batch) where the tiles run (AVX2 and up; the scalar dot would lose
 * to sgemm), and Q8 always: its kernel quantizes the inputs, and a prefill through f32 sgemm
 * would give a token other values (by ~1 % of a hidden state) than its decode step, so a q8
 * model's results would depend on the chunking and on how many streams a server batches. Each
 * weight row is read once for all n inputs (they stay in cache), so the int8 kernel is also the
 * faster prefill (bench/README.md). */
static int takes_matvec(oc_dtype dt, int n) {
  return n < GEMM_MIN_ROWS || (dt == OC_DT_BF16 && n <= OC_MATVEC_MAX_ROWS && oc_have_avx2()) || dt == OC_DT_Q8;
}

void oc_matmul_multi(const float *X, int n, int in, const oc_tensor *const *W, const int *outs, float *const *Y, int count) {
  int all_matvec = 1;
  for (int m = 0; m < count; m++) all_matvec &= takes_matvec(W[m]->dtype, n);
  if (all_matvec) { matvec_multi(X, n, in, W, outs, Y, count); return; }
  for (int m = 0; m < count; m++) oc_matmul(X, n, in, W[m], 0, outs[m], Y[m]);
}

void oc_matmul(const float *X, int n, int in, const oc_tensor *W, int row0, int out, float *Y) {
  if (out <= 0 || n <= 0) return;
  const size_t es = oc_dtype_size(W->dtype);
  const char *wbase = (const char *)W->data + (size_t)row0 * (size_t)in * es;
  if (takes_matvec(W->dtype, n)) {
    oc_tensor sub = *W;
    sub.data = wbase;
    if (W->scales) sub.scales = W->scales + (size_t)row0 * (size_t)oc_q8_nblocks(in);
    const oc_tensor *ws[1] = {&sub};
    int outs[1] = {out};
    float *ys[1] = {Y};
    matvec_multi(X, n, in, ws, outs, ys, 1);
    return;
  }
  /* Prefill: fixed blocks of weight rows; each block converted to f32 (if needed) and
   * multiplied by one single-threaded sgemm inside our OpenMP region. */
  const int block = gemm_block_rows(in, out);
  const int nblocks = (out + block - 1) / block;
  const int convert = W->dtype != OC_DT_F32;
#pragma omp parallel
  {
    float *buf = convert ? malloc(sizeof(float) * (size_t)block * (size_t)in) : NULL;
#pragma omp for schedule(dynamic, 1)
    for (int b = 0; b < nblocks; b++) {
      const int r0 = b * block, nb = out - r0 < block ? out - r0 : block;
      const float *wf = (const float *)(wbase + (size_t)r0 * (size_t)in * es);
      if (convert) {
        if (buf) {
          for (int r = 0; r < nb; r++) weight_row(W, row0 + r0 + r, 0, in, buf + (size_t)r * in);
          wf = buf;
        } else { /* out of memory: slow but correct, a row at a time in pieces */
          for (int r = 0; r < nb; r++)
            for (int t = 0; t < n; t++) {
              float s = 0, piece[32];
              for (int i = 0; i < in; i += 32) {
                const int len = in - i < 32 ? in - i : 32;
                weight_row(W, row0 + r0 + r, i, len, piece);
                s += dot_f32_scalar(piece, X + (size_t)t * in + i, len);
              }
              Y[(size_t)t * out + r0 + r] = s;
            }
          continue;
        }
      }
      for (int t0 = 0; t0 < n; t0 += GEMM_MAX_TOKENS) {
        const int tn = n - t0 < GEMM_MAX_TOKENS ? n - t0 : GEMM_MAX_TOKENS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tn, nb, in, 1.0f, X + (size_t)t0 * in, in, wf, in, 0.0f,
                    Y + (size_t)t0 * out + r0, out);
      }
    }
    free(buf);
  }
}

void oc_rmsnorm(const float *x, const float *w, int n, int dim, float eps, float *y) {
  /* (rows apart from 16 Ki values on: a batched decode step's norms, else its other thread waits) */
#pragma omp parallel for schedule(static) if ((int64_t)n * dim >= 16384 && n > 1)
  for (int t = 0; t < n; t++) {
    const float *xr = x + (size_t)t * dim;
    float *yr = y + (size_t)t * dim;
    float ss = oc_dot_f32(xr, xr, dim);
    float r = 1.0f / sqrtf(ss / (float)dim + eps);
    if (w) for (int i = 0; i < dim; i++) yr[i] = xr[i] * r * w[i];
    else for (int i = 0; i < dim; i++) yr[i] = xr[i] * r;
  }
}
