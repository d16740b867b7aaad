// Launchers of the CUDA kernels (private to the CUDA path). Every pointer is
// device memory; every launcher enqueues on `stream` and returns without
// synchronising. Layouts follow the CPU engine (sparsenet/layers.h): feature
// maps NCHW, feature vectors feature-major (F, N).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include <cstddef>
#include <cstdint>

namespace sparsenet {
namespace cuda {

// Device CSR: rows + 1 row pointers, nnz column indices (uint16 when cols <= 65536), nnz values.
template <typename Index>
struct DeviceCsr {
  const uint32_t* row_ptr;
  const Index* col_idx;
  const float* values;
  int64_t rows;
  int64_t cols;
  size_t nnz;
};

// y[r] = act(sum_k values[k] * x[col_idx[k]] + bias[r]), r in [0, rows).
// x: cols floats, y: rows floats, bias: rows floats or nullptr.
template <typename Index>
void f32_csrmv_cuda(const DeviceCsr<Index>& a, const float* x, const float* bias, bool relu,
                    float* y, cudaStream_t stream);

// Y[r][c] = act(sum_k values[k] * X[col_idx[k]][c] + bias[r]), c in [0, n).
// X: cols rows of ldx floats (row-major), Y: rows rows of ldy floats.
// n <= kMaxSpmmColumns (the grid's y limit times the 64-column tile).
constexpr size_t kMaxSpmmColumns = size_t{65535} * 64;
template <typename Index>
void f32_csrmm_cuda(const DeviceCsr<Index>& a, const float* x, size_t ldx, size_t n,
                    const float* bias, bool relu, float* y, size_t ldy, cudaStream_t stream);

// Patch matrix of `images` consecutive NCHW images into cols:
// (channels * kernel_h * kernel_w) rows of images * out_h * out_w floats; row
// (c * kernel_h + i) * kernel_w + j, column image * out_h * out_w + oy * out_w + ox.
struct ConvShape {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  int64_t out_h, out_w;
};
void f32_im2col_cuda(const float* images, int64_t count, const ConvShape& g, float* cols,
                     cudaStream_t stream);

// y[r * ld + c] = act(y[r * ld + c] + bias[r]) for r < rows, c < n (bias may be nullptr).
void f32_bias_relu_cuda(float* y, int64_t rows, int64_t n, size_t ld, const float* bias,
                        bool relu, cudaStream_t stream);

// out[i] = max(in[i], 0) for i < count.
void f32_relu_cuda(const float* in, float* out, size_t count, cudaStream_t stream);

// Max or average pooling of planes * (height x width) into planes * (out_h x out_w),
// with the CPU engine's window rules (windows clipped to input + padding; an
// average divides by the clipped window or, without count_include_pad, by its
// in-bounds part).
struct PoolShape {
  int64_t planes, height, width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  int64_t out_h, out_w;
  bool max;
  bool count_include_pad;
};
void f32_pool2d_cuda(const float* in, const PoolShape& p, float* out, cudaStream_t stream);

// out[b][a][i] = in[a][b][i] for a < outer, b < inner, i < block: swaps the two
// leading axes of an (outer, inner, block) array. block == 1 is a transpose
// (sample-major (N, F) <-> feature-major (F, N)).
void f32_swap_axes_cuda(const float* in, int64_t outer, int64_t inner, int64_t block, float* out,
                        cudaStream_t stream);

// Softmax over the features of each of n samples, feature-major (features, n).
void f32_softmax_cuda(const float* in, int64_t features, int64_t n, float* out,
                      cudaStream_t stream);

}  // namespace cuda
}  // namespace sparsenet
