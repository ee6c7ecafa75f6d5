/* opencon — errors, small utilities shared by every module. */
#ifndef OPENCON_BASE_H
#define OPENCON_BASE_H
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What kind of failure an error is: callers (a server mapping errors to HTTP statuses, a CLI
 * choosing an exit code) branch on the code, people read the message. */
typedef enum oc_errcode {
  OC_ERR_NONE = 0,
  OC_ERR_INVALID,     /* bad input: a file's content, an argument, a flag, a config value */
  OC_ERR_NOT_FOUND,   /* a file, directory, tensor or model that does not exist */
  OC_ERR_IO,          /* reading or writing failed (disk, network) */
  OC_ERR_NOMEM,       /* an allocation failed */
  OC_ERR_UNSUPPORTED, /* valid input this build does not handle (a dtype, an architecture, a template feature) */
  OC_ERR_CANCELLED,   /* the caller asked the operation to stop */
  OC_ERR_BUSY,        /* no room now (a full queue, a server draining): try again later */
} oc_errcode;
const char *oc_errcode_name(oc_errcode c); /* "invalid_input", "not_found", "io", "out_of_memory", "unsupported", "cancelled", "busy" */

/* Every fallible library call takes an oc_error* and returns 0 on success, -1 on
 * failure with a message saying what was wrong and where (file, tensor, line) and a code. */
typedef struct oc_error {
  char msg[1024];
  oc_errcode code;
} oc_error;

/* Fill err (code OC_ERR_INVALID) and return -1. */
int oc_fail(oc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fill err with an explicit code and return -1. */
int oc_fail_code(oc_error *err, oc_errcode code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* OC_ERR_NOT_FOUND for ENOENT/ENOTDIR, OC_ERR_NOMEM for ENOMEM, else OC_ERR_IO. */
oc_errcode oc_errno_code(int e);
/* Prefix an existing message: "context: previous message"; the code is kept. Returns -1. */
int oc_wrap(oc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Open an input for reading: only a regular file (a directory, device, FIFO or socket is an error
 * naming the path, never a read that blocks forever or streams without end). */
FILE *oc_fopen_regular(const char *path, oc_error *err);
/* Whole file into a malloc'd NUL-terminated buffer (oc_fopen_regular). */
int oc_read_file(const char *path, char **data, size_t *len, oc_error *err);
/* Write atomically: temp file PATH.tmp.PID.XXXXXX in the same directory, fsync, rename. Opening
 * first removes that file's temporaries left by dead processes. */
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

/* A directory written whole (a probe, a classifier, a checkpoint, a model): the files are written
 * into the temporary sibling PARENT/.NAME.tmp-PID-XXXXXX, which commit fsyncs and puts in place.
 * A new DIR is one rename. An existing DIR is replaced so that a reader finds the old version or
 * the new one, whole: by one exchange (renameat2 RENAME_EXCHANGE) when DIR holds nothing the new
 * version lacks; otherwise (or where the file system cannot exchange) DIR is renamed aside to
 * PARENT/.NAME.old-PID-XXXXXX and the new version renamed in, and the entries of the old version
 * that the new one does not write (checkpoint-N/, a journal, a user's files) are moved into it
 * before the rest of the old version is removed. Between those two renames DIR is missing: the
 * recovery rule (oc_artifact_dir_recover) restores the set-aside copy when its writer died.
 * Open also tidies PARENT (oc_tidy_dir). Single writer per DIR. */
typedef struct oc_atomic_dir {
  char *path;      /* DIR as given (messages) */
  char *dest;      /* the directory replaced (a link to a directory is followed) */
  char *parent, *name;
  char *tmp_path;  /* PARENT/.NAME.tmp-PID-XXXXXX: write the files here */
} oc_atomic_dir;
int oc_atomic_dir_open(oc_atomic_dir *d, const char *path, oc_error *err);
char *oc_atomic_dir_file(const oc_atomic_dir *d, const char *name); /* tmp_path/name, malloc'd */
/* fsync + put in place; frees d. -1 before the new version is in place: the old one (if any) is
 * untouched and tmp removed; -1 after it (only a failed fsync of the parent): the new version is in
 * place but may not be durable. Settling the old version's leftovers is best effort (oc_tidy_dir
 * finishes it) and never an error. */
int oc_atomic_dir_commit(oc_atomic_dir *d, oc_error *err);
void oc_atomic_dir_abort(oc_atomic_dir *d);                        /* removes tmp_path */
/* Recovery rule, for every loader and writer of an artifact directory: when DIR is missing and
 * PARENT/.NAME.old-PID-* of a dead writer exists, it is renamed back to DIR; when DIR exists, the
 * set-aside copy's remaining extra entries are moved into DIR and the rest removed. Temporaries of
 * DIR left by dead writers are removed. -1 only when DIR is missing and restoring it failed. */
int oc_artifact_dir_recover(const char *path, oc_error *err);
/* Whether path can be written whole (named by its own name, not /, . or ..; a directory if it
 * exists): a job checks it before the work whose result it will hold. */
int oc_artifact_dir_check(const char *path, oc_error *err);
/* The same for every artifact and temporary file in dir: what dead processes left (pid in the name
 * not alive on this machine) is restored or removed; what live ones are writing is left alone. */
void oc_tidy_dir(const char *dir);

/* What the kernels run on: the CPU's name, its vector features and the kernel level chosen for
 * it (OPENCON_CPU=scalar|avx2|avx512 lowers it), as lines of text. */
void oc_system_info(char *buf, size_t n);

/* For a program's main(), before anything else. OpenBLAS's DYNAMIC_ARCH builds (Debian's) choose
 * their kernels from the CPU's model number as they load, and a model newer than the library gets
 * the generic SSE3 ones ("Prescott"): Debian 12's OpenBLAS 0.3.21 on an Emerald Rapids Xeon did, and
 * the prefill ran 5x slower (bench/README.md). When that happened on a CPU with AVX2 and FMA and
 * OPENBLAS_CORETYPE is unset, this sets it to the family the CPU's features allow and executes the
 * program again with the same arguments (/proc/self/exe, only when that is the program argv[0]
 * names); it returns when there is nothing to do or exec failed. Setting OPENBLAS_CORETYPE
 * yourself (any OpenBLAS core name) turns it off. */
void oc_blas_reexec(char **argv);

int oc_file_exists(const char *path);
/* An optional input file: 0 when the name does not exist at all, 1 when it is a regular file (through
 * symlinks), -1 with an error naming it otherwise (a dangling symlink, as a Hugging Face cache with a
 * missing blob leaves one, a directory, a device): a file that is there but unreadable is never
 * silently treated as absent. */
int oc_file_present(const char *path, oc_error *err);
int oc_is_dir(const char *path);
int oc_mkdirs(const char *path, oc_error *err);
char *oc_path_join(const char *a, const char *b); /* malloc'd */
/* A companion file of an output: path with a trailing ".json" replaced by ext, else path + ext
 * ("r.json", ".svg" -> "r.svg"; "out", ".partial" -> "out.partial"). malloc'd. */
char *oc_path_sibling(const char *path, const char *ext);

/* Index of the first NaN or Inf in x[0..n), or n when all are finite (a vectorizable scan: loading
 * a checkpoint checks every weight with it). */
size_t oc_find_nonfinite(const float *x, size_t n);

/* Grow (realloc) a float buffer to n elements; on failure *p is unchanged and err says so. */
int oc_grow_floats(float **p, size_t n, oc_error *err);
/* Append s[0, n) to a growing text buffer (*buf of *len bytes in *cap, kept NUL-terminated; capacity
 * doubles); -1 when out of memory, the buffer then unchanged. */
int oc_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* Comma-separated integers ("2,106,-4"), strictly: each item is digits with an optional leading '-'
 * (no spaces, no '+', no empty items, nothing out of int64 range); "" is an error. malloc'd array. */
int oc_parse_int_list(const char *s, int64_t **out, int *n, oc_error *err);

/* Thread count of the kernels called from this thread (OpenMP's per-thread setting; OpenBLAS runs
 * single-threaded inside our parallel regions). 0 = all cores. */
void oc_set_threads(int n);
int oc_get_threads(void);
/* Releases the calling thread's idle OpenMP workers (its thread pool; a later parallel region on
 * this thread makes a new one). libgomp spins at its barriers only while the threads it manages
 * do not outnumber the cores; past that its workers sleep, and every parallel region wakes them
 * through the kernel. A thread that hands all compute to another (the serving engine) calls this,
 * or the workers it keeps cost the other thread's team that: half the decode speed on 2 cores. */
void oc_release_threads(void);

/* Progress line on stderr when it is a TTY (rate and ETA), and an optional JSON file in the
 * MVP's format: {"phase", <done_key>, <total_key>, "percent", "elapsed_seconds", "eta_seconds",
 * "updated_at"} plus any extra numeric fields set with oc_progress_set. The file is rewritten
 * atomically at most 4 times a second and at every phase change. */
#define OC_PROGRESS_MAX_EXTRA 8
typedef struct oc_progress {
  const char *label;      /* TTY line prefix */
  const char *json_path;  /* NULL: no file */
  const char *phase;
  const char *unit;       /* "examples", "steps" */
  const char *done_key, *total_key; /* JSON names, e.g. examples_processed / total_examples */
  int64_t done, total, base; /* base: work already done before this run (resume), excluded from the rate */
  double t0, last;
  int tty;
  int n_extra;
  const char *extra_key[OC_PROGRESS_MAX_EXTRA];
  double extra_val[OC_PROGRESS_MAX_EXTRA];
} oc_progress;
void oc_progress_start(oc_progress *p, const char *label, const char *unit, int64_t total, const char *json_path);
/* Keys default to "<unit>_processed"-style MVP names: examples_processed / total_examples. */
void oc_progress_keys(oc_progress *p, const char *done_key, const char *total_key);
void oc_progress_phase(oc_progress *p, const char *phase, int64_t done, int64_t total); /* writes the JSON now */
void oc_progress_set(oc_progress *p, const char *key, double value);             /* extra JSON field */
void oc_progress_update(oc_progress *p, int64_t done);
void oc_progress_end(oc_progress *p, const char *final_phase); /* ends the TTY line, writes the JSON */
double oc_now(void);

/* Deterministic pseudo-random numbers (splitmix64) and hashing, independent of platform. */
uint64_t oc_mix64(uint64_t z);
uint64_t oc_fnv1a64(const void *data, size_t n, uint64_t h); /* h = 0 starts a new hash */
typedef struct oc_rng { uint64_t s; } oc_rng;
void oc_rng_seed(oc_rng *r, uint64_t seed);
uint64_t oc_rng_next(oc_rng *r);
uint64_t oc_rng_below(oc_rng *r, uint64_t n); /* uniform in [0, n), n > 0, unbiased */
double oc_rng_uniform(oc_rng *r);             /* [0, 1) with 53 bits */
void oc_shuffle_i64(oc_rng *r, int64_t *v, size_t n); /* Fisher-Yates */

/* SVG line plot (atomic write): x values (xticks: a label for each point, NULL = numeric axis),
 * nseries curves on a 0..1 y axis; NaN points are skipped. */
int oc_svg_plot(const char *path, const char *title, const char *xlabel, const double *x, const char *const *xticks, int n, int nseries,
                const char *const *names, const double *const *ys, oc_error *err);

#ifdef __cplusplus
}
#endif
#endif
