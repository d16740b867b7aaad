// Max / average pooling over NCHW planes: one thread per output element, the
// window clipped exactly as the CPU engine's Pool2d does (PyTorch semantics).
#include <cfloat>

#include "kernels_cuda.h"

namespace sparsenet {
namespace cuda {
namespace {

__global__ void pool2d_kernel(const float* __restrict__ in, PoolShape p, float* __restrict__ out) {
  const int64_t per_plane = p.out_h * p.out_w;
  const int64_t total = p.planes * per_plane;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t plane = t / per_plane, o = t % per_plane;
    const int64_t oy = o / p.out_w, ox = o % p.out_w;
    const float* src = in + plane * p.height * p.width;
    const int64_t y0 = oy * p.stride_h - p.pad_h, x0 = ox * p.stride_w - p.pad_w;
    const int64_t y1 = min(y0 + p.kernel_h, p.height + p.pad_h);
    const int64_t x1 = min(x0 + p.kernel_w, p.width + p.pad_w);
    const int64_t ys = max(y0, int64_t{0}), ye = min(y1, p.height);
    const int64_t xs = max(x0, int64_t{0}), xe = min(x1, p.width);
    float result;
    if (p.max) {
      result = -INFINITY;
      for (int64_t y = ys; y < ye; ++y)
        for (int64_t x = xs; x < xe; ++x) result = fmaxf(result, src[y * p.width + x]);
    } else {
      float sum = 0.0f;
      for (int64_t y = ys; y < ye; ++y)
        for (int64_t x = xs; x < xe; ++x) sum += src[y * p.width + x];
      const int64_t count = p.count_include_pad ? (y1 - y0) * (x1 - x0) : (ye - ys) * (xe - xs);
      result = count > 0 ? sum / static_cast<float>(count) : 0.0f;
    }
    out[t] = result;
  }
}

}  // namespace

void f32_pool2d_cuda(const float* in, const PoolShape& p, float* out, cudaStream_t stream) {
  const int64_t total = p.planes * p.out_h * p.out_w;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, int64_t{1} << 20);
  pool2d_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(in, p, out);
}

}  // namespace cuda
}  // namespace sparsenet
