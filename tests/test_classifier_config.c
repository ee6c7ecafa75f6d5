/* A classifier directory's files as hostile input (issue 19): id2label / label2id / num_labels /
 * label_mapping that disagree or name two labels alike, both "unsafe" and "unsafe_compliance", a
 * model.safetensors without its trained head (or with tensors the config has no place for),
 * classifier_config.json as a dangling symlink or a directory, max_length that cannot hold an
 * exchange or exceeds the model's positions, and ModernBERT config values that make the model
 * meaningless: each is a load error naming the file and the key, never a classifier that scores. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/classifier.h"
#include "opencon/safetensors.h"

static const char *src; /* the tiny classifier: config.json, model.safetensors, tokenizer.json */
static char work[] = "/tmp/oc_cls_config_XXXXXX", dir[64];

/* src's JSON file `name` written to dir with each key of edits[] (key, JSON text; NULL text: removed) */
typedef struct {
  const char *key, *value;
} edit;
static void write_edited(const char *name, const char *from, const edit *edits, int n) {
  cJSON *j = read_json_file(from);
  REQUIRE(j, "%s parses", from);
  for (int i = 0; i < n; i++) {
    cJSON_DeleteItemFromObjectCaseSensitive(j, edits[i].key);
    if (edits[i].value) {
      cJSON *v = cJSON_Parse(edits[i].value);
      REQUIRE(v, "test value %s", edits[i].value);
      cJSON_AddItemToObject(j, edits[i].key, v);
    }
  }
  char *text = cJSON_Print(j);
  oc_error e;
  REQUIRE(oc_write_file_atomic(path_in(dir, name), text, strlen(text), &e) == 0, "%s", e.msg);
  free(text);
  cJSON_Delete(j);
}

/* dir as a copy of src (config.json copied, the rest linked), without classifier_config.json */
static void reset_dir(void) {
  char cmd[4400];
  snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir %s && cp %s/config.json %s/ && ln -s %s/model.safetensors %s/ && ln -s %s/tokenizer.json %s/", dir, dir, src,
           dir, src, dir, src, dir);
  REQUIRE(system(cmd) == 0, "%s", cmd);
}
static void config_with(const edit *edits, int n) { write_edited("config.json", path_in(src, "config.json"), edits, n); }
static void classifier_config(const char *text) {
  oc_error e;
  REQUIRE(oc_write_file_atomic(path_in(dir, "classifier_config.json"), text, strlen(text), &e) == 0, "%s", e.msg);
}

/* loading dir fails with an error containing each of want (NULL-terminated) */
static void refused(const char *what, int ids_only, const char *want1, const char *want2) {
  oc_classifier *c = NULL;
  oc_error e;
  e.msg[0] = 0;
  int rc = ids_only ? oc_classifier_load_ids_only(dir, &c, &e) : oc_classifier_load(dir, &c, &e);
  CHECK(rc != 0 && strstr(e.msg, want1) && (!want2 || strstr(e.msg, want2)), "%s: expected \"%s\"%s%s, got %s", what, want1, want2 ? " and " : "",
        want2 ? want2 : "", rc ? e.msg : "accepted");
  if (!rc) oc_classifier_free(c);
}
static oc_classifier *loaded(const char *what, int ids_only) {
  oc_classifier *c = NULL;
  oc_error e;
  int rc = ids_only ? oc_classifier_load_ids_only(dir, &c, &e) : oc_classifier_load(dir, &c, &e);
  CHECK(rc == 0, "%s loads: %s", what, rc ? e.msg : "");
  return rc ? NULL : c;
}

static void labels(void) {
  const char *cfg = path_in(dir, "config.json");
  static const struct {
    const char *what, *id2label, *label2id, *want;
  } bad[] = {
      /* the unsafe label became the last duplicate: "block 0.75" read as "allow 0.00003" */
      {"two labels named unsafe_compliance", "{\"0\": \"unsafe_compliance\", \"1\": \"unsafe_compliance\", \"2\": \"safe_compliance\"}", NULL,
       "id2label names labels 0 and 1 both \"unsafe_compliance\""},
      /* label_scores printed with three identical keys */
      {"three labels named unsafe", "{\"0\": \"unsafe\", \"1\": \"unsafe\", \"2\": \"unsafe\"}", NULL, "id2label names labels 0 and 1 both \"unsafe\""},
      {"unsafe and unsafe_compliance", "{\"0\": \"unsafe_compliance\", \"1\": \"safe\", \"2\": \"unsafe\"}",
       "{\"unsafe_compliance\": 0, \"safe\": 1, \"unsafe\": 2}", "both \"unsafe_compliance\" (0) and \"unsafe\" (2)"},
      {"label2id swapped", "{\"0\": \"safe_compliance\", \"1\": \"safe_refusal\", \"2\": \"unsafe_compliance\"}",
       "{\"safe_compliance\": 2, \"safe_refusal\": 1, \"unsafe_compliance\": 0}",
       "label2id contradicts id2label: \"safe_compliance\" is id 0 in id2label, 2 in label2id"},
      {"label2id naming another label", "{\"0\": \"safe_compliance\", \"1\": \"safe_refusal\", \"2\": \"unsafe_compliance\"}",
       "{\"safe_compliance\": 0, \"safe_refusal\": 1, \"unsafe\": 2}", "\"unsafe_compliance\" is id 2 in id2label, missing in label2id"},
      {"label2id with an extra name", "{\"0\": \"safe_compliance\", \"1\": \"safe_refusal\", \"2\": \"unsafe_compliance\"}",
       "{\"safe_compliance\": 0, \"safe_refusal\": 1, \"unsafe_compliance\": 2, \"unsafe\": 2}", "label2id must map the 3 names of id2label"},
      {"label2id id as a string", "{\"0\": \"safe_compliance\", \"1\": \"safe_refusal\", \"2\": \"unsafe_compliance\"}",
       "{\"safe_compliance\": 0, \"safe_refusal\": 1, \"unsafe_compliance\": \"2\"}", "\"unsafe_compliance\" is id 2 in id2label, \"2\" in label2id"},
      {"label2id without id2label", NULL, "{\"safe\": 0, \"unsafe\": 1}", "label2id without id2label"},
      {"a gap in the ids", "{\"0\": \"a\", \"1\": \"b\", \"3\": \"c\"}", NULL, "id2label lacks \"2\""},
      {"an empty name", "{\"0\": \"\", \"1\": \"b\", \"2\": \"c\"}", NULL, "id2label \"0\": a label name has 1..63 bytes"},
      {"a name of 64 bytes", "{\"0\": \"a\", \"1\": \"b\", \"2\": \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"}", NULL,
       "id2label \"2\": a label name has 1..63 bytes"},
      {"a name that is a number", "{\"0\": \"a\", \"1\": 5, \"2\": \"c\"}", NULL, "id2label lacks \"1\""},
      {"one label", "{\"0\": \"unsafe\"}", NULL, "id2label has 1 labels (2..16)"},
      {"id2label a list", "[\"safe\", \"unsafe\"]", NULL, "id2label must be an object"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    reset_dir();
    edit e[2] = {{"id2label", bad[i].id2label}, {"label2id", bad[i].label2id}};
    config_with(e, 2);
    refused(bad[i].what, 0, cfg, bad[i].want);
  }
  reset_dir();
  edit nl[1] = {{"num_labels", "2"}};
  config_with(nl, 1);
  refused("num_labels 2 beside 3 labels in id2label", 0, cfg, "num_labels 2 contradicts the 3 labels of id2label");
  /* label_mapping of classifier_config.json (written by training) must agree with id2label */
  reset_dir();
  classifier_config("{\"label_mapping\": {\"safe_compliance\": 0, \"safe_refusal\": 2, \"unsafe_compliance\": 1}}");
  refused("label_mapping contradicting id2label", 0, path_in(dir, "classifier_config.json"), "label_mapping contradicts config.json's id2label");
  /* what is valid still loads: the same names with label2id and label_mapping that agree, the unsafe
   * label found by name; two labels without an unsafe name: the last */
  reset_dir();
  classifier_config("{\"label_mapping\": {\"safe_compliance\": 0, \"safe_refusal\": 1, \"unsafe_compliance\": 2}, \"num_labels\": 3}");
  oc_classifier *c = loaded("the fixture with label_mapping", 0);
  CHECK(c && c->unsafe_label == 2, "unsafe_compliance is the unsafe label");
  oc_classifier_free(c);
  reset_dir();
  edit renamed[2] = {{"id2label", "{\"0\": \"unsafe\", \"1\": \"refusal\", \"2\": \"benign\"}"}, {"label2id", NULL}};
  config_with(renamed, 2);
  c = loaded("unsafe first", 0);
  CHECK(c && c->unsafe_label == 0, "\"unsafe\" at id 0 is the unsafe label");
  oc_classifier_free(c);
  /* no label named unsafe: the MVP took the last, here {harmful, refusal, safe_compliance} would
   * have scored the safe label (a block read as an allow); an unnamed head keeps the MVP's rule,
   * any other naming must say which label is unsafe */
  reset_dir();
  edit honest[2] = {{"id2label", "{\"0\": \"harmful\", \"1\": \"refusal\", \"2\": \"safe_compliance\"}"}, {"label2id", NULL}};
  config_with(honest, 2);
  refused("no label named unsafe", 0, path_in(dir, "config.json"), "no label is named \"unsafe\" or \"unsafe_compliance\" (labels: harmful, refusal, safe_compliance)");
  classifier_config("{\"unsafe_label\": \"harmful\"}");
  c = loaded("unsafe_label names it", 0);
  CHECK(c && c->unsafe_label == 0, "classifier_config.json unsafe_label \"harmful\" is label 0");
  oc_classifier_free(c);
  classifier_config("{\"unsafe_label\": \"nope\"}");
  refused("unsafe_label that is no label", 0, path_in(dir, "classifier_config.json"), "\"unsafe_label\" \"nope\" is not one of config.json's labels");
  reset_dir();
  edit generic[2] = {{"id2label", "{\"0\": \"LABEL_0\", \"1\": \"LABEL_1\", \"2\": \"LABEL_2\"}"}, {"label2id", NULL}};
  config_with(generic, 2);
  c = loaded("an unnamed head", 0);
  CHECK(c && c->unsafe_label == 2, "an unnamed head (LABEL_k): the last label, the MVP's rule");
  oc_classifier_free(c);
  /* a text frame the classifier was not built for */
  reset_dir();
  classifier_config("{\"text_format\": \"{prompt} {response}\"}");
  refused("another text_format", 0, path_in(dir, "classifier_config.json"), "\"text_format\" must be");
  classifier_config("{\"text_format\": \"User:\\n{prompt}\\n\\nAssistant:\\n{response}\"}");
  c = loaded("the MVP's text_format", 0);
  oc_classifier_free(c);
  /* a tokenizer that can produce ids past the model's vocabulary: refused at load, not at the first
   * text that contains such a token */
  reset_dir();
  cJSON *tok = read_json_file(path_in(src, "tokenizer.json"));
  REQUIRE(tok, "tokenizer.json");
  cJSON *added = cJSON_GetObjectItemCaseSensitive(tok, "added_tokens");
  if (!added) added = cJSON_AddArrayToObject(tok, "added_tokens");
  cJSON *t = cJSON_CreateObject();
  cJSON_AddNumberToObject(t, "id", 5000);
  cJSON_AddStringToObject(t, "content", "<far>");
  cJSON_AddBoolToObject(t, "single_word", 0);
  cJSON_AddBoolToObject(t, "lstrip", 0);
  cJSON_AddBoolToObject(t, "rstrip", 0);
  cJSON_AddBoolToObject(t, "normalized", 0);
  cJSON_AddBoolToObject(t, "special", 1);
  cJSON_AddItemToArray(added, t);
  char *text = cJSON_Print(tok);
  cJSON_Delete(tok);
  oc_error e;
  REQUIRE(unlink(path_in(dir, "tokenizer.json")) == 0 && oc_write_file_atomic(path_in(dir, "tokenizer.json"), text, strlen(text), &e) == 0, "%s", e.msg);
  free(text);
  refused("tokenizer ids past the vocabulary", 0, "tokenizer.json: ids up to 5000", "vocab_size is 512");
}

/* model.safetensors rewritten: without the tensors whose name starts with drop, plus a copy of
 * head.norm.weight named extra */
static void rewrite_weights(const char *drop, const char *extra) {
  oc_st_file *f;
  oc_error e;
  REQUIRE(oc_st_open(path_in(src, "model.safetensors"), &f, &e) == 0, "%s", e.msg);
  oc_st_writer *w = oc_st_writer_new();
  for (int i = 0; i < oc_st_count(f); i++) {
    const oc_tensor *t = oc_st_at(f, i);
    if (drop && strncmp(t->name, drop, strlen(drop)) == 0) continue;
    REQUIRE(oc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &e) == 0, "%s", e.msg);
    if (extra && strcmp(t->name, "head.norm.weight") == 0) REQUIRE(oc_st_writer_add(w, extra, t->dtype, t->ndim, t->shape, t->data, &e) == 0, "%s", e.msg);
  }
  const char *p = path_in(dir, "model.safetensors");
  unlink(p);
  REQUIRE(oc_st_writer_write(w, p, &e) == 0, "%s", e.msg);
  oc_st_writer_free(w);
  oc_st_close(f);
}

static void weights(void) {
  const char *wp = path_in(dir, "model.safetensors");
  static const struct {
    const char *drop, *extra, *want;
  } bad[] = {
      /* a freshly initialised head gave confident verdicts ("block 0.77") */
      {"classifier.weight", NULL, "tensor \"classifier.weight\" missing (a base checkpoint without a trained head can only start train-exchange-classifier)"},
      {"classifier.bias", NULL, "tensor \"classifier.bias\" missing"},
      {"head.", NULL, "tensor \"head.dense.weight\" missing"},
      {"model.final_norm", NULL, "tensor \"model.final_norm.weight\" missing"},
      /* tensors the config has no place for would be ignored: a layer beyond num_hidden_layers, a
       * bias the config says is absent, a masked-LM decoder */
      {NULL, "model.layers.4.mlp_norm.weight", "tensor \"model.layers.4.mlp_norm.weight\" is not part of the model config.json describes"},
      {NULL, "model.embeddings.norm.bias", "tensor \"model.embeddings.norm.bias\" is not part of the model"},
      {NULL, "decoder.bias", "tensor \"decoder.bias\" is not part of the model"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    reset_dir();
    rewrite_weights(bad[i].drop, bad[i].extra);
    char what[160];
    snprintf(what, sizeof what, "model.safetensors %s %s", bad[i].drop ? "without" : "with", bad[i].drop ? bad[i].drop : bad[i].extra);
    refused(what, 0, wp, bad[i].want);
    refused(what, 1, wp, bad[i].want);
  }
}

static void config_file(void) {
  const char *cp = path_in(dir, "classifier_config.json");
  /* a Hugging Face cache whose blob is missing leaves a dangling symlink: not "no file" */
  reset_dir();
  REQUIRE(symlink("../blobs/missing", cp) == 0, "symlink");
  refused("classifier_config.json a dangling symlink", 0, cp, "is a symbolic link to a missing file");
  refused("classifier_config.json a dangling symlink (ids only)", 1, cp, "is a symbolic link to a missing file");
  unlink(cp);
  REQUIRE(mkdir(cp, 0755) == 0, "mkdir");
  refused("classifier_config.json a directory", 0, cp, "is not a regular file (a directory)");
  rmdir(cp);
  classifier_config("[0.2, 0.8]");
  refused("classifier_config.json a list", 0, cp, "not a JSON object");
  /* a symlink to a regular file is how the cache stores every file: read through */
  reset_dir();
  const char *target = path_in(work, "calibrated.json");
  oc_error e;
  const char *calibrated = "{\"allow_threshold\": 0.2, \"block_threshold\": 0.46, \"max_length\": 48}";
  REQUIRE(oc_write_file_atomic(target, calibrated, strlen(calibrated), &e) == 0, "%s", e.msg);
  REQUIRE(symlink(target, cp) == 0, "symlink");
  oc_classifier *c = loaded("classifier_config.json a symlink to a file", 0);
  CHECK(c && c->allow_threshold == 0.2 && c->block_threshold == 0.46 && c->max_length == 48, "its calibrated values are used");
  oc_classifier_free(c);
  /* only a name that does not exist means the defaults */
  reset_dir();
  c = loaded("no classifier_config.json", 0);
  CHECK(c && c->allow_threshold == 0.35 && c->block_threshold == 0.65 && c->max_length == 64, "defaults (max_length 512 cut to the model's 64 positions)");
  oc_classifier_free(c);
}

/* tokens of the exchange frame ("User:\n\n\nAssistant:\n" with [CLS] and [SEP]), encoded here */
static int frame_tokens(void) {
  oc_chat *ch;
  oc_error e;
  REQUIRE(oc_chat_load(src, &ch, &e) == 0, "%s", e.msg);
  oc_encoding enc;
  REQUIRE(oc_chat_encode(ch, "User:\n\n\nAssistant:\n", 1, 0, &enc, &e) == 0, "%s", e.msg);
  int n = enc.n;
  oc_encoding_free(&enc);
  oc_chat_free(ch);
  return n;
}

static void max_length(void) {
  const char *cp = path_in(dir, "classifier_config.json");
  const int frame = frame_tokens();
  REQUIRE(frame > 3 && frame < 60, "frame of %d tokens", frame);
  char text[200], want[200];
  /* 1 and 2 left room for [CLS]/[SEP] only: every exchange got the same score */
  static const char *const out_of_range[] = {"1", "2", "0", "-5", "65", "65536", "10.5"};
  for (size_t i = 0; i < sizeof out_of_range / sizeof *out_of_range; i++) {
    reset_dir();
    snprintf(text, sizeof text, "{\"max_length\": %s}", out_of_range[i]);
    classifier_config(text);
    refused(text, 0, cp, "max_length must be an integer in [3, 64] (the model's max_position_embeddings)");
    refused(text, 1, cp, "max_length must be an integer in [3, 64]");
  }
  reset_dir();
  classifier_config("{\"max_length\": \"48\"}");
  refused("max_length a string", 0, cp, "max_length must be numbers");
  /* the frame alone: the text would be cut away entirely */
  reset_dir();
  snprintf(text, sizeof text, "{\"max_length\": %d}", frame);
  classifier_config(text);
  snprintf(want, sizeof want, "max_length %d cannot hold an exchange (its frame and one token of text take %d); valid range [%d, 64]", frame, frame + 1,
           frame + 1);
  refused(text, 0, cp, want);
  /* without the tokenizer the frame is unknown: token ids are scored as given */
  oc_classifier *c = loaded("max_length of the frame, ids only", 1);
  oc_classifier_free(c);
  /* frame + 1 holds one token of text: two responses that end differently read differently */
  reset_dir();
  snprintf(text, sizeof text, "{\"max_length\": %d}", frame + 1);
  classifier_config(text);
  c = loaded("max_length of the frame + 1", 0);
  if (c) {
    oc_encoding a, b;
    oc_error e;
    REQUIRE(oc_classifier_encode(c, "hello", "sure, here it is", &a, &e) == 0 && oc_classifier_encode(c, "hello", "no.", &b, &e) == 0, "%s", e.msg);
    CHECK(a.n == frame + 1 && b.n == frame + 1 && memcmp(a.ids, b.ids, sizeof(int32_t) * (size_t)a.n) != 0, "frame + one token of each response's end");
    oc_encoding_free(&a);
    oc_encoding_free(&b);
    /* ids beyond the model's positions are refused (not scored past max_position_embeddings) */
    int32_t ids[65];
    for (int i = 0; i < 65; i++) ids[i] = i == 0 ? 501 : i == 64 ? 502 : 40 + i;
    oc_decision d;
    CHECK(oc_classifier_score_ids(c, ids, 65, &d, &e) != 0 && strstr(e.msg, "65 token ids exceed the classifier's 64 positions"), "65 ids: %s", e.msg);
    CHECK(oc_classifier_score_ids(c, ids + 1, 64, &d, &e) == 0, "64 ids score: %s", e.msg);
    oc_classifier_free(c);
  }
  /* a model whose positions cannot hold the frame: an error naming config.json */
  reset_dir();
  snprintf(text, sizeof text, "%d", frame);
  edit small[1] = {{"max_position_embeddings", text}};
  config_with(small, 1);
  snprintf(want, sizeof want, "max_position_embeddings %d leaves no room for an exchange", frame);
  refused("max_position_embeddings of the frame", 0, path_in(dir, "config.json"), want);
}

static void model_values(void) {
  const char *cfg = path_in(dir, "config.json");
  static const struct {
    const char *key, *value, *want;
  } bad[] = {
      /* silently changed every score (each token saw only itself) */
      {"local_attention", "0", "\"local_attention\" must be an integer in [2, 16777216], got 0"},
      {"local_attention", "-8", "\"local_attention\" must be an integer in [2, 16777216], got -8"},
      {"local_attention", "7", "local_attention must be a positive even window, got 7"},
      {"local_attention", "\"8\"", "\"local_attention\" must be an integer in [2, 16777216], got \"8\""},
      {"max_position_embeddings", "-1", "\"max_position_embeddings\" must be an integer in [3, 16777216], got -1"},
      {"max_position_embeddings", "0", "\"max_position_embeddings\" must be an integer in [3, 16777216], got 0"},
      {"max_position_embeddings", "1", "\"max_position_embeddings\" must be an integer in [3, 16777216], got 1"},
      {"vocab_size", "0", "\"vocab_size\" must be an integer in [1, 16777216], got 0"},
      {"hidden_size", "1e10", "\"hidden_size\" must be an integer in [1, 65536]"},
      {"num_attention_heads", "0", "\"num_attention_heads\" must be an integer in [1, 64], got 0"},
      {"num_attention_heads", "3", "hidden_size 64 must be num_attention_heads 3 times an even head size"},
      {"num_hidden_layers", "2.5", "\"num_hidden_layers\" must be an integer in [1, 1024], got 2.5"},
      {"global_attn_every_n_layers", "0", "\"global_attn_every_n_layers\" must be an integer in [1, 1024], got 0"},
      {"pad_token_id", "512", "\"pad_token_id\" must be an integer in [0, 511], got 512"},
      {"cls_token_id", "-1", "\"cls_token_id\" must be an integer in [0, 511], got -1"},
      {"sep_token_id", "\"502\"", "\"sep_token_id\" must be an integer in [0, 511], got \"502\""},
      {"norm_eps", "0", "norm_eps must be in (0, 1), got 0"},
      {"initializer_cutoff_factor", "0", "initializer_cutoff_factor >= 1"},
      {"initializer_range", "-0.02", "initializer_range must be in (0, 1]"},
      {"classifier_bias", "\"yes\"", "\"classifier_bias\" must be true or false, got \"yes\""},
      {"norm_bias", "\"false\"", "\"norm_bias\" must be true or false, got \"false\""},
      {"attention_bias", "1", "\"attention_bias\" must be true or false, got 1"},
      {"global_rope_theta", "\"160000\"", "\"global_rope_theta\" must be a finite number, got \"160000\""},
      {"rope_parameters", "\"default\"", "rope_parameters must be an object"},
      {"rope_parameters", "{\"full_attention\": 160000}", "rope_parameters.full_attention must be an object"},
      {"classifier_pooling", "\"max\"", "classifier_pooling must be \"cls\" or \"mean\""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    reset_dir();
    edit e[1] = {{bad[i].key, bad[i].value}};
    config_with(e, 1);
    char what[160];
    snprintf(what, sizeof what, "config.json %s = %s", bad[i].key, bad[i].value);
    refused(what, 0, cfg, bad[i].want);
  }
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_classifier_config CLASSIFIER_DIR");
  REQUIRE((src = realpath(argv[1], NULL)), "%s", argv[1]);
  REQUIRE(mkdtemp(work), "mkdtemp");
  snprintf(dir, sizeof dir, "%s/c", work);
  oc_set_threads(1);
  reset_dir();
  oc_classifier *c = loaded("the fixture", 0);
  REQUIRE(c, "fixture");
  oc_classifier_free(c);
  labels();
  weights();
  config_file();
  max_length();
  model_values();
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf %s", work);
  if (g_fail == 0 && system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", work);
  return check_summary("classifier_config");
}
