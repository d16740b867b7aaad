// KernelTable::conv3's contract (kernels.h) computed the obvious way: the
// reference the AVX-512 and AVX2 kernels are tested against (no table runs it; the
// scalar ISA's direct convolution uses csrmm with the kernel column in the
// offsets). The AVX2 kernel hands it the periods it has no registers for,
// which Conv2d never gives that kernel.
#include <algorithm>
#include <vector>

#include "../../src/kernels.h"

namespace sparsenet {

void f32_conv3_scalar(const float* values, const uint32_t* offsets, const uint32_t* groups,
                      size_t stride, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
                      size_t col_begin, size_t col_end, float* y, size_t ldy, size_t period) {
  constexpr size_t kTile = 64;
  std::vector<float> z(3 * kTile);
  for (size_t c0 = col_begin; c0 < col_end; c0 += kTile) {
    const size_t end = std::min(c0 + kTile, col_end);
    for (size_t r = row_begin; r < row_end; ++r) {
      std::fill(z.begin(), z.end(), 0.0f);
      const float* w = values + groups[(kConv3Slots - 1) * stride + r];
      for (size_t g = 0; g < kConv3Groups; ++g)
        for (uint32_t e = groups[g * stride + r]; e < groups[(g + 1) * stride + r]; ++e)
          for (size_t j = 0; j < 3; ++j) {
            if (!(kConv3Columns[g] >> j & 1)) continue;
            const float weight = *w++;
            for (size_t q = 0; q < kTile; ++q) {
              const size_t at = c0 + q;  // a neighbour past a row's end?
              if (period > 0 && ((j == 0 && (at + 1) % period == 0) || (j == 2 && at % period == 0))) continue;
              z[j * kTile + q] += weight * x[offsets[e] + at];
            }
          }
      // Positions p in [c0 - 2, end), relative to the tile: z_j at q = p + j
      // where q is in the tile. y has room for positions c0 - 2 and c0 - 1.
      float* yr = y + r * ldy + c0;
      for (int64_t p = -2; p < static_cast<int64_t>(end - c0); ++p) {
        float sum = 0.0f;
        for (int64_t j = 0; j < 3; ++j)
          if (p + j >= 0 && p + j < static_cast<int64_t>(kTile)) sum += z[j * kTile + static_cast<size_t>(p + j)];
        float v = ep.accumulate || p < 0 ? yr[p] + sum : sum;
        if (p < static_cast<int64_t>(kTile) - 2) v = apply_epilogue(v, ep, r);
        yr[p] = v;
      }
    }
  }
}

}  // namespace sparsenet
