/* Memory of a large encode (issue 19's review, formats/04: one 32 MB line took 2.4 GB in
 * `opencon tokenize --jsonl`, 1.1 GB of it in the library's encode, about 48 bytes per token: the
 * text's ids and token strings were copied into new arrays for the post-processor, every token
 * string kept a length of its own, and a pre-tokenizer split copied its span array). Encoding 8 MB
 * of "ab ab ..." may grow the peak RSS by at most MAX_BYTES_PER_TOKEN; the result itself takes
 * about 18 (id, type id, pointer, string). The encoding must equal the ids-only one, hold the
 * vocabulary's token strings and, with `roundtrip`, decode back to the text. The measurement is
 * skipped under AddressSanitizer, whose shadow memory dwarfs it.
 * usage: test_tokenizer_memory TOKENIZER_JSON MAX_BYTES_PER_TOKEN [roundtrip] */
#include <string.h>
#include <sys/resource.h>

#include "check.h"
#include "opencon/tokenizer.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static long peak_rss_bytes(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss * 1024L;
}

int main(int argc, char **argv) {
  REQUIRE(argc >= 3, "usage: test_tokenizer_memory TOKENIZER_JSON MAX_BYTES_PER_TOKEN");
  const double max_per_token = atof(argv[2]);
  oc_tokenizer *t;
  oc_error e;
  REQUIRE(oc_tokenizer_load_file(argv[1], &t, &e) == 0, "%s", e.msg);
  const size_t n = 8u << 20;
  char *text = malloc(n + 1);
  REQUIRE(text, "out of memory");
  for (size_t i = 0; i < n; i++) text[i] = "ab "[i % 3];
  text[n] = 0;
  long before = peak_rss_bytes();
  oc_encoding enc;
  REQUIRE(oc_tokenizer_encode(t, text, NULL, 1, 0, &enc, &e) == 0, "%s", e.msg);
  long grown = peak_rss_bytes() - before;
  CHECK(enc.n > (int)(n / 3), "%d tokens for %zu bytes", enc.n, n);
  double per_token = (double)grown / enc.n;
#ifdef UNDER_ASAN
  printf("peak RSS grew %.1f bytes per token (not checked against %g under AddressSanitizer)\n", per_token, max_per_token);
#else
  CHECK(per_token <= max_per_token, "encoding %zu bytes into %d tokens grew the peak RSS by %ld bytes, %.1f per token (at most %g)", n, enc.n,
        grown, per_token, max_per_token);
  printf("%d tokens: peak RSS grew %.1f bytes per token\n", enc.n, per_token);
#endif
  /* the result is whole: token strings are the vocabulary's, and the ids decode back to the text */
  int same = enc.tokens != NULL;
  for (int i = 0; same && i < enc.n; i += 9973) same = !strcmp(enc.tokens[i], oc_tokenizer_id_to_token(t, enc.ids[i]) ? oc_tokenizer_id_to_token(t, enc.ids[i]) : "");
  CHECK(same, "token strings differ from the vocabulary's");
  oc_encoding ids_only;
  REQUIRE(oc_tokenizer_encode_ids(t, text, n, NULL, 0, 1, 0, &ids_only, &e) == 0, "%s", e.msg);
  CHECK(ids_only.n == enc.n && !memcmp(ids_only.ids, enc.ids, sizeof *enc.ids * (size_t)enc.n) &&
            !memcmp(ids_only.type_ids, enc.type_ids, sizeof *enc.ids * (size_t)enc.n) && !ids_only.tokens,
        "the ids-only encoding differs");
  oc_encoding_free(&ids_only);
  if (argc > 3 && !strcmp(argv[3], "roundtrip")) {
    char *back = NULL;
    size_t len = 0;
    CHECK(oc_tokenizer_decode(t, enc.ids, enc.n, 1, &back, &len, &e) == 0 && len == n && !memcmp(back, text, n), "decode: %s",
          back ? "differs from the text" : e.msg);
    free(back);
  }
  oc_encoding_free(&enc);
  free(text);
  oc_tokenizer_free(t);
  return check_summary("tokenizer_memory");
}
