// im2col for a run of NCHW images: one thread per patch-matrix element
// (row = (c * kernel_h + i) * kernel_w + j, column = image * out_h * out_w + p),
// so writes are coalesced along the columns; zeros where the window covers padding.
#include "kernels_cuda.h"

namespace sparsenet {
namespace cuda {
namespace {

__global__ void im2col_kernel(const float* __restrict__ images, int64_t count, ConvShape g,
                              float* __restrict__ cols) {
  const int64_t patches = g.out_h * g.out_w;
  const int64_t width = count * patches;  // columns of the patch matrix
  const int64_t total = g.channels * g.kernel_h * g.kernel_w * width;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = t / width, column = t % width;
    const int64_t image = column / patches, p = column % patches;
    const int64_t j = row % g.kernel_w, i = (row / g.kernel_w) % g.kernel_h;
    const int64_t c = row / (g.kernel_w * g.kernel_h);
    const int64_t iy = (p / g.out_w) * g.stride_h - g.pad_h + i;
    const int64_t ix = (p % g.out_w) * g.stride_w - g.pad_w + j;
    float v = 0.0f;
    if (iy >= 0 && iy < g.height && ix >= 0 && ix < g.width)
      v = images[((image * g.channels + c) * g.height + iy) * g.width + ix];
    cols[t] = v;
  }
}

}  // namespace

void f32_im2col_cuda(const float* images, int64_t count, const ConvShape& g, float* cols,
                     cudaStream_t stream) {
  const int64_t total = g.channels * g.kernel_h * g.kernel_w * count * g.out_h * g.out_w;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, int64_t{1} << 20);
  im2col_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(images, count, g, cols);
}

}  // namespace cuda
}  // namespace sparsenet
