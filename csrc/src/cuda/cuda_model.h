// The CUDA path's host side (private; built only with SPARSENET_ENABLE_CUDA=ON).
// No CUDA types here: the bindings include this header with a plain C++ compiler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparsenet/csr.h"
#include "sparsenet/layers.h"
#include "sparsenet/model.h"

namespace sparsenet {

// True when a CUDA device and a driver that can run it are present.
bool cuda_device_available();

// "<name> (sm_XY, N GiB)" of the current device; throws DeviceError without one.
std::string cuda_device_description();

// Layers of `backend="auto"` at most this dense run sparse on the device,
// denser ones on cuBLAS. A placeholder until measured on a GPU: Sputnik
// (Gale et al., SC20) beats dense from about 71 % sparsity.
constexpr double kCudaAutoSparseDensity = 0.10;

// A Model's layers uploaded to the current CUDA device. forward() copies the
// input to the device once, runs every layer there and copies the output back
// once. Weighted layers run CSR kernels (sparse) or cuBLAS (dense); with kAuto,
// per layer by density (kCudaAutoSparseDensity). Serialised by a mutex: one
// forward pass at a time per CudaModel. Throws DeviceError when no device is
// present or a CUDA call fails, FormatError for a layer kind without a CUDA
// kernel, std::bad_alloc when device memory runs out.
class CudaModel {
 public:
  CudaModel(const Model& model, Backend backend);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  // One sample's output shape (as Model::output_shape).
  Shape output_shape(const Shape& input) const;

  // in:  batch samples of shape `input`, sample-major, in host memory when
  //      `in_on_device` is false, in device memory otherwise (no host copy).
  // out: batch * prod(output_shape(input)) floats, sample-major, host memory.
  // A host input with a NaN or an Inf throws InputError, as Model::forward;
  // a device input is not checked.
  void forward(const float* in, bool in_on_device, int64_t batch, const Shape& input,
               float* out) const;

  // What each weighted layer runs: (layer name, "sparse" or "dense").
  std::vector<std::pair<std::string, std::string>> layer_backends() const;
  std::string device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One CSR kernel on the device (tests and benchmarks): y = act(A x + bias) for
// x of cols floats (csrmv, `vector` true) or cols x n row-major (csrmm); y has
// rows (x n) floats; host buffers. index_bits 16 needs cols <= 65536.
void cuda_raw_csr_kernel(const CsrMatrix& a, const float* x, size_t n, bool vector,
                         const float* bias, bool relu, int index_bits, float* y);

// Dense y = act(W x + bias) through cuBLAS (sgemv for n == 1 and `vector`,
// sgemm otherwise); W rows x cols row-major, host buffers. The baseline the
// benchmarks compare against.
void cuda_raw_dense(const float* w, int64_t rows, int64_t cols, const float* x, size_t n,
                    bool vector, const float* bias, bool relu, float* y);

// Median seconds of `repeats` device-side runs (CUDA events, after one warm-up)
// of the CSR kernel or of cuBLAS on device-resident operands: benchmarks only.
double cuda_time_csr_kernel(const CsrMatrix& a, size_t n, int repeats);
double cuda_time_dense(int64_t rows, int64_t cols, size_t n, int repeats);

}  // namespace sparsenet
