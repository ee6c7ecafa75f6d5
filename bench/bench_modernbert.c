/* ModernBERT classifier speed on a (random-weight) ModernBERT-base-shaped checkpoint:
 *   classify latency of one 512-token exchange (best of 3)
 *   training throughput, batch 8 x 512 (forward + backward + clip + AdamW), tokens/s (mean of 3 steps after 1 warm-up)
 *   peak RSS of training
 * usage: bench_modernbert MODEL_DIR [threads]   (make the dir with: opencon random-model --config ModernBERT-base.config.json --out DIR) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "opencon/modernbert.h"

int main(int argc, char **argv) {
  oc_blas_reexec(argv); /* OpenBLAS's generic kernels on a CPU it does not know: run again with its family */
  if (argc < 2) { fprintf(stderr, "usage: bench_modernbert MODEL_DIR [threads]\n"); return 2; }
  oc_set_threads(argc > 2 ? atoi(argv[2]) : 0);
  oc_error err;
  oc_mbert *m;
  if (oc_mbert_load(argv[1], &m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  const int T = 512, B = 8;
  int32_t *ids = malloc(sizeof(int32_t) * T * B), labels[8];
  oc_rng r;
  oc_rng_seed(&r, 1);
  for (int i = 0; i < T * B; i++) ids[i] = 1000 + (int32_t)oc_rng_below(&r, 40000);
  for (int b = 0; b < B; b++) { ids[b * T] = 50281; ids[b * T + T - 1] = 50282; labels[b] = b % 3; }
  int lens[8];
  for (int b = 0; b < B; b++) lens[b] = T;
  float logits[8 * 16];
  oc_mbert_batch one = {ids, lens, 1}, batch = {ids, lens, B};
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = oc_now();
    if (oc_mbert_forward(m, &one, logits, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double dt = oc_now() - t0;
    if (dt < best) best = dt;
  }
  oc_adamw_state st;
  if (oc_mbert_adamw_init(m, &st, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
  double total = 0;
  for (int step = 0; step < 4; step++) {
    float loss;
    double t0 = oc_now();
    if (oc_mbert_loss_backward(m, &batch, labels, &loss, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    oc_mbert_clip_and_step(m, &st, 2e-5, 0.01, 1.0, NULL, NULL);
    double dt = oc_now() - t0;
    if (step > 0) total += dt;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("{\"threads\": %d, \"classify_512_ms\": %.1f, \"train_step_8x512_s\": %.2f, \"train_tokens_per_s\": %.1f, \"peak_rss_gb\": %.2f}\n",
         oc_get_threads(), best * 1e3, total / 3, 3.0 * B * T / total, ru.ru_maxrss / 1048576.0);
  oc_adamw_free(&st);
  oc_mbert_free(m);
  free(ids);
  return 0;
}
