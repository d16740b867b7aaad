// im2col lowering for convolution.
#pragma once

#include <cstdint>

namespace sparsenet {

struct ConvGeometry {
  int64_t channels, height, width;        // input feature map
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  int64_t out_h, out_w;
};

// Writes the patch matrix of output rows [oy_begin, oy_end) of one image
// (channels x height x width, contiguous) into cols: (channels * kernel_h *
// kernel_w) rows of (oy_end - oy_begin) * out_w floats, row index
// (c * kernel_h + i) * kernel_w + j, zeros where the window covers padding.
void im2col(const float* image, const ConvGeometry& g, int64_t oy_begin, int64_t oy_end, float* cols);

}  // namespace sparsenet
