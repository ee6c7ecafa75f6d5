/* Tokenizer goldens from Hugging Face's Rust tokenizers: encode (with and without special
 * tokens), pairs + truncation, decode (with and without skipping special tokens). */
#include <cjson/cJSON.h>
#include <string.h>

#include "check.h"
#include "opencon/tokenizer.h"

typedef int (*row_fn)(const oc_tokenizer *t, const cJSON *row, int line);

static int shown;
static const char *g_line;

static int run_file(const oc_tokenizer *t, const char *path, row_fn fn) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char *line = NULL;
  size_t cap = 0;
  int n = 0, bad = 0;
  while (getline(&line, &cap, f) > 0) {
    n++;
    g_line = line;
    cJSON *row = cJSON_Parse(line);
    REQUIRE(row, "%s:%d: bad JSON", path, n);
    if (!fn(t, row, n)) bad++;
    cJSON_Delete(row);
  }
  free(line);
  fclose(f);
  CHECK(bad == 0, "%s: %d of %d rows differ", path, bad, n);
  printf("%s: %d rows, %d differ\n", path, n, bad);
  return n;
}

static int ids_equal(const cJSON *arr, const int32_t *ids, int n) {
  if (cJSON_GetArraySize(arr) != n) return 0;
  int i = 0;
  for (const cJSON *e = arr->child; e; e = e->next, i++) if (e->valueint != ids[i]) return 0;
  return 1;
}

static void show_ids(const char *what, const int32_t *ids, int n) {
  fprintf(stderr, "  %s:", what);
  for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
  fprintf(stderr, "\n");
}

/* cJSON strings end at an escaped \u0000: decode the raw JSON string value of `key` here */
static char *raw_string(const char *key, size_t *len) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char *p = strstr(g_line, pat);
  if (!p) return NULL;
  p += strlen(pat);
  char *o = malloc(strlen(p) + 1);
  size_t k = 0;
  while (*p && *p != '"') {
    if (*p != '\\') { o[k++] = *p++; continue; }
    p++;
    char c = *p++;
    if (c == 'u') {
      unsigned v = (unsigned)strtoul((char[5]){p[0], p[1], p[2], p[3], 0}, NULL, 16);
      p += 4;
      if (v >= 0xD800 && v < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
        unsigned lo = (unsigned)strtoul((char[5]){p[2], p[3], p[4], p[5], 0}, NULL, 16);
        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      }
      if (v < 0x80) o[k++] = (char)v;
      else if (v < 0x800) { o[k++] = (char)(0xC0 | (v >> 6)); o[k++] = (char)(0x80 | (v & 0x3F)); }
      else if (v < 0x10000) { o[k++] = (char)(0xE0 | (v >> 12)); o[k++] = (char)(0x80 | ((v >> 6) & 0x3F)); o[k++] = (char)(0x80 | (v & 0x3F)); }
      else { o[k++] = (char)(0xF0 | (v >> 18)); o[k++] = (char)(0x80 | ((v >> 12) & 0x3F)); o[k++] = (char)(0x80 | ((v >> 6) & 0x3F)); o[k++] = (char)(0x80 | (v & 0x3F)); }
    } else o[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == 'b' ? '\b' : c == 'f' ? '\f' : c;
  }
  o[k] = 0;
  *len = k;
  return o;
}

static int encode_row(const oc_tokenizer *t, const cJSON *row, int line) {
  size_t tl = 0, pl = 0;
  char *text = raw_string("text", &tl), *ptext = raw_string("text_pair", &pl);
  const cJSON *pair = cJSON_GetObjectItem(row, "text_pair");
  const cJSON *trunc = cJSON_GetObjectItem(row, "truncation");
  int add = cJSON_IsTrue(cJSON_GetObjectItem(row, "add_special_tokens"));
  int max_len = 0;
  if (trunc && cJSON_IsObject(trunc)) max_len = cJSON_GetObjectItem(trunc, "max_length")->valueint;
  oc_encoding e;
  oc_error err;
  int rc = oc_tokenizer_encode_n(t, text, tl, cJSON_IsString(pair) ? ptext : NULL, pl, add, max_len, &e, &err);
  /* the ids-only entry point gives the same ids and type ids */
  oc_encoding f;
  int rc2 = oc_tokenizer_encode_ids(t, text, tl, cJSON_IsString(pair) ? ptext : NULL, pl, add, max_len, &f, &err);
  int same = rc == rc2 && (rc || (f.n == e.n && f.tokens == NULL &&
                                  (!e.n || (memcmp(f.ids, e.ids, sizeof(int32_t) * (size_t)e.n) == 0 &&
                                            memcmp(f.type_ids, e.type_ids, sizeof(int32_t) * (size_t)e.n) == 0))));
  if (!rc2) oc_encoding_free(&f);
  free(text);
  free(ptext);
  if (!same) {
    if (!rc) oc_encoding_free(&e);
    if (shown++ < 10) fprintf(stderr, "line %d: oc_tokenizer_encode_ids differs from oc_tokenizer_encode_n\n", line);
    return 0;
  }
  if (rc) {
    if (shown++ < 10) fprintf(stderr, "line %d: encode error %s\n", line, err.msg);
    return 0;
  }
  int ok = ids_equal(cJSON_GetObjectItem(row, "ids"), e.ids, e.n);
  const cJSON *ty = cJSON_GetObjectItem(row, "type_ids");
  if (ok && ty) ok = ids_equal(ty, e.type_ids, e.n);
  const cJSON *toks = cJSON_GetObjectItem(row, "tokens");
  if (ok && toks) {
    int i = 0;
    for (const cJSON *x = toks->child; x && ok; x = x->next, i++) ok = strcmp(x->valuestring, e.tokens[i]) == 0;
  }
  if (!ok && shown++ < 10) {
    fprintf(stderr, "line %d: encode mismatch for %s (pair %s, add %d, max %d)\n", line, cJSON_PrintUnformatted(cJSON_GetObjectItem(row, "text")), cJSON_IsString(pair) ? pair->valuestring : "-", add, max_len);
    show_ids("got", e.ids, e.n);
    fprintf(stderr, "  want: %s\n", cJSON_PrintUnformatted(cJSON_GetObjectItem(row, "ids")));
  }
  oc_encoding_free(&e);
  return ok;
}

static int decode_row(const oc_tokenizer *t, const cJSON *row, int line) {
  const cJSON *ids = cJSON_GetObjectItem(row, "ids");
  int n = cJSON_GetArraySize(ids), i = 0;
  int32_t *v = malloc(sizeof *v * (size_t)(n ? n : 1));
  for (const cJSON *e = ids->child; e; e = e->next) v[i++] = e->valueint;
  char *text;
  size_t len = 0, wl = 0;
  oc_error err;
  int ok = oc_tokenizer_decode(t, v, n, cJSON_IsTrue(cJSON_GetObjectItem(row, "skip_special_tokens")), &text, &len, &err) == 0;
  char *want = raw_string("text", &wl);
  ok = ok && want && len == wl && memcmp(text, want, wl) == 0;
  if (!ok && shown++ < 10) {
    fprintf(stderr, "line %d: decode mismatch\n", line);
    show_ids("ids", v, n);
    fprintf(stderr, "  got : [%s]\n  want: [%s]\n", text, want);
  }
  free(want);
  free(text);
  free(v);
  return ok;
}

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_tokenizer TOKENIZER_JSON GOLDEN_DIR");
  oc_tokenizer *t;
  oc_error err;
  REQUIRE(oc_tokenizer_load_file(argv[1], &t, &err) == 0, "%s", err.msg);
  char p[1024];
  snprintf(p, sizeof p, "%s/encode.jsonl", argv[2]);
  CHECK(run_file(t, p, encode_row) > 0, "no encode goldens");
  snprintf(p, sizeof p, "%s/encode_pairs.jsonl", argv[2]);
  CHECK(run_file(t, p, encode_row) > 0, "no pair goldens");
  snprintf(p, sizeof p, "%s/decode.jsonl", argv[2]);
  CHECK(run_file(t, p, decode_row) > 0, "no decode goldens");
  /* the general pipeline (fast split matchers and the fused byte-level path off) gives the same */
  oc_tokenizer *ts;
  REQUIRE(oc_tokenizer_load_file(argv[1], &ts, &err) == 0, "%s", err.msg);
  oc_tokenizer_set_fast_paths(ts, 0);
  snprintf(p, sizeof p, "%s/encode.jsonl", argv[2]);
  CHECK(run_file(ts, p, encode_row) > 0, "no encode goldens (general pipeline)");
  snprintf(p, sizeof p, "%s/encode_pairs.jsonl", argv[2]);
  CHECK(run_file(ts, p, encode_row) > 0, "no pair goldens (general pipeline)");
  /* long runs (words past the fused path's 1 KiB stack buffer and the word cache's 256-byte
   * limit), non-ASCII and mixed units: the fast paths give the general pipeline's ids */
  static const char *const units[] = {"a", "\xC3\xA9", " ", "1", "!", "ab ", "\n", "\xE4\xB8\xAD", "'s", "\t "};
  int long_bad = 0, long_n = 0;
  for (size_t u = 0; u < sizeof units / sizeof *units; u++)
    for (int reps = 1; reps <= 1200; reps = reps * 3 + 1) {
      size_t ul = strlen(units[u]);
      char *s = malloc(ul * (size_t)reps + 1);
      REQUIRE(s, "out of memory");
      for (int r = 0; r < reps; r++) memcpy(s + (size_t)r * ul, units[u], ul);
      oc_encoding fa, ga;
      int r1 = oc_tokenizer_encode_ids(t, s, ul * (size_t)reps, NULL, 0, 1, 0, &fa, &err);
      int r2 = oc_tokenizer_encode_ids(ts, s, ul * (size_t)reps, NULL, 0, 1, 0, &ga, &err);
      long_n++;
      if (r1 || r2 || fa.n != ga.n || (fa.n && memcmp(fa.ids, ga.ids, sizeof(int32_t) * (size_t)fa.n))) long_bad++;
      if (!r1) oc_encoding_free(&fa);
      if (!r2) oc_encoding_free(&ga);
      free(s);
    }
  CHECK(long_bad == 0, "%d of %d long inputs differ between the fast paths and the general pipeline", long_bad, long_n);
  oc_tokenizer_free(ts);
  /* malformed or unsupported tokenizer.json: errors name the JSON path */
  static const struct { const char *json, *needle; } bad[] = {
    {"{\"model\": {\"type\": \"Unigram\"}}", "$.model.type: unsupported model \"Unigram\""},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"ByteLevel\"}, {\"type\": \"Bogus\"}]}}",
     "$.pre_tokenizer.pretokenizers[1]: unsupported pre-tokenizer type \"Bogus\""},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"b\"]]}}", "$.model.merges[0]"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}", "$.model.vocab[\"a\"]"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"(\"}, \"content\": \"\"}}", "$.normalizer.pattern"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"added_tokens\": [{\"id\": 3}]}", "$.added_tokens[0]"},
    {"{\"model\": ", "malformed JSON"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    oc_tokenizer *bt = NULL;
    int rc = oc_tokenizer_load_json(bad[i].json, strlen(bad[i].json), "x/tokenizer.json", &bt, &err);
    CHECK(rc != 0 && strstr(err.msg, bad[i].needle) && strstr(err.msg, "x/tokenizer.json"), "bad tokenizer %zu: %s", i, rc ? err.msg : "accepted");
    oc_tokenizer_free(bt);
  }
  /* invalid UTF-8 is an error, not a crash */
  oc_encoding e;
  CHECK(oc_tokenizer_encode(t, "ab\xff", NULL, 0, 0, &e, &err) != 0 && strstr(err.msg, "UTF-8"), "invalid UTF-8 accepted");
  oc_tokenizer_free(t);
  return check_summary("tokenizer");
}
