/* Hugging Face tokenizer.json engine: normalizers, pre-tokenizers, BPE / WordPiece models,
 * added tokens, post-processors and decoders, following the semantics of the Rust
 * `tokenizers` library. Text is handled as UTF-8 strings split into pieces. */
#include "opencon/tokenizer.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <oniguruma.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "opencon/json.h"
#include "tok/text.h"

/* ------------------------------------------------------------------ hash maps */
typedef struct {
  char **keys;
  uint32_t *klen;
  int *vals;
  uint32_t cap, n;
} smap;

/* 8 bytes at a time, multiply-xorshift mixing, a final avalanche (murmur3's fmix64) */
static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  if (i < n) {
    uint64_t w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  }
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  return h;
}

static int smap_init(smap *m, uint32_t n) {
  uint32_t cap = 16;
  while (cap < n * 2 + 16) cap <<= 1;
  m->keys = calloc(cap, sizeof *m->keys);
  m->klen = calloc(cap, sizeof *m->klen);
  m->vals = calloc(cap, sizeof *m->vals);
  m->cap = cap;
  m->n = 0;
  return m->keys && m->vals && m->klen ? 0 : -1;
}

static void smap_free(smap *m) {
  if (m->keys) for (uint32_t i = 0; i < m->cap; i++) free(m->keys[i]);
  free(m->keys);
  free(m->klen);
  free(m->vals);
  memset(m, 0, sizeof *m);
}

static int smap_find(const smap *m, const char *s, size_t n) {
  if (!m->cap) return -1;
  uint32_t i = (uint32_t)hash_bytes(s, n) & (m->cap - 1);
  while (m->keys[i]) {
    if (m->klen[i] == n && memcmp(m->keys[i], s, n) == 0) return m->vals[i];
    i = (i + 1) & (m->cap - 1);
  }
  return -1;
}

static int smap_put(smap *m, const char *s, size_t n, int v) {
  if ((m->n + 1) * 2 > m->cap) {
    smap old = *m;
    if (smap_init(m, old.cap)) { *m = old; return -1; }
    for (uint32_t i = 0; i < old.cap; i++)
      if (old.keys[i]) {
        uint32_t j = (uint32_t)hash_bytes(old.keys[i], old.klen[i]) & (m->cap - 1);
        while (m->keys[j]) j = (j + 1) & (m->cap - 1);
        m->keys[j] = old.keys[i];
        m->klen[j] = old.klen[i];
        m->vals[j] = old.vals[i];
        m->n++;
      }
    free(old.keys);
    free(old.klen);
    free(old.vals);
  }
  uint32_t i = (uint32_t)hash_bytes(s, n) & (m->cap - 1);
  while (m->keys[i]) {
    if (m->klen[i] == n && memcmp(m->keys[i], s, n) == 0) { m->vals[i] = v; return 0; }
    i = (i + 1) & (m->cap - 1);
  }
  m->keys[i] = strndup(s, n);
  if (!m->keys[i]) return -1;
  m->klen[i] = (uint32_t)n;
  m->vals[i] = v;
  m->n++;
  return 0;
}

typedef struct {
  uint64_t *keys; /* (a << 32 | b) + 1, 0 = empty */
  int32_t *rank, *id;
  uint32_t cap;
} pmap;

static uint32_t mix32(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return (uint32_t)k;
}

static int pmap_init(pmap *m, uint32_t n) {
  uint32_t cap = 16;
  while (cap < n * 2 + 16) cap <<= 1;
  m->keys = calloc(cap, sizeof *m->keys);
  m->rank = calloc(cap, sizeof *m->rank);
  m->id = calloc(cap, sizeof *m->id);
  m->cap = cap;
  return m->keys && m->rank && m->id ? 0 : -1;
}

static void pmap_free(pmap *m) { free(m->keys); free(m->rank); free(m->id); memset(m, 0, sizeof *m); }

static void pmap_put(pmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
  uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
  uint32_t i = mix32(k) & (m->cap - 1);
  while (m->keys[i] && m->keys[i] != k) i = (i + 1) & (m->cap - 1);
  if (m->keys[i] == k) return; /* first (lowest rank) merge wins */
  m->keys[i] = k;
  m->rank[i] = rank;
  m->id[i] = id;
}

static int pmap_get(const pmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
  if (!m->cap) return 0;
  uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
  uint32_t i = mix32(k) & (m->cap - 1);
  while (m->keys[i]) {
    if (m->keys[i] == k) { *rank = m->rank[i]; *id = m->id[i]; return 1; }
    i = (i + 1) & (m->cap - 1);
  }
  return 0;
}

/* ------------------------------------------------------------------ pipeline steps */
enum { N_NFC, N_NFD, N_NFKC, N_NFKD, N_REPLACE, N_PREPEND, N_STRIP, N_LOWERCASE };
enum { P_BYTELEVEL, P_SPLIT, P_METASPACE, P_WHITESPACE, P_WHITESPACESPLIT, P_DIGITS, P_PUNCTUATION };
enum { D_BYTELEVEL, D_METASPACE, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_WORDPIECE };
enum { PP_TEMPLATE, PP_BERT, PP_ROBERTA, PP_BYTELEVEL };

typedef struct {
  int kind;
  char *name;       /* "PATH: $.normalizer.normalizers[1] (Replace)": errors name the step */
  oc_regex *re;     /* REPLACE (regex or escaped literal), SPLIT */
  char *s1, *s2;    /* REPLACE content / PREPEND / METASPACE replacement / STRIP content / WORDPIECE prefix */
  int a, b, c;      /* flags: STRIP left,right; BYTELEVEL add_prefix_space,use_regex; SPLIT behavior,invert; ... */
} step;

typedef struct {
  int is_special; /* 1: a special token (ids), 0: a sequence */
  int seq;        /* 0 = A, 1 = B */
  int type_id;
  int32_t *ids;
  int n_ids;
  char **toks;
} tmpl_item;

typedef struct {
  int kind;
  tmpl_item *single, *pair;
  int n_single, n_pair;
  int32_t cls_id, sep_id;
  char *cls, *sep;
} post_step;

typedef struct {
  char *content;
  int id, special, lstrip, rstrip, single_word, normalized;
} added_tok;

/* Word cache (as the Rust library keeps): pre-token bytes -> model ids. Bounded and never
 * evicted, shared by all callers of a tokenizer: an entry is built completely, then published
 * into its empty slot with a release store under a mutex (writers); readers take no lock. */
#define CACHE_SLOTS 262144
typedef struct {
  uint32_t hash, klen, n;
  int32_t ids[]; /* then the key's bytes */
} cache_ent;
#define CACHE_KEY(c) ((const char *)((c)->ids + (c)->n))

struct oc_tokenizer {
  pthread_mutex_t cache_mu;
  _Atomic(cache_ent *) *cache;
  _Atomic uint32_t cache_n;
  int model_wordpiece;
  smap vocab;
  char **id_to_tok;
  uint32_t *id_len;
  int n_ids, cap_ids;
  pmap merges;
  int byte_fallback, ignore_merges, fuse_unk;
  int32_t unk_id;
  char *cont_prefix, *end_suffix;
  int wp_max_chars;
  step *norm, *pre, *dec;
  int n_norm, n_pre, n_dec;
  post_step *post;
  int n_post;
  added_tok *added;
  int n_added;
  /* trie over the added tokens' bytes: node 0 is the root */
  struct trie_node { int32_t first_child, next_sibling, term; unsigned char byte; } *trie;
  int n_trie, cap_trie;
  int32_t trie_root[2][256]; /* [normalized flag][first byte]: the root's child, or -1 when no added
                              * token with that flag starts with that byte */
  unsigned char *is_special_id; /* [n_ids] */
  oc_regex *bytelevel_re;
  const oc_regex *fused_re; /* the byte-level pipeline's split regex when encode_bytelevel applies */
  int fast_paths;           /* 0: the general pipeline only (tests compare both) */
};

/* ------------------------------------------------------------------ pieces */
/* A list of text pieces whose bytes live in one growing buffer (no allocation per piece).
 * P_S(v, i) is only valid until the next push to the same list. */
typedef struct {
  size_t off, len;
  int32_t added;  /* >= 0: an added token id, pre-assigned */
  int at_origin;  /* starts at offset 0 of the original text */
} piece;

typedef struct {
  piece *p;
  int n, cap;
  char *buf;
  size_t used, bcap;
} pieces;

#define P_S(v, i) ((v)->buf + (v)->p[i].off)

/* the next capacity of an array of cap elements that must hold need: doubled, at most INT_MAX
 * (-1 when need is past that) */
static int grow_cap(int cap, int64_t need) {
  if (need > INT_MAX) return -1;
  int64_t nc = cap ? (int64_t)cap * 2 : 32;
  while (nc < need) nc *= 2;
  return nc > INT_MAX ? INT_MAX : (int)nc;
}

/* Append n bytes + a NUL to a growing byte buffer; *off receives where they start. */
static int buf_append(char **buf, size_t *used, size_t *cap, const char *s, size_t n, size_t *off) {
  if (*used + n + 1 > *cap) {
    size_t nc = (*used + n + 1) * 2 + 256;
    char *nb = realloc(*buf, nc);
    if (!nb) return -1;
    *buf = nb;
    *cap = nc;
  }
  memcpy(*buf + *used, s, n);
  (*buf)[*used + n] = 0;
  *off = *used;
  *used += n + 1;
  return 0;
}

static int pieces_push(pieces *v, const char *s, size_t len, int32_t added, int at_origin) {
  if (v->n == v->cap) {
    int nc = grow_cap(v->cap, (int64_t)v->n + 1);
    piece *np = nc < 0 ? NULL : realloc(v->p, sizeof *np * (size_t)nc);
    if (!np) return -1;
    v->p = np;
    v->cap = nc;
  }
  size_t off;
  if (buf_append(&v->buf, &v->used, &v->bcap, s, len, &off)) return -1;
  v->p[v->n++] = (piece){off, len, added, at_origin};
  return 0;
}

static void pieces_free(pieces *v) {
  free(v->p);
  free(v->buf);
  memset(v, 0, sizeof *v);
}

/* ------------------------------------------------------------------ split with behaviors */
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };

typedef struct { size_t s, e; int m; } span;

/* Split s[0..len) into out by match spans (covering the string), applying the behavior. The
 * spans are rewritten in place (the kept ones never pass the one being read), not copied: a split
 * of a long text holds one span array, 24 bytes a span. */
static int split_spans(const char *ps, int at_origin, span *sp, int ns, int behavior, pieces *out) {
  int first = 0, end = 0; /* the kept spans: sp[first..end) */
  if (behavior == B_REMOVED) {
    for (int i = 0; i < ns; i++) if (!sp[i].m) sp[end++] = sp[i];
  } else if (behavior == B_ISOLATED) {
    end = ns;
  } else if (behavior == B_MERGED_PREV) {
    int prev = 0;
    for (int i = 0; i < ns; i++) {
      int m = sp[i].m;
      if (m && !prev && end) sp[end - 1].e = sp[i].e;
      else sp[end++] = sp[i];
      prev = m;
    }
  } else if (behavior == B_MERGED_NEXT) { /* from the end: kept spans fill sp from the back */
    int prev = 0;
    first = end = ns;
    for (int i = ns - 1; i >= 0; i--) {
      int m = sp[i].m;
      if (m && !prev && first < ns) sp[first].s = sp[i].s;
      else sp[--first] = sp[i];
      prev = m;
    }
  } else { /* contiguous */
    for (int i = 0; i < ns; i++) {
      if (end && sp[end - 1].m == sp[i].m) sp[end - 1].e = sp[i].e;
      else sp[end++] = sp[i];
    }
  }
  int rc = 0;
  for (int i = first; i < end && !rc; i++)
    if (sp[i].e > sp[i].s) rc = pieces_push(out, ps + sp[i].s, sp[i].e - sp[i].s, -1, at_origin && sp[i].s == 0);
  return rc;
}

/* spans from regex matches (or a predicate on characters when re == NULL) */
typedef int (*char_pred)(uint32_t cp);

static int make_spans(const char *s, size_t len, const oc_regex *re, char_pred pred, int invert, span **out, int *n) {
  int cap = 16, k = 0;
  span *sp = malloc(sizeof *sp * (size_t)cap);
  if (!sp) return -1;
  /* (callers free *out) */
  size_t prev = 0;
#define PUSH(a, b, mm)                                                            \
  do {                                                                            \
    if (k + 1 >= cap) {                                                           \
      cap *= 2;                                                                   \
      span *ns_ = realloc(sp, sizeof *sp * (size_t)cap);                          \
      if (!ns_) { free(sp); return -1; }                                          \
      sp = ns_;                                                                   \
    }                                                                             \
    sp[k++] = (span){(a), (b), (mm) ^ invert};                                    \
  } while (0)
  if (re) {
    size_t pos = 0;
    size_t ms, me;
    int r = 0;
    while (pos <= len && (r = oc_regex_search(re, s, len, pos, &ms, &me)) == 1) {
      if (ms > prev) PUSH(prev, ms, 0);
      PUSH(ms, me, 1);
      prev = me;
      if (me == ms) { /* empty match: step one character */
        if (me >= len) break;
        pos = me + (size_t)oc_utf8_len((unsigned char)s[me]);
      } else pos = me;
    }
    if (r < 0) { free(sp); return r; } /* -1 or OC_TEXT_REGEX_FAILED */
  } else {
    size_t i = 0;
    while (i < len) {
      uint32_t cp;
      int l = oc_utf8_decode(s + i, len - i, &cp);
      if (pred(cp)) {
        if (i > prev) PUSH(prev, i, 0);
        PUSH(i, i + (size_t)l, 1);
        prev = i + (size_t)l;
      }
      i += (size_t)l;
    }
  }
  if (prev < len) PUSH(prev, len, 0);
#undef PUSH
  *out = sp;
  *n = k;
  return 0;
}

static int split_piece(const char *ps, size_t plen, int at_origin, oc_regex *re, char_pred pred, int behavior, int invert, pieces *out) {
  span *sp;
  int ns;
  int mr = make_spans(ps, plen, re, pred, invert, &sp, &ns);
  if (mr) return mr < 0 ? mr : -1;
  int rc = split_spans(ps, at_origin, sp, ns, behavior, out);
  free(sp);
  return rc;
}

/* ------------------------------------------------------------------ byte level */
static uint32_t byte_to_cp[256];
static int cp_to_byte[324];
static char byte_utf8[256][2]; /* byte_to_cp[b] as UTF-8 (1 or 2 bytes) */
static unsigned char byte_utf8_len[256];
static void build_byte_tables(void) {
  int n = 0;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_to_cp[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
  }
  for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    cp_to_byte[byte_to_cp[b]] = b;
    char u[4];
    byte_utf8_len[b] = (unsigned char)oc_utf8_encode(byte_to_cp[b], u);
    memcpy(byte_utf8[b], u, 2);
  }
}
/* the tables are built once per process, before any thread reads them */
static pthread_once_t byte_tables_once = PTHREAD_ONCE_INIT;
static void init_byte_tables(void) { pthread_once(&byte_tables_once, build_byte_tables); }

/* The byte-level characters of src[0..n) (1 or 2 UTF-8 bytes per byte) into small when they fit,
 * else into a malloc'd buffer (the caller frees it when it is not small); *len receives their
 * length. NULL when out of memory. */
static char *byte_level_map(const unsigned char *src, size_t n, char *small, size_t small_size, size_t *len) {
  char *b = n * 2 < small_size ? small : malloc(n * 2 + 1);
  if (!b) return NULL;
  size_t bl = 0;
  for (size_t j = 0; j < n; j++) { memcpy(b + bl, byte_utf8[src[j]], 2); bl += byte_utf8_len[src[j]]; }
  *len = bl;
  return b;
}

/* ------------------------------------------------------------------ growth limit */
/* The most text the steps of a pipeline may make of n bytes: each normalizer's output (all
 * segments of the text together), each pre-tokenizer's and each decoder's is at most
 * OC_TOKENIZER_MAX_GROWTH * n + OC_TOKENIZER_GROWTH_SLACK bytes. Measured against the pipeline's
 * input, not each step's, so that steps cannot compound; a step that would pass it stops
 * (OC_TEXT_TOO_LONG) before building more. */
static size_t growth_limit(size_t n) {
  if (n > (SIZE_MAX - OC_TOKENIZER_GROWTH_SLACK) / OC_TOKENIZER_MAX_GROWTH) return SIZE_MAX;
  return n * OC_TOKENIZER_MAX_GROWTH + OC_TOKENIZER_GROWTH_SLACK;
}

/* the error for a step that would pass growth_limit(n) (n: bytes of the text or of the tokens) */
/* the error for a split regex that gave up on a text (st NULL: the fused byte-level split) */
static int regex_error(oc_error *err, const step *st, size_t n) {
  return oc_fail(err, "%s: the split regex gave up on this text of %zu bytes (Oniguruma's limit on backtracking); it cannot be tokenized",
                 st ? st->name : "the byte-level split", n);
}

static int growth_error(oc_error *err, const step *st, const char *what, size_t n) {
  return oc_fail(err, "%s: the text would grow past %zu bytes, the limit for %zu bytes of %s (%d times them + %d bytes)", st->name,
                 growth_limit(n), n, what, OC_TOKENIZER_MAX_GROWTH, OC_TOKENIZER_GROWTH_SLACK);
}

/* ------------------------------------------------------------------ normalizers */
/* *origin is cleared when the normalizer removes the text's first characters, so that the
 * first remaining character no longer sits at offset 0 of the original (Metaspace "first").
 * 0, -1 (out of memory, a regex failure) or OC_TEXT_TOO_LONG (the output would pass max_out). */
static int apply_normalizer(const step *st, char **s, size_t *len, int *origin, size_t max_out) {
  char *out = NULL;
  size_t ol = 0;
  switch (st->kind) {
  case N_NFC: case N_NFD: case N_NFKC: case N_NFKD: {
    size_t k = 0;
    while (k < *len && (unsigned char)(*s)[k] < 0x80) k++;
    if (k == *len) return 0; /* ASCII is invariant under every normalization form */
    utf8proc_option_t opt = UTF8PROC_STABLE | (st->kind == N_NFC || st->kind == N_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
    if (st->kind == N_NFKC || st->kind == N_NFKD) opt |= UTF8PROC_COMPAT;
    if (!(out = oc_utf8_normalize(*s, *len, (int)opt, &ol))) return -1;
    break;
  }
  case N_REPLACE: {
    size_t ms, me;
    if (!*st->s1 && oc_regex_search(st->re, *s, *len, 0, &ms, &me) == 1 && ms == 0 && me > 0) *origin = 0;
    int rc = oc_regex_replace_all(st->re, *s, *len, st->s1, max_out, &out, &ol);
    if (rc) return rc;
    break;
  }
  case N_PREPEND:
    if (*len == 0) return 0;
    ol = strlen(st->s1) + *len;
    if (ol > max_out) return OC_TEXT_TOO_LONG;
    out = malloc(ol + 1);
    if (!out) return -1;
    memcpy(out, st->s1, strlen(st->s1));
    memcpy(out + strlen(st->s1), *s, *len + 1);
    break;
  case N_STRIP: {
    size_t a = 0, b = *len;
    if (st->a) while (a < b) { uint32_t cp; int l = oc_utf8_decode(*s + a, b - a, &cp); if (!oc_is_whitespace(cp)) break; a += (size_t)l; }
    if (st->b) while (b > a) { size_t q = b - 1; while (q > a && ((unsigned char)(*s)[q] & 0xC0) == 0x80) q--; uint32_t cp; oc_utf8_decode(*s + q, b - q, &cp); if (!oc_is_whitespace(cp)) break; b = q; }
    if (a > 0) *origin = 0;
    ol = b - a;
    out = malloc(ol + 1);
    if (!out) return -1;
    memcpy(out, *s + a, ol);
    out[ol] = 0;
    break;
  }
  case N_LOWERCASE:
    out = oc_utf8_lower(*s, *len, &ol);
    if (!out) return -1;
    break;
  }
  if (ol > max_out) { free(out); return OC_TEXT_TOO_LONG; } /* (Unicode normalization, lowercase: at most 11x) */
  free(*s);
  *s = out;
  *len = ol;
  return 0;
}

/* ------------------------------------------------------------------ pre-tokenizers */
static int pred_digit(uint32_t cp) { return oc_is_numeric(cp); }
static int pred_punct(uint32_t cp) { return oc_is_punctuation(cp); }
static int pred_space(uint32_t cp) { return oc_is_whitespace(cp); }

/* One pre-tokenizer over every piece: 0, -1 (out of memory), OC_TEXT_REGEX_FAILED (a split regex
 * gave up on the text) or OC_TEXT_TOO_LONG (the pieces' text would pass max_out bytes) */
static int apply_pretok(const oc_tokenizer *t, const step *st, pieces *in, pieces *out, size_t max_out) {
  pieces parts = {0}; /* ByteLevel scratch, reused across pieces */
  int result = 0;
  for (int i = 0; i < in->n && !result; i++) {
    size_t out_text = out->used - (size_t)out->n; /* the pieces' bytes without their NULs */
    if (out_text > max_out) { result = OC_TEXT_TOO_LONG; break; }
    const piece *p = &in->p[i];
    const char *ps = P_S(in, i);
    if (p->added >= 0) { if (pieces_push(out, ps, p->len, p->added, p->at_origin)) result = -1; continue; }
    int rc = 0;
    switch (st->kind) {
    case P_BYTELEVEL: {
      const char *qs = ps;
      size_t ql = p->len;
      char *tmp = NULL;
      if (st->a && (p->len == 0 || ps[0] != ' ')) {
        tmp = malloc(p->len + 2);
        if (!tmp) { result = -1; break; }
        tmp[0] = ' ';
        memcpy(tmp + 1, ps, p->len + 1);
        qs = tmp;
        ql = p->len + 1;
      }
      parts.n = 0;
      parts.used = 0;
      if (st->b) rc = split_piece(qs, ql, p->at_origin, t->bytelevel_re, NULL, B_ISOLATED, 0, &parts);
      else rc = pieces_push(&parts, qs, ql, -1, p->at_origin);
      char small[1024];
      for (int k = 0; k < parts.n && !rc; k++) {
        size_t bl;
        char *b = byte_level_map((const unsigned char *)P_S(&parts, k), parts.p[k].len, small, sizeof small, &bl);
        if (!b) { rc = -1; break; }
        rc = pieces_push(out, b, bl, -1, parts.p[k].at_origin);
        if (b != small) free(b);
      }
      free(tmp);
      break;
    }
    case P_SPLIT: rc = split_piece(ps, p->len, p->at_origin, st->re, NULL, st->a, st->b, out); break;
    case P_METASPACE: {
      size_t rl = strlen(st->s1), nl;
      char *r;
      int src = oc_str_replace(ps, p->len, " ", st->s1, max_out - out_text, &r, &nl);
      if (src) { result = src; break; }
      int prepend = (st->a == 0 || (st->a == 1 && p->at_origin)) && !(nl >= rl && memcmp(r, st->s1, rl) == 0);
      if (prepend) {
        char *r2 = malloc(nl + rl + 1);
        if (!r2) { free(r); result = -1; break; }
        memcpy(r2, st->s1, rl);
        memcpy(r2 + rl, r, nl + 1);
        free(r);
        r = r2;
        nl += rl;
      }
      if (st->b) rc = split_piece(r, nl, p->at_origin, st->re, NULL, B_MERGED_NEXT, 0, out);
      else rc = pieces_push(out, r, nl, -1, p->at_origin);
      free(r);
      break;
    }
    case P_WHITESPACE: rc = split_piece(ps, p->len, p->at_origin, st->re, NULL, B_REMOVED, 1, out); break;
    case P_WHITESPACESPLIT: rc = split_piece(ps, p->len, p->at_origin, NULL, pred_space, B_REMOVED, 0, out); break;
    case P_DIGITS: rc = split_piece(ps, p->len, p->at_origin, NULL, pred_digit, st->a ? B_ISOLATED : B_CONTIGUOUS, 0, out); break;
    case P_PUNCTUATION: rc = split_piece(ps, p->len, p->at_origin, NULL, pred_punct, st->a, 0, out); break;
    }
    if (rc) result = rc == OC_TEXT_REGEX_FAILED ? rc : -1;
  }
  if (!result && out->used - (size_t)out->n > max_out) result = OC_TEXT_TOO_LONG;
  pieces_free(&parts);
  return result;
}

/* ------------------------------------------------------------------ models */
typedef struct {
  int32_t *v;
  int n, cap;
} ivec;

/* append x[0..k) (growing by doubling) */
static int ivec_append(ivec *v, const int32_t *x, int k) {
  if ((int64_t)v->n + k > v->cap) {
    int nc = grow_cap(v->cap, (int64_t)v->n + k); /* (more than INT_MAX ids: an error) */
    int32_t *nv = nc < 0 ? NULL : realloc(v->v, sizeof *nv * (size_t)nc);
    if (!nv) return -1;
    v->v = nv;
    v->cap = nc;
  }
  if (k) memcpy(v->v + v->n, x, sizeof(int32_t) * (size_t)k);
  v->n += k;
  return 0;
}

static int ivec_push(ivec *v, int32_t x) { return ivec_append(v, &x, 1); }

static int bpe_word(const oc_tokenizer *t, const char *w, size_t len, ivec *out) {
  if (t->ignore_merges) {
    int id = smap_find(&t->vocab, w, len);
    if (id >= 0) return ivec_push(out, id);
  }
  ivec sym = {0};
  /* An unknown character becomes a pending <unk> (fused with following ones when fuse_unk); as in
   * the Rust library it is emitted before the next vocabulary symbol or at the end, so byte
   * fallback tokens of a later character can come out before it. */
  int pending_unk = 0;
  size_t pl = t->cont_prefix ? strlen(t->cont_prefix) : 0;
  char buf[64];
  for (size_t i = 0; i < len;) {
    int l = oc_utf8_len((unsigned char)w[i]);
    if (i + (size_t)l > len) l = (int)(len - i);
    int id;
    if (i > 0 && pl && pl + (size_t)l < sizeof buf) {
      memcpy(buf, t->cont_prefix, pl);
      memcpy(buf + pl, w + i, (size_t)l);
      id = smap_find(&t->vocab, buf, pl + (size_t)l);
    } else id = smap_find(&t->vocab, w + i, (size_t)l);
    if (id >= 0) {
      if (pending_unk && ivec_push(&sym, t->unk_id)) goto oom;
      pending_unk = 0;
      if (ivec_push(&sym, id)) goto oom;
    } else {
      int done = 0;
      if (t->byte_fallback) {
        int ids[4], ok = 1;
        for (int k = 0; k < l && ok; k++) {
          snprintf(buf, sizeof buf, "<0x%02X>", (unsigned char)w[i + (size_t)k]);
          ids[k] = smap_find(&t->vocab, buf, strlen(buf));
          ok = ids[k] >= 0;
        }
        if (ok) { for (int k = 0; k < l; k++) if (ivec_push(&sym, ids[k])) goto oom; done = 1; }
      }
      if (!done && t->unk_id >= 0) {
        if (pending_unk && !t->fuse_unk && ivec_push(&sym, t->unk_id)) goto oom;
        pending_unk = 1;
      }
    }
    i += (size_t)l;
  }
  if (pending_unk && ivec_push(&sym, t->unk_id)) goto oom;
  /* merge: repeatedly the lowest-ranked adjacent pair, leftmost first (as the Rust library's
   * priority queue). Symbols form a linked list; a heap entry is (rank, position of the left
   * symbol), and it is stale when the pair now at that position is not the merge of that rank (a
   * rank names one pair of the merges list). 8 bytes an entry: a SentencePiece-style tokenizer
   * (Gemma) merges a whole line as one word, 2 entries per character at most. */
  if (sym.n > 1) {
    int n = sym.n;
    if (n > (INT_MAX - 4) / 2) goto oom;
    int32_t *prev = malloc(sizeof(int32_t) * 2 * (size_t)n);
    typedef struct { int32_t rank, pos; } hent;
    hent *heap = malloc(sizeof(hent) * (size_t)(2 * n + 4));
    if (!prev || !heap) { free(prev); free(heap); goto oom; }
    int32_t *next = prev + n;
    int hn = 0;
#define HLESS(x, y) ((x).rank < (y).rank || ((x).rank == (y).rank && (x).pos < (y).pos))
#define HPUSH(e_) do { hent e__ = (e_); int i__ = hn++; while (i__ > 0) { int p__ = (i__ - 1) / 2; if (!HLESS(e__, heap[p__])) break; heap[i__] = heap[p__]; i__ = p__; } heap[i__] = e__; } while (0)
    for (int k = 0; k < n; k++) { prev[k] = k - 1; next[k] = k + 1 < n ? k + 1 : -1; }
    for (int k = 0; k + 1 < n; k++) {
      int32_t r, id;
      if (pmap_get(&t->merges, sym.v[k], sym.v[k + 1], &r, &id)) HPUSH(((hent){r, k}));
    }
    while (hn > 0) {
      hent top = heap[0];
      hent last = heap[--hn];
      int i = 0;
      while (1) { /* sift down */
        int c = 2 * i + 1;
        if (c >= hn) break;
        if (c + 1 < hn && HLESS(heap[c + 1], heap[c])) c++;
        if (!HLESS(heap[c], last)) break;
        heap[i] = heap[c];
        i = c;
      }
      if (hn > 0) heap[i] = last;
      int l = top.pos, r = next[l];
      int32_t rank, mid;
      if (sym.v[l] == -1 || r < 0 || !pmap_get(&t->merges, sym.v[l], sym.v[r], &rank, &mid) || rank != top.rank) continue; /* stale */
      sym.v[l] = mid;
      sym.v[r] = -1;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      int32_t rr, id;
      if (prev[l] >= 0 && pmap_get(&t->merges, sym.v[prev[l]], sym.v[l], &rr, &id)) HPUSH(((hent){rr, prev[l]}));
      if (next[l] >= 0 && pmap_get(&t->merges, sym.v[l], sym.v[next[l]], &rr, &id)) HPUSH(((hent){rr, l}));
    }
#undef HPUSH
#undef HLESS
    int k = 0;
    for (int j = 0; j >= 0; j = next[j]) sym.v[k++] = sym.v[j];
    sym.n = k;
    free(prev);
    free(heap);
  }
  for (int k = 0; k < sym.n; k++) if (ivec_push(out, sym.v[k])) goto oom;
  free(sym.v);
  return 0;
oom:
  free(sym.v);
  return -1;
}

/* ids of a cached word appended to out: 1 hit, 0 miss */
static int cache_get(oc_tokenizer *t, const char *w, size_t len, ivec *out) {
  if (!t->cache || len > 256) return 0;
  uint64_t h = hash_bytes(w, len);
  for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1), k = 0; k < 8; k++, i = (i + 1) & (CACHE_SLOTS - 1)) {
    const cache_ent *c = atomic_load_explicit(&t->cache[i], memory_order_acquire);
    if (!c) break;
    if (c->hash == (uint32_t)(h >> 32) && c->klen == len && memcmp(CACHE_KEY(c), w, len) == 0) {
      return ivec_append(out, c->ids, (int)c->n) ? -1 : 1;
    }
  }
  return 0;
}

static void cache_put(oc_tokenizer *t, const char *w, size_t len, const int32_t *ids, int n) {
  if (!t->cache || len > 256 || atomic_load_explicit(&t->cache_n, memory_order_relaxed) >= CACHE_SLOTS / 2) return;
  uint64_t h = hash_bytes(w, len);
  pthread_mutex_lock(&t->cache_mu);
  for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1), k = 0; k < 8; k++, i = (i + 1) & (CACHE_SLOTS - 1)) {
    cache_ent *c = atomic_load_explicit(&t->cache[i], memory_order_relaxed);
    if (c) { if (c->hash == (uint32_t)(h >> 32) && c->klen == len && memcmp(CACHE_KEY(c), w, len) == 0) break; continue; }
    c = malloc(sizeof *c + sizeof(int32_t) * (size_t)n + len);
    if (!c) break;
    c->hash = (uint32_t)(h >> 32);
    c->klen = (uint32_t)len;
    c->n = (uint32_t)n;
    if (n) memcpy(c->ids, ids, sizeof(int32_t) * (size_t)n);
    memcpy((char *)(c->ids + n), w, len);
    atomic_store_explicit(&t->cache[i], c, memory_order_release);
    atomic_fetch_add_explicit(&t->cache_n, 1, memory_order_relaxed);
    break;
  }
  pthread_mutex_unlock(&t->cache_mu);
}

static int wordpiece_word(const oc_tokenizer *t, const char *w, size_t len, ivec *out) {
  size_t nchars = 0;
  for (size_t i = 0; i < len; i += (size_t)oc_utf8_len((unsigned char)w[i])) nchars++;
  if ((int)nchars > t->wp_max_chars) return t->unk_id >= 0 ? ivec_push(out, t->unk_id) : 0;
  ivec tmp = {0};
  size_t start = 0, pl = t->cont_prefix ? strlen(t->cont_prefix) : 0;
  char *buf = malloc(len + pl + 1);
  if (!buf) return -1;
  while (start < len) {
    size_t end = len;
    int found = -1;
    while (start < end) {
      size_t bl = 0;
      if (start > 0) { memcpy(buf, t->cont_prefix, pl); bl = pl; }
      memcpy(buf + bl, w + start, end - start);
      bl += end - start;
      found = smap_find(&t->vocab, buf, bl);
      if (found >= 0) break;
      do end--; while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80);
    }
    if (found < 0) { free(tmp.v); free(buf); return t->unk_id >= 0 ? ivec_push(out, t->unk_id) : 0; }
    ivec_push(&tmp, found);
    start = end;
  }
  for (int k = 0; k < tmp.n; k++) ivec_push(out, tmp.v[k]);
  free(tmp.v);
  free(buf);
  return 0;
}

/* ------------------------------------------------------------------ added tokens */
static int is_word_char(uint32_t cp) { return cp == '_' || oc_is_alnum(cp); }

static int trie_add(oc_tokenizer *t, const char *s, int term) {
  int node = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    int c = t->trie[node].first_child;
    while (c >= 0 && t->trie[c].byte != *p) c = t->trie[c].next_sibling;
    if (c < 0) {
      if (t->n_trie == t->cap_trie) {
        int nc = t->cap_trie ? t->cap_trie * 2 : 256;
        struct trie_node *nt = realloc(t->trie, sizeof *nt * (size_t)nc);
        if (!nt) return -1;
        t->trie = nt;
        t->cap_trie = nc;
      }
      c = t->n_trie++;
      t->trie[c] = (struct trie_node){-1, t->trie[node].first_child, -1, *p};
      t->trie[node].first_child = c;
    }
    node = c;
  }
  if (t->trie[node].term < 0) t->trie[node].term = term; /* the first of duplicate contents wins */
  return 0;
}

/* Leftmost-longest match of an added token in s[from..len) among tokens with the given
 * normalized flag. Returns the token index or -1, with the (stripped) match span. */
static int find_added(const oc_tokenizer *t, const char *s, size_t len, size_t from, int normalized, size_t *ms, size_t *me) {
  if (!t->n_trie) return -1;
  for (size_t i = from; i < len; i++) {
    /* (added tokens are valid UTF-8, so no root child is a continuation byte) */
    int node = t->trie_root[normalized != 0][(unsigned char)s[i]], best = -1;
    if (node < 0) continue;
    size_t best_end = 0;
    for (size_t j = i;;) {
      int term = t->trie[node].term;
      if (term >= 0 && t->added[term].normalized == normalized) { best = term; best_end = j + 1; }
      if (++j >= len) break;
      int c = t->trie[node].first_child;
      while (c >= 0 && t->trie[c].byte != (unsigned char)s[j]) c = t->trie[c].next_sibling;
      if (c < 0) break;
      node = c;
    }
    if (best < 0) continue;
    const added_tok *a = &t->added[best];
    size_t s0 = i, e0 = best_end;
    if (a->single_word) {
      uint32_t cp;
      int ok = 1;
      if (s0 > 0) {
        size_t q = s0 - 1;
        while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
        oc_utf8_decode(s + q, s0 - q, &cp);
        if (is_word_char(cp)) ok = 0;
      }
      if (ok && e0 < len) { oc_utf8_decode(s + e0, len - e0, &cp); if (is_word_char(cp)) ok = 0; }
      if (!ok) continue;
    }
    if (a->lstrip)
      while (s0 > from) {
        size_t q = s0 - 1;
        while (q > from && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
        uint32_t cp;
        oc_utf8_decode(s + q, s0 - q, &cp);
        if (!oc_is_whitespace(cp)) break;
        s0 = q;
      }
    if (a->rstrip)
      while (e0 < len) {
        uint32_t cp;
        int l = oc_utf8_decode(s + e0, len - e0, &cp);
        if (!oc_is_whitespace(cp)) break;
        e0 += (size_t)l;
      }
    *ms = s0;
    *me = e0;
    return best;
  }
  return -1;
}

static int split_added(const oc_tokenizer *t, const char *ps, size_t plen, int at_origin, int normalized, pieces *out) {
  size_t pos = 0, ms, me;
  int k;
  while (pos < plen && (k = find_added(t, ps, plen, pos, normalized, &ms, &me)) >= 0) {
    if (ms > pos && pieces_push(out, ps + pos, ms - pos, -1, at_origin && pos == 0)) return -1;
    /* the token's text is the matched span, stripped whitespace included */
    if (pieces_push(out, ps + ms, me - ms, t->added[k].id, 0)) return -1;
    pos = me;
  }
  if (pos < plen && pieces_push(out, ps + pos, plen - pos, -1, at_origin && pos == 0)) return -1;
  return 0;
}

/* ------------------------------------------------------------------ encode */
/* Strings stored back to back in one buffer, each followed by a NUL: string i starts at off[i]
 * and ends one byte before the next one starts (or before `used`), so its length needs no array
 * of its own and may count NUL characters (decoded text can hold them). SV(v, i) is valid until
 * the next push. */
typedef struct {
  size_t *off;
  int n, cap;
  char *buf;
  size_t used, bcap;
} svec;

#define SV(v, i) ((v)->buf + (v)->off[i])
static size_t SVL(const svec *v, int i) { return (i + 1 < v->n ? v->off[i + 1] : v->used) - v->off[i] - 1; }

static int svec_push_n(svec *v, const char *s, size_t n) {
  if (v->n == v->cap) {
    int nc = grow_cap(v->cap, (int64_t)v->n + 1);
    size_t *no = nc < 0 ? NULL : realloc(v->off, sizeof *no * (size_t)nc);
    if (!no) return -1;
    v->off = no;
    v->cap = nc;
  }
  if (buf_append(&v->buf, &v->used, &v->bcap, s, n, &v->off[v->n])) return -1;
  v->n++;
  return 0;
}
/* keep the first n strings */
static void svec_truncate(svec *v, int n) {
  if (n >= v->n) return;
  v->used = v->off[n];
  v->n = n;
}
static void svec_free(svec *v) { free(v->off); free(v->buf); memset(v, 0, sizeof *v); }


/* One pre-token through the model (word cache first), appending ids (and token strings). */
static int encode_word(const oc_tokenizer *t, const char *w, size_t len, ivec *ids, svec *toks) {
  int before = ids->n, rc = 0;
  oc_tokenizer *mt = (oc_tokenizer *)t; /* the word cache is the only mutable state */
  int hit = cache_get(mt, w, len, ids);
  if (hit < 0) return -1;
  if (!hit) {
    rc = t->model_wordpiece ? wordpiece_word(t, w, len, ids) : bpe_word(t, w, len, ids);
    if (!rc) cache_put(mt, w, len, ids->n > before ? ids->v + before : NULL, ids->n - before); /* a word may give no ids (ids->v still NULL) */
  }
  for (int k = before; toks && k < ids->n && !rc; k++) {
    int32_t id = ids->v[k];
    const char *ts = oc_tokenizer_id_to_token(t, id);
    rc = svec_push_n(toks, ts ? ts : "", ts ? t->id_len[id] : 0);
  }
  return rc;
}

/* The byte-level pipeline fused (t->fused_re: Split(Isolated) + ByteLevel without prefix space
 * or regex, or ByteLevel with its own regex): each regex span (and each gap between matches)
 * is mapped to byte-level characters and handed to the model, without intermediate piece lists.
 * The spans are make_spans' (Isolated keeps every non-empty one), walked here without building
 * the span array: calling make_spans instead (an allocation per text segment) was slower on qwen3
 * in alternating runs (28-31 against 26-42 MB/s, four rounds). */
static int encode_bytelevel(const oc_tokenizer *t, const char *s, size_t n, ivec *ids, svec *toks) {
  char small[1024];
  size_t pos = 0, prev = 0, ms, me, span[2][2];
  int r = 0, rc = 0;
  while (!rc) {
    int ns = 0;
    r = pos <= n ? oc_regex_search(t->fused_re, s, n, pos, &ms, &me) : 0;
    if (r == 1) {
      if (ms > prev) { span[ns][0] = prev; span[ns++][1] = ms; }
      if (me > ms) { span[ns][0] = ms; span[ns++][1] = me; }
      prev = me;
      if (me == ms) pos = me >= n ? n + 1 : me + (size_t)oc_utf8_len((unsigned char)s[me]);
      else pos = me;
    } else {
      if (r < 0) return r; /* -1 or OC_TEXT_REGEX_FAILED */
      if (prev < n) { span[ns][0] = prev; span[ns++][1] = n; }
      prev = n;
    }
    for (int k = 0; k < ns && !rc; k++) {
      size_t bl;
      char *b = byte_level_map((const unsigned char *)s + span[k][0], span[k][1] - span[k][0], small, sizeof small, &bl);
      if (!b) return -1;
      rc = encode_word(t, b, bl, ids, toks);
      if (b != small) free(b);
    }
    if (r != 1) break;
  }
  return rc;
}

static int encode_one(const oc_tokenizer *t, const char *text, size_t len, ivec *ids, svec *toks, oc_error *err) {
  if (!oc_utf8_valid(text, len)) return oc_fail(err, "text is not valid UTF-8");
  pieces raw = {0}, segs = {0}, cur = {0}, nxt = {0};
  const size_t limit = growth_limit(len);
  size_t normalized = 0; /* bytes the normalizers made of the segments before the current one */
  const step *grew = NULL, *gave_up = NULL;
  int rc = split_added(t, text, len, 1, 0, &raw);
  for (int i = 0; i < raw.n && !rc; i++) {
    const char *rs = P_S(&raw, i);
    if (raw.p[i].added >= 0) { rc = pieces_push(&segs, rs, raw.p[i].len, raw.p[i].added, 0); continue; }
    size_t sl = raw.p[i].len;
    int origin = raw.p[i].at_origin;
    if (!t->n_norm) { rc = split_added(t, rs, sl, origin, 1, &segs); continue; }
    char *s = malloc(sl + 1);
    if (!s) { rc = -1; break; }
    memcpy(s, rs, sl);
    s[sl] = 0;
    for (int k = 0; k < t->n_norm && !rc; k++)
      if ((rc = apply_normalizer(&t->norm[k], &s, &sl, &origin, limit - normalized)) == OC_TEXT_TOO_LONG) grew = &t->norm[k];
    normalized += rc ? 0 : sl;
    if (!rc) rc = split_added(t, s, sl, origin, 1, &segs);
    free(s);
  }
  pieces_free(&raw);
  if (rc) {
    pieces_free(&segs);
    return grew ? growth_error(err, grew, "text", len) : oc_fail_code(err, OC_ERR_NOMEM, "out of memory or normalizer failure");
  }
  cur = segs;
  if (!t->fused_re || !t->fast_paths)
    for (int k = 0; k < t->n_pre && !rc; k++) {
      memset(&nxt, 0, sizeof nxt);
      if ((rc = apply_pretok(t, &t->pre[k], &cur, &nxt, limit)) == OC_TEXT_TOO_LONG) grew = &t->pre[k];
      else if (rc == OC_TEXT_REGEX_FAILED) gave_up = &t->pre[k];
      pieces_free(&cur);
      cur = nxt;
    }
  if (grew) { pieces_free(&cur); return growth_error(err, grew, "text", len); }
  if (gave_up) { pieces_free(&cur); return regex_error(err, gave_up, len); }
  for (int i = 0; i < cur.n && !rc; i++) {
    const char *cs = P_S(&cur, i);
    if (cur.p[i].added >= 0) rc = ivec_push(ids, cur.p[i].added) || (toks && svec_push_n(toks, cs, cur.p[i].len));
    else if (t->fused_re && t->fast_paths) rc = encode_bytelevel(t, cs, cur.p[i].len, ids, toks);
    else rc = encode_word(t, cs, cur.p[i].len, ids, toks);
  }
  pieces_free(&cur);
  if (rc == OC_TEXT_REGEX_FAILED) return regex_error(err, NULL, len);
  if (rc) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory while encoding");
  return 0;
}

static int n_added_specials(const oc_tokenizer *t, int pair) {
  int n = 0;
  for (int i = 0; i < t->n_post; i++) {
    const post_step *p = &t->post[i];
    if (p->kind == PP_TEMPLATE) {
      const tmpl_item *it = pair ? p->pair : p->single;
      int ni = pair ? p->n_pair : p->n_single;
      for (int k = 0; k < ni; k++) if (it[k].is_special) n += it[k].n_ids;
    } else if (p->kind == PP_BERT) n += pair ? 3 : 2;
    else if (p->kind == PP_ROBERTA) n += pair ? 4 : 2;
  }
  return n;
}

int oc_tokenizer_encode(const oc_tokenizer *t, const char *text, const char *text_pair, int add_special, int max_length,
                        oc_encoding *out, oc_error *err) {
  return oc_tokenizer_encode_n(t, text, strlen(text), text_pair, text_pair ? strlen(text_pair) : 0, add_special, max_length, out, err);
}

/* The longest_first truncation of the Rust library: how many ids of each sequence stay (*n1, *n2)
 * within max_length, counting the special tokens the post-processor will add */
static void truncate_lengths(const oc_tokenizer *t, int pair, int add_special, int max_length, int *n1, int *n2) {
  int budget = max_length - (add_special ? n_added_specials(t, pair) : 0);
  if (budget < 0) budget = 0;
  if (!pair) { if (*n1 > budget) *n1 = budget; return; }
  int a = *n1, b = *n2;
  if ((int64_t)a + b <= budget) return;
  /* the shorter keeps what it can, else both get half, the longer one the odd token */
  int swap = a > b;
  if (swap) { int x = a; a = b; b = x; }
  const int shorter = a;
  b = a > budget ? a : (a > budget - a ? a : budget - a);
  if ((int64_t)a + b > budget) { a = budget / 2; b = a + budget % 2; }
  /* Measured on the Rust library (tokenizers 0.23.2, every a, b <= 9, budget <= 9): when even the
   * shorter sequence alone reaches max_length, the odd token stays with the second sequence
   * instead of going back to the longer one. */
  if (swap && shorter < max_length) { int x = a; a = b; b = x; }
  if (*n1 > a) *n1 = a;
  if (*n2 > b) *n2 = b;
}

/* One part of an encoding's layout: special-token ids the post-processor adds, or sequence A / B. */
typedef struct {
  const int32_t *ids; /* the special ids; NULL: a sequence */
  int n, seq, type_id;
} layout_part;

/* The layout the post-processor gives an encoding of na (+ nb) ids; *np parts into parts (room for
 * the template's items + 6). The last non-ByteLevel processor decides (ByteLevel only trims offsets);
 * a template sets type ids even without special tokens, as in Rust. */
static void post_layout(const oc_tokenizer *t, int pair, int add_special, int na, int nb, layout_part *parts, int *np) {
  const post_step *tp = NULL;
  for (int i = 0; i < t->n_post; i++) if (t->post[i].kind != PP_BYTELEVEL) tp = &t->post[i];
  int k = 0;
#define PART(ids_, n_, seq_, ty_) (parts[k++] = (layout_part){(ids_), (n_), (seq_), (ty_)})
  if (tp && tp->kind == PP_TEMPLATE) {
    const tmpl_item *it = pair ? tp->pair : tp->single;
    int ni = pair ? tp->n_pair : tp->n_single;
    for (int i = 0; i < ni; i++)
      if (!it[i].is_special) PART(NULL, it[i].seq ? nb : na, it[i].seq, it[i].type_id);
      else if (add_special) PART(it[i].ids, it[i].n_ids, 0, it[i].type_id);
  } else if (tp && add_special) { /* BERT / RoBERTa */
    PART(&tp->cls_id, 1, 0, 0);
    PART(NULL, na, 0, 0);
    PART(&tp->sep_id, 1, 0, 0);
    if (pair) {
      int ty = tp->kind == PP_BERT ? 1 : 0;
      if (tp->kind == PP_ROBERTA) PART(&tp->sep_id, 1, 0, 0);
      PART(NULL, nb, 1, ty);
      PART(&tp->sep_id, 1, 0, ty);
    }
  } else {
    PART(NULL, na, 0, 0);
    if (pair) PART(NULL, nb, 1, tp && tp->kind == PP_ROBERTA ? 0 : 1);
  }
#undef PART
  *np = k;
}

/* Lay the encoding out in place, without copying the text's ids and token strings again (a
 * 32 MB text of 23M tokens took 1.1 GB here when they were copied into new arrays): A's id array
 * grows to the whole encoding and A's ids move to where the layout puts them first; B's ids and
 * the special ids are written around them. With tokens, A's string offsets get the same treatment,
 * B's strings and the special tokens' are appended to A's buffer, which becomes the encoding's
 * blob, and the offsets turn into pointers into it where they lie. */
static int lay_out(const oc_tokenizer *t, const layout_part *parts, int np, ivec *a, const ivec *b, svec *ta, const svec *tb,
                   int want_tokens, oc_encoding *out, oc_error *err) {
  int64_t total = 0;
  int posa = -1;
  for (int i = 0; i < np; i++) {
    if (!parts[i].ids && !parts[i].seq && posa < 0) posa = (int)total;
    total += parts[i].n;
  }
  if (total > INT_MAX) return oc_fail(err, "the encoding would have %lld tokens, more than %d", (long long)total, INT_MAX);
  const int n = (int)total;
  const size_t cells = n ? (size_t)n : 1;
  int32_t *ids = realloc(a->v, sizeof *ids * cells), *types = malloc(sizeof *types * cells);
  if (ids) { a->v = ids; a->cap = (int)cells; }
  size_t *offs = NULL;
  if (ids && want_tokens && (offs = realloc(ta->off, sizeof *offs * cells))) { ta->off = offs; ta->cap = (int)cells; }
  size_t bbase = 0;
  if (!ids || !types || (want_tokens && (!offs || buf_append(&ta->buf, &ta->used, &ta->bcap, tb->buf ? tb->buf : "", tb->used, &bbase)))) {
    free(types);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  if (posa > 0) {
    memmove(ids + posa, ids, sizeof *ids * (size_t)a->n);
    if (want_tokens) memmove(offs + posa, offs, sizeof *offs * (size_t)a->n);
  }
  int pos = 0;
  for (int i = 0; i < np; pos += parts[i++].n) {
    const layout_part *p = &parts[i];
    for (int j = 0; j < p->n; j++) types[pos + j] = p->type_id;
    if (p->ids) {
      memcpy(ids + pos, p->ids, sizeof *ids * (size_t)p->n);
      for (int j = 0; want_tokens && j < p->n; j++) {
        const char *ts = oc_tokenizer_id_to_token(t, p->ids[j]);
        if (buf_append(&ta->buf, &ta->used, &ta->bcap, ts ? ts : "", ts ? t->id_len[p->ids[j]] : 0, &offs[pos + j])) {
          free(types);
          return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
        }
      }
    } else if (p->seq) {
      if (p->n) memcpy(ids + pos, b->v, sizeof *ids * (size_t)p->n);
      for (int j = 0; want_tokens && j < p->n; j++) offs[pos + j] = bbase + tb->off[j];
    } else if (pos != posa) { /* sequence A a second time */
      memcpy(ids + pos, ids + posa, sizeof *ids * (size_t)p->n);
      if (want_tokens) memcpy(offs + pos, offs + posa, sizeof *offs * (size_t)p->n);
    }
  }
  out->ids = ids;
  out->type_ids = types;
  out->n = n;
  a->v = NULL;
  if (!want_tokens) return 0;
  /* offsets -> pointers, in the same cells (copied through memcpy: a cell holds a size_t, then a char *) */
  _Static_assert(sizeof(size_t) == sizeof(char *), "token offsets and pointers share their cells");
  for (int i = 0; i < n; i++) {
    size_t o;
    memcpy(&o, &offs[i], sizeof o);
    char *ptr = ta->buf + o;
    memcpy(&offs[i], &ptr, sizeof ptr);
  }
  out->tokens = (char **)(void *)offs;
  out->tok_blob = ta->buf;
  ta->off = NULL;
  ta->buf = NULL;
  return 0;
}

/* want_tokens = 0: ids and type ids only (out->tokens stays NULL) */
static int encode_impl(const oc_tokenizer *t, const char *text, size_t len, const char *text_pair, size_t pair_len,
                       int add_special, int max_length, int want_tokens, oc_encoding *out, oc_error *err) {
  memset(out, 0, sizeof *out);
  ivec a = {0}, b = {0};
  svec ta = {0}, tb = {0};
  svec *pta = want_tokens ? &ta : NULL, *ptb = want_tokens ? &tb : NULL;
  int rc = -1, pair = text_pair != NULL;
  layout_part *parts = NULL;
  err->msg[0] = 0;
  if (encode_one(t, text, len, &a, pta, err) || (pair && encode_one(t, text_pair, pair_len, &b, ptb, err))) goto done;
  if (max_length > 0) {
    truncate_lengths(t, pair, add_special, max_length, &a.n, &b.n);
    svec_truncate(&ta, a.n);
    svec_truncate(&tb, b.n);
  }
  int max_parts = 6; /* RoBERTa: <s> A </s> </s> B </s> */
  for (int i = 0; i < t->n_post; i++) max_parts += t->post[i].n_single + t->post[i].n_pair;
  if (!(parts = malloc(sizeof *parts * (size_t)max_parts))) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  int np;
  post_layout(t, pair, add_special, a.n, b.n, parts, &np);
  rc = lay_out(t, parts, np, &a, &b, &ta, &tb, want_tokens, out, err);
done:
  free(parts);
  free(a.v);
  free(b.v);
  svec_free(&ta);
  svec_free(&tb);
  if (rc && !err->msg[0]) oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  return rc ? -1 : 0;
}

int oc_tokenizer_encode_n(const oc_tokenizer *t, const char *text, size_t len, const char *text_pair, size_t pair_len,
                          int add_special, int max_length, oc_encoding *out, oc_error *err) {
  return encode_impl(t, text, len, text_pair, pair_len, add_special, max_length, 1, out, err);
}

int oc_tokenizer_encode_ids(const oc_tokenizer *t, const char *text, size_t len, const char *text_pair, size_t pair_len,
                            int add_special, int max_length, oc_encoding *out, oc_error *err) {
  return encode_impl(t, text, len, text_pair, pair_len, add_special, max_length, 0, out, err);
}

void oc_encoding_free(oc_encoding *e) {
  free(e->tok_blob);
  free(e->tokens);
  free(e->ids);
  free(e->type_ids);
  memset(e, 0, sizeof *e);
}

/* ------------------------------------------------------------------ decode */
static int byte_token(const char *s, unsigned *b) {
  if (strlen(s) != 6 || strncmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
  char h[3] = {s[3], s[4], 0};
  char *e;
  unsigned long v = strtoul(h, &e, 16);
  if (*e) return 0;
  *b = (unsigned)v;
  return 1;
}

/* transformers' clean_up_tokenization, as the WordPiece decoder applies it per token */
static char *cleanup_tokenization(const char *s, size_t n, size_t *out_len) {
  static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " do not", " 's", " 've", " 're"};
  static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", " don't", "'s", "'ve", "'re"};
  char *cur = malloc(n + 1);
  if (!cur) return NULL;
  memcpy(cur, s, n);
  cur[n] = 0;
  size_t cl = n;
  for (size_t k = 0; k < sizeof from / sizeof *from; k++) {
    char *nx;
    size_t nl;
    if (oc_str_replace(cur, cl, from[k], to[k], SIZE_MAX, &nx, &nl)) { free(cur); return NULL; } /* (never longer) */
    free(cur);
    cur = nx;
    cl = nl;
  }
  *out_len = cl;
  return cur;
}

/* One decoder over the token strings: 0, -1 (out of memory) or OC_TEXT_TOO_LONG (its output
 * would pass max_out bytes) */
static int apply_decoder(const step *st, svec *in, svec *out, size_t max_out) {
  int rc = 0;
  switch (st->kind) {
  case D_BYTELEVEL: {
    size_t cap = 64, n = 0;
    char *bytes = malloc(cap);
    if (!bytes) return -1;
    for (int i = 0; i < in->n; i++) {
      const char *s = SV(in, i);
      size_t sl = SVL(in, i), start = n;
      int ok = 1;
      for (size_t k = 0; k < sl;) {
        uint32_t cp;
        int l = oc_utf8_decode(s + k, sl - k, &cp);
        if (n + 8 > cap) { cap *= 2; char *nb = realloc(bytes, cap); if (!nb) { free(bytes); return -1; } bytes = nb; }
        if (cp < 324 && cp_to_byte[cp] >= 0) bytes[n++] = (char)cp_to_byte[cp];
        else { ok = 0; break; }
        k += (size_t)l;
      }
      if (!ok) { /* a token outside the byte alphabet keeps its own bytes */
        n = start;
        if (n + sl + 8 > cap) { cap = n + sl + 64; char *nb = realloc(bytes, cap); if (!nb) { free(bytes); return -1; } bytes = nb; }
        memcpy(bytes + n, s, sl);
        n += sl;
      }
    }
    size_t ol;
    char *lossy = oc_utf8_lossy(bytes, n, &ol);
    free(bytes);
    if (!lossy) return -1;
    rc = svec_push_n(out, lossy, ol);
    free(lossy);
    break;
  }
  case D_REPLACE:
    for (int i = 0; i < in->n && !rc; i++) {
      char *r;
      size_t rl;
      size_t out_text = out->used - (size_t)out->n; /* the strings' bytes without their NULs */
      int src = out_text > max_out ? OC_TEXT_TOO_LONG : oc_str_replace(SV(in, i), SVL(in, i), st->s1, st->s2, max_out - out_text, &r, &rl);
      if (src) return src;
      rc = svec_push_n(out, r, rl);
      free(r);
    }
    break;
  case D_BYTEFALLBACK: {
    char run[4096];
    size_t rn = 0;
    for (int i = 0; i <= in->n && !rc; i++) {
      unsigned b;
      if (i < in->n && SVL(in, i) == 6 && byte_token(SV(in, i), &b) && rn < sizeof run) { run[rn++] = (char)b; continue; }
      if (rn) {
        if (oc_utf8_valid(run, rn)) rc = svec_push_n(out, run, rn);
        else {
          char *rep = malloc(rn * 3 + 1);
          if (!rep) return -1;
          for (size_t k = 0; k < rn; k++) memcpy(rep + 3 * k, "\xEF\xBF\xBD", 3);
          rc = svec_push_n(out, rep, rn * 3);
          free(rep);
        }
        rn = 0;
      }
      if (i < in->n && !rc) {
        if (byte_token(SV(in, i), &b)) { run[rn++] = (char)b; continue; }
        rc = svec_push_n(out, SV(in, i), SVL(in, i));
      }
    }
    break;
  }
  case D_FUSE: {
    size_t tot = 0;
    for (int i = 0; i < in->n; i++) tot += SVL(in, i);
    char *j = malloc(tot + 1);
    if (!j) return -1;
    size_t k = 0;
    for (int i = 0; i < in->n; i++) { memcpy(j + k, SV(in, i), SVL(in, i)); k += SVL(in, i); }
    rc = svec_push_n(out, j, k);
    free(j);
    break;
  }
  case D_STRIP:
    for (int i = 0; i < in->n && !rc; i++) {
      const char *s = SV(in, i);
      size_t sl = SVL(in, i), cl = strlen(st->s1), a = 0, e = sl;
      for (int k = 0; k < st->a && cl && a + cl <= e && memcmp(s + a, st->s1, cl) == 0; k++) a += cl;
      for (int k = 0; k < st->b && cl && e >= a + cl && memcmp(s + e - cl, st->s1, cl) == 0; k++) e -= cl;
      rc = svec_push_n(out, s + a, e - a);
    }
    break;
  case D_METASPACE:
    for (int i = 0; i < in->n && !rc; i++) {
      char *r;
      size_t rl;
      if (oc_str_replace(SV(in, i), SVL(in, i), st->s1, " ", SIZE_MAX, &r, &rl)) return -1; /* (never longer) */
      size_t off = (i == 0 && st->a != 2 && rl && r[0] == ' ') ? 1 : 0;
      rc = svec_push_n(out, r + off, rl - off);
      free(r);
    }
    break;
  case D_WORDPIECE:
    for (int i = 0; i < in->n && !rc; i++) {
      const char *s = SV(in, i);
      size_t pl = strlen(st->s1);
      size_t sl = SVL(in, i);
      char *tok = malloc(sl + 2);
      if (!tok) return -1;
      size_t tl;
      if (i > 0 && sl >= pl && memcmp(s, st->s1, pl) == 0) { tl = sl - pl; memcpy(tok, s + pl, tl); }
      else if (i > 0) { tok[0] = ' '; memcpy(tok + 1, s, sl); tl = sl + 1; }
      else { memcpy(tok, s, sl); tl = sl; }
      if (st->a) {
        size_t cl;
        char *c = cleanup_tokenization(tok, tl, &cl);
        free(tok);
        if (!c) return -1;
        tok = c;
        tl = cl;
      }
      rc = svec_push_n(out, tok, tl);
      free(tok);
    }
    break;
  }
  if (!rc && out->used - (size_t)out->n > max_out) rc = OC_TEXT_TOO_LONG;
  return rc;
}

int oc_tokenizer_decode(const oc_tokenizer *t, const int32_t *ids, int n, int skip_special, char **text, size_t *len,
                        oc_error *err) {
  *text = NULL;
  svec cur = {0};
  for (int i = 0; i < n; i++) {
    const char *s = oc_tokenizer_id_to_token(t, ids[i]);
    if (!s) continue; /* unknown ids are skipped, as the Rust library does */
    if (skip_special && oc_tokenizer_is_special(t, ids[i])) continue;
    if (svec_push_n(&cur, s, strlen(s))) { svec_free(&cur); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  }
  const size_t in_text = cur.used - (size_t)cur.n, limit = growth_limit(in_text);
  for (int k = 0; k < t->n_dec; k++) {
    svec nxt = {0};
    int rc = apply_decoder(&t->dec[k], &cur, &nxt, limit);
    svec_free(&cur);
    if (rc) svec_free(&nxt);
    if (rc) return rc == OC_TEXT_TOO_LONG ? growth_error(err, &t->dec[k], "tokens", in_text) : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    cur = nxt;
  }
  size_t tot = 0;
  for (int i = 0; i < cur.n; i++) tot += SVL(&cur, i) + 1;
  char *o = malloc(tot + 1);
  if (!o) { svec_free(&cur); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  size_t k = 0;
  for (int i = 0; i < cur.n; i++) {
    if (!t->n_dec && i) o[k++] = ' ';
    memcpy(o + k, SV(&cur, i), SVL(&cur, i));
    k += SVL(&cur, i);
  }
  o[k] = 0;
  svec_free(&cur);
  *text = o;
  if (len) *len = k;
  return 0;
}

/* ------------------------------------------------------------------ queries */
const char *oc_tokenizer_id_to_token(const oc_tokenizer *t, int32_t id) {
  return (id >= 0 && id < t->n_ids) ? t->id_to_tok[id] : NULL;
}
void oc_tokenizer_set_fast_paths(oc_tokenizer *t, int on) {
  t->fast_paths = on;
  oc_regex_set_fast(t->bytelevel_re, on);
  for (int k = 0; k < t->n_pre; k++) if (t->pre[k].re) oc_regex_set_fast(t->pre[k].re, on);
}

int32_t oc_tokenizer_token_to_id(const oc_tokenizer *t, const char *s) {
  for (int i = 0; i < t->n_added; i++) if (strcmp(t->added[i].content, s) == 0) return t->added[i].id;
  return smap_find(&t->vocab, s, strlen(s));
}
int oc_tokenizer_vocab_size(const oc_tokenizer *t) { return t->n_ids; }
int oc_tokenizer_is_special(const oc_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->n_ids && t->is_special_id[id];
}

/* ------------------------------------------------------------------ loading */
typedef struct {
  const char *path;
  oc_error *err;
} lctx;

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}
static int jbool(const cJSON *o, const char *k, int def) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* The keys of a component whose values must have a type when present and not null: 'b' a JSON
 * boolean, 's' a string, 'c' a string of one character, 'n' a non-negative integer. The Rust
 * library refuses other types; silently defaulting ("strip_right": 5 read as true, "yes" as the
 * default) would tokenize differently from the model's training. */
typedef struct { const char *key; char type; } keytype;
static int check_keys(const char *path, oc_error *err, const cJSON *o, const char *where, const keytype *k, int n) {
  for (int i = 0; i < n; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k[i].key);
    if (!v || cJSON_IsNull(v)) continue;
    int ok;
    uint32_t cp;
    switch (k[i].type) {
      case 'b': ok = cJSON_IsBool(v); break;
      case 's': ok = cJSON_IsString(v); break;
      case 'c': ok = cJSON_IsString(v) && v->valuestring[0] && oc_utf8_decode(v->valuestring, strlen(v->valuestring), &cp) == (int)strlen(v->valuestring); break;
      default: ok = cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= INT32_MAX && v->valuedouble == (double)(int64_t)v->valuedouble; break;
    }
    if (!ok)
      return oc_fail(err, "%s: %s.%s must be %s", path, where, k[i].key,
                     k[i].type == 'b' ? "true or false" : k[i].type == 's' ? "a string" : k[i].type == 'c' ? "a string of one character" : "a non-negative integer");
  }
  return 0;
}
#define CHECK_KEYS(c, o, where, ...)                                                                  \
  do {                                                                                                \
    static const keytype kt_[] = {__VA_ARGS__};                                                       \
    if (check_keys((c)->path, (c)->err, o, where, kt_, (int)(sizeof kt_ / sizeof *kt_))) return -1; \
  } while (0)

/* A token id in a JSON value: an integer in [0, bound). */
static int json_id(const cJSON *v, int64_t bound, int32_t *out) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!(d >= 0) || d >= (double)bound || d != (double)(int64_t)d) return -1;
  *out = (int32_t)d;
  return 0;
}

/* {"String": s} or {"Regex": r} -> compiled regex (literal escaped) */
static oc_regex *load_pattern(const lctx *c, const cJSON *pat, const char *where) {
  const char *s = jstr(pat, "String"), *r = jstr(pat, "Regex");
  oc_regex *re = NULL;
  char msg[256] = "";
  if ((s && !*s) || (r && !*r)) { /* matches everywhere: the Rust library never makes progress on it */
    oc_fail(c->err, "%s: %s.pattern: an empty pattern", c->path, where);
    return NULL;
  }
  if (s) re = oc_regex_literal(s);
  else if (r) re = oc_regex_new(r, msg, sizeof msg);
  if (!re) oc_fail(c->err, "%s: %s.pattern: %s", c->path, where, s || r ? (*msg ? msg : "cannot compile") : "needs \"String\" or \"Regex\"");
  return re;
}

static int behavior_of(const char *b) {
  if (!b) return B_ISOLATED;
  if (!strcmp(b, "Removed")) return B_REMOVED;
  if (!strcmp(b, "Isolated")) return B_ISOLATED;
  if (!strcmp(b, "MergedWithPrevious")) return B_MERGED_PREV;
  if (!strcmp(b, "MergedWithNext")) return B_MERGED_NEXT;
  if (!strcmp(b, "Contiguous")) return B_CONTIGUOUS;
  return -1;
}

/* append a loaded step, named by the file, its JSON path and its type */
static int push_step(const lctx *c, step **arr, int *n, step s, const char *where, const char *type) {
  size_t nl = strlen(c->path) + strlen(where) + strlen(type) + 8;
  step *na = realloc(*arr, sizeof *na * (size_t)(*n + 1));
  if (na) *arr = na;
  if (!na || !(s.name = malloc(nl))) {
    oc_regex_free(s.re);
    free(s.s1);
    free(s.s2);
    return oc_fail_code(c->err, OC_ERR_NOMEM, "out of memory");
  }
  snprintf(s.name, nl, "%s: %s (%s)", c->path, where, type);
  na[(*n)++] = s;
  return 0;
}

typedef int (*step_loader)(const lctx *c, const cJSON *o, oc_tokenizer *t, const char *where);

/* The shared head of every component loader: absent/null is "none" (0), a component needs a
 * "type" (1, *ty set), and a Sequence loads each entry of its array `seq_key` in order (0). */
static int component_head(const lctx *c, const cJSON *o, oc_tokenizer *t, const char *where, const char *seq_key,
                          step_loader self, const char **ty) {
  if (!o || cJSON_IsNull(o)) return 0;
  *ty = jstr(o, "type");
  if (!*ty) return oc_fail(c->err, "%s: %s: missing \"type\"", c->path, where);
  if (strcmp(*ty, "Sequence")) return 1;
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, seq_key);
  if (!cJSON_IsArray(arr)) return oc_fail(c->err, "%s: %s.%s: not an array", c->path, where, seq_key);
  char sub[256];
  int i = 0;
  for (const cJSON *e = arr->child; e; e = e->next, i++) {
    snprintf(sub, sizeof sub, "%s.%s[%d]", where, seq_key, i);
    if (self(c, e, t, sub)) return -1;
  }
  return 0;
}

static int load_normalizer(const lctx *c, const cJSON *o, oc_tokenizer *t, const char *where) {
  const char *ty = NULL;
  int head = component_head(c, o, t, where, "normalizers", load_normalizer, &ty);
  if (head <= 0) return head;
  step s = {0};
  if (!strcmp(ty, "NFC")) s.kind = N_NFC;
  else if (!strcmp(ty, "NFD")) s.kind = N_NFD;
  else if (!strcmp(ty, "NFKC")) s.kind = N_NFKC;
  else if (!strcmp(ty, "NFKD")) s.kind = N_NFKD;
  else if (!strcmp(ty, "Lowercase")) s.kind = N_LOWERCASE;
  else if (!strcmp(ty, "Strip")) {
    CHECK_KEYS(c, o, where, {"strip_left", 'b'}, {"strip_right", 'b'});
    s.kind = N_STRIP;
    s.a = jbool(o, "strip_left", 1);
    s.b = jbool(o, "strip_right", 1);
  } else if (!strcmp(ty, "Prepend")) {
    CHECK_KEYS(c, o, where, {"prepend", 's'});
    s.kind = N_PREPEND;
    const char *p = jstr(o, "prepend");
    if (!p) return oc_fail(c->err, "%s: %s.prepend: missing", c->path, where);
    s.s1 = strdup(p);
  } else if (!strcmp(ty, "Replace")) {
    CHECK_KEYS(c, o, where, {"content", 's'});
    s.kind = N_REPLACE;
    if (!(s.re = load_pattern(c, cJSON_GetObjectItemCaseSensitive(o, "pattern"), where))) return -1;
    const char *ct = jstr(o, "content");
    s.s1 = strdup(ct ? ct : "");
  } else return oc_fail_code(c->err, OC_ERR_UNSUPPORTED, "%s: %s: unsupported normalizer type \"%s\"", c->path, where, ty);
  return push_step(c, &t->norm, &t->n_norm, s, where, ty);
}

/* Metaspace's prepend_scheme (always 0, first 1, never 2), or the older add_prefix_space; -1 for
 * another name */
static int prepend_scheme(const cJSON *o) {
  const char *p = jstr(o, "prepend_scheme");
  if (p) return !strcmp(p, "always") ? 0 : !strcmp(p, "first") ? 1 : !strcmp(p, "never") ? 2 : -1;
  return jbool(o, "add_prefix_space", 1) ? 0 : 2;
}

static int load_pretok(const lctx *c, const cJSON *o, oc_tokenizer *t, const char *where) {
  const char *ty = NULL;
  int head = component_head(c, o, t, where, "pretokenizers", load_pretok, &ty);
  if (head <= 0) return head;
  step s = {0};
  if (!strcmp(ty, "ByteLevel")) {
    CHECK_KEYS(c, o, where, {"add_prefix_space", 'b'}, {"use_regex", 'b'}, {"trim_offsets", 'b'});
    s.kind = P_BYTELEVEL;
    s.a = jbool(o, "add_prefix_space", 1);
    s.b = jbool(o, "use_regex", 1);
  } else if (!strcmp(ty, "Split")) {
    CHECK_KEYS(c, o, where, {"behavior", 's'}, {"invert", 'b'});
    s.kind = P_SPLIT;
    if (!(s.re = load_pattern(c, cJSON_GetObjectItemCaseSensitive(o, "pattern"), where))) return -1;
    s.a = behavior_of(jstr(o, "behavior"));
    if (s.a < 0) { oc_regex_free(s.re); return oc_fail(c->err, "%s: %s.behavior: unknown \"%s\"", c->path, where, jstr(o, "behavior")); }
    s.b = jbool(o, "invert", 0);
  } else if (!strcmp(ty, "Metaspace")) {
    CHECK_KEYS(c, o, where, {"replacement", 'c'}, {"prepend_scheme", 's'}, {"add_prefix_space", 'b'}, {"split", 'b'});
    if (prepend_scheme(o) < 0) return oc_fail(c->err, "%s: %s.prepend_scheme must be always, first or never", c->path, where);
    s.kind = P_METASPACE;
    const char *r = jstr(o, "replacement");
    s.s1 = strdup(r ? r : "\xE2\x96\x81");
    s.a = prepend_scheme(o);
    s.b = jbool(o, "split", 1);
    if (!s.s1 || !(s.re = oc_regex_literal(s.s1))) { free(s.s1); return oc_fail(c->err, "%s: %s.replacement: cannot be used", c->path, where); }
  } else if (!strcmp(ty, "Whitespace")) {
    s.kind = P_WHITESPACE;
    char msg[128];
    s.re = oc_regex_new("\\w+|[^\\w\\s]+", msg, sizeof msg);
  } else if (!strcmp(ty, "WhitespaceSplit")) s.kind = P_WHITESPACESPLIT;
  else if (!strcmp(ty, "Digits")) {
    CHECK_KEYS(c, o, where, {"individual_digits", 'b'});
    s.kind = P_DIGITS;
    s.a = jbool(o, "individual_digits", 0);
  } else if (!strcmp(ty, "Punctuation")) {
    CHECK_KEYS(c, o, where, {"behavior", 's'});
    s.kind = P_PUNCTUATION;
    s.a = behavior_of(jstr(o, "behavior"));
    if (s.a < 0) return oc_fail(c->err, "%s: %s.behavior: unknown", c->path, where);
  } else return oc_fail_code(c->err, OC_ERR_UNSUPPORTED, "%s: %s: unsupported pre-tokenizer type \"%s\"", c->path, where, ty);
  return push_step(c, &t->pre, &t->n_pre, s, where, ty);
}

static int load_decoder(const lctx *c, const cJSON *o, oc_tokenizer *t, const char *where) {
  const char *ty = NULL;
  int head = component_head(c, o, t, where, "decoders", load_decoder, &ty);
  if (head <= 0) return head;
  step s = {0};
  if (!strcmp(ty, "ByteLevel")) s.kind = D_BYTELEVEL;
  else if (!strcmp(ty, "ByteFallback")) s.kind = D_BYTEFALLBACK;
  else if (!strcmp(ty, "Fuse")) s.kind = D_FUSE;
  else if (!strcmp(ty, "Replace")) {
    CHECK_KEYS(c, o, where, {"content", 's'});
    s.kind = D_REPLACE;
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *ps = jstr(pat, "String"), *ct = jstr(o, "content");
    if (!ps) return oc_fail(c->err, "%s: %s.pattern: only {\"String\": ...} is supported in decoders", c->path, where);
    s.s1 = strdup(ps);
    s.s2 = strdup(ct ? ct : "");
  } else if (!strcmp(ty, "Strip")) {
    CHECK_KEYS(c, o, where, {"content", 'c'}, {"start", 'n'}, {"stop", 'n'});
    s.kind = D_STRIP;
    const char *ct = jstr(o, "content");
    s.s1 = strdup(ct ? ct : " ");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "start"), *b = cJSON_GetObjectItemCaseSensitive(o, "stop");
    s.a = cJSON_IsNumber(a) ? a->valueint : 0;
    s.b = cJSON_IsNumber(b) ? b->valueint : 0;
  } else if (!strcmp(ty, "Metaspace")) {
    CHECK_KEYS(c, o, where, {"replacement", 'c'}, {"prepend_scheme", 's'}, {"add_prefix_space", 'b'});
    if (prepend_scheme(o) < 0) return oc_fail(c->err, "%s: %s.prepend_scheme must be always, first or never", c->path, where);
    s.kind = D_METASPACE;
    const char *r = jstr(o, "replacement");
    s.s1 = strdup(r ? r : "\xE2\x96\x81");
    s.a = prepend_scheme(o);
  } else if (!strcmp(ty, "WordPiece")) {
    CHECK_KEYS(c, o, where, {"prefix", 's'}, {"cleanup", 'b'});
    s.kind = D_WORDPIECE;
    const char *p = jstr(o, "prefix");
    s.s1 = strdup(p ? p : "##");
    s.a = jbool(o, "cleanup", 1);
  } else return oc_fail_code(c->err, OC_ERR_UNSUPPORTED, "%s: %s: unsupported decoder type \"%s\"", c->path, where, ty);
  return push_step(c, &t->dec, &t->n_dec, s, where, ty);
}

/* Special-token ids a template may add to one encoding (real ones add 1-4). */
#define MAX_TEMPLATE_IDS 1024

static int load_template(const lctx *c, const oc_tokenizer *t, const cJSON *arr, const cJSON *specials, tmpl_item **out, int *n,
                         const char *where) {
  if (!cJSON_IsArray(arr)) return oc_fail(c->err, "%s: %s: not an array", c->path, where);
  int cnt = cJSON_GetArraySize(arr), i = 0, total = 0;
  *out = calloc((size_t)(cnt ? cnt : 1), sizeof **out);
  if (!*out) return oc_fail_code(c->err, OC_ERR_NOMEM, "out of memory");
  *n = cnt;
  for (const cJSON *e = arr->child; e; e = e->next, i++) {
    tmpl_item *it = &(*out)[i];
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken"), *sq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
    const cJSON *o = sp ? sp : sq;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type_id");
    const char *id = jstr(o, "id");
    if (!o || !id) return oc_fail(c->err, "%s: %s[%d]: needs SpecialToken or Sequence with an id", c->path, where, i);
    it->type_id = cJSON_IsNumber(ty) ? ty->valueint : 0;
    if (sq) { it->seq = strcmp(id, "B") == 0; continue; }
    it->is_special = 1;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(specials, id);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids");
    if (!cJSON_IsArray(ids)) return oc_fail(c->err, "%s: %s[%d]: special token \"%s\" is not in special_tokens", c->path, where, i, id);
    int ni = cJSON_GetArraySize(ids);
    if ((total += ni) > MAX_TEMPLATE_IDS)
      return oc_fail(c->err, "%s: %s: the template adds more than %d special-token ids", c->path, where, MAX_TEMPLATE_IDS);
    it->ids = calloc((size_t)(ni ? ni : 1), sizeof *it->ids);
    if (!it->ids) return oc_fail_code(c->err, OC_ERR_NOMEM, "out of memory");
    it->n_ids = ni;
    int k = 0;
    for (const cJSON *x = ids->child; x; x = x->next, k++)
      if (json_id(x, t->n_ids, &it->ids[k]))
        return oc_fail(c->err, "%s: %s[%d]: special token \"%.80s\": ids[%d] is not a token id (0 to %d)", c->path, where, i, id, k, t->n_ids - 1);
  }
  return 0;
}

static void free_post_step(post_step *p) {
  for (int k = 0; k < p->n_single; k++) free(p->single[k].ids);
  for (int k = 0; k < p->n_pair; k++) free(p->pair[k].ids);
  free(p->single);
  free(p->pair);
}

static int load_post(const lctx *c, const cJSON *o, oc_tokenizer *t, const char *where) {
  const char *ty = NULL;
  int head = component_head(c, o, t, where, "processors", load_post, &ty);
  if (head <= 0) return head;
  post_step p = {0};
  char sub[256];
  if (!strcmp(ty, "ByteLevel")) p.kind = PP_BYTELEVEL;
  else if (!strcmp(ty, "TemplateProcessing")) {
    p.kind = PP_TEMPLATE;
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    snprintf(sub, sizeof sub, "%s.single", where);
    if (load_template(c, t, cJSON_GetObjectItemCaseSensitive(o, "single"), sp, &p.single, &p.n_single, sub)) { free_post_step(&p); return -1; }
    snprintf(sub, sizeof sub, "%s.pair", where);
    if (load_template(c, t, cJSON_GetObjectItemCaseSensitive(o, "pair"), sp, &p.pair, &p.n_pair, sub)) { free_post_step(&p); return -1; }
  } else if (!strcmp(ty, "BertProcessing") || !strcmp(ty, "RobertaProcessing")) {
    p.kind = ty[0] == 'B' ? PP_BERT : PP_ROBERTA;
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(o, "cls"), *sep = cJSON_GetObjectItemCaseSensitive(o, "sep");
    if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) || cJSON_GetArraySize(cls) != 2 || cJSON_GetArraySize(sep) != 2 ||
        json_id(cJSON_GetArrayItem(cls, 1), t->n_ids, &p.cls_id) || json_id(cJSON_GetArrayItem(sep, 1), t->n_ids, &p.sep_id))
      return oc_fail(c->err, "%s: %s: cls and sep must be [token, id] with a token id (0 to %d)", c->path, where, t->n_ids - 1);
  } else return oc_fail_code(c->err, OC_ERR_UNSUPPORTED, "%s: %s: unsupported post-processor type \"%s\"", c->path, where, ty);
  post_step *np = realloc(t->post, sizeof *np * (size_t)(t->n_post + 1));
  if (!np) { free_post_step(&p); return oc_fail_code(c->err, OC_ERR_NOMEM, "out of memory"); }
  t->post = np;
  t->post[t->n_post++] = p;
  return 0;
}

/* Unused ids a vocabulary may leave between its entries' ids. */
#define ID_GAPS 65536

/* The id tables, sized once for the largest valid id of the vocabulary and the added tokens
 * (ids below bound, entries + ID_GAPS: a file cannot make them much larger than itself; the
 * invalid ids are reported by the loops that read them). */
static int alloc_ids(oc_tokenizer *t, const cJSON *vocab, const cJSON *added, int64_t bound, lctx *c) {
  int32_t id, max_id = -1;
  for (const cJSON *e = vocab->child; e; e = e->next)
    if (json_id(e, bound, &id) == 0 && id > max_id) max_id = id;
  for (const cJSON *e = added ? added->child : NULL; e; e = e->next)
    if (json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), bound, &id) == 0 && id > max_id) max_id = id;
  size_t n = max_id >= 0 ? (size_t)max_id + 1 : 1;
  t->id_to_tok = calloc(n, sizeof *t->id_to_tok);
  t->id_len = calloc(n, sizeof *t->id_len);
  t->is_special_id = calloc(n, 1);
  if (!t->id_to_tok || !t->id_len || !t->is_special_id) return oc_fail_code(c->err, OC_ERR_NOMEM, "%s: out of memory", c->path);
  t->cap_ids = (int)n;
  return 0;
}

static int set_id(oc_tokenizer *t, int32_t id, const char *s, lctx *c) {
  if (id >= t->n_ids) t->n_ids = id + 1;
  free(t->id_to_tok[id]);
  t->id_to_tok[id] = strdup(s);
  t->id_len[id] = (uint32_t)strlen(s);
  return t->id_to_tok[id] ? 0 : oc_fail_code(c->err, OC_ERR_NOMEM, "out of memory");
}

void oc_tokenizer_free(oc_tokenizer *t) {
  if (!t) return;
  if (t->cache) {
    for (uint32_t i = 0; i < CACHE_SLOTS; i++) free(atomic_load(&t->cache[i]));
    free(t->cache);
  }
  pthread_mutex_destroy(&t->cache_mu);
  smap_free(&t->vocab);
  pmap_free(&t->merges);
  for (int i = 0; i < t->n_ids; i++) free(t->id_to_tok[i]);
  free(t->id_to_tok);
  free(t->id_len);
  free(t->is_special_id);
  step *lists[3] = {t->norm, t->pre, t->dec};
  int ns[3] = {t->n_norm, t->n_pre, t->n_dec};
  for (int l = 0; l < 3; l++) {
    for (int i = 0; i < ns[l]; i++) { oc_regex_free(lists[l][i].re); free(lists[l][i].s1); free(lists[l][i].s2); free(lists[l][i].name); }
    free(lists[l]);
  }
  for (int i = 0; i < t->n_post; i++) free_post_step(&t->post[i]);
  free(t->post);
  for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
  free(t->added);
  free(t->trie);
  oc_regex_free(t->bytelevel_re);
  free(t->cont_prefix);
  free(t->end_suffix);
  free(t);
}

int oc_tokenizer_load_json(const char *json, size_t len, const char *path, oc_tokenizer **out, oc_error *err) {
  *out = NULL;
  init_byte_tables();
  lctx c = {path, err};
  cJSON *root;
  if (oc_json_parse(json, len, path, 1, &root, err)) return -1;
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return oc_fail(err, "%s: malformed JSON: not an object", path);
  }
  oc_tokenizer *t = calloc(1, sizeof *t);
  if (!t) { cJSON_Delete(root); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  t->unk_id = -1;
  t->wp_max_chars = 100;
  pthread_mutex_init(&t->cache_mu, NULL);
  t->cache = calloc(CACHE_SLOTS, sizeof *t->cache); /* NULL: run without a cache */
  char msg[256];
  int rc = 0;
  t->bytelevel_re = oc_regex_new("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", msg, sizeof msg);
  if (!t->bytelevel_re) { rc = oc_fail(err, "internal: byte-level regex: %s", msg); goto done; }
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  const char *mt = jstr(model, "type");
  if (!cJSON_IsObject(model)) { rc = oc_fail(err, "%s: $.model: missing", path); goto done; }
  if (!mt) mt = cJSON_GetObjectItemCaseSensitive(model, "merges") ? "BPE" : "?";
  if (strcmp(mt, "BPE") && strcmp(mt, "WordPiece")) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: $.model.type: unsupported model \"%s\" (BPE, WordPiece)", path, mt); goto done; }
  t->model_wordpiece = !strcmp(mt, "WordPiece");
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  if (!cJSON_IsObject(vocab)) { rc = oc_fail(err, "%s: $.model.vocab: not an object", path); goto done; }
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  if (added && !cJSON_IsArray(added)) { rc = oc_fail(err, "%s: $.added_tokens: not an array", path); goto done; }
  int n_vocab = cJSON_GetArraySize(vocab), na = cJSON_GetArraySize(added);
  /* ids are bounded by the number of entries that can name one, plus room for gaps (the Rust
   * library accepts vocabularies with unused ids) */
  const int64_t id_bound = (int64_t)n_vocab + na + ID_GAPS;
  if (id_bound > INT32_MAX) { rc = oc_fail(err, "%s: %lld tokens is more than a tokenizer can have", path, (long long)id_bound); goto done; }
  if ((rc = alloc_ids(t, vocab, added, id_bound, &c))) goto done;
  if (smap_init(&t->vocab, (uint32_t)n_vocab)) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (const cJSON *e = vocab->child; e && !rc; e = e->next) {
    int32_t id;
    if (!cJSON_IsNumber(e)) { rc = oc_fail(err, "%s: $.model.vocab[\"%.80s\"]: id is not a number", path, e->string); break; }
    if (json_id(e, id_bound, &id)) {
      rc = oc_fail(err, "%s: $.model.vocab[\"%.80s\"]: id %.15g is out of range: ids are integers below %lld (%d vocabulary entries + %d added tokens + %d)",
                   path, e->string, e->valuedouble, (long long)id_bound, n_vocab, na, ID_GAPS);
      break;
    }
    if (t->id_to_tok[id]) {
      rc = oc_fail(err, "%s: $.model.vocab[\"%.80s\"]: id %d is already the id of \"%.80s\"", path, e->string, (int)id, t->id_to_tok[id]);
      break;
    }
    if (smap_put(&t->vocab, e->string, strlen(e->string), id)) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    else rc = set_id(t, id, e->string, &c);
  }
  if (rc) goto done;
  {
    static const keytype model_keys[] = {{"unk_token", 's'}, {"continuing_subword_prefix", 's'}, {"end_of_word_suffix", 's'}, {"byte_fallback", 'b'},
                                         {"ignore_merges", 'b'}, {"fuse_unk", 'b'}, {"max_input_chars_per_word", 'n'}};
    if ((rc = check_keys(path, err, model, "$.model", model_keys, (int)(sizeof model_keys / sizeof *model_keys)))) goto done;
    /* BPE dropout makes encoding random: a guard must see the text the same way every time */
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dr && !cJSON_IsNull(dr) && !(cJSON_IsNumber(dr) && dr->valuedouble == 0)) {
      rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: $.model.dropout: BPE dropout is not supported (encoding would be random)", path);
      goto done;
    }
  }
  const char *unk = jstr(model, "unk_token");
  if (unk) t->unk_id = smap_find(&t->vocab, unk, strlen(unk));
  const char *cp = jstr(model, "continuing_subword_prefix");
  if (cp && *cp) t->cont_prefix = strdup(cp);
  if (t->model_wordpiece) {
    if (!t->cont_prefix) t->cont_prefix = strdup("##");
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
    if (cJSON_IsNumber(mx)) t->wp_max_chars = mx->valueint;
  } else {
    const char *es = jstr(model, "end_of_word_suffix");
    if (es && *es) { rc = oc_fail_code(err, OC_ERR_UNSUPPORTED, "%s: $.model.end_of_word_suffix: not supported", path); goto done; }
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) { rc = oc_fail(err, "%s: $.model.merges: not an array", path); goto done; }
    if (pmap_init(&t->merges, (uint32_t)cJSON_GetArraySize(merges))) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
    size_t pl = t->cont_prefix ? strlen(t->cont_prefix) : 0;
    int rank = 0;
    char *buf = NULL;
    size_t bcap = 0;
    for (const cJSON *e = merges->child; e; e = e->next, rank++) {
      const char *a, *b;
      size_t al, bl;
      if (cJSON_IsString(e)) {
        const char *sp = strchr(e->valuestring, ' ');
        if (!sp) { rc = oc_fail(err, "%s: $.model.merges[%d]: \"%s\" is not \"left right\"", path, rank, e->valuestring); break; }
        a = e->valuestring; al = (size_t)(sp - a); b = sp + 1; bl = strlen(b);
      } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
        a = e->child->valuestring; al = strlen(a); b = e->child->next->valuestring; bl = strlen(b);
      } else { rc = oc_fail(err, "%s: $.model.merges[%d]: expected \"left right\" or [left, right]", path, rank); break; }
      int ia = smap_find(&t->vocab, a, al), ib = smap_find(&t->vocab, b, bl);
      if (ia < 0 || ib < 0) {
        rc = oc_fail(err, "%s: $.model.merges[%d]: \"%.*s\" is not in the vocabulary", path, rank, ia < 0 ? (int)(al > 80 ? 80 : al) : (int)(bl > 80 ? 80 : bl),
                     ia < 0 ? a : b);
        break;
      }
      size_t skip = (pl && bl >= pl && memcmp(b, t->cont_prefix, pl) == 0) ? pl : 0;
      if (al + bl + 1 > bcap) { bcap = (al + bl + 1) * 2; char *nb = realloc(buf, bcap); if (!nb) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); break; } buf = nb; }
      memcpy(buf, a, al);
      memcpy(buf + al, b + skip, bl - skip);
      int im = smap_find(&t->vocab, buf, al + bl - skip);
      if (im < 0) { rc = oc_fail(err, "%s: $.model.merges[%d]: the merged token \"%.*s\" is not in the vocabulary", path, rank, (int)((al + bl - skip) > 80 ? 80 : al + bl - skip), buf); break; }
      pmap_put(&t->merges, ia, ib, rank, im);
    }
    free(buf);
    if (rc) goto done;
  }
  /* added tokens */
  int i = 0;
  t->added = calloc((size_t)(na ? na : 1), sizeof *t->added);
  if (!t->added) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (const cJSON *e = added ? added->child : NULL; e && !rc; e = e->next, i++) {
    const char *ct = jstr(e, "content");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
    if (!ct || !*ct || !cJSON_IsNumber(id)) { rc = oc_fail(err, "%s: $.added_tokens[%d]: needs a non-empty \"content\" and an \"id\"", path, i); break; }
    int32_t aid;
    if (json_id(id, id_bound, &aid)) {
      rc = oc_fail(err, "%s: $.added_tokens[%d] \"%.80s\": id %.15g is out of range: ids are integers below %lld (%d vocabulary entries + %d added tokens + %d)",
                   path, i, ct, id->valuedouble, (long long)id_bound, n_vocab, na, ID_GAPS);
      break;
    }
    static const keytype added_keys[] = {{"special", 'b'}, {"lstrip", 'b'}, {"rstrip", 'b'}, {"single_word", 'b'}, {"normalized", 'b'}};
    char where[64];
    snprintf(where, sizeof where, "$.added_tokens[%d]", i);
    if ((rc = check_keys(path, err, e, where, added_keys, (int)(sizeof added_keys / sizeof *added_keys)))) break;
    added_tok *a = &t->added[t->n_added++];
    a->content = strdup(ct);
    if (!a->content) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); break; }
    a->id = aid;
    a->special = jbool(e, "special", 0);
    a->lstrip = jbool(e, "lstrip", 0);
    a->rstrip = jbool(e, "rstrip", 0);
    a->single_word = jbool(e, "single_word", 0);
    a->normalized = jbool(e, "normalized", !a->special);
    if ((rc = set_id(t, a->id, ct, &c))) break;
    t->is_special_id[a->id] = (unsigned char)a->special;
  }
  if (rc) goto done;
  t->trie = malloc(sizeof *t->trie * 256);
  if (!t->trie) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  t->cap_trie = 256;
  t->n_trie = 1;
  t->trie[0] = (struct trie_node){-1, -1, -1, 0};
  for (int k = 0; k < t->n_added; k++)
    if (trie_add(t, t->added[k].content, k)) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int b = 0; b < 256; b++) t->trie_root[0][b] = t->trie_root[1][b] = -1;
  for (int k = 0; k < t->n_added; k++) {
    unsigned char b0 = (unsigned char)t->added[k].content[0];
    if (!b0) continue;
    for (int c = t->trie[0].first_child; c >= 0; c = t->trie[c].next_sibling)
      if (t->trie[c].byte == b0) t->trie_root[t->added[k].normalized != 0][b0] = c;
  }
  if ((rc = load_normalizer(&c, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), t, "$.normalizer"))) goto done;
  if ((rc = load_pretok(&c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), t, "$.pre_tokenizer"))) goto done;
  if ((rc = load_post(&c, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), t, "$.post_processor"))) goto done;
  if (!t->model_wordpiece) {
    const step *p = t->pre;
    if (t->n_pre == 2 && p[0].kind == P_SPLIT && p[0].a == B_ISOLATED && !p[0].b && p[1].kind == P_BYTELEVEL && !p[1].a && !p[1].b)
      t->fused_re = p[0].re;
    else if (t->n_pre == 1 && p[0].kind == P_BYTELEVEL && !p[0].a && p[0].b) t->fused_re = t->bytelevel_re;
  }
  t->fast_paths = 1;
  if ((rc = load_decoder(&c, cJSON_GetObjectItemCaseSensitive(root, "decoder"), t, "$.decoder"))) goto done;
done:
  cJSON_Delete(root);
  if (rc) { oc_tokenizer_free(t); return -1; }
  *out = t;
  return 0;
}

int oc_tokenizer_load_file(const char *path, oc_tokenizer **out, oc_error *err) {
  char *txt;
  size_t len;
  if (oc_read_file(path, &txt, &len, err)) return -1;
  int rc = oc_tokenizer_load_json(txt, len, path, out, err);
  free(txt);
  return rc;
}
