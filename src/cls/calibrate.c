/* calibrate-exchange-classifier's threshold sweep and build-three-class-classifier-data's rules. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/classifier.h"
#include "opencon/dataset.h"
#include "opencon/json.h"
#include "tok/text.h"

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double rate(int64_t a, int64_t b) { return b ? (double)a / (double)b : NAN; }

/* is row a better than row b: (F1, recall, lower safe-compliance block rate, precision) */
static int better(const oc_calib_row *a, const oc_calib_row *b) {
  if (a->f1 != b->f1) return a->f1 > b->f1;
  if (a->recall != b->recall) return a->recall > b->recall;
  double sa = isnan(a->safe_compliance_block_rate) ? 0 : a->safe_compliance_block_rate;
  double sb = isnan(b->safe_compliance_block_rate) ? 0 : b->safe_compliance_block_rate;
  if (sa != sb) return sa < sb;
  return a->precision > b->precision;
}

static void eval_row(double t, const double *s, const int32_t *y, int n, int three, oc_calib_row *r) {
  int pos_label = three ? 2 : 1;
  int64_t tp = 0, fp = 0, fn = 0, n0 = 0, b0 = 0, n1 = 0, b1 = 0, np = 0;
  for (int i = 0; i < n; i++) {
    int blocked = s[i] >= t, pos = y[i] == pos_label;
    tp += blocked && pos; fp += blocked && !pos; fn += !blocked && pos; np += pos;
    if (y[i] == 0) { n0++; b0 += blocked; }
    if (three && y[i] == 1) { n1++; b1 += blocked; }
  }
  r->threshold = t;
  r->precision = tp + fp ? (double)tp / (double)(tp + fp) : 0;
  r->recall = tp + fn ? (double)tp / (double)(tp + fn) : 0;
  r->f1 = r->precision + r->recall > 0 ? 2 * r->precision * r->recall / (r->precision + r->recall) : 0;
  r->safe_compliance_block_rate = rate(b0, n0);
  r->safe_refusal_block_rate = three ? rate(b1, n1) : NAN;
  r->unsafe_block_rate = rate(tp, np);
}

static cJSON *num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

cJSON *oc_calib_row_json(const oc_calib_row *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, "threshold", num(r->threshold));
  cJSON_AddItemToObject(o, "precision", num(r->precision));
  cJSON_AddItemToObject(o, "recall", num(r->recall));
  cJSON_AddItemToObject(o, "f1", num(r->f1));
  cJSON_AddItemToObject(o, "safe_compliance_block_rate", num(r->safe_compliance_block_rate));
  cJSON_AddItemToObject(o, "safe_refusal_block_rate", num(r->safe_refusal_block_rate));
  cJSON_AddItemToObject(o, "unsafe_block_rate", num(r->unsafe_block_rate));
  return o;
}

cJSON *oc_calibrate(const double *scores, const int32_t *y, int n, int three, double max_scbr, oc_calib_row **rows_out, int *nrows) {
  int cap = 200 + n;
  double *ts = malloc(sizeof(double) * (size_t)cap);
  oc_calib_row *rows = malloc(sizeof *rows * (size_t)cap);
  if (!ts || !rows) { free(ts); free(rows); return NULL; }
  int k = 0;
  for (int i = 0; i < 200; i++) ts[k++] = 0.01 + (0.9999 - 0.01) * i / 199.0; /* numpy.linspace(0.01, 0.9999, 200) */
  for (int i = 0; i < n; i++) ts[k++] = scores[i];
  qsort(ts, (size_t)k, sizeof *ts, cmp_d);
  int u = 0;
  for (int i = 0; i < k; i++) if (u == 0 || ts[i] != ts[u - 1]) ts[u++] = ts[i];
  int best = -1, fallback = -1;
  for (int i = 0; i < u; i++) {
    eval_row(ts[i], scores, y, n, three, &rows[i]);
    double scbr = isnan(rows[i].safe_compliance_block_rate) ? 0 : rows[i].safe_compliance_block_rate;
    if (scbr <= max_scbr && (best < 0 || better(&rows[i], &rows[best]))) best = i;
    double fb = fallback < 0 ? INFINITY : (isnan(rows[fallback].safe_compliance_block_rate) ? 0 : rows[fallback].safe_compliance_block_rate);
    if (fallback < 0 || scbr < fb || (scbr == fb && better(&rows[i], &rows[fallback]))) fallback = i;
  }
  cJSON *rep = cJSON_CreateObject();
  cJSON *rec = oc_calib_row_json(&rows[best >= 0 ? best : fallback]);
  cJSON_AddBoolToObject(rec, "feasible", best >= 0);
  cJSON_AddItemToObject(rep, "recommended", rec);
  oc_calib_row d, s;
  eval_row(0.65, scores, y, n, three, &d);
  eval_row(0.9999, scores, y, n, three, &s);
  cJSON_AddItemToObject(rep, "default_0_65", oc_calib_row_json(&d));
  cJSON_AddItemToObject(rep, "strict_0_9999", oc_calib_row_json(&s));
  cJSON_AddNumberToObject(rep, "max_safe_compliance_block_rate", max_scbr);
  cJSON_AddStringToObject(rep, "positive_label", three ? "2 (unsafe_compliance)" : "1 (unsafe)");
  cJSON_AddNumberToObject(rep, "validation_examples", n);
  cJSON_AddNumberToObject(rep, "thresholds_evaluated", u);
  free(ts);
  if (rows_out) { *rows_out = rows; *nrows = u; }
  else free(rows);
  return rep;
}

/* the validation rows of ds: a stratified split, or every row when validation_size >= 1 */
static int validation_rows(const oc_dataset *ds, double validation_size, uint64_t seed, int64_t **va, int *nv, oc_error *err) {
  if (validation_size >= 1) {
    if (!(*va = malloc(sizeof(int64_t) * (size_t)(ds->n ? ds->n : 1)))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < ds->n; i++) (*va)[i] = i;
    *nv = ds->n;
    return 0;
  }
  int32_t *y = malloc(sizeof(int32_t) * (size_t)(ds->n ? ds->n : 1));
  if (!y) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (int i = 0; i < ds->n; i++) y[i] = ds->ex[i].label;
  int64_t *tr = NULL;
  int nt;
  int rc = oc_stratified_split(y, ds->n, validation_size, seed, &tr, &nt, va, nv, err);
  free(y);
  free(tr);
  return rc;
}

int oc_calibrate_classifier(oc_classifier *c, const oc_dataset *ds, double validation_size, uint64_t seed, double max_scbr, int batch_size,
                            oc_progress *prog, cJSON **report, oc_calib_row **rows, int *nrows, oc_error *err) {
  *report = NULL;
  *rows = NULL;
  *nrows = 0;
  if (batch_size < 1) return oc_fail(err, "batch size %d: at least 1", batch_size);
  int64_t *va = NULL;
  int nv = 0, rc = -1;
  if (validation_rows(ds, validation_size, seed, &va, &nv, err)) return -1;
  if (prog) prog->total = nv;
  double *scores = malloc(sizeof(double) * (size_t)(nv ? nv : 1));
  int32_t *yv = malloc(sizeof(int32_t) * (size_t)(nv ? nv : 1));
  oc_decision *dec = malloc(sizeof *dec * (size_t)batch_size);
  const char **pr = malloc(sizeof(char *) * (size_t)batch_size), **rs = malloc(sizeof(char *) * (size_t)batch_size);
  if (!scores || !yv || !dec || !pr || !rs) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int s0 = 0; s0 < nv; s0 += batch_size) {
    int nb = nv - s0 < batch_size ? nv - s0 : batch_size;
    for (int j = 0; j < nb; j++) {
      const oc_example *e = &ds->ex[va[s0 + j]];
      pr[j] = e->prompt;
      rs[j] = e->response;
      yv[s0 + j] = e->label;
    }
    if (oc_classifier_score_batch(c, pr, rs, nb, dec, err)) goto done;
    for (int j = 0; j < nb; j++) scores[s0 + j] = dec[j].score;
    if (prog) oc_progress_update(prog, s0 + nb);
  }
  if (!(*report = oc_calibrate(scores, yv, nv, ds->max_label == 2, max_scbr, rows, nrows))) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  rc = 0;
done:
  free(va); free(scores); free(yv); free(dec); free(pr); free(rs);
  return rc;
}

int oc_calibration_save(const char *path, const cJSON *report, const oc_calib_row *rows, int nrows, oc_error *err) {
  char *js = cJSON_Print(report), *svg = oc_path_sibling(path, ".svg");
  double *x = malloc(sizeof(double) * (size_t)(nrows ? nrows : 1)), *f1 = malloc(sizeof(double) * (size_t)(nrows ? nrows : 1)),
         *br = malloc(sizeof(double) * (size_t)(nrows ? nrows : 1));
  int rc = -1;
  if (!js || !svg || !x || !f1 || !br) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  for (int i = 0; i < nrows; i++) { x[i] = rows[i].threshold; f1[i] = rows[i].f1; br[i] = rows[i].safe_compliance_block_rate; }
  const char *names[2] = {"F1", "safe-compliance block rate"};
  const double *ys[2] = {f1, br};
  remove(svg); /* a plot beside a report is always that report's: removed before the report is replaced */
  if (oc_write_file_atomic(path, js, strlen(js), err) ||
      oc_svg_plot(svg, "Exchange classifier: block threshold sweep (validation)", "block threshold", x, NULL, nrows, 2, names, ys, err))
    goto done;
  rc = 0;
done:
  free(js); free(svg); free(x); free(f1); free(br);
  return rc;
}

/* ---- three-class data ---- */
static const char *const refusal_markers[] = {
    "i can't help", "i cannot help", "i can't assist", "i cannot assist", "i can't provide", "i cannot provide", "i can't do that",
    "i cannot do that", "i won't", "i will not", "i'm sorry, but", "i am sorry, but", "i'm not able to", "i am not able to",
    "i'm unable to", "i am unable to", "i must decline", "i have to decline", "i can't comply", "i cannot comply", "as an ai",
    "i can not", "i'm not going to", "i am not going to", "sorry, but i can't", "i apologize, but", "i can't fulfill",
    "i cannot fulfill", "it is not appropriate", "it's not appropriate", "i don't feel comfortable", "i do not feel comfortable",
    "against my guidelines", "i can’t", "i’m sorry", "i won’t", "i’m not able", "i’m unable"};

int oc_is_refusal_text(const char *response) {
  /* markers are matched case-insensitively in the first 400 bytes (refusals open the answer) */
  char head[401];
  size_t n = 0;
  for (; response[n] && n < 400; n++) head[n] = (char)tolower((unsigned char)response[n]);
  head[n] = 0;
  for (size_t i = 0; i < sizeof refusal_markers / sizeof *refusal_markers; i++)
    if (strstr(head, refusal_markers[i])) return 1;
  return 0;
}

static int row_is_refusal(const cJSON *row, const char *response) {
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(row, "refusal"), *j = cJSON_GetObjectItemCaseSensitive(row, "judge");
  if (cJSON_IsBool(r)) return cJSON_IsTrue(r);
  if (cJSON_IsObject(j)) {
    const cJSON *jr = cJSON_GetObjectItemCaseSensitive(j, "refusal");
    if (cJSON_IsBool(jr)) return cJSON_IsTrue(jr);
  }
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(row, "response_behavior");
  if (cJSON_IsString(b)) {
    char low[64];
    size_t i = 0;
    for (; b->valuestring[i] && i < sizeof low - 1; i++) low[i] = (char)tolower((unsigned char)b->valuestring[i]);
    low[i] = 0;
    if (strstr(low, "refus")) return 1;
  }
  return oc_is_refusal_text(response);
}

int oc_build_three_class(const char *in, const char *out, oc_threeclass_stats *st, oc_error *err) {
  static const char *const names[3] = {"safe_compliance", "safe_refusal", "unsafe_compliance"};
  memset(st, 0, sizeof *st);
  FILE *f = oc_fopen_regular(in, err);
  if (!f) return -1;
  oc_atomic_file af;
  if (oc_atomic_open(&af, out, err)) { fclose(f); return -1; }
  size_t hcap = 1 << 16, hn = 0;
  uint64_t *seen = calloc(hcap, sizeof *seen); /* open addressing on the (prompt, response) hash */
  char *line = NULL;
  size_t lcap = 0;
  ssize_t got;
  int64_t ln = 0;
  int rc = -1;
  if (!seen) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  while ((got = getline(&line, &lcap, f)) > 0) {
    ln++;
    if (ln == 1 && strncmp(line, "version https://git-lfs.github.com/spec/v1", 42) == 0) { oc_fail(err, "%s: this is a Git LFS pointer, not the data: run git lfs pull", in); goto done; }
    if (oc_json_blank(line, (size_t)got)) continue;
    /* the output must be readable where the input was (Python reads both as UTF-8) */
    if (!oc_utf8_valid(line, (size_t)got)) { oc_fail(err, "%s:%lld: the line is not valid UTF-8", in, (long long)ln); goto done; }
    cJSON *row;
    if (oc_json_parse(line, (size_t)got, in, ln, &row, err)) goto done;
    const cJSON *p = row ? cJSON_GetObjectItemCaseSensitive(row, "prompt") : NULL, *r = row ? cJSON_GetObjectItemCaseSensitive(row, "response") : NULL,
                *l = row ? cJSON_GetObjectItemCaseSensitive(row, "label") : NULL, *nm = row ? cJSON_GetObjectItemCaseSensitive(row, "label_name") : NULL;
    if (!cJSON_IsObject(row) || !cJSON_IsString(p) || !cJSON_IsString(r)) {
      cJSON_Delete(row);
      oc_fail(err, "%s:%lld: expected an object with string \"prompt\" and \"response\"", in, (long long)ln);
      goto done;
    }
    int label = -1;
    if (cJSON_IsString(nm)) {
      for (int k = 0; k < 3; k++) if (strcmp(nm->valuestring, names[k]) == 0) label = k;
      if (label < 0) { oc_fail(err, "%s:%lld: unknown label_name \"%.80s\"", in, (long long)ln, nm->valuestring); cJSON_Delete(row); goto done; }
    } else {
      if (!cJSON_IsNumber(l) || (l->valuedouble != 0 && l->valuedouble != 1)) {
        cJSON_Delete(row);
        oc_fail(err, "%s:%lld: \"label\" must be 0 or 1 (or give \"label_name\")", in, (long long)ln);
        goto done;
      }
      int refusal = row_is_refusal(row, r->valuestring);
      label = refusal ? 1 : l->valuedouble == 1 ? 2 : 0;
    }
    st->rows++;
    uint64_t h = oc_fnv1a64(p->valuestring, strlen(p->valuestring) + 1, 0);
    h = oc_fnv1a64(r->valuestring, strlen(r->valuestring), h);
    if (h == 0) h = 1;
    size_t slot = (size_t)(h & (hcap - 1));
    int dup = 0;
    while (seen[slot]) { if (seen[slot] == h) { dup = 1; break; } slot = (slot + 1) & (hcap - 1); }
    if (dup) { st->duplicates++; cJSON_Delete(row); continue; }
    seen[slot] = h;
    if (++hn * 2 > hcap) { /* grow */
      size_t nc = hcap * 2;
      uint64_t *ns = calloc(nc, sizeof *ns);
      if (!ns) { cJSON_Delete(row); oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
      for (size_t i = 0; i < hcap; i++)
        if (seen[i]) { size_t s2 = (size_t)(seen[i] & (nc - 1)); while (ns[s2]) s2 = (s2 + 1) & (nc - 1); ns[s2] = seen[i]; }
      free(seen);
      seen = ns;
      hcap = nc;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", p->valuestring);
    cJSON_AddStringToObject(o, "response", r->valuestring);
    cJSON_AddNumberToObject(o, "label", label);
    cJSON_AddStringToObject(o, "label_name", names[label]);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    cJSON_Delete(row);
    int wrc = oc_atomic_write(&af, s, strlen(s), err) || oc_atomic_write(&af, "\n", 1, err);
    free(s);
    if (wrc) goto done;
    st->written++;
    st->by_label[label]++;
  }
  rc = 0;
done:
  free(line);
  free(seen);
  fclose(f);
  if (rc) { oc_atomic_abort(&af); return -1; }
  return oc_atomic_commit(&af, err);
}
