// f32 CSR matrix x dense vector, AVX2+FMA.
// Per row (csrmv_rows, ../csrmv_rows.h): 32 nonzeros per step in four 8-lane
// accumulators; the row's last (nnz mod 8) terms are added in scalar. Eight x values are fetched either with
// one vgatherdps (16- or 32-bit column indices widened to 32 bits) or, in the
// `_l1` variant, with eight scalar loads merged by insertps: the same lanes, so
// the same sums bit for bit. Which is faster depends on the core and on where x
// lives (runtime.cc measures it once). Both prefetch the values and indices
// kStreamAhead nonzeros ahead when a.stream (the matrix is larger than half
// the last-level cache): the x loads fill the core's load queue, so the
// out-of-order window alone keeps too few stream misses in flight (C++ probe on
// Zen 3, one thread: 25088x4096 at 4-10 % 4-6 % faster with gathers, 12-15 %
// with loads; 4096x4096 at 30 % with loads 17 %; matrices in cache unchanged).
// Built with -mavx2 -mfma only.
#include <immintrin.h>

#include <cstring>

#include "../../src/kernels.h"
#include "../csrmv_rows.h"

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

}  // namespace

void f32_csrmv_u16_avx2(CsrRef<uint16_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                        float* y) {
  csrmv_rows(a, x, ep, rb, re, y, [](const float* x_, const uint16_t* c) { return gather8(x_, c); });
}
void f32_csrmv_u32_avx2(CsrRef<uint32_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                        float* y) {
  csrmv_rows(a, x, ep, rb, re, y, [](const float* x_, const uint32_t* c) { return gather8(x_, c); });
}
void f32_csrmv_u16_l1_avx2(CsrRef<uint16_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                           float* y) {
  csrmv_rows(a, x, ep, rb, re, y, [](const float* x_, const uint16_t* c) { return load8(x_, c); });
}

}  // namespace sparsenet
