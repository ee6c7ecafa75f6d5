/* The pieces of probe training shared by the final-token trainer (probe.c) and the token-level one
 * (token.c): torch.optim.AdamW steps and feature standardization folded back into the weights. */
#ifndef OPENCON_PROBE_TRAIN_H
#define OPENCON_PROBE_TRAIN_H
#include <stdint.h>

/* AdamW state: first and second moments of the weights (the caller's, zeroed) and of the bias */
typedef struct oc_probe_adamw {
  float *m, *v;
  float mb, vb;
  int64_t step;
} oc_probe_adamw;
/* one step of torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, decoupled decay) on w[0..H) with
 * gradient g and on the bias *b with gradient gb */
void oc_probe_adamw_step(oc_probe_adamw *st, float *w, const float *g, int H, float *b, float gb, double lr, double weight_decay);
/* per-feature mean and 1 / population std (1 where the std is ~0) over rows idx[0..n) of X [., H] */
void oc_probe_standardizer(const float *X, int H, const int64_t *idx, int64_t n, float *mu, float *inv_sd);
/* w'.((x - mu) * s) + b == (w' * s).x + (b - sum w' * s * mu): weights trained on standardized
 * features made to read raw ones */
void oc_probe_fold_standardizer(float *w, float *b, const float *mu, const float *inv_sd, int H);
#endif
