/* ModernBERT sequence classifier: parameters in one flat f32 buffer (grads and Adam moments
 * alongside), a forward that keeps what the backward needs, and the manual backward, layer by
 * layer (llm.c style). Sequences are concatenated without padding; attention, rope positions and
 * pooling are per sequence. Matrix products go through oc_gemm (fixed blocks, single-threaded
 * sgemm each): results do not depend on the thread count. */
#include <cblas.h>
#undef I /* complex.h's imaginary unit (via cblas.h); I is the intermediate size here */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gemm.h"
#include "nn/vmath.h"
#include "opencon/json.h"
#include "opencon/modernbert.h"
#include "opencon/safetensors.h"

enum { P_EMB, P_EMB_NORM, P_FINAL_NORM, P_DENSE, P_DENSE_B, P_HEAD_NORM, P_CLS_W, P_CLS_B, P_GLOBAL };
enum { L_ATTN_NORM, L_WQKV, L_WO, L_MLP_NORM, L_WI, L_WO2, L_N };

#define LN_CHUNKS 32 /* row chunks of the LayerNorm backward column sums */

typedef struct {
  char name[96];
  size_t off;
  int64_t shape[2];
  int ndim, decay, present; /* present: exists in this model (attn_norm of layer 0, dense bias) */
} param;

typedef struct {
  /* per layer [n_layers]: layer input, attn_norm output, qkv (post-rope), ctx, lse, mid residual,
   * mlp_norm output, Wi output, GeGLU output; LayerNorm stats (mean, rstd) */
  float **h, **xn1, **qkv, **ctx, **lse, **hmid, **xn2, **u, **g, **st1, **st2;
  float *emb_raw, *emb_st, *hL, *last, *fin_st;
  float *pooled, *z, *gz, *ho, *ho_st, *probs;
  int cap_tokens, cap_train, cap_batch; /* cap_train: tokens of layers 1.. (kept only when training) */
} acts;

/* Everything a forward (and the backward) writes: activations and work buffers, grown on demand
 * and kept between calls so a steady loop does not allocate. One workspace per thread that scores;
 * the model itself is only read by a forward. */
struct oc_mbert_ws {
  int n_layers;             /* of the model the buffers were sized for */
  acts a;
  float *scratch;           /* per thread attention scratch */
  float *ln_part;           /* [LN_CHUNKS, H] partial column sums of the LayerNorm backward */
  size_t scratch_per_thread;
  int scratch_threads;
  float *tmp1, *tmp2, *tmp3; /* [tokens x max(3H, 2I)] work buffers */
  size_t tmp_cap;
  float *bw[4];               /* backward [tokens x H] buffers, kept between steps (no page faults) */
  size_t bw_cap;
};

struct oc_mbert {
  oc_mbert_config c;
  param *p;
  int np;
  size_t total;
  float *w, *grad;
  int gp[P_GLOBAL];         /* index into p of the global parameters */
  int *lp;                  /* [n_layers][L_N] */
  float *inv_freq[2];       /* full, sliding */
  oc_mbert_ws *ws;          /* the workspace of oc_mbert_forward and of training */
};

const oc_mbert_config *oc_mbert_cfg(const oc_mbert *m) { return &m->c; }
int oc_mbert_n_params(const oc_mbert *m) { return m->np; }
const char *oc_mbert_param_name(const oc_mbert *m, int i) { return m->p[i].name; }
int oc_mbert_param_decays(const oc_mbert *m, int i) { return m->p[i].decay; }
size_t oc_mbert_total_params(const oc_mbert *m) { return m->total; }
float *oc_mbert_grad(oc_mbert *m, int i) { return m->p[i].present ? m->grad + m->p[i].off : NULL; }
float *oc_mbert_param(oc_mbert *m, int i, int64_t *numel, int *ndim, int64_t shape[2]) {
  const param *q = &m->p[i];
  if (!q->present) {
    if (numel) *numel = 0;
    return NULL;
  }
  if (numel) *numel = q->shape[0] * (q->ndim == 2 ? q->shape[1] : 1);
  if (ndim) *ndim = q->ndim;
  if (shape) { shape[0] = q->shape[0]; shape[1] = q->ndim == 2 ? q->shape[1] : 1; }
  return m->w + q->off;
}

static void free_acts(acts *a, int L) {
  float **lists[] = {a->h, a->xn1, a->qkv, a->ctx, a->lse, a->hmid, a->xn2, a->u, a->g, a->st1, a->st2};
  for (size_t k = 0; k < sizeof lists / sizeof *lists; k++) {
    if (!lists[k]) continue;
    for (int l = 0; l < L; l++) free(lists[k][l]);
    free(lists[k]);
  }
  free(a->emb_raw); free(a->emb_st); free(a->hL); free(a->last); free(a->fin_st);
  free(a->pooled); free(a->z); free(a->gz); free(a->ho); free(a->ho_st); free(a->probs);
  memset(a, 0, sizeof *a);
}

oc_mbert_ws *oc_mbert_ws_new(void) { return calloc(1, sizeof(oc_mbert_ws)); }

void oc_mbert_ws_free(oc_mbert_ws *ws) {
  if (!ws) return;
  free_acts(&ws->a, ws->n_layers);
  free(ws->scratch); free(ws->ln_part); free(ws->tmp1); free(ws->tmp2); free(ws->tmp3);
  for (int k = 0; k < 4; k++) free(ws->bw[k]);
  free(ws);
}

void oc_mbert_free(oc_mbert *m) {
  if (!m) return;
  oc_mbert_ws_free(m->ws);
  free(m->p); free(m->w); free(m->grad); free(m->lp); free(m->c.sliding);
  free(m->inv_freq[0]); free(m->inv_freq[1]);
  free(m);
}

/* ---------------------------------------------------------------- config */
/* k as an integer in [lo, hi]; absent or null: def. Anything else is an error naming the key, the
 * valid range and the value. */
static int cfg_int(const cJSON *j, const char *k, int def, int lo, int hi, int *out, const char *path, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
  if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) || v->valuedouble != floor(v->valuedouble)) {
    char shown[48];
    return oc_fail(err, "%s: \"%s\" must be an integer in [%d, %d], got %s", path, k, lo, hi, oc_json_shown(v, shown, sizeof shown));
  }
  *out = (int)v->valuedouble;
  return 0;
}
static int cfg_num(const cJSON *j, const char *k, double def, double *out, const char *path, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
  if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
    char shown[48];
    return oc_fail(err, "%s: \"%s\" must be a finite number, got %s", path, k, oc_json_shown(v, shown, sizeof shown));
  }
  *out = v->valuedouble;
  return 0;
}
/* a flag is a JSON boolean (absent or null: false); "yes" or 1 is an error, not a guess */
static int cfg_bool(const cJSON *j, const char *k, int *out, const char *path, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
  *out = cJSON_IsTrue(v);
  if (!v || cJSON_IsNull(v) || cJSON_IsBool(v)) return 0;
  char shown[48];
  return oc_fail(err, "%s: \"%s\" must be true or false, got %s", path, k, oc_json_shown(v, shown, sizeof shown));
}

/* id2label (and label2id, num_labels beside it) of a checkpoint that has labels: keys "0".."n-1",
 * names non-empty, at most 63 bytes and distinct (scores are reported by name and the unsafe label
 * is found by name: two labels of one name would make both ambiguous); label2id, when present, the
 * exact inverse; num_labels, when present, n. */
static int parse_labels(const cJSON *j, const cJSON *id2, int n_labels, const char *path, oc_mbert_config *c, oc_error *err) {
  int have = cJSON_GetArraySize(id2);
  if (have < 2 || have > OC_MBERT_MAX_LABELS) return oc_fail(err, "%s: id2label has %d labels (2..%d)", path, have, OC_MBERT_MAX_LABELS);
  if (n_labels > 0 && n_labels != have) return oc_fail(err, "%s: the checkpoint has %d labels, the data needs %d", path, have, n_labels);
  const cJSON *num = cJSON_GetObjectItemCaseSensitive(j, "num_labels");
  if (num && !cJSON_IsNull(num) && !(cJSON_IsNumber(num) && num->valuedouble == have)) {
    char shown[48];
    return oc_fail(err, "%s: num_labels %s contradicts the %d labels of id2label", path, oc_json_shown(num, shown, sizeof shown), have);
  }
  c->n_labels = have;
  for (int i = 0; i < have; i++) {
    char key[16];
    snprintf(key, sizeof key, "%d", i);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(id2, key);
    if (!cJSON_IsString(v)) return oc_fail(err, "%s: id2label lacks \"%d\" (keys must be 0..%d, names strings)", path, i, have - 1);
    size_t len = strlen(v->valuestring);
    if (len == 0 || len >= sizeof c->labels[i]) return oc_fail(err, "%s: id2label \"%d\": a label name has 1..%zu bytes", path, i, sizeof c->labels[i] - 1);
    memcpy(c->labels[i], v->valuestring, len + 1);
    for (int k = 0; k < i; k++)
      if (strcmp(c->labels[k], c->labels[i]) == 0) return oc_fail(err, "%s: id2label names labels %d and %d both \"%s\" (label names must be distinct)", path, k, i, c->labels[i]);
  }
  const cJSON *l2i = cJSON_GetObjectItemCaseSensitive(j, "label2id");
  if (!l2i || cJSON_IsNull(l2i)) return 0;
  if (!cJSON_IsObject(l2i) || cJSON_GetArraySize(l2i) != have)
    return oc_fail(err, "%s: label2id must map the %d names of id2label to their ids", path, have);
  for (int i = 0; i < have; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(l2i, c->labels[i]);
    if (!cJSON_IsNumber(v) || v->valuedouble != i) {
      char shown[48];
      return oc_fail(err, "%s: label2id contradicts id2label: \"%s\" is id %d in id2label, %s in label2id", path, c->labels[i], i,
                     v ? oc_json_shown(v, shown, sizeof shown) : "missing");
    }
  }
  return 0;
}

static int parse_config(const char *path, int n_labels, const char *const *label_names, oc_mbert_config *c, oc_error *err) {
  cJSON *j;
  if (oc_json_parse_file(path, &j, err)) return -1;
  int rc = -1;
  memset(c, 0, sizeof *c);
  if (!cJSON_IsObject(j)) { oc_fail(err, "%s: not a JSON object", path); goto done; }
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
  if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "modernbert") != 0) {
    oc_fail(err, "%s: model_type is %s, expected \"modernbert\" (the exchange classifier is a ModernBertForSequenceClassification)", path,
            cJSON_IsString(mt) ? mt->valuestring : "missing");
    goto done;
  }
  int gevery = 3;
  /* sizes bounded far above ModernBERT-large (they drive allocations before any tensor is seen) */
  if (cfg_int(j, "vocab_size", 50368, 1, OC_MBERT_MAX_VOCAB, &c->vocab, path, err) ||
      cfg_int(j, "hidden_size", 768, 1, OC_MBERT_MAX_HIDDEN, &c->hidden, path, err) ||
      cfg_int(j, "intermediate_size", 1152, 1, OC_MBERT_MAX_INTERMEDIATE, &c->inter, path, err) ||
      cfg_int(j, "num_hidden_layers", 22, 1, OC_MBERT_MAX_LAYERS, &c->n_layers, path, err) ||
      cfg_int(j, "num_attention_heads", 12, 1, c->hidden, &c->n_heads, path, err) ||
      cfg_int(j, "global_attn_every_n_layers", 3, 1, OC_MBERT_MAX_LAYERS, &gevery, path, err) ||
      /* a sequence is [CLS] ... [SEP] around at least one token */
      cfg_int(j, "max_position_embeddings", 8192, 3, OC_MBERT_MAX_POSITIONS, &c->max_position_embeddings, path, err) ||
      cfg_int(j, "local_attention", 128, 2, OC_MBERT_MAX_POSITIONS, &c->local_attention, path, err) ||
      cfg_int(j, "pad_token_id", 50283, 0, c->vocab - 1, &c->pad_id, path, err) ||
      cfg_int(j, "cls_token_id", 50281, 0, c->vocab - 1, &c->cls_id, path, err) ||
      cfg_int(j, "sep_token_id", 50282, 0, c->vocab - 1, &c->sep_id, path, err) ||
      cfg_num(j, "norm_eps", 1e-5, &c->eps, path, err) || cfg_num(j, "global_rope_theta", 160000.0, &c->theta_full, path, err) ||
      cfg_num(j, "local_rope_theta", 10000.0, &c->theta_sliding, path, err) ||
      cfg_num(j, "initializer_range", 0.02, &c->initializer_range, path, err) ||
      cfg_num(j, "initializer_cutoff_factor", 2.0, &c->initializer_cutoff, path, err))
    goto done;
  if (c->hidden % c->n_heads || (c->hidden / c->n_heads) % 2) {
    oc_fail(err, "%s: hidden_size %d must be num_attention_heads %d times an even head size", path, c->hidden, c->n_heads);
    goto done;
  }
  /* the sliding window is local_attention / 2 to each side: an odd value would be cut silently (0
   * would let each token see only itself) */
  if (c->local_attention % 2) { oc_fail(err, "%s: local_attention must be a positive even window, got %d", path, c->local_attention); goto done; }
  /* a NaN or a non-positive eps turns every LayerNorm into NaN (and a NaN score into "allow" in a
   * comparison that is not written for it): refuse such configs */
  if (!(c->eps > 0 && c->eps < 1)) { oc_fail(err, "%s: norm_eps must be in (0, 1), got %g", path, c->eps); goto done; }
  if (!(c->theta_full > 1 && c->theta_sliding > 1 && isfinite(c->theta_full) && isfinite(c->theta_sliding))) {
    oc_fail(err, "%s: rope thetas must be finite and > 1 (global %g, local %g)", path, c->theta_full, c->theta_sliding);
    goto done;
  }
  /* the fresh head's truncated normal: a positive std, and a cut of at least one std (resampling
   * until a draw falls within a smaller cut takes ever longer; at 0 it never ends) */
  if (!(c->initializer_range > 0 && c->initializer_range <= 1 && c->initializer_cutoff >= 1)) {
    oc_fail(err, "%s: initializer_range must be in (0, 1] and initializer_cutoff_factor >= 1 (got %g, %g)", path, c->initializer_range,
            c->initializer_cutoff);
    goto done;
  }
  c->head_dim = c->hidden / c->n_heads;
  const char *unsupported[] = {"attention_bias", "mlp_bias", "norm_bias"};
  for (int i = 0; i < 3; i++) {
    int on;
    if (cfg_bool(j, unsupported[i], &on, path, err)) goto done;
    if (on) { oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: %s = true is not supported (ModernBERT-base has none)", path, unsupported[i]); goto done; }
  }
  const char *drops[] = {"embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout"};
  for (int i = 0; i < 4; i++) {
    double d;
    if (cfg_num(j, drops[i], 0, &d, path, err)) goto done;
    if (d != 0) { oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: %s = %g: dropout is not supported (training would not be deterministic)", path, drops[i], d); goto done; }
  }
  const char *acts_k[] = {"hidden_activation", "classifier_activation"};
  for (int i = 0; i < 2; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, acts_k[i]);
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "gelu") != 0)) {
      oc_fail(err, "%s: %s must be \"gelu\"", path, acts_k[i]);
      goto done;
    }
  }
  if (cfg_bool(j, "classifier_bias", &c->head_bias, path, err)) goto done;
  const cJSON *pool = cJSON_GetObjectItemCaseSensitive(j, "classifier_pooling");
  c->pool_cls = !pool || (cJSON_IsString(pool) && strcmp(pool->valuestring, "cls") == 0);
  if (pool && !(cJSON_IsString(pool) && (strcmp(pool->valuestring, "cls") == 0 || strcmp(pool->valuestring, "mean") == 0))) {
    oc_fail(err, "%s: classifier_pooling must be \"cls\" or \"mean\"", path);
    goto done;
  }
  c->sliding = calloc((size_t)c->n_layers, sizeof(int));
  if (!c->sliding) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layer_types");
  for (int i = 0; i < c->n_layers; i++) {
    if (lt) {
      const cJSON *e = cJSON_GetArrayItem(lt, i);
      if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->n_layers || !cJSON_IsString(e) ||
          (strcmp(e->valuestring, "full_attention") && strcmp(e->valuestring, "sliding_attention"))) {
        oc_fail(err, "%s: layer_types must list full_attention / sliding_attention for each of the %d layers", path, c->n_layers);
        goto done;
      }
      c->sliding[i] = strcmp(e->valuestring, "sliding_attention") == 0;
    } else {
      c->sliding[i] = i % gevery != 0;
    }
  }
  const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
  if (rp && !cJSON_IsNull(rp)) {
    if (!cJSON_IsObject(rp)) { oc_fail(err, "%s: rope_parameters must be an object", path); goto done; }
    const char *kinds[2] = {"full_attention", "sliding_attention"};
    double *th[2] = {&c->theta_full, &c->theta_sliding};
    for (int k = 0; k < 2; k++) {
      const cJSON *o = cJSON_GetObjectItemCaseSensitive(rp, kinds[k]);
      if (o && !cJSON_IsObject(o)) { oc_fail(err, "%s: rope_parameters.%s must be an object", path, kinds[k]); goto done; }
      const cJSON *rt = o ? cJSON_GetObjectItemCaseSensitive(o, "rope_type") : NULL;
      if (rt && (!cJSON_IsString(rt) || strcmp(rt->valuestring, "default"))) { oc_fail(err, "%s: only rope_type \"default\" is supported", path); goto done; }
      if (o && cfg_num(o, "rope_theta", *th[k], th[k], path, err)) goto done;
      if (!(*th[k] > 1 && isfinite(*th[k]))) { oc_fail(err, "%s: rope_parameters.%s.rope_theta must be finite and > 1", path, kinds[k]); goto done; }
    }
  }
  const cJSON *id2 = cJSON_GetObjectItemCaseSensitive(j, "id2label");
  if (id2 && !cJSON_IsNull(id2) && !cJSON_IsObject(id2)) { oc_fail(err, "%s: id2label must be an object", path); goto done; }
  if (cJSON_IsObject(id2) && cJSON_GetArraySize(id2) > 0) {
    if (parse_labels(j, id2, n_labels, path, c, err)) goto done;
  } else {
    const cJSON *l2i = cJSON_GetObjectItemCaseSensitive(j, "label2id");
    if (l2i && !cJSON_IsNull(l2i) && !(cJSON_IsObject(l2i) && !l2i->child)) { oc_fail(err, "%s: label2id without id2label (which name has which id?)", path); goto done; }
    int nl = n_labels > 0 ? n_labels : 0;
    if (!nl && cfg_int(j, "num_labels", 2, 2, OC_MBERT_MAX_LABELS, &nl, path, err)) goto done;
    if (nl < 2 || nl > OC_MBERT_MAX_LABELS) { oc_fail(err, "%s: need 2..%d labels, got %d", path, OC_MBERT_MAX_LABELS, nl); goto done; }
    c->n_labels = nl;
    for (int i = 0; i < nl; i++) snprintf(c->labels[i], sizeof c->labels[i], "%s", label_names && label_names[i] ? label_names[i] : "");
    for (int i = 0; i < nl; i++) if (!c->labels[i][0]) snprintf(c->labels[i], sizeof c->labels[i], "LABEL_%d", i);
  }
  rc = 0;
done:
  cJSON_Delete(j);
  if (rc) { free(c->sliding); c->sliding = NULL; }
  return rc;
}

/* ---------------------------------------------------------------- parameters */
static int add_param(oc_mbert *m, int cap, const char *name, int64_t d0, int64_t d1, int decay, int present) {
  if (m->np == cap) return -1;
  param *q = &m->p[m->np];
  snprintf(q->name, sizeof q->name, "%s", name);
  q->shape[0] = d0;
  q->shape[1] = d1;
  q->ndim = d1 > 0 ? 2 : 1;
  q->decay = decay;
  q->present = present;
  q->off = m->total;
  if (present) m->total += (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
  return m->np++;
}

static int plan_params(oc_mbert *m, oc_error *err) {
  const oc_mbert_config *c = &m->c;
  int cap = P_GLOBAL + L_N * c->n_layers;
  m->p = calloc((size_t)cap, sizeof *m->p);
  m->lp = malloc(sizeof(int) * (size_t)c->n_layers * L_N);
  if (!m->p || !m->lp) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  const int64_t H = c->hidden, I = c->inter;
  char n[96];
  m->gp[P_EMB] = add_param(m, cap, "model.embeddings.tok_embeddings.weight", c->vocab, H, 1, 1);
  m->gp[P_EMB_NORM] = add_param(m, cap, "model.embeddings.norm.weight", H, 0, 0, 1);
  for (int l = 0; l < c->n_layers; l++) {
    int *lp = m->lp + (size_t)l * L_N;
#define LP(k, suffix, d0, d1, dec, pres) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), lp[k] = add_param(m, cap, n, d0, d1, dec, pres))
    LP(L_ATTN_NORM, "attn_norm.weight", H, 0, 0, l > 0);
    LP(L_WQKV, "attn.Wqkv.weight", 3 * H, H, 1, 1);
    LP(L_WO, "attn.Wo.weight", H, H, 1, 1);
    LP(L_MLP_NORM, "mlp_norm.weight", H, 0, 0, 1);
    LP(L_WI, "mlp.Wi.weight", 2 * I, H, 1, 1);
    LP(L_WO2, "mlp.Wo.weight", H, I, 1, 1);
#undef LP
  }
  m->gp[P_FINAL_NORM] = add_param(m, cap, "model.final_norm.weight", H, 0, 0, 1);
  m->gp[P_DENSE] = add_param(m, cap, "head.dense.weight", H, H, 1, 1);
  m->gp[P_DENSE_B] = add_param(m, cap, "head.dense.bias", H, 0, 0, c->head_bias);
  m->gp[P_HEAD_NORM] = add_param(m, cap, "head.norm.weight", H, 0, 0, 1);
  m->gp[P_CLS_W] = add_param(m, cap, "classifier.weight", c->n_labels, H, 1, 1);
  m->gp[P_CLS_B] = add_param(m, cap, "classifier.bias", c->n_labels, 0, 0, 1);
  m->w = calloc(m->total, sizeof(float));
  m->grad = calloc(m->total, sizeof(float));
  if (!m->w || !m->grad) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory: %zu parameters", m->total);
  return 0;
}

#define W(m, k) ((m)->w + (m)->p[(m)->gp[k]].off)
#define G(m, k) ((m)->grad + (m)->p[(m)->gp[k]].off)
#define LW(m, l, k) ((m)->w + (m)->p[(m)->lp[(size_t)(l) * L_N + (k)]].off)
#define LG(m, l, k) ((m)->grad + (m)->p[(m)->lp[(size_t)(l) * L_N + (k)]].off)

/* trunc_normal(0, std, +-cut*std) by resampling, Box-Muller normals from our RNG */
static void trunc_normal(float *x, size_t n, double std, double cut, oc_rng *r) {
  for (size_t i = 0; i < n; i++) {
    double v;
    do {
      double u1 = oc_rng_uniform(r), u2 = oc_rng_uniform(r);
      v = sqrt(-2.0 * log(u1 > 0 ? u1 : 1e-300)) * cos(2 * M_PI * u2) * std;
    } while (fabs(v) > cut * std);
    x[i] = (float)v;
  }
}

/* A NaN or Inf weight makes every score NaN, and a NaN score must never reach a verdict: such a
 * checkpoint is refused at load, naming the tensor and the first bad element. */
static int check_finite(const float *x, size_t n, const char *path, const char *name, oc_error *err) {
  size_t i = oc_find_nonfinite(x, n);
  return i < n ? oc_fail(err, "%s: tensor \"%s\" has a non-finite value (%g) at element %zu", path, name, (double)x[i], i) : 0;
}

/* A fresh classification head like transformers' _init_weights: classifier.weight trunc_normal with
 * std 1/sqrt(hidden), head.dense with the output-layer std, head.norm ones, biases zero. */
static void init_head_param(const oc_mbert *m, int i, float *dst, size_t numel, oc_rng *rng) {
  if (i == m->gp[P_CLS_W]) trunc_normal(dst, numel, 1.0 / sqrt((double)m->c.hidden), m->c.initializer_cutoff, rng);
  else if (i == m->gp[P_DENSE]) trunc_normal(dst, numel, m->c.initializer_range / sqrt(2.0 * m->c.n_layers), m->c.initializer_cutoff, rng);
  else if (i == m->gp[P_HEAD_NORM]) for (size_t k = 0; k < numel; k++) dst[k] = 1.0f;
  else memset(dst, 0, numel * sizeof(float));
}

/* A tensor of the file this model has no place for (a layer beyond num_hidden_layers, a norm bias
 * the config says is absent, a head of another layout) would be silently ignored: refused, naming
 * it. A base checkpoint's masked-LM decoder (decoder.*) is what fine-tuning replaces. */
static int check_no_unused(const oc_mbert *m, const oc_st_file *f, int used, int for_training, const char *wp, oc_error *err) {
  for (int k = 0; k < oc_st_count(f) && used < oc_st_count(f); k++) {
    const char *name = oc_st_at(f, k)->name;
    int known = for_training && strncmp(name, "decoder.", 8) == 0;
    for (int i = 0; i < m->np && !known; i++) known = m->p[i].present && strcmp(m->p[i].name, name) == 0;
    if (!known) return oc_fail(err, "%s: tensor \"%s\" is not part of the model config.json describes", wp, name);
  }
  return 0;
}

static int load(const char *dir, int n_labels, const char *const *label_names, uint64_t init_seed, int for_training, oc_mbert **out,
                oc_error *err) {
  *out = NULL;
  oc_blas_init();
  oc_mbert *m = calloc(1, sizeof *m);
  if (!m || !(m->ws = oc_mbert_ws_new())) { free(m); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  char *cp = oc_path_join(dir, "config.json"), *wp = oc_path_join(dir, "model.safetensors");
  oc_st_file *f = NULL;
  int rc = -1, used = 0;
  if (parse_config(cp, n_labels, label_names, &m->c, err) || plan_params(m, err)) goto done;
  if (oc_st_open(wp, &f, err)) goto done;
  oc_rng rng;
  oc_rng_seed(&rng, init_seed ^ 0xc1a55ull);
  for (int i = 0; i < m->np; i++) {
    param *q = &m->p[i];
    if (!q->present) continue;
    const oc_tensor *t = oc_st_get(f, q->name);
    size_t numel = (size_t)q->shape[0] * (size_t)(q->ndim == 2 ? q->shape[1] : 1);
    float *dst = m->w + q->off;
    if (!t) {
      /* only the start of fine-tuning from a base (masked-LM) checkpoint may lack the classification
       * head; a classifier that scores with a freshly initialised head gives confident verdicts of nothing */
      int is_head = strncmp(q->name, "classifier.", 11) == 0 || strncmp(q->name, "head.", 5) == 0;
      if (!for_training || !is_head) {
        oc_fail(err, "%s: tensor \"%s\" missing%s", wp, q->name,
                is_head ? " (a base checkpoint without a trained head can only start train-exchange-classifier)" : "");
        goto done;
      }
      init_head_param(m, i, dst, numel, &rng);
      continue;
    }
    used++;
    int ok = t->ndim == q->ndim && t->shape[0] == q->shape[0] && (q->ndim == 1 || t->shape[1] == q->shape[1]);
    if (!ok) {
      oc_fail(err, "%s: tensor \"%s\" has shape [%lld%s%lld], config.json implies [%lld%s%lld]", wp, q->name, (long long)t->shape[0],
              t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)q->shape[0], q->ndim > 1 ? ", " : "",
              q->ndim > 1 ? (long long)q->shape[1] : 0LL);
      goto done;
    }
    if (oc_to_f32(t->dtype, t->data, dst, numel)) { oc_fail(err, "%s: tensor \"%s\" has dtype %s (need F32, F16 or BF16)", wp, q->name, oc_dtype_name(t->dtype)); goto done; }
    if (check_finite(dst, numel, wp, q->name, err)) goto done;
  }
  if (check_no_unused(m, f, used, for_training, wp, err)) goto done;
  const int hd = m->c.head_dim;
  for (int k = 0; k < 2; k++) {
    m->inv_freq[k] = malloc(sizeof(float) * (size_t)(hd / 2));
    if (!m->inv_freq[k]) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
    float theta = (float)(k ? m->c.theta_sliding : m->c.theta_full);
    for (int j = 0; j < hd / 2; j++) m->inv_freq[k][j] = 1.0f / powf(theta, (float)(2 * j) / (float)hd); /* f32 like torch */
  }
  rc = 0;
done:
  if (f) oc_st_close(f);
  free(cp); free(wp);
  if (rc) { oc_wrap(err, "loading classifier %s", dir); oc_mbert_free(m); }
  else *out = m;
  return rc;
}

int oc_mbert_load(const char *dir, oc_mbert **out, oc_error *err) { return load(dir, 0, NULL, 0, 0, out, err); }

int oc_mbert_load_for_training(const char *dir, int n_labels, const char *const *label_names, uint64_t init_seed, oc_mbert **out, oc_error *err) {
  return load(dir, n_labels, label_names, init_seed, 1, out, err);
}

/* ---------------------------------------------------------------- buffers */

static int ensure(const oc_mbert *m, oc_mbert_ws *ws, int T, int maxlen, int B, int training, oc_error *err) {
  const oc_mbert_config *c = &m->c;
  const size_t H = c->hidden, I = c->inter, L = c->n_layers, nh = c->n_heads;
  acts *a = &ws->a;
  if (a->h && ws->n_layers != c->n_layers) return oc_fail(err, "a ModernBERT workspace is used with a model of another depth");
  size_t wide = 3 * H > 2 * I ? 3 * H : 2 * I;
  if ((size_t)T * wide > ws->tmp_cap) {
    if (oc_grow_floats(&ws->tmp1, (size_t)T * wide, NULL) || oc_grow_floats(&ws->tmp2, (size_t)T * wide, NULL) || oc_grow_floats(&ws->tmp3, (size_t)T * wide, NULL)) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    ws->tmp_cap = (size_t)T * wide;
  }
  if (!a->h) {
    ws->n_layers = c->n_layers;
    float ***lists[] = {&a->h, &a->xn1, &a->qkv, &a->ctx, &a->lse, &a->hmid, &a->xn2, &a->u, &a->g, &a->st1, &a->st2};
    for (size_t k = 0; k < sizeof lists / sizeof *lists; k++)
      if (!(*lists[k] = calloc(L, sizeof(float *)))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  /* inference keeps one layer's worth (index 0 reused); training keeps every layer */
  if (T > a->cap_tokens || (training && T > a->cap_train)) {
    int cap = T > a->cap_tokens ? T : a->cap_tokens;
    size_t keep = training ? L : 1;
    for (size_t l = 0; l < keep; l++) {
      size_t t = (size_t)cap;
      if (oc_grow_floats(&a->h[l], t * H, NULL) || oc_grow_floats(&a->xn1[l], t * H, NULL) || oc_grow_floats(&a->qkv[l], t * 3 * H, NULL) || oc_grow_floats(&a->ctx[l], t * H, NULL) ||
          oc_grow_floats(&a->lse[l], t * nh, NULL) || oc_grow_floats(&a->hmid[l], t * H, NULL) || oc_grow_floats(&a->xn2[l], t * H, NULL) || oc_grow_floats(&a->u[l], t * 2 * I, NULL) ||
          oc_grow_floats(&a->g[l], t * I, NULL) || oc_grow_floats(&a->st1[l], t * 2, NULL) || oc_grow_floats(&a->st2[l], t * 2, NULL))
        return oc_fail_code(err, OC_ERR_NOMEM, "out of memory: activations for %d tokens", cap);
    }
    if (oc_grow_floats(&a->emb_raw, (size_t)cap * H, NULL) || oc_grow_floats(&a->emb_st, (size_t)cap * 2, NULL) || oc_grow_floats(&a->hL, (size_t)cap * H, NULL) ||
        oc_grow_floats(&a->last, (size_t)cap * H, NULL) || oc_grow_floats(&a->fin_st, (size_t)cap * 2, NULL))
      return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    a->cap_tokens = cap;
    if (training) a->cap_train = cap;
  }
  if (B > a->cap_batch) {
    if (oc_grow_floats(&a->pooled, (size_t)B * H, NULL) || oc_grow_floats(&a->z, (size_t)B * H, NULL) || oc_grow_floats(&a->gz, (size_t)B * H, NULL) || oc_grow_floats(&a->ho, (size_t)B * H, NULL) ||
        oc_grow_floats(&a->ho_st, (size_t)B * 2, NULL) || oc_grow_floats(&a->probs, (size_t)B * c->n_labels, NULL))
      return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    a->cap_batch = B;
  }
  if (training && !ws->ln_part && !(ws->ln_part = malloc(sizeof(float) * LN_CHUNKS * H))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  /* attention scratch: scores + dP for the longest sequence, per thread */
  size_t per = (size_t)maxlen * (size_t)maxlen * 2;
  int nthr = omp_get_max_threads();
  if (per > ws->scratch_per_thread || nthr > ws->scratch_threads) {
    if (oc_grow_floats(&ws->scratch, per * (size_t)nthr, NULL)) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory: attention scratch for %d tokens", maxlen);
    ws->scratch_per_thread = per;
    ws->scratch_threads = nthr;
  }
  return 0;
}

/* ---------------------------------------------------------------- pieces */
/* LayerNorm without bias: y = (x - mean) * rstd * w; st[2t] = mean, st[2t+1] = rstd */
static void layernorm(const float *x, const float *w, int n, int H, float eps, float *y, float *st) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < n; t++) {
    const float *r = x + (size_t)t * H;
    double s = 0, s2 = 0;
    for (int j = 0; j < H; j++) s += r[j];
    float mean = (float)(s / H);
    for (int j = 0; j < H; j++) { double d = r[j] - mean; s2 += d * d; }
    float rstd = (float)(1.0 / sqrt(s2 / H + eps));
    float *o = y + (size_t)t * H;
    for (int j = 0; j < H; j++) o[j] = (r[j] - mean) * rstd * w[j];
    if (st) { st[2 * t] = mean; st[2 * t + 1] = rstd; }
  }
}

/* dx (+)= LayerNorm backward; dw += sum_t dy * xhat. The column sums run over LN_CHUNKS fixed
 * chunks of rows (each summed in token order while its rows are in cache, then the chunks in
 * order): one pass over the rows, and the same sums with any thread count. part: [LN_CHUNKS, H]. */
static void layernorm_backward(const float *x, const float *w, const float *st, const float *dy, int n, int H, float *dx, int accumulate,
                               float *dw, float *part) {
  memset(part, 0, sizeof(float) * LN_CHUNKS * (size_t)H);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < LN_CHUNKS; c++) {
    const int t0 = (int)((int64_t)n * c / LN_CHUNKS), t1 = (int)((int64_t)n * (c + 1) / LN_CHUNKS);
    float *pw = part + (size_t)c * H;
    for (int t = t0; t < t1; t++) {
      const float *r = x + (size_t)t * H, *g = dy + (size_t)t * H;
      float mean = st[2 * t], rstd = st[2 * t + 1];
      double s1 = 0, s2 = 0;
      for (int j = 0; j < H; j++) {
        float xh = (r[j] - mean) * rstd, d = g[j] * w[j];
        s1 += d;
        s2 += d * xh;
      }
      float m1 = (float)(s1 / H), m2 = (float)(s2 / H);
      float *o = dx + (size_t)t * H;
      for (int j = 0; j < H; j++) {
        float xh = (r[j] - mean) * rstd, v = rstd * (g[j] * w[j] - m1 - xh * m2);
        o[j] = accumulate ? o[j] + v : v;
        pw[j] += g[j] * xh;
      }
    }
  }
  for (int c = 0; c < LN_CHUNKS; c++)
    for (int j = 0; j < H; j++) dw[j] += part[(size_t)c * H + j];
}

/* exact GELU: x * Phi(x); its derivative Phi(x) + x * phi(x) (the same polynomial erf and exp
 * as the vectorized MLP rows, nn/vmath.c) */
static inline float gelu_cdf(float x) { return 0.5f * (1.0f + oc_verf1(x * (float)M_SQRT1_2)); }
static inline float gelu(float x) { return x * gelu_cdf(x); }
static inline float gelu_grad(float x) { return gelu_cdf(x) + x * oc_vexp1(-0.5f * x * x) * 0.3989422804014327f; }

/* rope on q and k of a [T, 3H] qkv buffer, positions restart per sequence; sign -1 applies the
 * inverse rotation (the backward of the forward rotation) */
static void rope(float *qkv, const int *pos, int T, int H, int nh, int hd, const float *inv, float sign) {
  const int half = hd / 2;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++) {
    for (int j = 0; j < half; j++) {
      float a = (float)pos[t] * inv[j], cs = cosf(a), sn = sign * sinf(a);
      for (int blk = 0; blk < 2; blk++)
        for (int h = 0; h < nh; h++) {
          float *v = qkv + (size_t)t * 3 * H + (size_t)blk * H + (size_t)h * hd;
          float x1 = v[j], x2 = v[j + half];
          v[j] = x1 * cs - x2 * sn;
          v[j + half] = x2 * cs + x1 * sn;
        }
    }
  }
}

/* Query blocks: a full layer is one block (one big product); a sliding layer takes 64 queries at a
 * time against only the keys within the window of any of them. */
#define QBLOCK 64
static void key_span(int sliding, int hw, int n, int q0, int q1, int *k0, int *k1) {
  *k0 = 0;
  *k1 = n;
  if (sliding) {
    *k0 = q0 - hw > 0 ? q0 - hw : 0;
    *k1 = q1 + hw < n ? q1 + hw : n;
  }
}

/* the columns [j0, j1) of a score row (keys k0 + j) that query qi may attend to: all, or those
 * within the sliding window |qi - key| <= hw */
static void window_cols(int sliding, int hw, int qi, int k0, int nk, int *j0, int *j1) {
  *j0 = 0;
  *j1 = nk;
  if (sliding) {
    if (qi - hw - k0 > 0) *j0 = qi - hw - k0;
    if (qi + hw + 1 - k0 < nk) *j1 = qi + hw + 1 - k0;
  }
}

/* softmax(q k^T * scale + mask) v per (sequence, head); lse stored for the backward */
static void attention(const oc_mbert *m, oc_mbert_ws *ws, const float *qkv, const int *off, const int *lens, int B, int sliding, float *ctx, float *lse) {
  const int H = m->c.hidden, nh = m->c.n_heads, hd = m->c.head_dim, hw = m->c.local_attention / 2;
  const float scale = 1.0f / sqrtf((float)hd);
  const int np = B * nh;
#pragma omp parallel for schedule(dynamic, 1)
  for (int p = 0; p < np; p++) {
    const int b = p / nh, h = p % nh, n = lens[b], qb = sliding ? QBLOCK : n;
    float *S = ws->scratch + (size_t)omp_get_thread_num() * ws->scratch_per_thread;
    const float *Q = qkv + (size_t)off[b] * 3 * H + (size_t)h * hd, *K = Q + H, *V = Q + 2 * H;
    for (int q0 = 0; q0 < n; q0 += qb) {
      int q1 = q0 + qb < n ? q0 + qb : n, k0, k1;
      key_span(sliding, hw, n, q0, q1, &k0, &k1);
      const int nq = q1 - q0, nk = k1 - k0;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, Q + (size_t)q0 * 3 * H, 3 * H, K + (size_t)k0 * 3 * H, 3 * H, 0.0f, S, nk);
      for (int i = 0; i < nq; i++) {
        const int qi = q0 + i;
        int j0, j1;
        window_cols(sliding, hw, qi, k0, nk, &j0, &j1);
        oc_softmax_span(S + (size_t)i * nk, nk, j0, j1, lse ? &lse[(size_t)(off[b] + qi) * nh + h] : NULL);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, S, nk, V + (size_t)k0 * 3 * H, 3 * H, 0.0f,
                  ctx + (size_t)(off[b] + q0) * H + (size_t)h * hd, H);
    }
  }
}

/* gradients of q, k, v (post-rope) into dqkv [T, 3H] from dctx; P is recomputed from lse */
static void attention_backward(const oc_mbert *m, oc_mbert_ws *ws, const float *qkv, const float *ctx, const float *lse, const float *dctx, const int *off,
                               const int *lens, int B, int sliding, float *dqkv) {
  const int H = m->c.hidden, nh = m->c.n_heads, hd = m->c.head_dim, hw = m->c.local_attention / 2;
  const float scale = 1.0f / sqrtf((float)hd);
  const int np = B * nh;
#pragma omp parallel for schedule(dynamic, 1)
  for (int p = 0; p < np; p++) {
    const int b = p / nh, h = p % nh, n = lens[b], qb = sliding ? QBLOCK : n;
    float *P = ws->scratch + (size_t)omp_get_thread_num() * ws->scratch_per_thread;
    const size_t o3 = (size_t)off[b] * 3 * H + (size_t)h * hd, o1 = (size_t)off[b] * H + (size_t)h * hd;
    const float *Q = qkv + o3, *K = Q + H, *V = Q + 2 * H, *O = ctx + o1, *dO = dctx + o1;
    float *dQ = dqkv + o3, *dK = dQ + H, *dV = dQ + 2 * H;
    for (int t = 0; t < n; t++) { /* dK and dV accumulate over query blocks */
      memset(dK + (size_t)t * 3 * H, 0, sizeof(float) * (size_t)hd);
      memset(dV + (size_t)t * 3 * H, 0, sizeof(float) * (size_t)hd);
    }
    for (int q0 = 0; q0 < n; q0 += qb) {
      int q1 = q0 + qb < n ? q0 + qb : n, k0, k1;
      key_span(sliding, hw, n, q0, q1, &k0, &k1);
      const int nq = q1 - q0, nk = k1 - k0;
      float *dP = P + (size_t)nq * nk;
      const float *Qb = Q + (size_t)q0 * 3 * H, *Kb = K + (size_t)k0 * 3 * H, *Vb = V + (size_t)k0 * 3 * H, *dOb = dO + (size_t)q0 * H;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, Qb, 3 * H, Kb, 3 * H, 0.0f, P, nk);
      for (int i = 0; i < nq; i++) {
        const int qi = q0 + i;
        float l = lse[(size_t)(off[b] + qi) * nh + h];
        float *row = P + (size_t)i * nk;
        int j0, j1;
        window_cols(sliding, hw, qi, k0, nk, &j0, &j1);
        oc_vexp_shift(row + j0, j1 - j0, l);
        for (int j = 0; j < j0; j++) row[j] = 0.0f;
        for (int j = j1; j < nk; j++) row[j] = 0.0f;
      }
      /* dV += P^T dO ; dP = dO V^T */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, 1.0f, P, nk, dOb, H, 1.0f, dV + (size_t)k0 * 3 * H, 3 * H);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, 1.0f, dOb, H, Vb, 3 * H, 0.0f, dP, nk);
      /* dS = P * (dP - rowsum(dO * O)) */
      for (int i = 0; i < nq; i++) {
        float d = 0;
        for (int k = 0; k < hd; k++) d += dOb[(size_t)i * H + k] * O[(size_t)(q0 + i) * H + k];
        float *pr = P + (size_t)i * nk, *dr = dP + (size_t)i * nk;
        for (int j = 0; j < nk; j++) dr[j] = pr[j] * (dr[j] - d);
      }
      /* dQ = dS K * scale ; dK += dS^T Q * scale */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, scale, dP, nk, Kb, 3 * H, 0.0f, dQ + (size_t)q0 * 3 * H, 3 * H);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, scale, dP, nk, Qb, 3 * H, 1.0f, dK + (size_t)k0 * 3 * H, 3 * H);
    }
  }
}

/* ---------------------------------------------------------------- forward */
static int run_forward(const oc_mbert *m, oc_mbert_ws *ws, const oc_mbert_batch *bt, float *logits, int training, int **off_out, int **pos_out, oc_error *err) {
  const oc_mbert_config *c = &m->c;
  const int H = c->hidden, I = c->inter, L = c->n_layers, B = bt->B;
  int T = 0;
  if (B < 1) return oc_fail(err, "empty batch");
  for (int b = 0; b < B; b++) {
    if (bt->lens[b] < 1) return oc_fail(err, "sequence %d of the batch is empty", b);
    T += bt->lens[b];
  }
  for (int t = 0; t < T; t++)
    if (bt->ids[t] < 0 || bt->ids[t] >= c->vocab) return oc_fail(err, "token id %d at position %d is outside the vocabulary (0..%d)", bt->ids[t], t, c->vocab - 1);
  int maxlen = 0;
  for (int b = 0; b < B; b++) if (bt->lens[b] > maxlen) maxlen = bt->lens[b];
  if (ensure(m, ws, T, maxlen, B, training, err)) return -1;
  int *off = malloc(sizeof(int) * (size_t)B), *pos = malloc(sizeof(int) * (size_t)T);
  if (!off || !pos) { free(off); free(pos); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (int b = 0, o = 0; b < B; o += bt->lens[b++]) {
    off[b] = o;
    for (int t = 0; t < bt->lens[b]; t++) pos[o + t] = t;
  }
  acts *a = &ws->a;
  const float eps = (float)c->eps;
  const float *E = W(m, P_EMB);
  for (int t = 0; t < T; t++) memcpy(a->emb_raw + (size_t)t * H, E + (size_t)bt->ids[t] * H, sizeof(float) * (size_t)H);
  float *h = a->h[0];
  layernorm(a->emb_raw, W(m, P_EMB_NORM), T, H, eps, h, a->emb_st);
  for (int l = 0; l < L; l++) {
    int k = training ? l : 0;
    float *hin = a->h[k], *xn1 = a->xn1[k], *qkv = a->qkv[k], *ctx = a->ctx[k], *hmid = a->hmid[k], *xn2 = a->xn2[k], *u = a->u[k], *g = a->g[k];
    if (l > 0) memcpy(hin, a->hL, sizeof(float) * (size_t)T * H); /* a->hL holds the previous layer's output */
    const float *ain = hin;
    if (l > 0) { layernorm(hin, LW(m, l, L_ATTN_NORM), T, H, eps, xn1, a->st1[k]); ain = xn1; }
    oc_gemm(0, 1, T, 3 * H, H, ain, H, LW(m, l, L_WQKV), H, 0.0f, qkv, 3 * H);
    rope(qkv, pos, T, H, c->n_heads, c->head_dim, m->inv_freq[c->sliding[l]], 1.0f);
    attention(m, ws, qkv, off, bt->lens, B, c->sliding[l], ctx, a->lse[k]);
    memcpy(hmid, hin, sizeof(float) * (size_t)T * H);
    oc_gemm(0, 1, T, H, H, ctx, H, LW(m, l, L_WO), H, 1.0f, hmid, H);
    layernorm(hmid, LW(m, l, L_MLP_NORM), T, H, eps, xn2, a->st2[k]);
    oc_gemm(0, 1, T, 2 * I, H, xn2, H, LW(m, l, L_WI), H, 0.0f, u, 2 * I);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) oc_gelu_glu_row(u + (size_t)t * 2 * I, g + (size_t)t * I, I);
    memcpy(a->hL, hmid, sizeof(float) * (size_t)T * H);
    oc_gemm(0, 1, T, H, I, g, I, LW(m, l, L_WO2), I, 1.0f, a->hL, H);
  }
  layernorm(a->hL, W(m, P_FINAL_NORM), T, H, eps, a->last, a->fin_st);
  for (int b = 0; b < B; b++) {
    float *pl = a->pooled + (size_t)b * H;
    if (c->pool_cls) { memcpy(pl, a->last + (size_t)off[b] * H, sizeof(float) * (size_t)H); continue; }
    for (int j = 0; j < H; j++) {
      float s = 0;
      for (int t = 0; t < bt->lens[b]; t++) s += a->last[(size_t)(off[b] + t) * H + j];
      pl[j] = s / (float)bt->lens[b];
    }
  }
  oc_gemm(0, 1, B, H, H, a->pooled, H, W(m, P_DENSE), H, 0.0f, a->z, H);
  if (c->head_bias)
    for (int b = 0; b < B; b++) for (int j = 0; j < H; j++) a->z[(size_t)b * H + j] += W(m, P_DENSE_B)[j];
  for (size_t i = 0; i < (size_t)B * H; i++) a->gz[i] = gelu(a->z[i]);
  layernorm(a->gz, W(m, P_HEAD_NORM), B, H, eps, a->ho, a->ho_st);
  const int C = c->n_labels;
  for (int b = 0; b < B; b++)
    for (int k = 0; k < C; k++) {
      const float *wr = W(m, P_CLS_W) + (size_t)k * H, *x = a->ho + (size_t)b * H;
      float s = 0;
      for (int j = 0; j < H; j++) s += wr[j] * x[j];
      logits[(size_t)b * C + k] = s + W(m, P_CLS_B)[k];
    }
  if (off_out) *off_out = off; else free(off);
  if (pos_out) *pos_out = pos; else free(pos);
  return 0;
}

void oc_mbert_ws_outputs(const oc_mbert_ws *ws, const float **last_hidden, const float **pooled, const float **head_out) {
  if (last_hidden) *last_hidden = ws->a.last;
  if (pooled) *pooled = ws->a.pooled;
  if (head_out) *head_out = ws->a.ho;
}

void oc_mbert_outputs(const oc_mbert *m, const float **last_hidden, const float **pooled, const float **head_out) {
  oc_mbert_ws_outputs(m->ws, last_hidden, pooled, head_out);
}

int oc_mbert_forward_ws(const oc_mbert *m, oc_mbert_ws *ws, const oc_mbert_batch *b, float *logits, oc_error *err) {
  return run_forward(m, ws, b, logits, 0, NULL, NULL, err);
}

oc_mbert_ws *oc_mbert_own_ws(oc_mbert *m) { return m->ws; }

int oc_mbert_forward(oc_mbert *m, const oc_mbert_batch *b, float *logits, oc_error *err) { return oc_mbert_forward_ws(m, m->ws, b, logits, err); }

/* ---------------------------------------------------------------- backward */
int oc_mbert_loss_backward(oc_mbert *m, const oc_mbert_batch *bt, const int32_t *labels, float *loss, float *logits_out, oc_error *err) {
  const oc_mbert_config *c = &m->c;
  const int H = c->hidden, I = c->inter, L = c->n_layers, B = bt->B, C = c->n_labels;
  for (int b = 0; b < B; b++)
    if (labels[b] < 0 || labels[b] >= C) return oc_fail(err, "label %d of batch row %d is outside 0..%d", labels[b], b, C - 1);
  float *logits = malloc(sizeof(float) * (size_t)B * C);
  int *off = NULL, *pos = NULL;
  if (!logits) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  oc_mbert_ws *ws = m->ws;
  if (run_forward(m, ws, bt, logits, 1, &off, &pos, err)) { free(logits); return -1; }
  int T = 0;
  for (int b = 0; b < B; b++) T += bt->lens[b];
  acts *a = &ws->a;
  memset(m->grad, 0, sizeof(float) * m->total);
  /* cross-entropy, mean over the batch */
  double total = 0;
  float *dlog = a->probs;
  for (int b = 0; b < B; b++) {
    const float *z = logits + (size_t)b * C;
    float mx = z[0];
    for (int k = 1; k < C; k++) if (z[k] > mx) mx = z[k];
    double s = 0;
    for (int k = 0; k < C; k++) s += exp((double)z[k] - mx);
    double lse = mx + log(s);
    total += lse - z[labels[b]];
    for (int k = 0; k < C; k++) dlog[(size_t)b * C + k] = (float)((exp((double)z[k] - lse) - (k == labels[b])) / B);
  }
  *loss = (float)(total / B);
  if (logits_out) memcpy(logits_out, logits, sizeof(float) * (size_t)B * C);
  free(logits);
  float *dho = ws->tmp1, *dgz = ws->tmp2, *dpool = ws->tmp3;
  /* classifier */
  for (int k = 0; k < C; k++) {
    float *gw = G(m, P_CLS_W) + (size_t)k * H;
    for (int b = 0; b < B; b++) {
      float d = dlog[(size_t)b * C + k];
      G(m, P_CLS_B)[k] += d;
      for (int j = 0; j < H; j++) gw[j] += d * a->ho[(size_t)b * H + j];
    }
  }
  for (int b = 0; b < B; b++)
    for (int j = 0; j < H; j++) {
      float s = 0;
      for (int k = 0; k < C; k++) s += dlog[(size_t)b * C + k] * W(m, P_CLS_W)[(size_t)k * H + j];
      dho[(size_t)b * H + j] = s;
    }
  layernorm_backward(a->gz, W(m, P_HEAD_NORM), a->ho_st, dho, B, H, dgz, 0, G(m, P_HEAD_NORM), ws->ln_part);
  for (size_t i = 0; i < (size_t)B * H; i++) dgz[i] *= gelu_grad(a->z[i]); /* now dz */
  if (c->head_bias)
    for (int b = 0; b < B; b++) for (int j = 0; j < H; j++) G(m, P_DENSE_B)[j] += dgz[(size_t)b * H + j];
  oc_gemm(1, 0, H, H, B, dgz, H, a->pooled, H, 1.0f, G(m, P_DENSE), H);
  oc_gemm(0, 0, B, H, H, dgz, H, W(m, P_DENSE), H, 0.0f, dpool, H);
  /* pooling -> d last_hidden_state */
  if ((size_t)T * H > ws->bw_cap) {
    for (int k = 0; k < 4; k++)
      if (oc_grow_floats(&ws->bw[k], (size_t)T * H, NULL)) { free(off); free(pos); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
    ws->bw_cap = (size_t)T * H;
  }
  float *dlast = ws->bw[0], *dh = ws->bw[1], *dmid = ws->bw[2], *dtmp = ws->bw[3];
  memset(dlast, 0, sizeof(float) * (size_t)T * H);
  for (int b = 0; b < B; b++) {
    const float *dp = dpool + (size_t)b * H;
    if (c->pool_cls) { memcpy(dlast + (size_t)off[b] * H, dp, sizeof(float) * (size_t)H); continue; }
    float inv = 1.0f / (float)bt->lens[b];
    for (int t = 0; t < bt->lens[b]; t++)
      for (int j = 0; j < H; j++) dlast[(size_t)(off[b] + t) * H + j] = dp[j] * inv;
  }
  layernorm_backward(a->hL, W(m, P_FINAL_NORM), a->fin_st, dlast, T, H, dh, 0, G(m, P_FINAL_NORM), ws->ln_part);
  float *dg = ws->tmp1, *du = ws->tmp2, *dqkv = ws->tmp3;
  for (int l = L - 1; l >= 0; l--) {
    const float *hin = a->h[l], *ain = l > 0 ? a->xn1[l] : a->h[l];
    /* h_out = hmid + Wo2 . g */
    memcpy(dmid, dh, sizeof(float) * (size_t)T * H);
    oc_gemm(0, 0, T, I, H, dh, H, LW(m, l, L_WO2), I, 0.0f, dg, I);
    oc_gemm(1, 0, H, I, T, dh, H, a->g[l], I, 1.0f, LG(m, l, L_WO2), I);
    const float *u = a->u[l];
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) oc_gelu_glu_backward_row(u + (size_t)t * 2 * I, dg + (size_t)t * I, du + (size_t)t * 2 * I, I);
    oc_gemm(1, 0, 2 * I, H, T, du, 2 * I, a->xn2[l], H, 1.0f, LG(m, l, L_WI), H);
    oc_gemm(0, 0, T, H, 2 * I, du, 2 * I, LW(m, l, L_WI), H, 0.0f, dtmp, H);
    layernorm_backward(a->hmid[l], LW(m, l, L_MLP_NORM), a->st2[l], dtmp, T, H, dmid, 1, LG(m, l, L_MLP_NORM), ws->ln_part);
    /* hmid = hin + Wo . ctx */
    oc_gemm(0, 0, T, H, H, dmid, H, LW(m, l, L_WO), H, 0.0f, dtmp, H); /* d ctx */
    oc_gemm(1, 0, H, H, T, dmid, H, a->ctx[l], H, 1.0f, LG(m, l, L_WO), H);
    attention_backward(m, ws, a->qkv[l], a->ctx[l], a->lse[l], dtmp, off, bt->lens, B, c->sliding[l], dqkv);
    rope(dqkv, pos, T, H, c->n_heads, c->head_dim, m->inv_freq[c->sliding[l]], -1.0f);
    oc_gemm(1, 0, 3 * H, H, T, dqkv, 3 * H, ain, H, 1.0f, LG(m, l, L_WQKV), H);
    oc_gemm(0, 0, T, H, 3 * H, dqkv, 3 * H, LW(m, l, L_WQKV), H, 0.0f, dtmp, H); /* d ain */
    memcpy(dh, dmid, sizeof(float) * (size_t)T * H);
    if (l > 0) layernorm_backward(hin, LW(m, l, L_ATTN_NORM), a->st1[l], dtmp, T, H, dh, 1, LG(m, l, L_ATTN_NORM), ws->ln_part);
    else for (size_t i = 0; i < (size_t)T * H; i++) dh[i] += dtmp[i];
  }
  /* embeddings: norm backward, then rows (the padding row never gets a gradient) */
  layernorm_backward(a->emb_raw, W(m, P_EMB_NORM), a->emb_st, dh, T, H, dtmp, 0, G(m, P_EMB_NORM), ws->ln_part);
  float *gE = G(m, P_EMB);
#pragma omp parallel for schedule(static)
  for (int j = 0; j < H; j++)
    for (int t = 0; t < T; t++)
      if (bt->ids[t] != c->pad_id) gE[(size_t)bt->ids[t] * H + j] += dtmp[(size_t)t * H + j];
  free(off); free(pos);
  return 0;
}

/* ---------------------------------------------------------------- optimizer */
int oc_mbert_adamw_init(const oc_mbert *m, oc_adamw_state *st, oc_error *err) {
  st->m = calloc(m->total, sizeof(float));
  st->v = calloc(m->total, sizeof(float));
  st->step = 0;
  if (!st->m || !st->v) { oc_adamw_free(st); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory: optimizer state for %zu parameters", m->total); }
  return 0;
}

void oc_adamw_free(oc_adamw_state *st) {
  free(st->m); free(st->v);
  memset(st, 0, sizeof *st);
}

double oc_mbert_grad_norm(const oc_mbert *m) {
  /* fixed chunks summed in order: the same value with any thread count */
  const size_t chunk = 1 << 16, n = m->total, nc = (n + chunk - 1) / chunk;
  double *part = malloc(sizeof(double) * (nc ? nc : 1));
  if (!part) return NAN;
#pragma omp parallel for schedule(static)
  for (size_t k = 0; k < nc; k++) {
    double s = 0;
    size_t e = (k + 1) * chunk < n ? (k + 1) * chunk : n;
    for (size_t i = k * chunk; i < e; i++) s += (double)m->grad[i] * m->grad[i];
    part[k] = s;
  }
  double s = 0;
  for (size_t k = 0; k < nc; k++) s += part[k];
  free(part);
  return sqrt(s);
}

void oc_mbert_clip_and_step(oc_mbert *m, oc_adamw_state *st, double lr, double wd, double max_norm, double *grad_norm, double *clip_coef) {
  double norm = oc_mbert_grad_norm(m);
  double coef = max_norm / (norm + 1e-6);
  if (coef > 1) coef = 1;
  if (grad_norm) *grad_norm = norm;
  if (clip_coef) *clip_coef = coef;
  st->step++;
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double bc1 = 1 - pow(b1, (double)st->step), bc2 = 1 - pow(b2, (double)st->step);
  const float step_size = (float)(lr / bc1), sq_bc2 = (float)sqrt(bc2), fcoef = (float)coef;
  for (int i = 0; i < m->np; i++) {
    const param *q = &m->p[i];
    if (!q->present) continue;
    size_t n = (size_t)q->shape[0] * (size_t)(q->ndim == 2 ? q->shape[1] : 1);
    float *p = m->w + q->off, *g = m->grad + q->off, *mm = st->m + q->off, *vv = st->v + q->off;
    const float decay = q->decay ? (float)(1.0 - lr * wd) : 1.0f;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < n; k++) {
      float gk = coef < 1 ? g[k] * fcoef : g[k];
      p[k] *= decay;
      mm[k] += 0.1f * (gk - mm[k]); /* torch: exp_avg.lerp_(grad, 1 - beta1) */
      vv[k] = 0.999f * vv[k] + 0.001f * gk * gk;
      p[k] -= step_size * mm[k] / (sqrtf(vv[k]) / sq_bc2 + (float)eps);
    }
  }
}

/* ---------------------------------------------------------------- weights i/o */
int oc_mbert_check_finite(const oc_mbert *m, const char *what, oc_error *err) {
  for (int i = 0; i < m->np; i++) {
    const param *q = &m->p[i];
    size_t n = (size_t)q->shape[0] * (size_t)(q->ndim == 2 ? q->shape[1] : 1), k = q->present ? oc_find_nonfinite(m->w + q->off, n) : n;
    if (k < n) return oc_fail(err, "%s: tensor \"%s\" has a non-finite value (%g) at element %zu", what, q->name, (double)m->w[q->off + k], k);
  }
  return 0;
}

int oc_mbert_save_weights(const oc_mbert *m, const char *path, oc_error *err) {
  /* weights that are not finite are never written: the classifier would score NaN, and a checkpoint
   * of them would resume into NaN */
  char what[1100];
  snprintf(what, sizeof what, "%s: not written", path);
  if (oc_mbert_check_finite(m, what, err)) return -1;
  oc_st_writer *w = oc_st_writer_new();
  int rc = 0;
  for (int i = 0; i < m->np && !rc; i++) {
    const param *q = &m->p[i];
    if (!q->present) continue;
    rc = oc_st_writer_add(w, q->name, OC_DT_F32, q->ndim, q->shape, m->w + q->off, err);
  }
  if (!rc) rc = oc_st_writer_set_metadata(w, "format", "pt", err) || oc_st_writer_write(w, path, err);
  oc_st_writer_free(w);
  return rc ? -1 : 0;
}

int oc_mbert_load_weights(oc_mbert *m, const char *path, oc_error *err) {
  oc_st_file *f;
  if (oc_st_open(path, &f, err)) return -1;
  int rc = 0, used = 0;
  for (int i = 0; i < m->np && !rc; i++) {
    const param *q = &m->p[i];
    if (!q->present) continue;
    const oc_tensor *t = oc_st_get(f, q->name);
    size_t n = (size_t)q->shape[0] * (size_t)(q->ndim == 2 ? q->shape[1] : 1);
    if (!t || t->dtype != OC_DT_F32 || (size_t)t->numel != n) rc = oc_fail(err, "%s: tensor \"%s\" missing or not F32 with %zu elements", path, q->name, n);
    else {
      memcpy(m->w + q->off, t->data, n * sizeof(float));
      rc = check_finite(m->w + q->off, n, path, q->name, err);
      used++;
    }
  }
  if (!rc) rc = check_no_unused(m, f, used, 0, path, err);
  oc_st_close(f);
  return rc;
}

/* ---------------------------------------------------------------- random checkpoint (benchmarks) */
int oc_mbert_random(const char *config_path, const char *out_dir, int n_labels, uint64_t seed, oc_error *err) {
  oc_mbert *m = calloc(1, sizeof *m);
  if (!m) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  int rc = -1;
  char *js = NULL, *cp = NULL, *wp = NULL;
  cJSON *j = NULL;
  oc_atomic_dir d = {0}; /* config.json and model.safetensors are put in place together */
  if (parse_config(config_path, n_labels, NULL, &m->c, err) || plan_params(m, err) || oc_atomic_dir_open(&d, out_dir, err)) goto done;
  oc_rng r;
  oc_rng_seed(&r, seed);
  for (int i = 0; i < m->np; i++) {
    const param *q = &m->p[i];
    if (!q->present) continue;
    size_t n = (size_t)q->shape[0] * (size_t)(q->ndim == 2 ? q->shape[1] : 1);
    float *w = m->w + q->off;
    if (q->ndim == 2) {
      float a = (float)sqrt(3.0 / (double)q->shape[1]);
      for (size_t k = 0; k < n; k++) w[k] = (float)(2 * oc_rng_uniform(&r) - 1) * a;
    } else {
      float v = strstr(q->name, "bias") ? 0.0f : 1.0f;
      for (size_t k = 0; k < n; k++) w[k] = v;
    }
  }
  if (oc_json_parse_file(config_path, &j, err)) goto done;
  cJSON_DeleteItemFromObjectCaseSensitive(j, "id2label");
  cJSON_DeleteItemFromObjectCaseSensitive(j, "label2id");
  cJSON *id2 = cJSON_AddObjectToObject(j, "id2label");
  for (int k = 0; k < m->c.n_labels; k++) {
    char key[16];
    snprintf(key, sizeof key, "%d", k);
    cJSON_AddStringToObject(id2, key, m->c.labels[k]);
  }
  js = cJSON_Print(j);
  cp = oc_atomic_dir_file(&d, "config.json");
  wp = oc_atomic_dir_file(&d, "model.safetensors");
  if (!js || !cp || !wp) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (oc_write_file_atomic(cp, js, strlen(js), err) || oc_mbert_save_weights(m, wp, err)) goto done;
  rc = oc_atomic_dir_commit(&d, err);
done:
  if (rc && d.tmp_path) oc_atomic_dir_abort(&d);
  cJSON_Delete(j);
  free(js); free(cp); free(wp);
  oc_mbert_free(m);
  return rc;
}
