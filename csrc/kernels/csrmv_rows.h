// The csrmv row loop shared by the AVX2 and the AVX-512 kernels (see
// f32_csrmv_avx2.cc): 32 nonzeros per step in four 8-lane accumulators, then
// 16, then 8, then the row's scalar tail. Four chains rather than two keep more
// x fetches in flight (Zen 4, x by masked broadcasts, 4096x4096 matrix in L3,
// one thread, C++ probe: 350 -> 328 us at 10 %, 146 -> 136 us at 4 %; six or
// eight chains no faster). With a.stream (the matrix is not expected in cache)
// the value and index streams are prefetched kStreamAhead nonzeros ahead;
// without, the loop has no prefetches and no branch for them, which frees load
// slots (Zen 4, 4096x4096 at 10 %, about 10 MB, one thread, C++ probe: 384 ->
// 352 us with the matrix in L3, 516 -> 487 us after evicting it; but 8192x4096
// at 10 % 814 -> 905 us and 4096x4096 at 30 % 1.20 -> 1.68 ms warm: larger
// matrices need the prefetches). `load8(x, c)` fetches the eight x values of
// indices c[0..7]. Included only by kernel files, each compiled with its own
// ISA flags: everything here has internal linkage, so no TU's copy is linked
// into another (a shared inline definition could run AVX-512 code on a CPU
// without it).
#pragma once

#include <immintrin.h>

#include "../src/kernels.h"

namespace sparsenet {
namespace {

inline float horizontal_sum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

constexpr size_t kStreamAhead = 1024;  // nonzeros: 4 KiB of values, 2-4 KiB of indices

template <bool Stream, typename Index, typename Load8>
inline void csrmv_rows_impl(CsrRef<Index> a, const float* x, Epilogue ep, size_t row_begin,
                            size_t row_end, float* y, Load8 load8) {
  // Prefetch only inside the rows this call reads.
  const size_t stream_end = Stream && row_end > row_begin ? a.row_ptr[row_end] : 0;
  for (size_t r = row_begin; r < row_end; ++r) {
    size_t k = a.row_ptr[r];
    const size_t end = a.row_ptr[r + 1];
    __m256 acc0 = _mm256_setzero_ps();
    __m256 acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps();
    __m256 acc3 = _mm256_setzero_ps();
    for (; k + 32 <= end; k += 32) {
      if (Stream && k + kStreamAhead < stream_end) {
        const char* v = reinterpret_cast<const char*>(a.values + k + kStreamAhead);
        const char* c = reinterpret_cast<const char*>(a.col_idx + k + kStreamAhead);
        _mm_prefetch(v, _MM_HINT_T0);  // 128 bytes of values, 64 or 128 of indices
        _mm_prefetch(v + 64, _MM_HINT_T0);
        _mm_prefetch(c, _MM_HINT_T0);
        if (sizeof(Index) > 2) _mm_prefetch(c + 64, _MM_HINT_T0);
      }
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k), load8(x, a.col_idx + k), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k + 8), load8(x, a.col_idx + k + 8), acc1);
      acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k + 16), load8(x, a.col_idx + k + 16), acc2);
      acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k + 24), load8(x, a.col_idx + k + 24), acc3);
    }
    if (k + 16 <= end) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k), load8(x, a.col_idx + k), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k + 8), load8(x, a.col_idx + k + 8), acc1);
      k += 16;
    }
    if (k + 8 <= end) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k), load8(x, a.col_idx + k), acc0);
      k += 8;
    }
    float acc = horizontal_sum(_mm256_add_ps(_mm256_add_ps(acc0, acc2), _mm256_add_ps(acc1, acc3)));
    if (ep.accumulate) acc += y[r];
    for (; k < end; ++k) acc += a.values[k] * x[a.col_idx[k]];
    y[r] = apply_epilogue(acc, ep, r);
  }
}

template <typename Index, typename Load8>
inline void csrmv_rows(CsrRef<Index> a, const float* x, Epilogue ep, size_t row_begin,
                       size_t row_end, float* y, Load8 load8) {
  if (a.stream)
    csrmv_rows_impl<true>(a, x, ep, row_begin, row_end, y, load8);
  else
    csrmv_rows_impl<false>(a, x, ep, row_begin, row_end, y, load8);
}

}  // namespace
}  // namespace sparsenet
