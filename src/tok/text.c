#include "tok/text.h"

#include <oniguruma.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int oc_utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

/* strict decoder: length of the valid sequence at s, 0 if invalid */
static int valid_seq(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned char c = s[0];
  if (c < 0x80) { *cp = c; return 1; }
  int l;
  uint32_t v, min;
  if (c >= 0xC2 && c <= 0xDF) { l = 2; v = c & 0x1F; min = 0x80; }
  else if ((c & 0xF0) == 0xE0) { l = 3; v = c & 0x0F; min = 0x800; }
  else if (c >= 0xF0 && c <= 0xF4) { l = 4; v = c & 0x07; min = 0x10000; }
  else return 0;
  if ((size_t)l > n) return 0;
  for (int i = 1; i < l; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return l;
}

int oc_utf8_decode(const char *s, size_t n, uint32_t *cp) {
  int l = n ? valid_seq((const unsigned char *)s, n, cp) : 0;
  if (l) return l;
  *cp = 0xFFFD;
  return 1;
}

int oc_utf8_encode(uint32_t cp, char *o) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
  if (cp < 0x10000) { o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F)); return 3; }
  o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F)); o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

int oc_utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    int l = valid_seq(p + i, n - i, &cp);
    if (!l) return 0;
    i += (size_t)l;
  }
  return 1;
}

/* length of the maximal prefix of an invalid sequence that could start a valid one (>= 1) */
static size_t maximal_subpart(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) need = 2;
  else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else return 1;
  size_t i = 1;
  if (i < n && i < need && s[i] >= lo && s[i] <= hi) i++;
  else return 1;
  while (i < n && i < need && (s[i] & 0xC0) == 0x80) i++;
  return i;
}

char *oc_utf8_lossy(const char *s, size_t n, size_t *out_len) {
  char *o = malloc(n * 3 + 1);
  if (!o) return NULL;
  size_t k = 0;
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    int l = valid_seq(p + i, n - i, &cp);
    if (l) { memcpy(o + k, s + i, (size_t)l); k += (size_t)l; i += (size_t)l; continue; }
    memcpy(o + k, "\xEF\xBF\xBD", 3);
    k += 3;
    i += maximal_subpart(p + i, n - i);
  }
  o[k] = 0;
  *out_len = k;
  return o;
}

static char *map_case(const char *s, size_t n, size_t *out_len, int upper) {
  char *o = malloc(n * 2 + 4);
  if (!o) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    int l = oc_utf8_decode(s + i, n - i, &cp);
    utf8proc_int32_t m = upper ? utf8proc_toupper((utf8proc_int32_t)cp) : utf8proc_tolower((utf8proc_int32_t)cp);
    char tmp[4];
    int ml = oc_utf8_encode((uint32_t)m, tmp);
    if (k + (size_t)ml + 1 > n * 2 + 4) { char *no = realloc(o, k * 2 + 8); if (!no) { free(o); return NULL; } o = no; }
    memcpy(o + k, tmp, (size_t)ml);
    k += (size_t)ml;
    i += (size_t)l;
  }
  o[k] = 0;
  *out_len = k;
  return o;
}
char *oc_utf8_lower(const char *s, size_t n, size_t *out_len) { return map_case(s, n, out_len, 0); }

/* Unicode normalization (UTF8PROC_* options of utf8proc_map) applied only where it can change
 * something. An ASCII character never decomposes, is a starter (canonical ordering cannot move
 * marks across it) and is never the second half of a composition; so the text splits into
 * independent pieces before any ASCII character that is followed by another ASCII character or
 * the end (the one case where it could still compose with what follows). Pure-ASCII pieces are
 * copied, the rest normalized one region at a time: the same result as normalizing the whole
 * text (tests/test_split_fast.c compares both). */
char *oc_utf8_normalize(const char *text, size_t n, int options, size_t *out_len) {
  const unsigned char *s = (const unsigned char *)text;
  size_t cap = n + 16, k = 0, i = 0;
  char *o = malloc(cap);
  if (!o) return NULL;
  while (i < n) {
    size_t j = i;
    while (j < n && s[j] < 0x80) j++;
    size_t a = j == n ? n : (j > i ? j - 1 : j), q = j;
    while (q < n && !(s[q] < 0x80 && (q + 1 == n || s[q + 1] < 0x80))) q++;
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t rl = 0;
    if (q > a && (rl = utf8proc_map(s + a, (utf8proc_ssize_t)(q - a), &r, (utf8proc_option_t)options)) < 0) { free(o); return NULL; }
    if (k + (a - i) + (size_t)rl + 1 > cap) {
      cap = (k + (a - i) + (size_t)rl + 1) * 2;
      char *no = realloc(o, cap);
      if (!no) { free(o); free(r); return NULL; }
      o = no;
    }
    memcpy(o + k, s + i, a - i);
    k += a - i;
    if (rl) memcpy(o + k, r, (size_t)rl);
    k += (size_t)rl;
    free(r);
    i = q > a ? q : n;
  }
  o[k] = 0;
  *out_len = k;
  return o;
}
char *oc_utf8_upper(const char *s, size_t n, size_t *out_len) { return map_case(s, n, out_len, 1); }

int oc_is_whitespace(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

int oc_is_numeric(uint32_t c) {
  utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
  return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

int oc_is_alnum(uint32_t c) {
  utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
  return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || oc_is_numeric(c);
}

int oc_is_punctuation(uint32_t c) {
  if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
  utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
  return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

int oc_str_replace(const char *s, size_t n, const char *from, const char *to, size_t max_out, char **out, size_t *out_len) {
  size_t fl = strlen(from), tl = strlen(to), cnt = 0;
  *out = NULL;
  if (fl == 0) {
    if (n > max_out) return OC_TEXT_TOO_LONG;
    *out = strndup(s, n);
    *out_len = n;
    return *out ? 0 : -1;
  }
  for (size_t i = 0; i + fl <= n;) { if (memcmp(s + i, from, fl) == 0) { cnt++; i += fl; } else i++; }
  /* the length is known before anything is built: n + cnt * (tl - fl), checked for overflow */
  size_t grow = tl > fl ? tl - fl : 0;
  if (grow && cnt > (max_out - (n < max_out ? n : max_out)) / grow) return OC_TEXT_TOO_LONG;
  if (n + cnt * grow > max_out) return OC_TEXT_TOO_LONG;
  char *o = malloc(n + cnt * grow + 1);
  if (!o) return -1;
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    if (i + fl <= n && memcmp(s + i, from, fl) == 0) { memcpy(o + k, to, tl); k += tl; i += fl; }
    else o[k++] = s[i++];
  }
  o[k] = 0;
  *out = o;
  *out_len = k;
  return 0;
}

struct oc_regex {
  regex_t *re;
  int fast, fast_on; /* OC_SPLIT_* recognized from the pattern; whether it is used */
};

int oc_regex_fast_kind(const oc_regex *r) { return r->fast; }
void oc_regex_set_fast(oc_regex *r, int on) { r->fast_on = on && r->fast; }

/* Oniguruma's one-time setup, and a match region per thread (reused by every search of that
 * thread, freed when the thread exits). */
static pthread_once_t onig_once = PTHREAD_ONCE_INIT;
static pthread_key_t region_key;
static void free_region(void *r) { onig_region_free(r, 1); }
static void onig_setup(void) {
  OnigEncoding enc[1] = {ONIG_ENCODING_UTF8};
  onig_initialize(enc, 1);
  pthread_key_create(&region_key, free_region);
}
static void onig_init_once(void) { pthread_once(&onig_once, onig_setup); }

static OnigRegion *thread_region(void) {
  onig_init_once();
  OnigRegion *reg = pthread_getspecific(region_key);
  if (!reg && (reg = onig_region_new()) && pthread_setspecific(region_key, reg) != 0) {
    onig_region_free(reg, 1);
    reg = NULL;
  }
  return reg;
}

oc_regex *oc_regex_new(const char *pattern, char *msg, size_t msg_size) {
  onig_init_once();
  oc_regex *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  OnigErrorInfo einfo;
  int rc = onig_new(&r->re, (const OnigUChar *)pattern, (const OnigUChar *)pattern + strlen(pattern), ONIG_OPTION_NONE,
                    ONIG_ENCODING_UTF8, ONIG_SYNTAX_RUBY, &einfo);
  if (rc != ONIG_NORMAL) {
    OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(buf, rc, &einfo);
    if (msg && msg_size) { strncpy(msg, (const char *)buf, msg_size - 1); msg[msg_size - 1] = 0; }
    free(r);
    return NULL;
  }
  r->fast = oc_split_fast_kind(pattern);
  r->fast_on = r->fast != 0;
  return r;
}

oc_regex *oc_regex_literal(const char *text) {
  size_t n = strlen(text);
  char *p = malloc(n * 2 + 1);
  if (!p) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == ' ')) p[k++] = '\\';
    p[k++] = (char)c;
  }
  p[k] = 0;
  char msg[64];
  oc_regex *r = oc_regex_new(p, msg, sizeof msg);
  free(p);
  return r;
}

void oc_regex_free(oc_regex *r) {
  if (!r) return;
  onig_free(r->re);
  free(r);
}

int oc_regex_search(const oc_regex *r, const char *s, size_t n, size_t from, size_t *ms, size_t *me) {
  if (r->fast_on && from < n) {
    size_t l = oc_split_fast_match(r->fast, s, n, from);
    if (l) { *ms = from; *me = from + l; return 1; }
  }
  OnigRegion *reg = thread_region();
  if (!reg) return -1;
  const OnigUChar *st = (const OnigUChar *)s, *end = st + n;
  int rc = onig_search(r->re, st, end, st + from, end, reg, ONIG_OPTION_NONE);
  int out = 0;
  if (rc >= 0) { *ms = (size_t)reg->beg[0]; *me = (size_t)reg->end[0]; out = 1; }
  else if (rc != ONIG_MISMATCH) out = rc == ONIGERR_MEMORY ? -1 : OC_TEXT_REGEX_FAILED;
  return out;
}

int oc_regex_replace_all(const oc_regex *r, const char *s, size_t n, const char *repl, size_t max_out, char **out, size_t *out_len) {
  size_t rl = strlen(repl), cap = n + 16, k = 0, pos = 0, prev = 0, ms, me;
  *out = NULL;
  char *o = malloc(cap);
  if (!o) return -1;
  int rc;
  while (pos <= n && (rc = oc_regex_search(r, s, n, pos, &ms, &me)) == 1) {
    /* the output so far + this match's replacement + the rest of the text, each below n + max_out */
    size_t need = k + (ms - prev) + rl + (n - me) + 1;
    if (rl > max_out || need - 1 > max_out) { free(o); return OC_TEXT_TOO_LONG; }
    if (need > cap) { cap = need * 2; char *no = realloc(o, cap); if (!no) { free(o); return -1; } o = no; }
    memcpy(o + k, s + prev, ms - prev);
    k += ms - prev;
    memcpy(o + k, repl, rl);
    k += rl;
    prev = me;
    if (me == ms) {
      if (me >= n) break;
      size_t step = (size_t)oc_utf8_len((unsigned char)s[me]);
      if (cap < k + step + (n - me) + 1) { cap = (k + step + n) * 2; char *no = realloc(o, cap); if (!no) { free(o); return -1; } o = no; }
      memcpy(o + k, s + me, step);
      k += step;
      prev = me + step;
      pos = prev;
    } else pos = me;
  }
  if (k + (n - prev) + 1 > cap) { char *no = realloc(o, k + (n - prev) + 1); if (!no) { free(o); return -1; } o = no; }
  memcpy(o + k, s + prev, n - prev);
  k += n - prev;
  o[k] = 0;
  *out = o;
  *out_len = k;
  return 0;
}
