/* tokenizer.json as hostile input: ids are bounded by the number of entries (a vocabulary id of
 * 50M used to allocate 864 MB), an id names one token, merges and post-processors refer only to
 * tokens that exist, and the file is strict JSON (a repeated vocabulary key is an error). */
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
  return check_summary("tokenizer_load");
}
