/* q8: opencon's int8 weights, and the int8 products of the decode path.
 *
 * A [rows][cols] matrix is held as int8 values q[rows][cols] (row-major, the original's layout) and
 * one f16 scale per block of OC_Q8_BLOCK consecutive elements of a row, d[rows][ceil(cols/32)]
 * (the last block of a row may be shorter): element (r, c) = d[r][c / 32] * q[r][c]. A block's scale
 * is its largest magnitude / 127 rounded up to the next f16 (so no value exceeds 127 steps), each
 * value then rounded to the nearest step (ties to even). docs/formats.md has the file layout.
 *
 * The decode products quantize their input rows the same way per block (f32 scales, not rounded):
 * a row . x = sum over blocks of (d_w * d_x) * (integer dot of the block), the integer dots exact
 * (int32), the block terms summed in f32. A block of x holding a NaN or an infinity gets a NaN
 * scale, so the product is NaN (f32 would give NaN or an infinity: non-finite either way): a
 * non-finite value is never quantized away. A block whose largest magnitude is below ~4e-37 counts
 * as zero. Weight values of -128 (never written by the quantizer) are read as they are. */
#ifndef OC_Q8_H
#define OC_Q8_H
#include <stddef.h>
#include <stdint.h>

#define OC_Q8_BLOCK 32

static inline int64_t oc_q8_nblocks(int64_t cols) { return (cols + OC_Q8_BLOCK - 1) / OC_Q8_BLOCK; }

/* Quantize a row of n floats into q[n] and d[oc_q8_nblocks(n)]. Returns 0, or -1 with *bad the
 * index of an element that is not finite or whose block's scale would exceed f16 (|x| > 127 * 65504). */
int oc_q8_quantize_row(const float *x, int64_t n, int8_t *q, uint16_t *d, int64_t *bad);
/* Elements [col0, col0 + n) of a row (q, d: the row's values and scales) as f32. */
void oc_q8_dequantize(const int8_t *q, const uint16_t *d, int64_t col0, int64_t n, float *dst);

/* An input row quantized for the products. */
typedef struct oc_q8_act {
  int n;
  int8_t *q;     /* [n] */
  float *d;      /* [nblocks]; NaN for a block holding a non-finite value */
  int32_t *init; /* 512-bit kernel: per 64-element step, 16 lanes: -128 * (sum of the lane's 4 q) */
  float *dl;     /* per step, 16 lanes: the scale of the lane's block */
} oc_q8_act;
/* Bytes of buffer an input row of n elements needs. */
size_t oc_q8_act_bytes(int n);
/* Lay a's arrays out in buf (oc_q8_act_bytes(n) bytes) and quantize x[n] into them. */
void oc_q8_act_quantize(const float *x, int n, void *buf, oc_q8_act *a);

/* K (<= 4) streams of `count` consecutive rows each (row r of stream j: w[j] + r*in, scales
 * wd[j] + r*nblocks(in)) dotted with n quantized input rows x[0..n): y[j][t * ystride[j] + r].
 * Each value is formed the same way whatever K, count, n or the thread count: a row's value
 * does not depend on the rows and inputs it is computed beside. */
void oc_q8_rows(const int8_t *const *w, const uint16_t *const *wd, int K, int count, const oc_q8_act *x, int n, int in,
                float *const *y, const size_t *ystride);
/* The scalar reference of one product (tests). */
float oc_q8_dot_ref(const int8_t *w, const uint16_t *wd, const oc_q8_act *x);

#endif
