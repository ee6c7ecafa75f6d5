/* Tokenizer encode throughput (MB/s, one thread) over a corpus file, one text per line,
 * add_special_tokens=false, ids only (as transformers.js's encode). Best of 2 passes, and the first
 * pass alone (its word cache starts empty). --with-tokens: the full encoding (oc_tokenizer_encode_n,
 * token strings too). usage: bench_tokenizer CORPUS NAME=tokenizer.json ... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencon/tokenizer.h"

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: bench_tokenizer [--with-tokens] CORPUS NAME=tokenizer.json ...\n"); return 2; }
  int with_tokens = strcmp(argv[1], "--with-tokens") == 0;
  if (with_tokens) { argv++; argc--; }
  oc_error e;
  char *txt;
  size_t len;
  if (oc_read_file(argv[1], &txt, &len, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
  int nl = 0;
  for (size_t i = 0; i < len; i++) nl += txt[i] == '\n';
  char **lines = malloc(sizeof *lines * (size_t)(nl + 1));
  size_t *lens = malloc(sizeof *lens * (size_t)(nl + 1));
  int n = 0;
  for (char *p = txt, *end = txt + len; p < end;) {
    char *q = memchr(p, '\n', (size_t)(end - p));
    if (!q) q = end;
    lines[n] = p;
    lens[n++] = (size_t)(q - p);
    p = q + 1;
  }
  for (int a = 2; a < argc; a++) {
    char *eq = strchr(argv[a], '=');
    if (!eq) continue;
    *eq = 0;
    oc_tokenizer *t;
    double t0 = oc_now();
    if (oc_tokenizer_load_file(eq + 1, &t, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    double t_load = oc_now() - t0;
    long long tokens = 0;
    double best = 1e30, first = 0;
    for (int rep = 0; rep < 2; rep++) {
      double t1 = oc_now();
      tokens = 0;
      for (int i = 0; i < n; i++) {
        oc_encoding enc;
        int rc = with_tokens ? oc_tokenizer_encode_n(t, lines[i], lens[i], NULL, 0, 0, 0, &enc, &e)
                             : oc_tokenizer_encode_ids(t, lines[i], lens[i], NULL, 0, 0, 0, &enc, &e);
        if (rc) { fprintf(stderr, "line %d: %s\n", i + 1, e.msg); return 1; }
        tokens += enc.n;
        oc_encoding_free(&enc);
      }
      double dt = oc_now() - t1;
      if (dt < best) best = dt;
      if (rep == 0) first = dt;
    }
    printf("{\"tokenizer\": \"%s\", \"impl\": \"%s\", \"bytes\": %zu, \"lines\": %d, \"tokens\": %lld, \"seconds\": %.3f, \"mb_per_s\": %.2f, \"first_pass_mb_per_s\": %.2f, \"load_s\": %.2f}\n",
           argv[a], with_tokens ? "opencon (ids + token strings)" : "opencon", len, n, tokens, best, (double)len / best / 1e6, (double)len / first / 1e6, t_load);
    fflush(stdout);
    oc_tokenizer_free(t);
  }
  free(lines);
  free(lens);
  free(txt);
  return 0;
}
