/* Deterministic mutations of a token-level journal (train-probe --token_level) through the fuzz
 * harness (tests/fuzz/fuzz_token_journal.c): under ASan/UBSan in CI this is the fixed-seed part
 * of fuzzing its reader. The harness aborts when a load is refused without naming the journal,
 * when the in-memory and streamed loads disagree, or when their fits differ; here the outcome of
 * known edits is checked too: the valid journal loads, every cut and every header edit is refused,
 * a changed row byte is refused by the checksum, and loads again once the checksum is fixed when
 * the half stays within [-1, 1] (refused when it does not); the same with two layers a row. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

size_t token_journal_seed(unsigned char *b, int nl);
int token_journal_check(const unsigned char *data, size_t size);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

/* the harness's patch mode: flags (1 | 4 to fix checksums), XOR x at off, cut at cut (0xffff: none) */
static int patched(int flags, size_t off, const unsigned char *x, size_t nx, unsigned cut) {
  unsigned char in[64] = {(unsigned char)flags, (unsigned char)(off & 255), (unsigned char)(off >> 8), (unsigned char)(cut & 255), (unsigned char)(cut >> 8)};
  memcpy(in + 5, x, nx);
  return token_journal_check(in, 5 + nx);
}

int main(void) {
  unsigned char seed[1024];
  const size_t n = token_journal_seed(seed, 1);
  const size_t sizes[4] = {40 + 2 * 16 + 8, 40 + 3 * 16 + 8, 40 + 3 * 16 + 8, 40 + 3 * 16 + 8};
  const size_t hl = n - (sizes[0] + sizes[1] + sizes[2] + sizes[3]);
  REQUIRE(n < sizeof seed && hl > 12 && hl < 100, "the seed journal: %zu bytes, header %zu", n, hl);
  const unsigned char none = 0;
  CHECK(patched(1, 0, &none, 0, 0xffff) == 1, "the valid journal loads (in memory and streamed, the same fit)");
  unsigned char raw[1024];
  raw[0] = 0;
  memcpy(raw + 1, seed + hl, n - hl);
  CHECK(token_journal_check(raw, 1 + n - hl) == 1, "its records after the harness's header load");
  int cuts_refused = 1;
  for (unsigned cut = 0; cut < n; cut++) cuts_refused &= patched(1, 0, &none, 0, cut) == 0;
  CHECK(cuts_refused, "every cut of the journal is refused (%zu cuts)", n);
  int header_refused = 1;
  for (size_t at = 0; at < hl; at++) {
    const unsigned char x = 0x20;
    header_refused &= patched(1 | 4, at, &x, 1, 0xffff) == 0;
  }
  CHECK(header_refused, "a change anywhere in the header is refused");
  /* every byte of every record head: refused even with its checksum fixed (index, label, n_rows,
   * line, hash, n_resp, the zero word) */
  int heads_refused = 1;
  size_t at = hl;
  for (int k = 0; k < 4; at += sizes[k++])
    for (size_t i = 0; i < 40; i++) {
      const unsigned char x = 0x01;
      heads_refused &= patched(1 | 4, at + i, &x, 1, 0xffff) == 0;
    }
  CHECK(heads_refused, "a change in any record head is refused, checksum fixed or not");
  /* the last record's first row: its halves start after 3 positions and 3 scales */
  const size_t last = n - sizes[3], half0 = last + 40 + 3 * 4 + 3 * 4;
  const unsigned char low = 0x01; /* the low mantissa bit of a half */
  CHECK(patched(1, half0, &low, 1, 0xffff) == 0, "a changed row byte is refused by the checksum");
  /* the row x[j] = 4 (j - 1.5) / 1 stored / 6: halves -1, -1/3, 1/3, 1 */
  CHECK(patched(1 | 4, half0 + 2, &low, 1, 0xffff) == 1, "with its checksum fixed, a half still within [-1, 1] loads");
  CHECK(patched(1 | 4, half0 + 6, &low, 1, 0xffff) == 0, "a half of 1 + 2^-10 (beyond [-1, 1]) is refused");
  const unsigned char inf_hi = 0x7c ^ 0x3c; /* 1.0 (0x3c00) made infinity (0x7c00) */
  CHECK(patched(1 | 4, half0 + 7, &inf_hi, 1, 0xffff) == 0, "an infinite half is refused");
  const unsigned char pos_lo = 0x01; /* the last record's positions 2, 3, 4 made 3, 3, 4: not ascending */
  CHECK(patched(1 | 4, last + 40, &pos_lo, 1, 0xffff) == 0, "positions out of order are refused");
  /* two layers of 2 (a scale per row and layer): the valid journal loads, combined by concat and
   * by mean; one layer's record layout read as two is refused, and the other way round */
  unsigned char seed2[1024];
  const size_t n2 = token_journal_seed(seed2, 2);
  CHECK(n2 == n + 11 * 4, "two layers: a second scale for each of the 11 rows (%zu vs %zu bytes)", n2, n);
  CHECK(patched(1 | 0x40, 0, &none, 0, 0xffff) == 1 && patched(1 | 0x40 | 0x80 | 0x08, 0, &none, 0, 0xffff) == 1,
        "the two-layer journal loads; concat and mean fit the same streamed as in memory");
  raw[0] = 0x40;
  CHECK(token_journal_check(raw, 1 + n - hl) == 0, "one layer's records read as two layers' are refused");
  memcpy(raw + 1, seed2 + hl, n2 - hl);
  CHECK(token_journal_check(raw, 1 + n2 - hl) == 1, "two layers' records load as two layers");
  raw[0] = 0;
  CHECK(token_journal_check(raw, 1 + n2 - hl) == 0, "two layers' records read as one layer's are refused");
  /* the second layer's scale of the last record's first row made negative */
  const unsigned char neg = 0x80;
  CHECK(patched(1 | 4 | 0x40, n2 - (40 + 3 * 4 + 3 * 8 + 3 * 8 + 8) + 40 + 12 + 4 + 3, &neg, 1, 0xffff) == 0, "a negative scale is refused");
  /* random edits: any mode, any fit settings; the harness aborts on a violation */
  int loaded = 0, refused = 0;
  unsigned char m[1 + 4096];
  for (int it = 0; it < 4000; it++) {
    size_t len;
    const int two = it % 4 >= 2;
    const unsigned char *sd = two ? seed2 : seed;
    const size_t ns = two ? n2 : n;
    if (it % 2) { /* the patch mode: a few XOR bytes at a random place, sometimes a cut */
      m[0] = (unsigned char)(1 | (next() % 2) * 4 | (next() % 8) << 3 | two << 6 | (next() % 2) << 7);
      const size_t off = next() % ns;
      m[1] = (unsigned char)(off & 255);
      m[2] = (unsigned char)(off >> 8);
      const unsigned cut = next() % 4 ? 0xffff : (unsigned)(next() % ns);
      m[3] = (unsigned char)(cut & 255);
      m[4] = (unsigned char)(cut >> 8);
      len = 5 + next() % 4;
      for (size_t i = 5; i < len; i++) m[i] = (unsigned char)(1u << (next() % 8));
    } else { /* raw records: the seed's, bytes overwritten, dropped or cut */
      m[0] = (unsigned char)((next() % 2) * 4 | (next() % 8) << 3 | two << 6 | (next() % 2) << 7);
      len = 1 + ns - hl;
      memcpy(m + 1, sd + hl, ns - hl);
      for (int e = 0; e < 1 + (int)(next() % 3); e++) {
        const size_t p = 1 + next() % (len - 1);
        if (next() % 3) m[p] = (unsigned char)next();
        else { memmove(m + p, m + p + 1, len - p - 1); len--; }
      }
      if (next() % 4 == 0) len = 1 + next() % (len - 1);
    }
    if (token_journal_check(m, len)) loaded++;
    else refused++;
  }
  CHECK(loaded > 100 && refused > 100, "4000 random edits: %d loaded, %d refused, none crashed or disagreed", loaded, refused);
  return check_summary("test_token_journal_mutate");
}
