/* quantize, quant-report, system-info: q8 weights and the kernels the CPU runs. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/chat.h"
#include "opencon/guard.h"
#include "opencon/hub.h"
#include "opencon/probe.h"
#include "opencon/quant.h"
#include "opts.h"

/* ---- quantize ---- */
static int run_quantize(const cli_args *a) {
  oc_error err = {0};
  char *dir = NULL;
  size_t in = 0, out = 0;
  if (oc_resolve_model(arg_str(a, "model_id"), NULL, &dir, &err) || oc_model_quantize(dir, arg_str(a, "out"), &in, &out, &err)) {
    free(dir);
    return die(&err);
  }
  printf("%s: %.2f GB of tensors -> %.2f GB (streamed matrices in q8)\n", arg_str(a, "out"), in / 1e9, out / 1e9);
  free(dir);
  return 0;
}

static const opt_spec quantize_opts[] = {
    O_("model_id", OPT_STR, OPT_REQUIRED, NULL, "the decoder to quantize: a local directory or a Hub id org/name"),
    O_("out", OPT_OUTDIR, OPT_REQUIRED, NULL, "the quantized model's directory (written whole)"), O_THREADS, O_END};
const cli_command cmd_quantize = {"quantize", "write a decoder with its streamed matrices in q8 (int8 blocks)",
                                  "Writes model.safetensors (I8 values and F16 block scales \"NAME_scale\" for every matrix a decoded token "
                                  "reads; other tensors as they were), config.json with a quantization_config, and the directory's other files. "
                                  "Loading the directory needs no flag and gives what --weights q8 gives on the original.",
                                  quantize_opts, run_quantize};

/* ---- quant-report ---- */
static int run_quant_report(const cli_args *a) {
  oc_error err = {0};
  char *dir = NULL;
  oc_model *ref = NULL, *q = NULL;
  oc_chat *chat = NULL;
  oc_encoding enc = {0};
  oc_probe probe = {0};
  oc_probe_config pc;
  int have_probe = 0, layer = 0, rc = 1;
  oc_quant_report r = {0};
  const char *probe_path = arg_str(a, "probe_path");
  if (probe_path) {
    oc_guard_spec spec; /* only to find the config as the guard finds it: --config_path, else config.json beside the probe */
    oc_guard_spec_defaults(&spec);
    spec.probe_path = probe_path;
    spec.config_path = arg_str(a, "config_path");
    char *cfg = oc_guard_spec_config_path(&spec);
    int bad = (!cfg && oc_fail_code(&err, OC_ERR_NOMEM, "out of memory")) || oc_probe_config_load(cfg, &pc, &err) || oc_guard_check_probe(arg_str(a, "model_id"), pc.model_id, &err) ||
              oc_probe_load(probe_path, &probe, &err);
    free(cfg);
    if (bad) goto fail;
    have_probe = 1;
    layer = pc.layer;
  }
  const oc_model_opts q8 = {OC_WEIGHTS_Q8};
  if (oc_resolve_model(arg_str(a, "model_id"), NULL, &dir, &err) || oc_model_load(dir, &ref, &err) || oc_model_load_ex(dir, &q8, &q, &err) ||
      load_chat(arg_str(a, "model_id"), &chat, &err) || oc_chat_encode(chat, arg_str(a, "text"), 1, 0, &enc, &err))
    goto fail;
  if (enc.n == 0) { oc_fail(&err, "--text encodes to no tokens"); goto fail; }
  if (strcmp(oc_model_weights_kind(ref), "q8") == 0) {
    oc_fail(&err, "%s is already q8: give the checkpoint it was quantized from", arg_str(a, "model_id"));
    goto fail;
  }
  if (oc_quant_compare(ref, q, enc.ids, enc.n, arg_int(a, "n_decode"), have_probe ? &probe : NULL, layer, &r, &err)) goto fail;
  printf("%s: q8 against %s weights, %d prompt tokens (prefill) and %d decoded (one at a time)\n", arg_str(a, "model_id"),
         oc_model_weights_kind(ref), r.n_prompt, r.n_decode);
  printf("state  prefill cos min / mean   rel err  |  decode cos min / mean   rel err\n");
  for (int i = 0; i < r.n_states; i++)
    printf("%5d  %.6f / %.6f   %.2e  |  %.6f / %.6f   %.2e\n", i, r.prefill[i].cos_min, r.prefill[i].cos_mean, r.prefill[i].rel_err,
           r.decode[i].cos_min, r.decode[i].cos_mean, r.decode[i].rel_err);
  printf("decode logits: cos min %.6f, greedy token the same %d of %d steps\n", r.logit_cos_min, r.top1_agree, r.n_decode);
  if (have_probe) printf("probe (state %d): |risk q8 - risk stored| max %.2e, mean %.2e\n", r.probe_layer, r.risk_max_diff, r.risk_mean_diff);
  const char *out = arg_str(a, "out_path");
  if (out) {
    cJSON *j = oc_quant_report_json(&r);
    if (j) cJSON_AddStringToObject(j, "model_id", arg_str(a, "model_id"));
    int wrc = j ? oc_json_save(j, out, &err) : oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
    cJSON_Delete(j);
    if (wrc) goto fail;
  }
  rc = 0;
  goto done;
fail:
  rc = die(&err);
done:
  oc_quant_report_free(&r);
  oc_encoding_free(&enc);
  oc_chat_free(chat);
  oc_model_free(ref);
  oc_model_free(q);
  if (have_probe) { oc_probe_free(&probe); oc_probe_config_free(&pc); }
  free(dir);
  return rc;
}

static const opt_spec quant_report_opts[] = {
    O_("model_id", OPT_STR, OPT_REQUIRED, NULL, "the decoder: a local directory or a Hub id org/name"),
    O_IN("probe_path", "a probe whose risk to compare (its config.json beside it, or --config_path, names the layer)"),
    O_IN("config_path", "the probe's config.json"),
    O_STR("text", "The guard reads the hidden states of every token the model writes, so the quantized model must keep them close.",
          "the prompt, encoded with the model's tokenizer"),
    O_INT("n_decode", "32", 1, 4096, "tokens decoded greedily after the prompt, one at a time"),
    O_OUT("out_path", NULL, "also write the report as JSON"), O_THREADS, O_END};
const cli_command cmd_quant_report = {"quant-report", "how far q8 weights move hidden states, logits and a probe's risk",
                                      "Loads the model as stored and in q8, runs the prompt (prefill) and greedy tokens (decode) through both and "
                                      "prints, per hidden state, the cosine and relative error of the q8 states against the stored ones.",
                                      quant_report_opts, run_quant_report};

/* ---- system-info ---- */
static int run_system_info(const cli_args *a) {
  (void)a;
  char buf[1024];
  oc_system_info(buf, sizeof buf);
  fputs(buf, stdout);
  return 0;
}
static const opt_spec system_info_opts[] = {O_END};
const cli_command cmd_system_info = {"system-info", "the CPU, its vector features and the kernels chosen for it", NULL, system_info_opts,
                                     run_system_info};
