/* Resuming train-exchange-classifier (issue 19): every value of trainer_state.json is validated
 * with an error naming the file and the key (global_step -5 crashed the resume); a named
 * checkpoint that is not complete is an error; "latest" falls back to the newest complete
 * checkpoint and the result is still bit-identical to an uninterrupted run; a checkpoint set
 * aside by a writer killed mid-replace is restored. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "opencon/classifier.h"
#include "opencon/safetensors.h"

static const char *base;
static char tmp[] = "/tmp/oc_ckpt_XXXXXX", log_path[300];
static double learning_rate = 2e-5; /* the Trainer's default; raised to make training diverge */

static int sh(const char *fmt, const char *a, const char *b) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, fmt, a, b);
  return system(cmd);
}

/* a training run of train.jsonl into out_dir (4 steps), stderr into log_path */
static int train(const char *out_dir, const char *resume, int save_steps, int stop_after, uint64_t seed, oc_error *err) {
  oc_cls_train_opts o;
  oc_cls_train_defaults(&o);
  o.model_dir = base;
  o.model_id = "tiny";
  o.data_path = "train.jsonl";
  o.out_dir = out_dir;
  o.resume_from = resume;
  o.epochs = 2;
  o.batch_size = 4;
  o.max_length = 32;
  o.logging_steps = 0;
  o.save_steps = save_steps;
  o.stop_after_steps = stop_after;
  o.seed = seed;
  o.learning_rate = learning_rate;
  fflush(stderr);
  int saved = dup(2), fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  close(fd);
  err->msg[0] = 0;
  int rc = oc_cls_train(&o, NULL, err);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  return rc;
}

static char *run_log(void) {
  char *t;
  oc_error e;
  return oc_read_file(log_path, &t, NULL, &e) ? strdup("") : t;
}

static int same_file(const char *a, const char *b) {
  char *x, *y;
  size_t nx, ny;
  oc_error e;
  int okx = oc_read_file(a, &x, &nx, &e) == 0, oky = oc_read_file(b, &y, &ny, &e) == 0;
  int eq = okx && oky && nx == ny && memcmp(x, y, nx) == 0;
  if (okx) free(x);
  if (oky) free(y);
  return eq;
}

/* a fresh copy of the run stopped at step 3 (checkpoint-1, -2, -3) */
static void fresh_copy(void) { REQUIRE(sh("rm -rf c && cp -a ck c%s%s", "", "") == 0, "copy"); }

/* checkpoint-3/trainer_state.json with key set to the JSON value (NULL: removed) */
/* c/checkpoint-3's trainer_state.json: from's, with key set to value (NULL: removed) */
static void edit_state(const char *from, const char *key, const char *value) {
  cJSON *s = read_json_file(from);
  REQUIRE(s, "trainer_state.json");
  cJSON_DeleteItemFromObjectCaseSensitive(s, key);
  if (value) cJSON_AddItemToObject(s, key, cJSON_Parse(value));
  char *js = cJSON_Print(s);
  FILE *f = fopen("c/checkpoint-3/trainer_state.json", "w");
  fputs(js, f);
  fclose(f);
  free(js);
  cJSON_Delete(s);
}
static void set_state(const char *key, const char *value) { edit_state("ck/checkpoint-3/trainer_state.json", key, value); }

static void test_state_validation(void) {
  static const struct {
    const char *key, *value, *want;
  } bad[] = {
      {"global_step", "-5", "\"global_step\" must be an integer in [0, 4], got -5"},
      {"global_step", "2.5", "\"global_step\" must be an integer in [0, 4]"},
      {"global_step", "5", "\"global_step\" must be an integer in [0, 4], got 5"},
      {"global_step", "1e300", "\"global_step\" must be an integer"},
      {"global_step", "\"3\"", "\"global_step\" is missing or not a number"},
      {"global_step", NULL, "\"global_step\" is missing or not a number"},
      {"total_steps", "0", "\"total_steps\" must be an integer in [1, 9007199254740992]"},
      {"total_steps", "1e20", "\"total_steps\" must be an integer in [1, 9007199254740992]"},
      {"total_steps", "-4", "\"total_steps\" must be an integer"},
      {"epoch", "-1", "\"epoch\" must be a number in [0, global_step 3]"},
      {"epoch", "\"x\"", "\"epoch\" must be a number"},
      {"epoch", "100", "\"epoch\" must be a number in [0, global_step 3]"},
      {"epoch", NULL, "\"epoch\" must be a number"},
      {"seed", "-1", "\"seed\" must be an integer"},
      {"seed", "0.5", "\"seed\" must be an integer"},
      {"data_fingerprint", "\"xyz\"", "\"data_fingerprint\" must be 16 hexadecimal digits"},
      {"data_fingerprint", "12345", "\"data_fingerprint\" must be 16 hexadecimal digits"},
      {"seed", "99", "\"seed\" and \"seed_hex\" disagree"},
      {"seed_hex", "\"xyz\"", "\"seed_hex\" must be 16 hexadecimal digits"},
      /* valid values that do not belong to this run */
      {"total_steps", "8", "other data or settings"},
      {"data_fingerprint", "\"0123456789abcdef\"", "other data or settings"},
      {"epoch", "0.75", "\"epoch\" 0.75 does not match global_step 3 at 2 steps per epoch"},
  };
  oc_error err;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    fresh_copy();
    set_state(bad[i].key, bad[i].value);
    int rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
    CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-3/trainer_state.json") && strstr(err.msg, bad[i].want), "%s = %s: %s", bad[i].key,
          bad[i].value ? bad[i].value : "(none)", err.msg);
  }
  /* another seed, written both ways (exact hex, and the number alone as before seed_hex existed) */
  const char *seeds[][2] = {{"seed_hex", "\"0000000000000063\""}, {"seed_hex", NULL}};
  for (int k = 0; k < 2; k++) {
    fresh_copy();
    set_state("seed", "99");
    edit_state("c/checkpoint-3/trainer_state.json", seeds[k][0], seeds[k][1]);
    int rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
    CHECK(rc != 0 && strstr(err.msg, "other data or settings") && strstr(err.msg, "seed 99 vs 3"), "seed 99 (%s): %s", seeds[k][1] ? "hex" : "number only",
          err.msg);
  }
  static const struct { const char *text, *want; } not_objects[] = {{"[]", "trainer_state.json: not a JSON object"},
                                                                      {"{", "trainer_state.json:1: not valid JSON"},
                                                                      {"", "trainer_state.json:1: not valid JSON"},
                                                                      {"{\"global_step\": 3} junk", "trainer_state.json:1: unexpected text after the JSON value"}};
  for (size_t i = 0; i < sizeof not_objects / sizeof *not_objects; i++) {
    fresh_copy();
    FILE *f = fopen("c/checkpoint-3/trainer_state.json", "w");
    fputs(not_objects[i].text, f);
    fclose(f);
    int rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
    CHECK(rc != 0 && strstr(err.msg, not_objects[i].want), "trainer_state.json \"%s\": %s", not_objects[i].text, err.msg);
  }
}

static void test_incomplete(void) {
  oc_error err;
  /* a named checkpoint missing a file, or with a truncated tensor file, is an error */
  fresh_copy();
  REQUIRE(unlink("c/checkpoint-3/optimizer.safetensors") == 0, "unlink");
  int rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-3: incomplete checkpoint: optimizer.safetensors is missing"), "named, incomplete: %s", err.msg);
  fresh_copy();
  REQUIRE(truncate("c/checkpoint-3/model.safetensors", 1000) == 0, "truncate");
  rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-3/model.safetensors"), "named, truncated weights: %s", err.msg);

  /* "latest" falls back to the newest complete checkpoint, and the result is the uninterrupted run's */
  static const char *const damage[] = {"rm c/checkpoint-3/optimizer.safetensors", "truncate -s 1000 c/checkpoint-3/model.safetensors",
                                       "rm c/checkpoint-3/trainer_state.json", "rm c/checkpoint-3/config.json"};
  for (size_t i = 0; i < sizeof damage / sizeof *damage; i++) {
    fresh_copy();
    REQUIRE(sh("%s%s", damage[i], "") == 0, "%s", damage[i]);
    REQUIRE(sh("mkdir c/checkpoint-x c/checkpoint-99999999999999999999 c/checkpoint-%s%s", "", "") == 0, "decoys");
    rc = train("c", "latest", 1, 0, 3, &err);
    char *log = run_log();
    CHECK(rc == 0 && strstr(log, "skipping c/checkpoint-3: c/checkpoint-3") && strstr(log, "resuming from c/checkpoint-2 at step 2 of 4"),
          "latest after \"%s\": %s %s", damage[i], err.msg, log);
    CHECK(same_file("c/model.safetensors", "full/model.safetensors"), "resumed from checkpoint-2 == uninterrupted, bit for bit (%s)", damage[i]);
    free(log);
  }
  fresh_copy();
  set_state("global_step", "-5");
  rc = train("c", "latest", 1, 0, 3, &err);
  char *log = run_log();
  CHECK(rc == 0 && strstr(log, "global_step") && strstr(log, "resuming from c/checkpoint-2"), "latest skips global_step -5: %s %s", err.msg, log);
  free(log);
  /* none complete */
  fresh_copy();
  REQUIRE(sh("rm c/checkpoint-1/optimizer.safetensors c/checkpoint-2/optimizer.safetensors c/checkpoint-3/optimizer.safetensors%s%s", "", "") == 0, "rm");
  rc = train("c", "latest", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c: no complete checkpoint-N directory to resume from"), "none complete: %s", err.msg);
  /* none at all, or no output directory */
  REQUIRE(sh("rm -rf c/checkpoint-* && mkdir -p c%s%s", "", "") == 0, "rm");
  rc = train("c", "latest", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c: no complete checkpoint-N directory to resume from"), "no checkpoints: %s", err.msg);
  rc = train("nowhere", "latest", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "nowhere: no checkpoint-N directory to resume from"), "no output directory: %s", err.msg);
}

/* c/checkpoint-3's safetensors `file` rewritten: element k of tensor `name` set to value (drop: the
 * tensor left out), plus a copy of the first tensor named `extra` (NULL: none) */
static void rewrite(const char *file, const char *name, size_t k, float value, int drop, const char *extra) {
  char p[64];
  snprintf(p, sizeof p, "c/checkpoint-3/%s", file);
  oc_st_file *f;
  oc_error e;
  REQUIRE(oc_st_open(p, &f, &e) == 0, "%s", e.msg);
  oc_st_writer *w = oc_st_writer_new();
  float *changed = NULL;
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    const void *d = t->data;
    if (name && strcmp(t->name, name) == 0) {
      if (drop) continue;
      REQUIRE(t->dtype == OC_DT_F32 && (size_t)t->numel > k, "%s", name);
      changed = malloc(t->nbytes);
      memcpy(changed, t->data, t->nbytes);
      changed[k] = value;
      d = changed;
    }
    REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, d, &e) == 0, "%s", e.msg);
    if (extra && i == 0) REQUIRE(oc_st_writer_add(w, extra, t->dtype, t->ndim, t->shape, t->data, &e) == 0, "%s", e.msg);
  }
  REQUIRE(oc_st_writer_write(w, p, &e) == 0, "%s", e.msg);
  oc_st_writer_free(w);
  oc_st_close(f);
  free(changed);
}

/* a NaN or negative Adam second moment, a NaN first moment or weight: a corrupt checkpoint, named
 * with the tensor; "latest" skips it and the result is still the uninterrupted run's */
static void test_corrupt_values(void) {
  static const struct {
    const char *file, *tensor;
    size_t k;
    float value;
    const char *want;
  } bad[] = {
      {"optimizer.safetensors", "v.classifier.weight", 5, NAN, "tensor \"v.classifier.weight\" has a non-finite value (nan) at element 5"},
      {"optimizer.safetensors", "v.model.final_norm.weight", 0, -1.0f,
       "tensor \"v.model.final_norm.weight\" has a negative value (-1) at element 0 (an Adam second moment is finite and >= 0)"},
      {"optimizer.safetensors", "m.head.dense.weight", 3, INFINITY, "tensor \"m.head.dense.weight\" has a non-finite value (inf) at element 3"},
      {"model.safetensors", "model.embeddings.norm.weight", 2, NAN, "tensor \"model.embeddings.norm.weight\" has a non-finite value (nan) at element 2"},
  };
  oc_error err;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    fresh_copy();
    rewrite(bad[i].file, bad[i].tensor, bad[i].k, bad[i].value, 0, NULL);
    char where[80];
    snprintf(where, sizeof where, "c/checkpoint-3/%s", bad[i].file);
    int rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
    CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-3: corrupt checkpoint") && strstr(err.msg, where) && strstr(err.msg, bad[i].want), "named, %s: %s",
          bad[i].want, err.msg);
    rc = train("c", "latest", 1, 0, 3, &err);
    char *log = run_log();
    CHECK(rc == 0 && strstr(log, "skipping c/checkpoint-3") && strstr(log, bad[i].want) && strstr(log, "resuming from c/checkpoint-2 at step 2 of 4"),
          "latest skips %s: %s %s", bad[i].tensor, err.msg, log);
    CHECK(same_file("c/model.safetensors", "full/model.safetensors"), "resumed from checkpoint-2 == uninterrupted (%s)", bad[i].tensor);
    free(log);
  }
  /* a moment missing (was resumed as zeros, silently) or one of another model */
  fresh_copy();
  rewrite("optimizer.safetensors", "m.classifier.bias", 0, 0, 1, NULL);
  int rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-3/optimizer.safetensors: optimizer state of \"classifier.bias\" missing"), "a moment missing: %s", err.msg);
  fresh_copy();
  rewrite("optimizer.safetensors", NULL, 0, 0, 0, "m.model.layers.9.attn.Wo.weight");
  rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-3/optimizer.safetensors") && strstr(err.msg, "tensors where this model has"), "an extra moment: %s", err.msg);
  fresh_copy();
  rewrite("optimizer.safetensors", NULL, 0, 0, 0, "w.extra");
  rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "tensor \"w.extra\" is not an Adam moment"), "not a moment: %s", err.msg);
  fresh_copy();
  rewrite("model.safetensors", NULL, 0, 0, 0, "model.layers.9.attn.Wo.weight");
  rc = train("c", "c/checkpoint-3", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-3/model.safetensors: tensor \"model.layers.9.attn.Wo.weight\" is not part of the model"),
        "a weight of another model: %s", err.msg);
}

/* checkpoint-N must hold step N: a checkpoint-9 holding step 2 is not taken over a newer checkpoint-3 */
static void test_name_vs_state(void) {
  oc_error err;
  fresh_copy();
  REQUIRE(sh("cp -a c/checkpoint-2 c/checkpoint-9%s%s", "", "") == 0, "copy");
  int rc = train("c", "latest", 1, 0, 3, &err);
  char *log = run_log();
  CHECK(rc == 0 &&
            strstr(log, "skipping c/checkpoint-9: c/checkpoint-9: not a checkpoint of the step its name says: its trainer_state.json has global_step 2") &&
            strstr(log, "resuming from c/checkpoint-3 at step 3 of 4"),
        "latest skips checkpoint-9 at step 2: %s %s", err.msg, log);
  CHECK(same_file("c/model.safetensors", "full/model.safetensors"), "resumed from checkpoint-3 == uninterrupted");
  free(log);
  fresh_copy();
  REQUIRE(sh("cp -a c/checkpoint-2 c/checkpoint-9%s%s", "", "") == 0, "copy");
  rc = train("c", "c/checkpoint-9/", 1, 0, 3, &err);
  CHECK(rc != 0 && strstr(err.msg, "c/checkpoint-9/: not a checkpoint of the step its name says") && strstr(err.msg, "global_step 2 (checkpoint-2)"),
        "named checkpoint-9 at step 2: %s", err.msg);
  /* the step written as training writes it: checkpoint-03 is not checkpoint-3 (it was read as 3 and
   * checkpoint-3 opened instead) */
  fresh_copy();
  REQUIRE(sh("mv c/checkpoint-3 c/checkpoint-03%s%s", "", "") == 0, "mv");
  rc = train("c", "latest", 1, 0, 3, &err);
  log = run_log();
  CHECK(rc == 0 && strstr(log, "skipping c/checkpoint-03: c/checkpoint-03: not a checkpoint of the step its name says") &&
            strstr(log, "resuming from c/checkpoint-2 at step 2 of 4"),
        "latest skips checkpoint-03: %s %s", err.msg, log);
  free(log);
  /* a name that claims no step: the trainer state says which */
  fresh_copy();
  REQUIRE(sh("mv c/checkpoint-3 c/saved%s%s", "", "") == 0, "mv");
  rc = train("c", "c/saved", 1, 0, 3, &err);
  log = run_log();
  CHECK(rc == 0 && strstr(log, "resuming from c/saved at step 3 of 4"), "a checkpoint named otherwise: %s %s", err.msg, log);
  CHECK(same_file("c/model.safetensors", "full/model.safetensors"), "resumed from c/saved == uninterrupted");
  free(log);
}

/* every F32 value of a safetensors file finite */
static int all_finite(const char *path) {
  oc_st_file *f;
  oc_error e;
  if (oc_st_open(path, &f, &e)) return 0;
  int ok = 1;
  for (int i = 0; i < oc_st_count(f) && ok; i++) {
    const oc_tensor *t = oc_st_at(f, i);
    ok = t->dtype != OC_DT_F32 || oc_find_nonfinite(t->data, (size_t)t->numel) == (size_t)t->numel;
  }
  oc_st_close(f);
  return ok;
}

/* training that diverges (a learning rate of 1e30: weights of 1e30 after step 1, NaN at step 2) stops
 * with an error and saves no checkpoint and no classifier of NaN weights (it saved NaN checkpoints
 * that "latest" took as complete) */
static void test_diverged(void) {
  oc_error err;
  learning_rate = 1e30;
  for (int save_steps = 1; save_steps >= 0; save_steps--) {
    const char *out = save_steps ? "nan" : "nan2";
    int rc = train(out, NULL, save_steps, 0, 3, &err);
    CHECK(rc != 0 && strstr(err.msg, "step 2: training diverged (loss"), "diverged training (save_steps %d): %s", save_steps, err.msg);
    int saved = 0, finite = 1;
    for (int k = 1; k <= 4; k++) {
      char p[64];
      snprintf(p, sizeof p, "%s/checkpoint-%d/model.safetensors", out, k);
      if (access(p, F_OK) != 0) continue;
      saved++;
      finite &= all_finite(p);
      snprintf(p, sizeof p, "%s/checkpoint-%d/optimizer.safetensors", out, k);
      finite &= all_finite(p);
    }
    char p[64];
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    CHECK(finite && saved == save_steps && access(p, F_OK) != 0, "save_steps %d: %d checkpoints saved (step 1's, finite); no classifier", save_steps, saved);
  }
  learning_rate = 2e-5;
}

static long dead_pid(void) {
  pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, NULL, 0);
  return (long)p;
}

static void test_set_aside(void) {
  /* a writer killed between its two renames left checkpoint-3 aside: named or latest, it is restored */
  oc_error err;
  char aside[128];
  snprintf(aside, sizeof aside, "c/.checkpoint-3.old-%ld-AbC123", dead_pid());
  for (int named = 0; named < 2; named++) {
    fresh_copy();
    REQUIRE(rename("c/checkpoint-3", aside) == 0, "set aside");
    int rc = train("c", named ? "c/checkpoint-3" : "latest", 1, 0, 3, &err);
    char *log = run_log();
    CHECK(rc == 0 && strstr(log, "resuming from c/checkpoint-3 at step 3 of 4") && access(aside, F_OK) != 0, "%s, set aside: %s %s",
          named ? "named" : "latest", err.msg, log);
    CHECK(same_file("c/model.safetensors", "full/model.safetensors"), "resumed from the restored checkpoint-3 == uninterrupted");
    free(log);
  }
  /* the output directory itself set aside (killed while replacing it): restored when the run starts */
  snprintf(aside, sizeof aside, ".c.old-%ld-AbC123", dead_pid());
  fresh_copy();
  REQUIRE(rename("c", aside) == 0, "set aside");
  int rc = train("c", "latest", 1, 0, 3, &err);
  char *log = run_log();
  CHECK(rc == 0 && strstr(log, "resuming from c/checkpoint-3 at step 3 of 4") && access(aside, F_OK) != 0, "output directory set aside: %s %s",
        err.msg, log);
  free(log);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_checkpoint CLASSIFIER_DIR");
  REQUIRE((base = realpath(argv[1], NULL)), "%s", argv[1]);
  oc_set_threads(1); /* tiny model: threads only add waiting */
  REQUIRE(mkdtemp(tmp) && chdir(tmp) == 0, "work directory");
  snprintf(log_path, sizeof log_path, "%s/log.txt", tmp);
  FILE *f = fopen("train.jsonl", "w");
  for (int i = 0; i < 9; i++)
    fprintf(f, "{\"prompt\": \"question %d\", \"response\": \"%s %d\", \"label\": %d}\n", i,
            i % 3 == 2 ? "Sure, the steps are" : i % 3 == 1 ? "I can't help with that." : "Here is a recipe.", i, i % 3);
  fclose(f);
  oc_error err;
  REQUIRE(train("full", NULL, 0, 0, 3, &err) == 0, "uninterrupted run: %s", err.msg);
  REQUIRE(train("ck", NULL, 1, 3, 3, &err) == 0, "run stopped at step 3: %s", err.msg);
  REQUIRE(access("ck/checkpoint-3/trainer_state.json", F_OK) == 0 && access("ck/model.safetensors", F_OK) != 0, "checkpoints 1-3, no output");
  test_state_validation();
  test_incomplete();
  test_name_vs_state();
  test_corrupt_values();
  test_diverged();
  test_set_aside();
  REQUIRE(chdir("/") == 0, "chdir");
  sh("rm -rf %s%s", tmp, "");
  return check_summary("checkpoint");
}
