/* Token-level collection (train-probe --token_level, issue 23): F16 rows (every finite half
 * round-trips), the deterministic token sample (cap, last token kept, ascending, seed-dependent),
 * one forward pass per exchange with rows equal to an independent all-position forward pass, the
 * journal (resume after truncation at every record boundary and inside records gives the same rows
 * and the same probe bit for bit; mutated journals resume identically or are refused, never
 * crash; other settings refused), training streamed from the journal bit-identical to training in
 * memory and a journal cut or changed after collection an error, a cummax token-level probe through the CLI detecting the trigger
 * at its token, and bad flags refused. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "opencon/probe.h"
#include "opencon/safetensors.h"
#include "probe/collect.h"

static const char *cli;
static char tmp[256], mdir[512];
static char out[1 << 17];
#define run(...) run_in(tmp, out, sizeof out, __VA_ARGS__)
#define path(name) path_in(tmp, name)
#define stderr_text() stderr_in(tmp)

static void test_f16(void) {
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000u; h++) {
    const float f = oc_f16_to_f32((uint16_t)h);
    if (!isnan(f) && oc_f32_to_f16(f) != h) bad++;
  }
  CHECK(bad == 0, "every non-NaN half survives f16 -> f32 -> f16 (%d do not)", bad);
  CHECK(oc_f32_to_f16(1.0f) == 0x3c00 && oc_f32_to_f16(-2.0f) == 0xc000 && oc_f32_to_f16(0.1f) == 0x2e66 && oc_f32_to_f16(65504.0f) == 0x7bff &&
            oc_f32_to_f16(65519.0f) == 0x7bff && oc_f32_to_f16(65520.0f) == 0x7c00 && oc_f32_to_f16(-1e9f) == 0xfc00 &&
            oc_f32_to_f16(5.9604645e-8f) == 0x0001 && oc_f32_to_f16(2.9e-8f) == 0 && (oc_f32_to_f16(NAN) & 0x7e00) == 0x7e00,
        "f32 -> f16: exact values, ties to even at the top, overflow to infinity, subnormals, NaN");
  /* halfway between 1 and the next half (1 + 2^-10): ties to even (1); just above: up */
  CHECK(oc_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 && oc_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01 && oc_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02,
        "f32 -> f16 rounds to nearest, ties to even");
}

static void test_sample(void) {
  int pos[64], pos2[64], all = 1;
  CHECK(oc_token_sample(5, 0, 1, 2, pos) == 5 && pos[0] == 0 && pos[4] == 4, "cap 0: every token");
  CHECK(oc_token_sample(5, 5, 1, 2, pos) == 5 && pos[3] == 3, "cap = tokens: every token");
  int seen[40] = {0}, differ = 0;
  for (uint64_t hsh = 0; hsh < 200; hsh++) {
    const int c = oc_token_sample(40, 6, 7, hsh, pos);
    int ok = c == 6 && pos[5] == 39;
    for (int i = 1; i < c; i++) ok &= pos[i] > pos[i - 1];
    all &= ok;
    for (int i = 0; i < c; i++) seen[pos[i]]++;
    oc_token_sample(40, 6, 7, hsh, pos2);
    all &= memcmp(pos, pos2, sizeof(int) * 6) == 0;
    oc_token_sample(40, 6, 8, hsh, pos2);
    differ += memcmp(pos, pos2, sizeof(int) * 6) != 0;
  }
  int covered = 1;
  for (int i = 0; i < 39; i++) covered &= seen[i] > 0 && seen[i] < 200;
  CHECK(all, "cap 6 of 40: 6 distinct ascending positions, the last token kept, the same again for the same seed and example");
  CHECK(covered && seen[39] == 200, "every earlier token is drawn sometimes, never always; the last always");
  CHECK(differ > 150, "another seed draws another sample (%d of 200 differ)", differ);
  CHECK(oc_token_sample(2, 1, 3, 4, pos) == 1 && pos[0] == 1, "cap 1: the last token alone");
}

/* n exchanges in safe/unsafe pairs that are the same text but for the end of the response: "." or
 * the trigger word " quokka" (no other word, number or topic tells the labels apart) */
static const char *trigger_data(int n) {
  static const char *topics[] = {"bread", "rivers", "chess", "music", "stars", "gardens", "trains", "paper"};
  FILE *f = fopen(path("trigger.jsonl"), "w");
  for (int i = 0; i < n; i++)
    fprintf(f, "{\"prompt\": \"Tell me about %s %d\", \"response\": \"Here is a note on %s number %d%s\", \"label\": %d}\n", topics[(i / 2) % 8], i / 2,
            topics[(i / 2 * 3) % 8], i / 2, i % 2 ? " quokka" : ".", i % 2);
  fclose(f);
  return path("trigger.jsonl");
}

static int same_rows(const oc_token_activations *a, const oc_token_activations *b) {
  return a->n == b->n && a->n_rows == b->n_rows && a->hidden == b->hidden &&
         memcmp(a->offsets, b->offsets, sizeof(int64_t) * (size_t)(a->n + 1)) == 0 && memcmp(a->y, b->y, sizeof(int32_t) * (size_t)a->n) == 0 &&
         memcmp(a->pos, b->pos, sizeof(int32_t) * (size_t)a->n_rows) == 0 &&
         memcmp(a->X, b->X, sizeof(float) * (size_t)a->n_rows * (size_t)a->hidden) == 0;
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static unsigned char *slurp(const char *p, long *n) {
  FILE *f = fopen(p, "rb");
  *n = file_size(p);
  unsigned char *b = malloc((size_t)*n + 1);
  if (f && b && fread(b, 1, (size_t)*n, f) == (size_t)*n) { fclose(f); return b; }
  if (f) fclose(f);
  free(b);
  return NULL;
}

static void spit(const char *p, const unsigned char *b, long n) {
  FILE *f = fopen(p, "wb");
  fwrite(b, 1, (size_t)n, f);
  fclose(f);
}

static int same_fit(const oc_probe_fit *a, const oc_probe_fit *b) {
  return a->probe.hidden == b->probe.hidden && a->probe.b == b->probe.b && memcmp(a->probe.w, b->probe.w, sizeof(float) * (size_t)a->probe.hidden) == 0 &&
         a->final_loss == b->final_loss && a->val.roc_auc == b->val.roc_auc && a->train.roc_auc == b->train.roc_auc &&
         a->val.threshold_at_fpr == b->val.threshold_at_fpr && a->n_train == b->n_train && a->n_val == b->n_val;
}

/* rows left in the journal (stream_rows) train the same probe bit for bit as rows read into memory
 * (mem, collected with o from the journal whose bytes are jb); a journal cut or changed after
 * collection is an error naming it, never a crash or a probe */
static void test_streamed(oc_model *m, oc_chat *ch, const oc_dataset *ds, const oc_token_collect_opts *o, const oc_token_activations *mem,
                          const unsigned char *jb, long jn) {
  oc_error err;
  oc_token_collect_opts os = *o;
  os.stream_rows = 1;
  oc_token_activations st;
  spit(o->journal_path, jb, jn);
  REQUIRE(oc_collect_tokens(m, ch, ds, &os, &st, NULL, &err) == 0, "streamed: %s", err.msg);
  CHECK(st.X == NULL && st.pos == NULL && st.journal != NULL && st.forward_passes == 0 && st.n_rows == mem->n_rows && st.max_rows == 5 &&
            memcmp(st.offsets, mem->offsets, sizeof(int64_t) * (size_t)(ds->n + 1)) == 0 && memcmp(st.y, mem->y, sizeof(int32_t) * (size_t)ds->n) == 0,
        "streamed: no rows in memory, the same offsets and labels, the most rows of an exchange %d", st.max_rows);
  static const int weightings[] = {OC_TOKEN_UNIFORM, OC_TOKEN_RAMP, OC_TOKEN_CUMMAX};
  int same = 1, fits = 0;
  for (int w = 0; w < 3; w++)
    for (int standardize = 0; standardize < 2; standardize++) {
      oc_probe_train_opts t;
      oc_probe_train_defaults(&t);
      t.epochs = 7;
      t.batch_size = 3;
      t.standardize = standardize;
      oc_probe_fit a, b;
      if (oc_probe_fit_tokens(mem, weightings[w], 0.25, 5, 0.05, &t, &a, &err) != 0) { same = 0; fprintf(stderr, "in memory: %s\n", err.msg); continue; }
      if (oc_probe_fit_tokens(&st, weightings[w], 0.25, 5, 0.05, &t, &b, &err) != 0) {
        same = 0;
        fprintf(stderr, "streamed: %s\n", err.msg);
        oc_probe_fit_free(&a);
        continue;
      }
      same &= same_fit(&a, &b);
      fits += a.probe.b != 0;
      oc_probe_fit_free(&a);
      oc_probe_fit_free(&b);
    }
  CHECK(same && fits == 6, "every weighting, standardized or not: the streamed probe, its loss and metrics equal the in-memory ones bit for bit");
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  t.epochs = 2;
  oc_probe_fit f;
  /* the journal cut inside its last record after collection */
  REQUIRE(truncate(o->journal_path, jn - 9) == 0, "truncate");
  CHECK(oc_probe_fit_tokens(&st, OC_TOKEN_UNIFORM, 0.25, 5, 0.05, &t, &f, &err) != 0 && strstr(err.msg, o->journal_path) &&
            strstr(err.msg, "cut short") && strstr(err.msg, "truncated after collection") && f.probe.w == NULL,
        "a journal truncated after collection: %s", err.msg);
  /* one byte of a row changed (the file rewritten in place: the same inode the reader holds) */
  spit(o->journal_path, jb, jn);
  FILE *fp = fopen(o->journal_path, "r+b");
  REQUIRE(fp && fseek(fp, jn - 20, SEEK_SET) == 0, "reopen");
  fputc(jb[jn - 20] ^ 0x10, fp);
  fclose(fp);
  CHECK(oc_probe_fit_tokens(&st, OC_TOKEN_CUMMAX, 0.25, 5, 0.05, &t, &f, &err) != 0 && strstr(err.msg, "changed after collection") &&
            strstr(err.msg, "line ") && f.probe.w == NULL,
        "a journal changed after collection: %s", err.msg);
  oc_token_activations_free(&st);
  spit(o->journal_path, jb, jn);
}

/* two layers a row (--layers -2,-1): each layer's block is the row a one-layer collection of it
 * gives, bit for bit (a scale per row and layer); mean combines the two one-layer probes of the same
 * split exactly; concat and mean stream as they train in memory; one hidden state twice is refused */
static void test_layers(oc_model *m, oc_chat *ch, const oc_dataset *ds, const oc_token_collect_opts *o, const oc_token_activations *lo) {
  oc_error err;
  const int H = oc_model_cfg(m)->hidden, L = oc_model_cfg(m)->n_layers;
  char j1[512], j2[512];
  snprintf(j1, sizeof j1, "%s", path("one.partial"));
  snprintf(j2, sizeof j2, "%s", path("two.partial"));
  unlink(j1);
  unlink(j2);
  oc_token_collect_opts o1 = *o, o2 = *o;
  o1.layer = -1;
  o1.journal_path = j1;
  const int both[2] = {-2, -1};
  o2.n_layers = 2;
  o2.layers = both;
  o2.journal_path = j2;
  oc_token_activations hi, two, two_s;
  REQUIRE(oc_collect_tokens(m, ch, ds, &o1, &hi, NULL, &err) == 0, "layer -1: %s", err.msg);
  REQUIRE(oc_collect_tokens(m, ch, ds, &o2, &two, NULL, &err) == 0, "layers -2,-1: %s", err.msg);
  CHECK(two.forward_passes == ds->n && two.hidden == 2 * H && two.n_layers == 2 && two.n_rows == lo->n_rows &&
            memcmp(two.offsets, lo->offsets, sizeof(int64_t) * (size_t)(ds->n + 1)) == 0 &&
            memcmp(two.pos, lo->pos, sizeof(int32_t) * (size_t)lo->n_rows) == 0,
        "two layers: one pass per exchange (%lld), rows 2 x %d wide, the same token sample", (long long)two.forward_passes, H);
  int blocks = 1;
  for (int64_t r = 0; r < two.n_rows; r++)
    blocks &= memcmp(two.X + (size_t)r * 2 * H, lo->X + (size_t)r * H, sizeof(float) * (size_t)H) == 0 &&
              memcmp(two.X + (size_t)r * 2 * H + H, hi.X + (size_t)r * H, sizeof(float) * (size_t)H) == 0;
  CHECK(blocks, "every row is [layer -2's row | layer -1's row] of the one-layer collections, bit for bit");
  oc_token_collect_opts os = o2;
  os.stream_rows = 1;
  REQUIRE(oc_collect_tokens(m, ch, ds, &os, &two_s, NULL, &err) == 0, "two layers streamed: %s", err.msg);
  CHECK(two_s.forward_passes == 0 && two_s.X == NULL, "streamed from the same journal, no forward pass");
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  t.epochs = 6;
  t.batch_size = 4;
  oc_probe_fit fa, fb, fm, fms, fc, fcs;
  REQUIRE(oc_probe_fit_tokens(lo, OC_TOKEN_RAMP, 0.25, 9, 0.05, &t, &fa, &err) == 0 && oc_probe_fit_tokens(&hi, OC_TOKEN_RAMP, 0.25, 9, 0.05, &t, &fb, &err) == 0,
          "one-layer fits: %s", err.msg);
  REQUIRE(oc_probe_fit_tokens_combined(&two, OC_COMBINE_MEAN, OC_TOKEN_RAMP, 0.25, 9, 0.05, &t, &fm, &err) == 0 &&
              oc_probe_fit_tokens_combined(&two_s, OC_COMBINE_MEAN, OC_TOKEN_RAMP, 0.25, 9, 0.05, &t, &fms, &err) == 0 &&
              oc_probe_fit_tokens_combined(&two, OC_COMBINE_CONCAT, OC_TOKEN_RAMP, 0.25, 9, 0.05, &t, &fc, &err) == 0 &&
              oc_probe_fit_tokens_combined(&two_s, OC_COMBINE_CONCAT, OC_TOKEN_RAMP, 0.25, 9, 0.05, &t, &fcs, &err) == 0,
          "two-layer fits: %s", err.msg);
  int mean_ok = fm.probe.hidden == 2 * H && fm.probe.b == (float)(((double)fa.probe.b + fb.probe.b) / 2) && fm.final_loss == (fa.final_loss + fb.final_loss) / 2;
  for (int j = 0; j < H; j++) mean_ok &= fm.probe.w[j] == fa.probe.w[j] / 2.0f && fm.probe.w[H + j] == fb.probe.w[j] / 2.0f;
  CHECK(mean_ok, "mean: the two one-layer probes' weights / 2 side by side, the mean of their biases and losses");
  CHECK(same_fit(&fm, &fms) && same_fit(&fc, &fcs), "mean and concat: streamed fits equal the in-memory ones bit for bit");
  CHECK(fc.probe.hidden == 2 * H && memcmp(fc.probe.w, fm.probe.w, sizeof(float) * 2 * (size_t)H) != 0, "concat trains one probe over the whole row");
  oc_probe_fit_free(&fa);
  CHECK(oc_probe_fit_tokens(&two, OC_TOKEN_RAMP, 0.25, 9, 0.05, &t, &fa, &err) != 0 && strstr(err.msg, "concat or mean"),
        "two layers without a combination refused: %s", err.msg);
  oc_probe_fit_free(&fb); oc_probe_fit_free(&fm); oc_probe_fit_free(&fms); oc_probe_fit_free(&fc); oc_probe_fit_free(&fcs);
  const int twice[2] = {-1, L}; /* hidden_states[-1] is index L */
  oc_token_collect_opts od = o2;
  od.layers = twice;
  oc_token_activations bad;
  CHECK(oc_collect_tokens(m, ch, ds, &od, &bad, NULL, &err) != 0 && strstr(err.msg, "same hidden state"), "one hidden state twice refused: %s", err.msg);
  oc_token_activations_free(&hi);
  oc_token_activations_free(&two);
  oc_token_activations_free(&two_s);
  unlink(j1);
  unlink(j2);
}

static void test_collect(void) {
  oc_error err;
  oc_model *m;
  oc_chat *ch;
  oc_dataset ds;
  REQUIRE(oc_model_load(mdir, &m, &err) == 0 && oc_chat_load(mdir, &ch, &err) == 0, "tiny model: %s", err.msg);
  REQUIRE(oc_dataset_load(trigger_data(12), 0, 0, &ds, &err) == 0, "data: %s", err.msg);
  char jpath[512];
  snprintf(jpath, sizeof jpath, "%s", path("j.partial"));
  oc_token_collect_opts o = {"tiny", 0, 0, -2, 5, 11, jpath, 0, 0, NULL};
  oc_token_activations full, all;
  unlink(jpath);
  REQUIRE(oc_collect_tokens(m, ch, &ds, &o, &full, NULL, &err) == 0, "collect: %s", err.msg);
  CHECK(full.forward_passes == ds.n && full.resumed == 0, "one forward pass per exchange (%lld for %d)", (long long)full.forward_passes, ds.n);
  /* every token: rows against an independent forward pass tapping every position */
  oc_token_collect_opts oa = o;
  oa.max_tokens_per_example = 0;
  char japath[512];
  snprintf(japath, sizeof japath, "%s", path("all.partial"));
  oa.journal_path = japath;
  unlink(japath);
  REQUIRE(oc_collect_tokens(m, ch, &ds, &oa, &all, NULL, &err) == 0, "collect every token: %s", err.msg);
  oc_session *s = oc_session_new(m, 2048, &err);
  const int H = oc_model_cfg(m)->hidden, li = oc_model_cfg(m)->n_layers - 1; /* hidden_states[-2] */
  double worst = 0;
  int capped = 1, more_than_cap = 0;
  for (int i = 0; i < ds.n; i++) {
    int32_t *ids;
    int n, np;
    REQUIRE(oc_probe_exchange_ids(ch, &ds.ex[i], 0, 2048, &ids, &n, &np, &err) == 0, "%s", err.msg);
    float *h = malloc(sizeof(float) * (size_t)n * H);
    oc_taps t = {1, &li, n, NULL, h};
    oc_session_reset(s);
    REQUIRE(oc_forward(s, ids, n, &t, NULL, 0, &err) == 0, "%s", err.msg);
    const int nr = n - np;
    CHECK(all.offsets[i + 1] - all.offsets[i] == nr, "exchange %d: every one of its %d response tokens", i, nr);
    for (int r = 0; r < nr; r++)
      for (int j = 0; j < H; j++) {
        const float want = h[(size_t)(np + r) * H + j], got = all.X[(size_t)(all.offsets[i] + r) * H + j];
        const double rel = fabs(got - want) / (fabs(want) > 1e-3 ? fabs(want) : 1e-3);
        if (rel > worst) worst = rel;
      }
    const int64_t c = full.offsets[i + 1] - full.offsets[i];
    capped &= c == (nr < 5 ? nr : 5) && full.pos[full.offsets[i] + c - 1] == nr - 1;
    more_than_cap |= nr > 5;
    for (int64_t r = 0; r < c; r++) /* a sampled row is the row of its token */
      capped &= memcmp(full.X + (size_t)(full.offsets[i] + r) * H, all.X + (size_t)(all.offsets[i] + full.pos[full.offsets[i] + r]) * H,
                       sizeof(float) * (size_t)H) == 0;
    free(h);
    free(ids);
  }
  oc_session_free(s);
  CHECK(worst < 2e-3, "every row equals the independent pass's hidden state within F16 (worst relative error %g)", worst);
  CHECK(capped && more_than_cap, "the cap: min(tokens, 5) rows, the last token kept, each the row of its token");

  /* resume: the journal cut at every record boundary and inside records gives the same rows */
  long jn;
  unsigned char *jb = slurp(jpath, &jn);
  REQUIRE(jb && jn > 0, "journal read");
  oc_probe_train_opts t;
  oc_probe_train_defaults(&t);
  t.epochs = 30;
  oc_probe_fit f0, f1;
  REQUIRE(oc_probe_fit_tokens(&full, OC_TOKEN_CUMMAX, 0.25, 3, 0.01, &t, &f0, &err) == 0, "fit: %s", err.msg);
  test_streamed(m, ch, &ds, &o, &full, jb, jn);
  test_layers(m, ch, &ds, &o, &full);
  int resumed_ok = 1, n_cuts = 0, probe_same = 1;
  for (long cut = 0; cut < jn; cut += cut < 400 ? 37 : 1531) {
    spit(jpath, jb, cut);
    oc_token_activations r;
    if (oc_collect_tokens(m, ch, &ds, &o, &r, NULL, &err) != 0) { resumed_ok = 0; fprintf(stderr, "cut %ld: %s\n", cut, err.msg); continue; }
    resumed_ok &= same_rows(&full, &r) && r.forward_passes == ds.n - r.resumed;
    if (n_cuts++ % 4 == 0 && oc_probe_fit_tokens(&r, OC_TOKEN_CUMMAX, 0.25, 3, 0.01, &t, &f1, &err) == 0) {
      probe_same &= f1.probe.b == f0.probe.b && memcmp(f1.probe.w, f0.probe.w, sizeof(float) * (size_t)H) == 0;
      oc_probe_fit_free(&f1);
    }
    oc_token_activations_free(&r);
  }
  CHECK(resumed_ok && n_cuts > 10, "resumed after %d truncations: the same rows, forward passes only for the rest", n_cuts);
  CHECK(probe_same, "a probe trained on a resumed collection is bit-identical");
  /* half the journal: some exchanges resumed, not all */
  spit(jpath, jb, jn / 2);
  oc_token_activations r;
  REQUIRE(oc_collect_tokens(m, ch, &ds, &o, &r, NULL, &err) == 0, "%s", err.msg);
  CHECK(r.resumed > 0 && r.resumed < ds.n && r.forward_passes == ds.n - r.resumed && same_rows(&full, &r), "half a journal: %lld resumed, %lld passes",
        (long long)r.resumed, (long long)r.forward_passes);
  oc_token_activations_free(&r);

  /* mutations: any byte changed resumes to the same rows (a bad record and what follows recollected)
   * or is refused with a message (a header of other settings) */
  oc_rng g;
  oc_rng_seed(&g, 99);
  int mut_ok = 1, refused = 0, n_mut = 0;
  for (int it = 0; it < 60; it++, n_mut++) {
    unsigned char *mb = malloc((size_t)jn);
    memcpy(mb, jb, (size_t)jn);
    const long at = it < 10 ? (long)oc_rng_below(&g, 200) : (long)oc_rng_below(&g, (uint64_t)jn);
    mb[at] ^= (unsigned char)(1 + oc_rng_below(&g, 255));
    spit(jpath, mb, it % 3 == 0 ? at + 1 : jn);
    free(mb);
    err.msg[0] = 0;
    if (oc_collect_tokens(m, ch, &ds, &o, &r, NULL, &err) != 0) {
      refused++;
      mut_ok &= at < 12 + 2000 && strstr(err.msg, "not a token-level journal") != NULL;
      continue;
    }
    mut_ok &= same_rows(&full, &r);
    oc_token_activations_free(&r);
  }
  CHECK(mut_ok && refused > 0 && refused < n_mut, "%d mutated journals: the same rows or (header) refused (%d refused)", n_mut, refused);
  /* other settings: refused, the journal kept */
  spit(jpath, jb, jn);
  o.max_tokens_per_example = 4;
  CHECK(oc_collect_tokens(m, ch, &ds, &o, &r, NULL, &err) != 0 && strstr(err.msg, "settings") && file_size(jpath) == jn,
        "a journal of another token cap is refused and kept: %s", err.msg);
  o.max_tokens_per_example = -1;
  CHECK(oc_collect_tokens(m, ch, &ds, &o, &r, NULL, &err) != 0 && strstr(err.msg, "max_tokens_per_example"), "a negative cap refused: %s", err.msg);
  o.max_tokens_per_example = 5;
  o.journal_path = NULL;
  CHECK(oc_collect_tokens(m, ch, &ds, &o, &r, NULL, &err) != 0, "no journal path refused");
  free(jb);
  oc_probe_fit_free(&f0);
  oc_token_activations_free(&full);
  oc_token_activations_free(&all);
  oc_dataset_free(&ds);
  oc_chat_free(ch);
  oc_model_free(m);
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void test_cli(void) {
  char data[512];
  snprintf(data, sizeof data, "%s", trigger_data(48));
  int rc = run("%s train-probe --model_id %s --data_path %s --no_chat_template --layer=-1 --token_level --token_weighting cummax "
               "--max_tokens_per_example 64 --out_dir tp --epochs 60 --standardize --probe_every_n_tokens 1 --smoothing_window 1",
               cli, mdir, data);
  REQUIRE(rc == 0, "train-probe --token_level: %s", stderr_text());
  CHECK(strstr(stderr_text(), "from 48 forward passes") != NULL, "one forward pass per exchange: %s", stderr_text());
  CHECK(access(path("tp/token_activations.partial"), F_OK) != 0, "the journal is removed once the probe is written");
  cJSON *cfg = read_json_file(path("tp/config.json"));
  REQUIRE(cfg, "config.json");
  const cJSON *tw = cJSON_GetObjectItem(cfg, "token_weighting");
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "token_level")) && cJSON_IsString(tw) && strcmp(tw->valuestring, "cummax") == 0 &&
            num(cfg, "max_tokens_per_example") == 64 && num(cfg, "layer") == -1 && num(cfg, "hidden_size") == 64 &&
            strstr(cJSON_GetObjectItem(cfg, "note")->valuestring, "every response token") != NULL,
        "config.json: token_level, token_weighting, max_tokens_per_example, layer, hidden_size");
  cJSON_Delete(cfg);
  /* the trigger is the response's last word: a detection must come at one of its tokens */
  rc = run("%s evaluate-probe --model_id %s --probe_path tp/probe.safetensors --data_path %s --out_path ev.json", cli, mdir, data);
  cJSON *ev = read_json_file(path("ev.json"));
  REQUIRE(rc == 0 && ev, "evaluate-probe: %s", stderr_text());
  const cJSON *per = cJSON_GetObjectItem(ev, "per_example");
  int unsafe = 0, at_trigger = 0, safe_quiet = 0, safe = 0;
  for (int i = 0; i + 1 < cJSON_GetArraySize(per); i += 2) { /* a safe exchange, then its unsafe twin */
    const cJSON *xs = cJSON_GetArrayItem(per, i), *xu = cJSON_GetArrayItem(per, i + 1);
    const double at = num(xu, "detected_at"), nt = num(xu, "response_tokens");
    const double q = nt - num(xs, "response_tokens") + 1; /* the trigger's tokens ("." is one) */
    unsafe += num(xu, "label") == 1;
    at_trigger += at > nt - q && at <= nt;
    safe += num(xs, "label") == 0;
    safe_quiet += cJSON_IsNull(cJSON_GetObjectItem(xs, "detected_at"));
  }
  cJSON_Delete(ev);
  /* two layers through the CLI: the config names them and the combination; evaluate-probe (the
   * guard's reading of a multi-layer probe) scores the same exchanges */
  rc = run("%s train-probe --model_id %s --data_path %s --no_chat_template --layers=-1,-2 --combine mean --token_level --max_tokens_per_example 8 "
           "--out_dir tl --epochs 5",
           cli, mdir, data);
  REQUIRE(rc == 0, "train-probe --token_level --layers: %s", stderr_text());
  cfg = read_json_file(path("tl/config.json"));
  REQUIRE(cfg, "tl/config.json");
  const cJSON *ls = cJSON_GetObjectItem(cfg, "layers"), *cb = cJSON_GetObjectItem(cfg, "combine");
  CHECK(cJSON_GetArraySize(ls) == 2 && cJSON_GetArrayItem(ls, 0)->valuedouble == -1 && cJSON_GetArrayItem(ls, 1)->valuedouble == -2 &&
            cJSON_IsString(cb) && strcmp(cb->valuestring, "mean") == 0 && num(cfg, "hidden_size") == 64 && num(cfg, "layer") == -1 &&
            cJSON_IsTrue(cJSON_GetObjectItem(cfg, "token_level")) && strstr(cJSON_GetObjectItem(cfg, "note")->valuestring, "`layers`"),
        "config.json of a two-layer token-level probe: layers, combine, hidden_size of one layer");
  cJSON_Delete(cfg);
  rc = run("%s evaluate-probe --model_id %s --probe_path tl/probe.safetensors --data_path %s", cli, mdir, data);
  CHECK(rc == 0 && strstr(out, "roc_auc"), "evaluate-probe reads the two-layer token-level probe: %s", stderr_text());
  /* a run that fails after collecting (one label only) leaves its journal; the rerun resumes it
   * whole (no forward pass), another cap is refused */
  FILE *f = fopen(path("safe.jsonl"), "w");
  for (int i = 0; i < 6; i++) fprintf(f, "{\"prompt\": \"p%d\", \"response\": \"safe answer %d\", \"label\": 0}\n", i, i);
  fclose(f);
  rc = run("%s train-probe --model_id %s --data_path safe.jsonl --layer=-1 --token_level --out_dir sj", cli, mdir);
  CHECK(rc == 1 && access(path("sj/token_activations.partial"), F_OK) == 0 && strstr(stderr_text(), "from 6 forward passes"),
        "one label: collected, not trained, the journal kept: %s", stderr_text());
  rc = run("%s train-probe --model_id %s --data_path safe.jsonl --layer=-1 --token_level --out_dir sj", cli, mdir);
  CHECK(rc == 1 && strstr(stderr_text(), "from 0 forward passes (6 exchanges resumed)"), "the rerun resumes every exchange: %s", stderr_text());
  rc = run("%s train-probe --model_id %s --data_path safe.jsonl --layer=-1 --token_level --max_tokens_per_example 2 --out_dir sj", cli, mdir);
  CHECK(rc == 1 && strstr(stderr_text(), "not a token-level journal of these settings"), "another cap refused: %s", stderr_text());
  /* bad flags: refused with a usage error before anything runs */
  static const char *bad[] = {"--token_weighting cummax", "--max_tokens_per_example 3", "--token_level --token_weighting max",
                              "--token_level --max_tokens_per_example -1", "--token_level --layers=-1,-1",
                              "--token_level --save_activations x.safetensors", "--token_level --pack_tokens 100", "--token_level --combine mean"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    rc = run("%s train-probe --model_id %s --data_path %s --out_dir bad %s", cli, mdir, data, bad[i]);
    CHECK(rc == 2 && access(path("bad"), F_OK) != 0, "refused: %s (rc %d): %s", bad[i], rc, stderr_text());
  }
  fclose(fopen(path("x.safetensors"), "w"));
  rc = run("%s train-probe --model_id %s --activations x.safetensors --out_dir bad --token_level", cli, mdir);
  CHECK(rc == 2 && strstr(stderr_text(), "--token_level"), "--token_level with --activations refused: %s", stderr_text());
}

int main(int argc, char **argv) {
  REQUIRE(argc == 3, "usage: test_probe_tokens OPENCON E2E_DIR");
  cli = argv[1];
  snprintf(mdir, sizeof mdir, "%s/gemma4-tiny-chat", argv[2]);
  snprintf(tmp, sizeof tmp, "/tmp/oc_probe_tokens_XXXXXX");
  REQUIRE(mkdtemp(tmp), "mkdtemp");
  test_f16();
  test_sample();
  test_collect();
  test_cli();
  if (g_fail == 0) remove_tmpdir(tmp);
  return check_summary("test_probe_tokens");
}
