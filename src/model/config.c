/* config.json -> oc_model_config for the supported decoder families. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/json.h"
#include "opencon/model.h"

static const char *SUPPORTED =
    "Gemma4ForConditionalGeneration, Gemma4ForCausalLM (gemma4, gemma4_text), Gemma3ForCausalLM, "
    "Gemma3ForConditionalGeneration (gemma3, gemma3_text), LlamaForCausalLM (llama), Qwen3ForCausalLM (qwen3)";

typedef struct {
  const cJSON *text;  /* text_config or root */
  const cJSON *root;
  const char *path;
  oc_error *err;
} ctx;

static const cJSON *get(const ctx *c, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->text, key);
  if ((!v || cJSON_IsNull(v)) && c->text != c->root) v = cJSON_GetObjectItemCaseSensitive(c->root, key);
  return (v && !cJSON_IsNull(v)) ? v : NULL;
}

/* key as an integer in [lo, hi]; absent or null: def, or an error when required. A string, a
 * fraction, a list or a number out of range is an error naming the key, the range and the value. */
static int get_int(const ctx *c, const char *key, int def, int required, int lo, int hi, int *out) {
  const cJSON *v = get(c, key);
  if (!v) {
    if (required) return oc_fail(c->err, "%s: required key \"%s\" is missing", c->path, key);
    *out = def;
    return 0;
  }
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) || v->valuedouble != floor(v->valuedouble)) {
    char shown[48];
    return oc_fail(c->err, "%s: \"%s\" must be an integer in [%d, %d], got %s", c->path, key, lo, hi, oc_json_shown(v, shown, sizeof shown));
  }
  *out = (int)v->valuedouble;
  return 0;
}

static int get_double(const ctx *c, const char *key, double def, double *out) {
  const cJSON *v = get(c, key);
  if (!v) { *out = def; return 0; }
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
    char shown[48];
    return oc_fail(c->err, "%s: \"%s\" must be a finite number, got %s", c->path, key, oc_json_shown(v, shown, sizeof shown));
  }
  *out = v->valuedouble;
  return 0;
}

/* get_double for a value that must be positive (thetas, scales, caps) */
static int get_positive(const ctx *c, const char *key, double def, double *out) {
  if (get_double(c, key, def, out)) return -1;
  return *out > 0 ? 0 : oc_fail(c->err, "%s: \"%s\" must be positive, got %g", c->path, key, *out);
}

/* A flag is a JSON boolean (transformers reads "yes" or 1 as truthy, we would have read them as
 * false: neither guesses). Absent or null: def. */
static int get_bool(const ctx *c, const char *key, int def, int *out) {
  const cJSON *v = get(c, key);
  if (!v) { *out = def; return 0; }
  if (!cJSON_IsBool(v)) {
    char shown[48];
    return oc_fail(c->err, "%s: \"%s\" must be true or false, got %s", c->path, key, oc_json_shown(v, shown, sizeof shown));
  }
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return 0;
}

/* A string value; absent or null: NULL with 0, another type: an error. */
static int get_str(const ctx *c, const char *key, const char **out) {
  const cJSON *v = get(c, key);
  *out = NULL;
  if (!v) return 0;
  if (!cJSON_IsString(v)) {
    char shown[48];
    return oc_fail(c->err, "%s: \"%s\" must be a string, got %s", c->path, key, oc_json_shown(v, shown, sizeof shown));
  }
  *out = v->valuestring;
  return 0;
}

static int parse_rope(const ctx *c, const cJSON *o, double def_theta, oc_rope_params *r, const char *where) {
  memset(r, 0, sizeof *r);
  r->theta = def_theta;
  r->factor = 1.0;
  r->partial_rotary_factor = 1.0;
  r->kind = OC_ROPE_DEFAULT;
  if (!o || cJSON_IsNull(o)) return 0;
  if (!cJSON_IsObject(o)) return oc_fail(c->err, "%s: %s must be an object", c->path, where);
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_type"), *legacy = cJSON_GetObjectItemCaseSensitive(o, "type");
  if ((t && !cJSON_IsNull(t) && !cJSON_IsString(t)) || (legacy && !cJSON_IsNull(legacy) && !cJSON_IsString(legacy)))
    return oc_fail(c->err, "%s: %s.rope_type must be a string", c->path, where);
  if (!cJSON_IsString(t)) t = legacy;
  const char *kind = cJSON_IsString(t) ? t->valuestring : "default";
  if (strcmp(kind, "default") == 0) r->kind = OC_ROPE_DEFAULT;
  else if (strcmp(kind, "linear") == 0) r->kind = OC_ROPE_LINEAR;
  else if (strcmp(kind, "llama3") == 0) r->kind = OC_ROPE_LLAMA3;
  else if (strcmp(kind, "proportional") == 0) r->kind = OC_ROPE_PROPORTIONAL;
  else return oc_fail_code(c->err, OC_ERR_UNSUPPORTED, "%s: %s: unsupported rope_type \"%s\" (default, linear, llama3, proportional)", c->path, where, kind);
  const cJSON *v;
#define NUM(key, field)                                                                                  \
  if ((v = cJSON_GetObjectItemCaseSensitive(o, key)) && !cJSON_IsNull(v)) {                              \
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))                                                 \
      return oc_fail(c->err, "%s: %s.%s must be a finite number", c->path, where, key);                  \
    r->field = v->valuedouble;                                                                           \
  }
  NUM("rope_theta", theta)
  NUM("factor", factor)
  NUM("partial_rotary_factor", partial_rotary_factor)
  NUM("low_freq_factor", low_freq_factor)
  NUM("high_freq_factor", high_freq_factor)
  NUM("original_max_position_embeddings", original_max_position_embeddings)
#undef NUM
  if (!(r->theta > 0)) return oc_fail(c->err, "%s: %s.rope_theta must be positive", c->path, where);
  if (!(r->factor > 0)) return oc_fail(c->err, "%s: %s.factor must be positive", c->path, where);
  if (r->kind == OC_ROPE_LLAMA3 &&
      !(r->low_freq_factor > 0 && r->high_freq_factor > r->low_freq_factor && r->original_max_position_embeddings > 0))
    return oc_fail(c->err, "%s: %s: llama3 rope needs low_freq_factor < high_freq_factor and original_max_position_embeddings", c->path, where);
  if (r->partial_rotary_factor <= 0 || r->partial_rotary_factor > 1)
    return oc_fail(c->err, "%s: %s.partial_rotary_factor must be in (0, 1]", c->path, where);
  return 0;
}

/* eos_token_id: an id or a flat list of ids, each an integer in [0, vocab_size); at most OC_MAX_EOS
 * distinct ids (a stop id silently dropped would let generation run past the end of an answer). */
static int add_eos(const ctx *c, oc_model_config *cfg, const cJSON *v, const char *where) {
  if (!v || cJSON_IsNull(v)) return 0;
  const cJSON *one = cJSON_IsArray(v) ? v->child : v;
  for (; one; one = cJSON_IsArray(v) ? one->next : NULL) {
    double x = cJSON_IsNumber(one) ? one->valuedouble : -1;
    if (!(x >= 0 && x < cfg->vocab && x == floor(x))) {
      char shown[48];
      return oc_fail(c->err, "%s: %s must be a token id in [0, %d] or a list of them, got %s", c->path, where, cfg->vocab - 1,
                     oc_json_shown(v, shown, sizeof shown));
    }
    int id = (int)x, seen = 0;
    for (int i = 0; i < cfg->n_eos; i++) seen |= cfg->eos_token_ids[i] == id;
    if (seen) continue;
    if (cfg->n_eos == OC_MAX_EOS) return oc_fail(c->err, "%s: %s lists more than %d distinct ids", c->path, where, OC_MAX_EOS);
    cfg->eos_token_ids[cfg->n_eos++] = id;
  }
  return 0;
}

void oc_config_free(oc_model_config *cfg) {
  free(cfg->layer_types);
  cfg->layer_types = NULL;
}

const char *oc_family_name(oc_family f) {
  switch (f) {
  case OC_FAM_LLAMA: return "llama";
  case OC_FAM_QWEN3: return "qwen3";
  case OC_FAM_GEMMA3: return "gemma3";
  case OC_FAM_GEMMA4: return "gemma4";
  }
  return "unknown";
}

int oc_config_check_positions(const oc_model_config *c, int64_t n_input, int64_t n_new, oc_error *err) {
  if (n_input + n_new > c->max_position_embeddings) {
    if (n_new)
      return oc_fail(err, "%lld input tokens + %lld new tokens exceed the model's %d positions (max_position_embeddings)", (long long)n_input,
                     (long long)n_new, c->max_position_embeddings);
    return oc_fail(err, "%lld input tokens exceed the model's %d positions (max_position_embeddings)", (long long)n_input, c->max_position_embeddings);
  }
  return 0;
}

/* "quantization_config": absent (weights as their dtypes say), or opencon's q8 exactly as `opencon
 * quantize` writes it (docs/formats.md); any other method (gptq, compressed-tensors, bitsandbytes,
 * fp8, ...) is refused: its integers read as q8 values would be silently wrong weights. */
static int parse_quantization(const cJSON *root, const char *path, oc_model_config *cfg, oc_error *err) {
  const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
  if (!q || cJSON_IsNull(q)) return 0;
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(q, "quant_method"), *b = cJSON_GetObjectItemCaseSensitive(q, "block_size");
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(q, "scale_dtype"), *s = cJSON_GetObjectItemCaseSensitive(q, "scale_suffix");
  char got[64];
  if (!cJSON_IsObject(q) || !cJSON_IsString(m))
    return oc_fail(err, "%s: \"quantization_config\" must be an object with a \"quant_method\" string", path);
  if (strcmp(m->valuestring, "opencon_q8") != 0)
    return oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: quantization_config.quant_method \"%s\" is not supported (opencon_q8, as `opencon quantize` writes)",
                        path, oc_json_shown(m, got, sizeof got));
  if (!cJSON_IsNumber(b) || b->valuedouble != 32 || !cJSON_IsString(d) || strcmp(d->valuestring, "float16") != 0 ||
      (s && !(cJSON_IsString(s) && strcmp(s->valuestring, "_scale") == 0)))
    return oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: quantization_config of opencon_q8 must have block_size 32, scale_dtype \"float16\" and "
                        "scale_suffix \"_scale\" (the only layout there is)", path);
  cfg->q8_checkpoint = 1;
  return 0;
}

int oc_config_parse(const char *json, size_t len, const char *path, oc_model_config *cfg, oc_error *err) {
  memset(cfg, 0, sizeof *cfg);
  cJSON *root;
  if (oc_json_parse(json, len, path, 1, &root, err)) return -1;
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return oc_fail(err, "%s: not a JSON object (malformed config.json)", path);
  }
  ctx c = {root, root, path, err};
  const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
  const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
  const cJSON *mtj = cJSON_GetObjectItemCaseSensitive(root, "model_type");
  int rc = 0;
  if ((archs && !cJSON_IsNull(archs) && !(cJSON_IsArray(archs) && (!archs->child || cJSON_IsString(archs->child)))) ||
      (mtj && !cJSON_IsNull(mtj) && !cJSON_IsString(mtj))) {
    rc = oc_fail(err, "%s: \"architectures\" must be a list of names and \"model_type\" a string", path);
    goto done;
  }
  const char *arch = (cJSON_IsArray(archs) && cJSON_IsString(archs->child)) ? archs->child->valuestring : "";
  const char *mt = cJSON_IsString(mtj) ? mtj->valuestring : "";
  snprintf(cfg->architecture, sizeof cfg->architecture, "%s", *arch ? arch : mt);
  if (strncmp(arch, "Gemma4", 6) == 0 || strcmp(mt, "gemma4") == 0 || strcmp(mt, "gemma4_text") == 0) cfg->family = OC_FAM_GEMMA4;
  else if (strncmp(arch, "Gemma3", 6) == 0 || strcmp(mt, "gemma3") == 0 || strcmp(mt, "gemma3_text") == 0) cfg->family = OC_FAM_GEMMA3;
  else if (strcmp(arch, "LlamaForCausalLM") == 0 || (!*arch && strcmp(mt, "llama") == 0)) cfg->family = OC_FAM_LLAMA;
  else if (strcmp(arch, "Qwen3ForCausalLM") == 0 || (!*arch && strcmp(mt, "qwen3") == 0)) cfg->family = OC_FAM_QWEN3;
  else {
    rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: unsupported architecture \"%s\" (model_type \"%s\"); supported: %s", path,
                 *arch ? arch : "?", mt, SUPPORTED);
    goto done;
  }
  if ((rc = parse_quantization(root, path, cfg, err))) goto done;
  int gemma = cfg->family == OC_FAM_GEMMA3 || cfg->family == OC_FAM_GEMMA4;
  if (gemma && tc && !cJSON_IsNull(tc)) {
    if (!cJSON_IsObject(tc)) { rc = oc_fail(err, "%s: \"text_config\" must be an object", path); goto done; }
    c.text = tc;
  }

  /* sizes that drive allocations before any tensor is seen: bounded far above every real model */
  if ((rc = get_int(&c, "hidden_size", 0, 1, 1, OC_MAX_HIDDEN, &cfg->hidden)) ||
      (rc = get_int(&c, "num_hidden_layers", 0, 1, 1, OC_MAX_LAYERS, &cfg->n_layers)) ||
      (rc = get_int(&c, "num_attention_heads", 0, 1, 1, OC_MAX_HEADS, &cfg->n_heads)) ||
      (rc = get_int(&c, "intermediate_size", 0, 1, 1, OC_MAX_INTERMEDIATE, &cfg->intermediate)) ||
      (rc = get_int(&c, "vocab_size", 0, 1, 1, OC_MAX_VOCAB, &cfg->vocab)) ||
      (rc = get_int(&c, "num_key_value_heads", cfg->n_heads, 0, 1, cfg->n_heads, &cfg->n_kv_heads)))
    goto done;
  if (cfg->n_heads % cfg->n_kv_heads) { rc = oc_fail(err, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", path, cfg->n_heads, cfg->n_kv_heads); goto done; }
  int def_hd = cfg->family == OC_FAM_QWEN3 ? 128 : cfg->hidden / cfg->n_heads;
  if ((rc = get_int(&c, "head_dim", def_hd, 0, 1, OC_MAX_HIDDEN, &cfg->head_dim))) goto done;
  if (cfg->head_dim % 2) { rc = oc_fail(err, "%s: head_dim must be positive and even, got %d", path, cfg->head_dim); goto done; }
  cfg->global_head_dim = cfg->head_dim;
  if ((rc = get_double(&c, "rms_norm_eps", 1e-6, &cfg->eps))) goto done;
  /* a non-positive eps makes RMSNorm of a zero row NaN (and so every risk read after it) */
  if (!(cfg->eps > 0 && cfg->eps < 1)) { rc = oc_fail(err, "%s: rms_norm_eps must be in (0, 1), got %g", path, cfg->eps); goto done; }
  /* 0 or -1 would switch the position check off */
  if ((rc = get_int(&c, "max_position_embeddings", 8192, 0, 1, OC_MAX_POSITIONS, &cfg->max_position_embeddings))) goto done;
  if ((rc = get_int(&c, "bos_token_id", -1, 0, 0, cfg->vocab - 1, &cfg->bos_token_id)) ||
      (rc = get_int(&c, "pad_token_id", -1, 0, 0, cfg->vocab - 1, &cfg->pad_token_id)))
    goto done;
  if ((rc = add_eos(&c, cfg, cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"), "eos_token_id"))) goto done;
  if (c.text != root && (rc = add_eos(&c, cfg, cJSON_GetObjectItemCaseSensitive(c.text, "eos_token_id"), "text_config.eos_token_id"))) goto done;
  int attn_bias, mlp_bias;
  if ((rc = get_bool(&c, "attention_bias", 0, &attn_bias)) || (rc = get_bool(&c, "mlp_bias", 0, &mlp_bias))) goto done;
  if (attn_bias || mlp_bias) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: attention_bias/mlp_bias checkpoints are not supported", path); goto done; }

  const char *act;
  if ((rc = get_str(&c, gemma ? "hidden_activation" : "hidden_act", &act))) goto done;
  if (!act) act = gemma ? "gelu_pytorch_tanh" : "silu";
  if (strcmp(act, "gelu_pytorch_tanh") == 0 || strcmp(act, "gelu_tanh") == 0) cfg->act_gelu_tanh = 1;
  else if (strcmp(act, "silu") == 0) cfg->act_gelu_tanh = 0;
  else { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: unsupported activation \"%s\"", path, act); goto done; }

  /* the outer config's tie_word_embeddings decides for a multimodal checkpoint (transformers ties there) */
  if ((rc = get_bool(&c, "tie_word_embeddings", gemma ? 1 : 0, &cfg->tie_embeddings))) goto done;
  if (c.text != root) {
    ctx outer = {root, root, path, err};
    if ((rc = get_bool(&outer, "tie_word_embeddings", cfg->tie_embeddings, &cfg->tie_embeddings))) goto done;
  }
  /* absent or null: no softcapping; 0 would divide by zero in transformers */
  if (get(&c, "final_logit_softcapping") && (rc = get_positive(&c, "final_logit_softcapping", 0, &cfg->final_softcap))) goto done;
  /* Gemma 2's attention softcapping (null in Gemma 3 and 4): not implemented, so not ignored either */
  if (get(&c, "attn_logit_softcapping")) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: attn_logit_softcapping is not supported (null for none)", path); goto done; }
  if ((rc = get_int(&c, "sliding_window", 0, 0, 0, INT_MAX, &cfg->sliding_window))) goto done;

  cfg->layer_types = calloc((size_t)cfg->n_layers, sizeof *cfg->layer_types);
  if (!cfg->layer_types) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  const cJSON *lt = get(&c, "layer_types");
  if (lt) {
    if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != cfg->n_layers) { rc = oc_fail(err, "%s: layer_types must list num_hidden_layers (%d) entries", path, cfg->n_layers); goto done; }
    int i = 0;
    for (const cJSON *e = lt->child; e; e = e->next, i++) {
      if (cJSON_IsString(e) && strcmp(e->valuestring, "full_attention") == 0) cfg->layer_types[i] = OC_LAYER_FULL;
      else if (cJSON_IsString(e) && strcmp(e->valuestring, "sliding_attention") == 0) cfg->layer_types[i] = OC_LAYER_SLIDING;
      else { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: layer_types[%d]: unsupported layer type", path, i); goto done; }
    }
  } else if (cfg->family == OC_FAM_GEMMA3) {
    int pat;
    if ((rc = get_int(&c, "sliding_window_pattern", 6, 0, 1, OC_MAX_LAYERS, &pat))) goto done;
    for (int i = 0; i < cfg->n_layers; i++) cfg->layer_types[i] = ((i + 1) % pat) ? OC_LAYER_SLIDING : OC_LAYER_FULL;
  }
  int any_sliding = 0;
  for (int i = 0; i < cfg->n_layers; i++) any_sliding |= cfg->layer_types[i] == OC_LAYER_SLIDING;
  if (!gemma) {
    int qwen_sliding = 0;
    if (cfg->family == OC_FAM_QWEN3 && (rc = get_bool(&c, "use_sliding_window", 0, &qwen_sliding))) goto done;
    if (any_sliding || qwen_sliding) {
      rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: sliding-window layers are not supported for %s", path, cfg->architecture);
      goto done;
    }
    cfg->sliding_window = 0;
  } else if (any_sliding && cfg->sliding_window <= 0) {
    rc = oc_fail(err, "%s: sliding layers need a positive sliding_window", path);
    goto done;
  }

  const cJSON *rp = get(&c, "rope_parameters");
  const cJSON *rs = get(&c, "rope_scaling");
  double theta;
  switch (cfg->family) {
  case OC_FAM_LLAMA:
  case OC_FAM_QWEN3:
    if ((rc = get_positive(&c, "rope_theta", 10000.0, &theta))) goto done;
    if ((rc = parse_rope(&c, rs ? rs : rp, theta, &cfg->rope[OC_LAYER_FULL], rs ? "rope_scaling" : "rope_parameters"))) goto done;
    if (cfg->rope[0].kind == OC_ROPE_LLAMA3 && cfg->rope[0].original_max_position_embeddings <= 0)
      cfg->rope[0].original_max_position_embeddings = cfg->max_position_embeddings;
    if (cfg->rope[0].kind == OC_ROPE_PROPORTIONAL || cfg->rope[0].partial_rotary_factor != 1.0) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: partial rotary embeddings are not supported for %s", path, cfg->architecture); goto done; }
    cfg->rope[OC_LAYER_SLIDING] = cfg->rope[OC_LAYER_FULL];
    cfg->embed_scale = 1.0;
    cfg->attn_scale = 1.0 / sqrt((double)cfg->head_dim);
    cfg->qk_norm = cfg->family == OC_FAM_QWEN3;
    break;
  case OC_FAM_GEMMA3: {
    const cJSON *rf = rp ? cJSON_GetObjectItemCaseSensitive(rp, "full_attention") : NULL;
    const cJSON *rsl = rp ? cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention") : NULL;
    if (rf || rsl) {
      if ((rc = parse_rope(&c, rf, 1e6, &cfg->rope[OC_LAYER_FULL], "rope_parameters.full_attention")) ||
          (rc = parse_rope(&c, rsl, 1e4, &cfg->rope[OC_LAYER_SLIDING], "rope_parameters.sliding_attention")))
        goto done;
    } else {
      double local;
      if ((rc = get_positive(&c, "rope_theta", 1e6, &theta)) || (rc = get_positive(&c, "rope_local_base_freq", 1e4, &local))) goto done;
      if ((rc = parse_rope(&c, rs, theta, &cfg->rope[OC_LAYER_FULL], "rope_scaling"))) goto done;
      if ((rc = parse_rope(&c, NULL, local, &cfg->rope[OC_LAYER_SLIDING], "rope_local_base_freq"))) goto done;
    }
    double qpas;
    if ((rc = get_positive(&c, "query_pre_attn_scalar", cfg->head_dim, &qpas))) goto done;
    cfg->attn_scale = 1.0 / sqrt(qpas);
    cfg->embed_scale = sqrt((double)cfg->hidden);
    cfg->norm_one_offset = 1;
    cfg->qk_norm = 1;
    cfg->sandwich_norms = 1;
    break;
  }
  case OC_FAM_GEMMA4: {
    int moe, k_eq_v;
    if ((rc = get_bool(&c, "enable_moe_block", 0, &moe)) || (rc = get_bool(&c, "attention_k_eq_v", 0, &k_eq_v))) goto done;
    if (moe) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: Gemma 4 MoE (enable_moe_block) is not supported", path); goto done; }
    if (k_eq_v) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: attention_k_eq_v (Gemma 4 31B/26B) is not supported", path); goto done; }
    const char *bidi;
    if ((rc = get_str(&c, "use_bidirectional_attention", &bidi))) goto done;
    if (bidi && strcmp(bidi, "all") == 0) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: bidirectional text attention is not supported", path); goto done; }
    cfg->layer_types[cfg->n_layers - 1] = OC_LAYER_FULL;
    if ((rc = get_int(&c, "global_head_dim", cfg->head_dim, 0, 1, OC_MAX_HIDDEN, &cfg->global_head_dim))) goto done;
    if (cfg->global_head_dim % 2) { rc = oc_fail(err, "%s: global_head_dim must be positive and even, got %d", path, cfg->global_head_dim); goto done; }
    if ((rc = get_int(&c, "hidden_size_per_layer_input", 0, 0, 0, OC_MAX_HIDDEN, &cfg->ple_dim)) ||
        (rc = get_int(&c, "vocab_size_per_layer_input", cfg->vocab, 0, 1, OC_MAX_VOCAB, &cfg->ple_vocab)) ||
        (rc = get_int(&c, "num_kv_shared_layers", 0, 0, 0, cfg->n_layers - 1, &cfg->n_kv_shared)) ||
        (rc = get_bool(&c, "use_double_wide_mlp", 0, &cfg->double_wide_mlp)))
      goto done;
    const cJSON *rf = rp ? cJSON_GetObjectItemCaseSensitive(rp, "full_attention") : NULL;
    const cJSON *rsl = rp ? cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention") : NULL;
    if ((rc = parse_rope(&c, rsl, 1e4, &cfg->rope[OC_LAYER_SLIDING], "rope_parameters.sliding_attention"))) goto done;
    if (rf) {
      if ((rc = parse_rope(&c, rf, 1e6, &cfg->rope[OC_LAYER_FULL], "rope_parameters.full_attention"))) goto done;
    } else {
      cfg->rope[OC_LAYER_FULL] = (oc_rope_params){.kind = OC_ROPE_PROPORTIONAL, .theta = 1e6, .factor = 1, .partial_rotary_factor = 0.25};
    }
    cfg->attn_scale = 1.0;
    cfg->embed_scale = sqrt((double)cfg->hidden);
    cfg->qk_norm = 1;
    cfg->v_norm = 1;
    cfg->sandwich_norms = 1;
    /* KV sharing: every shared layer needs an earlier non-shared layer of its type */
    for (int i = cfg->n_layers - cfg->n_kv_shared; i < cfg->n_layers; i++)
      if (oc_config_kv_source(cfg, i) < 0) { rc = oc_fail(err, "%s: KV-shared layer %d has no earlier non-shared layer of its type", path, i); goto done; }
    break;
  }
  }
done:
  cJSON_Delete(root);
  if (rc) oc_config_free(cfg);
  return rc;
}

int oc_config_type_head_dim(const oc_model_config *c, oc_layer_type type) {
  return type == OC_LAYER_FULL ? c->global_head_dim : c->head_dim;
}

int oc_config_layer_head_dim(const oc_model_config *c, int layer) { return oc_config_type_head_dim(c, c->layer_types[layer]); }

int oc_config_layer_intermediate(const oc_model_config *c, int layer) {
  int wide = c->double_wide_mlp && c->n_kv_shared && layer >= c->n_layers - c->n_kv_shared;
  return c->intermediate * (wide ? 2 : 1);
}

int oc_config_kv_source(const oc_model_config *c, int layer) {
  int first = c->n_layers - c->n_kv_shared;
  if (c->n_kv_shared <= 0 || layer < first) return -1;
  for (int j = first - 1; j >= 0; j--)
    if (c->layer_types[j] == c->layer_types[layer]) return j;
  return -1;
}

void oc_rope_inv_freq(const oc_rope_params *p, int d, float *inv) {
  const float theta = (float)p->theta;
  int half = d / 2, n_rot = half;
  if (p->kind == OC_ROPE_PROPORTIONAL) n_rot = (int)(p->partial_rotary_factor * d / 2.0);
  for (int j = 0; j < half; j++) {
    if (j >= n_rot) { inv[j] = 0.0f; continue; }
    float e = (float)(2 * j) / (float)d;
    inv[j] = 1.0f / powf(theta, e);
  }
  if (p->kind == OC_ROPE_LINEAR || p->kind == OC_ROPE_PROPORTIONAL) {
    for (int j = 0; j < half; j++) inv[j] = inv[j] / (float)p->factor;
  } else if (p->kind == OC_ROPE_LLAMA3) {
    const float factor = (float)p->factor, low = (float)p->low_freq_factor, high = (float)p->high_freq_factor;
    const float orig = (float)p->original_max_position_embeddings;
    const float low_wl = orig / low, high_wl = orig / high;
    for (int j = 0; j < half; j++) {
      float wl = 2.0f * (float)M_PI / inv[j];
      float scaled = wl > low_wl ? inv[j] / factor : inv[j];
      if (wl >= high_wl && wl <= low_wl) {
        float s = (orig / wl - low) / (high - low);
        inv[j] = (1.0f - s) * scaled / factor + s * scaled;
      } else {
        inv[j] = scaled;
      }
    }
  }
}
