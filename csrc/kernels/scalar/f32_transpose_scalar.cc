// Matrix transpose, reference kernel (see TransposeKernel in kernels.h): a
// plain copy element by element, in the AVX2 kernel's blocks (see
// kTransposeBlockRows in kernels.h): 16 x 16 blocks took 1.05 ms on 4096 x 64
// floats, these 0.12 (Zen 5, through _raw_transpose_kernel).
#include <algorithm>

#include "../../src/kernels.h"

namespace sparsenet {

void f32_transpose_scalar(const float* in, size_t ldi, size_t rows, size_t cols, float* out, size_t ldo) {
  const size_t block_cols = transpose_block_cols(ldo);
  for (size_t r0 = 0; r0 < rows; r0 += kTransposeBlockRows) {
    const size_t r1 = std::min(rows, r0 + kTransposeBlockRows);
    for (size_t c0 = 0; c0 < cols; c0 += block_cols) {
      const size_t c1 = std::min(cols, c0 + block_cols);
      for (size_t r = r0; r < r1; ++r)
        for (size_t c = c0; c < c1; ++c) out[c * ldo + r] = in[r * ldi + c];
    }
  }
}

}  // namespace sparsenet
