/* Benchmark prompt sets from local files: JSONL and RFC 4180 CSV. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/jailbreak.h"
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
  if (!it->prompt || !it->split || !it->id) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  s->n++;
  return 0;
}

int oc_csv_parse(const char *t, size_t len, const char *path, cJSON **rows_out, oc_error *err) {
  size_t i = 0;
  if (len >= 3 && (unsigned char)t[0] == 0xef && (unsigned char)t[1] == 0xbb && (unsigned char)t[2] == 0xbf) i = 3; /* BOM */
  cJSON *rows = cJSON_CreateArray(), *row = cJSON_CreateArray();
  size_t cap = 256, fl = 0;
  char *field = malloc(cap);
  int line = 1, row_line = 1;
  if (!field) { cJSON_Delete(rows); cJSON_Delete(row); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
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
        return oc_fail(err, "%s:%d: unterminated quoted field", path, row_line);
      }
      if (i < len && t[i] != ',' && t[i] != '\n' && t[i] != '\r') {
        free(field); cJSON_Delete(rows); cJSON_Delete(row);
        return oc_fail(err, "%s:%d: unexpected character after a quoted field", path, line);
      }
    } else {
      while (i < len && t[i] != ',' && t[i] != '\n' && t[i] != '\r') PUT(t[i++]);
    }
    field[fl] = 0;
    cJSON_AddItemToArray(row, cJSON_CreateString(field));
    if (i < len && t[i] == ',') { i++; continue; }
    /* end of record */
    if (i < len && t[i] == '\r') i++;
    if (i < len && t[i] == '\n') i++;
    line++;
    int empty = cJSON_GetArraySize(row) == 1 && cJSON_GetArrayItem(row, 0)->valuestring[0] == 0;
    if (!empty) cJSON_AddItemToArray(rows, row);
    else cJSON_Delete(row);
    row = cJSON_CreateArray();
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

int oc_prompt_set_load(oc_prompt_set *s, const char *path, oc_error *err) {
  char *text;
  size_t len;
  if (oc_read_file(path, &text, &len, err)) return -1;
  char stem[256];
  const char *def_split = stem_split(path, stem, sizeof stem);
  size_t pl = strlen(path);
  int rc = -1, csv = pl > 4 && strcmp(path + pl - 4, ".csv") == 0;
  size_t k0 = 0;
  while (k0 < len && (text[k0] == ' ' || text[k0] == '\n' || text[k0] == '\r' || text[k0] == '\t')) k0++;
  if (!csv && k0 < len && text[k0] == '[') { /* a JSON array (WildGuard's {"text", "label"} layout) */
    cJSON *arr = cJSON_Parse(text + k0);
    if (!cJSON_IsArray(arr)) { cJSON_Delete(arr); oc_fail(err, "%s: not a valid JSON array", path); goto done; }
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
      const cJSON *pr = cJSON_GetObjectItemCaseSensitive(e, "prompt"), *sp = cJSON_GetObjectItemCaseSensitive(e, "split"),
                  *lb = cJSON_GetObjectItemCaseSensitive(e, "label");
      if (!cJSON_IsString(pr)) pr = cJSON_GetObjectItemCaseSensitive(e, "text");
      if (!cJSON_IsString(pr)) { cJSON_Delete(arr); oc_fail(err, "%s: element %d has no string \"prompt\" or \"text\"", path, i); goto done; }
      char idb[300];
      snprintf(idb, sizeof idb, "%s:%d", stem, i);
      const char *split = cJSON_IsString(sp) ? sp->valuestring : cJSON_IsString(lb) ? label_split(lb->valuestring) : def_split;
      if (add(s, pr->valuestring, split, idb, err)) { cJSON_Delete(arr); goto done; }
    }
    cJSON_Delete(arr);
  } else if (!csv) {
    int line = 0;
    char *p = text, *end = text + len;
    while (p < end) {
      char *nl = memchr(p, '\n', (size_t)(end - p));
      size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
      line++;
      size_t k = 0;
      while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
      if (k < n) {
        cJSON *o = cJSON_ParseWithLength(p, n);
        const cJSON *pr = o ? cJSON_GetObjectItemCaseSensitive(o, "prompt") : NULL, *sp = o ? cJSON_GetObjectItemCaseSensitive(o, "split") : NULL,
                    *id = o ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
        if (!cJSON_IsString(pr)) { cJSON_Delete(o); oc_fail(err, "%s:%d: expected a JSON object with a string \"prompt\"", path, line); goto done; }
        char idb[300];
        snprintf(idb, sizeof idb, "%s:%d", stem, line);
        int arc = add(s, pr->valuestring, cJSON_IsString(sp) ? sp->valuestring : def_split, cJSON_IsString(id) ? id->valuestring : idb, err);
        cJSON_Delete(o);
        if (arc) goto done;
      }
      p = nl ? nl + 1 : end;
    }
  } else {
    cJSON *rows;
    if (oc_csv_parse(text, len, path, &rows, err)) goto done;
    const cJSON *hdr = cJSON_GetArrayItem(rows, 0);
    int pc = -1, sc = -1, lc = -1, ic = -1, nh = hdr ? cJSON_GetArraySize(hdr) : 0;
    static const char *const pnames[] = {"prompt", "Goal", "goal", "text", "question"};
    for (size_t k = 0; k < sizeof pnames / sizeof *pnames && pc < 0; k++)
      for (int c = 0; c < nh; c++) if (strcmp(cJSON_GetArrayItem(hdr, c)->valuestring, pnames[k]) == 0) { pc = c; break; }
    for (int c = 0; c < nh; c++) {
      const char *h = cJSON_GetArrayItem(hdr, c)->valuestring;
      if (strcmp(h, "split") == 0) sc = c;
      if (strcmp(h, "label") == 0) lc = c; /* XSTest: safe / unsafe */
      if (strcmp(h, "id") == 0 || strcmp(h, "Index") == 0) ic = c;
    }
    if (pc < 0) { cJSON_Delete(rows); oc_fail(err, "%s:1: no prompt column (prompt, Goal, goal, text or question)", path); goto done; }
    for (int r = 1; r < cJSON_GetArraySize(rows); r++) {
      const cJSON *row = cJSON_GetArrayItem(rows, r);
      if (cJSON_GetArraySize(row) != nh) {
        oc_fail(err, "%s: record %d has %d fields, the header has %d", path, r + 1, cJSON_GetArraySize(row), nh);
        cJSON_Delete(rows);
        goto done;
      }
      char idb[300];
      snprintf(idb, sizeof idb, "%s:%d", stem, r);
      const char *split = sc >= 0 ? cJSON_GetArrayItem(row, sc)->valuestring : lc >= 0 ? label_split(cJSON_GetArrayItem(row, lc)->valuestring) : def_split;
      if (add(s, cJSON_GetArrayItem(row, pc)->valuestring, split,
              ic >= 0 ? cJSON_GetArrayItem(row, ic)->valuestring : idb, err)) {
        cJSON_Delete(rows);
        goto done;
      }
    }
    cJSON_Delete(rows);
  }
  rc = 0;
done:
  free(text);
  return rc;
}

int oc_prompt_select(const oc_prompt_set *s, int limit, const char *only, int offset, int index, int64_t seed, int **idx_out, int *n_out,
                     oc_error *err) {
  int *idx = malloc(sizeof(int) * (size_t)(s->n ? s->n : 1)), n = 0;
  int64_t *tmp = malloc(sizeof(int64_t) * (size_t)(s->n ? s->n : 1));
  char *done = calloc((size_t)(s->n ? s->n : 1), 1);
  if (!idx || !tmp || !done) { free(idx); free(tmp); free(done); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  for (int i = 0; i < s->n; i++) {
    if (done[i] || (only && strcmp(s->items[i].split, only) != 0)) continue;
    int m = 0;
    for (int j = i; j < s->n; j++)
      if (!done[j] && strcmp(s->items[j].split, s->items[i].split) == 0) { tmp[m++] = j; done[j] = 1; }
    if (seed >= 0) {
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
  free(tmp); free(done);
  if (n == 0) { free(idx); return oc_fail(err, "no prompts selected%s%s", only ? " for split " : "", only ? only : ""); }
  *idx_out = idx;
  *n_out = n;
  return 0;
}
