#include "opencon/base.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

FILE *oc_fopen_regular(const char *path, oc_error *err) {
  /* O_NONBLOCK: opening a FIFO with no writer returns at once (then it is refused) */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) { oc_fail_code(err, oc_errno_code(errno), "%s: cannot open: %s", path, strerror(errno)); return NULL; }
  struct stat st;
  if (fstat(fd, &st) != 0) { oc_fail_code(err, OC_ERR_IO, "%s: %s", path, strerror(errno)); close(fd); return NULL; }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    oc_fail(err, "%s is not a regular file (%s)", path, S_ISDIR(st.st_mode) ? "a directory" : "a device, FIFO or socket");
    return NULL;
  }
  int fl = fcntl(fd, F_GETFL);
  FILE *f = fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0 ? fdopen(fd, "rb") : NULL;
  if (!f) { close(fd); oc_fail_code(err, OC_ERR_IO, "%s: cannot open: %s", path, strerror(errno)); }
  return f;
}

int oc_read_file(const char *path, char **data, size_t *len, oc_error *err) {
  FILE *f = oc_fopen_regular(path, err);
  if (!f) return -1;
  if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return oc_fail_code(err, OC_ERR_IO, "%s: cannot seek", path); }
  long sz = ftell(f);
  if (sz < 0) { fclose(f); return oc_fail_code(err, OC_ERR_IO, "%s: cannot tell size", path); }
  rewind(f);
  char *buf = malloc((size_t)sz + 1);
  if (!buf) { fclose(f); return oc_fail_code(err, OC_ERR_NOMEM, "%s: out of memory (%ld bytes)", path, sz); }
  size_t got = fread(buf, 1, (size_t)sz, f);
  fclose(f);
  if (got != (size_t)sz) { free(buf); return oc_fail_code(err, OC_ERR_IO, "%s: short read", path); }
  buf[sz] = 0;
  *data = buf;
  if (len) *len = (size_t)sz;
  return 0;
}

int oc_file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int oc_file_present(const char *path, oc_error *err) {
  struct stat st;
  if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : oc_fail_code(err, oc_errno_code(errno), "%s: %s", path, strerror(errno));
  if (stat(path, &st) != 0) return oc_fail_code(err, oc_errno_code(errno), "%s is a symbolic link to a missing file (%s)", path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return oc_fail(err, "%s is not a regular file (%s)", path, S_ISDIR(st.st_mode) ? "a directory" : "a device, FIFO or socket");
  return 1;
}

int oc_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int oc_mkdirs(const char *path, oc_error *err) {
  char buf[PATH_MAX];
  if (strlen(path) >= sizeof buf) return oc_fail(err, "path too long: %s", path);
  strcpy(buf, path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return oc_fail_code(err, OC_ERR_IO, "%s: mkdir failed: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) return oc_fail_code(err, OC_ERR_IO, "%s: mkdir failed: %s", buf, strerror(errno));
  return 0;
}

char *oc_path_join(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  char *s = malloc(na + nb + 2);
  if (!s) return NULL;
  memcpy(s, a, na);
  size_t k = na;
  if (na && a[na - 1] != '/') s[k++] = '/';
  memcpy(s + k, b, nb + 1);
  return s;
}

size_t oc_find_nonfinite(const float *x, size_t n) {
  const size_t block = 4096;
  for (size_t b = 0; b < n; b += block) {
    const size_t e = b + block < n ? b + block : n;
    uint32_t bad = 0;
    for (size_t i = b; i < e; i++) { /* exponent all ones: Inf or NaN */
      uint32_t u;
      memcpy(&u, x + i, 4);
      bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    if (bad)
      for (size_t i = b; i < e; i++)
        if (!isfinite(x[i])) return i;
  }
  return n;
}

int oc_grow_floats(float **p, size_t n, oc_error *err) {
  float *np = realloc(*p, sizeof(float) * (n ? n : 1));
  if (!np) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory (%zu floats)", n);
  *p = np;
  return 0;
}

int oc_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
  if (n > SIZE_MAX / 2 - *len - 1) return -1;
  if (*len + n + 1 > *cap) {
    size_t c = *cap ? *cap : 256;
    while (c < *len + n + 1) c *= 2;
    char *t = realloc(*buf, c);
    if (!t) return -1;
    *buf = t;
    *cap = c;
  }
  memcpy(*buf + *len, s, n);
  *len += n;
  (*buf)[*len] = 0;
  return 0;
}

char *oc_path_sibling(const char *path, const char *ext) {
  size_t n = strlen(path), keep = n > 5 && strcmp(path + n - 5, ".json") == 0 ? n - 5 : n;
  char *s = malloc(keep + strlen(ext) + 1);
  if (!s) return NULL;
  memcpy(s, path, keep);
  strcpy(s + keep, ext);
  return s;
}

int oc_parse_int_list(const char *s, int64_t **out, int *n, oc_error *err) {
  *out = NULL;
  *n = 0;
  if (!*s) return oc_fail(err, "the list is empty");
  int cap = 16, cnt = 0;
  int64_t *v = malloc(sizeof *v * (size_t)cap);
  if (!v) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  for (const char *p = s;; p++) { /* p: start of an item */
    const char *q = p + (*p == '-');
    size_t digits = strspn(q, "0123456789");
    const char *end = q + digits;
    if (!digits || (*end && *end != ',')) {
      size_t len = strcspn(p, ",");
      free(v);
      if (len == 0) return oc_fail(err, "item %d is empty", cnt + 1);
      return oc_fail(err, "item %d is not an integer: \"%.*s\" (digits with an optional leading '-', no spaces)", cnt + 1, len > 40 ? 40 : (int)len, p);
    }
    errno = 0;
    long long x = strtoll(p, NULL, 10);
    if (errno == ERANGE) { free(v); return oc_fail(err, "item %d is out of range: %.*s", cnt + 1, end - p > 40 ? 40 : (int)(end - p), p); }
    if (cnt == cap) {
      int64_t *nv = cap <= INT_MAX / 2 ? realloc(v, sizeof *v * (size_t)cap * 2) : NULL;
      if (!nv) { free(v); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory (a list of %d integers)", cnt); }
      v = nv;
      cap *= 2;
    }
    v[cnt++] = x;
    p = end;
    if (!*p) break;
    if (!p[1]) { free(v); return oc_fail(err, "item %d is empty", cnt + 1); } /* trailing comma */
  }
  *out = v;
  *n = cnt;
  return 0;
}

void openblas_set_num_threads(int);

/* The count is OpenMP's nthreads-var of the calling thread (no variable of ours): each thread of
 * a server sets its own. */
void oc_set_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  /* sgemm is called from inside our own parallel regions, one block per call. In the
   * OpenMP build of OpenBLAS this call also sets the OpenMP thread count, so it must
   * come before ours. */
  openblas_set_num_threads(1);
  omp_set_num_threads(n);
}

int oc_get_threads(void) { return omp_get_max_threads(); }

void oc_release_threads(void) {
  if (!omp_in_parallel()) omp_pause_resource_all(omp_pause_soft); /* (refused inside a parallel region) */
}

uint64_t oc_mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t oc_fnv1a64(const void *data, size_t n, uint64_t h) {
  if (h == 0) h = 1469598103934665603ull;
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void oc_rng_seed(oc_rng *r, uint64_t seed) { r->s = seed; }

uint64_t oc_rng_next(oc_rng *r) {
  uint64_t z = r->s;
  r->s += 0x9e3779b97f4a7c15ull;
  return oc_mix64(z);
}

uint64_t oc_rng_below(oc_rng *r, uint64_t n) {
  uint64_t lim = UINT64_MAX - UINT64_MAX % n; /* reject the short last bucket */
  uint64_t x;
  do x = oc_rng_next(r); while (x >= lim);
  return x % n;
}

double oc_rng_uniform(oc_rng *r) { return (double)(oc_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

void oc_shuffle_i64(oc_rng *r, int64_t *v, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)oc_rng_below(r, i);
    int64_t t = v[i - 1];
    v[i - 1] = v[j];
    v[j] = t;
  }
}
