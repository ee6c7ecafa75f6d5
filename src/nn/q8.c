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

/* (oc_q8_il_pos spelled out: values 4k..4k+3 of block b of a group go to run k, place b; 4 values
 * stay together) */
void oc_q8_interleave(const int8_t *src, int64_t n, int8_t *dst) {
  for (int64_t g = 0; g < n; g += OC_Q8_GROUP)
    for (int b = 0; b < OC_Q8_GROUP / OC_Q8_BLOCK; b++)
      for (int k = 0; k < OC_Q8_BLOCK / 4; k++) memcpy(dst + g + 64 * k + 4 * b, src + g + OC_Q8_BLOCK * b + 4 * k, 4);
}

void oc_q8_deinterleave(const int8_t *src, int64_t n, int8_t *dst) {
  for (int64_t g = 0; g < n; g += OC_Q8_GROUP)
    for (int b = 0; b < OC_Q8_GROUP / OC_Q8_BLOCK; b++)
      for (int k = 0; k < OC_Q8_BLOCK / 4; k++) memcpy(dst + g + OC_Q8_BLOCK * b + 4 * k, src + g + 64 * k + 4 * b, 4);
}

void oc_q8_deinterleave_range(const int8_t *rows, int64_t cols, size_t offset, size_t nbytes, int8_t *row, int8_t *dst) {
  const size_t C = (size_t)cols;
  for (size_t done = 0; done < nbytes;) {
    const size_t r = (offset + done) / C, c0 = (offset + done) % C, n = C - c0 < nbytes - done ? C - c0 : nbytes - done;
    oc_q8_deinterleave(rows + r * C, cols, row);
    memcpy(dst + done, row + c0, n);
    done += n;
  }
}

/* ------------------------------------------------------------------ input rows */
static size_t round64(size_t v) { return (v + 63) & ~(size_t)63; }

size_t oc_q8_act_bytes(int n) {
  const size_t nb = (size_t)oc_q8_nblocks(n), steps = (size_t)n / 64, il = oc_q8_interleavable(n);
  return round64((size_t)n) + round64(nb * sizeof(float)) + 2 * round64(steps * 16 * sizeof(float)) +
         il * (round64((size_t)n) + round64((size_t)n / OC_Q8_GROUP * 16 * sizeof(int32_t))) + 64;
}

/* Input blocks bi0.. of x[0, n) (n: the row's length) into q and d, by the rule of oc_q8_act_quantize. */
static void act_blocks(const float *x, int n, int bi0, int8_t *q, float *d) {
  for (int b0 = bi0 * OC_Q8_BLOCK, bi = bi0; b0 < n; b0 += OC_Q8_BLOCK, bi++) {
    const int len = n - b0 < OC_Q8_BLOCK ? n - b0 : OC_Q8_BLOCK;
    float amax = 0;
    int finite = 1;
    for (int i = 0; i < len; i++) {
      const float v = fabsf(x[b0 + i]);
      finite = finite && isfinite(v);
      if (v > amax) amax = v;
    }
    if (!finite) { /* NaN or infinity: the block's products are NaN */
      d[bi] = NAN;
      memset(q + b0, 0, (size_t)len);
      continue;
    }
    float inv = amax > 0 ? 127.0f / amax : 0.0f;
    if (!(inv < INFINITY)) inv = 0.0f; /* |x| below ~4e-37: the block counts as zero (127 / amax would overflow) */
    d[bi] = inv > 0 ? amax / 127.0f : 0.0f;
    for (int i = 0; i < len; i++) {
      float v = rintf(x[b0 + i] * inv);
      q[b0 + i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
  }
}

#ifdef OC_X86
/* The whole blocks of x[0, n) as act_blocks quantizes them, 8 lanes at a time (the same float
 * operations: |x|'s maximum is exact in any order, x * inv rounded to nearest even as rintf does). */
__attribute__((target("avx2"))) static void act_blocks_avx2(const float *x, int n, int8_t *q, float *d) {
  const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(INFINITY), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7); /* undoes the packs' 128-bit lanes */
  for (int bi = 0; bi < n / OC_Q8_BLOCK; bi++) {
    const float *xb = x + (size_t)bi * OC_Q8_BLOCK;
    __m256 v[4], amax = _mm256_setzero_ps();
    int finite = 1;
    for (int i = 0; i < 4; i++) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      const __m256 a = _mm256_andnot_ps(sign, v[i]);
      finite &= _mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_LT_OQ)) == 0xFF; /* (false for NaN) */
      amax = _mm256_max_ps(amax, a);
    }
    int8_t *qb = q + (size_t)bi * OC_Q8_BLOCK;
    if (!finite) {
      d[bi] = NAN;
      memset(qb, 0, OC_Q8_BLOCK);
      continue;
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
    float inv = m > 0 ? 127.0f / m : 0.0f;
    if (!(inv < INFINITY)) inv = 0.0f;
    d[bi] = inv > 0 ? m / 127.0f : 0.0f;
    const __m256 iv = _mm256_set1_ps(inv);
    __m256i r[4];
    for (int i = 0; i < 4; i++) {
      const __m256 t = _mm256_round_ps(_mm256_mul_ps(v[i], iv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r[i] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));
    }
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256((__m256i *)qb, _mm256_permutevar8x32_epi32(b, order));
  }
}

/* The 512-bit kernels' sums of an input row (the rule in oc_q8_act_quantize below), 16 lanes at a
 * time: vpdpbusd of ones and the bytes sums each lane's 4, exactly. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void act_sums_512(oc_q8_act *a) {
  const __m512i ones = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
  const size_t steps = (size_t)a->n / 64;
  for (size_t s = 0; s < steps; s++) {
    const __m512i sum = _mm512_dpbusd_epi32(zero, ones, _mm512_loadu_si512((const void *)(a->q + 64 * s)));
    _mm512_storeu_si512((void *)(a->init + 16 * s), _mm512_sub_epi32(zero, _mm512_slli_epi32(sum, 7)));
    _mm512_storeu_ps(a->dl + 16 * s, _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a->d[2 * s]), _mm512_set1_ps(a->d[2 * s + 1])));
  }
  if (!a->ginit) return;
  for (int g = 0; g < a->n / OC_Q8_GROUP; g++) {
    __m512i sum = zero;
    for (int k = 0; k < 8; k++) sum = _mm512_dpbusd_epi32(sum, ones, _mm512_loadu_si512((const void *)(a->qi + g * OC_Q8_GROUP + 64 * k)));
    _mm512_storeu_si512((void *)(a->ginit + 16 * g), _mm512_sub_epi32(zero, _mm512_slli_epi32(sum, 7)));
  }
}
#endif

/* Blocks of 32: a block's scale is its largest magnitude / 127 (not rounded to f16), each value
 * x * (127 / largest) rounded to nearest even; a block holding a NaN or an infinity gets a NaN scale
 * and zeros. For the 512-bit kernels also: per 64-value step and lane l, -128 times the sum of its
 * 4 values (init) and the scale of its block (dl); per group of the interleaved row and lane l,
 * -128 times the sum of block l's 32 values (ginit). The SIMD forms give the same bytes. */
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
  int whole = 0; /* blocks done by SIMD */
#ifdef OC_X86
  if (oc_have_avx2()) {
    act_blocks_avx2(x, n, a->q, a->d);
    whole = n / OC_Q8_BLOCK;
  }
#endif
  act_blocks(x, n, whole, a->q, a->d);
  if (a->qi) oc_q8_interleave(a->q, n, a->qi);
#ifdef OC_X86
  if (oc_have_avx512_vnni()) act_sums_512(a);
#endif
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
  /* (the first group sets the accumulators: zeroing them first, a memset of up to 4 KiB per call
   * on the stack for a run-time n, cost the batched decode ~5 %) */
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
    for (int j = 0; j < K; j++) {
      const __m512 v = _mm512_cvtepi32_ps(dot[j][t]), sc = _mm512_mul_ps(dw[j], dx);
      acc[j][t0 + t] = g ? _mm512_fmadd_ps(v, sc, acc[j][t0 + t]) : _mm512_mul_ps(v, sc);
    }
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
  __m512 acc[4][Q8_CHUNK]; /* (set by the first group; interleaved rows have one at least) */
  const int groups = x[0].n / OC_Q8_GROUP;
  int g = 0;
  do {
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
  } while (++g < groups);
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
