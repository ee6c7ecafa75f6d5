/* Activation collection: one forward pass per example taps every requested layer at the final
 * token. A journal of checksummed records makes an interrupted run resumable. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opencon/hub.h"
#include "opencon/probe.h"
#include "opencon/safetensors.h"
#include "collect.h"

#define JOURNAL_MAGIC "OCACTJ01"
#define RECORD_MAGIC 0x31434552u /* "REC1" */

void oc_activations_free(oc_activations *a) {
  if (a->X)
    for (int l = 0; l < a->n_layers; l++) free(a->X[l]);
  free(a->X); free(a->layers); free(a->y); free(a->line); free(a->hash); free(a->model_id); free(a->model_family);
  memset(a, 0, sizeof *a);
}

static int acts_alloc(oc_activations *a, int n, int n_layers, int hidden, oc_error *err) {
  a->n = n;
  a->n_layers = n_layers;
  a->hidden = hidden;
  a->X = calloc((size_t)n_layers, sizeof *a->X);
  a->layers = calloc((size_t)n_layers, sizeof *a->layers);
  a->y = calloc((size_t)(n ? n : 1), sizeof *a->y);
  a->line = calloc((size_t)(n ? n : 1), sizeof *a->line);
  a->hash = calloc((size_t)(n ? n : 1), sizeof *a->hash);
  if (!a->X || !a->layers || !a->y || !a->line || !a->hash) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (int l = 0; l < n_layers; l++) {
    a->X[l] = malloc(sizeof(float) * (size_t)(n ? n : 1) * (size_t)hidden);
    if (!a->X[l]) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory: %d x %d activations", n, hidden);
  }
  return 0;
}

static int resolved(int n_hidden_states, int layer) { return layer < 0 ? layer + n_hidden_states : layer; }

int oc_activations_find(const oc_activations *a, int layer) {
  for (int l = 0; l < a->n_layers; l++)
    if (resolved(a->n_hidden_states, a->layers[l]) == resolved(a->n_hidden_states, layer)) return l;
  return -1;
}

cJSON *oc_collect_header_json(const oc_model *m, const oc_dataset *ds, const oc_collect_opts *o) {
  const oc_model_config *c = oc_model_cfg(m);
  uint64_t h = 0;
  for (int i = 0; i < ds->n; i++) {
    uint64_t eh = oc_example_hash(&ds->ex[i]);
    h = oc_fnv1a64(&eh, sizeof eh, h);
    h = oc_fnv1a64(&ds->ex[i].line, sizeof ds->ex[i].line, h);
  }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "model_id", o->model_id ? o->model_id : "");
  cJSON_AddStringToObject(j, "architecture", c->architecture);
  cJSON_AddNumberToObject(j, "hidden_size", c->hidden);
  cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
  cJSON_AddStringToObject(j, "weights", oc_model_weights_kind(m)); /* q8 and BF16 states differ: no mixing on resume */
  cJSON *l = cJSON_AddArrayToObject(j, "layers");
  for (int i = 0; i < o->n_layers; i++) cJSON_AddItemToArray(l, cJSON_CreateNumber(o->layers[i]));
  cJSON_AddBoolToObject(j, "use_chat_template", o->use_chat_template);
  cJSON_AddNumberToObject(j, "max_length", o->max_length);
  cJSON_AddNumberToObject(j, "pack_tokens", o->pack_tokens > 1 ? o->pack_tokens : 1);
  cJSON_AddNumberToObject(j, "examples", ds->n);
  char fp[32];
  snprintf(fp, sizeof fp, "%016llx", (unsigned long long)h);
  cJSON_AddStringToObject(j, "data_fingerprint", fp);
  return j;
}

static char *journal_header(const oc_model *m, const oc_dataset *ds, const oc_collect_opts *o) {
  cJSON *j = oc_collect_header_json(m, ds, o);
  char *s = j ? cJSON_PrintUnformatted(j) : NULL;
  cJSON_Delete(j);
  return s;
}

typedef struct {
  uint32_t magic, index;
  int32_t label, pack_end; /* pack_end: last example of a packed prefill */
  int64_t line;
  uint64_t hash;
} rec_head;

/* Open (or create) the journal; read back complete records into out. Returns the number of
 * examples already done, or -1. */
static int64_t journal_open(const char *path, const char *header, const oc_dataset *ds, oc_activations *a, FILE **fp,
                            oc_error *err) {
  size_t hl = strlen(header), feats = (size_t)a->n_layers * (size_t)a->hidden;
  size_t rec_size = sizeof(rec_head) + feats * sizeof(float) + sizeof(uint64_t);
  FILE *f = fopen(path, "r+b");
  if (f && fseek(f, 0, SEEK_END) == 0 && ftell(f) < 12 + (long)hl) {
    /* a crash while the header was being written: nothing was collected yet, start over */
    long sz = ftell(f);
    char head[8] = {0};
    rewind(f);
    int partial_header = sz < 8 ? 1 : (fread(head, 1, 8, f) == 8 && memcmp(head, JOURNAL_MAGIC, 8) == 0);
    fclose(f);
    f = NULL;
    if (!partial_header) return oc_fail(err, "%s: not an opencon activation journal (remove it to start over)", path);
    errno = ENOENT;
  } else if (f) {
    rewind(f);
  }
  if (!f) {
    if (errno != ENOENT) return oc_fail_code(err, oc_errno_code(errno), "%s: cannot open journal: %s", path, strerror(errno));
    f = fopen(path, "w+b");
    if (!f) return oc_fail_code(err, OC_ERR_IO, "%s: cannot create journal: %s", path, strerror(errno));
    uint32_t n32 = (uint32_t)hl;
    if (fwrite(JOURNAL_MAGIC, 1, 8, f) != 8 || fwrite(&n32, 4, 1, f) != 1 || fwrite(header, 1, hl, f) != hl || fflush(f)) {
      fclose(f);
      return oc_fail(err, "%s: cannot write journal header", path);
    }
    *fp = f;
    return 0;
  }
  char magic[8];
  uint32_t n32 = 0;
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, JOURNAL_MAGIC, 8) != 0 || fread(&n32, 4, 1, f) != 1 || n32 > (1u << 20)) {
    fclose(f);
    return oc_fail(err, "%s: not an opencon activation journal (remove it to start over)", path);
  }
  char *old = malloc((size_t)n32 + 1);
  if (!old || fread(old, 1, n32, f) != n32) { free(old); fclose(f); return oc_fail(err, "%s: truncated journal header", path); }
  old[n32] = 0;
  if (n32 != hl || memcmp(old, header, hl) != 0) {
    oc_fail(err, "%s: journal was written with other settings or data (%.300s); use the same flags or remove it", path, old);
    free(old);
    fclose(f);
    return -1;
  }
  free(old);
  unsigned char *rec = malloc(rec_size);
  if (!rec) { fclose(f); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  int64_t done = 0, done_at_pack_end = 0;
  long good_end = ftell(f);
  while (done < ds->n && fread(rec, 1, rec_size, f) == rec_size) {
    rec_head h;
    memcpy(&h, rec, sizeof h);
    uint64_t sum;
    memcpy(&sum, rec + rec_size - sizeof sum, sizeof sum);
    if (h.magic != RECORD_MAGIC || h.index != (uint32_t)done || oc_fnv1a64(rec, rec_size - sizeof sum, 0) != sum ||
        h.hash != oc_example_hash(&ds->ex[done]))
      break;
    a->y[done] = h.label;
    a->line[done] = h.line;
    a->hash[done] = h.hash;
    const float *x = (const float *)(rec + sizeof h);
    for (int l = 0; l < a->n_layers; l++) memcpy(a->X[l] + (size_t)done * a->hidden, x + (size_t)l * a->hidden, sizeof(float) * (size_t)a->hidden);
    done++;
    /* resume only at a pack boundary of the interrupted run: greedy packing from there forms the
     * same packs again, so a resumed collection is bit-identical to an uninterrupted one */
    if (h.pack_end) { done_at_pack_end = done; good_end = ftell(f); }
  }
  done = done_at_pack_end;
  free(rec);
  /* drop a torn or corrupt tail, continue writing after the last good record */
  if (ftruncate(fileno(f), good_end) != 0 || fseek(f, good_end, SEEK_SET) != 0) {
    fclose(f);
    return oc_fail(err, "%s: cannot truncate journal: %s", path, strerror(errno));
  }
  *fp = f;
  return done;
}

static int journal_append(FILE *f, const char *path, int64_t k, int pack_end, const oc_activations *a, unsigned char *rec,
                          size_t rec_size, oc_error *err) {
  rec_head h = {RECORD_MAGIC, (uint32_t)k, a->y[k], pack_end, a->line[k], a->hash[k]};
  memcpy(rec, &h, sizeof h);
  float *x = (float *)(rec + sizeof h);
  for (int l = 0; l < a->n_layers; l++) memcpy(x + (size_t)l * a->hidden, a->X[l] + (size_t)k * a->hidden, sizeof(float) * (size_t)a->hidden);
  uint64_t sum = oc_fnv1a64(rec, rec_size - sizeof sum, 0);
  memcpy(rec + rec_size - sizeof sum, &sum, sizeof sum);
  if (fwrite(rec, 1, rec_size, f) != rec_size || (pack_end && fflush(f) != 0))
    return oc_fail_code(err, OC_ERR_IO, "%s: journal write failed: %s", path, strerror(errno));
  return 0;
}

int oc_collect_activations(const oc_model *m, const oc_chat *chat, const oc_dataset *ds, const oc_collect_opts *o,
                           oc_activations *a, oc_progress *prog, oc_error *err) {
  memset(a, 0, sizeof *a);
  const oc_model_config *c = oc_model_cfg(m);
  if (o->n_layers < 1) return oc_fail(err, "no layers requested");
  int max_len = o->max_length > 0 ? o->max_length : 2048;
  int *taps_idx = malloc(sizeof(int) * (size_t)o->n_layers);
  if (!taps_idx) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (int l = 0; l < o->n_layers; l++)
    if ((taps_idx[l] = oc_hidden_index(c, o->layers[l], err)) < 0) { free(taps_idx); return oc_wrap(err, "layer %d", o->layers[l]); }
  if (acts_alloc(a, ds->n, o->n_layers, c->hidden, err)) { free(taps_idx); oc_activations_free(a); return -1; }
  memcpy(a->layers, o->layers, sizeof(int) * (size_t)o->n_layers);
  a->n_hidden_states = c->n_layers + 1;
  a->model_id = strdup(o->model_id ? o->model_id : "");
  a->model_family = strdup(oc_family_name(c->family));
  a->use_chat_template = o->use_chat_template;
  a->max_length = max_len;
  FILE *jf = NULL;
  int64_t start = 0;
  size_t rec_size = sizeof(rec_head) + (size_t)o->n_layers * c->hidden * sizeof(float) + sizeof(uint64_t);
  /* a pack holds at most pack_max examples (each at least one token) */
  const int pack_max = o->pack_tokens > 1 ? (o->pack_tokens < 4096 ? o->pack_tokens : 4096) : 1;
  unsigned char *rec = malloc(rec_size);
  float *tap = malloc(sizeof(float) * (size_t)o->n_layers * (size_t)c->hidden * (size_t)pack_max);
  oc_encoding *enc = calloc((size_t)pack_max + 1, sizeof *enc);
  char *have = calloc((size_t)pack_max + 1, 1);
  int *lens = malloc(sizeof(int) * (size_t)pack_max), *last = malloc(sizeof(int) * (size_t)pack_max), ids_cap = 0;
  int32_t *ids = NULL;
  oc_session *s = oc_session_new(m, max_len > o->pack_tokens ? max_len : o->pack_tokens, err);
  int rc = -1;
  if (!rec || !tap || !enc || !have || !lens || !last || !s) { if (s) oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (o->journal_path) {
    char *hdr = journal_header(m, ds, o);
    start = journal_open(o->journal_path, hdr, ds, a, &jf, err);
    free(hdr);
    if (start < 0) goto done;
    if (start > 0) fprintf(stderr, "resuming %s: %lld of %d examples already collected\n", o->journal_path, (long long)start, ds->n);
  }
  if (prog) oc_progress_phase(prog, "extracting_activations", start, ds->n);
  double last_sync = oc_now();
  for (int64_t k = start; k < ds->n;) {
    /* greedy pack: consecutive examples while their tokens fit in pack_tokens (one example when
     * packing is off or the first one alone is longer) */
    int nm = 0, tot = 0;
    while (k + nm < ds->n && nm < pack_max) {
      oc_encoding *e = &enc[nm];
      if (!have[nm]) {
        const oc_example *ex = &ds->ex[k + nm];
        char *text = NULL;
        /* a chat template writes its own BOS; the plain format gets the tokenizer's special tokens */
        if (oc_chat_format_exchange(chat, ex->prompt, ex->response, o->use_chat_template, &text, err) ||
            oc_chat_encode(chat, text, !o->use_chat_template, max_len, e, err)) {
          free(text);
          oc_wrap(err, "example at line %lld", (long long)ex->line);
          goto done;
        }
        free(text);
        have[nm] = 1;
        if (e->n == 0) { oc_fail(err, "example at line %lld encodes to no tokens", (long long)ex->line); goto done; }
      }
      if (nm > 0 && tot + e->n > o->pack_tokens) break;
      if (tot + e->n > ids_cap) {
        int32_t *ni = realloc(ids, sizeof *ids * (size_t)(tot + e->n));
        if (!ni) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
        ids = ni;
        ids_cap = tot + e->n;
      }
      memcpy(ids + tot, e->ids, sizeof *ids * (size_t)e->n);
      lens[nm] = e->n;
      tot += e->n;
      last[nm] = tot - 1;
      nm++;
      if (o->pack_tokens <= 0) break;
    }
    oc_taps taps = {o->n_layers, taps_idx, nm, last, tap};
    oc_session_reset(s);
    if (oc_forward_packed(s, ids, lens, nm, &taps, err)) { oc_wrap(err, "example at line %lld", (long long)ds->ex[k].line); goto done; }
    for (int j = 0; j < nm; j++) {
      int64_t kk = k + j;
      const oc_example *ex = &ds->ex[kk];
      for (int l = 0; l < o->n_layers; l++)
        memcpy(a->X[l] + (size_t)kk * c->hidden, tap + ((size_t)l * nm + j) * c->hidden, sizeof(float) * (size_t)c->hidden);
      a->y[kk] = ex->label;
      a->line[kk] = ex->line;
      a->hash[kk] = oc_example_hash(ex);
      if (jf && journal_append(jf, o->journal_path, kk, j == nm - 1, a, rec, rec_size, err)) goto done;
    }
    /* the encoding that did not fit moves to the front */
    for (int j = 0; j < nm; j++) { oc_encoding_free(&enc[j]); have[j] = 0; }
    if (k + nm < ds->n && have[nm]) {
      enc[0] = enc[nm];
      have[0] = 1;
      have[nm] = 0;
    }
    k += nm;
    if (jf && oc_now() - last_sync > 2.0) { fsync(fileno(jf)); last_sync = oc_now(); }
    if (prog) oc_progress_update(prog, k);
  }
  if (jf && fsync(fileno(jf)) != 0) { oc_fail(err, "%s: fsync failed: %s", o->journal_path, strerror(errno)); goto done; }
  rc = 0;
done:
  if (jf) fclose(jf);
  oc_session_free(s);
  if (enc)
    for (int j = 0; j <= pack_max; j++) if (have && have[j]) oc_encoding_free(&enc[j]);
  free(enc); free(have); free(lens); free(last); free(ids);
  free(rec); free(tap); free(taps_idx);
  if (rc) oc_activations_free(a);
  return rc;
}

/* ---- safetensors file ---- */
int oc_activations_save(const oc_activations *a, const char *path, oc_error *err) {
  oc_st_writer *w = oc_st_writer_new();
  char (*names)[32] = calloc((size_t)a->n_layers, sizeof *names);
  char layers[1024] = "", buf[64];
  int rc = -1;
  if (!names) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  int64_t xs[2] = {a->n, a->hidden}, ns[1] = {a->n};
  for (int l = 0; l < a->n_layers; l++) {
    snprintf(names[l], sizeof names[l], "X.%d", a->layers[l]);
    snprintf(buf, sizeof buf, "%s%d", l ? "," : "", a->layers[l]);
    if (strlen(layers) + strlen(buf) >= sizeof layers) { oc_fail(err, "too many layers"); goto done; }
    strcat(layers, buf);
    if (oc_st_writer_add(w, names[l], OC_DT_F32, 2, xs, a->X[l], err)) goto done;
  }
  char nhs[32], ml[32];
  snprintf(nhs, sizeof nhs, "%d", a->n_hidden_states);
  snprintf(ml, sizeof ml, "%d", a->max_length);
  if (oc_st_writer_add(w, "y", OC_DT_I32, 1, ns, a->y, err) || oc_st_writer_add(w, "line", OC_DT_I64, 1, ns, a->line, err) ||
      oc_st_writer_add(w, "hash", OC_DT_U64, 1, ns, a->hash, err) ||
      oc_st_writer_set_metadata(w, "model_id", a->model_id ? a->model_id : "", err) ||
      oc_st_writer_set_metadata(w, "model_family", a->model_family ? a->model_family : "", err) ||
      oc_st_writer_set_metadata(w, "layers", layers, err) ||
      oc_st_writer_set_metadata(w, "num_hidden_states", nhs, err) ||
      oc_st_writer_set_metadata(w, "use_chat_template", a->use_chat_template ? "true" : "false", err) ||
      oc_st_writer_set_metadata(w, "max_length", ml, err) || oc_st_writer_write(w, path, err))
    goto done;
  rc = 0;
done:
  free(names);
  oc_st_writer_free(w);
  return rc;
}

static int meta_int(const oc_st_file *f, const char *path, const char *key, int *out, oc_error *err) {
  const char *v = oc_st_metadata(f, key);
  char *end;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || *end || end == v) return oc_fail(err, "%s: metadata \"%s\" missing or not an integer (not an opencon activation file?)", path, key);
  *out = (int)x;
  return 0;
}

int oc_activations_load(const char *path, oc_activations *a, oc_error *err) {
  memset(a, 0, sizeof *a);
  oc_st_file *f;
  if (oc_st_open(path, &f, err)) return -1;
  int rc = -1, nl = 0, nhs = 0, ml = 0;
  int64_t *lv = NULL;
  const char *layers = oc_st_metadata(f, "layers");
  if (!layers) { oc_fail(err, "%s: metadata \"layers\" missing (not an opencon activation file?)", path); goto done; }
  if (oc_parse_int_list(layers, &lv, &nl, err) || nl < 1) { if (nl < 1 && lv) oc_fail(err, "no layers"); oc_wrap(err, "%s: metadata \"layers\"", path); goto done; }
  if (meta_int(f, path, "num_hidden_states", &nhs, err) || meta_int(f, path, "max_length", &ml, err)) goto done;
  const oc_tensor *y = oc_st_get(f, "y"), *line = oc_st_get(f, "line"), *hash = oc_st_get(f, "hash");
  if (!y || y->dtype != OC_DT_I32 || y->ndim != 1) { oc_fail(err, "%s: tensor \"y\" missing or not I32 [N]", path); goto done; }
  int64_t n = y->shape[0];
  char name[32];
  snprintf(name, sizeof name, "X.%d", (int)lv[0]);
  const oc_tensor *x0 = oc_st_get(f, name);
  if (!x0 || x0->ndim != 2) { oc_fail(err, "%s: tensor \"%s\" missing or not 2-D", path, name); goto done; }
  if (acts_alloc(a, (int)n, nl, (int)x0->shape[1], err)) goto done;
  for (int l = 0; l < nl; l++) {
    snprintf(name, sizeof name, "X.%d", (int)lv[l]);
    const oc_tensor *x = oc_st_get(f, name);
    if (!x || x->dtype != OC_DT_F32 || x->ndim != 2 || x->shape[0] != n || x->shape[1] != a->hidden) {
      oc_fail(err, "%s: tensor \"%s\" missing or not F32 [%lld, %d]", path, name, (long long)n, a->hidden);
      goto done;
    }
    a->layers[l] = (int)lv[l];
    memcpy(a->X[l], x->data, x->nbytes);
  }
  memcpy(a->y, y->data, y->nbytes);
  for (int64_t i = 0; i < n; i++)
    if (a->y[i] < 0 || a->y[i] > 2) { oc_fail(err, "%s: label %d at row %lld is not 0..2", path, a->y[i], (long long)i); goto done; }
  if (line && line->dtype == OC_DT_I64 && line->numel == n) memcpy(a->line, line->data, line->nbytes);
  if (hash && hash->dtype == OC_DT_U64 && hash->numel == n) memcpy(a->hash, hash->data, hash->nbytes);
  a->n_hidden_states = nhs;
  a->max_length = ml;
  const char *mid = oc_st_metadata(f, "model_id"), *fam = oc_st_metadata(f, "model_family"), *uct = oc_st_metadata(f, "use_chat_template");
  a->model_id = strdup(mid ? mid : "");
  a->model_family = strdup(fam ? fam : "");
  a->use_chat_template = uct && strcmp(uct, "true") == 0;
  rc = 0;
done:
  if (rc) oc_activations_free(a);
  free(lv);
  oc_st_close(f);
  return rc;
}

int oc_collect_source_open(const oc_activation_source *src, oc_dataset *ds, oc_model **m, oc_chat **c, oc_collection_counts *counts,
                           oc_progress *prog, oc_error *err) {
  *m = NULL;
  *c = NULL;
  if (!src->model_id || !src->data_path) return oc_fail(err, "collecting activations needs a model and a dataset");
  oc_progress_phase(prog, "loading_model", 0, 0);
  if (oc_dataset_load(src->data_path, src->max_examples, src->sample_seed, ds, err)) return -1;
  if (src->binary && ds->max_label > 1) {
    int64_t line = 0;
    for (int i = 0; i < ds->n && !line; i++) if (ds->ex[i].label > 1) line = ds->ex[i].line;
    oc_dataset_free(ds);
    return oc_fail(err, "%s:%lld: label 2: a probe needs binary labels (0 safe, 1 unsafe)", src->data_path, (long long)line);
  }
  if (src->binary && ds->n < 4) { oc_dataset_free(ds); return oc_fail(err, "%s: need at least 4 examples, got %d", src->data_path, ds->n); }
  if (counts) {
    counts->rows_in_file = ds->rows_in_file;
    counts->selected = ds->n;
    memcpy(counts->by_label, ds->label_counts, sizeof counts->by_label);
  }
  char *dir = NULL;
  int rc = -1;
  if (oc_resolve_model(src->model_id, NULL, &dir, err) || oc_model_load_ex(dir, &(oc_model_opts){src->weights}, m, err) || oc_chat_load(dir, c, err)) goto done;
  (*c)->render_opts = src->template_opts;
  rc = 0;
done:
  free(dir);
  if (rc) { oc_chat_free(*c); oc_model_free(*m); oc_dataset_free(ds); *c = NULL; *m = NULL; }
  return rc;
}

int oc_activations_get(const oc_activation_source *src, const int *layers, int n_layers, oc_progress *prog, oc_activations *a,
                       oc_collection_counts *counts, oc_error *err) {
  if (counts) memset(counts, 0, sizeof *counts);
  if (src->activations) {
    if (oc_progress_phase(prog, "loading_activations", 0, 0), oc_activations_load(src->activations, a, err)) return -1;
    for (int i = 0; i < n_layers; i++)
      if (oc_activations_find(a, layers[i]) < 0) {
        char have[256] = "";
        for (int l = 0; l < a->n_layers && strlen(have) < 200; l++) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%d", l ? "," : "", a->layers[l]);
        oc_activations_free(a);
        return oc_fail(err, "%s: layer %d was not collected (it has %s)", src->activations, layers[i], have);
      }
    return 0;
  }
  oc_dataset ds;
  oc_model *m = NULL;
  oc_chat *c = NULL;
  if (oc_collect_source_open(src, &ds, &m, &c, counts, prog, err)) return -1;
  int rc = -1;
  oc_collect_opts co = {src->model_id, src->use_chat_template, src->max_length, n_layers, layers, src->journal, src->pack_tokens};
  if (oc_collect_activations(m, c, &ds, &co, a, prog, err)) goto done;
  if (src->save_to && oc_activations_save(a, src->save_to, err)) { oc_activations_free(a); goto done; }
  rc = 0;
done:
  oc_chat_free(c);
  oc_model_free(m);
  oc_dataset_free(&ds);
  return rc;
}
