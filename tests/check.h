/* Minimal test helpers: every CHECK counts; main returns non-zero on any failure. */
#ifndef OC_TEST_CHECK_H
#define OC_TEST_CHECK_H
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

static inline int check_summary(const char *name) {
  printf("%s: %d passed, %d failed\n", name, g_pass, g_fail);
  return g_fail ? 1 : 0;
}
#endif
