#include "blas.h"

#include <cblas.h>

#include "sparsenet/runtime.h"

// scipy-openblas32 prefixes every symbol with scipy_ (see its pkg-config Cflags);
// a system OpenBLAS (-DSPARSENET_BLAS=openblas) has the plain names.
#ifdef SPARSENET_SYSTEM_OPENBLAS
#define SPARSENET_BLAS(name) name
constexpr const char* kBlasSource = "system OpenBLAS";
#else
#define SPARSENET_BLAS(name) scipy_##name
constexpr const char* kBlasSource = "scipy-openblas32";
#endif

namespace sparsenet {

void blas_sgemm(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
                int ldc) {
  SPARSENET_BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b,
                              ldb, 0.0f, c, ldc);
}

void blas_sgemv(int m, int n, const float* a, int lda, const float* x, float* y) {
  SPARSENET_BLAS(cblas_sgemv)(CblasRowMajor, CblasNoTrans, m, n, 1.0f, a, lda, x, 1, 0.0f, y, 1);
}

void blas_set_num_threads(int num_threads) {
  SPARSENET_BLAS(openblas_set_num_threads)(num_threads);
}

std::string blas_name() {
  std::string config = SPARSENET_BLAS(openblas_get_config)();
  std::string core = SPARSENET_BLAS(openblas_get_corename)();
  return config + " (" + kBlasSource + ", core " + core + ")";
}

std::string blas_info() { return blas_name(); }

}  // namespace sparsenet
