/* random-model: a checkpoint with the real tensor names and shapes of a config.json and
 * random BF16 weights, for speed and memory measurements at real size. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/json.h"
#include "opencon/model.h"
#include "opencon/modernbert.h"

typedef struct {
  uint64_t seed;
  int kind;     /* 0 matrix, 1 norm, 2 scalar */
  double scale; /* uniform half-width or constant */
} fill_ctx;

static int fill(void *vctx, const char *name, void *dst, size_t offset, size_t nbytes, oc_error *err) {
  (void)name; (void)err;
  const fill_ctx *c = vctx;
  uint16_t *out = dst;
  size_t n = nbytes / 2, base = offset / 2;
  if (c->kind != 0) {
    uint16_t v = oc_f32_to_bf16((float)c->scale);
    for (size_t i = 0; i < n; i++) out[i] = v;
    return 0;
  }
  const float a = (float)c->scale;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    uint64_t r = oc_mix64(c->seed ^ oc_mix64(base + i));
    float u = (float)((r >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    out[i] = oc_f32_to_bf16(u * a);
  }
  return 0;
}

typedef struct {
  oc_st_writer *w;
  fill_ctx *ctx;
  int n, cap;
  uint64_t seed;
  const char *prefix;
  oc_error *err;
} plan;

static int add(plan *p, const char *name, int ndim, int64_t d0, int64_t d1, int kind, double scale) {
  if (p->n == p->cap) return oc_fail(p->err, "internal: tensor plan overflow");
  fill_ctx *c = &p->ctx[p->n++];
  c->seed = oc_mix64(p->seed ^ oc_fnv1a64(name, strlen(name), 0));
  c->kind = kind;
  c->scale = kind == 0 ? sqrt(3.0 / (double)d1) : scale;
  char full[256];
  snprintf(full, sizeof full, "%s%s", p->prefix, name);
  int64_t shape[2] = {d0, d1};
  return oc_st_writer_add_lazy(p->w, full, OC_DT_BF16, ndim, shape, fill, c, p->err);
}

int oc_random_model(const char *config_path, const char *out_dir, uint64_t seed, oc_error *err) {
  char *json = NULL;
  size_t jlen = 0;
  if (oc_read_file(config_path, &json, &jlen, err)) return -1;
  oc_model_config c;
  if (oc_config_parse(json, jlen, config_path, &c, err)) { free(json); return -1; }
  /* config.json and model.safetensors go into a temporary directory put in place whole: never a
   * config.json without its weights */
  oc_atomic_dir d;
  int rc = oc_atomic_dir_open(&d, out_dir, err);
  if (!rc) {
    char *cfg_out = oc_atomic_dir_file(&d, "config.json");
    rc = cfg_out ? oc_write_file_atomic(cfg_out, json, strlen(json), err) : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    free(cfg_out);
  }
  free(json);
  plan p = {oc_st_writer_new(), NULL, 0, 32 * (c.n_layers + 4), seed, "", err};
  p.ctx = calloc((size_t)p.cap, sizeof *p.ctx);
  if (!p.w || !p.ctx) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  if (c.family == OC_FAM_GEMMA4) p.prefix = "model.language_model.";
  else if (c.family == OC_FAM_GEMMA3 && strcmp(c.architecture, "Gemma3ForConditionalGeneration") == 0) p.prefix = "language_model.model.";
  else p.prefix = "model.";
  const double norm1 = c.norm_one_offset ? 0.0 : 1.0;
  const int64_t H = c.hidden;
  char n[160];
  if (!rc) rc = add(&p, "embed_tokens.weight", 2, c.vocab, H, 0, 0);
  if (!rc) rc = add(&p, "norm.weight", 1, H, 0, 1, norm1);
  if (!rc && c.family == OC_FAM_GEMMA4 && c.ple_dim) {
    int64_t LP = (int64_t)c.n_layers * c.ple_dim;
    rc = add(&p, "embed_tokens_per_layer.weight", 2, c.ple_vocab, LP, 0, 0);
    if (!rc) rc = add(&p, "per_layer_model_projection.weight", 2, LP, H, 0, 0);
    if (!rc) rc = add(&p, "per_layer_projection_norm.weight", 1, c.ple_dim, 0, 1, 1.0);
  }
  for (int i = 0; !rc && i < c.n_layers; i++) {
    int hd = oc_config_layer_head_dim(&c, i), I = oc_config_layer_intermediate(&c, i);
#define L(s) (snprintf(n, sizeof n, "layers.%d.%s", i, s), n)
    /* Released Gemma 4 checkpoints keep k/v/k_norm of KV-shared layers too. */
    if ((rc = add(&p, L("self_attn.q_proj.weight"), 2, (int64_t)c.n_heads * hd, H, 0, 0)) ||
        (rc = add(&p, L("self_attn.k_proj.weight"), 2, (int64_t)c.n_kv_heads * hd, H, 0, 0)) ||
        (rc = add(&p, L("self_attn.v_proj.weight"), 2, (int64_t)c.n_kv_heads * hd, H, 0, 0)) ||
        (rc = add(&p, L("self_attn.o_proj.weight"), 2, H, (int64_t)c.n_heads * hd, 0, 0)) ||
        (rc = add(&p, L("mlp.gate_proj.weight"), 2, I, H, 0, 0)) || (rc = add(&p, L("mlp.up_proj.weight"), 2, I, H, 0, 0)) ||
        (rc = add(&p, L("mlp.down_proj.weight"), 2, H, I, 0, 0)) || (rc = add(&p, L("input_layernorm.weight"), 1, H, 0, 1, norm1)) ||
        (rc = add(&p, L("post_attention_layernorm.weight"), 1, H, 0, 1, norm1)))
      break;
    if (c.qk_norm && ((rc = add(&p, L("self_attn.q_norm.weight"), 1, hd, 0, 1, norm1)) ||
                      (rc = add(&p, L("self_attn.k_norm.weight"), 1, hd, 0, 1, norm1))))
      break;
    if (c.sandwich_norms && ((rc = add(&p, L("pre_feedforward_layernorm.weight"), 1, H, 0, 1, norm1)) ||
                             (rc = add(&p, L("post_feedforward_layernorm.weight"), 1, H, 0, 1, norm1))))
      break;
    if (c.family == OC_FAM_GEMMA4) {
      if (c.ple_dim && ((rc = add(&p, L("per_layer_input_gate.weight"), 2, c.ple_dim, H, 0, 0)) ||
                        (rc = add(&p, L("per_layer_projection.weight"), 2, H, c.ple_dim, 0, 0)) ||
                        (rc = add(&p, L("post_per_layer_input_norm.weight"), 1, H, 0, 1, 1.0))))
        break;
      rc = add(&p, L("layer_scalar"), 1, 1, 0, 2, 0.5);
    }
#undef L
  }
  if (!rc && !c.tie_embeddings) {
    const char *saved = p.prefix;
    p.prefix = "";
    rc = add(&p, "lm_head.weight", 2, c.vocab, H, 0, 0);
    p.prefix = saved;
  }
  if (!rc) rc = oc_st_writer_set_metadata(p.w, "format", "pt", err);
  if (!rc) {
    char *path = oc_atomic_dir_file(&d, "model.safetensors");
    rc = path ? oc_st_writer_write(p.w, path, err) : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    free(path);
  }
  if (rc) oc_atomic_dir_abort(&d);
  else rc = oc_atomic_dir_commit(&d, err);
  oc_st_writer_free(p.w);
  free(p.ctx);
  oc_config_free(&c);
  return rc;
}

int oc_random_checkpoint(const char *config_path, const char *out_dir, uint64_t seed, oc_error *err) {
  cJSON *cfg;
  if (oc_json_parse_file(config_path, &cfg, err)) return -1;
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
  int is_bert = cJSON_IsString(mt) && strcmp(mt->valuestring, "modernbert") == 0;
  cJSON_Delete(cfg);
  return is_bert ? oc_mbert_random(config_path, out_dir, 3, seed, err) : oc_random_model(config_path, out_dir, seed, err);
}
