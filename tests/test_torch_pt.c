/* probe.pt (torch.save's zip + pickle) as hostile input, on archives built here byte by byte: a
 * storage of 2^62 elements, a shape whose product overflows, 60k zip entries aliasing one 4 MB
 * record, repeated names, and pickles that ask the VM for huge memo tables, object counts or names.
 * A probe file's kind comes from its first bytes: the legacy torch.save format (a bare pickle) and
 * a damaged zip say what they are (both were read as safetensors: "header length ... exceeds the
 * limit"), and safetensors files whose header length starts with the same bytes still load. */
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/probe.h"

/* ---- a growing byte buffer ---- */
typedef struct { unsigned char *d; size_t n, cap; } bytes;
static void put(bytes *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->d = realloc(b->d, b->cap);
    REQUIRE(b->d, "out of memory");
  }
  memcpy(b->d + b->n, p, n);
  b->n += n;
}
static void put_u8(bytes *b, unsigned v) { unsigned char c = (unsigned char)v; put(b, &c, 1); }
static void put_le(bytes *b, uint64_t v, int nb) { for (int i = 0; i < nb; i++) put_u8(b, (unsigned)(v >> (8 * i)) & 0xff); }
static void put_s(bytes *b, const char *s) { put(b, s, strlen(s)); }

static uint32_t crc32(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xffffffffu;
}

/* ---- zip (stored entries) ---- */
typedef struct { const char *name; const unsigned char *data; size_t len; } rec;
typedef struct { char name[64]; uint32_t crc; uint64_t size, off; } cd_ent;

/* Local records for recs[], then a central directory of n_cd entries: entry i is record
 * alias[i] (or i when alias is NULL) under the name names[i] (or its record's name). */
static bytes zip(const rec *recs, int n_rec, int n_cd, const int *alias, const char *const *names) {
  bytes z = {0};
  cd_ent *loc = calloc((size_t)n_rec, sizeof *loc);
  for (int i = 0; i < n_rec; i++) {
    loc[i].off = z.n;
    loc[i].crc = crc32(recs[i].data, recs[i].len);
    loc[i].size = recs[i].len;
    put_le(&z, 0x04034b50u, 4); put_le(&z, 20, 2); put_le(&z, 0, 2); put_le(&z, 0, 2); put_le(&z, 0, 4);
    put_le(&z, loc[i].crc, 4); put_le(&z, recs[i].len, 4); put_le(&z, recs[i].len, 4);
    put_le(&z, strlen(recs[i].name), 2); put_le(&z, 0, 2);
    put_s(&z, recs[i].name);
    put(&z, recs[i].data, recs[i].len);
  }
  size_t cd_off = z.n;
  for (int i = 0; i < n_cd; i++) {
    int r = alias ? alias[i] : i;
    const char *nm = names ? names[i] : recs[r].name;
    put_le(&z, 0x02014b50u, 4); put_le(&z, 20, 2); put_le(&z, 20, 2); put_le(&z, 0, 2); put_le(&z, 0, 2); put_le(&z, 0, 4);
    put_le(&z, loc[r].crc, 4); put_le(&z, loc[r].size, 4); put_le(&z, loc[r].size, 4);
    put_le(&z, strlen(nm), 2); put_le(&z, 0, 2); put_le(&z, 0, 2); put_le(&z, 0, 2); put_le(&z, 0, 2); put_le(&z, 0, 4);
    put_le(&z, loc[r].off, 4);
    put_s(&z, nm);
  }
  size_t cd_size = z.n - cd_off;
  REQUIRE(n_cd < 0xffff, "zip64 counts are not built here");
  put_le(&z, 0x06054b50u, 4); put_le(&z, 0, 2); put_le(&z, 0, 2); put_le(&z, (uint64_t)n_cd, 2); put_le(&z, (uint64_t)n_cd, 2);
  put_le(&z, cd_size, 4); put_le(&z, cd_off, 4); put_le(&z, 0, 2);
  free(loc);
  return z;
}

/* ---- pickle (protocol 2) of {"head.weight": tensor, "head.bias": tensor} ---- */
static void pk_str(bytes *p, const char *s) { put_u8(p, 'X'); put_le(p, strlen(s), 4); put_s(p, s); }
static void pk_int(bytes *p, int64_t v) { put_u8(p, 0x8a); put_u8(p, 8); put_le(p, (uint64_t)v, 8); }
/* a tensor of storage key/numel, shape (d0[, d1]) and the matching contiguous strides */
static void pk_tensor(bytes *p, const char *key, int64_t numel, int ndim, int64_t d0, int64_t d1) {
  put_s(p, "ctorch._utils\n_rebuild_tensor_v2\n(");
  put_u8(p, '(');
  pk_str(p, "storage");
  put_s(p, "ctorch\nFloatStorage\n");
  pk_str(p, key);
  pk_str(p, "cpu");
  pk_int(p, numel);
  put_u8(p, 't');
  put_u8(p, 'Q');
  pk_int(p, 0);
  if (ndim == 1) { pk_int(p, d0); put_u8(p, 0x85); pk_int(p, 1); put_u8(p, 0x85); }
  else { pk_int(p, d0); pk_int(p, d1); put_u8(p, 0x86); pk_int(p, d1); pk_int(p, 1); put_u8(p, 0x86); }
  put_u8(p, 0x89);
  put_u8(p, ')');
  put_u8(p, 't');
  put_u8(p, 'R');
}
static bytes state_dict(int64_t w_numel, int64_t w0, int64_t w1, const char *w_key) {
  bytes p = {0};
  put_s(&p, "\x80\x02" "ccollections\nOrderedDict\n)R(");
  pk_str(&p, "head.weight");
  pk_tensor(&p, w_key, w_numel, 2, w0, w1);
  pk_str(&p, "head.bias");
  pk_tensor(&p, "1", 1, 1, 1, 0);
  put_s(&p, "u.");
  return p;
}

static float W[4] = {0.5f, -1.0f, 2.0f, 0.25f}, B = 0.75f;

/* a probe.pt of the given pickle with storages "0" (4 floats) and "1" (1 float) */
static bytes probe_pt(const bytes *pkl) {
  rec r[3] = {{"p/data.pkl", pkl->d, pkl->n}, {"p/data/0", (const unsigned char *)W, sizeof W}, {"p/data/1", (const unsigned char *)&B, sizeof B}};
  return zip(r, 3, 3, NULL, NULL);
}

static void expect_error(const bytes *pt, const char *needle, const char *what) {
  oc_probe p;
  oc_error e = {0};
  int rc = oc_torch_pt_parse_probe(pt->d, pt->n, "x.pt", &p, &e);
  CHECK(rc != 0 && strstr(e.msg, needle) && strstr(e.msg, "x.pt"), "%s: should fail with \"%s\", got: %s", what, needle, rc ? e.msg : "accepted");
  if (rc == 0) oc_probe_free(&p);
}

/* a probe.pt of the pickle fails with needle; the pickle is freed */
static void expect_pickle_error(bytes *pkl, const char *needle, const char *what) {
  bytes pt = probe_pt(pkl);
  expect_error(&pt, needle, what);
  free(pt.d);
  free(pkl->d);
}

/* the bytes as a file; oc_probe_load of it fails with needle (and code, unless 0) */
static const char *as_file(const void *d, size_t n) {
  static char path[32];
  snprintf(path, sizeof path, "/tmp/oc_kind_pt_XXXXXX");
  int fd = mkstemp(path);
  REQUIRE(fd >= 0 && write(fd, d, n) == (ssize_t)n && close(fd) == 0, "cannot write %s", path);
  return path;
}
static void expect_load_error(const void *d, size_t n, const char *needle, oc_errcode code, const char *what) {
  const char *path = as_file(d, n);
  oc_probe p;
  oc_error e = {0};
  int rc = oc_probe_load(path, &p, &e);
  CHECK(rc != 0 && strstr(e.msg, needle) && strstr(e.msg, path) && (!code || e.code == code), "%s: should fail with \"%s\", got: %s", what, needle,
        rc ? e.msg : "accepted");
  if (rc == 0) oc_probe_free(&p);
  unlink(path);
}

/* a safetensors probe (head.bias, head.weight [1, 4]) whose header is padded to hlen bytes */
static bytes safetensors_probe(size_t hlen) {
  bytes b = {0};
  char hdr[256];
  int n = snprintf(hdr, sizeof hdr, "{\"head.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                    "\"head.weight\":{\"dtype\":\"F32\",\"shape\":[1,4],\"data_offsets\":[4,20]}}");
  REQUIRE((size_t)n <= hlen, "header too long");
  put_le(&b, hlen, 8);
  put(&b, hdr, (size_t)n);
  for (size_t i = (size_t)n; i < hlen; i++) put_u8(&b, ' ');
  put(&b, &B, sizeof B);
  put(&b, W, sizeof W);
  return b;
}

static void file_kinds(const bytes *pkl, const bytes *pt) {
  /* torch.save before PyTorch 1.6 (or _use_new_zipfile_serialization=False): a bare pickle */
  expect_load_error(pkl->d, pkl->n, "a legacy torch.save file (a bare pickle, protocol 2", OC_ERR_UNSUPPORTED, "legacy pickle");
  expect_load_error(pkl->d, pkl->n, "re-save it with torch >= 1.6", OC_ERR_UNSUPPORTED, "legacy pickle: what to do");
  /* damaged zips: an end record alone, a truncated archive, a damaged first record */
  unsigned char eocd[22] = {'P', 'K', 5, 6};
  expect_load_error(eocd, sizeof eocd, "an empty zip archive", 0, "a zip end record alone (read as a 101010256-byte safetensors header)");
  expect_load_error(pt->d, pt->n / 2, "not a valid zip archive", 0, "a truncated probe.pt");
  expect_load_error("PK", 2, "not a valid zip archive", 0, "two bytes");
  bytes bad = {0};
  put(&bad, pt->d, pt->n);
  bad.d[2] = 7;
  bad.d[3] = 8;
  expect_load_error(bad.d, bad.n, "bad local header", 0, "a damaged first zip record");
  free(bad.d);
  /* the good archive as a file still loads */
  const char *path = as_file(pt->d, pt->n);
  oc_probe p;
  oc_error e;
  CHECK(oc_probe_load(path, &p, &e) == 0 && p.hidden == 4 && memcmp(p.w, W, sizeof W) == 0 && p.b == B, "probe.pt file: %s", e.msg);
  oc_probe_free(&p);
  unlink(path);
  /* safetensors whose header length begins with a pickle marker (0x0280) or "PK" (0x4b50) */
  const size_t hlens[3] = {0x280, 0x4b50, 128};
  for (int i = 0; i < 3; i++) {
    bytes st = safetensors_probe(hlens[i]);
    path = as_file(st.d, st.n);
    memset(&p, 0, sizeof p);
    CHECK(oc_probe_load(path, &p, &e) == 0 && p.hidden == 4 && memcmp(p.w, W, sizeof W) == 0 && p.b == B, "safetensors, header of %zu bytes: %s", hlens[i],
          e.msg);
    oc_probe_free(&p);
    unlink(path);
    free(st.d);
  }
}

int main(void) {
  oc_error e;
  oc_probe p;
  /* the builder makes a probe the reader accepts */
  bytes pkl = state_dict(4, 1, 4, "0");
  bytes pt = probe_pt(&pkl);
  CHECK(oc_torch_pt_parse_probe(pt.d, pt.n, "ok.pt", &p, &e) == 0, "built probe rejected: %s", e.msg);
  if (p.w) {
    CHECK(p.hidden == 4 && memcmp(p.w, W, sizeof W) == 0 && p.b == B, "built probe values");
    oc_probe_free(&p);
  }
  file_kinds(&pkl, &pt);
  free(pt.d);
  free(pkl.d);

  /* a storage of 2^62 floats: numel * 4 wrapped to 0 and passed the bounds check; the tensor
   * (64 elements) was then read past its 16-byte record */
  pkl = state_dict((int64_t)1 << 62, 1, 64, "0");
  expect_pickle_error(&pkl, "storage of 4611686018427387904 elements does not fit its record", "numel 2^62");
  pkl = state_dict(-1, 1, 4, "0");
  expect_pickle_error(&pkl, "does not fit its record", "negative numel");
  /* a shape whose element count overflows int64 */
  pkl = state_dict(4, (int64_t)1 << 40, (int64_t)1 << 40, "0");
  expect_pickle_error(&pkl, "its shape overflows", "shape 2^40 x 2^40");
  /* a storage key longer than a record name: truncated, it named another record */
  char key[700];
  memset(key, 'k', sizeof key - 1);
  key[sizeof key - 1] = 0;
  pkl = state_dict(4, 1, 4, key);
  expect_pickle_error(&pkl, "storage key longer than", "long storage key");

  /* 60k directory entries aliasing one 4 MB record: the CRC checks read 240 GB */
  pkl = state_dict(4, 1, 4, "0");
  size_t big_n = 4u << 20;
  unsigned char *big = calloc(1, big_n);
  rec r4[4] = {{"p/data.pkl", pkl.d, pkl.n}, {"p/data/0", (const unsigned char *)W, sizeof W}, {"p/data/1", (const unsigned char *)&B, sizeof B},
               {"p/blob", big, big_n}};
  int n_alias = 60000;
  int *alias = malloc(sizeof *alias * (size_t)n_alias);
  char **names = malloc(sizeof *names * (size_t)n_alias);
  for (int i = 0; i < n_alias; i++) {
    alias[i] = i < 3 ? i : 3;
    names[i] = malloc(32);
    if (i < 3) snprintf(names[i], 32, "%s", r4[i].name);
    else snprintf(names[i], 32, "p/blob%d", i);
  }
  pt = zip(r4, 4, n_alias, alias, (const char *const *)names);
  double t0 = oc_now();
  expect_error(&pt, "overlap", "60k aliased entries");
  CHECK(oc_now() - t0 < 20, "aliased entries took %.1f s to reject", oc_now() - t0);
  free(pt.d);
  /* the same record under two names of its own, and one name twice */
  int alias2[4] = {0, 1, 2, 2};
  const char *names2[4] = {"p/data.pkl", "p/data/0", "p/data/1", "p/data/1"};
  pt = zip(r4, 3, 4, alias2, names2);
  expect_error(&pt, "overlap", "a record listed twice");
  free(pt.d);
  rec r5[4] = {r4[0], r4[1], r4[2], {"p/data/1", (const unsigned char *)W, sizeof W}};
  pt = zip(r5, 4, 4, NULL, NULL);
  expect_error(&pt, "zip entry \"p/data/1\" appears twice", "a repeated name");
  free(pt.d);
  for (int i = 0; i < n_alias; i++) free(names[i]);
  free(names);
  free(alias);
  free(big);
  free(pkl.d);

  /* the pickle VM: a memo index far beyond the pickle (it allocated 128 MB for 5 bytes) */
  bytes m = {0};
  put_s(&m, "\x80\x02N");
  put_u8(&m, 'r');
  put_le(&m, 1u << 24, 4);
  put_u8(&m, '.');
  expect_pickle_error(&m, "pickle memo index 16777216 out of range", "memo index 2^24");
  /* objects: 300k Nones appended to a list (each ~200 bytes in the VM for 2 bytes of pickle) */
  m = (bytes){0};
  put_s(&m, "\x80\x02]");
  for (int i = 0; i < 300000; i++) put_s(&m, "Na");
  put_u8(&m, '.');
  expect_pickle_error(&m, "builds more than 262144 objects", "300k objects");
  /* names: one long string memoized, then a STACK_GLOBAL of it with itself, many times over */
  m = (bytes){0};
  put_s(&m, "\x80\x02");
  char longs[5000];
  memset(longs, 'a', sizeof longs - 1);
  longs[sizeof longs - 1] = 0;
  pk_str(&m, longs);
  put(&m, "q\0h\0\x93.", 6); /* BINPUT 0, BINGET 0, STACK_GLOBAL */
  expect_pickle_error(&m, "names more than 256 bytes", "long STACK_GLOBAL");
  m = (bytes){0};
  put_s(&m, "\x80\x02" "c");
  put_s(&m, longs);
  put_s(&m, "\nx\n.");
  expect_pickle_error(&m, "is truncated or longer than 256 bytes", "long GLOBAL");

  /* a file far larger than a probe is refused before it is read */
  char path[] = "/tmp/oc_big_pt_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0 && write(fd, "PK\3\4", 4) == 4 && ftruncate(fd, 300l << 20) == 0, "sparse file");
  close(fd);
  CHECK(oc_probe_load(path, &p, &e) != 0 && strstr(e.msg, "larger than a probe.pt can be"), "300 MB probe.pt: %s", e.msg);
  unlink(path);
  return check_summary("torch_pt");
}
