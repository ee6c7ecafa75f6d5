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

void oc_q8_dequantize(const int8_t *q, const uint16_t *d, int il, int64_t col0, int64_t n, float *dst) {
  for (int64_t i = 0; i < n; i++) {
    const int64_t c = col0 + i;
    dst[i] = oc_f16_to_f32(d[c / OC_Q8_BLOCK]) * (float)q[il ? oc_q8_il_pos(c) : c];
  }
}

void oc_q8_interleave(const int8_t *src, int64_t n, int8_t *dst) {
  for (int64_t c = 0; c < n; c += 4) memcpy(dst + oc_q8_il_pos(c), src + c, 4); /* 4 values stay together */
}

void oc_q8_deinterleave(const int8_t *src, int64_t n, int8_t *dst) {
  for (int64_t c = 0; c < n; c += 4) memcpy(dst + c, src + oc_q8_il_pos(c), 4);
}

/* ------------------------------------------------------------------ input rows */
static size_t round64(size_t v) { return (v + 63) & ~(size_t)63; }

size_t oc_q8_act_bytes(int n) {
  const size_t nb = (size_t)oc_q8_nblocks(n), steps = (size_t)n / 64, il = oc_q8_interleavable(n);
  return round64((size_t)n) + round64(nb * sizeof(float)) + 2 * round64(steps * 16 * sizeof(float)) +
         il * (round64((size_t)n) + round64((size_t)n / OC_Q8_GROUP * 16 * sizeof(int32_t))) + 64;
}

void oc_q8_act_quantize(const float *x, int n, void *buf, oc_q8_act *a) {
  const size_t nb = (size_t)oc_q8_nblocks(n), steps = (size_t)n / 64;
  char *p = (char *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
  a->n = n;
  a->q = (int8_t *)p; p += round64((size_t)n);
  a->d = (float *)p; p += round64(nb * sizeof(float));
  a->init = (int32_t *)p; p += round64(steps * 16 * sizeof(float));
  a->dl = (float *)p; p += round64(steps * 16 * sizeof(float));
  a->qi = NULL;
  a->ginit = NULL;
  if (oc_q8_interleavable(n)) {
    a->qi = (int8_t *)p; p += round64((size_t)n);
    a->ginit = (int32_t *)p;
  }
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
  if (a->qi) oc_q8_interleave(a->q, n, a->qi);
  if (!oc_have_avx512_vnni()) return;
  if (a->ginit)
    for (int b = 0; b < n / OC_Q8_BLOCK; b++) {
      int32_t sum = 0;
      for (int i = 0; i < OC_Q8_BLOCK; i++) sum += a->q[b * OC_Q8_BLOCK + i];
      a->ginit[b] = -128 * sum; /* (group g's 16 lanes: blocks 16g..16g+15, in order) */
    }
  for (size_t s = 0; s < steps; s++)
    for (int l = 0; l < 16; l++) {
      const int8_t *g = a->q + s * 64 + 4 * (size_t)l;
      a->init[s * 16 + (size_t)l] = -128 * (g[0] + g[1] + g[2] + g[3]);
      a->dl[s * 16 + (size_t)l] = a->d[2 * s + (size_t)(l >= 8)];
    }
}

/* ------------------------------------------------------------------ products */
/* Blocks b0.. of a row against x: each block's integer dot times (d_w * d_x), summed in order
 * (il: w interleaved; the same value as the natural row gives). */
static float q8_blocks(const int8_t *w, const uint16_t *wd, int il, const oc_q8_act *x, int b0) {
  float s = 0;
  for (int b = b0; b * OC_Q8_BLOCK < x->n; b++) {
    const int i0 = b * OC_Q8_BLOCK, len = x->n - i0 < OC_Q8_BLOCK ? x->n - i0 : OC_Q8_BLOCK;
    int32_t dot = 0;
    for (int i = 0; i < len; i++) dot += (int32_t)w[il ? oc_q8_il_pos(i0 + i) : i0 + i] * (int32_t)x->q[i0 + i];
    s += (oc_f16_to_f32(wd[b]) * x->d[b]) * (float)dot;
  }
  return s;
}

float oc_q8_dot_ref(const int8_t *w, const uint16_t *wd, int il, const oc_q8_act *x) { return q8_blocks(w, wd, il, x, 0); }

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
#define Q8_CHUNK 16 /* the most inputs a call of a tile function takes (the interleaved VNNI kernel's chunk) */
AVX2 static inline __attribute__((always_inline)) void q8_tile_avx2(const int8_t *const *w, const uint16_t *const *wd, const int K,
                                                                  const oc_q8_act *x, const int T, float out[4][Q8_CHUNK]) {
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
    for (int t = 0; t < T; t++) out[j][t] = hsum8(acc[j][t]) + q8_blocks(w[j], wd[j], 0, &x[t], nb);
}

/* AVX2, interleaved rows: per group and half (8 blocks), 8 runs of 32 bytes (run k: values
 * 4k..4k+3 of each block) through the same sign trick, summed in int32 lanes (lane l: block l of
 * the half, exact), then converted and scaled once per half into 8 f32 lanes; the lanes summed at
 * the end. */
AVX2 static inline __attribute__((always_inline)) void q8_tile_avx2_il(const int8_t *const *w, const uint16_t *const *wd, const int K,
                                                                     const oc_q8_act *x, const int T, float out[4][Q8_CHUNK]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[4][2];
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) acc[j][t] = _mm256_setzero_ps();
  const int halves = x[0].n / (OC_Q8_GROUP / 2);
  for (int h = 0; h < halves; h++) {
    const int base = h / 2 * OC_Q8_GROUP + h % 2 * 32; /* run k of this half: base + 64 k */
    __m256i dot[4][2];
    for (int j = 0; j < K; j++)
      for (int t = 0; t < T; t++) dot[j][t] = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
      for (int j = 0; j < K; j++) {
        _mm_prefetch((const char *)(w[j] + base + 64 * k) + Q8_PREFETCH, _MM_HINT_T0);
        const __m256i wv = _mm256_loadu_si256((const __m256i *)(w[j] + base + 64 * k)), aw = _mm256_sign_epi8(wv, wv);
        for (int t = 0; t < T; t++) {
          const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[t].qi + base + 64 * k));
          dot[j][t] = _mm256_add_epi32(dot[j][t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv)), ones));
        }
      }
    }
    for (int j = 0; j < K; j++) {
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wd[j] + 8 * h)));
      for (int t = 0; t < T; t++) acc[j][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[j][t]), _mm256_mul_ps(dw, _mm256_loadu_ps(x[t].d + 8 * h)), acc[j][t]);
    }
  }
  for (int j = 0; j < K; j++)
    for (int t = 0; t < T; t++) out[j][t] = hsum8(acc[j][t]);
}

#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
/* AVX-512 VNNI: per 64-element step (two blocks), w's bytes made unsigned (w + 128, a sign flip)
 * and vpdpbusd'd against x, starting each lane from -128 times its 4 x bytes (x->init) so the
 * int32 lanes are exact dots; lanes 0-7 hold the first block, 8-15 the second, converted and scaled
 * by (d_w * d_x) per lane into 16 f32 lanes; reduced at the end, then the tail blocks. K weight
 * rows by T input rows per pass: each weight load serves T inputs, each input load K rows. */
AVX512VNNI static inline __attribute__((always_inline)) void q8_tile_512(const int8_t *const *w, const uint16_t *const *wd, const int K,
                                                                        const oc_q8_act *x, const int T, float out[4][Q8_CHUNK]) {
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
    for (int t = 0; t < T; t++) out[j][t] = _mm512_reduce_add_ps(acc[j][t]) + q8_blocks(w[j], wd[j], 0, &x[t], 2 * steps);
}

/* AVX-512 VNNI, interleaved rows: per group, the 8 runs of 64 bytes vpdpbusd'd into the same 16
 * lanes, each lane starting from -128 times its block's 32 x bytes (x->ginit): after the 8, lane l
 * holds block l's exact dot, converted and scaled once per group (a third of the instructions per
 * weight and input row of the natural kernel). A group of K rows serves every input of the chunk
 * (up to Q8_CHUNK, T <= 4 at a time) before the next group: the weights come from memory once, at
 * the pace of the arithmetic, instead of in a first pass that stalls on memory and further passes
 * that leave it idle. The f32 accumulators (per row, input and lane) live in L1; each output sums
 * its lanes over the groups in order, then reduce16x4's fixed tree. */
AVX512VNNI static inline __attribute__((always_inline)) void q8_group_512_il(const int8_t *const *w, const int K, const oc_q8_act *x,
                                                                            const int T, int g, const __m512 *dw, __m512 acc[4][Q8_CHUNK], int t0) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  const int base = g * OC_Q8_GROUP;
  __m512i dot[4][4];
  for (int t = 0; t < T; t++) {
    const __m512i init = _mm512_loadu_si512((const void *)(x[t].ginit + 16 * g));
    for (int j = 0; j < K; j++) dot[j][t] = init;
  }
  for (int k = 0; k < 8; k++) {
    __m512i xv[4];
    for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_si512((const void *)(x[t].qi + base + 64 * k));
    for (int j = 0; j < K; j++) {
      _mm_prefetch((const char *)(w[j] + base + 64 * k) + Q8_PREFETCH, _MM_HINT_T0);
      const __m512i wu = _mm512_xor_si512(_mm512_loadu_si512((const void *)(w[j] + base + 64 * k)), flip);
      for (int t = 0; t < T; t++) dot[j][t] = _mm512_dpbusd_epi32(dot[j][t], wu, xv[t]);
    }
  }
  for (int t = 0; t < T; t++) {
    const __m512 dx = _mm512_loadu_ps(x[t].d + 16 * g);
    for (int j = 0; j < K; j++) acc[j][t0 + t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[j][t]), _mm512_mul_ps(dw[j], dx), acc[j][t0 + t]);
  }
}

/* The sums of 16 lanes of 4 vectors at once, each by the same tree as alone (halves of 8 added,
 * then of 4, then lanes 0+2 and 1+3, then those two), so a value never depends on its neighbours. */
AVX512VNNI static inline __attribute__((always_inline)) void reduce16x4(__m512 a, __m512 b, __m512 c, __m512 d, float out[4]) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE)); /* a8 | b8 */
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD)); /* a4 b4 c4 d4 */
  const __m512 p = _mm512_add_ps(q, _mm512_permute_ps(q, 0x4E)); /* lanes 0+2, 1+3 */
  const __m512 r = _mm512_add_ps(p, _mm512_permute_ps(p, 0xB1));
  float v[16];
  _mm512_storeu_ps(v, r);
  for (int i = 0; i < 4; i++) out[i] = v[4 * i];
}

AVX512VNNI static inline __attribute__((always_inline)) void q8_chunk_512_il(const int8_t *const *w, const uint16_t *const *wd, const int K,
                                                                            const oc_q8_act *x, int n, float out[4][Q8_CHUNK]) {
  __m512 acc[4][Q8_CHUNK];
  for (int j = 0; j < K; j++)
    for (int t = 0; t < n; t++) acc[j][t] = _mm512_setzero_ps();
  const int groups = x[0].n / OC_Q8_GROUP;
  for (int g = 0; g < groups; g++) {
    __m512 dw[4];
    for (int j = 0; j < K; j++) dw[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wd[j] + 16 * g)));
    for (int t0 = 0; t0 < n; t0 += 4) {
      switch (n - t0 < 4 ? n - t0 : 4) {
        case 4: q8_group_512_il(w, K, x + t0, 4, g, dw, acc, t0); break;
        case 3: q8_group_512_il(w, K, x + t0, 3, g, dw, acc, t0); break;
        case 2: q8_group_512_il(w, K, x + t0, 2, g, dw, acc, t0); break;
        default: q8_group_512_il(w, K, x + t0, 1, g, dw, acc, t0); break;
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int j = 0; j < K; j++)
    for (int t0 = 0; t0 < n; t0 += 4) {
      float v[4];
      reduce16x4(acc[j][t0], t0 + 1 < n ? acc[j][t0 + 1] : zero, t0 + 2 < n ? acc[j][t0 + 2] : zero, t0 + 3 < n ? acc[j][t0 + 3] : zero, v);
      for (int t = t0; t < n && t < t0 + 4; t++) out[j][t] = v[t - t0];
    }
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
#define Q8_TILE_FOR2(TILE, k)                    \
  switch (T) {                                   \
    case 2: TILE(w, wd, k, x, 2, out); break;    \
    default: TILE(w, wd, k, x, 1, out); break;   \
  }
#define Q8_TILE_AVX2(k) Q8_TILE_FOR2(q8_tile_avx2, k)
#define Q8_TILE_AVX2_IL(k) Q8_TILE_FOR2(q8_tile_avx2_il, k)
typedef void q8_tile_fn(const int8_t *const *w, const uint16_t *const *wd, int K, const oc_q8_act *x, int T, float out[4][Q8_CHUNK]);
AVX512VNNI static void q8_tile_512_k(const int8_t *const *w, const uint16_t *const *wd, int K, const oc_q8_act *x, int T,
                                     float out[4][Q8_CHUNK]) {
  Q8_FOR_K(Q8_TILE_512)
}
/* (n <= Q8_CHUNK) Up to 4 inputs, n is a constant in each instance: the accumulators then stay in
 * registers (the single decode and small batches; in memory they cost ~20 % in cache). */
AVX512VNNI static void q8_chunk_512_il_k(const int8_t *const *w, const uint16_t *const *wd, int K, const oc_q8_act *x, int n,
                                         float out[4][Q8_CHUNK]) {
#define Q8_CHUNK_IL(k)                                    \
  switch (n) {                                            \
    case 4: q8_chunk_512_il(w, wd, k, x, 4, out); break;  \
    case 3: q8_chunk_512_il(w, wd, k, x, 3, out); break;  \
    case 2: q8_chunk_512_il(w, wd, k, x, 2, out); break;  \
    case 1: q8_chunk_512_il(w, wd, k, x, 1, out); break;  \
    default: q8_chunk_512_il(w, wd, k, x, n, out); break; \
  }
  Q8_FOR_K(Q8_CHUNK_IL)
#undef Q8_CHUNK_IL
}
/* (callers pass T <= 2) */
AVX2 static void q8_tile_avx2_k(const int8_t *const *w, const uint16_t *const *wd, int K, const oc_q8_act *x, int T,
                                float out[4][Q8_CHUNK]) {
  Q8_FOR_K(Q8_TILE_AVX2)
}
AVX2 static void q8_tile_avx2_il_k(const int8_t *const *w, const uint16_t *const *wd, int K, const oc_q8_act *x, int T,
                                   float out[4][Q8_CHUNK]) {
  Q8_FOR_K(Q8_TILE_AVX2_IL)
}
#endif

void oc_q8_rows(const int8_t *const *w, const uint16_t *const *wd, int il, int K, int count, const oc_q8_act *x, int n, int in,
                float *const *y, const size_t *ystride) {
  const size_t nb = (size_t)oc_q8_nblocks(in);
  const int vnni = oc_have_avx512_vnni(), avx2 = oc_have_avx2();
  (void)vnni; (void)avx2;
#ifdef OC_X86
  q8_tile_fn *const tile_fn = vnni ? (il ? q8_chunk_512_il_k : q8_tile_512_k) : il ? q8_tile_avx2_il_k : q8_tile_avx2_k;
  const int tile = vnni ? (il ? Q8_CHUNK : 4) : 2; /* the inputs a call takes */
#endif
  for (int r = 0; r < count; r++) {
    const int8_t *p[4];
    const uint16_t *pd[4];
    for (int j = 0; j < K; j++) { p[j] = w[j] + (size_t)r * (size_t)in; pd[j] = wd[j] + (size_t)r * nb; }
#ifdef OC_X86
    if (vnni || avx2) {
      for (int t0 = 0; t0 < n; t0 += tile) {
        const int T = n - t0 < tile ? n - t0 : tile;
        float v[4][Q8_CHUNK];
        tile_fn(p, pd, K, x + t0, T, v);
        for (int j = 0; j < K; j++)
          for (int t = 0; t < T; t++) y[j][(size_t)(t0 + t) * ystride[j] + (size_t)r] = v[j][t];
      }
      continue;
    }
#endif
    for (int t = 0; t < n; t++)
      for (int j = 0; j < K; j++) y[j][(size_t)t * ystride[j] + (size_t)r] = q8_blocks(p[j], pd[j], il, &x[t], 0);
  }
}
