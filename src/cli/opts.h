/* The CLI's commands and their flags. Each command declares one option table (name, type, default,
 * range, help); the parser, the --help text and the typed accessors all read that table, so what
 * `opencon CMD --help` lists is exactly what CMD accepts. */
#ifndef OPENCON_CLI_OPTS_H
#define OPENCON_CLI_OPTS_H
#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "opencon/chat.h"
#include "opencon/model.h"

typedef enum opt_type {
  OPT_FLAG,   /* no value: --x, or --x=true / --x=false */
  OPT_INT,    /* a whole number in [lo, hi] (int) */
  OPT_I64,    /* a whole number in [lo, hi] (int64) */
  OPT_DOUBLE, /* a finite number in [dlo, dhi] */
  OPT_STR,    /* text (not empty unless OPT_EMPTY_OK) */
  OPT_CHOICE, /* one of the words in `choices` ("a|b") */
  OPT_IN,     /* a file to read: must exist and not be a directory ("-" = stdin with OPT_STDIN) */
  OPT_OUT,    /* a file to write: must not be a directory */
  OPT_OUTDIR, /* a directory to write into: must not be a file */
  OPT_INTS,   /* comma-separated whole numbers, each in [lo, hi] */
  OPT_ARGS,   /* not a flag: the command's other arguments (not starting with --), every one kept in order (arg_all) */
} opt_type;

enum {
  OPT_REQUIRED = 1, /* the command refuses to run without it */
  OPT_REPEAT = 2,   /* may be given several times, every value kept (other flags: once only) */
  OPT_STDIN = 4,    /* OPT_IN: "-" reads standard input */
  OPT_EMPTY_OK = 8, /* OPT_STR: "" is a value */
  OPT_DIR_OK = 16,  /* OPT_IN: a directory is accepted too */
};

typedef struct opt_spec {
  const char *name;
  opt_type type;
  unsigned attr;
  const char *def;     /* default, as text parsed like a given value and shown by --help; NULL: none */
  const char *help;
  int64_t lo, hi;      /* OPT_INT, OPT_I64, OPT_INTS */
  double dlo, dhi;     /* OPT_DOUBLE */
  const char *choices; /* OPT_CHOICE */
  const char *metavar; /* the value's name in --help; NULL: from the type (N, X, TEXT, FILE, DIR, ...) */
} opt_spec;

/* Table rows. Ranges are part of the row, so --help states them and the parser enforces them. */
/* any row without a range: name, type, attributes (OPT_REQUIRED, ...), default, help */
#define O_(n, t, a, d, h) {.name = n, .type = t, .attr = a, .def = d, .help = h}
#define O_FLAG(n, h) {.name = n, .type = OPT_FLAG, .help = h}
#define O_INT(n, d, l, u, h) {.name = n, .type = OPT_INT, .def = d, .lo = l, .hi = u, .help = h}
#define O_I64(n, d, l, u, h) {.name = n, .type = OPT_I64, .def = d, .lo = l, .hi = u, .help = h}
#define O_DBL(n, d, l, u, h) {.name = n, .type = OPT_DOUBLE, .def = d, .dlo = l, .dhi = u, .help = h}
#define O_STR(n, d, h) {.name = n, .type = OPT_STR, .def = d, .help = h}
#define O_IN(n, h) {.name = n, .type = OPT_IN, .help = h}
#define O_OUT(n, d, h) {.name = n, .type = OPT_OUT, .def = d, .help = h}
#define O_OUTDIR(n, d, h) {.name = n, .type = OPT_OUTDIR, .def = d, .help = h}
#define O_INTS(n, d, l, u, h) {.name = n, .type = OPT_INTS, .def = d, .lo = l, .hi = u, .help = h}
#define O_END {.name = NULL}
/* --threads: 0 = one per core; at most OPT_THREADS_PER_CORE per core (checked when applied) */
#define OPT_THREADS_PER_CORE 4
#define O_THREADS O_INT("threads", "0", 0, 1024, "kernel threads; 0 = one per core; at most 4 per core")
/* --weights: every command that loads a decoder (arg_weights) */
#define O_WEIGHTS                                                                                                    \
  {.name = "weights", .type = OPT_CHOICE, .def = "stored", .choices = "stored|q8|mmap",                              \
   .help = "the decoder's matrices: as stored (copied into memory), q8 (int8 blocks quantized at load), or mmap (as stored, read from the file)"}

typedef struct opt_value {
  int given;               /* on the command line */
  const char *text;        /* the value as given, else the default; NULL: neither */
  int64_t i;               /* OPT_FLAG (0/1), OPT_INT, OPT_I64 */
  double d;                /* OPT_DOUBLE (NaN when unset) */
  int64_t *list;           /* OPT_INTS */
  int n_list;
  const char **all;        /* OPT_REPEAT: every value in command-line order */
  int n_all;
} opt_value;

struct cli_command;
#define CLI_MAX_OPTS 40
typedef struct cli_args {
  const struct cli_command *cmd;
  int n;                   /* rows in cmd->opts */
  opt_value v[CLI_MAX_OPTS];
} cli_args;

typedef struct cli_command {
  const char *name;
  const char *summary;     /* one line: what the command does */
  const char *notes;       /* --help text after the flags (alternatives, outputs); NULL */
  const opt_spec *opts;    /* ends with O_END */
  int (*run)(const cli_args *a);
} cli_command;

/* Parse argv against the command's table and run it: 0 on success, 2 for a usage error (message
 * on stderr naming `opencon CMD --help`), the command's status otherwise. --help / -h print the help. */
int cli_run(const cli_command *c, int argc, char **argv);
void cli_print_help(const cli_command *c, FILE *f);
/* "error: <what>; see opencon CMD --help" on stderr; returns 2 (the usage-error exit status) */
int cli_usage_error(const cli_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Typed values of a parsed command line (the default when not given). Asking for a name the
 * command's table lacks is a programming error: it aborts with the name. */
int arg_given(const cli_args *a, const char *name);
const char *arg_str(const cli_args *a, const char *name);           /* NULL when unset */
int arg_flag(const cli_args *a, const char *name);
int arg_int(const cli_args *a, const char *name);
int64_t arg_i64(const cli_args *a, const char *name);
double arg_double(const cli_args *a, const char *name);             /* NaN when unset */
const int64_t *arg_list(const cli_args *a, const char *name, int *n); /* NULL, 0 when unset */
const char *const *arg_all(const cli_args *a, const char *name, int *n);
oc_weight_mode arg_weights(const cli_args *a); /* --weights */

/* the flags that name a guard (oc_guard_spec) */
#define GUARD_OPTS                                                                                                               \
  O_STR("model_id", "google/gemma-4-E2B-it", "the decoder: a local directory or a Hub id org/name"),                             \
      O_("probe_path", OPT_IN, OPT_REQUIRED, NULL, "the probe: probe.safetensors or the MVP's probe.pt"),                        \
      O_IN("config_path", "the probe's config.json (default: config.json beside the probe)"),                                    \
      O_STR("classifier_dir", NULL, "the exchange classifier that decides on pauses (a directory or a Hub id)"),                 \
      {.name = "classifier_allow_threshold", .type = OPT_DOUBLE, .dlo = 0, .dhi = 1,                                           \
       .help = "classifier score below which held text is released (default: the classifier's own)"},                         \
      {.name = "classifier_block_threshold", .type = OPT_DOUBLE, .dlo = 0, .dhi = 1,                                           \
       .help = "classifier score from which the response is blocked (default: the classifier's own)"},                        \
      O_WEIGHTS
struct oc_guard_spec;
/* the spec GUARD_OPTS name, with cli_template_opts */
int guard_spec(const cli_args *a, struct oc_guard_spec *s, oc_error *err);
/* the chat template's clock: pinned by OPENCON_TEMPLATE_NOW (seconds since the epoch) for
 * reproducible renders of templates that print today's date, else the current time */
int cli_template_opts(oc_template_opts *o, oc_error *err);
/* j as one line (formatted: indented) on stdout, after prefix; 0, or 1 after "error: out of memory" */
int cli_print_json(const cJSON *j, int formatted, const char *prefix);

int die(const oc_error *e); /* prints "error: msg", returns 1 */

/* a server's lifetime (serve, demo --serve): SIGTERM and SIGINT blocked in the calling thread, and so
 * in every thread it starts afterwards (call it before anything starts threads: POSIX may deliver
 * them to any thread that has them unblocked), SIGPIPE ignored */
void cli_block_stop_signals(sigset_t *stop);
struct oc_server;
/* until SIGTERM or SIGINT (taken with sigtimedwait from stop): "ready" (with the console's address
 * on host) once the guard is loaded, a
 * load error ends it (1); then new requests get 503, running ones get up to drain_s seconds, and
 * the server is freed. 0 after a signal. */
int cli_serve_until_signal(struct oc_server *s, const char *host, const sigset_t *stop, double drain_s);
int load_model(const char *model_id, oc_weight_mode weights, oc_model **m, oc_error *err);
int load_chat(const char *model_id, oc_chat **c, oc_error *err);

/* the commands (each file defines its own) */
extern const cli_command cmd_forward, cmd_generate, cmd_tokenize, cmd_detokenize, cmd_random_model, cmd_download;
extern const cli_command cmd_collect_activations, cmd_train_probe, cmd_sweep_layers;
extern const cli_command cmd_evaluate_probe;
extern const cli_command cmd_classify, cmd_train_exchange_classifier, cmd_calibrate_exchange_classifier, cmd_build_three_class;
extern const cli_command cmd_guarded_generate, cmd_benchmark_latency, cmd_demo;
extern const cli_command cmd_datasets;
extern const cli_command cmd_benchmark_jailbreak, cmd_serve;
extern const cli_command cmd_quantize, cmd_quant_report, cmd_system_info;
/* every command, in `opencon --help` order, NULL-terminated */
extern const cli_command *const cli_commands[];
const cli_command *cli_find(const char *name);
#endif
