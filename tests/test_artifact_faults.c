/* Fault injection for the artifacts written whole (issue 19): the probe directory, the classifier
 * directory with its checkpoint-N, random-model and the random ModernBERT. For each, as a new
 * artifact and replacing an existing version, every step of the save is made to fail (the call
 * returns an error) and, separately, to be the point where the process is killed. After each, the
 * directory must hold the old version or the new one, whole (every file equal to that version's
 * reference byte for byte, and the real loader reading that version), nothing else in it may be
 * lost, and the next run must clean up what was left and succeed.
 *
 * Mechanism. This executable defines its own mkdir, mkdtemp, mkstemp, opendir, fwrite, fflush,
 * fsync, fclose, rename, renameat2, unlink and rmdir. libopencon is a static library, so the linker
 * binds the library's calls to these definitions (with a shared libopencon the executable's
 * definitions come first in the dynamic lookup order, with the same effect). Each forwards to the
 * next definition (dlsym RTLD_NEXT: libc's, or in the ASan build the sanitizer's interceptor, which
 * calls libc's). The library has no test hooks or mutable globals for this; the counters live here.
 * A counting run numbers the steps of the save: every call above, except that for a stream only
 * its first fwrite counts (later writes to the same temporary file leave the same kind of state),
 * and fflush and fclose count on streams that were written (not on the files the run reads). Then for
 * every step N a forked child runs the save with step N failing (errno EIO) or ending the process
 * with _exit before the call (no atexit handlers, no stdio flush: the disk holds what a SIGKILL at
 * that point leaves, since the disk changes only at these calls). Each injection runs in its own
 * child, so what it leaves belongs to a dead pid, as after a real kill. The parent then applies
 * the recovery rule as a loader does (oc_artifact_dir_recover), checks the state, runs the save
 * again with no fault and checks the new version and that no temporary of a dead process is left.
 * The parent keeps one OpenMP thread so that forking is safe. Power loss (what the fsyncs are
 * for) is not simulated. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "opencon/classifier.h"
#include "opencon/model.h"
#include "opencon/probe.h"

/* ---- the injected calls -------------------------------------------------------------------- */
enum { OFF, COUNT, FAIL, KILL };
#define KILLED 86
#define MAX_STEPS 2048
static struct {
  int mode, step, target, no_exchange;
  const FILE *last_stream;
  char what[MAX_STEPS][160]; /* COUNT: each step's call and path, for messages */
} inj;

/* 1 when this call is the one to fail; does not return when it is the one to be killed at */
static int inject(const char *op, const char *path) {
  if (inj.mode == OFF) return 0;
  int n = ++inj.step;
  if (inj.mode == COUNT && n <= MAX_STEPS) snprintf(inj.what[n - 1], sizeof inj.what[0], "%s %.140s", op, path ? path : "");
  if (inj.mode == COUNT || n != inj.target) return 0;
  if (inj.mode == KILL) _exit(KILLED);
  errno = EIO;
  return 1;
}

#define REAL(ret, name, ...)                 \
  static ret (*real)(__VA_ARGS__);           \
  if (!real) real = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

int mkdir(const char *p, mode_t m) {
  REAL(int, mkdir, const char *, mode_t);
  return inject("mkdir", p) ? -1 : real(p, m);
}
char *mkdtemp(char *t) {
  REAL(char *, mkdtemp, char *);
  return inject("mkdtemp", t) ? NULL : real(t);
}
int mkstemp(char *t) {
  REAL(int, mkstemp, char *);
  return inject("mkstemp", t) ? -1 : real(t);
}
DIR *opendir(const char *p) {
  REAL(DIR *, opendir, const char *);
  return inject("opendir", p) ? NULL : real(p);
}
size_t fwrite(const void *b, size_t s, size_t n, FILE *f) {
  REAL(size_t, fwrite, const void *, size_t, size_t, FILE *);
  if (f != stdout && f != stderr && f != inj.last_stream) {
    inj.last_stream = f;
    if (inject("fwrite", NULL)) return 0;
  }
  return real(b, s, n, f);
}
int fflush(FILE *f) {
  REAL(int, fflush, FILE *);
  return f && f == inj.last_stream && inject("fflush", NULL) ? EOF : real(f);
}
/* no power is lost here, so the real fsync (milliseconds each on a VM disk) is skipped */
int fsync(int fd) {
  (void)fd;
  return inject("fsync", NULL) ? -1 : 0;
}
int fclose(FILE *f) {
  REAL(int, fclose, FILE *);
  int written = f == inj.last_stream;
  if (written) inj.last_stream = NULL;
  int failed = written && inject("fclose", NULL), rc = real(f);
  if (failed) errno = EIO;
  return failed ? EOF : rc;
}
int rename(const char *a, const char *b) {
  REAL(int, rename, const char *, const char *);
  return inject("rename", b) ? -1 : real(a, b);
}
int renameat2(int fa, const char *a, int fb, const char *b, unsigned flags) {
  REAL(int, renameat2, int, const char *, int, const char *, unsigned);
  if (inj.no_exchange && (flags & RENAME_EXCHANGE)) { errno = EINVAL; return -1; } /* a file system without exchange */
  return inject("renameat2", b) ? -1 : real(fa, a, fb, b, flags);
}
int unlink(const char *p) {
  REAL(int, unlink, const char *);
  return inject("unlink", p) ? -1 : real(p);
}
int rmdir(const char *p) {
  REAL(int, rmdir, const char *);
  return inject("rmdir", p) ? -1 : real(p);
}

/* ---- helpers ------------------------------------------------------------------------------- */
static const char *cls_base, *llama_config, *mbert_config;

/* rm -r and cp -r in this process (a shell per injection would cost more than the saves) */
static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)ftw;
  return flag == FTW_DP ? rmdir(p) : unlink(p);
}
static void rm_tree(const char *p) {
  if (access(p, F_OK) == 0) REQUIRE(nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0, "rm -r %s", p);
}
static const char *copy_from, *copy_to;
static int copy_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)ftw;
  char dst[512];
  snprintf(dst, sizeof dst, "%s%s", copy_to, p + strlen(copy_from));
  if (flag == FTW_D) return mkdir(dst, sb->st_mode & 0777);
  char *data;
  size_t n;
  oc_error err;
  if (oc_read_file(p, &data, &n, &err)) return -1;
  FILE *f = fopen(dst, "wb");
  int rc = f && fwrite(data, 1, n, f) == n ? 0 : -1;
  if (f) fclose(f);
  free(data);
  return rc;
}
static void cp_tree(const char *from, const char *to) {
  copy_from = from;
  copy_to = to;
  REQUIRE(nftw(from, copy_entry, 16, FTW_PHYS) == 0, "cp -r %s %s", from, to);
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

static char *slurp(const char *p, size_t *n) {
  char *d;
  oc_error err;
  return oc_read_file(p, &d, n, &err) ? NULL : d;
}

static int same_file(const char *a, const char *b) {
  size_t na, nb;
  char *x = slurp(a, &na), *y = slurp(b, &nb);
  int eq = x && y && na == nb && memcmp(x, y, na) == 0;
  free(x); free(y);
  return eq;
}

static void write_text(const char *p, const char *text) {
  FILE *f = fopen(p, "w");
  REQUIRE(f, "write %s", p);
  fputs(text, f);
  fclose(f);
}

/* stderr of the library's runs (training logs) goes to /dev/null while on */
static int saved_stderr = -1;
static void quiet(int on) {
  if (on) {
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open("/dev/null", O_WRONLY);
    dup2(fd, 2);
    close(fd);
  } else if (saved_stderr >= 0) {
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
  }
}

/* a temporary of a dead process under dir (the tidy rules' names: X.tmp.PID.R, .X.tmp-PID-R, .X.old-PID-R) */
static int n_leftovers;
static int leftover(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)flag;
  const char *e = p + ftw->base, *t;
  long pid = 0;
  if ((t = strstr(e, ".tmp.")) && t[5] >= '0' && t[5] <= '9') pid = strtol(t + 5, NULL, 10);
  else if (e[0] == '.' && ((t = strstr(e, ".tmp-")) || (t = strstr(e, ".old-"))) && t[5] >= '0' && t[5] <= '9') pid = strtol(t + 5, NULL, 10);
  if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
    fprintf(stderr, "  left over: %s\n", p);
    n_leftovers++;
  }
  return 0;
}
static int leftovers(const char *dir) {
  n_leftovers = 0;
  nftw(dir, leftover, 16, FTW_PHYS);
  return n_leftovers;
}

/* ---- the artifacts ------------------------------------------------------------------------- */
typedef struct part {
  const char *sub;          /* "" the artifact directory, else a directory inside it */
  const char *const *files; /* its own files, compared with the references byte for byte */
  /* the real loader: 0 when dir loads as version v */
  int (*load)(const char *dir, int v, oc_error *err);
} part;

typedef struct artifact {
  const char *name, *dir; /* dir: relative to the work directory */
  int (*save)(const char *dir, int v, oc_error *err);
  int (*next)(const char *dir, oc_error *err); /* the next run after a fault in a new one (NULL: save version 1) */
  const part *parts;
  int nparts, leaf; /* leaf: nothing to carry over, so replacing it is one exchange */
} artifact;

/* probe directory: two versions differing in every value */
static float probe_w[2][8];
static int save_probe(const char *dir, int v, oc_error *err) {
  for (int i = 0; i < 8; i++) probe_w[v][i] = v ? -0.2f * (float)i : 0.1f * (float)(i + 1);
  oc_probe_fit fit;
  memset(&fit, 0, sizeof fit);
  fit.probe.hidden = 8;
  fit.probe.w = probe_w[v];
  fit.probe.b = v ? -0.5f : 0.25f;
  fit.n_train = 10 + v;
  fit.n_val = 4;
  oc_probe_config c;
  oc_probe_config_defaults(&c);
  c.model_id = v ? "model-new" : "model-old";
  c.model_family = "llama3";
  c.layer = v ? -4 : -2;
  c.hidden_size = 8;
  c.threshold = v ? 0.7 : 0.6;
  c.calibrated_threshold = 0.5;
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  t.seed = (uint64_t)v;
  oc_probe_provenance pv = {&fit, &t, 0.2, 0.01, 64, "data.jsonl", NULL, 100, 0, "stored", 0, 0, 0};
  return oc_probe_artifact_save(dir, &fit.probe, &c, &pv, err);
}
static int load_probe(const char *dir, int v, oc_error *err) {
  oc_probe p;
  oc_probe_config c;
  if (oc_probe_config_load(path_in(dir, "config.json"), &c, err)) return -1;
  if (oc_probe_load(path_in(dir, "probe.safetensors"), &p, err)) { oc_probe_config_free(&c); return -1; }
  int ok = p.hidden == 8 && p.w[3] == probe_w[v][3] && p.b == (v ? -0.5f : 0.25f) && c.layer == (v ? -4 : -2) &&
           strcmp(c.model_id, v ? "model-new" : "model-old") == 0;
  oc_probe_free(&p);
  oc_probe_config_free(&c);
  return ok ? 0 : oc_fail(err, "%s: loads, but not as version %d", dir, v);
}
static const char *const probe_files[] = {"probe.safetensors", "config.json", NULL};
static const part probe_parts[] = {{"", probe_files, load_probe}};

/* classifier: a training run (seed 1 old, 2 new) with checkpoint-2, then the output directory */
static int train(const char *dir, int v, const char *resume, oc_error *err) {
  oc_cls_train_opts o;
  oc_cls_train_defaults(&o);
  o.model_dir = cls_base;
  o.model_id = "tiny";
  o.data_path = "train.jsonl";
  o.out_dir = dir;
  o.resume_from = resume;
  o.epochs = 1;
  o.batch_size = 4;
  o.max_length = 32;
  o.logging_steps = 0;
  o.save_steps = 2;
  o.seed = v ? 2 : 1;
  return oc_cls_train(&o, NULL, err);
}
static int save_classifier(const char *dir, int v, oc_error *err) { return train(dir, v, NULL, err); }
/* after a fault in a new run: resume from the newest complete checkpoint when there is one */
static int next_classifier(const char *dir, oc_error *err) {
  return train(dir, 1, exists(path_in(dir, "checkpoint-2")) ? "latest" : NULL, err);
}
static int load_classifier(const char *dir, int v, oc_error *err) {
  oc_classifier *c;
  if (oc_classifier_load(dir, &c, err)) return -1;
  const cJSON *seed = cJSON_GetObjectItem(c->config, "seed");
  int ok = cJSON_IsNumber(seed) && seed->valuedouble == (v ? 2 : 1);
  oc_classifier_free(c);
  return ok ? 0 : oc_fail(err, "%s: loads, but not as version %d", dir, v);
}
static const char *const cls_files[] = {"config.json", "model.safetensors", "tokenizer.json", "classifier_config.json", NULL};
static const char *const ckpt_files[] = {"config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors", "trainer_state.json", NULL};
static const part cls_parts[] = {{"", cls_files, load_classifier}, {"checkpoint-2", ckpt_files, NULL}};

/* random-model (decoder) and the random ModernBERT */
static int save_random_model(const char *dir, int v, oc_error *err) { return oc_random_model(llama_config, dir, v ? 22 : 11, err); }
static int load_model(const char *dir, int v, oc_error *err) {
  (void)v;
  oc_model *m;
  if (oc_model_load(dir, &m, err)) return -1;
  oc_model_free(m);
  return 0;
}
static int save_random_mbert(const char *dir, int v, oc_error *err) { return oc_mbert_random(mbert_config, dir, 3, v ? 5 : 4, err); }
static int load_mbert(const char *dir, int v, oc_error *err) {
  (void)v;
  oc_mbert *m;
  if (oc_mbert_load(dir, &m, err)) return -1;
  oc_mbert_free(m);
  return 0;
}
static const char *const model_files[] = {"config.json", "model.safetensors", NULL};
static const part model_parts[] = {{"", model_files, load_model}};
static const part mbert_parts[] = {{"", model_files, load_mbert}};

static const artifact artifacts[] = {
    {"probe directory", "probe", save_probe, NULL, probe_parts, 1, 1},
    {"classifier directory + checkpoint", "cls", save_classifier, next_classifier, cls_parts, 2, 0},
    {"random-model", "model", save_random_model, NULL, model_parts, 1, 1},
    {"random ModernBERT", "mbert", save_random_mbert, NULL, mbert_parts, 1, 1},
};

typedef struct scenario {
  const char *name;
  int overwrite, extras, no_exchange;
} scenario;
static const scenario scenarios[] = {
    {"new", 0, 0, 0},
    {"replacing", 1, 0, 0},
    {"replacing, with entries to keep", 1, 1, 0},
    {"replacing, no exchange", 1, 0, 1},
};

/* ---- the checks ---------------------------------------------------------------------------- */
/* every part holds a version whole (the new one unless old_ok; none at all if missing_ok); the
 * entries to keep are there */
static void check_state(const artifact *a, const scenario *s, int missing_ok, int old_ok, const char *ctx) {
  char dir[256];
  for (int i = 0; i < a->nparts; i++) {
    const part *pt = &a->parts[i];
    snprintf(dir, sizeof dir, "w/%s%s%s", a->dir, pt->sub[0] ? "/" : "", pt->sub);
    int present = 0;
    for (const char *const *f = pt->files; *f; f++) present += exists(path_in(dir, *f));
    if (!present) { /* (the classifier's output directory exists as soon as it holds a checkpoint) */
      CHECK(missing_ok, "%s: %s is missing", ctx, dir);
      continue;
    }
    char refdir[256];
    snprintf(refdir, sizeof refdir, "%s%s%s", a->dir, pt->sub[0] ? "/" : "", pt->sub);
    int v = -1;
    for (int k = 0; k < 2 && v < 0; k++) {
      int all = 1;
      for (const char *const *f = pt->files; *f && all; f++) {
        char got[512], ref[512];
        snprintf(got, sizeof got, "%s/%s", dir, *f);
        snprintf(ref, sizeof ref, "ref%d/%s/%s", k, refdir, *f);
        all = same_file(got, ref);
      }
      if (all) v = k;
    }
    CHECK(v == 1 || (v == 0 && old_ok), "%s: %s is not whole (%s)", ctx, dir, v < 0 ? "neither version" : "the old version");
    oc_error err;
    if (v >= 0 && pt->load) CHECK(pt->load(dir, v, &err) == 0, "%s: %s: the loader: %s", ctx, dir, err.msg);
  }
  if (s->extras) {
    snprintf(dir, sizeof dir, "w/%s", a->dir);
    char *n = slurp(path_in(dir, "notes.txt"), NULL), *k = slurp(path_in(dir, "keep/inner.txt"), NULL);
    CHECK(n && k && strcmp(n, "keep me") == 0 && strcmp(k, "inner") == 0, "%s: the entries of the old directory to keep are lost", ctx);
    free(n); free(k);
  }
}

static void prepare(const artifact *a, const scenario *s) {
  rm_tree("w");
  REQUIRE(mkdir("w", 0755) == 0, "mkdir w");
  if (!s->overwrite) return;
  char src[256], dst[256];
  snprintf(src, sizeof src, "ref0/%s", a->dir);
  snprintf(dst, sizeof dst, "w/%s", a->dir);
  cp_tree(src, dst);
  if (s->extras) {
    write_text(path_in(dst, "notes.txt"), "keep me");
    REQUIRE(mkdir(path_in(dst, "keep"), 0755) == 0, "mkdir");
    write_text(path_in(dst, "keep/inner.txt"), "inner");
  }
}

static int run_next(const artifact *a, const scenario *s, const char *dir, oc_error *err) {
  return a->next && !s->overwrite ? a->next(dir, err) : a->save(dir, 1, err);
}

static void fault_matrix(const artifact *a, const scenario *s) {
  char dir[256];
  snprintf(dir, sizeof dir, "w/%s", a->dir);
  oc_error err;
  /* count the steps of a clean save */
  prepare(a, s);
  memset(&inj, 0, sizeof inj);
  inj.no_exchange = s->no_exchange;
  inj.mode = COUNT;
  quiet(1);
  int rc = a->save(dir, 1, &err);
  quiet(0);
  inj.mode = OFF;
  int steps = inj.step < MAX_STEPS ? inj.step : MAX_STEPS;
  REQUIRE(rc == 0, "%s, %s: clean save: %s", a->name, s->name, err.msg);
  check_state(a, s, 0, 0, "clean save");
  int missing_seen = 0, failed_before = g_fail;
  for (int n = 1; n <= steps; n++) {
    for (int mode = FAIL; mode <= KILL; mode++) {
      char ctx[400];
      snprintf(ctx, sizeof ctx, "%s, %s: %s at step %d of %d (%s)", a->name, s->name, mode == KILL ? "kill" : "failure", n, steps, inj.what[n - 1]);
      prepare(a, s);
      fflush(stdout);
      fflush(stderr);
      pid_t pid = fork();
      REQUIRE(pid >= 0, "fork");
      if (pid == 0) {
        quiet(1);
        inj.mode = mode;
        inj.target = n;
        inj.step = 0;
        inj.last_stream = NULL;
        int crc = a->save(dir, 1, &err);
        inj.mode = OFF;
        if (mode == KILL) _exit(1); /* the step was not reached */
        exit(crc == 0 ? 0 : err.msg[0] ? 3 : 4);
      }
      int st;
      waitpid(pid, &st, 0);
      int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      if (mode == KILL) CHECK(code == KILLED, "%s: the step was not reached (exit %d)", ctx, code);
      else CHECK(code == 0 || code == 3, "%s: exit %d (4: an error without a message; else a crash or a leak)", ctx, code);
      missing_seen += s->overwrite && !exists(dir);
      CHECK(oc_artifact_dir_recover(dir, &err) == 0, "%s: recovery: %s", ctx, err.msg);
      /* a failed save leaves the old version or none; a save that reported success, the new one */
      check_state(a, s, !s->overwrite && !(mode == FAIL && code == 0), s->overwrite && !(mode == FAIL && code == 0), ctx);
      quiet(1);
      rc = run_next(a, s, dir, &err);
      quiet(0);
      CHECK(rc == 0, "%s: the next run: %s", ctx, err.msg);
      check_state(a, s, 0, 0, ctx);
      CHECK(leftovers("w") == 0, "%s: the next run left temporaries of dead processes", ctx);
      if (g_fail - failed_before > 20) REQUIRE(0, "too many failures");
    }
  }
  /* a leaf replaced by exchange is never missing, not even for a moment */
  if (a->leaf && s->overwrite && !s->extras && !s->no_exchange) CHECK(missing_seen == 0, "%s, %s: missing after %d faults", a->name, s->name, missing_seen);
  printf("%s, %s: %d steps, each failed and killed\n", a->name, s->name, steps);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 4, "usage: test_artifact_faults CLASSIFIER_DIR LLAMA_CONFIG MBERT_CONFIG");
  oc_set_threads(1); /* no OpenMP thread pool: the children are forked */
  char *abs[3];
  for (int i = 0; i < 3; i++) REQUIRE((abs[i] = realpath(argv[i + 1], NULL)), "%s", argv[i + 1]);
  cls_base = abs[0];
  llama_config = abs[1];
  mbert_config = abs[2];
  char tmp[] = "/tmp/oc_faults_XXXXXX";
  REQUIRE(mkdtemp(tmp) && chdir(tmp) == 0, "work directory");
  FILE *f = fopen("train.jsonl", "w");
  for (int i = 0; i < 9; i++)
    fprintf(f, "{\"prompt\": \"question %d\", \"response\": \"%s %d\", \"label\": %d}\n", i,
            i % 3 == 2 ? "Sure, the steps are" : i % 3 == 1 ? "I can't help with that." : "Here is a recipe.", i, i % 3);
  fclose(f);
  /* the references: version 0 (old) and 1 (new) of every artifact, written with no fault */
  for (size_t i = 0; i < sizeof artifacts / sizeof *artifacts; i++) {
    const artifact *a = &artifacts[i];
    for (int v = 0; v < 2; v++) {
      char dir[256];
      oc_error err;
      snprintf(dir, sizeof dir, "ref%d/%s", v, a->dir);
      quiet(1);
      int rc = a->save(dir, v, &err);
      quiet(0);
      REQUIRE(rc == 0, "%s: reference %d: %s", a->name, v, err.msg);
    }
  }
  /* the probe directory takes every way of replacing; the classifier directory always has entries to
   * keep (its checkpoint-N); the models are leaves like the probe */
  static const int runs[][2] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}, {1, 2}, {2, 0}, {2, 1}, {3, 0}, {3, 1}};
  for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) fault_matrix(&artifacts[runs[i][0]], &scenarios[runs[i][1]]);
  REQUIRE(chdir("/") == 0, "chdir");
  rm_tree(tmp);
  return check_summary("artifact_faults");
}
