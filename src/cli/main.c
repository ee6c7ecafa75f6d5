/* opencon CLI: finds the command, which parses its flags and calls libopencon. */
#include <stdio.h>
#include <string.h>

#include "opencon/base.h"
#include "opencon/version.h"
#include "opts.h"

static void usage(FILE *f) {
  fprintf(f, "opencon — activation-probe guard for open-weight LLMs\n\nusage: opencon COMMAND [flags]   (opencon COMMAND --help lists its flags; opencon --version)\n\ncommands:\n");
  for (const cli_command *const *c = cli_commands; *c; c++) {
    int n = fprintf(f, "  %s", (*c)->name);
    fprintf(f, "%*s%s\n", n < 36 ? 36 - n : 1, "", (*c)->summary);
  }
  fprintf(f, "\n--model_id takes a local directory or a Hub id org/name (HF cache, then download).\n");
}

int main(int argc, char **argv) {
  oc_blas_reexec(argv); /* OpenBLAS's generic kernels on a CPU it does not know: run again with its family */
  if (argc < 2) { usage(stderr); return 2; }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) { usage(stdout); return 0; }
  if (strcmp(argv[1], "--version") == 0) { printf("opencon %s\n", oc_version()); return 0; }
  const cli_command *c = cli_find(argv[1]);
  if (!c) {
    fprintf(stderr, "error: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
  }
  return cli_run(c, argc - 2, argv + 2);
}
