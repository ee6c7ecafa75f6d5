/* The server's request readers (src/serve/openai.c) on deterministic mutations of real request
 * bodies, through the fuzz harness (tests/fuzz/fuzz_serve.c): under ASan/UBSan in CI this is the
 * fixed-seed part of fuzzing them. Also what they must accept and refuse. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "opencon/json.h"
#include "serve/openai.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static long mutate_all(const char *src, int rounds) {
  static const char pool[] = "{}[]\",:\\0123456789tfnaeu.-";
  const size_t len = strlen(src);
  unsigned char *m = malloc(len + 65);
  long calls = 0;
  for (int it = 0; it < rounds; it++, calls++) {
    memcpy(m, src, len);
    size_t n = len;
    int edits = 1 + (int)(next() % 4);
    for (int k = 0; k < edits && n > 1; k++) {
      size_t pos = (size_t)(next() % n);
      switch (next() % 4) {
      case 0: m[pos] = (unsigned char)pool[next() % (sizeof pool - 1)]; break;
      case 1: m[pos] ^= (unsigned char)(1u << (next() % 8)); break;
      case 2: memmove(m + pos, m + pos + 1, n - pos - 1); n--; break;
      default: if (n < len + 60) { memmove(m + pos + 1, m + pos, n - pos); m[pos] = (unsigned char)pool[next() % (sizeof pool - 1)]; n++; }
      }
    }
    LLVMFuzzerTestOneInput(m, n);
  }
  for (size_t cut = 0; cut < len; cut++, calls++) LLVMFuzzerTestOneInput((const unsigned char *)src, cut);
  free(m);
  return calls;
}

static int chat(const char *json, oc_chat_request *r, oc_api_error *e) {
  cJSON *b;
  oc_error err;
  REQUIRE(oc_json_parse(json, strlen(json), "t", 1, &b, &err) == 0, "%s", err.msg);
  memset(e, 0, sizeof *e);
  int rc = oc_chat_request_parse(b, r, e);
  cJSON_Delete(b);
  return rc;
}

int main(void) {
  static const char *seeds[] = {
      "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"},"
      "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Hello\"}]},{\"role\":\"user\",\"content\":\"More\"}],"
      "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":16,\"temperature\":0.5,\"top_p\":0.9,\"seed\":3,"
      "\"stop\":[\"a\",\"bc\"],\"guard\":{\"events\":true,\"mode\":\"observe\",\"pause_threshold\":0.5}}",
      "{\"input\":[\"hello\",{\"prompt\":\"p\",\"response\":\"r\"}]}",
      "{\"messages\":[{\"role\":\"developer\",\"content\":\"x\"},{\"role\":\"user\",\"content\":\"y\"}],\"n\":1,\"logprobs\":false,"
      "\"response_format\":{\"type\":\"text\"},\"max_completion_tokens\":4}",
  };
  long calls = 0;
  for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) calls += mutate_all(seeds[i], 4000);
  oc_chat_request r;
  oc_api_error e;
  CHECK(chat(seeds[0], &r, &e) == 0 && r.stream && r.include_usage && r.max_tokens == 16 && r.n_stop == 2 && r.events && r.observe &&
            r.pause_threshold == 0.5 && isnan(r.allow_threshold) && cJSON_GetArraySize(r.messages) == 4 && strcmp(r.cls_prompt, "Be brief.\n\nHi\n\nHello\n\nMore") == 0,
        "a full request reads as written (%s)", e.message);
  const cJSON *third = cJSON_GetArrayItem(r.messages, 2);
  CHECK(third && strcmp(cJSON_GetObjectItem(third, "content")->valuestring, "Hello") == 0, "text parts are joined into a string");
  oc_chat_request_free(&r);
  CHECK(chat(seeds[2], &r, &e) == 0 && r.max_tokens == 4 && strcmp(cJSON_GetObjectItem(r.messages->child, "role")->valuestring, "system") == 0,
        "developer reads as system; max_completion_tokens (%s)", e.message);
  oc_chat_request_free(&r);
  static const struct { const char *body, *param; } bad[] = {
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", "n"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", "tools"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}", "response_format"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}", "logprobs"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1.5}", "max_tokens"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"1\"}", "temperature"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":0}", "top_p"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"\"]}", "stop"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{\"include_usage\":true}}", "stream_options"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guard\":{\"pause_threshold\":2}}", "pause_threshold"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guard\":{\"off\":true}}", "guard"},
      {"{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages[0]"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages[0].content"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":\"y\"}]}", "messages"},
      {"{\"messages\":[]}", "messages"},
      {"[]", ""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int rc = chat(bad[i].body, &r, &e);
    CHECK(rc != 0 && e.status == 400 && strcmp(e.param, bad[i].param) == 0 && e.message[0], "%s: a 400 naming \"%s\" (got %d, \"%s\": %s)", bad[i].body,
          bad[i].param, e.status, e.param, e.message);
    oc_chat_request_free(&r);
  }
  printf("%ld inputs run\n", calls);
  printf("serve_api: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
