// 2x2 stride-2 max pooling of one output row, AVX2: 8 outputs from 16 floats
// of each input row, split into even and odd columns. _mm256_max_ps(b, a)
// returns a when either is NaN or both are zeros, which is std::max(a, b):
// the same comparisons in the same order as the scalar twin, so the same bits.
// Built with -mavx2 -mfma only.
#include <immintrin.h>

#include <limits>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

// Even and odd columns of p[0, 16), in column order.
inline void split(const float* p, __m256& even, __m256& odd) {
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  // In-lane shuffles give (a0 a2 b0 b2 | a4 a6 b4 b6); 64-bit lane order 0 2 1 3 sorts them.
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));
}

}  // namespace

void f32_maxpool2x2_avx2(const float* top, size_t w, size_t n, float* d) {
  const __m256 lowest = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e0, o0, e1, o1;
    split(top + 2 * i, e0, o0);
    split(top + w + 2 * i, e1, o1);
    __m256 m = _mm256_max_ps(e0, lowest);
    m = _mm256_max_ps(o0, m);
    m = _mm256_max_ps(e1, m);
    _mm256_storeu_ps(d + i, _mm256_max_ps(o1, m));
  }
  f32_maxpool2x2_scalar(top + 2 * i, w, n - i, d + i);  // the last n mod 8
}

}  // namespace sparsenet
