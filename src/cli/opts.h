/* CLI flag parsing shared by the commands. */
#ifndef OPENCON_CLI_OPTS_H
#define OPENCON_CLI_OPTS_H
#include "opencon/chat.h"
#include "opencon/model.h"

#define MAXOPT 48
typedef struct {
  int n;
  const char *key[MAXOPT];
  const char *val[MAXOPT];
} opts;

/* --key value and --key=value; the names in flags take no value (they get "1"). */
int parse_opts(int argc, char **argv, opts *o, const char *const *flags);
void free_opts(opts *o);
const char *opt(const opts *o, const char *k); /* last occurrence, NULL if absent */
int check_known(const opts *o, const char *const *known);
/* parse + check + --threads; on error prints it, frees o and returns -1 */
int cli_begin(int argc, char **argv, opts *o, const char *const *known, const char *const *flags);
/* typed values with range checks; absent -> def; bad -> message on stderr and -1 */
int opt_int(const opts *o, const char *k, int def, int lo, int hi, int *out);
int opt_i64(const opts *o, const char *k, int64_t def, int64_t lo, int64_t hi, int64_t *out);
int opt_double(const opts *o, const char *k, double def, double lo, double hi, double *out);
int die(const oc_error *e); /* prints "error: msg", returns 1 */
void apply_threads(const opts *o);
int load_model(const char *model_id, oc_model **m, oc_error *err);
int load_chat(const char *model_id, oc_chat **c, oc_error *err);

int cmd_collect_activations(int argc, char **argv);
int cmd_train_probe(int argc, char **argv);
int cmd_sweep_layers(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_train_exchange_classifier(int argc, char **argv);
int cmd_calibrate_exchange_classifier(int argc, char **argv);
int cmd_build_three_class(int argc, char **argv);
int cmd_guarded_generate(int argc, char **argv);
int cmd_benchmark_latency(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_benchmark_jailbreak(int argc, char **argv);
#endif
