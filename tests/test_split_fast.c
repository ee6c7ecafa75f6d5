/* The hand-written split matchers (src/tok/split_fast.c) against Oniguruma on the same patterns:
 * at every position of every string of up to 4 characters over an alphabet of the classes that
 * matter (letters incl. contraction letters, digits, spaces, newlines, apostrophe, other, and
 * non-ASCII letters, digits, spaces and U+017F which folds to 's'), of random longer strings,
 * and of the tokenizer goldens' texts. Where the fast matcher answers, the answer must be
 * Oniguruma's; it must answer for most positions; and whole-string splits must agree.
 * Also: oc_utf8_normalize (non-ASCII regions only) against utf8proc_map on the whole text.
 * usage: test_split_fast [encode.jsonl ...] */
#include <cjson/cJSON.h>
#include <string.h>

#include "check.h"
#include "opencon/base.h"
#include "tok/text.h"
#include <utf8proc.h>

static const char *const alphabet[] = {"a", "Z", "s", "S", "l", "e", "r", "5", " ", "\t", "\n", "\r", "'", ".",
                                       "\xC3\xA9" /* é */, "\xD9\xA3" /* ARABIC-INDIC THREE */, "\xC2\xA0" /* NBSP */,
                                       "\xE3\x80\x80" /* IDEOGRAPHIC SPACE */, "\xC5\xBF" /* LONG S */, "\x00"};
#define NA ((int)(sizeof alphabet / sizeof *alphabet))

static oc_regex *fast_re[3], *slow_re[3];
static long n_positions, n_fast;

/* every position of s[0..n): the fast answer (when given) equals Oniguruma's; and the whole
 * split with the fast path on equals the split with it off */
static int check_string(int k, const char *s, size_t n) {
  int kind = oc_regex_fast_kind(fast_re[k]);
  for (size_t p = 0; p < n; p++) {
    if (p && ((unsigned char)s[p] & 0xC0) == 0x80) continue;
    size_t ms, me;
    int rc = oc_regex_search(slow_re[k], s, n, p, &ms, &me);
    size_t l = oc_split_fast_match(kind, s, n, p);
    n_positions++;
    if (l) {
      n_fast++;
      if (rc != 1 || ms != p || me != p + l) return 0;
    }
  }
  size_t a = 0, b = 0;
  while (a < n || b < n) {
    size_t ms1, me1, ms2, me2;
    int r1 = oc_regex_search(fast_re[k], s, n, a, &ms1, &me1), r2 = oc_regex_search(slow_re[k], s, n, b, &ms2, &me2);
    if (r1 != r2) return 0;
    if (r1 != 1) break;
    if (ms1 != ms2 || me1 != me2 || me1 == ms1) return 0;
    a = b = me1;
  }
  return 1;
}

static void show(const char *what, int k, const char *s, size_t n) {
  fprintf(stderr, "%s (pattern %d): \"", what, k);
  for (size_t i = 0; i < n; i++) fprintf(stderr, (unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x80 ? "\\x%02x" : "%c", (unsigned char)s[i]);
  fprintf(stderr, "\"\n");
}

int main(int argc, char **argv) {
  static const char *const pats[3] = {
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  };
  char msg[128];
  for (int k = 0; k < 3; k++) {
    fast_re[k] = oc_regex_new(pats[k], msg, sizeof msg);
    slow_re[k] = oc_regex_new(pats[k], msg, sizeof msg);
    REQUIRE(fast_re[k] && slow_re[k], "pattern %d: %s", k, msg);
    CHECK(oc_regex_fast_kind(fast_re[k]) == k + 1, "pattern %d recognized as %d", k, oc_regex_fast_kind(fast_re[k]));
    oc_regex_set_fast(slow_re[k], 0);
  }
  CHECK(oc_split_fast_kind("\\s+") == OC_SPLIT_NONE, "an arbitrary pattern is not taken for a known one");

  /* every string of 1..4 characters over the alphabet */
  char s[128];
  int bad = 0;
  long strings = 0;
  for (int len = 1; len <= 4; len++) {
    int idx[4] = {0};
    for (;;) {
      size_t n = 0;
      for (int i = 0; i < len; i++) {
        size_t l = idx[i] == NA - 1 ? 1 : strlen(alphabet[idx[i]]);
        memcpy(s + n, alphabet[idx[i]], l);
        n += l;
      }
      for (int k = 0; k < 3; k++)
        if (!check_string(k, s, n) && bad++ < 10) show("exhaustive mismatch", k, s, n);
      strings++;
      int i = len - 1;
      while (i >= 0 && ++idx[i] == NA) idx[i--] = 0;
      if (i < 0) break;
    }
  }
  CHECK(bad == 0, "%d of %ld short strings split differently", bad, strings);

  /* random strings of up to 24 characters, mostly ASCII */
  oc_rng r;
  oc_rng_seed(&r, 7);
  bad = 0;
  for (int it = 0; it < 30000; it++) {
    int len = 1 + (int)oc_rng_below(&r, 24);
    size_t n = 0;
    for (int i = 0; i < len; i++) {
      int a = (int)oc_rng_below(&r, 100) < 85 ? (int)oc_rng_below(&r, 14) : (int)oc_rng_below(&r, NA);
      size_t l = a == NA - 1 ? 1 : strlen(alphabet[a]);
      memcpy(s + n, alphabet[a], l);
      n += l;
    }
    for (int k = 0; k < 3; k++)
      if (!check_string(k, s, n) && bad++ < 10) show("random mismatch", k, s, n);
  }
  CHECK(bad == 0, "%d random strings split differently", bad);

  /* the goldens' texts */
  bad = 0;
  long texts = 0;
  for (int a = 1; a < argc; a++) {
    char *buf;
    size_t len;
    oc_error e;
    REQUIRE(!oc_read_file(argv[a], &buf, &len, &e), "%s", e.msg);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
      cJSON *j = cJSON_Parse(line);
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
      if (cJSON_IsString(t)) {
        texts++;
        for (int k = 0; k < 3; k++)
          if (!check_string(k, t->valuestring, strlen(t->valuestring)) && bad++ < 10) show("golden text mismatch", k, t->valuestring, strlen(t->valuestring));
      }
      cJSON_Delete(j);
    }
    free(buf);
  }
  CHECK(bad == 0, "%d of %ld golden texts split differently", bad, texts);
  CHECK(argc < 2 || texts > 100, "golden texts read: %ld", texts);
  /* segment-wise normalization == utf8proc_map on the whole text, for all four forms, on random
   * strings mixing ASCII with combining marks, Hangul jamo, compatibility characters and
   * halfwidth katakana with their (composing) voiced marks */
  static const char *const nalpha[] = {"a", "e", "A", "K", " ", ".", "\n", "\xCC\x81" /* COMBINING ACUTE */, "\xCC\x8A" /* RING */,
                                       "\xCC\xA3" /* DOT BELOW */, "\xE1\x84\x80" /* CHOSEONG KIYEOK */, "\xE1\x85\xA1" /* JUNGSEONG A */,
                                       "\xE1\x86\xA8" /* JONGSEONG KIYEOK */, "\xEA\xB0\x80" /* GA */, "\xE2\x84\xAB" /* ANGSTROM */,
                                       "\xEF\xAC\x81" /* fi */, "\xE2\x91\xA0" /* CIRCLED ONE */, "\xEF\xBD\xB6" /* HALFWIDTH KA */,
                                       "\xEF\xBE\x9E" /* HALFWIDTH VOICED MARK */, "\xC3\xA9", "\xE4\xB8\xAD"};
  static const int forms[4] = {UTF8PROC_STABLE | UTF8PROC_COMPOSE, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE,
                               UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
  bad = 0;
  int changed = 0;
  for (int it = 0; it < 20000; it++) {
    int len = 1 + (int)oc_rng_below(&r, 16);
    size_t n = 0;
    for (int i = 0; i < len; i++) {
      int a = (int)oc_rng_below(&r, 100) < 60 ? (int)oc_rng_below(&r, 7) : (int)oc_rng_below(&r, sizeof nalpha / sizeof *nalpha);
      memcpy(s + n, nalpha[a], strlen(nalpha[a]));
      n += strlen(nalpha[a]);
    }
    for (int f = 0; f < 4; f++) {
      utf8proc_uint8_t *want = NULL;
      utf8proc_ssize_t wl = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &want, (utf8proc_option_t)forms[f]);
      size_t gl = 0;
      char *got = oc_utf8_normalize(s, n, forms[f], &gl);
      int ok = wl >= 0 && got && gl == (size_t)wl && memcmp(got, want, gl) == 0;
      changed += wl >= 0 && ((size_t)wl != n || memcmp(want, s, n) != 0);
      if (!ok && bad++ < 10) show("normalization differs", f, s, n);
      free(want);
      free(got);
    }
  }
  CHECK(bad == 0, "%d random strings normalized differently", bad);
  CHECK(changed > 20000, "normalization changed only %d of 80000 strings", changed);
  /* the fast path must actually decide most positions (the alphabet is 1/4 non-ASCII) */
  CHECK(n_fast * 10 > n_positions * 5, "fast matcher decided %ld of %ld positions", n_fast, n_positions);
  fprintf(stderr, "fast matcher decided %ld of %ld positions\n", n_fast, n_positions);
  for (int k = 0; k < 3; k++) { oc_regex_free(fast_re[k]); oc_regex_free(slow_re[k]); }
  return check_summary("split_fast");
}
