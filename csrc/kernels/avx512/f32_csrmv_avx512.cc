// csrmv_u16_l1 (x in L1, fetched by loads) with AVX-512VL, on 8-lane vectors
// as the AVX2 kernel: x values land in their lanes by merge-masked broadcasts
// from memory (vbroadcastss ymm{k}, m32) instead of movss + insertps, which
// keeps them off the shuffle unit. Two chains of four (lanes 0-3 and 4-7,
// joined by one blend) hide the merges' latency. The same lanes, so the same
// sums bit for bit as the AVX2 kernels. C++ probe on Zen 4, 4096x4096 at 10 %,
// one thread: 421 -> 385 us; at 4 % 175 -> 159 us; one chain of eight 392 us,
// a 16-lane zmm version 533 us. Chosen at run time where the CPU has
// AVX-512F and VL (runtime.cc). Built with -mavx2 -mfma -mavx512f -mavx512vl only.
#include <immintrin.h>

#include <cstring>

#include "../../src/kernels.h"
#include "../csrmv_rows.h"

namespace sparsenet {
namespace {

inline __m256 load8(const float* x, const uint16_t* c) {
  uint64_t a, b;
  std::memcpy(&a, c, sizeof a);
  std::memcpy(&b, c + 4, sizeof b);
  const auto at = [x](uint64_t q, int shift) { return _mm_load_ss(x + ((q >> shift) & 0xffff)); };
  __m256 lo = _mm256_broadcast_ss(x + (a & 0xffff));
  __m256 hi = _mm256_broadcast_ss(x + (b & 0xffff));
  lo = _mm256_mask_broadcastss_ps(lo, 0x02, at(a, 16));
  hi = _mm256_mask_broadcastss_ps(hi, 0x20, at(b, 16));
  lo = _mm256_mask_broadcastss_ps(lo, 0x04, at(a, 32));
  hi = _mm256_mask_broadcastss_ps(hi, 0x40, at(b, 32));
  lo = _mm256_mask_broadcastss_ps(lo, 0x08, at(a, 48));
  hi = _mm256_mask_broadcastss_ps(hi, 0x80, at(b, 48));
  return _mm256_blend_ps(lo, hi, 0xf0);
}

}  // namespace

void f32_csrmv_u16_l1_avx512(CsrRef<uint16_t> a, const float* x, Epilogue ep, size_t row_begin,
                             size_t row_end, float* y) {
  csrmv_rows(a, x, ep, row_begin, row_end, y,
             [](const float* x_, const uint16_t* c) { return load8(x_, c); });
}

}  // namespace sparsenet
