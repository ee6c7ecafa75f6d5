/* libFuzzer harness for the token-level journal reader (train-probe --token_level's
 * token_activations.partial, docs/formats.md): oc_token_journal_load, the record scan and the
 * streamed reader oc_probe_fit_tokens_combined reads rows through. The journal is for a fixed
 * dataset of 4 exchanges, rows 4 wide (one layer of 4, or two of 2), at most 3 a record, responses
 * of at most 6 tokens. The first byte says how the rest makes it: bits 0-1 = 0, the settings
 * header and then the bytes as records; else a valid journal (token_journal_seed) with the bytes
 * after four more XORed in at an offset (a u16) and then cut at a length (a u16; 0xffff: not cut);
 * bit 2 recomputes every record's checksum first, so that mutations reach the checks behind it;
 * bit 3 standardizes, bits 4-5 pick the token weighting, bit 6 makes it two layers, bit 7 combines
 * them by mean (else concat). A load must fail with a message naming the journal, or hold the 4
 * exchanges; then the rows in memory and streamed must fit the same probe bit for bit, and both
 * loads must agree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opencon/probe.h"
#include "opencon/safetensors.h"
#include "probe/collect.h"

#define TJ_N 4
#define TJ_H 4
#define TJ_CAP 3
#define TJ_LEN 6
#define TJ_HEAD 40 /* a record's head: TOK1, index, label, n_rows, line, hash, n_resp, 0 */
static const char tj_header[] = "{\"fuzz\":\"token journal\"}";

static void tj_dataset(oc_example ex[TJ_N], oc_dataset *ds) {
  static char *prompts[TJ_N] = {"p0", "p1", "p2", "p3"}, *responses[TJ_N] = {"r0", "r1 r1", "r2 r2 r2", "r3 r3 r3 r3"};
  for (int k = 0; k < TJ_N; k++) ex[k] = (oc_example){prompts[k], responses[k], k % 2, k + 1};
  memset(ds, 0, sizeof *ds);
  ds->ex = ex;
  ds->n = TJ_N;
}

static size_t tj_record_size(int n_rows, int nl) { return TJ_HEAD + (size_t)n_rows * (4 + 4 * (size_t)nl + 2 * TJ_H) + 8; }

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

/* the header: OCTOKJ01, u32 length, the settings JSON; its size */
static size_t tj_put_header(unsigned char *b) {
  const uint32_t hl = (uint32_t)strlen(tj_header);
  memcpy(b, "OCTOKJ01", 8);
  put32(b + 8, hl);
  memcpy(b + 12, tj_header, hl);
  return 12 + hl;
}

/* A valid journal of the dataset over nl layers (1 or 2), written from the format's description:
 * exchange k has 2 + k response tokens, its last min(2 + k, 3) kept, row r of it x[j] =
 * (k + 1) (j - 1.5) / (r + 1), each layer's block stored as x / scale in F16 with scale its
 * largest magnitude. Its size (b holds 1024 bytes). */
size_t token_journal_seed(unsigned char *b, int nl) {
  oc_example ex[TJ_N];
  oc_dataset ds;
  tj_dataset(ex, &ds);
  size_t at = tj_put_header(b);
  for (int k = 0; k < TJ_N; k++) {
    const int n_resp = 2 + k, n_rows = n_resp < TJ_CAP ? n_resp : TJ_CAP;
    unsigned char *p = b + at;
    put32(p, 0x314b4f54u);
    put32(p + 4, (uint32_t)k);
    put32(p + 8, (uint32_t)ex[k].label);
    put32(p + 12, (uint32_t)n_rows);
    put64(p + 16, (uint64_t)ex[k].line);
    put64(p + 24, oc_example_hash(&ex[k]));
    put32(p + 32, (uint32_t)n_resp);
    put32(p + 36, 0);
    unsigned char *scales = p + TJ_HEAD + 4 * (size_t)n_rows, *xs = scales + 4 * (size_t)n_rows * (size_t)nl;
    const int Hl = TJ_H / nl;
    for (int r = 0; r < n_rows; r++) {
      float x[TJ_H];
      for (int j = 0; j < TJ_H; j++) x[j] = (float)(k + 1) * ((float)j - 1.5f) / (float)(r + 1);
      put32(p + TJ_HEAD + 4 * (size_t)r, (uint32_t)(n_resp - n_rows + r));
      for (int l = 0; l < nl; l++) {
        float amax = 0;
        for (int j = l * Hl; j < (l + 1) * Hl; j++) amax = fmaxf(amax, fabsf(x[j]));
        memcpy(scales + 4 * ((size_t)r * (size_t)nl + (size_t)l), &amax, 4);
        for (int j = l * Hl; j < (l + 1) * Hl; j++) {
          const uint16_t h = oc_f32_to_f16(x[j] / amax);
          memcpy(xs + 2 * ((size_t)r * TJ_H + (size_t)j), &h, 2);
        }
      }
    }
    const size_t size = tj_record_size(n_rows, nl);
    put64(p + size - 8, oc_fnv1a64(p, size - 8, 0));
    at += size;
  }
  return at;
}

/* each record's checksum recomputed, walking the records by their n_rows while they fit */
static void tj_fix_checksums(unsigned char *b, size_t start, size_t n, int nl) {
  for (size_t at = start; at + TJ_HEAD <= n;) {
    int32_t n_rows;
    memcpy(&n_rows, b + at + 12, 4);
    if (n_rows < 1 || n_rows > TJ_CAP || at + tj_record_size(n_rows, nl) > n) return;
    const size_t size = tj_record_size(n_rows, nl);
    put64(b + at + size - 8, oc_fnv1a64(b + at, size - 8, 0));
    at += size;
  }
}

/* the same bits (a NaN too: rows of huge scales may overflow the logits, in both ways alike) */
static int same_fit(const oc_probe_fit *a, const oc_probe_fit *b) {
  return memcmp(&a->probe.b, &b->probe.b, sizeof a->probe.b) == 0 && memcmp(a->probe.w, b->probe.w, sizeof(float) * TJ_H) == 0 &&
         memcmp(&a->final_loss, &b->final_loss, sizeof a->final_loss) == 0 && memcmp(&a->val.roc_auc, &b->val.roc_auc, sizeof(double)) == 0 &&
         memcmp(&a->train.roc_auc, &b->train.roc_auc, sizeof(double)) == 0;
}

/* 1: the journal the input makes was loaded (both ways, the same fit); 0: refused (both ways) */
int token_journal_check(const unsigned char *data, size_t size) {
  if (size < 1) return 0;
  unsigned char b[1024 + 4096];
  size_t n;
  const int mode = data[0] & 3, fix = data[0] & 4, nl = data[0] & 0x40 ? 2 : 1, combine = data[0] & 0x80 ? OC_COMBINE_MEAN : OC_COMBINE_CONCAT;
  if (mode == 0) {
    n = tj_put_header(b);
    const size_t k = size - 1 < sizeof b - n ? size - 1 : sizeof b - n;
    memcpy(b + n, data + 1, k);
    n += k;
  } else {
    n = token_journal_seed(b, nl);
    if (size < 5) return 0;
    const size_t off = ((size_t)data[1] | (size_t)data[2] << 8) % n, cut = (size_t)data[3] | (size_t)data[4] << 8;
    for (size_t i = 5; i < size && off + i - 5 < n; i++) b[off + i - 5] ^= data[i];
    if (cut != 0xffff && cut < n) n = cut;
  }
  const size_t hl = 12 + strlen(tj_header);
  if (fix) tj_fix_checksums(b, hl < n ? hl : n, n, nl);
  char path[64];
  snprintf(path, sizeof path, "/tmp/oc_fuzz_tokj_XXXXXX");
  const int fd = mkstemp(path);
  if (fd < 0) return 0;
  const int wrote = write(fd, b, n) == (ssize_t)n;
  close(fd);
  if (!wrote) { unlink(path); return 0; }
  oc_example ex[TJ_N];
  oc_dataset ds;
  tj_dataset(ex, &ds);
  oc_token_activations mem, st;
  oc_error e1, e2;
  const int r1 = oc_token_journal_load(path, tj_header, &ds, TJ_H, nl, TJ_CAP, TJ_LEN, 0, &mem, &e1);
  const int r2 = oc_token_journal_load(path, tj_header, &ds, TJ_H, nl, TJ_CAP, TJ_LEN, 1, &st, &e2);
  if (r1 != r2 || (r1 && (!strstr(e1.msg, path) || strcmp(e1.msg, e2.msg) != 0))) {
    fprintf(stderr, "the loads disagree or an error does not name the journal: %d %s | %d %s\n", r1, r1 ? e1.msg : "", r2, r2 ? e2.msg : "");
    abort();
  }
  int loaded = 0;
  if (r1 == 0) {
    if (mem.n != TJ_N || st.n != TJ_N || mem.n_rows != st.n_rows || mem.max_rows != st.max_rows || mem.max_rows > TJ_CAP ||
        memcmp(mem.offsets, st.offsets, sizeof(int64_t) * (TJ_N + 1)) != 0) {
      fprintf(stderr, "in memory and streamed loads hold other exchanges\n");
      abort();
    }
    for (int64_t r = 0; r < mem.n_rows * TJ_H; r++)
      if (!isfinite(mem.X[r])) { fprintf(stderr, "a non-finite row value was loaded\n"); abort(); }
    oc_probe_train_opts t;
    oc_probe_train_defaults(&t);
    t.epochs = 2;
    t.batch_size = 2;
    t.standardize = data[0] >> 3 & 1;
    oc_probe_fit f1, f2;
    const int w = data[0] >> 4 & 3;
    const int q1 = oc_probe_fit_tokens_combined(&mem, combine, w > 2 ? 2 : w, 0.5, 1, 0.1, &t, &f1, &e1),
              q2 = oc_probe_fit_tokens_combined(&st, combine, w > 2 ? 2 : w, 0.5, 1, 0.1, &t, &f2, &e2);
    if (q1 || q2 || !same_fit(&f1, &f2)) {
      fprintf(stderr, "the streamed fit differs from the in-memory one: %d %s | %d %s\n", q1, q1 ? e1.msg : "", q2, q2 ? e2.msg : "");
      abort();
    }
    oc_probe_fit_free(&f1);
    oc_probe_fit_free(&f2);
    oc_token_activations_free(&mem);
    oc_token_activations_free(&st);
    loaded = 1;
  }
  unlink(path);
  return loaded;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  token_journal_check(data, size);
  return 0;
}
