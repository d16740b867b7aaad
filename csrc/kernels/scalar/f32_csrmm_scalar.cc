// f32 CSR matrix x dense matrix, reference kernel.
// Row-major X (k x ldx) and Y (m x ldy); for each output row, each nonzero
// scales one row of X into the output row (axpy order). Column panels
// (CsrRef::row_end) and accumulation into Y as the AVX2 twin.
#include "../../src/kernels.h"

namespace sparsenet {
namespace {

template <typename Index>
void csrmm(CsrRef<Index> a, const float* x, size_t ldx, Epilogue ep, size_t row_begin,
           size_t row_end, size_t col_begin, size_t col_end, float* y, size_t ldy) {
  for (size_t r = row_begin; r < row_end; ++r) {
    float* yr = y + r * ldy;
    if (!ep.accumulate)
      for (size_t c = col_begin; c < col_end; ++c) yr[c] = 0.0f;
    const uint32_t end = a.row_end ? a.row_end[r] : a.row_ptr[r + 1];
    for (uint32_t k = a.row_ptr[r]; k < end; ++k) {
      const float v = a.values[k];
      const float* xr = x + static_cast<size_t>(a.col_idx[k]) * ldx;
      for (size_t c = col_begin; c < col_end; ++c) yr[c] += v * xr[c];
    }
    for (size_t c = col_begin; c < col_end; ++c) yr[c] = apply_epilogue(yr[c], ep, r);
  }
}

}  // namespace

void f32_csrmm_u16_scalar(CsrRef<uint16_t> a, const float* x, size_t ldx, Epilogue ep, size_t rb,
                          size_t re, size_t cb, size_t ce, float* y, size_t ldy) {
  csrmm(a, x, ldx, ep, rb, re, cb, ce, y, ldy);
}
void f32_csrmm_u32_scalar(CsrRef<uint32_t> a, const float* x, size_t ldx, Epilogue ep, size_t rb,
                          size_t re, size_t cb, size_t ce, float* y, size_t ldy) {
  csrmm(a, x, ldx, ep, rb, re, cb, ce, y, ldy);
}

}  // namespace sparsenet
