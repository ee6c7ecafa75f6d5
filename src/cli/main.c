/* opencon CLI: parses flags and calls libopencon. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/chat.h"
#include "opencon/hub.h"
#include "opencon/model.h"
#include "opencon/modernbert.h"
#include "opts.h"



/* --input_ids, or --text encoded with the model directory's tokenizer (special tokens added) */
static int get_ids(const opts *o, int32_t **ids, int *n, oc_error *err) {
  const char *s = opt(o, "input_ids");
  if (opt(o, "text") && !s) {
    oc_chat *c;
    if (load_chat(opt(o, "model_id"), &c, err)) return -1;
    oc_encoding e;
    int rc = oc_chat_encode(c, opt(o, "text"), 1, 0, &e, err);
    oc_chat_free(c);
    if (rc) return -1;
    if (e.n == 0) { oc_encoding_free(&e); return oc_fail(err, "--text encodes to no tokens"); }
    *ids = e.ids;
    *n = e.n;
    e.ids = NULL;
    oc_encoding_free(&e);
    return 0;
  }
  if (!s) return oc_fail(err, "--input_ids is required");
  int64_t *v;
  if (oc_parse_int_list(s, &v, n, err)) return oc_wrap(err, "--input_ids");
  if (*n == 0) { free(v); return oc_fail(err, "--input_ids is empty"); }
  *ids = malloc(sizeof **ids * (size_t)*n);
  for (int i = 0; i < *n; i++) {
    if (v[i] < 0 || v[i] > 0x7fffffff) { free(v); free(*ids); return oc_fail(err, "--input_ids: %lld is not a token id", (long long)v[i]); }
    (*ids)[i] = (int32_t)v[i];
  }
  free(v);
  return 0;
}


static int cmd_forward(int argc, char **argv) {
  static const char *const known[] = {"model_id", "input_ids", "text", "layers", "out", "threads", "max_ctx", NULL};
  opts o;
  oc_error err;
  if (cli_begin(argc, argv, &o, known, NULL)) return 2;
  const char *model_id = opt(&o, "model_id"), *out = opt(&o, "out");
  if (!model_id || !out) { fprintf(stderr, "usage: opencon forward --model_id M --input_ids 2,106,... [--layers -4,-2] --out F.safetensors\n"); free_opts(&o); return 2; }
  int32_t *ids = NULL;
  int n = 0, rc = 1;
  oc_model *m = NULL;
  oc_session *s = NULL;
  int *layers = NULL;
  float *hs = NULL, *logits = NULL;
  if (get_ids(&o, &ids, &n, &err) || load_model(model_id, &m, &err)) { rc = die(&err); goto done; }
  const oc_model_config *c = oc_model_cfg(m);
  int nl = 0;
  if (opt(&o, "layers")) {
    int64_t *v;
    if (oc_parse_int_list(opt(&o, "layers"), &v, &nl, &err)) { oc_wrap(&err, "--layers"); rc = die(&err); goto done; }
    layers = malloc(sizeof *layers * (size_t)(nl ? nl : 1));
    for (int i = 0; i < nl; i++) layers[i] = (int)v[i];
    free(v);
    for (int i = 0; i < nl; i++) if (oc_hidden_index(c, layers[i], &err) < 0) { oc_wrap(&err, "--layers"); rc = die(&err); goto done; }
  } else {
    nl = c->n_layers + 1;
    layers = malloc(sizeof *layers * (size_t)nl);
    for (int i = 0; i < nl; i++) layers[i] = i;
  }
  hs = malloc(sizeof(float) * (size_t)nl * (size_t)n * (size_t)c->hidden);
  logits = malloc(sizeof(float) * (size_t)n * (size_t)c->vocab);
  if (!hs || !logits) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); rc = die(&err); goto done; }
  s = oc_session_new(m, opt(&o, "max_ctx") ? atoi(opt(&o, "max_ctx")) : n, &err);
  oc_taps taps = {nl, layers, 0, NULL, hs};
  if (!s || oc_forward(s, ids, n, &taps, logits, 1, &err)) { rc = die(&err); goto done; }
  oc_st_writer *w = oc_st_writer_new();
  int64_t hshape[3] = {nl, n, c->hidden}, lshape[2] = {n, c->vocab}, ishape[1] = {n};
  if (oc_st_writer_add(w, "hidden_states", OC_DT_F32, 3, hshape, hs, &err) ||
      oc_st_writer_add(w, "logits", OC_DT_F32, 2, lshape, logits, &err) ||
      oc_st_writer_add(w, "input_ids", OC_DT_I32, 1, ishape, ids, &err) ||
      oc_st_writer_set_metadata(w, "model_id", model_id, &err) || oc_st_writer_write(w, out, &err)) {
    oc_st_writer_free(w);
    rc = die(&err);
    goto done;
  }
  oc_st_writer_free(w);
  fprintf(stderr, "wrote %s: hidden_states [%d, %d, %d], logits [%d, %d]; next token (greedy) %d\n", out, nl, n,
          c->hidden, n, c->vocab, oc_argmax(logits + (size_t)(n - 1) * c->vocab, c->vocab));
  rc = 0;
done:
  oc_session_free(s);
  oc_model_free(m);
  free(ids); free(layers); free(hs); free(logits);
  free_opts(&o);
  return rc;
}

static int cmd_generate(int argc, char **argv) {
  static const char *const known[] = {"model_id", "input_ids", "text", "max_new_tokens", "threads", "no_eos_stop", NULL};
  static const char *const flags[] = {"no_eos_stop", NULL};
  opts o;
  oc_error err;
  if (cli_begin(argc, argv, &o, known, flags)) return 2;
  const char *model_id = opt(&o, "model_id");
  if (!model_id) { fprintf(stderr, "usage: opencon generate --model_id M --input_ids 2,106,... [--max_new_tokens N]\n"); free_opts(&o); return 2; }
  int max_new = opt(&o, "max_new_tokens") ? atoi(opt(&o, "max_new_tokens")) : 32;
  int32_t *ids = NULL;
  int n = 0, rc = 1;
  oc_model *m = NULL;
  oc_session *s = NULL;
  float *logits = NULL;
  if (get_ids(&o, &ids, &n, &err) || load_model(model_id, &m, &err)) { rc = die(&err); goto done; }
  const oc_model_config *c = oc_model_cfg(m);
  logits = malloc(sizeof(float) * (size_t)c->vocab);
  s = oc_session_new(m, n + max_new, &err);
  if (!s || !logits) { rc = die(&err); goto done; }
  double t0 = oc_now();
  if (oc_forward(s, ids, n, NULL, logits, 0, &err)) { rc = die(&err); goto done; }
  double t1 = oc_now();
  printf("[");
  int k = 0;
  for (; k < max_new; k++) {
    int32_t next = oc_argmax(logits, c->vocab);
    printf("%s%d", k ? ", " : "", next);
    fflush(stdout);
    if (!opt(&o, "no_eos_stop") && oc_is_eos(c, next)) { k++; break; }
    if (k + 1 < max_new && oc_forward(s, &next, 1, NULL, logits, 0, &err)) { rc = die(&err); goto done; }
  }
  printf("]\n");
  double t2 = oc_now();
  fprintf(stderr, "prefill %d tokens %.1f ms; %d new tokens %.1f ms (%.2f tok/s)\n", n, 1e3 * (t1 - t0), k,
          1e3 * (t2 - t1), k > 1 ? (k - 1) / (t2 - t1) : 0.0);
  rc = 0;
done:
  oc_session_free(s);
  oc_model_free(m);
  free(ids); free(logits);
  free_opts(&o);
  return rc;
}



static void print_encoding(const oc_encoding *e, int pieces) {
  cJSON *o = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(o, "ids");
  for (int i = 0; i < e->n; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(e->ids[i]));
  if (pieces) {
    cJSON *t = cJSON_AddArrayToObject(o, "tokens");
    for (int i = 0; i < e->n; i++) cJSON_AddItemToArray(t, cJSON_CreateString(e->tokens[i]));
  }
  char *s = cJSON_PrintUnformatted(o);
  printf("%s\n", s);
  free(s);
  cJSON_Delete(o);
}

static int cmd_tokenize(int argc, char **argv) {
  static const char *const known[] = {"model_id", "text", "file", "chat", "prompt", "response", "no_special", "pieces", "jsonl",
                                      "no_chat_template", "max_length", NULL};
  static const char *const flags[] = {"chat", "no_special", "pieces", "no_chat_template", NULL};
  opts o;
  oc_error err;
  if (cli_begin(argc, argv, &o, known, flags)) return 2;
  const char *model_id = opt(&o, "model_id");
  if (!model_id || (!opt(&o, "text") && !opt(&o, "file") && !opt(&o, "chat") && !opt(&o, "jsonl"))) {
    fprintf(stderr, "usage: opencon tokenize --model_id M (--text T | --file F | --chat --prompt P [--response R] | --jsonl IN.jsonl)\n"
                    "                        [--no_special] [--pieces] [--no_chat_template] [--max_length N]\n");
    free_opts(&o);
    return 2;
  }
  oc_chat *c = NULL;
  int rc = 1;
  char *text = NULL;
  int add_special = !opt(&o, "no_special");
  int max_len = opt(&o, "max_length") ? atoi(opt(&o, "max_length")) : 0;
  if (load_chat(model_id, &c, &err)) { rc = die(&err); goto done; }
  if (opt(&o, "jsonl")) {
    FILE *f = strcmp(opt(&o, "jsonl"), "-") ? fopen(opt(&o, "jsonl"), "r") : stdin;
    if (!f) { oc_fail_code(&err, OC_ERR_IO, "%s: cannot open", opt(&o, "jsonl")); rc = die(&err); goto done; }
    char *line = NULL;
    size_t cap = 0;
    int ln = 0;
    rc = 0;
    while (getline(&line, &cap, f) > 0) {
      ln++;
      cJSON *row = cJSON_Parse(line);
      const cJSON *t = row ? cJSON_GetObjectItemCaseSensitive(row, "text") : NULL;
      if (!cJSON_IsString(t)) {
        fprintf(stderr, "error: %s:%d: expected a JSON object with a \"text\" string\n", opt(&o, "jsonl"), ln);
        cJSON_Delete(row);
        rc = 1;
        break;
      }
      const cJSON *as = cJSON_GetObjectItemCaseSensitive(row, "add_special_tokens");
      oc_encoding e;
      if (oc_chat_encode(c, t->valuestring, as ? cJSON_IsTrue(as) : add_special, max_len, &e, &err)) {
        fprintf(stderr, "error: %s:%d: %s\n", opt(&o, "jsonl"), ln, err.msg);
        cJSON_Delete(row);
        rc = 1;
        break;
      }
      print_encoding(&e, opt(&o, "pieces") != NULL);
      oc_encoding_free(&e);
      cJSON_Delete(row);
    }
    free(line);
    if (f != stdin) fclose(f);
    goto done;
  }
  if (opt(&o, "chat")) {
    if (!opt(&o, "prompt")) { fprintf(stderr, "error: --chat needs --prompt\n"); rc = 2; goto done; }
    if (oc_chat_format_exchange(c, opt(&o, "prompt"), opt(&o, "response"), !opt(&o, "no_chat_template"), &text, &err)) { rc = die(&err); goto done; }
    add_special = opt(&o, "no_chat_template") ? add_special : 0; /* the template writes its own special tokens */
  } else if (opt(&o, "file")) {
    if (oc_read_file(opt(&o, "file"), &text, NULL, &err)) { rc = die(&err); goto done; }
  } else text = strdup(opt(&o, "text"));
  oc_encoding e;
  if (oc_chat_encode(c, text, add_special, max_len, &e, &err)) { rc = die(&err); goto done; }
  print_encoding(&e, opt(&o, "pieces") != NULL);
  oc_encoding_free(&e);
  rc = 0;
done:
  free(text);
  oc_chat_free(c);
  free_opts(&o);
  return rc;
}

static int cmd_detokenize(int argc, char **argv) {
  static const char *const known[] = {"model_id", "ids", "skip_special_tokens", NULL};
  static const char *const flags[] = {"skip_special_tokens", NULL};
  opts o;
  oc_error err;
  if (cli_begin(argc, argv, &o, known, flags)) return 2;
  if (!opt(&o, "model_id") || !opt(&o, "ids")) { fprintf(stderr, "usage: opencon detokenize --model_id M --ids 1,2,3 [--skip_special_tokens]\n"); free_opts(&o); return 2; }
  oc_chat *c = NULL;
  int64_t *v = NULL;
  int n = 0, rc = 1;
  int32_t *ids = NULL;
  char *text = NULL;
  size_t len = 0;
  if (oc_parse_int_list(opt(&o, "ids"), &v, &n, &err)) { oc_wrap(&err, "--ids"); rc = die(&err); goto done; }
  if (load_chat(opt(&o, "model_id"), &c, &err)) { rc = die(&err); goto done; }
  ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++) ids[i] = (int32_t)v[i];
  if (oc_tokenizer_decode(c->tok, ids, n, opt(&o, "skip_special_tokens") != NULL, &text, &len, &err)) { rc = die(&err); goto done; }
  fwrite(text, 1, len, stdout);
  printf("\n");
  rc = 0;
done:
  free(v);
  free(ids);
  free(text);
  oc_chat_free(c);
  free_opts(&o);
  return rc;
}

static int cmd_random_model(int argc, char **argv) {
  static const char *const known[] = {"config", "out", "seed", "threads", NULL};
  opts o;
  oc_error err;
  if (cli_begin(argc, argv, &o, known, NULL)) return 2;
  if (!opt(&o, "config") || !opt(&o, "out")) { fprintf(stderr, "usage: opencon random-model --config CONFIG.json --out DIR [--seed N]\n"); free_opts(&o); return 2; }
  uint64_t seed = opt(&o, "seed") ? strtoull(opt(&o, "seed"), NULL, 10) : 0;
  char *text = NULL;
  int is_bert = oc_read_file(opt(&o, "config"), &text, NULL, &err) == 0 && strstr(text, "\"modernbert\"") != NULL;
  free(text);
  int rc = (is_bert ? oc_mbert_random(opt(&o, "config"), opt(&o, "out"), 3, seed, &err) : oc_random_model(opt(&o, "config"), opt(&o, "out"), seed, &err))
               ? die(&err)
               : 0;
  if (!rc) fprintf(stderr, "wrote %s/model.safetensors\n", opt(&o, "out"));
  free_opts(&o);
  return rc;
}

static int cmd_download(int argc, char **argv) {
  static const char *const known[] = {"model_id", "revision", "cache_dir", NULL};
  opts o;
  oc_error err;
  if (cli_begin(argc, argv, &o, known, NULL)) return 2;
  if (!opt(&o, "model_id")) { fprintf(stderr, "usage: opencon download --model_id org/name [--revision R]\n"); free_opts(&o); return 2; }
  oc_hub_options ho = {.revision = opt(&o, "revision"), .cache_dir = opt(&o, "cache_dir")};
  char *dir = NULL;
  int rc = oc_resolve_model(opt(&o, "model_id"), &ho, &dir, &err) ? die(&err) : 0;
  if (!rc) printf("%s\n", dir);
  free(dir);
  free_opts(&o);
  return rc;
}

static void usage(void) {
  fprintf(stderr,
          "opencon — activation-probe guard for open-weight LLMs\n\n"
          "commands:\n"
          "  forward        hidden states + logits of a token sequence -> safetensors\n"
          "  generate       greedy continuation (KV cache) of a token sequence\n"
          "  random-model   random BF16 checkpoint with the real names/shapes of a config\n"
          "  download       resolve --model_id into the Hugging Face cache\n"
          "  tokenize       token ids of text, a file, a chat exchange or a JSONL batch\n"
          "  detokenize     text of token ids\n"
          "  collect-activations  final-token hidden states of labelled exchanges -> safetensors (resumable)\n"
          "  train-probe    linear probe on one layer -> probe.safetensors + config.json\n"
          "  sweep-layers   one probe per layer from one pass per example -> JSON metrics (+ SVG)\n"
          "  classify       ModernBERT exchange classifier decision (JSON) for an exchange, a JSONL file or token ids\n"
          "  train-exchange-classifier      full fine-tuning of ModernBERT (HF Trainer defaults), checkpoints, resume\n"
          "  calibrate-exchange-classifier  block-threshold sweep on a validation split (JSON + SVG)\n"
          "  build-three-class-classifier-data  binary exchanges -> safe_compliance / safe_refusal / unsafe_compliance\n"
          "  guarded-generate   decode with the probe every N tokens; the classifier decides on pauses\n"
          "  benchmark-latency  baseline vs probe-only vs full guard: ms, tokens/s, time to first token\n"
          "  demo           the whole pipeline on the bundled tiny models (offline, seconds)\n"
          "  benchmark-jailbreak  raw vs guarded generation on benchmark prompts, judged (LLM API or classifier), resumable\n\n"
          "--model_id takes a local directory or a Hub id org/name (HF cache, then download).\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) { usage(); return argc < 2 ? 2 : 0; }
  const char *c = argv[1];
  if (strcmp(c, "forward") == 0) return cmd_forward(argc - 2, argv + 2);
  if (strcmp(c, "generate") == 0) return cmd_generate(argc - 2, argv + 2);
  if (strcmp(c, "random-model") == 0) return cmd_random_model(argc - 2, argv + 2);
  if (strcmp(c, "download") == 0) return cmd_download(argc - 2, argv + 2);
  if (strcmp(c, "tokenize") == 0) return cmd_tokenize(argc - 2, argv + 2);
  if (strcmp(c, "detokenize") == 0) return cmd_detokenize(argc - 2, argv + 2);
  if (strcmp(c, "collect-activations") == 0) return cmd_collect_activations(argc - 2, argv + 2);
  if (strcmp(c, "train-probe") == 0) return cmd_train_probe(argc - 2, argv + 2);
  if (strcmp(c, "sweep-layers") == 0) return cmd_sweep_layers(argc - 2, argv + 2);
  if (strcmp(c, "classify") == 0) return cmd_classify(argc - 2, argv + 2);
  if (strcmp(c, "train-exchange-classifier") == 0) return cmd_train_exchange_classifier(argc - 2, argv + 2);
  if (strcmp(c, "calibrate-exchange-classifier") == 0) return cmd_calibrate_exchange_classifier(argc - 2, argv + 2);
  if (strcmp(c, "build-three-class-classifier-data") == 0) return cmd_build_three_class(argc - 2, argv + 2);
  if (strcmp(c, "guarded-generate") == 0) return cmd_guarded_generate(argc - 2, argv + 2);
  if (strcmp(c, "benchmark-latency") == 0) return cmd_benchmark_latency(argc - 2, argv + 2);
  if (strcmp(c, "demo") == 0) return cmd_demo(argc - 2, argv + 2);
  if (strcmp(c, "benchmark-jailbreak") == 0) return cmd_benchmark_jailbreak(argc - 2, argv + 2);
  fprintf(stderr, "error: unknown command \"%s\"\n", c);
  usage();
  return 2;
}
