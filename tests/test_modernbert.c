/* ModernBERT classifier against the PyTorch reference fixture (shared/reference/modernbert_ref.py):
 * forward of the padded batch (run unpadded), loss, every gradient, two Trainer updates (clipping,
 * AdamW with decoupled decay on the HF decay subset, linear LR), thread-count independence, and a
 * finite-difference check of a few gradients as an independent second test; and the vectorized
 * exp / erf / GeGLU rows (nn/vmath.c) against libm in double. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/modernbert.h"
#include "opencon/safetensors.h"
#include "nn/vmath.h"

static const oc_tensor *ref_t(const oc_st_file *f, const char *name) {
  const oc_tensor *t = oc_st_get(f, name);
  REQUIRE(t, "reference tensor %s missing", name);
  return t;
}

/* max over elements of |got - ref| / (atol + rtol |ref|) */
static double ratio(const float *got, const float *ref, size_t n, double atol, double rtol) {
  double w = 0;
  for (size_t i = 0; i < n; i++) {
    double r = fabs((double)got[i] - ref[i]) / (atol + rtol * fabs(ref[i]));
    if (!(r <= w)) w = r; /* NaN propagates */
  }
  return w;
}

typedef struct { int32_t *ids, *labels; int lens[16]; int B, T; } batch;

static batch load_batch(const oc_st_file *ref) {
  batch b;
  const oc_tensor *ti = ref_t(ref, "input_ids"), *tm = ref_t(ref, "attention_mask"), *tl = ref_t(ref, "labels");
  b.B = (int)ti->shape[0];
  b.T = (int)ti->shape[1];
  const int32_t *ids = ti->data, *mask = tm->data;
  b.ids = malloc(sizeof(int32_t) * (size_t)b.B * b.T);
  b.labels = malloc(sizeof(int32_t) * (size_t)b.B);
  int k = 0;
  for (int r = 0; r < b.B; r++) {
    b.lens[r] = 0;
    for (int t = 0; t < b.T; t++) if (mask[r * b.T + t]) { b.ids[k++] = ids[r * b.T + t]; b.lens[r]++; }
    b.labels[r] = ((const int32_t *)tl->data)[r];
  }
  return b;
}

/* compare [B, T, H] reference rows where attention_mask == 1 with our concatenated rows */
static double ratio_rows(const float *got, const float *ref, const batch *b, int H, double atol, double rtol) {
  double w = 0;
  int k = 0;
  for (int r = 0; r < b->B; r++)
    for (int t = 0; t < b->lens[r]; t++, k++) {
      double x = ratio(got + (size_t)k * H, ref + ((size_t)r * b->T + t) * H, (size_t)H, atol, rtol);
      if (!(x <= w)) w = x;
    }
  return w;
}

static void check_grads(oc_mbert *m, const oc_st_file *ref, const char *dir) {
  int n = oc_mbert_n_params(m), checked = 0;
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < n; i++) {
    int64_t numel;
    if (!oc_mbert_param(m, i, &numel, NULL, NULL)) continue;
    char name[160];
    snprintf(name, sizeof name, "grad.%s", oc_mbert_param_name(m, i));
    const oc_tensor *g = oc_st_get(ref, name);
    if (!g) continue; /* parameters absent from this model (attn_norm of layer 0) */
    REQUIRE(g->numel == numel, "%s: %lld elements vs %lld", name, (long long)g->numel, (long long)numel);
    const float *rg = g->data;
    double mx = 0;
    for (int64_t k = 0; k < numel; k++) mx = fmax(mx, fabs(rg[k]));
    double r = ratio(oc_mbert_grad(m, i), rg, (size_t)numel, 1e-4 * mx + 1e-30, 1e-3);
    if (r > worst) { worst = r; worst_name = oc_mbert_param_name(m, i); }
    checked++;
  }
  CHECK(worst <= 1 && checked >= 29, "%s: %d gradients, worst ratio %.3g (%s)", dir, checked, worst, worst_name);
}

static void run(const char *dir, int full) {
  oc_error err;
  oc_mbert *m;
  REQUIRE(oc_mbert_load(dir, &m, &err) == 0, "%s", err.msg);
  char rp[512];
  snprintf(rp, sizeof rp, "%s/reference.safetensors", dir);
  oc_st_file *ref;
  REQUIRE(oc_st_open(rp, &ref, &err) == 0, "%s", err.msg);
  const oc_mbert_config *c = oc_mbert_cfg(m);
  const int H = c->hidden, C = c->n_labels;
  batch b = load_batch(ref);
  oc_mbert_batch mb = {b.ids, b.lens, b.B};
  float logits[64], logits2[64], loss;
  REQUIRE(oc_mbert_forward(m, &mb, logits, &err) == 0, "%s", err.msg);
  const float *last, *pooled, *ho;
  oc_mbert_outputs(m, &last, &pooled, &ho);
  CHECK(ratio_rows(last, ref_t(ref, "last_hidden_state")->data, &b, H, 1e-4, 1e-4) <= 1, "%s last_hidden_state", dir);
  CHECK(ratio(pooled, ref_t(ref, "pooled_output")->data, (size_t)b.B * H, 1e-4, 1e-4) <= 1, "%s pooled", dir);
  CHECK(ratio(ho, ref_t(ref, "head_output")->data, (size_t)b.B * H, 1e-4, 1e-4) <= 1, "%s head_output", dir);
  double rl = ratio(logits, ref_t(ref, "logits")->data, (size_t)b.B * C, 1e-4, 1e-4);
  CHECK(rl <= 1, "%s logits ratio %.3g (%g %g %g)", dir, rl, logits[0], logits[1], logits[2]);

  /* loss and gradients, 1 and 2 threads bit-identical */
  omp_set_num_threads(1);
  REQUIRE(oc_mbert_loss_backward(m, &mb, b.labels, &loss, logits2, &err) == 0, "%s", err.msg);
  size_t total = oc_mbert_total_params(m);
  float *g1 = malloc(sizeof(float) * total);
  memcpy(g1, oc_mbert_grad(m, 0), sizeof(float) * total);
  omp_set_num_threads(2);
  REQUIRE(oc_mbert_loss_backward(m, &mb, b.labels, &loss, logits2, &err) == 0, "%s", err.msg);
  CHECK(memcmp(g1, oc_mbert_grad(m, 0), sizeof(float) * total) == 0, "%s: gradients bit-identical with 1 and 2 threads", dir);
  free(g1);
  float rloss = *(const float *)ref_t(ref, "loss")->data;
  CHECK(fabs(loss - rloss) <= 1e-5 + 1e-5 * fabs(rloss), "%s loss %.8g vs %.8g", dir, loss, rloss);
  CHECK(memcmp(logits, logits2, sizeof(float) * (size_t)b.B * C) == 0, "%s: training forward == inference forward", dir);
  check_grads(m, ref, dir);

  /* two Trainer updates on the same batch */
  oc_adamw_state st;
  REQUIRE(oc_mbert_adamw_init(m, &st, &err) == 0, "%s", err.msg);
  float *p0 = malloc(sizeof(float) * total), *g0 = malloc(sizeof(float) * total);
  memcpy(p0, oc_mbert_param(m, 0, NULL, NULL, NULL), sizeof(float) * total);
  memcpy(g0, oc_mbert_grad(m, 0), sizeof(float) * total);
  const float *rn = ref_t(ref, "grad_norm")->data, *rc = ref_t(ref, "clip_coef")->data, *rlr = ref_t(ref, "lr")->data;
  double lrs[2] = {2e-5 * 10 / 10.0, 2e-5 * 9 / 10.0}; /* linear decay over N = 10 steps, no warmup */
  CHECK(fabs(lrs[0] - rlr[0]) <= 1e-12 && fabs(lrs[1] - rlr[1]) <= 1e-12, "lr schedule");
  double coef0 = 1;
  for (int k = 0; k < 2; k++) {
    if (k == 1) {
      REQUIRE(oc_mbert_loss_backward(m, &mb, b.labels, &loss, NULL, &err) == 0, "%s", err.msg);
      float rl1 = *(const float *)ref_t(ref, "loss_after_1")->data;
      CHECK(fabs(loss - rl1) <= 3e-5, "%s loss after 1 update %.8g vs %.8g", dir, loss, rl1);
    }
    double gn, cc;
    oc_mbert_clip_and_step(m, &st, lrs[k], 0.01, 1.0, &gn, &cc);
    if (k == 0) coef0 = cc;
    CHECK(fabs(gn - rn[k]) <= 1e-5 + 1e-4 * rn[k] && fabs(cc - rc[k]) <= 1e-7 + 1e-4 * rc[k], "%s update %d: grad_norm %.7g vs %.7g, coef %.7g vs %.7g",
          dir, k + 1, gn, rn[k], cc, rc[k]);
  }
  if (full) {
    int bad = 0, sig_bad = 0, n = oc_mbert_n_params(m);
    for (int i = 0; i < n; i++) {
      int64_t numel;
      float *p = oc_mbert_param(m, i, &numel, NULL, NULL);
      if (!p) continue;
      char name[160];
      snprintf(name, sizeof name, "param_after_2.%s", oc_mbert_param_name(m, i));
      const oc_tensor *t = oc_st_get(ref, name);
      if (!t) continue;
      const float *r = t->data;
      size_t o = (size_t)(p - oc_mbert_param(m, 0, NULL, NULL, NULL));
      double num = 0, den = 0;
      for (int64_t k = 0; k < numel; k++) {
        double s = fabs(g0[o + k]) * coef0, tol = (s > 0 && s < 1e-6) ? 5e-6 : 1.5e-7 + 4e-7 * fabs(r[k]);
        if (fabs(p[k] - r[k]) > tol) bad++;
        num += ((double)p[k] - r[k]) * p0[o + k];
        den += (double)p0[o + k] * p0[o + k];
      }
      if (den > 0 && fabs(num / den) >= 1e-7) { sig_bad++; fprintf(stderr, "decay signature %s: %.3g\n", name, num / den); }
    }
    CHECK(bad == 0, "%s: %d parameter elements off after 2 updates", dir, bad);
    CHECK(sig_bad == 0, "%s: decay signature off in %d tensors", dir, sig_bad);
  }
  free(p0); free(g0);
  oc_adamw_free(&st);

  /* finite differences (double-sided, f32 forward) on a few elements of different tensors */
  if (full) {
    oc_mbert_free(m);
    REQUIRE(oc_mbert_load(dir, &m, &err) == 0, "%s", err.msg);
    REQUIRE(oc_mbert_loss_backward(m, &mb, b.labels, &loss, NULL, &err) == 0, "%s", err.msg);
    const char *names[] = {"model.layers.1.attn.Wqkv.weight", "model.layers.3.mlp.Wi.weight", "head.dense.weight", "model.embeddings.norm.weight",
                           "model.layers.2.attn_norm.weight", "classifier.bias"};
    int good = 0, tried = 0;
    for (size_t q = 0; q < sizeof names / sizeof *names; q++) {
      int i = 0;
      while (strcmp(oc_mbert_param_name(m, i), names[q])) i++;
      int64_t numel;
      float *p = oc_mbert_param(m, i, &numel, NULL, NULL);
      /* the element with the largest gradient: a well-conditioned difference */
      const float *g = oc_mbert_grad(m, i);
      int64_t best = 0;
      for (int64_t k = 1; k < numel; k++) if (fabs(g[k]) > fabs(g[best])) best = k;
      double analytic = g[best];
      float keep = p[best], h = 1e-2f * fmaxf(fabsf(keep), 0.1f);
      float lp, lm;
      float *gcopy = malloc(sizeof(float) * total);
      memcpy(gcopy, oc_mbert_grad(m, 0), sizeof(float) * total);
      p[best] = keep + h;
      REQUIRE(oc_mbert_loss_backward(m, &mb, b.labels, &lp, NULL, &err) == 0, "%s", err.msg);
      p[best] = keep - h;
      REQUIRE(oc_mbert_loss_backward(m, &mb, b.labels, &lm, NULL, &err) == 0, "%s", err.msg);
      p[best] = keep;
      memcpy(oc_mbert_grad(m, 0), gcopy, sizeof(float) * total);
      free(gcopy);
      double fd = ((double)lp - lm) / (2.0 * h);
      tried++;
      if (fabs(fd - analytic) <= 0.02 * fabs(analytic) + 1e-4) good++;
      else fprintf(stderr, "FD %s[%lld]: analytic %.6g, finite difference %.6g\n", names[q], (long long)best, analytic, fd);
    }
    CHECK(good == tried, "%s: finite differences agree with the backward (%d/%d)", dir, good, tried);
  }
  free(b.ids); free(b.labels);
  oc_st_close(ref);
  oc_mbert_free(m);
}

/* sequences longer than the 64-query blocks of the sliding layers (make_long.py) */
static void run_long(const char *dir, const char *ref_path) {
  oc_error err;
  oc_mbert *m;
  REQUIRE(oc_mbert_load(dir, &m, &err) == 0, "%s", err.msg);
  oc_st_file *ref;
  REQUIRE(oc_st_open(ref_path, &ref, &err) == 0, "%s", err.msg);
  batch b = load_batch(ref);
  oc_mbert_batch mb = {b.ids, b.lens, b.B};
  float logits[64], loss;
  REQUIRE(oc_mbert_loss_backward(m, &mb, b.labels, &loss, logits, &err) == 0, "%s", err.msg);
  CHECK(b.lens[0] == 150 && ratio(logits, ref_t(ref, "logits")->data, (size_t)b.B * 3, 1e-4, 1e-4) <= 1, "long: logits");
  float rl = *(const float *)ref_t(ref, "loss")->data;
  CHECK(fabs(loss - rl) <= 1e-5 + 1e-5 * fabs(rl), "long: loss %.8g vs %.8g", loss, rl);
  check_grads(m, ref, ref_path);
  free(b.ids); free(b.labels);
  oc_st_close(ref);
  oc_mbert_free(m);
}

/* a base (masked-LM style) checkpoint: no classifier.*, no id2label, a decoder.bias -> a fresh head
 * like transformers when fine-tuning starts; refused as a classifier to score */
static void base_checkpoint(const char *dir) {
  char tmp[] = "/tmp/oc_mbert_base_XXXXXX", p[600], q[600];
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  oc_error err;
  oc_st_file *f;
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  REQUIRE(oc_st_open(p, &f, &err) == 0, "%s", err.msg);
  oc_st_writer *w = oc_st_writer_new();
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    if (strncmp(t->name, "classifier.", 11) == 0) continue;
    REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err) == 0, "%s", err.msg);
  }
  static float decoder_bias[512];
  const int64_t vshape[1] = {512};
  REQUIRE(oc_st_writer_add(w, "decoder.bias", OC_DT_F32, 1, vshape, decoder_bias, &err) == 0, "%s", err.msg);
  snprintf(q, sizeof q, "%s/model.safetensors", tmp);
  REQUIRE(oc_st_writer_write(w, q, &err) == 0, "%s", err.msg);
  oc_st_writer_free(w);
  oc_st_close(f);
  char *text;
  snprintf(p, sizeof p, "%s/config.json", dir);
  REQUIRE(oc_read_file(p, &text, NULL, &err) == 0, "%s", err.msg);
  char *id2 = strstr(text, "\"id2label\"");
  REQUIRE(id2, "id2label in the fixture config");
  memcpy(id2, "\"xx2label\"", 10); /* hide it (the JSON stays valid) */
  char *l2 = strstr(text, "\"label2id\"");
  if (l2) memcpy(l2, "\"label2xx\"", 10);
  snprintf(q, sizeof q, "%s/config.json", tmp);
  REQUIRE(oc_write_file_atomic(q, text, strlen(text), &err) == 0, "%s", err.msg);
  free(text);
  const char *names[3] = {"safe_compliance", "safe_refusal", "unsafe_compliance"};
  oc_mbert *m, *ref;
  CHECK(oc_mbert_load(tmp, &m, &err) != 0 && strstr(err.msg, "tensor \"classifier.weight\" missing"), "a base checkpoint is no classifier to score: %s",
        err.msg);
  REQUIRE(oc_mbert_load_for_training(tmp, 3, names, 5, &m, &err) == 0, "%s", err.msg);
  REQUIRE(oc_mbert_load(dir, &ref, &err) == 0, "%s", err.msg);
  int wi = -1, bi = -1, di = -1;
  for (int i = 0; i < oc_mbert_n_params(m); i++) {
    if (!strcmp(oc_mbert_param_name(m, i), "classifier.weight")) wi = i;
    if (!strcmp(oc_mbert_param_name(m, i), "classifier.bias")) bi = i;
    if (!strcmp(oc_mbert_param_name(m, i), "head.dense.weight")) di = i;
  }
  int64_t nw, nb, nd;
  const float *cw = oc_mbert_param(m, wi, &nw, NULL, NULL), *cb = oc_mbert_param(m, bi, &nb, NULL, NULL);
  double std = 1.0 / sqrt(64.0), ss = 0;
  int within = 1, zero = 1;
  for (int64_t k = 0; k < nw; k++) { within &= fabs(cw[k]) <= 2 * std; ss += (double)cw[k] * cw[k]; }
  for (int64_t k = 0; k < nb; k++) zero &= cb[k] == 0;
  /* a normal truncated at 2 std has std 0.880 * sigma */
  double sd = sqrt(ss / nw);
  CHECK(nw == 3 * 64 && within && zero && sd > 0.75 * 0.88 * std && sd < 1.25 * 0.88 * std, "fresh head: |w| <= 2 std, std %.4f (expect ~%.4f), bias 0",
        sd, 0.88 * std);
  const float *dm = oc_mbert_param(m, di, &nd, NULL, NULL), *dr = oc_mbert_param(ref, di, NULL, NULL, NULL);
  CHECK(memcmp(dm, dr, sizeof(float) * (size_t)nd) == 0,
        "head.dense comes from the checkpoint");
  CHECK(strcmp(oc_mbert_cfg(m)->labels[2], "unsafe_compliance") == 0, "label names from the data");
  oc_mbert_free(m);
  oc_mbert_free(ref);
  CHECK(oc_mbert_load_for_training(dir, 2, NULL, 0, &m, &err) != 0 && strstr(err.msg, "3 labels"), "label count mismatch refused: %s", err.msg);
  /* weights that are not finite are never written; a weights file with a tensor the model lacks is refused */
  REQUIRE(oc_mbert_load(dir, &m, &err) == 0, "%s", err.msg);
  snprintf(q, sizeof q, "%s/w.safetensors", tmp);
  int64_t n;
  float *head = oc_mbert_param(m, wi, &n, NULL, NULL);
  float keep = head[7];
  head[7] = NAN;
  CHECK(oc_mbert_save_weights(m, q, &err) != 0 && strstr(err.msg, "not written: tensor \"classifier.weight\" has a non-finite value (nan) at element 7") &&
            access(q, F_OK) != 0,
        "NaN weights not saved: %s", err.msg);
  head[7] = keep;
  snprintf(p, sizeof p, "%s/model.safetensors", tmp);
  CHECK(oc_mbert_load_weights(m, p, &err) != 0 && strstr(err.msg, "tensor \"classifier.weight\" missing"), "weights without the head: %s", err.msg);
  REQUIRE(oc_mbert_save_weights(m, q, &err) == 0 && oc_mbert_load_weights(m, q, &err) == 0, "round trip: %s", err.msg);
  oc_mbert_free(m);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmp);
}

/* the polynomial exp and erf, and the GeGLU rows and softmax exp rows built on them (the AVX2
 * build on a machine that has it), against double-precision libm */
static void vector_math(void) {
  double e_exp = 0, e_erf = 0, e_glu = 0, e_bwd = 0, e_row = 0;
  enum { N = 4001 };
  static float u[2 * N], g[N], dg[N], du[2 * N], row[N];
  for (int i = 0; i < N; i++) {
    double x = -80.0 + 160.0 * i / (N - 1), y = -6.0 + 12.0 * i / (N - 1);
    double re = fabs(oc_vexp1((float)x) - exp((float)x)) / exp((float)x);
    double ae = fabs(oc_verf1((float)y) - erf((float)y));
    e_exp = re > e_exp ? re : e_exp;
    e_erf = ae > e_erf ? ae : e_erf;
    u[i] = (float)(-8.0 + 16.0 * i / (N - 1));
    u[N + i] = (float)(0.5 + 0.25 * sin(i));
    dg[i] = (float)cos(0.37 * i);
    row[i] = (float)(-30.0 + 30.0 * i / (N - 1));
  }
  /* the row functions take [x | gate] rows of width 2I: here one row with I = N */
  oc_gelu_glu_row(u, g, N);
  oc_gelu_glu_backward_row(u, dg, du, N);
  float sum = oc_vexp_shift_sum(row, N, 0.5f);
  double want_sum = 0;
  for (int i = 0; i < N; i++) {
    double x = u[i], gate = u[N + i], cdf = 0.5 * (1 + erf(x / sqrt(2.0)));
    double want = x * cdf * gate, dx = dg[i] * gate * (cdf + x * exp(-0.5 * x * x) / sqrt(2 * M_PI)), dgate = dg[i] * x * cdf;
    /* errors relative to the scale of the terms (Phi is computed near 0 with an absolute error) */
    double scale = (1 + fabs(x)) * fabs(gate), dscale = (1 + x * x) * fabs(dg[i] * gate) + (1 + fabs(x)) * fabs(dg[i]);
    double a = fabs(g[i] - want) / scale;
    double b = (fabs(du[i] - dx) + fabs(du[N + i] - dgate)) / dscale;
    e_glu = a > e_glu ? a : e_glu;
    e_bwd = b > e_bwd ? b : e_bwd;
    double w = exp((double)((float)(-30.0 + 30.0 * i / (N - 1)) - 0.5f)); /* the float difference, as the row takes it */
    want_sum += w;
    double c = fabs(row[i] - w) / w;
    e_row = c > e_row ? c : e_row;
  }
  /* the decoders' activations: g = act(g) * u with GELU (tanh form) and SiLU */
  double e_act[2] = {0, 0};
  for (int k = 0; k < 2; k++) {
    static float ga[N], ua[N];
    for (int i = 0; i < N; i++) { ga[i] = (float)(-10.0 + 20.0 * i / (N - 1)); ua[i] = (float)(0.5 + 0.25 * cos(i)); }
    oc_act_mul(k == 0, ga, ua, N);
    for (int i = 0; i < N; i++) {
      double x = (float)(-10.0 + 20.0 * i / (N - 1)), y = 0.7978845608028654 * (x + 0.044715 * x * x * x);
      double want = (k == 0 ? 0.5 * x * (1 + tanh(y)) : x / (1 + exp(-x))) * ua[i];
      double err = fabs(ga[i] - want) / ((1 + fabs(x)) * fabs(ua[i]));
      e_act[k] = err > e_act[k] ? err : e_act[k];
    }
  }
  /* final-logit softcapping, cap 30 (Gemma): absolute error against double tanh; NaN stays NaN */
  double e_cap = 0;
  {
    static float lg[N + 3];
    for (int i = 0; i < N; i++) lg[i] = (float)(-400.0 + 800.0 * i / (N - 1)) * (i % 3 ? 1.0f : 1e-3f);
    lg[N] = NAN; lg[N + 1] = 1e30f; lg[N + 2] = -1e30f;
    float keep[N + 3];
    memcpy(keep, lg, sizeof keep);
    oc_softcap(lg, N + 3, 30.0f);
    for (int i = 0; i < N + 2; i++) {
      double want = i == N ? NAN : 30.0 * tanh((double)keep[i] / 30.0), err = fabs(lg[i] - want);
      if (i == N) err = isnan(lg[i]) ? 0 : INFINITY;
      e_cap = err > e_cap ? err : e_cap;
    }
    e_cap = fmax(e_cap, fabs(lg[N + 2] + 30.0));
  }
  CHECK(e_cap < 1e-5, "softcap: max absolute error %.3g (logits within +-30)", e_cap);
  CHECK(e_act[0] < 1e-6 && e_act[1] < 1e-6, "decoder activations: max scaled error %.3g (gelu tanh), %.3g (silu)", e_act[0], e_act[1]);
  CHECK(e_exp < 3e-7, "polynomial exp: max relative error %.3g", e_exp);
  CHECK(e_erf < 5e-7, "polynomial erf: max absolute error %.3g", e_erf);
  CHECK(e_glu < 1e-6, "GeGLU row: max scaled error %.3g", e_glu);
  CHECK(e_bwd < 1e-6, "GeGLU backward row: max scaled error %.3g", e_bwd);
  CHECK(e_row < 3e-7 && fabs(sum - want_sum) / want_sum < 1e-6, "exp row: max relative error %.3g, sum %.9g vs %.9g", e_row, sum, want_sum);
  printf("vector math: exp %.2g, erf %.2g, glu %.2g, glu backward %.2g, exp row %.2g, softcap %.2g\n", e_exp, e_erf, e_glu, e_bwd, e_row, e_cap);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 4, "usage: test_modernbert MODERNBERT_TINY MODERNBERT_TINY_CLS LONG_REFERENCE");
  vector_math();
  oc_set_threads(2);
  run(argv[1], 1);
  run(argv[2], 0);
  run_long(argv[1], argv[3]);
  base_checkpoint(argv[1]);
  return check_summary("test_modernbert");
}
