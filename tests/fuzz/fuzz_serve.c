/* libFuzzer harness for the server's request bodies: bytes -> the strict JSON parser -> the chat
 * completions and moderations readers (src/serve/openai.c). Every input must be read or refused
 * with an OpenAI error of status 400 (or 500 for out of memory) and a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/json.h"
#include "serve/openai.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  oc_error e;
  cJSON *body;
  if (oc_json_parse((const char *)data, size, "body", 1, &body, &e) != 0) return 0;
  oc_chat_request r;
  oc_api_error ae = {0};
  if (oc_chat_request_parse(body, &r, &ae) != 0 && !((ae.status == 400 || ae.status == 500) && ae.message[0])) {
    fprintf(stderr, "a refused chat request without a 400 and a message (status %d)\n", ae.status);
    abort();
  }
  oc_chat_request_free(&r);
  oc_moderation_inputs in;
  memset(&ae, 0, sizeof ae);
  if (oc_moderation_parse(body, &in, &ae) != 0 && !((ae.status == 400 || ae.status == 500) && ae.message[0])) {
    fprintf(stderr, "a refused moderation request without a 400 and a message (status %d)\n", ae.status);
    abort();
  }
  oc_moderation_inputs_free(&in);
  cJSON_Delete(body);
  return 0;
}
