/* Benchmark prompt sets from local files: JSONL, a JSON array and RFC 4180 CSV; the per-split
 * selection. Loading and selecting are linear in the file (hash sets, no indexed list lookups). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/jailbreak.h"
#include "base/strmap.h"
#include "opencon/json.h"
#include "tok/text.h"

void oc_prompt_set_free(oc_prompt_set *s) {
  for (int i = 0; i < s->n; i++) { free(s->items[i].prompt); free(s->items[i].split); free(s->items[i].id); }
  free(s->items);
  memset(s, 0, sizeof *s);
}

/* split names from label-like values: safe/benign/unharmful -> benign, unsafe/harmful -> harmful */
static const char *label_split(const char *v) {
  if (!strcmp(v, "safe") || !strcmp(v, "benign") || !strcmp(v, "unharmful") || !strcmp(v, "0")) return "benign";
  if (!strcmp(v, "unsafe") || !strcmp(v, "harmful") || !strcmp(v, "1")) return "harmful";
  return v;
}

static int add(oc_prompt_set *s, const char *prompt, const char *split, const char *id, oc_error *err) {
  if (s->n == s->cap) {
    if (s->cap > INT32_MAX / 2) return oc_fail(err, "more than %d prompts", s->cap);
    int nc = s->cap ? 2 * s->cap : 64;
    oc_prompt_item *ni = realloc(s->items, sizeof *ni * (size_t)nc);
    if (!ni) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    s->items = ni;
    s->cap = nc;
  }
  oc_prompt_item *it = &s->items[s->n];
  size_t plen;
  it->prompt = oc_utf8_lossy(prompt, strlen(prompt), &plen); /* e.g. the Mac Roman bytes of JBB's judge-comparison.csv */
  it->split = strdup(split);
  it->id = strdup(id);
  if (!it->prompt || !it->split || !it->id) {
    free(it->prompt); free(it->split); free(it->id);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  s->n++;
  return 0;
}

/* The 1-based line of byte off. */
static int64_t line_of(const char *t, size_t off) {
  int64_t line = 1;
  for (const char *p = t; (p = memchr(p, '\n', off - (size_t)(p - t))) != NULL; p++) line++;
  return line;
}

int oc_csv_parse(const char *t, size_t len, const char *path, cJSON **rows_out, oc_error *err) {
  *rows_out = NULL;
  const char *nul = memchr(t, 0, len); /* a field is a C string: a NUL would cut it silently */
  if (nul) return oc_fail(err, "%s:%lld: a NUL byte in the file", path, (long long)line_of(t, (size_t)(nul - t)));
  size_t i = 0;
  if (len >= 3 && (unsigned char)t[0] == 0xef && (unsigned char)t[1] == 0xbb && (unsigned char)t[2] == 0xbf) i = 3; /* BOM */
  cJSON *rows = cJSON_CreateArray(), *row = cJSON_CreateArray();
  size_t cap = 256, fl = 0;
  char *field = malloc(cap);
  int64_t line = 1, row_line = 1;
  int row_fields = 0;
  if (!field || !rows || !row) goto oom;
#define PUT(c)                                                                                           \
  do {                                                                                                   \
    if (fl + 2 > cap) { char *nf = realloc(field, cap *= 2); if (!nf) goto oom; field = nf; }            \
    field[fl++] = (c);                                                                                   \
  } while (0)
  while (i <= len) {
    /* one field */
    fl = 0;
    if (i < len && t[i] == '"') {
      int closed = 0;
      for (i++; i < len; i++) {
        if (t[i] == '"') {
          if (i + 1 < len && t[i + 1] == '"') { PUT('"'); i++; }
          else { closed = 1; i++; break; }
        } else {
          if (t[i] == '\n') line++;
          PUT(t[i]);
        }
      }
      if (!closed) {
        free(field); cJSON_Delete(rows); cJSON_Delete(row);
        return oc_fail(err, "%s:%lld: unterminated quoted field", path, (long long)row_line);
      }
      if (i < len && t[i] != ',' && t[i] != '\n' && t[i] != '\r') {
        free(field); cJSON_Delete(rows); cJSON_Delete(row);
        return oc_fail(err, "%s:%lld: unexpected character after a quoted field", path, (long long)line);
      }
    } else {
      while (i < len && t[i] != ',' && t[i] != '\n' && t[i] != '\r') PUT(t[i++]);
    }
    field[fl] = 0;
    cJSON *fs = cJSON_CreateString(field);
    if (!fs) goto oom;
    cJSON_AddItemToArray(row, fs);
    row_fields++;
    if (i < len && t[i] == ',') { i++; continue; }
    /* end of record */
    if (i < len && t[i] == '\r') i++;
    if (i < len && t[i] == '\n') i++;
    line++;
    int empty = row_fields == 1 && fl == 0;
    if (!empty) cJSON_AddItemToArray(rows, row);
    else cJSON_Delete(row);
    row = cJSON_CreateArray();
    if (!row) goto oom;
    row_fields = 0;
    row_line = line;
    if (i >= len) break;
  }
#undef PUT
  cJSON_Delete(row);
  free(field);
  *rows_out = rows;
  return 0;
oom:
  free(field); cJSON_Delete(rows); cJSON_Delete(row);
  return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
}

static const char *stem_split(const char *path, char *buf, size_t n) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  snprintf(buf, n, "%s", b);
  char *dot = strrchr(buf, '.');
  if (dot) *dot = 0;
  if (strstr(buf, "judge-comparison") || strstr(buf, "judge_comparison")) return "judge_comparison";
  if (strstr(buf, "benign")) return "benign";
  if (strstr(buf, "harmful")) return "harmful";
  return buf;
}

/* A key of a row that is present but not a string: an error naming where (a key that is absent
 * takes its default; one of another type must not: "split": 5 or "label": 1 would fall back to
 * the file-name split and mix harmful and benign prompts in one split). */
static int not_a_string(const cJSON *row, const char *key, const char *path, const char *where, long long at, oc_error *err) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
  if (!v || cJSON_IsString(v)) return 0;
  char *shown = cJSON_PrintUnformatted(v);
  oc_fail(err, "%s%s%lld: \"%s\" must be a string, got %.40s%s", path, where, at, key, shown ? shown : "?",
          shown && strlen(shown) > 40 ? "..." : "");
  free(shown);
  return -1;
}

/* A JSON array of {"prompt" | "text", "split"?, "label"?} (WildGuard's layout: "label" is a string,
 * safe / harmful; the published files have no numeric labels). */
static int load_json_array(oc_prompt_set *s, const char *text, size_t len, const char *path, const char *stem, const char *def_split,
                           oc_error *err) {
  cJSON *arr;
  if (oc_json_parse(text, len, path, 1, &arr, err)) return -1;
  if (!cJSON_IsArray(arr)) { cJSON_Delete(arr); return oc_fail(err, "%s: not a JSON array", path); }
  int i = 0, rc = 0;
  for (const cJSON *e = arr->child; e && !rc; e = e->next, i++) {
    if (!cJSON_IsObject(e)) { rc = oc_fail(err, "%s: element %d is not a JSON object", path, i); break; }
    const char *pkey = cJSON_GetObjectItemCaseSensitive(e, "prompt") ? "prompt" : "text";
    if (not_a_string(e, pkey, path, ": element ", i, err) || not_a_string(e, "split", path, ": element ", i, err) ||
        not_a_string(e, "label", path, ": element ", i, err)) {
      rc = -1;
      break;
    }
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(e, pkey), *sp = cJSON_GetObjectItemCaseSensitive(e, "split"),
                *lb = cJSON_GetObjectItemCaseSensitive(e, "label");
    if (!pr) { rc = oc_fail(err, "%s: element %d has no \"prompt\" or \"text\"", path, i); break; }
    char idb[300];
    snprintf(idb, sizeof idb, "%s:%d", stem, i);
    const char *split = sp ? sp->valuestring : lb ? label_split(lb->valuestring) : def_split;
    rc = add(s, pr->valuestring, split, idb, err);
  }
  cJSON_Delete(arr);
  return rc;
}

/* JSONL: one {"prompt", "split"?, "id"?} a line (strict JSON: nothing after the object, no
 * repeated key, no NUL; "split" and "id", when present, strings), blank lines skipped. */
static int load_jsonl(oc_prompt_set *s, const char *text, size_t len, const char *path, const char *stem, const char *def_split, oc_error *err) {
  int64_t line = 0;
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    line++;
    if (!oc_json_blank(p, n)) {
      cJSON *o;
      if (oc_json_parse(p, n, path, line, &o, err)) return -1;
      const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt"), *sp = cJSON_GetObjectItemCaseSensitive(o, "split"),
                  *id = cJSON_GetObjectItemCaseSensitive(o, "id");
      if (!cJSON_IsObject(o) || !cJSON_IsString(pr)) {
        cJSON_Delete(o);
        return oc_fail(err, "%s:%lld: expected a JSON object with a string \"prompt\"", path, (long long)line);
      }
      if (not_a_string(o, "split", path, ":", line, err) || not_a_string(o, "id", path, ":", line, err)) { cJSON_Delete(o); return -1; }
      char idb[300];
      snprintf(idb, sizeof idb, "%s:%lld", stem, (long long)line);
      int arc = add(s, pr->valuestring, sp ? sp->valuestring : def_split, id ? id->valuestring : idb, err);
      cJSON_Delete(o);
      if (arc) return -1;
    }
    p = nl ? nl + 1 : end;
  }
  return 0;
}

/* CSV with a header naming the prompt column (and optionally split, label, id). Rows and fields
 * are walked in order (no indexed lookups: a 50k-row file took 20 s that way). */
static int load_csv(oc_prompt_set *s, const char *text, size_t len, const char *path, const char *stem, const char *def_split, oc_error *err) {
  cJSON *rows;
  if (oc_csv_parse(text, len, path, &rows, err)) return -1;
  const cJSON *hdr = rows->child;
  /* the columns read, in order of preference within a role; each may appear once (with two
   * "goal" or two "split" columns, which one counts would be a guess) */
  static const char *const cols[] = {"prompt", "Goal", "goal", "text", "question", "split", "label" /* XSTest: safe / unsafe */, "id", "Index"};
  enum { N_PROMPT_NAMES = 5, COL_SPLIT = 5, COL_LABEL = 6, COL_ID = 7, N_COLS = 9 };
  int at[N_COLS], nh = 0;
  for (int k = 0; k < N_COLS; k++) at[k] = -1;
  for (const cJSON *h = hdr ? hdr->child : NULL; h; h = h->next, nh++)
    for (int k = 0; k < N_COLS; k++) {
      if (strcmp(h->valuestring, cols[k]) != 0) continue;
      if (at[k] >= 0) {
        int rc = oc_fail(err, "%s:1: column \"%s\" appears twice in the header (columns %d and %d)", path, cols[k], at[k] + 1, nh + 1);
        cJSON_Delete(rows);
        return rc;
      }
      at[k] = nh;
    }
  int pc = -1, sc = at[COL_SPLIT], lc = at[COL_LABEL], ic = at[COL_ID] >= 0 ? at[COL_ID] : at[COL_ID + 1];
  for (int k = N_PROMPT_NAMES - 1; k >= 0; k--) if (at[k] >= 0) pc = at[k];
  if (pc < 0) { cJSON_Delete(rows); return oc_fail(err, "%s:1: no prompt column (prompt, Goal, goal, text or question)", path); }
  const char **f = malloc(sizeof *f * (size_t)nh);
  if (!f) { cJSON_Delete(rows); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  int rc = 0, r = 1;
  for (const cJSON *row = hdr->next; row && !rc; row = row->next, r++) {
    int nf = 0;
    for (const cJSON *c = row->child; c; c = c->next, nf++) if (nf < nh) f[nf] = c->valuestring;
    if (nf != nh) { rc = oc_fail(err, "%s: record %d has %d fields, the header has %d", path, r + 1, nf, nh); break; }
    char idb[300];
    snprintf(idb, sizeof idb, "%s:%d", stem, r);
    const char *split = sc >= 0 ? f[sc] : lc >= 0 ? label_split(f[lc]) : def_split;
    rc = add(s, f[pc], split, ic >= 0 ? f[ic] : idb, err);
  }
  free(f);
  cJSON_Delete(rows);
  return rc;
}

int oc_prompt_set_load(oc_prompt_set *s, const char *path, oc_error *err) {
  char *text;
  size_t len;
  if (oc_read_file(path, &text, &len, err)) return -1;
  char stem[256];
  const char *def_split = stem_split(path, stem, sizeof stem);
  size_t pl = strlen(path);
  int rc, csv = pl > 4 && strcmp(path + pl - 4, ".csv") == 0;
  size_t k0 = 0;
  while (k0 < len && (text[k0] == ' ' || text[k0] == '\n' || text[k0] == '\r' || text[k0] == '\t')) k0++;
  if (csv) rc = load_csv(s, text, len, path, stem, def_split, err);
  else if (k0 < len && text[k0] == '[') rc = load_json_array(s, text, len, path, stem, def_split, err);
  else rc = load_jsonl(s, text, len, path, stem, def_split, err);
  free(text);
  return rc;
}

/* ---- selection ---- */
/* group[i]: the index, in order of first appearance, of item i's split; *n_groups of them;
 * *first: each group's first item. A hash set of splits keeps this linear in the items. */
static int group_by_split(const oc_prompt_set *s, int *group, int **first, int *n_groups) {
  oc_strmap groups; /* split name -> group number */
  oc_strmap_init(&groups);
  *first = malloc(sizeof **first * (size_t)(s->n ? s->n : 1));
  int ng = 0, rc = *first ? 0 : -1;
  for (int i = 0; i < s->n && rc == 0; i++) {
    int g;
    int found = oc_strmap_insert(&groups, s->items[i].split, ng, &g);
    if (found < 0) rc = -1;
    else if (found == 0) { g = ng; (*first)[ng++] = i; }
    group[i] = g;
  }
  oc_strmap_free(&groups);
  if (rc) { free(*first); *first = NULL; return -1; }
  *n_groups = ng;
  return 0;
}

int oc_prompt_select(const oc_prompt_set *s, int limit, const char *only, int offset, int index, int64_t seed, int **idx_out, int *n_out,
                     oc_error *err) {
  *idx_out = NULL;
  *n_out = 0;
  if (offset < 0) return oc_fail(err, "example offset %d is negative", offset);
  size_t nn = (size_t)(s->n ? s->n : 1);
  int *idx = malloc(sizeof *idx * nn), *group = malloc(sizeof *group * nn), *start = calloc(nn + 1, sizeof *start), *first = NULL, ng = 0;
  int64_t *members = malloc(sizeof *members * nn);
  if (!idx || !group || !start || !members || group_by_split(s, group, &first, &ng)) {
    free(idx); free(group); free(start); free(members);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  /* each split's items in file order: a counting sort by group */
  for (int i = 0; i < s->n; i++) start[group[i] + 1]++;
  for (int g = 0; g < ng; g++) start[g + 1] += start[g];
  int *fill = calloc((size_t)(ng ? ng : 1), sizeof *fill);
  if (!fill) { free(idx); free(group); free(start); free(members); free(first); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (int i = 0; i < s->n; i++) members[start[group[i]] + fill[group[i]]++] = i;
  int n = 0;
  for (int g = 0; g < ng; g++) {
    if (only && strcmp(s->items[first[g]].split, only) != 0) continue;
    int64_t *tmp = members + start[g];
    int m = start[g + 1] - start[g];
    if (seed >= 0) { /* every split shuffled from the same seed, as the MVP does */
      oc_rng r;
      oc_rng_seed(&r, (uint64_t)seed);
      oc_shuffle_i64(&r, tmp, (size_t)m);
    }
    int taken = 0;
    for (int k = offset; k < m; k++) {
      if (index >= 0 && k != index) continue;
      if (limit > 0 && taken >= limit) break;
      idx[n++] = (int)tmp[k];
      taken++;
    }
  }
  free(group); free(start); free(members); free(first); free(fill);
  if (n == 0) { free(idx); return oc_fail(err, "no prompts selected%s%s", only ? " for split " : "", only ? only : ""); }
  *idx_out = idx;
  *n_out = n;
  return 0;
}
