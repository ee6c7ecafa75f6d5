/* One decoder loop for Llama 3, Qwen3, Gemma 3 and Gemma 4 text models; what differs per
 * family is chosen at load time from config.json (norm convention, sandwich norms, q/k/v
 * norms, per-layer embeddings, KV sharing, rope, softcapping). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "nn/gemm.h"
#include "nn/kernels.h"
#include "nn/q8.h"
#include "nn/vmath.h"
#include "opencon/model.h"

typedef struct {
  const oc_tensor *q, *k, *v, *o, *gate, *up, *down, *ple_gate, *ple_proj;
  float *in_norm, *attn_out_norm, *mlp_in_norm, *mlp_out_norm, *q_norm, *k_norm, *ple_post_norm;
  float layer_scalar;
  int has_scalar;
  int type, hd, inter;
  int kv_slot;    /* cache slot this layer reads */
  int owns_kv;    /* computes and appends K/V */
} layer_w;

struct oc_model {
  oc_model_config cfg;
  oc_weights *w;
  const oc_tensor *embed, *lm_head, *ple_table, *ple_model_proj;
  float *ple_proj_norm, *final_norm;
  layer_w *L;
  float *inv_freq[2];
  int n_slots;
  int *slot_dim;                /* per slot: head_dim */
  size_t decode_bytes;
  oc_weight_mode weights;
  /* Tensors the model holds itself (the pointers above point at them): views of a q8 checkpoint's
   * I8 values and F16 scales, and the streamed matrices placed in the arena */
  oc_tensor *owned;
  int n_owned, cap_owned;
  void *arena;                  /* the streamed matrices, copied or quantized at load: one mapping */
  size_t arena_bytes;
};

/* ------------------------------------------------------------------ loading */
typedef struct {
  oc_model *m;
  const char *prefix;
  oc_error *err;
} binder;

static const oc_tensor *find_t(binder *b, const char *name) {
  char full[512];
  snprintf(full, sizeof full, "%s%s", b->prefix, name);
  return oc_weights_get(b->m->w, full);
}

/* Room for a tensor of the model's own per tensor of the checkpoint (at most one each: a view, then
 * its copy, replace each other's pointers but both stay), allocated once: the pointers handed out
 * must not move. */
static int owned_reserve(oc_model *m, oc_error *err) {
  const int cap = 2 * oc_weights_count(m->w);
  m->owned = calloc((size_t)(cap ? cap : 1), sizeof *m->owned);
  if (!m->owned) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  m->cap_owned = cap;
  return 0;
}

/* A new tensor owned by the model, a copy of `like` (data, dtype, scales set by the caller). */
static oc_tensor *owned_slot(oc_model *m, const oc_tensor *like, oc_error *err) {
  if (m->n_owned == m->cap_owned) { oc_fail(err, "tensor \"%s\": more tensors to hold than the checkpoint's", like->name); return NULL; }
  oc_tensor *t = &m->owned[m->n_owned++];
  *t = *like;
  return t;
}

/* A q8 checkpoint's matrix: I8 values [d0][d1] and, beside them, "<name>_scale": F16 [d0][ceil(d1 / 32)]
 * whose every scale is finite and not negative. Returns a Q8 view (the checkpoint's bytes in place). */
static const oc_tensor *q8_view(binder *b, const oc_tensor *t) {
  char sname[600];
  snprintf(sname, sizeof sname, "%s_scale", t->name);
  const oc_tensor *sc = oc_weights_get(b->m->w, sname);
  const int64_t nb = oc_q8_nblocks(t->shape[1]);
  if (!sc) { oc_fail(b->err, "%s: tensor \"%s\" is I8 but there is no \"%s\" (a q8 checkpoint holds F16 block scales beside each I8 matrix)", t->file, t->name, sname); return NULL; }
  if (sc->dtype != OC_DT_F16 || sc->ndim != 2 || sc->shape[0] != t->shape[0] || sc->shape[1] != nb) {
    char got[128] = "";
    for (int i = 0; i < sc->ndim; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)sc->shape[i]);
    oc_fail(b->err, "%s: tensor \"%s\" must be F16 [%lld, %lld] (a scale per block of %d of \"%s\"), not %s [%s]", sc->file, sc->name,
            (long long)t->shape[0], (long long)nb, OC_Q8_BLOCK, t->name, oc_dtype_name(sc->dtype), got);
    return NULL;
  }
  const uint16_t *d = sc->data;
  for (int64_t i = 0; i < sc->numel; i++)
    if ((d[i] & 0x7C00) == 0x7C00 || (d[i] & 0x8000)) {
      oc_fail(b->err, "%s: tensor \"%s\": scale %lld (row %lld, block %lld) is %s; q8 scales are finite and not negative", sc->file, sc->name, (long long)i,
              (long long)(i / nb), (long long)(i % nb), (d[i] & 0x7C00) == 0x7C00 ? "not finite" : "negative");
      return NULL;
    }
  oc_tensor *q = owned_slot(b->m, t, b->err);
  if (!q) return NULL;
  q->dtype = OC_DT_Q8;
  q->scales = d;
  q->nbytes = t->nbytes + sc->nbytes;
  return q;
}

static int need(binder *b, const oc_tensor **out, const char *name, int ndim, int64_t d0, int64_t d1) {
  const oc_tensor *t = find_t(b, name);
  if (!t) return oc_fail(b->err, "missing tensor \"%s%s\" required by %s", b->prefix, name, b->m->cfg.architecture);
  if (t->dtype != OC_DT_F32 && t->dtype != OC_DT_F16 && t->dtype != OC_DT_BF16 && !(t->dtype == OC_DT_I8 && ndim == 2))
    return oc_fail_code(b->err, OC_ERR_UNSUPPORTED, "%s: tensor \"%s\": dtype %s is not supported (F32, F16, BF16; I8 with block scales for matrices)", t->file, t->name, oc_dtype_name(t->dtype));
  int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1);
  if (!ok) {
    char got[128] = "";
    for (int i = 0; i < t->ndim; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (ndim == 1) return oc_fail(b->err, "%s: tensor \"%s\" has shape [%s], config.json implies [%lld]", t->file, t->name, got, (long long)d0);
    return oc_fail(b->err, "%s: tensor \"%s\" has shape [%s], config.json implies [%lld, %lld]", t->file, t->name, got, (long long)d0, (long long)d1);
  }
  if (t->dtype == OC_DT_I8 && !b->m->cfg.q8_checkpoint)
    return oc_fail_code(b->err, OC_ERR_UNSUPPORTED, "%s: tensor \"%s\" is I8, but config.json has no quantization_config naming opencon_q8 (int8 weights of another format would read as wrong values)", t->file, t->name);
  if (t->dtype == OC_DT_I8 && !(t = q8_view(b, t))) return -1;
  *out = t;
  return 0;
}

static int need_vec(binder *b, float **out, const char *name, int64_t dim, int one_offset) {
  const oc_tensor *t;
  if (need(b, &t, name, 1, dim, 0)) return -1;
  float *v = malloc(sizeof(float) * (size_t)dim);
  if (!v) return oc_fail_code(b->err, OC_ERR_NOMEM, "out of memory");
  oc_to_f32(t->dtype, t->data, v, (size_t)dim);
  if (one_offset) for (int64_t i = 0; i < dim; i++) v[i] = 1.0f + v[i];
  *out = v;
  return 0;
}

void oc_model_free(oc_model *m) {
  if (!m) return;
  if (m->L) {
    for (int i = 0; i < m->cfg.n_layers; i++) {
      layer_w *l = &m->L[i];
      free(l->in_norm); free(l->attn_out_norm); free(l->mlp_in_norm); free(l->mlp_out_norm);
      free(l->q_norm); free(l->k_norm); free(l->ple_post_norm);
    }
  }
  free(m->L);
  free(m->ple_proj_norm);
  free(m->final_norm);
  free(m->inv_freq[0]);
  free(m->inv_freq[1]);
  free(m->slot_dim);
  if (m->arena) munmap(m->arena, m->arena_bytes);
  free(m->owned);
  oc_weights_close(m->w);
  oc_config_free(&m->cfg);
  free(m);
}

static int bind_layer(binder *b, int i) {
  oc_model *m = b->m;
  const oc_model_config *c = &m->cfg;
  layer_w *l = &m->L[i];
  char n[128];
  const int H = c->hidden, one = c->norm_one_offset;
  l->type = c->layer_types[i];
  l->hd = oc_config_layer_head_dim(c, i);
  l->inter = oc_config_layer_intermediate(c, i);
  int src = oc_config_kv_source(c, i);
  l->owns_kv = src < 0;
#define P(s) (snprintf(n, sizeof n, "layers.%d.%s", i, s), n)
  if (need(b, &l->q, P("self_attn.q_proj.weight"), 2, (int64_t)c->n_heads * l->hd, H)) return -1;
  if (need(b, &l->o, P("self_attn.o_proj.weight"), 2, H, (int64_t)c->n_heads * l->hd)) return -1;
  if (l->owns_kv) {
    if (need(b, &l->k, P("self_attn.k_proj.weight"), 2, (int64_t)c->n_kv_heads * l->hd, H)) return -1;
    if (need(b, &l->v, P("self_attn.v_proj.weight"), 2, (int64_t)c->n_kv_heads * l->hd, H)) return -1;
    if (c->qk_norm && need_vec(b, &l->k_norm, P("self_attn.k_norm.weight"), l->hd, one)) return -1;
  }
  if (c->qk_norm && need_vec(b, &l->q_norm, P("self_attn.q_norm.weight"), l->hd, one)) return -1;
  if (need(b, &l->gate, P("mlp.gate_proj.weight"), 2, l->inter, H)) return -1;
  if (need(b, &l->up, P("mlp.up_proj.weight"), 2, l->inter, H)) return -1;
  if (need(b, &l->down, P("mlp.down_proj.weight"), 2, H, l->inter)) return -1;
  if (need_vec(b, &l->in_norm, P("input_layernorm.weight"), H, one)) return -1;
  if (c->sandwich_norms) {
    if (need_vec(b, &l->attn_out_norm, P("post_attention_layernorm.weight"), H, one)) return -1;
    if (need_vec(b, &l->mlp_in_norm, P("pre_feedforward_layernorm.weight"), H, one)) return -1;
    if (need_vec(b, &l->mlp_out_norm, P("post_feedforward_layernorm.weight"), H, one)) return -1;
  } else {
    if (need_vec(b, &l->mlp_in_norm, P("post_attention_layernorm.weight"), H, one)) return -1;
  }
  if (c->family == OC_FAM_GEMMA4) {
    if (c->ple_dim) {
      if (need(b, &l->ple_gate, P("per_layer_input_gate.weight"), 2, c->ple_dim, H)) return -1;
      if (need(b, &l->ple_proj, P("per_layer_projection.weight"), 2, H, c->ple_dim)) return -1;
      if (need_vec(b, &l->ple_post_norm, P("post_per_layer_input_norm.weight"), H, 0)) return -1;
    }
    const oc_tensor *s = find_t(b, P("layer_scalar"));
    if (s) {
      if (s->numel != 1 || (s->dtype != OC_DT_F32 && s->dtype != OC_DT_BF16 && s->dtype != OC_DT_F16))
        return oc_fail(b->err, "%s: tensor \"%s\" must hold one float", s->file, s->name);
      oc_to_f32(s->dtype, s->data, &l->layer_scalar, 1);
      l->has_scalar = 1;
    }
  }
#undef P
  return 0;
}

/* The matrices every decoded token streams (not the gathered embedding tables, but the LM head,
 * which may be the tied embedding): *slots[i] for i < returned count (at most OC_MAX_LAYERS * 9 + 2). */
static int streamed_matrices(oc_model *m, const oc_tensor ***slots) {
  int n = 0;
  for (int i = 0; i < m->cfg.n_layers; i++) {
    layer_w *l = &m->L[i];
    const oc_tensor **mats[] = {&l->q, &l->k, &l->v, &l->o, &l->gate, &l->up, &l->down, &l->ple_gate, &l->ple_proj};
    for (size_t k = 0; k < sizeof mats / sizeof *mats; k++) if (*mats[k]) slots[n++] = mats[k];
  }
  if (m->ple_model_proj) slots[n++] = &m->ple_model_proj;
  slots[n++] = &m->lm_head;
  return n;
}

/* Where a matrix's values and (Q8) scales go in the arena: values at 0, scales at *scale_off, the
 * whole share returned; each array 64-byte aligned. */
static size_t arena_share(const oc_tensor *t, oc_dtype dt, size_t *scale_off) {
  const size_t v = (size_t)t->numel * oc_dtype_size(dt), d = dt == OC_DT_Q8 ? sizeof(uint16_t) * (size_t)(t->shape[0] * oc_q8_nblocks(t->shape[1])) : 0;
  *scale_off = (v + 63) & ~(size_t)63;
  return *scale_off + ((d + 63) & ~(size_t)63);
}

/* A matrix quantized to q8 into q (values; il: rows interleaved, nn/q8.h) and d (scales), its rows
 * in parallel; a value that is not finite or too large for the format is an error naming the
 * tensor, row and column (the guard must not run on weights that were silently changed). */
static int quantize_matrix(const oc_tensor *t, int il, int8_t *q, uint16_t *d, oc_error *err) {
  const int64_t rows = t->shape[0], cols = t->shape[1], nb = oc_q8_nblocks(cols);
  int64_t bad_row = rows, bad_col = 0;
  int nomem = 0;
#pragma omp parallel
  {
    float *row = malloc((sizeof(float) + 1) * (size_t)cols);
    if (!row) {
#pragma omp atomic write
      nomem = 1;
    }
    int8_t *natural = row ? (int8_t *)(row + cols) : NULL;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      int64_t bad;
      if (!row) continue;
      oc_tensor_row(t, r, 0, cols, row);
      if (oc_q8_quantize_row(row, cols, il ? natural : q + r * cols, d + r * nb, &bad)) {
#pragma omp critical(oc_q8_bad)
        if (r < bad_row) { bad_row = r; bad_col = bad; }
      } else if (il)
        oc_q8_interleave(natural, cols, q + r * cols);
    }
    free(row);
  }
  if (nomem) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory quantizing \"%s\"", t->name);
  if (bad_row < rows) {
    float v;
    oc_tensor_row(t, bad_row, bad_col, 1, &v);
    return oc_fail(err, "%s: tensor \"%s\": row %lld column %lld is %g, which q8 cannot hold (finite, |x| <= 127 * 65504)", t->file, t->name,
                   (long long)bad_row, (long long)bad_col, (double)v);
  }
  return 0;
}

/* n bytes copied in parallel (reading a mapped checkpoint: two threads pull pages in faster than one). */
static void copy_parallel(void *dst, const void *src, size_t n) {
  const size_t chunk = (size_t)4 << 20, pieces = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < pieces; i++) {
    const size_t o = i * chunk;
    memcpy((char *)dst + o, (const char *)src + o, n - o < chunk ? n - o : chunk);
  }
}

/* A q8 checkpoint's values (rows of cols) interleaved into dst, rows in parallel. */
static void interleave_parallel(int8_t *dst, const int8_t *src, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) oc_q8_interleave(src + r * cols, cols, dst + r * cols);
}

/* Whether slot i holds its tensor first (a tied embedding fills two slots: placed once). */
static int first_use(const oc_tensor **const *slots, int i) {
  for (int j = 0; j < i; j++)
    if (*slots[j] == *slots[i]) return 0;
  return 1;
}

/* Whether place_streamed moves slot i: its tensor's first slot, and under OC_WEIGHTS_MMAP only
 * q8 checkpoint matrices (held interleaved, as every other load holds them: a q8 model gives the
 * same bits however it was loaded). */
static int placed(const oc_model *m, const oc_tensor **const *slots, int i) {
  return first_use(slots, i) && (m->weights != OC_WEIGHTS_MMAP || (*slots[i])->dtype == OC_DT_Q8);
}

/* Every matrix a decoded token streams into one anonymous mapping, on huge pages where the kernel
 * gives them: a token reads all of it, and with 4 KiB pages of a file mapping the TLB misses cost
 * E2B's BF16 decode about a quarter of its speed (bench/README.md). OC_WEIGHTS_Q8: quantized
 * (unless already Q8); OC_WEIGHTS_STORED: copied as stored; Q8 matrices (of a q8 checkpoint, under
 * any mode) with rows of 512 and more interleaved (nn/q8.h). A tied embedding is placed once, for
 * both its uses. */
static int place_streamed(oc_model *m, oc_error *err) {
  const oc_tensor **slots[OC_MAX_LAYERS * 9 + 2];
  const int n = streamed_matrices(m, slots);
  size_t bytes = 0, off;
  for (int i = 0; i < n; i++)
    if (placed(m, slots, i)) bytes += arena_share(*slots[i], m->weights == OC_WEIGHTS_Q8 ? OC_DT_Q8 : (*slots[i])->dtype, &off);
  if (bytes == 0) return 0;
  const size_t huge = (size_t)2 << 20;
  m->arena_bytes = (bytes + huge - 1) & ~(huge - 1);
  void *arena = mmap(NULL, m->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (arena == MAP_FAILED) {
    m->arena_bytes = 0;
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory: %zu bytes for the streamed matrices (--weights mmap reads BF16, F16 and F32 ones from the file instead)", bytes);
  }
  m->arena = arena;
#ifdef MADV_HUGEPAGE
  madvise(arena, m->arena_bytes, MADV_HUGEPAGE); /* advice only: without huge pages it works the same */
#endif
  char *at = arena;
  for (int i = 0; i < n; i++) {
    if (!placed(m, slots, i)) continue;
    const oc_tensor *t = *slots[i];
    const oc_dtype dt = m->weights == OC_WEIGHTS_Q8 ? OC_DT_Q8 : t->dtype;
    const size_t share = arena_share(t, dt, &off);
    oc_tensor *o = owned_slot(m, t, err);
    if (!o) return -1;
    o->dtype = dt;
    o->data = at;
    if (dt == OC_DT_Q8) {
      /* rows a multiple of 512 long interleaved for the batched products (nn/q8.h) */
      o->q8_il = oc_q8_interleavable(t->shape[1]);
      o->scales = (const uint16_t *)(at + off);
      o->nbytes = (size_t)t->numel + sizeof(uint16_t) * (size_t)(t->shape[0] * oc_q8_nblocks(t->shape[1]));
      if (t->dtype == OC_DT_Q8) {
        if (o->q8_il) interleave_parallel((int8_t *)at, t->data, t->shape[0], t->shape[1]);
        else copy_parallel(at, t->data, (size_t)t->numel);
        memcpy(at + off, t->scales, o->nbytes - (size_t)t->numel);
      } else if (quantize_matrix(t, o->q8_il, (int8_t *)at, (uint16_t *)(at + off), err))
        return -1;
    } else
      copy_parallel(at, t->data, t->nbytes);
    at += share;
    if (m->embed == t) m->embed = o;
    for (int j = i; j < n; j++) if (*slots[j] == t) *slots[j] = o;
  }
  return 0;
}

static size_t streamed_bytes(oc_model *m) {
  const oc_tensor **slots[OC_MAX_LAYERS * 9 + 2];
  const int n = streamed_matrices(m, slots);
  size_t bytes = 0;
  for (int i = 0; i < n; i++) bytes += (*slots[i])->nbytes;
  return bytes;
}

/* A q8 checkpoint holds "NAME_scale" only beside an I8 matrix NAME; a scale without one (a stray or
 * another format's tensor) would be ignored, so it is an error naming it, as are the zero points and
 * group indices of other int formats. */
static int check_q8_extras(const binder *b) {
  const oc_weights *w = b->m->w;
  for (int i = 0; b->m->cfg.q8_checkpoint && i < oc_weights_count(w); i++) {
    const oc_tensor *t = oc_weights_at(w, i);
    const size_t n = strlen(t->name);
    if ((n > 11 && strcmp(t->name + n - 11, "_zero_point") == 0) || (n > 5 && strcmp(t->name + n - 5, "g_idx") == 0))
      return oc_fail_code(b->err, OC_ERR_UNSUPPORTED, "%s: tensor \"%s\" belongs to another int format (opencon_q8 has no zero points or group indices)", t->file, t->name);
    if (n <= 6 || strcmp(t->name + n - 6, "_scale") != 0) continue;
    char base[600];
    snprintf(base, sizeof base, "%.*s", (int)(n - 6), t->name);
    const oc_tensor *m = oc_weights_get(w, base);
    if (!m || m->dtype != OC_DT_I8)
      return oc_fail(b->err, "%s: tensor \"%s\" is a q8 scale, but \"%s\" is %s", t->file, t->name, base, m ? "not I8" : "not in the checkpoint");
  }
  return 0;
}

/* A checkpoint with more layers than config.json's num_hidden_layers would run as a shallower model,
 * its last layers silently unused: refused, naming a tensor of the first layer beyond the config's. */
static int check_no_extra_layers(const binder *b) {
  const oc_weights *w = b->m->w;
  const size_t pl = strlen(b->prefix);
  const oc_tensor *first = NULL;
  long first_layer = 0;
  for (int i = 0; i < oc_weights_count(w); i++) {
    const oc_tensor *t = oc_weights_at(w, i);
    if (strncmp(t->name, b->prefix, pl) != 0 || strncmp(t->name + pl, "layers.", 7) != 0) continue;
    const char *d = t->name + pl + 7;
    char *end;
    if (*d < '0' || *d > '9') continue;
    long k = strtol(d, &end, 10); /* an overflowing index saturates: still beyond the config */
    if (*end != '.' || k < b->m->cfg.n_layers) continue;
    if (!first || k < first_layer) { first = t; first_layer = k; }
  }
  if (!first) return 0;
  return oc_fail(b->err, "%s: tensor \"%s\" is of layer %ld, but config.json has num_hidden_layers %d (the checkpoint has more layers than the config)",
                 first->file, first->name, first_layer, b->m->cfg.n_layers);
}

int oc_model_load(const char *dir, oc_model **out, oc_error *err) { return oc_model_load_ex(dir, NULL, out, err); }

int oc_model_load_ex(const char *dir, const oc_model_opts *opts, oc_model **out, oc_error *err) {
  *out = NULL;
  const oc_weight_mode mode = opts ? opts->weights : OC_WEIGHTS_STORED;
  if (mode != OC_WEIGHTS_STORED && mode != OC_WEIGHTS_Q8 && mode != OC_WEIGHTS_MMAP) return oc_fail(err, "weights mode %d is not one of stored, q8, mmap", (int)mode);
  oc_blas_init();
  char *cpath = oc_path_join(dir, "config.json");
  char *json = NULL;
  size_t jlen = 0;
  if (oc_read_file(cpath, &json, &jlen, err)) { free(cpath); return -1; }
  oc_model *m = calloc(1, sizeof *m);
  if (!m) { free(cpath); free(json); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  m->weights = mode;
  int rc = oc_config_parse(json, jlen, cpath, &m->cfg, err);
  free(json);
  free(cpath);
  if (rc) { free(m); return -1; }
  if (oc_weights_open(dir, &m->w, err)) { oc_config_free(&m->cfg); free(m); return -1; }
  if (owned_reserve(m, err)) { oc_wrap(err, "loading %s", dir); oc_model_free(m); return -1; }
  const oc_model_config *c = &m->cfg;
  static const char *prefixes[] = {"model.language_model.", "language_model.model.", "model.", ""};
  binder b = {m, NULL, err};
  for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes && !b.prefix; i++) {
    char name[128];
    snprintf(name, sizeof name, "%sembed_tokens.weight", prefixes[i]);
    if (oc_weights_get(m->w, name)) b.prefix = prefixes[i];
  }
  if (!b.prefix) { oc_fail(err, "%s: no embed_tokens.weight under any known prefix (model.language_model., language_model.model., model.)", dir); goto fail; }
  const int H = c->hidden;
  if (need(&b, &m->embed, "embed_tokens.weight", 2, c->vocab, H)) goto fail;
  if (c->tie_embeddings) {
    m->lm_head = m->embed;
  } else {
    m->lm_head = oc_weights_get(m->w, "lm_head.weight");
    if (!m->lm_head) m->lm_head = oc_weights_get(m->w, "language_model.lm_head.weight");
    if (!m->lm_head) { oc_fail(err, "%s: tie_word_embeddings is false but there is no lm_head.weight", dir); goto fail; }
    binder hb = {m, "", err};
    if (need(&hb, &m->lm_head, m->lm_head->name, 2, c->vocab, H)) goto fail;
  }
  if (need_vec(&b, &m->final_norm, "norm.weight", H, c->norm_one_offset)) goto fail;
  if (c->family == OC_FAM_GEMMA4 && c->ple_dim) {
    int64_t LP = (int64_t)c->n_layers * c->ple_dim;
    if (need(&b, &m->ple_table, "embed_tokens_per_layer.weight", 2, c->ple_vocab, LP)) goto fail;
    if (need(&b, &m->ple_model_proj, "per_layer_model_projection.weight", 2, LP, H)) goto fail;
    if (need_vec(&b, &m->ple_proj_norm, "per_layer_projection_norm.weight", c->ple_dim, 0)) goto fail;
  }
  m->L = calloc((size_t)c->n_layers, sizeof *m->L);
  m->slot_dim = calloc((size_t)c->n_layers, sizeof *m->slot_dim);
  if (!m->L || !m->slot_dim) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  for (int i = 0; i < c->n_layers; i++) {
    if (bind_layer(&b, i)) goto fail;
    layer_w *l = &m->L[i];
    if (l->owns_kv) { l->kv_slot = m->n_slots; m->slot_dim[m->n_slots++] = l->hd; }
    else l->kv_slot = m->L[oc_config_kv_source(c, i)].kv_slot;
  }
  if (check_no_extra_layers(&b) || check_q8_extras(&b)) goto fail;
  if (place_streamed(m, err)) goto fail;
  m->decode_bytes = streamed_bytes(m);
  for (int t = 0; t < 2; t++) {
    int hd = oc_config_type_head_dim(c, (oc_layer_type)t);
    m->inv_freq[t] = malloc(sizeof(float) * (size_t)(hd / 2));
    if (!m->inv_freq[t]) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto fail; }
    oc_rope_inv_freq(&c->rope[t], hd, m->inv_freq[t]);
  }
  *out = m;
  return 0;
fail:
  oc_wrap(err, "loading %s", dir);
  oc_model_free(m);
  return -1;
}

int oc_weight_mode_parse(const char *s, oc_weight_mode *out, oc_error *err) {
  if (strcmp(s, "stored") == 0) *out = OC_WEIGHTS_STORED;
  else if (strcmp(s, "q8") == 0) *out = OC_WEIGHTS_Q8;
  else if (strcmp(s, "mmap") == 0) *out = OC_WEIGHTS_MMAP;
  else
    return oc_fail(err, "--weights %s: expected stored (as the checkpoint holds them, in memory), q8 (int8 blocks, quantized at load) or mmap (as stored, read "
                   "from the file mapping)", s);
  return 0;
}

const char *oc_weight_mode_name(oc_weight_mode m) { return m == OC_WEIGHTS_Q8 ? "q8" : m == OC_WEIGHTS_MMAP ? "mmap" : "stored"; }

const char *oc_model_weights_kind(const oc_model *m) {
  const oc_tensor **slots[OC_MAX_LAYERS * 9 + 2];
  const int n = streamed_matrices((oc_model *)m, slots);
  oc_dtype dt = (*slots[0])->dtype;
  for (int i = 1; i < n; i++)
    if ((*slots[i])->dtype != dt) return "mixed";
  return dt == OC_DT_Q8 ? "q8" : dt == OC_DT_BF16 ? "bf16" : dt == OC_DT_F16 ? "f16" : "f32";
}

const oc_tensor *oc_model_tensor(const oc_model *m, const char *name) {
  for (int i = m->n_owned - 1; i >= 0; i--) /* the latest: a copy placed after its view */
    if (strcmp(m->owned[i].name, name) == 0) return &m->owned[i];
  return oc_weights_get(m->w, name);
}

const oc_model_config *oc_model_cfg(const oc_model *m) { return &m->cfg; }
const oc_weights *oc_model_weights(const oc_model *m) { return m->w; }
size_t oc_model_decode_bytes(const oc_model *m) { return m->decode_bytes; }

/* ------------------------------------------------------------------ session */
/* The scratch of one forward pass over `rows` token rows (a chunk of one session, or one token of
 * each session of a batch), grown on demand and kept, so a steady decode loop does not allocate. */
typedef struct {
  int rows;
  float *x, *xn, *q, *k, *v, *att, *o, *g, *u, *ple, *pg, *cs;
  int *tpos, *tlo;        /* per row: rope position, cache index where its sequence starts */
  const float **kr, **vr; /* batch: per row, its session's K / V cache of the layer being run */
  float *scores;          /* attention scratch */
  size_t n_scores;
} work;

struct oc_session {
  const oc_model *m;
  int len, cap, max_ctx;
  int broken;     /* layers were skipped: the cache is incomplete */
  int in_batch;   /* set while oc_forward_batch looks for a session given twice */
  float **K, **V; /* per slot: [cap][n_kv][hd] */
  work w;         /* its chunks' scratch; a batch's when it is the batch's first session */
};

static void work_free(work *w) {
  free(w->x); free(w->xn); free(w->q); free(w->k); free(w->v); free(w->att); free(w->o);
  free(w->g); free(w->u); free(w->ple); free(w->pg); free(w->cs); free(w->scores);
  free(w->tpos); free(w->tlo); free(w->kr); free(w->vr);
}

void oc_session_free(oc_session *s) {
  if (!s) return;
  for (int i = 0; i < s->m->n_slots; i++) { free(s->K[i]); free(s->V[i]); }
  free(s->K); free(s->V);
  work_free(&s->w);
  free(s);
}

oc_session *oc_session_new(const oc_model *m, int max_ctx, oc_error *err) {
  oc_session *s = calloc(1, sizeof *s);
  if (!s) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); return NULL; }
  s->m = m;
  s->max_ctx = max_ctx > 0 ? max_ctx : m->cfg.max_position_embeddings;
  s->K = calloc((size_t)(m->n_slots ? m->n_slots : 1), sizeof *s->K);
  s->V = calloc((size_t)(m->n_slots ? m->n_slots : 1), sizeof *s->V);
  if (!s->K || !s->V) { oc_session_free(s); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); return NULL; }
  return s;
}

void oc_session_reset(oc_session *s) { s->len = 0; s->broken = 0; }
int oc_session_len(const oc_session *s) { return s->len; }

int oc_session_truncate(oc_session *s, int len, oc_error *err) {
  if (s->broken) return oc_fail(err, "session cache is incomplete (layers were skipped); reset it");
  if (len < 0 || len > s->len) return oc_fail(err, "cannot truncate a %d-position cache to %d", s->len, len);
  s->len = len;
  return 0;
}

/* Attention scratch of at least n floats. */
static int ensure_scores(work *w, size_t n, oc_error *err) {
  if (n <= w->n_scores) return 0;
  if (oc_grow_floats(&w->scores, n, err)) return -1;
  w->n_scores = n;
  return 0;
}

static int ensure_cache(oc_session *s, int need, oc_error *err) {
  if (need > s->max_ctx) return oc_fail(err, "context of %d tokens exceeds the session limit of %d", need, s->max_ctx);
  const oc_model_config *c = &s->m->cfg;
  if (need > s->cap) {
    int cap = s->cap ? s->cap : 256;
    while (cap < need) cap *= 2;
    if (cap > s->max_ctx) cap = s->max_ctx;
    for (int i = 0; i < s->m->n_slots; i++) {
      size_t n = (size_t)cap * (size_t)c->n_kv_heads * (size_t)s->m->slot_dim[i];
      if (oc_grow_floats(&s->K[i], n, err) || oc_grow_floats(&s->V[i], n, err)) return -1;
    }
    s->cap = cap;
  }
  return ensure_scores(&s->w, oc_attention_scratch(omp_get_max_threads(), s->cap), err);
}

/* The larger of the two layer types' head dims: the per-token width of the chunk buffers. */
static size_t max_head_dim(const oc_model_config *c) {
  return (size_t)(c->global_head_dim > c->head_dim ? c->global_head_dim : c->head_dim);
}

/* Room for n rows. */
static int work_rows(work *w, const oc_model_config *c, int n, oc_error *err) {
  if (n <= w->rows) return 0;
  size_t H = (size_t)c->hidden, hd = max_head_dim(c);
  size_t I = (size_t)c->intermediate * (c->double_wide_mlp ? 2 : 1);
  size_t N = (size_t)n, LP = (size_t)c->n_layers * (size_t)(c->ple_dim ? c->ple_dim : 1);
  if (oc_grow_floats(&w->x, N * H, err) || oc_grow_floats(&w->xn, N * H, err) || oc_grow_floats(&w->q, N * c->n_heads * hd, err) ||
      oc_grow_floats(&w->k, N * c->n_kv_heads * hd, err) || oc_grow_floats(&w->v, N * c->n_kv_heads * hd, err) ||
      oc_grow_floats(&w->att, N * c->n_heads * hd, err) || oc_grow_floats(&w->o, N * H, err) || oc_grow_floats(&w->g, N * I, err) ||
      oc_grow_floats(&w->u, N * I, err) || oc_grow_floats(&w->ple, N * LP, err) || oc_grow_floats(&w->pg, N * (size_t)(c->ple_dim ? c->ple_dim : 1), err) ||
      oc_grow_floats(&w->cs, N * hd * 2, err)) /* a cos/sin table per layer type (rope_of) */
    return -1;
  int *tp = realloc(w->tpos, sizeof(int) * N), *tl = tp ? realloc(w->tlo, sizeof(int) * N) : NULL;
  if (tp) w->tpos = tp;
  if (tl) w->tlo = tl;
  const float **kr = tl ? realloc(w->kr, sizeof *kr * N) : NULL, **vr = kr ? realloc(w->vr, sizeof *vr * N) : NULL;
  if (kr) w->kr = kr;
  if (vr) w->vr = vr;
  if (!vr) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  w->rows = n;
  return 0;
}

/* ------------------------------------------------------------------ forward pieces */
static void rope_table(const float *inv, int half, const int *tpos, int n, float *cs) {
  /* cs[t][0..half) = cos, cs[t][half..2half) = sin */
#pragma omp parallel for schedule(static) if (n >= 16)
  for (int t = 0; t < n; t++)
    for (int j = 0; j < half; j++) {
      float a = (float)tpos[t] * inv[j];
      cs[(size_t)t * 2 * half + j] = cosf(a);
      cs[(size_t)t * 2 * half + half + j] = sinf(a);
    }
}

static void apply_rope(float *x, int n, int heads, int hd, const float *cs) {
  int half = hd / 2;
  for (int t = 0; t < n; t++) {
    const float *cr = cs + (size_t)t * hd, *sr = cr + half;
    for (int h = 0; h < heads; h++) {
      float *v = x + ((size_t)t * heads + h) * hd;
      for (int j = 0; j < half; j++) {
        float x1 = v[j], x2 = v[j + half];
        v[j] = x1 * cr[j] - x2 * sr[j];
        v[j + half] = x2 * cr[j] + x1 * sr[j];
      }
    }
  }
}

/* The cos/sin table of a layer type for the current rows: w->cs holds one per type (each
 * w->rows x the larger head dim), filled once per pass by rope_tables, not once per layer. */
static float *rope_of(const oc_model *m, const work *w, oc_layer_type type) {
  return w->cs + (size_t)type * (size_t)w->rows * max_head_dim(&m->cfg);
}

/* Tables for the layer types among the first `depth` layers, at the rows' positions. */
static void rope_tables(const oc_model *m, work *w, int n, int depth) {
  const oc_model_config *c = &m->cfg;
  for (int t = 0; t < 2; t++) {
    const oc_layer_type type = (oc_layer_type)t;
    int used = 0;
    for (int i = 0; i < depth && i < c->n_layers; i++) used |= c->layer_types[i] == type;
    if (used) rope_table(m->inv_freq[type], oc_config_type_head_dim(c, type) / 2, w->tpos, n, rope_of(m, w, type));
  }
}

/* Whose caches a pass's rows extend: one session's (a chunk: row t at cache index pos0 + t) or,
 * in a batch, row t session ss[t]'s at its length (one token each). */
typedef struct {
  oc_session *const *ss;
  int batch;
  int pos0;      /* a chunk's first cache index */
  int score_cap; /* row stride of the attention scratch: above every row's cache index */
} kv_dst;

/* The rows' new K/V (w->k, w->v: [n][nkv][hd]) into their caches' slot. */
static void store_kv(const kv_dst *d, const work *w, int slot, size_t row, int n) {
  if (!d->batch) {
    oc_session *s = d->ss[0];
    memcpy(s->K[slot] + (size_t)d->pos0 * row, w->k, sizeof(float) * row * (size_t)n);
    memcpy(s->V[slot] + (size_t)d->pos0 * row, w->v, sizeof(float) * row * (size_t)n);
    return;
  }
  for (int t = 0; t < n; t++) {
    oc_session *s = d->ss[t];
    memcpy(s->K[slot] + (size_t)s->len * row, w->k + (size_t)t * row, sizeof(float) * row);
    memcpy(s->V[slot] + (size_t)s->len * row, w->v + (size_t)t * row, sizeof(float) * row);
  }
}

static void attention(const oc_model *m, const layer_w *l, work *w, const kv_dst *d, int n) {
  const oc_model_config *c = &m->cfg;
  const int window = l->type == OC_LAYER_SLIDING ? c->sliding_window : 0;
  if (!d->batch) {
    const oc_session *s = d->ss[0];
    oc_attention(w->q, n, c->n_heads, c->n_kv_heads, l->hd, s->K[l->kv_slot], s->V[l->kv_slot], d->pos0, w->tlo, window,
                 (float)c->attn_scale, w->scores, d->score_cap, w->att);
    return;
  }
  for (int t = 0; t < n; t++) { w->kr[t] = d->ss[t]->K[l->kv_slot]; w->vr[t] = d->ss[t]->V[l->kv_slot]; }
  oc_attention_batch(w->q, n, c->n_heads, c->n_kv_heads, l->hd, w->kr, w->vr, w->tpos, window, (float)c->attn_scale, w->scores,
                     d->score_cap, w->att);
}

static void per_head_norm(float *x, int n, int heads, int hd, const float *w, float eps) {
  oc_rmsnorm(x, w, n * heads, hd, eps, x);
}

static void run_layer(const oc_model *m, work *w, const kv_dst *d, int i, int n) {
  const oc_model_config *c = &m->cfg;
  const layer_w *l = &m->L[i];
  const int H = c->hidden, nh = c->n_heads, nkv = c->n_kv_heads, hd = l->hd;
  const float eps = (float)c->eps;
  float *x = w->x, *xn = w->xn;

  const float *cs = rope_of(m, w, l->type);
  oc_rmsnorm(x, l->in_norm, n, H, eps, xn);
  {
    const oc_tensor *ws[3] = {l->q, l->k, l->v};
    const int outs[3] = {nh * hd, nkv * hd, nkv * hd};
    float *ys[3] = {w->q, w->k, w->v};
    oc_matmul_multi(xn, n, H, ws, outs, ys, l->owns_kv ? 3 : 1);
  }
  if (l->q_norm) per_head_norm(w->q, n, nh, hd, l->q_norm, eps);
  apply_rope(w->q, n, nh, hd, cs);
  if (l->owns_kv) {
    if (l->k_norm) per_head_norm(w->k, n, nkv, hd, l->k_norm, eps);
    if (c->v_norm) per_head_norm(w->v, n, nkv, hd, NULL, eps);
    apply_rope(w->k, n, nkv, hd, cs);
    store_kv(d, w, l->kv_slot, (size_t)nkv * hd, n);
  }
  attention(m, l, w, d, n);
  oc_matmul(w->att, n, nh * hd, l->o, 0, H, w->o);
  if (l->attn_out_norm) oc_rmsnorm(w->o, l->attn_out_norm, n, H, eps, w->o);
  for (size_t j = 0; j < (size_t)n * H; j++) x[j] += w->o[j];

  oc_rmsnorm(x, l->mlp_in_norm, n, H, eps, xn);
  const int I = l->inter;
  {
    const oc_tensor *ws[2] = {l->gate, l->up};
    const int outs[2] = {I, I};
    float *ys[2] = {w->g, w->u};
    oc_matmul_multi(xn, n, H, ws, outs, ys, 2);
  }
  /* activation in fixed 1024-element chunks (vectorized, nn/vmath.c) */
  const long nI = (long)n * I, nch = (nI + 1023) / 1024;
#pragma omp parallel for schedule(static)
  for (long ch = 0; ch < nch; ch++) {
    const long j0 = ch * 1024, len = nI - j0 < 1024 ? nI - j0 : 1024;
    oc_act_mul(c->act_gelu_tanh, w->g + j0, w->u + j0, len);
  }
  oc_matmul(w->g, n, I, l->down, 0, H, w->o);
  if (l->mlp_out_norm) oc_rmsnorm(w->o, l->mlp_out_norm, n, H, eps, w->o);
  for (size_t j = 0; j < (size_t)n * H; j++) x[j] += w->o[j];

  if (l->ple_gate) {
    const int P = c->ple_dim, L = c->n_layers;
    oc_matmul(x, n, H, l->ple_gate, 0, P, w->pg);
    for (int t = 0; t < n; t++) oc_act_mul(1, w->pg + (size_t)t * P, w->ple + ((size_t)t * L + i) * P, P);
    oc_matmul(w->pg, n, P, l->ple_proj, 0, H, w->o);
    oc_rmsnorm(w->o, l->ple_post_norm, n, H, eps, w->o);
    for (size_t j = 0; j < (size_t)n * H; j++) x[j] += w->o[j];
  }
  if (l->has_scalar) for (size_t j = 0; j < (size_t)n * H; j++) x[j] *= l->layer_scalar;
}

static void per_layer_inputs(const oc_model *m, work *w, const int32_t *ids, int n) {
  const oc_model_config *c = &m->cfg;
  const int P = c->ple_dim, L = c->n_layers, H = c->hidden;
  const size_t LP = (size_t)L * P;
  oc_matmul(w->x, n, H, m->ple_model_proj, 0, (int)LP, w->ple);
  const float ps = (float)(1.0 / sqrt((double)H)), ts = (float)sqrt((double)P), cs = (float)(1.0 / sqrt(2.0));
  for (size_t j = 0; j < (size_t)n * LP; j++) w->ple[j] *= ps;
  oc_rmsnorm(w->ple, m->ple_proj_norm, n * L, P, (float)c->eps, w->ple);
  /* w->pg holds one table row slice at a time */
  for (int t = 0; t < n; t++)
    for (int li = 0; li < L; li++) {
      float *dst = w->ple + (size_t)t * LP + (size_t)li * P;
      oc_tensor_row(m->ple_table, ids[t], (int64_t)li * P, P, w->pg);
      for (int j = 0; j < P; j++) dst[j] = (dst[j] + w->pg[j] * ts) * cs;
    }
}

int oc_hidden_index(const oc_model_config *c, int idx, oc_error *err) {
  int L = c->n_layers;
  int k = idx < 0 ? L + 1 + idx : idx;
  if (k < 0 || k > L) return oc_fail(err, "hidden-state index %d is out of range for %d layers (valid: %d..%d)", idx, L, -(L + 1), L);
  return k;
}

int oc_argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
  return b;
}

int oc_is_eos(const oc_model_config *c, int id) {
  for (int i = 0; i < c->n_eos; i++) if (c->eos_token_ids[i] == id) return 1;
  return 0;
}

static void capture(int H, const oc_taps *taps, const int *norm_layers, int hidx, const float *src, int n) {
  int npos = taps->pos ? taps->n_pos : n;
  for (int li = 0; li < taps->n_layers; li++) {
    if (norm_layers[li] != hidx) continue;
    for (int p = 0; p < npos; p++) {
      int t = taps->pos ? taps->pos[p] : p;
      if (t < 0) t += n;
      memcpy(taps->out + ((size_t)li * npos + p) * H, src + (size_t)t * H, sizeof(float) * (size_t)H);
    }
  }
}

/* The ids within the vocabulary (`row` names an id's index in errors) and the taps' hidden-state
 * indices, normalised into norm_layers; *deepest: the deepest of them (0 without taps). */
static int check_inputs(const oc_model_config *c, const int32_t *ids, int n, const char *row, const oc_taps *taps, int *norm_layers,
                        int *deepest, oc_error *err) {
  for (int t = 0; t < n; t++)
    if (ids[t] < 0 || ids[t] >= c->vocab) return oc_fail(err, "token id %d at %s %d is outside the vocabulary (0..%d)", ids[t], row, t, c->vocab - 1);
  *deepest = 0;
  if (!taps || !taps->n_layers) return 0;
  if (taps->n_layers > 256) return oc_fail(err, "at most 256 tapped layers");
  for (int i = 0; i < taps->n_layers; i++) {
    if ((norm_layers[i] = oc_hidden_index(c, taps->layers[i], err)) < 0) return -1;
    if (norm_layers[i] > *deepest) *deepest = norm_layers[i];
  }
  return 0;
}

/* Embeddings and layers 0 .. depth-1 of n rows (rope positions in w->tpos), their K/V appended
 * to d's caches (lengths unchanged); taps of the hidden states up to the last layer's input. */
static void run_layers(const oc_model *m, work *w, const kv_dst *d, const int32_t *ids, int n, const oc_taps *taps,
                       const int *norm_layers, int depth) {
  const oc_model_config *c = &m->cfg;
  const int H = c->hidden, L = c->n_layers;
  const float es = (float)c->embed_scale;
  for (int t = 0; t < n; t++) {
    float *x = w->x + (size_t)t * H;
    oc_tensor_row(m->embed, ids[t], 0, H, x);
    if (es != 1.0f) for (int j = 0; j < H; j++) x[j] *= es;
  }
  if (m->ple_table && depth > 0) per_layer_inputs(m, w, ids, n);
  rope_tables(m, w, n, depth);
  if (taps) capture(H, taps, norm_layers, 0, w->x, n);
  for (int i = 0; i < depth && i < L; i++) {
    run_layer(m, w, d, i, n);
    if (taps && i + 1 < L) capture(H, taps, norm_layers, i + 1, w->x, n);
  }
}

/* After all layers: the final norm of the n rows (into w->xn), its taps, and with logits the
 * LM head (softcapped) of rows row0 .. row0 + rows - 1. */
static void run_head(const oc_model *m, work *w, int n, const oc_taps *taps, const int *norm_layers, float *logits, int row0, int rows) {
  const oc_model_config *c = &m->cfg;
  const int H = c->hidden;
  oc_rmsnorm(w->x, m->final_norm, n, H, (float)c->eps, w->xn);
  if (taps) capture(H, taps, norm_layers, c->n_layers, w->xn, n);
  if (!logits) return;
  oc_matmul(w->xn + (size_t)row0 * H, rows, H, m->lm_head, 0, c->vocab, logits);
  if (c->final_softcap > 0) {
    const float cap = (float)c->final_softcap;
    const long nl = (long)rows * c->vocab, nch = (nl + 4095) / 4096;
#pragma omp parallel for schedule(static)
    for (long ch = 0; ch < nch; ch++) oc_softcap(logits + ch * 4096, nl - ch * 4096 < 4096 ? nl - ch * 4096 : 4096, cap);
  }
}

/* packed: several sequences in one chunk (positions and attention spans already set per token) */
static int forward_chunk(oc_session *s, const int32_t *ids, int n, const oc_taps *taps, float *logits, int all_logits, int packed,
                         oc_error *err) {
  const oc_model *m = s->m;
  const oc_model_config *c = &m->cfg;
  const int L = c->n_layers;
  if (s->broken) return oc_fail(err, "session cache is incomplete (an earlier call skipped layers); reset it first");
  if (n <= 0) return oc_fail(err, "empty token sequence");
  int norm_layers[256], deepest;
  if (check_inputs(c, ids, n, "position", taps, norm_layers, &deepest, err)) return -1;
  if (taps && taps->n_layers && taps->pos)
    for (int p = 0; p < taps->n_pos; p++)
      if (taps->pos[p] < -n || taps->pos[p] >= n) return oc_fail(err, "tap position %d is outside the chunk of %d tokens", taps->pos[p], n);
  const int depth = taps && taps->n_layers && !logits ? deepest : L; /* layers to run */
  const int pos0 = s->len;
  work *w = &s->w;
  if (!packed)
    for (int t = 0; t < n; t++) { w->tpos[t] = pos0 + t; w->tlo[t] = 0; }
  const kv_dst d = {&s, 0, pos0, s->cap};
  run_layers(m, w, &d, ids, n, taps, norm_layers, depth);
  s->len += n;
  if (depth < L || packed) s->broken = 1;
  if (depth < L) return 0;
  if (taps || logits) run_head(m, w, n, taps, norm_layers, packed ? NULL : logits, all_logits ? 0 : n - 1, all_logits ? n : 1);
  return 0;
}

int oc_forward(oc_session *s, const int32_t *ids, int n, const oc_taps *taps, float *logits, int all_logits, oc_error *err) {
  if (s->broken) return oc_fail(err, "session cache is incomplete (an earlier call skipped layers); reset it first");
  if (n > 0 && (ensure_cache(s, s->len + n, err) || work_rows(&s->w, &s->m->cfg, n, err))) return -1;
  return forward_chunk(s, ids, n, taps, logits, all_logits, 0, err);
}

int oc_forward_packed(oc_session *s, const int32_t *ids, const int *seq_lens, int n_seq, const oc_taps *taps, oc_error *err) {
  if (s->len != 0 || s->broken) return oc_fail(err, "packed prefill needs a fresh (reset) session");
  if (n_seq <= 0) return oc_fail(err, "no sequences to pack");
  int n = 0;
  for (int i = 0; i < n_seq; i++) {
    if (seq_lens[i] <= 0) return oc_fail(err, "packed sequence %d is empty", i);
    if (seq_lens[i] > s->max_ctx - n) return oc_fail(err, "packed sequences exceed the session limit of %d tokens", s->max_ctx);
    n += seq_lens[i];
  }
  if (ensure_cache(s, n, err) || work_rows(&s->w, &s->m->cfg, n, err)) return -1;
  for (int i = 0, start = 0; i < n_seq; start += seq_lens[i++])
    for (int t = 0; t < seq_lens[i]; t++) { s->w.tpos[start + t] = t; s->w.tlo[start + t] = start; }
  return forward_chunk(s, ids, n, taps, NULL, 0, 1, err);
}

/* The sessions of a batch: given, of one model, complete, and each once (a session given twice
 * would get two tokens at one position). */
static int check_batch_sessions(oc_session *const *ss, int n, oc_error *err) {
  for (int t = 0; t < n; t++) {
    if (!ss[t]) return oc_fail(err, "batch row %d: no session", t);
    if (ss[t]->m != ss[0]->m) return oc_fail(err, "batch row %d: its session is of another model than row 0's", t);
    if (ss[t]->broken) return oc_fail(err, "batch row %d: session cache is incomplete (an earlier call skipped layers); reset it first", t);
  }
  int dup = -1;
  for (int t = 0; t < n && dup < 0; t++) {
    if (ss[t]->in_batch) dup = t;
    else ss[t]->in_batch = 1;
  }
  for (int t = 0; t < n; t++) ss[t]->in_batch = 0;
  if (dup < 0) return 0;
  int first = 0;
  while (ss[first] != ss[dup]) first++;
  return oc_fail(err, "batch rows %d and %d are the same session (each session takes one token per step)", first, dup);
}

int oc_forward_batch(oc_session *const *ss, int n, const int32_t *ids, const oc_taps *taps, float *logits, oc_error *err) {
  if (n < 1 || n > OC_MAX_BATCH) return oc_fail(err, "a batch of %d sessions (valid: 1..%d)", n, OC_MAX_BATCH);
  if (!ss || !ids) return oc_fail(err, "a batch needs its sessions and its token ids");
  if (check_batch_sessions(ss, n, err)) return -1;
  const oc_model *m = ss[0]->m;
  const oc_model_config *c = &m->cfg;
  int norm_layers[256], deepest;
  if (taps && taps->pos) return oc_fail(err, "a batch's taps take every row (its sessions' new tokens): pos must be NULL");
  if (check_inputs(c, ids, n, "batch row", taps, norm_layers, &deepest, err)) return -1;
  int cap = 0;
  for (int t = 0; t < n; t++) {
    if (ensure_cache(ss[t], ss[t]->len + 1, err)) return oc_wrap(err, "batch row %d", t);
    if (ss[t]->cap > cap) cap = ss[t]->cap;
  }
  work *w = &ss[0]->w;
  if (work_rows(w, c, n, err) || ensure_scores(w, oc_attention_batch_scratch(omp_get_max_threads(), cap), err)) return -1;
  for (int t = 0; t < n; t++) { w->tpos[t] = ss[t]->len; w->tlo[t] = 0; }
  const kv_dst d = {ss, 1, 0, cap};
  run_layers(m, w, &d, ids, n, taps, norm_layers, c->n_layers);
  for (int t = 0; t < n; t++) ss[t]->len++;
  if (taps || logits) run_head(m, w, n, taps, norm_layers, logits, 0, n);
  return 0;
}
