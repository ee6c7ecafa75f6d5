/* q8 against the stored weights: per hidden state cosines and relative errors in prefill and in
 * decode, the decode logits, and a probe's risk (include/opencon/quant.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/quant.h"

/* Accumulates one hidden state's comparison over positions. */
typedef struct {
  double cos_min, cos_sum, diff2, ref2;
  int n;
} layer_acc;

static void acc_add(layer_acc *a, const float *ref, const float *q, int dim) {
  double dot = 0, rr = 0, qq = 0, dd = 0;
  for (int i = 0; i < dim; i++) {
    dot += (double)ref[i] * q[i];
    rr += (double)ref[i] * ref[i];
    qq += (double)q[i] * q[i];
    dd += ((double)q[i] - ref[i]) * ((double)q[i] - ref[i]);
  }
  /* zero vectors are the same direction; a NaN makes the cosine NaN, which the minimum keeps */
  const double c = rr == 0 && qq == 0 ? 1.0 : dot / sqrt(rr * qq);
  if (a->n == 0 || !(c >= a->cos_min)) a->cos_min = c;
  a->cos_sum += c;
  a->diff2 += dd;
  a->ref2 += rr;
  a->n++;
}

static oc_quant_layer acc_result(const layer_acc *a) {
  oc_quant_layer l = {a->cos_min, a->n ? a->cos_sum / a->n : NAN, a->ref2 > 0 ? sqrt(a->diff2 / a->ref2) : sqrt(a->diff2)};
  return l;
}

void oc_quant_report_free(oc_quant_report *r) {
  free(r->prefill);
  free(r->decode);
  memset(r, 0, sizeof *r);
}

static double cosine(const float *a, const float *b, int n) {
  double d = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; i++) { d += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
  return aa == 0 && bb == 0 ? 1.0 : d / sqrt(aa * bb);
}

int oc_quant_compare(const oc_model *ref, const oc_model *q, const int32_t *ids, int n_prompt, int n_decode, const oc_probe *probe,
                     int probe_layer, oc_quant_report *r, oc_error *err) {
  memset(r, 0, sizeof *r);
  const oc_model_config *c = oc_model_cfg(ref), *cq = oc_model_cfg(q);
  if (c->hidden != cq->hidden || c->n_layers != cq->n_layers || c->vocab != cq->vocab)
    return oc_fail(err, "the models differ (hidden %d/%d, layers %d/%d, vocab %d/%d)", c->hidden, cq->hidden, c->n_layers, cq->n_layers, c->vocab,
                   cq->vocab);
  if (n_prompt < 1 || n_decode < 0 || n_decode > 4096) return oc_fail(err, "need a prompt of at least one token and 0..4096 decode steps");
  if (oc_config_check_positions(c, n_prompt, n_decode, err)) return -1;
  const int S = c->n_layers + 1, H = c->hidden, V = c->vocab;
  int pl = -1;
  if (probe) {
    if ((pl = oc_hidden_index(c, probe_layer, err)) < 0) return -1;
    if (probe->hidden != H) return oc_fail(err, "the probe reads %d-wide hidden states, the model's are %d", probe->hidden, H);
  }
  int *layers = malloc(sizeof(int) * (size_t)S);
  float *ha = malloc(sizeof(float) * (size_t)S * (size_t)n_prompt * (size_t)H), *hb = malloc(sizeof(float) * (size_t)S * (size_t)n_prompt * (size_t)H);
  float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
  layer_acc *pa = calloc((size_t)S, sizeof *pa), *da = calloc((size_t)S, sizeof *da);
  oc_session *sa = oc_session_new(ref, n_prompt + n_decode, err), *sb = sa ? oc_session_new(q, n_prompt + n_decode, err) : NULL;
  int rc = -1;
  if (!layers || !ha || !hb || !la || !lb || !pa || !da) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (!sb) goto done;
  for (int i = 0; i < S; i++) layers[i] = i;
  oc_taps ta = {S, layers, 0, NULL, ha}, tb = {S, layers, 0, NULL, hb};
  if (oc_forward(sa, ids, n_prompt, &ta, la, 0, err) || oc_forward(sb, ids, n_prompt, &tb, lb, 0, err)) goto done;
  for (int i = 0; i < S; i++)
    for (int t = 0; t < n_prompt; t++) acc_add(&pa[i], ha + ((size_t)i * n_prompt + t) * H, hb + ((size_t)i * n_prompt + t) * H, H);
  r->logit_cos_min = 1;
  r->probe_layer = probe ? pl : -1;
  double risk_sum = 0;
  for (int k = 0; k < n_decode; k++) {
    const int32_t tok = oc_argmax(la, V);
    if (oc_forward(sa, &tok, 1, &ta, la, 0, err) || oc_forward(sb, &tok, 1, &tb, lb, 0, err)) goto done;
    for (int i = 0; i < S; i++) acc_add(&da[i], ha + (size_t)i * H, hb + (size_t)i * H, H);
    const double lc = cosine(la, lb, V);
    if (!(lc >= r->logit_cos_min)) r->logit_cos_min = lc;
    r->top1_agree += oc_argmax(la, V) == oc_argmax(lb, V);
    if (probe) {
      const double d = fabs((double)oc_sigmoid(oc_probe_logit(probe, ha + (size_t)pl * H)) - oc_sigmoid(oc_probe_logit(probe, hb + (size_t)pl * H)));
      if (!(d <= r->risk_max_diff)) r->risk_max_diff = d;
      risk_sum += d;
    }
  }
  r->risk_mean_diff = n_decode ? risk_sum / n_decode : 0;
  r->prefill = malloc(sizeof(oc_quant_layer) * (size_t)S);
  r->decode = malloc(sizeof(oc_quant_layer) * (size_t)S);
  if (!r->prefill || !r->decode) { oc_quant_report_free(r); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int i = 0; i < S; i++) { r->prefill[i] = acc_result(&pa[i]); r->decode[i] = acc_result(&da[i]); }
  r->n_states = S;
  r->n_prompt = n_prompt;
  r->n_decode = n_decode;
  rc = 0;
done:
  oc_session_free(sa);
  oc_session_free(sb);
  free(layers); free(ha); free(hb); free(la); free(lb); free(pa); free(da);
  return rc;
}

static cJSON *layers_json(const oc_quant_layer *l, int n) {
  cJSON *arr = cJSON_CreateArray();
  for (int i = 0; arr && i < n; i++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "hidden_state", i);
    cJSON_AddNumberToObject(o, "cos_min", l[i].cos_min);
    cJSON_AddNumberToObject(o, "cos_mean", l[i].cos_mean);
    cJSON_AddNumberToObject(o, "rel_err", l[i].rel_err);
    cJSON_AddItemToArray(arr, o);
  }
  return arr;
}

cJSON *oc_quant_report_json(const oc_quant_report *r) {
  cJSON *j = cJSON_CreateObject();
  if (!j) return NULL;
  cJSON_AddNumberToObject(j, "n_prompt", r->n_prompt);
  cJSON_AddNumberToObject(j, "n_decode", r->n_decode);
  cJSON_AddItemToObject(j, "prefill", layers_json(r->prefill, r->n_states));
  cJSON_AddItemToObject(j, "decode", layers_json(r->decode, r->n_states));
  cJSON_AddNumberToObject(j, "logit_cos_min", r->logit_cos_min);
  cJSON_AddNumberToObject(j, "top1_agree", r->top1_agree);
  if (r->probe_layer >= 0) {
    cJSON_AddNumberToObject(j, "probe_layer", r->probe_layer);
    cJSON_AddNumberToObject(j, "risk_max_diff", r->risk_max_diff);
    cJSON_AddNumberToObject(j, "risk_mean_diff", r->risk_mean_diff);
  }
  return j;
}
