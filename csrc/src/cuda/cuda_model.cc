// Host side of the CUDA path: device buffers, weight upload, the layer loop,
// cuBLAS for the dense baseline. Compiled by the C++ compiler against the CUDA
// runtime; kernels are reached through kernels_cuda.h launchers.
#include "cuda/cuda_model.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "finite.h"
#include "kernels_cuda.h"
#include "sparsenet/errors.h"

namespace sparsenet {
namespace {

void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky-free error so later calls do not see it
  if (status == cudaErrorMemoryAllocation) throw std::bad_alloc();
  throw DeviceError(std::string("CUDA: ") + what + " failed: " + cudaGetErrorName(status) + " (" +
                    cudaGetErrorString(status) + ")");
}

void check(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  if (status == CUBLAS_STATUS_ALLOC_FAILED) throw std::bad_alloc();
  throw DeviceError(std::string("cuBLAS: ") + what + " failed with status " +
                    std::to_string(static_cast<int>(status)));
}

void require_device() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw DeviceError(std::string("no CUDA device: ") +
                      (status != cudaSuccess ? cudaGetErrorString(status) : "none found") +
                      " (sparsenet.cuda_available() tells beforehand)");
  }
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// A grow-only device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { if (ptr_) cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }

  void reserve(size_t bytes) {
    if (bytes <= bytes_) return;
    if (ptr_) check(cudaFree(ptr_), "cudaFree");
    ptr_ = nullptr;
    bytes_ = 0;
    check(cudaMalloc(&ptr_, std::max<size_t>(bytes, 256)), "cudaMalloc");
    bytes_ = bytes;
  }
  template <typename T>
  void upload(const T* data, size_t count) {
    reserve(sizeof(T) * count);
    if (count) check(cudaMemcpy(ptr_, data, sizeof(T) * count, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  float* f() const { return static_cast<float*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A weight on the device, sparse (CSR, 16- or 32-bit columns) or dense (row-major).
struct DeviceWeight {
  int64_t rows = 0, cols = 0;
  size_t nnz = 0;
  bool sparse = true;
  bool narrow = true;
  DeviceBuffer row_ptr, col, values, dense, bias;
  bool has_bias = false;

  void upload(const CsrMatrix& w, const std::vector<float>* dense_rows, const std::vector<float>& b,
              bool as_sparse) {
    rows = w.rows();
    cols = w.cols();
    nnz = w.nnz();
    sparse = as_sparse;
    narrow = w.narrow_indices();
    if (sparse) {
      row_ptr.upload(w.row_ptr().data(), w.row_ptr().size());
      if (narrow) col.upload(w.col16().data(), w.col16().size());
      else col.upload(w.col32().data(), w.col32().size());
      values.upload(w.values().data(), w.values().size());
    } else {
      dense.upload(dense_rows->data(), dense_rows->size());
    }
    has_bias = !b.empty();
    if (has_bias) bias.upload(b.data(), b.size());
  }
  const float* bias_ptr() const { return has_bias ? bias.f() : nullptr; }

  // Y[rows x n] = act(W X[cols x n] + bias), X and Y row-major (ldx, ldy);
  // `vector` (n == 1, contiguous) takes SpMV / sgemv.
  void multiply(cublasHandle_t cublas, cudaStream_t stream, const float* x, size_t ldx, size_t n,
                bool relu, float* y, size_t ldy) const {
    if (n == 0 || rows == 0) return;
    const bool vector = n == 1 && ldx == 1 && ldy == 1;
    if (sparse) {
      if (!vector && n > cuda::kMaxSpmmColumns)
        throw ShapeError("CUDA SpMM: " + std::to_string(n) + " columns exceed the kernel's limit of " +
                         std::to_string(cuda::kMaxSpmmColumns));
      if (narrow) {
        const cuda::DeviceCsr<uint16_t> a{row_ptr.as<uint32_t>(), col.as<uint16_t>(), values.f(), rows, cols, nnz};
        if (vector) cuda::f32_csrmv_cuda(a, x, bias_ptr(), relu, y, stream);
        else cuda::f32_csrmm_cuda(a, x, ldx, n, bias_ptr(), relu, y, ldy, stream);
      } else {
        const cuda::DeviceCsr<uint32_t> a{row_ptr.as<uint32_t>(), col.as<uint32_t>(), values.f(), rows, cols, nnz};
        if (vector) cuda::f32_csrmv_cuda(a, x, bias_ptr(), relu, y, stream);
        else cuda::f32_csrmm_cuda(a, x, ldx, n, bias_ptr(), relu, y, ldy, stream);
      }
      return;
    }
    // cuBLAS is column-major: row-major W (rows x cols) is column-major W^T
    // with ld = cols, and row-major Y = W X is column-major Y^T = X^T W^T.
    const float one = 1.0f, zero = 0.0f;
    if (cols == 0) {
      check(cudaMemset2DAsync(y, ldy * sizeof(float), 0, n * sizeof(float), static_cast<size_t>(rows), stream),
            "cudaMemset2DAsync");
    } else if (vector) {
      check(cublasSgemv(cublas, CUBLAS_OP_T, static_cast<int>(cols), static_cast<int>(rows), &one,
                        dense.f(), static_cast<int>(cols), x, 1, &zero, y, 1),
            "cublasSgemv");
    } else {
      check(cublasSgemm(cublas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(rows),
                        static_cast<int>(cols), &one, x, static_cast<int>(ldx), dense.f(),
                        static_cast<int>(cols), &zero, y, static_cast<int>(ldy)),
            "cublasSgemm");
    }
    cuda::f32_bias_relu_cuda(y, rows, static_cast<int64_t>(n), ldy, bias_ptr(), relu, stream);
  }
};

// cuBLAS takes int dimensions.
void check_int_range(const Layer& layer, int64_t rows, int64_t cols, int64_t n) {
  constexpr int64_t kMax = 2147483647;
  if (rows > kMax || cols > kMax || n > kMax)
    throw ShapeError(std::string(layer.kind()) + " layer '" + layer.name() +
                     "': dimensions beyond 2^31 - 1 for the CUDA path");
}

// im2col chunks stay below this many floats (256 MiB) unless one image needs more.
constexpr size_t kChunkFloats = size_t{64} << 20;

struct Resources {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  Resources() {
    require_device();
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    const cublasStatus_t status = cublasCreate(&cublas);
    if (status != CUBLAS_STATUS_SUCCESS) {
      cudaStreamDestroy(stream);
      check(status, "cublasCreate");
    }
    cublasSetStream(cublas, stream);
  }
  ~Resources() {
    if (cublas) cublasDestroy(cublas);
    if (stream) cudaStreamDestroy(stream);
  }
  Resources(const Resources&) = delete;
  Resources& operator=(const Resources&) = delete;
};

}  // namespace

bool cuda_device_available() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

std::string cuda_device_description() {
  require_device();
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
         ", " + std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
}

// --- CudaModel ----------------------------------------------------------------

struct CudaModel::Impl {
  enum class Op { kLinear, kConv, kPool, kRelu, kFlatten, kSoftmax };
  struct Step {
    std::shared_ptr<const Layer> layer;
    Op op;
    bool fuse_relu = false;
    std::unique_ptr<DeviceWeight> weight;  // Linear, Conv2d
  };

  Resources res;
  std::vector<std::shared_ptr<const Layer>> layers;  // for shapes, all of them
  std::vector<Step> steps;
  mutable std::mutex mutex;
  mutable DeviceBuffer input, a, b, patches, product;

  void run_step(const Step& s, const float* in, const Shape& in_shape, float* out,
                const Shape& out_shape, int64_t batch) const;

  // Images per im2col chunk of a convolution: the patch matrix stays below
  // kChunkFloats (unless one image needs more) and within the SpMM column limit.
  size_t conv_chunk(const Step& s, const Shape& out_shape, size_t nb) const {
    const size_t p = static_cast<size_t>(out_shape[1] * out_shape[2]);
    const size_t rows = static_cast<size_t>(s.weight->rows), cols = static_cast<size_t>(s.weight->cols);
    if (p > cuda::kMaxSpmmColumns)
      throw ShapeError("conv2d layer '" + s.layer->name() + "': an output map of " + std::to_string(p) +
                       " pixels exceeds the CUDA kernels' limit of " + std::to_string(cuda::kMaxSpmmColumns));
    size_t chunk = std::max<size_t>(1, kChunkFloats / std::max<size_t>(1, std::max(cols, rows) * p));
    chunk = std::min({chunk, nb, cuda::kMaxSpmmColumns / p});
    check_int_range(*s.layer, s.weight->rows, s.weight->cols, static_cast<int64_t>(chunk * p));
    return chunk;
  }
};

CudaModel::CudaModel(const Model& model, Backend backend) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.layers = model.layers();
  for (const auto& layer : m.layers) {
    if (layer->is_identity()) continue;
    const std::string kind = layer->kind();
    if (kind == "relu" && !m.steps.empty() && !m.steps.back().fuse_relu &&
        m.steps.back().layer->accepts_fused_relu()) {
      m.steps.back().fuse_relu = true;
      continue;
    }
    Impl::Step step;
    step.layer = layer;
    if (const auto* w = dynamic_cast<const WeightedLayer*>(layer.get())) {
      if (!dynamic_cast<const Linear*>(w) && !dynamic_cast<const Conv2d*>(w))
        throw FormatError(kind + " layer '" + layer->name() + "' has no CUDA implementation");
      step.op = dynamic_cast<const Linear*>(w) ? Impl::Op::kLinear : Impl::Op::kConv;
      const CsrMatrix csr = w->weight_csr();
      const bool sparse = backend == Backend::kSparse ||
                          (backend == Backend::kAuto && csr.density() <= kCudaAutoSparseDensity);
      std::vector<float> dense;
      if (!sparse) dense = w->weight_dense();
      step.weight = std::make_unique<DeviceWeight>();
      step.weight->upload(csr, &dense, w->bias(), sparse);
    } else if (dynamic_cast<const Pool2d*>(layer.get())) {
      step.op = Impl::Op::kPool;
    } else if (kind == "relu") {
      step.op = Impl::Op::kRelu;
    } else if (kind == "flatten") {
      step.op = Impl::Op::kFlatten;
    } else if (kind == "softmax") {
      step.op = Impl::Op::kSoftmax;
    } else {
      throw FormatError(kind + " layer '" + layer->name() + "' has no CUDA implementation");
    }
    m.steps.push_back(std::move(step));
  }
  check(cudaDeviceSynchronize(), "weight upload");
}

CudaModel::~CudaModel() = default;

Shape CudaModel::output_shape(const Shape& input) const {
  if (input.size() != 1 && input.size() != 3)
    throw ShapeError("model input must be (N, C, H, W) or (N, F); got per-sample shape " +
                     shape_to_string(input));
  Shape shape = input;
  for (const auto& layer : impl_->layers) shape = layer->output_shape(shape);
  return shape;
}

std::vector<std::pair<std::string, std::string>> CudaModel::layer_backends() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : impl_->steps)
    if (s.weight) out.emplace_back(s.layer->name(), s.weight->sparse ? "sparse" : "dense");
  return out;
}

std::string CudaModel::device() const { return cuda_device_description(); }

void CudaModel::Impl::run_step(const Step& s, const float* in, const Shape& in_shape, float* out,
                               const Shape& out_shape, int64_t batch) const {
  cudaStream_t stream = res.stream;
  const size_t nb = static_cast<size_t>(batch);
  switch (s.op) {
    case Op::kLinear: {
      check_int_range(*s.layer, s.weight->rows, s.weight->cols, batch);
      s.weight->multiply(res.cublas, stream, in, nb, nb, s.fuse_relu, out, nb);
      return;
    }
    case Op::kConv: {
      const auto& conv = static_cast<const Conv2d&>(*s.layer);
      const Window2d w = conv.window();
      const cuda::ConvShape g{in_shape[0], in_shape[1], in_shape[2], w.kernel_h, w.kernel_w,
                              w.stride_h, w.stride_w, w.pad_h, w.pad_w, out_shape[1], out_shape[2]};
      const size_t p = static_cast<size_t>(g.out_h * g.out_w);
      const size_t rows = static_cast<size_t>(s.weight->rows);
      const size_t chunk = conv_chunk(s, out_shape, nb);  // forward() reserved patches and product
      const size_t in_stride = static_cast<size_t>(numel(in_shape)), out_stride = rows * p;
      for (size_t first = 0; first < nb; first += chunk) {
        const size_t count = std::min(chunk, nb - first);
        const size_t width = count * p;
        cuda::f32_im2col_cuda(in + first * in_stride, static_cast<int64_t>(count), g, patches.f(), stream);
        if (count == 1) {  // rows x p is this image's (C, H, W) output
          s.weight->multiply(res.cublas, stream, patches.f(), width, width, s.fuse_relu,
                             out + first * out_stride, width);
        } else {           // (rows, count, p) -> (count, rows, p)
          s.weight->multiply(res.cublas, stream, patches.f(), width, width, s.fuse_relu, product.f(), width);
          cuda::f32_swap_axes_cuda(product.f(), static_cast<int64_t>(rows), static_cast<int64_t>(count),
                                   static_cast<int64_t>(p), out + first * out_stride, stream);
        }
      }
      return;
    }
    case Op::kPool: {
      const auto& pool = static_cast<const Pool2d&>(*s.layer);
      const Window2d w = pool.window(in_shape);
      const cuda::PoolShape ps{batch * in_shape[0], in_shape[1], in_shape[2], w.kernel_h, w.kernel_w,
                               w.stride_h, w.stride_w, w.pad_h, w.pad_w, out_shape[1], out_shape[2],
                               pool.mode() == PoolMode::kMax, pool.count_include_pad()};
      cuda::f32_pool2d_cuda(in, ps, out, stream);
      return;
    }
    case Op::kRelu:
      cuda::f32_relu_cuda(in, out, nb * static_cast<size_t>(numel(in_shape)), stream);
      return;
    case Op::kFlatten: {
      const int64_t features = numel(in_shape);
      if (in_shape.size() == 3 && batch > 1)  // (N, F) sample-major to feature-major (F, N)
        cuda::f32_swap_axes_cuda(in, batch, features, 1, out, stream);
      else
        check(cudaMemcpyAsync(out, in, sizeof(float) * nb * static_cast<size_t>(features),
                              cudaMemcpyDeviceToDevice, stream),
              "cudaMemcpyAsync D2D");
      return;
    }
    case Op::kSoftmax:
      cuda::f32_softmax_cuda(in, in_shape[0], batch, out, stream);
      return;
  }
}

void CudaModel::forward(const float* in, bool in_on_device, int64_t batch, const Shape& input,
                        float* out) const {
  if (batch < 0) throw ShapeError("batch size must be >= 0, got " + std::to_string(batch));
  const Shape final_shape = output_shape(input);
  if (batch == 0) return;
  Impl& m = *impl_;
  std::vector<Shape> shapes{input};
  for (const auto& s : m.steps) shapes.push_back(s.layer->output_shape(shapes.back()));
  size_t max_elements = 0;
  for (const Shape& s : shapes) {
    const int64_t n = numel(s);
    if (n > (int64_t{1} << 40) / batch) throw ShapeError("batch too large for activation " + shape_to_string(s));
    max_elements = std::max(max_elements, static_cast<size_t>(n * batch));
  }
  const size_t nb = static_cast<size_t>(batch);
  const size_t in_elements = nb * static_cast<size_t>(numel(input));
  if (!in_on_device && !all_finite(in, in_elements)) {  // a device input is not read back to check
    Shape full{batch};
    full.insert(full.end(), input.begin(), input.end());
    throw InputError("input of shape " + shape_to_string(full) + " contains NaN or Inf");
  }

  // Every buffer is sized before the first launch: a reallocation (cudaFree)
  // while kernels of this pass are in flight would be a hazard.
  size_t patch_floats = 0, product_floats = 0;
  for (size_t i = 0; i < m.steps.size(); ++i) {
    if (m.steps[i].op != Impl::Op::kConv) continue;
    const size_t chunk = m.conv_chunk(m.steps[i], shapes[i + 1], nb);
    const size_t columns = chunk * static_cast<size_t>(shapes[i + 1][1] * shapes[i + 1][2]);
    patch_floats = std::max(patch_floats, static_cast<size_t>(m.steps[i].weight->cols) * columns);
    if (chunk > 1)
      product_floats = std::max(product_floats, static_cast<size_t>(m.steps[i].weight->rows) * columns);
  }

  std::lock_guard<std::mutex> lock(m.mutex);
  cudaStream_t stream = m.res.stream;
  check(cudaStreamSynchronize(stream), "previous forward pass");
  m.a.reserve(sizeof(float) * max_elements);
  m.b.reserve(sizeof(float) * max_elements);
  m.patches.reserve(sizeof(float) * patch_floats);
  m.product.reserve(sizeof(float) * product_floats);
  const float* current = in;
  if (in_on_device) {
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, in) != cudaSuccess ||
        (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)) {
      cudaGetLastError();
      throw DeviceError("input pointer is not CUDA device memory");
    }
    // The producer may have written it on any stream: wait for all of them.
    check(cudaDeviceSynchronize(), "waiting for the device input");
  } else {
    m.input.reserve(sizeof(float) * in_elements);
    check(cudaMemcpyAsync(m.input.f(), in, sizeof(float) * in_elements, cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync H2D");
    current = m.input.f();
  }
  if (input.size() == 1 && nb > 1) {  // caller's (N, F) to feature-major (F, N)
    cuda::f32_swap_axes_cuda(current, batch, input[0], 1, m.a.f(), stream);
    current = m.a.f();
  }
  for (size_t i = 0; i < m.steps.size(); ++i) {
    float* target = current == m.a.f() ? m.b.f() : m.a.f();
    m.run_step(m.steps[i], current, shapes[i], target, shapes[i + 1], batch);
    current = target;
  }
  const size_t out_elements = nb * static_cast<size_t>(numel(final_shape));
  if (final_shape.size() == 1 && nb > 1) {
    float* target = current == m.a.f() ? m.b.f() : m.a.f();
    cuda::f32_swap_axes_cuda(current, final_shape[0], batch, 1, target, stream);
    current = target;
  }
  check(cudaGetLastError(), "kernel launch");
  check(cudaMemcpyAsync(out, current, sizeof(float) * out_elements, cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync D2H");
  check(cudaStreamSynchronize(stream), "forward pass");
}

// --- test and benchmark hooks --------------------------------------------------

namespace {
struct RawOperands {
  Resources res;
  DeviceWeight weight;
  DeviceBuffer x, y;
};
}  // namespace

void cuda_raw_csr_kernel(const CsrMatrix& a, const float* x, size_t n, bool vector,
                         const float* bias, bool relu, int index_bits, float* y) {
  if (index_bits != 16 && index_bits != 32) throw ShapeError("index_bits must be 16 or 32");
  if (index_bits == 16 && !a.narrow_indices()) throw ShapeError("16-bit indices need cols <= 65536");
  RawOperands ops;
  std::vector<float> b(bias ? bias : static_cast<const float*>(nullptr), bias ? bias + a.rows() : nullptr);
  ops.weight.upload(a, nullptr, b, true);
  if (index_bits == 32 && a.narrow_indices()) {
    std::vector<uint32_t> wide(a.col16().begin(), a.col16().end());
    ops.weight.col.upload(wide.data(), wide.size());
    ops.weight.narrow = false;
  }
  ops.x.upload(x, static_cast<size_t>(a.cols()) * n);
  ops.y.reserve(sizeof(float) * static_cast<size_t>(a.rows()) * n);
  const size_t ld = vector ? 1 : n;
  ops.weight.multiply(ops.res.cublas, ops.res.stream, ops.x.f(), ld, vector ? 1 : n, relu, ops.y.f(), ld);
  check(cudaGetLastError(), "kernel launch");
  check(cudaStreamSynchronize(ops.res.stream), "kernel");
  check(cudaMemcpy(y, ops.y.f(), sizeof(float) * static_cast<size_t>(a.rows()) * n, cudaMemcpyDeviceToHost),
        "cudaMemcpy D2H");
}

void cuda_raw_dense(const float* w, int64_t rows, int64_t cols, const float* x, size_t n, bool vector,
                    const float* bias, bool relu, float* y) {
  RawOperands ops;
  const std::vector<float> dense(w, w + rows * cols);
  std::vector<float> b(bias ? bias : static_cast<const float*>(nullptr), bias ? bias + rows : nullptr);
  ops.weight.rows = rows;
  ops.weight.cols = cols;
  ops.weight.sparse = false;
  ops.weight.dense.upload(dense.data(), dense.size());
  ops.weight.has_bias = !b.empty();
  if (ops.weight.has_bias) ops.weight.bias.upload(b.data(), b.size());
  ops.x.upload(x, static_cast<size_t>(cols) * n);
  ops.y.reserve(sizeof(float) * static_cast<size_t>(rows) * n);
  const size_t ld = vector ? 1 : n;
  ops.weight.multiply(ops.res.cublas, ops.res.stream, ops.x.f(), ld, vector ? 1 : n, relu, ops.y.f(), ld);
  check(cudaGetLastError(), "kernel launch");
  check(cudaStreamSynchronize(ops.res.stream), "cuBLAS");
  check(cudaMemcpy(y, ops.y.f(), sizeof(float) * static_cast<size_t>(rows) * n, cudaMemcpyDeviceToHost),
        "cudaMemcpy D2H");
}

namespace {
double time_multiply(RawOperands& ops, size_t n, int repeats) {
  const size_t ld = n;
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> times;
  for (int i = 0; i <= repeats; ++i) {
    check(cudaEventRecord(start, ops.res.stream), "cudaEventRecord");
    ops.weight.multiply(ops.res.cublas, ops.res.stream, ops.x.f(), ld, n, false, ops.y.f(), ld);
    check(cudaEventRecord(stop, ops.res.stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (i > 0) times.push_back(ms);  // the first run warms up
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times.empty() ? 0.0 : times[times.size() / 2] * 1e-3;
}
}  // namespace

double cuda_time_csr_kernel(const CsrMatrix& a, size_t n, int repeats) {
  RawOperands ops;
  ops.weight.upload(a, nullptr, {}, true);
  const std::vector<float> x(static_cast<size_t>(a.cols()) * n, 1.0f);
  ops.x.upload(x.data(), x.size());
  ops.y.reserve(sizeof(float) * static_cast<size_t>(a.rows()) * n);
  return time_multiply(ops, n, repeats);
}

double cuda_time_dense(int64_t rows, int64_t cols, size_t n, int repeats) {
  RawOperands ops;
  ops.weight.rows = rows;
  ops.weight.cols = cols;
  ops.weight.sparse = false;
  const std::vector<float> w(static_cast<size_t>(rows * cols), 0.5f), x(static_cast<size_t>(cols) * n, 1.0f);
  ops.weight.dense.upload(w.data(), w.size());
  ops.x.upload(x.data(), x.size());
  ops.y.reserve(sizeof(float) * static_cast<size_t>(rows) * n);
  return time_multiply(ops, n, repeats);
}

}  // namespace sparsenet
