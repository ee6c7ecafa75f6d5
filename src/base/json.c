/* Strict JSON (include/opencon/json.h): cJSON parses; a scan of the raw text checks what cJSON
 * cannot see (NUL and control characters in strings, nesting depth, numbers outside the JSON
 * grammar, text after the value), and a walk of the parsed tree finds repeated keys and numbers
 * too large for a double. Errors are located by line; a repeated key or a huge number is located
 * by scanning the text again only when one is found, so a valid document pays for one parse, one
 * linear scan and one hash of each object's keys. */
#include "opencon/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/strmap.h"

/* Line and column (both from 1; first_line numbers text[0]'s line) of byte off. */
static void locate(const char *text, size_t off, int64_t first_line, int64_t *line, int64_t *col) {
  int64_t l = first_line;
  size_t bol = 0;
  for (const char *p = text; (p = memchr(p, '\n', off - (size_t)(p - text))) != NULL; p++) {
    l++;
    bol = (size_t)(p - text) + 1;
  }
  *line = l;
  *col = (int64_t)(off - bol) + 1;
}

static int fail_at(oc_error *err, const char *path, const char *text, size_t off, int64_t first_line, const char *what) {
  int64_t line, col;
  locate(text, off, first_line, &line, &col);
  return oc_fail(err, "%s:%lld: %s at column %lld", path, (long long)line, what, (long long)col);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int oc_json_blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_ws(s[i])) return 0;
  return 1;
}

static int is_bom(const char *s, size_t n) { return n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0; }

static int bom_error(oc_error *err, const char *path, const char *text, size_t off, int64_t first_line) {
  return fail_at(err, path, text, off, first_line,
                 "a UTF-8 byte-order mark (bytes EF BB BF: JSON has none, Python's json.loads refuses it; remove it)");
}

/* Bytes the scan stops at, inside a string (quote, backslash, control characters) and between
 * tokens (quote, brackets, the first byte of a number, control characters other than whitespace);
 * tables keep the loops that skip everything else tight (a tokenizer.json is 10-30 MB). */
#define CTRL_0_8 1, 1, 1, 1, 1, 1, 1, 1, 1
#define CTRL_14_31 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
#define DIGITS ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1
static const unsigned char STOP_IN_STRING[256] = {CTRL_0_8, 1, 1, 1, 1, 1, CTRL_14_31, ['"'] = 1, ['\\'] = 1};
static const unsigned char STOP_BETWEEN[256] = {CTRL_0_8, 0 /* \t */, 0 /* \n */, 1, 1, 0 /* \r */, CTRL_14_31,
                                                ['"'] = 1, ['{'] = 1, ['['] = 1, ['}'] = 1, [']'] = 1, ['-'] = 1, DIGITS};

/* ---- numbers ---- */
static int is_digit(char c) { return c >= '0' && c <= '9'; }
/* bytes of a word-like token: a number, or what someone may have written for one (0x1f, NaN, +1) */
static int is_word(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' || c == '-' || c == '.' || c == '_'; }

static size_t word_end(const char *s, size_t i, size_t end) {
  while (i < end && is_word(s[i])) i++;
  return i;
}

static int word_is(const char *s, size_t i, size_t end, const char *w) {
  size_t n = strlen(w);
  return word_end(s, i, end) - i == n && strncasecmp(s + i, w, n) == 0;
}

/* NaN, Infinity and their spellings, which Python's json.dumps writes for non-finite floats */
static int non_finite_word(const char *s, size_t i, size_t end) {
  static const char *const words[] = {"nan", "-nan", "infinity", "-infinity", "inf", "-inf"};
  if (is_digit(s[i])) return 0;
  for (size_t k = 0; k < sizeof words / sizeof *words; k++)
    if (word_is(s, i, end, words[k])) return 1;
  return 0;
}

/* The token at s[i] (i < end) against RFC 8259's number, -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?,
 * followed by no further word byte: NULL if it is one (*next: the index just past it), else what
 * is wrong with it. Python's json.loads accepts exactly these numbers (and NaN, Infinity). */
static const char *number_problem(const char *s, size_t i, size_t end, size_t *next) {
  if (non_finite_word(s, i, end)) return "JSON has no NaN or Infinity";
  if (s[i] == '+') return "a leading '+'";
  size_t j = i + (s[i] == '-');
  if (j < end && s[j] == '.') return "no digit before the '.'";
  if (j == end || !is_digit(s[j])) return "no digit after the '-'";
  if (s[j] == '0' && j + 1 < end && (s[j + 1] == 'x' || s[j + 1] == 'X')) return "a hexadecimal number";
  if (s[j] == '0' && j + 1 < end && is_digit(s[j + 1])) return "a leading zero";
  while (j < end && is_digit(s[j])) j++;
  if (j < end && s[j] == '.') {
    if (++j == end || !is_digit(s[j])) return "no digit after the '.'";
    while (j < end && is_digit(s[j])) j++;
  }
  if (j < end && (s[j] == 'e' || s[j] == 'E')) {
    j++;
    if (j < end && (s[j] == '+' || s[j] == '-')) j++;
    if (j == end || !is_digit(s[j])) return "no digit in the exponent";
    while (j < end && is_digit(s[j])) j++;
  }
  if (j < end && is_word(s[j])) return "text after the number";
  *next = j;
  return NULL;
}

static int number_error(oc_error *err, const char *path, const char *s, size_t i, size_t end, int64_t first_line, const char *why) {
  char what[160];
  int n = (int)(word_end(s, i, end) - i);
  snprintf(what, sizeof what, "%.*s%s is not a JSON number (%s)", n > 40 ? 40 : n, s + i, n > 40 ? "..." : "", why);
  return fail_at(err, path, s, i, first_line, what);
}

static int hex_value(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }

/* The string starting at s[i] (its opening quote), within s[0, end): the index just past its closing
 * quote (end when there is none). *bad receives the offset of the first NUL (raw, or \u0000), raw
 * control character or malformed escape, or stays untouched. cJSON is lenient with escapes (it
 * reads "\uzzzz" as \u0000, so a malformed one would also hide a NUL): they are checked here. */
static size_t skip_string(const char *s, size_t i, size_t end, size_t *bad) {
  for (i++; i < end; i++) {
    while (i < end && !STOP_IN_STRING[(unsigned char)s[i]]) i++;
    if (i >= end) break;
    unsigned char c = (unsigned char)s[i];
    if (c == '"') return i + 1;
    if (c != '\\') { /* a raw control character */
      if (*bad == (size_t)-1) *bad = i;
      continue;
    }
    char e = i + 1 < end ? s[i + 1] : 0;
    if (e == 'u') {
      int v = 0, ok = i + 6 <= end;
      for (size_t k = i + 2; ok && k < i + 6; k++) {
        int h = hex_value(s[k]);
        ok = h >= 0;
        v = v * 16 + (h > 0 ? h : 0);
      }
      if ((!ok || v == 0) && *bad == (size_t)-1) *bad = i;
      i += ok ? 5 : 1;
    } else {
      if ((!e || !strchr("\"\\/bfnrt", e)) && *bad == (size_t)-1) *bad = i;
      i++;
    }
  }
  return end;
}

/* what is wrong at a string's bad offset (skip_string) */
static const char *string_problem(const char *s, size_t bad, size_t end, char *buf, size_t n) {
  unsigned char b = (unsigned char)s[bad];
  if (b == 0) return "a string holds a NUL byte";
  if (b != '\\') {
    snprintf(buf, n, "a string holds the raw control character 0x%02x (write it escaped)", b);
    return buf;
  }
  if (bad + 6 <= end && s[bad + 1] == 'u' && memcmp(s + bad + 2, "0000", 4) == 0) return "a string holds a NUL character (\\u0000)";
  return "a string holds a malformed escape (JSON has \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\u with four hex digits)";
}

/* NUL and control characters (in strings and between tokens), numbers and the nesting depth, over
 * text[0, end). */
static int scan_text(const char *s, size_t end, const char *path, int64_t first_line, oc_error *err) {
  int depth = 0;
  for (size_t i = 0; i < end;) {
    while (i < end && !STOP_BETWEEN[(unsigned char)s[i]]) i++;
    if (i == end) break;
    char c = s[i];
    if (c == '"') {
      size_t bad = (size_t)-1;
      i = skip_string(s, i, end, &bad);
      if (bad != (size_t)-1) {
        char what[96];
        return fail_at(err, path, s, bad, first_line, string_problem(s, bad, end, what, sizeof what));
      }
      continue;
    }
    if (c == '-' || is_digit(c)) {
      size_t next;
      const char *why = number_problem(s, i, end, &next);
      if (why) return number_error(err, path, s, i, end, first_line, why);
      i = next;
      continue;
    }
    if (c == '{' || c == '[') {
      if (++depth > OC_JSON_MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof what, "nested deeper than %d levels", OC_JSON_MAX_DEPTH);
        return fail_at(err, path, s, i, first_line, what);
      }
    } else if (c == '}' || c == ']') depth--;
    else /* a control character: cJSON skips these as whitespace */
      return fail_at(err, path, s, i, first_line, c ? "a control character outside a string" : "a NUL byte outside a string");
    i++;
  }
  return 0;
}

/* Whether text[0, end) (possibly cut inside a string) opens more than OC_JSON_MAX_DEPTH levels;
 * *where: the bracket that does. For the message of a document cJSON refused. */
static int too_deep(const char *s, size_t end, size_t *where) {
  int depth = 0, in_string = 0;
  for (size_t i = 0; i < end; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = 0;
    } else if (c == '"') in_string = 1;
    else if (c == '{' || c == '[') {
      if (++depth > OC_JSON_MAX_DEPTH) { *where = i; return 1; }
    } else if (c == '}' || c == ']') depth--;
  }
  return 0;
}

/* ---- repeated keys, numbers out of range ---- */
typedef struct {
  int64_t objects;   /* objects visited so far, in document order */
  int64_t dup_obj;   /* the object with a repeated key (-1: none) */
  int dup_key;       /* the member index of the repeat in it */
  const char *dup_name;
  int64_t numbers;   /* numbers visited so far, in document order */
  int64_t huge;      /* the number too large for a double (cJSON holds it as +-inf; -1: none) */
} tree_walk;

static int found(const tree_walk *w) { return w->dup_obj >= 0 || w->huge >= 0; }

static void count_number(const cJSON *v, tree_walk *w) {
  if (!isfinite(v->valuedouble)) w->huge = w->numbers;
  w->numbers++;
}

/* The keys of one object seen so far: compared pairwise while there are few (most objects are
 * small), then a seeded hash map (a tokenizer vocabulary has 250k keys; a file cannot choose keys
 * that collide). */
#define FEW_KEYS 16
typedef struct {
  const char *few[FEW_KEYS];
  size_t n;
  oc_strmap set; /* all keys once there are more than FEW_KEYS */
} keyset;

/* 1: k was already in the set, 0: added, -1: out of memory. */
static int keyset_add(keyset *ks, const char *k) {
  if (ks->n < FEW_KEYS) {
    for (size_t i = 0; i < ks->n; i++) if (strcmp(ks->few[i], k) == 0) return 1;
    ks->few[ks->n++] = k;
    return 0;
  }
  if (ks->n == FEW_KEYS)
    for (size_t i = 0; i < FEW_KEYS; i++) if (oc_strmap_insert(&ks->set, ks->few[i], 0, NULL) < 0) return -1;
  int rc = oc_strmap_insert(&ks->set, k, 0, NULL);
  if (rc == 0) ks->n++;
  return rc;
}

/* Pre-order walk (the order objects and numbers appear in the text) that stops at the first
 * repeated key or number out of range. One pass over each node list, type bits read directly:
 * this runs over every node of a 30 MB tokenizer.json, and following the list pointers is most
 * of its cost. */
static int walk(const cJSON *v, tree_walk *w) {
  int is_obj = (v->type & 0xff) == cJSON_Object, rc = 0, j = 0;
  int64_t me = is_obj ? w->objects++ : -1;
  keyset ks;
  ks.n = 0;
  oc_strmap_init(&ks.set);
  for (const cJSON *c = v->child; c; c = c->next, j++) {
    if (is_obj) {
      int seen = keyset_add(&ks, c->string);
      if (seen < 0) { rc = -1; break; }
      if (seen) {
        w->dup_obj = me;
        w->dup_key = j;
        w->dup_name = c->string;
        break;
      }
    }
    if ((c->type & 0xff) == cJSON_Number) {
      count_number(c, w);
      if (w->huge >= 0) break;
    } else if ((c->type & (cJSON_Object | cJSON_Array)) && ((rc = walk(c, w)) != 0 || found(w))) break;
  }
  oc_strmap_free(&ks.set);
  return rc;
}

/* Offset of member key_no of the obj_no-th object (document order) in the text. */
static size_t find_key(const char *s, size_t end, int64_t obj_no, int key_no) {
  struct { int64_t no; int keys, is_obj, want_key; } st[OC_JSON_MAX_DEPTH + 1];
  int d = -1;
  int64_t objects = 0;
  size_t bad = (size_t)-1;
  for (size_t i = 0; i < end;) {
    char c = s[i];
    if (c == '"') {
      if (d >= 0 && st[d].is_obj && st[d].want_key) {
        if (st[d].no == obj_no && st[d].keys == key_no) return i;
        st[d].keys++;
        st[d].want_key = 0;
      }
      i = skip_string(s, i, end, &bad);
      continue;
    }
    if ((c == '{' || c == '[') && d < OC_JSON_MAX_DEPTH) {
      d++;
      st[d].is_obj = c == '{';
      st[d].no = c == '{' ? objects++ : -1;
      st[d].keys = 0;
      st[d].want_key = 1;
    } else if ((c == '}' || c == ']') && d >= 0) d--;
    else if (c == ',' && d >= 0) st[d].want_key = 1;
    i++;
  }
  return 0;
}

/* Offset of the number_no-th number (document order) in text that passed scan_text. */
static size_t find_number(const char *s, size_t end, int64_t number_no) {
  size_t bad = (size_t)-1, next;
  int64_t numbers = 0;
  for (size_t i = 0; i < end;) {
    char c = s[i];
    if (c == '"') { i = skip_string(s, i, end, &bad); continue; }
    if (c == '-' || is_digit(c)) {
      if (numbers++ == number_no || number_problem(s, i, end, &next)) return i;
      i = next;
      continue;
    }
    i++;
  }
  return 0;
}

/* Why cJSON stopped at text[off]: a number written outside the JSON grammar (cJSON stops inside
 * or after 0x1f, +1, .5, NaN), a byte-order mark, a control character in a blank document; else
 * the general message. */
static int parse_error(const char *s, size_t len, size_t off, const char *path, int64_t first_line, oc_error *err) {
  size_t a = off;
  while (a > 0 && off - a < 64 && is_word(s[a - 1])) a--;
  size_t next;
  const char *why;
  int numberish = a < len && (a == 0 || s[a - 1] != '"') &&
                  (is_digit(s[a]) || s[a] == '-' || s[a] == '+' || s[a] == '.' || non_finite_word(s, a, len));
  if (numberish && (why = number_problem(s, a, len, &next)) != NULL) return number_error(err, path, s, a, len, first_line, why);
  if (is_bom(s + off, len - off)) return bom_error(err, path, s, off, first_line);
  size_t k = 0;
  while (k < len && (unsigned char)s[k] <= ' ') k++;
  if (k == len) { /* nothing but whitespace and control characters */
    for (size_t i = 0; i < len; i++)
      if (!is_ws(s[i])) {
        char what[128];
        if (s[i] == 0) snprintf(what, sizeof what, "a NUL byte outside a string");
        else snprintf(what, sizeof what, "the control character 0x%02x, which JSON does not count as whitespace (space, tab, CR, LF)", (unsigned char)s[i]);
        return fail_at(err, path, s, i, first_line, what);
      }
    return fail_at(err, path, s, off, first_line, "not valid JSON: no value (the text is empty or blank)");
  }
  return fail_at(err, path, s, off, first_line, "not valid JSON: malformed JSON");
}

int oc_json_parse(const char *text, size_t len, const char *path, int64_t first_line, cJSON **out, oc_error *err) {
  *out = NULL;
  size_t lead = 0;
  while (lead < len && is_ws(text[lead])) lead++;
  if (is_bom(text + lead, len - lead)) return bom_error(err, path, text, lead, first_line); /* (cJSON skips one at offset 0) */
  const char *endp = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &endp, 0);
  if (!root) {
    size_t at = endp && endp >= text && endp <= text + len ? (size_t)(endp - text) : 0, deep;
    /* nesting past our limit stops cJSON later, at its own, as "malformed": name it */
    if (too_deep(text, at, &deep)) {
      char what[64];
      snprintf(what, sizeof what, "nested deeper than %d levels", OC_JSON_MAX_DEPTH);
      return fail_at(err, path, text, deep, first_line, what);
    }
    return parse_error(text, len, at, path, first_line, err);
  }
  size_t end = (size_t)(endp - text);
  for (size_t i = end; i < len; i++)
    if (!is_ws(text[i])) {
      cJSON_Delete(root);
      return fail_at(err, path, text, i, first_line, "unexpected text after the JSON value");
    }
  if (scan_text(text, end, path, first_line, err)) { cJSON_Delete(root); return -1; }
  tree_walk w = {0, -1, 0, NULL, 0, -1};
  if ((root->type & 0xff) == cJSON_Number) count_number(root, &w);
  else if (walk(root, &w)) { cJSON_Delete(root); return oc_fail_code(err, OC_ERR_NOMEM, "%s: out of memory", path); }
  if (w.huge >= 0) {
    size_t at = find_number(text, end, w.huge);
    char what[160];
    int n = (int)(word_end(text, at, end) - at);
    snprintf(what, sizeof what, "the number %.*s%s is out of range (a double holds at most about 1.8e308)", n > 40 ? 40 : n, text + at, n > 40 ? "..." : "");
    cJSON_Delete(root);
    return fail_at(err, path, text, at, first_line, what);
  }
  if (w.dup_obj >= 0) {
    char what[160];
    snprintf(what, sizeof what, "duplicate key \"%.80s\"", w.dup_name);
    int rc = fail_at(err, path, text, find_key(text, end, w.dup_obj, w.dup_key), first_line, what);
    cJSON_Delete(root);
    return rc;
  }
  *out = root;
  return 0;
}

int oc_json_parse_file(const char *path, cJSON **out, oc_error *err) {
  *out = NULL;
  char *text;
  size_t len;
  if (oc_read_file(path, &text, &len, err)) return -1;
  int rc = oc_json_parse(text, len, path, 1, out, err);
  free(text);
  return rc;
}

const char *oc_json_shown(const cJSON *v, char *buf, size_t size) {
  char *text = v ? cJSON_PrintUnformatted(v) : NULL;
  const char *t = text ? text : "?";
  size_t n = strlen(t);
  if (n < size) snprintf(buf, size, "%s", t);
  else if (size > 4) snprintf(buf, size, "%.*s...", (int)(size - 4), t);
  else if (size) buf[0] = 0;
  cJSON_free(text);
  return buf;
}

int oc_json_save(const cJSON *v, const char *path, oc_error *err) {
  char *s = cJSON_Print(v);
  if (!s) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  int rc = oc_write_file_atomic(path, s, strlen(s), err);
  cJSON_free(s);
  return rc;
}
