/* Atomic outputs: files (a temporary file, fsync, rename) and artifact directories written whole
 * (a temporary sibling directory, fsync, then one exchange or two renames), and the cleanup and
 * recovery of what a killed writer leaves behind. The on-disk rules are in docs/formats.md
 * ("Temporary names, recovery, cleanup").
 *
 * Temporary names carry the writer's pid, so that a later run can tell the leftovers of a dead
 * writer (removed or restored) from the work of a live one (left alone):
 *   DIR/NAME.tmp.PID.XXXXXX     a file being written (oc_atomic_open)
 *   PARENT/.NAME.tmp-PID-XXXXXX  a directory being written, or an old version being removed
 *   PARENT/.NAME.old-PID-XXXXXX  the previous version of PARENT/NAME, set aside between two renames */
#include "opencon/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- temporary names ----------------------------------------------------------------------- */
typedef enum { TEMP_NONE, TEMP_FILE, TEMP_DIR, TEMP_OLD } temp_kind;

static int is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Which temporary the directory entry e is, the artifact it belongs to (e + *name_off, *name_len
 * bytes) and its writer's pid; TEMP_NONE for any other name. */
static temp_kind parse_temp(const char *e, size_t *name_off, size_t *name_len, long *pid) {
  size_t n = strlen(e);
  if (n < 7) return TEMP_NONE;
  for (size_t i = n - 6; i < n; i++)
    if (!is_alnum(e[i])) return TEMP_NONE;
  char sep = e[n - 7];
  if (sep != '.' && sep != '-') return TEMP_NONE;
  size_t d = n - 7; /* digits are e[d0 .. d) */
  size_t d0 = d;
  while (d0 > 0 && e[d0 - 1] >= '0' && e[d0 - 1] <= '9') d0--;
  if (d0 == d || d - d0 > 9 || d0 < 6) return TEMP_NONE;
  const char *tag = e + d0 - 5; /* ".tmp." / ".tmp-" / ".old-" */
  long p = strtol(e + d0, NULL, 10);
  temp_kind k = TEMP_NONE;
  if (sep == '.' && strncmp(tag, ".tmp.", 5) == 0) k = TEMP_FILE;
  else if (sep == '-' && e[0] == '.' && strncmp(tag, ".tmp-", 5) == 0) k = TEMP_DIR;
  else if (sep == '-' && e[0] == '.' && strncmp(tag, ".old-", 5) == 0) k = TEMP_OLD;
  size_t off = k == TEMP_FILE ? 0 : 1, end = d0 - 5;
  if (k == TEMP_NONE || end <= off) return TEMP_NONE;
  *name_off = off;
  *name_len = end - off;
  *pid = p;
  return k;
}

/* A process with this pid exists on this machine (EPERM: it exists, owned by someone else). */
static int pid_alive(long pid) { return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM); }

/* ---- small file-system helpers ------------------------------------------------------------- */
static char *join2(const char *a, const char *b) {
  char *s = oc_path_join(a, b);
  if (!s) errno = ENOMEM;
  return s;
}

/* "%s/.%s.%s-%ld-%s": the temporary or set-aside name of NAME in PARENT. */
static char *sibling_name(const char *parent, const char *name, const char *tag, long pid, const char *suffix) {
  size_t n = strlen(parent) + strlen(name) + strlen(suffix) + 48;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s/.%s.%s-%ld-%s", parent, name, tag, pid, suffix);
  return s;
}

/* PARENT and NAME of a path, trailing slashes ignored ("a/b/" -> "a", "b"; "b" -> ".", "b"). */
static int split_path(const char *path, char **parent, char **name, oc_error *err) {
  *parent = *name = NULL;
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  size_t s = n;
  while (s > 0 && path[s - 1] != '/') s--;
  size_t nl = n - s;
  if (nl == 0 || (nl == 1 && path[s] == '.') || (nl == 2 && path[s] == '.' && path[s + 1] == '.'))
    return oc_fail(err, "%s: a directory written whole must be named by its own name (not /, . or ..)", path);
  size_t pl = s;
  while (pl > 1 && path[pl - 1] == '/') pl--;
  *name = strndup(path + s, nl);
  *parent = s == 0 ? strdup(".") : strndup(path, pl);
  if (!*name || !*parent) {
    free(*name); free(*parent);
    *name = *parent = NULL;
    return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  }
  return 0;
}

/* The entry names of a directory without "." and ".." (read before anything in it is renamed);
 * NULL with errno set when it cannot be read. */
static char **list_dir(const char *path, size_t *n) {
  *n = 0;
  DIR *d = opendir(path);
  if (!d) return NULL;
  size_t cap = 16;
  char **v = malloc(cap * sizeof *v);
  struct dirent *e;
  while (v && (e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (*n == cap) {
      char **nv = realloc(v, (cap *= 2) * sizeof *v);
      if (!nv) break;
      v = nv;
    }
    if (!(v[*n] = strdup(e->d_name))) break;
    (*n)++;
  }
  int failed = !v || e != NULL;
  closedir(d);
  if (failed) {
    for (size_t i = 0; v && i < *n; i++) free(v[i]);
    free(v);
    errno = ENOMEM;
    return NULL;
  }
  return v;
}

static void free_list(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

static int remove_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)ftw;
  int rc = flag == FTW_DP || flag == FTW_DNR ? rmdir(p) : unlink(p);
  return rc != 0 && errno != ENOENT ? -1 : 0;
}

/* rm -r without following links or leaving the file system; a missing path is already removed. */
static int remove_tree(const char *path) {
  int rc = nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  return rc != 0 && errno != ENOENT ? -1 : 0;
}

/* fsync of a directory makes its entries (creations, renames) durable. Some file systems cannot
 * sync a directory (EINVAL); there is nothing more to do on them. */
static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd), e = errno;
  close(fd);
  errno = e;
  return rc != 0 && e != EINVAL ? -1 : 0;
}

/* ---- cleanup and recovery ------------------------------------------------------------------ */

/* The new version of DEST is in place and OLD holds the previous one: entries of OLD that DEST
 * lacks (checkpoints, a journal, a user's files) are moved into DEST, then OLD is renamed to a
 * temporary name (never restored) and removed. Until OLD is renamed, every entry it still holds is
 * whole, so a kill at any point loses nothing: the next tidy finishes the job. */
static int settle_aside(const char *old, const char *dest, const char *trash, oc_error *err) {
  size_t n;
  char **names = list_dir(old, &n);
  if (!names) return oc_fail_code(err, oc_errno_code(errno), "%s: cannot read: %s", old, strerror(errno));
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    char *from = join2(old, names[i]), *to = join2(dest, names[i]);
    struct stat st;
    if (!from || !to) rc = oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    else if (lstat(to, &st) != 0 && (errno != ENOENT || rename(from, to) != 0)) /* present in dest: superseded */
      rc = oc_fail_code(err, OC_ERR_IO, "%s: cannot move it back into %s: %s", from, dest, strerror(errno));
    free(from); free(to);
  }
  free_list(names, n);
  if (rc) return -1;
  if (fsync_dir(dest) != 0) return oc_fail_code(err, OC_ERR_IO, "%s: fsync failed: %s", dest, strerror(errno));
  if (rename(old, trash) != 0) return oc_fail_code(err, OC_ERR_IO, "%s: rename failed: %s", old, strerror(errno));
  remove_tree(trash); /* what is left is superseded; a failure leaves a temporary for the next tidy */
  return 0;
}

/* Tidy the entries of dir that belong to a dead writer (only those of artifact `only` when not
 * NULL): temporary files and directories are removed; a set-aside old version is restored when its
 * artifact is missing, else settled (its extra entries moved back, the rest removed). Returns -1
 * only when a missing artifact could not be restored; other failures leave the entry for the next
 * tidy. */
static int tidy(const char *dir, const char *only, oc_error *err) {
  size_t n;
  char **names = list_dir(dir, &n);
  if (!names) return 0;
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    size_t off, len;
    long pid;
    temp_kind k = parse_temp(names[i], &off, &len, &pid);
    if (k == TEMP_NONE || pid_alive(pid)) continue;
    char *name = strndup(names[i] + off, len);
    if (!name || (only && strcmp(name, only) != 0)) { free(name); continue; }
    char *path = join2(dir, names[i]), *dest = join2(dir, name);
    struct stat st, ds;
    if (path && dest && lstat(path, &st) == 0) {
      if (k == TEMP_FILE && S_ISREG(st.st_mode)) unlink(path);
      else if (k == TEMP_DIR && S_ISDIR(st.st_mode)) remove_tree(path);
      else if (k == TEMP_OLD && S_ISDIR(st.st_mode)) {
        int missing = lstat(dest, &ds) != 0;
        if (missing && errno == ENOENT) {
          if (rename(path, dest) != 0 && rc == 0)
            rc = oc_fail_code(err, OC_ERR_IO, "%s is missing and restoring its previous version %s failed: %s", dest, path, strerror(errno));
        } else if (!missing && S_ISDIR(ds.st_mode)) {
          char *trash = sibling_name(dir, name, "tmp", (long)getpid(), names[i] + strlen(names[i]) - 6);
          oc_error ignored;
          if (trash) settle_aside(path, dest, trash, &ignored);
          free(trash);
        }
      }
    }
    free(path); free(dest); free(name);
  }
  free_list(names, n);
  return rc;
}

void oc_tidy_dir(const char *dir) {
  oc_error ignored;
  tidy(dir, NULL, &ignored);
}

int oc_artifact_dir_recover(const char *path, oc_error *err) {
  char *parent, *name;
  if (split_path(path, &parent, &name, err)) return -1;
  int rc = tidy(parent, name, err);
  free(parent); free(name);
  return rc;
}

/* ---- files --------------------------------------------------------------------------------- */
static int atomic_open_at(oc_atomic_file *f, const char *path, oc_error *err);

/* What an atomic write of path replaces: nothing, or a regular file. A symlink to a regular file
 * is written through (*target: the file it names, malloc'd); a device, FIFO, socket or directory
 * is never replaced (as root, --out_path /dev/null would have turned /dev/null into a file). */
static int write_target(const char *path, char **target, oc_error *err) {
  struct stat st;
  *target = NULL;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT) return 0;
    return oc_fail_code(err, oc_errno_code(errno), "%s: %s", path, strerror(errno));
  }
  if (S_ISREG(st.st_mode)) return 0;
  if (!S_ISLNK(st.st_mode)) return oc_fail(err, "%s exists and is not a regular file (a directory, device, FIFO or socket is never replaced)", path);
  if (stat(path, &st) != 0) return oc_fail(err, "%s is a symbolic link to nothing (%s)", path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return oc_fail(err, "%s links to something that is not a regular file (never replaced)", path);
  if (!(*target = realpath(path, NULL))) return oc_fail_code(err, oc_errno_code(errno), "%s: %s", path, strerror(errno));
  return 0;
}

int oc_atomic_open(oc_atomic_file *f, const char *path, oc_error *err) {
  memset(f, 0, sizeof *f);
  char *target;
  if (write_target(path, &target, err)) return -1;
  int rc = atomic_open_at(f, target ? target : path, err);
  free(target);
  return rc;
}

static int atomic_open_at(oc_atomic_file *f, const char *path, oc_error *err) {
  char *parent, *name;
  if (split_path(path, &parent, &name, err)) return -1;
  oc_error ignored;
  tidy(parent, name, &ignored); /* this file's temporaries left by dead writers */
  free(parent); free(name);
  size_t n = strlen(path) + 48;
  f->path = strdup(path);
  f->tmp_path = malloc(n);
  if (!f->path || !f->tmp_path) { free(f->path); free(f->tmp_path); f->path = f->tmp_path = NULL; return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  snprintf(f->tmp_path, n, "%s.tmp.%ld.XXXXXX", path, (long)getpid());
  int fd = mkstemp(f->tmp_path);
  if (fd < 0) {
    int e = errno;
    free(f->path); free(f->tmp_path); f->path = f->tmp_path = NULL;
    return oc_fail_code(err, oc_errno_code(e), "%s: cannot create temporary file: %s", path, strerror(e));
  }
  fchmod(fd, 0644);
  f->fp = fdopen(fd, "wb");
  if (!f->fp) {
    close(fd); unlink(f->tmp_path);
    free(f->path); free(f->tmp_path); f->path = f->tmp_path = NULL;
    return oc_fail_code(err, OC_ERR_NOMEM, "%s: fdopen failed", path);
  }
  return 0;
}

int oc_atomic_write(oc_atomic_file *f, const void *data, size_t len, oc_error *err) {
  if (len && fwrite(data, 1, len, (FILE *)f->fp) != len)
    return oc_fail_code(err, OC_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
  return 0;
}

void oc_atomic_abort(oc_atomic_file *f) {
  if (f->fp) fclose((FILE *)f->fp);
  if (f->tmp_path) unlink(f->tmp_path);
  free(f->path); free(f->tmp_path);
  memset(f, 0, sizeof *f);
}

int oc_atomic_commit(oc_atomic_file *f, oc_error *err) {
  FILE *fp = (FILE *)f->fp;
  int rc = 0;
  if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) rc = oc_fail_code(err, OC_ERR_IO, "%s: flush failed: %s", f->path, strerror(errno));
  if (fclose(fp) != 0 && rc == 0) rc = oc_fail_code(err, OC_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
  f->fp = NULL;
  if (rc == 0 && rename(f->tmp_path, f->path) != 0) rc = oc_fail_code(err, OC_ERR_IO, "%s: rename failed: %s", f->path, strerror(errno));
  if (rc != 0) unlink(f->tmp_path);
  free(f->path); free(f->tmp_path);
  memset(f, 0, sizeof *f);
  return rc;
}

int oc_write_file_atomic(const char *path, const void *data, size_t len, oc_error *err) {
  oc_atomic_file f;
  if (oc_atomic_open(&f, path, err)) return -1;
  if (oc_atomic_write(&f, data, len, err)) { oc_atomic_abort(&f); return -1; }
  return oc_atomic_commit(&f, err);
}

/* ---- directories --------------------------------------------------------------------------- */
static void dir_free(oc_atomic_dir *d) {
  free(d->path); free(d->dest); free(d->parent); free(d->name); free(d->tmp_path);
  memset(d, 0, sizeof *d);
}

int oc_atomic_dir_open(oc_atomic_dir *d, const char *path, oc_error *err) {
  memset(d, 0, sizeof *d);
  struct stat st;
  char *real = NULL;
  /* a link to a directory: the directory it names is replaced, the link stays */
  if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode) && !(real = realpath(path, NULL)))
    return oc_fail_code(err, oc_errno_code(errno), "%s: cannot resolve the link: %s", path, strerror(errno));
  int rc = split_path(real ? real : path, &d->parent, &d->name, err);
  free(real);
  if (rc) return -1;
  d->path = strdup(path);
  d->dest = join2(d->parent, d->name);
  d->tmp_path = sibling_name(d->parent, d->name, "tmp", (long)getpid(), "XXXXXX");
  if (!d->path || !d->dest || !d->tmp_path) { dir_free(d); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
  if (oc_mkdirs(d->parent, err)) { dir_free(d); return -1; }
  /* (a set-aside copy of this directory that cannot be restored is settled once the new version is in place) */
  oc_tidy_dir(d->parent);
  if (stat(d->dest, &st) == 0 && !S_ISDIR(st.st_mode)) { oc_fail(err, "%s exists and is not a directory", path); dir_free(d); return -1; }
  if (!mkdtemp(d->tmp_path)) {
    int e = errno;
    oc_fail_code(err, oc_errno_code(e), "%s: cannot create a temporary directory in %s: %s", path, d->parent, strerror(e));
    dir_free(d);
    return -1;
  }
  chmod(d->tmp_path, 0755); /* mkdtemp makes it private; the artifact is not */
  return 0;
}

char *oc_atomic_dir_file(const oc_atomic_dir *d, const char *name) { return oc_path_join(d->tmp_path, name); }

void oc_atomic_dir_abort(oc_atomic_dir *d) {
  if (d->tmp_path) remove_tree(d->tmp_path);
  dir_free(d);
}

/* 1 when dest holds an entry that tmp lacks (it must be carried over), 0 when not, -1 on error. */
static int has_extra_entries(const char *dest, const char *tmp) {
  size_t n;
  char **names = list_dir(dest, &n);
  if (!names) return -1;
  int extra = 0;
  for (size_t i = 0; i < n && !extra; i++) {
    char *p = join2(tmp, names[i]);
    struct stat st;
    extra = !p ? -1 : lstat(p, &st) != 0 ? 1 : 0;
    free(p);
  }
  free_list(names, n);
  return extra;
}

/* Replace an existing dest by two renames: dest -> .NAME.old-PID-XXXXXX, tmp -> dest; then the old
 * version's extra entries move into the new one and the rest is removed (settle_aside). */
static int replace_aside(oc_atomic_dir *d, oc_error *err) {
  const char *suffix = d->tmp_path + strlen(d->tmp_path) - 6;
  char *old = sibling_name(d->parent, d->name, "old", (long)getpid(), suffix);
  if (!old) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
  int rc = 0;
  if (rename(d->dest, old) != 0) rc = oc_fail_code(err, OC_ERR_IO, "%s: cannot set the old version aside: %s", d->path, strerror(errno));
  else if (rename(d->tmp_path, d->dest) != 0) {
    rc = oc_fail_code(err, OC_ERR_IO, "%s: rename failed: %s", d->path, strerror(errno));
    rename(old, d->dest); /* put the old version back; if that fails too, the recovery rule restores it */
  } else {
    /* the new version is in place (committed: no error from here on but the parent's fsync); the
     * set-aside copy goes to the now free temporary name. Settling it is best effort: what a
     * failure leaves, the recovery rule finishes at the next tidy. */
    oc_error ignored;
    settle_aside(old, d->dest, d->tmp_path, &ignored);
    if (fsync_dir(d->parent) != 0) rc = oc_fail_code(err, OC_ERR_IO, "%s: fsync failed: %s", d->parent, strerror(errno));
  }
  free(old);
  return rc;
}

static int commit_dir(oc_atomic_dir *d, oc_error *err) {
  if (fsync_dir(d->tmp_path) != 0) return oc_fail_code(err, OC_ERR_IO, "%s: fsync failed: %s", d->tmp_path, strerror(errno));
  struct stat st;
  if (lstat(d->dest, &st) != 0) {
    if (errno != ENOENT) return oc_fail_code(err, oc_errno_code(errno), "%s: %s", d->path, strerror(errno));
    if (rename(d->tmp_path, d->dest) != 0) return oc_fail_code(err, OC_ERR_IO, "%s: rename failed: %s", d->path, strerror(errno));
    if (fsync_dir(d->parent) != 0) return oc_fail_code(err, OC_ERR_IO, "%s: fsync failed: %s", d->parent, strerror(errno));
    return 0;
  }
  if (!S_ISDIR(st.st_mode)) return oc_fail(err, "%s exists and is not a directory", d->path);
  int extra = has_extra_entries(d->dest, d->tmp_path);
  if (extra < 0) return oc_fail_code(err, oc_errno_code(errno), "%s: cannot read: %s", d->path, strerror(errno));
  if (!extra) {
    /* one atomic step: the new version takes the name, the old one the temporary name */
    if (renameat2(AT_FDCWD, d->tmp_path, AT_FDCWD, d->dest, RENAME_EXCHANGE) == 0) {
      int rc = fsync_dir(d->parent) != 0 ? oc_fail_code(err, OC_ERR_IO, "%s: fsync failed: %s", d->parent, strerror(errno)) : 0;
      remove_tree(d->tmp_path); /* the old version; a failure leaves a temporary for the next tidy */
      return rc;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
      return oc_fail_code(err, OC_ERR_IO, "%s: rename failed: %s", d->path, strerror(errno));
  }
  return replace_aside(d, err);
}

int oc_atomic_dir_commit(oc_atomic_dir *d, oc_error *err) {
  int rc = commit_dir(d, err);
  if (rc) remove_tree(d->tmp_path); /* the unfinished new version, or a superseded old one: never the only copy */
  dir_free(d);
  return rc;
}

int oc_artifact_dir_check(const char *path, oc_error *err) {
  char *parent, *name;
  if (split_path(path, &parent, &name, err)) return -1;
  free(parent); free(name);
  struct stat st;
  if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) return oc_fail(err, "%s exists and is not a directory", path);
  return 0;
}
