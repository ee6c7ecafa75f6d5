/* libFuzzer harness for the other hostile inputs: the first byte picks the parser, the rest is
 * its input — 0: a torch.save probe.pt (zip + pickle VM), 1: CSV, 2: a judge reply, 3: probe
 * config JSON / JSONL prompt set through a temporary file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opencon/jailbreak.h"
#include "opencon/probe.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  if (size < 1) return 0;
  const unsigned char *d = data + 1;
  size_t n = size - 1;
  oc_error e;
  switch (data[0] % 4) {
  case 0: {
    oc_probe p;
    if (oc_torch_pt_parse_probe(d, n, "fuzz.pt", &p, &e) == 0) oc_probe_free(&p);
    break;
  }
  case 1: {
    cJSON *rows;
    if (oc_csv_parse((const char *)d, n, "fuzz.csv", &rows, &e) == 0) cJSON_Delete(rows);
    break;
  }
  case 2: {
    char *s = malloc(n + 1);
    if (!s) return 0;
    memcpy(s, d, n);
    s[n] = 0;
    oc_judgment j;
    oc_judge_parse_reply(s, &j, &e);
    oc_judgment_free(&j);
    free(s);
    break;
  }
  default: {
    char path[] = "/tmp/oc_fuzz_XXXXXX.jsonl";
    int fd = mkstemps(path, 6);
    if (fd < 0) return 0;
    if (write(fd, d, n) != (ssize_t)n) { close(fd); unlink(path); return 0; }
    close(fd);
    oc_prompt_set set = {0};
    oc_prompt_set_load(&set, path, &e);
    oc_prompt_set_free(&set);
    oc_probe_config pc;
    if (oc_probe_config_load(path, &pc, &e) == 0) oc_probe_config_free(&pc);
    oc_dataset ds;
    if (oc_dataset_load(path, 2, 1, &ds, &e) == 0) oc_dataset_free(&ds);
    unlink(path);
  }
  }
  return 0;
}
