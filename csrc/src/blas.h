// The dense baseline's BLAS (OpenBLAS: the scipy-openblas32 wheel's or a system one), behind
// plain row-major wrappers so no other file includes cblas.h.
#pragma once

#include <string>

namespace sparsenet {

// C[m x n] = A[m x k] * B[k x n], all row-major with leading dimensions.
void blas_sgemm(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
                int ldc);
// y[m] = A[m x n] * x[n], A row-major.
void blas_sgemv(int m, int n, const float* a, int lda, const float* x, float* y);
void blas_set_num_threads(int num_threads);
std::string blas_name();

}  // namespace sparsenet
