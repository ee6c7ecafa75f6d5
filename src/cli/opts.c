/* The option-table parser, the --help generator and the typed accessors every CLI command uses. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "opencon/hub.h"
#include "opts.h"

static void vusage(const cli_command *c, const char *fmt, va_list ap) {
  fprintf(stderr, "error: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "; see opencon %s --help\n", c->name);
}

/* the directory a path would be created in exists */
static int parent_is_dir(const char *path) {
  const char *sl = strrchr(path, '/');
  if (!sl) return 1;
  if (sl == path) return 1; /* "/name" */
  char *dir = strndup(path, (size_t)(sl - path));
  struct stat st;
  int ok = dir && stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
  free(dir);
  return ok;
}

static int usage_error(const cli_command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const cli_command *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vusage(c, fmt, ap);
  va_end(ap);
  return 2;
}

int cli_usage_error(const cli_args *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vusage(a->cmd, fmt, ap);
  va_end(ap);
  return 2;
}

/* ---- the accepted range of a numeric flag, in words ---- */
static void range_text(const opt_spec *s, char *buf, size_t n) {
  if (s->type == OPT_DOUBLE) snprintf(buf, n, "from %g to %g", s->dlo, s->dhi);
  else if (s->hi == INT64_MAX) snprintf(buf, n, "%lld or more", (long long)s->lo);
  else snprintf(buf, n, "from %lld to %lld", (long long)s->lo, (long long)s->hi);
}

/* digits with an optional leading '-' (no spaces, no '+', no base prefixes), in int64 */
static int parse_whole(const char *t, int64_t *x) {
  const char *q = t + (*t == '-');
  if (!*q || strspn(q, "0123456789") != strlen(q)) return -1;
  errno = 0;
  long long v = strtoll(t, NULL, 10);
  if (errno == ERANGE) return -2;
  *x = v;
  return 0;
}

/* a decimal number: [-]digits[.digits][e[+-]digits] (no inf/nan, hex or spaces) */
static int parse_decimal(const char *t, double *x) {
  const char *p = t + (*t == '-');
  size_t a = strspn(p, "0123456789");
  p += a;
  size_t b = 0;
  if (*p == '.') { p++; b = strspn(p, "0123456789"); p += b; }
  if (a + b == 0) return -1;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    size_t e = strspn(p, "0123456789");
    if (!e) return -1;
    p += e;
  }
  if (*p) return -1;
  errno = 0;
  double v = strtod(t, NULL);
  if (!isfinite(v)) return -2;
  *x = v;
  return 0;
}

static int is_choice(const char *choices, const char *t) {
  size_t n = strlen(t);
  for (const char *p = choices; *p;) {
    size_t k = strcspn(p, "|");
    if (k == n && strncmp(p, t, n) == 0) return 1;
    p += k + (p[k] == '|');
  }
  return 0;
}

/* Checks and converts one value of flag s into v. Returns 0, or 2 after printing the error. */
static const char *metavar(const opt_spec *s);

static int set_value(const cli_command *c, const opt_spec *s, const char *t, opt_value *v) {
  char rng[96];
  struct stat st;
  switch (s->type) {
    case OPT_FLAG:
      if (strcmp(t, "true") == 0) v->i = 1;
      else if (strcmp(t, "false") == 0) v->i = 0;
      else return usage_error(c, "--%s takes no value, or =true / =false; got \"%s\"", s->name, t);
      break;
    case OPT_INT:
    case OPT_I64: {
      int rc = parse_whole(t, &v->i);
      range_text(s, rng, sizeof rng);
      if (rc == -1) return usage_error(c, "--%s must be a whole number %s; \"%s\" is not one", s->name, rng, t);
      if (rc == -2 || v->i < s->lo || v->i > s->hi) return usage_error(c, "--%s must be %s; got %s", s->name, rng, t);
      break;
    }
    case OPT_DOUBLE: {
      int rc = parse_decimal(t, &v->d);
      range_text(s, rng, sizeof rng);
      if (rc == -1) return usage_error(c, "--%s must be a number %s; \"%s\" is not one", s->name, rng, t);
      if (rc == -2 || v->d < s->dlo || v->d > s->dhi) return usage_error(c, "--%s must be %s; got %s", s->name, rng, t);
      break;
    }
    case OPT_STR:
      if (!*t && !(s->attr & OPT_EMPTY_OK)) return usage_error(c, "--%s is empty", s->name);
      break;
    case OPT_ARGS:
      if (!*t) return usage_error(c, "an empty %s argument", metavar(s));
      break;
    case OPT_CHOICE:
      if (!is_choice(s->choices, t)) return usage_error(c, "--%s must be one of %s; got \"%s\"", s->name, s->choices, t);
      break;
    case OPT_IN:
      if (!*t) return usage_error(c, "--%s is empty (a file name is expected)", s->name);
      if ((s->attr & OPT_STDIN) && strcmp(t, "-") == 0) break;
      if (stat(t, &st) != 0) return usage_error(c, "--%s %s: %s", s->name, t, errno == ENOENT ? "no such file" : strerror(errno));
      if (S_ISDIR(st.st_mode) && (s->attr & OPT_DIR_OK)) break;
      if (S_ISDIR(st.st_mode)) return usage_error(c, "--%s %s is a directory; a file is expected", s->name, t);
      if (!S_ISREG(st.st_mode)) return usage_error(c, "--%s %s is a device, FIFO or socket; a regular file is expected", s->name, t);
      break;
    case OPT_OUT:
      if (!*t) return usage_error(c, "--%s is empty (a file name is expected)", s->name);
      if (stat(t, &st) == 0 && S_ISDIR(st.st_mode)) return usage_error(c, "--%s %s is a directory; a file to write is expected", s->name, t);
      if (stat(t, &st) == 0 && !S_ISREG(st.st_mode))
        return usage_error(c, "--%s %s is a device, FIFO or socket; it is never replaced (a regular file to write is expected)", s->name, t);
      if (!parent_is_dir(t)) return usage_error(c, "--%s %s: its directory does not exist", s->name, t);
      break;
    case OPT_OUTDIR:
      if (!*t) return usage_error(c, "--%s is empty (a directory name is expected)", s->name);
      if (stat(t, &st) == 0 && !S_ISDIR(st.st_mode)) return usage_error(c, "--%s %s is a file; a directory is expected", s->name, t);
      break;
    case OPT_INTS: {
      oc_error err;
      int64_t *list;
      int n;
      if (oc_parse_int_list(t, &list, &n, &err)) return usage_error(c, "--%s: %s", s->name, err.msg);
      range_text(s, rng, sizeof rng);
      for (int k = 0; k < n; k++)
        if (list[k] < s->lo || list[k] > s->hi) {
          int rc = usage_error(c, "--%s: item %d is %lld; each must be %s", s->name, k + 1, (long long)list[k], rng);
          free(list);
          return rc;
        }
      free(v->list);
      v->list = list;
      v->n_list = n;
      break;
    }
  }
  v->text = t;
  if ((s->attr & OPT_REPEAT) || s->type == OPT_ARGS) {
    const char **all = realloc(v->all, sizeof *all * (size_t)(v->n_all + 1));
    if (!all) return usage_error(c, "out of memory");
    all[v->n_all++] = t;
    v->all = all;
  }
  return 0;
}

static void free_args(cli_args *a) {
  for (int i = 0; i < a->n; i++) { free(a->v[i].list); free(a->v[i].all); }
}

static int find_opt(const cli_command *c, const char *name, size_t len) {
  for (int i = 0; c->opts[i].name; i++)
    if (strlen(c->opts[i].name) == len && strncmp(c->opts[i].name, name, len) == 0) return i;
  return -1;
}

/* the row that takes the command's plain arguments, or -1 */
static int find_args(const cli_command *c) {
  for (int i = 0; c->opts[i].name; i++)
    if (c->opts[i].type == OPT_ARGS) return i;
  return -1;
}

/* 0: parsed; 2: usage error (printed) */
static int parse(const cli_command *c, int argc, char **argv, cli_args *a) {
  memset(a, 0, sizeof *a);
  a->cmd = c;
  while (c->opts[a->n].name) {
    if (a->n == CLI_MAX_OPTS) { fprintf(stderr, "internal error: %s has more than %d flags\n", c->name, CLI_MAX_OPTS); abort(); }
    a->v[a->n++].d = NAN;
  }
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    int args_row = find_args(c);
    if (args_row >= 0 && strncmp(arg, "--", 2) != 0) { /* the command takes plain arguments */
      if (set_value(c, &c->opts[args_row], arg, &a->v[args_row])) return 2;
      a->v[args_row].given = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0 || !arg[2]) return usage_error(c, "unexpected argument \"%s\" (flags start with --)", arg);
    const char *name = arg + 2, *eq = strchr(name, '=');
    int k = find_opt(c, name, eq ? (size_t)(eq - name) : strlen(name));
    if (k >= 0 && c->opts[k].type == OPT_ARGS) k = -1; /* (its name is not a flag) */
    if (k < 0) return usage_error(c, "unknown flag --%.*s", eq ? (int)(eq - name) : (int)strlen(name), name);
    const opt_spec *s = &c->opts[k];
    opt_value *v = &a->v[k];
    if (v->given && !(s->attr & OPT_REPEAT)) return usage_error(c, "--%s is given twice (it takes one value)", s->name);
    const char *val;
    if (eq) val = eq + 1;
    else if (s->type == OPT_FLAG) val = "true";
    else if (i + 1 >= argc) return usage_error(c, "--%s needs a value", s->name);
    else if (strncmp(argv[i + 1], "--", 2) == 0)
      return usage_error(c, "--%s needs a value, but the next argument is %s (write --%s=VALUE for a value that starts with --)", s->name, argv[i + 1], s->name);
    else val = argv[++i];
    if (set_value(c, s, val, v)) return 2;
    v->given = 1;
  }
  for (int k = 0; k < a->n; k++) {
    const opt_spec *s = &c->opts[k];
    if (!a->v[k].given && (s->attr & OPT_REQUIRED)) return usage_error(c, "--%s is required", s->name);
    if (!a->v[k].given && s->def && set_value(c, s, s->def, &a->v[k])) {
      fprintf(stderr, "internal error: the default of --%s does not parse\n", s->name);
      abort();
    }
  }
  return 0;
}

/* --threads: 0 = one per core; more than OPT_THREADS_PER_CORE per core only slows the kernels down */
static int apply_threads(const cli_args *a) {
  if (find_opt(a->cmd, "threads", 7) < 0) return 0;
  int t = arg_int(a, "threads");
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1) cores = 1;
  if (t > OPT_THREADS_PER_CORE * cores)
    return cli_usage_error(a, "--threads %d: this machine has %ld cores; at most %ld threads (%d per core) are allowed, 0 takes one per core", t,
                           cores, OPT_THREADS_PER_CORE * cores, OPT_THREADS_PER_CORE);
  oc_set_threads(t);
  return 0;
}

int cli_run(const cli_command *c, int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { cli_print_help(c, stdout); return 0; }
    if (strncmp(argv[i], "--help=", 7) == 0) return usage_error(c, "--help takes no value");
  }
  cli_args a;
  int rc = parse(c, argc, argv, &a);
  if (!rc) rc = apply_threads(&a);
  if (!rc) rc = c->run(&a);
  free_args(&a);
  return rc;
}

/* ---- --help ---- */
static const char *metavar(const opt_spec *s) {
  if (s->metavar) return s->metavar;
  switch (s->type) {
    case OPT_FLAG: return "";
    case OPT_INT:
    case OPT_I64: return "N";
    case OPT_DOUBLE: return "X";
    case OPT_CHOICE: return s->choices;
    case OPT_IN: return (s->attr & OPT_STDIN) ? "FILE|-" : "FILE";
    case OPT_OUT: return "FILE";
    case OPT_OUTDIR: return "DIR";
    case OPT_INTS: return "N,N,...";
    case OPT_ARGS: return "ARG";
    case OPT_STR: break;
  }
  return "TEXT";
}

/* words of text, wrapped at 100 columns, continuation lines indented by `indent` */
static void wrap(FILE *f, const char *text, int col, int indent) {
  for (const char *p = text; *p;) {
    while (*p == ' ') p++;
    size_t w = strcspn(p, " ");
    if (!w) break;
    if (col > indent && col + 1 + (int)w > 100) { fprintf(f, "\n%*s", indent, ""); col = indent; }
    else if (col > indent) { fputc(' ', f); col++; }
    fwrite(p, 1, w, f);
    col += (int)w;
    p += w;
  }
  fputc('\n', f);
}

/* "a" -> "a; b" */
static void append(char *buf, size_t n, const char *part) {
  size_t k = strlen(buf);
  snprintf(buf + k, n - k, "%s%s", k ? "; " : "", part);
}

void cli_print_help(const cli_command *c, FILE *f) {
  fprintf(f, "usage: opencon %s", c->name);
  for (const opt_spec *s = c->opts; s->name; s++)
    if (s->attr & OPT_REQUIRED) fprintf(f, " --%s %s", s->name, metavar(s));
  for (const opt_spec *s = c->opts; s->name; s++)
    if (s->type == OPT_ARGS) fprintf(f, " [%s ...]", metavar(s));
  fprintf(f, " [flags]\n\n%s\n\n", c->summary);
  for (const opt_spec *s = c->opts; s->name; s++)
    if (s->type == OPT_ARGS) {
      int n = fprintf(f, "  %s ...", metavar(s));
      fprintf(f, "%*s", n < 36 ? 36 - n : 1, "");
      wrap(f, s->help, 36, 36);
      fputc('\n', f);
    }
  fprintf(f, "flags:\n");
  enum { COL = 36 };
  for (const opt_spec *s = c->opts; s->name; s++) {
    if (s->type == OPT_ARGS) continue;
    char head[160], more[256] = "", rng[96] = "", text[1024];
    int n = snprintf(head, sizeof head, "  --%s%s%s", s->name, s->type == OPT_FLAG ? "" : " ", metavar(s));
    if (s->type == OPT_INT || s->type == OPT_I64 || s->type == OPT_DOUBLE) range_text(s, rng, sizeof rng);
    else if (s->type == OPT_INTS) {
      snprintf(rng, sizeof rng, "each ");
      range_text(s, rng + 5, sizeof rng - 5);
    }
    if (s->attr & OPT_REQUIRED) append(more, sizeof more, "required");
    if (s->def) {
      append(more, sizeof more, "default ");
      snprintf(more + strlen(more), sizeof more - strlen(more), "%s", s->def);
    }
    if (*rng) append(more, sizeof more, rng);
    if (s->attr & OPT_REPEAT) append(more, sizeof more, "repeatable");
    if (*more) snprintf(text, sizeof text, "%s (%s)", s->help, more);
    else snprintf(text, sizeof text, "%s", s->help);
    fputs(head, f);
    if (n >= COL - 1) { fprintf(f, "\n%*s", COL, ""); n = COL; }
    else { fprintf(f, "%*s", COL - n, ""); n = COL; }
    wrap(f, text, n, COL);
  }
  fprintf(f, "  -h, --help%*sthis help\n\n", COL - 12, "");
  wrap(f, "A flag without a value (--x) may also be written --x=true or --x=false. Values that start with -- are written "
          "--flag=VALUE. Each flag may be given once, except those marked repeatable.", 0, 0);
  if (c->notes) fprintf(f, "\n%s\n", c->notes);
}

/* ---- typed access ---- */
static const opt_value *lookup(const cli_args *a, const char *name, opt_type *type) {
  int k = find_opt(a->cmd, name, strlen(name));
  if (k < 0) { fprintf(stderr, "internal error: %s has no flag --%s\n", a->cmd->name, name); abort(); }
  *type = a->cmd->opts[k].type;
  return &a->v[k];
}

/* the value of `name`, which must be one of the types in ok (a bit per opt_type) */
static const opt_value *value(const cli_args *a, const char *name, unsigned ok) {
  opt_type t;
  const opt_value *v = lookup(a, name, &t);
  if (!(ok & (1u << t))) { fprintf(stderr, "internal error: --%s of %s read as the wrong type\n", name, a->cmd->name); abort(); }
  return v;
}
#define T(x) (1u << (x))
#define T_TEXT (T(OPT_STR) | T(OPT_CHOICE) | T(OPT_IN) | T(OPT_OUT) | T(OPT_OUTDIR) | T(OPT_INTS) | T(OPT_INT) | T(OPT_I64) | T(OPT_DOUBLE))

int arg_given(const cli_args *a, const char *name) {
  opt_type t;
  return lookup(a, name, &t)->given;
}
const char *arg_str(const cli_args *a, const char *name) { return value(a, name, T_TEXT)->text; }
int arg_flag(const cli_args *a, const char *name) { return (int)value(a, name, T(OPT_FLAG))->i; }
int arg_int(const cli_args *a, const char *name) { return (int)value(a, name, T(OPT_INT))->i; }
int64_t arg_i64(const cli_args *a, const char *name) { return value(a, name, T(OPT_INT) | T(OPT_I64))->i; }
double arg_double(const cli_args *a, const char *name) { return value(a, name, T(OPT_DOUBLE))->d; }
const int64_t *arg_list(const cli_args *a, const char *name, int *n) {
  const opt_value *v = value(a, name, T(OPT_INTS));
  *n = v->n_list;
  return v->list;
}
const char *const *arg_all(const cli_args *a, const char *name, int *n) {
  const opt_value *v = value(a, name, T_TEXT | T(OPT_ARGS));
  *n = v->n_all;
  return v->all;
}

oc_weight_mode arg_weights(const cli_args *a) {
  oc_weight_mode w = OC_WEIGHTS_STORED;
  oc_error e;
  oc_weight_mode_parse(arg_str(a, "weights"), &w, &e); /* one of the option's choices */
  return w;
}

/* ---- helpers the commands share ---- */
int die(const oc_error *e) {
  fprintf(stderr, "error: %s\n", e->msg);
  return 1;
}

int load_model(const char *model_id, oc_weight_mode weights, oc_model **m, oc_error *err) {
  char *dir = NULL;
  if (oc_resolve_model(model_id, NULL, &dir, err)) return -1;
  const oc_model_opts mo = {weights};
  int rc = oc_model_load_ex(dir, &mo, m, err);
  free(dir);
  return rc;
}

int cli_template_opts(oc_template_opts *o, oc_error *err) {
  memset(o, 0, sizeof *o);
  const char *v = getenv("OPENCON_TEMPLATE_NOW");
  if (!v || !*v) return 0;
  char *end;
  errno = 0;
  long long t = strtoll(v, &end, 10);
  if (end == v || *end || errno || t < 0 || t > 253402300799LL) /* up to 9999-12-31 */
    return oc_fail(err, "OPENCON_TEMPLATE_NOW must be seconds since the Unix epoch (0 to 253402300799), got \"%s\"", v);
  o->pin_clock = 1;
  o->now = t;
  return 0;
}

int load_chat(const char *model_id, oc_chat **c, oc_error *err) {
  char *dir = NULL;
  oc_template_opts to;
  if (cli_template_opts(&to, err) || oc_resolve_model(model_id, NULL, &dir, err)) return -1;
  int rc = oc_chat_load(dir, c, err);
  free(dir);
  if (rc == 0) (*c)->render_opts = to;
  return rc;
}

int cli_print_json(const cJSON *j, int formatted, const char *prefix) {
  char *s = j ? (formatted ? cJSON_Print(j) : cJSON_PrintUnformatted(j)) : NULL;
  if (!s) { fprintf(stderr, "error: out of memory\n"); return 1; }
  printf("%s%s\n", prefix ? prefix : "", s);
  free(s);
  return 0;
}
