/* UTF-8, Unicode classes and Oniguruma regexes for the tokenizer and templates. */
#ifndef OC_TEXT_H
#define OC_TEXT_H
#include <stddef.h>
#include <stdint.h>

int oc_utf8_len(unsigned char lead);                            /* 1..4 (1 for invalid leads) */
int oc_utf8_decode(const char *s, size_t n, uint32_t *cp);      /* bytes consumed (>= 1) */
int oc_utf8_encode(uint32_t cp, char *out);                     /* bytes written */
int oc_utf8_valid(const char *s, size_t n);
/* Rust String::from_utf8_lossy: each maximal invalid subsequence becomes U+FFFD. */
char *oc_utf8_lossy(const char *s, size_t n, size_t *out_len);
char *oc_utf8_lower(const char *s, size_t n, size_t *out_len);
/* utf8proc_map(s, n, options) (NFC/NFD/NFKC/NFKD options) computed only on the non-ASCII regions;
 * malloc'd, NUL-terminated; NULL on invalid UTF-8 or out of memory */
char *oc_utf8_normalize(const char *s, size_t n, int options, size_t *out_len);
char *oc_utf8_upper(const char *s, size_t n, size_t *out_len);

int oc_is_whitespace(uint32_t cp);  /* Rust char::is_whitespace (Unicode White_Space) */
int oc_is_numeric(uint32_t cp);     /* Nd, Nl, No */
int oc_is_alnum(uint32_t cp);       /* letters and numbers */
int oc_is_punctuation(uint32_t cp); /* ASCII punctuation or Unicode P* */

/* What oc_str_replace and oc_regex_replace_all return when the result would be longer than
 * max_out bytes (nothing is built; -1 is out of memory or a regex failure). */
#define OC_TEXT_TOO_LONG (-2)
/* What oc_regex_search returns when Oniguruma gives up on a text (its backtracking limits: a
 * pattern like (a+)+$ on a long run) rather than matching or not matching. */
#define OC_TEXT_REGEX_FAILED (-3)
/* literal replace of every occurrence of `from` (empty: the text unchanged); the result's length is
 * computed first and bounded by max_out */
int oc_str_replace(const char *s, size_t n, const char *from, const char *to, size_t max_out, char **out, size_t *out_len);

typedef struct oc_regex oc_regex;
oc_regex *oc_regex_new(const char *pattern, char *msg, size_t msg_size); /* Oniguruma, Ruby syntax, UTF-8 */
oc_regex *oc_regex_literal(const char *text);
void oc_regex_free(oc_regex *re);
/* 1: match at [*ms, *me) searching from `from`; 0: none; -1: error */
int oc_regex_search(const oc_regex *re, const char *s, size_t n, size_t from, size_t *ms, size_t *me);
/* Hand-written ASCII matchers for the split patterns of byte-level BPE tokenizers (split_fast.c).
 * oc_regex_new recognizes these patterns and answers from them, asking Oniguruma only when a
 * non-ASCII character decides the match; oc_regex_set_fast(re, 0) turns that off (tests). */
enum { OC_SPLIT_NONE, OC_SPLIT_GPT2, OC_SPLIT_LLAMA3, OC_SPLIT_QWEN2 };
int oc_split_fast_kind(const char *pattern);
/* length of the pattern's match at s[p..n), or 0 when only Oniguruma can tell */
size_t oc_split_fast_match(int kind, const char *s, size_t n, size_t p);
int oc_regex_fast_kind(const oc_regex *re);
void oc_regex_set_fast(oc_regex *re, int on);
/* every match (empty ones too) replaced by repl; OC_TEXT_TOO_LONG as soon as the result would pass
 * max_out bytes */
int oc_regex_replace_all(const oc_regex *re, const char *s, size_t n, const char *repl, size_t max_out, char **out, size_t *out_len);

#endif
