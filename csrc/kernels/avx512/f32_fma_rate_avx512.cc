// The core's FMA rate at two vector widths (AVX-512F, AVX2+FMA): `iterations`
// rounds of 12 independent FMA chains on registers (no loads), 16-lane or
// 8-lane, for the caller to time. Zen 5 runs 512-bit FMAs at the 256-bit rate (two
// full-width pipes, 229 against 116 GFLOP/s at 3.6 GHz); Zen 4 splits each
// into two halves, so its 512-bit rate per lane is the 256-bit one. Not a
// kernel of the model: cpu_full_width_avx512() (runtime.cc) times the two.
// Built with -mavx2 -mfma -mavx512f -mavx512vl only.
#include <immintrin.h>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

// Returns the first chain, which keeps the work live.
template <typename V, V (*kFma)(V, V, V)>
V chains(V b, V c, V seed, long iterations) {
  V a0 = seed, a1 = seed, a2 = seed, a3 = seed, a4 = seed, a5 = seed;
  V a6 = seed, a7 = seed, a8 = seed, a9 = seed, a10 = seed, a11 = seed;
  for (long k = 0; k < iterations; ++k) {
    a0 = kFma(a0, b, c), a1 = kFma(a1, b, c), a2 = kFma(a2, b, c), a3 = kFma(a3, b, c);
    a4 = kFma(a4, b, c), a5 = kFma(a5, b, c), a6 = kFma(a6, b, c), a7 = kFma(a7, b, c);
    a8 = kFma(a8, b, c), a9 = kFma(a9, b, c), a10 = kFma(a10, b, c), a11 = kFma(a11, b, c);
    // The chains stay in registers and the loop is not folded away.
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
    __asm__ volatile("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
  }
  const V sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
  return sum;
}

__m512 fma16(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
__m256 fma8(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

}  // namespace

float f32_fma_chains_avx512(size_t lanes, long iterations) {
  if (lanes == 16)
    return _mm512_cvtss_f32(
        chains<__m512, fma16>(_mm512_set1_ps(0.999f), _mm512_set1_ps(0.001f), _mm512_set1_ps(0.5f), iterations));
  return _mm256_cvtss_f32(
      chains<__m256, fma8>(_mm256_set1_ps(0.999f), _mm256_set1_ps(0.001f), _mm256_set1_ps(0.5f), iterations));
}

}  // namespace sparsenet
