#include "nn/gemm.h"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "nn/cpu.h"
#include "opencon/base.h"

/* Block size from the shape only (never the thread count): about 4 blocks, at least 128 rows.
 * Every block call packs the whole other operand, so fewer, larger blocks waste less. */
static int block_of(int n) {
  int b = (n + 3) / 4;
  b = (b + 63) / 64 * 64;
  return b < 128 ? 128 : b;
}

void oc_gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const enum CBLAS_TRANSPOSE ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans;
  if (M >= 256 || N < 256) { /* blocks of rows of C */
    const int BLOCK = block_of(M), nb = (M + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) {
      const int r0 = b * BLOCK, mb = M - r0 < BLOCK ? M - r0 : BLOCK;
      const float *a = transA ? A + r0 : A + (size_t)r0 * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, mb, N, K, 1.0f, a, lda, B, ldb, beta, C + (size_t)r0 * ldc, ldc);
    }
  } else { /* few rows (a small batch): blocks of columns */
    const int BLOCK = block_of(N), nb = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) {
      const int c0 = b * BLOCK, ncols = N - c0 < BLOCK ? N - c0 : BLOCK;
      const float *bb = transB ? B + (size_t)c0 * ldb : B + c0;
      cblas_sgemm(CblasRowMajor, ta, tb, M, ncols, K, 1.0f, A, lda, bb, ldb, beta, C + c0, ldc);
    }
  }
}

void openblas_set_num_threads(int);
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_threaded(void) {
  int n = omp_get_max_threads(); /* OpenBLAS's OpenMP build also sets this thread's OpenMP count */
  openblas_set_num_threads(1);
  omp_set_num_threads(n);
}
void oc_blas_init(void) { pthread_once(&blas_once, blas_single_threaded); }

char *openblas_get_corename(void);
char *openblas_get_config(void);
const char *oc_blas_core(void) { return openblas_get_corename(); }

const char *oc_blas_better_core(void) {
  static const char *const avx2_cores[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "Excavator"};
  const char *core = openblas_get_corename(), *config = openblas_get_config();
  if (!core || !config || !strstr(config, "DYNAMIC_ARCH")) return NULL;
  for (size_t i = 0; i < sizeof avx2_cores / sizeof *avx2_cores; i++)
    if (strcasecmp(core, avx2_cores[i]) == 0) return NULL;
  const oc_cpu_info *c = oc_cpu();
  if (c->detected == OC_CPU_AVX512) return c->avx512_bf16 ? "Cooperlake" : "SkylakeX";
  return c->detected == OC_CPU_AVX2 ? "Haswell" : NULL;
}

/* Whether /proc/self/exe is the program argv[0] names (not a loader or tool it runs under, such
 * as ld.so or qemu, which would read the program's arguments as their own). */
static int self_is_argv0(char **argv) {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0 || !argv || !argv[0]) return 0;
  exe[n] = 0;
  const char *a = strrchr(argv[0], '/'), *b = strrchr(exe, '/');
  return strcmp(a ? a + 1 : argv[0], b ? b + 1 : exe) == 0;
}

void oc_blas_reexec(char **argv) {
  const char *better = oc_blas_better_core();
  if (!better || getenv("OPENBLAS_CORETYPE") || !self_is_argv0(argv) || setenv("OPENBLAS_CORETYPE", better, 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE"); /* exec failed: run on as loaded */
}
