/* The pieces of probe training shared by the final-token trainer (probe.c) and the token-level one
 * (token.c): torch.optim.AdamW steps and feature standardization folded back into the weights. */
#ifndef OPENCON_PROBE_TRAIN_H
#define OPENCON_PROBE_TRAIN_H
#include <stdint.h>

#include "opencon/probe.h"

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
/* MEAN over layers: layer l's probe `one` as block l of the combined weights w (its weights / nl),
 * its bias added to *bias (the caller divides by nl) */
void oc_probe_mean_put(float *w, int l, int nl, const oc_probe *one, double *bias);
/* The token rows [T][H] (F32) of sequence seq, T = offsets[seq + 1] - offsets[seq], valid until the
 * next call; NULL with err set when they cannot be read. ctx is the source's (memory, a journal). */
typedef const float *(*oc_token_rows_fn)(void *ctx, int64_t seq, oc_error *err);
/* oc_probe_train_tokens over rows that come a sequence at a time from rows(ctx, .): the trainer
 * holds one sequence's rows at a time (standardization reads the training sequences twice, in
 * idx order, and sums each feature in double in the order oc_probe_standardizer would) */
int oc_probe_train_token_rows(oc_token_rows_fn rows, void *ctx, int H, const int64_t *offsets, const int32_t *y, const int64_t *idx, int n,
                              int weighting, const oc_probe_train_opts *o, oc_probe *out, double *final_loss, oc_error *err);
#endif
