// Winograd transforms, reference kernels: the input transform V = BT d B and
// the output transform Y = AT M A of kWinogradLanes tiles, lane by lane, as
// plain sums over the matrices' entries (see WinogradInputKernel and
// WinogradOutputKernel in kernels.h).
#include "../../src/kernels.h"

namespace sparsenet {

void f32_winograd_input_scalar(const float* const* rows, const size_t* cols, float* v, size_t ldv) {
  constexpr size_t n = kWinogradN;
  for (size_t lane = 0; lane < kWinogradLanes; ++lane)
    for (size_t a = 0; a < n; ++a)
      for (size_t b = 0; b < n; ++b) {
        float acc = 0.0f;
        for (size_t i = 0; i < n; ++i)
          for (size_t j = 0; j < n; ++j)
            acc += kWinogradBT[a][i] * rows[i][cols[j] + lane] * kWinogradBT[b][j];
        v[(a * n + b) * ldv + lane] = acc;
      }
}

void f32_winograd_output_scalar(const float* mm, size_t ldm, size_t m, float bias, bool relu,
                                float* y, size_t ldy, size_t rows, size_t cols) {
  constexpr size_t n = kWinogradN;
  const auto at = [m](size_t a, size_t i) { return m == 2 ? kWinogradAT2[a][i] : kWinogradAT4[a][i]; };
  for (size_t a = 0; a < rows; ++a)
    for (size_t x = 0; x < cols; ++x) {
      const size_t lane = x / m, b = x % m;
      float acc = 0.0f;
      for (size_t i = 0; i < n; ++i)
        for (size_t j = 0; j < n; ++j) acc += at(a, i) * mm[(i * n + j) * ldm + lane] * at(b, j);
      acc += bias;
      y[a * ldy + x] = (relu && acc < 0.0f) ? 0.0f : acc;
    }
}

}  // namespace sparsenet
