/* opencon — labelled exchanges for the probes and the exchange classifier: the JSONL dataset
 * loader (validating scan, the MVP's balanced sample), the stratified train/validation split, and
 * the metrics of binary scores against labels. */
#ifndef OPENCON_DATASET_H
#define OPENCON_DATASET_H
#include <cjson/cJSON.h>

#include "opencon/base.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/* Stratified split of labels 0..2 (others are an error): for each label, its indices shuffled with the seed; round(frac * count)
 * go to validation (at least 1 when frac > 0 and the label has 2+ rows, never all of them).
 * Index arrays are malloc'd. */
int oc_stratified_split(const int32_t *y, int n, double frac, uint64_t seed, int64_t **train, int *n_train,
                        int64_t **val, int *n_val, oc_error *err);

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
/* NaN when a class is missing or a score is NaN */
double oc_roc_auc(const float *scores, const int32_t *y, int n);
/* {"accuracy":..,...} as a cJSON object (NaN -> null) */
cJSON *oc_metrics_json(const oc_metrics *m);

#ifdef __cplusplus
}
#endif
#endif
