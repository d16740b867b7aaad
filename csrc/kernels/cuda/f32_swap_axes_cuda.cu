// Swap the two leading axes of an (outer, inner, block) array. block == 1 is a
// matrix transpose through a 32 x 33 shared-memory tile (coalesced reads and
// writes, no bank conflicts); block > 1 copies contiguous runs of `block`
// floats, one thread per element, coalesced along the run.
#include "kernels_cuda.h"

namespace sparsenet {
namespace cuda {
namespace {

constexpr int kTile = 32;

__global__ void transpose_kernel(const float* __restrict__ in, int64_t rows, int64_t cols,
                                 float* __restrict__ out) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile, c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][i];
  }
}

__global__ void swap_blocks_kernel(const float* __restrict__ in, int64_t outer, int64_t inner,
                                   int64_t block, float* __restrict__ out) {
  const int64_t total = outer * inner * block;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t % block, b = (t / block) % inner, a = t / (block * inner);
    out[(b * outer + a) * block + i] = in[t];
  }
}

}  // namespace

void f32_swap_axes_cuda(const float* in, int64_t outer, int64_t inner, int64_t block, float* out,
                        cudaStream_t stream) {
  const int64_t total = outer * inner * block;
  if (total == 0) return;
  if (block == 1 && (outer + kTile - 1) / kTile <= 65535) {
    const dim3 grid(static_cast<unsigned>((inner + kTile - 1) / kTile),
                    static_cast<unsigned>((outer + kTile - 1) / kTile));
    transpose_kernel<<<grid, dim3(kTile, 8), 0, stream>>>(in, outer, inner, out);
    return;
  }
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, int64_t{1} << 20);
  swap_blocks_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(in, outer, inner, block, out);
}

}  // namespace cuda
}  // namespace sparsenet
