/* libFuzzer harness for the hostile-text parsers of the tokenizer stack: the bytes are a
 * chat template (parsed, then rendered with a small conversation) and a tokenizer.json
 * (loaded, then used to encode and decode a sample). */
#include <stdlib.h>
#include <string.h>

#include "opencon/template.h"
#include "opencon/tokenizer.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  char *txt = malloc(size + 1);
  if (!txt) return 0;
  memcpy(txt, data, size);
  txt[size] = 0;
  oc_error e;
  oc_template *t;
  if (oc_template_parse(txt, "fuzz.jinja", &t, &e) == 0) {
    cJSON *vars = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}],"
                              " \"add_generation_prompt\": true, \"bos_token\": \"<s>\"}");
    char *out = NULL;
    if (oc_template_render(t, vars, &out, NULL, &e) == 0) free(out);
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
