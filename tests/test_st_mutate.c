/* Deterministic mutation test of the safetensors parser (the fuzz harness's target run
 * on a fixed set of hostile variants of a real checkpoint; under ASan/UBSan in CI):
 * bit flips, byte overwrites, digit edits and truncations of the header and length. */
#include <string.h>

#include "check.h"
#include "opencon/safetensors.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

int main(int argc, char **argv) {
  REQUIRE(argc == 2, "usage: test_st_mutate FILE.safetensors");
  char *buf;
  size_t len;
  oc_error e;
  REQUIRE(oc_read_file(argv[1], &buf, &len, &e) == 0, "%s", e.msg);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)buf[i];
  REQUIRE(hl + 8 <= len, "fixture header");
  unsigned char *m = malloc(len);
  int accepted = 0, rejected = 0, bad_msg = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(m, buf, len);
    size_t mlen = len;
    int kind = (int)(next() % 5);
    size_t pos = (size_t)(next() % (hl + 8));
    if (kind == 0) m[pos] ^= (unsigned char)(1u << (next() % 8));
    else if (kind == 1) m[pos] = (unsigned char)next();
    else if (kind == 2) { /* change a digit: offsets and shapes */
      for (size_t k = pos; k < hl + 8; k++) if (m[k] >= '0' && m[k] <= '9') { m[k] = (unsigned char)('0' + next() % 10); break; }
    } else if (kind == 3) mlen = (size_t)(next() % len);
    else { m[next() % 8] = (unsigned char)next(); }
    oc_st_file *f = NULL;
    if (oc_st_parse(m, mlen, "mut.safetensors", &f, &e) == 0) {
      accepted++;
      oc_st_close(f);
    } else {
      rejected++;
      if (!strstr(e.msg, "mut.safetensors") && !strstr(e.msg, "out of memory")) { bad_msg++; fprintf(stderr, "no file name in: %s\n", e.msg); }
    }
    LLVMFuzzerTestOneInput(m, mlen); /* also touches every accepted tensor's bytes */
  }
  CHECK(rejected > 1000, "most mutations should be rejected (%d)", rejected);
  CHECK(bad_msg == 0, "%d errors did not name the file", bad_msg);
  printf("mutations: %d accepted, %d rejected\n", accepted, rejected);
  free(m);
  free(buf);
  return check_summary("st_mutate");
}
