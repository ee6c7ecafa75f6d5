/* tokenizer.json as hostile input: ids are bounded by the number of entries (a vocabulary id of
 * 50M used to allocate 864 MB), an id names one token, merges and post-processors refer only to
 * tokens that exist, the file is strict JSON (a repeated vocabulary key is an error), and no
 * normalizer, pre-tokenizer or decoder can multiply the text (a Replace of a -> 10,000 a's applied
 * three times made 4 bytes allocate gigabytes). */
#include <string.h>

#include "check.h"
#include "opencon/tokenizer.h"

static const char *PATH = "t/tokenizer.json";

static void expect_error(const char *json, const char *needle) {
  oc_tokenizer *t = NULL;
  oc_error e = {0};
  int rc = oc_tokenizer_load_json(json, strlen(json), PATH, &t, &e);
  CHECK(rc != 0 && t == NULL, "accepted: %s", json);
  CHECK(rc != 0 && strstr(e.msg, needle) && strstr(e.msg, PATH), "error for %s should contain \"%s\", got: %s", json, needle, rc ? e.msg : "");
  oc_tokenizer_free(t);
}

/* {"model": BPE with vocab V and merges M}, plus extra top-level members X */
static const char *bpe(char *buf, size_t n, const char *vocab, const char *merges, const char *extra) {
  snprintf(buf, n, "{\"model\": {\"type\": \"BPE\", \"vocab\": {%s}, \"merges\": [%s]}%s%s}", vocab, merges, *extra ? ", " : "", extra);
  return buf;
}

/* a string of n copies of c (malloc'd) */
static char *copies(char c, int n) {
  char *s = malloc((size_t)n + 1);
  memset(s, c, (size_t)n);
  s[n] = 0;
  return s;
}

/* a tokenizer of the BPE vocabulary {a, b, " "} with the given components (JSON members) */
static oc_tokenizer *with_components(const char *members) {
  size_t n = strlen(members) + 256;
  char *json = malloc(n);
  snprintf(json, n, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \" \": 2}, \"merges\": []}, %s}", members);
  oc_tokenizer *t = NULL;
  oc_error e;
  CHECK(oc_tokenizer_load_json(json, strlen(json), PATH, &t, &e) == 0, "load: %s", e.msg);
  free(json);
  return t;
}

/* encoding `text` fails with an error containing needle (NULL: succeeds) */
static void expect_encode(const oc_tokenizer *t, const char *text, const char *needle, const char *what) {
  oc_encoding enc;
  oc_error e = {0};
  int rc = t ? oc_tokenizer_encode(t, text, NULL, 0, 0, &enc, &e) : -1;
  if (needle) CHECK(rc != 0 && strstr(e.msg, needle) && e.code == OC_ERR_INVALID, "%s: want an error with \"%s\", got %s", what, needle, rc ? e.msg : "success");
  else CHECK(rc == 0, "%s: %s", what, e.msg);
  if (!rc) oc_encoding_free(&enc);
}

/* a tokenizer with the given components encodes text with an error containing needle (NULL: without) */
static void expect_component(const char *members, const char *text, const char *needle, const char *what) {
  oc_tokenizer *t = with_components(members);
  expect_encode(t, text, needle, what);
  oc_tokenizer_free(t);
}

/* every step's output is bounded by 32 times the pipeline's input + 4096 bytes */
static void growth_limits(void) {
  char m[30000];
  /* the review's normalizer: a -> 10,000 a's; 4 bytes would pass 4224 at the first step */
  char *big = copies('a', 10000);
  snprintf(m, sizeof m,
           "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"%s\"}]}", big);
  oc_tokenizer *t = with_components(m);
  expect_encode(t, "aaaa", "t/tokenizer.json: $.normalizer.normalizers[0] (Replace): the text would grow past 4224 bytes, the limit for 4 bytes of text (32 times them + 4096 bytes)", "a -> 10,000 a's");
  expect_encode(t, "bbbb", NULL, "no a to replace");
  oc_tokenizer_free(t);
  /* steps that each stay under 32x compound: the limit is the pipeline's input, so the third fails */
  char *r16 = copies('a', 16);
  snprintf(m, sizeof m, "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [");
  for (int i = 0; i < 3; i++)
    snprintf(m + strlen(m), sizeof m - strlen(m), "%s{\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"%s\"}", i ? ", " : "", r16);
  snprintf(m + strlen(m), sizeof m - strlen(m), "]}");
  expect_component(m, "aaaa", "$.normalizer.normalizers[2] (Replace): the text would grow past 4224 bytes", "16x three times");
  /* a regex Replace and a Prepend */
  snprintf(m, sizeof m, "\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"a*\"}, \"content\": \"%s\"}", big);
  expect_component(m, "ab", "$.normalizer (Replace): the text would grow past 4160 bytes", "a regex Replace");
  snprintf(m, sizeof m, "\"normalizer\": {\"type\": \"Prepend\", \"prepend\": \"%s\"}", big);
  expect_component(m, "a", "$.normalizer (Prepend): the text would grow past 4128 bytes", "a long Prepend");
  /* Metaspace's replacement is one character (a char in the Rust library): a long one is refused at load */
  snprintf(m, sizeof m, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"%s\", \"prepend_scheme\": \"never\"}}", big);
  expect_error(m, "$.pre_tokenizer.replacement must be a string of one character");
  /* a decoder: Replace a -> 40 a's on 3000 tokens passes 32 x 3000 + 4096 */
  char *r40 = copies('a', 40);
  snprintf(m, sizeof m, "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \"a\"}, \"content\": \"%s\"}]}", r40);
  t = with_components(m);
  int32_t *ids = calloc(3000, sizeof *ids);
  char *text = NULL;
  size_t len;
  oc_error e = {0};
  int rc = t ? oc_tokenizer_decode(t, ids, 3000, 0, &text, &len, &e) : 0;
  CHECK(rc != 0 && strstr(e.msg, "t/tokenizer.json: $.decoder.decoders[1] (Replace): the text would grow past 100096 bytes, the limit for 3000 bytes of tokens"),
        "decoder growth: got %s", rc ? e.msg : "success");
  free(text);
  text = NULL;
  CHECK(t && oc_tokenizer_decode(t, ids, 100, 0, &text, &len, &e) == 0 && len == 4000, "100 tokens decode to 4000 bytes: %s", e.msg);
  free(text);
  free(ids);
  oc_tokenizer_free(t);
  /* real expansions stay inside: NFKC makes 33 bytes of U+FDFA (3 bytes), a Metaspace space 3 bytes */
  t = with_components("\"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": {\"type\": \"Metaspace\"}");
  char *fdfa = malloc(3 * 2000 + 1);
  for (int i = 0; i < 2000; i++) memcpy(fdfa + 3 * i, "\xEF\xB7\xBA", 3);
  fdfa[6000] = 0;
  expect_encode(t, fdfa, NULL, "NFKC of 2000 U+FDFA");
  expect_encode(t, "\xEF\xB7\xBA", NULL, "NFKC of one U+FDFA");
  free(fdfa);
  oc_tokenizer_free(t);
  free(big);
  free(r16);
  free(r40);
}

int main(void) {
  char b[4096];
  /* the case: one entry with id 50M */
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"big\": 50000000", "", ""),
               "$.model.vocab[\"big\"]: id 50000000 is out of range: ids are integers below 65538");
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"b\": 2147483647", "", ""), "$.model.vocab[\"b\"]: id 2147483647 is out of range");
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"b\": 1e300", "", ""), "$.model.vocab[\"b\"]: id 1e+300 is out of range");
  expect_error(bpe(b, sizeof b, "\"a\": -1", "", ""), "$.model.vocab[\"a\"]: id -1 is out of range");
  expect_error(bpe(b, sizeof b, "\"a\": 0.5", "", ""), "$.model.vocab[\"a\"]: id 0.5 is out of range");
  /* two tokens with one id: which one decodes is undefined */
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"b\": 1, \"c\": 1", "", ""), "$.model.vocab[\"c\"]: id 1 is already the id of \"b\"");
  /* a repeated key: cJSON keeps the first id, the Rust library the last */
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"b\": 1, \"a\": 2", "", ""), "t/tokenizer.json:1: duplicate key \"a\"");
  expect_error(bpe(b, sizeof b, "\"a\\u0000x\": 0", "", ""), "NUL character");
  /* added tokens: the same bound, named by content */
  expect_error(bpe(b, sizeof b, "\"a\": 0", "", "\"added_tokens\": [{\"id\": 9000000, \"content\": \"<big>\", \"special\": true}]"),
               "$.added_tokens[0] \"<big>\": id 9000000 is out of range");
  /* merges name the missing token */
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"b\": 1, \"ab\": 2", "\"a b\", \"a zz\"", ""), "$.model.merges[1]: \"zz\" is not in the vocabulary");
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"b\": 1", "[\"a\", \"b\"]", ""), "$.model.merges[0]: the merged token \"ab\" is not in the vocabulary");
  /* post-processors refer to existing ids */
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"<s>\": 1", "",
                   "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], \"pair\": [],"
                   " \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [70000], \"tokens\": [\"<s>\"]}}}"),
               "$.post_processor.single[0]: special token \"<s>\": ids[0] is not a token id (0 to 1)");
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"<s>\": 1", "",
                   "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], \"pair\": [],"
                   " \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [\"x\"], \"tokens\": [\"<s>\"]}}}"),
               "ids[0] is not a token id");
  expect_error(bpe(b, sizeof b, "\"a\": 0, \"[CLS]\": 1", "", "\"post_processor\": {\"type\": \"BertProcessing\", \"cls\": [\"[CLS]\", 1], \"sep\": [\"[SEP]\", 99]}"),
               "$.post_processor: cls and sep must be [token, id] with a token id (0 to 1)");
  /* a template that repeats a special token with many ids: bounded, not allocated per item */
  char *big = malloc(1 << 20);
  size_t k = (size_t)sprintf(big, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [");
  for (int i = 0; i < 2000; i++) k += (size_t)sprintf(big + k, "%s{\"SpecialToken\": {\"id\": \"a\", \"type_id\": 0}}", i ? "," : "");
  k += (size_t)sprintf(big + k, "], \"pair\": [], \"special_tokens\": {\"a\": {\"id\": \"a\", \"ids\": [0], \"tokens\": [\"a\"]}}}}");
  expect_error(big, "$.post_processor.single: the template adds more than 1024 special-token ids");
  free(big);

  /* component fields of the wrong type or value: the Rust library refuses them; read as defaults they
   * would tokenize differently from the model's training (red team N3) */
  static const char *const typed[][2] = {
      {"\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"ab\"}", "replacement must be a string of one character"},
      {"\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\"}", "replacement must be a string of one character"},
      {"\"pre_tokenizer\": {\"type\": \"Metaspace\", \"prepend_scheme\": \"bogus\"}", "prepend_scheme must be always, first or never"},
      {"\"normalizer\": {\"type\": \"Strip\", \"strip_right\": 5}", "strip_right must be true or false"},
      {"\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": \"yes\"}", "add_prefix_space must be true or false"},
      {"\"decoder\": {\"type\": \"Strip\", \"content\": \" \", \"start\": -1, \"stop\": 0}", "start must be a non-negative integer"},
      {"\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"\"}, \"behavior\": \"Isolated\"}", "empty"},
  };
  for (size_t i = 0; i < sizeof typed / sizeof *typed; i++) {
    char doc[1024];
    snprintf(doc, sizeof doc, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, %s}", typed[i][0]);
    expect_error(doc, typed[i][1]);
  }
  expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"ignore_merges\": \"yes\"}}", "ignore_merges must be true or false");
  expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.9}}", "dropout");
  /* a split regex that backtracks past Oniguruma's limit: an error naming the step and saying so,
   * not "out of memory" (red team N4) */
  {
    oc_tokenizer *rt = with_components("\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a+)+$\"}, \"behavior\": \"Isolated\"}");
    char *runs = copies('a', 100000);
    size_t rl = strlen(runs);
    runs[rl - 1] = 'b';
    oc_encoding enc;
    oc_error e = {0};
    int rc = rt ? oc_tokenizer_encode(rt, runs, NULL, 0, 0, &enc, &e) : -1;
    CHECK(rc != 0 && strstr(e.msg, "$.pre_tokenizer (Split)") && strstr(e.msg, "gave up") && e.code == OC_ERR_INVALID, "a regex that gives up: %s",
          rc ? e.msg : "encoded");
    if (!rc) oc_encoding_free(&enc);
    free(runs);
    oc_tokenizer_free(rt);
  }
  /* valid files: ids may leave gaps (as the Rust library allows), added tokens extend the range */
  oc_tokenizer *t = NULL;
  oc_error e;
  const char *ok = bpe(b, sizeof b, "\"a\": 0, \"b\": 7, \"ab\": 3", "\"a b\"", "\"added_tokens\": [{\"id\": 9, \"content\": \"<x>\", \"special\": true}]");
  CHECK(oc_tokenizer_load_json(ok, strlen(ok), PATH, &t, &e) == 0, "valid tokenizer rejected: %s", e.msg);
  if (t) {
    CHECK(oc_tokenizer_vocab_size(t) == 10, "vocab size %d", oc_tokenizer_vocab_size(t));
    CHECK(oc_tokenizer_token_to_id(t, "ab") == 3 && oc_tokenizer_is_special(t, 9) && !oc_tokenizer_is_special(t, 7), "ids");
    oc_encoding enc;
    CHECK(oc_tokenizer_encode(t, "ab<x>", NULL, 0, 0, &enc, &e) == 0 && enc.n == 2 && enc.ids[0] == 3 && enc.ids[1] == 9, "encode: %s", e.msg);
    oc_encoding_free(&enc);
    /* a first word with no ids (no unknown token): the word cache was given ids->v + 0 on a NULL
     * ids->v (undefined behaviour found by fuzz_text) */
    CHECK(oc_tokenizer_encode(t, "zz", NULL, 0, 0, &enc, &e) == 0 && enc.n == 0, "a word without ids encodes to none: %s", e.msg);
    oc_encoding_free(&enc);
    oc_tokenizer_free(t);
  }
  growth_limits();
  return check_summary("tokenizer_load");
}
