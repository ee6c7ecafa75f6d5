/* A Jinja2 interpreter large enough for Hugging Face chat templates, with Python semantics
 * where templates depend on them (str(), json.dumps, str methods, truthiness). Set up like
 * transformers' apply_chat_template: trim_blocks, lstrip_blocks, break/continue. */
#include "opencon/template.h"

#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok/text.h"

/* ------------------------------------------------------------------ arena */
typedef struct blk {
  struct blk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} blk;

typedef struct {
  blk *head;
} arena;

static void *ar_alloc(arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (!a->head || a->head->used + n > a->head->cap) {
    size_t cap = n > 65536 ? n : 65536;
    blk *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  void *p = a->head->data + a->head->used;
  a->head->used += n;
  memset(p, 0, n);
  return p;
}

static void ar_free(arena *a) {
  while (a->head) { blk *n = a->head->next; free(a->head); a->head = n; }
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

/* ------------------------------------------------------------------ values */
enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_MACRO, V_FUNC, V_METHOD };

typedef struct val val;
struct val {
  int t;
  int is_ns;    /* namespace() object */
  int is_tuple; /* list printed as a Python tuple */
  long long i; /* bool / int */
  double f;
  const char *s;
  size_t n;    /* string length */
  val **items; /* list items / dict values */
  const char **keys;
  size_t *klen;
  int len, cap;
  const void *node; /* macro */
  int fn;           /* builtin id */
  val *self;        /* bound method */
  const char *name;
};

/* ------------------------------------------------------------------ AST */
enum {
  E_LIT, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT, E_AND, E_OR, E_BIN, E_CMP,
  E_IN, E_COND, E_LIST, E_DICT
};
enum { S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_BREAK, S_CONTINUE };

typedef struct expr expr;
struct expr {
  int k;
  int op; /* operator char / id */
  int line, col;
  val *lit;
  const char *name;
  expr *a, *b, *c;
  expr **args;
  const char **kwn;
  expr **kwv;
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
  /* if: conds[i] -> bodies[i], else_body */
  expr **conds;
  body *bodies;
  int nconds;
  body else_body;
  /* for */
  const char **targets;
  int ntargets;
  expr *filter;
  body b;
  /* set */
  const char *attr;
  /* macro */
  const char **params;
  expr **defaults;
  int nparams;
};

struct oc_template {
  arena ar;
  body root;
  char *name;
};

/* ------------------------------------------------------------------ lexer for tags */
typedef struct {
  arena *ar;
  oc_error *err;
  const char *tname;
  jmp_buf jb;
  int depth; /* expression / block nesting, bounded against hostile templates */
} pctx;

enum { T_EOF, T_NAME, T_INT, T_FLOAT, T_STR, T_OP };
typedef struct {
  int k;
  const char *s; /* name / op / decoded string */
  size_t n;
  long long i;
  double f;
  int line, col;
} tok;

typedef struct {
  tok *v;
  int n, pos;
} tokstream;

/* "template:line:col: message" (or "template: message" without a position) into err */
static void fail_at(oc_error *err, const char *tname, int line, int col, const char *fmt, va_list ap) {
  char msg[700];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (line > 0) oc_fail(err, "%s:%d:%d: %s", tname, line, col, msg);
  else oc_fail(err, "%s: %s", tname, msg);
}

static void perr(pctx *p, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5), noreturn));
static void perr(pctx *p, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_at(p->err, p->tname, line, col, fmt, ap);
  va_end(ap);
  longjmp(p->jb, 1);
}

/* tokenize the inside of a tag; line/col track positions in the template */
static void lex_tag(pctx *p, const char *s, size_t n, int line, int col, tokstream *ts) {
  int cap = 16;
  ts->v = ar_alloc(p->ar, sizeof(tok) * (size_t)cap);
  ts->n = 0;
  ts->pos = 0;
  size_t i = 0;
  while (1) {
    while (i < n && isspace((unsigned char)s[i])) { if (s[i] == '\n') { line++; col = 1; } else col++; i++; }
    if (ts->n + 1 >= cap) {
      cap *= 2;
      ts->v = ar_resize(p->ar, ts->v, ts->n, cap, sizeof *ts->v);
    }
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
      while (i < n && (isdigit((unsigned char)s[i]) || s[i] == '_')) i++;
      int isf = 0;
      if (i + 1 < n && s[i] == '.' && isdigit((unsigned char)s[i + 1])) { isf = 1; i++; while (i < n && isdigit((unsigned char)s[i])) i++; }
      if (i < n && (s[i] == 'e' || s[i] == 'E')) { isf = 1; i++; if (i < n && (s[i] == '+' || s[i] == '-')) i++; while (i < n && isdigit((unsigned char)s[i])) i++; }
      char *num = ar_strndup(p->ar, s + st, i - st);
      if (isf) { t->k = T_FLOAT; t->f = strtod(num, NULL); }
      else { t->k = T_INT; t->i = strtoll(num, NULL, 10); }
    } else if (c == '\'' || c == '"') {
      i++;
      char *o = ar_alloc(p->ar, n - st + 1);
      size_t k = 0;
      while (i < n && s[i] != c) {
        if (s[i] == '\\' && i + 1 < n) {
          i++;
          char e = s[i++];
          switch (e) {
          case 'n': o[k++] = '\n'; break;
          case 't': o[k++] = '\t'; break;
          case 'r': o[k++] = '\r'; break;
          case '\\': o[k++] = '\\'; break;
          case '\'': o[k++] = '\''; break;
          case '"': o[k++] = '"'; break;
          case '0': o[k++] = '\0'; break;
          case 'u': case 'x': {
            int nd = e == 'u' ? 4 : 2;
            if (i + (size_t)nd > n) perr(p, line, col, "bad escape in string literal");
            char h[5] = {0};
            memcpy(h, s + i, (size_t)nd);
            i += (size_t)nd;
            k += (size_t)oc_utf8_encode((uint32_t)strtoul(h, NULL, 16), o + k);
            break;
          }
          default: o[k++] = '\\'; o[k++] = e;
          }
        } else {
          if (s[i] == '\n') { line++; col = 0; }
          o[k++] = s[i++];
        }
      }
      if (i >= n) perr(p, t->line, t->col, "unterminated string literal");
      i++;
      o[k] = 0;
      t->k = T_STR;
      t->s = o;
      t->n = k;
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
    col += (int)(i - st);
    ts->n++;
  }
}

static tok *peek(tokstream *ts) { return &ts->v[ts->pos]; }
static tok *next_tok(tokstream *ts) { tok *t = &ts->v[ts->pos]; if (t->k != T_EOF) ts->pos++; return t; }
static int is_op(tok *t, const char *op) { return t->k == T_OP && strcmp(t->s, op) == 0; }
static int is_name(tok *t, const char *nm) { return t->k == T_NAME && strcmp(t->s, nm) == 0; }
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

/* ------------------------------------------------------------------ expression parser */
static expr *mk(pctx *p, int k, tok *at) {
  expr *e = ar_alloc(p->ar, sizeof *e);
  e->k = k;
  e->line = at->line;
  e->col = at->col;
  return e;
}

static val *mkval(arena *a, int t) {
  val *v = ar_alloc(a, sizeof *v);
  v->t = t;
  return v;
}

static expr *parse_expr(pctx *p, tokstream *ts);
static expr *parse_or(pctx *p, tokstream *ts);
static expr *parse_unary(pctx *p, tokstream *ts);

static void parse_call_args(pctx *p, tokstream *ts, expr *e) {
  /* after '(' */
  int cap = 8;
  e->args = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap);
  e->kwn = ar_alloc(p->ar, sizeof(char *) * (size_t)cap);
  e->kwv = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap);
  while (!accept_op(ts, ")")) {
    if (e->nargs + e->nkw >= cap) {
      expr **na = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap * 2);
      const char **nk = ar_alloc(p->ar, sizeof(char *) * (size_t)cap * 2);
      expr **nv = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap * 2);
      memcpy(na, e->args, sizeof(expr *) * (size_t)e->nargs);
      memcpy(nk, e->kwn, sizeof(char *) * (size_t)e->nkw);
      memcpy(nv, e->kwv, sizeof(expr *) * (size_t)e->nkw);
      e->args = na; e->kwn = nk; e->kwv = nv;
      cap *= 2;
    }
    tok *t = peek(ts);
    if (t->k == T_NAME && is_op(&ts->v[ts->pos + 1], "=")) {
      ts->pos += 2;
      e->kwn[e->nkw] = t->s;
      e->kwv[e->nkw++] = parse_expr(p, ts);
    } else {
      if (e->nkw) perr(p, t->line, t->col, "positional argument after keyword argument");
      e->args[e->nargs++] = parse_expr(p, ts);
    }
    if (!accept_op(ts, ",")) { expect_op(p, ts, ")"); break; }
  }
}

static expr *parse_primary(pctx *p, tokstream *ts) {
  tok *t = next_tok(ts);
  expr *e;
  switch (t->k) {
  case T_INT: e = mk(p, E_LIT, t); e->lit = mkval(p->ar, V_INT); e->lit->i = t->i; return e;
  case T_FLOAT: e = mk(p, E_LIT, t); e->lit = mkval(p->ar, V_FLOAT); e->lit->f = t->f; return e;
  case T_STR: {
    e = mk(p, E_LIT, t);
    e->lit = mkval(p->ar, V_STR);
    e->lit->s = t->s;
    e->lit->n = t->n;
    /* adjacent string literals concatenate */
    while (peek(ts)->k == T_STR) {
      tok *u = next_tok(ts);
      char *c = ar_alloc(p->ar, e->lit->n + u->n + 1);
      memcpy(c, e->lit->s, e->lit->n);
      memcpy(c + e->lit->n, u->s, u->n);
      e->lit->s = c;
      e->lit->n += u->n;
    }
    return e;
  }
  case T_NAME:
    e = mk(p, E_LIT, t);
    if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) { e->lit = mkval(p->ar, V_BOOL); e->lit->i = 1; return e; }
    if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) { e->lit = mkval(p->ar, V_BOOL); return e; }
    if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) { e->lit = mkval(p->ar, V_NONE); return e; }
    e->k = E_NAME;
    e->name = t->s;
    return e;
  case T_OP:
    if (is_op(t, "(")) {
      if (accept_op(ts, ")")) { e = mk(p, E_LIST, t); return e; }
      expr *first = parse_expr(p, ts);
      if (accept_op(ts, ",")) { /* tuple */
        e = mk(p, E_LIST, t);
        e->op = 1;
        e->args = ar_alloc(p->ar, sizeof(expr *) * 64);
        e->args[e->nargs++] = first;
        while (!accept_op(ts, ")")) {
          if (e->nargs >= 64) perr(p, t->line, t->col, "tuple too long");
          e->args[e->nargs++] = parse_expr(p, ts);
          if (!accept_op(ts, ",")) { expect_op(p, ts, ")"); break; }
        }
        return e;
      }
      expect_op(p, ts, ")");
      return first;
    }
    if (is_op(t, "[")) {
      e = mk(p, E_LIST, t);
      int cap = 8;
      e->args = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap);
      while (!accept_op(ts, "]")) {
        if (e->nargs == cap) { expr **na = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap * 2); memcpy(na, e->args, sizeof(expr *) * (size_t)cap); e->args = na; cap *= 2; }
        e->args[e->nargs++] = parse_expr(p, ts);
        if (!accept_op(ts, ",")) { expect_op(p, ts, "]"); break; }
      }
      return e;
    }
    if (is_op(t, "{")) {
      e = mk(p, E_DICT, t);
      int cap = 8;
      e->args = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap);
      e->kwv = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap);
      while (!accept_op(ts, "}")) {
        if (e->nargs == cap) {
          expr **na = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap * 2), **nv = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap * 2);
          memcpy(na, e->args, sizeof(expr *) * (size_t)cap);
          memcpy(nv, e->kwv, sizeof(expr *) * (size_t)cap);
          e->args = na; e->kwv = nv; cap *= 2;
        }
        e->args[e->nargs] = parse_expr(p, ts);
        expect_op(p, ts, ":");
        e->kwv[e->nargs++] = parse_expr(p, ts);
        if (!accept_op(ts, ",")) { expect_op(p, ts, "}"); break; }
      }
      return e;
    }
    break;
  }
  if (t->k == T_EOF) perr(p, t->line, t->col, "unexpected end of expression");
  perr(p, t->line, t->col, "unexpected '%s'", t->k == T_OP ? t->s : "token");
}

static expr *parse_postfix(pctx *p, tokstream *ts, expr *e) {
  while (1) {
    tok *t = peek(ts);
    if (accept_op(ts, ".")) {
      expr *a = mk(p, E_ATTR, t);
      a->a = e;
      tok *nt = next_tok(ts);
      if (nt->k == T_NAME) a->name = nt->s;
      else if (nt->k == T_INT) { a->k = E_ITEM; a->b = mk(p, E_LIT, nt); a->b->lit = mkval(p->ar, V_INT); a->b->lit->i = nt->i; }
      else perr(p, nt->line, nt->col, "expected an attribute name");
      e = a;
    } else if (accept_op(ts, "[")) {
      expr *lo = NULL, *hi = NULL, *step = NULL;
      int slice = 0;
      if (!is_op(peek(ts), ":")) lo = parse_expr(p, ts);
      if (accept_op(ts, ":")) {
        slice = 1;
        if (!is_op(peek(ts), "]") && !is_op(peek(ts), ":")) hi = parse_expr(p, ts);
        if (accept_op(ts, ":") && !is_op(peek(ts), "]")) step = parse_expr(p, ts);
      }
      expect_op(p, ts, "]");
      expr *x = mk(p, slice ? E_SLICE : E_ITEM, t);
      x->a = e;
      x->b = lo;
      if (slice) { x->c = hi; x->args = ar_alloc(p->ar, sizeof(expr *)); x->args[0] = step; }
      e = x;
    } else if (accept_op(ts, "(")) {
      expr *c = mk(p, E_CALL, t);
      c->a = e;
      parse_call_args(p, ts, c);
      e = c;
    } else return e;
  }
}

static expr *parse_filters(pctx *p, tokstream *ts, expr *e) {
  while (1) {
    tok *t = peek(ts);
    if (accept_op(ts, "|")) {
      expr *f = mk(p, E_FILTER, t);
      f->a = e;
      f->name = expect_name(p, ts);
      if (accept_op(ts, "(")) parse_call_args(p, ts, f);
      e = f;
    } else if (accept_name(ts, "is")) {
      expr *x = mk(p, E_TEST, t);
      x->a = e;
      x->negate = accept_name(ts, "not");
      x->name = expect_name(p, ts);
      if (accept_op(ts, "(")) parse_call_args(p, ts, x);
      else {
        tok *u = peek(ts);
        /* one bare argument: `is equalto 'x'`, `is sameas false` */
        if (u->k == T_STR || u->k == T_INT || u->k == T_FLOAT ||
            (u->k == T_NAME && strcmp(u->s, "and") && strcmp(u->s, "or") && strcmp(u->s, "else") && strcmp(u->s, "if") &&
             strcmp(u->s, "in") && strcmp(u->s, "is") && strcmp(u->s, "not"))) {
          x->args = ar_alloc(p->ar, sizeof(expr *));
          x->args[0] = parse_postfix(p, ts, parse_primary(p, ts));
          x->nargs = 1;
        }
      }
      e = x;
    } else return e;
  }
}

static expr *parse_unary(pctx *p, tokstream *ts) {
  tok *t = peek(ts);
  if (p->depth > 200) perr(p, t->line, t->col, "expression nested too deeply");
  if (is_op(t, "-") || is_op(t, "+")) {
    ts->pos++;
    p->depth++;
    expr *e = mk(p, t->s[0] == '-' ? E_NEG : E_POS, t);
    e->a = parse_unary(p, ts);
    p->depth--;
    return e;
  }
  return parse_filters(p, ts, parse_postfix(p, ts, parse_primary(p, ts)));
}

static expr *bin(pctx *p, tok *t, int op, expr *a, expr *b) {
  expr *e = mk(p, E_BIN, t);
  e->op = op;
  e->a = a;
  e->b = b;
  return e;
}

/* one left-associative level of binary operators: ops[i] becomes operator code codes[i] */
static expr *parse_level(pctx *p, tokstream *ts, expr *(*next)(pctx *, tokstream *), const char *const *ops, const char *codes) {
  expr *e = next(p, ts);
  while (1) {
    tok *t = peek(ts);
    int hit = -1;
    for (int k = 0; ops[k] && hit < 0; k++) if (is_op(t, ops[k])) hit = k;
    if (hit < 0) return e;
    ts->pos++;
    e = bin(p, t, codes[hit], e, next(p, ts));
  }
}
static expr *parse_pow(pctx *p, tokstream *ts) {
  static const char *const ops[] = {"**", NULL};
  return parse_level(p, ts, parse_unary, ops, "P");
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
static expr *parse_cmp(pctx *p, tokstream *ts) {
  expr *e = parse_add(p, ts);
  while (1) {
    tok *t = peek(ts);
    static const char *ops[] = {"==", "!=", "<=", ">=", "<", ">", NULL};
    int hit = -1;
    for (int k = 0; ops[k]; k++) if (is_op(t, ops[k])) hit = k;
    if (hit >= 0) {
      ts->pos++;
      expr *c = mk(p, E_CMP, t);
      c->op = hit;
      c->a = e;
      c->b = parse_add(p, ts);
      e = c;
    } else if (is_name(t, "in") || (is_name(t, "not") && is_name(&ts->v[ts->pos + 1], "in"))) {
      int neg = is_name(t, "not");
      ts->pos += neg ? 2 : 1;
      expr *c = mk(p, E_IN, t);
      c->negate = neg;
      c->a = e;
      c->b = parse_add(p, ts);
      e = c;
    } else return e;
  }
}
static expr *parse_not(pctx *p, tokstream *ts) {
  tok *t = peek(ts);
  if (accept_name(ts, "not")) {
    if (++p->depth > 200) perr(p, t->line, t->col, "expression nested too deeply");
    expr *e = mk(p, E_NOT, t);
    e->a = parse_not(p, ts);
    p->depth--;
    return e;
  }
  return parse_cmp(p, ts);
}
static expr *parse_and(pctx *p, tokstream *ts) {
  expr *e = parse_not(p, ts);
  tok *t;
  while ((t = peek(ts)) && accept_name(ts, "and")) { expr *x = mk(p, E_AND, t); x->a = e; x->b = parse_not(p, ts); e = x; }
  return e;
}
static expr *parse_or(pctx *p, tokstream *ts) {
  expr *e = parse_and(p, ts);
  tok *t;
  while ((t = peek(ts)) && accept_name(ts, "or")) { expr *x = mk(p, E_OR, t); x->a = e; x->b = parse_and(p, ts); e = x; }
  return e;
}
static expr *parse_expr(pctx *p, tokstream *ts) {
  if (++p->depth > 200) { tok *t = peek(ts); perr(p, t->line, t->col, "expression nested too deeply"); }
  expr *e = parse_or(p, ts);
  p->depth--;
  tok *t = peek(ts);
  if (accept_name(ts, "if")) {
    expr *c = mk(p, E_COND, t);
    c->a = e;
    c->b = parse_or(p, ts);
    if (accept_name(ts, "else")) c->c = parse_expr(p, ts);
    return c;
  }
  return e;
}

/* ------------------------------------------------------------------ template lexer + statement parser */
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

static void line_col(const char *src, size_t off, int *line, int *col) {
  int l = 1, c = 1;
  for (size_t i = 0; i < off; i++) { if (src[i] == '\n') { l++; c = 1; } else c++; }
  *line = l;
  *col = c;
}

static void split_template(pctx *p, const char *src, chunks *out) {
  size_t n = strlen(src), i = 0;
  int cap = 64;
  out->v = ar_alloc(p->ar, sizeof(chunk) * (size_t)cap);
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
    if (strip_next) while (ts < te && isspace((unsigned char)src[ts])) ts++;
    else if (trim_nl && ts < te && src[ts] == '\n') ts++;
    else if (trim_nl && ts + 1 < te && src[ts] == '\r' && src[ts + 1] == '\n') ts += 2;
    strip_next = trim_nl = 0;
    if (kind) {
      int minus = j + 2 < n && src[j + 2] == '-', plus = j + 2 < n && src[j + 2] == '+';
      if (minus) while (te > ts && isspace((unsigned char)src[te - 1])) te--;
      else if ((kind == '%' || kind == '#') && !plus) {
        /* lstrip_blocks: only whitespace between line start and the tag */
        size_t q = te;
        while (q > ts && (src[q - 1] == ' ' || src[q - 1] == '\t')) q--;
        if (q == 0 || src[q - 1] == '\n') { if (q >= ts) te = q; }
      }
    }
    if (out->n + 3 >= cap) { /* room for this text, a tag and a raw block */
      cap *= 2;
      out->v = ar_resize(p->ar, out->v, out->n, cap, sizeof *out->v);
    }
    if (te > ts) {
      chunk *c = &out->v[out->n++];
      c->kind = 0;
      c->s = src + ts;
      c->n = te - ts;
      line_col(src, ts, &c->line, &c->col);
    }
    if (!kind) break;
    /* tag body */
    const char *close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t b = j + 2;
    if (b < n && (src[b] == '-' || src[b] == '+')) b++;
    size_t e = b;
    char q = 0;
    while (e + 1 < n) {
      if (kind != '#') {
        if (q) { if (src[e] == '\\') { e += 2; continue; } if (src[e] == q) q = 0; e++; continue; }
        if (src[e] == '\'' || src[e] == '"') { q = src[e++]; continue; }
      }
      if (src[e] == close[0] && src[e + 1] == close[1]) break;
      e++;
    }
    int line, col;
    line_col(src, j, &line, &col);
    if (e + 1 >= n) perr(p, line, col, "unclosed tag (missing '%s')", close);
    size_t be = e;
    int rminus = be > b && src[be - 1] == '-';
    if (rminus) be--;
    if (kind != '#') {
      /* {% raw %} ... {% endraw %} */
      size_t k = b;
      while (k < be && isspace((unsigned char)src[k])) k++;
      if (kind == '%' && be - k >= 3 && strncmp(src + k, "raw", 3) == 0) {
        size_t after = e + 2;
        const char *end = strstr(src + after, "endraw");
        if (!end) perr(p, line, col, "{%% raw %%} without {%% endraw %%}");
        size_t tagstart = (size_t)(end - src);
        while (tagstart > after && src[tagstart] != '{') tagstart--;
        size_t rs = after, re_ = tagstart;
        if (rminus) while (rs < re_ && isspace((unsigned char)src[rs])) rs++;
        else if (rs < re_ && src[rs] == '\n') rs++;
        if (src[tagstart + 2] == '-') while (re_ > rs && isspace((unsigned char)src[re_ - 1])) re_--;
        chunk *c = &out->v[out->n++];
        c->kind = 0;
        c->s = src + rs;
        c->n = re_ - rs;
        c->line = line;
        c->col = col;
        const char *tend = strstr(end, "%}");
        if (!tend) perr(p, line, col, "unclosed endraw tag");
        i = (size_t)(tend - src) + 2;
        strip_next = tend > src && tend[-1] == '-';
        trim_nl = !strip_next;
        continue;
      }
      chunk *c = &out->v[out->n++];
      c->kind = kind == '{' ? 1 : 2;
      c->s = src + b;
      c->n = be - b;
      line_col(src, b, &c->line, &c->col);
    }
    i = e + 2;
    strip_next = rminus;
    trim_nl = !rminus && kind != '{';
  }
}

static void body_push(pctx *p, body *b, stmt *s) {
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 8;
    b->v = ar_resize(p->ar, b->v, b->n, b->cap, sizeof *b->v);
  }
  b->v[b->n++] = s;
}

/* parse statements until a block tag whose first word is one of `ends`; returns that word */
static const char *parse_body(pctx *p, chunks *cs, body *b, const char *const *ends, tokstream *end_ts);
static const char *parse_body_inner(pctx *p, chunks *cs, body *b, const char *const *ends, tokstream *end_ts);

static stmt *mkstmt(pctx *p, int k, int line, int col) {
  stmt *s = ar_alloc(p->ar, sizeof *s);
  s->k = k;
  s->line = line;
  s->col = col;
  return s;
}

static void expect_end(pctx *p, tokstream *ts) {
  tok *t = peek(ts);
  if (t->k != T_EOF) perr(p, t->line, t->col, "unexpected '%s' at end of tag", t->k == T_OP || t->k == T_NAME ? t->s : "token");
}

static const char *parse_body(pctx *p, chunks *cs, body *b, const char *const *ends, tokstream *end_ts) {
  if (++p->depth > 200) perr(p, cs->pos < cs->n ? cs->v[cs->pos].line : 0, cs->pos < cs->n ? cs->v[cs->pos].col : 0, "blocks nested too deeply");
  const char *res = NULL;
  res = parse_body_inner(p, cs, b, ends, end_ts);
  p->depth--;
  return res;
}

static const char *parse_body_inner(pctx *p, chunks *cs, body *b, const char *const *ends, tokstream *end_ts) {
  while (cs->pos < cs->n) {
    chunk *c = &cs->v[cs->pos++];
    if (c->kind == 0) {
      stmt *s = mkstmt(p, S_TEXT, c->line, c->col);
      s->text = c->s;
      s->tlen = c->n;
      body_push(p, b, s);
      continue;
    }
    tokstream ts;
    lex_tag(p, c->s, c->n, c->line, c->col, &ts);
    if (c->kind == 1) {
      stmt *s = mkstmt(p, S_OUT, c->line, c->col);
      s->e = parse_expr(p, &ts);
      expect_end(p, &ts);
      body_push(p, b, s);
      continue;
    }
    tok *kw = next_tok(&ts);
    if (kw->k != T_NAME) perr(p, kw->line, kw->col, "expected a statement keyword in {%% %.*s %%}", (int)(c->n > 40 ? 40 : c->n), c->s);
    for (const char *const *e = ends; e && *e; e++)
      if (!strcmp(kw->s, *e)) { if (end_ts) *end_ts = ts; return *e; }
    const char *w = kw->s;
    if (!strcmp(w, "if")) {
      stmt *s = mkstmt(p, S_IF, kw->line, kw->col);
      int cap = 4;
      s->conds = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap);
      s->bodies = ar_alloc(p->ar, sizeof(body) * (size_t)cap);
      s->conds[0] = parse_expr(p, &ts);
      expect_end(p, &ts);
      s->nconds = 1;
      static const char *const ends_if[] = {"elif", "else", "endif", NULL};
      while (1) {
        tokstream et;
        const char *got = parse_body(p, cs, &s->bodies[s->nconds - 1], ends_if, &et);
        if (!got) perr(p, kw->line, kw->col, "'if' without 'endif'");
        if (!strcmp(got, "elif")) {
          if (s->nconds == cap) {
            expr **nc = ar_alloc(p->ar, sizeof(expr *) * (size_t)cap * 2);
            body *nb = ar_alloc(p->ar, sizeof(body) * (size_t)cap * 2);
            memcpy(nc, s->conds, sizeof(expr *) * (size_t)cap);
            memcpy(nb, s->bodies, sizeof(body) * (size_t)cap);
            s->conds = nc; s->bodies = nb; cap *= 2;
          }
          s->conds[s->nconds++] = parse_expr(p, &et);
          expect_end(p, &et);
        } else if (!strcmp(got, "else")) {
          expect_end(p, &et);
          static const char *const ends_else[] = {"endif", NULL};
          if (!parse_body(p, cs, &s->else_body, ends_else, &et)) perr(p, kw->line, kw->col, "'if' without 'endif'");
          expect_end(p, &et);
          break;
        } else { expect_end(p, &et); break; }
      }
      body_push(p, b, s);
    } else if (!strcmp(w, "for")) {
      stmt *s = mkstmt(p, S_FOR, kw->line, kw->col);
      s->targets = ar_alloc(p->ar, sizeof(char *) * 8);
      accept_op(&ts, "(");
      do {
        if (s->ntargets == 8) perr(p, kw->line, kw->col, "too many loop variables");
        s->targets[s->ntargets++] = expect_name(p, &ts);
      } while (accept_op(&ts, ","));
      accept_op(&ts, ")");
      if (!accept_name(&ts, "in")) perr(p, kw->line, kw->col, "expected 'in' in for loop");
      s->e = parse_or(p, &ts);
      if (accept_name(&ts, "if")) s->filter = parse_or(p, &ts);
      if (accept_name(&ts, "recursive")) perr(p, kw->line, kw->col, "recursive loops are not supported");
      expect_end(p, &ts);
      static const char *const ends_for[] = {"else", "endfor", NULL};
      tokstream et;
      const char *got = parse_body(p, cs, &s->b, ends_for, &et);
      if (!got) perr(p, kw->line, kw->col, "'for' without 'endfor'");
      expect_end(p, &et);
      if (!strcmp(got, "else")) {
        static const char *const ends_e[] = {"endfor", NULL};
        if (!parse_body(p, cs, &s->else_body, ends_e, &et)) perr(p, kw->line, kw->col, "'for' without 'endfor'");
        expect_end(p, &et);
      }
      body_push(p, b, s);
    } else if (!strcmp(w, "set")) {
      stmt *s = mkstmt(p, S_SET, kw->line, kw->col);
      s->targets = ar_alloc(p->ar, sizeof(char *) * 8);
      s->targets[s->ntargets++] = expect_name(p, &ts);
      if (accept_op(&ts, ".")) s->attr = expect_name(p, &ts);
      else while (accept_op(&ts, ",")) { if (s->ntargets == 8) perr(p, kw->line, kw->col, "too many targets"); s->targets[s->ntargets++] = expect_name(p, &ts); }
      if (accept_op(&ts, "=")) {
        s->e = parse_expr(p, &ts);
        expect_end(p, &ts);
      } else {
        expect_end(p, &ts);
        s->k = S_SETBLOCK;
        static const char *const ends_set[] = {"endset", NULL};
        tokstream et;
        if (!parse_body(p, cs, &s->b, ends_set, &et)) perr(p, kw->line, kw->col, "'set' block without 'endset'");
      }
      body_push(p, b, s);
    } else if (!strcmp(w, "macro")) {
      stmt *s = mkstmt(p, S_MACRO, kw->line, kw->col);
      s->attr = expect_name(p, &ts);
      expect_op(p, &ts, "(");
      s->params = ar_alloc(p->ar, sizeof(char *) * 32);
      s->defaults = ar_alloc(p->ar, sizeof(expr *) * 32);
      while (!accept_op(&ts, ")")) {
        if (s->nparams == 32) perr(p, kw->line, kw->col, "too many macro parameters");
        s->params[s->nparams] = expect_name(p, &ts);
        if (accept_op(&ts, "=")) s->defaults[s->nparams] = parse_expr(p, &ts);
        s->nparams++;
        if (!accept_op(&ts, ",")) { expect_op(p, &ts, ")"); break; }
      }
      expect_end(p, &ts);
      static const char *const ends_m[] = {"endmacro", NULL};
      tokstream et;
      if (!parse_body(p, cs, &s->b, ends_m, &et)) perr(p, kw->line, kw->col, "'macro' without 'endmacro'");
      body_push(p, b, s);
    } else if (!strcmp(w, "break") || !strcmp(w, "continue")) {
      expect_end(p, &ts);
      body_push(p, b, mkstmt(p, w[0] == 'b' ? S_BREAK : S_CONTINUE, kw->line, kw->col));
    } else if (!strcmp(w, "generation") || !strcmp(w, "endgeneration")) {
      /* transformers' AssistantTracker markers: no output of their own */
    } else {
      perr(p, kw->line, kw->col, "unsupported template statement '%s'", w);
    }
  }
  return NULL;
}

void oc_template_free(oc_template *t) {
  if (!t) return;
  ar_free(&t->ar);
  free(t->name);
  free(t);
}

static int parse_guarded(pctx *p, const char *src, body *root) {
  if (setjmp(p->jb)) return -1;
  chunks cs = {0};
  split_template(p, src, &cs);
  parse_body(p, &cs, root, NULL, NULL);
  return 0;
}

int oc_template_parse(const char *src, const char *name, oc_template **out, oc_error *err) {
  *out = NULL;
  oc_template *t = calloc(1, sizeof *t);
  if (!t) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  t->name = strdup(name ? name : "template");
  pctx p;
  memset(&p, 0, sizeof p);
  p.ar = &t->ar;
  p.err = err;
  p.tname = t->name;
  /* the template source must outlive parsing: copy it into the arena */
  const char *copy = ar_strndup(&t->ar, src, strlen(src));
  if (!copy || parse_guarded(&p, copy, &t->root)) {
    if (!copy) oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    oc_template_free(t);
    return -1;
  }
  *out = t;
  return 0;
}

/* ------------------------------------------------------------------ runtime */
typedef struct frame frame;
struct frame {
  frame *parent;
  const char **names;
  val **vals;
  int n, cap;
};

typedef struct {
  arena *ar;
  oc_error *err;
  const char *tname;
  jmp_buf jb;
  char *out;
  size_t len, cap;
  frame *globals;
  int depth;
  int brk; /* 1 break, 2 continue */
  /* output buffers of enclosing macro calls / set blocks, freed if an error unwinds them */
  struct { char *out; size_t len, cap; } saved[512];
  int nsaved;
} rctx;

static void rerr(rctx *r, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5), noreturn));

/* render into a fresh buffer (macro body, set block); pop_capture returns its text */
static void push_capture(rctx *r) {
  if (r->nsaved == (int)(sizeof r->saved / sizeof *r->saved)) rerr(r, 0, 0, "macro calls nested too deeply");
  r->saved[r->nsaved].out = r->out;
  r->saved[r->nsaved].len = r->len;
  r->saved[r->nsaved].cap = r->cap;
  r->nsaved++;
  r->out = NULL;
  r->len = r->cap = 0;
}

static void rerr(rctx *r, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_at(r->err, r->tname, line, col, fmt, ap);
  va_end(ap);
  longjmp(r->jb, 1);
}

static void emit(rctx *r, const char *s, size_t n) {
  if (r->len + n > ((size_t)64 << 20)) rerr(r, 0, 0, "rendered text exceeds 64 MiB");
  if (r->len + n + 1 > r->cap) {
    size_t nc = (r->len + n + 1) * 2;
    char *no = realloc(r->out, nc);
    if (!no) rerr(r, 0, 0, "out of memory");
    r->out = no;
    r->cap = nc;
  }
  memcpy(r->out + r->len, s, n);
  r->len += n;
  r->out[r->len] = 0;
}

static val *V(rctx *r, int t) {
  val *v = mkval(r->ar, t);
  if (!v) rerr(r, 0, 0, "out of memory");
  return v;
}
static val *vstr(rctx *r, const char *s, size_t n) { val *v = V(r, V_STR); v->s = ar_strndup(r->ar, s, n); v->n = n; return v; }
static val *vint(rctx *r, long long i) { val *v = V(r, V_INT); v->i = i; return v; }

static val *pop_capture(rctx *r) {
  val *v = vstr(r, r->out ? r->out : "", r->len);
  free(r->out);
  r->nsaved--;
  r->out = r->saved[r->nsaved].out;
  r->len = r->saved[r->nsaved].len;
  r->cap = r->saved[r->nsaved].cap;
  return v;
}
static val *vbool(rctx *r, int b) { val *v = V(r, V_BOOL); v->i = b != 0; return v; }

static void list_push(rctx *r, val *l, val *x) {
  if (l->len == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 8;
    if (!(l->items = ar_resize(r->ar, l->items, l->len, l->cap, sizeof *l->items))) rerr(r, 0, 0, "out of memory");
  }
  l->items[l->len++] = x;
}

static val *dict_get(const val *d, const char *k, size_t kl) {
  for (int i = 0; i < d->len; i++) if (d->klen[i] == kl && memcmp(d->keys[i], k, kl) == 0) return d->items[i];
  return NULL;
}

static void dict_set(rctx *r, val *d, const char *k, size_t kl, val *x) {
  for (int i = 0; i < d->len; i++) if (d->klen[i] == kl && memcmp(d->keys[i], k, kl) == 0) { d->items[i] = x; return; }
  if (d->len == d->cap) {
    d->cap = d->cap ? d->cap * 2 : 8;
    d->items = ar_resize(r->ar, d->items, d->len, d->cap, sizeof *d->items);
    d->keys = ar_resize(r->ar, d->keys, d->len, d->cap, sizeof *d->keys);
    d->klen = ar_resize(r->ar, d->klen, d->len, d->cap, sizeof *d->klen);
    if (!d->items || !d->keys || !d->klen) rerr(r, 0, 0, "out of memory");
  }
  d->keys[d->len] = ar_strndup(r->ar, k, kl);
  d->klen[d->len] = kl;
  d->items[d->len++] = x;
}

static val *from_json(rctx *r, const cJSON *j) {
  if (!j || cJSON_IsNull(j)) return V(r, V_NONE);
  if (cJSON_IsBool(j)) return vbool(r, cJSON_IsTrue(j));
  if (cJSON_IsNumber(j)) {
    double d = j->valuedouble;
    if (d == floor(d) && fabs(d) < 9e15) {
      /* integral JSON numbers written without '.', 'e': Python int */
      return vint(r, (long long)d);
    }
    val *v = V(r, V_FLOAT);
    v->f = d;
    return v;
  }
  if (cJSON_IsString(j)) return vstr(r, j->valuestring, strlen(j->valuestring));
  if (cJSON_IsArray(j)) { val *l = V(r, V_LIST); for (const cJSON *e = j->child; e; e = e->next) list_push(r, l, from_json(r, e)); return l; }
  val *d = V(r, V_DICT);
  for (const cJSON *e = j->child; e; e = e->next) dict_set(r, d, e->string, strlen(e->string), from_json(r, e));
  return d;
}

static void frame_set(rctx *r, frame *f, const char *name, val *v) {
  for (int i = 0; i < f->n; i++) if (!strcmp(f->names[i], name)) { f->vals[i] = v; return; }
  if (f->n == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 8;
    f->names = ar_resize(r->ar, f->names, f->n, f->cap, sizeof *f->names);
    f->vals = ar_resize(r->ar, f->vals, f->n, f->cap, sizeof *f->vals);
    if (!f->names || !f->vals) rerr(r, 0, 0, "out of memory");
  }
  f->names[f->n] = name;
  f->vals[f->n++] = v;
}

static val *lookup(frame *f, const char *name) {
  for (; f; f = f->parent)
    for (int i = f->n - 1; i >= 0; i--) if (!strcmp(f->names[i], name)) return f->vals[i];
  return NULL;
}

static int truthy(const val *v) {
  switch (v->t) {
  case V_UNDEF: case V_NONE: return 0;
  case V_BOOL: case V_INT: return v->i != 0;
  case V_FLOAT: return v->f != 0;
  case V_STR: return v->n != 0;
  case V_LIST: case V_DICT: return v->len != 0 || v->is_ns;
  default: return 1;
  }
}

/* ---- Python str() / repr() / json.dumps */
typedef struct {
  char *s;
  size_t n, cap;
} sbuf;
static void sb_add(rctx *r, sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t nc = (b->n + n + 1) * 2 + 32;
    char *ns = ar_alloc(r->ar, nc);
    if (b->n) memcpy(ns, b->s, b->n);
    b->s = ns;
    b->cap = nc;
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}
static void sb_str(rctx *r, sbuf *b, const char *s) { sb_add(r, b, s, strlen(s)); }

static void fmt_float(double d, char *buf, size_t bs) {
  if (isnan(d)) { snprintf(buf, bs, "nan"); return; }
  if (isinf(d)) { snprintf(buf, bs, d > 0 ? "inf" : "-inf"); return; }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, bs, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  /* Python repr: exponent form like 1e+16, at least one decimal digit otherwise */
  char *e = strchr(buf, 'e');
  if (e) {
    int ex = atoi(e + 1);
    if (ex >= -4 && ex < 16) { snprintf(buf, bs, "%.17f", d); /* rare: fall back */ }
    else {
      char mant[32], tmp[48];
      snprintf(mant, sizeof mant, "%.*s", (int)(e - buf) < 24 ? (int)(e - buf) : 24, buf);
      if (snprintf(tmp, sizeof tmp, "%se%c%02d", mant, ex < 0 ? '-' : '+', abs(ex) % 1000) < (int)sizeof tmp) snprintf(buf, bs, "%s", tmp);
    }
  } else if (!strchr(buf, '.')) strncat(buf, ".0", bs - strlen(buf) - 1);
}

static void repr_str(rctx *r, sbuf *b, const char *s, size_t n) {
  int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
  char q = (has_sq && !has_dq) ? '"' : '\'';
  sb_add(r, b, &q, 1);
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == q || c == '\\') { sb_add(r, b, "\\", 1); sb_add(r, b, &c, 1); }
    else if (c == '\n') sb_str(r, b, "\\n");
    else if (c == '\t') sb_str(r, b, "\\t");
    else if (c == '\r') sb_str(r, b, "\\r");
    else if ((unsigned char)c < 0x20 || c == 0x7f) { char h[8]; snprintf(h, sizeof h, "\\x%02x", (unsigned char)c); sb_str(r, b, h); }
    else sb_add(r, b, &c, 1);
  }
  sb_add(r, b, &q, 1);
}

static void to_str(rctx *r, sbuf *b, const val *v, int repr) {
  char num[64];
  switch (v->t) {
  case V_UNDEF: break;
  case V_NONE: sb_str(r, b, "None"); break;
  case V_BOOL: sb_str(r, b, v->i ? "True" : "False"); break;
  case V_INT: snprintf(num, sizeof num, "%lld", v->i); sb_str(r, b, num); break;
  case V_FLOAT: fmt_float(v->f, num, sizeof num); sb_str(r, b, num); break;
  case V_STR: if (repr) repr_str(r, b, v->s, v->n); else sb_add(r, b, v->s, v->n); break;
  case V_LIST:
    sb_str(r, b, v->is_tuple ? "(" : "[");
    for (int i = 0; i < v->len; i++) { if (i) sb_str(r, b, ", "); to_str(r, b, v->items[i], 1); }
    sb_str(r, b, v->is_tuple ? (v->len == 1 ? ",)" : ")") : "]");
    break;
  case V_DICT:
    if (v->is_ns) { sb_str(r, b, "<Namespace>"); break; }
    sb_str(r, b, "{");
    for (int i = 0; i < v->len; i++) {
      if (i) sb_str(r, b, ", ");
      repr_str(r, b, v->keys[i], v->klen[i]);
      sb_str(r, b, ": ");
      to_str(r, b, v->items[i], 1);
    }
    sb_str(r, b, "}");
    break;
  default: sb_str(r, b, "<function>");
  }
}

static void json_str(rctx *r, sbuf *b, const char *s, size_t n) {
  sb_str(r, b, "\"");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '"': sb_str(r, b, "\\\""); break;
    case '\\': sb_str(r, b, "\\\\"); break;
    case '\n': sb_str(r, b, "\\n"); break;
    case '\r': sb_str(r, b, "\\r"); break;
    case '\t': sb_str(r, b, "\\t"); break;
    case '\b': sb_str(r, b, "\\b"); break;
    case '\f': sb_str(r, b, "\\f"); break;
    default:
      if (c < 0x20 || c == 0x7f) { char h[8]; snprintf(h, sizeof h, "\\u%04x", c); sb_str(r, b, h); }
      else sb_add(r, b, (const char *)&c, 1);
    }
  }
  sb_str(r, b, "\"");
}

static void to_json(rctx *r, sbuf *b, const val *v, int indent, int level, int sort_keys) {
  char num[64];
  switch (v->t) {
  case V_UNDEF: case V_NONE: sb_str(r, b, "null"); break;
  case V_BOOL: sb_str(r, b, v->i ? "true" : "false"); break;
  case V_INT: snprintf(num, sizeof num, "%lld", v->i); sb_str(r, b, num); break;
  case V_FLOAT:
    if (isnan(v->f)) sb_str(r, b, "NaN");
    else if (isinf(v->f)) sb_str(r, b, v->f > 0 ? "Infinity" : "-Infinity");
    else { fmt_float(v->f, num, sizeof num); sb_str(r, b, num); }
    break;
  case V_STR: json_str(r, b, v->s, v->n); break;
  case V_LIST: case V_DICT: {
    int dict = v->t == V_DICT;
    sb_str(r, b, dict ? "{" : "[");
    int *order = ar_alloc(r->ar, sizeof(int) * (size_t)(v->len + 1));
    for (int i = 0; i < v->len; i++) order[i] = i;
    if (dict && sort_keys)
      for (int i = 1; i < v->len; i++)
        for (int k = i; k > 0 && strcmp(v->keys[order[k - 1]], v->keys[order[k]]) > 0; k--) { int t = order[k]; order[k] = order[k - 1]; order[k - 1] = t; }
    for (int i = 0; i < v->len; i++) {
      if (i) sb_str(r, b, indent >= 0 ? "," : ", ");
      if (indent >= 0) { sb_str(r, b, "\n"); for (int k = 0; k < indent * (level + 1); k++) sb_str(r, b, " "); }
      if (dict) { json_str(r, b, v->keys[order[i]], v->klen[order[i]]); sb_str(r, b, ": "); }
      to_json(r, b, v->items[order[i]], indent, level + 1, sort_keys);
    }
    if (indent >= 0 && v->len) { sb_str(r, b, "\n"); for (int k = 0; k < indent * level; k++) sb_str(r, b, " "); }
    sb_str(r, b, dict ? "}" : "]");
    break;
  }
  default: rerr(r, 0, 0, "object of this type is not JSON serializable");
  }
}

static val *str_of(rctx *r, const val *v) {
  if (v->t == V_STR) return (val *)v;
  sbuf b = {0};
  to_str(r, &b, v, 0);
  return vstr(r, b.s ? b.s : "", b.n);
}

/* ---- comparisons */
static int num_of(const val *v, double *d) {
  if (v->t == V_INT || v->t == V_BOOL) { *d = (double)v->i; return 1; }
  if (v->t == V_FLOAT) { *d = v->f; return 1; }
  return 0;
}

static int equal(const val *a, const val *b) {
  double x, y;
  if (num_of(a, &x) && num_of(b, &y)) return x == y;
  if (a->t != b->t) return (a->t == V_UNDEF && b->t == V_UNDEF);
  switch (a->t) {
  case V_NONE: case V_UNDEF: return 1;
  case V_STR: return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
  case V_LIST:
    if (a->len != b->len) return 0;
    for (int i = 0; i < a->len; i++) if (!equal(a->items[i], b->items[i])) return 0;
    return 1;
  case V_DICT:
    if (a->len != b->len) return 0;
    for (int i = 0; i < a->len; i++) { const val *o = dict_get(b, a->keys[i], a->klen[i]); if (!o || !equal(a->items[i], o)) return 0; }
    return 1;
  default: return a == b;
  }
}

static int compare(rctx *r, const expr *e, const val *a, const val *b) {
  double x, y;
  if (num_of(a, &x) && num_of(b, &y)) return x < y ? -1 : x > y;
  if (a->t == V_STR && b->t == V_STR) {
    size_t m = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, m);
    return c ? (c < 0 ? -1 : 1) : (a->n < b->n ? -1 : a->n > b->n);
  }
  rerr(r, e ? e->line : 0, e ? e->col : 0, "'<' not supported between these types");
}

static int contains(rctx *r, const expr *e, const val *hay, const val *needle) {
  if (hay->t == V_STR) {
    if (needle->t != V_STR) rerr(r, e->line, e->col, "'in <string>' requires a string on the left");
    if (needle->n == 0) return 1;
    if (needle->n > hay->n) return 0;
    for (size_t i = 0; i + needle->n <= hay->n; i++) if (memcmp(hay->s + i, needle->s, needle->n) == 0) return 1;
    return 0;
  }
  if (hay->t == V_LIST) { for (int i = 0; i < hay->len; i++) if (equal(hay->items[i], needle)) return 1; return 0; }
  if (hay->t == V_DICT) return needle->t == V_STR && dict_get(hay, needle->s, needle->n) != NULL;
  if (hay->t == V_UNDEF) rerr(r, e->line, e->col, "argument of type 'Undefined' is not iterable");
  rerr(r, e->line, e->col, "'in' needs a string, list or mapping");
}

/* ---- evaluation */
static val *eval(rctx *r, const expr *e, frame *f);
static void exec_body(rctx *r, const body *b, frame *f);

enum { F_RAISE = 1, F_NAMESPACE, F_RANGE, F_DICT, F_STRFTIME };

static val *get_attr(rctx *r, val *o, const char *name) {
  if (o->t == V_DICT) {
    val *x = dict_get(o, name, strlen(name));
    if (x) return x;
    if (o->is_ns) return V(r, V_UNDEF);
  }
  if (o->t == V_STR || o->t == V_DICT || o->t == V_LIST) {
    static const char *methods[] = {"startswith", "endswith", "strip", "lstrip", "rstrip", "split", "replace", "lower", "upper",
                                    "title", "capitalize", "items", "keys", "values", "get", "count", "find", "join", "append", "index", NULL};
    for (int i = 0; methods[i]; i++)
      if (!strcmp(methods[i], name)) { val *m = V(r, V_METHOD); m->self = o; m->name = methods[i]; return m; }
  }
  return V(r, V_UNDEF);
}

static val *get_item(rctx *r, const expr *e, val *o, val *k) {
  if (o->t == V_DICT) {
    if (k->t == V_STR) { val *x = dict_get(o, k->s, k->n); return x ? x : V(r, V_UNDEF); }
    return V(r, V_UNDEF);
  }
  if ((o->t == V_LIST || o->t == V_STR) && (k->t == V_INT || k->t == V_BOOL)) {
    long long i = k->i, n = o->t == V_LIST ? o->len : (long long)o->n;
    if (i < 0) i += n;
    if (i < 0 || i >= n) return V(r, V_UNDEF);
    if (o->t == V_LIST) return o->items[i];
    return vstr(r, o->s + i, 1);
  }
  if (o->t == V_STR && k->t == V_STR) return get_attr(r, o, k->s);
  if (o->t == V_UNDEF) rerr(r, e->line, e->col, "cannot index an undefined value");
  return V(r, V_UNDEF);
}

static int is_ws_py(uint32_t c) { return oc_is_whitespace(c) || (c >= 0x1c && c <= 0x1f); }

static val *strip_str(rctx *r, const val *s, const val *chars, int left, int right) {
  size_t a = 0, b = s->n;
  if (chars && chars->t == V_STR) {
    while (left && a < b && memchr(chars->s, s->s[a], chars->n)) a++;
    while (right && b > a && memchr(chars->s, s->s[b - 1], chars->n)) b--;
  } else {
    while (left && a < b) { uint32_t cp; int l = oc_utf8_decode(s->s + a, b - a, &cp); if (!is_ws_py(cp)) break; a += (size_t)l; }
    while (right && b > a) {
      size_t q = b - 1;
      while (q > a && ((unsigned char)s->s[q] & 0xC0) == 0x80) q--;
      uint32_t cp;
      oc_utf8_decode(s->s + q, b - q, &cp);
      if (!is_ws_py(cp)) break;
      b = q;
    }
  }
  return vstr(r, s->s + a, b - a);
}

static val *split_str(rctx *r, const val *s, const val *sep) {
  val *l = V(r, V_LIST);
  if (sep && sep->t == V_STR) {
    if (sep->n == 0) rerr(r, 0, 0, "empty separator");
    size_t st = 0;
    for (size_t i = 0; i + sep->n <= s->n;) {
      if (memcmp(s->s + i, sep->s, sep->n) == 0) { list_push(r, l, vstr(r, s->s + st, i - st)); i += sep->n; st = i; }
      else i++;
    }
    list_push(r, l, vstr(r, s->s + st, s->n - st));
  } else {
    size_t i = 0;
    while (i < s->n) {
      while (i < s->n) { uint32_t cp; int k = oc_utf8_decode(s->s + i, s->n - i, &cp); if (!is_ws_py(cp)) break; i += (size_t)k; }
      if (i >= s->n) break;
      size_t st = i;
      while (i < s->n) { uint32_t cp; int k = oc_utf8_decode(s->s + i, s->n - i, &cp); if (is_ws_py(cp)) break; i += (size_t)k; }
      list_push(r, l, vstr(r, s->s + st, i - st));
    }
  }
  return l;
}

static val *replace_str(rctx *r, const val *s, const val *a, const val *b) {
  if (a->t != V_STR || b->t != V_STR) rerr(r, 0, 0, "replace() needs strings");
  char *o;
  size_t ol;
  if (a->n == 0) return (val *)s;
  char *from = ar_strndup(r->ar, a->s, a->n), *to = ar_strndup(r->ar, b->s, b->n);
  if (oc_str_replace(s->s, s->n, from, to, &o, &ol)) rerr(r, 0, 0, "out of memory");
  val *v = vstr(r, o, ol);
  free(o);
  return v;
}

static val *case_str(rctx *r, const val *s, int upper) {
  size_t ol;
  char *o = upper ? oc_utf8_upper(s->s, s->n, &ol) : oc_utf8_lower(s->s, s->n, &ol);
  if (!o) rerr(r, 0, 0, "out of memory");
  val *v = vstr(r, o, ol);
  free(o);
  return v;
}

typedef struct {
  val **pos;
  int npos;
  const char **kwn;
  val **kwv;
  int nkw;
} callargs;

static val *kwarg(callargs *a, const char *name, int pos) {
  for (int i = 0; i < a->nkw; i++) if (!strcmp(a->kwn[i], name)) return a->kwv[i];
  return pos >= 0 && pos < a->npos ? a->pos[pos] : NULL;
}

static val *call_method(rctx *r, const expr *e, val *m, callargs *a) {
  val *s = m->self;
  const char *n = m->name;
  val *a0 = a->npos > 0 ? a->pos[0] : NULL, *a1 = a->npos > 1 ? a->pos[1] : NULL;
  if (s->t == V_STR) {
    if (!strcmp(n, "startswith") || !strcmp(n, "endswith")) {
      if (!a0 || a0->t != V_STR) rerr(r, e->line, e->col, "%s() needs a string", n);
      if (a0->n > s->n) return vbool(r, 0);
      return vbool(r, memcmp(n[0] == 's' ? s->s : s->s + s->n - a0->n, a0->s, a0->n) == 0);
    }
    if (!strcmp(n, "strip")) return strip_str(r, s, a0, 1, 1);
    if (!strcmp(n, "lstrip")) return strip_str(r, s, a0, 1, 0);
    if (!strcmp(n, "rstrip")) return strip_str(r, s, a0, 0, 1);
    if (!strcmp(n, "split")) return split_str(r, s, a0 && a0->t != V_NONE ? a0 : NULL);
    if (!strcmp(n, "replace")) { if (!a0 || !a1) rerr(r, e->line, e->col, "replace() needs 2 arguments"); return replace_str(r, s, a0, a1); }
    if (!strcmp(n, "lower")) return case_str(r, s, 0);
    if (!strcmp(n, "upper")) return case_str(r, s, 1);
    if (!strcmp(n, "title") || !strcmp(n, "capitalize")) {
      val *lo = case_str(r, s, 0);
      char *c = (char *)lo->s;
      int start = 1;
      for (size_t i = 0; i < lo->n; i++) {
        if (start && c[i] >= 'a' && c[i] <= 'z') c[i] = (char)(c[i] - 32);
        start = n[0] == 't' ? !isalnum((unsigned char)c[i]) : 0;
      }
      return lo;
    }
    if (!strcmp(n, "count") || !strcmp(n, "find") || !strcmp(n, "index")) {
      if (!a0 || a0->t != V_STR) rerr(r, e->line, e->col, "%s() needs a string", n);
      long long cnt = 0, first = -1;
      for (size_t i = 0; a0->n && i + a0->n <= s->n;) {
        if (memcmp(s->s + i, a0->s, a0->n) == 0) { if (first < 0) first = (long long)i; cnt++; i += a0->n; } else i++;
      }
      if (n[0] == 'c') return vint(r, cnt);
      if (first < 0 && n[0] == 'i') rerr(r, e->line, e->col, "substring not found");
      return vint(r, first);
    }
    if (!strcmp(n, "join")) {
      if (!a0 || a0->t != V_LIST) rerr(r, e->line, e->col, "join() needs a list");
      sbuf b = {0};
      for (int i = 0; i < a0->len; i++) { if (i) sb_add(r, &b, s->s, s->n); val *x = str_of(r, a0->items[i]); sb_add(r, &b, x->s, x->n); }
      return vstr(r, b.s ? b.s : "", b.n);
    }
  } else if (s->t == V_DICT) {
    if (!strcmp(n, "items") || !strcmp(n, "keys") || !strcmp(n, "values")) {
      val *l = V(r, V_LIST);
      for (int i = 0; i < s->len; i++) {
        val *k = vstr(r, s->keys[i], s->klen[i]);
        if (n[0] == 'k') list_push(r, l, k);
        else if (n[0] == 'v') list_push(r, l, s->items[i]);
        else { val *t = V(r, V_LIST); t->is_tuple = 1; list_push(r, t, k); list_push(r, t, s->items[i]); list_push(r, l, t); }
      }
      return l;
    }
    if (!strcmp(n, "get")) {
      if (!a0 || a0->t != V_STR) return a1 ? a1 : V(r, V_NONE);
      val *x = dict_get(s, a0->s, a0->n);
      return x ? x : (a1 ? a1 : V(r, V_NONE));
    }
  } else if (s->t == V_LIST) {
    if (!strcmp(n, "append")) rerr(r, e->line, e->col, "lists are immutable in sandboxed templates");
    if (!strcmp(n, "count")) { long long c = 0; for (int i = 0; i < s->len; i++) c += a0 && equal(s->items[i], a0); return vint(r, c); }
    if (!strcmp(n, "index")) { for (int i = 0; i < s->len; i++) if (a0 && equal(s->items[i], a0)) return vint(r, i); rerr(r, e->line, e->col, "value not in list"); }
  }
  rerr(r, e->line, e->col, "unsupported method '%s'", n);
}

static val *call_macro(rctx *r, const expr *e, val *m, callargs *a) {
  const stmt *s = m->node;
  if (++r->depth > 200) rerr(r, e->line, e->col, "macro recursion too deep");
  frame *mf = ar_alloc(r->ar, sizeof *mf);
  mf->parent = r->globals;
  if (a->npos > s->nparams) rerr(r, e->line, e->col, "macro '%s' takes %d arguments, %d given", s->attr, s->nparams, a->npos);
  for (int i = 0; i < s->nparams; i++) {
    val *v = kwarg(a, s->params[i], i);
    if (!v) v = s->defaults[i] ? eval(r, s->defaults[i], mf) : V(r, V_UNDEF);
    frame_set(r, mf, s->params[i], v);
  }
  /* macros render into their own buffer */
  push_capture(r);
  exec_body(r, &s->b, mf);
  val *res = pop_capture(r);
  r->depth--;
  return res;
}

static val *eval_call(rctx *r, const expr *e, frame *f) {
  callargs a = {0};
  a.pos = ar_alloc(r->ar, sizeof(val *) * (size_t)(e->nargs + 1));
  a.kwn = e->kwn;
  a.kwv = ar_alloc(r->ar, sizeof(val *) * (size_t)(e->nkw + 1));
  for (int i = 0; i < e->nargs; i++) a.pos[a.npos++] = eval(r, e->args[i], f);
  for (int i = 0; i < e->nkw; i++) a.kwv[a.nkw++] = eval(r, e->kwv[i], f);
  val *fn = eval(r, e->a, f);
  if (fn->t == V_METHOD) return call_method(r, e, fn, &a);
  if (fn->t == V_MACRO) return call_macro(r, e, fn, &a);
  if (fn->t == V_FUNC) {
    switch (fn->fn) {
    case F_RAISE: {
      val *m = a.npos ? str_of(r, a.pos[0]) : vstr(r, "", 0);
      oc_fail(r->err, "%.*s", (int)m->n, m->s);
      longjmp(r->jb, 1);
    }
    case F_NAMESPACE: case F_DICT: {
      val *d = V(r, V_DICT);
      d->is_ns = fn->fn == F_NAMESPACE;
      if (a.npos && a.pos[0]->t == V_DICT) for (int i = 0; i < a.pos[0]->len; i++) dict_set(r, d, a.pos[0]->keys[i], a.pos[0]->klen[i], a.pos[0]->items[i]);
      for (int i = 0; i < a.nkw; i++) dict_set(r, d, a.kwn[i], strlen(a.kwn[i]), a.kwv[i]);
      return d;
    }
    case F_RANGE: {
      long long lo = 0, hi = 0, st = 1;
      for (int i = 0; i < a.npos; i++) if (a.pos[i]->t != V_INT) rerr(r, e->line, e->col, "range() needs integers");
      if (a.npos == 1) hi = a.pos[0]->i;
      else if (a.npos >= 2) { lo = a.pos[0]->i; hi = a.pos[1]->i; if (a.npos > 2) st = a.pos[2]->i; }
      if (st == 0) rerr(r, e->line, e->col, "range() step must not be zero");
      val *l = V(r, V_LIST);
      for (long long i = lo; st > 0 ? i < hi : i > hi; i += st) { if (l->len > 1000000) rerr(r, e->line, e->col, "range too large"); list_push(r, l, vint(r, i)); }
      return l;
    }
    case F_STRFTIME: rerr(r, e->line, e->col, "strftime_now is not supported (renders would depend on the clock)");
    }
  }
  if (fn->t == V_UNDEF && e->a->k == E_NAME) rerr(r, e->line, e->col, "'%s' is undefined", e->a->name);
  rerr(r, e->line, e->col, "object is not callable");
}

static val *to_list(rctx *r, const expr *e, val *v) {
  if (v->t == V_LIST) return v;
  val *l = V(r, V_LIST);
  if (v->t == V_DICT) { for (int i = 0; i < v->len; i++) list_push(r, l, vstr(r, v->keys[i], v->klen[i])); return l; }
  if (v->t == V_STR) {
    for (size_t i = 0; i < v->n;) { int k = oc_utf8_len((unsigned char)v->s[i]); list_push(r, l, vstr(r, v->s + i, (size_t)k)); i += (size_t)k; }
    return l;
  }
  if (v->t == V_UNDEF || v->t == V_NONE) {
    if (v->t == V_NONE) rerr(r, e->line, e->col, "'NoneType' object is not iterable");
    return l;
  }
  rerr(r, e->line, e->col, "object is not iterable");
}

static int apply_test(rctx *r, const expr *e, const char *name, val *v, callargs *a) {
  val *a0 = a->npos ? a->pos[0] : NULL;
  if (!strcmp(name, "defined")) return v->t != V_UNDEF;
  if (!strcmp(name, "undefined")) return v->t == V_UNDEF;
  if (!strcmp(name, "none")) return v->t == V_NONE;
  if (!strcmp(name, "string")) return v->t == V_STR;
  if (!strcmp(name, "mapping")) return v->t == V_DICT;
  if (!strcmp(name, "iterable")) return v->t == V_STR || v->t == V_LIST || v->t == V_DICT;
  if (!strcmp(name, "sequence")) return v->t == V_STR || v->t == V_LIST || v->t == V_DICT;
  if (!strcmp(name, "boolean")) return v->t == V_BOOL;
  if (!strcmp(name, "true")) return v->t == V_BOOL && v->i;
  if (!strcmp(name, "false")) return v->t == V_BOOL && !v->i;
  if (!strcmp(name, "number")) return v->t == V_INT || v->t == V_FLOAT;
  if (!strcmp(name, "integer")) return v->t == V_INT;
  if (!strcmp(name, "float")) return v->t == V_FLOAT;
  if (!strcmp(name, "callable")) return v->t == V_MACRO || v->t == V_FUNC || v->t == V_METHOD;
  if (!strcmp(name, "odd") || !strcmp(name, "even")) {
    if (v->t != V_INT) rerr(r, e->line, e->col, "'%s' needs an integer", name);
    return (int)(v->i & 1) == (name[0] == 'o');
  }
  if (!strcmp(name, "divisibleby")) { if (v->t != V_INT || !a0 || a0->t != V_INT || !a0->i) rerr(r, e->line, e->col, "divisibleby needs integers"); return v->i % a0->i == 0; }
  if (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "==")) { if (!a0) rerr(r, e->line, e->col, "'%s' needs an argument", name); return equal(v, a0); }
  if (!strcmp(name, "ne") || !strcmp(name, "!=")) return a0 && !equal(v, a0);
  if (!strcmp(name, "sameas")) return a0 && ((v->t == a0->t && (v->t == V_NONE || (v->t == V_BOOL && v->i == a0->i))) || v == a0);
  if (!strcmp(name, "in")) return a0 && contains(r, e, a0, v);
  if (!strcmp(name, "lower")) return v->t == V_STR && equal(v, case_str(r, v, 0));
  if (!strcmp(name, "upper")) return v->t == V_STR && equal(v, case_str(r, v, 1));
  rerr(r, e->line, e->col, "unsupported test '%s'", name);
}

static val *apply_filter(rctx *r, const expr *e, const char *name, val *v, callargs *a);

static val *select_like(rctx *r, const expr *e, val *v, callargs *a, int reject, int by_attr) {
  val *l = to_list(r, e, v), *out = V(r, V_LIST);
  if (by_attr && (!a->npos || a->pos[0]->t != V_STR)) rerr(r, e->line, e->col, "selectattr/rejectattr need an attribute name");
  const char *test = NULL;
  callargs ta = {0};
  int ti = by_attr ? 1 : 0;
  if (a->npos > ti) {
    if (a->pos[ti]->t != V_STR) rerr(r, e->line, e->col, "the test name must be a string");
    test = ar_strndup(r->ar, a->pos[ti]->s, a->pos[ti]->n);
    ta.pos = a->pos + ti + 1;
    ta.npos = a->npos - ti - 1;
  }
  for (int i = 0; i < l->len; i++) {
    val *x = l->items[i];
    if (by_attr) x = get_attr(r, x, ar_strndup(r->ar, a->pos[0]->s, a->pos[0]->n));
    int ok = test ? apply_test(r, e, test, x, &ta) : truthy(x);
    if (ok != reject) list_push(r, out, l->items[i]);
  }
  return out;
}

static val *apply_filter(rctx *r, const expr *e, const char *name, val *v, callargs *a) {
  val *a0 = a->npos ? a->pos[0] : NULL;
  if (!strcmp(name, "trim") || !strcmp(name, "strip")) { val *s = str_of(r, v); return strip_str(r, s, a0, 1, 1); }
  if (!strcmp(name, "upper")) return case_str(r, str_of(r, v), 1);
  if (!strcmp(name, "lower")) return case_str(r, str_of(r, v), 0);
  if (!strcmp(name, "capitalize") || !strcmp(name, "title")) {
    val m = {.t = V_METHOD, .self = str_of(r, v), .name = name};
    callargs none = {0};
    return call_method(r, e, &m, &none);
  }
  if (!strcmp(name, "string")) return str_of(r, v);
  if (!strcmp(name, "safe") || !strcmp(name, "e") || !strcmp(name, "escape")) return v;
  if (!strcmp(name, "length") || !strcmp(name, "count")) {
    if (v->t == V_STR) { long long n = 0; for (size_t i = 0; i < v->n; i += (size_t)oc_utf8_len((unsigned char)v->s[i])) n++; return vint(r, n); }
    if (v->t == V_LIST || v->t == V_DICT) return vint(r, v->len);
    if (v->t == V_UNDEF) return vint(r, 0);
    rerr(r, e->line, e->col, "object has no length");
  }
  if (!strcmp(name, "default") || !strcmp(name, "d")) {
    val *boolean = kwarg(a, "boolean", 1);
    int use_default = v->t == V_UNDEF || (boolean && truthy(boolean) && !truthy(v));
    return use_default ? (a0 ? a0 : vstr(r, "", 0)) : v;
  }
  if (!strcmp(name, "tojson")) {
    val *ind = kwarg(a, "indent", 0);
    sbuf b = {0};
    to_json(r, &b, v, ind && ind->t == V_INT ? (int)ind->i : -1, 0, 0);
    return vstr(r, b.s ? b.s : "", b.n);
  }
  if (!strcmp(name, "items")) {
    if (v->t != V_DICT) rerr(r, e->line, e->col, "items needs a mapping");
    val m = {.t = V_METHOD, .self = v, .name = "items"};
    callargs none = {0};
    return call_method(r, e, &m, &none);
  }
  if (!strcmp(name, "dictsort")) {
    if (v->t != V_DICT) rerr(r, e->line, e->col, "dictsort needs a mapping");
    int n = v->len;
    int *ord = ar_alloc(r->ar, sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) ord[i] = i;
    /* case-insensitive by key, as Jinja's default */
    for (int i = 1; i < n; i++)
      for (int k = i; k > 0; k--) {
        val *x = case_str(r, vstr(r, v->keys[ord[k - 1]], v->klen[ord[k - 1]]), 0), *y = case_str(r, vstr(r, v->keys[ord[k]], v->klen[ord[k]]), 0);
        if (compare(r, e, x, y) <= 0) break;
        int t = ord[k]; ord[k] = ord[k - 1]; ord[k - 1] = t;
      }
    val *l = V(r, V_LIST);
    for (int i = 0; i < n; i++) { val *t = V(r, V_LIST); t->is_tuple = 1; list_push(r, t, vstr(r, v->keys[ord[i]], v->klen[ord[i]])); list_push(r, t, v->items[ord[i]]); list_push(r, l, t); }
    return l;
  }
  if (!strcmp(name, "list")) return to_list(r, e, v);
  if (!strcmp(name, "first") || !strcmp(name, "last")) {
    val *l = to_list(r, e, v);
    if (!l->len) return V(r, V_UNDEF);
    return l->items[name[0] == 'f' ? 0 : l->len - 1];
  }
  if (!strcmp(name, "join")) {
    val *l = to_list(r, e, v);
    val *sep = a0 && a0->t == V_STR ? a0 : vstr(r, "", 0);
    val *attr = kwarg(a, "attribute", 1);
    sbuf b = {0};
    for (int i = 0; i < l->len; i++) {
      if (i) sb_add(r, &b, sep->s, sep->n);
      val *x = l->items[i];
      if (attr && attr->t == V_STR) x = get_attr(r, x, ar_strndup(r->ar, attr->s, attr->n));
      x = str_of(r, x);
      sb_add(r, &b, x->s, x->n);
    }
    return vstr(r, b.s ? b.s : "", b.n);
  }
  if (!strcmp(name, "map")) {
    val *l = to_list(r, e, v), *out = V(r, V_LIST);
    val *attr = kwarg(a, "attribute", -1);
    for (int i = 0; i < l->len; i++) {
      if (attr) {
        if (attr->t != V_STR) rerr(r, e->line, e->col, "map(attribute=...) needs a string");
        val *x = get_attr(r, l->items[i], ar_strndup(r->ar, attr->s, attr->n));
        val *def = kwarg(a, "default", -1);
        list_push(r, out, x->t == V_UNDEF && def ? def : x);
      } else {
        if (!a0 || a0->t != V_STR) rerr(r, e->line, e->col, "map needs a filter name or attribute=");
        callargs rest = {a->pos + 1, a->npos - 1, NULL, NULL, 0};
        list_push(r, out, apply_filter(r, e, ar_strndup(r->ar, a0->s, a0->n), l->items[i], &rest));
      }
    }
    return out;
  }
  if (!strcmp(name, "select")) return select_like(r, e, v, a, 0, 0);
  if (!strcmp(name, "reject")) return select_like(r, e, v, a, 1, 0);
  if (!strcmp(name, "selectattr")) return select_like(r, e, v, a, 0, 1);
  if (!strcmp(name, "rejectattr")) return select_like(r, e, v, a, 1, 1);
  if (!strcmp(name, "replace")) {
    if (a->npos < 2) rerr(r, e->line, e->col, "replace needs 2 arguments");
    return replace_str(r, str_of(r, v), a->pos[0], a->pos[1]);
  }
  if (!strcmp(name, "int")) {
    if (v->t == V_INT) return v;
    if (v->t == V_BOOL) return vint(r, v->i);
    if (v->t == V_FLOAT) return vint(r, (long long)v->f);
    if (v->t == V_STR) { char *s = ar_strndup(r->ar, v->s, v->n), *end; long long x = strtoll(s, &end, 10); return vint(r, *end && !isspace((unsigned char)*end) ? 0 : x); }
    return vint(r, 0);
  }
  if (!strcmp(name, "float")) {
    val *x = V(r, V_FLOAT);
    double d;
    if (num_of(v, &d)) x->f = d;
    else if (v->t == V_STR) x->f = strtod(ar_strndup(r->ar, v->s, v->n), NULL);
    return x;
  }
  if (!strcmp(name, "abs")) {
    if (v->t == V_INT) return vint(r, v->i < 0 ? -v->i : v->i);
    if (v->t == V_FLOAT) { val *x = V(r, V_FLOAT); x->f = fabs(v->f); return x; }
    rerr(r, e->line, e->col, "abs needs a number");
  }
  if (!strcmp(name, "unique")) {
    val *l = to_list(r, e, v), *out = V(r, V_LIST);
    for (int i = 0; i < l->len; i++) if (!contains(r, e, out, l->items[i])) list_push(r, out, l->items[i]);
    return out;
  }
  if (!strcmp(name, "reverse")) {
    val *l = to_list(r, e, v), *out = V(r, V_LIST);
    for (int i = l->len - 1; i >= 0; i--) list_push(r, out, l->items[i]);
    return out;
  }
  rerr(r, e->line, e->col, "unsupported filter '%s'", name);
}

static val *arith(rctx *r, const expr *e, int op, val *a, val *b) {
  if (op == '~') {
    val *x = str_of(r, a), *y = str_of(r, b);
    sbuf s = {0};
    sb_add(r, &s, x->s, x->n);
    sb_add(r, &s, y->s, y->n);
    return vstr(r, s.s ? s.s : "", s.n);
  }
  if (op == '+' && a->t == V_STR && b->t == V_STR) {
    sbuf s = {0};
    sb_add(r, &s, a->s, a->n);
    sb_add(r, &s, b->s, b->n);
    return vstr(r, s.s ? s.s : "", s.n);
  }
  if (op == '+' && a->t == V_LIST && b->t == V_LIST) {
    val *l = V(r, V_LIST);
    for (int i = 0; i < a->len; i++) list_push(r, l, a->items[i]);
    for (int i = 0; i < b->len; i++) list_push(r, l, b->items[i]);
    return l;
  }
  if (op == '*' && a->t == V_STR && b->t == V_INT) {
    sbuf s = {0};
    for (long long i = 0; i < b->i && i < 100000; i++) sb_add(r, &s, a->s, a->n);
    return vstr(r, s.s ? s.s : "", s.n);
  }
  double x, y;
  if (!num_of(a, &x) || !num_of(b, &y)) {
    if (a->t == V_UNDEF || b->t == V_UNDEF) rerr(r, e->line, e->col, "operation on an undefined value");
    rerr(r, e->line, e->col, "unsupported operand types for '%c'", op == 'F' ? '/' : op == 'P' ? '*' : op);
  }
  int ints = (a->t == V_INT || a->t == V_BOOL) && (b->t == V_INT || b->t == V_BOOL);
  if (ints && op != '/' && op != 'P') {
    long long p = a->i, q = b->i;
    switch (op) {
    case '+': return vint(r, p + q);
    case '-': return vint(r, p - q);
    case '*': return vint(r, p * q);
    case 'F': case '%': {
      if (q == 0) rerr(r, e->line, e->col, "integer division or modulo by zero");
      long long d = p / q, m = p % q;
      if (m != 0 && ((m < 0) != (q < 0))) { d--; m += q; }
      return vint(r, op == 'F' ? d : m);
    }
    }
  }
  val *o = V(r, V_FLOAT);
  switch (op) {
  case '+': o->f = x + y; break;
  case '-': o->f = x - y; break;
  case '*': o->f = x * y; break;
  case '/': if (y == 0) rerr(r, e->line, e->col, "division by zero"); o->f = x / y; break;
  case 'F': if (y == 0) rerr(r, e->line, e->col, "division by zero"); o->f = floor(x / y); break;
  case '%': if (y == 0) rerr(r, e->line, e->col, "modulo by zero"); o->f = x - floor(x / y) * y; break;
  case 'P': o->f = pow(x, y); if (ints && y >= 0) return vint(r, (long long)o->f); break;
  }
  return o;
}

static val *eval(rctx *r, const expr *e, frame *f) {
  switch (e->k) {
  case E_LIT: return e->lit;
  case E_NAME: {
    val *v = lookup(f, e->name);
    return v ? v : V(r, V_UNDEF);
  }
  case E_ATTR: {
    val *o = eval(r, e->a, f);
    if (o->t == V_UNDEF || o->t == V_NONE) {
      if (o->t == V_NONE) rerr(r, e->line, e->col, "'None' has no attribute '%s'", e->name);
      rerr(r, e->line, e->col, "'%s' is undefined", e->a->k == E_NAME ? e->a->name : "value");
    }
    return get_attr(r, o, e->name);
  }
  case E_ITEM: {
    val *o = eval(r, e->a, f);
    if (o->t == V_UNDEF) rerr(r, e->line, e->col, "'%s' is undefined", e->a->k == E_NAME ? e->a->name : "value");
    if (o->t == V_NONE) rerr(r, e->line, e->col, "'None' is not subscriptable");
    return get_item(r, e, o, eval(r, e->b, f));
  }
  case E_SLICE: {
    val *o = eval(r, e->a, f);
    long long n = o->t == V_LIST ? o->len : o->t == V_STR ? (long long)o->n : -1;
    if (n < 0) rerr(r, e->line, e->col, "object cannot be sliced");
    val *st = e->args[0] ? eval(r, e->args[0], f) : NULL;
    long long step = st ? st->i : 1;
    if (step == 0) rerr(r, e->line, e->col, "slice step cannot be zero");
    val *lo_v = e->b ? eval(r, e->b, f) : NULL, *hi_v = e->c ? eval(r, e->c, f) : NULL;
    long long lo, hi;
    if (step > 0) { lo = lo_v ? lo_v->i : 0; hi = hi_v ? hi_v->i : n; }
    else { lo = lo_v ? lo_v->i : n - 1; hi = hi_v ? hi_v->i : -n - 1; }
    if (lo < 0) lo += n;
    if (hi < 0) hi += n;
    if (step > 0) { if (lo < 0) lo = 0; if (hi > n) hi = n; }
    else { if (lo > n - 1) lo = n - 1; if (hi < -1) hi = -1; }
    if (o->t == V_LIST) {
      val *l = V(r, V_LIST);
      for (long long i = lo; step > 0 ? i < hi : i > hi; i += step) list_push(r, l, o->items[i]);
      return l;
    }
    sbuf b = {0};
    for (long long i = lo; step > 0 ? i < hi : i > hi; i += step) sb_add(r, &b, o->s + i, 1);
    return vstr(r, b.s ? b.s : "", b.n);
  }
  case E_CALL: return eval_call(r, e, f);
  case E_FILTER: case E_TEST: {
    val *v = eval(r, e->a, f);
    callargs a = {0};
    a.pos = ar_alloc(r->ar, sizeof(val *) * (size_t)(e->nargs + 1));
    a.kwn = e->kwn;
    a.kwv = ar_alloc(r->ar, sizeof(val *) * (size_t)(e->nkw + 1));
    for (int i = 0; i < e->nargs; i++) a.pos[a.npos++] = eval(r, e->args[i], f);
    for (int i = 0; i < e->nkw; i++) a.kwv[a.nkw++] = eval(r, e->kwv[i], f);
    if (e->k == E_FILTER) return apply_filter(r, e, e->name, v, &a);
    return vbool(r, apply_test(r, e, e->name, v, &a) != e->negate);
  }
  case E_NEG: case E_POS: {
    val *v = eval(r, e->a, f);
    if (e->k == E_POS) return v;
    if (v->t == V_INT || v->t == V_BOOL) return vint(r, -v->i);
    if (v->t == V_FLOAT) { val *x = V(r, V_FLOAT); x->f = -v->f; return x; }
    rerr(r, e->line, e->col, "bad operand for unary -");
  }
  case E_NOT: return vbool(r, !truthy(eval(r, e->a, f)));
  case E_AND: { val *a = eval(r, e->a, f); return truthy(a) ? eval(r, e->b, f) : a; }
  case E_OR: { val *a = eval(r, e->a, f); return truthy(a) ? a : eval(r, e->b, f); }
  case E_BIN: return arith(r, e, e->op, eval(r, e->a, f), eval(r, e->b, f));
  case E_CMP: {
    val *a = eval(r, e->a, f), *b = eval(r, e->b, f);
    switch (e->op) {
    case 0: return vbool(r, equal(a, b));
    case 1: return vbool(r, !equal(a, b));
    case 2: return vbool(r, compare(r, e, a, b) <= 0);
    case 3: return vbool(r, compare(r, e, a, b) >= 0);
    case 4: return vbool(r, compare(r, e, a, b) < 0);
    default: return vbool(r, compare(r, e, a, b) > 0);
    }
  }
  case E_IN: { val *a = eval(r, e->a, f), *b = eval(r, e->b, f); return vbool(r, contains(r, e, b, a) != e->negate); }
  case E_COND: return truthy(eval(r, e->b, f)) ? eval(r, e->a, f) : (e->c ? eval(r, e->c, f) : V(r, V_UNDEF));
  case E_LIST: {
    val *l = V(r, V_LIST);
    l->is_tuple = e->op == 1;
    for (int i = 0; i < e->nargs; i++) list_push(r, l, eval(r, e->args[i], f));
    return l;
  }
  case E_DICT: {
    val *d = V(r, V_DICT);
    for (int i = 0; i < e->nargs; i++) {
      val *k = eval(r, e->args[i], f);
      if (k->t != V_STR) rerr(r, e->line, e->col, "only string keys are supported in dict literals");
      dict_set(r, d, k->s, k->n, eval(r, e->kwv[i], f));
    }
    return d;
  }
  }
  rerr(r, e->line, e->col, "internal: unknown expression");
}

static void assign_targets(rctx *r, const stmt *s, frame *f, val *v) {
  if (s->ntargets == 1) { frame_set(r, f, s->targets[0], v); return; }
  if (v->t != V_LIST || v->len != s->ntargets) rerr(r, s->line, s->col, "cannot unpack %d values", s->ntargets);
  for (int i = 0; i < s->ntargets; i++) frame_set(r, f, s->targets[i], v->items[i]);
}

static void exec_body(rctx *r, const body *b, frame *f) {
  for (int i = 0; i < b->n && !r->brk; i++) {
    const stmt *s = b->v[i];
    switch (s->k) {
    case S_TEXT: emit(r, s->text, s->tlen); break;
    case S_OUT: { val *v = str_of(r, eval(r, s->e, f)); emit(r, v->s, v->n); break; }
    case S_IF: {
      int done = 0;
      for (int k = 0; k < s->nconds && !done; k++)
        if (truthy(eval(r, s->conds[k], f))) { exec_body(r, &s->bodies[k], f); done = 1; }
      if (!done) exec_body(r, &s->else_body, f);
      break;
    }
    case S_FOR: {
      val *it = to_list(r, s->e, eval(r, s->e, f));
      /* the loop filter runs before loop.* is computed */
      val *items = it;
      if (s->filter) {
        items = V(r, V_LIST);
        for (int k = 0; k < it->len; k++) {
          frame *tf = ar_alloc(r->ar, sizeof *tf);
          tf->parent = f;
          assign_targets(r, s, tf, it->items[k]);
          if (truthy(eval(r, s->filter, tf))) list_push(r, items, it->items[k]);
        }
      }
      int n = items->len;
      for (int k = 0; k < n; k++) {
        frame *lf = ar_alloc(r->ar, sizeof *lf);
        lf->parent = f;
        val *loop = V(r, V_DICT);
        dict_set(r, loop, "index", 5, vint(r, k + 1));
        dict_set(r, loop, "index0", 6, vint(r, k));
        dict_set(r, loop, "revindex", 8, vint(r, n - k));
        dict_set(r, loop, "revindex0", 9, vint(r, n - k - 1));
        dict_set(r, loop, "first", 5, vbool(r, k == 0));
        dict_set(r, loop, "last", 4, vbool(r, k == n - 1));
        dict_set(r, loop, "length", 6, vint(r, n));
        dict_set(r, loop, "previtem", 8, k > 0 ? items->items[k - 1] : V(r, V_UNDEF));
        dict_set(r, loop, "nextitem", 8, k + 1 < n ? items->items[k + 1] : V(r, V_UNDEF));
        frame_set(r, lf, "loop", loop);
        assign_targets(r, s, lf, items->items[k]);
        exec_body(r, &s->b, lf);
        if (r->brk == 1) { r->brk = 0; break; }
        r->brk = 0;
      }
      if (n == 0) exec_body(r, &s->else_body, f);
      break;
    }
    case S_SET: {
      val *v = eval(r, s->e, f);
      if (s->attr) {
        val *ns = lookup(f, s->targets[0]);
        if (!ns || ns->t != V_DICT || !ns->is_ns) rerr(r, s->line, s->col, "'%s' is not a namespace: cannot set attribute '%s'", s->targets[0], s->attr);
        dict_set(r, ns, s->attr, strlen(s->attr), v);
      } else assign_targets(r, s, f, v);
      break;
    }
    case S_SETBLOCK: {
      push_capture(r);
      exec_body(r, &s->b, f);
      frame_set(r, f, s->targets[0], pop_capture(r));
      break;
    }
    case S_MACRO: { val *m = V(r, V_MACRO); m->node = s; frame_set(r, f, s->attr, m); break; }
    case S_BREAK: r->brk = 1; break;
    case S_CONTINUE: r->brk = 2; break;
    }
  }
}

static int render_guarded(rctx *r, const oc_template *t, const cJSON *vars) {
  if (setjmp(r->jb)) return -1;
  frame *g = ar_alloc(r->ar, sizeof *g);
  if (!g) rerr(r, 0, 0, "out of memory");
  r->globals = g;
  static const struct { const char *n; int id; } fns[] = {
    {"raise_exception", F_RAISE}, {"namespace", F_NAMESPACE}, {"range", F_RANGE}, {"dict", F_DICT}, {"strftime_now", F_STRFTIME}};
  for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) { val *v = V(r, V_FUNC); v->fn = fns[i].id; frame_set(r, g, fns[i].n, v); }
  if (vars && cJSON_IsObject(vars))
    for (const cJSON *e = vars->child; e; e = e->next) frame_set(r, g, ar_strndup(r->ar, e->string, strlen(e->string)), from_json(r, e));
  exec_body(r, &t->root, g);
  return 0;
}

int oc_template_render(const oc_template *t, const cJSON *vars, char **out, size_t *out_len, oc_error *err) {
  *out = NULL;
  arena ar = {0};
  rctx r;
  memset(&r, 0, sizeof r);
  r.ar = &ar;
  r.err = err;
  r.tname = t->name;
  int rc = render_guarded(&r, t, vars);
  ar_free(&ar);
  if (rc) {
    free(r.out);
    while (r.nsaved > 0) free(r.saved[--r.nsaved].out);
    return -1;
  }
  *out = r.out ? r.out : strdup("");
  if (out_len) *out_len = r.out ? r.len : 0;
  return *out ? 0 : oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
}
