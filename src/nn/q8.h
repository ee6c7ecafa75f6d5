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
 * as zero. Weight values of -128 (never written by the quantizer) are read as they are.
 *
 * Interleaved rows (in memory only; files hold the layout above): a row whose length is a multiple
 * of OC_Q8_GROUP may be held by groups of 16 blocks (512 values), each group as 8 runs of 64 bytes,
 * run k holding values 4k..4k+3 of each of the group's 16 blocks in block order (oc_q8_il_pos).
 * The input rows are interleaved the same way, so a 512-bit integer dot of one run adds into one
 * lane per block, and 8 of them into the same lanes leave each lane its block's whole dot: converted
 * and scaled once per 16 blocks instead of once per 2 (the batched decode and prefill pay this per
 * input row). The scales stay in block order. */
#ifndef OC_Q8_H
#define OC_Q8_H
#include <stddef.h>
#include <stdint.h>

#define OC_Q8_BLOCK 32

static inline int64_t oc_q8_nblocks(int64_t cols) { return (cols + OC_Q8_BLOCK - 1) / OC_Q8_BLOCK; }

#define OC_Q8_GROUP 512

/* Whether rows of `cols` values can be interleaved (whole groups). */
static inline int oc_q8_interleavable(int64_t cols) { return cols > 0 && cols % OC_Q8_GROUP == 0; }
/* Where value c of an interleaved row is held. */
static inline int64_t oc_q8_il_pos(int64_t c) {
  const int64_t g = c / OC_Q8_GROUP, b = c % OC_Q8_GROUP / OC_Q8_BLOCK, i = c % OC_Q8_BLOCK;
  return g * OC_Q8_GROUP + i / 4 * 64 + b * 4 + i % 4;
}
/* A row of n values (oc_q8_interleavable(n)) interleaved into dst, and back; src != dst. */
void oc_q8_interleave(const int8_t *src, int64_t n, int8_t *dst);
void oc_q8_deinterleave(const int8_t *src, int64_t n, int8_t *dst);
/* Bytes [offset, offset + nbytes) of a matrix of interleaved rows of `cols` values read back in the
 * natural layout (a range may start and end inside rows). row: scratch of cols bytes. */
void oc_q8_deinterleave_range(const int8_t *rows, int64_t cols, size_t offset, size_t nbytes, int8_t *row, int8_t *dst);

/* Quantize a row of n floats into q[n] and d[oc_q8_nblocks(n)]. Returns 0, or -1 with *bad the
 * index of an element that is not finite or whose block's scale would exceed f16 (|x| > 127 * 65504). */
int oc_q8_quantize_row(const float *x, int64_t n, int8_t *q, uint16_t *d, int64_t *bad);
/* Elements [col0, col0 + n) of a row (q, d: the row's values and scales; il: q interleaved) as f32. */
void oc_q8_dequantize(const int8_t *q, const uint16_t *d, int il, int64_t col0, int64_t n, float *dst);

/* An input row quantized for the products. */
typedef struct oc_q8_act {
  int n;
  int8_t *q;     /* [n] */
  float *d;      /* [nblocks]; NaN for a block holding a non-finite value */
  int32_t *init; /* 512-bit kernel: per 64-element step, 16 lanes: -128 * (sum of the lane's 4 q) */
  float *dl;     /* per step, 16 lanes: the scale of the lane's block */
  int8_t *qi;    /* oc_q8_interleavable(n): q interleaved as interleaved weight rows are; else NULL */
  int32_t *ginit;/* with qi, 512-bit kernel: per group, 16 lanes: -128 * (sum of the lane's block's 32 q) */
} oc_q8_act;
/* Bytes of buffer an input row of n elements needs. */
size_t oc_q8_act_bytes(int n);
/* Lay a's arrays out in buf (oc_q8_act_bytes(n) bytes) and quantize x[n] into them. */
void oc_q8_act_quantize(const float *x, int n, void *buf, oc_q8_act *a);

/* K (<= 4) streams of `count` consecutive rows each (row r of stream j: w[j] + r*in, scales
 * wd[j] + r*nblocks(in); il: the rows interleaved, which needs x[t].qi) dotted with n quantized
 * input rows x[0..n): y[j][t * ystride[j] + r].
 * Each value is formed the same way whatever K, count, n or the thread count: a row's value
 * does not depend on the rows and inputs it is computed beside. */
void oc_q8_rows(const int8_t *const *w, const uint16_t *const *wd, int il, int K, int count, const oc_q8_act *x, int n, int in,
                float *const *y, const size_t *ystride);
/* The scalar reference of one product (tests): w natural (il 0) or interleaved; the same value either way. */
float oc_q8_dot_ref(const int8_t *w, const uint16_t *wd, int il, const oc_q8_act *x);

#endif
