/* Token-level probe training (issue 23): a probe scored at every response token of an exchange,
 * each token's target the exchange's label, the tokens of a response weighted uniformly, by a
 * ramp, or through the running maximum of the score (Constitutional Classifiers' cumulative-max
 * objective: the highest-scoring prefix carries the loss, and its gradient goes to the token that
 * scored it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/probe.h"
#include "train.h"

const char *oc_token_weighting_name(int w) {
  return w == OC_TOKEN_UNIFORM ? "uniform" : w == OC_TOKEN_RAMP ? "ramp" : w == OC_TOKEN_CUMMAX ? "cummax" : "?";
}

int oc_token_weighting_from_name(const char *name) {
  for (int w = OC_TOKEN_UNIFORM; w <= OC_TOKEN_CUMMAX; w++)
    if (name && strcmp(name, oc_token_weighting_name(w)) == 0) return w;
  return -1;
}

/* log(1 + exp(-|z|)) + max(z, 0) - z*y : torch's stable BCE-with-logits */
static double bce(double z, int y) { return (z > 0 ? z : 0) - z * y + log1p(exp(-fabs(z))); }
static double sigmoid(double z) { return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)); }

double oc_token_loss(const float *z, int T, int y, int weighting, float *dz) {
  if (T < 1) return 0;
  double loss = 0;
  if (weighting == OC_TOKEN_CUMMAX) {
    int arg = 0; /* the first token of the running maximum so far */
    for (int t = 0; t < T; t++) dz[t] = 0;
    for (int t = 0; t < T; t++) {
      if (z[t] > z[arg]) arg = t;
      loss += bce(z[arg], y) / T;
      dz[arg] += (float)((sigmoid(z[arg]) - y) / T);
    }
    return loss;
  }
  const double total = weighting == OC_TOKEN_RAMP ? (double)T * (T + 1) / 2 : T;
  for (int t = 0; t < T; t++) {
    const double wt = (weighting == OC_TOKEN_RAMP ? t + 1 : 1) / total;
    loss += wt * bce(z[t], y);
    dz[t] = (float)(wt * (sigmoid(z[t]) - y));
  }
  return loss;
}

/* per-feature mean and 1 / population std over every token of the training sequences, read a
 * sequence at a time; each feature's sums run in double over the rows in idx order, as
 * oc_probe_standardizer sums them over the gathered rows */
static int token_standardizer(oc_token_rows_fn rows, void *ctx, int H, const int64_t *offsets, const int64_t *idx, int n, int64_t n_tok, float *mu,
                              float *inv_sd, oc_error *err) {
  double *s = calloc((size_t)H, sizeof *s), *s2 = calloc((size_t)H, sizeof *s2);
  if (!s || !s2) { free(s); free(s2); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  int rc = -1;
  for (int pass = 0; pass < 2; pass++) { /* the sums, then (s the mean) the squared deviations from it */
    for (int i = 0; i < n; i++) {
      const float *x = rows(ctx, idx[i], err);
      if (!x) goto done;
      const int64_t T = offsets[idx[i] + 1] - offsets[idx[i]];
      for (int64_t t = 0; t < T; t++, x += H)
        for (int j = 0; j < H; j++) {
          if (pass == 0) {
            s[j] += x[j];
          } else {
            const double d = x[j] - s[j];
            s2[j] += d * d;
          }
        }
    }
    if (pass == 0)
      for (int j = 0; j < H; j++) s[j] /= n_tok;
  }
  for (int j = 0; j < H; j++) {
    const double sd = sqrt(s2[j] / n_tok);
    mu[j] = (float)s[j];
    inv_sd[j] = sd > 1e-12 ? (float)(1.0 / sd) : 1.0f;
  }
  rc = 0;
done:
  free(s); free(s2);
  return rc;
}

int oc_probe_train_token_rows(oc_token_rows_fn rows, void *ctx, int H, const int64_t *offsets, const int32_t *y, const int64_t *idx, int n,
                              int weighting, const oc_probe_train_opts *o, oc_probe *out, double *final_loss, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (n < 1) return oc_fail(err, "no training sequences");
  if (o->epochs < 1 || o->batch_size < 1 || !(o->lr > 0)) return oc_fail(err, "epochs, batch_size and lr must be positive");
  if (weighting < OC_TOKEN_UNIFORM || weighting > OC_TOKEN_CUMMAX) return oc_fail(err, "unknown token weighting %d", weighting);
  int64_t n_tok = 0, max_t = 0;
  for (int i = 0; i < n; i++) {
    const int64_t T = offsets[idx[i] + 1] - offsets[idx[i]];
    if (T < 1) return oc_fail(err, "sequence %lld has no tokens", (long long)idx[i]);
    if (y[idx[i]] != 0 && y[idx[i]] != 1) return oc_fail(err, "sequence %lld has label %d (0 or 1 expected)", (long long)idx[i], y[idx[i]]);
    n_tok += T;
    if (T > max_t) max_t = T;
  }
  if (max_t > INT32_MAX) return oc_fail(err, "a sequence of %lld tokens", (long long)max_t);
  const int B = o->batch_size;
  float *w = calloc((size_t)H, sizeof *w), *m = calloc((size_t)H, sizeof *m), *v = calloc((size_t)H, sizeof *v), *g = malloc(sizeof(float) * (size_t)H);
  float *mu = calloc((size_t)H, sizeof *mu), *inv_sd = malloc(sizeof(float) * (size_t)H);
  float *xr = malloc(sizeof(float) * (size_t)H), *z = malloc(sizeof(float) * (size_t)max_t), *dz = malloc(sizeof(float) * (size_t)max_t);
  int64_t *perm = malloc(sizeof(int64_t) * (size_t)n);
  int rc = -1;
  if (!w || !m || !v || !g || !mu || !inv_sd || !xr || !z || !dz || !perm) {
    oc_fail_code(err, OC_ERR_NOMEM, "out of memory (token-level probe of %d features, %lld tokens)", H, (long long)n_tok);
    goto done;
  }
  for (int j = 0; j < H; j++) inv_sd[j] = 1.0f;
  if (o->standardize && token_standardizer(rows, ctx, H, offsets, idx, n, n_tok, mu, inv_sd, err)) goto done;
  oc_rng rng;
  oc_rng_seed(&rng, o->seed);
  float bound = 1.0f / sqrtf((float)H), b;
  for (int j = 0; j < H; j++) w[j] = (float)((2.0 * oc_rng_uniform(&rng) - 1.0) * bound);
  b = (float)((2.0 * oc_rng_uniform(&rng) - 1.0) * bound);
  for (int i = 0; i < n; i++) perm[i] = idx[i];
  oc_probe_adamw adam = {m, v, 0, 0, 0};
  double epoch_loss = 0;
  for (int ep = 0; ep < o->epochs; ep++) {
    oc_shuffle_i64(&rng, perm, (size_t)n);
    epoch_loss = 0;
    for (int s0 = 0; s0 < n; s0 += B) {
      const int nb = n - s0 < B ? n - s0 : B;
      memset(g, 0, sizeof(float) * (size_t)H);
      float gb = 0;
      for (int r = 0; r < nb; r++) { /* each sequence's loss is a mean over its tokens; the batch's the mean of those */
        const float *X = rows(ctx, perm[s0 + r], err); /* its rows [T][H] */
        if (!X) goto done;
        const int T = (int)(offsets[perm[s0 + r] + 1] - offsets[perm[s0 + r]]);
        const oc_probe cur = {H, w, b};
        for (int t = 0; t < T; t++) {
          const float *x = X + (size_t)t * H;
          for (int j = 0; j < H; j++) xr[j] = (x[j] - mu[j]) * inv_sd[j];
          z[t] = oc_probe_logit(&cur, xr);
        }
        epoch_loss += oc_token_loss(z, T, y[perm[s0 + r]], weighting, dz);
        for (int t = 0; t < T; t++) {
          if (dz[t] == 0) continue;
          const float d = dz[t] / (float)nb, *x = X + (size_t)t * H;
          for (int j = 0; j < H; j++) g[j] += d * ((x[j] - mu[j]) * inv_sd[j]);
          gb += d;
        }
      }
      oc_probe_adamw_step(&adam, w, g, H, &b, gb, o->lr, o->weight_decay);
    }
  }
  if (final_loss) *final_loss = epoch_loss / n;
  if (o->standardize) oc_probe_fold_standardizer(w, &b, mu, inv_sd, H);
  out->hidden = H;
  out->w = w;
  out->b = b;
  w = NULL;
  rc = 0;
done:
  free(w); free(m); free(v); free(g); free(mu); free(inv_sd); free(xr); free(z); free(dz); free(perm);
  return rc;
}

/* rows in memory: X [., H] with sequence s at rows offsets[s] .. */
typedef struct { const float *X; const int64_t *offsets; int H; } memory_rows;
static const float *memory_rows_of(void *ctx, int64_t seq, oc_error *err) {
  (void)err;
  const memory_rows *m = ctx;
  return m->X + (size_t)m->offsets[seq] * (size_t)m->H;
}

int oc_probe_train_tokens(const float *X, int H, const int64_t *offsets, const int32_t *y, const int64_t *idx, int n, int weighting,
                          const oc_probe_train_opts *o, oc_probe *out, double *final_loss, oc_error *err) {
  memory_rows src = {X, offsets, H};
  return oc_probe_train_token_rows(memory_rows_of, &src, H, offsets, y, idx, n, weighting, o, out, final_loss, err);
}
