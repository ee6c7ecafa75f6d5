/* The registry of CLI commands (each defined, with its option table, in a *_cmds.c file). */
#include <string.h>

#include "opts.h"

const cli_command *const cli_commands[] = {
    &cmd_forward, &cmd_generate, &cmd_random_model, &cmd_download, &cmd_tokenize, &cmd_detokenize,
    &cmd_collect_activations, &cmd_train_probe, &cmd_sweep_layers,
    &cmd_evaluate_probe,
    &cmd_classify, &cmd_train_exchange_classifier, &cmd_calibrate_exchange_classifier, &cmd_build_three_class,
    &cmd_guarded_generate, &cmd_benchmark_latency, &cmd_demo, &cmd_benchmark_jailbreak, &cmd_datasets, &cmd_serve,
    &cmd_quantize, &cmd_quant_report, &cmd_system_info,
    NULL,
};

const cli_command *cli_find(const char *name) {
  for (const cli_command *const *c = cli_commands; *c; c++)
    if (strcmp((*c)->name, name) == 0) return *c;
  return NULL;
}
