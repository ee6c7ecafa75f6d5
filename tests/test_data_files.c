/* Every reader of user data files parses strict JSON: a repeated key (cJSON keeps the first,
 * Python the last, so a label flips silently), a NUL in a string and text after a JSONL object
 * are errors naming the file and line, in datasets, prompt sets (JSONL, JSON, CSV), three-class
 * data, probe configs, config.json, classifier_config.json and tokenizer_config.json; so are
 * what Python's json.loads refuses and cJSON took (a label written 01 or 1., a byte-order mark on a
 * line), a number out of range, a line of \v\f (one blank-line rule for every JSONL reader),
 * invalid UTF-8 in dataset and three-class rows, keys of the wrong type in prompt sets and
 * `tokenize --jsonl` rows, and a CSV header naming a column twice. Loading and selecting prompts
 * stays linear: 200k CSV rows in 100k splits (quadratic, that took minutes; ctest's TIMEOUT
 * catches a return of it). */
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/chat.h"
#include "opencon/classifier.h"
#include "opencon/dataset.h"
#include "opencon/jailbreak.h"
#include "opencon/model.h"
#include "opencon/probe.h"

static char tmpdir[64];

static const char *write_file(const char *name, const char *data, size_t len) {
  const char *p = path_in(tmpdir, name);
  FILE *f = fopen(p, "wb");
  REQUIRE(f && fwrite(data, 1, len, f) == len && fclose(f) == 0, "cannot write %s", p);
  return p;
}
#define WRITE(name, lit) write_file(name, lit, sizeof lit - 1)

/* err.msg must name the file (its path) and contain needle */
static void expect(int rc, const oc_error *e, const char *path, const char *needle, const char *what) {
  CHECK(rc != 0 && strstr(e->msg, path) && strstr(e->msg, needle), "%s: expected an error naming %s with \"%s\", got: %s", what, path, needle,
        rc ? e->msg : "accepted");
}

/* the dataset file name (len bytes of text) fails to load with needle */
static void dataset_error(const char *name, const char *text, size_t len, const char *needle, const char *what) {
  oc_error e;
  oc_dataset d;
  const char *p = write_file(name, text, len);
  int rc = oc_dataset_load(p, 0, 0, &d, &e);
  expect(rc, &e, p, needle, what);
  if (!rc) oc_dataset_free(&d);
}
#define DATASET_ERROR(name, lit, needle, what) dataset_error(name, lit, sizeof lit - 1, needle, what)

#define ROW0 "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0}\n"
#define ROW1 "{\"prompt\": \"c\", \"response\": \"d\", \"label\": 1}\n"

/* build-three-class-classifier-data on the file name fails with needle and writes no output */
static void three_class_error(const char *name, const char *text, size_t len, const char *needle, const char *what) {
  oc_error e;
  oc_threeclass_stats st;
  const char *p = write_file(name, text, len), *out = path_in(tmpdir, "three_err_out.jsonl");
  expect(oc_build_three_class(p, out, &st, &e), &e, p, needle, what);
  CHECK(access(out, F_OK) != 0, "%s: no output written for a rejected input", what);
  unlink(out);
}
#define THREE_CLASS_ERROR(name, lit, needle, what) three_class_error(name, lit, sizeof lit - 1, needle, what)

/* What Python's json.loads refuses, what cJSON reads differently, and what Python cannot read as
 * UTF-8, in datasets and three-class data: each an error naming the line. */
static void strict_rows(void) {
  DATASET_ERROR("zero.jsonl", ROW0 "{\"prompt\": \"c\", \"response\": \"d\", \"label\": 01}\n", ":2: 01 is not a JSON number (a leading zero)",
                "dataset label 01");
  DATASET_ERROR("dot.jsonl", ROW0 "{\"prompt\": \"c\", \"response\": \"d\", \"label\": 1.}\n", ":2: 1. is not a JSON number", "dataset label 1.");
  DATASET_ERROR("bom.jsonl", ROW0 ROW1 "\xef\xbb\xbf" ROW1, ":3: a UTF-8 byte-order mark", "dataset BOM on line 3");
  DATASET_ERROR("vt.jsonl", ROW0 "\v\f\n" ROW1, ":2: the control character 0x0b", "dataset \\v\\f line");
  DATASET_ERROR("inf.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 1e400}\n", ":1: the number 1e400 is out of range",
                "dataset label 1e400 (said \"got null\")");
  DATASET_ERROR("latin1.jsonl", ROW0 "{\"prompt\": \"caf\xe9\", \"response\": \"d\", \"label\": 1}\n", ":2: the line is not valid UTF-8",
                "dataset invalid UTF-8");
  THREE_CLASS_ERROR("three-zero.jsonl", ROW0 "{\"prompt\": \"c\", \"response\": \"d\", \"label\": 01}\n", ":2: 01 is not a JSON number",
                    "three-class label 01 (was read as 1)");
  THREE_CLASS_ERROR("three-bom.jsonl", ROW0 "\xef\xbb\xbf" ROW1, ":2: a UTF-8 byte-order mark", "three-class BOM");
  THREE_CLASS_ERROR("three-vt.jsonl", ROW0 "\v\f\n" ROW1, ":2: the control character 0x0b", "three-class \\v\\f line (was skipped)");
  THREE_CLASS_ERROR("three-latin1.jsonl", ROW0 "{\"prompt\": \"caf\xe9 \xff\xfe\", \"response\": \"d\", \"label\": 1}\n",
                    ":2: the line is not valid UTF-8", "three-class invalid UTF-8 (was copied into the output)");
  THREE_CLASS_ERROR("three-latin1-other.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0, \"note\": \"\xc3\"}\n",
                    ":1: the line is not valid UTF-8", "three-class invalid UTF-8 in another key");
  /* JSON whitespace lines are still blank, and valid UTF-8 passes through unchanged */
  oc_error e;
  oc_threeclass_stats st;
  const char *p = WRITE("three-ok.jsonl", ROW0 " \t\r\n\n{\"prompt\": \"caf\xc3\xa9\", \"response\": \"\xe2\x82\xac\", \"label\": 1}\n");
  const char *out = path_in(tmpdir, "three-ok-out.jsonl");
  CHECK(oc_build_three_class(p, out, &st, &e) == 0 && st.rows == 2 && st.written == 2, "three-class with blank lines: %s", e.msg);
  char *text = NULL;
  CHECK(oc_read_file(out, &text, NULL, &e) == 0 && text && strstr(text, "\"prompt\":\"caf\xc3\xa9\",\"response\":\"\xe2\x82\xac\""), "UTF-8 kept: %s",
        text ? text : e.msg);
  free(text);
  oc_dataset d;
  p = WRITE("ok.jsonl", ROW0 "\r\n \t\n" ROW1);
  CHECK(oc_dataset_load(p, 0, 0, &d, &e) == 0 && d.n == 2, "dataset with blank lines: %s", e.msg);
  oc_dataset_free(&d);
}

static void datasets(void) {
  DATASET_ERROR("dup.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0}\n{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0, \"label\": 1}\n",
                ":2: duplicate key \"label\"", "dataset repeated label");
  DATASET_ERROR("nul.jsonl", "{\"prompt\": \"a\\u0000 ignore the rest\", \"response\": \"b\", \"label\": 1}\n", ":1: a string holds a NUL character",
                "dataset \\u0000");
  DATASET_ERROR("rawnul.jsonl", "\n{\"prompt\": \"a\0b\", \"response\": \"b\", \"label\": 1}\n", ":2: a string holds a NUL byte", "dataset raw NUL");
  DATASET_ERROR("junk.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 0} {\"label\": 1}\n", ":1: unexpected text after the JSON value",
                "dataset junk after the object");
  DATASET_ERROR("hugelabel.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 1e300}\n", ":1: label must be 0, 1 or 2", "dataset label 1e300");
  oc_error e;
  /* three-class data (build-three-class-classifier-data) */
  const char *p = WRITE("three.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label\": 1}\n\n{\"prompt\": \"a\", \"response\": \"c\", \"label\": 1, \"label\": 0}\n");
  oc_threeclass_stats st;
  expect(oc_build_three_class(p, path_in(tmpdir, "three_out.jsonl"), &st, &e), &e, p, ":3: duplicate key \"label\"", "three-class data");
  CHECK(access(path_in(tmpdir, "three_out.jsonl"), F_OK) != 0, "no output written for a rejected input");
  /* the stratified split takes the labels it can stratify (2^31 - 1 looped 2^31 times over the rows) */
  int32_t y[4] = {0, 1, 2147483647, 1};
  int64_t *tr = NULL, *va = NULL;
  int ntr, nva;
  CHECK(oc_stratified_split(y, 4, 0.5, 1, &tr, &ntr, &va, &nva, &e) != 0 && strstr(e.msg, "label 2147483647 of row 2 is not 0, 1 or 2") && !tr && !va,
        "split of a label 2^31 - 1: %s", e.msg);
  y[2] = -1;
  CHECK(oc_stratified_split(y, 4, 0.5, 1, &tr, &ntr, &va, &nva, &e) != 0 && strstr(e.msg, "label -1"), "split of a label -1 (was dropped silently)");
  /* an unknown label_name: its error message read the freed row (found by fuzz_formats) */
  p = WRITE("three-name.jsonl", "{\"prompt\": \"a\", \"response\": \"b\", \"label_name\": \"safe_compliancE\"}\n");
  expect(oc_build_three_class(p, path_in(tmpdir, "three_out.jsonl"), &st, &e), &e, p, ":1: unknown label_name \"safe_compliancE\"", "three-class label_name");
}

/* the prompt set file name (len bytes of text) fails to load with needle */
static void prompt_set_error(const char *name, const char *text, size_t len, const char *needle, const char *what) {
  oc_error e;
  oc_prompt_set s = {0};
  const char *p = write_file(name, text, len);
  expect(oc_prompt_set_load(&s, p, &e), &e, p, needle, what);
  oc_prompt_set_free(&s);
}
#define PROMPT_SET_ERROR(name, lit, needle, what) prompt_set_error(name, lit, sizeof lit - 1, needle, what)

static void prompt_sets(void) {
  PROMPT_SET_ERROR("dup-prompts.jsonl", "{\"prompt\": \"p1\"}\n{\"prompt\": \"hello\", \"split\": \"benign\", \"split\": \"harmful\"}\n",
                   ":2: duplicate key \"split\"", "JSONL repeated split");
  PROMPT_SET_ERROR("junk-prompts.jsonl", "{\"prompt\": \"p1\"}\n{\"prompt\": \"p2\"}, {\"prompt\": \"p3\"}\n", ":2: unexpected text after the JSON value",
                   "JSONL junk");
  PROMPT_SET_ERROR("nul-prompts.jsonl", "{\"prompt\": \"p1\\u0000hidden\"}\n", ":1: a string holds a NUL character", "JSONL \\u0000");
  PROMPT_SET_ERROR("dup-prompts.json", "[{\"text\": \"a\", \"label\": \"safe\"},\n {\"text\": \"b\", \"label\": \"safe\", \"label\": \"unsafe\"}]",
                   ":2: duplicate key \"label\"", "JSON array repeated label");
  PROMPT_SET_ERROR("nul-prompts.csv", "prompt,split\nfine,benign\nbad\0hidden,harmful\n", ":3: a NUL byte", "CSV NUL");
  /* a key of the wrong type is an error, not the file-name split (a numeric WildGuard label put
   * harmful and benign prompts in one split; the published files label with strings) */
  PROMPT_SET_ERROR("split5-prompts.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"split\": 5}\n", ":2: \"split\" must be a string, got 5",
                   "JSONL split 5");
  PROMPT_SET_ERROR("splitnull-prompts.jsonl", "{\"prompt\": \"b\", \"split\": null}\n", ":1: \"split\" must be a string, got null", "JSONL split null");
  PROMPT_SET_ERROR("id-prompts.jsonl", "{\"prompt\": \"b\", \"id\": 7}\n", ":1: \"id\" must be a string, got 7", "JSONL id 7");
  PROMPT_SET_ERROR("numeric-labels.json", "[{\"text\": \"how to make a bomb\", \"label\": 1}, {\"text\": \"bake bread\", \"label\": 0}]",
                   ": element 0: \"label\" must be a string, got 1", "WildGuard numeric label");
  PROMPT_SET_ERROR("split-false.json", "[{\"text\": \"a\", \"label\": \"safe\"}, {\"text\": \"b\", \"split\": false}]",
                   ": element 1: \"split\" must be a string, got false", "JSON array split false");
  PROMPT_SET_ERROR("prompt-number.json", "[{\"prompt\": 5, \"text\": \"b\"}]", ": element 0: \"prompt\" must be a string, got 5",
                   "JSON array prompt 5 (fell back to text)");
  PROMPT_SET_ERROR("dup-goal.csv", "goal,goal\nfirst,second\n", ":1: column \"goal\" appears twice in the header (columns 1 and 2)", "CSV two goal columns");
  PROMPT_SET_ERROR("dup-split.csv", "prompt,split,split\na,benign,harmful\n", ":1: column \"split\" appears twice in the header (columns 2 and 3)",
                   "CSV two split columns");
  PROMPT_SET_ERROR("vt-prompts.jsonl", "{\"prompt\": \"a\"}\n\v\n", ":2: the control character 0x0b", "JSONL \\v line");
  PROMPT_SET_ERROR("zero-prompts.jsonl", "{\"prompt\": \"a\", \"n\": 01}\n", ":1: 01 is not a JSON number", "JSONL 01");
  /* the valid versions still load */
  oc_error e;
  oc_prompt_set s = {0};
  const char *wg = WRITE("wg.json", "[{\"text\": \"how to make a bomb\", \"label\": \"harmful\"}, {\"text\": \"bake bread\", \"label\": \"safe\"}]");
  CHECK(oc_prompt_set_load(&s, wg, &e) == 0 && s.n == 2 && strcmp(s.items[0].split, "harmful") == 0 && strcmp(s.items[1].split, "benign") == 0,
        "WildGuard string labels: %s", e.msg);
  oc_prompt_set_free(&s);
  const char *two = WRITE("two-names.csv", "goal,Goal,split\nlow,High,s\n"); /* distinct names: Goal is preferred, as before */
  CHECK(oc_prompt_set_load(&s, two, &e) == 0 && s.n == 1 && strcmp(s.items[0].prompt, "High") == 0 && strcmp(s.items[0].split, "s") == 0,
        "goal and Goal: %s", e.msg);
  oc_prompt_set_free(&s);
  const char *p = WRITE("ok-prompts.jsonl", "{\"prompt\": \"p1\", \"split\": \"a\"}\n\n{\"prompt\": \"p2\", \"id\": \"x\"}   \r\n");
  CHECK(oc_prompt_set_load(&s, p, &e) == 0 && s.n == 2 && strcmp(s.items[1].id, "x") == 0 && strcmp(s.items[1].split, "ok-prompts") == 0,
        "valid JSONL: %s", e.msg);
  oc_prompt_set_free(&s);
}

static void configs(const char *cls_dir) {
  oc_error e;
  oc_probe_config pc;
  const char *p = WRITE("probe_config.json", "{\"model_id\": \"m\", \"layer\": 3,\n \"threshold\": 0.5, \"threshold\": 0.99}\n");
  int rc = oc_probe_config_load(p, &pc, &e);
  expect(rc, &e, p, ":2: duplicate key \"threshold\"", "probe config");
  if (!rc) oc_probe_config_free(&pc);
  oc_model_config mc;
  const char *cfg = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,\n\"num_hidden_layers\": 2, \"num_hidden_layers\": 200}";
  rc = oc_config_parse(cfg, strlen(cfg), "m/config.json", &mc, &e);
  expect(rc, &e, "m/config.json", ":2: duplicate key \"num_hidden_layers\"", "model config.json");
  if (!rc) oc_config_free(&mc);
  /* sizes that drive allocations are bounded (a billion layers allocated and touched layer_types) */
  const char *huge = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 1000000000, "
                     "\"num_attention_heads\": 4, \"intermediate_size\": 128, \"vocab_size\": 100}";
  rc = oc_config_parse(huge, strlen(huge), "m/config.json", &mc, &e);
  expect(rc, &e, "m/config.json", "\"num_hidden_layers\" must be an integer in [1, 1024], got 1000000000", "a billion layers");
  if (!rc) oc_config_free(&mc);
  /* a NUL inside config.json is an error, not the end of the text */
  const char nul[] = "{\"architectures\": [\"LlamaForCausalLM\"]}\0junk";
  rc = oc_config_parse(nul, sizeof nul - 1, "m/config.json", &mc, &e);
  expect(rc, &e, "m/config.json", "", "NUL inside config.json");
  if (!rc) oc_config_free(&mc);

  /* a classifier directory: config.json, classifier_config.json, tokenizer_config.json */
  char dir[128], src[PATH_MAX + 64], dst[256];
  snprintf(dir, sizeof dir, "%s/cls", tmpdir);
  REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
  const char *names[2] = {"model.safetensors", "tokenizer.json"};
  for (int i = 0; i < 2; i++) {
    snprintf(src, sizeof src, "%s/%s", cls_dir, names[i]);
    snprintf(dst, sizeof dst, "%s/%s", dir, names[i]);
    REQUIRE(symlink(src, dst) == 0, "symlink %s", dst);
  }
  char *config;
  snprintf(src, sizeof src, "%s/config.json", cls_dir);
  REQUIRE(oc_read_file(src, &config, NULL, &e) == 0, "%s", e.msg);
  snprintf(dst, sizeof dst, "%s/config.json", dir);
  const char *brace = strchr(config, '{');
  FILE *f = fopen(dst, "w");
  fprintf(f, "{\"model_type\": \"bert\", %s", brace + 1); /* a second model_type after the first */
  fclose(f);
  oc_classifier *c = NULL;
  expect(oc_classifier_load(dir, &c, &e), &e, dst, "duplicate key \"model_type\"", "classifier config.json");
  oc_classifier_free(c);
  c = NULL;
  REQUIRE(oc_write_file_atomic(dst, config, strlen(config), &e) == 0, "%s", e.msg);
  free(config);
  REQUIRE(oc_classifier_load(dir, &c, &e) == 0, "the copied classifier loads: %s", e.msg);
  oc_classifier_free(c);
  c = NULL;
  const char *cc = WRITE("cls/classifier_config.json", "{\"allow_threshold\": 0.2, \"block_threshold\": 0.8, \"block_threshold\": 0.99}");
  expect(oc_classifier_load(dir, &c, &e), &e, cc, ":1: duplicate key \"block_threshold\"", "classifier_config.json");
  oc_classifier_free(c);
  unlink(cc);
  oc_chat *ch = NULL;
  const char *tc = WRITE("cls/tokenizer_config.json", "{\"bos_token\": \"<s>\",\n \"eos_token\": \"</s>\", \"bos_token\": \"[CLS]\"}");
  expect(oc_chat_load(dir, &ch, &e), &e, tc, ":2: duplicate key \"bos_token\"", "tokenizer_config.json");
  oc_chat_free(ch);
  unlink(tc);
  ch = NULL;
  const char *sm = WRITE("cls/special_tokens_map.json", "{\"eos_token\": \"</s>\"");
  expect(oc_chat_load(dir, &ch, &e), &e, sm, "not valid JSON", "malformed special_tokens_map.json (was ignored)");
  oc_chat_free(ch);
  unlink(sm);
}

/* opencon tokenize --jsonl: "add_special_tokens" is a JSON boolean ("true" and 1 read as false) */
static void tokenize_jsonl(const char *bin, const char *tok_dir) {
  char cmd[2048], out[4096];
  const char *p = WRITE("tok.jsonl", "{\"text\": \"Hello world\", \"add_special_tokens\": true}\n{\"text\": \"Hello world\", \"add_special_tokens\": false}\n");
  snprintf(cmd, sizeof cmd, "%s tokenize --model_id %s --jsonl %s 2>&1", bin, tok_dir, p);
  CHECK(run_capture(cmd, out, sizeof out) == 0 && strcmp(out, "{\"ids\":[50281,12092,1533,50282]}\n{\"ids\":[12092,1533]}\n") == 0, "booleans: %s", out);
  static const char *const bad[] = {"\"true\"", "1", "null"};
  for (int i = 0; i < 3; i++) {
    char row[160];
    int n = snprintf(row, sizeof row, "{\"text\": \"a\"}\n{\"text\": \"Hello world\", \"add_special_tokens\": %s}\n", bad[i]);
    p = write_file("tok-bad.jsonl", row, (size_t)n);
    snprintf(cmd, sizeof cmd, "%s tokenize --model_id %s --jsonl %s 2>&1 >/dev/null", bin, tok_dir, p);
    char want[200];
    snprintf(want, sizeof want, "tok-bad.jsonl:2: \"add_special_tokens\" must be true or false (a JSON boolean), got %s", bad[i]);
    CHECK(run_capture(cmd, out, sizeof out) == 1 && strstr(out, want), "add_special_tokens %s: %s", bad[i], out);
  }
}

/* 200k rows in 100k splits: loading and selecting must not be quadratic */
static void large_prompt_sets(void) {
  const int rows = 200000;
  char *csv = malloc((size_t)rows * 40 + 64);
  size_t k = (size_t)sprintf(csv, "id,prompt,split\n");
  for (int i = 0; i < rows; i++) k += (size_t)sprintf(csv + k, "r%d,\"prompt, %d\",s%d\n", i, i, i / 2);
  const char *p = write_file("large.csv", csv, k);
  free(csv);
  oc_prompt_set s = {0};
  oc_error e;
  double t0 = oc_now();
  REQUIRE(oc_prompt_set_load(&s, p, &e) == 0, "%s", e.msg);
  CHECK(s.n == rows && strcmp(s.items[rows - 1].prompt, "prompt, 199999") == 0 && strcmp(s.items[rows - 1].split, "s99999") == 0 &&
        strcmp(s.items[7].id, "r7") == 0, "large CSV content");
  int *idx, n;
  REQUIRE(oc_prompt_select(&s, 0, NULL, 0, -1, -1, &idx, &n, &e) == 0, "%s", e.msg);
  int in_order = n == rows;
  for (int i = 0; i < n && in_order; i++) in_order = idx[i] == i; /* splits in order of appearance, items in file order */
  CHECK(in_order, "unshuffled selection is the file order (%d selected)", n);
  free(idx);
  /* one per split, shuffled: each split's pick is one of its two rows */
  REQUIRE(oc_prompt_select(&s, 1, NULL, 0, -1, 7, &idx, &n, &e) == 0, "%s", e.msg);
  int ok = n == rows / 2;
  for (int i = 0; i < n && ok; i++) ok = idx[i] / 2 == i;
  CHECK(ok, "one prompt per split, splits in order (%d selected)", n);
  free(idx);
  REQUIRE(oc_prompt_select(&s, 0, "s4321", 1, -1, -1, &idx, &n, &e) == 0, "%s", e.msg);
  CHECK(n == 1 && idx[0] == 8643, "--only_split with an offset: %d, %d", n, n ? idx[0] : -1);
  free(idx);
  printf("200k-row CSV loaded and selected in %.2f s\n", oc_now() - t0);
  oc_prompt_set_free(&s);
  /* the same as JSONL */
  char *jl = malloc((size_t)rows * 48 + 64);
  k = 0;
  for (int i = 0; i < rows; i++) k += (size_t)sprintf(jl + k, "{\"prompt\": \"p%d\", \"split\": \"s%d\"}\n", i, i / 2);
  p = write_file("large.jsonl", jl, k);
  free(jl);
  REQUIRE(oc_prompt_set_load(&s, p, &e) == 0, "%s", e.msg);
  REQUIRE(oc_prompt_select(&s, 0, NULL, 0, -1, 3, &idx, &n, &e) == 0, "%s", e.msg);
  CHECK(s.n == rows && n == rows, "large JSONL: %d rows, %d selected", s.n, n);
  free(idx);
  oc_prompt_set_free(&s);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 4, "usage: test_data_files CLASSIFIER_DIR OPENCON MODERNBERT_TOKENIZER_DIR");
  snprintf(tmpdir, sizeof tmpdir, "/tmp/oc_data_files_XXXXXX");
  REQUIRE(mkdtemp(tmpdir), "mkdtemp");
  datasets();
  strict_rows();
  prompt_sets();
  tokenize_jsonl(argv[2], argv[3]);
  char cls_dir[PATH_MAX];
  REQUIRE(realpath(argv[1], cls_dir), "%s: not found", argv[1]);
  configs(cls_dir);
  large_prompt_sets();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return check_summary("data_files");
}
