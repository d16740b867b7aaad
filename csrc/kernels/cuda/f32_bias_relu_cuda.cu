// Elementwise epilogues: bias + ReLU over a rows x n matrix with leading
// dimension ld (after a cuBLAS product), and a standalone ReLU. Grid-stride loops.
#include "kernels_cuda.h"

namespace sparsenet {
namespace cuda {
namespace {

__global__ void bias_relu_kernel(float* __restrict__ y, int64_t rows, int64_t n, size_t ld,
                                 const float* __restrict__ bias, bool relu) {
  const int64_t total = rows * n;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / n, c = t % n;
    float* p = y + static_cast<size_t>(r) * ld + c;
    float v = *p;
    if (bias) v += bias[r];
    *p = (relu && v < 0.0f) ? 0.0f : v;
  }
}

__global__ void relu_kernel(const float* __restrict__ in, float* __restrict__ out, size_t count) {
  for (size_t t = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < count;
       t += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[t] = in[t] > 0.0f ? in[t] : 0.0f;
}

unsigned grid_for(int64_t total) {
  return static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, int64_t{1} << 20));
}

}  // namespace

void f32_bias_relu_cuda(float* y, int64_t rows, int64_t n, size_t ld, const float* bias,
                        bool relu, cudaStream_t stream) {
  if (rows * n == 0 || (!bias && !relu)) return;
  bias_relu_kernel<<<grid_for(rows * n), 256, 0, stream>>>(y, rows, n, ld, bias, relu);
}

void f32_relu_cuda(const float* in, float* out, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  relu_kernel<<<grid_for(static_cast<int64_t>(count)), 256, 0, stream>>>(in, out, count);
}

}  // namespace cuda
}  // namespace sparsenet
