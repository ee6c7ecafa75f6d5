/* Decoder config.json as hostile input (issue 19): every value oc_config_parse reads is checked for
 * its type and range, with an error naming the file, the key, the valid range and the value; every
 * real config.json of a supported model still parses; a checkpoint with more layers than
 * num_hidden_layers is refused, naming the first tensor beyond them. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "opencon/model.h"

static const char *fix; /* tests/fixtures */

static char *fixture_text(const char *rel) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s", fix, rel);
  char *t;
  oc_error e;
  REQUIRE(oc_read_file(p, &t, NULL, &e) == 0, "%s", e.msg);
  return t;
}

/* base (a config.json's text) with key set to the JSON text value (NULL: removed; put in as written,
 * so 1e999 stays what the file says); in text_config when the config has one (multimodal Gemma),
 * unless key starts with "/" (the outer object) */
static char *with_value(const char *base, const char *key, const char *value) {
  cJSON *j = cJSON_Parse(base), *o = j;
  REQUIRE(j, "fixture config parses");
  if (key[0] == '/') key++;
  else if (cJSON_IsObject(cJSON_GetObjectItem(j, "text_config"))) o = cJSON_GetObjectItem(j, "text_config");
  cJSON_DeleteItemFromObjectCaseSensitive(o, key);
  static const char mark[] = "\"@value@\"";
  if (value) cJSON_AddStringToObject(o, key, "@value@");
  char *s = cJSON_Print(j);
  cJSON_Delete(j);
  char *at = value ? strstr(s, mark) : NULL;
  if (!at) return s;
  size_t n = strlen(s) + strlen(value) + 1;
  char *out = malloc(n);
  snprintf(out, n, "%.*s%s%s", (int)(at - s), s, value, at + strlen(mark));
  free(s);
  return out;
}

typedef struct {
  const char *key, *value, *want;
} bad_value;

/* each bad value of a fixture's config: an error naming the file and containing want */
static void refuse(const char *model, const bad_value *bad, size_t n) {
  char rel[256];
  snprintf(rel, sizeof rel, "%s/config.json", model);
  char *base = fixture_text(rel);
  oc_model_config c;
  oc_error e;
  REQUIRE(oc_config_parse(base, strlen(base), rel, &c, &e) == 0, "%s: %s", rel, e.msg);
  oc_config_free(&c);
  for (size_t i = 0; i < n; i++) {
    char *text = with_value(base, bad[i].key, bad[i].value);
    e.msg[0] = 0;
    int rc = oc_config_parse(text, strlen(text), rel, &c, &e);
    CHECK(rc != 0 && strstr(e.msg, rel) && strstr(e.msg, bad[i].want), "%s: %s = %s: expected \"%s\", got %s", model, bad[i].key,
          bad[i].value ? bad[i].value : "(none)", bad[i].want, rc ? e.msg : "accepted");
    if (!rc) oc_config_free(&c);
    free(text);
  }
  free(base);
}

static void llama_values(void) {
  static const bad_value bad[] = {
      /* the position check must not be switchable off */
      {"max_position_embeddings", "0", "\"max_position_embeddings\" must be an integer in [1, 16777216], got 0"},
      {"max_position_embeddings", "-1", "\"max_position_embeddings\" must be an integer in [1, 16777216], got -1"},
      {"max_position_embeddings", "\"4096\"", "\"max_position_embeddings\" must be an integer in [1, 16777216], got \"4096\""},
      {"max_position_embeddings", "1e10", "\"max_position_embeddings\" must be an integer in [1, 16777216]"},
      /* stop ids: an id or a flat list of ids of the vocabulary */
      {"eos_token_id", "\"x\"", "eos_token_id must be a token id in [0, 511] or a list of them, got \"x\""},
      {"eos_token_id", "1099511627776", "eos_token_id must be a token id in [0, 511] or a list of them, got 1099511627776"},
      {"eos_token_id", "[[2]]", "eos_token_id must be a token id in [0, 511] or a list of them, got [[2]]"},
      {"eos_token_id", "[1, 512]", "got [1,512]"},
      {"eos_token_id", "-1", "got -1"},
      {"eos_token_id", "2.5", "got 2.5"},
      {"eos_token_id", "[1, 2, 3, 4, 5, 6, 7, 8, 9]", "eos_token_id lists more than 8 distinct ids"},
      {"bos_token_id", "512", "\"bos_token_id\" must be an integer in [0, 511], got 512"},
      {"pad_token_id", "-1", "\"pad_token_id\" must be an integer in [0, 511], got -1"},
      /* booleans are JSON booleans */
      {"tie_word_embeddings", "\"yes\"", "\"tie_word_embeddings\" must be true or false, got \"yes\""},
      {"tie_word_embeddings", "1", "\"tie_word_embeddings\" must be true or false, got 1"},
      {"attention_bias", "\"false\"", "\"attention_bias\" must be true or false, got \"false\""},
      {"mlp_bias", "0", "\"mlp_bias\" must be true or false, got 0"},
      /* sizes */
      {"num_hidden_layers", "2.5", "\"num_hidden_layers\" must be an integer in [1, 1024], got 2.5"},
      {"num_hidden_layers", "0", "\"num_hidden_layers\" must be an integer in [1, 1024], got 0"},
      {"hidden_size", "\"64\"", "\"hidden_size\" must be an integer in [1, 65536], got \"64\""},
      {"hidden_size", NULL, "required key \"hidden_size\" is missing"},
      {"num_key_value_heads", "0", "\"num_key_value_heads\" must be an integer in [1, 4], got 0"},
      {"num_key_value_heads", "3", "num_attention_heads (4) is not a multiple of num_key_value_heads (3)"},
      {"head_dim", "1000000000", "\"head_dim\" must be an integer in [1, 65536], got 1000000000"},
      {"head_dim", "15", "head_dim must be positive and even, got 15"},
      {"vocab_size", "[256]", "\"vocab_size\" must be an integer in [1, 16777216], got [256]"},
      /* numbers */
      {"rms_norm_eps", "\"1e-5\"", "\"rms_norm_eps\" must be a finite number, got \"1e-5\""},
      {"rms_norm_eps", "0", "rms_norm_eps must be in (0, 1), got 0"},
      {"rope_theta", "-10000", "\"rope_theta\" must be positive, got -10000"},
      {"rope_theta", "0", "\"rope_theta\" must be positive, got 0"},
      /* past a double's range: refused by the strict JSON parser before any key is read */
      {"rope_theta", "1e999", "the number 1e999 is out of range"},
      {"rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 1e999}", "the number 1e999 is out of range"},
      {"rope_scaling", "{\"rope_type\": 3}", "rope_scaling.rope_type must be a string"},
      {"final_logit_softcapping", "0", "\"final_logit_softcapping\" must be positive, got 0"},
      {"final_logit_softcapping", "-30", "\"final_logit_softcapping\" must be positive, got -30"},
      {"attn_logit_softcapping", "50", "attn_logit_softcapping is not supported"},
      {"sliding_window", "-1", "\"sliding_window\" must be an integer in [0, 2147483647], got -1"},
      /* strings */
      {"hidden_act", "5", "\"hidden_act\" must be a string, got 5"},
      {"/architectures", "\"LlamaForCausalLM\"", "\"architectures\" must be a list of names"},
      {"/model_type", "[\"llama\"]", "\"model_type\" a string"},
  };
  refuse("llama3-tiny", bad, sizeof bad / sizeof *bad);
}

static void gemma_values(void) {
  static const bad_value g3[] = {
      {"sliding_window_pattern", "0", "\"sliding_window_pattern\" must be an integer in [1, 1024], got 0"},
      {"sliding_window", "0", "sliding layers need a positive sliding_window"},
      {"query_pre_attn_scalar", "0", "\"query_pre_attn_scalar\" must be positive, got 0"},
      {"rope_local_base_freq", "-1", "\"rope_local_base_freq\" must be positive, got -1"},
      {"hidden_activation", "true", "\"hidden_activation\" must be a string, got true"},
      {"eos_token_id", "[1, \"106\"]", "eos_token_id must be a token id"},
  };
  refuse("gemma3-tiny", g3, sizeof g3 / sizeof *g3);
  static const bad_value g4[] = {
      {"num_kv_shared_layers", "10", "\"num_kv_shared_layers\" must be an integer in [0, 9], got 10"},
      {"num_kv_shared_layers", "-1", "\"num_kv_shared_layers\" must be an integer in [0, 9], got -1"},
      {"use_double_wide_mlp", "\"true\"", "\"use_double_wide_mlp\" must be true or false"},
      {"enable_moe_block", "1", "\"enable_moe_block\" must be true or false, got 1"},
      {"use_bidirectional_attention", "true", "\"use_bidirectional_attention\" must be a string, got true"},
      {"global_head_dim", "0", "\"global_head_dim\" must be an integer in [1, 65536], got 0"},
      {"hidden_size_per_layer_input", "-8", "\"hidden_size_per_layer_input\" must be an integer in [0, 65536], got -8"},
      {"max_position_embeddings", "-1", "\"max_position_embeddings\" must be an integer in [1, 16777216], got -1"},
      {"eos_token_id", "\"x\"", "text_config.eos_token_id must be a token id"},
      {"/eos_token_id", "{\"id\": 1}", "eos_token_id must be a token id"},
      {"/tie_word_embeddings", "\"no\"", "\"tie_word_embeddings\" must be true or false, got \"no\""},
      {"/text_config", "\"x\"", "\"text_config\" must be an object"},
  };
  refuse("gemma4-tiny", g4, sizeof g4 / sizeof *g4);
  static const bad_value q3[] = {{"use_sliding_window", "\"no\"", "\"use_sliding_window\" must be true or false, got \"no\""}};
  refuse("qwen3-tiny", q3, sizeof q3 / sizeof *q3);
}

/* the checks accept every released config they were written for, with the values transformers reads */
static void real_configs(void) {
  static const struct {
    const char *file;
    int n_eos, eos[3], max_pos, tie, bos, pad;
  } real[] = {
      {"configs/Llama-3.2-1B-Instruct.config.json", 3, {128001, 128008, 128009}, 131072, 1, 128000, -1},
      {"configs/Qwen3-0.6B.config.json", 1, {151645}, 40960, 1, 151643, -1},
      {"configs/Qwen3-1.7B.config.json", 1, {151645}, 40960, 1, 151643, -1},
      {"configs/gemma-3-1b-it.config.json", 2, {1, 106}, 32768, 1, 2, 0},
      {"configs/gemma-4-E2B-it.config.json", 2, {1, 106}, 131072, 1, 2, 0},
      {"configs/gemma-4-E4B-it.config.json", 2, {1, 106}, 131072, 1, 2, 0},
      {"llama3-tiny/config.json", -1, {0}, 0, 0, 0, 0},
      {"qwen3-tiny/config.json", -1, {0}, 0, 0, 0, 0},
      {"gemma3-tiny/config.json", -1, {0}, 0, 0, 0, 0},
      {"gemma4-tiny/config.json", -1, {0}, 0, 0, 0, 0},
  };
  for (size_t i = 0; i < sizeof real / sizeof *real; i++) {
    char *t = fixture_text(real[i].file);
    oc_model_config c;
    oc_error e;
    int rc = oc_config_parse(t, strlen(t), real[i].file, &c, &e);
    CHECK(rc == 0, "%s parses: %s", real[i].file, rc ? e.msg : "");
    if (!rc && real[i].n_eos >= 0) {
      int same = c.n_eos == real[i].n_eos;
      for (int k = 0; k < c.n_eos && same; k++) same = c.eos_token_ids[k] == real[i].eos[k];
      CHECK(same && c.max_position_embeddings == real[i].max_pos && c.tie_embeddings == real[i].tie && c.bos_token_id == real[i].bos &&
                c.pad_token_id == real[i].pad,
            "%s: eos (%d ids), max_position_embeddings %d, tie %d, bos %d, pad %d", real[i].file, c.n_eos, c.max_position_embeddings,
            c.tie_embeddings, c.bos_token_id, c.pad_token_id);
    }
    if (!rc) oc_config_free(&c);
    free(t);
  }
}

/* a checkpoint with 4 layers loaded under num_hidden_layers 3: refused, naming layer 3's first tensor */
static void extra_layers(void) {
  char dir[] = "/tmp/oc_model_config_XXXXXX", p[1200], w[1024];
  REQUIRE(mkdtemp(dir), "mkdtemp");
  snprintf(w, sizeof w, "%s/llama3-tiny/model.safetensors", fix);
  REQUIRE(realpath(w, p), "%s", w);
  snprintf(w, sizeof w, "%s/model.safetensors", dir);
  REQUIRE(symlink(p, w) == 0, "symlink");
  char *base = fixture_text("llama3-tiny/config.json");
  cJSON *j = cJSON_Parse(base);
  int layers = cJSON_GetObjectItem(j, "num_hidden_layers")->valueint;
  cJSON_Delete(j);
  REQUIRE(layers == 4, "llama3-tiny has 4 layers");
  oc_model *m;
  oc_error e;
  snprintf(p, sizeof p, "%s/config.json", dir);
  char *text = with_value(base, "num_hidden_layers", "3");
  REQUIRE(oc_write_file_atomic(p, text, strlen(text), &e) == 0, "%s", e.msg);
  free(text);
  int rc = oc_model_load(dir, &m, &e);
  CHECK(rc != 0 && strstr(e.msg, "model.safetensors: tensor \"model.layers.3.input_layernorm.weight\" is of layer 3") &&
            strstr(e.msg, "num_hidden_layers 3"),
        "a checkpoint with more layers than num_hidden_layers: %s", rc ? e.msg : "accepted");
  if (!rc) oc_model_free(m);
  /* the same checkpoint under its own config loads */
  text = with_value(base, "num_hidden_layers", "4");
  REQUIRE(oc_write_file_atomic(p, text, strlen(text), &e) == 0, "%s", e.msg);
  free(text);
  rc = oc_model_load(dir, &m, &e);
  CHECK(rc == 0, "the full checkpoint loads: %s", rc ? e.msg : "");
  if (!rc) {
    CHECK(oc_config_check_positions(oc_model_cfg(m), 1, oc_model_cfg(m)->max_position_embeddings, &e) != 0 && strstr(e.msg, "max_position_embeddings"),
          "one position too many is refused");
    oc_model_free(m);
  }
  free(base);
  snprintf(p, sizeof p, "rm -rf %s", dir);
  if (system(p) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_model_config FIXTURES_DIR");
  fix = argv[1];
  llama_values();
  gemma_values();
  real_configs();
  extra_layers();
  return check_summary("model_config");
}
