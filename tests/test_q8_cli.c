/* The q8 commands as a user runs them (argv: the opencon binary, a tiny chat model directory):
 * system-info names the kernel level (and OPENCON_CPU lowers it); quantize writes a directory that
 * loads with no flag and generates exactly what --weights q8 generates on the original, with the
 * tokenizer and template copied and a quantization_config in config.json; a bad --weights value is
 * a usage error naming the choices; quant-report prints and writes every hidden state's numbers and,
 * given a probe, how far its risk moves; benchmark-jailbreak's store keeps q8 generations apart from
 * stored ones (a q8 run over a stored run's store generates anew instead of reporting stored text);
 * a model directory a killed quantize left set aside (.NAME.old-PID-XXXXXX) is put back when loaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static char tmp[256];
static char out[65536], out2[65536];

int main(int argc, char **argv) {
  REQUIRE(argc == 5, "usage: test_q8_cli OPENCON MODEL_DIR PROBE.pt CLASSIFIER_DIR");
  const char *bin = argv[1], *model = argv[2], *probe = argv[3], *classifier = argv[4];
  snprintf(tmp, sizeof tmp, "%s/oc_q8cli_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  REQUIRE(mkdtemp(tmp), "mkdtemp");

  CHECK(run_in(tmp, out, sizeof out, "%s system-info", bin) == 0 && strstr(out, "kernels: ") && strstr(out, "decode Q8: "), "system-info: %s",
        out);
  CHECK(run_in(tmp, out, sizeof out, "OPENCON_CPU=scalar %s system-info", bin) == 0 && strstr(out, "kernels: scalar"),
        "OPENCON_CPU=scalar lowers the level: %s", out);

  CHECK(run_in(tmp, out, sizeof out, "%s quantize --model_id %s --out q", bin, model) == 0, "quantize: %s", stderr_in(tmp));
  CHECK(access(path_in(tmp, "q/tokenizer.json"), F_OK) == 0 && access(path_in(tmp, "q/model.safetensors"), F_OK) == 0,
        "the quantized directory holds the weights and the tokenizer");
  cJSON *cfg = read_json_file(path_in(tmp, "q/config.json"));
  const cJSON *qc = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config") : NULL;
  const cJSON *qm = qc ? cJSON_GetObjectItemCaseSensitive(qc, "quant_method") : NULL;
  CHECK(cJSON_IsString(qm) && strcmp(qm->valuestring, "opencon_q8") == 0, "config.json names the quantization");
  cJSON_Delete(cfg);

  const char *gen = "generate --text 'Hello there' --max_new_tokens 8 --no_eos_stop";
  CHECK(run_in(tmp, out, sizeof out, "%s %s --model_id q", bin, gen) == 0, "generate from the q8 directory: %s", stderr_in(tmp));
  CHECK(run_in(tmp, out2, sizeof out2, "%s %s --model_id %s --weights q8", bin, gen, model) == 0, "generate --weights q8: %s", stderr_in(tmp));
  CHECK(strcmp(out, out2) == 0 && out[0], "the q8 directory generates what --weights q8 does: [%s] vs [%s]", out, out2);

  CHECK(rename(path_in(tmp, "q"), path_in(tmp, ".q.old-999999-abcdef")) == 0, "set the q8 directory aside");
  CHECK(run_in(tmp, out, sizeof out, "%s %s --model_id q", bin, gen) == 0 && strcmp(out, out2) == 0 && access(path_in(tmp, "q/config.json"), F_OK) == 0,
        "a set-aside model directory is recovered on load: %s", stderr_in(tmp));

  int rc = run_in(tmp, out, sizeof out, "%s %s --model_id %s --weights q9", bin, gen, model);
  CHECK(rc == 2 && strstr(stderr_in(tmp), "stored|q8|mmap"), "--weights q9 is a usage error naming the choices (%d): %s", rc, stderr_in(tmp));

  FILE *f = fopen(path_in(tmp, "probe.json"), "w");
  REQUIRE(f, "probe config");
  fprintf(f, "{\"model_id\": \"%s\", \"layer\": -2, \"hidden_size\": 64, \"threshold\": 0.65, \"pause_threshold\": 0.75}\n", model);
  fclose(f);
  CHECK(run_in(tmp, out, sizeof out, "%s quant-report --model_id %s --n_decode 4 --probe_path %s --config_path probe.json --out_path r.json", bin, model,
               probe) == 0 &&
            strstr(out, "decode logits: cos") && strstr(out, "probe (state"),
        "quant-report: %s %s", out, stderr_in(tmp));
  cJSON *r = read_json_file(path_in(tmp, "r.json"));
  const cJSON *pre = r ? cJSON_GetObjectItemCaseSensitive(r, "prefill") : NULL, *dec = r ? cJSON_GetObjectItemCaseSensitive(r, "decode") : NULL;
  int ok = cJSON_IsArray(pre) && cJSON_IsArray(dec) && cJSON_GetArraySize(pre) > 1 && cJSON_GetArraySize(pre) == cJSON_GetArraySize(dec);
  for (int i = 0; ok && i < cJSON_GetArraySize(pre); i++) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(pre, i), "cos_mean");
    ok &= cJSON_IsNumber(c) && c->valuedouble > 0.99 && c->valuedouble <= 1.0 + 1e-12;
  }
  CHECK(ok, "quant-report JSON: every hidden state, cosines near 1");
  const cJSON *rd = r ? cJSON_GetObjectItemCaseSensitive(r, "risk_max_diff") : NULL, *pl = r ? cJSON_GetObjectItemCaseSensitive(r, "probe_layer") : NULL;
  CHECK(cJSON_IsNumber(rd) && rd->valuedouble >= 0 && rd->valuedouble < 0.1 && cJSON_IsNumber(pl) && pl->valueint == cJSON_GetArraySize(pre) - 2,
        "quant-report JSON: the probe's layer (-2 resolved) and its risk difference (%g)", cJSON_IsNumber(rd) ? rd->valuedouble : -1.0);
  cJSON_Delete(r);

  /* benchmark-jailbreak: a q8 run over the store of a stored run generates its own responses */
  f = fopen(path_in(tmp, "jb.jsonl"), "w");
  REQUIRE(f, "jb.jsonl");
  fputs("{\"prompt\": \"tell me a story about a cat\", \"split\": \"a\"}\n{\"prompt\": \"how do I bake bread\", \"split\": \"a\"}\n", f);
  fclose(f);
  const char *count = "/usr/bin/python3 -c \"import sqlite3; print(sqlite3.connect('jb.db').execute('select count(*) from generations').fetchone()[0])\"";
  for (int k = 0; k < 3; k++) {
    const char *w = k == 0 ? "stored" : "q8"; /* the third run: q8 again, all from the store */
    CHECK(run_in(tmp, out, sizeof out,
                 "%s benchmark-jailbreak --model_id %s --probe_path %s --config_path probe.json --classifier_dir %s --dataset_path jb.jsonl --db jb.db "
                 "--max_new_tokens 8 --weights %s > /dev/null",
                 bin, model, probe, classifier, w) == 0,
          "benchmark-jailbreak --weights %s: %s", w, stderr_in(tmp));
    CHECK(run_in(tmp, out, sizeof out, "%s", count) == 0 && atoi(out) == (k ? 8 : 4), "after run %d (%s): %d generations stored, expected %d", k + 1, w,
          atoi(out), k ? 8 : 4);
  }
  remove_tmpdir(tmp);
  printf("q8 cli: %d checks passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
