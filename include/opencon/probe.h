/* opencon — stage one of the guard: labelled exchanges, activation collection, linear probes. */
#ifndef OPENCON_PROBE_H
#define OPENCON_PROBE_H
#include "opencon/base.h"
#include "opencon/chat.h"
#include "opencon/template.h"
#include "opencon/dataset.h"
#include "opencon/model.h"

#ifdef __cplusplus
extern "C" {
#endif

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
/* Where a probe job's activations come from: a saved collection, or the model run over a dataset. */
typedef struct oc_activation_source {
  const char *activations;  /* a saved collection (collect-activations --out); NULL: collect */
  const char *model_id;     /* a local directory or a Hub id (collecting) */
  const char *data_path;    /* JSONL exchanges (collecting) */
  int64_t max_examples;     /* the MVP's balanced sample (0: every row) */
  uint64_t sample_seed;
  int use_chat_template, max_length, pack_tokens;
  oc_template_opts template_opts; /* the chat template's clock */
  const char *journal;      /* the collection's resume journal; NULL: none */
  const char *save_to;      /* also save the collection here; NULL: don't */
  int binary;               /* refuse labels other than 0/1 and fewer than 4 examples before running the model */
  oc_weight_mode weights;   /* the decoder's matrices in memory when collecting */
} oc_activation_source;
/* What a collection read from its dataset (for the caller to report). */
typedef struct oc_collection_counts { int64_t rows_in_file, selected, by_label[3]; } oc_collection_counts;
/* The activations of the requested layers (hidden-state indices as given): loaded from src->activations
 * (each layer must be in it), or collected (oc_collect_activations) after loading the dataset, the
 * model and its chat. counts (may be NULL) receives the dataset's counts when collecting. */
int oc_activations_get(const oc_activation_source *src, const int *layers, int n_layers, oc_progress *prog, oc_activations *out,
                       oc_collection_counts *counts, oc_error *err);
/* safetensors: X.<layer> [N, H] F32, y [N] I32, line [N] I64, hash [N] U64, metadata. Atomic. */
int oc_activations_save(const oc_activations *a, const char *path, oc_error *err);
int oc_activations_load(const char *path, oc_activations *a, oc_error *err);
/* Index into a->layers of a layer (matched on the resolved hidden-state index); -1 if absent. */
int oc_activations_find(const oc_activations *a, int layer);
void oc_activations_free(oc_activations *a);

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

/* ---- token-level training (issue 23): a probe read at every response token --------------- */
/* How the tokens of one response share its loss (each token's target the exchange's label):
 * UNIFORM, the mean of the per-token BCE; RAMP, token t of T weighted (t + 1) / (T (T + 1) / 2), so
 * later tokens, with more of the response behind them, count more; CUMMAX, the mean over t of the
 * BCE of the running maximum max_{s <= t} z_s (Constitutional Classifiers): the gradient of each
 * term goes to the token holding that maximum (the first of equal ones). */
typedef enum oc_token_weighting { OC_TOKEN_UNIFORM = 0, OC_TOKEN_RAMP, OC_TOKEN_CUMMAX } oc_token_weighting;
const char *oc_token_weighting_name(int w);     /* "uniform", "ramp", "cummax" */
int oc_token_weighting_from_name(const char *name); /* -1 for any other name */
/* The loss of one response's per-token logits z[0..T) with label y (0/1), in double, and
 * d loss / d z in dz[0..T). T < 1: 0. */
double oc_token_loss(const float *z, int T, int y, int weighting, float *dz);
/* A logistic probe trained on token rows: sequence s is rows offsets[s] .. offsets[s+1]-1 of X
 * [., H], label y[s]; sequences idx[0..n) train, batch_size of them a step, each contributing its
 * oc_token_loss (mean over the batch); AdamW, init, seed and standardize (over every training token)
 * as oc_probe_train. final_loss: the mean sequence loss of the last epoch. */
int oc_probe_train_tokens(const float *X, int H, const int64_t *offsets, const int32_t *y, const int64_t *idx, int n, int weighting,
                          const oc_probe_train_opts *o, oc_probe *out, double *final_loss, oc_error *err);
/* Token-level collection (train-probe --token_level): the probe layers' hidden states at the
 * response tokens of every exchange (the prompt formatted for generation, then the response's own
 * tokens: what the guard reads), ONE teacher-forced forward pass per exchange with a tap at each
 * kept position of every layer. */
typedef struct oc_token_collect_opts {
  const char *model_id;      /* recorded in the journal header */
  int use_chat_template;
  int max_length;            /* tokens of prompt + response (the response is cut); 0 = 2048 */
  int layer;                 /* hidden-state index as given (negative allowed); with n_layers 0 the one layer */
  int max_tokens_per_example; /* 0: every response token; else at most this many (oc_token_sample) */
  uint64_t seed;             /* of the sample */
  const char *journal_path;  /* required: the rows stream there (docs/formats.md), resumable */
  int stream_rows;           /* 0: read every row back into X (rows x hidden x 4 bytes of memory); 1: leave them in the
                              * journal, read one exchange's rows at a time for training and scoring (X and pos NULL) */
  int n_layers;              /* > 0: the layers layers[0..n_layers) (distinct hidden states, at most OC_PROBE_MAX_LAYERS)
                              * instead of `layer`, each row their hidden states side by side [layers[0] | layers[1] | ...] */
  const int *layers;
} oc_token_collect_opts;
typedef struct oc_token_activations {
  int n, hidden;             /* exchanges; features per row (n_layers x the model's hidden size) */
  int n_layers;              /* layers side by side in a row */
  int64_t n_rows;            /* offsets[n] */
  int64_t *offsets;          /* [n + 1]: exchange i is rows offsets[i] .. offsets[i+1]-1 */
  int32_t *y;                /* [n] the exchange's label, every row's target */
  int64_t *line;             /* [n] the dataset line */
  int32_t *pos;              /* [n_rows] the row's response token (0-based), ascending within an exchange */
  float *X;                  /* [n_rows, hidden] read back from the journal's F16 rows; NULL when streamed */
  int64_t forward_passes;    /* model calls made by this collection (resumed exchanges cost none) */
  int64_t resumed;           /* exchanges read back from an earlier run's journal */
  char *model_id, *model_family;
  int use_chat_template, max_length;
  int max_rows;              /* the most rows of one exchange */
  struct oc_token_journal *journal; /* streamed (stream_rows): the journal the rows stay in, open read-only; NULL: rows in X */
} oc_token_activations;
#define OC_TOKEN_MAX_PER_EXAMPLE (1 << 20)
/* The response tokens kept of n_resp (1 <= n_resp): all when cap <= 0 or n_resp <= cap; else the
 * last one and cap - 1 others drawn without replacement with a generator seeded from seed and the
 * example's hash (so the sample of an exchange does not depend on the others or on a resume).
 * pos[0..count) ascending; returns count. pos holds n_resp ints. */
int oc_token_sample(int n_resp, int cap, uint64_t seed, uint64_t example_hash, int *pos);
/* Collect (resuming o->journal_path when it holds records of the same settings and data: the
 * header must match; records are checked one by one and a torn or corrupt tail is dropped), then
 * read every row back from the journal into out, or (o->stream_rows) keep the journal open for
 * oc_probe_fit_tokens to read an exchange at a time: out then holds per exchange only its offsets,
 * label and line, and the fit's memory is bounded by one exchange's rows (max_rows x hidden x 6
 * bytes), not the dataset's; a record that changed or was cut after collection is an error there.
 * Labels must be 0/1; a response of no tokens is an error. The journal is left in place (the
 * caller removes it once the probe is written; a streamed out keeps reading it until freed). */
int oc_collect_tokens(const oc_model *m, const oc_chat *chat, const oc_dataset *ds, const oc_token_collect_opts *o, oc_token_activations *out,
                      oc_progress *prog, oc_error *err);
void oc_token_activations_free(oc_token_activations *a);
/* oc_collect_tokens over src's dataset and model (src->activations must be NULL: token rows are
 * collected, not loaded; src->journal, max_length, use_chat_template are o's); counts as oc_activations_get. */
int oc_token_activations_get(const oc_activation_source *src, const oc_token_collect_opts *o, oc_progress *prog, oc_token_activations *out,
                             oc_collection_counts *counts, oc_error *err);
float oc_sigmoid(float x);
void oc_probe_free(oc_probe *p);
#define OC_PROBE_MAX_HIDDEN (1 << 20)
/* A probe the guard may use: 1 <= hidden <= OC_PROBE_MAX_HIDDEN, every weight and the bias finite
 * (a NaN weight would make every risk NaN and switch the guard off). where names it in errors. */
int oc_probe_check(const oc_probe *p, const char *where, oc_error *err);
/* probe.safetensors (head.weight [1,H], head.bias [1]), atomic */
int oc_probe_save(const oc_probe *p, const char *path, oc_error *err);
/* probe.safetensors, or a probe.pt written by torch.save(state_dict) (zip + pickle); checked with
 * oc_probe_check. The legacy torch.save format (a bare pickle, PyTorch < 1.6) is an
 * OC_ERR_UNSUPPORTED error that says so; a damaged zip's error says it is not a valid zip. */
int oc_probe_load(const char *path, oc_probe *p, oc_error *err);
/* The .pt reader on bytes in memory (fuzzing); path names the source in errors. */
int oc_torch_pt_parse_probe(const void *data, size_t len, const char *path, oc_probe *p, oc_error *err);

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
/* oc_probe_train_tokens on a stratified split of the exchanges (split_seed); metrics score an
 * exchange by its highest token risk (what a guard reading every token would pause on). Rows in
 * a->X or streamed from a->journal give the same probe bit for bit (the same operations in the
 * same order on the same F32 values). */
int oc_probe_fit_tokens(const oc_token_activations *a, int weighting, double validation_size, uint64_t split_seed, double target_fpr,
                        const oc_probe_train_opts *o, oc_probe_fit *out, oc_error *err);
/* The same for rows of several layers (a->n_layers > 1), combined as oc_probe_fit_layers combines
 * final-token rows: CONCAT, one probe over the whole row, always standardized; MEAN, one probe
 * per layer (o as given) on the same split, their weights / n_layers side by side and the mean of
 * their biases. out->probe reads the whole row (what the guard taps), and the metrics score it so.
 * One layer: combine is ignored (oc_probe_fit_tokens). */
int oc_probe_fit_tokens_combined(const oc_token_activations *a, int combine, int weighting, double validation_size, uint64_t split_seed,
                                 double target_fpr, const oc_probe_train_opts *o, oc_probe_fit *out, oc_error *err);
/* oc_probe_fit_layer over several layers (indices lis[0..nl) into a->layers, distinct, 1 <= nl <=
 * OC_PROBE_MAX_LAYERS) combined as `combine` (oc_probe_combine; ignored when nl == 1, which is
 * exactly oc_probe_fit_layer): out->probe reads the concatenated rows [nl * hidden], and the
 * metrics score it so, as the guard does. CONCAT always standardizes; MEAN trains each layer with o.
 * prog counts training steps over all the probes trained (oc_probe_fit_steps). */
int oc_probe_fit_layers(const oc_activations *a, const int *lis, int nl, int combine, double validation_size, uint64_t split_seed,
                        double target_fpr, const oc_probe_train_opts *o, oc_probe_fit *out, oc_progress *prog, oc_error *err);
/* the training steps oc_probe_fit_layers reports for n examples */
int64_t oc_probe_fit_steps(int n, int nl, int combine, const oc_probe_train_opts *o);

/* How the guard turns a stream's probe readings into the risk it acts on (config.json "aggregation"). */
typedef enum {
  OC_AGG_LAST = 0,         /* the MVP's: mean of the last smoothing_window readings */
  OC_AGG_EMA,              /* exponential moving average: e1 = r1, et = alpha rt + (1 - alpha) e(t-1) */
  OC_AGG_ROLLING_MEAN,     /* mean of the last aggregation_window readings */
  OC_AGG_MAX_ROLLING_MEAN, /* the maximum so far of that rolling mean: once high it stays high */
} oc_aggregation;
const char *oc_aggregation_name(oc_aggregation a);
int oc_aggregation_parse(const char *s, oc_aggregation *out); /* -1 for a name it does not know */

/* Guard settings stored with a probe (config.json); defaults are the MVP's. */
typedef struct oc_probe_config {
  char *model_id, *model_family;
  int layer, hidden_size;
  double threshold, pause_threshold;
  int probe_every_n_tokens, smoothing_window;
  int use_chat_template;
  double calibrated_threshold; /* NaN when absent */
  /* Multi-layer probes (config.json "layers" and "combine"): n_layers 0 is the single `layer` of
   * every older probe; else the probe reads the hidden states of layers[0..n_layers) (layer ==
   * layers[0]) concatenated in that order, its weights [n_layers * hidden_size] (docs/formats.md). */
  int n_layers;
  int *layers;
  int combine; /* oc_probe_combine: OC_COMBINE_NONE with n_layers 0, else CONCAT or MEAN */
  oc_aggregation aggregation;   /* absent: OC_AGG_LAST (the MVP's smoothing) */
  int aggregation_window;       /* rolling_mean, max_rolling_mean; absent: smoothing_window */
  double aggregation_alpha;     /* ema; absent: 0.5 */
} oc_probe_config;
void oc_probe_config_defaults(oc_probe_config *c);
/* How a probe over several layers was made (its weights are one linear function of the
 * concatenated hidden states either way): CONCAT, one logistic probe over the concatenated
 * standardized layers (standardization folded into the weights); MEAN, one probe per layer and the
 * mean of their logits (folded: each layer's weights / n, the mean of the biases). */
typedef enum oc_probe_combine { OC_COMBINE_NONE = 0, OC_COMBINE_CONCAT, OC_COMBINE_MEAN } oc_probe_combine;
#define OC_PROBE_MAX_LAYERS 64
const char *oc_probe_combine_name(int combine); /* "concat", "mean"; "none" */
int oc_probe_combine_from_name(const char *name); /* OC_COMBINE_CONCAT / MEAN, -1 for any other name */
/* The layers a config's probe reads: *layers = c->layers (n_layers > 0) or &c->layer; the count. */
int oc_probe_config_layers(const oc_probe_config *c, const int **layers);
/* Bounds of the guard settings a config may carry. */
#define OC_PROBE_MAX_EVERY_N 4096
#define OC_PROBE_MAX_WINDOW 4096
/* Values the guard may use: thresholds in [0, 1], 1 <= probe_every_n_tokens <= OC_PROBE_MAX_EVERY_N,
 * 1 <= smoothing_window <= OC_PROBE_MAX_WINDOW, a known aggregation with (when it uses them)
 * 1 <= aggregation_window <= OC_PROBE_MAX_WINDOW or aggregation_alpha in (0, 1], hidden_size >= 0, calibrated_threshold NaN or in [0, 1]. where names the source in errors. */
int oc_probe_config_check(const oc_probe_config *c, const char *where, oc_error *err);
/* config.json -> c, with every value type-checked (aggregation_window and aggregation_alpha range-checked
 * even when the aggregation does not use them), model_id required (the foreign-probe check
 * cannot be skipped by leaving it out) and oc_probe_config_check */
int oc_probe_config_load(const char *path, oc_probe_config *c, oc_error *err);
void oc_probe_config_free(oc_probe_config *c);

/* The running aggregate of one stream's readings (oc_probe_config's aggregation). The guard and
 * evaluate-probe both push every reading through it, so they act on the same number. */
typedef struct oc_risk_agg {
  oc_aggregation kind;
  int window;     /* readings the rolling mean covers (1 for ema) */
  double alpha;
  double *ring;   /* the last `window` readings */
  int64_t n;      /* readings so far */
  double ema, max;
} oc_risk_agg;
/* Set up for c's aggregation (its window or alpha), with no reading yet. */
int oc_risk_agg_init(oc_risk_agg *a, const oc_probe_config *c, oc_error *err);
/* Add a reading (a finite risk); returns the aggregated risk after it. */
double oc_risk_agg_push(oc_risk_agg *a, double risk);
void oc_risk_agg_reset(oc_risk_agg *a); /* no reading yet (a new stream) */
void oc_risk_agg_free(oc_risk_agg *a);

/* ---- evaluate-probe: held-out exchanges replayed as the guard reads them ---------------- */
typedef struct oc_probe_eval_opts {
  double target_fpr; /* the pause threshold keeps the false-positive rate on safe exchanges at most this */
  int max_length;    /* tokens of prompt + response (the response is cut); 0 = 2048 */
} oc_probe_eval_opts;
typedef struct oc_probe_eval_example {
  int64_t line;
  int label;         /* 0 safe, 1 unsafe */
  int n_tokens;      /* response tokens replayed */
  double *risk;      /* [n_tokens] sigmoid(probe) at every response token (NaN: not finite) */
  double *agg;       /* [n_tokens] the aggregate after the guard's reading at that token; NaN where it reads none */
  double score;      /* the highest aggregate (what decides a pause); 1 after a non-finite reading; 0 for no tokens */
  int detected_at;   /* the first token (1-based) whose aggregate reaches the pause threshold; 0: never */
} oc_probe_eval_example;
typedef struct oc_probe_eval {
  int n, n_unsafe, n_detected;
  oc_probe_eval_example *ex;
  double roc_auc, tpr_at_fpr_1, tpr_at_fpr_5;               /* TPR at the thresholds for 1 % and 5 % FPR */
  double target_fpr, threshold, fpr_at_threshold, tpr_at_threshold; /* threshold: oc_binary_metrics' threshold_at_fpr */
  double ttd_median, ttd_p90;                               /* tokens to detection of the detected unsafe exchanges; NaN: none */
} oc_probe_eval;
/* For every exchange of ds (labels 0/1, both present): the prompt formatted for generation (the
 * config's use_chat_template) then the response's tokens (encoded alone, no special tokens), ONE
 * forward pass with taps at every response position of the config's layer; readings where the guard
 * takes them (every probe_every_n_tokens-th token and the last) pushed through the config's
 * aggregation (oc_risk_agg, the guard's); the metrics over the exchanges' scores. prog: one step
 * per exchange (its total is the caller's). */
int oc_probe_evaluate(const oc_model *m, const oc_chat *chat, const oc_probe *p, const oc_probe_config *c, const oc_dataset *ds,
                      const oc_probe_eval_opts *o, oc_progress *prog, oc_probe_eval *out, oc_error *err);
/* The guard's readings of one response of n tokens (risks[k-1]: token k's), aggregated with agg
 * (reset first) into aggregated[0..n) (NaN where no reading); *score: the highest aggregate, 1 from
 * a non-finite risk on (the guard blocks there; later tokens NaN), 0 when n is 0. */
void oc_probe_eval_replay(oc_risk_agg *agg, int every_n, const double *risks, int n, double *aggregated, double *score);
void oc_probe_eval_free(oc_probe_eval *e);
/* The report: settings, roc_auc, tpr_at_fpr_0.01/0.05, target_fpr, pause_threshold, its FPR and
 * TPR, tokens_to_detection {detected, detected_fraction, median, p90}, per_example (docs/formats.md). */
cJSON *oc_probe_eval_json(const oc_probe_eval *e, const oc_probe_config *c, const char *data_path);
/* The report at path (atomic) with path's .roc.svg (TPR against FPR) and .risk.svg (aggregated risk
 * over the response of two unsafe and two safe exchanges) beside it. */
int oc_probe_eval_save(const char *path, const oc_probe_eval *e, const cJSON *report, oc_error *err);
/* config.json at config_path rewritten atomically with every key kept but "pause_threshold" (e's
 * threshold) and "calibration" {pause_threshold, target_fpr, fpr, tpr, data_path, examples, unsafe,
 * created_by}. An error (nothing written) when no threshold in [0, 1] meets the target. */
int oc_probe_config_write_calibration(const char *config_path, const oc_probe_eval *e, const char *data_path, oc_error *err);

/* How a probe was trained, recorded in its config.json beside the guard settings. */
typedef struct oc_probe_provenance {
  const oc_probe_fit *fit;             /* held-out and training metrics, split sizes, final loss */
  const oc_probe_train_opts *train;    /* epochs, lr, weight_decay, batch_size, seed, standardize */
  double validation_size, target_fpr;
  int max_length;                      /* of the activations */
  const char *data_path, *activations; /* the source; either may be NULL */
  int64_t max_examples, sample_seed;
  const char *weights;                 /* the decoder's weights when collected now ("stored", "q8", "mmap"); NULL: not recorded */
  int token_level;                     /* trained on response tokens (oc_probe_fit_tokens): config.json records it with */
  int token_weighting, max_tokens_per_example; /* the weighting and the token cap (0: every token) */
} oc_probe_provenance;
/* A fit's held-out metrics with "split": "validation" ("train" when nothing was held out). */
cJSON *oc_probe_fit_metrics_json(const oc_probe_fit *f, double validation_size);
/* The probe directory (train-probe --out_dir), written whole (oc_atomic_dir): probe.safetensors and
 * config.json holding the guard settings of c (the keys oc_probe_config_load reads; model_id,
 * model_family, layer, hidden_size, use_chat_template, calibrated_threshold included) and how the
 * probe was made. A probe or config the guard would refuse (oc_probe_check, oc_probe_config_check, no
 * model_id) is an error before anything is written. */
int oc_probe_artifact_save(const char *dir, const oc_probe *probe, const oc_probe_config *c, const oc_probe_provenance *p,
                           oc_error *err);

/* sweep-layers: one probe per layer of the collection (oc_probe_fit_layer with the same split and
 * settings), *report {"<layer>": held-out metrics with "split"}, auc[i] and f1[i] (n each, the
 * caller's) for the plot. prog counts training steps over all layers. */
int oc_sweep_layers(const oc_activations *a, const int *layers, int n, double validation_size, uint64_t split_seed, double target_fpr,
                    const oc_probe_train_opts *t, oc_progress *prog, cJSON **report, double *auc, double *f1, oc_error *err);
/* sweep-layers --combinations: one probe per variant, each variant a list of layers (sizes[i] of
 * them, one after another in layers): a single layer is keyed "<layer>" with the metrics
 * oc_sweep_layers gives it; a combination "<l1>,<l2>,..." (combined as `combine`) with its held-out
 * metrics plus "layers" and "combine". labels[i] (malloc'd, the caller frees each and the array)
 * name the variants in the plot. Same split and settings for every variant. */
int oc_sweep_variants(const oc_activations *a, const int *layers, const int *sizes, int n, int combine, double validation_size, uint64_t split_seed,
                      double target_fpr, const oc_probe_train_opts *t, oc_progress *prog, cJSON **report, char ***labels, double *auc, double *f1,
                      oc_error *err);
/* "-4,-8;-4,-8,-12": groups of comma-separated layer indices (oc_parse_int_list's rules, each in
 * [-100000, 100000]) separated by ';', each group 1..OC_PROBE_MAX_LAYERS distinct values, at most
 * 256 groups. *layers (flat) and *sizes are malloc'd. */
int oc_parse_layer_groups(const char *s, int **layers, int **sizes, int *n_groups, oc_error *err);
/* The sweep report and its plot with the variants named by labels (oc_sweep_save's rules). */
int oc_sweep_save_labeled(const char *path, const char *report_json, const char *const *labels, int n, const double *auc, const double *f1,
                          oc_error *err);
/* The guard settings of a probe fitted on layer of a collection: model_id (the collection's, else
 * fallback_model_id), model_family, layer, hidden_size, use_chat_template and the calibrated
 * threshold of the fit; c's thresholds and step settings are kept. */
void oc_probe_config_from_fit(oc_probe_config *c, const oc_activations *a, int layer, const oc_probe_fit *fit, const char *fallback_model_id);
/* Pause where the held-out safe exchanges stop: pause_threshold = c->calibrated_threshold (the
 * fit's threshold at the target false-positive rate), and the "suspicious" threshold lowered to it
 * when it was above. An error when c has no calibrated threshold (nothing held out, or no safe
 * exchange among the held-out ones). */
int oc_probe_config_pause_at_calibrated(oc_probe_config *c, oc_error *err);
/* SVG line plot of ROC AUC and F1 by layer (atomic write). */
int oc_sweep_svg(const char *path, const int *layers, int n, const double *auc, const double *f1, oc_error *err);
/* The sweep report (JSON text) at path and its plot beside it (path's .svg sibling). The old plot
 * is removed first, so a plot beside a report is always that report's. */
int oc_sweep_save(const char *path, const char *report_json, const int *layers, int n, const double *auc, const double *f1, oc_error *err);
#ifdef __cplusplus
}
#endif
#endif
