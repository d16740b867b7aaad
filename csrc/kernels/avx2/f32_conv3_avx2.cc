// Direct sparse convolution for 3-wide kernels with aligned loads (AVX2+FMA):
// KernelTable::conv3's contract (kernels.h), for CPUs without AVX-512.
//
// Like f32_conv3_avx512.cc, the offsets leave the kernel column j out, so that
// with the padded rows a multiple of 8 floats apart and the image 32-byte
// aligned no 32-byte load straddles two cache lines (the csrmm tile's loads
// from x + offset + j do, about half of them). Sixteen ymm registers hold no
// separate accumulators per kernel column: the tile's 64 positions take eight
// (eight FMA chains, as in the csrmm tile), and the columns run one after the
// other into the same registers, shifted one lane up in between:
//   after column 0:  a[q] = z_0[q]                                (position q)
//   shift, column 1: a[q] = z_0[q - 1] + z_1[q]                    (position q - 1)
//   shift, column 2: a[q] = z_0[q - 2] + z_1[q - 1] + z_2[q]       (position q - 2)
// So an entry holding several columns cannot load its run once for all of
// them as the AVX-512 kernel does: it runs once per column it holds, and
// Conv2d gives this kernel one-column entries (KernelTable::conv3_joint_entries).
// The lane each shift pushes out of the top is a finished position: z_0[63]
// is position 63, z_0[62] + z_1[63] position 62. Each shift is a rotation and
// a blend per register, 32 instructions per row and tile against 8 FMAs per
// nonzero. Zen 4, one thread, SPARSENET_AVX512=0 (this kernel against the
// csrmm tile), VGG-16's 3x3 layers at Han's densities: 1.06-1.26x faster
// (lower-quartile times in alternating processes, with the whole-tile blocks
// of layers.cc), conv4_2 at 10 % 1.06x, at 30 % 1.22x; within 0-10 % of the
// AVX-512 kernel, which stays the choice where the CPU has it.
// Tried: the AVX-512 kernel's scheme in ymm registers (z_0, z_1, z_2 apart,
// so that joint entries load their run once), which fits 16 registers only
// as two 32-position halves of each tile: C++ probe on Zen 4, AVX2 code, one
// thread, against this kernel: conv2_2 at 36 % 1.01x, conv3_2 at 24 % 0.90x,
// conv4_2 at 27 % 0.76x, at 10 % 0.62x. The halves' second pass over the
// row's groups (loop exits, the shifts, twice the stores) costs more than the
// shared loads save. Built with -mavx2 -mfma only.
#include <immintrin.h>

#include <algorithm>

#include "../../src/kernels.h"

namespace sparsenet {
namespace {

struct Tile {
  __m256 a0, a1, a2, a3, a4, a5, a6, a7;
};

// Column j's part of the entries [begin, end) of a group whose entries hold
// kWidth columns, j's weight the entry's `slot`-th: w[slot], w[kWidth + slot], ...
template <uint32_t kWidth>
inline void group(const float* w, uint32_t slot, const uint32_t* offsets, uint32_t begin, uint32_t end,
                  const float* x, Tile& t) {
  w += slot;
  for (uint32_t k = begin; k < end; ++k, w += kWidth) {
    const float* xk = x + offsets[k];
    const __m256 v = _mm256_broadcast_ss(w);
    t.a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk), t.a0);
    t.a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk + 8), t.a1);
    t.a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk + 16), t.a2);
    t.a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk + 24), t.a3);
    t.a4 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk + 32), t.a4);
    t.a5 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk + 40), t.a5);
    t.a6 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk + 48), t.a6);
    t.a7 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xk + 56), t.a7);
  }
}

// The row's entries by group (kernels.h): bounds[g] the first of group g; w[g]
// its first weight, for the joint groups (g >= 3) only where they hold entries.
struct Row {
  uint32_t bounds[kConv3Groups + 1];
  const float* w[kConv3Groups];
  bool joint;
};

// Column j's part of the row: its one-column group, then the joint groups
// that hold j, which Conv2d does not give this kernel (see
// KernelTable::conv3_joint_entries) but the contract allows.
inline void column(size_t j, const Row& row, const uint32_t* offsets, const float* x, Tile& t) {
  group<1>(row.w[j], 0, offsets, row.bounds[j], row.bounds[j + 1], x, t);
  if (!row.joint) return;
  for (size_t g = 3; g + 1 < kConv3Groups; ++g)  // pairs: j's slot is 0 or 1
    if (kConv3Columns[g] >> j & 1)
      group<2>(row.w[g], (kConv3Columns[g] & ((1u << j) - 1)) != 0, offsets, row.bounds[g], row.bounds[g + 1], x, t);
  group<3>(row.w[kConv3Groups - 1], static_cast<uint32_t>(j), offsets, row.bounds[kConv3Groups - 1],
           row.bounds[kConv3Groups], x, t);
}

// The whole tile one lane up (each register rotated, its bottom lane taken
// from the rotated register below: vpermps + vblendps, cheaper than
// vperm2f128 + vpalignr on AMD Zen 1/2); returns the lane pushed out.
inline float shift(Tile& t) {
  const __m256i rotate = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
  const __m256 r0 = _mm256_permutevar8x32_ps(t.a0, rotate), r1 = _mm256_permutevar8x32_ps(t.a1, rotate);
  const __m256 r2 = _mm256_permutevar8x32_ps(t.a2, rotate), r3 = _mm256_permutevar8x32_ps(t.a3, rotate);
  const __m256 r4 = _mm256_permutevar8x32_ps(t.a4, rotate), r5 = _mm256_permutevar8x32_ps(t.a5, rotate);
  const __m256 r6 = _mm256_permutevar8x32_ps(t.a6, rotate), r7 = _mm256_permutevar8x32_ps(t.a7, rotate);
  t.a0 = _mm256_blend_ps(r0, _mm256_setzero_ps(), 1);
  t.a1 = _mm256_blend_ps(r1, r0, 1);
  t.a2 = _mm256_blend_ps(r2, r1, 1);
  t.a3 = _mm256_blend_ps(r3, r2, 1);
  t.a4 = _mm256_blend_ps(r4, r3, 1);
  t.a5 = _mm256_blend_ps(r5, r4, 1);
  t.a6 = _mm256_blend_ps(r6, r5, 1);
  t.a7 = _mm256_blend_ps(r7, r6, 1);
  return _mm256_cvtss_f32(r7);
}

inline __m256 epilogue(__m256 v, const Epilogue& ep, size_t row) {
  if (ep.bias) v = _mm256_add_ps(v, _mm256_broadcast_ss(ep.bias + row));
  if (ep.relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
  return v;
}

// y[0..8) = epilogue(v (+ y on the lanes of `add`)), whole.
inline void store(float* y, __m256 add, __m256 v, const Epilogue& ep, size_t row) {
  v = _mm256_add_ps(v, _mm256_and_ps(add, _mm256_loadu_ps(y)));
  _mm256_storeu_ps(y, epilogue(v, ep, row));
}

// The same on the lanes of `mask` only (a tile's end).
inline void store_masked(float* y, __m256i mask, __m256 add, __m256 v, const Epilogue& ep, size_t row) {
  v = _mm256_add_ps(v, _mm256_and_ps(add, _mm256_maskload_ps(y, mask)));
  _mm256_maskstore_ps(y, mask, epilogue(v, ep, row));
}

}  // namespace

void f32_conv3_avx2(const float* values, const uint32_t* offsets, const uint32_t* groups, size_t stride,
                    const float* x, Epilogue ep, size_t row_begin, size_t row_end, size_t col_begin,
                    size_t col_end, float* y, size_t ldy, size_t period) {
  if (period > 0) {  // not given by Conv2d (KernelTable::conv3_periodic): z_2 has no registers of its own here
    f32_conv3_scalar(values, offsets, groups, stride, x, ep, row_begin, row_end, col_begin, col_end, y, ldy, period);
    return;
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  // Lanes that add to y: the first two of a tile always, the rest with ep.accumulate.
  const __m256 add_first = ep.accumulate ? all : _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(2), lane));
  const __m256 add = ep.accumulate ? all : _mm256_setzero_ps();
  for (size_t c0 = col_begin; c0 < col_end; c0 += 64) {
    // Positions c0 - 2 .. min(c0 + 64, col_end) - 1: `valid` of the 66.
    const size_t valid = std::min<size_t>(64, col_end - c0) + 2;
    const float* xc = x + c0;
    for (size_t r = row_begin; r < row_end; ++r) {
      Row row;
      for (size_t g = 0; g <= kConv3Groups; ++g) row.bounds[g] = groups[g * stride + r];
      row.w[0] = values + groups[(kConv3Slots - 1) * stride + r];
      row.w[1] = row.w[0] + (row.bounds[1] - row.bounds[0]);
      row.w[2] = row.w[1] + (row.bounds[2] - row.bounds[1]);
      row.joint = row.bounds[3] != row.bounds[kConv3Groups];
      if (row.joint)
        for (size_t g = 3; g < kConv3Groups; ++g)
          row.w[g] = row.w[g - 1] + kConv3Width[g - 1] * (row.bounds[g] - row.bounds[g - 1]);
      Tile t;
      t.a0 = t.a1 = t.a2 = t.a3 = t.a4 = t.a5 = t.a6 = t.a7 = _mm256_setzero_ps();
      column(0, row, offsets, xc, t);
      const float p63 = shift(t);  // z_0[63]
      column(1, row, offsets, xc, t);
      const float p62 = shift(t);  // z_0[62] + z_1[63]
      column(2, row, offsets, xc, t);
      // t.a<v>[l] is position c0 - 2 + 8 v + l, whole once the tile's last
      // panel is in (the epilogue's lanes); p62 and p63 wait for the next tile.
      float* yr = y + r * ldy + c0 - 2;
      if (valid == 66) {
        store(yr, add_first, t.a0, ep, r);
        store(yr + 8, add, t.a1, ep, r);
        store(yr + 16, add, t.a2, ep, r);
        store(yr + 24, add, t.a3, ep, r);
        store(yr + 32, add, t.a4, ep, r);
        store(yr + 40, add, t.a5, ep, r);
        store(yr + 48, add, t.a6, ep, r);
        store(yr + 56, add, t.a7, ep, r);
        yr[64] = ep.accumulate ? yr[64] + p62 : p62;
        yr[65] = ep.accumulate ? yr[65] + p63 : p63;
        continue;
      }
      const __m256 v[8] = {t.a0, t.a1, t.a2, t.a3, t.a4, t.a5, t.a6, t.a7};
      for (size_t i = 0; i < 8 && 8 * i < valid; ++i) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid - 8 * i)), lane);
        store_masked(yr + 8 * i, mask, i == 0 ? add_first : add, v[i], ep, r);
      }
      if (valid > 64) yr[64] = ep.accumulate ? yr[64] + p62 : p62;  // valid is at most 65 here
    }
  }
}

}  // namespace sparsenet
