/* Deterministic mutations of real chat templates, hostile template seeds (deep nesting, huge
 * repetition, number edges) and small tokenizer.json files run through the fuzz harness
 * (tests/fuzz/fuzz_text.c): under ASan/UBSan in CI this is the fixed-seed part of fuzzing the
 * template parser and renderer (with its limits) and the tokenizer.json loader. Every case must
 * either work or fail with an error; the unmutated seeds must parse.
 * usage: test_text_mutate [--iterations N] FILE... (N mutations of each following file, default 600) */
#include <string.h>

#include "check.h"
#include "opencon/template.h"
#include "opencon/tokenizer.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

int main(int argc, char **argv) {
  REQUIRE(argc >= 2, "usage: test_text_mutate [--iterations N] FILE...");
  int iterations = 600;
  oc_error e;
  static const char pool[] = "{}%#-+'\"()[]|.,:=~ \n\\ifendforsetmacroloop";
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "--iterations") && a + 1 < argc) { iterations = atoi(argv[++a]); continue; }
    char *src;
    size_t len;
    REQUIRE(oc_read_file(argv[a], &src, &len, &e) == 0, "%s", e.msg);
    /* the seed itself is valid */
    oc_template *t = NULL;
    oc_tokenizer *tok = NULL;
    int ok = strstr(argv[a], ".jinja") ? oc_template_parse(src, argv[a], &t, &e) == 0 : oc_tokenizer_load_json(src, len, argv[a], &tok, &e) == 0;
    CHECK(ok, "seed %s: %s", argv[a], e.msg);
    oc_template_free(t);
    oc_tokenizer_free(tok);
    unsigned char *m = malloc(len + 64);
    for (int it = 0; it < iterations; it++) {
      memcpy(m, src, len);
      size_t n = len;
      int edits = 1 + (int)(next() % 4);
      for (int k = 0; k < edits && n > 0; k++) {
        size_t pos = (size_t)(next() % n);
        switch (next() % 4) {
        case 0: m[pos] = (unsigned char)pool[next() % (sizeof pool - 1)]; break;
        case 1: m[pos] ^= (unsigned char)(1u << (next() % 8)); break;
        case 2: memmove(m + pos, m + pos + 1, n - pos - 1); n--; break;
        default: if (n < len + 60) { memmove(m + pos + 1, m + pos, n - pos); m[pos] = (unsigned char)pool[next() % (sizeof pool - 1)]; n++; }
        }
      }
      LLVMFuzzerTestOneInput(m, n);
    }
    free(m);
    free(src);
  }
  return check_summary("text_mutate");
}
