/* Labelled exchanges from JSONL: a validating streaming scan, the MVP's balanced sample, and a
 * second pass that reads only the selected rows. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/dataset.h"
#include "opencon/json.h"
#include "tok/text.h"

typedef struct {
  int64_t off;
  int64_t line;
  int32_t len;
  int8_t label;
} row_ref;

/* Validate one JSON line (UTF-8, as Python reads the file; strict JSON: one object, no repeated
 * key, no NUL); on success fill the fields (borrowed from the parsed object). */
static int parse_row(const char *buf, size_t len, const char *path, int64_t ln, cJSON **obj, const char **prompt,
                     const char **response, int *label, oc_error *err) {
  cJSON *o;
  if (!oc_utf8_valid(buf, len)) return oc_fail(err, "%s:%lld: the line is not valid UTF-8", path, (long long)ln);
  if (oc_json_parse(buf, len, path, ln, &o, err)) return -1;
  if (!cJSON_IsObject(o)) { cJSON_Delete(o); return oc_fail(err, "%s:%lld: expected a JSON object", path, (long long)ln); }
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt"), *r = cJSON_GetObjectItemCaseSensitive(o, "response"),
              *l = cJSON_GetObjectItemCaseSensitive(o, "label");
  const char *missing = !p ? "prompt" : !r ? "response" : !l ? "label" : NULL;
  if (missing) { cJSON_Delete(o); return oc_fail(err, "%s:%lld: missing key \"%s\"", path, (long long)ln, missing); }
  if (!cJSON_IsString(p) || !cJSON_IsString(r)) {
    cJSON_Delete(o);
    return oc_fail(err, "%s:%lld: \"%s\" must be a string", path, (long long)ln, cJSON_IsString(p) ? "response" : "prompt");
  }
  if (!cJSON_IsNumber(l) || !(l->valuedouble == 0 || l->valuedouble == 1 || l->valuedouble == 2)) {
    char *s = cJSON_PrintUnformatted(l);
    oc_fail(err, "%s:%lld: label must be 0, 1 or 2, got %s", path, (long long)ln, s ? s : "?");
    free(s);
    cJSON_Delete(o);
    return -1;
  }
  *obj = o;
  *prompt = p->valuestring;
  *response = r->valuestring;
  *label = (int)l->valuedouble;
  return 0;
}

static int cmp_off(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

int oc_dataset_load(const char *path, int64_t max_examples, uint64_t seed, oc_dataset *out, oc_error *err) {
  memset(out, 0, sizeof *out);
  FILE *f = oc_fopen_regular(path, err);
  if (!f) return -1;
  row_ref *rows = NULL;
  int64_t n = 0, cap = 0, ln = 0, off = 0;
  char *line = NULL;
  size_t lcap = 0;
  ssize_t got;
  int rc = -1;
  int64_t *sel = NULL, *by_label[3] = {NULL, NULL, NULL};
  while ((got = getline(&line, &lcap, f)) > 0) {
    ln++;
    int64_t this_off = off;
    off += got;
    if (ln == 1 && strncmp(line, "version https://git-lfs.github.com/spec/v1", 42) == 0) {
      oc_fail(err, "%s: this is a Git LFS pointer, not the data: run git lfs pull", path);
      goto done;
    }
    if (oc_json_blank(line, (size_t)got)) continue;
    if (got > 0x7fffffff) { oc_fail(err, "%s:%lld: line longer than 2 GiB", path, (long long)ln); goto done; }
    cJSON *o;
    const char *p, *r;
    int label;
    if (parse_row(line, (size_t)got, path, ln, &o, &p, &r, &label, err)) goto done;
    cJSON_Delete(o);
    if (n == INT32_MAX) { oc_fail(err, "%s:%lld: more than %d examples", path, (long long)ln, INT32_MAX); goto done; }
    if (n == cap) {
      cap = cap ? cap * 2 : 1024;
      row_ref *nr = realloc(rows, sizeof *rows * (size_t)cap);
      if (!nr) { oc_fail_code(err, OC_ERR_NOMEM, "%s: out of memory at line %lld", path, (long long)ln); goto done; }
      rows = nr;
    }
    rows[n++] = (row_ref){this_off, ln, (int32_t)got, (int8_t)label};
  }
  if (ferror(f)) { oc_fail(err, "%s: read error: %s", path, strerror(errno)); goto done; }
  if (n == 0) { oc_fail(err, "%s: no examples", path); goto done; }
  out->rows_in_file = n;

  /* selection: indices into rows */
  int64_t k = n;
  sel = malloc(sizeof *sel * (size_t)n);
  if (!sel) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (max_examples <= 0 || max_examples >= n) {
    for (int64_t i = 0; i < n; i++) sel[i] = i;
    if (max_examples > 0) { /* everything, still in the sampler's shuffled order */
      oc_rng rng;
      oc_rng_seed(&rng, seed);
      oc_shuffle_i64(&rng, sel, (size_t)n);
    }
  } else {
    int64_t cnt[3] = {0, 0, 0}, pos[3] = {0, 0, 0};
    for (int64_t i = 0; i < n; i++) cnt[rows[i].label]++;
    for (int l = 0; l < 3; l++) {
      by_label[l] = malloc(sizeof(int64_t) * (size_t)(cnt[l] ? cnt[l] : 1));
      if (!by_label[l]) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
      cnt[l] = 0;
    }
    for (int64_t i = 0; i < n; i++) by_label[rows[i].label][cnt[rows[i].label]++] = i;
    oc_rng rng;
    oc_rng_seed(&rng, seed);
    for (int l = 0; l < 3; l++) oc_shuffle_i64(&rng, by_label[l], (size_t)cnt[l]);
    k = 0;
    while (k < max_examples) {
      for (int l = 0; l < 3 && k < max_examples; l++)
        if (pos[l] < cnt[l]) sel[k++] = by_label[l][pos[l]++];
    }
    oc_shuffle_i64(&rng, sel, (size_t)k);
  }

  /* second pass: read the selected rows in file order, store them in selection order */
  out->ex = calloc((size_t)k, sizeof *out->ex);
  int64_t *order = malloc(sizeof *order * 2 * (size_t)k);
  if (!out->ex || !order) { free(order); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int64_t i = 0; i < k; i++) { order[2 * i] = rows[sel[i]].off; order[2 * i + 1] = i; }
  qsort(order, (size_t)k, 2 * sizeof *order, cmp_off);
  out->n = (int)k;
  for (int64_t j = 0; j < k; j++) {
    int64_t i = order[2 * j + 1];
    const row_ref *rr = &rows[sel[i]];
    if ((size_t)rr->len + 1 > lcap) {
      char *nl = realloc(line, (size_t)rr->len + 1);
      if (!nl) { free(order); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
      line = nl;
      lcap = (size_t)rr->len + 1;
    }
    if (fseeko(f, rr->off, SEEK_SET) != 0 || fread(line, 1, (size_t)rr->len, f) != (size_t)rr->len) {
      free(order);
      oc_fail(err, "%s:%lld: cannot re-read the line (file changed while loading?)", path, (long long)rr->line);
      goto done;
    }
    cJSON *o;
    const char *p, *r;
    int label;
    if (parse_row(line, (size_t)rr->len, path, rr->line, &o, &p, &r, &label, err)) { free(order); goto done; }
    oc_example *e = &out->ex[i];
    e->prompt = strdup(p);
    e->response = strdup(r);
    e->label = label;
    e->line = rr->line;
    cJSON_Delete(o);
    if (!e->prompt || !e->response) { free(order); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
    out->label_counts[label]++;
    if (label > out->max_label) out->max_label = label;
  }
  free(order);
  rc = 0;
done:
  if (rc) oc_dataset_free(out);
  for (int l = 0; l < 3; l++) free(by_label[l]);
  free(sel);
  free(rows);
  free(line);
  fclose(f);
  return rc;
}

void oc_dataset_free(oc_dataset *d) {
  if (d->ex)
    for (int i = 0; i < d->n; i++) { free(d->ex[i].prompt); free(d->ex[i].response); }
  free(d->ex);
  memset(d, 0, sizeof *d);
}

uint64_t oc_example_hash(const oc_example *e) {
  uint64_t h = oc_fnv1a64(e->prompt, strlen(e->prompt) + 1, 0);
  h = oc_fnv1a64(e->response, strlen(e->response) + 1, h);
  unsigned char l = (unsigned char)e->label;
  return oc_fnv1a64(&l, 1, h);
}

int oc_stratified_split(const int32_t *y, int n, double frac, uint64_t seed, int64_t **train, int *n_train,
                        int64_t **val, int *n_val, oc_error *err) {
  if (frac < 0 || frac >= 1) return oc_fail(err, "validation_size must be in [0, 1), got %g", frac);
  *train = malloc(sizeof **train * (size_t)(n ? n : 1));
  *val = malloc(sizeof **val * (size_t)(n ? n : 1));
  int64_t *tmp = malloc(sizeof *tmp * (size_t)(n ? n : 1));
  if (!*train || !*val || !tmp) { free(*train); free(*val); free(tmp); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  int nt = 0, nv = 0;
  oc_rng rng;
  oc_rng_seed(&rng, seed ^ 0x5eedull);
  int max_label = 0;
  for (int i = 0; i < n; i++) {
    if (y[i] < 0 || y[i] > 2) { /* (a label of 2^31 - 1 made the loop below run 2^31 times) */
      free(*train); free(*val); free(tmp);
      *train = *val = NULL;
      return oc_fail(err, "label %d of row %d is not 0, 1 or 2", (int)y[i], i);
    }
    if (y[i] > max_label) max_label = y[i];
  }
  for (int l = 0; l <= max_label; l++) {
    int c = 0;
    for (int i = 0; i < n; i++) if (y[i] == l) tmp[c++] = i;
    oc_shuffle_i64(&rng, tmp, (size_t)c);
    int k = (int)(frac * c + 0.5);
    if (frac > 0 && c >= 2 && k == 0) k = 1;
    if (k >= c) k = c - 1;
    if (k < 0) k = 0;
    for (int i = 0; i < k; i++) (*val)[nv++] = tmp[i];
    for (int i = k; i < c; i++) (*train)[nt++] = tmp[i];
  }
  free(tmp);
  /* keep each side in dataset order */
  qsort(*train, (size_t)nt, sizeof **train, cmp_off);
  qsort(*val, (size_t)nv, sizeof **val, cmp_off);
  *n_train = nt;
  *n_val = nv;
  return 0;
}
