// f32 CSR matrix x dense vector, AVX2+FMA.
// Per row: 16 nonzeros per step in two 8-lane accumulators; the row's last
// (nnz mod 8) terms are added in scalar. Eight x values are fetched either with
// one vgatherdps (16- or 32-bit column indices widened to 32 bits) or, in the
// `_l1` variant, with eight scalar loads merged by insertps: the same lanes, so
// the same sums bit for bit. Which is faster depends on the core and on where x
// lives (runtime.cc measures it once). Both prefetch the values and indices
// kStreamAhead nonzeros ahead: the x loads fill the core's load queue, so the
// out-of-order window alone keeps too few stream misses in flight (C++ probe on
// Zen 3, one thread: 25088x4096 at 4-10 % 4-6 % faster with gathers, 12-15 %
// with loads; 4096x4096 at 30 % with loads 17 %; matrices in cache unchanged).
// Built with -mavx2 -mfma only.
#include <immintrin.h>

#include <cstring>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

inline __m256i load_index8(const uint16_t* p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load_index8(const uint32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

template <typename Index>
inline __m256 gather8(const float* x, const Index* c) {
  return _mm256_i32gather_ps(x, load_index8(c), 4);
}

// 16-bit indices: four per 64-bit load, taken apart with shifts. Eight
// index loads per eight x loads left this kernel load-port bound with x in L1
// (Zen 4, 4096x4096 at 10 %: 0.47 -> 0.43 ms in a C++ probe).
inline __m256 load8(const float* x, const uint16_t* c) {
  uint64_t a, b;
  std::memcpy(&a, c, sizeof a);
  std::memcpy(&b, c + 4, sizeof b);
  const auto at = [x](uint64_t q, int shift) { return _mm_load_ss(x + ((q >> shift) & 0xffff)); };
  __m128 lo = at(a, 0);
  lo = _mm_insert_ps(lo, at(a, 16), 0x10);
  lo = _mm_insert_ps(lo, at(a, 32), 0x20);
  lo = _mm_insert_ps(lo, at(a, 48), 0x30);
  __m128 hi = at(b, 0);
  hi = _mm_insert_ps(hi, at(b, 16), 0x10);
  hi = _mm_insert_ps(hi, at(b, 32), 0x20);
  hi = _mm_insert_ps(hi, at(b, 48), 0x30);
  return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

template <typename Index>
inline __m256 load8(const float* x, const Index* c) {
  __m128 lo = _mm_load_ss(x + c[0]);
  lo = _mm_insert_ps(lo, _mm_load_ss(x + c[1]), 0x10);
  lo = _mm_insert_ps(lo, _mm_load_ss(x + c[2]), 0x20);
  lo = _mm_insert_ps(lo, _mm_load_ss(x + c[3]), 0x30);
  __m128 hi = _mm_load_ss(x + c[4]);
  hi = _mm_insert_ps(hi, _mm_load_ss(x + c[5]), 0x10);
  hi = _mm_insert_ps(hi, _mm_load_ss(x + c[6]), 0x20);
  hi = _mm_insert_ps(hi, _mm_load_ss(x + c[7]), 0x30);
  return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

inline float horizontal_sum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

constexpr size_t kStreamAhead = 1024;  // nonzeros: 4 KiB of values, 2-4 KiB of indices

template <bool kGather, typename Index>
void csrmv(CsrRef<Index> a, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
           float* y) {
  // Prefetch only inside the rows this call reads.
  const size_t stream_end = row_end > row_begin ? a.row_ptr[row_end] : 0;
  for (size_t r = row_begin; r < row_end; ++r) {
    size_t k = a.row_ptr[r];
    const size_t end = a.row_ptr[r + 1];
    __m256 acc0 = _mm256_setzero_ps();
    __m256 acc1 = _mm256_setzero_ps();
    for (; k + 16 <= end; k += 16) {
      if (k + kStreamAhead < stream_end) {
        _mm_prefetch(reinterpret_cast<const char*>(a.values + k + kStreamAhead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(a.col_idx + k + kStreamAhead), _MM_HINT_T0);
      }
      const __m256 x0 = kGather ? gather8(x, a.col_idx + k) : load8(x, a.col_idx + k);
      const __m256 x1 = kGather ? gather8(x, a.col_idx + k + 8) : load8(x, a.col_idx + k + 8);
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k), x0, acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k + 8), x1, acc1);
    }
    if (k + 8 <= end) {
      const __m256 x0 = kGather ? gather8(x, a.col_idx + k) : load8(x, a.col_idx + k);
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + k), x0, acc0);
      k += 8;
    }
    float acc = horizontal_sum(_mm256_add_ps(acc0, acc1));
    if (ep.accumulate) acc += y[r];
    for (; k < end; ++k) acc += a.values[k] * x[a.col_idx[k]];
    y[r] = apply_epilogue(acc, ep, r);
  }
}

}  // namespace

void f32_csrmv_u16_avx2(CsrRef<uint16_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                        float* y) {
  csrmv<true>(a, x, ep, rb, re, y);
}
void f32_csrmv_u32_avx2(CsrRef<uint32_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                        float* y) {
  csrmv<true>(a, x, ep, rb, re, y);
}
void f32_csrmv_u16_l1_avx2(CsrRef<uint16_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                           float* y) {
  csrmv<false>(a, x, ep, rb, re, y);
}

}  // namespace sparsenet
