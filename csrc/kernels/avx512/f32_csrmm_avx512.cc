// f32 CSR matrix x dense matrix, AVX-512F: the AVX2 kernel's tiles
// (f32_csrmm_avx2.cc) in 16-lane registers. Each nonzero's weight is
// broadcast against contiguous 16-float runs of its X row. Output tiles of
// one row: 128 columns in eight accumulators (eight FMA chains); 64 columns
// (batch 64) in four, doubled to eight by alternating even and odd nonzeros
// so that the chains overlap; 32 columns the same way; then 16 columns at a
// time in one register with four chains, the last masked. On a core with 512-bit FMA units (Zen 5) the AVX2 kernel is
// bound by its FMAs at eight ymm a nonzero for 64 columns, this one by its
// loads at four zmm. With ep.accumulate the accumulators start from Y; with
// a.prefetch the 64- and 128-column loops prefetch the X rows of the
// nonzeros 16 ahead (see the AVX2 kernel). Reads no X column outside
// [col_begin, col_end). Built with -mavx2 -mfma -mavx512f -mavx512vl only.
#include <immintrin.h>

#include <algorithm>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

inline __m512 epilogue(__m512 acc, Epilogue ep, size_t row) {
  if (ep.bias) acc = _mm512_add_ps(acc, _mm512_set1_ps(ep.bias[row]));
  if (ep.relu) acc = _mm512_max_ps(acc, _mm512_setzero_ps());
  return acc;
}

constexpr size_t kPrefetchAhead = 16;  // nonzeros

template <typename Index>
inline void prefetch_row(CsrRef<Index> a, const float* x, size_t ldx, size_t c, size_t k, size_t lines) {
  const char* p = reinterpret_cast<const char*>(x + static_cast<size_t>(a.col_idx[k]) * ldx + c);
  for (size_t l = 0; l < lines; ++l) _mm_prefetch(p + 64 * l, _MM_HINT_T0);
}

template <bool kPrefetch, typename Index>
void csrmm(CsrRef<Index> a, const float* x, size_t ldx, Epilogue ep, size_t row_begin,
           size_t row_end, size_t col_begin, size_t col_end, float* y, size_t ldy) {
  const __m512 zero = _mm512_setzero_ps();
  for (size_t r = row_begin; r < row_end; ++r) {
    const size_t kb = a.row_ptr[r];
    const size_t ke = a.row_end ? a.row_end[r] : a.row_ptr[r + 1];
    float* yr = y + r * ldy;
    const bool acc = ep.accumulate;
    const auto row_of = [&](size_t k, size_t c) { return x + static_cast<size_t>(a.col_idx[k]) * ldx + c; };
    size_t c = col_begin;
    for (; c + 128 <= col_end; c += 128) {
      // Eight named accumulators: GCC keeps an array of __m512 in memory.
      __m512 a0 = acc ? _mm512_loadu_ps(yr + c) : zero, a1 = acc ? _mm512_loadu_ps(yr + c + 16) : zero;
      __m512 a2 = acc ? _mm512_loadu_ps(yr + c + 32) : zero, a3 = acc ? _mm512_loadu_ps(yr + c + 48) : zero;
      __m512 a4 = acc ? _mm512_loadu_ps(yr + c + 64) : zero, a5 = acc ? _mm512_loadu_ps(yr + c + 80) : zero;
      __m512 a6 = acc ? _mm512_loadu_ps(yr + c + 96) : zero, a7 = acc ? _mm512_loadu_ps(yr + c + 112) : zero;
      for (size_t k = kb; k < ke; ++k) {
        if (kPrefetch && k + kPrefetchAhead < ke) prefetch_row(a, x, ldx, c, k + kPrefetchAhead, 8);
        const float* xk = row_of(k, c);
        const __m512 w = _mm512_set1_ps(a.values[k]);
        a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk), a0);
        a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 16), a1);
        a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 32), a2);
        a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 48), a3);
        a4 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 64), a4);
        a5 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 80), a5);
        a6 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 96), a6);
        a7 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 112), a7);
      }
      _mm512_storeu_ps(yr + c, epilogue(a0, ep, r));
      _mm512_storeu_ps(yr + c + 16, epilogue(a1, ep, r));
      _mm512_storeu_ps(yr + c + 32, epilogue(a2, ep, r));
      _mm512_storeu_ps(yr + c + 48, epilogue(a3, ep, r));
      _mm512_storeu_ps(yr + c + 64, epilogue(a4, ep, r));
      _mm512_storeu_ps(yr + c + 80, epilogue(a5, ep, r));
      _mm512_storeu_ps(yr + c + 96, epilogue(a6, ep, r));
      _mm512_storeu_ps(yr + c + 112, epilogue(a7, ep, r));
    }
    for (; c + 64 <= col_end; c += 64) {
      __m512 a0 = acc ? _mm512_loadu_ps(yr + c) : zero, a1 = acc ? _mm512_loadu_ps(yr + c + 16) : zero;
      __m512 a2 = acc ? _mm512_loadu_ps(yr + c + 32) : zero, a3 = acc ? _mm512_loadu_ps(yr + c + 48) : zero;
      __m512 b0 = zero, b1 = zero, b2 = zero, b3 = zero;
      size_t k = kb;
      for (; k + 2 <= ke; k += 2) {
        if (kPrefetch) {
          for (size_t j = k + kPrefetchAhead; j < std::min(k + kPrefetchAhead + 2, ke); ++j)
            prefetch_row(a, x, ldx, c, j, 4);
        }
        const float* xa = row_of(k, c);
        const float* xb = row_of(k + 1, c);
        const __m512 va = _mm512_set1_ps(a.values[k]);
        const __m512 vb = _mm512_set1_ps(a.values[k + 1]);
        a0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa), a0);
        a1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 16), a1);
        a2 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 32), a2);
        a3 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 48), a3);
        b0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(xb), b0);
        b1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(xb + 16), b1);
        b2 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(xb + 32), b2);
        b3 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(xb + 48), b3);
      }
      if (k < ke) {
        const float* xa = row_of(k, c);
        const __m512 va = _mm512_set1_ps(a.values[k]);
        a0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa), a0);
        a1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 16), a1);
        a2 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 32), a2);
        a3 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 48), a3);
      }
      _mm512_storeu_ps(yr + c, epilogue(_mm512_add_ps(a0, b0), ep, r));
      _mm512_storeu_ps(yr + c + 16, epilogue(_mm512_add_ps(a1, b1), ep, r));
      _mm512_storeu_ps(yr + c + 32, epilogue(_mm512_add_ps(a2, b2), ep, r));
      _mm512_storeu_ps(yr + c + 48, epilogue(_mm512_add_ps(a3, b3), ep, r));
    }
    // The 64-column loop again on two registers. Written out, not as one
    // template over arrays of registers: GCC kept those arrays on the stack,
    // and fc7 at 10 % (batch 64, one thread, bench/ab.py) ran 0.92x.
    for (; c + 32 <= col_end; c += 32) {
      __m512 a0 = acc ? _mm512_loadu_ps(yr + c) : zero, a1 = acc ? _mm512_loadu_ps(yr + c + 16) : zero;
      __m512 b0 = zero, b1 = zero;
      size_t k = kb;
      for (; k + 2 <= ke; k += 2) {
        const float* xa = row_of(k, c);
        const float* xb = row_of(k + 1, c);
        const __m512 va = _mm512_set1_ps(a.values[k]);
        const __m512 vb = _mm512_set1_ps(a.values[k + 1]);
        a0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa), a0);
        a1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 16), a1);
        b0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(xb), b0);
        b1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(xb + 16), b1);
      }
      if (k < ke) {
        const float* xa = row_of(k, c);
        const __m512 va = _mm512_set1_ps(a.values[k]);
        a0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa), a0);
        a1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(xa + 16), a1);
      }
      _mm512_storeu_ps(yr + c, epilogue(_mm512_add_ps(a0, b0), ep, r));
      _mm512_storeu_ps(yr + c + 16, epilogue(_mm512_add_ps(a1, b1), ep, r));
    }
    // 16 columns, then the masked rest: one register, four chains (nonzeros
    // k, k + 1, k + 2, k + 3), the whole tile at batches below 16.
    for (; c < col_end; c += 16) {
      const __mmask16 mask = col_end - c >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (col_end - c)) - 1u);
      __m512 a0 = acc ? _mm512_maskz_loadu_ps(mask, yr + c) : zero, a1 = zero, a2 = zero, a3 = zero;
      const auto load = [&](size_t k) { return _mm512_maskz_loadu_ps(mask, row_of(k, c)); };
      size_t k = kb;
      for (; k + 4 <= ke; k += 4) {
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(a.values[k]), load(k), a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(a.values[k + 1]), load(k + 1), a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(a.values[k + 2]), load(k + 2), a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(a.values[k + 3]), load(k + 3), a3);
      }
      for (; k < ke; ++k) a0 = _mm512_fmadd_ps(_mm512_set1_ps(a.values[k]), load(k), a0);
      _mm512_mask_storeu_ps(yr + c, mask, epilogue(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), ep, r));
    }
  }
}

}  // namespace

void f32_csrmm_u16_avx512(CsrRef<uint16_t> a, const float* x, size_t ldx, Epilogue ep, size_t rb,
                          size_t re, size_t cb, size_t ce, float* y, size_t ldy) {
  (a.prefetch ? csrmm<true, uint16_t> : csrmm<false, uint16_t>)(a, x, ldx, ep, rb, re, cb, ce, y, ldy);
}
void f32_csrmm_u32_avx512(CsrRef<uint32_t> a, const float* x, size_t ldx, Epilogue ep, size_t rb,
                          size_t re, size_t cb, size_t ce, float* y, size_t ldy) {
  (a.prefetch ? csrmm<true, uint32_t> : csrmm<false, uint32_t>)(a, x, ldx, ep, rb, re, cb, ce, y, ldy);
}

}  // namespace sparsenet
