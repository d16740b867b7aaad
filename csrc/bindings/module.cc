// pybind11 bindings: array unpacking, GIL release, exception mapping. No logic.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../src/finite.h"
#include "../src/kernels.h"
#include "../src/sell.h"
#include "../src/thread_pool.h"
#include "sparsenet/sparsenet.h"
#ifdef SPARSENET_WITH_CUDA
#include "../src/cuda/cuda_model.h"
#endif

namespace py = pybind11;
using namespace sparsenet;

namespace {

using Int64Array = py::array_t<int64_t, py::array::c_style>;
using FloatArray = py::array_t<float, py::array::c_style>;

Backend parse_backend(const std::string& s) {
  if (s == "sparse") return Backend::kSparse;
  if (s == "dense") return Backend::kDense;
  if (s == "auto") return Backend::kAuto;
  throw FormatError("backend must be 'auto', 'sparse' or 'dense', got '" + s + "'");
}

Isa parse_isa(const std::string& s) {
  if (s == "scalar") return Isa::kScalar;
  if (s == "avx2") return Isa::kAvx2;
  throw FormatError("isa must be 'scalar' or 'avx2', got '" + s + "'");
}

CsrMatrix make_csr(const std::string& context, int64_t rows, int64_t cols, const Int64Array& indptr,
                   const Int64Array& indices, const FloatArray& values) {
  if (indptr.ndim() != 1 || indices.ndim() != 1 || values.ndim() != 1)
    throw WeightError(context + ": indptr, indices and data must be 1-D arrays");
  if (indptr.size() == 0) throw WeightError(context + ": indptr is empty");
  return CsrMatrix::from_arrays(context, rows, cols, indptr.data(), indptr.size(), indices.data(),
                                indices.size(), values.data(), values.size());
}

std::vector<float> to_vector(const std::optional<FloatArray>& a) {
  if (!a) return {};
  return std::vector<float>(a->data(), a->data() + a->size());
}

template <typename Index>
void run_raw_kernel(const KernelTable& table, const CsrMatrix& m, const float* x, size_t ldx,
                    size_t n, Epilogue ep, size_t rb, size_t re, size_t cb, size_t ce, float* y,
                    bool as_vector, const std::vector<uint32_t>& window, bool x_loads,
                    CsrmvKernel<uint16_t> l1_kernel, CsrmmKernel<uint16_t> mm16, CsrmmKernel<uint32_t> mm32,
                    bool prefetch, bool stream) {
  std::vector<Index> idx(m.nnz());
  for (size_t k = 0; k < m.nnz(); ++k)
    idx[k] = static_cast<Index>(m.narrow_indices() ? m.col16()[k] : m.col32()[k]);
  const size_t rows = m.row_ptr().size() - 1;
  const CsrRef<Index> ref = window.empty()
      ? CsrRef<Index>{m.row_ptr().data(), idx.data(), m.values().data(), nullptr, prefetch, stream}
      : CsrRef<Index>{window.data(), idx.data(), m.values().data(), window.data() + rows, prefetch,
                      stream};
  if constexpr (sizeof(Index) == 2) {
    if (as_vector) (x_loads ? l1_kernel : table.csrmv_u16)(ref, x, ep, rb, re, y);
    else mm16(ref, x, ldx, ep, rb, re, cb, ce, y, n);
  } else {
    if (as_vector) table.csrmv_u32(ref, x, ep, rb, re, y);
    else mm32(ref, x, ldx, ep, rb, re, cb, ce, y, n);
  }
}

// The sliced-window kernel of `kernel` ('avx512' or the 'scalar' reference)
// over rows [row_begin, row_end) of the layout build_sell makes of this CSR;
// rows outside the range keep y_init (or the marker). Also returns the layout's
// steps, so tests can check its fill.
std::pair<FloatArray, size_t> raw_sell_kernel(const std::string& kernel, int64_t rows, int64_t cols,
                                              const Int64Array& indptr, const Int64Array& indices,
                                              const FloatArray& values, const FloatArray& x,
                                              const std::optional<FloatArray>& bias, bool relu,
                                              int64_t row_begin, int64_t row_end,
                                              const std::optional<FloatArray>& y_init, bool stream) {
  const CsrMatrix m = make_csr("kernel test", rows, cols, indptr, indices, values);
  if (x.ndim() != 1 || x.shape(0) != cols)
    throw ShapeError("x must be (cols,) with cols = " + std::to_string(cols));
  if (row_end < 0) row_end = rows;
  if (row_begin < 0 || row_begin > row_end || row_end > rows) throw ShapeError("row range out of bounds");
  if (bias && bias->size() != rows) throw ShapeError("bias must have rows entries");
  SellmvKernel run = nullptr;
  if (kernel == "scalar") {
    run = f32_sellmv_scalar;
  } else if (kernel == "avx512") {
    if (!cpu_has_avx512vl()) throw FormatError("the avx512 sellmv kernel needs a CPU with AVX-512");
    run = f32_sellmv_avx512;
  } else {
    throw FormatError("kernel must be 'avx512' or 'scalar', not '" + kernel + "'");
  }
  const SellLayout sell = build_sell(m);  // ShapeError below 32 columns
  FloatArray y(rows);
  if (y_init) {
    if (y_init->size() != rows) throw ShapeError("y_init must be (rows,)");
    std::copy(y_init->data(), y_init->data() + rows, y.mutable_data());
  } else {
    std::fill(y.mutable_data(), y.mutable_data() + rows, -12345.0f);  // untouched marker
  }
  const Epilogue ep{bias ? bias->data() : nullptr, relu, y_init.has_value()};
  run(sell_ref(sell, stream), x.data(), ep, static_cast<size_t>(row_begin), static_cast<size_t>(row_end),
      y.mutable_data());
  return {y, sell.steps()};
}

// Runs one registry kernel directly (for tests and benchmarks): y = epilogue(A x)
// for x of shape (cols,) [csrmv] or (cols, n) [csrmm], over a row and column range.
FloatArray raw_csr_kernel(const std::string& isa, int64_t rows, int64_t cols,
                          const Int64Array& indptr, const Int64Array& indices,
                          const FloatArray& values, const FloatArray& x,
                          const std::optional<FloatArray>& bias, bool relu, int index_bits,
                          int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                          const std::optional<FloatArray>& y_init,
                          std::optional<std::pair<int64_t, int64_t>> column_window,
                          bool x_loads, const std::string& l1_variant, const std::string& mm_variant,
                          bool prefetch, bool stream) {
  const CsrMatrix m = make_csr("kernel test", rows, cols, indptr, indices, values);
  const bool as_vector = x.ndim() == 1;
  if ((x.ndim() != 1 && x.ndim() != 2) || x.shape(0) != cols)
    throw ShapeError("x must be (cols,) or (cols, n) with cols = " + std::to_string(cols));
  const size_t n = as_vector ? 1 : static_cast<size_t>(x.shape(1));
  if (row_end < 0) row_end = rows;
  if (col_end < 0) col_end = static_cast<int64_t>(n);
  if (row_begin < 0 || row_begin > row_end || row_end > rows || col_begin < 0 ||
      col_begin > col_end || col_end > static_cast<int64_t>(n))
    throw ShapeError("row or column range out of bounds");
  if (bias && bias->size() != rows) throw ShapeError("bias must have rows entries");
  if (index_bits == 16 && cols > 65536) throw ShapeError("16-bit indices need cols <= 65536");
  if (index_bits != 16 && index_bits != 32) throw ShapeError("index_bits must be 16 or 32");
  if (x_loads && (!as_vector || index_bits != 16))
    throw ShapeError("x_loads is for csrmv with 16-bit indices");
  FloatArray y = as_vector ? FloatArray(rows) : FloatArray({rows, static_cast<int64_t>(n)});
  if (y_init) {  // accumulating into y / Y
    if (y_init->size() != y.size()) throw ShapeError("y_init must be (rows,) for csrmv, (rows, n) for csrmm");
    std::copy(y_init->data(), y_init->data() + y_init->size(), y.mutable_data());
  } else {
    std::fill(y.mutable_data(), y.mutable_data() + y.size(), -12345.0f);  // untouched marker
  }
  // A column panel [lo, hi): per-row begin and end of the nonzeros in it.
  std::vector<uint32_t> window;
  if (column_window) {
    if (as_vector) throw ShapeError("column_window is for csrmm");
    const auto [lo, hi] = *column_window;
    window.resize(2 * static_cast<size_t>(rows));
    const auto& rp = m.row_ptr();
    for (int64_t r = 0; r < rows; ++r) {
      uint32_t k = rp[r];
      const auto col = [&](uint32_t i) -> int64_t { return m.narrow_indices() ? m.col16()[i] : m.col32()[i]; };
      while (k < rp[r + 1] && col(k) < lo) ++k;
      window[r] = k;
      while (k < rp[r + 1] && col(k) < hi) ++k;
      window[rows + r] = k;
    }
  }
  const KernelTable& table = kernel_table(parse_isa(isa));
  CsrmvKernel<uint16_t> l1_kernel = table.csrmv_u16_l1;  // "": what the table runs
  if (!l1_variant.empty()) {
    if (table.isa != Isa::kAvx2 || (l1_variant != "avx2" && l1_variant != "avx512"))
      throw FormatError("l1_variant '" + l1_variant + "' is not one of: avx2, avx512 (with isa avx2)");
    if (l1_variant == "avx512" && !cpu_has_avx512vl())
      throw FormatError("l1_variant 'avx512' needs a CPU with AVX-512F and VL");
    l1_kernel = l1_variant == "avx2" ? f32_csrmv_u16_l1_avx2 : f32_csrmv_u16_l1_avx512;
  }
  CsrmmKernel<uint16_t> mm16 = table.csrmm_u16;  // "": what the table runs
  CsrmmKernel<uint32_t> mm32 = table.csrmm_u32;
  if (!mm_variant.empty()) {
    if (table.isa != Isa::kAvx2 || (mm_variant != "avx2" && mm_variant != "avx512"))
      throw FormatError("mm_variant '" + mm_variant + "' is not one of: avx2, avx512 (with isa avx2)");
    if (mm_variant == "avx512" && !cpu_has_avx512vl())
      throw FormatError("mm_variant 'avx512' needs a CPU with AVX-512F and VL");
    mm16 = mm_variant == "avx2" ? f32_csrmm_u16_avx2 : f32_csrmm_u16_avx512;
    mm32 = mm_variant == "avx2" ? f32_csrmm_u32_avx2 : f32_csrmm_u32_avx512;
  }
  const Epilogue ep{bias ? bias->data() : nullptr, relu, y_init.has_value()};
  if (index_bits == 16)
    run_raw_kernel<uint16_t>(table, m, x.data(), n, n, ep, row_begin, row_end, col_begin, col_end,
                             y.mutable_data(), as_vector, window, x_loads, l1_kernel, mm16, mm32, prefetch,
                             stream);
  else
    run_raw_kernel<uint32_t>(table, m, x.data(), n, n, ep, row_begin, row_end, col_begin, col_end,
                             y.mutable_data(), as_vector, window, false, l1_kernel, mm16, mm32, prefetch,
                             stream);
  return y;
}

// Runs a dense direct convolution tile (kernels.h) once (tests only): `kernel`
// "avx512" (32 columns), "avx2" or "scalar" (16); w (m, k) row-major with m in
// [1, 6], offsets (k,) into x, n output columns, at most the tile's; x must
// hold offsets.max() + the tile's columns floats.
FloatArray raw_conv_dense_kernel(const std::string& kernel, const FloatArray& w,
                                 const py::array_t<uint32_t, py::array::c_style | py::array::forcecast>& offsets,
                                 const FloatArray& x, int64_t n, const std::optional<FloatArray>& bias,
                                 bool relu, int64_t row0, const std::optional<FloatArray>& y_init) {
  if (w.ndim() != 2 || w.shape(0) < 1 || w.shape(0) > static_cast<int64_t>(kConvDenseRows))
    throw ShapeError("w must be (m, k) with m in [1, 6]");
  const int64_t rows = w.shape(0);
  const int64_t k = w.shape(1);
  if (offsets.ndim() != 1 || offsets.shape(0) != k) throw ShapeError("offsets must be (k,)");
  ConvDenseKernel run = nullptr;
  int64_t cols = 16;
  if (kernel == "scalar") run = f32_conv_dense_scalar;
  if (kernel == "avx2") {
    if (!cpu_has_avx2_fma()) throw FormatError("the avx2 dense tile needs a CPU with AVX2 and FMA");
    run = f32_conv_dense_avx2;
  }
  if (kernel == "avx512") {
    if (!cpu_has_avx512vl()) throw FormatError("the avx512 dense tile needs a CPU with AVX-512F and VL");
    run = f32_conv_dense_avx512;
    cols = 32;
  }
  if (run == nullptr) throw FormatError("kernel '" + kernel + "' is not one of: avx512, avx2, scalar");
  if (n < 1 || n > cols) throw ShapeError("n must be in [1, " + std::to_string(cols) + "]");
  for (int64_t i = 0; i < k; ++i)
    if (static_cast<int64_t>(offsets.data()[i]) + cols > x.size())
      throw ShapeError("x must hold offsets[i] + " + std::to_string(cols) + " floats");
  if (row0 < 0) throw ShapeError("row0 must be >= 0");
  if (bias && bias->size() < row0 + rows) throw ShapeError("bias must cover rows row0 .. row0 + m - 1");
  FloatArray y({rows, n});
  if (y_init) {
    if (y_init->ndim() != 2 || y_init->shape(0) != rows || y_init->shape(1) != n)
      throw ShapeError("y_init must be (m, n)");
    std::copy(y_init->data(), y_init->data() + y_init->size(), y.mutable_data());
  }
  const Epilogue ep{bias ? bias->data() : nullptr, relu, y_init.has_value()};
  run(w.data(), static_cast<size_t>(k), static_cast<size_t>(rows), offsets.data(), static_cast<size_t>(k),
      x.data(), static_cast<size_t>(n), ep, static_cast<size_t>(row0), y.mutable_data(), static_cast<size_t>(n));
  return y;
}

// Runs a conv3 kernel (kernels.h) once (tests only): `kernel` "avx512", "avx2"
// or "scalar" (the reference); groups (kConv3Slots, rows) as the kernel reads
// them, y_init (rows, ldy) what Y holds before (col_begin >= 2: positions
// col_begin - 2 and col_begin - 1 are in it); x must hold every offset + the
// tiles' 64 floats.
FloatArray raw_conv3_kernel(const std::string& kernel, const FloatArray& values,
                            const py::array_t<uint32_t, py::array::c_style | py::array::forcecast>& offsets,
                            const py::array_t<uint32_t, py::array::c_style | py::array::forcecast>& groups,
                            const FloatArray& x, int64_t col_begin, int64_t col_end, const FloatArray& y_init,
                            const std::optional<FloatArray>& bias, bool relu, bool accumulate, int64_t period) {
  Conv3Kernel run = nullptr;
  if (kernel == "scalar") run = f32_conv3_scalar;
  if (kernel == "avx2") {
    if (!cpu_has_avx2_fma()) throw FormatError("the avx2 conv3 kernel needs a CPU with AVX2 and FMA");
    run = f32_conv3_avx2;
  }
  if (kernel == "avx512") {
    if (!cpu_has_avx512vl()) throw FormatError("the avx512 conv3 kernel needs a CPU with AVX-512F and VL");
    run = f32_conv3_avx512;
  }
  if (run == nullptr) throw FormatError("kernel '" + kernel + "' is not one of: avx512, avx2, scalar");
  if (y_init.ndim() != 2) throw ShapeError("y_init must be (rows, ldy)");
  const int64_t rows = y_init.shape(0), ldy = y_init.shape(1);
  if (groups.ndim() != 2 || groups.shape(0) != static_cast<int64_t>(kConv3Slots) || groups.shape(1) != rows)
    throw ShapeError("groups must be (" + std::to_string(kConv3Slots) + ", rows)");
  if (values.ndim() != 1 || offsets.ndim() != 1) throw ShapeError("values and offsets must be 1-D");
  if (col_begin < 2 || col_end <= col_begin || col_end > ldy) throw ShapeError("need 2 <= col_begin < col_end <= ldy");
  if (period < 0) throw ShapeError("period must be >= 0");
  const int64_t tiles_end = col_begin + (col_end - col_begin + 63) / 64 * 64;
  const uint32_t* g = groups.data();
  for (int64_t r = 0; r < rows; ++r) {
    uint64_t weights = g[(kConv3Slots - 1) * rows + r];
    for (size_t s = 0; s < kConv3Groups; ++s) {
      if (g[s * rows + r] > g[(s + 1) * rows + r] || g[(s + 1) * rows + r] > offsets.shape(0))
        throw ShapeError("groups must be nondecreasing entries within the offsets");
      weights += uint64_t{kConv3Width[s]} * (g[(s + 1) * rows + r] - g[s * rows + r]);
    }
    if (weights > static_cast<uint64_t>(values.shape(0))) throw ShapeError("a row's weights run past values");
  }
  for (int64_t k = 0; k < offsets.shape(0); ++k)
    if (static_cast<int64_t>(offsets.data()[k]) + tiles_end > x.size())
      throw ShapeError("x must hold offsets[k] + the tiles' floats");
  if (bias && bias->size() < rows) throw ShapeError("bias must cover the rows");
  FloatArray y({rows, ldy});
  std::copy(y_init.data(), y_init.data() + y_init.size(), y.mutable_data());
  const Epilogue ep{bias ? bias->data() : nullptr, relu, accumulate};
  run(values.data(), offsets.data(), g, static_cast<size_t>(rows), x.data(), ep, 0, static_cast<size_t>(rows),
      static_cast<size_t>(col_begin), static_cast<size_t>(col_end), y.mutable_data(), static_cast<size_t>(ldy),
      static_cast<size_t>(period));
  return y;
}

// Runs the 2x2 stride-2 max pooling kernel on one output row (tests only): x is
// (2, w), the two input rows; n outputs, 2 * n <= w.
FloatArray raw_maxpool2x2_kernel(const std::string& isa, const FloatArray& x, int64_t n) {
  if (x.ndim() != 2 || x.shape(0) != 2) throw ShapeError("x must be (2, w)");
  if (n < 0 || 2 * n > x.shape(1)) throw ShapeError("n must be in [0, w / 2]");
  FloatArray y(n);
  kernel_table(parse_isa(isa)).maxpool2x2(x.data(), static_cast<size_t>(x.shape(1)),
                                          static_cast<size_t>(n), y.mutable_data());
  return y;
}

// The transpose kernel on x[:, :cols] (x is (rows, ldi)) into a copy of
// out_init (cols, ldo), ldo >= rows: what it leaves alone stays (tests only).
FloatArray raw_transpose_kernel(const std::string& isa, const FloatArray& x, int64_t cols,
                                const FloatArray& out_init) {
  if (x.ndim() != 2 || out_init.ndim() != 2) throw ShapeError("x and out_init must be 2-D");
  if (cols < 0 || cols > x.shape(1)) throw ShapeError("cols must be in [0, x.shape[1]]");
  if (out_init.shape(0) != cols || out_init.shape(1) < x.shape(0))
    throw ShapeError("out_init must be (cols, ldo) with ldo >= x.shape[0]");
  FloatArray out(std::vector<py::ssize_t>{out_init.shape(0), out_init.shape(1)});
  std::memcpy(out.mutable_data(), out_init.data(), sizeof(float) * static_cast<size_t>(out_init.size()));
  kernel_table(parse_isa(isa)).transpose(x.data(), static_cast<size_t>(x.shape(1)), static_cast<size_t>(x.shape(0)),
                                         static_cast<size_t>(cols), out.mutable_data(),
                                         static_cast<size_t>(out_init.shape(1)));
  return out;
}

// x.T through transpose_matrix on the current thread pool, as the model and
// Flatten run it (tests only).
FloatArray transpose_on_pool(const std::string& isa, const FloatArray& x) {
  if (x.ndim() != 2) throw ShapeError("x must be 2-D");
  const size_t rows = static_cast<size_t>(x.shape(0)), cols = static_cast<size_t>(x.shape(1));
  FloatArray out(std::vector<py::ssize_t>{x.shape(1), x.shape(0)});
  const std::shared_ptr<ThreadPool> pool = current_pool();
  transpose_matrix(kernel_table(parse_isa(isa)), x.data(), rows, cols, out.mutable_data(), pool.get(),
                   static_cast<size_t>(pool->num_threads()));
  return out;
}

Choice parse_choice(const std::string& s) {
  if (s == "sparse") return Choice::kSparse;
  if (s == "dense") return Choice::kDense;
  if (s == "dense-direct") return Choice::kDenseDirect;
  if (s == "dense-winograd") return Choice::kDenseWinograd;
  throw FormatError("choice '" + s + "' is not one of: sparse, dense, dense-direct, dense-winograd");
}

FloatArray model_forward(const Model& model, const FloatArray& x) {
  if (x.ndim() != 2 && x.ndim() != 4)
    throw ShapeError("input must be (N, C, H, W) or (N, F), got " + std::to_string(x.ndim()) +
                     " dimensions");
  const int64_t batch = x.shape(0);
  Shape sample(x.shape() + 1, x.shape() + x.ndim());
  const Shape out_sample = model.output_shape(sample);
  std::vector<py::ssize_t> out_shape{batch};
  out_shape.insert(out_shape.end(), out_sample.begin(), out_sample.end());
  FloatArray y(out_shape);
  const float* in = x.data();
  float* out = y.mutable_data();
  {
    py::gil_scoped_release release;
    model.forward(in, batch, sample, out);
  }
  return y;
}

#ifdef SPARSENET_WITH_CUDA
Shape sample_shape(const std::vector<int64_t>& shape) {
  if (shape.size() != 2 && shape.size() != 4)
    throw ShapeError("input must be (N, C, H, W) or (N, F), got " + std::to_string(shape.size()) +
                     " dimensions");
  return Shape(shape.begin() + 1, shape.end());
}

FloatArray output_for(const CudaModel& model, int64_t batch, const Shape& sample) {
  const Shape out_sample = model.output_shape(sample);
  std::vector<py::ssize_t> out_shape{batch};
  out_shape.insert(out_shape.end(), out_sample.begin(), out_sample.end());
  return FloatArray(out_shape);
}

FloatArray cuda_model_forward(const CudaModel& model, const FloatArray& x) {
  const Shape sample = sample_shape(std::vector<int64_t>(x.shape(), x.shape() + x.ndim()));
  FloatArray y = output_for(model, x.shape(0), sample);
  const float* in = x.data();
  float* out = y.mutable_data();
  {
    py::gil_scoped_release release;
    model.forward(in, false, x.shape(0), sample, out);
  }
  return y;
}

// x: a float32 C-contiguous array in device memory, given by address and shape
// (from __cuda_array_interface__); the output comes back to host memory.
FloatArray cuda_model_forward_device(const CudaModel& model, uintptr_t address,
                                     const std::vector<int64_t>& shape) {
  const Shape sample = sample_shape(shape);
  FloatArray y = output_for(model, shape[0], sample);
  float* out = y.mutable_data();
  {
    py::gil_scoped_release release;
    model.forward(reinterpret_cast<const float*>(address), true, shape[0], sample, out);
  }
  return y;
}

FloatArray cuda_raw_csr(int64_t rows, int64_t cols, const Int64Array& indptr, const Int64Array& indices,
                        const FloatArray& values, const FloatArray& x,
                        const std::optional<FloatArray>& bias, bool relu, int index_bits) {
  const CsrMatrix m = make_csr("kernel test", rows, cols, indptr, indices, values);
  const bool vector = x.ndim() == 1;
  if ((x.ndim() != 1 && x.ndim() != 2) || x.shape(0) != cols)
    throw ShapeError("x must be (cols,) or (cols, n) with cols = " + std::to_string(cols));
  if (bias && bias->size() != rows) throw ShapeError("bias must have rows entries");
  const size_t n = vector ? 1 : static_cast<size_t>(x.shape(1));
  FloatArray y = vector ? FloatArray(rows) : FloatArray({rows, static_cast<int64_t>(n)});
  const float* b = bias ? bias->data() : nullptr;
  {
    py::gil_scoped_release release;
    cuda_raw_csr_kernel(m, x.data(), n, vector, b, relu, index_bits, y.mutable_data());
  }
  return y;
}

FloatArray cuda_raw_dense_product(const FloatArray& w, const FloatArray& x,
                                  const std::optional<FloatArray>& bias, bool relu) {
  if (w.ndim() != 2 || (x.ndim() != 1 && x.ndim() != 2) || x.shape(0) != w.shape(1))
    throw ShapeError("w must be (rows, cols) and x (cols,) or (cols, n)");
  const int64_t rows = w.shape(0), cols = w.shape(1);
  if (bias && bias->size() != rows) throw ShapeError("bias must have rows entries");
  const bool vector = x.ndim() == 1;
  const size_t n = vector ? 1 : static_cast<size_t>(x.shape(1));
  FloatArray y = vector ? FloatArray(rows) : FloatArray({rows, static_cast<int64_t>(n)});
  const float* b = bias ? bias->data() : nullptr;
  {
    py::gil_scoped_release release;
    cuda_raw_dense(w.data(), rows, cols, x.data(), n, vector, b, relu, y.mutable_data());
  }
  return y;
}
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "sparsenet C++ engine (private: use the sparsenet package)";

  static py::exception<Error> model_error(m, "ModelError", PyExc_ValueError);
  py::register_exception<ShapeError>(m, "ShapeError", model_error.ptr());
  py::register_exception<WeightError>(m, "WeightError", model_error.ptr());
  py::register_exception<FormatError>(m, "FormatError", model_error.ptr());
  py::register_exception<DeviceError>(m, "DeviceError", model_error.ptr());
  py::register_exception<InputError>(m, "InputError", model_error.ptr());

  py::dict auto_sparse_density;
  auto_sparse_density["linear"] = kAutoLinearSparseDensity;
  auto_sparse_density["conv2d"] = kAutoConvSparseDensity;
  m.attr("AUTO_SPARSE_DENSITY") = auto_sparse_density;
  m.def("_auto_always_sparse",
        [](const std::string& kind, int64_t rows, int64_t cols, size_t nnz) {
          return auto_always_sparse(kind == "linear" ? kAutoLinearSparseDensity : kAutoConvSparseDensity,
                                    rows, cols, nnz);
        },
        py::arg("kind"), py::arg("rows"), py::arg("cols"), py::arg("nnz"),
        "Whether an auto 'linear' or 'conv2d' layer of this size always runs sparse (no dense copy).");

  m.def("set_num_threads", &set_num_threads, py::arg("num_threads"));
  m.def("get_num_threads", &get_num_threads);
  m.def("cpu_has_avx2_fma", &cpu_has_avx2_fma);
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("blas_info", &blas_info);
  m.def("cpu_has_avx512vl", &cpu_has_avx512vl, "True where the CPU has AVX-512F and VL.");
  m.def("avx512_kernels", &avx512_kernels_enabled,
        "True where the avx2 kernel table takes its AVX-512 kernels (csrmv_u16_l1, conv3): the CPU "
        "has AVX-512F and VL and SPARSENET_AVX512 is not 0.");

  py::class_<Layer, std::shared_ptr<Layer>>(m, "Layer")
      .def_property_readonly("name", &Layer::name)
      .def_property_readonly("kind", &Layer::kind)
      .def("output_shape", &Layer::output_shape, py::arg("input_shape"));

  py::class_<WeightedLayer, Layer, std::shared_ptr<WeightedLayer>>(m, "WeightedLayer")
      .def_property_readonly("backend", [](const WeightedLayer& l) { return backend_name(l.backend()); })
      .def_property_readonly("isa", [](const WeightedLayer& l) { return isa_name(l.isa()); })
      .def_property_readonly("choices",
                             [](const WeightedLayer& l) {
                               py::dict out;
                               for (const auto& kv : l.choices()) out[py::int_(kv.first)] = choice_name(kv.second);
                               return out;
                             },
                             "An auto layer's measured choices: input-size key -> 'sparse', 'dense' "
                             "or (stride-1 convolutions) 'dense-direct' or 'dense-winograd'.")
      .def("_pin_choice", [](WeightedLayer& l, const std::string& choice) { l.pin_choice(parse_choice(choice)); },
           py::arg("choice"), "Run `choice` for every input size, measuring nothing (tests only).")
      .def("_can_run", [](const WeightedLayer& l, const std::string& choice) { return l.can_run(parse_choice(choice)); },
           py::arg("choice"))
      .def_property_readonly("nnz", &WeightedLayer::nnz)
      .def_property_readonly("rows", &WeightedLayer::rows)
      .def_property_readonly("cols", &WeightedLayer::cols)
      .def_property_readonly("holds_csr", [](const WeightedLayer& l) { return l.backend() != Backend::kDense; },
                             "True when the layer keeps the CSR weight it was built from, exactly "
                             "(sparse and auto layers): weight_arrays() then gives it back unchanged.")
      .def("weight_arrays", [](const WeightedLayer& l) {
             const CsrMatrix w = l.weight_csr();
             Int64Array indptr(static_cast<py::ssize_t>(w.row_ptr().size()));
             Int64Array indices(static_cast<py::ssize_t>(w.nnz()));
             FloatArray data(static_cast<py::ssize_t>(w.nnz()));
             std::copy(w.row_ptr().begin(), w.row_ptr().end(), indptr.mutable_data());
             if (w.narrow_indices())
               std::copy(w.col16().begin(), w.col16().end(), indices.mutable_data());
             else
               std::copy(w.col32().begin(), w.col32().end(), indices.mutable_data());
             std::copy(w.values().begin(), w.values().end(), data.mutable_data());
             return py::make_tuple(indptr, indices, data);
           },
           "The weight as CSR arrays (indptr int64, indices int64, data float32) over its "
           "(rows, cols) matrix view; for a dense layer, its nonzeros.");

  py::class_<Linear, WeightedLayer, std::shared_ptr<Linear>>(m, "Linear")
      .def(py::init([](const std::string& name, const std::string& key, int64_t rows, int64_t cols,
                       const Int64Array& indptr, const Int64Array& indices,
                       const FloatArray& values, const std::optional<FloatArray>& bias,
                       const std::string& backend) {
             const std::string ctx = "linear layer '" + name + "' key '" + key + "'";
             return std::make_shared<Linear>(name, make_csr(ctx, rows, cols, indptr, indices, values),
                                             to_vector(bias), parse_backend(backend));
           }),
           py::arg("name"), py::arg("key"), py::arg("rows"), py::arg("cols"), py::arg("indptr"),
           py::arg("indices"), py::arg("values"), py::arg("bias"), py::arg("backend"))
      .def_property_readonly("_uses_sell", &Linear::uses_sell,
                             "Whether batch 1 runs on the sliced-window layout (tests).");

  py::class_<Conv2d, WeightedLayer, std::shared_ptr<Conv2d>>(m, "Conv2d")
      .def(py::init([](const std::string& name, const std::string& key, int64_t out_channels,
                       int64_t in_channels, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                       int64_t stride_w, int64_t pad_h, int64_t pad_w, const Int64Array& indptr,
                       const Int64Array& indices, const FloatArray& values,
                       const std::optional<FloatArray>& bias, const std::string& backend, bool same_padding) {
             const std::string ctx = "conv2d layer '" + name + "' key '" + key + "'";
             return std::make_shared<Conv2d>(
                 name,
                 make_csr(ctx, out_channels, in_channels * kernel_h * kernel_w, indptr, indices, values),
                 to_vector(bias), in_channels, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                 parse_backend(backend), same_padding);
           }),
           py::arg("name"), py::arg("key"), py::arg("out_channels"), py::arg("in_channels"),
           py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"),
           py::arg("pad_h"), py::arg("pad_w"), py::arg("indptr"), py::arg("indices"),
           py::arg("values"), py::arg("bias"), py::arg("backend"), py::arg("same_padding") = false)
      .def_property_readonly("_uses_conv3", &Conv2d::uses_conv3,
                             "Whether sparse direct convolution runs the conv3 kernel (tests only).");

  py::class_<Pool2d, Layer, std::shared_ptr<Pool2d>>(m, "Pool2d")
      .def(py::init([](const std::string& name, const std::string& mode, int64_t kh, int64_t kw,
                       int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool ceil_mode,
                       bool count_include_pad, bool same_padding, std::pair<int64_t, int64_t> input_size) {
             if (mode != "max" && mode != "avg")
               throw FormatError("pool layer '" + name + "': mode must be 'max' or 'avg'");
             return std::make_shared<Pool2d>(name, mode == "max" ? PoolMode::kMax : PoolMode::kAverage,
                                             kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad,
                                             same_padding, input_size.first, input_size.second);
           }),
           py::arg("name"), py::arg("mode"), py::arg("kernel_h"), py::arg("kernel_w"),
           py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
           py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("same_padding") = false,
           py::arg("input_size") = std::pair<int64_t, int64_t>{0, 0});

  m.def("global_pool2d",
        [](const std::string& name, const std::string& mode) {
          if (mode != "max" && mode != "avg")
            throw FormatError("pool layer '" + name + "': mode must be 'max' or 'avg'");
          return Pool2d::global(name, mode == "max" ? PoolMode::kMax : PoolMode::kAverage);
        },
        py::arg("name"), py::arg("mode"), "A global pool: each whole (H, W) map to one value.");

  py::class_<ReLU, Layer, std::shared_ptr<ReLU>>(m, "ReLU").def(py::init<std::string>(), py::arg("name"));
  py::class_<Flatten, Layer, std::shared_ptr<Flatten>>(m, "Flatten").def(py::init<std::string>(), py::arg("name"));
  py::class_<Softmax, Layer, std::shared_ptr<Softmax>>(m, "Softmax").def(py::init<std::string>(), py::arg("name"));
  py::class_<Dropout, Layer, std::shared_ptr<Dropout>>(m, "Dropout").def(py::init<std::string>(), py::arg("name"));

  py::class_<Model>(m, "Model")
      .def(py::init([](const std::vector<std::shared_ptr<Layer>>& layers) {
             return Model(std::vector<std::shared_ptr<const Layer>>(layers.begin(), layers.end()));
           }),
           py::arg("layers"))
      .def_property_readonly("name", &Model::name)
      .def_property_readonly("input_shape", &Model::input_shape)
      .def_property_readonly("layers", [](const Model& m) {
        std::vector<std::shared_ptr<Layer>> out;
        for (const auto& l : m.layers()) out.push_back(std::const_pointer_cast<Layer>(l));
        return out;
      })
      .def("output_shape", &Model::output_shape, py::arg("input_shape"))
      .def("forward", &model_forward, py::arg("x"),
           "Forward pass of a float32 C-contiguous (N, C, H, W) or (N, F) batch; releases the GIL.");

  m.def("load_model",
        [](const std::string& path, const std::string& backend, uint64_t max_bytes) {
          LoadOptions options;
          options.backend = parse_backend(backend);
          options.max_bytes = max_bytes;
          py::gil_scoped_release release;
          return load_model(path, options);
        },
        py::arg("path"), py::arg("backend") = "auto", py::arg("max_bytes") = uint64_t{16} << 30,
        "The C++ loader (for C++ applications; Python's Model.load is the front end).");

  m.def("validate_csr",
        [](const std::string& context, int64_t rows, int64_t cols, const Int64Array& indptr,
           const Int64Array& indices, const FloatArray& values) {
          make_csr(context, rows, cols, indptr, indices, values);
        },
        py::arg("context"), py::arg("rows"), py::arg("cols"), py::arg("indptr"), py::arg("indices"),
        py::arg("values"), "Raise WeightError unless the arrays form a valid CSR matrix.");

  m.def("_raw_csr_kernel", &raw_csr_kernel, py::arg("isa"), py::arg("rows"), py::arg("cols"),
        py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("x"),
        py::arg("bias") = py::none(), py::arg("relu") = false, py::arg("index_bits") = 16,
        py::arg("row_begin") = 0, py::arg("row_end") = -1, py::arg("col_begin") = 0,
        py::arg("col_end") = -1, py::arg("y_init") = py::none(), py::arg("column_window") = py::none(),
        py::arg("x_loads") = false, py::arg("l1_variant") = "", py::arg("mm_variant") = "",
        py::arg("prefetch") = false, py::arg("stream") = true,
        "Run one registry kernel directly (tests and benchmarks only). y_init (rows,) or "
        "(rows, n) makes it accumulate; csrmm only: column_window (lo, hi) restricts it to those weight columns. "
        "csrmv with 16-bit indices only: x_loads runs csrmv_u16_l1 (x read by loads, not gathers), "
        "the table's or the l1_variant named ('avx2', 'avx512'); csrmm: the table's kernel or the "
        "mm_variant named ('avx2', 'avx512'). "
        "prefetch sets CsrRef::prefetch (csrmm: prefetch X rows ahead), stream CsrRef::stream "
        "(csrmv: prefetch the nonzeros ahead); neither changes the result.");
  m.def("_raw_conv_dense_kernel", &raw_conv_dense_kernel, py::arg("kernel"), py::arg("w"),
        py::arg("offsets"), py::arg("x"), py::arg("n"), py::arg("bias") = py::none(),
        py::arg("relu") = false, py::arg("row0") = 0, py::arg("y_init") = py::none(),
        "Run a dense direct convolution tile ('avx512', 'avx2' or the 'scalar' reference) once (tests only); "
        "y_init (m, n) makes it accumulate.");
  m.def("_raw_conv3_kernel", &raw_conv3_kernel, py::arg("kernel"), py::arg("values"), py::arg("offsets"),
        py::arg("groups"), py::arg("x"), py::arg("col_begin"), py::arg("col_end"), py::arg("y_init"),
        py::arg("bias") = py::none(), py::arg("relu") = false, py::arg("accumulate") = false, py::arg("period") = 0,
        "Run a conv3 kernel ('avx512', 'avx2' or the 'scalar' reference) once over all rows (tests only).");
  m.def("_raw_maxpool2x2_kernel", &raw_maxpool2x2_kernel, py::arg("isa"), py::arg("x"), py::arg("n"),
        "Run the 2x2 stride-2 max pooling kernel on one output row (tests only).");
  m.def("_raw_transpose_kernel", &raw_transpose_kernel, py::arg("isa"), py::arg("x"), py::arg("cols"),
        py::arg("out_init"), "Run the transpose kernel on x[:, :cols] into a copy of out_init (tests only).");
  m.def("_transpose_matrix", &transpose_on_pool, py::arg("isa"), py::arg("x"),
        "x.T as the model's transposes compute it, split over the current thread pool (tests only).");
  m.def("_all_finite", [](const FloatArray& a) { return all_finite(a.data(), static_cast<size_t>(a.size())); },
        py::arg("array"), "Model::forward's input check on a float32 C-contiguous array (tests only).");
  m.def("last_level_cache_bytes", &last_level_cache_bytes,
        "The last-level cache's size as sysfs lists it for CPU 0, else as the C library reports it "
        "(0 where unknown).");
  m.def("_csrmv_stream_bytes", &csrmv_stream_bytes,
        "Batch-1 layers whose nonzeros take more bytes than this prefetch them (CsrRef::stream).");
  m.def("_raw_sell_kernel", &raw_sell_kernel, py::arg("kernel"), py::arg("rows"), py::arg("cols"),
        py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("x"), py::arg("bias") = py::none(),
        py::arg("relu") = false, py::arg("row_begin") = 0, py::arg("row_end") = -1,
        py::arg("y_init") = py::none(), py::arg("stream") = false,
        "Build the sliced-window layout of a CSR matrix and run one sellmv kernel ('avx512' or the "
        "'scalar' reference) over a row range (tests only); y_init (rows,) makes it accumulate; "
        "stream sets SellRef::stream (prefetch), which changes no result. Returns (y, steps).");
  m.def("_sellmv_win", &sellmv_win,
        "Whether batch-1 layers may use the sliced-window kernel on this CPU (it beat csrmv here).");
  m.def("_csrmv_l1_loads_win", &csrmv_l1_loads_win,
        "Whether batch-1 layers with an L1-resident input use csrmv_u16_l1 on this CPU.");
  m.def("_cpu_full_width_avx512", &cpu_full_width_avx512,
        "Whether 512-bit FMAs run at the 256-bit rate here (measured once; false without the AVX-512 "
        "kernels): 3-wide direct convolution then computes 128 positions per call on every map.");

#ifdef SPARSENET_WITH_CUDA
  m.def("cuda_built", [] { return true; });
  m.def("cuda_available", [] { return cuda_device_available(); },
        "True when the CUDA path is built and a CUDA device is present.");
  m.def("cuda_device", &cuda_device_description);
  py::class_<CudaModel>(m, "CudaModel")
      .def(py::init([](const Model& model, const std::string& backend) {
             return std::make_unique<CudaModel>(model, parse_backend(backend));
           }),
           py::arg("model"), py::arg("backend"))
      .def("output_shape", &CudaModel::output_shape, py::arg("input_shape"))
      .def_property_readonly("layer_backends", &CudaModel::layer_backends)
      .def_property_readonly("device", &CudaModel::device)
      .def("forward", &cuda_model_forward, py::arg("x"),
           "Forward pass of a host float32 C-contiguous batch on the device; releases the GIL.")
      .def("forward_device", &cuda_model_forward_device, py::arg("address"), py::arg("shape"),
           "Forward pass of a float32 C-contiguous batch already in device memory.");
  m.def("_cuda_raw_csr_kernel", &cuda_raw_csr, py::arg("rows"), py::arg("cols"), py::arg("indptr"),
        py::arg("indices"), py::arg("values"), py::arg("x"), py::arg("bias") = py::none(),
        py::arg("relu") = false, py::arg("index_bits") = 16, "One CUDA CSR kernel (tests only).");
  m.def("_cuda_raw_dense", &cuda_raw_dense_product, py::arg("w"), py::arg("x"),
        py::arg("bias") = py::none(), py::arg("relu") = false, "cuBLAS W x (tests only).");
  m.def("_cuda_time_csr", [](int64_t rows, int64_t cols, const Int64Array& indptr, const Int64Array& indices,
                             const FloatArray& values, size_t n, int repeats) {
          const CsrMatrix a = make_csr("benchmark", rows, cols, indptr, indices, values);
          py::gil_scoped_release release;
          return cuda_time_csr_kernel(a, n, repeats);
        }, py::arg("rows"), py::arg("cols"), py::arg("indptr"), py::arg("indices"), py::arg("values"),
        py::arg("n"), py::arg("repeats"), "Median device seconds of the CSR kernel (benchmarks).");
  m.def("_cuda_time_dense", [](int64_t rows, int64_t cols, size_t n, int repeats) {
          py::gil_scoped_release release;
          return cuda_time_dense(rows, cols, n, repeats);
        }, py::arg("rows"), py::arg("cols"), py::arg("n"), py::arg("repeats"),
        "Median device seconds of cuBLAS sgemv / sgemm (benchmarks).");
#else
  m.def("cuda_built", [] { return false; });
  m.def("cuda_available", [] { return false; },
        "False: this build has no CUDA path (SPARSENET_ENABLE_CUDA=OFF).");
#endif
}
