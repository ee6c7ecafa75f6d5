/* Vectorized exp, GELU and SiLU for the ModernBERT and decoder loops (see vmath.c for the accuracy). */
#ifndef OC_VMATH_H
#define OC_VMATH_H
/* x[j] = exp(x[j] - shift) for j < n; returns their sum (eight fixed partial sums, then the tail) */
float oc_vexp_shift_sum(float *x, int n, float shift);
/* Softmax of row[j0..j1) in place (exp shifted by the span's max, then times 1/sum), the rest of
 * row[0..n) set to 0 (the attention rows of a key block); *lse (if not NULL) = max + log(sum). */
void oc_softmax_span(float *row, int n, int j0, int j1, float *lse);
/* x[j] = exp(x[j] - shift) */
void oc_vexp_shift(float *x, int n, float shift);
/* one token of a GeGLU: g[j] = gelu(u[j]) * u[I + j] (exact GELU, x Phi(x)) */
void oc_gelu_glu_row(const float *u, float *g, int I);
/* its backward: du[j] = dg[j] u[I+j] gelu'(u[j]), du[I+j] = dg[j] gelu(u[j]) */
void oc_gelu_glu_backward_row(const float *u, const float *dg, float *du, int I);
/* decoder MLPs: g[j] = act(g[j]) * u[j], act = GELU (tanh approximation) or SiLU */
void oc_act_mul(int gelu_tanh, float *g, const float *u, long n);
/* final-logit softcapping: x[j] = cap * tanh(x[j] / cap) */
void oc_softcap(float *x, long n, float cap);
/* the scalar functions, for tests */
float oc_vexp1(float x);
float oc_verf1(float x);
#endif
