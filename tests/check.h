/* Minimal test helpers: every CHECK counts; main returns non-zero on any failure. */
#ifndef OC_TEST_CHECK_H
#define OC_TEST_CHECK_H
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

static int g_pass, g_fail;
#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (cond) g_pass++;                                               \
    else {                                                            \
      g_fail++;                                                       \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);            \
      fprintf(stderr, __VA_ARGS__);                                   \
      fprintf(stderr, "\n");                                          \
    }                                                                 \
  } while (0)
#define REQUIRE(cond, ...)                                            \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "FATAL %s:%d: ", __FILE__, __LINE__);           \
      fprintf(stderr, __VA_ARGS__);                                   \
      fprintf(stderr, "\n");                                          \
      exit(1);                                                        \
    }                                                                 \
  } while (0)
/* Run a shell command, capture its stdout into buf; returns the exit status (-1 on failure). */
static inline int run_capture(const char *cmd, char *buf, size_t size) {
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t n = fread(buf, 1, size - 1, p);
  buf[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Run a command (printf format) in directory dir: stdout into out, stderr into dir/stderr.txt.
 * Returns the exit status. */
static inline int run_in(const char *dir, char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static inline int run_in(const char *dir, char *out, size_t size, const char *fmt, ...) {
  char cmd[4096], full[4800];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(full, sizeof full, "cd %s && %s 2>%s/stderr.txt", dir, cmd, dir);
  return run_capture(full, out, size);
}

/* Remove a test's temporary directory tree (a note on stderr if it cannot). */
static inline void remove_tmpdir(const char *dir) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* What the last run_in wrote to stderr. */
static inline const char *stderr_in(const char *dir) {
  static char buf[8192];
  char p[600];
  snprintf(p, sizeof p, "%s/stderr.txt", dir);
  FILE *f = fopen(p, "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = 0;
  if (f) fclose(f);
  return buf;
}

/* dir/name (four rotating buffers, so a call can take several) */
static inline const char *path_in(const char *dir, const char *name) {
  static char p[4][600];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
  return p[k];
}

/* A JSON file parsed, NULL if it cannot be read or parsed. */
static inline cJSON *read_json_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t cap = 0, n = 0, got;
  do {
    if (n + 4096 > cap) {
      char *nb = realloc(buf, cap = 2 * cap + 4096);
      if (!nb) { free(buf); fclose(f); return NULL; }
      buf = nb;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
  } while (got > 0);
  fclose(f);
  cJSON *j = buf ? cJSON_ParseWithLength(buf, n) : NULL;
  free(buf);
  return j;
}

static inline int check_summary(const char *name) {
  printf("%s: %d passed, %d failed\n", name, g_pass, g_fail);
  return g_fail ? 1 : 0;
}
#endif
