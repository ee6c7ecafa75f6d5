/* Linear probe: training (BCE-with-logits + AdamW like the MVP's torch loop), scoring, metrics,
 * safetensors artifacts. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/probe.h"
#include "opencon/safetensors.h"
#include "train.h"

int oc_torch_pt_load_probe(const char *path, oc_probe *p, oc_error *err); /* torch_pt.c */

void oc_probe_train_defaults(oc_probe_train_opts *o) {
  o->epochs = 100;
  o->lr = 1e-3;
  o->weight_decay = 0.01;
  o->batch_size = 16;
  o->seed = 0;
  o->standardize = 0;
  o->init_w = NULL;
  o->init_b = 0;
}

float oc_sigmoid(float x) { return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x)); }

/* fixed summation order: 8 partial sums, then a fixed tree */
static float dot(const float *a, const float *b, int n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) s[k] += a[i + k] * b[i + k];
  for (; i < n; i++) s[i & 7] += a[i] * b[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

float oc_probe_logit(const oc_probe *p, const float *h) { return dot(p->w, h, p->hidden) + p->b; }

void oc_probe_free(oc_probe *p) {
  free(p->w);
  memset(p, 0, sizeof *p);
}

/* log(1 + exp(-|z|)) + max(z, 0) - z*y : torch's stable BCE-with-logits */
static double bce_logits(float z, int y) {
  double zd = z;
  return (zd > 0 ? zd : 0) - zd * y + log1p(exp(-fabs(zd)));
}

/* one step of torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, decoupled decay) on the weights w[0..H)
 * with gradient g and on the bias with gradient gb; st->step counts the steps */
void oc_probe_adamw_step(oc_probe_adamw *st, float *w, const float *g, int H, float *b, float gb, double lr, double weight_decay) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  st->step++;
  double bc1 = 1.0 - pow(b1, (double)st->step), bc2 = 1.0 - pow(b2, (double)st->step);
  double step_size = lr / bc1, sq_bc2 = sqrt(bc2);
  float decay = (float)(1.0 - lr * weight_decay);
  float *m = st->m, *v = st->v;
#pragma omp parallel for schedule(static)
  for (int j = 0; j < H; j++) {
    w[j] *= decay;
    m[j] = (float)b1 * m[j] + (float)(1 - b1) * g[j];
    v[j] = (float)b2 * v[j] + (float)(1 - b2) * g[j] * g[j];
    w[j] -= (float)step_size * m[j] / (sqrtf(v[j]) / (float)sq_bc2 + (float)eps);
  }
  *b *= decay;
  st->mb = (float)b1 * st->mb + (float)(1 - b1) * gb;
  st->vb = (float)b2 * st->vb + (float)(1 - b2) * gb * gb;
  *b -= (float)step_size * st->mb / (sqrtf(st->vb) / (float)sq_bc2 + (float)eps);
}

void oc_probe_standardizer(const float *X, int H, const int64_t *idx, int64_t n, float *mu, float *inv_sd) {
#pragma omp parallel for schedule(static)
  for (int j = 0; j < H; j++) { /* mean / population std over the rows, in double */
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += X[(size_t)idx[i] * H + j];
    double mean = s / n;
    for (int64_t i = 0; i < n; i++) { double d = X[(size_t)idx[i] * H + j] - mean; s2 += d * d; }
    double sd = sqrt(s2 / n);
    mu[j] = (float)mean;
    inv_sd[j] = sd > 1e-12 ? (float)(1.0 / sd) : 1.0f;
  }
}

void oc_probe_fold_standardizer(float *w, float *b, const float *mu, const float *inv_sd, int H) {
  double shift = 0;
  for (int j = 0; j < H; j++) { w[j] *= inv_sd[j]; shift += (double)w[j] * mu[j]; }
  *b = (float)(*b - shift);
}

int oc_probe_train(const float *X, int H, const int32_t *y, const int64_t *idx, int n, const oc_probe_train_opts *o,
                   oc_probe *out, double *final_loss, oc_progress *prog, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (n < 1) return oc_fail(err, "no training examples");
  if (o->epochs < 1 || o->batch_size < 1 || !(o->lr > 0)) return oc_fail(err, "epochs, batch_size and lr must be positive");
  int B = o->batch_size;
  float *w = calloc((size_t)H, sizeof *w), *m = calloc((size_t)H, sizeof *m), *v = calloc((size_t)H, sizeof *v), *g = malloc(sizeof(float) * (size_t)H);
  float *mu = calloc((size_t)H, sizeof *mu), *inv_sd = malloc(sizeof(float) * (size_t)H);
  float *xb = malloc(sizeof(float) * (size_t)B * (size_t)H), *dz = malloc(sizeof(float) * (size_t)B);
  double *lossr = malloc(sizeof(double) * (size_t)B);
  int64_t *perm = malloc(sizeof *perm * (size_t)n);
  if (!w || !m || !v || !g || !mu || !inv_sd || !xb || !dz || !perm || !lossr) {
    free(w); free(m); free(v); free(g); free(mu); free(inv_sd); free(xb); free(dz); free(perm); free(lossr);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory (probe of %d features)", H);
  }
  for (int j = 0; j < H; j++) inv_sd[j] = 1.0f;
  if (o->standardize) oc_probe_standardizer(X, H, idx, n, mu, inv_sd);
  /* torch.nn.Linear init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias too */
  oc_rng rng;
  oc_rng_seed(&rng, o->seed);
  float bound = 1.0f / sqrtf((float)H), b = 0;
  oc_probe_adamw adam = {m, v, 0, 0, 0};
  if (o->init_w) {
    memcpy(w, o->init_w, sizeof(float) * (size_t)H);
    b = o->init_b;
  } else {
    for (int j = 0; j < H; j++) w[j] = (float)((2.0 * oc_rng_uniform(&rng) - 1.0) * bound);
    b = (float)((2.0 * oc_rng_uniform(&rng) - 1.0) * bound);
  }
  for (int i = 0; i < n; i++) perm[i] = idx[i];
  int64_t steps_per_epoch = (n + B - 1) / B;
  double epoch_loss = 0;
  for (int ep = 0; ep < o->epochs; ep++) {
    oc_shuffle_i64(&rng, perm, (size_t)n);
    epoch_loss = 0;
    for (int s0 = 0; s0 < n; s0 += B) {
      int nb = n - s0 < B ? n - s0 : B;
      /* gather (standardized) rows; logits and d loss / d logit per row */
#pragma omp parallel for schedule(static)
      for (int r = 0; r < nb; r++) {
        const float *x = X + (size_t)perm[s0 + r] * H;
        float *xr = xb + (size_t)r * H;
        for (int j = 0; j < H; j++) xr[j] = (x[j] - mu[j]) * inv_sd[j];
        float z = dot(w, xr, H) + b;
        int yr = y[perm[s0 + r]];
        dz[r] = (oc_sigmoid(z) - (float)yr) / (float)nb;
        lossr[r] = bce_logits(z, yr);
      }
      for (int r = 0; r < nb; r++) epoch_loss += lossr[r];
#pragma omp parallel for schedule(static)
      for (int j = 0; j < H; j++) {
        float gj = 0;
        for (int r = 0; r < nb; r++) gj += dz[r] * xb[(size_t)r * H + j];
        g[j] = gj;
      }
      float gb = 0;
      for (int r = 0; r < nb; r++) gb += dz[r];
      oc_probe_adamw_step(&adam, w, g, H, &b, gb, o->lr, o->weight_decay);
    }
    if (prog) {
      oc_progress_set(prog, "loss", epoch_loss / n);
      oc_progress_update(prog, prog->base + (int64_t)(ep + 1) * steps_per_epoch);
    }
  }
  if (final_loss) *final_loss = epoch_loss / n;
  if (o->standardize) oc_probe_fold_standardizer(w, &b, mu, inv_sd, H);
  free(m); free(v); free(g); free(mu); free(inv_sd); free(xb); free(dz); free(perm); free(lossr);
  out->hidden = H;
  out->w = w;
  out->b = b;
  return 0;
}

int oc_probe_save(const oc_probe *p, const char *path, oc_error *err) {
  oc_st_writer *w = oc_st_writer_new();
  int64_t ws[2] = {1, p->hidden}, bs[1] = {1};
  int rc = oc_st_writer_add(w, "head.weight", OC_DT_F32, 2, ws, p->w, err) ||
           oc_st_writer_add(w, "head.bias", OC_DT_F32, 1, bs, &p->b, err) ||
           oc_st_writer_set_metadata(w, "format", "pt", err) || oc_st_writer_write(w, path, err);
  oc_st_writer_free(w);
  return rc ? -1 : 0;
}

static int probe_from_st(const char *path, oc_probe *p, oc_error *err) {
  oc_st_file *f;
  if (oc_st_open(path, &f, err)) return -1;
  const oc_tensor *w = oc_st_get(f, "head.weight"), *b = oc_st_get(f, "head.bias");
  int rc = -1;
  if (!w || !b) { oc_fail(err, "%s: tensor \"%s\" not found", path, !w ? "head.weight" : "head.bias"); goto done; }
  if (!(w->ndim == 2 && w->shape[0] == 1 && w->shape[1] >= 1) && !(w->ndim == 1 && w->shape[0] >= 1)) {
    oc_fail(err, "%s: tensor \"head.weight\" must have shape [1, hidden]", path);
    goto done;
  }
  if (b->numel != 1) { oc_fail(err, "%s: tensor \"head.bias\" must have shape [1]", path); goto done; }
  if (w->numel > OC_PROBE_MAX_HIDDEN) { oc_fail(err, "%s: tensor \"head.weight\" has %lld features (at most %d)", path, (long long)w->numel, OC_PROBE_MAX_HIDDEN); goto done; }
  p->hidden = (int)w->numel;
  p->w = malloc(sizeof(float) * (size_t)p->hidden);
  if (!p->w) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (oc_to_f32(w->dtype, w->data, p->w, (size_t)p->hidden) || oc_to_f32(b->dtype, b->data, &p->b, 1)) {
    oc_probe_free(p);
    oc_fail(err, "%s: probe tensors must be F32, F16 or BF16", path);
    goto done;
  }
  rc = 0;
done:
  oc_st_close(f);
  return rc;
}

int oc_probe_check(const oc_probe *p, const char *where, oc_error *err) {
  if (p->hidden < 1 || p->hidden > OC_PROBE_MAX_HIDDEN || !p->w) return oc_fail(err, "%s: %d features (1..%d)", where, p->hidden, OC_PROBE_MAX_HIDDEN);
  size_t i = oc_find_nonfinite(p->w, (size_t)p->hidden);
  if (i < (size_t)p->hidden) return oc_fail(err, "%s: tensor \"head.weight\" has a non-finite value (%g) at element %zu", where, (double)p->w[i], i);
  if (!isfinite(p->b)) return oc_fail(err, "%s: tensor \"head.bias\" is not finite (%g)", where, (double)p->b);
  return 0;
}

/* What a probe file is, from its first 9 bytes: safetensors (a little-endian header length up to
 * 100 MiB, then '{'), else a zip ("PK": torch.save since PyTorch 1.6, or a damaged one), else a
 * bare pickle (the protocol marker 0x80, then a protocol 2 to 5: torch.save before 1.6, or with
 * _use_new_zipfile_serialization=False). Anything else is left to the safetensors reader. */
typedef enum { PROBE_FILE_SAFETENSORS, PROBE_FILE_ZIP, PROBE_FILE_PICKLE } probe_file_kind;
static probe_file_kind probe_file_kind_of(const unsigned char *b, size_t got) {
  uint64_t hlen = 0;
  for (size_t i = 0; i < 8 && i < got; i++) hlen |= (uint64_t)b[i] << (8 * i);
  if (got == 9 && b[8] == '{' && hlen <= (100u << 20)) return PROBE_FILE_SAFETENSORS;
  if (got >= 2 && b[0] == 'P' && b[1] == 'K') return PROBE_FILE_ZIP;
  if (got >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5) return PROBE_FILE_PICKLE;
  return PROBE_FILE_SAFETENSORS;
}

int oc_probe_load(const char *path, oc_probe *p, oc_error *err) {
  memset(p, 0, sizeof *p);
  FILE *f = oc_fopen_regular(path, err);
  if (!f) return oc_wrap(err, "probe");
  unsigned char magic[9] = {0};
  size_t got = fread(magic, 1, sizeof magic, f);
  fclose(f);
  int rc;
  switch (probe_file_kind_of(magic, got)) {
    case PROBE_FILE_ZIP: rc = oc_torch_pt_load_probe(path, p, err); break;
    case PROBE_FILE_PICKLE:
      return oc_fail_code(err, OC_ERR_UNSUPPORTED,
                          "%s: a legacy torch.save file (a bare pickle, protocol %d: written by PyTorch before 1.6 or with "
                          "_use_new_zipfile_serialization=False), which is not supported: re-save it with torch >= 1.6 "
                          "(torch.save(torch.load(f), f)) or as safetensors",
                          path, magic[1]);
    default: rc = probe_from_st(path, p, err);
  }
  if (rc == 0 && oc_probe_check(p, path, err)) { oc_probe_free(p); return -1; }
  return rc;
}

