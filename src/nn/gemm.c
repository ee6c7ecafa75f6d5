#include "nn/gemm.h"

#include <cblas.h>

#define BLOCK 64

void oc_gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const enum CBLAS_TRANSPOSE ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans;
  if (M >= 2 * BLOCK || N < 2 * BLOCK) { /* blocks of rows of C */
    const int nb = (M + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) {
      const int r0 = b * BLOCK, mb = M - r0 < BLOCK ? M - r0 : BLOCK;
      const float *a = transA ? A + r0 : A + (size_t)r0 * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, mb, N, K, 1.0f, a, lda, B, ldb, beta, C + (size_t)r0 * ldc, ldc);
    }
  } else { /* few rows (a small batch): blocks of columns */
    const int nb = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) {
      const int c0 = b * BLOCK, ncols = N - c0 < BLOCK ? N - c0 : BLOCK;
      const float *bb = transB ? B + (size_t)c0 * ldb : B + c0;
      cblas_sgemm(CblasRowMajor, ta, tb, M, ncols, K, 1.0f, A, lda, bb, ldb, beta, C + c0, ldc);
    }
  }
}
