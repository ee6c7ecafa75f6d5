/* Chat templates rendered by our Jinja interpreter against Python Jinja2 goldens
 * (transformers' apply_chat_template settings), and the rendered text's token ids. */
#include <cjson/cJSON.h>
#include <string.h>

#include "check.h"
#include "opencon/chat.h"

int main(int argc, char **argv) {
  REQUIRE(argc >= 2, "usage: test_chat GOLDEN_DIR [TOKENIZER_JSON]");
  const char *dir = argv[1];
  oc_error e;
  char p[1024], *src;
  snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
  REQUIRE(oc_read_file(p, &src, NULL, &e) == 0, "%s", e.msg);
  oc_template *t;
  REQUIRE(oc_template_parse(src, "chat_template.jinja", &t, &e) == 0, "%s", e.msg);
  free(src);
  snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
  cJSON *cfg = read_json_file(p);
  if (!cfg) { /* gemma4: the special tokens its source.txt names */
    cfg = cJSON_Parse("{\"bos_token\": \"<bos>\", \"eos_token\": \"<eos>\", \"unk_token\": \"<unk>\", \"pad_token\": \"<pad>\", \"mask_token\": \"<mask>\"}");
  }
  oc_tokenizer *tok = NULL;
  if (argc > 2) REQUIRE(oc_tokenizer_load_file(argv[2], &tok, &e) == 0, "%s", e.msg);
  snprintf(p, sizeof p, "%s/chat.jsonl", dir);
  FILE *f = fopen(p, "r");
  REQUIRE(f, "%s", p);
  char *line = NULL;
  size_t cap = 0;
  int n = 0, bad = 0, bad_ids = 0;
  while (getline(&line, &cap, f) > 0) {
    n++;
    cJSON *row = cJSON_Parse(line);
    REQUIRE(row, "chat.jsonl:%d: bad JSON", n);
    char *out = NULL;
    const char *want = cJSON_GetObjectItem(row, "rendered")->valuestring;
    int rc = oc_chat_render(t, cfg, cJSON_GetObjectItem(row, "messages"), cJSON_IsTrue(cJSON_GetObjectItem(row, "add_generation_prompt")),
                            cJSON_GetObjectItem(row, "options"), &out, &e);
    if (rc || strcmp(out, want) != 0) {
      bad++;
      fprintf(stderr, "chat.jsonl:%d (%s): %s\n  got : %s\n  want: %s\n", n, cJSON_GetObjectItem(row, "id")->valuestring,
              rc ? e.msg : "mismatch", rc ? "" : out, want);
    } else if (tok && cJSON_GetObjectItem(row, "ids")) {
      oc_encoding enc;
      const cJSON *ids = cJSON_GetObjectItem(row, "ids");
      int ok = oc_tokenizer_encode(tok, out, NULL, 0, 0, &enc, &e) == 0 && enc.n == cJSON_GetArraySize(ids);
      int i = 0;
      for (const cJSON *x = ids->child; ok && x; x = x->next, i++) ok = x->valueint == enc.ids[i];
      if (!ok) { bad_ids++; fprintf(stderr, "chat.jsonl:%d: ids differ\n", n); }
      oc_encoding_free(&enc);
    }
    free(out);
    cJSON_Delete(row);
  }
  fclose(f);
  CHECK(n > 0 && bad == 0, "%d of %d renders differ", bad, n);
  CHECK(bad_ids == 0, "%d token id lists differ", bad_ids);
  printf("%s: %d conversations, %d render mismatches, %d id mismatches\n", dir, n, bad, bad_ids);
  /* templates that must raise */
  snprintf(p, sizeof p, "%s/chat_errors.jsonl", dir);
  f = fopen(p, "r");
  while (f && getline(&line, &cap, f) > 0) {
    cJSON *row = cJSON_Parse(line);
    char *out = NULL;
    int rc = oc_chat_render(t, cfg, cJSON_GetObjectItem(row, "messages"), cJSON_IsTrue(cJSON_GetObjectItem(row, "add_generation_prompt")),
                            cJSON_GetObjectItem(row, "options"), &out, &e);
    CHECK(rc != 0 && strstr(e.msg, cJSON_GetObjectItem(row, "error")->valuestring), "template should raise: %s", rc ? e.msg : out);
    free(out);
    cJSON_Delete(row);
  }
  if (f) fclose(f);
  free(line);
  cJSON_Delete(cfg);
  oc_tokenizer_free(tok);
  oc_template_free(t);
  return check_summary("chat");
}
