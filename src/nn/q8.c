/* q8 weights: quantization, dequantization and the int8 decode products (scalar reference, AVX2,
 * AVX-512 VNNI), the level chosen at run time (nn/cpu.h). */
#include "nn/q8.h"

#include <math.h>
#include <string.h>

#include "nn/cpu.h"
#include "opencon/safetensors.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OC_X86 1
#endif

/* The smallest f16 >= v (v >= 0 and finite); 0x7C00 (infinity) when v exceeds the largest f16. */
static uint16_t f16_at_least(float v) {
  if (!(v > 0)) return 0;
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  const int e = (int)((u >> 23) & 0xFF) - 127;
  const uint32_t m = u & 0x7FFFFF;
  if (e > 15) return 0x7C00;
  if (e >= -14) { /* a normal f16: 10 of the 23 mantissa bits, rounded up (a carry steps the exponent) */
    uint32_t h = ((uint32_t)(e + 15) << 10) | (m >> 13);
    if (m & 0x1FFF) h++;
    return (uint16_t)h;
  }
  /* a subnormal f16: a multiple of 2^-24 (1024 of them is the smallest normal, 0x0400) */
  return (uint16_t)ceil(ldexp((double)v, 24));
}

int oc_q8_quantize_row(const float *x, int64_t n, int8_t *q, uint16_t *d, int64_t *bad) {
  for (int64_t b0 = 0, bi = 0; b0 < n; b0 += OC_Q8_BLOCK, bi++) {
    const int64_t len = n - b0 < OC_Q8_BLOCK ? n - b0 : OC_Q8_BLOCK;
    float amax = 0;
    int64_t at = b0;
    for (int64_t i = 0; i < len; i++) {
      const float a = fabsf(x[b0 + i]);
      if (!isfinite(a)) { *bad = b0 + i; return -1; }
      if (a > amax) { amax = a; at = b0 + i; }
    }
    const uint16_t h = f16_at_least(amax / 127.0f);
    if (h == 0x7C00) { *bad = at; return -1; } /* the block's largest value: the one too large */
    d[bi] = h;
    const float step = oc_f16_to_f32(h), inv = step > 0 ? 1.0f / step : 0.0f;
    for (int64_t i = 0; i < len; i++) {
      float v = rintf(x[b0 + i] * inv);
      q[b0 + i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
  }
  return 0;
}

void oc_q8_dequantize(const int8_t *q, const uint16_t *d, int64_t col0, int64_t n, float *dst) {
  for (int64_t i = 0; i < n; i++) {
    const int64_t c = col0 + i;
    dst[i] = oc_f16_to_f32(d[c / OC_Q8_BLOCK]) * (float)q[c];
  }
}

/* ------------------------------------------------------------------ input rows */
static size_t round64(size_t v) { return (v + 63) & ~(size_t)63; }

size_t oc_q8_act_bytes(int n) {
  const size_t nb = (size_t)oc_q8_nblocks(n), steps = (size_t)n / 64;
  return round64((size_t)n) + round64(nb * sizeof(float)) + 2 * round64(steps * 16 * sizeof(float)) + 64;
}

void oc_q8_act_quantize(const float *x, int n, void *buf, oc_q8_act *a) {
  const size_t nb = (size_t)oc_q8_nblocks(n), steps = (size_t)n / 64;
  char *p = (char *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
  a->n = n;
  a->q = (int8_t *)p; p += round64((size_t)n);
  a->d = (float *)p; p += round64(nb * sizeof(float));
  a->init = (int32_t *)p; p += round64(steps * 16 * sizeof(float));
  a->dl = (float *)p;
  for (int b0 = 0, bi = 0; b0 < n; b0 += OC_Q8_BLOCK, bi++) {
    const int len = n - b0 < OC_Q8_BLOCK ? n - b0 : OC_Q8_BLOCK;
    float amax = 0;
    int finite = 1;
    for (int i = 0; i < len; i++) {
      const float v = fabsf(x[b0 + i]);
      finite = finite && isfinite(v);
      if (v > amax) amax = v;
    }
    if (!finite) { /* NaN or infinity: the block's products are NaN */
      a->d[bi] = NAN;
      memset(a->q + b0, 0, (size_t)len);
      continue;
    }
    float inv = amax > 0 ? 127.0f / amax : 0.0f;
    if (!(inv < INFINITY)) inv = 0.0f; /* |x| below ~4e-37: the block counts as zero (127 / amax would overflow) */
    a->d[bi] = inv > 0 ? amax / 127.0f : 0.0f;
    for (int i = 0; i < len; i++) {
      float v = rintf(x[b0 + i] * inv);
      a->q[b0 + i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
  }
  if (!oc_have_avx512_vnni()) return;
  for (size_t s = 0; s < steps; s++)
    for (int l = 0; l < 16; l++) {
      const int8_t *g = a->q + s * 64 + 4 * (size_t)l;
      a->init[s * 16 + (size_t)l] = -128 * (g[0] + g[1] + g[2] + g[3]);
      a->dl[s * 16 + (size_t)l] = a->d[2 * s + (size_t)(l >= 8)];
    }
}

/* ------------------------------------------------------------------ products */
/* Blocks b0.. of a row against x: each block's integer dot times (d_w * d_x), summed in order. */
static float q8_blocks(const int8_t *w, const uint16_t *wd, const oc_q8_act *x, int b0) {
  float s = 0;
  for (int b = b0; b * OC_Q8_BLOCK < x->n; b++) {
    const int i0 = b * OC_Q8_BLOCK, len = x->n - i0 < OC_Q8_BLOCK ? x->n - i0 : OC_Q8_BLOCK;
    int32_t dot = 0;
    for (int i = 0; i < len; i++) dot += (int32_t)w[i0 + i] * (int32_t)x->q[i0 + i];
    s += (oc_f16_to_f32(wd[b]) * x->d[b]) * (float)dot;
  }
  return s;
}

float oc_q8_dot_ref(const int8_t *w, const uint16_t *wd, const oc_q8_act *x) { return q8_blocks(w, wd, x, 0); }

#ifdef OC_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))
/* software prefetch distance of each weight stream (bytes); measured between 0 and 2 KiB within the noise */
#define Q8_PREFETCH 512

AVX2 static inline float hsum8(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  return _mm_cvtss_f32(_mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1)));
}

/* AVX2: per 32-element block, row and input, |w| times x with w's signs (vpmaddubsw: unsigned by
 * signed bytes, pairs summed in int16: at most 2 * 128 * 127, no saturation), pairs of pairs summed
 * in int32, converted and scaled into 8 f32 lanes; the lanes summed at the end, then the tail
 * blocks. K weight rows by T (<= 2) inputs per pass: |w| and the row's scale serve both inputs. */
#define Q8_TILE_T 4 /* the most inputs a tile takes (AVX2: 2, 16 registers) */
AVX2 static inline __attribute__((always_inline)) void q8_tile_avx2(const int8_t *const *w, const uint16_t *const *wd, const int K,
                                                                  const oc_q8_act *x, const int T, float out[4][Q8_TILE_T]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[4][2];
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) acc[j][t] = _mm256_setzero_ps();
  const int nb = x[0].n / OC_Q8_BLOCK;
  for (int b = 0; b < nb; b++) {
    for (int j = 0; j < K; j++) _mm_prefetch((const char *)(w[j] + b * OC_Q8_BLOCK) + Q8_PREFETCH, _MM_HINT_T0);
    for (int j = 0; j < K; j++) {
      const __m256i wv = _mm256_loadu_si256((const __m256i *)(w[j] + b * OC_Q8_BLOCK)), aw = _mm256_sign_epi8(wv, wv);
      const float dw = _cvtsh_ss(wd[j][b]);
      for (int t = 0; t < T; t++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[t].q + b * OC_Q8_BLOCK));
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv)), ones);
        acc[j][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * x[t].d[b]), acc[j][t]);
      }
    }
  }
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) out[j][t] = hsum8(acc[j][t]) + q8_blocks(w[j], wd[j], &x[t], nb);
}

#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
/* AVX-512 VNNI: per 64-element step (two blocks), w's bytes made unsigned (w + 128, a sign flip)
 * and vpdpbusd'd against x, starting each lane from -128 times its 4 x bytes (x->init) so the
 * int32 lanes are exact dots; lanes 0-7 hold the first block, 8-15 the second, converted and scaled
 * by (d_w * d_x) per lane into 16 f32 lanes; reduced at the end, then the tail blocks. K weight
 * rows by T input rows per pass: each weight load serves T inputs, each input load K rows. */
AVX512VNNI static inline __attribute__((always_inline)) void q8_tile_512(const int8_t *const *w, const uint16_t *const *wd, const int K,
                                                                        const oc_q8_act *x, const int T, float out[4][Q8_TILE_T]) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  const __m256i pick = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 acc[4][Q8_TILE_T];
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) acc[j][t] = _mm512_setzero_ps();
  const int steps = x[0].n / 64;
  for (int s = 0; s < steps; s++) {
    __m512i wu[4];
    __m512 dw[4];
    for (int j = 0; j < K; j++) {
      _mm_prefetch((const char *)(w[j] + s * 64) + Q8_PREFETCH, _MM_HINT_T0);
      wu[j] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(w[j] + s * 64)), flip);
      uint32_t two;
      memcpy(&two, wd[j] + 2 * s, sizeof two);
      dw[j] = _mm512_cvtph_ps(_mm256_permutexvar_epi16(pick, _mm256_castsi128_si256(_mm_cvtsi32_si128((int)two))));
    }
    for (int t = 0; t < T; t++) {
      const __m512i xq = _mm512_loadu_si512((const void *)(x[t].q + s * 64));
      const __m512i init = _mm512_loadu_si512((const void *)(x[t].init + s * 16));
      const __m512 dl = _mm512_loadu_ps(x[t].dl + s * 16);
      for (int j = 0; j < K; j++)
        acc[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, wu[j], xq)), _mm512_mul_ps(dw[j], dl), acc[j][t]);
    }
  }
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) out[j][t] = _mm512_reduce_add_ps(acc[j][t]) + q8_blocks(w[j], wd[j], &x[t], 2 * steps);
}

/* one function per K for each (an AVX2 caller cannot inline AVX-512 code, and K fixed unrolls) */
#define Q8_FOR_K(CALL) \
  switch (K) {         \
    case 4: CALL(4); break; \
    case 3: CALL(3); break; \
    case 2: CALL(2); break; \
    default: CALL(1); break; \
  }
/* K and T both fixed in each instance: the K x T accumulators stay in registers (with T a run-time
 * value they went to the stack, ~20 % slower); one function per instruction set (an AVX2 caller
 * cannot inline AVX-512 code) */
#define Q8_TILE_FOR(TILE, k)                 \
  switch (T) {                               \
    case 4: TILE(w, wd, k, x, 4, out); break; \
    case 3: TILE(w, wd, k, x, 3, out); break; \
    case 2: TILE(w, wd, k, x, 2, out); break; \
    default: TILE(w, wd, k, x, 1, out); break; \
  }
#define Q8_TILE_512(k) Q8_TILE_FOR(q8_tile_512, k)
#define Q8_TILE_AVX2(k)                                  \
  switch (T) {                                           \
    case 2: q8_tile_avx2(w, wd, k, x, 2, out); break;    \
    default: q8_tile_avx2(w, wd, k, x, 1, out); break;   \
  }
AVX512VNNI static void q8_tile_512_k(const int8_t *const *w, const uint16_t *const *wd, int K, const oc_q8_act *x, int T,
                                     float out[4][Q8_TILE_T]) {
  Q8_FOR_K(Q8_TILE_512)
}
AVX2 static void q8_tile_avx2_k(const int8_t *const *w, const uint16_t *const *wd, int K, const oc_q8_act *x, int T,
                                float out[4][Q8_TILE_T]) {
  /* (callers pass T <= 2) */
  Q8_FOR_K(Q8_TILE_AVX2)
}
#endif

void oc_q8_rows(const int8_t *const *w, const uint16_t *const *wd, int K, int count, const oc_q8_act *x, int n, int in,
                float *const *y, const size_t *ystride) {
  const size_t nb = (size_t)oc_q8_nblocks(in);
  const int vnni = oc_have_avx512_vnni(), avx2 = oc_have_avx2();
  (void)vnni; (void)avx2;
  for (int r = 0; r < count; r++) {
    const int8_t *p[4];
    const uint16_t *pd[4];
    for (int j = 0; j < K; j++) { p[j] = w[j] + (size_t)r * (size_t)in; pd[j] = wd[j] + (size_t)r * nb; }
#ifdef OC_X86
    if (vnni || avx2) {
      const int tile = vnni ? 4 : 2;
      for (int t0 = 0; t0 < n; t0 += tile) {
        const int T = n - t0 < tile ? n - t0 : tile;
        float v[4][Q8_TILE_T];
        (vnni ? q8_tile_512_k : q8_tile_avx2_k)(p, pd, K, x + t0, T, v);
        for (int j = 0; j < K; j++)
          for (int t = 0; t < T; t++) y[j][(size_t)(t0 + t) * ystride[j] + (size_t)r] = v[j][t];
      }
      continue;
    }
#endif
    for (int t = 0; t < n; t++)
      for (int j = 0; j < K; j++) y[j][(size_t)t * ystride[j] + (size_t)r] = q8_blocks(p[j], pd[j], &x[t], 0);
  }
}
