// Winograd transforms, AVX2+FMA: kWinogradLanes (8) tiles at once, one tile
// per lane, so every entry of a 6x6 tile is one 8-float vector and each
// transform is the same 1-D transform applied along rows, then along
// columns, written out as the adds and multiply-adds that BT's and AT's
// small integer entries need (kernels.h): 12 operations for the six outputs
// of BT's 1-D transform where the matrix product takes 36. The output
// transform interleaves the tiles' columns with shuffles before its stores.
// Built with -mavx2 -mfma only.
#include <immintrin.h>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

// kTailMask + 8 - k: the first k lanes set (k in [0, 8]).
alignas(32) constexpr int32_t kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0,  0,  0,  0,  0,  0,  0,  0};

// o[b] = sum_j BT[b][j] d[j].
inline void bt6(const __m256 d[6], __m256 o[6]) {
  const __m256 four = _mm256_set1_ps(4.0f), minus4 = _mm256_set1_ps(-4.0f), minus5 = _mm256_set1_ps(-5.0f);
  o[0] = _mm256_fmadd_ps(four, d[0], _mm256_fmadd_ps(minus5, d[2], d[4]));
  const __m256 p = _mm256_fmadd_ps(minus4, d[2], d[4]);  // d4 - 4 d2
  const __m256 q = _mm256_fmadd_ps(minus4, d[1], d[3]);  // d3 - 4 d1
  o[1] = _mm256_add_ps(p, q);
  o[2] = _mm256_sub_ps(p, q);
  const __m256 r = _mm256_sub_ps(d[4], d[2]);
  const __m256 s = _mm256_add_ps(_mm256_sub_ps(d[3], d[1]), _mm256_sub_ps(d[3], d[1]));  // 2 (d3 - d1)
  o[3] = _mm256_add_ps(r, s);
  o[4] = _mm256_sub_ps(r, s);
  o[5] = _mm256_fmadd_ps(four, d[1], _mm256_fmadd_ps(minus5, d[3], d[5]));
}

// o[b] = sum_j AT[b][j] s[j] for b < M (AT of F(4, r) for M = 4, of F(2, r) for M = 2).
template <size_t M>
inline void at6(const __m256 s[6], __m256 o[M]) {
  const __m256 a = _mm256_add_ps(s[1], s[2]), b = _mm256_sub_ps(s[1], s[2]);
  const __m256 c = _mm256_add_ps(s[3], s[4]), d = _mm256_sub_ps(s[3], s[4]);
  o[0] = _mm256_add_ps(_mm256_add_ps(s[0], a), c);
  if (M == 2) {
    o[1] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(2.0f), d, b), s[5]);
  } else {
    o[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), d, b);
    o[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), c, a);
    o[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), d, b), s[5]);
  }
}

template <size_t M>
void output_tiles(const float* mm, size_t ldm, float bias, bool relu, float* y, size_t ldy,
                  size_t rows, size_t cols) {
  __m256 t[6][M];  // row i of M A
  for (size_t i = 0; i < 6; ++i) {
    __m256 s[6];
    for (size_t j = 0; j < 6; ++j) s[j] = _mm256_loadu_ps(mm + (i * 6 + j) * ldm);
    at6<M>(s, t[i]);
  }
  const __m256 vbias = _mm256_set1_ps(bias);
  for (size_t b = 0; b < M; ++b) {
    __m256 col[6], o[M];
    for (size_t i = 0; i < 6; ++i) col[i] = t[i][b];
    at6<M>(col, o);
    for (size_t a = 0; a < M; ++a) t[a][b] = o[a];  // rows a < M of t are no longer needed as input
  }
  for (size_t a = 0; a < rows; ++a) {
    __m256 v[M];
    for (size_t b = 0; b < M; ++b) {
      v[b] = _mm256_add_ps(t[a][b], vbias);
      if (relu) v[b] = _mm256_max_ps(v[b], _mm256_setzero_ps());
    }
    // Interleave: lane l's entries b = 0..M-1 become columns l * M + b.
    __m256 w[M];
    if (M == 2) {
      const __m256 lo = _mm256_unpacklo_ps(v[0], v[1]), hi = _mm256_unpackhi_ps(v[0], v[1]);
      w[0] = _mm256_permute2f128_ps(lo, hi, 0x20);
      w[1] = _mm256_permute2f128_ps(lo, hi, 0x31);
    } else {
      const __m256 lo01 = _mm256_unpacklo_ps(v[0], v[1]), hi01 = _mm256_unpackhi_ps(v[0], v[1]);
      const __m256 lo23 = _mm256_unpacklo_ps(v[2], v[3]), hi23 = _mm256_unpackhi_ps(v[2], v[3]);
      const __m256 l0 = _mm256_shuffle_ps(lo01, lo23, 0x44), l1 = _mm256_shuffle_ps(lo01, lo23, 0xEE);
      const __m256 h0 = _mm256_shuffle_ps(hi01, hi23, 0x44), h1 = _mm256_shuffle_ps(hi01, hi23, 0xEE);
      // l0: lanes 0 | 4, l1: 1 | 5, h0: 2 | 6, h1: 3 | 7 (each lane's 4 entries).
      w[0] = _mm256_permute2f128_ps(l0, l1, 0x20);
      w[1] = _mm256_permute2f128_ps(h0, h1, 0x20);
      w[2] = _mm256_permute2f128_ps(l0, l1, 0x31);
      w[3] = _mm256_permute2f128_ps(h0, h1, 0x31);
    }
    float* dst = y + a * ldy;
    if (cols == 8 * M) {
      for (size_t b = 0; b < M; ++b) _mm256_storeu_ps(dst + 8 * b, w[b]);
    } else {
      for (size_t b = 0; b < M && 8 * b < cols; ++b) {
        const size_t left = cols - 8 * b;
        if (left >= 8) {
          _mm256_storeu_ps(dst + 8 * b, w[b]);
        } else {
          const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - left));
          _mm256_maskstore_ps(dst + 8 * b, mask, w[b]);
        }
      }
    }
  }
}

}  // namespace

void f32_winograd_input_avx2(const float* const* rows, const size_t* cols, float* v, size_t ldv) {
  __m256 t[6][6];  // row i of d B
  for (size_t i = 0; i < 6; ++i) {
    __m256 d[6];
    for (size_t j = 0; j < 6; ++j) d[j] = _mm256_loadu_ps(rows[i] + cols[j]);
    bt6(d, t[i]);
  }
  for (size_t b = 0; b < 6; ++b) {
    __m256 col[6], o[6];
    for (size_t i = 0; i < 6; ++i) col[i] = t[i][b];
    bt6(col, o);
    for (size_t a = 0; a < 6; ++a) _mm256_storeu_ps(v + (a * 6 + b) * ldv, o[a]);
  }
}

void f32_winograd_output_avx2(const float* mm, size_t ldm, size_t m, float bias, bool relu,
                              float* y, size_t ldy, size_t rows, size_t cols) {
  if (m == 2) return output_tiles<2>(mm, ldm, bias, relu, y, ldy, rows, cols);
  output_tiles<4>(mm, ldm, bias, relu, y, ldy, rows, cols);
}

}  // namespace sparsenet
