/* opencon — ModernBERT sequence classifier: inference and full fine-tuning (manual backward). */
#ifndef OPENCON_MODERNBERT_H
#define OPENCON_MODERNBERT_H
#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OC_MBERT_MAX_LABELS 16
/* Bounds of config.json values (far above ModernBERT-large; sizes drive allocations before any tensor
 * is read). Every value read is checked for its type and range with an error naming the file, the
 * key, the valid range and the value. */
#define OC_MBERT_MAX_VOCAB (1 << 24)
#define OC_MBERT_MAX_HIDDEN 65536
#define OC_MBERT_MAX_INTERMEDIATE (1 << 20)
#define OC_MBERT_MAX_LAYERS 1024
#define OC_MBERT_MAX_POSITIONS (1 << 24)
typedef struct oc_mbert_config {
  int vocab, hidden, inter, n_layers, n_heads, head_dim, n_labels;
  int local_attention;  /* positive, even; sliding layers: key j visible to query i iff |i - j| <= local_attention / 2 */
  int max_position_embeddings; /* >= 3: [CLS] token [SEP] */
  int pad_id, cls_id, sep_id;
  int pool_cls;         /* classifier_pooling: 1 "cls" (position 0), 0 "mean" */
  int head_bias;        /* classifier_bias: head.dense has a bias */
  double eps;           /* norm_eps */
  double theta_full, theta_sliding;
  int *sliding;         /* [n_layers] */
  char labels[OC_MBERT_MAX_LABELS][64]; /* id2label: distinct, non-empty (label2id, num_labels agree) */
  double initializer_range, initializer_cutoff;
} oc_mbert_config;

typedef struct oc_mbert oc_mbert;

/* A trained ModernBertForSequenceClassification directory, to score: config.json + model.safetensors
 * (F32/F16/BF16) holding every tensor of the model and nothing else. A missing tensor (the
 * classification head included) or one the config has no place for is an error naming it; a NaN or
 * Inf weight too. Labels from id2label (else num_labels, default 2, named LABEL_i). */
int oc_mbert_load(const char *dir, oc_mbert **out, oc_error *err);
/* The start of fine-tuning (train-exchange-classifier): a classifier directory as oc_mbert_load takes
 * it, or a base ModernBertForMaskedLM checkpoint, whose missing classification head (classifier.*,
 * head.*) is initialised like transformers (trunc_normal with the config's stds, our RNG from
 * init_seed) and whose masked-LM decoder.* is ignored. n_labels > 0 and label names (may be NULL)
 * set the head size when config.json has no id2label; a checkpoint whose id2label disagrees with
 * n_labels is an error. */
int oc_mbert_load_for_training(const char *dir, int n_labels, const char *const *label_names, uint64_t init_seed, oc_mbert **out,
                               oc_error *err);
void oc_mbert_free(oc_mbert *m);
const oc_mbert_config *oc_mbert_cfg(const oc_mbert *m);

/* A batch: B sequences concatenated (no padding: attention, positions and pooling per sequence). */
typedef struct oc_mbert_batch {
  const int32_t *ids; /* sum(lens) ids */
  const int *lens;    /* [B] */
  int B;
} oc_mbert_batch;

/* A forward's activations and work buffers. The model is only read by a forward, so threads that
 * each own a workspace can score with one copy of the weights at the same time. */
typedef struct oc_mbert_ws oc_mbert_ws;
oc_mbert_ws *oc_mbert_ws_new(void); /* NULL when out of memory; buffers grow on first use */
void oc_mbert_ws_free(oc_mbert_ws *ws);

/* logits [B][n_labels]. */
int oc_mbert_forward_ws(const oc_mbert *m, oc_mbert_ws *ws, const oc_mbert_batch *b, float *logits, oc_error *err);
/* The model's own workspace (training's, and that of the calls without one). */
oc_mbert_ws *oc_mbert_own_ws(oc_mbert *m);
/* oc_mbert_forward_ws with the model's own workspace (one thread at a time). */
int oc_mbert_forward(oc_mbert *m, const oc_mbert_batch *b, float *logits, oc_error *err);
/* Forward keeping activations, mean cross-entropy against labels, gradients into the model's grad
 * buffer (overwritten). Also returns logits if non-NULL. */
int oc_mbert_loss_backward(oc_mbert *m, const oc_mbert_batch *b, const int32_t *labels, float *loss, float *logits, oc_error *err);

/* The Hugging Face Trainer's update: clip the global grad norm to max_norm (coef = min(1, max/(norm+1e-6))),
 * then torch AdamW (betas 0.9/0.999, eps 1e-8, decoupled weight decay on the decay subset: every
 * weight matrix and the embeddings, not norms or biases). step counts from 1. */
typedef struct oc_adamw_state {
  float *m, *v;
  int64_t step;
} oc_adamw_state;
int oc_mbert_adamw_init(const oc_mbert *m, oc_adamw_state *st, oc_error *err);
void oc_adamw_free(oc_adamw_state *st);
double oc_mbert_grad_norm(const oc_mbert *m);
void oc_mbert_clip_and_step(oc_mbert *m, oc_adamw_state *st, double lr, double weight_decay, double max_norm, double *grad_norm,
                            double *clip_coef);

/* Buffers of the last forward in a workspace (valid until the next call): last_hidden_state
 * [sum(lens), H] in batch order, pooled [B, H], head output [B, H]. oc_mbert_outputs: of the
 * model's own workspace. */
void oc_mbert_ws_outputs(const oc_mbert_ws *ws, const float **last_hidden, const float **pooled, const float **head_out);
void oc_mbert_outputs(const oc_mbert *m, const float **last_hidden, const float **pooled, const float **head_out);

/* Parameters by their Hugging Face name (tests, checkpoints); NULL for a name this model lacks
 * (model.layers.0.attn_norm.weight, head.dense.bias without classifier_bias). */
int oc_mbert_n_params(const oc_mbert *m);
const char *oc_mbert_param_name(const oc_mbert *m, int i);
float *oc_mbert_param(oc_mbert *m, int i, int64_t *numel, int *ndim, int64_t shape[2]);
float *oc_mbert_grad(oc_mbert *m, int i);
int oc_mbert_param_decays(const oc_mbert *m, int i);
size_t oc_mbert_total_params(const oc_mbert *m);
/* Every weight finite, else an error "what: tensor NAME has a non-finite value (V) at element K". */
int oc_mbert_check_finite(const oc_mbert *m, const char *what, oc_error *err);
/* model.safetensors with the Hugging Face names (F32), atomic; weights that are not all finite are
 * not written (an error naming the tensor and element) */
int oc_mbert_save_weights(const oc_mbert *m, const char *path, oc_error *err);
/* replace the weights with those of a safetensors file written by oc_mbert_save_weights: every
 * tensor F32, finite, of the model's shape, and no other tensor */
int oc_mbert_load_weights(oc_mbert *m, const char *path, oc_error *err);

/* A random F32 checkpoint with the real names and shapes of a ModernBERT config.json (benchmarks). */
int oc_mbert_random(const char *config_path, const char *out_dir, int n_labels, uint64_t seed, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
