// Dense direct convolution tile, AVX-512F: 6 output channels x 32 output
// columns in twelve 16-lane accumulators, the AVX2 tile (f32_conv_dense_avx2.cc)
// twice as wide. Per weight column i: two loads of 32 contiguous input floats
// at offsets[i], six broadcast weights, twelve FMAs. On a core with 512-bit
// FMA units (Zen 5) that is twice the multiply-adds per instruction of the
// AVX2 tile at the same 8 loads per 12 FMAs (mnist_cnn's conv2 on Winograd
// 1.5x faster there); on one that splits them in two (Zen 4) it should keep
// the AVX2 tile's FMA rate with half its loads (not measured). Sums in the
// AVX2 tile's order (weight column by weight column, fused multiply-adds), so
// both give the same bits. A tile of m < 6 channels repeats its last row in
// the spare accumulators and stores m rows; one of n < 32 columns loads
// (accumulating) and stores n lanes (masked). Built with -mavx2 -mfma
// -mavx512f -mavx512vl only.
#include <immintrin.h>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

inline __m512 finish(__m512 acc, Epilogue ep, size_t row) {
  if (ep.bias) acc = _mm512_add_ps(acc, _mm512_set1_ps(ep.bias[row]));
  return ep.relu ? _mm512_max_ps(acc, _mm512_setzero_ps()) : acc;
}

inline __mmask16 first_lanes(size_t k) { return static_cast<__mmask16>((1u << k) - 1u); }  // k in [0, 16]

}  // namespace

void f32_conv_dense_avx512(const float* w, size_t ldw, size_t m, const uint32_t* offsets,
                           size_t k, const float* x, size_t n, Epilogue ep, size_t row0, float* y,
                           size_t ldy) {
  static_assert(kConvDenseRows == 6 && kConvDenseWideCols == 32, "the register tile below");
  const auto row = [&](size_t r) { return w + (r < m ? r : m - 1) * ldw; };
  const float *w0 = row(0), *w1 = row(1), *w2 = row(2), *w3 = row(3), *w4 = row(4), *w5 = row(5);
  const __mmask16 m_lo = first_lanes(n < 16 ? n : 16), m_hi = first_lanes(n < 16 ? 0 : (n < 32 ? n - 16 : 16));
  // ep.accumulate: start from what y holds (its first n columns of its first m rows).
  const auto start = [&](size_t r, size_t half) {
    if (!ep.accumulate || r >= m) return _mm512_setzero_ps();
    return _mm512_maskz_loadu_ps(half == 0 ? m_lo : m_hi, y + r * ldy + 16 * half);
  };
  __m512 c00 = start(0, 0), c01 = start(0, 1), c10 = start(1, 0), c11 = start(1, 1);
  __m512 c20 = start(2, 0), c21 = start(2, 1), c30 = start(3, 0), c31 = start(3, 1);
  __m512 c40 = start(4, 0), c41 = start(4, 1), c50 = start(5, 0), c51 = start(5, 1);
  for (size_t i = 0; i < k; ++i) {
    const float* xi = x + offsets[i];
    const __m512 b0 = _mm512_loadu_ps(xi);
    const __m512 b1 = _mm512_loadu_ps(xi + 16);
    __m512 a = _mm512_set1_ps(w0[i]);
    c00 = _mm512_fmadd_ps(a, b0, c00);
    c01 = _mm512_fmadd_ps(a, b1, c01);
    a = _mm512_set1_ps(w1[i]);
    c10 = _mm512_fmadd_ps(a, b0, c10);
    c11 = _mm512_fmadd_ps(a, b1, c11);
    a = _mm512_set1_ps(w2[i]);
    c20 = _mm512_fmadd_ps(a, b0, c20);
    c21 = _mm512_fmadd_ps(a, b1, c21);
    a = _mm512_set1_ps(w3[i]);
    c30 = _mm512_fmadd_ps(a, b0, c30);
    c31 = _mm512_fmadd_ps(a, b1, c31);
    a = _mm512_set1_ps(w4[i]);
    c40 = _mm512_fmadd_ps(a, b0, c40);
    c41 = _mm512_fmadd_ps(a, b1, c41);
    a = _mm512_set1_ps(w5[i]);
    c50 = _mm512_fmadd_ps(a, b0, c50);
    c51 = _mm512_fmadd_ps(a, b1, c51);
  }
  const __m512 lo[6] = {c00, c10, c20, c30, c40, c50};
  const __m512 hi[6] = {c01, c11, c21, c31, c41, c51};
  if (n >= 32) {
    for (size_t r = 0; r < m; ++r) {
      _mm512_storeu_ps(y + r * ldy, finish(lo[r], ep, row0 + r));
      _mm512_storeu_ps(y + r * ldy + 16, finish(hi[r], ep, row0 + r));
    }
    return;
  }
  for (size_t r = 0; r < m; ++r) {
    _mm512_mask_storeu_ps(y + r * ldy, m_lo, finish(lo[r], ep, row0 + r));
    _mm512_mask_storeu_ps(y + r * ldy + 16, m_hi, finish(hi[r], ep, row0 + r));
  }
}

}  // namespace sparsenet
