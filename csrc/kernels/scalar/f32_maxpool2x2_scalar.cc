// 2x2 stride-2 max pooling of one output row, reference kernel (see
// MaxPool2x2Kernel in kernels.h for the order of the comparisons).
#include <algorithm>
#include <limits>

#include "../../src/kernels.h"

namespace sparsenet {

void f32_maxpool2x2_scalar(const float* top, size_t w, size_t n, float* d) {
  for (size_t i = 0; i < n; ++i) {
    const float* win = top + 2 * i;
    float m = -std::numeric_limits<float>::infinity();
    m = std::max(m, win[0]);
    m = std::max(m, win[1]);
    m = std::max(m, win[w]);
    d[i] = std::max(m, win[w + 1]);
  }
}

}  // namespace sparsenet
