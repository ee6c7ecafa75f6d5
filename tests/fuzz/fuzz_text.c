/* libFuzzer harness for the hostile-text parsers of the tokenizer stack: the bytes are a chat
 * template (parsed, then rendered with its hard limits over a conversation with a system turn,
 * a tool call, a tool result, tools and a pinned clock) and a tokenizer.json (loaded, then used
 * to encode and decode a sample). A render may fail, never crash, hang or exceed its limits. */
#include <stdlib.h>
#include <string.h>

#include "opencon/template.h"
#include "opencon/tokenizer.h"

static const char vars_json[] =
  "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"hi \\u00e9 {{ x }}\"},"
  " {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"call12345\", \"type\": \"function\","
  " \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]},"
  " {\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"21\"}, {\"role\": \"assistant\", \"content\": \"yo\"}],"
  " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"weather\","
  " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}],"
  " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"documents\": null}";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  char *txt = malloc(size + 1);
  if (!txt) return 0;
  memcpy(txt, data, size);
  txt[size] = 0;
  oc_error e;
  oc_template *t;
  if (oc_template_parse(txt, "fuzz.jinja", &t, &e) == 0) {
    cJSON *vars = cJSON_Parse(vars_json);
    const oc_template_opts opts = {1, 1721952000};
    char *out = NULL;
    size_t len = 0;
    if (oc_template_render_opts(t, vars, &opts, &out, &len, &e) == 0) {
      if (len > OC_TEMPLATE_MAX_OUTPUT || strlen(out) > len) abort(); /* the output limit holds */
      free(out);
    }
    cJSON_Delete(vars);
    oc_template_free(t);
  }
  oc_tokenizer *tok;
  if (oc_tokenizer_load_json(txt, size, "fuzz/tokenizer.json", &tok, &e) == 0) {
    oc_encoding enc;
    if (oc_tokenizer_encode(tok, "Hello wörld, 12 34!", "pair", 1, 6, &enc, &e) == 0) {
      char *s = NULL;
      if (oc_tokenizer_decode(tok, enc.ids, enc.n, 0, &s, NULL, &e) == 0) free(s);
      oc_encoding_free(&enc);
    }
    oc_tokenizer_free(tok);
  }
  free(txt);
  return 0;
}
