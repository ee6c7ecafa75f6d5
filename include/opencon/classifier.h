/* opencon — the exchange classifier: a ModernBERT directory + tokenizer + thresholds, and its
 * decisions (the MVP's scores and verdicts). */
#ifndef OPENCON_CLASSIFIER_H
#define OPENCON_CLASSIFIER_H
#include <cjson/cJSON.h>

#include "opencon/chat.h"
#include "opencon/modernbert.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct oc_classifier {
  oc_mbert *m;
  oc_chat *tok;
  int unsafe_label;   /* "unsafe" or "unsafe_compliance" (both: a load error), else the last label */
  double allow_threshold, block_threshold;
  int max_length;
  cJSON *config;      /* classifier_config.json (or an empty object) */
} oc_classifier;

/* config.json + model.safetensors (every tensor: oc_mbert_load) + tokenizer.json + optional
 * classifier_config.json: thresholds (defaults allow 0.35, block 0.65), max_length (default 512, or
 * max_position_embeddings if smaller; from the file an integer from oc_exchange_min_length up to
 * max_position_embeddings) and label_mapping (must agree with id2label). Only a classifier_config.json
 * that does not exist at all means the defaults: a dangling symlink or a directory is an error
 * naming it. */
int oc_classifier_load(const char *dir, oc_classifier **out, oc_error *err);
/* The same without the tokenizer files (tok is NULL): for scoring token ids (oc_classifier_score_ids);
 * scoring text is then an error, and max_length is checked only against [3, max_position_embeddings]. */
int oc_classifier_load_ids_only(const char *dir, oc_classifier **out, oc_error *err);
void oc_classifier_free(oc_classifier *c);
int oc_classifier_set_thresholds(oc_classifier *c, double allow, double block, oc_error *err); /* 0 <= allow < block <= 1 */
/* A classifier by local directory or Hub id (oc_resolve_model), its thresholds replaced by allow /
 * block unless NaN (then checked as oc_classifier_set_thresholds does); ids_only: loaded without
 * its tokenizer (oc_classifier_load_ids_only). *out is NULL on failure. */
int oc_classifier_open(const char *id, int ids_only, double allow, double block, oc_classifier **out, oc_error *err);

typedef enum oc_verdict { OC_VERDICT_ALLOW, OC_VERDICT_UNCERTAIN, OC_VERDICT_BLOCK } oc_verdict;
const char *oc_verdict_name(oc_verdict v); /* "allow", "uncertain", "block" */

typedef struct oc_decision {
  oc_verdict verdict;
  double score;        /* P(unsafe label); a non-finite score is a block */
  char reason[200];
  double allow_threshold, block_threshold;
  int n_labels;
  double probs[OC_MBERT_MAX_LABELS];
  float logits[OC_MBERT_MAX_LABELS];
} oc_decision;

/* The MVP's plain exchange text ("User:\n{prompt}\n\nAssistant:\n{response}") -> ids with [CLS]/[SEP],
 * truncated to max_length; an exchange that encodes to nothing is an error. */
int oc_exchange_encode(const oc_chat *tok, const char *prompt, const char *response, int max_length, oc_encoding *enc, oc_error *err);
/* The smallest max_length that holds an exchange: its frame ("User:", "Assistant:", [CLS], [SEP]) and
 * one token of text (below it every exchange would read the same); -1 on error. */
int oc_exchange_min_length(const oc_chat *tok, oc_error *err);
/* oc_exchange_encode with the classifier's tokenizer and max_length */
int oc_classifier_encode(const oc_classifier *c, const char *prompt, const char *response, oc_encoding *enc, oc_error *err);
/* probabilities of C logits (max-subtracted, in double) */
void oc_softmax(const float *logits, int C, double *probs);
/* Score n exchanges in one batch (no padding). The _ws calls read the classifier and write only
 * the caller's workspace (oc_mbert_ws_new), so threads with a workspace each can score at once;
 * the others use the model's own workspace (one thread at a time). */
int oc_classifier_score_batch_ws(const oc_classifier *c, oc_mbert_ws *ws, const char *const *prompts, const char *const *responses, int n,
                                 oc_decision *out, oc_error *err);
int oc_classifier_score_ws(const oc_classifier *c, oc_mbert_ws *ws, const char *prompt, const char *response, oc_decision *out, oc_error *err);
int oc_classifier_score_batch(oc_classifier *c, const char *const *prompts, const char *const *responses, int n, oc_decision *out,
                              oc_error *err);
int oc_classifier_score(oc_classifier *c, const char *prompt, const char *response, oc_decision *out, oc_error *err);
/* Score given token ids (inspection); at most max_position_embeddings of them. */
int oc_classifier_score_ids(oc_classifier *c, const int32_t *ids, int n, oc_decision *out, oc_error *err);
/* verdict from a score: >= block -> block; >= allow -> uncertain; else allow. A NaN or Inf score
 * is a block (fail closed: it can only come from a broken input or model). */
void oc_decide(double score, double allow, double block, oc_decision *d);
/* {"verdict", "score", "reason", "allow_threshold", "block_threshold", "label_scores": {name: p}} (+ logits) */
cJSON *oc_decision_json(const oc_classifier *c, const oc_decision *d, int with_logits);


/* ---- training (train-exchange-classifier) --------------------------------------------------- */
typedef struct oc_cls_train_opts {
  const char *model_dir;   /* resolved base / classifier directory */
  const char *model_id;    /* as the user gave it (recorded) */
  const char *data_path, *out_dir, *progress_path;
  const char *resume_from; /* checkpoint directory, "latest" (newest checkpoint-N in out_dir), or NULL */
  int epochs, batch_size, max_length, prefix_augment, prefix_copies, logging_steps, save_steps;
  int64_t stop_after_steps; /* > 0: stop after this many updates (the schedule stays that of the full run) */
  double learning_rate, weight_decay, validation_size, allow_threshold, block_threshold, max_grad_norm;
  uint64_t seed;
} oc_cls_train_opts;
void oc_cls_train_defaults(oc_cls_train_opts *o);
/* Whole job: data, augmentation, split, tokenization, training, checkpoints, evaluation, output
 * directory. *metrics (may be NULL) receives the validation metrics. */
int oc_cls_train(const oc_cls_train_opts *o, cJSON **metrics, oc_error *err);

/* Multi-class metrics: accuracy, precision/recall/F1 (binary: class 1; 3+ classes: macro), ROC AUC
 * (binary; for 3+ classes unsafe-vs-rest under "roc_auc_unsafe_vs_rest"). probs [n][C]. */
cJSON *oc_cls_metrics(const int32_t *y, const double *probs, int n, int C, int unsafe_label);

/* The MVP's prefix augmentation: response cut to a random 20-80 % of its characters (UTF-8). */
char *oc_prefix_cut(const char *response, oc_rng *r);

/* ---- calibration (calibrate-exchange-classifier) -------------------------------------------- */
typedef struct oc_calib_row {
  double threshold, precision, recall, f1;
  double safe_compliance_block_rate, safe_refusal_block_rate, unsafe_block_rate; /* NaN when the class is absent */
} oc_calib_row;
/* The MVP's sweep: 200 thresholds evenly spaced in [0.01, 0.9999] plus every observed score; positives
 * are label 2 (three_class) or 1. recommended: among thresholds whose safe-compliance block rate is
 * <= max_scbr, the best by (F1, recall, lower safe-compliance block rate, precision); none feasible:
 * the lowest safe-compliance block rate, with "feasible": false. Returns the report; rows, nrows: the curve. */
cJSON *oc_calibrate(const double *scores, const int32_t *y, int n, int three_class, double max_scbr, oc_calib_row **rows, int *nrows);
cJSON *oc_calib_row_json(const oc_calib_row *r);
struct oc_dataset;
/* calibrate-exchange-classifier: the classifier's scores on ds's stratified validation split
 * (validation_size of each label, with seed; >= 1: every row), batch_size exchanges at a time, then
 * oc_calibrate. prog (may be NULL) counts scored examples. */
int oc_calibrate_classifier(oc_classifier *c, const struct oc_dataset *ds, double validation_size, uint64_t seed, double max_scbr, int batch_size,
                            oc_progress *prog, cJSON **report, oc_calib_row **rows, int *nrows, oc_error *err);
/* The report to path and, beside it (R.json -> R.svg), F1 and safe-compliance block rate against the
 * threshold; each written atomically. */
int oc_calibration_save(const char *path, const cJSON *report, const oc_calib_row *rows, int nrows, oc_error *err);

/* ---- three-class data (build-three-class-classifier-data) ------------------------------------ */
typedef struct oc_threeclass_stats { int64_t rows, written, duplicates, by_label[3]; } oc_threeclass_stats;
/* A row's "label_name" (safe_compliance / safe_refusal / unsafe_compliance) if present; otherwise
 * label 1 -> safe_refusal (1) when the response is a refusal, else unsafe_compliance (2); label 0 ->
 * safe_refusal when a refusal, else safe_compliance (0). Refusal: "refusal": true (or judge.refusal),
 * a "response_behavior" containing "refus", or a refusal phrase in the response. Duplicate
 * (prompt, response) pairs are dropped. Output written atomically. */
int oc_build_three_class(const char *in, const char *out, oc_threeclass_stats *st, oc_error *err);
int oc_is_refusal_text(const char *response);

#ifdef __cplusplus
}
#endif
#endif
