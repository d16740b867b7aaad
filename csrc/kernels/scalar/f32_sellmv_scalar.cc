// Sliced windows (SellRef), reference kernel: lane by lane, in the order
// kernels.h fixes (four chains of fused multiply-adds), so that the AVX-512
// kernel's sums equal these bit for bit.
#include <algorithm>
#include <cmath>

#include "../../src/kernels.h"

namespace sparsenet {

void f32_sellmv_scalar(SellRef a, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
                       float* y) {
  if (row_begin >= row_end) return;
  for (size_t g = row_begin / kSellLanes; g * kSellLanes < row_end; ++g) {
    const size_t first = a.group_start[g], steps = a.group_start[g + 1] - first;
    const size_t chained = steps / 4 * 4;
    for (size_t l = 0; l < kSellLanes; ++l) {
      const size_t r = g * kSellLanes + l;
      if (r < row_begin || r >= row_end) continue;
      float chain[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (size_t j = 0; j < steps; ++j) {
        const size_t s = first + j, slot = s * kSellLanes + l;
        float& c = chain[j < chained ? j % 4 : 0];
        c = std::fma(a.values[slot], x[a.window[s] + a.index[slot]], c);
      }
      float acc = (chain[0] + chain[2]) + (chain[1] + chain[3]);
      if (ep.accumulate) acc += y[r];
      y[r] = apply_epilogue(acc, ep, r);
    }
  }
}

}  // namespace sparsenet
