/* forward, generate, tokenize, detokenize, random-model, download: the decoder and tokenizer commands. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/chat.h"
#include "opencon/hub.h"
#include "opencon/model.h"
#include "opencon/modernbert.h"
#include "opencon/safetensors.h"
#include "opencon/json.h"
#include "opts.h"

#define O_MODEL O_("model_id", OPT_STR, OPT_REQUIRED, NULL, "the model: a local directory or a Hub id org/name")
#define O_IDS O_INTS("input_ids", NULL, 0, INT32_MAX, "token ids, e.g. 2,106,4521 (or give --text)")
#define O_TEXT O_STR("text", NULL, "text, encoded with the model's tokenizer with its special tokens (instead of --input_ids)")

/* --input_ids, or --text encoded with the model directory's tokenizer (special tokens added) */
static int get_ids(const cli_args *a, int32_t **ids, int *n, oc_error *err) {
  int nv;
  const int64_t *v = arg_list(a, "input_ids", &nv);
  if (v) {
    if (!(*ids = malloc(sizeof **ids * (size_t)nv))) return oc_fail_code(err, OC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nv; i++) (*ids)[i] = (int32_t)v[i]; /* each in [0, INT32_MAX] (the option's range) */
    *n = nv;
    return 0;
  }
  oc_chat *c;
  if (load_chat(arg_str(a, "model_id"), &c, err)) return -1;
  oc_encoding e;
  int rc = oc_chat_encode(c, arg_str(a, "text"), 1, 0, &e, err);
  oc_chat_free(c);
  if (rc) return -1;
  if (e.n == 0) { oc_encoding_free(&e); return oc_fail(err, "--text encodes to no tokens"); }
  *ids = e.ids;
  *n = e.n;
  e.ids = NULL;
  oc_encoding_free(&e);
  return 0;
}

/* exactly one of --input_ids and --text */
static int ids_or_text(const cli_args *a) {
  if (arg_given(a, "input_ids") == arg_given(a, "text")) return cli_usage_error(a, "give either --input_ids or --text");
  return 0;
}

/* n positions (+ more to generate) must fit the model's position range */

/* ---- forward ---- */
static int run_forward(const cli_args *a) {
  if (ids_or_text(a)) return 2;
  const char *model_id = arg_str(a, "model_id"), *out = arg_str(a, "out");
  oc_error err;
  int32_t *ids = NULL;
  int n = 0, rc = 1, nl = 0;
  oc_model *m = NULL;
  oc_session *s = NULL;
  int *layers = NULL;
  float *hs = NULL, *logits = NULL;
  oc_st_writer *w = NULL;
  if (get_ids(a, &ids, &n, &err) || load_model(model_id, arg_weights(a), &m, &err)) goto fail;
  const oc_model_config *c = oc_model_cfg(m);
  int max_ctx = arg_given(a, "max_ctx") ? arg_int(a, "max_ctx") : n;
  if (oc_config_check_positions(c, n, 0, &err) || (arg_given(a, "max_ctx") && oc_config_check_positions(c, max_ctx, 0, &err) && oc_wrap(&err, "--max_ctx"))) goto fail;
  const int64_t *lv = arg_list(a, "layers", &nl);
  if (!lv) nl = c->n_layers + 1;
  if (!(layers = malloc(sizeof *layers * (size_t)nl))) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  for (int i = 0; i < nl; i++) {
    layers[i] = lv ? (int)lv[i] : i; /* each in the option's range */
    if (lv && oc_hidden_index(c, layers[i], &err) < 0) { oc_wrap(&err, "--layers"); goto fail; }
  }
  hs = malloc(sizeof(float) * (size_t)nl * (size_t)n * (size_t)c->hidden);
  logits = malloc(sizeof(float) * (size_t)n * (size_t)c->vocab);
  if (!hs || !logits) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory (%d layers x %d tokens x %d)", nl, n, c->hidden); goto fail; }
  oc_taps taps = {nl, layers, 0, NULL, hs};
  if (!(s = oc_session_new(m, max_ctx, &err)) || oc_forward(s, ids, n, &taps, logits, 1, &err)) goto fail;
  w = oc_st_writer_new();
  int64_t hshape[3] = {nl, n, c->hidden}, lshape[2] = {n, c->vocab}, ishape[1] = {n};
  if (oc_st_writer_add(w, "hidden_states", OC_DT_F32, 3, hshape, hs, &err) || oc_st_writer_add(w, "logits", OC_DT_F32, 2, lshape, logits, &err) ||
      oc_st_writer_add(w, "input_ids", OC_DT_I32, 1, ishape, ids, &err) || oc_st_writer_set_metadata(w, "model_id", model_id, &err) ||
      oc_st_writer_write(w, out, &err))
    goto fail;
  fprintf(stderr, "wrote %s: hidden_states [%d, %d, %d], logits [%d, %d]; next token (greedy) %d\n", out, nl, n, c->hidden, n, c->vocab,
          oc_argmax(logits + (size_t)(n - 1) * c->vocab, c->vocab));
  rc = 0;
  goto done;
fail:
  rc = die(&err);
done:
  oc_st_writer_free(w);
  oc_session_free(s);
  oc_model_free(m);
  free(ids); free(layers); free(hs); free(logits);
  return rc;
}

static const opt_spec forward_opts[] = {
    O_MODEL, O_IDS, O_TEXT, O_WEIGHTS,
    O_INTS("layers", NULL, -100000, 100000, "hidden states to write: transformers' output_hidden_states indices, -k from the end (default: all)"),
    O_("out", OPT_OUT, OPT_REQUIRED, NULL, "the safetensors file to write"),
    O_INT("max_ctx", NULL, 1, 1 << 24, "session length in tokens (default: the input's length)"),
    O_THREADS, O_END};
const cli_command cmd_forward = {"forward", "hidden states + logits of a token sequence -> safetensors",
                                 "Writes hidden_states [layers, T, H] and logits [T, V] (F32) and input_ids. --model_id and --out are required;\n"
                                 "give either --input_ids or --text.",
                                 forward_opts, run_forward};

/* ---- generate ---- */
static int run_generate(const cli_args *a) {
  if (ids_or_text(a)) return 2;
  int max_new = arg_int(a, "max_new_tokens");
  oc_error err;
  int32_t *ids = NULL;
  int n = 0, rc = 1;
  oc_model *m = NULL;
  oc_session *s = NULL;
  float *logits = NULL;
  if (get_ids(a, &ids, &n, &err) || load_model(arg_str(a, "model_id"), arg_weights(a), &m, &err)) { rc = die(&err); goto done; }
  const oc_model_config *c = oc_model_cfg(m);
  if (oc_config_check_positions(c, n, max_new, &err)) { rc = die(&err); goto done; }
  logits = malloc(sizeof(float) * (size_t)c->vocab);
  if (!logits) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); rc = die(&err); goto done; }
  if (!(s = oc_session_new(m, n + max_new, &err))) { rc = die(&err); goto done; }
  double t0 = oc_now();
  if (oc_forward(s, ids, n, NULL, logits, 0, &err)) { rc = die(&err); goto done; }
  double t1 = oc_now();
  printf("[");
  int k = 0;
  for (; k < max_new; k++) {
    int32_t next = oc_argmax(logits, c->vocab);
    printf("%s%d", k ? ", " : "", next);
    fflush(stdout);
    if (!arg_flag(a, "no_eos_stop") && oc_is_eos(c, next)) { k++; break; }
    if (k + 1 < max_new && oc_forward(s, &next, 1, NULL, logits, 0, &err)) { printf("]\n"); rc = die(&err); goto done; }
  }
  printf("]\n");
  double t2 = oc_now();
  fprintf(stderr, "prefill %d tokens %.1f ms; %d new tokens %.1f ms (%.2f tok/s)\n", n, 1e3 * (t1 - t0), k, 1e3 * (t2 - t1),
          k > 1 ? (k - 1) / (t2 - t1) : 0.0);
  rc = 0;
done:
  oc_session_free(s);
  oc_model_free(m);
  free(ids); free(logits);
  return rc;
}

static const opt_spec generate_opts[] = {
    O_MODEL, O_IDS, O_TEXT, O_WEIGHTS,
    O_INT("max_new_tokens", "32", 1, 1 << 20, "tokens to generate"),
    O_FLAG("no_eos_stop", "keep going past end-of-sequence tokens"),
    O_THREADS, O_END};
const cli_command cmd_generate = {"generate", "greedy continuation (KV cache) of a token sequence",
                                  "Prints the generated ids; timings go to stderr. --model_id is required; give either --input_ids or --text.",
                                  generate_opts, run_generate};

/* ---- tokenize ---- */
/* {"ids": [...], "tokens": [...]} on one line, written as it goes (a cJSON node per id made a
 * 32 MB line take 2.4 GB); each token string escaped by cJSON */
static int print_encoding(const oc_encoding *e, int pieces, oc_error *err) {
  fputs("{\"ids\":[", stdout);
  for (int i = 0; i < e->n; i++) printf(i ? ",%d" : "%d", e->ids[i]);
  putchar(']');
  if (pieces) {
    fputs(",\"tokens\":[", stdout);
    for (int i = 0; i < e->n; i++) {
      cJSON *t = cJSON_CreateString(e->tokens[i]);
      char *js = t ? cJSON_PrintUnformatted(t) : NULL;
      cJSON_Delete(t);
      if (!js) { putchar('\n'); return oc_fail_code(err, OC_ERR_NOMEM, "out of memory"); }
      printf("%s%s", i ? "," : "", js);
      free(js);
    }
    putchar(']');
  }
  puts("}");
  return 0;
}

/* one encoding per {"text", "add_special_tokens"?} line of path ("-": stdin); add_special_tokens is
 * a JSON boolean ("true" or 1 would otherwise read as false) */
static int tokenize_jsonl(const cli_args *a, const oc_chat *c, const char *path, oc_error *err) {
  FILE *f = strcmp(path, "-") ? oc_fopen_regular(path, err) : stdin;
  if (!f) return -1;
  char *line = NULL;
  size_t cap = 0;
  int ln = 0, rc = 0;
  ssize_t got;
  while (!rc && (got = getline(&line, &cap, f)) > 0) {
    ln++;
    cJSON *row = NULL;
    if (oc_json_parse(line, (size_t)got, path, ln, &row, err)) { rc = -1; break; }
    const cJSON *t = row ? cJSON_GetObjectItemCaseSensitive(row, "text") : NULL, *as = row ? cJSON_GetObjectItemCaseSensitive(row, "add_special_tokens") : NULL;
    oc_encoding e;
    if (!cJSON_IsObject(row) || !cJSON_IsString(t)) rc = oc_fail(err, "%s:%d: expected a JSON object with a \"text\" string", path, ln);
    else if (as && !cJSON_IsBool(as)) {
      char *v = cJSON_PrintUnformatted(as);
      rc = oc_fail(err, "%s:%d: \"add_special_tokens\" must be true or false (a JSON boolean), got %.40s", path, ln, v ? v : "?");
      free(v);
    } else if (oc_chat_encode(c, t->valuestring, as ? cJSON_IsTrue(as) : !arg_flag(a, "no_special"), arg_int(a, "max_length"), &e, err))
      rc = oc_wrap(err, "%s:%d", path, ln);
    else {
      rc = print_encoding(&e, arg_flag(a, "pieces"), err);
      oc_encoding_free(&e);
    }
    cJSON_Delete(row);
  }
  free(line);
  if (f != stdin) fclose(f);
  return rc;
}

static int run_tokenize(const cli_args *a) {
  int modes = arg_given(a, "text") + arg_given(a, "file") + arg_flag(a, "chat") + arg_given(a, "jsonl");
  if (modes != 1) return cli_usage_error(a, "give one of --text, --file, --chat or --jsonl");
  if (arg_flag(a, "chat") != arg_given(a, "prompt")) return cli_usage_error(a, "--chat needs --prompt, and --prompt needs --chat");
  if (arg_given(a, "response") && !arg_flag(a, "chat")) return cli_usage_error(a, "--response needs --chat");
  oc_error err;
  oc_chat *c = NULL;
  char *text = NULL;
  int add_special = !arg_flag(a, "no_special"), rc = 1;
  if (load_chat(arg_str(a, "model_id"), &c, &err)) goto fail;
  if (arg_given(a, "jsonl")) {
    if (tokenize_jsonl(a, c, arg_str(a, "jsonl"), &err)) goto fail;
    rc = 0;
    goto done;
  }
  if (arg_flag(a, "chat")) {
    if (oc_chat_format_exchange(c, arg_str(a, "prompt"), arg_str(a, "response"), !arg_flag(a, "no_chat_template"), &text, &err)) goto fail;
    if (!arg_flag(a, "no_chat_template")) add_special = 0; /* the template writes its own special tokens */
  } else if (arg_given(a, "file")) {
    if (oc_read_file(arg_str(a, "file"), &text, NULL, &err)) goto fail;
  } else if (!(text = strdup(arg_str(a, "text")))) {
    oc_fail_code(&err, OC_ERR_NOMEM, "out of memory");
    goto fail;
  }
  oc_encoding e;
  if (oc_chat_encode(c, text, add_special, arg_int(a, "max_length"), &e, &err)) goto fail;
  int prc = print_encoding(&e, arg_flag(a, "pieces"), &err);
  oc_encoding_free(&e);
  if (prc) goto fail;
  rc = 0;
  goto done;
fail:
  rc = die(&err);
done:
  free(text);
  oc_chat_free(c);
  return rc;
}

static const opt_spec tokenize_opts[] = {
    O_MODEL,
    O_("text", OPT_STR, OPT_EMPTY_OK, NULL, "text to encode"),
    O_IN("file", "a text file to encode"),
    O_FLAG("chat", "encode the exchange --prompt / --response formatted with the model's chat template"),
    O_("prompt", OPT_STR, OPT_EMPTY_OK, NULL, "the user turn (with --chat)"),
    O_("response", OPT_STR, OPT_EMPTY_OK, NULL, "the assistant turn (with --chat; without it, the generation prompt)"),
    O_("jsonl", OPT_IN, OPT_STDIN, NULL, "{\"text\", \"add_special_tokens\"?} a line (- reads stdin); one encoding printed per line"),
    O_FLAG("no_special", "do not add the tokenizer's special tokens"),
    O_FLAG("pieces", "also print the token strings"),
    O_FLAG("no_chat_template", "with --chat: the MVP's plain \"User:\\n...\\n\\nAssistant:\\n...\" form"),
    O_INT("max_length", "0", 0, 1 << 24, "truncate to this many tokens (0 = no limit)"),
    O_END};
const cli_command cmd_tokenize = {"tokenize", "token ids of text, a file, a chat exchange or a JSONL batch",
                                  "Prints {\"ids\": [...]} (and \"tokens\" with --pieces). --model_id is required; give one of --text, --file,\n"
                                  "--chat --prompt P [--response R], or --jsonl.",
                                  tokenize_opts, run_tokenize};

/* ---- detokenize ---- */
static int run_detokenize(const cli_args *a) {
  oc_error err;
  oc_chat *c = NULL;
  int n, rc = 1;
  const int64_t *v = arg_list(a, "ids", &n);
  int32_t *ids = malloc(sizeof *ids * (size_t)n);
  char *text = NULL;
  size_t len = 0;
  if (!ids) { oc_fail_code(&err, OC_ERR_NOMEM, "out of memory"); goto fail; }
  if (load_chat(arg_str(a, "model_id"), &c, &err)) goto fail;
  for (int i = 0; i < n; i++) {
    ids[i] = (int32_t)v[i]; /* each in [0, INT32_MAX] (the option's range) */
    if (!oc_tokenizer_id_to_token(c->tok, ids[i])) {
      oc_fail(&err, "--ids: item %d, id %d, is not in the tokenizer's vocabulary (%d tokens)", i + 1, ids[i], oc_tokenizer_vocab_size(c->tok));
      goto fail;
    }
  }
  if (oc_tokenizer_decode(c->tok, ids, n, arg_flag(a, "skip_special_tokens"), &text, &len, &err)) goto fail;
  fwrite(text, 1, len, stdout);
  printf("\n");
  rc = 0;
  goto done;
fail:
  rc = die(&err);
done:
  free(ids);
  free(text);
  oc_chat_free(c);
  return rc;
}

static const opt_spec detokenize_opts[] = {
    O_("model_id", OPT_STR, OPT_REQUIRED, NULL, "the model (its tokenizer.json): a local directory or a Hub id"),
    {.name = "ids", .type = OPT_INTS, .attr = OPT_REQUIRED, .lo = 0, .hi = INT32_MAX, .help = "token ids, e.g. 1,2,3; each must be in the vocabulary"},
    O_FLAG("skip_special_tokens", "leave special tokens out of the text"),
    O_END};
const cli_command cmd_detokenize = {"detokenize", "text of token ids", NULL, detokenize_opts, run_detokenize};

/* ---- random-model ---- */
static int run_random_model(const cli_args *a) {
  oc_error err;
  const char *cfg = arg_str(a, "config"), *out = arg_str(a, "out");
  if (oc_random_checkpoint(cfg, out, (uint64_t)arg_i64(a, "seed"), &err)) return die(&err);
  fprintf(stderr, "wrote %s/model.safetensors\n", out);
  return 0;
}

static const opt_spec random_model_opts[] = {
    O_("config", OPT_IN, OPT_REQUIRED, NULL, "a Hugging Face config.json (a decoder, or ModernBERT)"),
    O_("out", OPT_OUTDIR, OPT_REQUIRED, NULL, "the model directory to write"),
    O_I64("seed", "0", 0, INT64_MAX, "random seed"),
    O_THREADS, O_END};
const cli_command cmd_random_model = {"random-model", "random BF16 checkpoint with the real names/shapes of a config", NULL, random_model_opts,
                                      run_random_model};

/* ---- download ---- */
static int run_download(const cli_args *a) {
  oc_error err;
  oc_hub_options ho = {.revision = arg_str(a, "revision"), .cache_dir = arg_str(a, "cache_dir")};
  char *dir = NULL;
  if (oc_resolve_model(arg_str(a, "model_id"), &ho, &dir, &err)) return die(&err);
  printf("%s\n", dir);
  free(dir);
  return 0;
}

static const opt_spec download_opts[] = {
    O_("model_id", OPT_STR, OPT_REQUIRED, NULL, "a Hub id org/name (or a local directory, printed as it is)"),
    O_STR("revision", NULL, "branch, tag or commit (default main)"),
    O_OUTDIR("cache_dir", NULL, "the Hugging Face cache (default $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)"),
    O_END};
const cli_command cmd_download = {"download", "resolve --model_id into the Hugging Face cache", "Prints the snapshot directory.", download_opts,
                                  run_download};
