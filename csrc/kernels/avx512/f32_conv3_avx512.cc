// Direct sparse convolution for 3-wide kernels with aligned loads (AVX-512F).
//
// The csrmm tile (f32_csrmm_avx2.cc) loads each nonzero's 64 input floats from
// x + offset, offsets that fall anywhere in a cache line (the padded width and
// the kernel column j shift them): about half of its 32-byte loads straddle two
// lines, which costs the L1 bandwidth that tile is bound by (with every load
// aligned, the same VGG layers ran 12-20 % faster).
// Here the offsets leave j out (a multiple of 8 floats, the padded rows being
// a multiple of 8 apart), a row's nonzeros come grouped by j, and each group
// accumulates in its own 4 zmm registers over the same aligned 64 floats:
//   z_j[q] = sum_{k in group j} values[k] * x[offsets[k] + q],   q in the tile.
// Output position p takes z_0[p] + z_1[p + 1] + z_2[p + 2], so the three sets
// are combined with lane shifts (valignd) into the 66 positions
// [c0 - 2, c0 + 64) of the tile [c0, c0 + 64), see kernels.h for what is
// final when. Zen 4, one thread, a VGG conv4_2-like panel at 10 % in L1
// (C++ probe): 60 GFLOP/s for the AVX2 csrmm tile, 73 here net of the wider
// rows (a 16-lane csrmm tile without the grouping: 63-67). Whole VGG-16
// layers at Han's densities against the csrmm tile, bench medians in
// alternating processes (docs/performance.md): 1.04-1.30x on one thread,
// 0.97-1.69x on two; conv4_2 at 10 %: 1.06x / 1.19x.
// Built with -mavx2 -mfma -mavx512f -mavx512vl only.
#include <immintrin.h>

#include <algorithm>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

inline void group(const float* values, const uint32_t* offsets, uint32_t begin, uint32_t end,
                  const float* x, __m512& a0, __m512& a1, __m512& a2, __m512& a3) {
  for (uint32_t k = begin; k < end; ++k) {
    const float* xk = x + offsets[k];
    const __m512 w = _mm512_set1_ps(values[k]);
    a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk), a0);
    a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 16), a1);
    a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 32), a2);
    a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xk + 48), a3);
  }
}

// Lanes of [hi : lo] from `shift` on: shift(hi, lo, 15) = lo[15], hi[0..14].
template <int kShift>
inline __m512 shifted(__m512 hi, __m512 lo) {
  return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), kShift));
}

// y[l] = v[l] (+ y[l] on the lanes of `accumulate`), then the epilogue on the
// lanes of `finish`; only the lanes of `mask` are read and written.
inline void store(float* y, __mmask16 mask, __mmask16 accumulate, __mmask16 finish, __m512 v,
                  const Epilogue& ep, size_t row) {
  v = _mm512_mask_add_ps(v, accumulate, v, _mm512_maskz_loadu_ps(accumulate & mask, y));
  if (ep.bias) v = _mm512_mask_add_ps(v, finish, v, _mm512_set1_ps(ep.bias[row]));
  if (ep.relu) v = _mm512_mask_max_ps(v, finish, v, _mm512_setzero_ps());
  _mm512_mask_storeu_ps(y, mask, v);
}

}  // namespace

void f32_conv3_avx512(const float* values, const uint32_t* offsets, const uint32_t* groups,
                      size_t stride, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
                      size_t col_begin, size_t col_end, float* y, size_t ldy) {
  for (size_t c0 = col_begin; c0 < col_end; c0 += 64) {
    // Lanes to store: positions c0 - 2 .. min(c0 + 64, col_end) - 1.
    const size_t valid = std::min<size_t>(64, col_end - c0) + 2;
    __mmask16 lanes[5];
    for (size_t v = 0; v < 5; ++v) {
      const size_t first = 16 * v;
      lanes[v] = valid <= first ? 0 : valid - first >= 16 ? 0xffff : static_cast<__mmask16>((1u << (valid - first)) - 1);
    }
    const float* xc = x + c0;
    for (size_t r = row_begin; r < row_end; ++r) {
      const uint32_t g0 = groups[r], g1 = groups[stride + r], g2 = groups[2 * stride + r],
                     g3 = groups[3 * stride + r];
      __m512 p0 = _mm512_setzero_ps(), p1 = p0, p2 = p0, p3 = p0;
      __m512 q0 = p0, q1 = p0, q2 = p0, q3 = p0;
      __m512 u0 = p0, u1 = p0, u2 = p0, u3 = p0;
      group(values, offsets, g0, g1, xc, p0, p1, p2, p3);
      group(values, offsets, g1, g2, xc, q0, q1, q2, q3);
      group(values, offsets, g2, g3, xc, u0, u1, u2, u3);
      const __m512 zero = _mm512_setzero_ps();
      // Position c0 - 2 + 16 v + l: u_v[l] + q_v[l - 1] + p_v[l - 2].
      const __m512 w0 = _mm512_add_ps(u0, _mm512_add_ps(shifted<15>(q0, zero), shifted<14>(p0, zero)));
      const __m512 w1 = _mm512_add_ps(u1, _mm512_add_ps(shifted<15>(q1, q0), shifted<14>(p1, p0)));
      const __m512 w2 = _mm512_add_ps(u2, _mm512_add_ps(shifted<15>(q2, q1), shifted<14>(p2, p1)));
      const __m512 w3 = _mm512_add_ps(u3, _mm512_add_ps(shifted<15>(q3, q2), shifted<14>(p3, p2)));
      const __m512 w4 = _mm512_add_ps(shifted<15>(zero, q3), shifted<14>(zero, p3));
      // Positions c0 - 2 and c0 - 1 (the first two lanes) always add to what
      // the tile before began; the rest add only with ep.accumulate. The
      // epilogue finishes the positions below c0 + 62; c0 + 62 and c0 + 63
      // still wait for z_1 / z_2 of the next tile.
      float* yr = y + r * ldy + c0 - 2;
      const __mmask16 add = ep.accumulate ? 0xffff : 0;
      const __mmask16 finish = ep.bias || ep.relu ? 0xffff : 0;
      store(yr, lanes[0], add | 0x3, finish, w0, ep, r);
      store(yr + 16, lanes[1], add, finish, w1, ep, r);
      store(yr + 32, lanes[2], add, finish, w2, ep, r);
      store(yr + 48, lanes[3], add, finish, w3, ep, r);
      store(yr + 64, lanes[4], add, 0, w4, ep, r);
    }
  }
}

}  // namespace sparsenet
