// Sliced windows (SellRef) with AVX-512F: a group's 16 rows in the 16 lanes of
// four zmm chains; a step is one value load, one load of 16 byte indices
// widened to dwords, two loads of the 32-float x window and vpermt2ps. Per
// nonzero that is about 0.35 vector loads at 10 % density (the windows hold 70
// % nonzeros, 30 % padding) against 1.125 for the masked-broadcast csrmv,
// whose two vector loads per cycle (Zen 5) bound it. C++ probe, Zen 5, one
// thread, matrix in L3: 4096x4096 at 10 % 295 -> 172-202 us, at 4 % 121 ->
// 111 us; two threads 150 -> 101-109 us; 512x4096 (in L2) 37 -> 23 us. A
// matrix that streams from memory gains nothing (8192x8192 at 10 %: 1.46 ms
// both) and the layout is larger (7.3 bytes per nonzero at 10 %, 10 at 4 %,
// against 6), so layers use it only in cache (WeightedLayer::build_sell).
// Four chains: 3 % faster than two. Built with -mavx512f.
#include <immintrin.h>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

inline __m512 step(SellRef a, const float* x, size_t s, __m512 acc) {
  const float* w = x + a.window[s];
  const __m512i index =
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.index + s * kSellLanes)));
  const __m512 xs = _mm512_permutex2var_ps(_mm512_loadu_ps(w), index, _mm512_loadu_ps(w + 16));
  return _mm512_fmadd_ps(_mm512_loadu_ps(a.values + s * kSellLanes), xs, acc);
}

}  // namespace

void f32_sellmv_avx512(SellRef a, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
                       float* y) {
  if (row_begin >= row_end) return;
  for (size_t g = row_begin / kSellLanes; g * kSellLanes < row_end; ++g) {
    size_t s = a.group_start[g];
    const size_t end = a.group_start[g + 1];
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (; s + 4 <= end; s += 4) {
      c0 = step(a, x, s, c0);
      c1 = step(a, x, s + 1, c1);
      c2 = step(a, x, s + 2, c2);
      c3 = step(a, x, s + 3, c3);
    }
    for (; s < end; ++s) c0 = step(a, x, s, c0);
    alignas(64) float sums[kSellLanes];
    _mm512_store_ps(sums, _mm512_add_ps(_mm512_add_ps(c0, c2), _mm512_add_ps(c1, c3)));
    const size_t r0 = g * kSellLanes;
    const size_t lo = row_begin > r0 ? row_begin - r0 : 0;
    const size_t hi = row_end - r0 < kSellLanes ? row_end - r0 : kSellLanes;
    for (size_t l = lo; l < hi; ++l) {
      float acc = sums[l];
      if (ep.accumulate) acc += y[r0 + l];
      y[r0 + l] = apply_epilogue(acc, ep, r0 + l);
    }
  }
}

}  // namespace sparsenet
