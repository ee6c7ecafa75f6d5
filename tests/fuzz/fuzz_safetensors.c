/* libFuzzer harness for the safetensors header parser and config.json parser.
 * Build: cmake -DCMAKE_C_COMPILER=clang -DOPENCON_FUZZ=ON; run: ./fuzz_safetensors corpus/ */
#include <stdlib.h>
#include <string.h>

#include "opencon/model.h"
#include "opencon/safetensors.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  oc_error e;
  oc_st_file *f = NULL;
  if (oc_st_parse(data, size, "fuzz.safetensors", &f, &e) == 0) {
    /* every accepted tensor must lie inside the buffer: touch all of it */
    unsigned acc = 0;
    for (int i = 0; i < oc_st_count(f); i++) {
      const oc_tensor *t = oc_st_at(f, i);
      for (size_t k = 0; k < t->nbytes; k++) acc += ((const unsigned char *)t->data)[k];
    }
    oc_st_close(f);
    if (acc == 0xFFFFFFFFu) return -1; /* keep the reads */
  }
  /* the same bytes as config.json text */
  oc_model_config c;
  if (oc_config_parse((const char *)data, size, "fuzz/config.json", &c, &e) == 0) oc_config_free(&c);
  return 0;
}
