// f32 CSR matrix x dense vector, reference kernel.
// One row at a time, one accumulator, nonzeros in stored order.
#include "../../src/kernels.h"

namespace sparsenet {
namespace {

template <typename Index>
void csrmv(CsrRef<Index> a, const float* x, Epilogue ep, size_t row_begin, size_t row_end,
           float* y) {
  for (size_t r = row_begin; r < row_end; ++r) {
    float acc = ep.accumulate ? y[r] : 0.0f;
    for (uint32_t k = a.row_ptr[r]; k < a.row_ptr[r + 1]; ++k) acc += a.values[k] * x[a.col_idx[k]];
    y[r] = apply_epilogue(acc, ep, r);
  }
}

}  // namespace

void f32_csrmv_u16_scalar(CsrRef<uint16_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                          float* y) {
  csrmv(a, x, ep, rb, re, y);
}
void f32_csrmv_u32_scalar(CsrRef<uint32_t> a, const float* x, Epilogue ep, size_t rb, size_t re,
                          float* y) {
  csrmv(a, x, ep, rb, re, y);
}

}  // namespace sparsenet
