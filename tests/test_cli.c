/* The opencon CLI end to end: forward writes the asked hidden states and logits,
 * generate prints the greedy continuation, random-model writes a loadable checkpoint,
 * bad flags give clear errors and non-zero exits. */
#include <math.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "opencon/model.h"

static char out[8192];

static int run(const char *cmd) { return run_capture(cmd, out, sizeof out); }

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_cli OPENCON_BIN FIXTURE_DIR");
  const char *bin = argv[1], *fix = argv[2];
  oc_error e;
  char *rp = oc_path_join(fix, "reference.safetensors");
  oc_st_file *ref;
  REQUIRE(oc_st_open(rp, &ref, &e) == 0, "%s", e.msg);
  const oc_tensor *ti = oc_st_get(ref, "input_ids.0"), *ths = oc_st_get(ref, "hidden_states.0"), *tl = oc_st_get(ref, "logits.0");
  const oc_tensor *tg = oc_st_get(ref, "generated_ids.0");
  const int T = (int)ti->numel, L = (int)ths->shape[0] - 1, H = (int)ths->shape[2], V = (int)tl->shape[1];
  char ids[4096] = "";
  for (int i = 0; i < T; i++) snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", i ? "," : "", ((const int32_t *)ti->data)[i]);
  char tmp[] = "/tmp/oc_cli_XXXXXX";
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  char cmd[8192], path[256];
  snprintf(path, sizeof path, "%s/fwd.safetensors", tmp);
  snprintf(cmd, sizeof cmd, "%s forward --model_id %s --input_ids %s --layers -4,-2 --out %s 2>&1", bin, fix, ids, path);
  CHECK(run(cmd) == 0, "forward failed: %s", out);
  oc_st_file *f;
  if (oc_st_open(path, &f, &e) == 0) {
    const oc_tensor *hs = oc_st_get(f, "hidden_states"), *lg = oc_st_get(f, "logits");
    CHECK(hs && hs->ndim == 3 && hs->shape[0] == 2 && hs->shape[1] == T && hs->shape[2] == H, "hidden_states shape");
    CHECK(lg && lg->shape[0] == T && lg->shape[1] == V, "logits shape");
    if (hs && lg) {
      const int want[2] = {L + 1 - 4, L + 1 - 2};
      double worst = 0;
      for (int k = 0; k < 2; k++)
        for (size_t j = 0; j < (size_t)T * H; j++) {
          double d = fabs(((const float *)hs->data)[(size_t)k * T * H + j] - ((const float *)ths->data)[(size_t)want[k] * T * H + j]);
          if (d > worst) worst = d;
        }
      CHECK(worst < 5e-4, "forward --layers -4,-2 off by %g", worst);
      worst = 0;
      for (size_t j = 0; j < (size_t)T * V; j++) {
        double d = fabs(((const float *)lg->data)[j] - ((const float *)tl->data)[j]);
        if (d > worst) worst = d;
      }
      CHECK(worst < 5e-4, "forward logits off by %g", worst);
    }
    oc_st_close(f);
  } else CHECK(0, "%s", e.msg);

  /* greedy generation prints the reference continuation */
  snprintf(cmd, sizeof cmd, "%s generate --model_id %s --input_ids %s --max_new_tokens %d --no_eos_stop 2>/dev/null", bin, fix, ids, (int)tg->numel);
  CHECK(run(cmd) == 0, "generate failed");
  char want[1024] = "[";
  for (int i = 0; i < tg->numel; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? ", " : "", ((const int32_t *)tg->data)[i]);
  strcat(want, "]\n");
  CHECK(strcmp(out, want) == 0, "generate printed %s want %s", out, want);

  /* errors */
  snprintf(cmd, sizeof cmd, "%s forward --model_id %s --input_ids 1,2 --layers 99 --out %s/x 2>&1", bin, fix, tmp);
  CHECK(run(cmd) == 1 && strstr(out, "out of range"), "bad layer: %s", out);
  snprintf(cmd, sizeof cmd, "%s forward --model_id %s --input_ids 1,x --out %s/x 2>&1", bin, fix, tmp);
  CHECK(run(cmd) == 2 && strstr(out, "--input_ids: item 2 is not an integer") && strstr(out, "see opencon forward --help"), "bad ids: %s", out);
  snprintf(cmd, sizeof cmd, "%s forward --model_id %s --input_ids 1 --bogus 1 --out %s/x 2>&1", bin, fix, tmp);
  CHECK(run(cmd) == 2 && strstr(out, "unknown flag --bogus; see opencon forward --help"), "unknown flag: %s", out);
  snprintf(cmd, sizeof cmd, "%s frobnicate 2>&1", bin);
  CHECK(run(cmd) == 2 && strstr(out, "unknown command"), "unknown command: %s", out);

  /* random-model from the fixture's own config: same names and shapes, loads, runs */
  char *cfg = oc_path_join(fix, "config.json");
  snprintf(cmd, sizeof cmd, "%s random-model --config %s --out %s/rand --seed 7 2>&1", bin, cfg, tmp);
  CHECK(run(cmd) == 0, "random-model: %s", out);
  char rdir[300];
  snprintf(rdir, sizeof rdir, "%s/rand", tmp);
  oc_weights *wr, *wf;
  if (oc_weights_open(rdir, &wr, &e) == 0 && oc_weights_open(fix, &wf, &e) == 0) {
    int same = oc_weights_count(wr) == oc_weights_count(wf);
    for (int i = 0; same && i < oc_weights_count(wf); i++) {
      const oc_tensor *a = oc_weights_at(wf, i), *b = oc_weights_get(wr, a->name);
      same = b && a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0;
      if (!same) fprintf(stderr, "random-model: %s differs\n", a->name);
    }
    CHECK(same, "random-model names/shapes differ from the real checkpoint");
    oc_weights_close(wr);
    oc_weights_close(wf);
  } else CHECK(0, "%s", e.msg);
  snprintf(cmd, sizeof cmd, "%s generate --model_id %s --input_ids 1,2,3 --max_new_tokens 4 --no_eos_stop 2>&1 >/dev/null", bin, rdir);
  CHECK(run(cmd) == 0, "random model does not run: %s", out);
  /* the kind of checkpoint is config.json's model_type, not any mention of a name in its text */
  snprintf(cmd, sizeof cmd, "sed 's/{/{\"_name_or_path\": \"modernbert\", /' %s > %s/named.json && %s random-model --config %s/named.json --out %s/rand2 2>&1 && "
                            "%s random-model --config %s/../modernbert-tiny/config.json --out %s/bert 2>&1 && %s classify --classifier_dir %s/bert --input_ids 1,2,3 2>&1",
           cfg, tmp, bin, tmp, tmp, bin, fix, tmp, bin, tmp);
  CHECK(run(cmd) == 0 && strstr(out, "\"verdict\""), "random-model by model_type (a decoder config naming modernbert; a ModernBERT): %s", out);
  snprintf(rdir, sizeof rdir, "%s/rand2", tmp);
  oc_model *rm = NULL;
  CHECK(oc_model_load(rdir, &rm, &e) == 0, "the decoder config naming modernbert made a decoder: %s", e.msg);
  oc_model_free(rm);
  free(cfg);
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd)) {}
  oc_st_close(ref);
  free(rp);
  return check_summary("cli");
}
