/* Internal compute kernels: f32 accumulation, results independent of thread count. */
#ifndef OC_KERNELS_H
#define OC_KERNELS_H
#include "nn/cpu.h"
#include "opencon/safetensors.h"

/* Y[n][out] = X[n][in] . W^T where W is a [out][in] F32/F16/BF16/Q8 tensor (rows row0..row0+out). */
void oc_matmul(const float *X, int n, int in, const oc_tensor *W, int row0, int out, float *Y);
/* Several matrices sharing the input X (q/k/v, gate/up): Y[m] = X . W[m]^T, one parallel loop. */
void oc_matmul_multi(const float *X, int n, int in, const oc_tensor *const *W, const int *outs, float *const *Y, int count);
/* dst[i] = dot(a, b) over n floats, fixed summation order */
float oc_dot_f32(const float *a, const float *b, int n);
/* y += a * x */
void oc_axpy_f32(float a, const float *x, float *y, int n);
/* Weighted sums of rows for G sets of weights: out[g][0..hd) = sum over p < np of a[g*as + p] *
 * v[p*vs .. p*vs + hd), p in order, each term one fused multiply-add (bit for bit G passes of
 * oc_axpy_f32 over zeroed rows; each row of v is read once for every 4 of the G). */
void oc_weighted_rows(const float *a, size_t as, int G, const float *v, size_t vs, int np, int hd, float *out);
/* Query heads per attention work item. */
#define OC_ATT_GROUP 4
/* Causal attention of n queries over a KV cache; q, out: [n][nh][hd]; K, V: [index][nkv][hd].
 * Query t sits at cache index pos0 + t and sees the indices from lo[t] (its sequence's first),
 * or from pos0 + t - window + 1 if later (window > 0: sliding), through pos0 + t: softmax of
 * scale * q.k, then the weighted sum of the V rows. Query head h reads KV head h / (nh / nkv).
 * scratch: oc_attention_scratch(OpenMP threads, cap) floats, cap >= pos0 + n. From 8 queries on
 * (prefill) the scores and the weighted sums are sgemm calls over blocks of 32 queries; fewer
 * (decode) are taken one by one. Either way the result does not depend on the thread count. */
size_t oc_attention_scratch(int threads, int cap);
void oc_attention(const float *q, int n, int nh, int nkv, int hd, const float *K, const float *V, int pos0, const int *lo,
                  int window, float scale, float *scratch, int cap, float *out);
/* Decode attention of n queries of different sequences, each over its own KV cache: query t
 * sits at index pos[t] of K[t], V[t] ([index][nkv][hd]) and sees the indices from 0, or from
 * pos[t] - window + 1 if later (window > 0), through pos[t]. Work items (query, KV head, group of
 * heads) in one parallel loop; each query's arithmetic is oc_attention's decode path for it
 * alone, so the result depends neither on the thread count nor on the other queries.
 * scratch: oc_attention_batch_scratch(OpenMP threads, cap) floats, cap > every pos[t]. */
size_t oc_attention_batch_scratch(int threads, int cap);
void oc_attention_batch(const float *q, int n, int nh, int nkv, int hd, const float *const *K, const float *const *V, const int *pos,
                        int window, float scale, float *scratch, int cap, float *out);
/* RMSNorm of n rows of `dim`: y = x * (mean(x^2)+eps)^-1/2 * w (w NULL: no scale). In place allowed. */
void oc_rmsnorm(const float *x, const float *w, int n, int dim, float eps, float *y);
#endif
