// Sliced windows (SellRef) with AVX-512F: a group's 16 rows in the 16 lanes of
// four zmm chains; a step is one value load (a whole 64-byte line: the values
// are aligned), one load of 16 byte indices widened to dwords, two loads of
// the 32-float x window and vpermt2ps. Per nonzero that is about 0.35 vector
// loads at 10 % density (the windows hold 70 % nonzeros, 30 % padding)
// against 1.125 for the masked-broadcast csrmv, whose two vector loads per
// cycle (Zen 5) bound it. C++ probe, Zen 5, one thread, matrix in L3:
// 4096x4096 at 10 % 295 -> 158 us; 512x4096 (in L2) 37 -> 23 us. Four chains:
// 3 % faster than two. With SellRef::stream the layout is prefetched
// kSellStreamAhead steps ahead (fc6 at 10 %, probe: 2.5-2.7 ms without,
// 1.9-2.1 with 2048 floats ahead, 2.0-2.1 with 1024). Built with -mavx512f.
#include <immintrin.h>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

template <bool Stream>
inline __m512 step(SellRef a, const float* x, size_t s, __m512 acc) {
  if (Stream) {  // one line of values per step, of indices per 4 steps, of windows per 16
    _mm_prefetch(reinterpret_cast<const char*>(a.values + (s + kSellStreamAhead) * kSellLanes), _MM_HINT_T0);
    if (s % 4 == 0)
      _mm_prefetch(reinterpret_cast<const char*>(a.index + (s + kSellStreamAhead) * kSellLanes), _MM_HINT_T0);
    if (s % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(a.window + s + kSellStreamAhead), _MM_HINT_T0);
  }
  const float* w = x + a.window[s];
  const __m512i index =
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.index + s * kSellLanes)));
  const __m512 xs = _mm512_permutex2var_ps(_mm512_loadu_ps(w), index, _mm512_loadu_ps(w + 16));
  return _mm512_fmadd_ps(_mm512_loadu_ps(a.values + s * kSellLanes), xs, acc);
}

template <bool Stream>
void sellmv(SellRef a, const float* x, Epilogue ep, size_t row_begin, size_t row_end, float* y) {
  for (size_t g = row_begin / kSellLanes; g * kSellLanes < row_end; ++g) {
    size_t s = a.group_start[g];
    const size_t end = a.group_start[g + 1];
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (; s + 4 <= end; s += 4) {
      c0 = step<Stream>(a, x, s, c0);
      c1 = step<Stream>(a, x, s + 1, c1);
      c2 = step<Stream>(a, x, s + 2, c2);
      c3 = step<Stream>(a, x, s + 3, c3);
    }
    for (; s < end; ++s) c0 = step<Stream>(a, x, s, c0);
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

}  // namespace

void f32_sellmv_avx512(SellRef a, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
                       float* y) {
  if (row_begin >= row_end) return;
  if (a.stream)
    sellmv<true>(a, x, ep, row_begin, row_end, y);
  else
    sellmv<false>(a, x, ep, row_begin, row_end, y);
}

}  // namespace sparsenet
