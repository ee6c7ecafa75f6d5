/* Hand-written matchers for the split regexes of the byte-level BPE tokenizers (GPT-2 /
 * ModernBERT's ByteLevel regex, Llama 3's and Qwen 2/3's Split patterns).
 *
 * Every one of these patterns matches at every position of a non-empty string (each character
 * is whitespace, a letter, a number or "other", and each class has an alternative), so the
 * leftmost match starts where the search starts and only its length has to be found. The
 * matchers below decide that length the way Oniguruma's backtracking does, alternative by
 * alternative, looking only at ASCII characters. Whenever the answer would depend on a
 * non-ASCII character (is U+00E9 a letter, U+3000 a space, U+0663 a digit, does U+017F fold
 * to 's'?) they return 0 and the caller asks Oniguruma, so the Unicode tables stay
 * Oniguruma's own. tests/test_split_fast.c compares both on every string of up to 4
 * characters over an alphabet of the relevant classes, on random strings and on the goldens. */
#include <string.h>

#include "text.h"

enum { C_OTHER = 0, C_SPACE = 1, C_L = 2, C_N = 4, C_NL = 8 };

static unsigned char ascii_class(unsigned char ch) {
  if (ch == '\n' || ch == '\r') return C_SPACE | C_NL;
  if ((ch >= 9 && ch <= 13) || ch == ' ') return C_SPACE;
  if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) return C_L;
  if (ch >= '0' && ch <= '9') return C_N;
  return C_OTHER;
}

#define NON_ASCII(ch) ((ch) >= 0x80)

/* End of the run of ASCII characters of class `cls` (C_SPACE matches any whitespace) starting
 * at q; *undecided is set when the run stops at a non-ASCII character, which might continue it. */
static size_t run_end(const unsigned char *s, size_t n, size_t q, int cls, int *undecided) {
  while (q < n) {
    if (NON_ASCII(s[q])) { *undecided = 1; return q; }
    int c = ascii_class(s[q]);
    if (cls == C_SPACE ? !(c & C_SPACE) : c != cls) break;
    q++;
  }
  return q;
}

static int fold(int ch, int icase) { return icase && ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }

/* 's|'t|'re|'ve|'m|'ll|'d at p (s[p] == '\''): match length, 0 none, -1 undecided */
static int contraction(const unsigned char *s, size_t n, size_t p, int icase) {
  if (p + 1 >= n) return 0;
  if (NON_ASCII(s[p + 1])) return icase ? -1 : 0;
  int a = fold(s[p + 1], icase), b;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (a == 'r' || a == 'v') b = 'e';
  else if (a == 'l') b = 'l';
  else return 0;
  if (p + 2 >= n) return 0;
  if (NON_ASCII(s[p + 2])) return icase ? -1 : 0;
  return fold(s[p + 2], icase) == b ? 3 : 0;
}

/* \s+(?!\S)|\s+ at p, given the whitespace run ends at e (e > p, s[e] ASCII non-space or e == n) */
static size_t trailing_space(size_t p, size_t e, size_t n) {
  if (e == n) return e - p;
  return e - p >= 2 ? e - p - 1 : 1;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const unsigned char *s, size_t n, size_t p) {
  if (s[p] == '\'') {
    int k = contraction(s, n, p, 0);
    if (k) return k < 0 ? 0 : (size_t)k;
  }
  size_t start = p;
  if (s[p] == ' ' && p + 1 < n) start = p + 1;
  if (NON_ASCII(s[start])) return 0;
  int c = ascii_class(s[start]), undecided = 0;
  if (!(c & C_SPACE)) { /* a letter, number or other run, optionally after one space */
    size_t e = run_end(s, n, start, c, &undecided);
    return undecided ? 0 : e - p;
  }
  size_t e = run_end(s, n, p, C_SPACE, &undecided);
  return undecided ? 0 : trailing_space(p, e, n);
}

/* Llama 3 (max_digits 3) and Qwen 2/3 (max_digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const unsigned char *s, size_t n, size_t p, int max_digits) {
  if (NON_ASCII(s[p])) return 0;
  if (s[p] == '\'') {
    int k = contraction(s, n, p, 1);
    if (k) return k < 0 ? 0 : (size_t)k;
  }
  int c = ascii_class(s[p]), undecided = 0;
  if (c == C_L) {
    size_t e = run_end(s, n, p, C_L, &undecided);
    return undecided ? 0 : e - p;
  }
  if (c == C_N) {
    size_t k = 1;
    while ((int)k < max_digits && p + k < n) {
      if (NON_ASCII(s[p + k])) return 0;
      if (ascii_class(s[p + k]) != C_N) break;
      k++;
    }
    return k;
  }
  /* [^\r\n\p{L}\p{N}]?\p{L}+ : one non-newline, non-letter, non-number char before letters */
  if (!(c & C_NL) && p + 1 < n) {
    if (NON_ASCII(s[p + 1])) return 0;
    if (ascii_class(s[p + 1]) == C_L) {
      size_t e = run_end(s, n, p + 1, C_L, &undecided);
      return undecided ? 0 : e - p;
    }
  }
  /* ` ?[^\s\p{L}\p{N}]+[\r\n]*` */
  size_t start = n;
  if (c == C_OTHER) start = p;
  else if (s[p] == ' ' && p + 1 < n && ascii_class(s[p + 1]) == C_OTHER) start = p + 1; /* s[p+1] is ASCII here */
  if (start < n) {
    size_t e = run_end(s, n, start, C_OTHER, &undecided);
    if (undecided) return 0;
    while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
    return e - p;
  }
  /* whitespace: \s*[\r\n]+ (up to the run's last newline), else \s+(?!\S), else \s+ */
  size_t e = run_end(s, n, p, C_SPACE, &undecided);
  if (undecided) return 0;
  for (size_t j = e; j > p; j--)
    if (s[j - 1] == '\n' || s[j - 1] == '\r') return j - p;
  return trailing_space(p, e, n);
}

static const char *const patterns[] = {
    NULL,
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

int oc_split_fast_kind(const char *pattern) {
  for (int k = 1; k < (int)(sizeof patterns / sizeof *patterns); k++)
    if (strcmp(pattern, patterns[k]) == 0) return k;
  return 0;
}

size_t oc_split_fast_match(int kind, const char *text, size_t n, size_t p) {
  const unsigned char *s = (const unsigned char *)text;
  if (p >= n) return 0;
  switch (kind) {
  case OC_SPLIT_GPT2: return match_gpt2(s, n, p);
  case OC_SPLIT_LLAMA3: return match_llama3(s, n, p, 3);
  case OC_SPLIT_QWEN2: return match_llama3(s, n, p, 1);
  default: return 0;
  }
}
