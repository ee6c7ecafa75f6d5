/* Deterministic f32 GEMM for training: C[M,N] = op(A)[M,K] . op(B)[K,N] + beta C (row-major).
 * The output is cut into fixed blocks (rows of C, or columns when M is small), each computed by
 * one single-threaded sgemm inside our OpenMP loop: bit-identical with any thread count. */
#ifndef OC_GEMM_H
#define OC_GEMM_H
/* Once per process: OpenBLAS's own threading off (our OpenMP loops own the threads; each sgemm
 * call is one block). The calling thread's OpenMP thread count is kept. Model loaders call it, so
 * a program that never calls oc_set_threads gets the same results. */
void oc_blas_init(void);
/* OpenBLAS's kernel family ("Haswell", "SkylakeX", ...), and the OPENBLAS_CORETYPE this CPU should
 * have when OpenBLAS took one without AVX2 on a CPU with AVX2 and FMA (a DYNAMIC_ARCH build only;
 * NULL otherwise). */
const char *oc_blas_core(void);
const char *oc_blas_better_core(void);
void oc_gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
#endif
