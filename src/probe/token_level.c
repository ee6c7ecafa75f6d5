/* Token-level collection and fit (train-probe --token_level): the probe layers' hidden states at
 * the response tokens of each exchange, one teacher-forced forward pass per exchange with a tap at
 * every kept position, streamed as F16 rows into a journal of checksummed records (resumable like
 * the final-token collection's, docs/formats.md), read back for oc_probe_train_tokens: all at once
 * into memory, or (stream_rows) an exchange's record at a time with pread while training. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collect.h"
#include "opencon/probe.h"
#include "opencon/safetensors.h"
#include "train.h"

#define TOKEN_JOURNAL_MAGIC "OCTOKJ01"
#define TOKEN_RECORD_MAGIC 0x314b4f54u /* "TOK1" */

/* a record: this head, int32 pos[n_rows], f32 scale[n_rows][n_layers], f16 x[n_rows][n_layers][hidden]
 * (the block of row r and layer l is x * scale[r][l]), then the FNV-1a 64 of everything before it;
 * a row's width W = n_layers x hidden */
typedef struct {
  uint32_t magic, index;
  int32_t label, n_rows;
  int64_t line;
  uint64_t hash;
  int32_t n_resp, zero;
} tok_head;

static size_t record_size(int n_rows, int W, int nl) {
  return sizeof(tok_head) + (size_t)n_rows * (sizeof(int32_t) + sizeof(float) * (size_t)nl + sizeof(uint16_t) * (size_t)W) + sizeof(uint64_t);
}

/* a streamed collection's journal: open read-only, record k at at[k] */
struct oc_token_journal {
  int fd;
  char *path;
  int64_t *at;
};

static void journal_close(struct oc_token_journal *j) {
  if (!j) return;
  if (j->fd >= 0) close(j->fd);
  free(j->path); free(j->at); free(j);
}

void oc_token_activations_free(oc_token_activations *a) {
  free(a->offsets); free(a->y); free(a->line); free(a->pos); free(a->X); free(a->model_id); free(a->model_family);
  journal_close(a->journal);
  memset(a, 0, sizeof *a);
}

/* a record's n_rows F16 rows of width W over nl layers (p: its pos array, with the scales and the
 * rows after it) as F32 into x [n_rows][W] */
static void decode_rows(const unsigned char *p, int n_rows, int W, int nl, float *x) {
  const unsigned char *scales = p + sizeof(int32_t) * (size_t)n_rows, *xs = scales + sizeof(float) * (size_t)n_rows * (size_t)nl;
  const size_t Hl = (size_t)(W / nl);
  for (size_t b = 0; b < (size_t)n_rows * (size_t)nl; b++) { /* block b: row b / nl, layer b % nl */
    float sc;
    memcpy(&sc, scales + sizeof(float) * b, sizeof sc);
    for (size_t j = 0; j < Hl; j++) {
      uint16_t v;
      memcpy(&v, xs + sizeof(uint16_t) * (b * Hl + j), sizeof v);
      x[b * Hl + j] = oc_f16_to_f32(v) * sc;
    }
  }
}

int oc_token_sample(int n_resp, int cap, uint64_t seed, uint64_t example_hash, int *pos) {
  if (cap <= 0 || n_resp <= cap) {
    for (int i = 0; i < n_resp; i++) pos[i] = i;
    return n_resp;
  }
  /* a partial Fisher-Yates over the tokens before the last: its first cap - 1 entries are the draw */
  for (int i = 0; i < n_resp - 1; i++) pos[i] = i;
  oc_rng r;
  oc_rng_seed(&r, seed ^ (example_hash * 0x9e3779b97f4a7c15ull));
  for (int i = 0; i < cap - 1; i++) {
    const int j = i + (int)oc_rng_below(&r, (uint64_t)(n_resp - 1 - i));
    const int t = pos[i];
    pos[i] = pos[j];
    pos[j] = t;
  }
  /* ascending (insertion sort of the draw), then the last token */
  for (int i = 1; i < cap - 1; i++)
    for (int k = i; k > 0 && pos[k] < pos[k - 1]; k--) { const int t = pos[k]; pos[k] = pos[k - 1]; pos[k - 1] = t; }
  pos[cap - 1] = n_resp - 1;
  return cap;
}

/* One pass over the records after the header (rows H wide over nl layers): the complete, intact
 * records of examples 0, 1, ... in order (each checked against ds); into out (its arrays sized by
 * an earlier counting pass) when out is not NULL. *rows: their rows; *good_end: the offset after
 * the last of them. */
static int64_t scan_records(FILE *f, long data_start, const oc_dataset *ds, int H, int nl, int row_cap, int max_len, oc_token_activations *out,
                            int64_t *rows, long *good_end, unsigned char *buf) {
  int64_t k = 0;
  *rows = 0;
  *good_end = data_start;
  if (fseek(f, data_start, SEEK_SET) != 0) return 0;
  tok_head h;
  while (k < ds->n && fread(&h, sizeof h, 1, f) == 1) {
    if (h.magic != TOKEN_RECORD_MAGIC || h.index != (uint32_t)k || h.n_rows < 1 || h.n_rows > row_cap || h.n_resp < h.n_rows ||
        h.n_resp > max_len || h.zero != 0 || h.hash != oc_example_hash(&ds->ex[k]) || h.label != ds->ex[k].label || h.line != ds->ex[k].line)
      break;
    const size_t size = record_size(h.n_rows, H, nl);
    memcpy(buf, &h, sizeof h);
    if (fread(buf + sizeof h, 1, size - sizeof h, f) != size - sizeof h) break;
    uint64_t sum;
    memcpy(&sum, buf + size - sizeof sum, sizeof sum);
    if (oc_fnv1a64(buf, size - sizeof sum, 0) != sum) break;
    const unsigned char *p = buf + sizeof h;
    int32_t last = -1, ok = 1;
    for (int r = 0; r < h.n_rows && ok; r++) {
      int32_t q;
      memcpy(&q, p + sizeof(int32_t) * (size_t)r, sizeof q);
      ok = q > last && q < h.n_resp;
      last = q;
    }
    if (!ok || last != h.n_resp - 1) break; /* positions ascending, the last response token kept */
    const unsigned char *scales = p + sizeof(int32_t) * (size_t)h.n_rows, *xs = scales + sizeof(float) * (size_t)h.n_rows * (size_t)nl;
    for (size_t b = 0; b < (size_t)h.n_rows * (size_t)nl && ok; b++) {
      float sc;
      memcpy(&sc, scales + sizeof(float) * b, sizeof sc);
      ok = isfinite(sc) && sc >= 0;
    }
    for (size_t i = 0; i < (size_t)h.n_rows * (size_t)H && ok; i++) { /* x / scale: every half within [-1, 1] */
      uint16_t v;
      memcpy(&v, xs + sizeof v * i, sizeof v);
      ok = (v & 0x7fffu) <= 0x3c00u;
    }
    if (!ok) break;
    if (out) { /* the rows themselves only when they are read into memory (X) */
      const int64_t o0 = out->offsets[k];
      if (out->X) {
        memcpy(out->pos + o0, p, sizeof(int32_t) * (size_t)h.n_rows);
        decode_rows(p, h.n_rows, H, nl, out->X + (size_t)o0 * H);
      }
      out->offsets[k + 1] = o0 + h.n_rows;
      out->y[k] = h.label;
      out->line[k] = h.line;
    }
    *rows += h.n_rows;
    *good_end = ftell(f);
    k++;
  }
  return k;
}

/* the journal's first bytes for this header (magic, u32 length, the JSON): *len of them, malloc'd */
static unsigned char *header_bytes(const char *header, size_t *len) {
  const size_t hl = strlen(header);
  const uint32_t n32 = (uint32_t)hl;
  unsigned char *b = hl <= UINT32_MAX ? malloc(12 + hl) : NULL;
  if (!b) return NULL;
  memcpy(b, TOKEN_JOURNAL_MAGIC, 8);
  memcpy(b + 8, &n32, 4);
  memcpy(b + 12, header, hl);
  *len = 12 + hl;
  return b;
}

/* Open the journal when it begins with this header, or (re)create it when it is absent or holds
 * only part of this header (killed while writing it: nothing was collected). *data_start: where
 * the records begin. */
static int journal_open(const char *path, const char *header, FILE **fp, long *data_start, oc_error *err) {
  size_t want = 0;
  unsigned char *expect = header_bytes(header, &want), *got = expect ? malloc(want) : NULL;
  FILE *f = NULL;
  int rc = -1;
  if (!expect || !got) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  *data_start = (long)want;
  if ((f = fopen(path, "r+b"))) {
    const size_t n = fread(got, 1, want, f);
    if (n == want && memcmp(got, expect, want) == 0) { *fp = f; f = NULL; rc = 0; goto done; }
    fclose(f);
    f = NULL;
    if (n == want || memcmp(got, expect, n) != 0) {
      oc_fail(err, "%s: not a token-level journal of these settings and data (use the same flags or remove it)", path);
      goto done;
    }
  } else if (errno != ENOENT) {
    oc_fail_code(err, oc_errno_code(errno), "%s: cannot open journal: %s", path, strerror(errno));
    goto done;
  }
  if (!(f = fopen(path, "w+b"))) { oc_fail_code(err, OC_ERR_IO, "%s: cannot create journal: %s", path, strerror(errno)); goto done; }
  if (fwrite(expect, 1, want, f) != want || fflush(f)) { oc_fail_code(err, OC_ERR_IO, "%s: cannot write journal header", path); goto done; }
  *fp = f;
  f = NULL;
  rc = 0;
done:
  if (f) fclose(f);
  free(expect); free(got);
  return rc;
}

/* the layers o asks for: o->layers, or the one o->layer; their count */
static int token_layers(const oc_token_collect_opts *o, const int **layers) {
  if (o->n_layers > 0) { *layers = o->layers; return o->n_layers; }
  *layers = &o->layer;
  return 1;
}

static char *token_header(const oc_model *m, const oc_dataset *ds, const oc_token_collect_opts *o, int max_len) {
  const int *layers;
  const int nl = token_layers(o, &layers);
  const oc_collect_opts co = {o->model_id, o->use_chat_template, max_len, nl, layers, o->journal_path, 1};
  cJSON *j = oc_collect_header_json(m, ds, &co);
  if (!j) return NULL;
  char seed[32];
  snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
  cJSON_AddBoolToObject(j, "token_level", 1);
  cJSON_AddNumberToObject(j, "max_tokens_per_example", o->max_tokens_per_example);
  cJSON_AddStringToObject(j, "token_seed", seed);
  cJSON_AddStringToObject(j, "rows", "f16_scaled");
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  return s;
}

/* the record of one exchange's tapped rows, tap [nl][n_rows][Hl] (oc_taps' layout), into rec */
static int encode_record(unsigned char *rec, int64_t k, const oc_example *ex, int n_resp, const int *pos, int n_rows, const float *tap, int Hl,
                         int nl, oc_error *err) {
  const tok_head h = {TOKEN_RECORD_MAGIC, (uint32_t)k, ex->label, n_rows, ex->line, oc_example_hash(ex), n_resp, 0};
  unsigned char *p = rec + sizeof h, *scales = p + sizeof(int32_t) * (size_t)n_rows;
  unsigned char *xs = scales + sizeof(float) * (size_t)n_rows * (size_t)nl;
  memcpy(rec, &h, sizeof h);
  for (int r = 0; r < n_rows; r++) {
    const int32_t q = pos[r];
    memcpy(p + sizeof(int32_t) * (size_t)r, &q, sizeof q);
    for (int l = 0; l < nl; l++) {
      const size_t b = (size_t)r * (size_t)nl + (size_t)l; /* the block of row r, layer l */
      const float *x = tap + ((size_t)l * (size_t)n_rows + (size_t)r) * (size_t)Hl;
      float amax = 0;
      for (int j = 0; j < Hl; j++) {
        if (!isfinite(x[j])) return oc_fail(err, "line %lld: a non-finite hidden state at response token %d", (long long)ex->line, q + 1);
        amax = fmaxf(amax, fabsf(x[j]));
      }
      const float sc = amax > 0 ? amax : 1;
      memcpy(scales + sizeof(float) * b, &sc, sizeof sc);
      for (int j = 0; j < Hl; j++) {
        const uint16_t v = oc_f32_to_f16(x[j] / sc);
        memcpy(xs + sizeof(uint16_t) * (b * (size_t)Hl + (size_t)j), &v, sizeof v);
      }
    }
  }
  const size_t size = record_size(n_rows, Hl * nl, nl);
  const uint64_t sum = oc_fnv1a64(rec, size - sizeof sum, 0);
  memcpy(rec + size - sizeof sum, &sum, sizeof sum);
  return 0;
}

/* every record of the journal into out: the rows into memory, or (stream) the journal kept open
 * read-only with each record's offset, for read_rows */
static int load_rows(FILE *f, long data_start, const oc_dataset *ds, int H, int nl, int row_cap, int max_len, int stream, oc_token_activations *out,
                     unsigned char *buf, const char *path, oc_error *err) {
  int64_t rows;
  long end;
  const int64_t intact = scan_records(f, data_start, ds, H, nl, row_cap, max_len, NULL, &rows, &end, buf);
  if (intact != ds->n)
    return oc_fail_code(err, OC_ERR_IO, "%s: %lld of %d exchanges have an intact record (the journal changed while collecting)", path,
                        (long long)intact, ds->n);
  out->n = ds->n;
  out->hidden = H;
  out->n_layers = nl;
  out->n_rows = rows;
  out->offsets = calloc((size_t)ds->n + 1, sizeof *out->offsets);
  out->y = malloc(sizeof *out->y * (size_t)ds->n);
  out->line = malloc(sizeof *out->line * (size_t)ds->n);
  if (!out->offsets || !out->y || !out->line) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory (%d exchanges)", ds->n);
  if (!stream) {
    out->pos = (uint64_t)rows <= SIZE_MAX / sizeof *out->pos ? malloc(sizeof *out->pos * (size_t)rows) : NULL;
    out->X = (uint64_t)rows <= SIZE_MAX / sizeof *out->X / (size_t)H ? malloc(sizeof *out->X * (size_t)rows * (size_t)H) : NULL;
    if (!out->pos || !out->X)
      return oc_fail_code(err, OC_ERR_NOMEM, "out of memory: %lld token rows of %d features (train-probe streams them from the journal instead)",
                          (long long)rows, H);
  }
  if (scan_records(f, data_start, ds, H, nl, row_cap, max_len, out, &rows, &end, buf) != ds->n)
    return oc_fail_code(err, OC_ERR_IO, "%s: the journal changed while collecting", path);
  for (int k = 0; k < ds->n; k++)
    if (out->offsets[k + 1] - out->offsets[k] > out->max_rows) out->max_rows = (int)(out->offsets[k + 1] - out->offsets[k]);
  if (!stream) return 0;
  struct oc_token_journal *j = calloc(1, sizeof *j);
  if (!j) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  j->fd = -1;
  out->journal = j;
  j->path = strdup(path);
  j->at = malloc(sizeof *j->at * (size_t)ds->n);
  if (!j->path || !j->at) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory (%d exchanges)", ds->n);
  int64_t at = data_start;
  for (int k = 0; k < ds->n; k++) {
    j->at[k] = at;
    at += (int64_t)record_size((int)(out->offsets[k + 1] - out->offsets[k]), H, nl);
  }
  if ((j->fd = fcntl(fileno(f), F_DUPFD_CLOEXEC, 0)) < 0)
    return oc_fail_code(err, oc_errno_code(errno), "%s: cannot keep the journal open: %s", path, strerror(errno));
  return 0;
}

/* A streamed collection's rows of exchange k: its record read back (into rec, record_size(max_rows,
 * hidden, n_layers) bytes), checked against what the collection saw, decoded into x [max_rows][hidden] */
static const float *read_rows(const oc_token_activations *a, int64_t k, unsigned char *rec, float *x, oc_error *err) {
  const struct oc_token_journal *j = a->journal;
  const int T = (int)(a->offsets[k + 1] - a->offsets[k]), H = a->hidden;
  const size_t size = record_size(T, H, a->n_layers);
  const ssize_t got = pread(j->fd, rec, size, (off_t)j->at[k]);
  if (got < 0) {
    oc_fail_code(err, oc_errno_code(errno), "%s: cannot read the record of exchange %lld: %s", j->path, (long long)k + 1, strerror(errno));
    return NULL;
  }
  if ((size_t)got != size) {
    oc_fail_code(err, OC_ERR_IO, "%s: the record of exchange %lld (line %lld) is cut short (%lld of %zu bytes): the journal was truncated after collection",
                 j->path, (long long)k + 1, (long long)a->line[k], (long long)got, size);
    return NULL;
  }
  tok_head h;
  memcpy(&h, rec, sizeof h);
  uint64_t sum;
  memcpy(&sum, rec + size - sizeof sum, sizeof sum);
  if (h.magic != TOKEN_RECORD_MAGIC || h.index != (uint32_t)k || h.n_rows != T || h.label != a->y[k] || h.line != a->line[k] ||
      oc_fnv1a64(rec, size - sizeof sum, 0) != sum) {
    oc_fail_code(err, OC_ERR_IO, "%s: the record of exchange %lld (line %lld) changed after collection (its head or checksum differs)", j->path,
                 (long long)k + 1, (long long)a->line[k]);
    return NULL;
  }
  decode_rows(rec + sizeof h, T, H, a->n_layers, x);
  return x;
}

/* the rows of an exchange of a, in memory or streamed: what oc_probe_train_token_rows reads */
typedef struct {
  const oc_token_activations *a;
  unsigned char *rec;
  float *x;
} row_reader;

static const float *reader_rows(void *ctx, int64_t k, oc_error *err) {
  row_reader *r = ctx;
  if (!r->a->journal) return r->a->X + (size_t)r->a->offsets[k] * (size_t)r->a->hidden;
  return read_rows(r->a, k, r->rec, r->x, err);
}

static int reader_open(row_reader *r, const oc_token_activations *a, oc_error *err) {
  memset(r, 0, sizeof *r);
  r->a = a;
  if (!a->journal) return 0;
  if (a->max_rows < 1 || a->hidden < 1 || (size_t)a->max_rows > SIZE_MAX / sizeof(float) / (size_t)a->hidden)
    return oc_fail(err, "token rows of %d x %d cannot be read", a->max_rows, a->hidden);
  r->rec = malloc(record_size(a->max_rows, a->hidden, a->n_layers));
  r->x = malloc(sizeof(float) * (size_t)a->max_rows * (size_t)a->hidden);
  if (!r->rec || !r->x) {
    free(r->rec); free(r->x);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory (%d token rows of %d features)", a->max_rows, a->hidden);
  }
  return 0;
}

static void reader_close(row_reader *r) { free(r->rec); free(r->x); }

int oc_token_journal_load(const char *path, const char *header, const oc_dataset *ds, int H, int nl, int row_cap, int max_len, int stream,
                          oc_token_activations *out, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (H < 1 || H > OC_PROBE_MAX_HIDDEN || nl < 1 || nl > OC_PROBE_MAX_LAYERS || H % nl != 0 || row_cap < 1 || row_cap > OC_TOKEN_MAX_PER_EXAMPLE ||
      max_len < row_cap)
    return oc_fail(err, "token journal of rows %d wide over %d layers, %d a record, %d tokens: out of range", H, nl, row_cap, max_len);
  size_t want = 0;
  unsigned char *expect = header_bytes(header, &want), *got = expect ? malloc(want) : NULL, *rec = malloc(record_size(row_cap, H, nl));
  FILE *f = NULL;
  int rc = -1;
  if (!expect || !got || !rec) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (!(f = fopen(path, "rb"))) { oc_fail_code(err, oc_errno_code(errno), "%s: cannot open journal: %s", path, strerror(errno)); goto done; }
  if (fread(got, 1, want, f) != want || memcmp(got, expect, want) != 0) {
    oc_fail(err, "%s: not a token-level journal of these settings and data", path);
    goto done;
  }
  rc = load_rows(f, (long)want, ds, H, nl, row_cap, max_len, stream, out, rec, path, err);
done:
  if (f) fclose(f);
  free(expect); free(got); free(rec);
  if (rc) oc_token_activations_free(out);
  return rc;
}

int oc_collect_tokens(const oc_model *m, const oc_chat *chat, const oc_dataset *ds, const oc_token_collect_opts *o, oc_token_activations *out,
                      oc_progress *prog, oc_error *err) {
  memset(out, 0, sizeof *out);
  const oc_model_config *mc = oc_model_cfg(m);
  const int *wanted;
  const int nl = token_layers(o, &wanted), Hl = mc->hidden;
  if (nl < 1 || nl > OC_PROBE_MAX_LAYERS || !wanted) return oc_fail(err, "a token-level collection taps 1 to %d layers, not %d", OC_PROBE_MAX_LAYERS, nl);
  const int H = Hl * nl; /* a row: the layers' hidden states side by side */
  int max_len = o->max_length > 0 ? o->max_length : 2048;
  if (mc->max_position_embeddings > 0 && max_len > mc->max_position_embeddings) max_len = mc->max_position_embeddings;
  if (!o->journal_path) return oc_fail(err, "token-level collection needs a journal path");
  if (o->max_tokens_per_example < 0 || o->max_tokens_per_example > OC_TOKEN_MAX_PER_EXAMPLE)
    return oc_fail(err, "max_tokens_per_example %d: 0 (every token) to %d", o->max_tokens_per_example, OC_TOKEN_MAX_PER_EXAMPLE);
  for (int i = 0; i < ds->n; i++)
    if (ds->ex[i].label != 0 && ds->ex[i].label != 1)
      return oc_fail(err, "line %lld: label %d (a token-level probe needs 0 safe / 1 unsafe)", (long long)ds->ex[i].line, ds->ex[i].label);
  int li[OC_PROBE_MAX_LAYERS];
  for (int l = 0; l < nl; l++) {
    if ((li[l] = oc_hidden_index(mc, wanted[l], err)) < 0) return oc_wrap(err, "probe layer %d", wanted[l]);
    for (int k = 0; k < l; k++)
      if (li[k] == li[l]) return oc_fail(err, "layers %d and %d are the same hidden state", wanted[k], wanted[l]);
  }
  const int row_cap = o->max_tokens_per_example > 0 && o->max_tokens_per_example < max_len ? o->max_tokens_per_example : max_len;
  char *hdr = token_header(m, ds, o, max_len);
  unsigned char *rec = malloc(record_size(row_cap, H, nl));
  float *tap = malloc(sizeof(float) * (size_t)row_cap * (size_t)H);
  int *pos = malloc(sizeof(int) * (size_t)max_len), *tpos = malloc(sizeof(int) * (size_t)max_len);
  oc_session *s = NULL;
  FILE *f = NULL;
  long data_start = 0, good_end = 0;
  int rc = -1;
  if (!hdr || !rec || !tap || !pos || !tpos) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (journal_open(o->journal_path, hdr, &f, &data_start, err)) goto done;
  int64_t rows;
  const int64_t start = scan_records(f, data_start, ds, H, nl, row_cap, max_len, NULL, &rows, &good_end, rec);
  /* drop a torn or corrupt tail, continue after the last good record */
  if (ftruncate(fileno(f), good_end) != 0 || fseek(f, good_end, SEEK_SET) != 0) {
    oc_fail_code(err, OC_ERR_IO, "%s: cannot truncate journal: %s", o->journal_path, strerror(errno));
    goto done;
  }
  out->resumed = start;
  if (start > 0) fprintf(stderr, "resuming %s: %lld of %d exchanges already collected\n", o->journal_path, (long long)start, ds->n);
  if (!(s = oc_session_new(m, max_len, err))) goto done;
  if (prog) oc_progress_phase(prog, "extracting_token_activations", start, ds->n);
  double last_sync = oc_now();
  for (int64_t k = start; k < ds->n; k++) {
    const oc_example *ex = &ds->ex[k];
    int32_t *ids;
    int n, np;
    if (oc_probe_exchange_ids(chat, ex, o->use_chat_template, max_len, &ids, &n, &np, err)) { oc_wrap(err, "line %lld", (long long)ex->line); goto done; }
    const int nr = n - np;
    if (nr < 1) { free(ids); oc_fail(err, "line %lld: the response encodes to no tokens", (long long)ex->line); goto done; }
    const int cnt = oc_token_sample(nr, o->max_tokens_per_example, o->seed, oc_example_hash(ex), pos);
    for (int i = 0; i < cnt; i++) tpos[i] = np + pos[i];
    const oc_taps taps = {nl, li, cnt, tpos, tap}; /* [nl][cnt][Hl] */
    oc_session_reset(s);
    const int frc = oc_forward(s, ids, n, &taps, NULL, 0, err); /* one pass: prompt and response, every kept position tapped */
    free(ids);
    out->forward_passes++;
    if (frc) { oc_wrap(err, "line %lld", (long long)ex->line); goto done; }
    if (encode_record(rec, k, ex, nr, pos, cnt, tap, Hl, nl, err)) goto done;
    const size_t size = record_size(cnt, H, nl);
    if (fwrite(rec, 1, size, f) != size || fflush(f) != 0) {
      oc_fail_code(err, OC_ERR_IO, "%s: journal write failed: %s", o->journal_path, strerror(errno));
      goto done;
    }
    if (oc_now() - last_sync > 2.0) { fsync(fileno(f)); last_sync = oc_now(); }
    if (prog) oc_progress_update(prog, k + 1);
  }
  if (fsync(fileno(f)) != 0) { oc_fail_code(err, OC_ERR_IO, "%s: fsync failed: %s", o->journal_path, strerror(errno)); goto done; }
  const int64_t passes = out->forward_passes, resumed = out->resumed;
  if (load_rows(f, data_start, ds, H, nl, row_cap, max_len, o->stream_rows, out, rec, o->journal_path, err)) goto done;
  out->forward_passes = passes;
  out->resumed = resumed;
  out->model_id = strdup(o->model_id ? o->model_id : "");
  out->model_family = strdup(oc_family_name(mc->family));
  out->use_chat_template = o->use_chat_template;
  out->max_length = max_len;
  if (!out->model_id || !out->model_family) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  rc = 0;
done:
  if (f) fclose(f);
  oc_session_free(s);
  free(hdr); free(rec); free(tap); free(pos); free(tpos);
  if (rc) oc_token_activations_free(out);
  return rc;
}

/* each exchange's score: its highest token risk */
static int score_sequences(const oc_probe *p, row_reader *rd, const int64_t *idx, int n, float *s, int32_t *y, oc_error *err) {
  const oc_token_activations *a = rd->a;
  for (int i = 0; i < n; i++) {
    const float *x = reader_rows(rd, idx[i], err);
    if (!x) return -1;
    float best = 0;
    for (int64_t r = 0; r < a->offsets[idx[i] + 1] - a->offsets[idx[i]]; r++) best = fmaxf(best, oc_sigmoid(oc_probe_logit(p, x + (size_t)r * a->hidden)));
    s[i] = best;
    y[i] = a->y[idx[i]];
  }
  return 0;
}

/* layer l's columns of a row reader's rows (MEAN: one probe per layer) */
typedef struct {
  row_reader *rd;
  int l, Hl;
  float *x; /* [max_rows][Hl] */
} layer_reader;

static const float *layer_rows(void *ctx, int64_t k, oc_error *err) {
  layer_reader *r = ctx;
  const float *x = reader_rows(r->rd, k, err);
  if (!x) return NULL;
  const int64_t T = r->rd->a->offsets[k + 1] - r->rd->a->offsets[k];
  const size_t W = (size_t)r->rd->a->hidden, Hl = (size_t)r->Hl;
  for (int64_t t = 0; t < T; t++) memcpy(r->x + (size_t)t * Hl, x + (size_t)t * W + (size_t)r->l * Hl, sizeof(float) * Hl);
  return r->x;
}

/* the probe of a's rows on the training sequences tr: one over the whole row (one layer, or CONCAT
 * standardized), or MEAN's per-layer probes folded into one */
static int train_combined(row_reader *rd, int combine, const int64_t *tr, int n_train, int weighting, const oc_probe_train_opts *o, oc_probe *out,
                          double *final_loss, oc_error *err) {
  const oc_token_activations *a = rd->a;
  const int nl = a->n_layers > 0 ? a->n_layers : 1, Hl = a->hidden / nl;
  if (nl == 1 || combine == OC_COMBINE_CONCAT) {
    oc_probe_train_opts t = *o;
    if (nl > 1) { t.standardize = 1; t.init_w = NULL; } /* layers differ in scale by orders of magnitude */
    return oc_probe_train_token_rows(reader_rows, rd, a->hidden, a->offsets, a->y, tr, n_train, weighting, &t, out, final_loss, err);
  }
  memset(out, 0, sizeof *out);
  layer_reader lr = {rd, 0, Hl, malloc(sizeof(float) * (size_t)(a->max_rows > 0 ? a->max_rows : 1) * (size_t)Hl)};
  if (!lr.x || !(out->w = malloc(sizeof(float) * (size_t)a->hidden))) {
    free(lr.x);
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  out->hidden = a->hidden;
  double bias = 0, loss = 0;
  int rc = 0;
  for (lr.l = 0; lr.l < nl && !rc; lr.l++) {
    oc_probe one;
    double lk = 0;
    if ((rc = oc_probe_train_token_rows(layer_rows, &lr, Hl, a->offsets, a->y, tr, n_train, weighting, o, &one, &lk, err))) break;
    oc_probe_mean_put(out->w, lr.l, nl, &one, &bias);
    loss += lk;
    oc_probe_free(&one);
  }
  free(lr.x);
  if (rc) { oc_probe_free(out); return oc_wrap(err, "layer %d of %d", lr.l + 1, nl); }
  out->b = (float)(bias / nl);
  if (final_loss) *final_loss = loss / nl; /* the mean of the per-layer probes' final losses */
  return 0;
}

int oc_probe_fit_tokens_combined(const oc_token_activations *a, int combine, int weighting, double validation_size, uint64_t split_seed,
                                 double target_fpr, const oc_probe_train_opts *o, oc_probe_fit *out, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (a->n_layers > 1 && combine != OC_COMBINE_CONCAT && combine != OC_COMBINE_MEAN)
    return oc_fail(err, "token rows of %d layers need combine concat or mean", a->n_layers);
  int pos = 0;
  for (int i = 0; i < a->n; i++) pos += a->y[i] == 1;
  if (a->n < 4) return oc_fail(err, "need at least 4 exchanges to train a probe, got %d", a->n);
  if (pos == 0 || pos == a->n) return oc_fail(err, "a probe needs both labels; all %d exchanges have label %d", a->n, a->y[0]);
  int64_t *tr = NULL, *va = NULL;
  if (oc_stratified_split(a->y, a->n, validation_size, split_seed, &tr, &out->n_train, &va, &out->n_val, err)) return -1;
  float *s = malloc(sizeof(float) * (size_t)a->n);
  int32_t *yy = malloc(sizeof(int32_t) * (size_t)a->n);
  row_reader rd;
  int rc = -1, have_rd = 0;
  if (!s || !yy) { oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); goto done; }
  if (reader_open(&rd, a, err)) goto done;
  have_rd = 1;
  if (train_combined(&rd, combine, tr, out->n_train, weighting, o, &out->probe, &out->final_loss, err) ||
      score_sequences(&out->probe, &rd, tr, out->n_train, s, yy, err))
    goto done;
  oc_binary_metrics(s, yy, out->n_train, target_fpr, &out->train);
  if (out->n_val > 0) {
    if (score_sequences(&out->probe, &rd, va, out->n_val, s, yy, err)) goto done;
    oc_binary_metrics(s, yy, out->n_val, target_fpr, &out->val);
  } else {
    out->val = out->train;
  }
  rc = 0;
done:
  if (have_rd) reader_close(&rd);
  free(tr); free(va); free(s); free(yy);
  if (rc) oc_probe_free(&out->probe);
  return rc;
}

int oc_probe_fit_tokens(const oc_token_activations *a, int weighting, double validation_size, uint64_t split_seed, double target_fpr,
                        const oc_probe_train_opts *o, oc_probe_fit *out, oc_error *err) {
  return oc_probe_fit_tokens_combined(a, OC_COMBINE_NONE, weighting, validation_size, split_seed, target_fpr, o, out, err);
}

int oc_token_activations_get(const oc_activation_source *src, const oc_token_collect_opts *o, oc_progress *prog, oc_token_activations *out,
                             oc_collection_counts *counts, oc_error *err) {
  memset(out, 0, sizeof *out);
  if (counts) memset(counts, 0, sizeof *counts);
  if (src->activations) return oc_fail(err, "token-level training collects from the model: give a dataset, not an activation file");
  oc_dataset ds;
  oc_model *m;
  oc_chat *c;
  if (oc_collect_source_open(src, &ds, &m, &c, counts, prog, err)) return -1;
  const int rc = oc_collect_tokens(m, c, &ds, o, out, prog, err);
  oc_chat_free(c);
  oc_model_free(m);
  oc_dataset_free(&ds);
  return rc;
}
