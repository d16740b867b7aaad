// Softmax over the features of each sample, activations feature-major
// (features, n): one warp per sample; lanes stride over the features for the
// maximum, the sum of exponentials (accumulated in double, as the CPU engine
// does) and the scaled write.
#include "kernels_cuda.h"

namespace sparsenet {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void softmax_kernel(const float* __restrict__ in, int64_t features, int64_t n,
                               float* __restrict__ out) {
  const int64_t sample = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (sample >= n) return;
  float peak = -INFINITY;
  for (int64_t f = lane; f < features; f += 32) peak = fmaxf(peak, in[f * n + sample]);
  for (int offset = 16; offset > 0; offset /= 2)
    peak = fmaxf(peak, __shfl_xor_sync(0xffffffffu, peak, offset));
  double total = 0.0;
  for (int64_t f = lane; f < features; f += 32) {
    const float e = expf(in[f * n + sample] - peak);
    out[f * n + sample] = e;
    total += e;
  }
  for (int offset = 16; offset > 0; offset /= 2)
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  const float scale = static_cast<float>(1.0 / total);
  for (int64_t f = lane; f < features; f += 32) out[f * n + sample] *= scale;
}

}  // namespace

void f32_softmax_cuda(const float* in, int64_t features, int64_t n, float* out,
                      cudaStream_t stream) {
  if (features == 0 || n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  softmax_kernel<<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(in, features, n, out);
}

}  // namespace cuda
}  // namespace sparsenet
