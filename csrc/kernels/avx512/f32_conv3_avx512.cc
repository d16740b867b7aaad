// Direct sparse convolution for 3-wide kernels with aligned loads (AVX-512F).
//
// The csrmm tile (f32_csrmm_avx2.cc) loads each nonzero's 64 input floats from
// x + offset, offsets that fall anywhere in a cache line (the padded width and
// the kernel column j shift them): about half of its 32-byte loads straddle two
// lines, which costs the L1 bandwidth that tile is bound by (with every load
// aligned, the same VGG layers ran 12-20 % faster).
// Here the offsets leave j out (a multiple of 8 floats, the padded rows being
// a multiple of 8 apart), and each kernel column j accumulates in its own 4 zmm
// registers over the same aligned 64 floats:
//   z_j[q] = sum over entries e holding j of w(e, j) * x[offsets[e] + q],   q in the tile.
// A row's entries come grouped by the columns they hold (kernels.h): an entry
// holding two or three columns loads its run once for all of them. At Han's
// VGG-16 densities (22-58 %) 39-82 % of the nonzeros share a kernel row with
// another (1 - (1 - d)^2 at random), so the loads, which on Zen 4 run at about
// 0.8 zmm per cycle over distinct lines against one FMA per cycle, drop by
// 1.26-1.88x (3d / (1 - (1 - d)^3)).
// Output position p takes z_0[p] + z_1[p + 1] + z_2[p + 2], so the three sets
// are combined with lane shifts (valignd) into the 66 positions
// [c0 - 2, c0 + 64) of the tile [c0, c0 + 64), see kernels.h for what is
// final when. Zen 4, one thread, VGG-16's 3x3 layers at Han's densities
// (bench/ab.py, lowest lower-quartile times in alternating processes): 1.14x
// faster in all than with a load per nonzero (174 -> 153 ms; conv3_1 at 53 %
// 1.26x, conv4_1 at 32 % 1.03x), 1.06x at two threads; conv4_2 at 10 %, where
// few kernel rows hold two nonzeros, 1.02x. A C++ probe of the loop alone:
// 86 GFLOP/s when each FMA loads its own line of L1, 105 when two FMAs load
// each line, 107 for FMAs on registers. Two entries at a time in
// the one-column groups (eight FMA chains instead of four) measured 0.85-1.13x
// per layer, slower in all; 48 KiB panels 0.86-1.05x.
// Where a call spans more than one tile, two are computed at once: 128
// positions in 24 zmm accumulators, each entry's weights broadcast once for
// both, the row's fixed cost paid once. Conv2d hands it such calls on the
// 28-wide maps (layers.cc, kConv3DoubleTileRows): Zen 4, C++ probe 1.02-1.10x
// on conv4_2 at 5-27 %, in whole layers 1.02-1.06x; 0.97x on conv3_2 (rows of
// 64). On every map where 512-bit FMAs run at full rate (Zen 5), whose
// one-column entries are bound by loads: 1.03-1.12x per layer there.
// Built with -mavx2 -mfma -mavx512f -mavx512vl only.
#include <immintrin.h>

#include <algorithm>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

// 16 * T positions of z_j in T zmm registers.
template <int T>
struct Tile {
  __m512 a[T];
};

// The entries [begin, end) of one group, holding the columns of kColumns (bit
// j for column j), their weights from w on; returns the weights' end.
template <unsigned kColumns, int T>
inline const float* group(const float* w, const uint32_t* offsets, uint32_t begin, uint32_t end,
                          const float* x, Tile<T>& p, Tile<T>& q, Tile<T>& u) {
  constexpr bool k0 = kColumns & 1, k1 = kColumns & 2, k2 = kColumns & 4;
  constexpr int kWidth = k0 + k1 + k2;
  for (uint32_t e = begin; e < end; ++e, w += kWidth) {
    const float* xe = x + offsets[e];
    int at = 0;
    __m512 v0, v1, v2;
    if (k0) v0 = _mm512_set1_ps(w[at++]);
    if (k1) v1 = _mm512_set1_ps(w[at++]);
    if (k2) v2 = _mm512_set1_ps(w[at]);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 xt = _mm512_loadu_ps(xe + 16 * t);
      if (k0) p.a[t] = _mm512_fmadd_ps(v0, xt, p.a[t]);
      if (k1) q.a[t] = _mm512_fmadd_ps(v1, xt, q.a[t]);
      if (k2) u.a[t] = _mm512_fmadd_ps(v2, xt, u.a[t]);
    }
  }
  return w;
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

// The tile of 16 * T positions [c0, c0 + 16 T) for rows [row_begin, row_end):
// kernels.h's 64-position tiles two at a time where T = 8, which leaves the
// same sums in y (the first tile's last two positions, which the second
// finishes, come out whole at once).
template <int T>
void tile(const float* values, const uint32_t* offsets, const uint32_t* groups, size_t stride,
          const float* x, const Epilogue& ep, size_t row_begin, size_t row_end, size_t c0, size_t col_end,
          float* y, size_t ldy, size_t period) {
  constexpr size_t kPositions = 16 * T;
  // With a period, the lanes of z_0 and z_2 to keep (kernels.h): z_0 not
  // where (c0 + l + 1) % period == 0, z_2 not where (c0 + l) % period == 0.
  __mmask16 keep0[T], keep2[T];
  for (int t = 0; t < T; ++t) keep0[t] = keep2[t] = 0xffff;
  if (period > 0) {
    for (size_t l = (period - c0 % period) % period; l < kPositions; l += period)
      keep2[l / 16] &= static_cast<__mmask16>(~(1u << (l % 16)));
    for (size_t l = (2 * period - 1 - c0 % period) % period; l < kPositions; l += period)
      keep0[l / 16] &= static_cast<__mmask16>(~(1u << (l % 16)));
  }
  // Lanes to store: positions c0 - 2 .. min(c0 + 16 T, col_end) - 1.
  const size_t valid = std::min(kPositions, col_end - c0) + 2;
  __mmask16 lanes[T + 1];
  for (size_t v = 0; v <= T; ++v) {
    const size_t first = 16 * v;
    lanes[v] = valid <= first ? 0 : valid - first >= 16 ? 0xffff : static_cast<__mmask16>((1u << (valid - first)) - 1);
  }
  const __mmask16 add = ep.accumulate ? 0xffff : 0;
  const __mmask16 finish = ep.bias || ep.relu ? 0xffff : 0;
  const float* xc = x + c0;
  for (size_t r = row_begin; r < row_end; ++r) {
    const uint32_t* g = groups + r;
    Tile<T> p, q, u;
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) p.a[t] = q.a[t] = u.a[t] = _mm512_setzero_ps();
    const float* w = values + g[8 * stride];
    w = group<1>(w, offsets, g[0], g[stride], xc, p, q, u);
    w = group<2>(w, offsets, g[stride], g[2 * stride], xc, p, q, u);
    w = group<4>(w, offsets, g[2 * stride], g[3 * stride], xc, p, q, u);
    if (g[3 * stride] != g[7 * stride]) {  // joint entries (none in sparser layers' plans)
      w = group<3>(w, offsets, g[3 * stride], g[4 * stride], xc, p, q, u);
      w = group<5>(w, offsets, g[4 * stride], g[5 * stride], xc, p, q, u);
      w = group<6>(w, offsets, g[5 * stride], g[6 * stride], xc, p, q, u);
      group<7>(w, offsets, g[6 * stride], g[7 * stride], xc, p, q, u);
    }
    if (period > 0) {
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        p.a[t] = _mm512_maskz_mov_ps(keep0[t], p.a[t]);
        u.a[t] = _mm512_maskz_mov_ps(keep2[t], u.a[t]);
      }
    }
    // Position c0 - 2 + 16 t + l: u_t[l] + q_t[l - 1] + p_t[l - 2]. Positions
    // c0 - 2 and c0 - 1 (the first two lanes) always add to what the tile
    // before began; the rest add only with ep.accumulate. The epilogue
    // finishes the positions below c0 + 16 T - 2; the last two still wait for
    // z_1 / z_2 of the next tile.
    const __m512 zero = _mm512_setzero_ps();
    float* yr = y + r * ldy + c0 - 2;
    store(yr, lanes[0], add | 0x3, finish,
          _mm512_add_ps(u.a[0], _mm512_add_ps(shifted<15>(q.a[0], zero), shifted<14>(p.a[0], zero))), ep, r);
#pragma GCC unroll 8
    for (int t = 1; t < T; ++t)
      store(yr + 16 * t, lanes[t], add, finish,
            _mm512_add_ps(u.a[t], _mm512_add_ps(shifted<15>(q.a[t], q.a[t - 1]), shifted<14>(p.a[t], p.a[t - 1]))),
            ep, r);
    store(yr + 16 * T, lanes[T], add, 0, _mm512_add_ps(shifted<15>(zero, q.a[T - 1]), shifted<14>(zero, p.a[T - 1])),
          ep, r);
  }
}

}  // namespace

void f32_conv3_avx512(const float* values, const uint32_t* offsets, const uint32_t* groups,
                      size_t stride, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
                      size_t col_begin, size_t col_end, float* y, size_t ldy, size_t period) {
  // Two 64-position tiles at once where more than one is left (it then reads
  // no further than they would).
  for (size_t c0 = col_begin; c0 < col_end;) {
    if (col_end - c0 > 64) {
      tile<8>(values, offsets, groups, stride, x, ep, row_begin, row_end, c0, col_end, y, ldy, period);
      c0 += 128;
    } else {
      tile<4>(values, offsets, groups, stride, x, ep, row_begin, row_end, c0, col_end, y, ldy, period);
      c0 += 64;
    }
  }
}

}  // namespace sparsenet
