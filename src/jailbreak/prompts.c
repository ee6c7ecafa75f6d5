/* Benchmark prompt sets: a set of prompts from files and directories (each file a source, its layout
 * recognised in layouts.c), RFC 4180 CSV, the sources described, and the per-split selection.
 * Loading and selecting are linear in the files (hash sets, no indexed list lookups). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/strmap.h"
#include "jailbreak/prompt_set.h"
#include "opencon/json.h"
#include "tok/text.h"

static void free_item(oc_prompt_item *it) {
  free(it->prompt); free(it->split); free(it->id); free(it->category); free(it->goal);
}

static void free_source(oc_prompt_source *src) {
  free(src->path); free(src->dataset); free(src->note);
}

/* back to n items and n_sources sources (what a file or directory that failed had added goes) */
static void truncate_set(oc_prompt_set *s, int n, int n_sources) {
  while (s->n > n) free_item(&s->items[--s->n]);
  while (s->n_sources > n_sources) free_source(&s->sources[--s->n_sources]);
}

void oc_prompt_set_free(oc_prompt_set *s) {
  truncate_set(s, 0, 0);
  free(s->items);
  free(s->sources);
  memset(s, 0, sizeof *s);
}

const char *oc_label_split(const char *v) {
  if (!strcmp(v, "safe") || !strcmp(v, "benign") || !strcmp(v, "unharmful") || !strcmp(v, "0")) return "benign";
  if (!strcmp(v, "unsafe") || !strcmp(v, "harmful") || !strcmp(v, "1")) return "harmful";
  return v;
}

/* a copy of s, NULL for NULL; *bad set when a copy could not be made */
static char *dup_or_null(const char *s, int *bad) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *bad = 1;
  return d;
}

int oc_prompt_add(prompt_file *f, const char *prompt, const char *split, const char *id, const char *category, const char *goal, int benign,
                  oc_error *err) {
  oc_prompt_set *s = f->s;
  if (s->n == s->cap) {
    if (s->cap > INT32_MAX / 2) return oc_fail(err, "more than %d prompts", s->cap);
    int nc = s->cap ? 2 * s->cap : 64;
    oc_prompt_item *ni = realloc(s->items, sizeof *ni * (size_t)nc);
    if (!ni) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    s->items = ni;
    s->cap = nc;
  }
  oc_prompt_item *it = &s->items[s->n];
  memset(it, 0, sizeof *it);
  size_t plen;
  int bad = 0;
  it->prompt = oc_utf8_lossy(prompt, strlen(prompt), &plen); /* e.g. the Mac Roman bytes of JBB's judge-comparison.csv */
  it->split = dup_or_null(split, &bad);
  it->id = dup_or_null(id, &bad);
  it->category = dup_or_null(category, &bad);
  it->goal = goal ? oc_utf8_lossy(goal, strlen(goal), &plen) : NULL;
  if (!it->prompt || bad || (goal && !it->goal)) {
    free_item(it);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  it->source = f->source;
  it->benign = benign || strcmp(split, "benign") == 0;
  s->n++;
  s->sources[f->source].n++;
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

/* the split a file name gives: harmful-behaviors -> harmful, benign-behaviors -> benign,
 * judge-comparison -> judge_comparison, else the stem (the file name without its extension) */
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

/* a new source for path (its layout and counts filled in as it is read) */
static int add_source(oc_prompt_set *s, const char *path, oc_error *err) {
  if (s->n_sources == s->cap_sources) {
    if (s->cap_sources > INT32_MAX / 2) return oc_fail(err, "more than %d files", s->cap_sources);
    int nc = s->cap_sources ? 2 * s->cap_sources : 8;
    oc_prompt_source *ns = realloc(s->sources, sizeof *ns * (size_t)nc);
    if (!ns) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    s->sources = ns;
    s->cap_sources = nc;
  }
  oc_prompt_source *src = &s->sources[s->n_sources];
  memset(src, 0, sizeof *src);
  const char *b = strrchr(path, '/');
  src->path = strdup(path);
  src->dataset = strdup(b && b[1] ? b + 1 : path);
  src->first = s->n;
  if (!src->path || !src->dataset) {
    free_source(src);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  return s->n_sources++;
}

/* one file: a source, its layout recognised from its content */
static int load_file(oc_prompt_set *s, const char *path, int in_dir, oc_error *err) {
  char *text;
  size_t len;
  if (oc_read_file(path, &text, &len, err)) return -1;
  char stem[256];
  prompt_file f = {.s = s, .path = path, .text = text, .len = len, .stem = stem, .in_dir = in_dir};
  f.def_split = stem_split(path, stem, sizeof stem);
  int n_before = s->n, src_before = s->n_sources;
  f.source = add_source(s, path, err);
  int rc = f.source < 0 ? -1 : oc_prompt_file_read(&f, err);
  free(text);
  if (rc) truncate_set(s, n_before, src_before); /* a file that fails adds nothing */
  return rc;
}

/* Files in a directory that are clearly not data: hidden ones, licences, notices, readmes (LICENSE,
 * LICENSE.txt, LICENSE-MIT, README.md, ...), Markdown. */
static const char *not_data(const char *name) {
  static const char *const names[] = {"LICENSE", "LICENCE", "COPYING", "NOTICE", "README", "CITATION"};
  if (name[0] == '.') return "a hidden file";
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    size_t k = strlen(names[i]);
    if (strncasecmp(name, names[i], k) == 0 && (name[k] == 0 || name[k] == '.' || name[k] == '-')) return "a licence, notice or readme";
  }
  size_t n = strlen(name);
  if (n > 3 && strcasecmp(name + n - 3, ".md") == 0) return "a Markdown document";
  return NULL;
}

static int skipped_source(oc_prompt_set *s, const char *path, const char *why, oc_error *err) {
  int k = add_source(s, path, err);
  if (k < 0) return -1;
  s->sources[k].layout = OC_LAYOUT_NOT_PROMPTS;
  size_t n = strlen(why) + 32;
  if (!(s->sources[k].note = malloc(n))) { truncate_set(s, s->n, k); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  snprintf(s->sources[k].note, n, "skipped: %s", why);
  return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

#define MAX_DIR_DEPTH 16        /* nested directories followed (a link cycle ends here) */
#define MAX_DIR_FILES 100000    /* files read from one --dataset_path directory */

/* every file under dir, in name order, recursively */
static int load_dir(oc_prompt_set *s, const char *dir, int depth, int *files, oc_error *err) {
  if (depth > MAX_DIR_DEPTH) return oc_fail(err, "%s: directories nested deeper than %d levels (a link cycle?)", dir, MAX_DIR_DEPTH);
  DIR *d = opendir(dir);
  if (!d) return oc_fail_code(err, OC_ERR_IO, "%s: cannot read the directory", dir);
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 32;
      char **nn = realloc(names, sizeof *nn * cap);
      if (!nn) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); break; }
      names = nn;
    }
    if (!(names[n] = strdup(e->d_name))) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); break; }
    n++;
  }
  closedir(d);
  if (!rc) qsort(names, n, sizeof *names, by_name);
  for (size_t i = 0; i < n && !rc; i++) {
    char *p = oc_path_join(dir, names[i]);
    struct stat st;
    const char *why = not_data(names[i]);
    if (!p) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    else if (why) rc = skipped_source(s, p, why, err);
    else if (stat(p, &st) != 0) rc = oc_fail_code(err, OC_ERR_IO, "%s: cannot read it (a dangling link?)", p);
    else if (S_ISDIR(st.st_mode)) rc = load_dir(s, p, depth + 1, files, err);
    else if (!S_ISREG(st.st_mode)) rc = skipped_source(s, p, "not a regular file", err);
    else if (++*files > MAX_DIR_FILES) rc = oc_fail(err, "%s: more than %d files under the directory", p, MAX_DIR_FILES);
    else rc = load_file(s, p, 1, err);
    free(p);
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}

int oc_prompt_set_load(oc_prompt_set *s, const char *path, oc_error *err) {
  if (!oc_is_dir(path)) return load_file(s, path, 0, err);
  int files = 0, n_before = s->n, src_before = s->n_sources;
  int rc = load_dir(s, path, 0, &files, err);
  if (!rc && s->n == n_before) rc = oc_fail(err, "%s: no prompts in the directory (%d files read)", path, files);
  if (rc) truncate_set(s, n_before, src_before); /* a directory that fails adds nothing either */
  return rc;
}

/* ---- the sources described ---- */
cJSON *oc_prompt_sources_json(const oc_prompt_set *s, const int *sel, int n_sel) {
  cJSON *arr = cJSON_CreateArray();
  int ns = s->n_sources;
  int *count = calloc((size_t)(ns ? ns : 1), sizeof *count), *benign = calloc((size_t)(ns ? ns : 1), sizeof *benign);
  oc_strmap *splits = calloc((size_t)(ns ? ns : 1), sizeof *splits), *cats = calloc((size_t)(ns ? ns : 1), sizeof *cats);
  int *split_n = calloc((size_t)(s->n ? s->n : 1), sizeof *split_n); /* per item index: the count of its split in its source */
  int n = sel ? n_sel : s->n, ok = arr && count && benign && splits && cats && split_n;
  for (int k = 0; ok && k < n; k++) {
    int i = sel ? sel[k] : k;
    if (i < 0 || i >= s->n) continue;
    const oc_prompt_item *it = &s->items[i];
    count[it->source]++;
    benign[it->source] += it->benign;
    int at;
    int found = oc_strmap_insert(&splits[it->source], it->split, i, &at);
    if (found < 0) ok = 0;
    else split_n[found ? at : i]++;
    if (it->category && oc_strmap_insert(&cats[it->source], it->category, 0, NULL) < 0) ok = 0;
  }
  for (int q = 0; ok && q < ns; q++) {
    const oc_prompt_source *src = &s->sources[q];
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(arr, o)) { cJSON_Delete(o); ok = 0; break; }
    const oc_prompt_layout_info *li = oc_prompt_layout_info_of(src->layout);
    cJSON_AddStringToObject(o, "path", src->path);
    cJSON_AddStringToObject(o, "dataset", src->dataset);
    cJSON_AddStringToObject(o, "layout", li->name);
    cJSON_AddStringToObject(o, "layout_title", li->title);
    cJSON_AddNumberToObject(o, "prompts", count[q]);
    if (sel) cJSON_AddNumberToObject(o, "loaded", src->n);
    cJSON_AddNumberToObject(o, "skipped", src->skipped);
    cJSON_AddNumberToObject(o, "benign", benign[q]);
    cJSON_AddNumberToObject(o, "categories", (double)cats[q].n);
    cJSON *sp = cJSON_AddObjectToObject(o, "splits");
    /* the splits in order of first appearance: the items of a source are contiguous */
    for (int i = src->first; sp && i < src->first + src->n; i++)
      if (oc_strmap_find(&splits[q], s->items[i].split) == i) cJSON_AddNumberToObject(sp, s->items[i].split, split_n[i]);
    if (src->note) cJSON_AddStringToObject(o, "note", src->note);
  }
  for (int q = 0; splits && cats && q < ns; q++) { oc_strmap_free(&splits[q]); oc_strmap_free(&cats[q]); }
  free(count); free(benign); free(splits); free(cats); free(split_n);
  if (!ok) { cJSON_Delete(arr); return NULL; }
  return arr;
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
