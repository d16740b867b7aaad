// CSR SpMM Y = W X for a batch of n columns, X and Y row-major (feature-major
// activations, or im2col patch matrices). One warp per (row, 64-column tile):
// the warp loads 32 nonzeros (value, column) at a time, one per lane, and
// broadcasts each with a shuffle; every lane then accumulates two output
// columns, lane and lane + 32, so loads of X and stores of Y are coalesced
// 128-byte rows (the scheme of Sputnik, Gale et al. SC20, without its
// row-swizzle). 4 warps per block handle 4 consecutive rows.
#include "kernels_cuda.h"

namespace sparsenet {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kTile = 64;  // columns per warp

template <typename Index>
__global__ void csrmm_kernel(const uint32_t* __restrict__ row_ptr, const Index* __restrict__ col,
                             const float* __restrict__ values, int64_t rows,
                             const float* __restrict__ x, size_t ldx, size_t n,
                             const float* __restrict__ bias, bool relu, float* __restrict__ y,
                             size_t ldy) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const size_t c0 = static_cast<size_t>(blockIdx.y) * kTile + lane;
  const size_t c1 = c0 + 32;
  const bool in0 = c0 < n, in1 = c1 < n;
  float acc0 = 0.0f, acc1 = 0.0f;
  const uint32_t begin = row_ptr[row], end = row_ptr[row + 1];
  for (uint32_t base = begin; base < end; base += 32) {
    const uint32_t k = base + lane;
    const float v = k < end ? values[k] : 0.0f;
    const uint32_t c = k < end ? static_cast<uint32_t>(col[k]) : 0u;
    const int count = static_cast<int>(min(32u, end - base));
    for (int j = 0; j < count; ++j) {
      const float vj = __shfl_sync(0xffffffffu, v, j);
      const float* xr = x + static_cast<size_t>(__shfl_sync(0xffffffffu, c, j)) * ldx;
      if (in0) acc0 += vj * __ldg(xr + c0);
      if (in1) acc1 += vj * __ldg(xr + c1);
    }
  }
  const float b = bias ? bias[row] : 0.0f;
  float* yr = y + static_cast<size_t>(row) * ldy;
  if (in0) { acc0 += b; yr[c0] = (relu && acc0 < 0.0f) ? 0.0f : acc0; }
  if (in1) { acc1 += b; yr[c1] = (relu && acc1 < 0.0f) ? 0.0f : acc1; }
}

}  // namespace

template <typename Index>
void f32_csrmm_cuda(const DeviceCsr<Index>& a, const float* x, size_t ldx, size_t n,
                    const float* bias, bool relu, float* y, size_t ldy, cudaStream_t stream) {
  if (a.rows == 0 || n == 0) return;
  // Rows on grid.x (up to 2^31 - 1 blocks); column tiles on grid.y, whose 65535
  // limit the caller keeps (n <= kMaxSpmmColumns).
  const dim3 grid(static_cast<unsigned>((a.rows + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>((n + kTile - 1) / kTile));
  csrmm_kernel<Index><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(a.row_ptr, a.col_idx, a.values,
                                                                 a.rows, x, ldx, n, bias, relu, y, ldy);
}

template void f32_csrmm_cuda<uint16_t>(const DeviceCsr<uint16_t>&, const float*, size_t, size_t,
                                       const float*, bool, float*, size_t, cudaStream_t);
template void f32_csrmm_cuda<uint32_t>(const DeviceCsr<uint32_t>&, const float*, size_t, size_t,
                                       const float*, bool, float*, size_t, cudaStream_t);

}  // namespace cuda
}  // namespace sparsenet
