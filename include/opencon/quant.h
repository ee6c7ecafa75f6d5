/* opencon — how far q8 weights move a model's hidden states, logits and a probe's risk. */
#ifndef OPENCON_QUANT_H
#define OPENCON_QUANT_H
#include "opencon/json.h"
#include "opencon/model.h"
#include "opencon/probe.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One hidden state (transformers' output_hidden_states index) over a run's positions: the
 * cosine of each position's q8 state with the reference's (smallest and mean), and the relative
 * error of them all, sqrt(sum |q - ref|^2 / sum |ref|^2). */
typedef struct oc_quant_layer {
  double cos_min, cos_mean, rel_err;
} oc_quant_layer;

typedef struct oc_quant_report {
  int n_states;               /* n_layers + 1 */
  int n_prompt, n_decode;
  oc_quant_layer *prefill;    /* [n_states]: the prompt in one chunk (prefill products) */
  oc_quant_layer *decode;     /* [n_states]: n_decode tokens one at a time (decode products) */
  double logit_cos_min;       /* decode steps' logits */
  int top1_agree;             /* decode steps where both models' greedy token is the same */
  int probe_layer;            /* -1: no probe */
  double risk_max_diff, risk_mean_diff; /* |sigmoid(probe(q)) - sigmoid(probe(ref))| over the decode steps */
} oc_quant_report;

/* Run `ids` (n_prompt tokens) through both models as one prefill chunk, then n_decode greedy tokens
 * of the reference one at a time through both (teacher-forced: the q8 model is fed the reference's
 * tokens), tapping every hidden state. probe: NULL, or a probe read at hidden state probe_layer
 * (negative counts from the end). The models must have the same config. */
int oc_quant_compare(const oc_model *ref, const oc_model *q, const int32_t *ids, int n_prompt, int n_decode, const oc_probe *probe,
                     int probe_layer, oc_quant_report *r, oc_error *err);
void oc_quant_report_free(oc_quant_report *r);
/* The report as JSON: n_prompt, n_decode, prefill and decode ([{hidden_state, cos_min, cos_mean,
 * rel_err}] per state), logit_cos_min, top1_agree, and with a probe probe_layer, risk_max_diff,
 * risk_mean_diff. NULL when out of memory. */
cJSON *oc_quant_report_json(const oc_quant_report *r);

#ifdef __cplusplus
}
#endif
#endif
