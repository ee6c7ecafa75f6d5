/* opencon — stage one of the guard: labelled exchanges, activation collection, linear probes. */
#ifndef OPENCON_PROBE_H
#define OPENCON_PROBE_H
#include "opencon/base.h"
#include "opencon/chat.h"
#include "opencon/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- data ------------------------------------------------------------------------------ */
typedef struct oc_example {
  char *prompt, *response;
  int label;    /* 0..2 */
  int64_t line; /* 1-based line of the source file */
} oc_example;

typedef struct oc_dataset {
  oc_example *ex;
  int n;
  int64_t rows_in_file;  /* valid rows seen by the scan */
  int64_t label_counts[3]; /* of the selection */
  int max_label;         /* largest label in the selection */
} oc_dataset;

/* JSONL with {"prompt": str, "response": str, "label": 0|1|2} a line (other keys ignored, blank
 * lines skipped). Streams the file twice: a scan that validates every line and keeps (offset,
 * label) only, then reads the selected rows. max_examples > 0: the MVP's label-balanced sample
 * (each label's rows shuffled with the seed, taken round-robin across labels, the selection
 * shuffled); 0: every row in file order. Errors name the file and line. */
int oc_dataset_load(const char *path, int64_t max_examples, uint64_t seed, oc_dataset *out, oc_error *err);
void oc_dataset_free(oc_dataset *d);
/* FNV-1a 64 of prompt, response and label: identifies an example in activation files. */
uint64_t oc_example_hash(const oc_example *e);

/* Stratified split: for each label, its indices shuffled with the seed; round(frac * count)
 * go to validation (at least 1 when frac > 0 and the label has 2+ rows, never all of them).
 * Index arrays are malloc'd. */
int oc_stratified_split(const int32_t *y, int n, double frac, uint64_t seed, int64_t **train, int *n_train,
                        int64_t **val, int *n_val, oc_error *err);

/* ---- activations ----------------------------------------------------------------------- */
typedef struct oc_activations {
  int n, hidden, n_layers, n_hidden_states; /* n_hidden_states = num_hidden_layers + 1 */
  int *layers;        /* as the user gave them (e.g. -4) */
  float **X;          /* [n_layers][n * hidden] */
  int32_t *y;
  int64_t *line;
  uint64_t *hash;
  char *model_id;
  char *model_family;
  int use_chat_template, max_length;
} oc_activations;

typedef struct oc_collect_opts {
  const char *model_id;    /* recorded with the activations */
  int use_chat_template;
  int max_length;          /* tokens; 0 = 2048 */
  int n_layers;
  const int *layers;       /* hidden-state indices as given (negative allowed) */
  const char *journal_path; /* NULL: no resume journal */
  int pack_tokens;         /* consecutive examples share one prefill while their tokens fit; <= 1: one each */
} oc_collect_opts;

/* Format + tokenize every example, ONE forward pass each (no LM head, layers after the deepest
 * tap skipped), final-token hidden state of every requested layer. With a journal path, each
 * finished example is appended to the journal (checksummed records); a later call with the same
 * settings and data continues after the last complete record. The journal is left in place
 * (the caller removes it once the result is saved). */
int oc_collect_activations(const oc_model *m, const oc_chat *chat, const oc_dataset *ds, const oc_collect_opts *o,
                           oc_activations *out, oc_progress *prog, oc_error *err);
/* safetensors: X.<layer> [N, H] F32, y [N] I32, line [N] I64, hash [N] U64, metadata. Atomic. */
int oc_activations_save(const oc_activations *a, const char *path, oc_error *err);
int oc_activations_load(const char *path, oc_activations *a, oc_error *err);
/* Index into a->layers of a layer (matched on the resolved hidden-state index); -1 if absent. */
int oc_activations_find(const oc_activations *a, int layer);
void oc_activations_free(oc_activations *a);
const char *oc_family_name(oc_family f);

/* ---- probe ----------------------------------------------------------------------------- */
typedef struct oc_probe {
  int hidden;
  float *w; /* [hidden] */
  float b;
} oc_probe;

typedef struct oc_probe_train_opts {
  int epochs;          /* 100 */
  double lr;           /* 1e-3 */
  double weight_decay; /* 0.01 */
  int batch_size;      /* 16 */
  uint64_t seed;
  int standardize;     /* train on (x - mean) / std, folded back into w, b at the end */
  const float *init_w; /* NULL: torch.nn.Linear-style random init from the seed; else start here */
  float init_b;
} oc_probe_train_opts;
void oc_probe_train_defaults(oc_probe_train_opts *o);

/* Logistic probe w.h + b: BCE-with-logits (mean over the batch), AdamW as torch.optim.AdamW
 * (betas 0.9/0.999, eps 1e-8, decoupled decay), mini-batches of a seeded shuffle each epoch,
 * init like torch.nn.Linear (U(-1/sqrt(H), 1/sqrt(H))) from the seed. Rows idx[0..n) of X. The
 * result does not depend on the thread count. final_loss: mean training loss of the last epoch. */
int oc_probe_train(const float *X, int hidden, const int32_t *y, const int64_t *idx, int n,
                   const oc_probe_train_opts *o, oc_probe *out, double *final_loss, oc_progress *prog, oc_error *err);
float oc_probe_logit(const oc_probe *p, const float *h);
float oc_sigmoid(float x);
void oc_probe_free(oc_probe *p);
/* probe.safetensors (head.weight [1,H], head.bias [1]), atomic */
int oc_probe_save(const oc_probe *p, const char *path, oc_error *err);
/* probe.safetensors, or a probe.pt written by torch.save(state_dict) (zip + pickle) */
int oc_probe_load(const char *path, oc_probe *p, oc_error *err);
/* The .pt reader on bytes in memory (fuzzing); path names the source in errors. */
int oc_torch_pt_parse_probe(const void *data, size_t len, const char *path, oc_probe *p, oc_error *err);

/* ---- metrics --------------------------------------------------------------------------- */
#define OC_CALIB_BINS 10
typedef struct oc_metrics {
  int n, n_pos;
  double accuracy, precision, recall, f1; /* at 0.5 */
  double roc_auc;                          /* NaN when a class is missing */
  double target_fpr, threshold_at_fpr, fpr_at_threshold, tpr_at_threshold;
  double calib_mean_score[OC_CALIB_BINS], calib_frac_pos[OC_CALIB_BINS];
  int calib_count[OC_CALIB_BINS];
} oc_metrics;
/* scores = P(unsafe); labels 0/1. threshold_at_fpr: the smallest threshold t with
 * #{safe: score >= t} <= target_fpr * #safe. */
void oc_binary_metrics(const float *scores, const int32_t *y, int n, double target_fpr, oc_metrics *m);
double oc_roc_auc(const float *scores, const int32_t *y, int n);
/* {"accuracy":..,...} as a cJSON object (NaN -> null) */
cJSON *oc_metrics_json(const oc_metrics *m);

/* ---- fitting a probe on one layer of a collection, and its artifacts ---------------------- */
typedef struct oc_probe_fit {
  oc_probe probe;
  oc_metrics val, train; /* val: held-out split (== train when validation_size is 0) */
  int n_train, n_val;
  double final_loss;
} oc_probe_fit;

/* Stratified split of a->y with split_seed, train on the training rows of layer index li
 * (index into a->layers), metrics on both sides. Labels must be 0/1. */
int oc_probe_fit_layer(const oc_activations *a, int li, double validation_size, uint64_t split_seed, double target_fpr,
                       const oc_probe_train_opts *o, oc_probe_fit *out, oc_progress *prog, oc_error *err);
void oc_probe_fit_free(oc_probe_fit *f);

/* Guard settings stored with a probe (config.json); defaults are the MVP's. */
typedef struct oc_probe_config {
  char *model_id, *model_family;
  int layer, hidden_size;
  double threshold, pause_threshold;
  int probe_every_n_tokens, smoothing_window;
  int use_chat_template;
  double calibrated_threshold; /* NaN when absent */
} oc_probe_config;
void oc_probe_config_defaults(oc_probe_config *c);
int oc_probe_config_load(const char *path, oc_probe_config *c, oc_error *err);
void oc_probe_config_free(oc_probe_config *c);

/* SVG line plot of ROC AUC and F1 by layer (atomic write). */
int oc_sweep_svg(const char *path, const int *layers, int n, const double *auc, const double *f1, oc_error *err);
#ifdef __cplusplus
}
#endif
#endif
