/* opencon tokenize / detokenize end to end: text, JSONL batch (with a malformed line), chat
 * exchange with the model's template, and decode. Expected ids are the goldens' rows. */
#include <string.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "opencon/base.h"

static char out[1 << 16];
static int run(const char *cmd) { return run_capture(cmd, out, sizeof out); }

int main(int argc, char **argv) {
  REQUIRE(argc == 4, "usage: test_tokenize_cli OPENCON MODERNBERT_DIR QWEN3_TOKENIZER_JSON");
  const char *bin = argv[1], *mb = argv[2];
  char cmd[4096];
  /* golden: "Hello world" with special tokens -> [CLS] Hello world [SEP] */
  snprintf(cmd, sizeof cmd, "%s tokenize --model_id %s --text 'Hello world' --pieces", bin, mb);
  CHECK(run(cmd) == 0 && !strcmp(out, "{\"ids\":[50281,12092,1533,50282],\"tokens\":[\"[CLS]\",\"Hello\",\"Ġworld\",\"[SEP]\"]}\n"), "tokenize: %s", out);
  snprintf(cmd, sizeof cmd, "%s tokenize --model_id %s --text 'Hello world' --no_special", bin, mb);
  CHECK(run(cmd) == 0 && !strcmp(out, "{\"ids\":[12092,1533]}\n"), "tokenize --no_special: %s", out);
  /* batch: one output line per input line, in order; a bad line is an error naming it */
  snprintf(cmd, sizeof cmd, "printf '%%s\\n' '{\"text\": \"Hello world\", \"add_special_tokens\": false}' '{\"text\": \"Hello world\", \"add_special_tokens\": true}' | %s tokenize --model_id %s --jsonl -", bin, mb);
  CHECK(run(cmd) == 0 && !strcmp(out, "{\"ids\":[12092,1533]}\n{\"ids\":[50281,12092,1533,50282]}\n"), "jsonl: %s", out);
  snprintf(cmd, sizeof cmd, "printf '%%s\\n' '{\"text\": \"a\"}' 'not json' | %s tokenize --model_id %s --jsonl - 2>&1", bin, mb);
  CHECK(run(cmd) == 1 && strstr(out, "-:2:"), "bad jsonl line: %s", out);
  snprintf(cmd, sizeof cmd, "%s detokenize --model_id %s --ids 50281,12092,1533,50282 --skip_special_tokens", bin, mb);
  CHECK(run(cmd) == 0 && !strcmp(out, "Hello world\n"), "detokenize: %s", out);
  /* the MVP's plain exchange format */
  snprintf(cmd, sizeof cmd, "%s tokenize --model_id %s --chat --prompt hi --response there --no_chat_template --no_special", bin, mb);
  CHECK(run(cmd) == 0 && !strcmp(out, "{\"ids\":[6989,27,187,5801,187,187,6717,5567,27,187,9088]}\n"), "plain exchange: %s", out);
  /* Qwen3 generation prompt through its chat template (chat.jsonl single_user_gen) */
  char tmp[] = "/tmp/oc_tokcli_XXXXXX";
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  snprintf(cmd, sizeof cmd, "cp %s %s/ && cp %s/../qwen3/tokenizer_config.json %s/", argv[3], tmp, mb, tmp);
  REQUIRE(system(cmd) == 0, "copy qwen3 files");
  snprintf(cmd, sizeof cmd, "%s tokenize --model_id %s --chat --prompt 'How do I verify npm package integrity?'", bin, tmp);
  CHECK(run(cmd) == 0 && !strcmp(out, "{\"ids\":[151644,872,198,4340,653,358,10146,46422,6328,16614,30,151645,198,151644,77091,198,151667,271,151668,271]}\n"),
        "qwen3 chat: %s", out);
  snprintf(cmd, sizeof cmd, "%s tokenize --model_id %s --text \"$(printf 'bad \\377')\" 2>&1", bin, tmp);
  CHECK(run(cmd) == 1 && strstr(out, "UTF-8"), "invalid UTF-8: %s", out);
  /* strftime_now with the clock pinned by OPENCON_TEMPLATE_NOW (reproducible renders of dated templates) */
  snprintf(cmd, sizeof cmd, "mkdir -p %s/dated && cp %s/tokenizer.json %s/dated/ && printf '%%s' '{\"chat_template\": \"{{ strftime_now(\\\"%%Y-%%m-%%d\\\") }} {{ messages[0].content }}\"}' > %s/dated/tokenizer_config.json",
           tmp, mb, tmp, tmp);
  REQUIRE(system(cmd) == 0, "dated template dir");
  snprintf(cmd, sizeof cmd, "TZ=UTC OPENCON_TEMPLATE_NOW=86400 %s tokenize --model_id %s/dated --chat --prompt hi", bin, tmp);
  int rc = run(cmd);
  cJSON *j = cJSON_Parse(out), *ids = cJSON_GetObjectItem(j, "ids");
  char list[1024] = "";
  for (const cJSON *x = ids ? ids->child : NULL; x; x = x->next)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", x == ids->child ? "" : ",", x->valueint);
  cJSON_Delete(j);
  snprintf(cmd, sizeof cmd, "%s detokenize --model_id %s/dated --ids %s", bin, tmp, list);
  CHECK(rc == 0 && run(cmd) == 0 && strcmp(out, "1970-01-02 hi\n") == 0, "pinned clock: \"%s\"", out);
  snprintf(cmd, sizeof cmd, "OPENCON_TEMPLATE_NOW=yesterday %s tokenize --model_id %s/dated --chat --prompt hi 2>&1", bin, tmp);
  CHECK(run(cmd) == 1 && strstr(out, "OPENCON_TEMPLATE_NOW must be seconds"), "a bad pinned clock is an error: %s", out);
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd)) {}
  return check_summary("tokenize_cli");
}
