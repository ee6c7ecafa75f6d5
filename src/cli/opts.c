/* Flag parsing and loading helpers shared by the CLI commands. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/hub.h"
#include "opts.h"


/* --key value and --key=value; flags without value get "1". */
int parse_opts(int argc, char **argv, opts *o, const char *const *flags) {
  o->n = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0) { fprintf(stderr, "error: unexpected argument \"%s\"\n", a); return -1; }
    if (o->n == MAXOPT) { fprintf(stderr, "error: too many options\n"); return -1; }
    const char *eq = strchr(a, '=');
    int is_flag = 0;
    for (const char *const *f = flags; f && *f; f++) if (strcmp(a + 2, *f) == 0) is_flag = 1;
    if (eq) {
      o->key[o->n] = strndup(a + 2, (size_t)(eq - a - 2));
      o->val[o->n++] = eq + 1;
    } else if (is_flag) {
      o->key[o->n] = strdup(a + 2);
      o->val[o->n++] = "1";
    } else {
      if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n", a); return -1; }
      o->key[o->n] = strdup(a + 2);
      o->val[o->n++] = argv[++i];
    }
  }
  return 0;
}

void free_opts(opts *o) { for (int i = 0; i < o->n; i++) free((char *)o->key[i]); }

const char *opt(const opts *o, const char *k) {
  for (int i = o->n - 1; i >= 0; i--) if (strcmp(o->key[i], k) == 0) return o->val[i];
  return NULL;
}

int check_known(const opts *o, const char *const *known) {
  for (int i = 0; i < o->n; i++) {
    int ok = 0;
    for (const char *const *k = known; *k; k++) if (strcmp(o->key[i], *k) == 0) ok = 1;
    if (!ok) { fprintf(stderr, "error: unknown option --%s\n", o->key[i]); return -1; }
  }
  return 0;
}

int die(const oc_error *e) {
  fprintf(stderr, "error: %s\n", e->msg);
  return 1;
}

int load_model(const char *model_id, oc_model **m, oc_error *err) {
  char *dir = NULL;
  if (oc_resolve_model(model_id, NULL, &dir, err)) return -1;
  int rc = oc_model_load(dir, m, err);
  free(dir);
  return rc;
}

int load_chat(const char *model_id, oc_chat **c, oc_error *err) {
  char *dir = NULL;
  if (oc_resolve_model(model_id, NULL, &dir, err)) return -1;
  int rc = oc_chat_load(dir, c, err);
  free(dir);
  return rc;
}
void apply_threads(const opts *o) {
  const char *t = opt(o, "threads");
  oc_set_threads(t ? atoi(t) : 0);
}

int cli_begin(int argc, char **argv, opts *o, const char *const *known, const char *const *flags) {
  if (parse_opts(argc, argv, o, flags) || check_known(o, known)) { free_opts(o); return -1; }
  apply_threads(o);
  return 0;
}

int opt_i64(const opts *o, const char *k, int64_t def, int64_t lo, int64_t hi, int64_t *out) {
  const char *v = opt(o, k);
  *out = def;
  if (!v) return 0;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (end == v || *end || errno || x < lo || x > hi) {
    fprintf(stderr, "error: --%s must be an integer in [%lld, %lld], got \"%s\"\n", k, (long long)lo, (long long)hi, v);
    return -1;
  }
  *out = x;
  return 0;
}

int opt_int(const opts *o, const char *k, int def, int lo, int hi, int *out) {
  int64_t x;
  if (opt_i64(o, k, def, lo, hi, &x)) return -1;
  *out = (int)x;
  return 0;
}

int opt_double(const opts *o, const char *k, double def, double lo, double hi, double *out) {
  const char *v = opt(o, k);
  *out = def;
  if (!v) return 0;
  char *end;
  double x = strtod(v, &end);
  if (end == v || *end || !isfinite(x) || x < lo || x > hi) {
    fprintf(stderr, "error: --%s must be a number in [%g, %g], got \"%s\"\n", k, lo, hi, v);
    return -1;
  }
  *out = x;
  return 0;
}
