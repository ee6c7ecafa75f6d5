/* libFuzzer harness for the other hostile inputs: the first byte picks the parser, the rest is
 * its input — 0: a torch.save probe.pt (zip + pickle VM), 1: CSV, 2: a judge reply and a
 * sweep-layers --combinations list, 3: a file
 * not named .csv read as a prompt set (its layout recognised by content: JSONL, CoCoNot, JSON
 * arrays, JBB artifacts, CSV headers, plain text), a probe config, a dataset and three-class input,
 * 4: the strict JSON parser itself (what it accepts prints and parses again, strictly), 5: a CSV
 * prompt set file (every CSV layout), 6: a probe file of any kind (oc_probe_load tells safetensors,
 * a torch.save zip and a legacy pickle apart by their first bytes), 7: a StrongREJECT rubric reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opencon/classifier.h"
#include "opencon/jailbreak.h"
#include "opencon/json.h"
#include "opencon/probe.h"

/* the bytes in a temporary file with the given suffix; its path in path (NULL on failure) */
static char *temp_file(const unsigned char *d, size_t n, const char *suffix, char *path, size_t cap) {
  snprintf(path, cap, "/tmp/oc_fuzz_XXXXXX%s", suffix);
  int fd = mkstemps(path, (int)strlen(suffix));
  if (fd < 0) return NULL;
  int ok = write(fd, d, n) == (ssize_t)n;
  close(fd);
  if (!ok) { unlink(path); return NULL; }
  return path;
}

static void strict_json(const unsigned char *d, size_t n) {
  oc_error e;
  cJSON *j;
  if (oc_json_parse((const char *)d, n, "fuzz.json", 1, &j, &e) != 0) return;
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!s) return;
  if (oc_json_parse(s, strlen(s), "fuzz-printed.json", 1, &j, &e) != 0) {
    fprintf(stderr, "accepted JSON printed as something it rejects: %s\n", e.msg);
    abort();
  }
  cJSON_Delete(j);
  free(s);
}

/* the bytes as a NUL-terminated string (malloc'd) */
static char *c_string(const unsigned char *d, size_t n) {
  char *s = malloc(n + 1);
  if (s) {
    memcpy(s, d, n);
    s[n] = 0;
  }
  return s;
}

/* a loaded prompt set: every item in a source, the sources described, a selection made */
static void described(const oc_prompt_set *set) {
  int total = 0;
  for (int i = 0; i < set->n_sources; i++) total += set->sources[i].n;
  for (int i = 0; i < set->n; i++)
    if (set->items[i].source < 0 || set->items[i].source >= set->n_sources || !set->items[i].prompt || !set->items[i].split) abort();
  if (total != set->n) abort();
  cJSON_Delete(oc_prompt_sources_json(set, NULL, 0));
  int *idx, k;
  oc_error e;
  if (oc_prompt_select(set, 2, NULL, 0, -1, 1, &idx, &k, &e) == 0) {
    cJSON_Delete(oc_prompt_sources_json(set, idx, k));
    free(idx);
  }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  if (size < 1) return 0;
  const unsigned char *d = data + 1;
  size_t n = size - 1;
  oc_error e;
  char path[64], out[80];
  switch (data[0] % 8) {
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
    char *s = c_string(d, n);
    if (!s) return 0;
    oc_judgment j;
    oc_judge_parse_reply(s, &j, &e);
    oc_judgment_free(&j);
    int *gl, *gs, ng;
    if (oc_parse_layer_groups(s, &gl, &gs, &ng, &e) == 0) {
      for (int g = 0, at = 0; g < ng; at += gs[g++])
        if (gs[g] < 1 || gs[g] > OC_PROBE_MAX_LAYERS || gl[at] < -100000 || gl[at] > 100000) abort();
      free(gl); free(gs);
    }
    free(s);
    break;
  }
  case 3: {
    if (!temp_file(d, n, ".jsonl", path, sizeof path)) return 0;
    oc_prompt_set set = {0};
    if (oc_prompt_set_load(&set, path, &e) == 0) described(&set);
    oc_prompt_set_free(&set);
    oc_probe_config pc;
    if (oc_probe_config_load(path, &pc, &e) == 0) oc_probe_config_free(&pc);
    oc_dataset ds;
    if (oc_dataset_load(path, 2, 1, &ds, &e) == 0) oc_dataset_free(&ds);
    snprintf(out, sizeof out, "%s.out", path);
    oc_threeclass_stats st;
    if (oc_build_three_class(path, out, &st, &e) == 0) unlink(out);
    unlink(path);
    break;
  }
  case 4: strict_json(d, n); break;
  case 7: {
    char *s = c_string(d, n);
    if (!s) return 0;
    oc_rubric_verdict v;
    if (oc_rubric_parse_reply(s, &v, &e) == 0 && !(v.score >= 0 && v.score <= 1)) {
      fprintf(stderr, "a rubric score outside [0, 1]: %g\n", v.score);
      abort();
    }
    oc_rubric_verdict_free(&v);
    free(s);
    break;
  }
  case 6: {
    if (!temp_file(d, n, ".pt", path, sizeof path)) return 0;
    oc_probe p;
    if (oc_probe_load(path, &p, &e) == 0) oc_probe_free(&p);
    unlink(path);
    break;
  }
  default: {
    if (!temp_file(d, n, ".csv", path, sizeof path)) return 0;
    oc_prompt_set set = {0};
    if (oc_prompt_set_load(&set, path, &e) == 0) described(&set);
    oc_prompt_set_free(&set);
    unlink(path);
  }
  }
  return 0;
}
