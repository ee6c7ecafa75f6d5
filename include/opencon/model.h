/* opencon — decoder engine: Hugging Face checkpoints in, transformers-exact hidden states out. */
#ifndef OPENCON_MODEL_H
#define OPENCON_MODEL_H
#include "opencon/base.h"
#include "opencon/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum oc_family { OC_FAM_LLAMA, OC_FAM_QWEN3, OC_FAM_GEMMA3, OC_FAM_GEMMA4 } oc_family;
typedef enum oc_layer_type { OC_LAYER_FULL = 0, OC_LAYER_SLIDING = 1 } oc_layer_type;
typedef enum oc_rope_kind { OC_ROPE_DEFAULT, OC_ROPE_LINEAR, OC_ROPE_LLAMA3, OC_ROPE_PROPORTIONAL } oc_rope_kind;

typedef struct oc_rope_params {
  oc_rope_kind kind;
  double theta, factor, partial_rotary_factor;
  double low_freq_factor, high_freq_factor, original_max_position_embeddings;
} oc_rope_params;

#define OC_MAX_EOS 8
/* Normalised view of config.json (text decoder part). */
typedef struct oc_model_config {
  oc_family family;
  char architecture[96];
  int hidden, n_layers, n_heads, n_kv_heads, head_dim, global_head_dim, intermediate, vocab;
  double eps;
  int act_gelu_tanh;           /* 1: gelu_pytorch_tanh, 0: silu */
  int norm_one_offset;         /* Gemma 3: (1 + w) */
  double embed_scale;          /* sqrt(hidden) for Gemma, 1 otherwise */
  double attn_scale;           /* multiplier of q.k */
  double final_softcap;        /* 0 = none */
  int tie_embeddings;
  int sliding_window;          /* 0 = none */
  oc_layer_type *layer_types;  /* [n_layers] */
  oc_rope_params rope[2];      /* indexed by oc_layer_type */
  int qk_norm, v_norm, sandwich_norms;
  int ple_dim, ple_vocab;      /* Gemma 4 per-layer embeddings */
  int n_kv_shared, double_wide_mlp;
  int bos_token_id, pad_token_id;
  int n_eos; int eos_token_ids[OC_MAX_EOS];
  int max_position_embeddings;
  int q8_checkpoint;           /* quantization_config names opencon_q8: I8 matrices with F16 "_scale" beside */
} oc_model_config;

/* Bounds of config.json sizes (far above every supported model; a hostile config cannot make the
 * loader allocate for a billion layers). */
#define OC_MAX_LAYERS 1024
#define OC_MAX_HIDDEN 65536
#define OC_MAX_HEADS 1024
#define OC_MAX_INTERMEDIATE (1 << 20)
#define OC_MAX_VOCAB (1 << 24)
const char *oc_family_name(oc_family f); /* "llama", "qwen3", "gemma3", "gemma4" */
/* max_position_embeddings: positions are exact in f32 (rope angles) only below 2^24 */
#define OC_MAX_POSITIONS (1 << 24)
/* n positions (input + new tokens) within the model's max_position_embeddings; the error says
 * which part (input, new tokens) does not fit */
int oc_config_check_positions(const oc_model_config *c, int64_t n_input, int64_t n_new, oc_error *err);
/* Parse config.json text json[0, len) (a NUL byte in it is an error, not its end); `path` names the
 * file in errors. Unknown architectures are an error listing the supported ones. Every value read
 * is checked for its type and range, each error naming the key, the valid range and the value:
 * integers are JSON integers within the bounds above (max_position_embeddings >= 1, token ids in
 * [0, vocab_size), eos_token_id an id or a flat list of at most OC_MAX_EOS), flags JSON booleans,
 * strings strings, eps / thetas / scales / softcap finite and positive. */
int oc_config_parse(const char *json, size_t len, const char *path, oc_model_config *cfg, oc_error *err);
void oc_config_free(oc_model_config *cfg);
/* Per-layer geometry */
int oc_config_type_head_dim(const oc_model_config *c, oc_layer_type type); /* head dim of a layer type */
int oc_config_layer_head_dim(const oc_model_config *c, int layer);
int oc_config_layer_intermediate(const oc_model_config *c, int layer);
int oc_config_kv_source(const oc_model_config *c, int layer); /* -1: own K/V */
/* inv_freq [head_dim/2] for a layer type, computed in f32 as transformers does. */
void oc_rope_inv_freq(const oc_rope_params *p, int head_dim, float *inv_freq);

typedef struct oc_model oc_model;
/* How the matrices a decoded token streams (attention, MLP, per-layer projections, the LM head / tied
 * embedding) are held in memory; norms are f32 copies whatever the mode, and the per-layer-embedding
 * table stays in the file mapping (one row gathered per token).
 * STORED: as the checkpoint has them (F32, F16, BF16, or q8 for a directory `opencon quantize`
 * wrote), copied at load into one anonymous mapping on huge pages (a token reads all of it; with a
 * file's 4 KiB pages the TLB misses cost E2B's decode about a quarter of its speed).
 * Q8: quantized at load into that mapping, int8 with an f16 scale per block of 32 (docs/formats.md);
 * every product with them quantizes its inputs per block of 32 too (decode and prefill alike: results
 * do not depend on batching or chunking).
 * MMAP: as stored, read through the file mapping (no copy: the least memory, the slowest decode). */
typedef enum oc_weight_mode { OC_WEIGHTS_STORED = 0, OC_WEIGHTS_Q8 = 1, OC_WEIGHTS_MMAP = 2 } oc_weight_mode;
typedef struct oc_model_opts {
  oc_weight_mode weights;
} oc_model_opts;
/* Load a local model directory (config.json + safetensors, possibly sharded). */
int oc_model_load(const char *dir, oc_model **out, oc_error *err);
/* The same with options (NULL: the defaults, as oc_model_load). */
int oc_model_load_ex(const char *dir, const oc_model_opts *opts, oc_model **out, oc_error *err);
/* "stored", "q8" or "mmap" into *out; -1 with an error naming the value otherwise */
int oc_weight_mode_parse(const char *s, oc_weight_mode *out, oc_error *err);
const char *oc_weight_mode_name(oc_weight_mode m);
/* The streamed matrices' in-memory form: "bf16", "f16", "f32", "q8", or "mixed" when they differ. */
const char *oc_model_weights_kind(const oc_model *m);
void oc_model_free(oc_model *m);
const oc_model_config *oc_model_cfg(const oc_model *m);
const oc_weights *oc_model_weights(const oc_model *m);
/* The checkpoint's tensor `name` as the model holds it in memory (OC_DT_Q8 for a quantized matrix,
 * its values interleaved when q8_il is set: read them with oc_tensor_row); NULL when the checkpoint
 * has no such tensor. */
const oc_tensor *oc_model_tensor(const oc_model *m, const char *name);
/* `opencon quantize`: the checkpoint in src_dir with every matrix a decoded token streams in q8 (as
 * OC_WEIGHTS_Q8 would quantize it at load) written to out_dir as a whole: model.safetensors (each
 * such matrix as I8 values "NAME" and F16 scales "NAME_scale", every other tensor as it was),
 * config.json with a "quantization_config" entry, and the directory's other files copied (the
 * tokenizer, the chat template, ...). Loading out_dir gives the same results as loading src_dir
 * with OC_WEIGHTS_Q8. *bytes_in / *bytes_out (may be NULL): tensor bytes read and written. */
int oc_model_quantize(const char *src_dir, const char *out_dir, size_t *bytes_in, size_t *bytes_out, oc_error *err);
/* Bytes of weights read per decoded token (everything but row-gathered embedding tables; Q8: values and scales). */
size_t oc_model_decode_bytes(const oc_model *m);

/* A generation session: KV cache + scratch, grown on demand up to max_ctx. */
typedef struct oc_session oc_session;
oc_session *oc_session_new(const oc_model *m, int max_ctx, oc_error *err);
void oc_session_free(oc_session *s);
void oc_session_reset(oc_session *s);
int oc_session_len(const oc_session *s);
/* Drop the cache back to `len` positions (e.g. to re-run a suffix). */
int oc_session_truncate(oc_session *s, int len, oc_error *err);

/* Which hidden states to capture. Layer indices follow transformers' output_hidden_states
 * tuple (0 = embeddings, L = final-normed output), negative indices count from the end.
 * Positions are relative to the chunk; -1 = its last token; pos == NULL means every position.
 * out is [n_layers][n_pos][hidden] (n_pos = chunk length when pos == NULL). Only the asked
 * rows are copied. */
typedef struct oc_taps {
  int n_layers;
  const int *layers;
  int n_pos;
  const int *pos;
  float *out;
} oc_taps;

/* Run a chunk of ids at positions len .. len+n-1, appending to the cache.
 * logits: NULL for none, else [logit_rows][vocab] where logit_rows is n (all_logits=1)
 * or 1 (last position only). With logits == NULL and taps that do not need the last
 * layers, the remaining layers are skipped and the session can only be reset afterwards. */
int oc_forward(oc_session *s, const int32_t *ids, int n, const oc_taps *taps,
               float *logits, int all_logits, oc_error *err);

/* One decode step for several independent sessions at once (continuous batching): session ss[i]
 * gets token ids[i] at its next position (oc_session_len(ss[i])), appended to its own KV cache.
 * The weights are read once for all of them (matmuls over n rows); attention runs per session over
 * its own cache. logits: NULL or [n][vocab]; taps: NULL or taps with pos == NULL (n_pos is
 * ignored) whose out is [n_layers][n][hidden], row i being session i's new token. Every layer runs
 * whatever is tapped, so no session is left incomplete. Results equal oc_forward(ss[i], &ids[i],
 * 1, ...) for each i within f32 rounding: on the same caches bit for bit below 8 sessions, up to
 * 32 with BF16 weights on an AVX2 CPU, and at any count with q8 weights (the matmuls take the same
 * per-row kernels; only where memory for the kernels' copy of the inputs runs out do BF16 rows
 * fall back to a scalar dot, equal within f32 rounding); past that, or with F32/F16 weights from
 * 8 on, the matmuls are sgemm calls. The sessions must
 * be of one model, distinct, complete (not broken) and have room for one more position (their
 * max_ctx); n in 1..OC_MAX_BATCH. On error no session's cache length changes. Scratch: the first
 * session's chunk buffers, grown to n rows and kept (as a chunk of n tokens would grow them), so a
 * steady batch loop does not allocate. */
#define OC_MAX_BATCH 4096
int oc_forward_batch(oc_session *const *ss, int n, const int32_t *ids, const oc_taps *taps, float *logits, oc_error *err);

/* Several independent sequences in one prefill (each starts at position 0 and attends only to
 * itself): better matrix shapes for short sequences. Needs a fresh session and leaves it
 * unusable for decoding (reset it). Taps' positions index the concatenated chunk. No logits. */
int oc_forward_packed(oc_session *s, const int32_t *ids, const int *seq_lens, int n_seq, const oc_taps *taps, oc_error *err);

/* Normalise a hidden-state index (-k allowed) against n_layers; -1 on out-of-range. */
int oc_hidden_index(const oc_model_config *c, int idx, oc_error *err);
int oc_argmax(const float *x, int n);
int oc_is_eos(const oc_model_config *c, int id);

/* random-model: random BF16 weights with the real names and shapes of a decoder config. */
int oc_random_model(const char *config_path, const char *out_dir, uint64_t seed, oc_error *err);
/* A random checkpoint of whatever config.json describes: a ModernBERT classifier (model_type
 * "modernbert", 3 labels: oc_mbert_random) or a decoder (oc_random_model). */
int oc_random_checkpoint(const char *config_path, const char *out_dir, uint64_t seed, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
