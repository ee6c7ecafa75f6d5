/* benchmark-latency: the cost of the guard, as baseline decode vs probe only vs the full guard on the
 * same prompts and settings (the MVP's report). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/guard.h"

enum { N_MODES = 3 };
static const char *const mode_names[N_MODES] = {"baseline", "probe_only", "full_guard"};

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* {"mean", "p50", "p95"} of v (sorted in place), nearest-rank percentiles */
static cJSON *stats(double *v, int n) {
  cJSON *o = cJSON_CreateObject();
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i];
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int p50 = (int)ceil(0.50 * n) - 1, p95 = (int)ceil(0.95 * n) - 1;
  cJSON_AddNumberToObject(o, "mean", n ? s / n : 0);
  cJSON_AddNumberToObject(o, "p50", n ? v[p50 < 0 ? 0 : p50] : 0);
  cJSON_AddNumberToObject(o, "p95", n ? v[p95 < 0 ? 0 : p95] : 0);
  return o;
}

static cJSON *run_json(const oc_guard_result *r, double tps) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddNumberToObject(m, "ms", r->total_ms);
  cJSON_AddNumberToObject(m, "tokens", r->n_tokens);
  cJSON_AddNumberToObject(m, "tokens_per_s", tps);
  cJSON_AddNumberToObject(m, "time_to_first_token_ms", r->ttft_ms);
  cJSON_AddNumberToObject(m, "probe_calls", r->probe_calls);
  cJSON_AddNumberToObject(m, "classifier_calls", r->classifier_calls);
  cJSON_AddNumberToObject(m, "classifier_ms", r->classifier_ms);
  cJSON_AddStringToObject(m, "status", oc_guard_status_name(r->status));
  return m;
}

int oc_guard_benchmark_latency(oc_guard_bundle *b, const char *const *prompts, int n_prompts, int repeats, const oc_guard_opts *base,
                               oc_progress *prog, cJSON **report, oc_error *err) {
  *report = NULL;
  if (n_prompts < 1 || repeats < 1) return oc_fail(err, "benchmark-latency needs at least one prompt and one repeat");
  if (n_prompts > INT32_MAX / N_MODES / repeats) return oc_fail(err, "%d prompts x %d repeats is too many runs", n_prompts, repeats);
  oc_guard *g = oc_guard_bundle_guard(b);
  if (!oc_guard_bundle_probe_config(b)) return oc_fail(err, "benchmark-latency needs a probe (its probe_only and full_guard modes)");
  int n = n_prompts * repeats, rc = -1;
  double *ms[N_MODES] = {0}, *tps[N_MODES] = {0}, *ttft[N_MODES] = {0};
  long calls[N_MODES][2] = {{0}};
  cJSON *rep = cJSON_CreateObject(), *per = cJSON_AddArrayToObject(rep, "prompts");
  for (int k = 0; k < N_MODES; k++)
    if (!(ms[k] = calloc((size_t)n, sizeof(double))) || !(tps[k] = calloc((size_t)n, sizeof(double))) || !(ttft[k] = calloc((size_t)n, sizeof(double)))) {
      oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
      goto done;
    }
  oc_guard_opts go = *base;
  go.trace = NULL;
  oc_guard_result warm;
  if (oc_guard_generate(g, prompts[0], &go, NULL, NULL, NULL, &warm, err)) goto done;
  oc_guard_result_free(&warm);
  for (int r = 0; r < repeats; r++)
    for (int p = 0; p < n_prompts; p++) {
      cJSON *pe = r == 0 ? cJSON_CreateObject() : NULL;
      if (pe) {
        cJSON_AddStringToObject(pe, "prompt", prompts[p]);
        cJSON_AddItemToArray(per, pe);
      }
      for (int k = 0; k < N_MODES; k++) {
        go.use_probe = k > 0;
        go.skip_classifier = k < 2;
        go.final_classifier_check = k == 2 && oc_guard_bundle_classifier(b);
        oc_guard_result res;
        if (oc_guard_generate(g, prompts[p], &go, NULL, NULL, NULL, &res, err)) { oc_wrap(err, "%s, prompt %d", mode_names[k], p + 1); goto done; }
        int i = r * n_prompts + p;
        ms[k][i] = res.total_ms;
        tps[k][i] = res.total_ms > 0 ? res.n_tokens / (res.total_ms / 1e3) : 0;
        ttft[k][i] = res.ttft_ms;
        calls[k][0] += res.probe_calls;
        calls[k][1] += res.classifier_calls;
        if (pe) cJSON_AddItemToObject(pe, mode_names[k], run_json(&res, tps[k][i]));
        oc_guard_result_free(&res);
        if (prog) oc_progress_update(prog, (int64_t)i * N_MODES + k + 1);
      }
    }
  cJSON *ov = cJSON_AddObjectToObject(rep, "overall");
  for (int k = 0; k < N_MODES; k++) {
    cJSON *m = cJSON_AddObjectToObject(ov, mode_names[k]);
    cJSON_AddItemToObject(m, "ms", stats(ms[k], n));
    cJSON_AddItemToObject(m, "tokens_per_s", stats(tps[k], n));
    cJSON_AddItemToObject(m, "time_to_first_token_ms", stats(ttft[k], n));
    cJSON_AddNumberToObject(m, "probe_calls", (double)calls[k][0]);
    cJSON_AddNumberToObject(m, "classifier_calls", (double)calls[k][1]);
  }
  cJSON_AddNumberToObject(rep, "max_new_tokens", base->max_new_tokens);
  cJSON_AddNumberToObject(rep, "repeats", repeats);
  cJSON_AddNumberToObject(rep, "threads", oc_get_threads());
  cJSON_AddStringToObject(rep, "weights", oc_model_weights_kind(oc_guard_bundle_model(b)));
  *report = rep;
  rep = NULL;
  rc = 0;
done:
  cJSON_Delete(rep);
  for (int k = 0; k < N_MODES; k++) { free(ms[k]); free(tps[k]); free(ttft[k]); }
  return rc;
}
