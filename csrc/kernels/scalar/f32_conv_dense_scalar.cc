// Dense direct convolution tile, reference kernel: m output channels x n
// output columns, each output a dot product of a weight row with
// the input values its window covers (see ConvDenseKernel in kernels.h).
#include "../../src/kernels.h"

namespace sparsenet {

void f32_conv_dense_scalar(const float* w, size_t ldw, size_t m, const uint32_t* offsets,
                           size_t k, const float* x, size_t n, Epilogue ep, size_t row0, float* y,
                           size_t ldy) {
  for (size_t r = 0; r < m; ++r) {
    const float* wr = w + r * ldw;
    for (size_t j = 0; j < n; ++j) {
      float acc = ep.accumulate ? y[r * ldy + j] : 0.0f;
      for (size_t i = 0; i < k; ++i) acc += wr[i] * x[offsets[i] + j];
      y[r * ldy + j] = apply_epilogue(acc, ep, row0 + r);
    }
  }
}

}  // namespace sparsenet
