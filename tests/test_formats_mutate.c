/* Deterministic mutations of a real torch.save probe, a CSV, a judge reply, JSONL and JSON files,
 * a JSON document for the strict parser, a CSV prompt set, probe files of each kind (zip, legacy
 * pickle, safetensors), the published benchmark layouts (HarmBench, StrongREJECT,
 * SimpleSafetyTests, AdvBench strings, a JBB artifact, refusal-direction splits, CoCoNot, plain
 * text) and a StrongREJECT rubric reply through the fuzz harness (tests/fuzz/fuzz_formats.c): under
 * ASan/UBSan in CI this is the fixed-seed part of fuzzing those parsers. Every case must either
 * work or fail with an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/jailbreak.h"
#include "opencon/json.h"
#include "opencon/probe.h"
#include "opencon/safetensors.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static long calls;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void mutate_all(unsigned char sel, const char *src, size_t len, int rounds) {
  static const char pool[] = "{}[]\",:\n\r\\0123456789tfnaePKQqhR.()";
  unsigned char *m = malloc(len + 65);
  for (int it = 0; it < rounds; it++) {
    m[0] = sel;
    memcpy(m + 1, src, len);
    size_t n = len;
    int edits = 1 + (int)(next() % 4);
    for (int k = 0; k < edits && n > 0; k++) {
      size_t pos = 1 + (size_t)(next() % n);
      switch (next() % 4) {
      case 0: m[pos] = (unsigned char)pool[next() % (sizeof pool - 1)]; break;
      case 1: m[pos] ^= (unsigned char)(1u << (next() % 8)); break;
      case 2: memmove(m + pos, m + pos + 1, n - pos); n--; break;
      default: if (n < len + 60) { memmove(m + pos + 1, m + pos, n - pos + 1); m[pos] = (unsigned char)pool[next() % (sizeof pool - 1)]; n++; }
      }
    }
    LLVMFuzzerTestOneInput(m, n + 1);
    calls++;
  }
  /* every truncation of the seed */
  for (size_t cut = 0; cut < len; cut += 1 + len / 200) {
    m[0] = sel;
    memcpy(m + 1, src, cut);
    LLVMFuzzerTestOneInput(m, cut + 1);
    calls++;
  }
  free(m);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_formats_mutate torch_probe.pt");
  oc_error e;
  char *pt;
  size_t ptl;
  REQUIRE(oc_read_file(argv[1], &pt, &ptl, &e) == 0, "%s", e.msg);
  mutate_all(0, pt, ptl, 3000);
  mutate_all(6, pt, ptl, 200);
  free(pt);
  const char legacy[] = "\x80\x02\x8a\x0al\xfc\x9c" "F\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.";
  mutate_all(6, legacy, sizeof legacy - 1, 200);
  /* a safetensors probe: a 128-byte header, then head.bias = 1 and head.weight = [2, -2] */
  const char st[] = "\x80\0\0\0\0\0\0\0{\"head.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"head.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[4,12]}}"
                    "\0\0\x80?\0\0\0@\0\0\0\xc0";
  mutate_all(6, st, sizeof st - 1, 200);
  const char csv[] = "\xef\xbb\xbfIndex,Goal,Target\r\n0,\"Say \"\"hi\"\",\nthen\",t\r\n1,plain,u\r\n";
  mutate_all(1, csv, sizeof csv - 1, 3000);
  const char reply[] = "{\"choices\": [{\"message\": {\"content\": \"```json\\n{\\\"unsafe\\\": true, \\\"refusal\\\": false, \\\"confidence\\\": 0.5}\\n```\"}}]}";
  mutate_all(2, reply, sizeof reply - 1, 3000);
  const char jsonl[] = "{\"prompt\": \"p\", \"response\": \"r\", \"label\": 1, \"split\": \"harmful\"}\n{\"prompt\": \"q\", \"response\": \"s\", \"label\": 0}\n";
  mutate_all(3, jsonl, sizeof jsonl - 1, 400);
  /* a multi-layer probe config (selector 3) and a --combinations list (selector 2) */
  const char mcfg[] = "{\"model_id\": \"m\", \"layer\": -4, \"layers\": [-4, -8, 12], \"combine\": \"mean\", \"hidden_size\": 64}";
  mutate_all(3, mcfg, sizeof mcfg - 1, 1500);
  const char groups[] = "-4,-8;-4,-8,-12;3";
  mutate_all(2, groups, sizeof groups - 1, 1500);
  /* a probe config.json with the aggregation keys (issue 23), read by oc_probe_config_load in selector 3 */
  const char pconf[] = "{\"model_id\": \"m\", \"layer\": -4, \"smoothing_window\": 3, \"aggregation\": \"max_rolling_mean\", "
                       "\"aggregation_window\": 8, \"aggregation_alpha\": 0.25, \"calibration\": {\"pause_threshold\": 0.5}}";
  {
    char pp[] = "/tmp/oc_pconf_seed_XXXXXX";
    int fd = mkstemp(pp);
    oc_probe_config pc;
    int ok = fd >= 0 && write(fd, pconf, sizeof pconf - 1) == (ssize_t)(sizeof pconf - 1) && close(fd) == 0 && oc_probe_config_load(pp, &pc, &e) == 0;
    CHECK(ok && pc.aggregation == OC_AGG_MAX_ROLLING_MEAN && pc.aggregation_window == 8, "seed probe config: %s", ok ? "" : e.msg);
    if (ok) oc_probe_config_free(&pc);
    unlink(pp);
  }
  mutate_all(3, pconf, sizeof pconf - 1, 1500);
  const char jarr[] = "[{\"text\": \"a\", \"label\": \"safe\"}, {\"prompt\": \"b\", \"split\": \"x\"}]";
  mutate_all(3, jarr, sizeof jarr - 1, 200);
  const char doc[] = "{\"a\": [1, -2.5e3, true, null, {\"b\": \"\\u00e9\\n\\\\u0000\"}], \"c\": {\"d\": {}, \"e\": []}, \"\\u0066\": \"x\"}\n";
  mutate_all(4, doc, sizeof doc - 1, 3000);
  const char pcsv[] = "id,prompt,split\r\n1,\"a, \"\"b\"\"\",s1\r\n2,c,s2\r\n3,d,s1\r\n";
  mutate_all(5, pcsv, sizeof pcsv - 1, 400);
  /* the published benchmark layouts: CSV (selector 5), recognised by content (selector 3) */
  static const struct { unsigned char sel; const char *text; oc_prompt_layout layout; int n; } layouts[] = {
      {5, "Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\nb1,standard,illegal,,,id1\n\"b, \"\"2\"\"\",contextual,x,context,\"c\n\nd\",id2\n",
       OC_LAYOUT_HARMBENCH, 2},
      {5, "category,source,forbidden_prompt\nViolence,custom,\"a\nb\"\nHate,DAN,c\n", OC_LAYOUT_STRONGREJECT, 2},
      {5, "id,harm_area,counter,category,prompts_final\r\nsst_1,\"A, B\",1,Info,p1\r\nsst_2,C,2,Instr,p2", OC_LAYOUT_SIMPLESAFETYTESTS, 2},
      {5, "target\n\"a, b\"\nc\n", OC_LAYOUT_ADVBENCH_STRINGS, 2},
      {3, "{\n    \"parameters\": {\"method\": \"PAIR\", \"model\": \"m\", \"attack_type\": \"black_box\"},\n    \"jailbreaks\": [\n        {\"index\": 0, \"goal\": \"g\", "
          "\"behavior\": \"b\", \"category\": \"c\", \"prompt\": \"p\"},\n        {\"index\": 1, \"prompt\": null}\n    ]\n}",
       OC_LAYOUT_JBB_ARTIFACT, 1},
      {3, "[\n    {\n        \"instruction\": \"i1\",\n        \"category\": null\n    },\n    {\n        \"instruction\": \"i2\",\n        \"category\": \"c\"\n    }\n]",
       OC_LAYOUT_REFUSAL_DIRECTION, 2},
      {3, "{\"id\": \"a\", \"category\": \"C\", \"subcategory\": \"s\", \"prompt\": \"p\", \"response\": \"\"}\n{\"id\": \"b\", \"category\": \"C\", \"subcategory\": \"t\", "
          "\"prompt\": \"q\", \"response\": \"\"}\n",
       OC_LAYOUT_COCONOT, 2},
      {3, "How to do a?\nWays to do b, c?\n\nIdeas for \"d\"?", OC_LAYOUT_TEXT, 3},
  };
  char tdir[] = "/tmp/oc_layout_seeds_XXXXXX";
  REQUIRE(mkdtemp(tdir), "mkdtemp");
  for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++) {
    mutate_all(layouts[i].sel, layouts[i].text, strlen(layouts[i].text), 400);
    char p[80];
    snprintf(p, sizeof p, "%s/seed%zu%s", tdir, i, layouts[i].sel == 5 ? ".csv" : ".data");
    FILE *f = fopen(p, "wb");
    REQUIRE(f && fwrite(layouts[i].text, 1, strlen(layouts[i].text), f) == strlen(layouts[i].text), "write %s", p);
    fclose(f);
    oc_prompt_set set = {0};
    CHECK(oc_prompt_set_load(&set, p, &e) == 0 && set.n == layouts[i].n && set.sources[0].layout == layouts[i].layout, "seed %zu (%s): %s", i,
          oc_prompt_layout_info_of(layouts[i].layout)->name, e.msg);
    oc_prompt_set_free(&set);
    remove(p);
  }
  remove(tdir);
  const char rubric[] = "{\"choices\": [{\"message\": {\"content\": \"```json\\n{\\\"refused\\\": 0, \\\"convincing\\\": 4, \\\"specific\\\": 3}\\n```\"}}]}";
  mutate_all(7, rubric, sizeof rubric - 1, 3000);
  oc_rubric_verdict rv;
  CHECK(oc_rubric_parse_reply(rubric, &rv, &e) == 0 && rv.score == 0.625, "seed rubric reply: %s", e.msg);
  oc_rubric_verdict_free(&rv);
  /* the unmutated seeds parse (so the mutations start from valid inputs) */
  oc_probe p;
  REQUIRE(oc_read_file(argv[1], &pt, &ptl, &e) == 0, "%s", e.msg);
  CHECK(oc_torch_pt_parse_probe(pt, ptl, argv[1], &p, &e) == 0 && p.hidden == 64, "seed probe.pt: %s", e.msg);
  oc_probe_free(&p);
  free(pt);
  cJSON *rows;
  CHECK(oc_csv_parse(csv, sizeof csv - 1, "seed.csv", &rows, &e) == 0 && cJSON_GetArraySize(rows) == 3, "seed csv");
  cJSON_Delete(rows);
  oc_judgment j;
  CHECK(oc_judge_parse_reply(reply, &j, &e) == 0 && j.raw_unsafe == 1 && j.unsafe == 1 && j.confidence == 0.5, "seed reply: %s", e.msg);
  oc_judgment_free(&j);
  cJSON *dj;
  CHECK(oc_json_parse(doc, sizeof doc - 1, "seed.json", 1, &dj, &e) == 0, "seed JSON document: %s", e.msg);
  cJSON_Delete(dj);
  oc_st_file *sf;
  int rc = oc_st_parse(st, sizeof st - 1, "seed.safetensors", &sf, &e);
  CHECK(rc == 0 && oc_st_count(sf) == 2 && ((const float *)oc_st_get(sf, "head.weight")->data)[1] == -2.0f, "seed safetensors: %s", e.msg);
  if (rc == 0) oc_st_close(sf);
  int *gl, *gs, ng;
  CHECK(oc_parse_layer_groups(groups, &gl, &gs, &ng, &e) == 0 && ng == 3 && gs[1] == 3, "seed --combinations: %s", e.msg);
  free(gl); free(gs);
  char mpath[] = "/tmp/oc_mcfg_XXXXXX";
  int mfd = mkstemp(mpath);
  REQUIRE(mfd >= 0 && write(mfd, mcfg, sizeof mcfg - 1) == (ssize_t)(sizeof mcfg - 1), "write %s", mpath);
  close(mfd);
  oc_probe_config pcm;
  const int mok = oc_probe_config_load(mpath, &pcm, &e) == 0;
  CHECK(mok && pcm.n_layers == 3 && pcm.combine == OC_COMBINE_MEAN, "seed multi-layer config: %s", e.msg);
  if (mok) oc_probe_config_free(&pcm);
  unlink(mpath);
  printf("%ld inputs run\n", calls);
  return check_summary("formats_mutate");
}
