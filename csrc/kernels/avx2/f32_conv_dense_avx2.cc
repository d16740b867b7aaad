// Dense direct convolution tile, AVX2+FMA: 6 output channels x 16 output
// columns in twelve 8-lane accumulators. Per weight column i: two loads of 16
// contiguous input floats at offsets[i], six broadcast weights, twelve FMAs --
// two input loads serve six channels, where the CSR kernels load one input
// vector per multiply-add. The weights are read straight from the dense
// row-major matrix (six rows ldw apart, each walked in order), so nothing is
// packed. A tile of m < 6 channels repeats its last row in the spare
// accumulators and stores m rows; one of n < 16 columns loads (accumulating)
// and stores n lanes (masked). Built with -mavx2 -mfma only.
#include <immintrin.h>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

// kTailMask + 8 - m: the first m lanes set (m in [0, 8]).
alignas(32) constexpr int32_t kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0,  0,  0,  0,  0,  0,  0,  0};

inline __m256 finish(__m256 acc, Epilogue ep, size_t row) {
  if (ep.bias) acc = _mm256_add_ps(acc, _mm256_set1_ps(ep.bias[row]));
  return ep.relu ? _mm256_max_ps(acc, _mm256_setzero_ps()) : acc;
}

}  // namespace

void f32_conv_dense_avx2(const float* w, size_t ldw, size_t m, const uint32_t* offsets,
                         size_t k, const float* x, size_t n, Epilogue ep, size_t row0, float* y,
                         size_t ldy) {
  static_assert(kConvDenseRows == 6 && kConvDenseCols == 16, "the register tile below");
  const auto row = [&](size_t r) { return w + (r < m ? r : m - 1) * ldw; };
  const float *w0 = row(0), *w1 = row(1), *w2 = row(2), *w3 = row(3), *w4 = row(4), *w5 = row(5);
  const size_t n_lo = n < 8 ? n : 8, n_hi = n < 8 ? 0 : (n < 16 ? n - 8 : 8);
  const __m256i m_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - n_lo));
  const __m256i m_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - n_hi));
  // ep.accumulate: start from what y holds (its first n columns of its first m rows).
  const auto start = [&](size_t r, size_t half) {
    if (!ep.accumulate || r >= m) return _mm256_setzero_ps();
    return _mm256_maskload_ps(y + r * ldy + 8 * half, half == 0 ? m_lo : m_hi);
  };
  __m256 c00 = start(0, 0), c01 = start(0, 1), c10 = start(1, 0), c11 = start(1, 1);
  __m256 c20 = start(2, 0), c21 = start(2, 1), c30 = start(3, 0), c31 = start(3, 1);
  __m256 c40 = start(4, 0), c41 = start(4, 1), c50 = start(5, 0), c51 = start(5, 1);
  for (size_t i = 0; i < k; ++i) {
    const float* xi = x + offsets[i];
    const __m256 b0 = _mm256_loadu_ps(xi);
    const __m256 b1 = _mm256_loadu_ps(xi + 8);
    __m256 a = _mm256_broadcast_ss(w0 + i);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(w1 + i);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(w2 + i);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(w3 + i);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(w4 + i);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(w5 + i);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
  }
  const __m256 lo[6] = {c00, c10, c20, c30, c40, c50};
  const __m256 hi[6] = {c01, c11, c21, c31, c41, c51};
  if (n >= 16) {
    for (size_t r = 0; r < m; ++r) {
      _mm256_storeu_ps(y + r * ldy, finish(lo[r], ep, row0 + r));
      _mm256_storeu_ps(y + r * ldy + 8, finish(hi[r], ep, row0 + r));
    }
    return;
  }
  for (size_t r = 0; r < m; ++r) {
    _mm256_maskstore_ps(y + r * ldy, m_lo, finish(lo[r], ep, row0 + r));
    _mm256_maskstore_ps(y + r * ldy + 8, m_hi, finish(hi[r], ep, row0 + r));
  }
}

}  // namespace sparsenet
