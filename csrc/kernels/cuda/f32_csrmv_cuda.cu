// CSR SpMV for batch 1 (vector kernel, Bell & Garland 2009): a group of
// `Lanes` threads (2..32, a power of two chosen from the mean row length) per
// row; lanes stride over the row's nonzeros, reduce with warp shuffles, and
// lane 0 applies bias + ReLU. Column indices are uint16 when cols <= 65536,
// so a nonzero moves 6 bytes instead of 8. Rows with nnz = 0 yield the bias.
#include "kernels_cuda.h"

namespace sparsenet {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename Index, int Lanes>
__global__ void csrmv_kernel(const uint32_t* __restrict__ row_ptr, const Index* __restrict__ col,
                             const float* __restrict__ values, const float* __restrict__ x,
                             const float* __restrict__ bias, bool relu, int64_t rows,
                             float* __restrict__ y) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = thread / Lanes;
  const int lane = threadIdx.x % Lanes;
  if (row >= rows) return;  // whole groups leave together: Lanes divides the block
  const uint32_t begin = row_ptr[row], end = row_ptr[row + 1];
  float acc = 0.0f;
  for (uint32_t k = begin + lane; k < end; k += Lanes) acc += __ldg(values + k) * __ldg(x + col[k]);
  const unsigned group_mask =
      Lanes == 32 ? 0xffffffffu : ((1u << Lanes) - 1u) << (threadIdx.x % 32 / Lanes * Lanes);
  for (int offset = Lanes / 2; offset > 0; offset /= 2)
    acc += __shfl_down_sync(group_mask, acc, offset, Lanes);
  if (lane == 0) {
    if (bias) acc += bias[row];
    y[row] = (relu && acc < 0.0f) ? 0.0f : acc;
  }
}

template <typename Index, int Lanes>
void launch(const DeviceCsr<Index>& a, const float* x, const float* bias, bool relu, float* y,
            cudaStream_t stream) {
  const int64_t threads = a.rows * Lanes;
  const unsigned blocks = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  csrmv_kernel<Index, Lanes><<<blocks, kThreads, 0, stream>>>(a.row_ptr, a.col_idx, a.values, x,
                                                              bias, relu, a.rows, y);
}

}  // namespace

template <typename Index>
void f32_csrmv_cuda(const DeviceCsr<Index>& a, const float* x, const float* bias, bool relu,
                    float* y, cudaStream_t stream) {
  if (a.rows == 0) return;
  const double mean = static_cast<double>(a.nnz) / static_cast<double>(a.rows);
  if (mean > 64) launch<Index, 32>(a, x, bias, relu, y, stream);
  else if (mean > 16) launch<Index, 16>(a, x, bias, relu, y, stream);
  else if (mean > 8) launch<Index, 8>(a, x, bias, relu, y, stream);
  else if (mean > 4) launch<Index, 4>(a, x, bias, relu, y, stream);
  else launch<Index, 2>(a, x, bias, relu, y, stream);
}

template void f32_csrmv_cuda<uint16_t>(const DeviceCsr<uint16_t>&, const float*, const float*,
                                       bool, float*, cudaStream_t);
template void f32_csrmv_cuda<uint32_t>(const DeviceCsr<uint32_t>&, const float*, const float*,
                                       bool, float*, cudaStream_t);

}  // namespace cuda
}  // namespace sparsenet
