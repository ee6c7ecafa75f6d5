/* opencon — errors, small utilities shared by every module. */
#ifndef OPENCON_BASE_H
#define OPENCON_BASE_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every fallible library call takes an oc_error* and returns 0 on success, -1 on
 * failure with a message saying what was wrong and where (file, tensor, line). */
typedef struct oc_error {
  char msg[1024];
} oc_error;

int oc_fail(oc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix an existing message: "context: previous message". Returns -1. */
int oc_wrap(oc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whole file into a malloc'd NUL-terminated buffer. */
int oc_read_file(const char *path, char **data, size_t *len, oc_error *err);
/* Write atomically: temp file in the same directory, fsync, rename. */
int oc_write_file_atomic(const char *path, const void *data, size_t len, oc_error *err);
/* Atomic writer for large outputs written in pieces. */
typedef struct oc_atomic_file {
  void *fp;           /* FILE* */
  char *path;
  char *tmp_path;
} oc_atomic_file;
int oc_atomic_open(oc_atomic_file *f, const char *path, oc_error *err);
int oc_atomic_write(oc_atomic_file *f, const void *data, size_t len, oc_error *err);
int oc_atomic_commit(oc_atomic_file *f, oc_error *err); /* fsync + rename */
void oc_atomic_abort(oc_atomic_file *f);               /* removes the temp file */

int oc_file_exists(const char *path);
int oc_is_dir(const char *path);
int oc_mkdirs(const char *path, oc_error *err);
char *oc_path_join(const char *a, const char *b); /* malloc'd */

/* Comma-separated integers ("2,106,-4"); malloc'd array. */
int oc_parse_int_list(const char *s, int64_t **out, int *n, oc_error *err);

/* Thread count used by kernels (OpenMP + OpenBLAS). 0 = all cores. */
void oc_set_threads(int n);
int oc_get_threads(void);

/* Progress line on stderr when it is a TTY (rate and ETA), and an optional JSON file. */
typedef struct oc_progress {
  const char *label;
  const char *json_path;
  int64_t total;
  double t0, last;
  int tty;
} oc_progress;
void oc_progress_start(oc_progress *p, const char *label, int64_t total, const char *json_path);
void oc_progress_update(oc_progress *p, int64_t done, const char *unit);
void oc_progress_end(oc_progress *p, int64_t done, const char *unit);
double oc_now(void);

#ifdef __cplusplus
}
#endif
#endif
