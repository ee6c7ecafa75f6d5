/* Directories written whole (oc_atomic_dir) and the on-disk rules of docs/formats.md: a new
 * directory, a replacement by exchange, a replacement that keeps the old directory's other entries,
 * abort, bad destinations, links; the recovery rule (a set-aside copy of a dead writer restored, or
 * settled when the new version is in place) and the cleanup rule (temporaries of dead processes
 * removed, those of live ones and look-alike names left alone). The fault injection over real
 * artifacts is tests/test_artifact_faults.c. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "opencon/base.h"
#include "opencon/probe.h"

static char tmp[] = "/tmp/oc_atomic_XXXXXX";

static void put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  REQUIRE(f, "write %s", path);
  fputs(text, f);
  fclose(f);
}

/* the file's text, "" when unreadable (static buffer) */
static const char *text_of(const char *path) {
  static char buf[256];
  FILE *f = fopen(path, "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = 0;
  if (f) fclose(f);
  return buf;
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

/* entries of dir other than "." and "..", sorted, comma-joined (static buffer) */
static const char *entries(const char *dir) {
  static char buf[1024];
  struct dirent **v;
  int n = scandir(dir, &v, NULL, alphasort), k = 0;
  buf[0] = 0;
  for (int i = 0; i < n; i++) {
    if (strcmp(v[i]->d_name, ".") && strcmp(v[i]->d_name, ".."))
      k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%s", k ? "," : "", v[i]->d_name);
    free(v[i]);
  }
  if (n >= 0) free(v);
  return n < 0 ? "(none)" : buf;
}

/* write an artifact of two files (a.txt, b.txt) with the given texts into dir */
static int write_ab(const char *dir, const char *a, const char *b, oc_error *err) {
  oc_atomic_dir d;
  if (oc_atomic_dir_open(&d, dir, err)) return -1;
  char *pa = oc_atomic_dir_file(&d, "a.txt"), *pb = oc_atomic_dir_file(&d, "b.txt");
  int rc = oc_write_file_atomic(pa, a, strlen(a), err) || oc_write_file_atomic(pb, b, strlen(b), err);
  free(pa); free(pb);
  if (rc) { oc_atomic_dir_abort(&d); return -1; }
  return oc_atomic_dir_commit(&d, err);
}

static long dead_pid(void) {
  pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, NULL, 0);
  return (long)p;
}

static void test_writes(void) {
  oc_error err;
  REQUIRE(mkdir("w", 0755) == 0, "mkdir");
  /* new, into a parent that does not exist yet */
  CHECK(write_ab("w/sub/x", "a1", "b1", &err) == 0, "new: %s", err.msg);
  struct stat st;
  CHECK(stat("w/sub/x", &st) == 0 && (st.st_mode & 0777) == 0755, "a new directory is 0755, not mkdtemp's 0700");
  CHECK(strcmp(entries("w/sub/x"), "a.txt,b.txt") == 0 && strcmp(entries("w/sub"), "x") == 0, "new: %s / %s", entries("w/sub/x"), entries("w/sub"));
  /* replaced with the same set of files: one exchange, nothing left beside it */
  ino_t before = st.st_ino;
  CHECK(write_ab("w/sub/x", "a2", "b2", &err) == 0, "replace: %s", err.msg);
  CHECK(strcmp(text_of("w/sub/x/a.txt"), "a2") == 0 && strcmp(text_of("w/sub/x/b.txt"), "b2") == 0 && strcmp(entries("w/sub"), "x") == 0,
        "replaced: %s", entries("w/sub"));
  CHECK(stat("w/sub/x", &st) == 0 && st.st_ino != before, "the directory itself was replaced");
  /* replaced while holding other entries: they are kept (a checkpoint-N/, a journal, a user's file) */
  REQUIRE(mkdir("w/sub/x/checkpoint-1", 0755) == 0, "mkdir");
  put("w/sub/x/checkpoint-1/s.json", "ck");
  put("w/sub/x/notes.txt", "mine");
  CHECK(write_ab("w/sub/x/", "a3", "b3", &err) == 0, "replace with extras: %s", err.msg);
  CHECK(strcmp(entries("w/sub/x"), "a.txt,b.txt,checkpoint-1,notes.txt") == 0 && strcmp(text_of("w/sub/x/a.txt"), "a3") == 0 &&
            strcmp(text_of("w/sub/x/checkpoint-1/s.json"), "ck") == 0 && strcmp(text_of("w/sub/x/notes.txt"), "mine") == 0 &&
            strcmp(entries("w/sub"), "x") == 0,
        "extras kept: %s / %s", entries("w/sub/x"), entries("w/sub"));
  /* abort: nothing changes, the temporary is gone */
  oc_atomic_dir d;
  REQUIRE(oc_atomic_dir_open(&d, "w/sub/x", &err) == 0, "%s", err.msg);
  char *p = oc_atomic_dir_file(&d, "a.txt");
  CHECK(strstr(p, "w/sub/.x.tmp-") && oc_write_file_atomic(p, "zz", 2, &err) == 0, "files go to PARENT/.NAME.tmp-PID-XXXXXX: %s", p);
  free(p);
  oc_atomic_dir_abort(&d);
  CHECK(strcmp(text_of("w/sub/x/a.txt"), "a3") == 0 && strcmp(entries("w/sub"), "x") == 0, "abort: %s", entries("w/sub"));
  /* a link to a directory: the directory is replaced, the link stays */
  REQUIRE(symlink("sub/x", "w/link") == 0, "symlink");
  CHECK(write_ab("w/link", "a4", "b4", &err) == 0, "through a link: %s", err.msg);
  CHECK(lstat("w/link", &st) == 0 && S_ISLNK(st.st_mode) && strcmp(text_of("w/sub/x/a.txt"), "a4") == 0 && exists("w/sub/x/notes.txt"),
        "the link stays, its directory is replaced");
  /* bad destinations */
  put("w/file", "precious");
  CHECK(write_ab("w/file", "a", "b", &err) != 0 && strstr(err.msg, "w/file exists and is not a directory") &&
            strcmp(text_of("w/file"), "precious") == 0,
        "a file in the way: %s", err.msg);
  static const char *const bad[] = {".", "..", "/", "w/..", "w/."};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK(write_ab(bad[i], "a", "b", &err) != 0 && strstr(err.msg, "must be named by its own name"), "%s: %s", bad[i], err.msg);
  CHECK(strcmp(entries("w"), "file,link,sub") == 0, "nothing left by the refusals: %s", entries("w"));
}

static void test_recovery(void) {
  oc_error err;
  long dead = dead_pid(), live = (long)getpid();
  char old[128], tmpd[128], other[128];
  REQUIRE(mkdir("r", 0755) == 0, "mkdir");
  /* killed between the two renames: the artifact is missing, its old version aside, the new one in a temporary */
  snprintf(old, sizeof old, "r/.x.old-%ld-AbC123", dead);
  snprintf(tmpd, sizeof tmpd, "r/.x.tmp-%ld-AbC123", dead);
  REQUIRE(mkdir(old, 0755) == 0 && mkdir(tmpd, 0755) == 0, "mkdir");
  put(path_in(old, "a.txt"), "old");
  put(path_in(tmpd, "a.txt"), "new");
  CHECK(oc_artifact_dir_recover("r/x", &err) == 0, "recover: %s", err.msg);
  CHECK(strcmp(text_of("r/x/a.txt"), "old") == 0 && strcmp(entries("r"), "x") == 0, "the old version restored, the temporary removed: %s", entries("r"));
  /* killed while moving the old version's other entries into the new one: the move is finished */
  REQUIRE(mkdir(old, 0755) == 0 && mkdir(path_in(old, "checkpoint-2"), 0755) == 0, "mkdir");
  put(path_in(old, "a.txt"), "older");
  put(path_in(old, "checkpoint-2/s.json"), "ck2");
  CHECK(oc_artifact_dir_recover("r/x", &err) == 0, "recover: %s", err.msg);
  CHECK(strcmp(text_of("r/x/a.txt"), "old") == 0 && strcmp(text_of("r/x/checkpoint-2/s.json"), "ck2") == 0 && strcmp(entries("r"), "x") == 0,
        "settled: the extra entry moved in, the superseded file dropped: %s / %s", entries("r/x"), entries("r"));
  /* a live writer's set-aside copy and temporary are left alone, even with the artifact missing */
  snprintf(old, sizeof old, "r/.y.old-%ld-AbC123", live);
  snprintf(tmpd, sizeof tmpd, "r/.y.tmp-%ld-XyZ789", live);
  REQUIRE(mkdir(old, 0755) == 0 && mkdir(tmpd, 0755) == 0, "mkdir");
  CHECK(oc_artifact_dir_recover("r/y", &err) == 0 && exists(old) && exists(tmpd) && !exists("r/y"), "a live writer's work is left alone");
  oc_tidy_dir("r");
  CHECK(exists(old) && exists(tmpd), "tidy leaves a live writer's work alone");
  /* writing an artifact tidies its parent: another artifact's temporary of a dead writer goes */
  snprintf(other, sizeof other, "r/.z.tmp-%ld-Qwe456", dead);
  REQUIRE(mkdir(other, 0755) == 0, "mkdir");
  put(path_in(other, "partial"), "p");
  CHECK(write_ab("r/w", "a", "b", &err) == 0 && !exists(other) && exists(old), "open tidies the parent: %s", entries("r"));
  REQUIRE(rmdir(old) == 0 && rmdir(tmpd) == 0, "rmdir");
  /* the probe config loader applies the rule to its directory */
  snprintf(old, sizeof old, "r/.probe.old-%ld-AbC123", dead);
  REQUIRE(mkdir(old, 0755) == 0, "mkdir");
  put(path_in(old, "config.json"), "{\"model_id\": \"m\", \"layer\": -3}");
  oc_probe_config pc;
  CHECK(oc_probe_config_load("r/probe/config.json", &pc, &err) == 0 && pc.layer == -3 && exists("r/probe/config.json") && !exists(old),
        "oc_probe_config_load restores its set-aside directory: %s", err.msg);
  oc_probe_config_free(&pc);
  CHECK(oc_probe_config_load("r/nothing/config.json", &pc, &err) != 0 && err.code == OC_ERR_NOT_FOUND, "nothing to restore: %s", err.msg);
}

static void test_file_temporaries(void) {
  oc_error err;
  long dead = dead_pid(), live = (long)getpid();
  char f_dead[128], f_live[128], g_dead[128];
  REQUIRE(mkdir("f", 0755) == 0, "mkdir");
  snprintf(f_dead, sizeof f_dead, "f/r.json.tmp.%ld.AbC123", dead);
  snprintf(f_live, sizeof f_live, "f/r.json.tmp.%ld.AbC123", live);
  snprintf(g_dead, sizeof g_dead, "f/g.json.tmp.%ld.AbC123", dead);
  put(f_dead, "x");
  put(f_live, "x");
  put(g_dead, "x");
  /* names that only look like temporaries: never touched */
  static const char *const lookalikes[] = {"f/notes.tmp.backup", "f/r.json.tmp.12.ab-def", "f/r.json.tmp.x1.abcdef", "f/.x.tmp-abc-defghi",
                                           "f/.x.old-12-short",  "f/.tmp-12-abcdef",      "f/x.old-12-abcdef",      "f/.tmp.12.abcdef"};
  for (size_t i = 0; i < sizeof lookalikes / sizeof *lookalikes; i++) put(lookalikes[i], "user");
  char old_file[128];
  snprintf(old_file, sizeof old_file, "f/.q.old-%ld-AbC123", dead); /* a file, not a set-aside directory */
  put(old_file, "user");
  CHECK(oc_write_file_atomic("f/r.json", "{}", 2, &err) == 0, "%s", err.msg);
  CHECK(!exists(f_dead) && exists(f_live) && exists(g_dead), "writing r.json removes its own temporaries of dead writers only");
  oc_tidy_dir("f");
  CHECK(!exists(g_dead) && exists(f_live), "tidy removes every dead writer's temporary");
  int all = 1;
  for (size_t i = 0; i < sizeof lookalikes / sizeof *lookalikes; i++) all &= exists(lookalikes[i]);
  CHECK(all && exists(old_file) && !exists("f/q"), "look-alike names are left alone: %s", entries("f"));
  oc_atomic_file af;
  REQUIRE(oc_atomic_open(&af, "f/s.bin", &err) == 0, "%s", err.msg);
  char want[64];
  snprintf(want, sizeof want, "f/s.bin.tmp.%ld.", live);
  CHECK(strncmp(af.tmp_path, want, strlen(want)) == 0 && strlen(af.tmp_path) == strlen(want) + 6, "temporary file name: %s", af.tmp_path);
  oc_atomic_abort(&af);
}

int main(void) {
  REQUIRE(mkdtemp(tmp) && chdir(tmp) == 0, "work directory");
  test_writes();
  test_recovery();
  test_file_temporaries();
  REQUIRE(chdir("/") == 0, "chdir");
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  system(cmd);
  return check_summary("atomic_dir");
}
