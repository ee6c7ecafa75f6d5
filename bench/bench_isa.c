/* Instruction throughput of the multiply-adds a BF16 dot could be built on, one thread, registers
 * only (12 independent accumulator chains, so latency does not limit it): AVX2 FMA (8 lanes),
 * AVX-512 FMA (16 lanes) and AVX-512 BF16 `vdpbf16ps` (16 lanes, two products each). It says
 * whether vdpbf16ps could beat widening BF16 to f32 for FMAs on the CPU at hand (docs/architecture.md,
 * "Where batching's gain ends"): per 32 weights and input the widening kernel issues 2 FMAs,
 * vdpbf16ps 1 with x rounded to BF16 (too coarse for the fixtures) or 2 with x split in two BF16
 * halves.
 * usage: bench_isa [millions of iterations, default 100]; one JSON line per instruction and round. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>

#include "opencon/base.h"

#define CHAINS 12

/* NAME(n): n rounds of OP on CHAINS accumulators of vector type VT (ATTR: its instruction set),
 * their sum returned so nothing is optimized away */
#define DEF_CHAINS(NAME, ATTR, VT, INIT, OP, ADD, FIRST)         \
  ATTR static float NAME(long n) {                               \
    VT a[CHAINS];                                                \
    for (int i = 0; i < CHAINS; i++) a[i] = INIT((float)i * 1e-3f); \
    for (long k = 0; k < n; k++)                                 \
      for (int i = 0; i < CHAINS; i++) a[i] = OP(a[i]);          \
    VT s = a[0];                                                 \
    for (int i = 1; i < CHAINS; i++) s = ADD(s, a[i]);           \
    return FIRST(s);                                             \
  }

#define AVX2_FMA __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f")))
#define AVX512_BF16 __attribute__((target("avx512f,avx512bf16")))
/* a * 0.999 + 1e-6, and a + 1.0 * 6e-8 twice (BF16 pairs) */
#define FMA_YMM(a) _mm256_fmadd_ps(a, _mm256_set1_ps(0.999f), _mm256_set1_ps(1e-6f))
#define FMA_ZMM(a) _mm512_fmadd_ps(a, _mm512_set1_ps(0.999f), _mm512_set1_ps(1e-6f))
#define DPBF16_ZMM(a) _mm512_dpbf16_ps(a, (__m512bh)_mm512_set1_epi16(0x3f80), (__m512bh)_mm512_set1_epi16(0x3380))
DEF_CHAINS(fma_ymm, AVX2_FMA, __m256, _mm256_set1_ps, FMA_YMM, _mm256_add_ps, _mm256_cvtss_f32)
DEF_CHAINS(fma_zmm, AVX512, __m512, _mm512_set1_ps, FMA_ZMM, _mm512_add_ps, _mm512_reduce_add_ps)
DEF_CHAINS(dpbf16_zmm, AVX512_BF16, __m512, _mm512_set1_ps, DPBF16_ZMM, _mm512_add_ps, _mm512_reduce_add_ps)

static void report(const char *name, int lanes, int macs, float (*fn)(long), long n, int round) {
  const double t0 = oc_now();
  const float sink = fn(n);
  const double dt = oc_now() - t0, per_s = (double)CHAINS * (double)n / dt;
  printf("{\"bench\": \"isa\", \"instruction\": \"%s\", \"round\": %d, \"g_instructions_per_s\": %.3f, \"g_multiply_adds_per_s\": %.2f, "
         "\"sink\": %g}\n",
         name, round, per_s * 1e-9, per_s * lanes * macs * 1e-9, sink);
  fflush(stdout);
}

int main(int argc, char **argv) {
  const long n = (argc > 1 ? atol(argv[1]) : 100) * 1000000L;
  if (n <= 0) { fputs("usage: bench_isa [millions of iterations, default 100]\n", stderr); return 2; }
  __builtin_cpu_init();
  const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), avx512 = __builtin_cpu_supports("avx512f");
  const int bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  for (int round = 1; round <= 3; round++) {
    if (avx2) report("vfmadd231ps ymm", 8, 1, fma_ymm, n, round);
    if (avx512) report("vfmadd231ps zmm", 16, 1, fma_zmm, n, round);
    if (bf16) report("vdpbf16ps zmm", 16, 2, dpbf16_zmm, n, round);
  }
  return 0;
}
