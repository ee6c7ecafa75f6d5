/* safetensors: mmap + a header validated as hostile input. */
#include "opencon/safetensors.h"

#include "opencon/json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER (100u * 1024u * 1024u)

static const struct { const char *name; size_t size; } DT[OC_DT_COUNT] = {
  [OC_DT_F32] = {"F32", 4},  [OC_DT_F16] = {"F16", 2},   [OC_DT_BF16] = {"BF16", 2},
  [OC_DT_F64] = {"F64", 8},  [OC_DT_I64] = {"I64", 8},   [OC_DT_I32] = {"I32", 4},
  [OC_DT_I16] = {"I16", 2},  [OC_DT_I8] = {"I8", 1},     [OC_DT_U8] = {"U8", 1},
  [OC_DT_U16] = {"U16", 2},  [OC_DT_U32] = {"U32", 4},   [OC_DT_U64] = {"U64", 8},
  [OC_DT_BOOL] = {"BOOL", 1}, [OC_DT_F8_E4M3] = {"F8_E4M3", 1}, [OC_DT_F8_E5M2] = {"F8_E5M2", 1},
};

const char *oc_dtype_name(oc_dtype dt) { return (unsigned)dt < OC_DT_COUNT ? DT[dt].name : dt == OC_DT_Q8 ? "Q8" : "?"; }
/* Q8: the size of one int8 value (its scales are a separate array) */
size_t oc_dtype_size(oc_dtype dt) { return (unsigned)dt < OC_DT_COUNT ? DT[dt].size : dt == OC_DT_Q8 ? 1 : 0; }

static int dtype_from_name(const char *s, oc_dtype *dt) {
  for (int i = 0; i < OC_DT_COUNT; i++)
    if (strcmp(s, DT[i].name) == 0) { *dt = (oc_dtype)i; return 0; }
  return -1;
}

float oc_bf16_to_f32(uint16_t v) {
  uint32_t u = (uint32_t)v << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t oc_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

uint16_t oc_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint32_t s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(s | 0x7e00u); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00u); /* from halfway above 65504: infinity */
  if (a < 0x38800000u) { /* below 2^-14: a subnormal, round(|f| * 2^24) to nearest even */
    float af;
    memcpy(&af, &a, 4);
    return (uint16_t)(s | (uint32_t)nearbyintf(af * 16777216.0f));
  }
  const uint32_t r = a + 0x0fffu + ((a >> 13) & 1u) - (112u << 23); /* round to nearest even, rebias 127 -> 15 */
  return (uint16_t)(s | (r >> 13));
}

float oc_f16_to_f32(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu, u;
  if (e == 0) {
    if (m == 0) u = s;
    else { /* subnormal */
      e = 127 - 15 + 1;
      while (!(m & 0x400u)) { m <<= 1; e--; }
      m &= 0x3ffu;
      u = s | (e << 23) | (m << 13);
    }
  } else if (e == 31) u = s | 0x7f800000u | (m << 13);
  else u = s | ((e + 127 - 15) << 23) | (m << 13);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

int oc_to_f32(oc_dtype dt, const void *src, float *dst, size_t n) {
  const unsigned char *p = src;
  switch (dt) {
  case OC_DT_F32: memcpy(dst, src, n * 4); return 0;
  case OC_DT_BF16: for (size_t i = 0; i < n; i++) { uint16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = oc_bf16_to_f32(v); } return 0;
  case OC_DT_F16: for (size_t i = 0; i < n; i++) { uint16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = oc_f16_to_f32(v); } return 0;
  default: return -1;
  }
}

/* ------------------------------------------------------------------ reader */
struct oc_st_file {
  char *path;
  void *map;
  size_t map_len;
  oc_tensor *t;      /* sorted by name */
  int n;
  char **meta;       /* key, value pairs */
  int n_meta;
  void **copies;     /* aligned copies of unaligned tensors */
  int n_copies;
};

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp(((const oc_tensor *)a)->name, ((const oc_tensor *)b)->name);
}

typedef struct { uint64_t begin, end; int idx; } span;
static int cmp_span(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static int json_uint(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return -1;
  *out = (uint64_t)d;
  return 0;
}

void oc_st_close(oc_st_file *f) {
  if (!f) return;
  if (f->t) for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
  free(f->t);
  for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
  free(f->meta);
  for (int i = 0; i < f->n_copies; i++) free(f->copies[i]);
  free(f->copies);
  if (f->map) munmap(f->map, f->map_len);
  free(f->path);
  free(f);
}

/* __metadata__: string values only, kept as key/value pairs. */
static int parse_metadata(oc_st_file *f, const cJSON *e, const char *path, oc_error *err) {
  if (f->meta) return oc_fail(err, "%s: __metadata__ appears twice", path); /* (the strict parser rejects it first) */
  if (!cJSON_IsObject(e)) return oc_fail(err, "%s: __metadata__ is not an object", path);
  int nm = cJSON_GetArraySize(e);
  f->meta = calloc((size_t)nm * 2 + 1, sizeof *f->meta);
  if (!f->meta) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (const cJSON *m = e->child; m; m = m->next) {
    if (!cJSON_IsString(m)) return oc_fail(err, "%s: __metadata__ value \"%.80s\" is not a string", path, m->string);
    char *k = strdup(m->string), *v = strdup(m->valuestring);
    if (!k || !v) { free(k); free(v); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
    f->meta[2 * f->n_meta] = k;
    f->meta[2 * f->n_meta + 1] = v;
    f->n_meta++;
  }
  return 0;
}

/* One tensor entry: dtype, shape and data_offsets checked against each other and the data
 * section; t->data points into the mapping (aligned copies are made after the overlap check). */
static int parse_tensor(const cJSON *e, const char *name, const char *path, const unsigned char *data, uint64_t data_len, oc_tensor *t,
                        oc_error *err) {
  if (!cJSON_IsObject(e)) return oc_fail(err, "%s: tensor \"%s\": entry is not an object", path, name);
  const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
  const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
  const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
  if (!cJSON_IsString(jd) || dtype_from_name(jd->valuestring, &t->dtype) != 0)
    return oc_fail(err, "%s: tensor \"%s\": unknown or missing dtype%s%.40s", path, name, cJSON_IsString(jd) ? " " : "",
                   cJSON_IsString(jd) ? jd->valuestring : "");
  if (!cJSON_IsArray(js)) return oc_fail(err, "%s: tensor \"%s\": shape is not an array", path, name);
  int nd = cJSON_GetArraySize(js);
  if (nd > OC_MAX_DIMS) return oc_fail(err, "%s: tensor \"%s\": %d dimensions (at most %d)", path, name, nd, OC_MAX_DIMS);
  t->ndim = nd;
  uint64_t numel = 1;
  int k = 0;
  for (const cJSON *d = js->child; d; d = d->next, k++) {
    uint64_t v;
    if (json_uint(d, &v) != 0) return oc_fail(err, "%s: tensor \"%s\": shape[%d] is not a non-negative integer", path, name, k);
    if (v && numel > UINT64_MAX / v) return oc_fail(err, "%s: tensor \"%s\": shape overflows", path, name);
    numel *= v;
    t->shape[k] = (int64_t)v;
  }
  uint64_t esz = DT[t->dtype].size;
  if (numel > UINT64_MAX / esz || numel > INT64_MAX) return oc_fail(err, "%s: tensor \"%s\": shape overflows", path, name);
  if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2) return oc_fail(err, "%s: tensor \"%s\": data_offsets must be [begin, end]", path, name);
  uint64_t ob, oe;
  if (json_uint(jo->child, &ob) || json_uint(jo->child->next, &oe) || ob > oe)
    return oc_fail(err, "%s: tensor \"%s\": data_offsets are not integers with begin <= end", path, name);
  if (oe > data_len)
    return oc_fail(err, "%s: tensor \"%s\": data_offsets [%llu, %llu] run past the end of the data (%llu bytes); file truncated?", path, name,
                   (unsigned long long)ob, (unsigned long long)oe, (unsigned long long)data_len);
  if (oe - ob != numel * esz)
    return oc_fail(err, "%s: tensor \"%s\": %s shape needs %llu bytes but data_offsets span %llu", path, name, DT[t->dtype].name,
                   (unsigned long long)(numel * esz), (unsigned long long)(oe - ob));
  t->numel = (int64_t)numel;
  t->nbytes = (size_t)(oe - ob);
  t->data = data + ob;
  return 0;
}

/* No two non-empty tensors share a byte of the data section. Empty tensors are left out: one
 * sorted between two overlapping tensors would otherwise hide their overlap. */
static int check_overlaps(const oc_st_file *f, const unsigned char *data, const char *path, oc_error *err) {
  span *sp = malloc(sizeof *sp * (size_t)(f->n ? f->n : 1));
  if (!sp) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  int n = 0;
  for (int i = 0; i < f->n; i++) {
    const oc_tensor *t = &f->t[i];
    uint64_t b = (uint64_t)((const unsigned char *)t->data - data);
    if (t->nbytes) sp[n++] = (span){b, b + t->nbytes, i};
  }
  qsort(sp, (size_t)n, sizeof *sp, cmp_span);
  int rc = 0, last = 0; /* last: the span reaching furthest so far */
  for (int i = 1; i < n && rc == 0; i++) {
    if (sp[i].begin < sp[last].end)
      rc = oc_fail(err, "%s: tensors \"%s\" and \"%s\" overlap in the data section", path, f->t[sp[last].idx].name, f->t[sp[i].idx].name);
    if (sp[i].end > sp[last].end) last = i;
  }
  free(sp);
  return rc;
}

/* Unaligned tensors (valid, another writer's layout) get aligned private copies; after the
 * overlap check, so the copies add up to at most the data section. */
static int align_tensors(oc_st_file *f, oc_error *err) {
  for (int i = 0; i < f->n; i++) {
    oc_tensor *t = &f->t[i];
    if (((uintptr_t)t->data) % DT[t->dtype].size == 0) continue;
    if (!f->copies && !(f->copies = calloc((size_t)f->n, sizeof *f->copies))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    void *copy = malloc(t->nbytes ? t->nbytes : 1);
    if (!copy) return oc_fail_code(err, OC_ERR_NOMEM, "%s: out of memory copying tensor \"%s\" (%zu bytes)", f->path, t->name, t->nbytes);
    memcpy(copy, t->data, t->nbytes);
    f->copies[f->n_copies++] = copy;
    t->data = copy;
  }
  return 0;
}

int oc_st_parse(const void *buf, size_t len, const char *path, oc_st_file **out, oc_error *err) {
  *out = NULL;
  const unsigned char *b = buf;
  if (len < 8) return oc_fail(err, "%s: truncated safetensors file (%zu bytes, no header length)", path, len);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
  if (hlen > MAX_HEADER) return oc_fail(err, "%s: header length %llu exceeds the %u-byte limit", path, (unsigned long long)hlen, MAX_HEADER);
  if (hlen > len - 8) return oc_fail(err, "%s: truncated: header claims %llu bytes but the file has %zu after the length", path, (unsigned long long)hlen, len - 8);
  if (hlen < 2 || b[8] != '{') return oc_fail(err, "%s: header is not a JSON object", path);
  /* padding after the object: spaces (the format's), or NULs (some writers') */
  size_t jlen = (size_t)hlen;
  while (jlen > 0 && (b[8 + jlen - 1] == ' ' || b[8 + jlen - 1] == 0)) jlen--;
  cJSON *root;
  if (oc_json_parse((const char *)b + 8, jlen, path, 1, &root, err)) return -1; /* "path:1: ..." (the header is line 1) */
  if (!cJSON_IsObject(root)) { cJSON_Delete(root); return oc_fail(err, "%s: header is not a JSON object", path); }
  const uint64_t data_len = len - 8 - hlen;
  const unsigned char *data = b + 8 + hlen;

  oc_st_file *f = calloc(1, sizeof *f);
  if (!f) { cJSON_Delete(root); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  f->path = strdup(path);
  int cap = cJSON_GetArraySize(root);
  f->t = calloc((size_t)(cap > 0 ? cap : 1), sizeof *f->t);
  if (!f->path || !f->t) { cJSON_Delete(root); oc_st_close(f); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  int rc = 0;
  for (const cJSON *e = root->child; e && rc == 0; e = e->next) {
    if (strcmp(e->string, "__metadata__") == 0) { rc = parse_metadata(f, e, path, err); continue; }
    oc_tensor *t = &f->t[f->n];
    t->file = f->path;
    if ((rc = parse_tensor(e, e->string, path, data, data_len, t, err)) != 0) break;
    if (!(t->name = strdup(e->string))) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); break; }
    f->n++;
  }
  cJSON_Delete(root);
  if (rc == 0) rc = check_overlaps(f, data, path, err);
  if (rc == 0) {
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_tensor_name);
    for (int i = 1; i < f->n; i++)
      if (strcmp(f->t[i].name, f->t[i - 1].name) == 0) { rc = oc_fail(err, "%s: tensor \"%s\" appears twice", path, f->t[i].name); break; }
  }
  if (rc == 0) rc = align_tensors(f, err);
  if (rc) { oc_st_close(f); return -1; }
  *out = f;
  return 0;
}

int oc_st_open(const char *path, oc_st_file **out, oc_error *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO opens at once, then is refused */
  if (fd < 0) return oc_fail_code(err, oc_errno_code(errno), "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return oc_fail(err, "%s: not a regular file", path); }
  size_t len = (size_t)st.st_size;
  if (len < 8) { close(fd); return oc_fail(err, "%s: truncated safetensors file (%zu bytes, no header length)", path, len); }
  void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return oc_fail(err, "%s: mmap failed: %s", path, strerror(errno));
  oc_st_file *f;
  if (oc_st_parse(map, len, path, &f, err) != 0) { munmap(map, len); return -1; }
  f->map = map;
  f->map_len = len;
  *out = f;
  return 0;
}

int oc_st_count(const oc_st_file *f) { return f->n; }
const oc_tensor *oc_st_at(const oc_st_file *f, int i) { return (i >= 0 && i < f->n) ? &f->t[i] : NULL; }

const oc_tensor *oc_st_get(const oc_st_file *f, const char *name) {
  oc_tensor key = {.name = name};
  return bsearch(&key, f->t, (size_t)f->n, sizeof *f->t, cmp_tensor_name);
}

const char *oc_st_metadata(const oc_st_file *f, const char *key) {
  for (int i = 0; i < f->n_meta; i++)
    if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
  return NULL;
}

/* ------------------------------------------------------------------ model dir */
struct oc_weights {
  oc_st_file **files;
  int n_files;
  const oc_tensor **all; /* sorted by name */
  int n;
};

static int cmp_tensor_ptr(const void *a, const void *b) {
  return strcmp((*(const oc_tensor *const *)a)->name, (*(const oc_tensor *const *)b)->name);
}

void oc_weights_close(oc_weights *w) {
  if (!w) return;
  for (int i = 0; i < w->n_files; i++) oc_st_close(w->files[i]);
  free(w->files);
  free(w->all);
  free(w);
}

static int add_file(oc_weights *w, const char *path, oc_error *err) {
  oc_st_file *f;
  if (oc_st_open(path, &f, err) != 0) return -1;
  oc_st_file **nf = realloc(w->files, sizeof *nf * (size_t)(w->n_files + 1));
  if (!nf) { oc_st_close(f); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  w->files = nf;
  w->files[w->n_files++] = f;
  return 0;
}

static int valid_shard_name(const char *s) {
  if (!*s || strchr(s, '/') || strcmp(s, "..") == 0 || strcmp(s, ".") == 0) return 0;
  return 1;
}

int oc_weights_open(const char *dir, oc_weights **out, oc_error *err) {
  *out = NULL;
  oc_weights *w = calloc(1, sizeof *w);
  if (!w) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  char *single = oc_path_join(dir, "model.safetensors");
  char *index = oc_path_join(dir, "model.safetensors.index.json");
  int rc = 0;
  cJSON *root = NULL;
  if (oc_file_exists(single)) {
    rc = add_file(w, single, err);
  } else if (oc_file_exists(index)) {
    if ((rc = oc_json_parse_file(index, &root, err)) == 0) {
      const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
      if (!cJSON_IsObject(wm)) rc = oc_fail(err, "%s: malformed index: no \"weight_map\" object", index);
      for (const cJSON *e = wm ? wm->child : NULL; e && rc == 0; e = e->next) {
        if (!cJSON_IsString(e) || !valid_shard_name(e->valuestring)) {
          rc = oc_fail(err, "%s: weight_map[\"%.80s\"] is not a file name in the model directory", index, e->string);
          break;
        }
        int seen = 0;
        for (int i = 0; i < w->n_files && !seen; i++) {
          const char *p = strrchr(w->files[i]->path, '/');
          seen = strcmp(p ? p + 1 : w->files[i]->path, e->valuestring) == 0;
        }
        if (seen) continue;
        char *sp = oc_path_join(dir, e->valuestring);
        rc = add_file(w, sp, err);
        free(sp);
      }
      if (rc == 0 && w->n_files == 0) rc = oc_fail(err, "%s: weight_map lists no files", index);
    }
  } else {
    rc = oc_fail(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
  }
  if (rc == 0) {
    int64_t total = 0;
    for (int i = 0; i < w->n_files; i++) total += w->files[i]->n;
    if (total > INT32_MAX) rc = oc_fail(err, "%s: %lld tensors in %d files is more than a model can have", dir, (long long)total, w->n_files);
    else if (!(w->all = malloc(sizeof *w->all * (size_t)(total ? total : 1)))) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    for (int i = 0; rc == 0 && i < w->n_files; i++)
      for (int j = 0; j < w->files[i]->n; j++) w->all[w->n++] = &w->files[i]->t[j];
    if (rc == 0) {
      qsort(w->all, (size_t)w->n, sizeof *w->all, cmp_tensor_ptr);
      for (int i = 1; i < w->n; i++)
        if (strcmp(w->all[i]->name, w->all[i - 1]->name) == 0) {
          rc = oc_fail(err, "tensor \"%s\" appears in both %s and %s", w->all[i]->name, w->all[i - 1]->file, w->all[i]->file);
          break;
        }
    }
    /* every name the index promises must be in the shard it names */
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    for (const cJSON *e = wm ? wm->child : NULL; e && rc == 0; e = e->next) {
      const oc_tensor *t = oc_weights_get(w, e->string);
      const char *base = t ? strrchr(t->file, '/') : NULL;
      if (!t) rc = oc_fail(err, "%s: tensor \"%s\" is listed in the index but missing from %s", index, e->string, e->valuestring);
      else if (strcmp(base ? base + 1 : t->file, e->valuestring) != 0)
        rc = oc_fail(err, "%s: tensor \"%s\" is listed in %s but stored in %s", index, e->string, e->valuestring, t->file);
    }
  }
  cJSON_Delete(root);
  free(single);
  free(index);
  if (rc) { oc_weights_close(w); return -1; }
  *out = w;
  return 0;
}

const oc_tensor *oc_weights_get(const oc_weights *w, const char *name) {
  oc_tensor key = {.name = name};
  const oc_tensor *kp = &key;
  const oc_tensor **r = bsearch(&kp, w->all, (size_t)w->n, sizeof *w->all, cmp_tensor_ptr);
  return r ? *r : NULL;
}
int oc_weights_count(const oc_weights *w) { return w->n; }
const oc_tensor *oc_weights_at(const oc_weights *w, int i) { return (i >= 0 && i < w->n) ? w->all[i] : NULL; }
size_t oc_weights_bytes(const oc_weights *w) {
  size_t s = 0;
  for (int i = 0; i < w->n; i++) s += w->all[i]->nbytes;
  return s;
}

/* ------------------------------------------------------------------ writer */
typedef struct {
  char *name;
  oc_dtype dt;
  int ndim;
  int64_t shape[OC_MAX_DIMS];
  size_t nbytes;
  const void *data;
  oc_st_fill_fn fill;
  void *ctx;
  int order;
} wentry;

struct oc_st_writer {
  wentry *e;
  int n, cap;
  cJSON *meta;
};

oc_st_writer *oc_st_writer_new(void) { return calloc(1, sizeof(oc_st_writer)); }

void oc_st_writer_free(oc_st_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) free(w->e[i].name);
  free(w->e);
  cJSON_Delete(w->meta);
  free(w);
}

static int writer_push(oc_st_writer *w, const char *name, oc_dtype dt, int ndim, const int64_t *shape,
                       const void *data, oc_st_fill_fn fill, void *ctx, oc_error *err) {
  if (ndim < 0 || ndim > OC_MAX_DIMS) return oc_fail(err, "tensor \"%s\": %d dimensions", name, ndim);
  for (int i = 0; i < w->n; i++)
    if (strcmp(w->e[i].name, name) == 0) return oc_fail(err, "tensor \"%s\" added twice", name);
  if (w->n == w->cap) {
    int nc = w->cap ? 2 * w->cap : 16;
    wentry *ne = realloc(w->e, sizeof *ne * (size_t)nc);
    if (!ne) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    w->e = ne;
    w->cap = nc;
  }
  wentry *e = &w->e[w->n];
  memset(e, 0, sizeof *e);
  e->name = strdup(name);
  if (!e->name) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  e->dt = dt;
  e->ndim = ndim;
  size_t numel = 1, esz = oc_dtype_size(dt);
  if (!esz) { free(e->name); return oc_fail(err, "tensor \"%s\": unknown dtype %d", name, (int)dt); }
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) { free(e->name); return oc_fail(err, "tensor \"%s\": negative dimension", name); }
    if (shape[i] && numel > (SIZE_MAX / esz) / (size_t)shape[i]) { free(e->name); return oc_fail(err, "tensor \"%s\": shape overflows", name); }
    e->shape[i] = shape[i];
    numel *= (size_t)shape[i];
  }
  e->nbytes = numel * esz;
  e->data = data;
  e->fill = fill;
  e->ctx = ctx;
  w->n++;
  return 0;
}

int oc_st_writer_add(oc_st_writer *w, const char *name, oc_dtype dt, int ndim, const int64_t *shape,
                     const void *data, oc_error *err) {
  return writer_push(w, name, dt, ndim, shape, data, NULL, NULL, err);
}

int oc_st_writer_add_lazy(oc_st_writer *w, const char *name, oc_dtype dt, int ndim, const int64_t *shape,
                          oc_st_fill_fn fill, void *ctx, oc_error *err) {
  return writer_push(w, name, dt, ndim, shape, NULL, fill, ctx, err);
}

int oc_st_writer_set_metadata(oc_st_writer *w, const char *key, const char *value, oc_error *err) {
  if (!w->meta && !(w->meta = cJSON_CreateObject())) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
  if (!cJSON_AddStringToObject(w->meta, key, value)) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  return 0;
}

static int cmp_entry_align(const void *a, const void *b) {
  const wentry *x = a, *y = b;
  size_t ex = oc_dtype_size(x->dt), ey = oc_dtype_size(y->dt);
  if (ex != ey) return ex > ey ? -1 : 1;
  return x->order - y->order;
}

int oc_st_writer_write(oc_st_writer *w, const char *path, oc_error *err) {
  /* Largest elements first: with the header padded to 8 bytes every tensor is aligned. */
  for (int i = 0; i < w->n; i++) w->e[i].order = i;
  qsort(w->e, (size_t)w->n, sizeof *w->e, cmp_entry_align);
  cJSON *root = cJSON_CreateObject();
  if (!root) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  if (w->meta) cJSON_AddItemToObject(root, "__metadata__", cJSON_Duplicate(w->meta, 1));
  uint64_t off = 0;
  for (int i = 0; i < w->n; i++) {
    wentry *e = &w->e[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dtype", oc_dtype_name(e->dt));
    cJSON *sh = cJSON_AddArrayToObject(o, "shape");
    for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
    cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
    cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + e->nbytes)));
    cJSON_AddItemToObject(root, e->name, o);
    off += e->nbytes;
  }
  char *hdr = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!hdr) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
  unsigned char lenbuf[8];
  for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  oc_atomic_file af;
  if (oc_atomic_open(&af, path, err)) { free(hdr); return -1; }
  int rc = oc_atomic_write(&af, lenbuf, 8, err);
  if (!rc) rc = oc_atomic_write(&af, hdr, hl, err);
  for (size_t i = hl; !rc && i < padded; i++) rc = oc_atomic_write(&af, " ", 1, err);
  free(hdr);
  const size_t chunk = 64u << 20;
  void *buf = NULL;
  for (int i = 0; !rc && i < w->n; i++) {
    wentry *e = &w->e[i];
    if (!e->fill) { rc = oc_atomic_write(&af, e->data, e->nbytes, err); continue; }
    if (!buf && !(buf = malloc(chunk))) { rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); break; }
    for (size_t o = 0; !rc && o < e->nbytes; o += chunk) {
      size_t nb = e->nbytes - o < chunk ? e->nbytes - o : chunk;
      rc = e->fill(e->ctx, e->name, buf, o, nb, err);
      if (!rc) rc = oc_atomic_write(&af, buf, nb, err);
    }
  }
  free(buf);
  if (rc) { oc_atomic_abort(&af); return -1; }
  return oc_atomic_commit(&af, err);
}
