/* The CLI's flags, checked by running the binary: every command's --help lists exactly the flags
 * of its option table (the table the parser reads) with their defaults, every listed flag is
 * accepted, unknown flags, boolean values, strict numbers with ranges, file-or-directory checks,
 * repeated flags; the --input_ids / --layers / detokenize defects (ids out of int32 range once
 * crashed with a use-after-free, --layers 4294967297 wrapped to 1, detokenize dropped unknown ids);
 * classify --input_ids on a classifier directory without tokenizer files. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/classifier.h"
#include "opencon/guard.h"
#include "opencon/model.h"
#include "opencon/probe.h"
#include "opts.h"

static const char *bin;
static char out[1 << 16];

/* run `opencon ARGS` (printf format), stdout and stderr together into out; the exit status */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  static char args[1 << 15], cmd[(1 << 15) + 1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "HF_HUB_OFFLINE=1 %s %s 2>&1", bin, args);
  return run_capture(cmd, out, sizeof out);
}

/* out with every run of white space as one space (--help wraps lines) */
static const char *flat(void) {
  static char f[sizeof out];
  size_t k = 0;
  for (const char *p = out; *p; p++) {
    if (isspace((unsigned char)*p)) {
      if (k && f[k - 1] != ' ') f[k++] = ' ';
    } else f[k++] = *p;
  }
  f[k] = 0;
  return f;
}

/* --help of each command against its table; each flag of the table accepted by the parser */
static void test_help(void) {
  CHECK(run("--help") == 0 && strstr(out, "commands:"), "opencon --help: %s", out);
  for (const cli_command *const *cp = cli_commands; *cp; cp++) {
    const cli_command *c = *cp;
    int rc = run("%s --help", c->name);
    char help[sizeof out];
    memcpy(help, out, sizeof out);
    CHECK(rc == 0 && strncmp(help, "usage: opencon ", 15) == 0, "%s --help: rc %d: %.200s", c->name, rc, help);
    CHECK(run("%s -h", c->name) == 0 && strcmp(out, help) == 0, "%s -h prints the same help", c->name);
    /* every "  --name" line is a flag of the table, and every flag of the table has one */
    int listed = 0;
    for (const char *p = help; (p = strstr(p, "\n  --")); p++) {
      char name[64];
      size_t n = strcspn(p + 5, " \n");
      snprintf(name, sizeof name, "%.*s", (int)(n < 63 ? n : 63), p + 5);
      int found = 0;
      for (const opt_spec *s = c->opts; s->name; s++) found |= strcmp(s->name, name) == 0;
      CHECK(found, "%s --help lists --%s, which its table lacks", c->name, name);
      listed++;
    }
    int in_table = 0;
    memcpy(out, help, sizeof out);
    const char *fh = flat();
    for (const opt_spec *s = c->opts; s->name; s++, in_table++) {
      char want[160];
      if (s->type == OPT_ARGS) { /* plain arguments: shown in the usage line, and their name is not a flag */
        snprintf(want, sizeof want, " [%s ...]", s->metavar);
        CHECK(strstr(fh, want), "%s --help does not show %s", c->name, want);
        snprintf(want, sizeof want, "unknown flag --%s;", s->name);
        CHECK(run("%s --%s=x", c->name, s->name) == 2 && strstr(out, want), "%s: --%s is not a flag: %s", c->name, s->name, out);
        in_table--;
        continue;
      }
      snprintf(want, sizeof want, " --%s%s", s->name, s->type == OPT_FLAG ? " " : "");
      CHECK(strstr(fh, want), "%s --help does not list --%s", c->name, s->name);
      if (s->def) {
        snprintf(want, sizeof want, "default %s", s->def);
        CHECK(strstr(fh, want), "%s --help: --%s's default %s not shown", c->name, s->name, s->def);
      }
      /* the parser takes the flag: the next, unknown one is what it stops at (or the value is refused by name) */
      if (s->type == OPT_FLAG) rc = run("%s --%s --zz_not_a_flag", c->name, s->name);
      else rc = run("%s --%s=1 --zz_not_a_flag", c->name, s->name);
      char own[96], unknown[128];
      snprintf(own, sizeof own, "--%s", s->name);
      snprintf(unknown, sizeof unknown, "unknown flag --%s;", s->name);
      CHECK(rc == 2 && !strstr(out, unknown) && (strstr(out, "unknown flag --zz_not_a_flag;") || strstr(out, own)), "%s accepts --%s: %s", c->name, s->name,
            out);
    }
    CHECK(listed == in_table, "%s --help lists %d flags, its table has %d", c->name, listed, in_table);
    CHECK(run("%s --zz_not_a_flag", c->name) == 2 && strstr(out, "error: unknown flag --zz_not_a_flag; see opencon "), "%s: unknown flag: %s", c->name,
          out);
  }
  CHECK(run("frobnicate") == 2 && strstr(out, "unknown command"), "unknown command: %s", out);
}

/* values: booleans, numbers, files, repeats, missing values */
static void test_values(const char *mdir, const char *tmp) {
  CHECK(run("generate --model_id %s --input_ids 1 --no_eos_stop=yes", mdir) == 2 &&
            strstr(out, "--no_eos_stop takes no value, or =true / =false; got \"yes\""),
        "bool =yes: %s", out);
  CHECK(run("generate --model_id %s --input_ids 1 --no_eos_stop=1", mdir) == 2 && strstr(out, "--no_eos_stop takes no value"), "bool =1: %s", out);
  CHECK(run("generate --model_id %s --input_ids 1 --no_eos_stop true", mdir) == 2 && strstr(out, "unexpected argument \"true\""), "bool, separate value: %s",
        out);
  const char *bad_ints[] = {"abc", "1e3", "0x10", "' 5'", "5x", "+5", "''", "--5", NULL};
  for (const char **b = bad_ints; *b; b++)
    CHECK(run("generate --model_id %s --input_ids 1 --max_new_tokens=%s", mdir, *b) == 2 &&
              strstr(out, "--max_new_tokens must be a whole number from 1 to 1048576;") && strstr(out, "is not one; see opencon generate --help"),
          "--max_new_tokens %s: %s", *b, out);
  const char *out_of_range[] = {"0", "-5", "1048577", "99999999999999999999", "-99999999999999999999", NULL};
  for (const char **b = out_of_range; *b; b++) {
    char want[128];
    snprintf(want, sizeof want, "--max_new_tokens must be from 1 to 1048576; got %s", *b);
    CHECK(run("generate --model_id %s --input_ids 1 --max_new_tokens %s", mdir, *b) == 2 && strstr(out, want), "--max_new_tokens %s: %s", *b, out);
  }
  const char *bad_doubles[] = {"nan", "inf", "-inf", "0x1p3", "1e", ".", "' 1'", "1,5", NULL};
  for (const char **b = bad_doubles; *b; b++)
    CHECK(run("guarded-generate --probe_path $OC_EMPTY --prompt x --temperature=%s", *b) == 2 &&
              strstr(out, "--temperature must be a number from 0 to 100;"),
          "--temperature %s: %s", *b, out);
  CHECK(run("guarded-generate --probe_path $OC_EMPTY --prompt x --temperature 1e999") == 2 && strstr(out, "--temperature must be from 0 to 100; got 1e999"),
        "--temperature overflow: %s", out);
  CHECK(run("guarded-generate --probe_path $OC_EMPTY --prompt x --top_p 0") == 2 && strstr(out, "--top_p must be from 1e-06 to 1; got 0"), "--top_p 0: %s",
        out);
  /* --threads: 0..1024 in the table, and at most 4 per core */
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  CHECK(run("generate --model_id %s --input_ids 1 --threads 2000", mdir) == 2 && strstr(out, "--threads must be from 0 to 1024; got 2000"), "--threads 2000: %s",
        out);
  if (cores > 0 && cores * 4 < 1000)
    CHECK(run("generate --model_id %s --input_ids 1 --threads 1000", mdir) == 2 && strstr(out, "--threads 1000: this machine has") &&
              strstr(out, "per core"),
          "--threads 1000: %s", out);
  CHECK(run("generate --model_id %s --input_ids 1 --max_new_tokens 2 --threads 1 --no_eos_stop", mdir) == 0 && strchr(out, '['), "--threads 1 runs: %s",
        out);
  /* files */
  CHECK(run("tokenize --model_id %s --file %s", mdir, tmp) == 2 && strstr(out, "is a directory; a file is expected"), "--file DIR: %s", out);
  CHECK(run("tokenize --model_id %s --file %s/nonexistent.txt", mdir, tmp) == 2 && strstr(out, "nonexistent.txt: no such file"), "--file missing: %s", out);
  CHECK(run("forward --model_id %s --input_ids 1 --out %s", mdir, tmp) == 2 && strstr(out, "--out") && strstr(out, "is a directory"), "--out DIR: %s", out);
  CHECK(run("train-probe --data_path %s/../nonexistent.jsonl --out_dir %s/x", tmp, tmp) == 2 && strstr(out, "--data_path") && strstr(out, "no such file"),
        "--data_path missing: %s", out);
  /* FIFOs and devices: an input that would block forever, an output that must never be replaced
   * by a file (as root, --out /dev/null would have replaced /dev/null); a missing directory */
  char fifo[600];
  snprintf(fifo, sizeof fifo, "%s/fifo", tmp);
  REQUIRE(mkfifo(fifo, 0644) == 0, "mkfifo");
  CHECK(run("tokenize --model_id %s --file %s", mdir, fifo) == 2 && strstr(out, "is a device, FIFO or socket; a regular file is expected"), "--file FIFO: %s", out);
  CHECK(run("forward --model_id %s --input_ids 1 --out %s", mdir, fifo) == 2 && strstr(out, "is never replaced"), "--out FIFO: %s", out);
  CHECK(run("forward --model_id %s --input_ids 1 --out /dev/null", mdir) == 2 && strstr(out, "is never replaced"), "--out /dev/null: %s", out);
  struct stat fst;
  CHECK(stat(fifo, &fst) == 0 && S_ISFIFO(fst.st_mode) && stat("/dev/null", &fst) == 0 && S_ISCHR(fst.st_mode), "the FIFO and /dev/null are untouched");
  CHECK(run("forward --model_id %s --input_ids 1 --out %s/no/such/dir/x.safetensors", mdir, tmp) == 2 && strstr(out, "its directory does not exist"),
        "--out in a missing directory: %s", out);
  CHECK(run("train-probe --data_path $OC_EMPTY --out_dir %s/p --progress_path %s/no/such/progress.json", tmp, tmp) == 2 &&
            strstr(out, "--progress_path") && strstr(out, "its directory does not exist"),
        "--progress_path in a missing directory: %s", out);
  /* the library refuses them too, whoever calls it */
  oc_error e;
  char *txt;
  CHECK(oc_read_file(fifo, &txt, NULL, &e) != 0 && strstr(e.msg, "not a regular file"), "oc_read_file on a FIFO returns at once: %s", e.msg);
  CHECK(oc_write_file_atomic(fifo, "x", 1, &e) != 0 && strstr(e.msg, "never replaced") && stat(fifo, &fst) == 0 && S_ISFIFO(fst.st_mode),
        "oc_write_file_atomic over a FIFO: %s", e.msg);
  char target[600], link[600];
  snprintf(target, sizeof target, "%s/target.json", tmp);
  snprintf(link, sizeof link, "%s/link.json", tmp);
  REQUIRE(oc_write_file_atomic(target, "old", 3, &e) == 0 && symlink(target, link) == 0, "symlink");
  size_t tl = 0;
  CHECK(oc_write_file_atomic(link, "new", 3, &e) == 0 && lstat(link, &fst) == 0 && S_ISLNK(fst.st_mode) && oc_read_file(target, &txt, &tl, &e) == 0 &&
            tl == 3 && memcmp(txt, "new", 3) == 0,
        "a symlink to a regular file is written through, and stays a link: %s", e.msg);
  if (tl) free(txt);
  CHECK(run("forward --help=false") == 2 && strstr(out, "--help takes no value"), "--help=false: %s", out);
  /* an output directory that cannot be written whole is refused before any work (the journal of
   * the collection was left in it) */
  char cwd_cmd[1400];
  snprintf(cwd_cmd, sizeof cwd_cmd, "cd %s && mkdir -p here && cd here && HF_HUB_OFFLINE=1 %s train-probe --model_id %s --data_path $OC_EMPTY --out_dir . 2>&1; ls -A", tmp,
           bin, mdir);
  CHECK(run_capture(cwd_cmd, out, sizeof out) == 0 && strstr(out, "must be named by its own name") && !strstr(out, "activations.partial"),
        "--out_dir . refused before collecting: %s", out);
  oc_classifier *nc;
  CHECK(oc_classifier_open("/nonexistent/classifier", 0, NAN, NAN, &nc, &e) != 0 && e.code == OC_ERR_NOT_FOUND, "a missing directory is not_found (%s): %s",
        oc_errcode_name(e.code), e.msg);
  /* repeated, missing and misplaced values */
  CHECK(run("generate --model_id %s --input_ids 1 --max_new_tokens 1 --max_new_tokens 2", mdir) == 2 && strstr(out, "--max_new_tokens is given twice"),
        "repeated flag: %s", out);
  CHECK(run("generate --model_id %s --input_ids 1 --max_new_tokens", mdir) == 2 && strstr(out, "--max_new_tokens needs a value"), "missing value: %s", out);
  CHECK(run("guarded-generate --probe_path $OC_EMPTY --prompt --max_new_tokens 3") == 2 && strstr(out, "--prompt needs a value, but the next argument is --max_new_tokens"),
        "value that is a flag: %s", out);
  CHECK(run("generate --input_ids 1") == 2 && strstr(out, "--model_id is required; see opencon generate --help"), "required flag: %s", out);
  CHECK(run("generate --model_id %s --input_ids 1 stray", mdir) == 2 && strstr(out, "unexpected argument \"stray\""), "positional: %s", out);
  CHECK(run("benchmark-jailbreak --probe_path $OC_EMPTY --dataset_path $OC_EMPTY --judge_type foo") == 2 &&
            strstr(out, "--judge_type must be one of classifier|openrouter; got \"foo\""),
        "choice: %s", out);
  CHECK(run("classify --classifier_dir x --prompt p --allow_threshold 1.5") == 2 && strstr(out, "--allow_threshold must be from 0 to 1; got 1.5"),
        "threshold range: %s", out);
}

/* the strict integer-list parser every id and layer list goes through */
static void test_int_list(void) {
  const char *bad[] = {"", "1,", ",1", "1,,2", "1 ,2", "1, 2", " 1", "+1", "--1", "-", "1-2", "0x10", "1.5", "[1,2]", "99999999999999999999",
                       "-99999999999999999999", NULL};
  oc_error err;
  int64_t *v;
  int n;
  for (const char **b = bad; *b; b++) {
    v = (int64_t *)1;
    CHECK(oc_parse_int_list(*b, &v, &n, &err) != 0 && v == NULL && n == 0, "\"%s\" refused", *b);
  }
  CHECK(oc_parse_int_list("1,abc", &v, &n, &err) != 0 && strstr(err.msg, "item 2 is not an integer: \"abc\""), "1,abc: %s", err.msg);
  CHECK(oc_parse_int_list("1,,2", &v, &n, &err) != 0 && strstr(err.msg, "item 2 is empty"), "1,,2: %s", err.msg);
  REQUIRE(oc_parse_int_list("2,-0,-9223372036854775808,9223372036854775807,007", &v, &n, &err) == 0, "%s", err.msg);
  CHECK(n == 5 && v[0] == 2 && v[1] == 0 && v[2] == INT64_MIN && v[3] == INT64_MAX && v[4] == 7, "values");
  free(v);
}

static void ids_list(char *buf, size_t size, int n, int id) {
  size_t k = 0;
  for (int i = 0; i < n && k + 16 < size; i++) k += (size_t)snprintf(buf + k, size - k, "%s%d", i ? "," : "", id);
}

/* --input_ids, --layers, detokenize --ids */
static void test_ids(const char *mdir, const char *cdir, const char *tmp) {
  oc_error err;
  oc_model *m;
  REQUIRE(oc_model_load(mdir, &m, &err) == 0, "%s", err.msg);
  const oc_model_config *c = oc_model_cfg(m);
  const int V = c->vocab, P = c->max_position_embeddings;
  oc_model_free(m);
  /* ids outside int32 / negative: a use-after-free and double free before (main.c get_ids) */
  const char *huge[] = {"1,-5", "1,2147483648", "-1", "1,9223372036854775807", NULL};
  for (const char **h = huge; *h; h++) {
    CHECK(run("forward --model_id %s --input_ids %s --out %s/f.safetensors", mdir, *h, tmp) == 2 && strstr(out, "--input_ids: item") &&
              strstr(out, "each must be from 0 to 2147483647"),
          "forward --input_ids %s: %s", *h, out);
    CHECK(run("generate --model_id %s --input_ids %s", mdir, *h) == 2 && strstr(out, "each must be from 0 to 2147483647"), "generate --input_ids %s: %s", *h, out);
    CHECK(run("classify --classifier_dir %s --input_ids %s", cdir, *h) == 2 && strstr(out, "each must be from 0 to 2147483647"), "classify --input_ids %s: %s", *h,
          out);
  }
  CHECK(run("classify --classifier_dir %s --input_ids 1,abc", cdir) == 2 && strstr(out, "--input_ids: item 2 is not an integer: \"abc\""), "classify 1,abc: %s",
        out);
  CHECK(run("generate --model_id %s --input_ids 1,abc", mdir) == 2 && strstr(out, "--input_ids: item 2 is not an integer: \"abc\""), "generate 1,abc: %s", out);
  char vocab_id[64];
  snprintf(vocab_id, sizeof vocab_id, "1,%d", V);
  CHECK(run("forward --model_id %s --input_ids %s --out %s/f.safetensors", mdir, vocab_id, tmp) == 1 && strstr(out, "outside the vocabulary"),
        "id == vocab size: %s", out);
  /* more positions than the model has */
  static char ids[1 << 15];
  ids_list(ids, sizeof ids, P + 1, 1);
  CHECK(run("forward --model_id %s --input_ids %s --out %s/f.safetensors", mdir, ids, tmp) == 1 && strstr(out, "exceed the model's") &&
            strstr(out, "max_position_embeddings"),
        "forward past max_position_embeddings: %.300s", out);
  ids_list(ids, sizeof ids, P - 2, 1);
  CHECK(run("generate --model_id %s --input_ids %s --max_new_tokens 5", mdir, ids) == 1 && strstr(out, "+ 5 new tokens exceed the model's"),
        "generate past max_position_embeddings: %.300s", out);
  CHECK(run("forward --model_id %s --input_ids 1,2 --max_ctx %d --out %s/f.safetensors", mdir, P + 1, tmp) == 1 && strstr(out, "--max_ctx"),
        "--max_ctx past max_position_embeddings: %s", out);
  /* --layers 4294967297 wrapped to layer 1 */
  CHECK(run("forward --model_id %s --input_ids 1,2 --layers 4294967297 --out %s/f.safetensors", mdir, tmp) == 2 &&
            strstr(out, "--layers: item 1 is 4294967297; each must be from -100000 to 100000") && access(path_in(tmp, "f.safetensors"), F_OK) != 0,
        "--layers 4294967297: %s", out);
  CHECK(run("sweep-layers --activations $OC_EMPTY --layers=-2,4294967297") == 2 && strstr(out, "--layers: item 2 is 4294967297"), "sweep --layers: %s", out);
  /* detokenize: ids that wrapped (4294967297 -> 1) or were dropped (unknown ids) */
  CHECK(run("detokenize --model_id %s --ids 1,4294967297", mdir) == 2 && strstr(out, "item 2 is 4294967297"), "detokenize wrap: %s", out);
  CHECK(run("detokenize --model_id %s --ids 1,-1", mdir) == 2 && strstr(out, "item 2 is -1"), "detokenize negative: %s", out);
  char want[128];
  snprintf(want, sizeof want, "item 2, id %d, is not in the tokenizer's vocabulary", 99999);
  CHECK(run("detokenize --model_id %s --ids 1,99999,2", mdir) == 1 && strstr(out, want), "detokenize unknown id: %s", out);
  CHECK(run("detokenize --model_id %s --ids 1,2", mdir) == 0, "detokenize: %s", out);
}

static int copy_file(const char *from, const char *to) {
  char cmd[1500];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
  return system(cmd);
}

/* classify --input_ids needs config.json + model.safetensors only */
static void test_classify_ids_only(const char *cdir, const char *tmp) {
  char dir[600], from[700], to[700];
  snprintf(dir, sizeof dir, "%s/cls_no_tokenizer", tmp);
  REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
  const char *files[] = {"config.json", "model.safetensors"};
  for (int i = 0; i < 2; i++) {
    snprintf(from, sizeof from, "%s/%s", cdir, files[i]);
    snprintf(to, sizeof to, "%s/%s", dir, files[i]);
    REQUIRE(copy_file(from, to) == 0, "cp %s", from);
  }
  int rc = run("classify --classifier_dir %s --input_ids 501,40,41,42,502", cdir);
  cJSON *full = cJSON_Parse(out);
  CHECK(rc == 0 && full, "classify with the tokenizer: %s", out);
  rc = run("classify --classifier_dir %s --input_ids 501,40,41,42,502", dir);
  cJSON *bare = cJSON_Parse(out);
  CHECK(rc == 0 && bare && full && cJSON_GetObjectItem(bare, "score")->valuedouble == cJSON_GetObjectItem(full, "score")->valuedouble &&
            strcmp(cJSON_GetObjectItem(bare, "verdict")->valuestring, cJSON_GetObjectItem(full, "verdict")->valuestring) == 0,
        "classify --input_ids without tokenizer.json: %s", out);
  cJSON_Delete(full);
  cJSON_Delete(bare);
  CHECK(run("classify --classifier_dir %s --prompt hello", dir) == 1 && strstr(out, "tokenizer"), "text without a tokenizer: %s", out);
  oc_classifier *c;
  oc_error err;
  REQUIRE(oc_classifier_load_ids_only(dir, &c, &err) == 0, "%s", err.msg);
  oc_decision d;
  CHECK(c->tok == NULL && oc_classifier_score(c, "p", "r", &d, &err) != 0 && strstr(err.msg, "without its tokenizer"), "library: %s", err.msg);
  oc_classifier_free(c);
  static char ids[1 << 14];
  ids_list(ids, sizeof ids, 513, 40);
  CHECK(run("classify --classifier_dir %s --input_ids %s", dir, ids) == 1 && strstr(out, "at most 64 (its max_length)"), "too many ids: %.200s", out);
}

/* --skip_classifier=false must not skip the classifier (it did: any value counted as set) */
static void test_skip_classifier(const char *mdir, const char *cdir, const char *tmp) {
  oc_error err;
  oc_model *m;
  REQUIRE(oc_model_load(mdir, &m, &err) == 0, "%s", err.msg);
  int H = oc_model_cfg(m)->hidden;
  oc_model_free(m);
  oc_probe p = {H, calloc((size_t)H, sizeof(float)), 0};
  char pdir[600], pp[700], cp[700], cfg[1600];
  snprintf(pdir, sizeof pdir, "%s/probe", tmp);
  REQUIRE(mkdir(pdir, 0755) == 0, "mkdir");
  snprintf(pp, sizeof pp, "%s/probe.safetensors", pdir);
  snprintf(cp, sizeof cp, "%s/config.json", pdir);
  REQUIRE(oc_probe_save(&p, pp, &err) == 0, "%s", err.msg);
  free(p.w);
  snprintf(cfg, sizeof cfg, "{\"model_id\": \"%s\", \"layer\": -4, \"hidden_size\": %d, \"threshold\": 0.65, \"pause_threshold\": 0.75, "
                            "\"probe_every_n_tokens\": 4, \"smoothing_window\": 4, \"use_chat_template\": true}", mdir, H);
  REQUIRE(oc_write_file_atomic(cp, cfg, strlen(cfg), &err) == 0, "%s", err.msg);
  const char *values[] = {"--skip_classifier=false", "", "--skip_classifier", "--skip_classifier=true"};
  const int want_calls[] = {1, 1, 0, 0};
  for (int i = 0; i < 4; i++) {
    int rc = run("guarded-generate --model_id %s --probe_path %s --classifier_dir %s --prompt hi --max_new_tokens 4 --final_classifier_check %s",
                 mdir, pp, cdir, values[i]);
    const char *last = out;
    for (const char *q = out; (q = strchr(q, '\n')) && q[1]; q++) last = q + 1;
    cJSON *j = cJSON_Parse(last);
    const cJSON *calls = j ? cJSON_GetObjectItem(j, "classifier_calls") : NULL;
    CHECK(rc == 0 && cJSON_IsNumber(calls) && (calls->valueint > 0) == want_calls[i], "guarded-generate %s: classifier_calls %d: %s", values[i],
          calls ? calls->valueint : -1, out);
    cJSON_Delete(j);
  }
  /* thresholds without a classifier, and out of order, are refused before the model loads */
  CHECK(run("guarded-generate --model_id %s --probe_path %s --prompt hi --classifier_block_threshold 0.5", mdir, pp) == 1 &&
            strstr(out, "thresholds were given without a classifier"),
        "threshold without classifier: %s", out);

  /* the library's guard assembly: the cheap checks come before the model (a missing model is not reached) */
  oc_guard_spec spec;
  oc_guard_spec_defaults(&spec);
  oc_guard_bundle *b = (oc_guard_bundle *)1;
  spec.model_id = "/nonexistent/model";
  spec.probe_path = pp;
  CHECK(oc_guard_open(&spec, &b, &err) != 0 && b == NULL && strstr(err.msg, "trained for model_id"), "foreign probe, before the model: %s", err.msg);
  spec.model_id = mdir;
  spec.classifier_dir = cdir;
  spec.allow_threshold = 0.6;
  spec.block_threshold = 0.5;
  CHECK(oc_guard_open(&spec, &b, &err) != 0 && strstr(err.msg, "allow < block"), "unordered thresholds: %s", err.msg);
  char bad_cp[700];
  snprintf(bad_cp, sizeof bad_cp, "%s/config_wide.json", pdir);
  snprintf(cfg, sizeof cfg, "{\"model_id\": \"%s\", \"layer\": -4, \"hidden_size\": %d, \"use_chat_template\": false}", mdir, H + 1);
  REQUIRE(oc_write_file_atomic(bad_cp, cfg, strlen(cfg), &err) == 0, "%s", err.msg);
  spec.config_path = bad_cp;
  spec.allow_threshold = NAN;
  CHECK(oc_guard_open(&spec, &b, &err) != 0 && strstr(err.msg, "its config says hidden_size"), "probe width vs config: %s", err.msg);
  spec.config_path = NULL;
  spec.allow_threshold = 0.2;
  spec.block_threshold = 0.9;
  REQUIRE(oc_guard_open(&spec, &b, &err) == 0, "%s", err.msg);
  const oc_classifier *cls = oc_guard_bundle_classifier(b);
  const oc_probe_config *pc = oc_guard_bundle_probe_config(b);
  CHECK(cls && cls->allow_threshold == 0.2 && cls->block_threshold == 0.9 && pc && pc->hidden_size == H && pc->probe_every_n_tokens == 4 &&
            oc_model_cfg(oc_guard_bundle_model(b))->hidden == H && oc_guard_bundle_chat(b) && oc_guard_bundle_guard(b),
        "the bundle holds what the spec named");
  oc_guard_opts go;
  oc_guard_bundle_opts(b, &go);
  CHECK(go.use_chat_template == 1 && go.use_probe == 1 && go.max_new_tokens == 80, "bundle's generation defaults");
  oc_guard_close(b);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 4, "usage: test_cli_options OPENCON_BIN MODEL_DIR CLASSIFIER_DIR");
  bin = argv[1];
  const char *mdir = argv[2], *cdir = argv[3];
  char tmp[] = "/tmp/oc_cli_opts_XXXXXX";
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  /* a regular empty file for flags whose content the tested error comes before ($OC_EMPTY in run()) */
  char empty[600];
  snprintf(empty, sizeof empty, "%s/empty", tmp);
  FILE *ef = fopen(empty, "w");
  REQUIRE(ef, "%s", empty);
  fclose(ef);
  setenv("OC_EMPTY", empty, 1);
  test_int_list();
  test_help();
  test_values(mdir, tmp);
  test_ids(mdir, cdir, tmp);
  test_classify_ids_only(cdir, tmp);
  test_skip_classifier(mdir, cdir, tmp);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (g_fail == 0 && system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmp);
  return check_summary("cli_options");
}
