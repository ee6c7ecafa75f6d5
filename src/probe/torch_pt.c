/* Reading a state dict written by torch.save (the zip format of PyTorch >= 1.6): a ZIP archive
 * of stored (uncompressed) records <name>/data.pkl, <name>/data/<key>, ... The pickle is run by a
 * small VM that never imports or calls anything: it knows the few globals a state dict uses
 * (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage) and treats every
 * other object as opaque. The file is hostile input: every offset and size is checked, sizes are
 * multiplied with overflow checks, zip entries may not overlap (so CRC checks read each byte of
 * the file at most once), and the pickle VM's objects, memo and names are bounded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "opencon/probe.h"
#include "opencon/safetensors.h"

/* ---- ZIP ---- */
typedef struct {
  char *name;
  uint64_t off, size; /* data offset and size in the file */
  uint64_t start;     /* the local header's offset: the entry occupies [start, off + size) */
  uint32_t crc;
} zentry;

typedef struct {
  const unsigned char *buf;
  size_t len;
  zentry *e;
  int n;
} zarchive;

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint32_t crc32_of(const unsigned char *p, size_t n) {
  uint32_t table[256]; /* built per call (2k steps): no shared mutable state */
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

static void zip_free(zarchive *z) {
  for (int i = 0; i < z->n; i++) free(z->e[i].name);
  free(z->e);
}

static int cmp_entry_start(const void *a, const void *b) {
  const zentry *x = *(const zentry *const *)a, *y = *(const zentry *const *)b;
  return x->start < y->start ? -1 : x->start > y->start;
}
static int cmp_entry_name(const void *a, const void *b) {
  return strcmp((*(const zentry *const *)a)->name, (*(const zentry *const *)b)->name);
}

/* Entries may neither share bytes (torch.save never writes that; 60k entries aliasing one 4 MB
 * record made the CRC checks read 240 GB) nor names (readers disagree on which one counts). */
static int zip_check_layout(const zarchive *z, const char *path, oc_error *err) {
  const zentry **v = malloc(sizeof *v * (size_t)(z->n ? z->n : 1));
  if (!v) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (int i = 0; i < z->n; i++) v[i] = &z->e[i];
  int rc = 0;
  qsort(v, (size_t)z->n, sizeof *v, cmp_entry_start);
  for (int i = 1; i < z->n && !rc; i++)
    if (v[i]->start < v[i - 1]->off + v[i - 1]->size)
      rc = oc_fail(err, "%s: zip entries \"%.100s\" and \"%.100s\" overlap (not a torch.save archive)", path, v[i - 1]->name, v[i]->name);
  qsort(v, (size_t)z->n, sizeof *v, cmp_entry_name);
  for (int i = 1; i < z->n && !rc; i++)
    if (strcmp(v[i]->name, v[i - 1]->name) == 0) rc = oc_fail(err, "%s: zip entry \"%.100s\" appears twice", path, v[i]->name);
  free(v);
  return rc;
}

/* An entry's bytes, after its CRC-32 check (each entry is read, and so checked, at most a few times). */
static int zip_read(const zarchive *z, const zentry *e, const char *path, const unsigned char **data, oc_error *err) {
  if (crc32_of(z->buf + e->off, (size_t)e->size) != e->crc)
    return oc_fail(err, "%s: zip entry \"%.100s\" fails its CRC-32 check (corrupt file)", path, e->name);
  *data = z->buf + e->off;
  return 0;
}

static int zip_open(const unsigned char *buf, size_t len, const char *path, zarchive *z, oc_error *err) {
  memset(z, 0, sizeof *z);
  z->buf = buf;
  z->len = len;
  if (len < 22) return oc_fail(err, "%s: not a valid zip archive (%zu bytes, too short)", path, len);
  size_t eocd = (size_t)-1;
  size_t lo = len > 22 + 65535 ? len - 22 - 65535 : 0;
  for (size_t i = len - 22 + 1; i-- > lo;)
    if (rd32(buf + i) == 0x06054b50u) { eocd = i; break; }
  if (eocd == (size_t)-1) return oc_fail(err, "%s: not a valid zip archive: its end-of-central-directory record is missing (truncated or damaged file?)", path);
  uint64_t count = rd16(buf + eocd + 10), cd_size = rd32(buf + eocd + 12), cd_off = rd32(buf + eocd + 16);
  if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) { /* zip64 */
    if (eocd < 20 || rd32(buf + eocd - 20) != 0x07064b50u) return oc_fail(err, "%s: zip64 locator missing", path);
    uint64_t z64 = rd64(buf + eocd - 20 + 8);
    if (z64 > len || len - z64 < 56 || rd32(buf + z64) != 0x06064b50u) return oc_fail(err, "%s: bad zip64 end record", path);
    count = rd64(buf + z64 + 32);
    cd_size = rd64(buf + z64 + 40);
    cd_off = rd64(buf + z64 + 48);
  }
  if (cd_off > len || cd_size > len - cd_off) return oc_fail(err, "%s: zip central directory outside the file", path);
  if (count > cd_size / 46) return oc_fail(err, "%s: zip entry count %llu does not fit the directory", path, (unsigned long long)count);
  z->e = calloc((size_t)(count ? count : 1), sizeof *z->e);
  if (!z->e) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  size_t p = (size_t)cd_off, end = (size_t)(cd_off + cd_size);
  for (uint64_t i = 0; i < count; i++) {
    if (end - p < 46 || rd32(buf + p) != 0x02014b50u) { zip_free(z); return oc_fail(err, "%s: bad zip directory entry %llu", path, (unsigned long long)i); }
    uint32_t method = rd16(buf + p + 10), crc = rd32(buf + p + 16);
    uint64_t csize = rd32(buf + p + 20), usize = rd32(buf + p + 24), loff = rd32(buf + p + 42);
    uint32_t nlen = rd16(buf + p + 28), xlen = rd16(buf + p + 30), clen = rd16(buf + p + 32);
    if (end - p - 46 < (size_t)nlen + xlen + clen) { zip_free(z); return oc_fail(err, "%s: zip directory entry %llu overruns", path, (unsigned long long)i); }
    const unsigned char *x = buf + p + 46 + nlen, *xe = x + xlen;
    while (xe - x >= 4) { /* zip64 extra: the 0xffffffff fields, in order */
      uint32_t id = rd16(x), sz = rd16(x + 2);
      if ((size_t)(xe - x - 4) < sz) break;
      if (id == 1) {
        const unsigned char *q = x + 4, *qe = q + sz;
        if (usize == 0xffffffffu && qe - q >= 8) { usize = rd64(q); q += 8; }
        if (csize == 0xffffffffu && qe - q >= 8) { csize = rd64(q); q += 8; }
        if (loff == 0xffffffffu && qe - q >= 8) { loff = rd64(q); }
      }
      x += 4 + sz;
    }
    if (memchr(buf + p + 46, 0, nlen)) { zip_free(z); return oc_fail(err, "%s: zip directory entry %llu has a NUL in its name", path, (unsigned long long)i); }
    zentry *e = &z->e[z->n++];
    e->name = strndup((const char *)buf + p + 46, nlen);
    if (!e->name) { zip_free(z); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
    if (method != 0 || csize != usize) {
      int rc = oc_fail(err, "%s: zip entry \"%s\" is compressed (method %u); torch.save writes stored entries", path, e->name, method);
      zip_free(z);
      return rc;
    }
    if (loff > len || len - loff < 30 || rd32(buf + loff) != 0x04034b50u) {
      int rc = oc_fail(err, "%s: zip entry \"%s\": bad local header", path, e->name);
      zip_free(z);
      return rc;
    }
    uint64_t data = loff + 30 + rd16(buf + loff + 26) + rd16(buf + loff + 28);
    if (data > len || csize > len - data) {
      int rc = oc_fail(err, "%s: zip entry \"%s\" extends past the end of the file", path, e->name);
      zip_free(z);
      return rc;
    }
    e->start = loff;
    e->off = data;
    e->size = csize;
    e->crc = crc;
    p += 46 + nlen + xlen + clen;
  }
  if (zip_check_layout(z, path, err)) { zip_free(z); return -1; }
  return 0;
}

static const zentry *zip_find(const zarchive *z, const char *name) {
  for (int i = 0; i < z->n; i++) if (strcmp(z->e[i].name, name) == 0) return &z->e[i];
  return NULL;
}

/* ---- pickle ---- */
typedef enum { PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_TUPLE, PV_LIST, PV_DICT, PV_GLOBAL, PV_STORAGE, PV_TENSOR, PV_OBJ, PV_MARK } pv_kind;
typedef struct pv {
  pv_kind k;
  int64_t i;
  double f;
  char *s;           /* str; global "module.name"; storage key */
  struct pv **items; /* tuple/list; dict: key, value pairs */
  int n, cap;
  oc_dtype dt;       /* storage */
  struct pv *storage; /* tensor */
  int64_t offset, shape[OC_MAX_DIMS], stride[OC_MAX_DIMS];
  int ndim;
} pv;

/* Bounds of the VM: a probe's pickle has a few dozen objects, a large model's state dict some
 * ten thousand; 1 byte of pickle must not cost more than a few hundred bytes of memory. */
#define MAX_OBJECTS (1 << 18) /* ~55 MB of objects */
#define MAX_STACK (1 << 18)
#define MAX_GLOBAL_NAME 256   /* "module.name" of a GLOBAL */

typedef struct {
  pv **all; int n_all, cap_all; /* every allocation, freed together */
  pv **st; int sp, cap_st;
  pv **memo; int64_t n_memo, n_memo_set;
  size_t len;                   /* of the pickle: memo indices are below it */
  const char *path;
  oc_error *err;
} vm;

/* A new object; NULL with m->err filled (out of memory, or more objects than MAX_OBJECTS). */
static pv *mk(vm *m, pv_kind k) {
  if (m->n_all >= MAX_OBJECTS) {
    oc_fail(m->err, "%s: data.pkl builds more than %d objects (not a state dict of a probe)", m->path, MAX_OBJECTS);
    return NULL;
  }
  if (m->n_all == m->cap_all) {
    int nc = m->cap_all ? 2 * m->cap_all : 64;
    pv **na = realloc(m->all, sizeof *na * (size_t)nc);
    if (!na) { oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory"); return NULL; }
    m->all = na;
    m->cap_all = nc;
  }
  pv *v = calloc(1, sizeof *v);
  if (!v) { oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory"); return NULL; }
  v->k = k;
  m->all[m->n_all++] = v;
  return v;
}

/* v (from mk: NULL means its error is already set) onto the stack */
static int push(vm *m, pv *v) {
  if (!v) return -1;
  if (m->sp == m->cap_st) {
    int nc = m->cap_st ? 2 * m->cap_st : 64;
    if (nc > MAX_STACK) return oc_fail(m->err, "%s: pickle stack deeper than %d", m->path, MAX_STACK);
    pv **ns = realloc(m->st, sizeof *ns * (size_t)nc);
    if (!ns) return oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory");
    m->st = ns;
    m->cap_st = nc;
  }
  m->st[m->sp++] = v;
  return 0;
}

static pv *pop(vm *m) { return m->sp > 0 ? m->st[--m->sp] : NULL; }

static int append(vm *m, pv *c, pv *v) {
  if (c->n == c->cap) {
    int nc = c->cap ? 2 * c->cap : 8;
    pv **ni = realloc(c->items, sizeof *ni * (size_t)nc);
    if (!ni) return oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory");
    c->items = ni;
    c->cap = nc;
  }
  c->items[c->n++] = v;
  return 0;
}

/* index of the topmost MARK, -1 if none */
static int find_mark(vm *m) {
  for (int i = m->sp - 1; i >= 0; i--) if (m->st[i]->k == PV_MARK) return i;
  return -1;
}

static oc_dtype storage_dtype(const char *global, int *ok) {
  static const struct { const char *name; oc_dtype dt; } map[] = {
      {"torch.FloatStorage", OC_DT_F32}, {"torch.HalfStorage", OC_DT_F16}, {"torch.BFloat16Storage", OC_DT_BF16},
      {"torch.DoubleStorage", OC_DT_F64}, {"torch.LongStorage", OC_DT_I64}, {"torch.IntStorage", OC_DT_I32},
      {"torch.ByteStorage", OC_DT_U8}, {"torch.BoolStorage", OC_DT_BOOL}};
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (strcmp(global, map[i].name) == 0) { *ok = 1; return map[i].dt; }
  *ok = 0;
  return OC_DT_F32;
}

static int int_tuple(const pv *t, int64_t *out, int *n) {
  if (t->k != PV_TUPLE || t->n > OC_MAX_DIMS) return -1;
  for (int i = 0; i < t->n; i++) { if (t->items[i]->k != PV_INT) return -1; out[i] = t->items[i]->i; }
  *n = t->n;
  return 0;
}

static pv *reduce(vm *m, pv *callable, pv *args) {
  if (callable->k != PV_GLOBAL || args->k != PV_TUPLE) return mk(m, PV_OBJ);
  const char *g = callable->s;
  if (strcmp(g, "collections.OrderedDict") == 0) return mk(m, PV_DICT);
  if ((strcmp(g, "torch._utils._rebuild_tensor_v2") == 0 || strcmp(g, "torch._utils._rebuild_tensor") == 0) && args->n >= 4) {
    pv *t = mk(m, PV_TENSOR);
    if (!t) return NULL;
    int ns = 0;
    t->storage = args->items[0];
    if (t->storage->k != PV_STORAGE || args->items[1]->k != PV_INT || int_tuple(args->items[2], t->shape, &t->ndim) ||
        int_tuple(args->items[3], t->stride, &ns) || ns != t->ndim)
      t->k = PV_OBJ; /* malformed: opaque, reported when used */
    t->offset = args->items[1]->i;
    return t;
  }
  if (strcmp(g, "torch._utils._rebuild_parameter") == 0 && args->n >= 1) return args->items[0];
  return mk(m, PV_OBJ);
}

static void vm_free(vm *m) {
  for (int i = 0; i < m->n_all; i++) { free(m->all[i]->s); free(m->all[i]->items); free(m->all[i]); }
  free(m->all); free(m->st); free(m->memo);
}

static int memo_put(vm *m, int64_t idx, pv *v) {
  /* the pickler numbers memo entries 0, 1, 2, ...: each costs a byte or more of the pickle */
  if (idx < 0 || (uint64_t)idx >= m->len) return oc_fail(m->err, "%s: pickle memo index %lld out of range", m->path, (long long)idx);
  if (idx >= m->n_memo) {
    int64_t nn = m->n_memo * 2 > idx + 64 ? m->n_memo * 2 : idx + 64;
    pv **nm = realloc(m->memo, sizeof *nm * (size_t)nn);
    if (!nm) return oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory");
    memset(nm + m->n_memo, 0, sizeof *nm * (size_t)(nn - m->n_memo));
    m->memo = nm;
    m->n_memo = nn;
  }
  if (!m->memo[idx]) m->n_memo_set++;
  m->memo[idx] = v;
  return 0;
}

/* Run the pickle; *result = the object STOP returns. */
static int run_pickle(vm *m, const unsigned char *p, size_t len, pv **result) {
  size_t i = 0;
#define NEED(k) do { if (len - i < (size_t)(k)) return oc_fail(m->err, "%s: pickle truncated at byte %zu", m->path, i); } while (0)
#define POP(v) pv *v = pop(m); if (!v) return oc_fail(m->err, "%s: pickle stack underflow at byte %zu", m->path, op_at)
  while (i < len) {
    size_t op_at = i;
    unsigned char op = p[i++];
    pv *v;
    switch (op) {
    case 0x80: NEED(1); i += 1; break;            /* PROTO */
    case 0x95: NEED(8); i += 8; break;            /* FRAME */
    case '.': { POP(top); *result = top; return 0; }
    case '(': if (push(m, mk(m, PV_MARK))) return -1; break;
    case '}': if (push(m, mk(m, PV_DICT))) return -1; break;
    case ']': if (push(m, mk(m, PV_LIST))) return -1; break;
    case ')': if (push(m, mk(m, PV_TUPLE))) return -1; break;
    case 'N': if (push(m, mk(m, PV_NONE))) return -1; break;
    case 0x88: case 0x89:
      if (!(v = mk(m, PV_BOOL))) return -1;
      v->i = op == 0x88;
      if (push(m, v)) return -1;
      break;
    case 'J': case 'K': case 'M': {
      int nb = op == 'J' ? 4 : op == 'K' ? 1 : 2;
      NEED(nb);
      if (!(v = mk(m, PV_INT))) return -1;
      v->i = op == 'J' ? (int64_t)(int32_t)rd32(p + i) : op == 'K' ? p[i] : (int64_t)rd16(p + i);
      i += (size_t)nb;
      if (push(m, v)) return -1;
      break;
    }
    case 0x8a: { /* LONG1 */
      NEED(1);
      int nb = p[i++];
      NEED(nb);
      if (nb > 8) return oc_fail(m->err, "%s: pickle integer of %d bytes at byte %zu", m->path, nb, op_at);
      uint64_t u = 0;
      for (int k = 0; k < nb; k++) u |= (uint64_t)p[i + k] << (8 * k);
      if (nb > 0 && nb < 8 && (p[i + nb - 1] & 0x80)) u |= ~0ull << (8 * nb);
      i += (size_t)nb;
      if (!(v = mk(m, PV_INT))) return -1;
      v->i = (int64_t)u;
      if (push(m, v)) return -1;
      break;
    }
    case 'G': { /* BINFLOAT, big-endian */
      NEED(8);
      uint64_t u = 0;
      for (int k = 0; k < 8; k++) u = u << 8 | p[i + k];
      i += 8;
      if (!(v = mk(m, PV_FLOAT))) return -1;
      memcpy(&v->f, &u, 8);
      if (push(m, v)) return -1;
      break;
    }
    case 'X': case 0x8c: case 0x8d: case 'T': case 'U': { /* strings */
      uint64_t n;
      if (op == 0x8c || op == 'U') { NEED(1); n = p[i]; i += 1; }
      else if (op == 0x8d) { NEED(8); n = rd64(p + i); i += 8; }
      else { NEED(4); n = rd32(p + i); i += 4; }
      if (n > len - i) return oc_fail(m->err, "%s: pickle string past the end at byte %zu", m->path, op_at);
      if (!(v = mk(m, PV_STR))) return -1;
      if (!(v->s = strndup((const char *)p + i, (size_t)n))) return oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory");
      i += (size_t)n;
      if (push(m, v)) return -1;
      break;
    }
    case 'c': { /* GLOBAL module\nname\n, at most MAX_GLOBAL_NAME bytes */
      size_t room = len - i < MAX_GLOBAL_NAME + 1 ? len - i : MAX_GLOBAL_NAME + 1;
      const unsigned char *a = memchr(p + i, '\n', room);
      const unsigned char *b = a ? memchr(a + 1, '\n', room - (size_t)(a + 1 - (p + i))) : NULL;
      if (!b) return oc_fail(m->err, "%s: pickle GLOBAL at byte %zu is truncated or longer than %d bytes", m->path, op_at, MAX_GLOBAL_NAME);
      if (!(v = mk(m, PV_GLOBAL))) return -1;
      if (!(v->s = malloc((size_t)(b - (p + i)) + 1))) return oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory");
      size_t ml = (size_t)(a - (p + i)), nl = (size_t)(b - a - 1);
      memcpy(v->s, p + i, ml);
      v->s[ml] = '.';
      memcpy(v->s + ml + 1, a + 1, nl);
      v->s[ml + 1 + nl] = 0;
      i = (size_t)(b + 1 - p);
      if (push(m, v)) return -1;
      break;
    }
    case 0x93: { /* STACK_GLOBAL */
      POP(name); POP(mod);
      if (name->k != PV_STR || mod->k != PV_STR) return oc_fail(m->err, "%s: bad STACK_GLOBAL at byte %zu", m->path, op_at);
      size_t gl = strlen(mod->s) + strlen(name->s) + 1;
      if (gl > MAX_GLOBAL_NAME) return oc_fail(m->err, "%s: pickle STACK_GLOBAL at byte %zu names more than %d bytes", m->path, op_at, MAX_GLOBAL_NAME);
      if (!(v = mk(m, PV_GLOBAL))) return -1;
      if (!(v->s = malloc(gl + 1))) return oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory");
      sprintf(v->s, "%s.%s", mod->s, name->s);
      if (push(m, v)) return -1;
      break;
    }
    case 't': case 0x85: case 0x86: case 0x87: {
      int k, base;
      if (op == 't') { base = find_mark(m); if (base < 0) return oc_fail(m->err, "%s: TUPLE without MARK at byte %zu", m->path, op_at); k = m->sp - base - 1; }
      else { k = op - 0x84; base = m->sp - k - 1; if (m->sp < k) return oc_fail(m->err, "%s: pickle stack underflow at byte %zu", m->path, op_at); }
      if (!(v = mk(m, PV_TUPLE))) return -1;
      for (int q = 0; q < k; q++) if (append(m, v, m->st[base + 1 + q])) return -1;
      m->sp = op == 't' ? base : m->sp - k;
      if (push(m, v)) return -1;
      break;
    }
    case 'Q': { /* BINPERSID: ('storage', type, key, location, numel) */
      POP(pid);
      if (pid->k != PV_TUPLE || pid->n < 5 || pid->items[0]->k != PV_STR || strcmp(pid->items[0]->s, "storage") != 0 ||
          pid->items[1]->k != PV_GLOBAL || pid->items[2]->k != PV_STR || pid->items[4]->k != PV_INT)
        return oc_fail(m->err, "%s: unexpected persistent id at byte %zu (not a torch storage)", m->path, op_at);
      int ok;
      if (!(v = mk(m, PV_STORAGE))) return -1;
      v->dt = storage_dtype(pid->items[1]->s, &ok);
      if (!ok) return oc_fail_code(m->err, OC_ERR_UNSUPPORTED, "%s: unsupported storage type %s", m->path, pid->items[1]->s);
      if (!(v->s = strdup(pid->items[2]->s))) return oc_fail_code(m->err, OC_ERR_NOMEM, "out of memory");
      v->i = pid->items[4]->i;
      if (push(m, v)) return -1;
      break;
    }
    case 'R': { POP(args); POP(fn); if (push(m, reduce(m, fn, args))) return -1; break; }
    case 0x81: { POP(args); POP(cls); (void)args; (void)cls; if (push(m, mk(m, PV_OBJ))) return -1; break; } /* NEWOBJ */
    case 'b': { POP(state); (void)state; if (m->sp < 1) return oc_fail(m->err, "%s: BUILD on empty stack", m->path); break; }
    case 's': case 'u': {
      int base = m->sp - 3;
      if (op == 'u') { base = find_mark(m) - 1; if (base < 0) return oc_fail(m->err, "%s: SETITEMS without MARK at byte %zu", m->path, op_at); }
      if (base < 0) return oc_fail(m->err, "%s: pickle stack underflow at byte %zu", m->path, op_at);
      pv *d = m->st[base];
      int first = op == 'u' ? base + 2 : base + 1;
      if ((m->sp - first) % 2) return oc_fail(m->err, "%s: odd SETITEMS at byte %zu", m->path, op_at);
      if (d->k == PV_DICT)
        for (int q = first; q < m->sp; q++) if (append(m, d, m->st[q])) return -1;
      m->sp = base + 1;
      break;
    }
    case 'a': case 'e': {
      int base = m->sp - 2;
      if (op == 'e') { base = find_mark(m) - 1; if (base < 0) return oc_fail(m->err, "%s: APPENDS without MARK at byte %zu", m->path, op_at); }
      if (base < 0) return oc_fail(m->err, "%s: pickle stack underflow at byte %zu", m->path, op_at);
      pv *l = m->st[base];
      int first = op == 'e' ? base + 2 : base + 1;
      if (l->k == PV_LIST)
        for (int q = first; q < m->sp; q++) if (append(m, l, m->st[q])) return -1;
      m->sp = base + 1;
      break;
    }
    case 'q': case 'r': case 0x94: {
      int64_t idx;
      if (op == 'q') { NEED(1); idx = p[i]; i += 1; }
      else if (op == 'r') { NEED(4); idx = rd32(p + i); i += 4; }
      else idx = m->n_memo_set; /* MEMOIZE: memo[len(memo)] */
      if (m->sp < 1) return oc_fail(m->err, "%s: memo of empty stack at byte %zu", m->path, op_at);
      if (memo_put(m, idx, m->st[m->sp - 1])) return -1;
      break;
    }
    case 'h': case 'j': {
      int64_t idx;
      if (op == 'h') { NEED(1); idx = p[i]; i += 1; }
      else { NEED(4); idx = rd32(p + i); i += 4; }
      if (idx >= m->n_memo || !m->memo[idx]) return oc_fail(m->err, "%s: pickle memo %lld unset at byte %zu", m->path, (long long)idx, op_at);
      if (push(m, m->memo[idx])) return -1;
      break;
    }
    default:
      return oc_fail_code(m->err, OC_ERR_UNSUPPORTED, "%s: unsupported pickle opcode 0x%02x at byte %zu of data.pkl", m->path, op, op_at);
    }
  }
  return oc_fail(m->err, "%s: pickle ended without STOP", m->path);
#undef NEED
#undef POP
}

static const pv *dict_get(const pv *d, const char *key) {
  for (int i = 0; i + 1 < d->n; i += 2)
    if (d->items[i]->k == PV_STR && strcmp(d->items[i]->s, key) == 0) return d->items[i + 1];
  return NULL;
}

/* A tensor's elements as f32 (contiguous tensors only). */
static int tensor_f32(const zarchive *z, const char *prefix, const pv *t, const char *name, const char *path, float **out,
                      int64_t *numel, oc_error *err) {
  if (!t || t->k != PV_TENSOR) return oc_fail(err, "%s: \"%s\" is not a tensor", path, name);
  int64_t n = 1; /* elements; also the stride a contiguous tensor has at dimension d */
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] < 0) return oc_fail(err, "%s: tensor \"%s\" has a negative dimension", path, name);
    if (t->shape[d] != 1 && t->stride[d] != n) return oc_fail(err, "%s: tensor \"%s\" is not contiguous", path, name);
    if (__builtin_mul_overflow(n, t->shape[d], &n)) return oc_fail(err, "%s: tensor \"%s\": its shape overflows", path, name);
  }
  const pv *s = t->storage;
  char rec[512];
  if (snprintf(rec, sizeof rec, "%sdata/%s", prefix, s->s) >= (int)sizeof rec)
    return oc_fail(err, "%s: tensor \"%s\": storage key longer than %zu bytes", path, name, sizeof rec);
  const zentry *e = zip_find(z, rec);
  if (!e) return oc_fail(err, "%s: storage record \"%s\" of tensor \"%s\" missing", path, rec, name);
  size_t es = oc_dtype_size(s->dt);
  uint64_t storage_bytes; /* numel * element size, which a storage of 2^62 elements overflowed */
  if (s->i < 0 || __builtin_mul_overflow((uint64_t)s->i, (uint64_t)es, &storage_bytes) || storage_bytes > e->size)
    return oc_fail(err, "%s: tensor \"%s\": its storage of %lld elements does not fit its record \"%s\" (%llu bytes)", path, name,
                   (long long)s->i, rec, (unsigned long long)e->size);
  if (t->offset < 0 || n > s->i || t->offset > s->i - n)
    return oc_fail(err, "%s: tensor \"%s\" lies outside its storage", path, name);
  const unsigned char *bytes = NULL;
  if (zip_read(z, e, path, &bytes, err)) return -1;
  float *v = malloc(sizeof *v * (size_t)(n ? n : 1));
  if (!v) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  if (oc_to_f32(s->dt, bytes + (size_t)t->offset * es, v, (size_t)n)) {
    free(v);
    return oc_fail(err, "%s: tensor \"%s\" has dtype %s; a probe needs F32, F16 or BF16", path, name, oc_dtype_name(s->dt));
  }
  *out = v;
  *numel = n;
  return 0;
}

/* A probe's .pt is a few kB; anything this large is another file (a model checkpoint?). */
#define MAX_PT_BYTES (256u << 20)

int oc_torch_pt_load_probe(const char *path, oc_probe *p, oc_error *err) {
  struct stat st;
  if (stat(path, &st) == 0 && st.st_size > (off_t)MAX_PT_BYTES)
    return oc_fail(err, "%s: %lld bytes is larger than a probe.pt can be (%u MiB); is this a model checkpoint?", path, (long long)st.st_size,
                   MAX_PT_BYTES >> 20);
  char *buf;
  size_t len;
  if (oc_read_file(path, &buf, &len, err)) return -1;
  int rc = oc_torch_pt_parse_probe(buf, len, path, p, err);
  free(buf);
  return rc;
}

int oc_torch_pt_parse_probe(const void *data, size_t len, const char *path, oc_probe *p, oc_error *err) {
  memset(p, 0, sizeof *p);
  const char *buf = data;
  zarchive z;
  if (zip_open((const unsigned char *)buf, len, path, &z, err)) return -1;
  int rc = -1;
  vm m = {.path = path, .err = err};
  const zentry *pk = NULL;
  for (int i = 0; i < z.n; i++) {
    size_t nl = strlen(z.e[i].name);
    if (nl >= 8 && strcmp(z.e[i].name + nl - 8, "data.pkl") == 0 && (nl == 8 || z.e[i].name[nl - 9] == '/')) { pk = &z.e[i]; break; }
  }
  if (!pk) {
    if (z.n == 0) oc_fail(err, "%s: an empty zip archive (no entries; a damaged file, not a torch.save file)", path);
    else oc_fail(err, "%s: no data.pkl in the archive (not a torch.save file)", path);
    goto done;
  }
  const unsigned char *pkl = NULL;
  if (zip_read(&z, pk, path, &pkl, err)) goto done; /* the storages are checked as they are read */
  char prefix[512];
  size_t pl = strlen(pk->name) - 8;
  if (pl >= sizeof prefix) { oc_fail(err, "%s: archive name too long", path); goto done; }
  memcpy(prefix, pk->name, pl);
  prefix[pl] = 0;
  pv *root = NULL;
  m.len = (size_t)pk->size;
  if (run_pickle(&m, pkl, (size_t)pk->size, &root)) goto done;
  if (root->k != PV_DICT) { oc_fail(err, "%s: data.pkl does not hold a state dict", path); goto done; }
  const char *wn = "head.weight", *bn = "head.bias";
  if (!dict_get(root, wn) && dict_get(root, "weight")) { wn = "weight"; bn = "bias"; }
  if (!dict_get(root, wn)) { oc_fail(err, "%s: state dict has no \"head.weight\"", path); goto done; }
  float *w = NULL, *b = NULL;
  int64_t nw, nb;
  if (tensor_f32(&z, prefix, dict_get(root, wn), wn, path, &w, &nw, err)) goto done;
  if (tensor_f32(&z, prefix, dict_get(root, bn), bn, path, &b, &nb, err)) { free(w); goto done; }
  const pv *wt = dict_get(root, wn);
  if (nb != 1 || nw < 1 || !(wt->ndim == 1 || (wt->ndim == 2 && wt->shape[0] == 1))) {
    oc_fail(err, "%s: expected %s [1, hidden] and %s [1], got %lld and %lld elements", path, wn, bn, (long long)nw, (long long)nb);
    free(w); free(b);
    goto done;
  }
  p->hidden = (int)nw;
  p->w = w;
  p->b = b[0];
  free(b);
  rc = 0;
done:
  vm_free(&m);
  zip_free(&z);
  return rc;
}
