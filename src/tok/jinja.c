/* A Jinja2 interpreter for Hugging Face chat templates that renders as transformers'
 * apply_chat_template does: Python jinja2 3.1, ImmutableSandboxedEnvironment, trim_blocks,
 * lstrip_blocks, break/continue, the globals raise_exception and strftime_now. Python semantics
 * where templates depend on them: str()/repr(), json.dumps, str methods, truthiness, dict keys
 * of any hashable type, undefined values, attribute-vs-item lookup. Hostile templates meet the
 * hard limits of include/opencon/template.h, and integer arithmetic is checked for overflow
 * (Python has big integers; a result that does not fit 64 bits is an error, never a wrong number).
 *
 * Layout: arena; values and the syntax tree; the tag lexer (numbers, string escapes); the
 * expression parser; the template splitter (whitespace control) and statement parser; then the
 * renderer: limits and errors, value constructors, dicts, Python str()/repr()/json.dumps,
 * comparisons, attribute and item lookup, str methods, filters, tests, evaluation, statements. */
#include "opencon/template.h"

#include <ctype.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "tok/text.h"

/* ------------------------------------------------------------------ arena */
typedef struct blk {
  struct blk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} blk;

typedef struct {
  blk *head;
  size_t bytes; /* all blocks together: the render's memory limit counts them */
} arena;

enum { BLK_SIZE = 65536 };

static void *ar_alloc(arena *a, size_t n) {
  if (n > ((size_t)1 << 40)) return NULL;
  n = (n + 15) & ~(size_t)15;
  blk *b = a->head;
  if (!b || b->used + n > b->cap) {
    /* a large request gets a block of its own behind the head, so the head keeps serving small ones */
    int own = n > BLK_SIZE / 4 && a->head;
    size_t cap = n > BLK_SIZE ? n : (own ? n : BLK_SIZE);
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->used = 0;
    b->cap = cap;
    a->bytes += sizeof *b + cap;
    if (own) { b->next = a->head->next; a->head->next = b; }
    else { b->next = a->head; a->head = b; }
  }
  void *p = b->data + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

static void ar_free(arena *a) {
  while (a->head) { blk *n = a->head->next; free(a->head); a->head = n; }
  a->bytes = 0;
}

static char *ar_strndup(arena *a, const char *s, size_t n) {
  char *p = ar_alloc(a, n + 1);
  if (p) { memcpy(p, s, n); p[n] = 0; }
  return p;
}

/* Arena arrays: a copy with room for `newcap` elements of `elem` bytes, keeping the first n. */
static void *ar_resize(arena *a, const void *arr, int n, int newcap, size_t elem) {
  void *nv = ar_alloc(a, elem * (size_t)newcap);
  if (nv && n) memcpy(nv, arr, elem * (size_t)n);
  return nv;
}

/* ------------------------------------------------------------------ Python whitespace */
/* str.isspace(): Unicode White_Space and the separators \x1c-\x1f. Jinja strips it (the - markers,
 * spaces inside tags) and so do str.strip and split. */
static int is_ws_py(uint32_t c) { return oc_is_whitespace(c) || (c >= 0x1c && c <= 0x1f); }

/* bytes of the whitespace character starting at s[i] (0 if none) */
static size_t ws_at(const char *s, size_t i, size_t n) {
  if (i >= n) return 0;
  if ((unsigned char)s[i] < 0x80) return is_ws_py((unsigned char)s[i]) ? 1 : 0;
  uint32_t cp;
  int l = oc_utf8_decode(s + i, n - i, &cp);
  return is_ws_py(cp) ? (size_t)l : 0;
}

/* bytes of the whitespace character ending at s[end] (exclusive), not before s[start] (0 if none) */
static size_t ws_before(const char *s, size_t start, size_t end) {
  if (end <= start) return 0;
  size_t q = end - 1;
  while (q > start && ((unsigned char)s[q] & 0xC0) == 0x80 && end - q < 4) q--;
  return ws_at(s, q, end) == end - q ? end - q : 0;
}

/* ------------------------------------------------------------------ values */
enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_MACRO, V_FUNC, V_METHOD };

typedef struct val val;
struct val {
  int t;
  unsigned char is_ns;    /* dict: a namespace() object */
  unsigned char is_tuple; /* list: a Python tuple */
  unsigned char is_iter;  /* list: a generator (select, map, ...): truthy, no len(), not printable */
  unsigned char is_loop;  /* dict: a for loop's `loop` object (jinja2's LoopContext) */
  union {
    long long i; /* bool / int */
    double f;
    struct {
      const char *s; /* str (NUL-terminated) */
      size_t n;      /* its length in bytes */
    };
    struct {
      val **items; /* list items / dict values */
      val **keys;  /* dict keys (any hashable value) */
      int *hidx;   /* dict: open-addressing index (entry + 1, 0 = empty), once it has many keys */
      int len, cap, hcap;
    };
    struct {
      const void *node; /* macro */
      const char *name; /* macro / method / builtin name */
      val *self;        /* bound method; loop.cycle: the loop; loop.changed: its last arguments */
      int fn;           /* builtin id */
    };
    struct {            /* undefined: why, for the error that using it raises (jinja2's hint) */
      int why;          /* U_* */
      const char *what; /* the name or attribute, or the whole message (U_HINT) */
      const val *obj;   /* the object without that attribute or item */
      const val *key;   /* U_ITEM: the missing key */
      int line;         /* U_COND: the inline if's line */
    } u;
  };
};

/* why a value is undefined: an unknown name, an attribute or item the object lacks, an attribute
 * the sandbox refuses, a macro parameter not given, an inline if without else that was false, a
 * message (first of an empty list, ...), or nothing known */
enum { U_PLAIN, U_NAME, U_ATTR, U_ITEM, U_UNSAFE, U_PARAM, U_COND, U_HINT };

/* ------------------------------------------------------------------ syntax tree */
enum {
  E_LIT, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT, E_AND, E_OR, E_BIN, E_CMP,
  E_COND, E_LIST, E_DICT, E_INPUT
};
/* comparison chain operators (E_CMP ops[]) */
enum { C_EQ, C_NE, C_LE, C_GE, C_LT, C_GT, C_IN, C_NOTIN };
enum { S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_BREAK, S_CONTINUE, S_FILTERBLOCK, S_WITH };

typedef struct expr expr;
struct expr {
  int k;
  int op; /* operator char / E_LIST: 1 for a tuple */
  int line, col;
  int h;  /* height of the subtree, bounded by OC_TEMPLATE_MAX_NESTING */
  val *lit;
  const char *name;
  expr *a, *b, *c;
  expr **args;   /* call / filter / test arguments, list items, dict keys, comparison operands */
  const char **kwn;
  expr **kwv;    /* keyword argument values, dict values */
  int *ops;      /* E_CMP: nargs - 1 operators */
  int nargs, nkw;
  int negate;
};

typedef struct stmt stmt;
typedef struct {
  stmt **v;
  int n, cap;
} body;

struct stmt {
  int k;
  int line, col;
  const char *text;
  size_t tlen;
  expr *e;
  /* if: conds[i] -> bodies[i], else_body; with: conds[i] assigned to targets[i] */
  expr **conds;
  body *bodies;
  int nconds;
  body else_body;
  /* for, set, with */
  const char **targets;
  int ntargets;
  expr *filter;  /* for: the loop filter; set block: the filter chain applied to the captured text */
  body b;
  /* set: namespace attribute; macro: name */
  const char *attr;
  /* macro */
  const char **params;
  expr **defaults;
  int nparams;
  int uses_varargs, uses_kwargs; /* the body names varargs / kwargs: extra arguments land there */
};

struct oc_template {
  arena ar;
  body root;
  char *name;
};

/* ------------------------------------------------------------------ errors */
/* "template:line:col: message" (or "template: message" without a position) into err */
static void fail_at(oc_error *err, oc_errcode code, const char *tname, int line, int col, const char *fmt, va_list ap) {
  char msg[700];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (line > 0) oc_fail_code(err, code, "%s:%d:%d: %s", tname, line, col, msg);
  else oc_fail_code(err, code, "%s: %s", tname, msg);
}

/* ------------------------------------------------------------------ tag lexer */
typedef struct tok tok;
typedef struct {
  arena *ar;
  oc_error *err;
  const char *tname;
  jmp_buf jb;
  tok *toks; /* the token buffer of the tag being parsed */
  int ntoks;
  int depth; /* recursion of the parser (brackets, nested blocks) */
  int loops; /* for-loop bodies around the statement being parsed (break / continue need one) */
  int in_for; /* for statements around it, macro definitions included (no assignment to `loop` there) */
  struct stmt *macro; /* the macro whose body is being parsed */
  /* Unknown filter and test names: jinja2 rejects them when it compiles the template, except
   * inside an if statement or an inline if (outside any loop or macro there), where using one is
   * an error only when it runs. They are collected while parsing and checked at the end. */
  int soft;                       /* parsing inside an if statement's condition or bodies */
  struct unknown_name { const struct expr *e; int soft; } *unknown;
  int nunknown, capunknown;
} pctx;

enum { T_EOF, T_NAME, T_INT, T_FLOAT, T_STR, T_OP };
struct tok {
  int k;
  const char *s; /* name / op / decoded string */
  size_t n;
  long long i;
  double f;
  int line, col;
};

typedef struct {
  tok *v;
  int n, pos;
} tokstream;

static void perr_code(pctx *p, oc_errcode code, int line, int col, const char *fmt, ...)
  __attribute__((format(printf, 5, 6), noreturn));
static void perr_code(pctx *p, oc_errcode code, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_at(p->err, code, p->tname, line, col, fmt, ap);
  va_end(ap);
  longjmp(p->jb, 1);
}
#define perr(p, line, col, ...) perr_code(p, OC_ERR_INVALID, line, col, __VA_ARGS__)

static void *palloc(pctx *p, size_t n) {
  void *q = ar_alloc(p->ar, n);
  if (!q) perr_code(p, OC_ERR_NOMEM, 0, 0, "out of memory");
  if (p->ar->bytes > OC_TEMPLATE_MAX_MEMORY)
    perr(p, 0, 0, "template needs more than %zu MiB of memory to parse", OC_TEMPLATE_MAX_MEMORY >> 20);
  return q;
}

static int is_digit_in(int c, int base) {
  if (base == 16) return isxdigit(c);
  return c >= '0' && c < '0' + base;
}

/* digits of `base` with single '_' between them (Jinja's (_?d)+), from s[*i]; returns how many
 * digits were read; the value accumulates into *v (*ovf set when it passes INT64_MAX) */
static int scan_digits(const char *s, size_t n, size_t *i, int base, int lead_underscore, unsigned long long *v, int *ovf) {
  int nd = 0;
  while (*i < n) {
    size_t j = *i;
    if (s[j] == '_' && (nd > 0 || lead_underscore) && j + 1 < n && is_digit_in((unsigned char)s[j + 1], base)) j++;
    if (!is_digit_in((unsigned char)s[j], base)) break;
    int d = isdigit((unsigned char)s[j]) ? s[j] - '0' : tolower((unsigned char)s[j]) - 'a' + 10;
    if (*v > (unsigned long long)(LLONG_MAX - d) / (unsigned)base) *ovf = 1;
    else *v = *v * (unsigned)base + (unsigned)d;
    nd++;
    *i = j + 1;
  }
  return nd;
}

/* a number token as Jinja's lexer reads it: floats (1.5, 1e3, 1_0.5), decimal integers without
 * leading zeros, 0b / 0o / 0x integers, '_' between digits */
static void lex_number(pctx *p, const char *s, size_t n, size_t *pi, int line, int col, tok *t) {
  size_t i = *pi, st = i;
  unsigned long long v = 0;
  int ovf = 0;
  if (s[i] == '0' && i + 1 < n && s[i + 1] && strchr("bBoOxX", s[i + 1])) {
    int base = strchr("bB", s[i + 1]) ? 2 : strchr("oO", s[i + 1]) ? 8 : 16;
    i += 2;
    if (!scan_digits(s, n, &i, base, 1, &v, &ovf)) perr(p, line, col, "malformed number literal");
  } else {
    scan_digits(s, n, &i, 10, 0, &v, &ovf);
    int isf = 0;
    if (i + 1 < n && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
      i++;
      unsigned long long dummy = 0;
      int dov = 0;
      scan_digits(s, n, &i, 10, 0, &dummy, &dov);
      isf = 1;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
      size_t j = i + 1;
      if (j < n && (s[j] == '+' || s[j] == '-')) j++;
      if (j < n && isdigit((unsigned char)s[j])) {
        unsigned long long dummy = 0;
        int dov = 0;
        scan_digits(s, n, &j, 10, 0, &dummy, &dov);
        i = j;
        isf = 1;
      }
    }
    if (isf) {
      char buf[512];
      size_t k = 0;
      for (size_t q = st; q < i && k + 1 < sizeof buf; q++) if (s[q] != '_') buf[k++] = s[q];
      buf[k] = 0;
      if (i - st >= sizeof buf) perr(p, line, col, "number literal too long");
      t->k = T_FLOAT;
      t->f = strtod(buf, NULL);
      *pi = i;
      return;
    }
    if (s[st] == '0' && i > st + 1) {
      for (size_t q = st; q < i; q++)
        if (s[q] != '0' && s[q] != '_') perr(p, line, col, "leading zeros are not allowed in decimal integers");
    }
  }
  if (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_')) perr(p, line, col, "malformed number literal");
  if (ovf) perr(p, line, col, "integer literal %.*s does not fit in 64 bits", (int)(i - st > 40 ? 40 : i - st), s + st);
  t->k = T_INT;
  t->i = (long long)v;
  *pi = i;
}

static int hexval(int c) { return isdigit(c) ? c - '0' : tolower(c) - 'a' + 10; }

/* Python's unicode_escape decoding of a string literal's body (what Jinja's lexer applies):
 * \<newline>, \\ \' \" \a \b \f \n \r \t \v, octal \ooo, \xhh, \uhhhh, \Uhhhhhhhh; other escapes
 * keep their backslash. \N{name} needs the Unicode name table, which this build does not have.
 * o has room for 2 * n + 1 bytes; returns the decoded length. */
static size_t decode_escapes(pctx *p, const char *s, size_t n, char *o, int line, int col) {
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    if (s[i] != '\\') { o[k++] = s[i++]; continue; }
    if (i + 1 >= n) perr(p, line, col, "\\ at end of string");
    unsigned char e = (unsigned char)s[i + 1];
    i += 2;
    uint32_t cp;
    switch (e) {
    case '\n': continue;
    case '\\': case '\'': case '"': o[k++] = (char)e; continue;
    case 'a': o[k++] = '\a'; continue;
    case 'b': o[k++] = '\b'; continue;
    case 'f': o[k++] = '\f'; continue;
    case 'n': o[k++] = '\n'; continue;
    case 'r': o[k++] = '\r'; continue;
    case 't': o[k++] = '\t'; continue;
    case 'v': o[k++] = '\v'; continue;
    case 'x': case 'u': case 'U': {
      int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
      cp = 0;
      for (int d = 0; d < nd; d++, i++) {
        if (i >= n || !isxdigit((unsigned char)s[i]))
          perr(p, line, col, "truncated \\%c escape in string literal (needs %d hex digits)", e, nd);
        cp = cp * 16 + (uint32_t)hexval((unsigned char)s[i]);
      }
      if (cp > 0x10FFFF) perr(p, line, col, "illegal Unicode character \\U%08X in string literal", (unsigned)cp);
      if (cp >= 0xD800 && cp <= 0xDFFF) perr(p, line, col, "surrogate \\u%04X in string literal is not text", (unsigned)cp);
      k += (size_t)oc_utf8_encode(cp, o + k);
      continue;
    }
    case 'N':
      perr_code(p, OC_ERR_UNSUPPORTED, line, col,
                "\\N{...} named Unicode escapes are not supported (write the character or a \\u escape)");
    default:
      if (e >= '0' && e <= '7') {
        cp = e - '0';
        for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++) cp = cp * 8 + (uint32_t)(s[i++] - '0');
        k += (size_t)oc_utf8_encode(cp, o + k);
      } else if (e >= 0x80) {
        /* a backslash before a non-ASCII character: Jinja first writes the character as
         * backslashreplace does (\xe9), so the backslash escapes itself and that text stays */
        int l = oc_utf8_decode(s + i - 1, n - (i - 1), &cp);
        i += (size_t)l - 1;
        k += (size_t)snprintf(o + k, 12, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", (unsigned)cp);
      } else {
        o[k++] = '\\';
        o[k++] = (char)e;
      }
    }
  }
  o[k] = 0;
  return k;
}

/* tokenize the inside of a tag into the parser's token buffer (reused from tag to tag: each
 * tag's tokens are parsed before the next tag is read; what nodes keep is copied out) */
static void lex_tag(pctx *p, const char *s, size_t n, int line, int col, tokstream *ts) {
  ts->n = 0;
  ts->pos = 0;
  size_t i = 0;
  while (1) {
    for (size_t w; (w = ws_at(s, i, n));) { if (s[i] == '\n') { line++; col = 1; } else col++; i += w; }
    if (ts->n + 1 >= p->ntoks) {
      int nc = p->ntoks ? p->ntoks * 2 : 64;
      p->toks = ar_resize(p->ar, p->toks, ts->n, nc, sizeof *p->toks);
      if (!p->toks) perr_code(p, OC_ERR_NOMEM, line, col, "out of memory");
      p->ntoks = nc;
    }
    ts->v = p->toks;
    tok *t = &ts->v[ts->n];
    memset(t, 0, sizeof *t);
    t->line = line;
    t->col = col;
    if (i >= n) { t->k = T_EOF; ts->n++; return; }
    char c = s[i];
    size_t st = i;
    if (isalpha((unsigned char)c) || c == '_') {
      while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_')) i++;
      t->k = T_NAME;
      t->s = ar_strndup(p->ar, s + st, i - st);
      t->n = i - st;
    } else if (isdigit((unsigned char)c)) {
      lex_number(p, s, n, &i, line, col, t);
    } else if (c == '\'' || c == '"') {
      i++;
      size_t b = i;
      while (i < n && s[i] != c) i += s[i] == '\\' && i + 1 < n ? 2 : 1;
      if (i >= n) perr(p, t->line, t->col, "unterminated string literal");
      char *o = palloc(p, 2 * (i - b) + 1);
      t->k = T_STR;
      t->n = decode_escapes(p, s + b, i - b, o, line, col);
      t->s = o;
      i++;
    } else {
      static const char *ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]",
                                  "{", "}", ",", ".", ":", "|", "=", NULL};
      int found = 0;
      for (int k = 0; ops[k]; k++) {
        size_t ol = strlen(ops[k]);
        if (i + ol <= n && memcmp(s + i, ops[k], ol) == 0) { t->k = T_OP; t->s = ops[k]; t->n = ol; i += ol; found = 1; break; }
      }
      if (!found) perr(p, line, col, "unexpected character '%c'", c);
    }
    if (t->k == T_STR)
      for (size_t q = st; q < i; q++) { if (s[q] == '\n') { line++; col = 1; } else col++; }
    else col += (int)(i - st);
    ts->n++;
  }
}

static tok *peek(tokstream *ts) { return &ts->v[ts->pos]; }
static tok *peek2(tokstream *ts) { return ts->v[ts->pos].k == T_EOF ? &ts->v[ts->pos] : &ts->v[ts->pos + 1]; }
static tok *next_tok(tokstream *ts) { tok *t = &ts->v[ts->pos]; if (t->k != T_EOF) ts->pos++; return t; }
static int is_op(const tok *t, const char *op) { return t->k == T_OP && strcmp(t->s, op) == 0; }
static int is_name(const tok *t, const char *nm) { return t->k == T_NAME && strcmp(t->s, nm) == 0; }
static int accept_op(tokstream *ts, const char *op) { if (is_op(peek(ts), op)) { ts->pos++; return 1; } return 0; }
static int accept_name(tokstream *ts, const char *nm) { if (is_name(peek(ts), nm)) { ts->pos++; return 1; } return 0; }
static void expect_op(pctx *p, tokstream *ts, const char *op) {
  tok *t = peek(ts);
  if (!accept_op(ts, op)) perr(p, t->line, t->col, "expected '%s'", op);
}
static const char *expect_name(pctx *p, tokstream *ts) {
  tok *t = next_tok(ts);
  if (t->k != T_NAME) perr(p, t->line, t->col, "expected a name");
  return t->s;
}
/* a name a statement assigns (set, for): jinja2 refuses `loop` anywhere inside a for statement,
 * its own target included, when it compiles the template (TemplateAssertionError) */
static const char *expect_target(pctx *p, tokstream *ts, int in_for) {
  tok *t = peek(ts);
  const char *n = expect_name(p, ts);
  if (in_for && !strcmp(n, "loop")) perr(p, t->line, t->col, "Can't assign to special loop variable in for-loop target");
  return n;
}

/* ------------------------------------------------------------------ filter and test names */
/* jinja2 rejects unknown filter and test names when it compiles a template */
static const char *const test_names[] = {
  "odd", "even", "divisibleby", "defined", "undefined", "filter", "test", "none", "boolean", "false", "true", "integer", "float",
  "lower", "upper", "string", "mapping", "number", "sequence", "iterable", "callable", "sameas", "escaped", "in", "==", "eq",
  "equalto", "!=", "ne", ">", "gt", "greaterthan", "ge", ">=", "<", "lt", "lessthan", "<=", "le", NULL};
static const char *const filter_names[] = {
  "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "forceescape", "indent", "int",
  "join", "last", "length", "list", "lower", "items", "map", "min", "max", "reject", "rejectattr", "replace", "reverse", "round",
  "safe", "select", "selectattr", "sort", "string", "sum", "title", "trim", "unique", "upper", "wordcount", "tojson", NULL};

/* filters jinja2 has that this interpreter does not: an error when used, not when parsed */
static const char *const unsupported_filters[] = {"batch", "center", "filesizeformat", "format", "groupby", "pprint", "random",
                                                  "slice", "striptags", "truncate", "urlencode", "urlize", "wordwrap", "xmlattr", NULL};

static int in_names(const char *const *names, const char *n) {
  for (int i = 0; names[i]; i++) if (!strcmp(names[i], n)) return 1;
  return 0;
}

/* ------------------------------------------------------------------ expression parser */
static expr *mk(pctx *p, int k, const tok *at) {
  expr *e = palloc(p, sizeof *e);
  e->k = k;
  e->line = at->line;
  e->col = at->col;
  e->h = 1;
  return e;
}

static val *mkval(arena *a, int t) {
  val *v = ar_alloc(a, sizeof *v);
  if (v) v->t = t;
  return v;
}

static val *plit(pctx *p, int t) {
  val *v = mkval(p->ar, t);
  if (!v) perr_code(p, OC_ERR_NOMEM, 0, 0, "out of memory");
  return v;
}

/* a finished node: its height is one more than its tallest child, bounded so that evaluating
 * it cannot exhaust the stack (a 100k-long filter chain is a parse error, not a crash) */
static expr *fin(pctx *p, expr *e) {
  int h = 0;
  const expr *kids[3] = {e->a, e->b, e->c};
  for (int i = 0; i < 3; i++) if (kids[i] && kids[i]->h > h) h = kids[i]->h;
  for (int i = 0; i < e->nargs; i++) if (e->args[i] && e->args[i]->h > h) h = e->args[i]->h;
  for (int i = 0; i < e->nkw; i++) if (e->kwv[i] && e->kwv[i]->h > h) h = e->kwv[i]->h;
  e->h = h + 1;
  if (e->h > OC_TEMPLATE_MAX_NESTING)
    perr(p, e->line, e->col, "expression nested too deeply (more than %d levels)", OC_TEMPLATE_MAX_NESTING);
  return e;
}

static void enter_parse(pctx *p, const tok *t) {
  if (++p->depth > OC_TEMPLATE_MAX_NESTING)
    perr(p, t->line, t->col, "template nested too deeply (more than %d levels)", OC_TEMPLATE_MAX_NESTING);
}

static expr *parse_expr(pctx *p, tokstream *ts);
static expr *parse_or(pctx *p, tokstream *ts);
static expr *parse_unary(pctx *p, tokstream *ts, int with_filter);

/* grow an arena array of pointers held in *arr with capacity *cap (elements of size elem) */
static void grow_ptrs(pctx *p, void **arr, int n, int *cap, size_t elem) {
  if (n < *cap) return;
  int nc = *cap ? *cap * 2 : 8;
  *arr = ar_resize(p->ar, *arr, n, nc, elem);
  if (!*arr) perr_code(p, OC_ERR_NOMEM, 0, 0, "out of memory");
  *cap = nc;
}

static void parse_call_args(pctx *p, tokstream *ts, expr *e) {
  /* after '(' */
  int cap = 0, kcap = 0;
  while (!accept_op(ts, ")")) {
    tok *t = peek(ts);
    if (t->k == T_NAME && is_op(peek2(ts), "=")) {
      ts->pos += 2;
      int vcap = kcap;
      grow_ptrs(p, (void **)&e->kwn, e->nkw, &kcap, sizeof *e->kwn);
      grow_ptrs(p, (void **)&e->kwv, e->nkw, &vcap, sizeof *e->kwv);
      e->kwn[e->nkw] = t->s;
      e->kwv[e->nkw++] = parse_expr(p, ts);
    } else {
      if (e->nkw) perr(p, t->line, t->col, "positional argument after keyword argument");
      grow_ptrs(p, (void **)&e->args, e->nargs, &cap, sizeof *e->args);
      e->args[e->nargs++] = parse_expr(p, ts);
    }
    if (!accept_op(ts, ",")) { expect_op(p, ts, ")"); break; }
  }
}

static expr *lit_expr(pctx *p, const tok *t, int vt) {
  expr *e = mk(p, E_LIT, t);
  e->lit = plit(p, vt);
  return e;
}

static expr *parse_primary(pctx *p, tokstream *ts) {
  tok *t = next_tok(ts);
  expr *e;
  switch (t->k) {
  case T_INT: e = lit_expr(p, t, V_INT); e->lit->i = t->i; return e;
  case T_FLOAT: e = lit_expr(p, t, V_FLOAT); e->lit->f = t->f; return e;
  case T_STR: {
    e = lit_expr(p, t, V_STR);
    e->lit->s = t->s;
    e->lit->n = t->n;
    /* adjacent string literals concatenate */
    while (peek(ts)->k == T_STR) {
      tok *u = next_tok(ts);
      char *c = palloc(p, e->lit->n + u->n + 1);
      memcpy(c, e->lit->s, e->lit->n);
      memcpy(c + e->lit->n, u->s, u->n);
      e->lit->s = c;
      e->lit->n += u->n;
    }
    return e;
  }
  case T_NAME:
    if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) { e = lit_expr(p, t, V_BOOL); e->lit->i = 1; return e; }
    if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) return lit_expr(p, t, V_BOOL);
    if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) return lit_expr(p, t, V_NONE);
    e = mk(p, E_NAME, t);
    e->name = t->s;
    if (p->macro && !strcmp(t->s, "varargs")) p->macro->uses_varargs = 1;
    if (p->macro && !strcmp(t->s, "kwargs")) p->macro->uses_kwargs = 1;
    return e;
  case T_OP:
    if (is_op(t, "(")) {
      enter_parse(p, t);
      if (accept_op(ts, ")")) { e = mk(p, E_LIST, t); e->op = 1; p->depth--; return e; }
      expr *first = parse_expr(p, ts);
      if (accept_op(ts, ",")) { /* tuple */
        e = mk(p, E_LIST, t);
        e->op = 1;
        int cap = 0;
        grow_ptrs(p, (void **)&e->args, e->nargs, &cap, sizeof *e->args);
        e->args[e->nargs++] = first;
        while (!accept_op(ts, ")")) {
          grow_ptrs(p, (void **)&e->args, e->nargs, &cap, sizeof *e->args);
          e->args[e->nargs++] = parse_expr(p, ts);
          if (!accept_op(ts, ",")) { expect_op(p, ts, ")"); break; }
        }
        p->depth--;
        return fin(p, e);
      }
      expect_op(p, ts, ")");
      p->depth--;
      return first;
    }
    if (is_op(t, "[")) {
      enter_parse(p, t);
      e = mk(p, E_LIST, t);
      int cap = 0;
      while (!accept_op(ts, "]")) {
        grow_ptrs(p, (void **)&e->args, e->nargs, &cap, sizeof *e->args);
        e->args[e->nargs++] = parse_expr(p, ts);
        if (!accept_op(ts, ",")) { expect_op(p, ts, "]"); break; }
      }
      p->depth--;
      return fin(p, e);
    }
    if (is_op(t, "{")) {
      enter_parse(p, t);
      e = mk(p, E_DICT, t);
      int cap = 0, vcap = 0;
      while (!accept_op(ts, "}")) {
        grow_ptrs(p, (void **)&e->args, e->nargs, &cap, sizeof *e->args);
        grow_ptrs(p, (void **)&e->kwv, e->nargs, &vcap, sizeof *e->kwv);
        e->args[e->nargs] = parse_expr(p, ts);
        expect_op(p, ts, ":");
        e->kwv[e->nargs++] = parse_expr(p, ts);
        if (!accept_op(ts, ",")) { expect_op(p, ts, "}"); break; }
      }
      e->nkw = e->nargs;
      p->depth--;
      return fin(p, e);
    }
    break;
  }
  if (t->k == T_EOF) perr(p, t->line, t->col, "unexpected end of expression");
  perr(p, t->line, t->col, "unexpected '%s'", t->k == T_OP || t->k == T_NAME ? t->s : "literal");
}

static expr *parse_postfix(pctx *p, tokstream *ts, expr *e) {
  while (1) {
    tok *t = peek(ts);
    if (accept_op(ts, ".")) {
      expr *a = mk(p, E_ATTR, t);
      a->a = e;
      tok *nt = next_tok(ts);
      if (nt->k == T_NAME) a->name = nt->s;
      else if (nt->k == T_INT) { a->k = E_ITEM; a->b = lit_expr(p, nt, V_INT); a->b->lit->i = nt->i; }
      else perr(p, nt->line, nt->col, "expected an attribute name");
      e = fin(p, a);
    } else if (accept_op(ts, "[")) {
      enter_parse(p, t);
      expr *lo = NULL, *hi = NULL, *step = NULL;
      int slice = 0;
      if (!is_op(peek(ts), ":")) lo = parse_expr(p, ts);
      if (accept_op(ts, ":")) {
        slice = 1;
        if (!is_op(peek(ts), "]") && !is_op(peek(ts), ":")) hi = parse_expr(p, ts);
        if (accept_op(ts, ":") && !is_op(peek(ts), "]")) step = parse_expr(p, ts);
      }
      expect_op(p, ts, "]");
      p->depth--;
      expr *x = mk(p, slice ? E_SLICE : E_ITEM, t);
      x->a = e;
      x->b = lo;
      if (slice) x->c = hi, x->args = palloc(p, sizeof(expr *)), x->args[0] = step, x->nargs = 1;
      e = fin(p, x);
    } else if (accept_op(ts, "(")) {
      enter_parse(p, t);
      expr *c = mk(p, E_CALL, t);
      c->a = e;
      parse_call_args(p, ts, c);
      p->depth--;
      e = fin(p, c);
    } else return e;
  }
}

static void note_unknown(pctx *p, const expr *e) {
  if (p->nunknown == p->capunknown) {
    int nc = p->capunknown ? p->capunknown * 2 : 8;
    p->unknown = ar_resize(p->ar, p->unknown, p->nunknown, nc, sizeof *p->unknown);
    if (!p->unknown) perr_code(p, OC_ERR_NOMEM, 0, 0, "out of memory");
    p->capunknown = nc;
  }
  p->unknown[p->nunknown].e = e;
  p->unknown[p->nunknown++].soft = p->soft > 0;
}

static void check_unknown_names(pctx *p) {
  for (int i = 0; i < p->nunknown; i++)
    if (!p->unknown[i].soft) {
      const expr *e = p->unknown[i].e;
      perr(p, e->line, e->col, "No %s named '%s'.", e->k == E_FILTER ? "filter" : "test", e->name); /* jinja2's words */
    }
}

/* name [(args)] after '|' (or at the start of a filter block) */
static expr *parse_one_filter(pctx *p, tokstream *ts, expr *e, const tok *at) {
  expr *f = mk(p, E_FILTER, at);
  f->a = e;
  f->name = expect_name(p, ts);
  while (accept_op(ts, ".")) { /* dotted filter names: Jinja joins them */
    const char *more = expect_name(p, ts);
    size_t l1 = strlen(f->name), l2 = strlen(more);
    char *nm = palloc(p, l1 + l2 + 2);
    memcpy(nm, f->name, l1);
    nm[l1] = '.';
    memcpy(nm + l1 + 1, more, l2 + 1);
    f->name = nm;
  }
  if (!in_names(filter_names, f->name) && !in_names(unsupported_filters, f->name)) note_unknown(p, f);
  if (accept_op(ts, "(")) { enter_parse(p, at); parse_call_args(p, ts, f); p->depth--; }
  return fin(p, f);
}

static expr *parse_filters(pctx *p, tokstream *ts, expr *e) {
  while (1) {
    tok *t = peek(ts);
    if (accept_op(ts, "|")) {
      e = parse_one_filter(p, ts, e, t);
    } else if (accept_name(ts, "is")) {
      expr *x = mk(p, E_TEST, t);
      x->a = e;
      x->negate = accept_name(ts, "not");
      x->name = expect_name(p, ts);
      if (!in_names(test_names, x->name)) note_unknown(p, x);
      if (accept_op(ts, "(")) { enter_parse(p, t); parse_call_args(p, ts, x); p->depth--; }
      else {
        tok *u = peek(ts);
        /* one bare argument: `is equalto 'x'`, `is sameas false` */
        if (u->k == T_STR || u->k == T_INT || u->k == T_FLOAT || is_op(u, "[") || is_op(u, "{") ||
            (u->k == T_NAME && strcmp(u->s, "and") && strcmp(u->s, "or") && strcmp(u->s, "else") && strcmp(u->s, "if") &&
             strcmp(u->s, "in") && strcmp(u->s, "is") && strcmp(u->s, "not"))) {
          x->args = palloc(p, sizeof(expr *));
          x->args[0] = parse_postfix(p, ts, parse_primary(p, ts));
          x->nargs = 1;
        }
      }
      e = fin(p, x);
    } else if (accept_op(ts, "(")) { /* a call on a filter's result */
      enter_parse(p, t);
      expr *c = mk(p, E_CALL, t);
      c->a = e;
      parse_call_args(p, ts, c);
      p->depth--;
      e = fin(p, c);
    } else return e;
  }
}

/* unary minus binds tighter than filters in Jinja: -x|abs is abs(-x) */
static expr *parse_unary(pctx *p, tokstream *ts, int with_filter) {
  tok *t = peek(ts);
  expr *e;
  if (is_op(t, "-") || is_op(t, "+")) {
    ts->pos++;
    enter_parse(p, t);
    e = mk(p, t->s[0] == '-' ? E_NEG : E_POS, t);
    e->a = parse_unary(p, ts, 0);
    p->depth--;
    e = fin(p, e);
  } else e = parse_postfix(p, ts, parse_primary(p, ts));
  return with_filter ? parse_filters(p, ts, e) : e;
}

static expr *parse_unary_f(pctx *p, tokstream *ts) { return parse_unary(p, ts, 1); }

/* one left-associative level of binary operators: ops[i] becomes operator code codes[i] */
static expr *parse_level(pctx *p, tokstream *ts, expr *(*next)(pctx *, tokstream *), const char *const *ops, const char *codes) {
  expr *e = next(p, ts);
  while (1) {
    tok *t = peek(ts);
    int hit = -1;
    for (int k = 0; ops[k] && hit < 0; k++) if (is_op(t, ops[k])) hit = k;
    if (hit < 0) return e;
    ts->pos++;
    expr *x = mk(p, E_BIN, t);
    x->op = codes[hit];
    x->a = e;
    x->b = next(p, ts);
    e = fin(p, x);
  }
}
static expr *parse_pow(pctx *p, tokstream *ts) {
  static const char *const ops[] = {"**", NULL};
  return parse_level(p, ts, parse_unary_f, ops, "P");
}
static expr *parse_mul(pctx *p, tokstream *ts) {
  static const char *const ops[] = {"*", "//", "/", "%", NULL};
  return parse_level(p, ts, parse_pow, ops, "*F/%");
}
static expr *parse_concat(pctx *p, tokstream *ts) {
  static const char *const ops[] = {"~", NULL};
  return parse_level(p, ts, parse_mul, ops, "~");
}
static expr *parse_add(pctx *p, tokstream *ts) {
  static const char *const ops[] = {"+", "-", NULL};
  return parse_level(p, ts, parse_concat, ops, "+-");
}
/* a < b <= c is a chain, as in Python: (a < b) and (b <= c), each operand evaluated once */
static expr *parse_cmp(pctx *p, tokstream *ts) {
  expr *first = parse_add(p, ts), *c = NULL;
  int cap = 0, ocap = 0;
  while (1) {
    tok *t = peek(ts);
    static const char *ops[] = {"==", "!=", "<=", ">=", "<", ">", NULL};
    int hit = -1;
    for (int k = 0; ops[k]; k++) if (is_op(t, ops[k])) hit = k;
    if (hit >= 0) ts->pos++;
    else if (is_name(t, "in")) { ts->pos++; hit = C_IN; }
    else if (is_name(t, "not") && is_name(peek2(ts), "in")) { ts->pos += 2; hit = C_NOTIN; }
    else break;
    if (!c) {
      c = mk(p, E_CMP, t);
      grow_ptrs(p, (void **)&c->args, 0, &cap, sizeof *c->args);
      c->args[c->nargs++] = first;
    }
    grow_ptrs(p, (void **)&c->args, c->nargs, &cap, sizeof *c->args);
    grow_ptrs(p, (void **)&c->ops, c->nargs - 1, &ocap, sizeof *c->ops);
    c->ops[c->nargs - 1] = hit;
    c->args[c->nargs++] = parse_add(p, ts);
  }
  return c ? fin(p, c) : first;
}
static expr *parse_not(pctx *p, tokstream *ts) {
  tok *t = peek(ts);
  if (accept_name(ts, "not")) {
    enter_parse(p, t);
    expr *e = mk(p, E_NOT, t);
    e->a = parse_not(p, ts);
    p->depth--;
    return fin(p, e);
  }
  return parse_cmp(p, ts);
}
static expr *parse_and(pctx *p, tokstream *ts) {
  expr *e = parse_not(p, ts);
  tok *t;
  while ((t = peek(ts)) && accept_name(ts, "and")) { expr *x = mk(p, E_AND, t); x->a = e; x->b = parse_not(p, ts); e = fin(p, x); }
  return e;
}
static expr *parse_or(pctx *p, tokstream *ts) {
  expr *e = parse_and(p, ts);
  tok *t;
  while ((t = peek(ts)) && accept_name(ts, "or")) { expr *x = mk(p, E_OR, t); x->a = e; x->b = parse_and(p, ts); e = fin(p, x); }
  return e;
}
/* a if b else c (the else part optional: undefined) */
static expr *parse_expr(pctx *p, tokstream *ts) {
  tok *t0 = peek(ts);
  enter_parse(p, t0);
  int first_unknown = p->nunknown;
  expr *e = parse_or(p, ts);
  tok *t;
  while ((t = peek(ts)) && accept_name(ts, "if")) {
    p->soft++; /* the whole inline if is soft for unknown names, its first arm included */
    expr *c = mk(p, E_COND, t);
    c->a = e;
    c->b = parse_or(p, ts);
    if (accept_name(ts, "else")) c->c = parse_expr(p, ts);
    p->soft--;
    for (int i = first_unknown; i < p->nunknown; i++) p->unknown[i].soft = 1;
    e = fin(p, c);
  }
  p->depth--;
  return e;
}
/* an expression, or a tuple without brackets: {{ a, b }}, {% set x = 1, 2 %} */
static expr *parse_tuple(pctx *p, tokstream *ts) {
  tok *t = peek(ts);
  expr *first = parse_expr(p, ts);
  if (!is_op(peek(ts), ",")) return first;
  expr *e = mk(p, E_LIST, t);
  e->op = 1;
  int cap = 0;
  grow_ptrs(p, (void **)&e->args, 0, &cap, sizeof *e->args);
  e->args[e->nargs++] = first;
  while (accept_op(ts, ",")) {
    if (peek(ts)->k == T_EOF) break;
    grow_ptrs(p, (void **)&e->args, e->nargs, &cap, sizeof *e->args);
    e->args[e->nargs++] = parse_expr(p, ts);
  }
  return fin(p, e);
}

/* ------------------------------------------------------------------ template splitter */
typedef struct {
  int kind; /* 0 text, 1 var, 2 block */
  const char *s;
  size_t n;
  int line, col;
} chunk;

typedef struct {
  chunk *v;
  int n, pos;
} chunks;

/* line and column of src[off], counting forward from a known earlier position */
typedef struct {
  const char *src;
  size_t off;
  int line, col;
} linepos;

static void line_col(linepos *lp, size_t off, int *line, int *col) {
  if (off < lp->off) { lp->off = 0; lp->line = 1; lp->col = 1; }
  for (size_t i = lp->off; i < off; i++) { if (lp->src[i] == '\n') { lp->line++; lp->col = 1; } else lp->col++; }
  lp->off = off;
  *line = lp->line;
  *col = lp->col;
}

/* Jinja reads templates with universal newlines: \r\n and \r become \n, and one trailing
 * newline is dropped (keep_trailing_newline=False). The result is arena-owned. */
static char *normalize_source(pctx *p, const char *src) {
  size_t n = strlen(src), k = 0;
  char *o = palloc(p, n + 1);
  for (size_t i = 0; i < n; i++) {
    if (src[i] == '\r') { o[k++] = '\n'; if (i + 1 < n && src[i + 1] == '\n') i++; }
    else o[k++] = src[i];
  }
  if (k && o[k - 1] == '\n') k--;
  o[k] = 0;
  return o;
}

static void push_chunk(pctx *p, chunks *out, int *cap, int kind, const char *s, size_t n, int line, int col) {
  if (out->n == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    out->v = ar_resize(p->ar, out->v, out->n, *cap, sizeof *out->v);
    if (!out->v) perr_code(p, OC_ERR_NOMEM, 0, 0, "out of memory");
  }
  chunk *c = &out->v[out->n++];
  c->kind = kind;
  c->s = s;
  c->n = n;
  c->line = line;
  c->col = col;
}

/* Split into text, {{ }} and {% %} chunks applying the whitespace control transformers sets:
 * trim_blocks (the newline after a block or comment tag goes), lstrip_blocks (spaces and tabs
 * from the line start to a block or comment tag go), and the -/+ markers. Comments vanish;
 * {% raw %} bodies become text. */
static void split_template(pctx *p, const char *src, chunks *out) {
  size_t n = strlen(src), i = 0;
  int cap = 0;
  linepos lp = {src, 0, 1, 1};
  out->n = 0;
  int strip_next = 0, trim_nl = 0;
  while (i <= n) {
    /* find the next tag */
    size_t j = i;
    int kind = 0;
    while (j + 1 < n) {
      if (src[j] == '{' && (src[j + 1] == '{' || src[j + 1] == '%' || src[j + 1] == '#')) { kind = src[j + 1]; break; }
      j++;
    }
    if (!kind) j = n;
    /* text i..j */
    size_t ts = i, te = j;
    if (strip_next) for (size_t w; ts < te && (w = ws_at(src, ts, te));) ts += w;
    else if (trim_nl && ts < te && src[ts] == '\n') ts++;
    strip_next = trim_nl = 0;
    if (kind) {
      int minus = j + 2 < n && src[j + 2] == '-', plus = j + 2 < n && src[j + 2] == '+';
      if (minus) for (size_t w; (w = ws_before(src, ts, te));) te -= w;
      else if ((kind == '%' || kind == '#') && !plus) {
        /* lstrip_blocks: only spaces and tabs between the line start and the tag */
        size_t q = te;
        while (q > ts && (src[q - 1] == ' ' || src[q - 1] == '\t')) q--;
        if (q == 0 || src[q - 1] == '\n') te = q;
      }
    }
    int line, col;
    if (te > ts) {
      line_col(&lp, ts, &line, &col);
      push_chunk(p, out, &cap, 0, src + ts, te - ts, line, col);
    }
    if (!kind) break;
    /* tag body */
    const char *close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t b = j + 2;
    if (b < n && (src[b] == '-' || src[b] == '+')) b++;
    size_t e = b;
    char q = 0;
    int open = 0; /* brackets: inside them `}}` and `%}` are operators, as in Jinja's lexer */
    while (e + 1 < n) {
      if (kind != '#') {
        if (q) { if (src[e] == '\\') { e += 2; continue; } if (src[e] == q) q = 0; e++; continue; }
        if (src[e] == '\'' || src[e] == '"') { q = src[e++]; continue; }
      }
      if (!open && src[e] == close[0] && src[e + 1] == close[1]) break;
      if (kind != '#') {
        if (src[e] == '(' || src[e] == '[' || src[e] == '{') open++;
        else if (open && (src[e] == ')' || src[e] == ']' || src[e] == '}')) open--;
      }
      e++;
    }
    line_col(&lp, j, &line, &col);
    if (e + 1 >= n) perr(p, line, col, "unclosed tag (missing '%s')", close);
    size_t be = e;
    int rminus = be > b && src[be - 1] == '-', rplus = !rminus && be > b && src[be - 1] == '+' && kind != '{';
    if (rminus || rplus) be--;
    if (kind != '#') {
      /* {% raw %} ... {% endraw %} */
      size_t k = b;
      while (k < be && isspace((unsigned char)src[k])) k++;
      size_t ke = be;
      while (ke > k && isspace((unsigned char)src[ke - 1])) ke--;
      if (kind == '%' && ke - k == 3 && strncmp(src + k, "raw", 3) == 0) {
        size_t after = e + 2, from = after;
        const char *end = NULL;
        /* the first {% endraw %} (with optional - / + markers) */
        while ((end = strstr(src + from, "endraw"))) {
          size_t at = (size_t)(end - src), o = at;
          while (o > after && isspace((unsigned char)src[o - 1])) o--;
          if (o > after && (src[o - 1] == '-' || src[o - 1] == '+')) o--;
          if (o >= after + 2 && src[o - 2] == '{' && src[o - 1] == '%') break;
          from = at + 6;
        }
        if (!end) perr(p, line, col, "{%% raw %%} without {%% endraw %%}");
        size_t tagstart = (size_t)(end - src);
        while (src[tagstart] != '{' || src[tagstart + 1] != '%') tagstart--;
        size_t rs = after, re_ = tagstart;
        if (rminus) for (size_t w; rs < re_ && (w = ws_at(src, rs, re_));) rs += w;
        else if (!rplus && rs < re_ && src[rs] == '\n') rs++;
        if (src[tagstart + 2] == '-') for (size_t w; (w = ws_before(src, rs, re_));) re_ -= w;
        else if (src[tagstart + 2] != '+') {
          size_t w = re_;
          while (w > rs && (src[w - 1] == ' ' || src[w - 1] == '\t')) w--;
          if (w == 0 || src[w - 1] == '\n') re_ = w;
        }
        if (re_ > rs) push_chunk(p, out, &cap, 0, src + rs, re_ - rs, line, col);
        const char *tend = strstr(end, "%}");
        if (!tend) perr(p, line, col, "unclosed endraw tag");
        i = (size_t)(tend - src) + 2;
        strip_next = tend[-1] == '-';
        trim_nl = !strip_next && tend[-1] != '+';
        continue;
      }
      line_col(&lp, b, &line, &col);
      push_chunk(p, out, &cap, kind == '{' ? 1 : 2, src + b, be - b, line, col);
    }
    i = e + 2;
    strip_next = rminus;
    trim_nl = !rminus && !rplus && kind != '{';
  }
}

/* ------------------------------------------------------------------ statement parser */
static void body_push(pctx *p, body *b, stmt *s) {
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 8;
    b->v = ar_resize(p->ar, b->v, b->n, b->cap, sizeof *b->v);
    if (!b->v) perr_code(p, OC_ERR_NOMEM, 0, 0, "out of memory");
  }
  b->v[b->n++] = s;
}

/* parse statements until a block tag whose first word is one of `ends`; returns that word */
static const char *parse_body(pctx *p, chunks *cs, body *b, const char *const *ends, tokstream *end_ts);

static stmt *mkstmt(pctx *p, int k, const tok *at) {
  stmt *s = palloc(p, sizeof *s);
  s->k = k;
  s->line = at->line;
  s->col = at->col;
  return s;
}

static void expect_end(pctx *p, tokstream *ts) {
  tok *t = peek(ts);
  if (t->k != T_EOF) perr(p, t->line, t->col, "unexpected '%s' at end of tag", t->k == T_OP || t->k == T_NAME ? t->s : "literal");
}

/* a body that must end with `end` (after which the tag has nothing more) */
static void parse_block_to(pctx *p, chunks *cs, body *b, const char *end, const tok *kw) {
  const char *const ends[] = {end, NULL};
  tokstream et;
  if (!parse_body(p, cs, b, ends, &et)) perr(p, kw->line, kw->col, "'%s' without '%s'", kw->s, end);
  expect_end(p, &et);
}

/* a filter chain applied to a block's text: {% filter upper|trim %}, {% set x | trim %} */
static expr *parse_block_filter(pctx *p, tokstream *ts, const tok *at) {
  expr *in = mk(p, E_INPUT, at);
  return parse_filters(p, ts, parse_one_filter(p, ts, in, at));
}

static void parse_if(pctx *p, chunks *cs, body *b, tokstream *ts, const tok *kw) {
  stmt *s = mkstmt(p, S_IF, kw);
  p->soft++;
  int cap = 0, bcap = 0;
  grow_ptrs(p, (void **)&s->conds, 0, &cap, sizeof *s->conds);
  grow_ptrs(p, (void **)&s->bodies, 0, &bcap, sizeof *s->bodies);
  s->conds[0] = parse_expr(p, ts);
  expect_end(p, ts);
  s->nconds = 1;
  static const char *const ends_if[] = {"elif", "else", "endif", NULL};
  while (1) {
    tokstream et;
    const char *got = parse_body(p, cs, &s->bodies[s->nconds - 1], ends_if, &et);
    if (!got) perr(p, kw->line, kw->col, "'if' without 'endif'");
    if (!strcmp(got, "elif")) {
      grow_ptrs(p, (void **)&s->conds, s->nconds, &cap, sizeof *s->conds);
      grow_ptrs(p, (void **)&s->bodies, s->nconds, &bcap, sizeof *s->bodies);
      s->conds[s->nconds++] = parse_expr(p, &et);
      expect_end(p, &et);
    } else if (!strcmp(got, "else")) {
      expect_end(p, &et);
      parse_block_to(p, cs, &s->else_body, "endif", kw);
      break;
    } else { expect_end(p, &et); break; }
  }
  p->soft--;
  body_push(p, b, s);
}

static void parse_for(pctx *p, chunks *cs, body *b, tokstream *ts, const tok *kw) {
  stmt *s = mkstmt(p, S_FOR, kw);
  s->targets = palloc(p, sizeof(char *) * 8);
  int paren = accept_op(ts, "(");
  do {
    if (s->ntargets == 8) perr(p, kw->line, kw->col, "too many loop variables");
    s->targets[s->ntargets++] = expect_target(p, ts, 1);
  } while (accept_op(ts, ","));
  if (paren) expect_op(p, ts, ")");
  if (!accept_name(ts, "in")) perr(p, kw->line, kw->col, "expected 'in' in for loop");
  s->e = parse_or(p, ts);
  if (accept_name(ts, "if")) s->filter = parse_or(p, ts);
  if (is_name(peek(ts), "recursive"))
    perr_code(p, OC_ERR_UNSUPPORTED, kw->line, kw->col, "recursive loops are not supported");
  expect_end(p, ts);
  static const char *const ends_for[] = {"else", "endfor", NULL};
  tokstream et;
  int soft = p->soft;
  p->loops++;
  p->in_for++;
  p->soft = 0; /* a loop body is an inner frame for jinja2: not soft */
  const char *got = parse_body(p, cs, &s->b, ends_for, &et);
  p->loops--;
  if (!got) perr(p, kw->line, kw->col, "'for' without 'endfor'");
  expect_end(p, &et);
  if (!strcmp(got, "else")) parse_block_to(p, cs, &s->else_body, "endfor", kw);
  p->in_for--;
  p->soft = soft;
  body_push(p, b, s);
}

static void parse_set(pctx *p, chunks *cs, body *b, tokstream *ts, const tok *kw) {
  stmt *s = mkstmt(p, S_SET, kw);
  s->targets = palloc(p, sizeof(char *) * 8);
  s->targets[s->ntargets++] = expect_name(p, ts);
  if (accept_op(ts, ".")) s->attr = expect_name(p, ts); /* ns.attr: not a name assignment */
  else {
    if (p->in_for && !strcmp(s->targets[0], "loop")) {
      const tok *t = &ts->v[ts->pos - 1];
      perr(p, t->line, t->col, "Can't assign to special loop variable in for-loop target");
    }
    while (accept_op(ts, ",")) {
      if (s->ntargets == 8) perr(p, kw->line, kw->col, "too many targets");
      s->targets[s->ntargets++] = expect_target(p, ts, p->in_for);
    }
  }
  if (accept_op(ts, "=")) {
    s->e = parse_tuple(p, ts);
    expect_end(p, ts);
  } else {
    if (s->attr || s->ntargets > 1) perr(p, kw->line, kw->col, "a block set assigns one name");
    tok *t = peek(ts);
    if (accept_op(ts, "|")) s->filter = parse_block_filter(p, ts, t);
    expect_end(p, ts);
    s->k = S_SETBLOCK;
    parse_block_to(p, cs, &s->b, "endset", kw);
  }
  body_push(p, b, s);
}

static void parse_macro(pctx *p, chunks *cs, body *b, tokstream *ts, const tok *kw) {
  stmt *s = mkstmt(p, S_MACRO, kw);
  s->attr = expect_name(p, ts);
  expect_op(p, ts, "(");
  int cap = 0, dcap = 0;
  while (!accept_op(ts, ")")) {
    grow_ptrs(p, (void **)&s->params, s->nparams, &cap, sizeof *s->params);
    grow_ptrs(p, (void **)&s->defaults, s->nparams, &dcap, sizeof *s->defaults);
    s->params[s->nparams] = expect_name(p, ts);
    s->defaults[s->nparams] = accept_op(ts, "=") ? parse_expr(p, ts) : NULL;
    s->nparams++;
    if (!accept_op(ts, ",")) { expect_op(p, ts, ")"); break; }
  }
  expect_end(p, ts);
  int loops = p->loops; /* a macro body is outside any loop around its definition */
  stmt *outer = p->macro;
  int soft = p->soft;
  p->loops = 0;
  p->macro = s;
  p->soft = 0;
  parse_block_to(p, cs, &s->b, "endmacro", kw);
  p->loops = loops;
  p->macro = outer;
  p->soft = soft;
  body_push(p, b, s);
}

/* {% with a = 1, b = x %} ... {% endwith %}: a scope with those names */
static void parse_with(pctx *p, chunks *cs, body *b, tokstream *ts, const tok *kw) {
  stmt *s = mkstmt(p, S_WITH, kw);
  int cap = 0, ccap = 0;
  while (peek(ts)->k != T_EOF) {
    grow_ptrs(p, (void **)&s->targets, s->ntargets, &cap, sizeof *s->targets);
    grow_ptrs(p, (void **)&s->conds, s->nconds, &ccap, sizeof *s->conds);
    s->targets[s->ntargets++] = expect_name(p, ts);
    expect_op(p, ts, "=");
    s->conds[s->nconds++] = parse_expr(p, ts);
    if (!accept_op(ts, ",")) break;
  }
  expect_end(p, ts);
  parse_block_to(p, cs, &s->b, "endwith", kw);
  body_push(p, b, s);
}

static const char *parse_body(pctx *p, chunks *cs, body *b, const char *const *ends, tokstream *end_ts) {
  if (++p->depth > OC_TEMPLATE_MAX_NESTING) {
    const chunk *c = cs->pos < cs->n ? &cs->v[cs->pos] : NULL;
    perr(p, c ? c->line : 0, c ? c->col : 0, "blocks nested too deeply (more than %d levels)", OC_TEMPLATE_MAX_NESTING);
  }
  while (cs->pos < cs->n) {
    chunk *c = &cs->v[cs->pos++];
    tok at = {.line = c->line, .col = c->col};
    if (c->kind == 0) {
      stmt *s = mkstmt(p, S_TEXT, &at);
      s->text = c->s;
      s->tlen = c->n;
      body_push(p, b, s);
      continue;
    }
    tokstream ts;
    lex_tag(p, c->s, c->n, c->line, c->col, &ts);
    if (c->kind == 1) {
      stmt *s = mkstmt(p, S_OUT, &at);
      s->e = parse_tuple(p, &ts);
      expect_end(p, &ts);
      body_push(p, b, s);
      continue;
    }
    tok *kw = next_tok(&ts);
    if (kw->k != T_NAME) perr(p, kw->line, kw->col, "expected a statement keyword in {%% %.*s %%}", (int)(c->n > 40 ? 40 : c->n), c->s);
    for (const char *const *e = ends; e && *e; e++)
      if (!strcmp(kw->s, *e)) { if (end_ts) *end_ts = ts; p->depth--; return *e; }
    const char *w = kw->s;
    if (!strcmp(w, "if")) parse_if(p, cs, b, &ts, kw);
    else if (!strcmp(w, "for")) parse_for(p, cs, b, &ts, kw);
    else if (!strcmp(w, "set")) parse_set(p, cs, b, &ts, kw);
    else if (!strcmp(w, "macro")) parse_macro(p, cs, b, &ts, kw);
    else if (!strcmp(w, "with")) parse_with(p, cs, b, &ts, kw);
    else if (!strcmp(w, "filter")) {
      stmt *s = mkstmt(p, S_FILTERBLOCK, kw);
      s->filter = parse_block_filter(p, &ts, kw);
      expect_end(p, &ts);
      parse_block_to(p, cs, &s->b, "endfilter", kw);
      body_push(p, b, s);
    } else if (!strcmp(w, "break") || !strcmp(w, "continue")) {
      if (!p->loops) perr(p, kw->line, kw->col, "'%s' outside a loop", w);
      expect_end(p, &ts);
      body_push(p, b, mkstmt(p, w[0] == 'b' ? S_BREAK : S_CONTINUE, kw));
    } else if (!strcmp(w, "generation") || !strcmp(w, "endgeneration")) {
      /* transformers' AssistantTracker markers: no output of their own */
    } else if (!strcmp(w, "elif") || !strcmp(w, "else") || !strncmp(w, "end", 3)) {
      perr(p, kw->line, kw->col, "unexpected '%s'", w);
    } else {
      perr_code(p, OC_ERR_UNSUPPORTED, kw->line, kw->col, "unsupported template statement '%s'", w);
    }
  }
  p->depth--;
  return NULL;
}

void oc_template_free(oc_template *t) {
  if (!t) return;
  ar_free(&t->ar);
  free(t->name);
  free(t);
}

const char *oc_template_name(const oc_template *t) { return t->name; }

static int parse_guarded(pctx *p, const char *src, body *root) {
  if (setjmp(p->jb)) return -1;
  chunks cs = {0};
  split_template(p, normalize_source(p, src), &cs);
  parse_body(p, &cs, root, NULL, NULL);
  check_unknown_names(p);
  return 0;
}

int oc_template_parse(const char *src, const char *name, oc_template **out, oc_error *err) {
  *out = NULL;
  oc_template *t = calloc(1, sizeof *t);
  if (!t) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  t->name = strdup(name ? name : "template");
  if (!t->name) { free(t); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  size_t n = strlen(src);
  if (n > OC_TEMPLATE_MAX_SOURCE) {
    oc_fail(err, "%s: template of %zu bytes is larger than %zu KiB", t->name, n, OC_TEMPLATE_MAX_SOURCE >> 10);
    oc_template_free(t);
    return -1;
  }
  pctx p;
  memset(&p, 0, sizeof p);
  p.ar = &t->ar;
  p.err = err;
  p.tname = t->name;
  if (parse_guarded(&p, src, &t->root)) {
    oc_template_free(t);
    return -1;
  }
  *out = t;
  return 0;
}

/* ------------------------------------------------------------------ renderer: limits, errors, allocation */
typedef struct frame frame;
struct frame {
  frame *parent;
  const char **names;
  val **vals;
  int n, cap;
  val *vars; /* the globals: a dict (hashed), as the caller's variables may be many */
};

typedef struct {
  char *out;
  size_t len, cap;
} outbuf;

typedef struct tok tok;
typedef struct {
  arena *ar;
  oc_error *err;
  const char *tname;
  jmp_buf jb;
  tok *toks; /* the token buffer of the tag being parsed */
  int ntoks;
  outbuf o;           /* the text being written */
  outbuf *saved;      /* the buffers of enclosing macro calls and set / filter blocks */
  int nsaved, capsaved;
  size_t outbytes;    /* capacity of all output buffers (counted in the memory limit) */
  frame *globals;
  int depth;          /* nested evaluation: OC_TEMPLATE_MAX_DEPTH */
  int brk;            /* 1 break, 2 continue */
  long long steps;    /* work done: OC_TEMPLATE_MAX_STEPS */
  int line, col;      /* the node being evaluated, for errors that have no better position */
  const oc_template_opts *opts;
  val *input;         /* the captured text a filter block filters (E_INPUT) */
} rctx;

static void rerr_code(rctx *r, oc_errcode code, int line, int col, const char *fmt, ...)
  __attribute__((format(printf, 5, 6), noreturn));
static void rerr_code(rctx *r, oc_errcode code, int line, int col, const char *fmt, ...) {
  if (line <= 0) { line = r->line; col = r->col; }
  va_list ap;
  va_start(ap, fmt);
  fail_at(r->err, code, r->tname, line, col, fmt, ap);
  va_end(ap);
  longjmp(r->jb, 1);
}
#define rerr(r, line, col, ...) rerr_code(r, OC_ERR_INVALID, line, col, __VA_ARGS__)
#define rerr_unsupported(r, line, col, ...) rerr_code(r, OC_ERR_UNSUPPORTED, line, col, __VA_ARGS__)

static void check_memory(rctx *r) {
  if (r->ar->bytes + r->outbytes > OC_TEMPLATE_MAX_MEMORY)
    rerr(r, 0, 0, "template needs more than %zu MiB of memory", OC_TEMPLATE_MAX_MEMORY >> 20);
}

static void *ralloc(rctx *r, size_t n) {
  void *p = ar_alloc(r->ar, n);
  if (!p) rerr_code(r, OC_ERR_NOMEM, 0, 0, "out of memory");
  check_memory(r);
  return p;
}

/* ar_resize for the renderer: an arena copy of an array with room for newcap elements */
static void *rresize(rctx *r, const void *arr, int n, int newcap, size_t elem) {
  void *p = ar_resize(r->ar, arr, n, newcap, elem);
  if (!p) rerr_code(r, OC_ERR_NOMEM, 0, 0, "out of memory");
  check_memory(r);
  return p;
}

static void charge(rctx *r, long long units) {
  r->steps += units;
  if (r->steps > OC_TEMPLATE_MAX_STEPS) rerr(r, 0, 0, "template exceeds its work budget (%lld steps)", OC_TEMPLATE_MAX_STEPS);
}

/* bytes of strings and lists built or scanned cost one step per 64 */
static void charge_bytes(rctx *r, size_t n) { charge(r, (long long)(n >> 6)); }

static void check_strlen(rctx *r, size_t n) {
  if (n > OC_TEMPLATE_MAX_OUTPUT) rerr(r, 0, 0, "string longer than %zu MiB", OC_TEMPLATE_MAX_OUTPUT >> 20);
}

/* entering an expression or block: depth and work limits, and the position errors name */
static void enter(rctx *r, int line, int col) {
  if (++r->depth > OC_TEMPLATE_MAX_DEPTH)
    rerr(r, line, col, "template recursion too deep (more than %d nested expressions, blocks and macro calls)", OC_TEMPLATE_MAX_DEPTH);
  charge(r, 1);
  r->line = line;
  r->col = col;
}

static void emit(rctx *r, const char *s, size_t n) {
  if (n > OC_TEMPLATE_MAX_OUTPUT - r->o.len) rerr(r, 0, 0, "rendered text longer than %zu MiB", OC_TEMPLATE_MAX_OUTPUT >> 20);
  charge_bytes(r, n);
  if (r->o.len + n + 1 > r->o.cap) {
    size_t nc = (r->o.len + n + 1) * 2;
    char *no = realloc(r->o.out, nc);
    if (!no) rerr_code(r, OC_ERR_NOMEM, 0, 0, "out of memory");
    r->outbytes += nc - r->o.cap;
    r->o.out = no;
    r->o.cap = nc;
    check_memory(r);
  }
  memcpy(r->o.out + r->o.len, s, n);
  r->o.len += n;
  r->o.out[r->o.len] = 0;
}

/* ------------------------------------------------------------------ values */
static val *V(rctx *r, int t) {
  val *v = ralloc(r, sizeof *v);
  v->t = t;
  return v;
}
static val *vstr(rctx *r, const char *s, size_t n) {
  check_strlen(r, n);
  charge_bytes(r, n);
  val *v = V(r, V_STR);
  char *c = ralloc(r, n + 1);
  if (n) memcpy(c, s, n);
  v->s = c;
  v->n = n;
  return v;
}
static val *vcstr(rctx *r, const char *s) { return vstr(r, s, strlen(s)); }
static val *vint(rctx *r, long long i) { val *v = V(r, V_INT); v->i = i; return v; }
static val *vbool(rctx *r, int b) { val *v = V(r, V_BOOL); v->i = b != 0; return v; }
static val *vfloat(rctx *r, double f) { val *v = V(r, V_FLOAT); v->f = f; return v; }
static val *vundef(rctx *r) { return V(r, V_UNDEF); }
/* an undefined value that knows why (undefined_error words it) */
static val *vundef_why(rctx *r, int why, const char *what, const val *obj, const val *key) {
  val *v = V(r, V_UNDEF);
  v->u.why = why;
  v->u.what = what;
  v->u.obj = obj;
  v->u.key = key;
  return v;
}

static void list_push(rctx *r, val *l, val *x) {
  if (l->len == l->cap) {
    if (l->len >= OC_TEMPLATE_MAX_ITEMS) rerr(r, 0, 0, "list or dict longer than %d items", OC_TEMPLATE_MAX_ITEMS);
    int nc = l->cap ? l->cap * 2 : 8;
    l->items = rresize(r, l->items, l->len, nc, sizeof *l->items);
    l->cap = nc;
    charge(r, l->len >> 3);
  }
  l->items[l->len++] = x;
}

static val *vlist(rctx *r, int is_tuple) { val *l = V(r, V_LIST); l->is_tuple = (unsigned char)is_tuple; return l; }
static val *vpair(rctx *r, val *a, val *b) { val *t = vlist(r, 1); list_push(r, t, a); list_push(r, t, b); return t; }

/* Python type names for error messages */
static const char *type_name(const val *v) {
  switch (v->t) {
  case V_UNDEF: return "Undefined";
  case V_NONE: return "NoneType";
  case V_BOOL: return "bool";
  case V_INT: return "int";
  case V_FLOAT: return "float";
  case V_STR: return "str";
  case V_LIST: return v->is_iter ? "generator" : v->is_tuple ? "tuple" : "list";
  case V_DICT: return v->is_ns ? "Namespace" : v->is_loop ? "LoopContext" : "dict";
  case V_MACRO: return "Macro";
  default: return "function";
  }
}

/* growing strings in the arena */
typedef struct {
  char *s;
  size_t n, cap;
} sbuf;
static void sb_add(rctx *r, sbuf *b, const char *s, size_t n) {
  if (n > OC_TEMPLATE_MAX_OUTPUT - b->n) check_strlen(r, (size_t)-1);
  charge_bytes(r, n);
  if (b->n + n + 1 > b->cap) {
    size_t nc = (b->n + n + 1) * 2 + 32;
    char *ns = ralloc(r, nc);
    if (b->n) memcpy(ns, b->s, b->n);
    b->s = ns;
    b->cap = nc;
  }
  if (n) memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}
static void sb_str(rctx *r, sbuf *b, const char *s) { sb_add(r, b, s, strlen(s)); }
static void sb_char(rctx *r, sbuf *b, char c) { sb_add(r, b, &c, 1); }
/* the buffer as a string value (no copy) */
static val *sb_val(rctx *r, sbuf *b) {
  val *v = V(r, V_STR);
  v->s = b->s ? b->s : "";
  v->n = b->n;
  return v;
}

static int truthy(const val *v) {
  switch (v->t) {
  case V_UNDEF: case V_NONE: return 0;
  case V_BOOL: case V_INT: return v->i != 0;
  case V_FLOAT: return v->f != 0;
  case V_STR: return v->n != 0;
  case V_LIST: return v->len != 0 || v->is_iter;
  case V_DICT: return v->len != 0 || v->is_ns;
  default: return 1;
  }
}

static int is_int(const val *v) { return v->t == V_INT || v->t == V_BOOL; }

static int num_of(const val *v, double *d) {
  if (is_int(v)) { *d = (double)v->i; return 1; }
  if (v->t == V_FLOAT) { *d = v->f; return 1; }
  return 0;
}

static int is_num(const val *v) { return is_int(v) || v->t == V_FLOAT; }

/* An int against a float, exactly, as Python compares them (9007199254740993 == 9007199254740992.0
 * is False although the int rounds to that double): -1, 0, 1, or 2 when f is NaN (unordered). */
static int cmp_int_float(long long i, double f) {
  if (isnan(f)) return 2;
  if (f >= 9223372036854775808.0) return -1; /* (+inf too) */
  if (f < -9223372036854775808.0) return 1;
  long long t = (long long)f; /* f truncated: exact in this range */
  if (i != t) return i < t ? -1 : 1;
  double frac = f - (double)t; /* exact: t is f's integer part */
  return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

/* Python's ordering of two numbers (int, bool, float): -1, 0, 1, or 2 when unordered (a NaN) */
static int num_cmp(const val *a, const val *b) {
  if (is_int(a) && is_int(b)) return a->i < b->i ? -1 : a->i > b->i;
  if (is_int(a)) return cmp_int_float(a->i, b->f);
  if (is_int(b)) { int c = cmp_int_float(b->i, a->f); return c == 2 ? 2 : -c; }
  if (isnan(a->f) || isnan(b->f)) return 2;
  return a->f < b->f ? -1 : a->f > b->f;
}

/* ------------------------------------------------------------------ equality, hashing, dicts */
static void check_depth(rctx *r, int depth) {
  if (depth > OC_TEMPLATE_MAX_DEPTH) rerr(r, 0, 0, "value nested too deeply (more than %d levels)", OC_TEMPLATE_MAX_DEPTH);
}

static int dict_find(rctx *r, const val *d, const val *k);

/* Python ==: numbers across int/float/bool, lists and tuples never equal each other, dicts by
 * key; a generator, namespace or function is equal only to itself; undefined equals undefined */
static int equal(rctx *r, const val *a, const val *b, int depth) {
  if (is_num(a) && is_num(b)) return num_cmp(a, b) == 0;
  if (a->t != b->t) return 0;
  switch (a->t) {
  case V_NONE: case V_UNDEF: return 1;
  case V_STR: charge_bytes(r, a->n); return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
  case V_LIST:
    if (a->is_iter || b->is_iter) return a == b;
    if (a->is_tuple != b->is_tuple || a->len != b->len) return 0;
    check_depth(r, depth);
    charge(r, a->len);
    for (int i = 0; i < a->len; i++) if (!equal(r, a->items[i], b->items[i], depth + 1)) return 0;
    return 1;
  case V_DICT:
    if (a->is_ns || b->is_ns) return a == b;
    if (a->len != b->len) return 0;
    check_depth(r, depth);
    charge(r, a->len);
    for (int i = 0; i < a->len; i++) {
      int j = dict_find(r, b, a->keys[i]);
      if (j < 0 || !equal(r, a->items[i], b->items[j], depth + 1)) return 0;
    }
    return 1;
  default: return a == b;
  }
}

static int hashable(const val *k, int depth) {
  if (depth > OC_TEMPLATE_MAX_DEPTH) return 0;
  switch (k->t) {
  case V_NONE: case V_BOOL: case V_INT: case V_FLOAT: case V_STR: return 1;
  case V_LIST:
    if (!k->is_tuple || k->is_iter) return 0;
    for (int i = 0; i < k->len; i++) if (!hashable(k->items[i], depth + 1)) return 0;
    return 1;
  default: return 0;
  }
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

/* equal keys hash alike (1, 1.0 and True are one key, as in Python); k must be hashable */
static uint64_t hash_val(rctx *r, const val *k) {
  switch (k->t) {
  case V_BOOL: case V_INT: return mix64((uint64_t)k->i);
  case V_FLOAT: {
    if (k->f == floor(k->f) && k->f >= -9223372036854775808.0 && k->f < 9223372036854775808.0) return mix64((uint64_t)(long long)k->f);
    uint64_t b;
    memcpy(&b, &k->f, sizeof b);
    return mix64(b);
  }
  case V_STR: {
    charge_bytes(r, k->n);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < k->n; i++) h = (h ^ (unsigned char)k->s[i]) * 1099511628211ULL;
    return mix64(h);
  }
  case V_LIST: {
    uint64_t h = 0x345678;
    for (int i = 0; i < k->len; i++) h = mix64(h ^ hash_val(r, k->items[i]));
    return h;
  }
  default: return 0x9e3779b97f4a7c15ULL;
  }
}

enum { DICT_INDEX_FROM = 16 };

static void dict_index_insert(rctx *r, val *d, int i) {
  unsigned mask = (unsigned)d->hcap - 1;
  for (unsigned s = (unsigned)hash_val(r, d->keys[i]) & mask;; s = (s + 1) & mask)
    if (!d->hidx[s]) { d->hidx[s] = i + 1; return; }
}

static void dict_reindex(rctx *r, val *d, int hcap) {
  d->hidx = ralloc(r, sizeof *d->hidx * (size_t)hcap);
  d->hcap = hcap;
  for (int i = 0; i < d->len; i++) dict_index_insert(r, d, i);
}

/* index of key k in dict d, or -1; k must be hashable */
static int dict_find(rctx *r, const val *d, const val *k) {
  if (!d->hidx) {
    for (int i = 0; i < d->len; i++) if (equal(r, d->keys[i], k, 0)) return i;
    return -1;
  }
  unsigned mask = (unsigned)d->hcap - 1;
  for (unsigned s = (unsigned)hash_val(r, k) & mask;; s = (s + 1) & mask) {
    int e = d->hidx[s];
    if (!e) return -1;
    if (equal(r, d->keys[e - 1], k, 0)) return e - 1;
  }
}

static void dict_set(rctx *r, val *d, val *k, val *x) {
  if (!hashable(k, 0)) rerr(r, 0, 0, "unhashable type: '%s'", type_name(k));
  int i = dict_find(r, d, k);
  if (i >= 0) { d->items[i] = x; return; } /* Python keeps the first key object (1 stays 1 after 1.0) */
  if (d->len == d->cap) {
    if (d->len >= OC_TEMPLATE_MAX_ITEMS) rerr(r, 0, 0, "list or dict longer than %d items", OC_TEMPLATE_MAX_ITEMS);
    int nc = d->cap ? d->cap * 2 : 8;
    d->items = rresize(r, d->items, d->len, nc, sizeof *d->items);
    d->keys = rresize(r, d->keys, d->len, nc, sizeof *d->keys);
    d->cap = nc;
  }
  d->keys[d->len] = k;
  d->items[d->len++] = x;
  if (d->hidx && d->len * 2 <= d->hcap) dict_index_insert(r, d, d->len - 1);
  else if (d->len >= DICT_INDEX_FROM) dict_reindex(r, d, d->hcap ? d->hcap * 2 : 64);
}

static val *dict_get_str(rctx *r, const val *d, const char *k, size_t n) {
  val key = {.t = V_STR, .s = k, .n = n};
  int i = dict_find(r, d, &key);
  return i >= 0 ? d->items[i] : NULL;
}

static val *from_json(rctx *r, const cJSON *j, int depth) {
  check_depth(r, depth);
  charge(r, 1);
  if (!j || cJSON_IsNull(j)) return V(r, V_NONE);
  if (cJSON_IsBool(j)) return vbool(r, cJSON_IsTrue(j));
  if (cJSON_IsNumber(j)) {
    double d = j->valuedouble;
    /* integral JSON numbers are Python ints: cJSON keeps neither whether "1.0" had a point nor
     * digits past double precision (2^53) */
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) return vint(r, (long long)d);
    return vfloat(r, d);
  }
  if (cJSON_IsString(j)) return vcstr(r, j->valuestring);
  if (cJSON_IsArray(j)) {
    val *l = vlist(r, 0);
    for (const cJSON *e = j->child; e; e = e->next) list_push(r, l, from_json(r, e, depth + 1));
    return l;
  }
  if (!cJSON_IsObject(j)) rerr(r, 0, 0, "unsupported JSON value");
  val *d = V(r, V_DICT);
  for (const cJSON *e = j->child; e; e = e->next) dict_set(r, d, vcstr(r, e->string), from_json(r, e, depth + 1));
  return d;
}

/* a name's value in a scope; local scopes are short arrays (a scan costs a step per 4 names),
 * the globals a dict */
static void frame_set(rctx *r, frame *f, const char *name, val *v) {
  if (f->vars) {
    val *key = V(r, V_STR);
    key->s = name;
    key->n = strlen(name);
    dict_set(r, f->vars, key, v);
    return;
  }
  charge(r, f->n >> 2);
  for (int i = 0; i < f->n; i++) if (!strcmp(f->names[i], name)) { f->vals[i] = v; return; }
  if (f->n == f->cap) {
    int nc = f->cap ? f->cap * 2 : 4;
    f->names = rresize(r, f->names, f->n, nc, sizeof *f->names);
    f->vals = rresize(r, f->vals, f->n, nc, sizeof *f->vals);
    f->cap = nc;
  }
  f->names[f->n] = name;
  f->vals[f->n++] = v;
}

static val *lookup(rctx *r, frame *f, const char *name) {
  for (; f; f = f->parent) {
    if (f->vars) {
      val *x = dict_get_str(r, f->vars, name, strlen(name));
      if (x) return x;
      continue;
    }
    charge(r, f->n >> 2);
    for (int i = f->n - 1; i >= 0; i--) if (!strcmp(f->names[i], name)) return f->vals[i];
  }
  return NULL;
}

static frame *new_frame(rctx *r, frame *parent) {
  frame *f = ralloc(r, sizeof *f);
  f->parent = parent;
  return f;
}

/* ------------------------------------------------------------------ Python str() / repr() / json.dumps */
/* repr(float): the shortest digits that read back exactly; fixed notation for exponents -4..15 */
static void fmt_float(double d, char *buf, size_t bs) {
  if (isnan(d)) { snprintf(buf, bs, "nan"); return; }
  if (isinf(d)) { snprintf(buf, bs, d > 0 ? "inf" : "-inf"); return; }
  if (d == 0) { snprintf(buf, bs, signbit(d) ? "-0.0" : "0.0"); return; }
  char e[48];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(e, sizeof e, "%.*e", prec - 1, d);
    if (strtod(e, NULL) == d) break;
  }
  char digits[24];
  int nd = 0;
  const char *q = e + (e[0] == '-');
  for (; *q && *q != 'e'; q++) if (isdigit((unsigned char)*q) && nd < 20) digits[nd++] = *q;
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  int ex = atoi(strchr(e, 'e') + 1);
  char o[64];
  int k = 0;
  if (d < 0) o[k++] = '-';
  if (ex >= -4 && ex < 16) {
    if (ex >= 0) {
      for (int i = 0; i <= ex; i++) o[k++] = i < nd ? digits[i] : '0';
      o[k++] = '.';
      if (nd > ex + 1) for (int i = ex + 1; i < nd; i++) o[k++] = digits[i];
      else o[k++] = '0';
    } else {
      o[k++] = '0';
      o[k++] = '.';
      for (int i = 0; i < -ex - 1; i++) o[k++] = '0';
      for (int i = 0; i < nd; i++) o[k++] = digits[i];
    }
    o[k] = 0;
  } else {
    o[k++] = digits[0];
    if (nd > 1) { o[k++] = '.'; for (int i = 1; i < nd; i++) o[k++] = digits[i]; }
    snprintf(o + k, sizeof o - (size_t)k, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
  }
  snprintf(buf, bs, "%s", o);
}

/* str.isprintable(): not Cc, Cf, Cs, Co, Cn, Zl, Zp, or a space separator other than ' ' */
static int py_printable(uint32_t cp) {
  if (cp < 0x7f) return cp >= 0x20;
  switch (utf8proc_category((utf8proc_int32_t)cp)) {
  case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
  case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS: return 0;
  default: return 1;
  }
}

static void repr_str(rctx *r, sbuf *b, const char *s, size_t n) {
  int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
  char q = (has_sq && !has_dq) ? '"' : '\'';
  sb_char(r, b, q);
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    int l = oc_utf8_decode(s + i, n - i, &cp);
    char c = s[i];
    if (c == q || c == '\\') { sb_char(r, b, '\\'); sb_char(r, b, c); }
    else if (c == '\n') sb_str(r, b, "\\n");
    else if (c == '\t') sb_str(r, b, "\\t");
    else if (c == '\r') sb_str(r, b, "\\r");
    else if (!py_printable(cp)) {
      char h[16];
      snprintf(h, sizeof h, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", (unsigned)cp);
      sb_str(r, b, h);
    } else sb_add(r, b, s + i, (size_t)l);
    i += (size_t)l;
  }
  sb_char(r, b, q);
}

static void to_str(rctx *r, sbuf *b, const val *v, int repr, int depth);

static void to_str_items(rctx *r, sbuf *b, const val *v, int depth) {
  for (int i = 0; i < v->len; i++) {
    if (i) sb_str(r, b, ", ");
    if (v->t == V_DICT) { to_str(r, b, v->keys[i], 1, depth + 1); sb_str(r, b, ": "); }
    to_str(r, b, v->items[i], 1, depth + 1);
  }
}

/* str(v) (repr = 0) or repr(v) */
static void to_str(rctx *r, sbuf *b, const val *v, int repr, int depth) {
  char num[64];
  check_depth(r, depth);
  switch (v->t) {
  case V_UNDEF: if (repr) sb_str(r, b, "Undefined"); break;
  case V_NONE: sb_str(r, b, "None"); break;
  case V_BOOL: sb_str(r, b, v->i ? "True" : "False"); break;
  case V_INT: snprintf(num, sizeof num, "%lld", v->i); sb_str(r, b, num); break;
  case V_FLOAT: fmt_float(v->f, num, sizeof num); sb_str(r, b, num); break;
  case V_STR: if (repr) repr_str(r, b, v->s, v->n); else sb_add(r, b, v->s, v->n); break;
  case V_LIST:
    if (v->is_iter) rerr_unsupported(r, 0, 0, "cannot print a generator (jinja2 prints its memory address); add |list");
    sb_str(r, b, v->is_tuple ? "(" : "[");
    to_str_items(r, b, v, depth);
    sb_str(r, b, v->is_tuple ? (v->len == 1 ? ",)" : ")") : "]");
    break;
  case V_DICT:
    if (v->is_loop) { /* jinja2's LoopContext repr: <LoopContext index/length> */
      snprintf(num, sizeof num, "<LoopContext %lld/%lld>", dict_get_str(r, v, "index", 5)->i, dict_get_str(r, v, "length", 6)->i);
      sb_str(r, b, num);
      break;
    }
    sb_str(r, b, v->is_ns ? "<Namespace {" : "{");
    to_str_items(r, b, v, depth);
    sb_str(r, b, v->is_ns ? "}>" : "}");
    break;
  case V_MACRO: sb_str(r, b, "<Macro '"); sb_str(r, b, v->name); sb_str(r, b, "'>"); break;
  default: rerr_unsupported(r, 0, 0, "cannot print a function (jinja2 prints its memory address)");
  }
}

static val *str_of(rctx *r, const val *v) {
  if (v->t == V_STR) return (val *)v;
  sbuf b = {0};
  to_str(r, &b, v, 0, 0);
  return sb_val(r, &b);
}

/* jinja2's object_type_repr: how an UndefinedError names the type of an object */
static const char *object_type_repr(const val *o, char *buf, size_t n) {
  if (o->t == V_NONE) return "None";
  if (o->t == V_DICT && o->is_ns) return "jinja2.utils.Namespace object";
  if (o->t == V_DICT && o->is_loop) return "jinja2.runtime.LoopContext object";
  snprintf(buf, n, "%s object", type_name(o));
  return buf;
}

/* The error jinja2 raises where an undefined value is used (an attribute or item of it, a call,
 * an operand), worded from what the value knows of why it is undefined ('x' is undefined, 'str
 * object' has no attribute 'foo', access to attribute '__class__' of 'str' object is unsafe.);
 * `at` is the expression that gave it, named when the value knows nothing */
static void undefined_error(rctx *r, int line, int col, const val *u, const expr *at) __attribute__((noreturn));
static void undefined_error(rctx *r, int line, int col, const val *u, const expr *at) {
  char tb[64];
  switch (u->u.why) {
  case U_NAME: rerr(r, line, col, "'%s' is undefined", u->u.what);
  case U_ATTR: rerr(r, line, col, "'%s' has no attribute '%s'", object_type_repr(u->u.obj, tb, sizeof tb), u->u.what);
  case U_ITEM: {
    sbuf b = {0};
    to_str(r, &b, u->u.key, 1, 0);
    rerr(r, line, col, "%s has no element %.*s", object_type_repr(u->u.obj, tb, sizeof tb), (int)(b.n > 200 ? 200 : b.n), b.s);
  }
  case U_UNSAFE: rerr(r, line, col, "access to attribute '%s' of '%s' object is unsafe.", u->u.what, type_name(u->u.obj));
  case U_PARAM: rerr(r, line, col, "parameter '%s' was not provided", u->u.what);
  case U_COND: rerr(r, line, col, "the inline if-expression on line %d evaluated to false and no else section was defined.", u->u.line);
  case U_HINT: rerr(r, line, col, "%s", u->u.what);
  }
  rerr(r, line, col, "'%s' is undefined", at && at->k == E_NAME ? at->name : "value");
}

/* json.dumps options: transformers' tojson passes ensure_ascii, indent, separators, sort_keys */
typedef struct {
  const char *indent; /* NULL: one line */
  const char *item_sep, *key_sep;
  int sort_keys, ensure_ascii;
} json_opts;

static void json_str(rctx *r, sbuf *b, const char *s, size_t n, int ensure_ascii) {
  sb_char(r, b, '"');
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    char h[16];
    switch (c) {
    case '"': sb_str(r, b, "\\\""); i++; continue;
    case '\\': sb_str(r, b, "\\\\"); i++; continue;
    case '\n': sb_str(r, b, "\\n"); i++; continue;
    case '\r': sb_str(r, b, "\\r"); i++; continue;
    case '\t': sb_str(r, b, "\\t"); i++; continue;
    case '\b': sb_str(r, b, "\\b"); i++; continue;
    case '\f': sb_str(r, b, "\\f"); i++; continue;
    }
    if (c < 0x20) { snprintf(h, sizeof h, "\\u%04x", c); sb_str(r, b, h); i++; continue; }
    if (c < 0x80 || !ensure_ascii) { sb_add(r, b, s + i, 1); i++; continue; }
    uint32_t cp;
    i += (size_t)oc_utf8_decode(s + i, n - i, &cp);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      snprintf(h, sizeof h, "\\u%04x\\u%04x", 0xD800 + (unsigned)(cp >> 10), 0xDC00 + (unsigned)(cp & 0x3FF));
    } else snprintf(h, sizeof h, "\\u%04x", (unsigned)cp);
    sb_str(r, b, h);
  }
  sb_char(r, b, '"');
}

static int compare(rctx *r, const val *a, const val *b, int depth);

static void json_newline(rctx *r, sbuf *b, const json_opts *o, int level) {
  sb_char(r, b, '\n');
  for (int k = 0; k < level; k++) sb_str(r, b, o->indent);
}

/* json.dumps: dict keys become strings (None -> "null", True -> "true", numbers by repr) */
static void json_key(rctx *r, sbuf *b, const val *k, const json_opts *o) {
  char num[64];
  switch (k->t) {
  case V_STR: json_str(r, b, k->s, k->n, o->ensure_ascii); return;
  case V_NONE: sb_str(r, b, "\"null\""); return;
  case V_BOOL: sb_str(r, b, k->i ? "\"true\"" : "\"false\""); return;
  case V_INT: snprintf(num, sizeof num, "\"%lld\"", k->i); sb_str(r, b, num); return;
  case V_FLOAT:
    if (isnan(k->f)) sb_str(r, b, "\"NaN\"");
    else if (isinf(k->f)) sb_str(r, b, k->f > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    else { fmt_float(k->f, num, sizeof num); sb_char(r, b, '"'); sb_str(r, b, num); sb_char(r, b, '"'); }
    return;
  default: rerr(r, 0, 0, "keys must be str, int, float, bool or None, not %s", type_name(k));
  }
}

static void to_json(rctx *r, sbuf *b, const val *v, const json_opts *o, int level, int depth) {
  char num[64];
  check_depth(r, depth);
  switch (v->t) {
  case V_NONE: sb_str(r, b, "null"); return;
  case V_BOOL: sb_str(r, b, v->i ? "true" : "false"); return;
  case V_INT: snprintf(num, sizeof num, "%lld", v->i); sb_str(r, b, num); return;
  case V_FLOAT:
    if (isnan(v->f)) sb_str(r, b, "NaN");
    else if (isinf(v->f)) sb_str(r, b, v->f > 0 ? "Infinity" : "-Infinity");
    else { fmt_float(v->f, num, sizeof num); sb_str(r, b, num); }
    return;
  case V_STR: json_str(r, b, v->s, v->n, o->ensure_ascii); return;
  case V_LIST: case V_DICT: {
    if (v->is_iter || v->is_ns) break;
    int dict = v->t == V_DICT;
    sb_str(r, b, dict ? "{" : "[");
    if (!v->len) { sb_str(r, b, dict ? "}" : "]"); return; }
    int *order = ralloc(r, sizeof(int) * (size_t)v->len);
    for (int i = 0; i < v->len; i++) order[i] = i;
    if (dict && o->sort_keys) /* insertion sort: stable, and dicts a template builds are small */
      for (int i = 1; i < v->len; i++)
        for (int k = i; k > 0 && compare(r, v->keys[order[k - 1]], v->keys[order[k]], 0) == 1; k--) {
          int t = order[k]; order[k] = order[k - 1]; order[k - 1] = t;
        }
    for (int i = 0; i < v->len; i++) {
      if (i) sb_str(r, b, o->item_sep);
      if (o->indent) json_newline(r, b, o, level + 1);
      if (dict) { json_key(r, b, v->keys[order[i]], o); sb_str(r, b, o->key_sep); }
      to_json(r, b, v->items[order[i]], o, level + 1, depth + 1);
    }
    if (o->indent) json_newline(r, b, o, level);
    sb_str(r, b, dict ? "}" : "]");
    return;
  }
  default: break;
  }
  rerr(r, 0, 0, "Object of type %s is not JSON serializable", type_name(v));
}

/* ------------------------------------------------------------------ ordering */
/* Python's < as a three-way comparison: numbers (2 when a NaN makes them unordered: every one
 * of < <= > >= is false), strings (code points = UTF-8 bytes), lists and tuples element by
 * element; anything else is an error, as in Python */
static int compare(rctx *r, const val *a, const val *b, int depth) {
  if (is_num(a) && is_num(b)) return num_cmp(a, b);
  if (a->t == V_STR && b->t == V_STR) {
    size_t m = a->n < b->n ? a->n : b->n;
    charge_bytes(r, m);
    int c = memcmp(a->s, b->s, m);
    return c ? (c < 0 ? -1 : 1) : (a->n < b->n ? -1 : a->n > b->n);
  }
  if (a->t == V_LIST && b->t == V_LIST && a->is_tuple == b->is_tuple && !a->is_iter && !b->is_iter) {
    check_depth(r, depth);
    int m = a->len < b->len ? a->len : b->len;
    for (int i = 0; i < m; i++)
      if (!equal(r, a->items[i], b->items[i], depth + 1)) return compare(r, a->items[i], b->items[i], depth + 1);
    return a->len < b->len ? -1 : a->len > b->len;
  }
  rerr(r, 0, 0, "'<' not supported between instances of '%s' and '%s'", type_name(a), type_name(b));
}

/* stable merge sort of n values by compare() of keys[i] (reverse: descending, still stable) */
static void sort_by_keys(rctx *r, val **items, val **keys, int n, int reverse) {
  if (n < 2) return;
  val **ti = ralloc(r, sizeof *ti * (size_t)n), **tk = ralloc(r, sizeof *tk * (size_t)n);
  for (int w = 1; w < n; w *= 2) {
    for (int lo = 0; lo < n; lo += 2 * w) {
      int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, k = lo;
      while (i < mid && j < hi) {
        int c = compare(r, keys[j], keys[i], 0);
        int take_right = reverse ? c == 1 : c == -1;
        if (take_right) { ti[k] = items[j]; tk[k++] = keys[j++]; }
        else { ti[k] = items[i]; tk[k++] = keys[i++]; }
      }
      while (i < mid) { ti[k] = items[i]; tk[k++] = keys[i++]; }
      while (j < hi) { ti[k] = items[j]; tk[k++] = keys[j++]; }
    }
    memcpy(items, ti, sizeof *ti * (size_t)n);
    memcpy(keys, tk, sizeof *tk * (size_t)n);
    charge(r, n);
  }
}

/* ------------------------------------------------------------------ UTF-8 strings as Python sees them */

static size_t cp_count(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i += (size_t)oc_utf8_len((unsigned char)s[i])) c++;
  return c;
}

/* byte offset of every code point (count + 1 entries), or NULL when the string is ASCII
 * (then code point i is byte i) */
static size_t *cp_offsets(rctx *r, const char *s, size_t n, size_t *count) {
  charge_bytes(r, n);
  size_t c = cp_count(s, n);
  *count = c;
  if (c == n) return NULL;
  size_t *o = ralloc(r, sizeof *o * (c + 1)), k = 0;
  for (size_t i = 0; i < n; i += (size_t)oc_utf8_len((unsigned char)s[i])) o[k++] = i < n ? i : n;
  o[k] = n;
  for (size_t i = 0; i <= c; i++) if (o[i] > n) o[i] = n;
  return o;
}

/* Unicode's Cased: upper-, lower- and titlecase letters, the characters that have a case mapping
 * (Ⅰ, Ⓐ), and those of Other_Lowercase / Other_Uppercase that have none and are not modifier
 * letters (ª º and the squared and negative squared capital letters) */
static int is_cased(uint32_t cp) {
  if (cp == 0xAA || cp == 0xBA || (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) || (cp >= 0x1F170 && cp <= 0x1F189))
    return 1;
  int cat = utf8proc_category((utf8proc_int32_t)cp);
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT ||
         utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp || utf8proc_toupper((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
}

/* Unicode's Case_Ignorable: marks, format characters, modifier letters and symbols, and the
 * apostrophes, periods and colons that may sit inside a word (Word_Break MidLetter, MidNumLet,
 * Single_Quote) */
static int is_case_ignorable(uint32_t cp) {
  static const uint32_t mid[] = {0x27, 0x2E, 0x3A, 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
  for (size_t i = 0; i < sizeof mid / sizeof *mid; i++) if (cp == mid[i]) return 1;
  int cat = utf8proc_category((utf8proc_int32_t)cp);
  return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_LM ||
         cat == UTF8PROC_CATEGORY_SK;
}

/* Whether the capital sigma at s[i] ends a word (Unicode's Final_Sigma condition, which Python's
 * str.lower() applies: a cased letter before it and none after it, case-ignorable characters
 * skipped on both sides). Each run of case-ignorable characters is walked by at most the two
 * sigmas around it, so a string costs linear time. */
static int final_sigma(const char *s, size_t n, size_t i) {
  uint32_t cp = 0;
  size_t j = i;
  int before = 0;
  while (j > 0) {
    size_t q = j - 1;
    while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80 && j - q < 4) q--;
    oc_utf8_decode(s + q, j - q, &cp);
    j = q;
    if (!is_case_ignorable(cp)) { before = is_cased(cp); break; }
  }
  if (!before) return 0;
  for (j = i + 2; j < n;) { /* after the sigma (2 bytes) */
    j += (size_t)oc_utf8_decode(s + j, n - j, &cp);
    if (!is_case_ignorable(cp)) return !is_cased(cp);
  }
  return 1;
}

/* str.upper() / str.lower(): Unicode's simple case mappings, and for lower() the final sigma
 * (Σ at the end of a word becomes ς, as in Python: 'ΣΑΣ'.lower() is 'σας') */
static val *case_str(rctx *r, const char *s, size_t n, int upper) {
  size_t ol;
  charge_bytes(r, n);
  char *o = upper ? oc_utf8_upper(s, n, &ol) : oc_utf8_lower(s, n, &ol);
  if (!o) rerr_code(r, OC_ERR_NOMEM, 0, 0, "out of memory");
  /* each code point maps to one code point, and σ and ς have Σ's length: walk both strings */
  for (size_t i = 0, k = 0; !upper && i < n && k < ol;) {
    uint32_t cp, ocp;
    int l = oc_utf8_decode(s + i, n - i, &cp), lo = oc_utf8_decode(o + k, ol - k, &ocp);
    if (cp == 0x3A3 && ocp == 0x3C3 && final_sigma(s, n, i)) o[k + 1] = (char)0x82; /* U+03C3 CF 83 -> U+03C2 CF 82 */
    i += (size_t)l;
    k += (size_t)lo;
  }
  val *v = NULL;
  if (ol <= OC_TEMPLATE_MAX_OUTPUT) v = vstr(r, o, ol);
  free(o);
  if (!v) check_strlen(r, ol);
  return v;
}

static int is_cased_cat(int cat) { return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT; }

/* str.title(): a cased character after an uncased one is titlecased, other cased ones lowered */
static val *title_str(rctx *r, const val *s) {
  sbuf b = {0};
  int prev_cased = 0;
  for (size_t i = 0; i < s->n;) {
    uint32_t cp;
    int l = oc_utf8_decode(s->s + i, s->n - i, &cp);
    int cat = utf8proc_category((utf8proc_int32_t)cp);
    char u[8];
    if (is_cased_cat(cat)) {
      uint32_t m = (uint32_t)(prev_cased ? utf8proc_tolower((utf8proc_int32_t)cp) : utf8proc_totitle((utf8proc_int32_t)cp));
      sb_add(r, &b, u, (size_t)oc_utf8_encode(m, u));
    } else sb_add(r, &b, s->s + i, (size_t)l);
    prev_cased = is_cased_cat(cat);
    i += (size_t)l;
  }
  return sb_val(r, &b);
}

/* the first character uppercased (full mapping), the rest lowered: str.capitalize() and the
 * pieces of Jinja's title filter */
static void add_capitalized(rctx *r, sbuf *b, const char *s, size_t n, int title_first) {
  if (!n) return;
  size_t l = (size_t)oc_utf8_len((unsigned char)s[0]);
  if (l > n) l = n;
  val *first;
  if (title_first) {
    uint32_t cp;
    oc_utf8_decode(s, n, &cp);
    char u[8];
    first = vstr(r, u, (size_t)oc_utf8_encode((uint32_t)utf8proc_totitle((utf8proc_int32_t)cp), u));
  } else first = case_str(r, s, l, 1);
  val *rest = case_str(r, s + l, n - l, 0);
  sb_add(r, b, first->s, first->n);
  sb_add(r, b, rest->s, rest->n);
}

/* Jinja's title filter: words begin after runs of -, whitespace, (, {, [, < */
static val *jinja_title(rctx *r, const val *s) {
  sbuf b = {0};
  size_t i = 0;
  while (i < s->n) {
    size_t st = i;
    /* a separator run */
    while (i < s->n) {
      uint32_t cp;
      int l = oc_utf8_decode(s->s + i, s->n - i, &cp);
      if (!(cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_ws_py(cp))) break;
      i += (size_t)l;
    }
    if (i > st) add_capitalized(r, &b, s->s + st, i - st, 0);
    st = i;
    while (i < s->n) {
      uint32_t cp;
      int l = oc_utf8_decode(s->s + i, s->n - i, &cp);
      if (cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_ws_py(cp)) break;
      i += (size_t)l;
    }
    if (i > st) add_capitalized(r, &b, s->s + st, i - st, 0);
  }
  return sb_val(r, &b);
}

/* str.strip / lstrip / rstrip: whitespace, or the code points of `chars` */
static val *strip_str(rctx *r, const val *s, const val *chars, int left, int right) {
  size_t a = 0, b = s->n;
  int use_chars = chars && chars->t == V_STR;
  if (chars && !use_chars && chars->t != V_NONE) rerr(r, 0, 0, "strip arg must be None or str");
  charge_bytes(r, s->n);
  while (left && a < b) {
    uint32_t cp;
    int l = oc_utf8_decode(s->s + a, b - a, &cp);
    int hit = use_chars ? memmem(chars->s, chars->n, s->s + a, (size_t)l) != NULL : is_ws_py(cp);
    if (!hit) break;
    a += (size_t)l;
  }
  while (right && b > a) {
    size_t q = b - 1;
    while (q > a && ((unsigned char)s->s[q] & 0xC0) == 0x80) q--;
    uint32_t cp;
    oc_utf8_decode(s->s + q, b - q, &cp);
    int hit = use_chars ? memmem(chars->s, chars->n, s->s + q, b - q) != NULL : is_ws_py(cp);
    if (!hit) break;
    b = q;
  }
  return vstr(r, s->s + a, b - a);
}

/* str.split(sep, maxsplit) and str.rsplit */
static val *split_str(rctx *r, const val *s, const val *sep, long long maxsplit, int from_right) {
  val *l = vlist(r, 0);
  charge_bytes(r, s->n);
  if (sep && sep->t == V_STR) {
    if (sep->n == 0) rerr(r, 0, 0, "empty separator");
    if (!from_right) {
      size_t st = 0;
      const char *hit;
      while (maxsplit != 0 && (hit = memmem(s->s + st, s->n - st, sep->s, sep->n))) {
        size_t at = (size_t)(hit - s->s);
        list_push(r, l, vstr(r, s->s + st, at - st));
        st = at + sep->n;
        if (maxsplit > 0) maxsplit--;
      }
      list_push(r, l, vstr(r, s->s + st, s->n - st));
      return l;
    }
    /* from the right: collect pieces backwards, then reverse */
    size_t end = s->n;
    while (maxsplit != 0 && end >= sep->n) {
      size_t at = end - sep->n, found = (size_t)-1;
      for (size_t q = at + 1; q-- > 0;) if (memcmp(s->s + q, sep->s, sep->n) == 0) { found = q; break; }
      if (found == (size_t)-1) break;
      list_push(r, l, vstr(r, s->s + found + sep->n, end - found - sep->n));
      end = found;
      if (maxsplit > 0) maxsplit--;
    }
    list_push(r, l, vstr(r, s->s, end));
  } else {
    if (sep && sep->t != V_NONE) rerr(r, 0, 0, "must be str or None, not %s", type_name(sep));
    if (!from_right) {
      size_t i = 0;
      while (i < s->n) {
        while (i < s->n) { uint32_t cp; int k = oc_utf8_decode(s->s + i, s->n - i, &cp); if (!is_ws_py(cp)) break; i += (size_t)k; }
        if (i >= s->n) break;
        if (maxsplit == 0) {
          size_t e = s->n;
          while (e > i) { size_t q = e - 1; while (q > i && ((unsigned char)s->s[q] & 0xC0) == 0x80) q--; uint32_t cp; oc_utf8_decode(s->s + q, e - q, &cp); if (!is_ws_py(cp)) break; e = q; }
          list_push(r, l, vstr(r, s->s + i, e - i));
          break;
        }
        size_t st = i;
        while (i < s->n) { uint32_t cp; int k = oc_utf8_decode(s->s + i, s->n - i, &cp); if (is_ws_py(cp)) break; i += (size_t)k; }
        list_push(r, l, vstr(r, s->s + st, i - st));
        if (maxsplit > 0) maxsplit--;
      }
      return l;
    }
    size_t e = s->n;
    while (e > 0) {
      while (e > 0) { size_t q = e - 1; while (q > 0 && ((unsigned char)s->s[q] & 0xC0) == 0x80) q--; uint32_t cp; oc_utf8_decode(s->s + q, e - q, &cp); if (!is_ws_py(cp)) break; e = q; }
      if (e == 0) break;
      if (maxsplit == 0) {
        size_t b = 0;
        while (b < e) { uint32_t cp; int k = oc_utf8_decode(s->s + b, e - b, &cp); if (!is_ws_py(cp)) break; b += (size_t)k; }
        list_push(r, l, vstr(r, s->s + b, e - b));
        break;
      }
      size_t b = e;
      while (b > 0) { size_t q = b - 1; while (q > 0 && ((unsigned char)s->s[q] & 0xC0) == 0x80) q--; uint32_t cp; oc_utf8_decode(s->s + q, b - q, &cp); if (is_ws_py(cp)) break; b = q; }
      list_push(r, l, vstr(r, s->s + b, e - b));
      e = b;
      if (maxsplit > 0) maxsplit--;
    }
  }
  if (from_right) /* pieces were collected from the end */
    for (int i = 0, j = l->len - 1; i < j; i++, j--) { val *t = l->items[i]; l->items[i] = l->items[j]; l->items[j] = t; }
  return l;
}

/* str.splitlines(): \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, U+2028, U+2029 end lines */
static val *splitlines_str(rctx *r, const val *s, int keepends) {
  val *l = vlist(r, 0);
  charge_bytes(r, s->n);
  size_t st = 0, i = 0;
  while (i < s->n) {
    uint32_t cp;
    int k = oc_utf8_decode(s->s + i, s->n - i, &cp);
    int brk = cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || (cp >= 0x1c && cp <= 0x1e) || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    if (!brk) { i += (size_t)k; continue; }
    size_t e = i + (size_t)k;
    if (cp == '\r' && e < s->n && s->s[e] == '\n') e++;
    list_push(r, l, vstr(r, s->s + st, (keepends ? e : i) - st));
    st = i = e;
  }
  if (st < s->n) list_push(r, l, vstr(r, s->s + st, s->n - st));
  return l;
}

/* memmem, with memchr for one-byte needles (the common case, and much faster per call) */
static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
  if (nn == 1) return memchr(h, nd[0], hn);
  return memmem(h, hn, nd, nn);
}

/* str.replace(old, new, count): an empty `old` inserts `new` around every code point. The
 * result's size is known (and checked) before it is built, in one buffer. */
static val *replace_str(rctx *r, const val *s, const val *from, const val *to, long long count) {
  if (from->t != V_STR || to->t != V_STR) rerr(r, 0, 0, "replace() arguments must be str");
  charge_bytes(r, s->n);
  size_t cnt = 0, limit = count < 0 ? (size_t)-1 : (size_t)count;
  if (from->n == 0) cnt = cp_count(s->s, s->n) + 1;
  else
    for (const char *p = s->s, *h; cnt < limit && (h = find_bytes(p, s->n - (size_t)(p - s->s), from->s, from->n)); p = h + from->n) cnt++;
  if (cnt > limit) cnt = limit;
  charge(r, (long long)cnt);
  size_t out_len = s->n;
  if (to->n > from->n) {
    size_t grow = to->n - from->n;
    if (cnt && grow > (OC_TEMPLATE_MAX_OUTPUT - (s->n < OC_TEMPLATE_MAX_OUTPUT ? s->n : OC_TEMPLATE_MAX_OUTPUT)) / cnt)
      check_strlen(r, (size_t)-1);
    out_len += grow * cnt;
  } else out_len -= (from->n - to->n) * cnt;
  check_strlen(r, out_len);
  charge_bytes(r, out_len);
  char *o = ralloc(r, out_len + 1);
  size_t pos = 0, k = 0;
  for (size_t done = 0; done < cnt; done++) {
    size_t at = pos, skip = 0;
    if (from->n) at = (size_t)(find_bytes(s->s + pos, s->n - pos, from->s, from->n) - s->s), skip = from->n;
    memcpy(o + k, s->s + pos, at - pos);
    k += at - pos;
    memcpy(o + k, to->s, to->n);
    k += to->n;
    pos = at + skip;
    if (!from->n && pos < s->n) { /* empty `old`: then one code point */
      size_t l = (size_t)oc_utf8_len((unsigned char)s->s[pos]);
      if (l > s->n - pos) l = s->n - pos;
      memcpy(o + k, s->s + pos, l);
      k += l;
      pos += l;
    }
  }
  memcpy(o + k, s->s + pos, s->n - pos);
  k += s->n - pos;
  o[k] = 0;
  val *v = V(r, V_STR);
  v->s = o;
  v->n = k;
  return v;
}

/* str * n (n may be 0 or negative: empty) */
static val *repeat_str(rctx *r, const val *s, long long times) {
  if (times <= 0 || s->n == 0) return vstr(r, "", 0);
  if ((unsigned long long)times > OC_TEMPLATE_MAX_OUTPUT / s->n) check_strlen(r, (size_t)-1);
  sbuf b = {0};
  for (long long i = 0; i < times; i++) sb_add(r, &b, s->s, s->n);
  return sb_val(r, &b);
}

static val *repeat_list(rctx *r, const val *l, long long times) {
  val *o = vlist(r, l->is_tuple);
  if (times <= 0 || l->len == 0) return o;
  if ((unsigned long long)times > (unsigned long long)OC_TEMPLATE_MAX_ITEMS / (unsigned)l->len)
    rerr(r, 0, 0, "list or dict longer than %d items", OC_TEMPLATE_MAX_ITEMS);
  for (long long i = 0; i < times; i++) for (int k = 0; k < l->len; k++) list_push(r, o, l->items[k]);
  return o;
}

/* ------------------------------------------------------------------ iteration, attributes, items */
/* what `for x in v` walks: list items, a string's characters, a dict's keys; undefined is
 * empty (as in jinja2), None and numbers are errors */
static val *to_list(rctx *r, int line, int col, val *v) {
  if (v->t == V_LIST) return v;
  val *l = vlist(r, 0);
  if (v->t == V_DICT && !v->is_ns) { for (int i = 0; i < v->len; i++) list_push(r, l, v->keys[i]); return l; }
  if (v->t == V_STR) {
    for (size_t i = 0; i < v->n;) {
      size_t k = (size_t)oc_utf8_len((unsigned char)v->s[i]);
      if (k > v->n - i) k = v->n - i;
      list_push(r, l, vstr(r, v->s + i, k));
      i += k;
    }
    return l;
  }
  if (v->t == V_UNDEF) return l;
  rerr(r, line, col, "'%s' object is not iterable", type_name(v));
}

/* a plain list copy (|list, sorted, ...): never the argument itself */
static val *list_copy(rctx *r, int line, int col, val *v) {
  val *src = to_list(r, line, col, v);
  if (src != v) return src;
  val *l = vlist(r, 0);
  for (int i = 0; i < v->len; i++) list_push(r, l, v->items[i]);
  return l;
}

static const char *const str_methods[] = {
  "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "replace", "lower", "upper", "title",
  "capitalize", "count", "find", "rfind", "index", "rindex", "join", "isdigit", "isalpha", "isalnum", "isspace", "islower",
  "isupper", "removeprefix", "removesuffix", "format", "center", "ljust", "rjust", "zfill", "partition", "rpartition",
  "swapcase", "casefold", "encode", "expandtabs", "isdecimal", "isnumeric", "isidentifier", "isprintable", "istitle",
  "isascii", "translate", "maketrans", "format_map", NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", "copy", "fromkeys", NULL};
static const char *const list_methods[] = {"count", "index", "copy", NULL};
/* methods the immutable sandbox refuses: the attribute reads as undefined */
static const char *const unsafe_methods[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear",
                                              "update", "setdefault", "popitem", "add", "discard", NULL};

/* Whether o has the attribute `name` starting with '_' in Python 3.11 (every object's own, and its
 * type's): jinja2's sandbox refuses to read those (''.__class__ is "unsafe"); such a name that the
 * type lacks is an ordinary missing attribute. Macros, functions and loop objects are taken to
 * have object's attributes only. */
static int py_private_attr(const val *o, const char *name) {
  static const char object_attrs[] = " __class__ __delattr__ __dir__ __doc__ __eq__ __format__ __ge__ __getattribute__ __getstate__"
    " __gt__ __hash__ __init__ __init_subclass__ __le__ __lt__ __ne__ __new__ __reduce__ __reduce_ex__ __repr__ __setattr__"
    " __sizeof__ __str__ __subclasshook__ ";
  static const char str_attrs[] = " __add__ __contains__ __getitem__ __getnewargs__ __iter__ __len__ __mod__ __mul__ __rmod__ __rmul__ ";
  static const char list_attrs[] = " __add__ __class_getitem__ __contains__ __delitem__ __getitem__ __iadd__ __imul__ __iter__ __len__"
    " __mul__ __reversed__ __rmul__ __setitem__ ";
  static const char tuple_attrs[] = " __add__ __class_getitem__ __contains__ __getitem__ __getnewargs__ __iter__ __len__ __mul__ __rmul__ ";
  static const char dict_attrs[] = " __class_getitem__ __contains__ __delitem__ __getitem__ __ior__ __iter__ __len__ __or__ __reversed__"
    " __ror__ __setitem__ ";
  static const char float_attrs[] = " __abs__ __add__ __bool__ __ceil__ __divmod__ __float__ __floor__ __floordiv__ __getformat__"
    " __getnewargs__ __int__ __mod__ __mul__ __neg__ __pos__ __pow__ __radd__ __rdivmod__ __rfloordiv__ __rmod__ __rmul__"
    " __round__ __rpow__ __rsub__ __rtruediv__ __sub__ __truediv__ __trunc__ ";
  static const char int_attrs[] = " __and__ __index__ __invert__ __lshift__ __or__ __rand__ __rlshift__ __ror__ __rrshift__ __rshift__"
    " __rxor__ __xor__ "; /* with float's, less __getformat__ */
  char key[80];
  size_t n = strlen(name);
  if (name[0] != '_' || n > 64) return 0;
  if (o->t == V_DICT && o->is_ns) return !strcmp(name, "__class__") || !strcmp(name, "_Namespace__attrs");
  snprintf(key, sizeof key, " %s ", name);
  if (strstr(object_attrs, key)) return 1;
  switch (o->t) {
  case V_STR: return strstr(str_attrs, key) != NULL;
  case V_LIST: return !o->is_iter && strstr(o->is_tuple ? tuple_attrs : list_attrs, key) != NULL;
  case V_DICT: return !o->is_loop && strstr(dict_attrs, key) != NULL;
  case V_NONE: return !strcmp(name, "__bool__");
  case V_BOOL: case V_INT: return strstr(int_attrs, key) || (strstr(float_attrs, key) && strcmp(name, "__getformat__"));
  case V_FLOAT: return strstr(float_attrs, key) != NULL;
  default: return 0;
  }
}

/* getattr(o, name) of Python: a method of a str, list or dict (a loop object and a namespace have
 * none), or NULL */
static val *py_attr(rctx *r, val *o, const char *name) {
  const char *const *names = o->t == V_STR ? str_methods : o->t == V_DICT && !o->is_ns && !o->is_loop ? dict_methods
                             : o->t == V_LIST && !o->is_iter ? list_methods : NULL;
  if (!names) return NULL;
  for (int i = 0; names[i]; i++)
    if (!strcmp(names[i], name)) { val *m = V(r, V_METHOD); m->self = o; m->name = names[i]; return m; }
  return NULL;
}

/* getattr(o, name) as jinja2's sandbox reads it: an attribute the sandbox refuses (one starting
 * with '_', a method that mutates) is an undefined value whose use is an error naming it; else
 * the Python attribute (a namespace's are its values), or NULL when o has none */
static val *sandbox_attr(rctx *r, val *o, const char *name) {
  int mutable_obj = (o->t == V_DICT && !o->is_ns && !o->is_loop) || (o->t == V_LIST && !o->is_iter);
  if (py_private_attr(o, name) || (mutable_obj && in_names(unsafe_methods, name))) return vundef_why(r, U_UNSAFE, name, o, NULL);
  if (o->t == V_DICT && o->is_ns) return dict_get_str(r, o, name, strlen(name));
  return py_attr(r, o, name);
}

/* obj.name: the attribute first (a dict's `items` is the method even when it has an "items"
 * key; a loop's attributes are its entries), then the item; undefined when neither exists (None.x
 * too) */
static val *get_attr(rctx *r, const expr *e, val *o, const char *name) {
  if (o->t == V_UNDEF) undefined_error(r, e->line, e->col, o, e->a);
  val *m = sandbox_attr(r, o, name);
  if (m) return m;
  if (o->t == V_DICT && !o->is_ns) { val *x = dict_get_str(r, o, name, strlen(name)); if (x) return x; }
  return vundef_why(r, U_ATTR, name, o, NULL);
}

/* obj[key]: the item first, then (for a string key) the attribute; undefined when neither */
static val *get_item(rctx *r, const expr *e, val *o, val *k) {
  if (o->t == V_UNDEF) undefined_error(r, e->line, e->col, o, e->a);
  if (o->t == V_DICT && hashable(k, 0)) {
    int i = dict_find(r, o, k);
    if (i >= 0) return o->items[i];
  } else if (o->t == V_LIST && !o->is_iter && is_int(k)) {
    long long i = k->i, n = o->len;
    if (i < 0) i += n;
    if (i >= 0 && i < n) return o->items[i];
  } else if (o->t == V_STR && is_int(k)) {
    size_t count, *off = cp_offsets(r, o->s, o->n, &count);
    long long i = k->i, n = (long long)count;
    if (i < 0) i += n;
    if (i >= 0 && i < n) return off ? vstr(r, o->s + off[i], off[i + 1] - off[i]) : vstr(r, o->s + i, 1);
  }
  if (k->t == V_STR) {
    val *m = sandbox_attr(r, o, k->s);
    return m ? m : vundef_why(r, U_ATTR, k->s, o, NULL);
  }
  return vundef_why(r, U_ITEM, NULL, o, k);
}

/* Python slice bounds for a sequence of n items (PySlice_AdjustIndices): *count items from
 * *start by step; every index it yields is in [0, n) */
static void slice_range(long long n, const val *lo, const val *hi, long long step, long long *start, long long *count) {
  long long s, t;
  if (step > 0) { s = 0; t = n; }
  else { s = n - 1; t = -1; }
  if (lo) { s = lo->i; if (s < 0) { s += n; if (s < 0) s = step < 0 ? -1 : 0; } else if (s >= n) s = step < 0 ? n - 1 : n; }
  if (hi) { t = hi->i; if (t < 0) { t += n; if (t < 0) t = step < 0 ? -1 : 0; } else if (t >= n) t = step < 0 ? n - 1 : n; }
  if (step > 0) *count = t > s ? (t - s - 1) / step + 1 : 0;
  else {
    unsigned long long mag = step == LLONG_MIN ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)-step;
    *count = s > t ? (long long)((unsigned long long)(s - t - 1) / mag + 1) : 0;
  }
  *start = s;
}

static val *do_slice(rctx *r, val *o, val *lo, val *hi, val *st) {
  /* a bound that is not an int or None makes Python raise TypeError, which jinja2 turns into undefined */
  val *b[3] = {lo, hi, st};
  for (int i = 0; i < 3; i++) {
    if (b[i] && b[i]->t == V_NONE) b[i] = NULL;
    if (b[i] && !is_int(b[i])) return vundef(r);
  }
  long long step = b[2] ? b[2]->i : 1;
  if (step == 0) rerr(r, 0, 0, "slice step cannot be zero");
  if (o->t == V_LIST && !o->is_iter) {
    long long start, count;
    slice_range(o->len, b[0], b[1], step, &start, &count);
    val *l = vlist(r, o->is_tuple);
    for (long long k = 0; k < count; k++) list_push(r, l, o->items[start + k * step]);
    return l;
  }
  if (o->t == V_STR) {
    size_t ncp, *off = cp_offsets(r, o->s, o->n, &ncp);
    long long start, count;
    slice_range((long long)ncp, b[0], b[1], step, &start, &count);
    if (step == 1) {
      size_t a = off ? off[start] : (size_t)start, z = off ? off[start + count] : (size_t)(start + count);
      return vstr(r, o->s + a, z - a);
    }
    sbuf sb = {0};
    for (long long k = 0; k < count; k++) {
      long long i = start + k * step;
      size_t a = off ? off[i] : (size_t)i, z = off ? off[i + 1] : (size_t)i + 1;
      sb_add(r, &sb, o->s + a, z - a);
    }
    return sb_val(r, &sb);
  }
  if (o->t == V_UNDEF) rerr(r, 0, 0, "cannot slice an undefined value");
  return vundef(r);
}

static int contains(rctx *r, int line, int col, val *hay, val *needle) {
  if (hay->t == V_STR) {
    if (needle->t != V_STR) rerr(r, line, col, "'in <string>' requires string as left operand, not %s", type_name(needle));
    charge_bytes(r, hay->n);
    return needle->n == 0 || memmem(hay->s, hay->n, needle->s, needle->n) != NULL;
  }
  if (hay->t == V_LIST) {
    for (int i = 0; i < hay->len; i++) { charge(r, 1); if (equal(r, hay->items[i], needle, 0)) return 1; }
    return 0;
  }
  if (hay->t == V_DICT && !hay->is_ns) {
    if (!hashable(needle, 0)) rerr(r, line, col, "unhashable type: '%s'", type_name(needle));
    return dict_find(r, hay, needle) >= 0;
  }
  if (hay->t == V_UNDEF) return 0; /* jinja2's Undefined iterates as empty */
  rerr(r, line, col, "argument of type '%s' is not iterable", type_name(hay));
}

/* ------------------------------------------------------------------ calls */
typedef struct {
  val **pos;
  int npos;
  const char **kwn;
  val **kwv;
  int nkw;
} callargs;

/* a keyword argument, else the positional one at `pos` (-1: keyword only) */
static val *arg(const callargs *a, const char *name, int pos) {
  for (int i = 0; i < a->nkw; i++) if (!strcmp(a->kwn[i], name)) return a->kwv[i];
  return pos >= 0 && pos < a->npos ? a->pos[pos] : NULL;
}

static long long int_arg(rctx *r, const expr *e, const val *v, const char *what, long long dflt) {
  if (!v || v->t == V_NONE) return dflt;
  if (!is_int(v)) rerr(r, e->line, e->col, "%s must be an integer, not %s", what, type_name(v));
  return v->i;
}

static int str_pred(const val *s, const char *name) {
  if (!s->n) return 0;
  int cased = 0, any_upper = 0, any_lower = 0;
  for (size_t i = 0; i < s->n;) {
    uint32_t cp;
    i += (size_t)oc_utf8_decode(s->s + i, s->n - i, &cp);
    int cat = utf8proc_category((utf8proc_int32_t)cp);
    int alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
    int digit = cat == UTF8PROC_CATEGORY_ND;
    if (!strcmp(name, "isdigit") || !strcmp(name, "isdecimal")) { if (!digit) return 0; }
    else if (!strcmp(name, "isnumeric")) { if (!oc_is_numeric(cp)) return 0; }
    else if (!strcmp(name, "isalpha")) { if (!alpha) return 0; }
    else if (!strcmp(name, "isalnum")) { if (!alpha && !oc_is_numeric(cp)) return 0; }
    else if (!strcmp(name, "isspace")) { if (!is_ws_py(cp)) return 0; }
    else if (!strcmp(name, "isascii")) { if (cp >= 0x80) return 0; }
    if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT) { cased = 1; any_upper = 1; }
    if (cat == UTF8PROC_CATEGORY_LL) { cased = 1; any_lower = 1; }
  }
  if (!strcmp(name, "islower")) return cased && !any_upper;
  if (!strcmp(name, "isupper")) return cased && !any_lower;
  return 1;
}

static val *join_values(rctx *r, const val *sep, val *items) {
  sbuf b = {0};
  for (int i = 0; i < items->len; i++) {
    if (i) sb_add(r, &b, sep->s, sep->n);
    val *x = str_of(r, items->items[i]);
    sb_add(r, &b, x->s, x->n);
  }
  return sb_val(r, &b);
}

static val *find_str(rctx *r, const val *s, const val *sub, int last) {
  charge_bytes(r, s->n);
  if (sub->n > s->n) return vint(r, -1);
  size_t at = (size_t)-1;
  if (!last) { const char *h = memmem(s->s, s->n, sub->s, sub->n); if (h) at = (size_t)(h - s->s); }
  else for (size_t q = s->n - sub->n + 1; q-- > 0;) if (memcmp(s->s + q, sub->s, sub->n) == 0) { at = q; break; }
  if (at == (size_t)-1) return vint(r, -1);
  return vint(r, (long long)cp_count(s->s, at)); /* Python counts code points */
}

static val *call_str_method(rctx *r, const expr *e, val *s, const char *n, callargs *a) {
  val *a0 = a->npos > 0 ? a->pos[0] : NULL, *a1 = a->npos > 1 ? a->pos[1] : NULL;
  if (!strcmp(n, "startswith") || !strcmp(n, "endswith")) {
    if (!a0) rerr(r, e->line, e->col, "%s() takes at least 1 argument", n);
    val one = {0}, *opts = a0;
    if (a0->t == V_STR) { one.t = V_LIST; one.items = &a0; one.len = 1; opts = &one; }
    if (opts->t != V_LIST || !opts->is_tuple) {
      if (opts != &one) rerr(r, e->line, e->col, "%s first arg must be str or a tuple of str, not %s", n, type_name(a0));
    }
    for (int i = 0; i < opts->len; i++) {
      val *p = opts->items[i];
      if (p->t != V_STR) rerr(r, e->line, e->col, "tuple for %s must only contain str", n);
      if (p->n <= s->n && memcmp(n[0] == 's' ? s->s : s->s + s->n - p->n, p->s, p->n) == 0) return vbool(r, 1);
    }
    return vbool(r, 0);
  }
  if (!strcmp(n, "strip")) return strip_str(r, s, a0, 1, 1);
  if (!strcmp(n, "lstrip")) return strip_str(r, s, a0, 1, 0);
  if (!strcmp(n, "rstrip")) return strip_str(r, s, a0, 0, 1);
  if (!strcmp(n, "split") || !strcmp(n, "rsplit"))
    return split_str(r, s, arg(a, "sep", 0), int_arg(r, e, arg(a, "maxsplit", 1), "maxsplit", -1), n[0] == 'r');
  if (!strcmp(n, "splitlines")) { val *k = arg(a, "keepends", 0); return splitlines_str(r, s, k && truthy(k)); }
  if (!strcmp(n, "replace")) {
    if (!a0 || !a1) rerr(r, e->line, e->col, "replace() takes at least 2 arguments");
    return replace_str(r, s, a0, a1, int_arg(r, e, arg(a, "count", 2), "count", -1));
  }
  if (!strcmp(n, "lower") || !strcmp(n, "casefold")) return case_str(r, s->s, s->n, 0);
  if (!strcmp(n, "upper")) return case_str(r, s->s, s->n, 1);
  if (!strcmp(n, "title")) return title_str(r, s);
  if (!strcmp(n, "capitalize")) { sbuf b = {0}; add_capitalized(r, &b, s->s, s->n, 1); return sb_val(r, &b); }
  if (!strcmp(n, "count") || !strcmp(n, "find") || !strcmp(n, "rfind") || !strcmp(n, "index") || !strcmp(n, "rindex")) {
    if (!a0 || a0->t != V_STR) rerr(r, e->line, e->col, "%s() needs a str argument", n);
    if (a->npos > 1) rerr_unsupported(r, e->line, e->col, "%s() with start/end arguments is not supported", n);
    if (n[0] == 'c') {
      charge_bytes(r, s->n);
      if (!a0->n) return vint(r, (long long)cp_count(s->s, s->n) + 1);
      long long c = 0;
      for (const char *p = s->s, *h; (h = memmem(p, s->n - (size_t)(p - s->s), a0->s, a0->n)); p = h + a0->n) c++;
      return vint(r, c);
    }
    val *at = find_str(r, s, a0, n[0] == 'r');
    if (at->i < 0 && (n[0] == 'i' || n[1] == 'i')) rerr(r, e->line, e->col, "substring not found");
    return at;
  }
  if (!strcmp(n, "join")) {
    if (!a0) rerr(r, e->line, e->col, "join() takes exactly one argument");
    val *l = to_list(r, e->line, e->col, a0);
    for (int i = 0; i < l->len; i++)
      if (l->items[i]->t != V_STR) rerr(r, e->line, e->col, "sequence item %d: expected str instance, %s found", i, type_name(l->items[i]));
    return join_values(r, s, l);
  }
  if (!strcmp(n, "removeprefix") || !strcmp(n, "removesuffix")) {
    if (!a0 || a0->t != V_STR) rerr(r, e->line, e->col, "%s() needs a str argument", n);
    int pre = n[6] == 'p';
    if (a0->n <= s->n && memcmp(pre ? s->s : s->s + s->n - a0->n, a0->s, a0->n) == 0)
      return vstr(r, pre ? s->s + a0->n : s->s, s->n - a0->n);
    return s;
  }
  if (!strncmp(n, "is", 2) && (!strcmp(n, "isdigit") || !strcmp(n, "isdecimal") || !strcmp(n, "isnumeric") || !strcmp(n, "isalpha") ||
                               !strcmp(n, "isalnum") || !strcmp(n, "isspace") || !strcmp(n, "islower") || !strcmp(n, "isupper") ||
                               !strcmp(n, "isascii")))
    return vbool(r, !strcmp(n, "isascii") && !s->n ? 1 : str_pred(s, n));
  rerr_unsupported(r, e->line, e->col, "str.%s() is not supported", n);
}

static val *call_method(rctx *r, const expr *e, val *m, callargs *a) {
  val *s = m->self;
  const char *n = m->name;
  val *a0 = a->npos > 0 ? a->pos[0] : NULL, *a1 = a->npos > 1 ? a->pos[1] : NULL;
  if (s->t == V_STR) return call_str_method(r, e, s, n, a);
  if (s->t == V_DICT) {
    if (!strcmp(n, "items") || !strcmp(n, "keys") || !strcmp(n, "values")) {
      val *l = vlist(r, 0);
      for (int i = 0; i < s->len; i++)
        list_push(r, l, n[0] == 'k' ? s->keys[i] : n[0] == 'v' ? s->items[i] : vpair(r, s->keys[i], s->items[i]));
      return l;
    }
    if (!strcmp(n, "get")) {
      if (!a0) rerr(r, e->line, e->col, "get expected at least 1 argument, got 0");
      if (!hashable(a0, 0)) rerr(r, e->line, e->col, "unhashable type: '%s'", type_name(a0));
      int i = dict_find(r, s, a0);
      return i >= 0 ? s->items[i] : (a1 ? a1 : V(r, V_NONE));
    }
  } else if (s->t == V_LIST) {
    if (!strcmp(n, "count")) {
      long long c = 0;
      for (int i = 0; i < s->len; i++) c += a0 && equal(r, s->items[i], a0, 0);
      return vint(r, c);
    }
    if (!strcmp(n, "index")) {
      for (int i = 0; i < s->len; i++) if (a0 && equal(r, s->items[i], a0, 0)) return vint(r, i);
      rerr(r, e->line, e->col, "value is not in list");
    }
  }
  rerr_unsupported(r, e->line, e->col, "%s.%s() is not supported", type_name(s), n);
}

/* ------------------------------------------------------------------ filters */
static val *apply_filter(rctx *r, const expr *e, const char *name, val *v, callargs *a);
static int apply_test(rctx *r, const expr *e, const char *name, val *v, callargs *a);

/* make_attrgetter: "a.b.0" looks up a, then b, then item 0, each by subscription */
static val *attr_path(rctx *r, const expr *e, val *item, const val *attr) {
  if (!attr || attr->t == V_NONE) return item;
  if (is_int(attr)) return get_item(r, e, item, (val *)attr);
  if (attr->t != V_STR) rerr(r, e->line, e->col, "attribute must be a string or an integer");
  for (size_t i = 0; i <= attr->n;) {
    const char *dot = memchr(attr->s + i, '.', attr->n - i);
    size_t end = dot ? (size_t)(dot - attr->s) : attr->n, l = end - i;
    int digits = l > 0;
    for (size_t k = i; k < end; k++) if (!isdigit((unsigned char)attr->s[k])) digits = 0;
    val *key;
    if (digits && l < 18) key = vint(r, strtoll(attr->s + i, NULL, 10));
    else key = vstr(r, attr->s + i, l);
    if (item->t == V_UNDEF) return item;
    item = get_item(r, e, item, key);
    i = end + 1;
  }
  return item;
}

static val *lower_if_str(rctx *r, val *v) { return v->t == V_STR ? case_str(r, v->s, v->n, 0) : v; }

static val *new_iter(rctx *r) { val *l = vlist(r, 0); l->is_iter = 1; return l; }

/* select / reject / selectattr / rejectattr: a falsy value (none, undefined, empty) gives nothing */
static val *f_select(rctx *r, const expr *e, val *v, callargs *a, int reject, int by_attr) {
  val *out = new_iter(r);
  if (!truthy(v)) return out;
  val *l = to_list(r, e->line, e->col, v);
  if (by_attr && !a->npos) rerr(r, e->line, e->col, "Missing parameter for attribute name");
  int off = by_attr ? 1 : 0;
  const char *test = NULL;
  callargs ta = {0};
  if (a->npos > off) {
    if (a->pos[off]->t != V_STR) rerr(r, e->line, e->col, "the test name must be a string");
    test = a->pos[off]->s;
    ta.pos = a->pos + off + 1;
    ta.npos = a->npos - off - 1;
    ta.kwn = a->kwn;
    ta.kwv = a->kwv;
    ta.nkw = a->nkw;
  }
  for (int i = 0; i < l->len; i++) {
    charge(r, 1);
    val *x = by_attr ? attr_path(r, e, l->items[i], a->pos[0]) : l->items[i];
    int ok = test ? apply_test(r, e, test, x, &ta) : truthy(x);
    if (ok != reject) list_push(r, out, l->items[i]);
  }
  return out;
}

static val *f_map(rctx *r, const expr *e, val *v, callargs *a) {
  val *out = new_iter(r);
  if (!truthy(v)) return out;
  val *l = to_list(r, e->line, e->col, v);
  val *attr = a->npos ? NULL : arg(a, "attribute", -1);
  if (!attr && !a->npos) rerr(r, e->line, e->col, "map requires a filter argument");
  if (!attr && a->pos[0]->t != V_STR) rerr(r, e->line, e->col, "map's filter name must be a string");
  val *dflt = arg(a, "default", -1);
  callargs rest = {a->pos + 1, a->npos - 1, a->kwn, a->kwv, a->nkw};
  for (int i = 0; i < l->len; i++) {
    charge(r, 1);
    if (attr) {
      val *x = attr_path(r, e, l->items[i], attr);
      list_push(r, out, x->t == V_UNDEF && dflt && dflt->t != V_NONE ? dflt : x);
    } else list_push(r, out, apply_filter(r, e, a->pos[0]->s, l->items[i], &rest));
  }
  return out;
}

static val *f_join(rctx *r, const expr *e, val *v, callargs *a) {
  val *l = to_list(r, e->line, e->col, v);
  val *sep = arg(a, "d", 0), *attr = arg(a, "attribute", 1);
  sep = sep ? str_of(r, sep) : vstr(r, "", 0);
  if (attr && attr->t != V_NONE) {
    val *m = vlist(r, 0);
    for (int i = 0; i < l->len; i++) list_push(r, m, attr_path(r, e, l->items[i], attr));
    l = m;
  }
  return join_values(r, sep, l);
}

static val *f_length(rctx *r, const expr *e, val *v) {
  if (v->t == V_STR) { charge_bytes(r, v->n); return vint(r, (long long)cp_count(v->s, v->n)); }
  if ((v->t == V_LIST && !v->is_iter) || (v->t == V_DICT && !v->is_ns)) return vint(r, v->len);
  if (v->t == V_UNDEF) return vint(r, 0);
  rerr(r, e->line, e->col, "object of type '%s' has no len()", type_name(v));
}

static val *f_tojson(rctx *r, const expr *e, val *v, callargs *a) {
  val *ind = arg(a, "indent", 0), *seps = arg(a, "separators", 1), *sk = arg(a, "sort_keys", 2), *ea = arg(a, "ensure_ascii", -1);
  json_opts o = {NULL, ", ", ": ", sk && truthy(sk), ea && truthy(ea)};
  if (ind && ind->t != V_NONE) {
    if (ind->t == V_STR) o.indent = ind->s;
    else if (is_int(ind)) {
      long long w = ind->i < 0 ? 0 : ind->i;
      if (w > 1000) rerr(r, e->line, e->col, "tojson indent too large");
      char *sp = ralloc(r, (size_t)w + 1);
      memset(sp, ' ', (size_t)w);
      o.indent = sp;
    } else rerr(r, e->line, e->col, "tojson indent must be an integer or a string");
    o.item_sep = ",";
  }
  if (seps && seps->t != V_NONE) {
    if (seps->t != V_LIST || seps->len != 2 || seps->items[0]->t != V_STR || seps->items[1]->t != V_STR)
      rerr(r, e->line, e->col, "tojson separators must be a pair of strings");
    o.item_sep = seps->items[0]->s;
    o.key_sep = seps->items[1]->s;
  }
  sbuf b = {0};
  to_json(r, &b, v, &o, 0, 0);
  return sb_val(r, &b);
}

static val *f_dictsort(rctx *r, const expr *e, val *v, callargs *a) {
  if (v->t != V_DICT || v->is_ns) rerr(r, e->line, e->col, "dictsort needs a mapping, not %s", type_name(v));
  val *cs = arg(a, "case_sensitive", 0), *by = arg(a, "by", 1), *rev = arg(a, "reverse", 2);
  int pos = 0;
  if (by && by->t == V_STR && !strcmp(by->s, "value")) pos = 1;
  else if (by && !(by->t == V_STR && !strcmp(by->s, "key"))) rerr(r, e->line, e->col, "You can only sort by either \"key\" or \"value\"");
  int n = v->len;
  val **items = ralloc(r, sizeof *items * (size_t)(n + 1)), **keys = ralloc(r, sizeof *keys * (size_t)(n + 1));
  for (int i = 0; i < n; i++) {
    items[i] = vpair(r, v->keys[i], v->items[i]);
    keys[i] = pos ? v->items[i] : v->keys[i];
    if (!(cs && truthy(cs))) keys[i] = lower_if_str(r, keys[i]);
  }
  sort_by_keys(r, items, keys, n, rev && truthy(rev));
  val *l = vlist(r, 0);
  for (int i = 0; i < n; i++) list_push(r, l, items[i]);
  return l;
}

/* sort / unique / min / max share make_attrgetter with lower-casing unless case_sensitive */
static val *sort_key(rctx *r, const expr *e, val *item, const val *attr, int case_sensitive) {
  val *k = attr_path(r, e, item, attr);
  return case_sensitive ? k : lower_if_str(r, k);
}

static val *f_sort(rctx *r, const expr *e, val *v, callargs *a) {
  val *rev = arg(a, "reverse", 0), *cs = arg(a, "case_sensitive", 1), *attr = arg(a, "attribute", 2);
  val *l = list_copy(r, e->line, e->col, v);
  val **keys = ralloc(r, sizeof *keys * (size_t)(l->len + 1));
  for (int i = 0; i < l->len; i++) {
    if (attr && attr->t == V_STR && memchr(attr->s, ',', attr->n))
      rerr_unsupported(r, e->line, e->col, "sort by several attributes is not supported");
    keys[i] = sort_key(r, e, l->items[i], attr, cs && truthy(cs));
  }
  sort_by_keys(r, l->items, keys, l->len, rev && truthy(rev));
  return l;
}

static val *f_unique(rctx *r, const expr *e, val *v, callargs *a) {
  val *cs = arg(a, "case_sensitive", 0), *attr = arg(a, "attribute", 1);
  val *l = to_list(r, e->line, e->col, v), *out = new_iter(r), *seen = V(r, V_DICT);
  for (int i = 0; i < l->len; i++) {
    val *k = sort_key(r, e, l->items[i], attr, cs && truthy(cs));
    if (!hashable(k, 0)) rerr(r, e->line, e->col, "unhashable type: '%s'", type_name(k));
    if (dict_find(r, seen, k) >= 0) continue;
    dict_set(r, seen, k, k);
    list_push(r, out, l->items[i]);
  }
  return out;
}

static val *f_minmax(rctx *r, const expr *e, val *v, callargs *a, int want_max) {
  val *cs = arg(a, "case_sensitive", 0), *attr = arg(a, "attribute", 1);
  val *l = to_list(r, e->line, e->col, v);
  if (!l->len) return vundef_why(r, U_HINT, "No aggregated item, sequence was empty.", NULL, NULL);
  int best = 0;
  val *bk = sort_key(r, e, l->items[0], attr, cs && truthy(cs));
  for (int i = 1; i < l->len; i++) {
    val *k = sort_key(r, e, l->items[i], attr, cs && truthy(cs));
    int c = compare(r, k, bk, 0);
    if (want_max ? c == 1 : c == -1) { best = i; bk = k; }
  }
  return l->items[best];
}

static val *arith(rctx *r, const expr *e, int op, val *a, val *b);

static val *f_sum(rctx *r, const expr *e, val *v, callargs *a) {
  val *attr = arg(a, "attribute", 0), *acc = arg(a, "start", 1);
  val *l = to_list(r, e->line, e->col, v);
  if (!acc) acc = vint(r, 0);
  for (int i = 0; i < l->len; i++) acc = arith(r, e, '+', acc, attr_path(r, e, l->items[i], attr));
  return acc;
}

/* The value of a Unicode decimal digit (category Nd), else -1. Unicode encodes every set of
 * decimal digits as one run of ten code points from 0 to 9 (sets may follow one another, as the
 * mathematical digits do, five sets in a row), so the value is the distance from the start of the
 * run of Nd code points, modulo 10; runs are at most 50 long. */
static int decimal_value(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9' ? (int)(cp - '0') : -1;
  if (utf8proc_category((utf8proc_int32_t)cp) != UTF8PROC_CATEGORY_ND) return -1;
  uint32_t start = cp;
  while (start > 0 && utf8proc_category((utf8proc_int32_t)(start - 1)) == UTF8PROC_CATEGORY_ND) start--;
  return (int)((cp - start) % 10);
}

/* The text Python's int() and float() parse for a str: each Unicode decimal digit becomes its
 * ASCII digit ('３' and '٣' are 3) and each whitespace character a space; any other non-ASCII
 * character makes the number invalid ('?'), as in CPython's
 * _PyUnicode_TransformDecimalAndSpaceToASCII. ASCII text is returned as it is. */
static const char *py_number_text(rctx *r, const char *s, size_t n, size_t *out_n) {
  size_t i = 0;
  while (i < n && (unsigned char)s[i] < 0x80) i++;
  *out_n = n;
  if (i == n) return s;
  char *o = ralloc(r, n + 1);
  size_t k = 0;
  for (i = 0; i < n;) {
    uint32_t cp;
    i += (size_t)oc_utf8_decode(s + i, n - i, &cp);
    int d = decimal_value(cp);
    o[k++] = cp < 0x80 ? (char)cp : d >= 0 ? (char)('0' + d) : is_ws_py(cp) ? ' ' : '?';
  }
  o[k] = 0;
  *out_n = k;
  return o;
}

/* Python int(str, base) on py_number_text's ASCII: surrounding whitespace, a sign, the prefix
 * 0x / 0o / 0b (base 0 picks the base by it, and then forbids other leading zeros: "010"; base 16,
 * 8 or 2 allows its own prefix), digits with single '_' between them (one '_' may follow a
 * prefix). base is 0 or 2..36. 1: a number (*overflow when it does not fit 64 bits); 0: not one */
static int parse_py_int(const char *s, size_t n, int base, long long *out, int *overflow) {
  size_t i = 0;
  while (i < n && is_ws_py((unsigned char)s[i])) i++;
  while (n > i && is_ws_py((unsigned char)s[n - 1])) n--;
  int neg = 0;
  if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  char prefix = i + 1 < n && s[i] == '0' ? (char)tolower((unsigned char)s[i + 1]) : 0;
  int zeros_only = 0; /* base 0 without a prefix: a leading zero allows only zeros ("00", "0_0") */
  if (base == 0) {
    base = prefix == 'x' ? 16 : prefix == 'o' ? 8 : prefix == 'b' ? 2 : 10;
    zeros_only = base == 10 && i < n && s[i] == '0';
  }
  if ((base == 16 && prefix == 'x') || (base == 8 && prefix == 'o') || (base == 2 && prefix == 'b')) {
    i += 2;
    if (i < n && s[i] == '_') i++;
  }
  unsigned long long v = 0;
  int nd = 0;
  *overflow = 0;
  for (; i < n; i++) {
    if (s[i] == '_' && nd && i + 1 < n && s[i + 1] != '_') continue;
    int d = isdigit((unsigned char)s[i]) ? s[i] - '0' : isalpha((unsigned char)s[i]) ? tolower((unsigned char)s[i]) - 'a' + 10 : 99;
    if (d >= base) return 0;
    if (v > (ULLONG_MAX - (unsigned)d) / (unsigned)base) *overflow = 1;
    else v = v * (unsigned)base + (unsigned)d;
    nd++;
  }
  if (!nd || (zeros_only && (v || *overflow))) return 0;
  if (v > (unsigned long long)LLONG_MAX + (unsigned long long)neg) *overflow = 1;
  *out = neg ? (long long)(0 - v) : (long long)v;
  return 1;
}

/* Python float(str) on py_number_text's ASCII: decimal, inf, nan (no hex, which strtod would
 * take), '_' between digits */
static int parse_py_float(const char *s, size_t n, double *out) {
  size_t i = 0;
  while (i < n && is_ws_py((unsigned char)s[i])) i++;
  while (n > i && is_ws_py((unsigned char)s[n - 1])) n--;
  if (i == n || n - i > 400) return 0;
  char buf[408];
  size_t k = 0;
  for (size_t q = i; q < n; q++) {
    char c = s[q];
    if (c == '_') { if (!k || !isdigit((unsigned char)buf[k - 1]) || q + 1 >= n || !isdigit((unsigned char)s[q + 1])) return 0; continue; }
    if (!c || c == 'x' || c == 'X' || c == 'p' || c == 'P') return 0; /* (strtod would stop at a NUL) */
    buf[k++] = c;
  }
  buf[k] = 0;
  char *end;
  double d = strtod(buf, &end);
  if (*end || end == buf) return 0;
  const char *body = buf + (buf[0] == '+' || buf[0] == '-');
  if (isalpha((unsigned char)body[0]) && strcasecmp(body, "inf") && strcasecmp(body, "infinity") && strcasecmp(body, "nan")) return 0;
  *out = d;
  return 1;
}

static val *float_to_int(rctx *r, const expr *e, double d) {
  if (isnan(d)) return NULL;
  if (isinf(d)) rerr(r, e->line, e->col, "cannot convert float infinity to integer");
  double t = trunc(d);
  if (t >= 9223372036854775808.0 || t < -9223372036854775808.0)
    rerr(r, e->line, e->col, "integer %.17g does not fit in 64 bits", t);
  return vint(r, (long long)t);
}

/* jinja2's int filter: int(value, base) for a str (int(value) otherwise), else int(float(value)),
 * else the default. A base that is not an int, or not 0 or 2..36, makes Python raise the
 * TypeError / ValueError jinja2 catches: the float conversion decides then. */
static val *f_int(rctx *r, const expr *e, val *v, callargs *a) {
  val *dflt = arg(a, "default", 0), *bv = arg(a, "base", 1);
  if (!dflt) dflt = vint(r, 0);
  if (is_int(v)) return vint(r, v->i);
  if (v->t == V_FLOAT) { val *x = float_to_int(r, e, v->f); return x ? x : dflt; }
  if (v->t != V_STR) return dflt;
  long long base = !bv ? 10 : is_int(bv) ? bv->i : -1;
  size_t n;
  const char *s = py_number_text(r, v->s, v->n, &n);
  long long x;
  int ovf;
  if ((base == 0 || (base >= 2 && base <= 36)) && parse_py_int(s, n, (int)base, &x, &ovf)) {
    if (ovf) rerr(r, e->line, e->col, "integer %.40s does not fit in 64 bits", v->s);
    return vint(r, x);
  }
  double d;
  if (parse_py_float(s, n, &d)) { val *y = float_to_int(r, e, d); return y ? y : dflt; }
  return dflt;
}

static val *f_float(rctx *r, val *v, callargs *a) {
  val *dflt = arg(a, "default", 0);
  double d;
  if (num_of(v, &d)) return vfloat(r, d);
  if (v->t == V_STR) {
    size_t n;
    const char *s = py_number_text(r, v->s, v->n, &n);
    if (parse_py_float(s, n, &d)) return vfloat(r, d);
  }
  return dflt ? dflt : vfloat(r, 0.0);
}

static val *f_round(rctx *r, const expr *e, val *v, callargs *a) {
  long long prec = int_arg(r, e, arg(a, "precision", 0), "precision", 0);
  val *m = arg(a, "method", 1);
  const char *method = m && m->t == V_STR ? m->s : "common";
  if (strcmp(method, "common") && strcmp(method, "ceil") && strcmp(method, "floor"))
    rerr(r, e->line, e->col, "method must be common, ceil or floor");
  if (prec < -300 || prec > 300) rerr(r, e->line, e->col, "round precision out of range");
  double d;
  if (!num_of(v, &d)) rerr(r, e->line, e->col, "round needs a number, not %s", type_name(v));
  if (!strcmp(method, "common")) {
    if (is_int(v) && prec >= 0) return vint(r, v->i);
    if (is_int(v)) rerr_unsupported(r, e->line, e->col, "round of an integer to negative precision is not supported");
    if (isnan(d) || isinf(d) || prec < 0) {
      if (prec < 0) rerr_unsupported(r, e->line, e->col, "round to negative precision is not supported");
      return vfloat(r, d);
    }
    char buf[640]; /* 309 integer digits of DBL_MAX, the point, 300 decimals, sign */
    snprintf(buf, sizeof buf, "%.*f", (int)prec, d); /* glibc rounds the exact binary value half-even, as Python */
    return vfloat(r, strtod(buf, NULL));
  }
  double scale = pow(10.0, (double)prec);
  return vfloat(r, (method[0] == 'c' ? ceil(d * scale) : floor(d * scale)) / scale);
}

static val *f_indent(rctx *r, const expr *e, val *v, callargs *a) {
  val *s = str_of(r, v), *w = arg(a, "width", 0), *first = arg(a, "first", 1), *blank = arg(a, "blank", 2);
  val *ind;
  if (!w) ind = vstr(r, "    ", 4);
  else if (w->t == V_STR) ind = w;
  else { long long n = int_arg(r, e, w, "width", 4); ind = repeat_str(r, vstr(r, " ", 1), n); }
  sbuf t = {0};
  sb_add(r, &t, s->s, s->n);
  sb_char(r, &t, '\n'); /* jinja2 appends a newline for splitlines */
  val *lines = splitlines_str(r, sb_val(r, &t), 0);
  sbuf b = {0};
  if (first && truthy(first)) sb_add(r, &b, ind->s, ind->n);
  for (int i = 0; i < lines->len; i++) {
    val *ln = lines->items[i];
    if (i) {
      sb_char(r, &b, '\n');
      if (ln->n || (blank && truthy(blank))) sb_add(r, &b, ind->s, ind->n);
    }
    sb_add(r, &b, ln->s, ln->n);
  }
  return sb_val(r, &b);
}

static val *f_escape(rctx *r, val *v) {
  val *s = str_of(r, v);
  sbuf b = {0};
  for (size_t i = 0; i < s->n; i++) {
    switch (s->s[i]) {
    case '&': sb_str(r, &b, "&amp;"); break;
    case '<': sb_str(r, &b, "&lt;"); break;
    case '>': sb_str(r, &b, "&gt;"); break;
    case '"': sb_str(r, &b, "&#34;"); break;
    case '\'': sb_str(r, &b, "&#39;"); break;
    default: sb_char(r, &b, s->s[i]);
    }
  }
  return sb_val(r, &b);
}

static val *f_items(rctx *r, const expr *e, val *v) {
  val *out = new_iter(r);
  if (v->t == V_UNDEF) return out;
  if (v->t != V_DICT || v->is_ns) rerr(r, e->line, e->col, "Can only get item pairs from a mapping.");
  for (int i = 0; i < v->len; i++) list_push(r, out, vpair(r, v->keys[i], v->items[i]));
  return out;
}

static val *f_wordcount(rctx *r, val *v) {
  val *s = str_of(r, v);
  long long c = 0;
  int in_word = 0;
  for (size_t i = 0; i < s->n;) {
    uint32_t cp;
    i += (size_t)oc_utf8_decode(s->s + i, s->n - i, &cp);
    int w = cp == '_' || oc_is_alnum(cp);
    if (w && !in_word) c++;
    in_word = w;
  }
  return vint(r, c);
}

static val *filter_impl(rctx *r, const expr *e, const char *name, val *v, callargs *a) {
  val *a0 = a->npos ? a->pos[0] : NULL;
  if (!strcmp(name, "trim")) return strip_str(r, str_of(r, v), arg(a, "chars", 0), 1, 1);
  if (!strcmp(name, "upper") || !strcmp(name, "lower")) { val *s = str_of(r, v); return case_str(r, s->s, s->n, name[0] == 'u'); }
  if (!strcmp(name, "capitalize")) { val *s = str_of(r, v); sbuf b = {0}; add_capitalized(r, &b, s->s, s->n, 1); return sb_val(r, &b); }
  if (!strcmp(name, "title")) return jinja_title(r, str_of(r, v));
  if (!strcmp(name, "string")) return str_of(r, v);
  if (!strcmp(name, "safe")) return v;
  if (!strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "forceescape")) return f_escape(r, v);
  if (!strcmp(name, "length") || !strcmp(name, "count")) return f_length(r, e, v);
  if (!strcmp(name, "default") || !strcmp(name, "d")) {
    val *dv = arg(a, "default_value", 0), *boolean = arg(a, "boolean", 1);
    int use_default = v->t == V_UNDEF || (boolean && truthy(boolean) && !truthy(v));
    return use_default ? (dv ? dv : vstr(r, "", 0)) : v;
  }
  if (!strcmp(name, "tojson")) return f_tojson(r, e, v, a);
  if (!strcmp(name, "items")) return f_items(r, e, v);
  if (!strcmp(name, "dictsort")) return f_dictsort(r, e, v, a);
  if (!strcmp(name, "list")) return list_copy(r, e->line, e->col, v);
  if (!strcmp(name, "first")) {
    val *l = to_list(r, e->line, e->col, v);
    return l->len ? l->items[0] : vundef_why(r, U_HINT, "No first item, sequence was empty.", NULL, NULL);
  }
  if (!strcmp(name, "last")) {
    if (v->t == V_LIST && v->is_iter) rerr(r, e->line, e->col, "'generator' object is not reversible");
    if (v->t == V_DICT && !v->is_ns) rerr(r, e->line, e->col, "last of a mapping is not supported");
    val *l = to_list(r, e->line, e->col, v);
    return l->len ? l->items[l->len - 1] : vundef_why(r, U_HINT, "No last item, sequence was empty.", NULL, NULL);
  }
  if (!strcmp(name, "join")) return f_join(r, e, v, a);
  if (!strcmp(name, "map")) return f_map(r, e, v, a);
  if (!strcmp(name, "select")) return f_select(r, e, v, a, 0, 0);
  if (!strcmp(name, "reject")) return f_select(r, e, v, a, 1, 0);
  if (!strcmp(name, "selectattr")) return f_select(r, e, v, a, 0, 1);
  if (!strcmp(name, "rejectattr")) return f_select(r, e, v, a, 1, 1);
  if (!strcmp(name, "replace")) {
    if (a->npos < 2) rerr(r, e->line, e->col, "replace needs 2 arguments");
    return replace_str(r, str_of(r, v), a->pos[0], a->pos[1], int_arg(r, e, arg(a, "count", 2), "count", -1));
  }
  if (!strcmp(name, "int")) return f_int(r, e, v, a);
  if (!strcmp(name, "float")) return f_float(r, v, a);
  if (!strcmp(name, "abs")) {
    if (is_int(v)) {
      if (v->i == LLONG_MIN) rerr(r, e->line, e->col, "integer overflow: abs(%lld) does not fit in 64 bits", v->i);
      return vint(r, v->i < 0 ? -v->i : v->i);
    }
    if (v->t == V_FLOAT) return vfloat(r, fabs(v->f));
    rerr(r, e->line, e->col, "bad operand type for abs(): '%s'", type_name(v));
  }
  if (!strcmp(name, "round")) return f_round(r, e, v, a);
  if (!strcmp(name, "unique")) return f_unique(r, e, v, a);
  if (!strcmp(name, "sort")) return f_sort(r, e, v, a);
  if (!strcmp(name, "min") || !strcmp(name, "max")) return f_minmax(r, e, v, a, name[1] == 'a');
  if (!strcmp(name, "sum")) return f_sum(r, e, v, a);
  if (!strcmp(name, "indent")) return f_indent(r, e, v, a);
  if (!strcmp(name, "wordcount")) return f_wordcount(r, v);
  if (!strcmp(name, "reverse")) {
    if (v->t == V_STR) { val st = {.t = V_INT, .i = -1}; return do_slice(r, v, NULL, NULL, &st); }
    val *l = to_list(r, e->line, e->col, v), *out = vlist(r, 0);
    out->is_iter = !(v->t == V_LIST && v->is_iter); /* reversed(list) is an iterator; a generator is listed */
    for (int i = l->len - 1; i >= 0; i--) list_push(r, out, l->items[i]);
    return out;
  }
  if (!strcmp(name, "attr")) {
    if (!a0 || a0->t != V_STR) rerr(r, e->line, e->col, "attr needs an attribute name");
    val *m = sandbox_attr(r, v, a0->s); /* getattr only: a dict's keys are not attributes */
    return m ? m : vundef_why(r, U_ATTR, a0->s, v, NULL);
  }
  if (in_names(unsupported_filters, name)) rerr_unsupported(r, e->line, e->col, "unsupported filter '%s'", name);
  rerr(r, e->line, e->col, "No filter named '%s' found.", name); /* jinja2's words when one runs */
}

static val *apply_filter(rctx *r, const expr *e, const char *name, val *v, callargs *a) {
  enter(r, e->line, e->col);
  val *res = filter_impl(r, e, name, v, a);
  r->depth--;
  return res;
}

/* ------------------------------------------------------------------ tests */
static int cmp_op(rctx *r, int line, int col, int op, val *a, val *b) {
  switch (op) {
  case C_EQ: return equal(r, a, b, 0);
  case C_NE: return !equal(r, a, b, 0);
  case C_IN: return contains(r, line, col, b, a);
  case C_NOTIN: return !contains(r, line, col, b, a);
  }
  if (a->t == V_UNDEF) undefined_error(r, line, col, a, NULL);
  if (b->t == V_UNDEF) undefined_error(r, line, col, b, NULL);
  int c = compare(r, a, b, 0);
  if (c == 2) return 0; /* unordered */
  switch (op) {
  case C_LE: return c <= 0;
  case C_GE: return c >= 0;
  case C_LT: return c < 0;
  default: return c > 0;
  }
}

static int test_impl(rctx *r, const expr *e, const char *name, val *v, callargs *a) {
  val *a0 = a->npos ? a->pos[0] : NULL;
  if (!strcmp(name, "defined")) return v->t != V_UNDEF;
  if (!strcmp(name, "undefined")) return v->t == V_UNDEF;
  if (!strcmp(name, "none")) return v->t == V_NONE;
  if (!strcmp(name, "string")) return v->t == V_STR;
  if (!strcmp(name, "mapping")) return v->t == V_DICT && !v->is_ns;
  if (!strcmp(name, "iterable")) return v->t == V_STR || v->t == V_LIST || (v->t == V_DICT && !v->is_ns) || v->t == V_UNDEF;
  if (!strcmp(name, "sequence")) return v->t == V_STR || (v->t == V_LIST && !v->is_iter) || (v->t == V_DICT && !v->is_ns) || v->t == V_UNDEF;
  if (!strcmp(name, "boolean")) return v->t == V_BOOL;
  if (!strcmp(name, "true")) return v->t == V_BOOL && v->i;
  if (!strcmp(name, "false")) return v->t == V_BOOL && !v->i;
  if (!strcmp(name, "number")) return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL;
  if (!strcmp(name, "integer")) return v->t == V_INT;
  if (!strcmp(name, "float")) return v->t == V_FLOAT;
  if (!strcmp(name, "callable")) return v->t == V_MACRO || v->t == V_FUNC || v->t == V_METHOD;
  if (!strcmp(name, "escaped")) return 0;
  if (!strcmp(name, "filter") || !strcmp(name, "test"))
    return v->t == V_STR && in_names(name[0] == 'f' ? filter_names : test_names, v->s);
  if (!strcmp(name, "odd") || !strcmp(name, "even")) {
    if (!is_int(v)) rerr(r, e->line, e->col, "'%s' needs an integer, not %s", name, type_name(v));
    return (int)(v->i & 1) == (name[0] == 'o');
  }
  if (!strcmp(name, "divisibleby")) {
    if (!is_int(v) || !a0 || !is_int(a0)) rerr(r, e->line, e->col, "divisibleby needs integers");
    if (a0->i == 0) rerr(r, e->line, e->col, "integer division or modulo by zero");
    return a0->i == -1 || v->i % a0->i == 0;
  }
  if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
    val *s = str_of(r, v);
    return str_pred(s, name[0] == 'l' ? "islower" : "isupper");
  }
  if (!strcmp(name, "sameas")) {
    if (!a0) rerr(r, e->line, e->col, "sameas needs an argument");
    if (v->t != a0->t) return 0;
    if (v->t == V_NONE || v->t == V_UNDEF) return v->t == V_NONE;
    if (v->t == V_BOOL) return v->i == a0->i;
    if (v->t == V_INT) return v->i == a0->i && v->i >= -5 && v->i <= 256; /* CPython's cached small ints */
    return v == a0;
  }
  static const struct { const char *n; int op; } cmps[] = {
    {"==", C_EQ}, {"eq", C_EQ}, {"equalto", C_EQ}, {"!=", C_NE}, {"ne", C_NE}, {">", C_GT}, {"gt", C_GT}, {"greaterthan", C_GT},
    {"ge", C_GE}, {">=", C_GE}, {"<", C_LT}, {"lt", C_LT}, {"lessthan", C_LT}, {"<=", C_LE}, {"le", C_LE}, {"in", C_IN}};
  for (size_t i = 0; i < sizeof cmps / sizeof *cmps; i++)
    if (!strcmp(name, cmps[i].n)) {
      if (!a0) rerr(r, e->line, e->col, "test '%s' needs an argument", name);
      return cmp_op(r, e->line, e->col, cmps[i].op, v, a0);
    }
  rerr(r, e->line, e->col, "No test named '%s' found.", name);
}

static int apply_test(rctx *r, const expr *e, const char *name, val *v, callargs *a) {
  enter(r, e->line, e->col);
  int res = test_impl(r, e, name, v, a);
  r->depth--;
  return res;
}

/* ------------------------------------------------------------------ arithmetic */
static void overflow(rctx *r, const expr *e, const char *what) {
  rerr(r, e->line, e->col, "integer overflow: the result of %s does not fit in 64 bits", what);
}

static long long ipow(rctx *r, const expr *e, long long base, long long ex) {
  long long res = 1;
  while (ex) {
    if ((ex & 1) && __builtin_mul_overflow(res, base, &res)) overflow(r, e, "**");
    ex >>= 1;
    if (ex && __builtin_mul_overflow(base, base, &base)) overflow(r, e, "**");
  }
  return res;
}

static const char *op_name(int op) {
  switch (op) {
  case 'F': return "//";
  case 'P': return "**";
  case '+': return "+";
  case '-': return "-";
  case '*': return "*";
  case '/': return "/";
  default: return "%";
  }
}

/* Python's float divmod: the remainder has the divisor's sign */
static void float_divmod(double x, double y, double *floordiv, double *mod) {
  double m = fmod(x, y), div = (x - m) / y;
  if (m) { if ((y < 0) != (m < 0)) { m += y; div -= 1.0; } }
  else m = copysign(0.0, y);
  double fd;
  if (div) { fd = floor(div); if (div - fd > 0.5) fd += 1.0; }
  else fd = copysign(0.0, x / y);
  *floordiv = fd;
  *mod = m;
}

static val *arith(rctx *r, const expr *e, int op, val *a, val *b) {
  if (op == '~') {
    val *x = str_of(r, a), *y = str_of(r, b);
    sbuf s = {0};
    sb_add(r, &s, x->s, x->n);
    sb_add(r, &s, y->s, y->n);
    return sb_val(r, &s);
  }
  if (a->t == V_UNDEF) undefined_error(r, e->line, e->col, a, e->a);
  if (b->t == V_UNDEF) undefined_error(r, e->line, e->col, b, e->b);
  if (op == '+' && a->t == V_STR && b->t == V_STR) {
    sbuf s = {0};
    sb_add(r, &s, a->s, a->n);
    sb_add(r, &s, b->s, b->n);
    return sb_val(r, &s);
  }
  if (op == '+' && a->t == V_LIST && b->t == V_LIST && !a->is_iter && !b->is_iter && a->is_tuple == b->is_tuple) {
    val *l = vlist(r, a->is_tuple);
    for (int i = 0; i < a->len; i++) list_push(r, l, a->items[i]);
    for (int i = 0; i < b->len; i++) list_push(r, l, b->items[i]);
    return l;
  }
  if (op == '*') {
    if (a->t == V_STR && is_int(b)) return repeat_str(r, a, b->i);
    if (is_int(a) && b->t == V_STR) return repeat_str(r, b, a->i);
    if (a->t == V_LIST && !a->is_iter && is_int(b)) return repeat_list(r, a, b->i);
    if (is_int(a) && b->t == V_LIST && !b->is_iter) return repeat_list(r, b, a->i);
  }
  double x, y;
  if (!num_of(a, &x) || !num_of(b, &y))
    rerr(r, e->line, e->col, "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op), type_name(a), type_name(b));
  if (is_int(a) && is_int(b) && op != '/') {
    long long p = a->i, q = b->i, res;
    switch (op) {
    case '+': if (__builtin_add_overflow(p, q, &res)) overflow(r, e, "+"); return vint(r, res);
    case '-': if (__builtin_sub_overflow(p, q, &res)) overflow(r, e, "-"); return vint(r, res);
    case '*': if (__builtin_mul_overflow(p, q, &res)) overflow(r, e, "*"); return vint(r, res);
    case 'F': case '%': {
      if (q == 0) rerr(r, e->line, e->col, "integer division or modulo by zero");
      if (q == -1) { /* INT64_MIN / -1 traps in C */
        if (op == '%') return vint(r, 0);
        if (p == LLONG_MIN) overflow(r, e, "//");
        return vint(r, -p);
      }
      long long d = p / q, m = p % q;
      if (m != 0 && ((m < 0) != (q < 0))) { d--; m += q; }
      return vint(r, op == 'F' ? d : m);
    }
    case 'P':
      if (q >= 0) return vint(r, ipow(r, e, p, q));
      if (p == 0) rerr(r, e->line, e->col, "0.0 cannot be raised to a negative power");
      return vfloat(r, pow(x, y));
    }
  }
  switch (op) {
  case '+': return vfloat(r, x + y);
  case '-': return vfloat(r, x - y);
  case '*': return vfloat(r, x * y);
  case '/':
    if (y == 0) rerr(r, e->line, e->col, "division by zero");
    return vfloat(r, x / y);
  case 'F': case '%': {
    if (y == 0) rerr(r, e->line, e->col, "float %s by zero", op == 'F' ? "floor division" : "modulo");
    double d, m;
    float_divmod(x, y, &d, &m);
    return vfloat(r, op == 'F' ? d : m);
  }
  default: {
    if (x == 0 && y < 0) rerr(r, e->line, e->col, "0.0 cannot be raised to a negative power");
    if (x < 0 && y != floor(y) && isfinite(y)) rerr_unsupported(r, e->line, e->col, "a negative number to a fractional power is complex");
    double res = pow(x, y);
    if (isinf(res) && isfinite(x) && isfinite(y)) rerr(r, e->line, e->col, "numerical result out of range");
    return vfloat(r, res);
  }
  }
}

/* ------------------------------------------------------------------ evaluation */
static val *eval(rctx *r, const expr *e, frame *f);
static void exec_body(rctx *r, const body *b, frame *f);
static val *capture(rctx *r, const body *b, frame *f);

enum { F_RAISE = 1, F_NAMESPACE, F_RANGE, F_DICT, F_STRFTIME, F_CYCLER, F_JOINER, F_LIPSUM, F_LOOP_CYCLE, F_LOOP_CHANGED };

static callargs eval_args(rctx *r, const expr *e, frame *f) {
  callargs a = {0};
  a.pos = ralloc(r, sizeof(val *) * (size_t)(e->nargs + 1));
  a.kwn = e->kwn;
  a.kwv = ralloc(r, sizeof(val *) * (size_t)(e->nkw + 1));
  for (int i = 0; i < e->nargs; i++) a.pos[a.npos++] = eval(r, e->args[i], f);
  for (int i = 0; i < e->nkw; i++) a.kwv[a.nkw++] = eval(r, e->kwv[i], f);
  return a;
}

/* a macro call: parameters from positional, keyword and default arguments; extra ones go to
 * varargs / kwargs when the body names them (else they are errors, as in jinja2) */
static val *call_macro(rctx *r, const expr *e, val *m, callargs *a) {
  const stmt *s = m->node;
  if (a->npos > s->nparams && !s->uses_varargs)
    rerr(r, e->line, e->col, "macro '%s' takes not more than %d argument(s)", s->attr, s->nparams);
  val *varargs = vlist(r, 1), *kwargs = V(r, V_DICT);
  for (int i = s->nparams; i < a->npos; i++) list_push(r, varargs, a->pos[i]);
  for (int k = 0; k < a->nkw; k++) {
    int found = -1;
    for (int i = 0; i < s->nparams; i++) if (!strcmp(s->params[i], a->kwn[k])) found = i;
    if (found < 0 && !s->uses_kwargs) rerr(r, e->line, e->col, "macro '%s' takes no keyword argument '%s'", s->attr, a->kwn[k]);
    if (found < 0) dict_set(r, kwargs, vcstr(r, a->kwn[k]), a->kwv[k]);
    else if (found < a->npos) rerr(r, e->line, e->col, "macro '%s' got multiple values for argument '%s'", s->attr, a->kwn[k]);
  }
  frame *mf = new_frame(r, r->globals);
  frame_set(r, mf, "varargs", varargs);
  frame_set(r, mf, "kwargs", kwargs);
  for (int i = 0; i < s->nparams; i++) {
    val *v = arg(a, s->params[i], i);
    if (!v) v = s->defaults[i] ? eval(r, s->defaults[i], mf) : vundef_why(r, U_PARAM, s->params[i], NULL, NULL);
    frame_set(r, mf, s->params[i], v);
  }
  return capture(r, &s->b, mf); /* a macro renders into its own buffer and returns the text */
}

/* dict(mapping or pairs, **kw) and namespace(...) */
static val *make_dict(rctx *r, const expr *e, callargs *a, int ns) {
  val *d = V(r, V_DICT);
  d->is_ns = (unsigned char)ns;
  if (a->npos > 1) rerr(r, e->line, e->col, "%s expected at most 1 argument", ns ? "namespace" : "dict");
  if (a->npos) {
    val *src = a->pos[0];
    if (src->t == V_DICT) for (int i = 0; i < src->len; i++) dict_set(r, d, src->keys[i], src->items[i]);
    else {
      val *l = to_list(r, e->line, e->col, src);
      for (int i = 0; i < l->len; i++) {
        val *p = l->items[i];
        if (p->t != V_LIST || p->len != 2) rerr(r, e->line, e->col, "dictionary update sequence element #%d is not a pair", i);
        dict_set(r, d, p->items[0], p->items[1]);
      }
    }
  }
  for (int i = 0; i < a->nkw; i++) dict_set(r, d, vcstr(r, a->kwn[i]), a->kwv[i]);
  return d;
}

static val *make_range(rctx *r, const expr *e, callargs *a) {
  if (a->npos < 1 || a->npos > 3 || a->nkw) rerr(r, e->line, e->col, "range expected 1 to 3 integer arguments");
  for (int i = 0; i < a->npos; i++)
    if (!is_int(a->pos[i])) rerr(r, e->line, e->col, "'%s' object cannot be interpreted as an integer", type_name(a->pos[i]));
  long long lo = 0, hi, st = 1;
  if (a->npos == 1) hi = a->pos[0]->i;
  else { lo = a->pos[0]->i; hi = a->pos[1]->i; if (a->npos == 3) st = a->pos[2]->i; }
  if (st == 0) rerr(r, e->line, e->col, "range() arg 3 must not be zero");
  unsigned long long count = 0;
  if (st > 0 && hi > lo) count = ((unsigned long long)hi - (unsigned long long)lo - 1) / (unsigned long long)st + 1;
  if (st < 0 && lo > hi)
    count = ((unsigned long long)lo - (unsigned long long)hi - 1) / (st == LLONG_MIN ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)-st) + 1;
  if (count > OC_TEMPLATE_MAX_RANGE)
    rerr(r, e->line, e->col, "range too big: the sandbox allows at most %d items (jinja2's MAX_RANGE)", OC_TEMPLATE_MAX_RANGE);
  val *l = vlist(r, 0);
  for (unsigned long long k = 0; k < count; k++) list_push(r, l, vint(r, (long long)((unsigned long long)lo + k * (unsigned long long)st))); /* in range; unsigned: no overflow on the way */
  return l;
}

/* transformers' strftime_now(fmt): datetime.now().strftime(fmt) — local time, C locale; %f is
 * the microseconds, %z and %Z are empty (a naive datetime) */
static val *strftime_now(rctx *r, const expr *e, callargs *a) {
  if (a->npos != 1 || a->pos[0]->t != V_STR) rerr(r, e->line, e->col, "strftime_now() takes one format string");
  const val *fmt = a->pos[0];
  if (memchr(fmt->s, 0, fmt->n)) rerr(r, e->line, e->col, "strftime_now(): embedded null character in the format");
  time_t now;
  long usec = 0;
  if (r->opts && r->opts->pin_clock) now = (time_t)r->opts->now;
  else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    now = ts.tv_sec;
    usec = ts.tv_nsec / 1000;
  }
  struct tm tm;
  if (!localtime_r(&now, &tm)) rerr(r, e->line, e->col, "strftime_now(): the clock is out of range");
  sbuf f2 = {0};
  for (size_t i = 0; i < fmt->n; i++) {
    if (fmt->s[i] != '%' || i + 1 >= fmt->n) { sb_char(r, &f2, fmt->s[i]); continue; }
    char c = fmt->s[++i];
    if (c == 'f') { char us[32]; snprintf(us, sizeof us, "%06ld", usec); sb_str(r, &f2, us); }
    else if (c != 'z' && c != 'Z') { sb_char(r, &f2, '%'); sb_char(r, &f2, c); }
  }
  if (!f2.n) return vstr(r, "", 0);
  size_t cap = f2.n * 64 + 256;
  check_strlen(r, cap);
  char *buf = ralloc(r, cap);
  locale_t c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
  if (!c) rerr_code(r, OC_ERR_NOMEM, e->line, e->col, "out of memory");
  size_t len = strftime_l(buf, cap, f2.s, &tm, c);
  freelocale(c);
  return vstr(r, buf, len);
}

/* loop.cycle(*args): the argument for this iteration (index0 modulo their count);
 * loop.changed(*args): whether the arguments differ from those of its last call in the loop */
static val *loop_method(rctx *r, const expr *e, val *fn, callargs *a) {
  if (a->nkw) rerr(r, e->line, e->col, "%s() got an unexpected keyword argument '%s'", fn->name, a->kwn[0]);
  if (fn->fn == F_LOOP_CYCLE) {
    if (!a->npos) rerr(r, e->line, e->col, "no items for cycling given");
    return a->pos[dict_get_str(r, fn->self, "index0", 6)->i % a->npos];
  }
  val *args = vlist(r, 1), *last = fn->self;
  for (int i = 0; i < a->npos; i++) list_push(r, args, a->pos[i]);
  if (last->len && equal(r, last->items[0], args, 0)) return vbool(r, 0);
  if (last->len) last->items[0] = args;
  else list_push(r, last, args);
  return vbool(r, 1);
}

static val *eval_call(rctx *r, const expr *e, frame *f) {
  val *fn = eval(r, e->a, f);
  callargs a = eval_args(r, e, f);
  if (fn->t == V_METHOD) return call_method(r, e, fn, &a);
  if (fn->t == V_MACRO) return call_macro(r, e, fn, &a);
  if (fn->t == V_FUNC) {
    switch (fn->fn) {
    case F_RAISE: {
      val *m = a.npos ? str_of(r, a.pos[0]) : vstr(r, "", 0);
      oc_fail(r->err, "%.*s", (int)(m->n > 900 ? 900 : m->n), m->s);
      longjmp(r->jb, 1);
    }
    case F_NAMESPACE: case F_DICT: return make_dict(r, e, &a, fn->fn == F_NAMESPACE);
    case F_RANGE: return make_range(r, e, &a);
    case F_STRFTIME: return strftime_now(r, e, &a);
    case F_LOOP_CYCLE: case F_LOOP_CHANGED: return loop_method(r, e, fn, &a);
    default: rerr_unsupported(r, e->line, e->col, "'%s' is not supported", fn->name);
    }
  }
  if (fn->t == V_UNDEF) undefined_error(r, e->line, e->col, fn, e->a);
  rerr(r, e->line, e->col, "'%s' object is not callable", type_name(fn));
}

static val *eval_node(rctx *r, const expr *e, frame *f) {
  switch (e->k) {
  case E_LIT: return e->lit;
  case E_NAME: { val *v = lookup(r, f, e->name); return v ? v : vundef_why(r, U_NAME, e->name, NULL, NULL); }
  case E_ATTR: return get_attr(r, e, eval(r, e->a, f), e->name);
  case E_ITEM: { val *o = eval(r, e->a, f); return get_item(r, e, o, eval(r, e->b, f)); }
  case E_SLICE: {
    val *o = eval(r, e->a, f);
    val *lo = e->b ? eval(r, e->b, f) : NULL, *hi = e->c ? eval(r, e->c, f) : NULL;
    val *st = e->args[0] ? eval(r, e->args[0], f) : NULL;
    if (o->t == V_UNDEF) undefined_error(r, e->line, e->col, o, e->a);
    return do_slice(r, o, lo, hi, st);
  }
  case E_CALL: return eval_call(r, e, f);
  case E_FILTER: case E_TEST: {
    val *v = eval(r, e->a, f);
    callargs a = eval_args(r, e, f);
    if (e->k == E_FILTER) return apply_filter(r, e, e->name, v, &a);
    return vbool(r, apply_test(r, e, e->name, v, &a) != e->negate);
  }
  case E_NEG: case E_POS: {
    val *v = eval(r, e->a, f);
    if (v->t == V_UNDEF) undefined_error(r, e->line, e->col, v, e->a);
    if (is_int(v)) {
      if (e->k == E_POS) return vint(r, v->i);
      if (v->i == LLONG_MIN) overflow(r, e, "unary -");
      return vint(r, -v->i);
    }
    if (v->t == V_FLOAT) return e->k == E_POS ? v : vfloat(r, -v->f);
    rerr(r, e->line, e->col, "bad operand type for unary %c: '%s'", e->k == E_NEG ? '-' : '+', type_name(v));
  }
  case E_NOT: return vbool(r, !truthy(eval(r, e->a, f)));
  case E_AND: { val *a = eval(r, e->a, f); return truthy(a) ? eval(r, e->b, f) : a; }
  case E_OR: { val *a = eval(r, e->a, f); return truthy(a) ? a : eval(r, e->b, f); }
  case E_BIN: { val *a = eval(r, e->a, f); return arith(r, e, e->op, a, eval(r, e->b, f)); }
  case E_CMP: {
    val *left = eval(r, e->args[0], f);
    for (int i = 1; i < e->nargs; i++) {
      val *right = eval(r, e->args[i], f);
      if (!cmp_op(r, e->line, e->col, e->ops[i - 1], left, right)) return vbool(r, 0);
      left = right;
    }
    return vbool(r, 1);
  }
  case E_COND: {
    if (truthy(eval(r, e->b, f))) return eval(r, e->a, f);
    if (e->c) return eval(r, e->c, f);
    val *u = vundef_why(r, U_COND, NULL, NULL, NULL);
    u->u.line = e->line;
    return u;
  }
  case E_LIST: {
    val *l = vlist(r, e->op == 1);
    for (int i = 0; i < e->nargs; i++) list_push(r, l, eval(r, e->args[i], f));
    return l;
  }
  case E_DICT: {
    val *d = V(r, V_DICT);
    for (int i = 0; i < e->nargs; i++) {
      val *k = eval(r, e->args[i], f);
      dict_set(r, d, k, eval(r, e->kwv[i], f));
    }
    return d;
  }
  case E_INPUT: return r->input;
  }
  rerr(r, e->line, e->col, "internal error: unknown expression");
}

static val *eval(rctx *r, const expr *e, frame *f) {
  enter(r, e->line, e->col);
  val *v = eval_node(r, e, f);
  r->depth--;
  return v;
}

/* ------------------------------------------------------------------ statements */
static void assign_targets(rctx *r, const stmt *s, frame *f, val *v) {
  if (s->ntargets == 1) { frame_set(r, f, s->targets[0], v); return; }
  if (v->t != V_LIST && v->t != V_STR && !(v->t == V_DICT && !v->is_ns))
    rerr(r, s->line, s->col, "cannot unpack non-iterable %s object", type_name(v));
  val *l = to_list(r, s->line, s->col, v);
  if (l->len > s->ntargets) rerr(r, s->line, s->col, "too many values to unpack (expected %d)", s->ntargets);
  if (l->len < s->ntargets) rerr(r, s->line, s->col, "not enough values to unpack (expected %d, got %d)", s->ntargets, l->len);
  for (int i = 0; i < s->ntargets; i++) frame_set(r, f, s->targets[i], l->items[i]);
}

/* render a body into a fresh buffer and return its text (set and filter blocks) */
static val *capture(rctx *r, const body *b, frame *f) {
  if (r->nsaved == r->capsaved) {
    int nc = r->capsaved ? r->capsaved * 2 : 16;
    r->saved = rresize(r, r->saved, r->nsaved, nc, sizeof *r->saved);
    r->capsaved = nc;
  }
  r->saved[r->nsaved++] = r->o;
  memset(&r->o, 0, sizeof r->o);
  exec_body(r, b, f);
  val *res = vstr(r, r->o.out ? r->o.out : "", r->o.len);
  free(r->o.out);
  r->outbytes -= r->o.cap;
  r->o = r->saved[--r->nsaved];
  return res;
}

/* a block's text through its filter chain (E_INPUT in the chain reads it) */
static val *filter_text(rctx *r, const expr *chain, val *text, frame *f) {
  if (!chain) return text;
  val *saved = r->input;
  r->input = text;
  val *res = eval(r, chain, f);
  r->input = saved;
  return res;
}

static const char *const loop_keys[] = {"index", "index0", "revindex", "revindex0", "first", "last", "length", "previtem",
                                        "nextitem", "depth", "depth0", "cycle", "changed"};
enum { N_LOOP_KEYS = sizeof loop_keys / sizeof *loop_keys };

static void exec_for(rctx *r, const stmt *s, frame *f) {
  val *it = to_list(r, s->e->line, s->e->col, eval(r, s->e, f));
  /* the loop filter runs before loop.* is computed */
  val *items = it;
  if (s->filter) {
    items = vlist(r, 0);
    for (int k = 0; k < it->len; k++) {
      frame *tf = new_frame(r, f);
      assign_targets(r, s, tf, it->items[k]);
      if (truthy(eval(r, s->filter, tf))) list_push(r, items, it->items[k]);
    }
  }
  int n = items->len;
  val **keys = ralloc(r, sizeof *keys * N_LOOP_KEYS);
  for (int i = 0; i < N_LOOP_KEYS; i++) keys[i] = vcstr(r, loop_keys[i]);
  /* loop.changed(...) compares with the arguments of its last call in this loop (none yet) */
  val *changed = V(r, V_FUNC);
  changed->fn = F_LOOP_CHANGED;
  changed->name = "loop.changed";
  changed->self = vlist(r, 0);
  for (int k = 0; k < n; k++) {
    frame *lf = new_frame(r, f);
    val *loop = V(r, V_DICT), *cycle = V(r, V_FUNC);
    loop->is_loop = 1;
    cycle->fn = F_LOOP_CYCLE;
    cycle->name = "loop.cycle";
    cycle->self = loop;
    val *vals[N_LOOP_KEYS] = {vint(r, k + 1), vint(r, k), vint(r, n - k), vint(r, n - k - 1), vbool(r, k == 0), vbool(r, k == n - 1),
                              vint(r, n), k > 0 ? items->items[k - 1] : vundef_why(r, U_HINT, "there is no previous item", NULL, NULL),
                              k + 1 < n ? items->items[k + 1] : vundef_why(r, U_HINT, "there is no next item", NULL, NULL),
                              vint(r, 1), vint(r, 0), cycle, changed};
    loop->keys = keys; /* shared: loop objects are never modified */
    loop->items = ralloc(r, sizeof *loop->items * N_LOOP_KEYS);
    memcpy(loop->items, vals, sizeof vals);
    loop->len = loop->cap = N_LOOP_KEYS;
    frame_set(r, lf, "loop", loop);
    assign_targets(r, s, lf, items->items[k]);
    exec_body(r, &s->b, lf);
    int brk = r->brk;
    r->brk = 0;
    if (brk == 1) break;
  }
  if (n == 0) exec_body(r, &s->else_body, f);
}

static void exec_stmt(rctx *r, const stmt *s, frame *f) {
  charge(r, 1);
  r->line = s->line;
  r->col = s->col;
  switch (s->k) {
  case S_TEXT: emit(r, s->text, s->tlen); break;
  case S_OUT: { val *v = str_of(r, eval(r, s->e, f)); emit(r, v->s, v->n); break; }
  case S_IF: {
    for (int k = 0; k < s->nconds; k++)
      if (truthy(eval(r, s->conds[k], f))) { exec_body(r, &s->bodies[k], f); return; }
    exec_body(r, &s->else_body, f);
    break;
  }
  case S_FOR: exec_for(r, s, f); break;
  case S_SET: {
    val *v = eval(r, s->e, f);
    if (s->attr) {
      val *ns = lookup(r, f, s->targets[0]);
      if (!ns || ns->t != V_DICT || !ns->is_ns)
        rerr(r, s->line, s->col, "cannot assign attribute on non-namespace object '%s'", s->targets[0]);
      val *key = V(r, V_STR);
      key->s = s->attr;
      key->n = strlen(s->attr);
      dict_set(r, ns, key, v);
    } else assign_targets(r, s, f, v);
    break;
  }
  case S_SETBLOCK: frame_set(r, f, s->targets[0], filter_text(r, s->filter, capture(r, &s->b, f), f)); break;
  case S_FILTERBLOCK: {
    val *v = str_of(r, filter_text(r, s->filter, capture(r, &s->b, f), f));
    emit(r, v->s, v->n);
    break;
  }
  case S_WITH: {
    frame *wf = new_frame(r, f);
    for (int i = 0; i < s->ntargets; i++) frame_set(r, wf, s->targets[i], eval(r, s->conds[i], f));
    exec_body(r, &s->b, wf);
    break;
  }
  case S_MACRO: {
    val *m = V(r, V_MACRO);
    m->node = s;
    m->name = s->attr;
    frame_set(r, f, s->attr, m);
    break;
  }
  case S_BREAK: r->brk = 1; break;
  case S_CONTINUE: r->brk = 2; break;
  }
}

static void exec_body(rctx *r, const body *b, frame *f) {
  if (!b->n) return;
  enter(r, b->v[0]->line, b->v[0]->col);
  for (int i = 0; i < b->n && !r->brk; i++) exec_stmt(r, b->v[i], f);
  r->depth--;
}

static int render_guarded(rctx *r, const oc_template *t, const cJSON *vars) {
  if (setjmp(r->jb)) return -1;
  frame *g = new_frame(r, NULL);
  g->vars = V(r, V_DICT);
  r->globals = g;
  static const struct { const char *n; int id; } fns[] = {
    {"raise_exception", F_RAISE}, {"namespace", F_NAMESPACE}, {"range", F_RANGE}, {"dict", F_DICT}, {"strftime_now", F_STRFTIME},
    {"cycler", F_CYCLER}, {"joiner", F_JOINER}, {"lipsum", F_LIPSUM}};
  for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
    val *v = V(r, V_FUNC);
    v->fn = fns[i].id;
    v->name = fns[i].n;
    frame_set(r, g, fns[i].n, v);
  }
  if (vars && !cJSON_IsObject(vars)) rerr(r, 0, 0, "template variables must be a JSON object");
  for (const cJSON *e = vars ? vars->child : NULL; e; e = e->next)
    frame_set(r, g, ar_strndup(r->ar, e->string, strlen(e->string)), from_json(r, e, 0));
  exec_body(r, &t->root, g);
  return 0;
}

int oc_template_render_opts(const oc_template *t, const cJSON *vars, const oc_template_opts *opts, char **out,
                            size_t *out_len, oc_error *err) {
  *out = NULL;
  if (out_len) *out_len = 0;
  arena ar = {0};
  rctx r;
  memset(&r, 0, sizeof r);
  r.ar = &ar;
  r.err = err;
  r.tname = t->name;
  r.opts = opts;
  int rc = render_guarded(&r, t, vars);
  if (rc) {
    free(r.o.out);
    while (r.nsaved > 0) free(r.saved[--r.nsaved].out);
    ar_free(&ar);
    return -1;
  }
  ar_free(&ar);
  *out = r.o.out ? r.o.out : strdup("");
  if (out_len) *out_len = r.o.len;
  return *out ? 0 : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
}

int oc_template_render(const oc_template *t, const cJSON *vars, char **out, size_t *out_len, oc_error *err) {
  return oc_template_render_opts(t, vars, NULL, out, out_len, err);
}
