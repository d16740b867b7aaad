// Layers of a sparsenet model.
//
// Lifecycle (as in ncnn): weights are validated and laid out once at
// construction ("prepare"), then forward() is const and may run from several
// threads at once.
//
// Activation layout. One sample is either a feature map {C, H, W} or a feature
// vector {F}. A batch of feature maps is NCHW: element (n, c, h, w) at
// data[((n*C + c)*H + h)*W + w]. A batch of feature vectors is stored
// feature-major: element (n, f) at data[f*N + n], so that a sparse weight row
// streams over contiguous batch columns. Model::forward converts from and to the
// caller's sample-major (N, F) layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sparsenet/aligned.h"
#include "sparsenet/csr.h"
#include "sparsenet/function_ref.h"
#include "sparsenet/runtime.h"

namespace sparsenet {

using Shape = std::vector<int64_t>;  // one sample's shape: {C, H, W} or {F}

enum class Backend { kAuto, kSparse, kDense };
const char* backend_name(Backend backend);

// What runs a layer for one input size: the sparse or the dense (BLAS) backend,
// or, chosen only by backend=kAuto for stride-1 convolutions, dense direct
// convolution (the dense weights against the padded input, no im2col) or, for
// 3x3 and 5x5 ones, dense Winograd convolution (see Conv2d).
enum class Choice { kSparse, kDense, kDenseDirect, kDenseWinograd };
const char* choice_name(Choice choice);  // "sparse", "dense", "dense-direct", "dense-winograd"

// backend=kAuto: layers at most this dense always run sparse, and keep no
// dense copy (fc6 at 10 % would keep 411 MB of it); denser layers keep both a
// CSR and a dense copy and time them per input size. Measured on 2-core hosts
// against OpenBLAS: direct sparse convolution wins at 10 % on every VGG map
// size; sparse FC layers at 10 % by 3.6-7.5x at batch 1, 8, 64 and 256
// (4096x4096 and 25088x4096, Zen 4, bench/run_peers.py --scaling).
constexpr double kAutoLinearSparseDensity = 0.10;
constexpr double kAutoConvSparseDensity = 0.10;
// Whether an auto layer of this size always runs sparse (and keeps no dense
// copy): "at most 10 %" counts nonzeros, so that round(0.1 * size) of them is
// 10 %. The one rule for the layers and both loaders' memory budgets.
bool auto_always_sparse(double always_sparse_density, int64_t rows, int64_t cols, size_t nnz);

// A convolution or pooling window: size, stride and (symmetric) padding.
struct Window2d {
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};

// A batch of samples of one shape; the shape is referenced, not copied (the
// caller's Shape outlives the call), so passing views allocates nothing.
struct TensorView {
  const float* data;
  int64_t batch;
  const Shape& shape;
};

struct MutableTensorView {
  float* data;
  int64_t batch;
  const Shape& shape;
};

class ThreadPool;  // opaque: the engine's fork-join pool

// Per-call state handed to every layer.
struct ForwardContext {
  ThreadPool* pool = nullptr;        // the pool this forward pass runs on
  size_t num_workers = 1;            // pool size when the call started
  float* scratch = nullptr;          // num_workers * scratch_per_worker floats
  size_t scratch_per_worker = 0;     // the max of scratch_floats() over layers
  bool fuse_relu = false;            // apply ReLU to this layer's output
};

std::string shape_to_string(const Shape& shape);

class Layer {
 public:
  explicit Layer(std::string name) : name_(std::move(name)) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return name_; }
  virtual const char* kind() const = 0;

  // One sample's output shape for one sample's input shape; throws ShapeError
  // naming this layer and both shapes when the input does not fit.
  virtual Shape output_shape(const Shape& input) const = 0;

  // Scratch floats one worker thread needs for a batch of `batch` samples.
  virtual size_t scratch_floats(const Shape& input, int64_t batch) const;

  // True for Linear and Conv2d, which apply a following ReLU in their epilogue.
  virtual bool accepts_fused_relu() const { return false; }
  // True for layers that are the identity at inference (Dropout).
  virtual bool is_identity() const { return false; }

  // in.shape has been checked by output_shape(); out has room for the output.
  virtual void forward(const TensorView& in, const MutableTensorView& out,
                       const ForwardContext& ctx) const = 0;

 protected:
  std::string describe(const char* what) const;  // "<kind> layer '<name>': <what>"

 private:
  std::string name_;
};

// Shared by Linear and Conv2d: a rows x cols weight run sparse (CSR kernels)
// or dense (BLAS). With Backend::kAuto, a layer at most `always_sparse_density`
// dense runs sparse; any other keeps both forms and, the first time it meets a
// new input size, times both and keeps the faster for that size, so an auto
// model is never slower than the dense one beyond timing noise.
class WeightedLayer : public Layer {
 public:
  // Throws WeightError for a bias whose length is not rows() or that holds NaN/Inf.
  WeightedLayer(std::string name, CsrMatrix weight, std::vector<float> bias, Backend backend,
                double always_sparse_density);

  // kSparse, kDense, or kAuto for a layer that measures per input size.
  Backend backend() const { return backend_; }
  // What an auto layer chose so far: (input-size key, choice) pairs.
  std::vector<std::pair<int64_t, Choice>> choices() const;
  // Makes an auto layer run `choice` for every input size, measuring nothing
  // (tests, and reproducing a measured plan); throws FormatError for a layer
  // that is not auto or cannot run it.
  void pin_choice(Choice choice);
  // True if the layer is pinned to `choice` or chose it for some input size.
  bool has_chosen(Choice choice) const;
  virtual bool can_run(Choice choice) const;
  Isa isa() const { return isa_; }                 // ISA of the sparse kernels
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  size_t nnz() const { return nnz_; }
  bool accepts_fused_relu() const override { return true; }

  // Read access for other backends (the CUDA path). bias(): rows() entries or
  // empty. weight_csr(): the weight in CSR form (built from the dense copy,
  // keeping nonzeros, for a dense layer). weight_dense(): rows() x cols()
  // row-major floats (expanded from CSR for a sparse layer).
  const std::vector<float>& bias() const { return bias_; }
  CsrMatrix weight_csr() const;
  std::vector<float> weight_dense() const;

 protected:
  // Calls run(choice, false) with the choice for this input-size key. For an
  // auto layer meeting `key` for the first time, first times run(c, true) for
  // every choice it can_run (a measurement run may do a representative part of
  // the work). Choices are shared process-wide between layers of equal
  // signature (see mix_signature), per key and thread count.
  void run_chosen(int64_t key, size_t workers, FunctionRef<void(Choice, bool)> run) const;
  // Adds a value that distinguishes this layer's cost (geometry) to its signature.
  void mix_signature(int64_t value);
  // Builds the column panels (see panel_starts_) if the layer is wide enough to
  // need them; layers whose sparse product is batched (Linear, convolutions
  // through im2col) call it once from their constructor.
  void build_column_panels();
  // Columns of X per column panel walk (64). A sparse product over more columns
  // than that, on a layer with panels, runs faster on X copied into
  // contiguous chunks of this many columns (see Linear::forward).
  size_t panel_batch() const;
  bool has_column_panels() const { return panels_ > 0; }
  // Builds the vector panels (see vector_starts_) if x of the batch-1 product
  // is too long for L1; Linear calls it once from its constructor.
  void build_vector_panels();
  // The sliced-window layout (SellLayout, csr.h) for batch 1, where the
  // avx2 table has the sellmv kernel and sellmv_win(), the layer has at least
  // 32 columns, and at least kSellMinFill of the layout's lanes hold nonzeros
  // (one that outgrows csrmv_stream_bytes() is prefetched, SellRef::stream);
  // SPARSENET_SELL=0 turns it off. Before build_vector_panels, which then
  // builds none.
  void build_sell();
  bool uses_sell() const { return !sell_.empty(); }
  size_t vector_panels() const { return vector_panels_; }
  // For a layer with column panels and a batch-1 layout of its own (vector
  // panels or sliced windows), whose every product runs on them: frees the
  // CSR's values and column indices (a third copy of the nonzeros), keeping
  // its row pointers; weight_csr() reassembles the CSR from the column panels
  // (rows are sorted, so exactly).
  void release_csr_entries();

  // Y[rows x n] = act(W * X[cols x n] + bias) for columns [0, n) of row-major X
  // (leading dimension ldx) into Y (leading dimension ldy), on ctx.pool.
  void matmul(const ForwardContext& ctx, Backend backend, const float* x, size_t ldx, size_t n,
              float* y, size_t ldy) const;
  // The sparse product on the calling thread only (the caller runs in parallel).
  void sparse_matmul_serial(const float* x, size_t ldx, size_t n, float* y, size_t ldy,
                            bool relu) const;
  // The sparse product with the column indices replaced by `offsets` (nnz
  // entries), over row r's nonzeros [starts[r], ends[r]) (nullptr: the whole
  // row): Y[r][c] (+)= sum_k value_k * x[offsets_k + c] for r in [row_begin,
  // row_end), c in [col_begin, col_end); `accumulate` adds to what Y holds,
  // `finish` then adds the bias and applies the ReLU if `relu`. Direct
  // convolution uses it with offsets into a padded input image.
  void sparse_offsets_tile(const uint32_t* offsets, const uint32_t* starts, const uint32_t* ends,
                           const float* x, size_t row_begin, size_t row_end, size_t col_begin,
                           size_t col_end, float* y, size_t ldy, bool accumulate, bool finish,
                           bool relu) const;
  const CsrMatrix& sparse_weight() const { return sparse_; }  // empty after release_csr_entries()
  const std::vector<uint32_t>& csr_row_ptr() const { return csr_released_ ? row_ptr_ : sparse_.row_ptr(); }
  // rows() x cols() row-major; empty for a sparse layer.
  const std::vector<float>& dense_weight() const { return dense_; }
  // The dense product of rows [row_begin, row_end) and columns [col_begin,
  // col_end) as one single-threaded BLAS call, then the epilogue.
  void dense_block(const float* x, size_t ldx, size_t row_begin, size_t row_end,
                   size_t col_begin, size_t col_end, float* y, size_t ldy, bool relu) const;

 private:
  void sparse_tile(const float* x, size_t ldx, size_t row_begin, size_t row_end,
                   size_t col_begin, size_t col_end, float* y, size_t ldy, bool relu) const;
  bool prefetch_x(size_t n) const;  // CsrRef::prefetch for an X of n columns

  int64_t rows_;
  int64_t cols_;
  size_t nnz_;
  Backend backend_;
  Isa isa_;
  CsrMatrix sparse_;                  // unless backend_ == kDense or csr_released_
  bool csr_released_ = false;         // release_csr_entries(): the nonzeros live in the panels only
  std::vector<uint32_t> row_ptr_;     // sparse_'s row pointers, once released
  std::vector<float> dense_;          // rows x cols row-major, unless backend_ == kSparse
  std::vector<float> bias_;           // rows entries, or empty
  // Column panels, for batched products whose X rows do not stay in cache:
  // panel p covers weight columns [p * w, (p + 1) * w) for the width w
  // build_column_panels chose (panels_ of them). The nonzeros are copied
  // (panel_values_ with panel_col16_ or panel_col32_, as sparse_'s index width)
  // in the order sparse_tile walks them, so that the walk reads one
  // sequential stream: blocks of kPanelRowBlock rows, in a
  // block panel after panel, in a panel row after row. Row r of block
  // [r0, r1) has its panel-p nonzeros at [panel_starts_[i], panel_starts_[i + 1])
  // with i = r0 * panels_ + p * (r1 - r0) + (r - r0). Empty when the layer is
  // narrow enough to need none, and for direct convolutions (no batched product).
  size_t panels_ = 0;
  bool csrmv_loads_ = false;  // batch 1 through csrmv_u16_l1: x fits L1 and loads beat gathers
  bool csrmv_stream_ = true;   // batch 1: the nonzeros outgrow csrmv_stream_bytes() (CsrRef::stream)
  std::vector<uint32_t> panel_starts_;  // panels_ * rows_ + 1
  std::vector<float> panel_values_;
  std::vector<uint16_t> panel_col16_;
  std::vector<uint32_t> panel_col32_;
  // Vector panels, for the batch-1 product (csrmv) when x is longer than L1
  // holds: panel p covers weight columns [p * w, (p + 1) * w), w =
  // vector_width_ (x slice at most 16 KiB), and the walk takes a row range
  // panel after panel, adding each panel's sums into y (bias and ReLU with the
  // last), so that x is read from L1 by scalar loads instead of gathers from L2.
  // The nonzeros are copied panel-major (vector_values_, vector_col16_ with
  // column indices relative to the panel, so 16-bit whatever the layer's width):
  // panel p's row r holds [vector_starts_[i], vector_starts_[i + 1]) with
  // i = p * (rows_ + 1) + r. Empty unless build_vector_panels chose panels.
  size_t vector_panels_ = 0;
  size_t vector_width_ = 0;
  bool vector_loads_ = false;  // csrmv_u16_l1 on the panels: loads beat gathers from L1
  std::vector<uint32_t> vector_starts_;  // vector_panels_ * (rows_ + 1)
  std::vector<float> vector_values_;
  std::vector<uint16_t> vector_col16_;
  // The sliced-window layout (build_sell), empty unless chosen; its values
  // are 64-byte aligned: 1.15x faster than 16-byte aligned (4096x4096, 10 %).
  SellLayout sell_;
  bool sell_stream_ = false;  // SellRef::stream
  uint64_t signature_ = 1469598103934665603ull;  // FNV-1a of kind, shape, nnz, ISA, geometry
  mutable std::mutex choices_mutex_;
  mutable std::map<int64_t, Choice> choices_;
  std::optional<Choice> pinned_;  // pin_choice: serves every input size
};

// Fully connected layer: weight is out_features x in_features; input {in_features}.
class Linear : public WeightedLayer {
 public:
  Linear(std::string name, CsrMatrix weight, std::vector<float> bias, Backend backend);
  const char* kind() const override { return "linear"; }
  using WeightedLayer::uses_sell;  // batch 1 on the sliced-window layout
  Shape output_shape(const Shape& input) const override;
  // A batch wider than panel_batch() on a layer with column panels: one chunk of X.
  size_t scratch_floats(const Shape& input, int64_t batch) const override;
  void forward(const TensorView& in, const MutableTensorView& out,
               const ForwardContext& ctx) const override;
};

// 2-D convolution (NCHW, no groups or dilation): weight is
// out_channels x (in_channels * kernel_h * kernel_w), column index
// (c * kernel_h + i) * kernel_w + j, as PyTorch's (O, I, kh, kw) flattened.
// Dense: per image, W times the im2col patch matrix (sgemm). Dense direct (an
// auto layer's third choice, stride 1): the dense weights against the padded
// input in register tiles of 6 output channels x 16 output columns of one
// output row, 32 with AVX-512 (kernels.h, ConvDenseKernel). Dense Winograd (an auto layer's
// fourth choice, stride 1, 3x3 or 5x5 kernels, at least 8 input channels):
// F(4x4, 3x3) or F(2x2, 5x5) over 6x6 input tiles (Lavin & Gray, CVPR 2016),
// 36 products of the transformed weights (built on first use) by the
// transformed input tiles, 2.8-4x fewer multiply-adds than direct
// convolution. Sparse, stride 1:
// direct sparse convolution (Park et al., ICLR 2017) -- each nonzero's column
// becomes an offset into the zero-padded input, so an output row is a sum of
// weights times contiguous input runs, with no im2col lowering; computed in
// 64-column tiles for all output channels of a group (so a tile's input is
// reused from L1), over panels of input channels; 3-wide kernels take the
// conv3 kernels, whose loads are all aligned and, with AVX-512, shared by a
// kernel row's nonzeros (kernels.h).
// Sparse, other strides: im2col then CSR SpMM.
class Conv2d : public WeightedLayer {
 public:
  // same_padding: the padding is TensorFlow / ONNX 'SAME' (out = ceil(in /
  // stride)) resolved for one input size; output_shape() then refuses input
  // sizes whose 'SAME' padding differs (ShapeError naming both paddings).
  Conv2d(std::string name, CsrMatrix weight, std::vector<float> bias, int64_t in_channels,
         int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
         int64_t pad_w, Backend backend, bool same_padding = false);
  const char* kind() const override { return "conv2d"; }
  int64_t in_channels() const { return in_channels_; }
  bool same_padding() const { return same_padding_; }
  Window2d window() const { return {kernel_h_, kernel_w_, stride_h_, stride_w_, pad_h_, pad_w_}; }
  Shape output_shape(const Shape& input) const override;
  size_t scratch_floats(const Shape& input, int64_t batch) const override;
  void forward(const TensorView& in, const MutableTensorView& out,
               const ForwardContext& ctx) const override;
  bool can_run(Choice choice) const override;
  // Whether sparse direct convolution runs KernelTable::conv3: stride 1, a
  // 3-wide kernel, and the layer's kernel table has it (avx2).
  bool uses_conv3() const;

 private:
  bool is_pointwise() const;  // 1x1, stride 1, no padding: im2col is the input itself
  bool direct_capable() const; // stride 1, not pointwise: sparse runs direct convolution
  // Output rows per im2col chunk: the patch matrix is lowered and multiplied
  // this many output rows at a time (about kIm2colChunkFloats), not whole.
  int64_t im2col_chunk_rows(int64_t out_h, int64_t out_w) const;
  void forward_with(Choice choice, const TensorView& in, const MutableTensorView& out,
                    const ForwardContext& ctx) const;
  // How direct convolution walks one input size: each nonzero's offset into the
  // padded (C, height + 2*pad_h, row) image, and the nonzeros split into panels
  // of input channels (see direct_plan in layers.cc). Cached per size.
  // Where direct convolution puts the padded image (direct_layout in layers.cc).
  struct DirectLayout {
    // Floats from one padded row to the next: padded_w; for conv3 (3-wide
    // kernels on KernelTable::conv3) padded_w rounded up to a multiple of 8,
    // or the width itself where the image goes without padding columns.
    int64_t row = 0;
    // Floats from one channel's padded plane to the next: padded_h rows, for
    // conv3 sometimes 16 more (direct_plane in layers.cc).
    int64_t plane = 0;
    // Where each row's data starts in its padded row: pad_w, or 0 without
    // padding columns, where period = width (kernels.h; 0 otherwise).
    int64_t left = 0, period = 0;
  };
  struct DirectPlan {
    std::vector<uint32_t> offsets;  // one per nonzero (conv3: per entry), in the order of starts
    size_t panels = 0;              // channel panels
    DirectLayout layout;
    bool conv3 = false;
    size_t tile = 64;  // output positions per kernel call: one tile, or two for conv3 on some maps
    // Without conv3, starts[p * rows + r]: row r's first nonzero in panel p,
    // p == panels: the row's end. With conv3, the row's entries (kernels.h:
    // a kernel row's nonzeros, or one nonzero, the offset leaving the kernel
    // column out) by panel and group, kConv3Slots slots per row and panel
    // (panel p's slot s at starts[(kConv3Slots * p + s) * rows + r]), and
    // their weights in `values`.
    std::vector<uint32_t> starts;
    std::vector<float> values;  // conv3 only
    // Dense direct convolution: weight column i's offset in the padded image
    // (cols() entries; empty unless the layer can_run(Choice::kDenseDirect)).
    std::vector<uint32_t> dense_offsets;
  };
  std::shared_ptr<const DirectPlan> direct_plan(int64_t height, int64_t width) const;
  void forward_direct(const TensorView& in, const MutableTensorView& out,
                      const ForwardContext& ctx) const;
  void forward_dense_direct(const TensorView& in, const MutableTensorView& out,
                            const ForwardContext& ctx) const;
  // Winograd convolution: the output tile m (0: this layer cannot run it), the
  // tiles per block (the transformed input and products of a block stay in L2)
  // and the transformed weights, built on first use.
  struct Winograd {
    std::vector<float> u;           // G g GT: 36 x rows() x in_channels
    std::vector<uint32_t> offsets;  // c * winograd_block_tiles(): rows of a block's V
  };
  size_t winograd_tile() const;
  size_t winograd_block_tiles() const;
  size_t winograd_scratch_floats(int64_t out_h, int64_t out_w) const;  // per worker
  std::shared_ptr<const Winograd> winograd() const;
  // Frees the transformed weights (4x the dense weights for 3x3 kernels) once
  // the measurement that built them chose something else for every input size
  // met so far; a later measurement builds them again.
  void release_unchosen_winograd() const;
  void forward_winograd(const TensorView& in, const MutableTensorView& out,
                        const ForwardContext& ctx) const;
  // Channels [c0, c1) of one image into its zero-padded copy (padded_image_floats
  // in layers.cc) with rows `row` floats apart (>= width + left + pad_w, or
  // == width with left 0: no padding columns), each row's data `left` floats
  // in, and planes `plane` (>= (height + 2 pad_h) row), the tail past the last
  // plane too when c1 == in_channels.
  void pad_channels(const float* image, float* padded, int64_t height, int64_t width, int64_t row,
                    int64_t left, int64_t plane, int64_t c0, int64_t c1) const;
  // The whole image; large ones split over the pool's workers if all_workers.
  void pad_image(const ForwardContext& ctx, const float* image, float* padded, int64_t height,
                 int64_t width, int64_t row, int64_t left, int64_t plane, bool all_workers) const;
  DirectLayout direct_layout(int64_t height, int64_t width) const;

  int64_t in_channels_, kernel_h_, kernel_w_, stride_h_, stride_w_, pad_h_, pad_w_;
  bool same_padding_;
  mutable std::mutex plan_mutex_;
  mutable int64_t plan_height_ = -1, plan_width_ = -1;
  mutable std::shared_ptr<const DirectPlan> plan_;
  mutable std::mutex winograd_mutex_;
  mutable std::shared_ptr<const Winograd> winograd_;
};

enum class PoolMode { kMax, kAverage };

// Max or average pooling over NCHW feature maps. Average pooling divides by the
// full window (count_include_pad) or by the in-bounds part of it. same_padding
// as for Conv2d. A global pool (Pool2d::global) takes each whole map to one
// value, whatever its size: (C, H, W) -> (C, 1, 1). input_h / input_w > 0:
// the window was resolved for that map size (an adaptive pool imported for
// one input size) and output_shape() refuses others with ShapeError.
class Pool2d : public Layer {
 public:
  Pool2d(std::string name, PoolMode mode, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
         int64_t stride_w, int64_t pad_h, int64_t pad_w, bool ceil_mode, bool count_include_pad,
         bool same_padding = false, int64_t input_h = 0, int64_t input_w = 0);
  static std::shared_ptr<Pool2d> global(std::string name, PoolMode mode);
  const char* kind() const override;
  PoolMode mode() const { return mode_; }
  Isa isa() const { return isa_; }  // of the 2x2 stride-2 max pooling kernel
  bool is_global() const { return global_; }
  // The window over a (C, H, W) input: the one given, or H x W for a global pool.
  Window2d window(const Shape& input) const;
  bool count_include_pad() const { return count_include_pad_; }
  bool same_padding() const { return same_padding_; }
  std::pair<int64_t, int64_t> input_size() const { return {input_h_, input_w_}; }  // (0, 0): any
  Shape output_shape(const Shape& input) const override;
  void forward(const TensorView& in, const MutableTensorView& out,
               const ForwardContext& ctx) const override;

 private:
  Isa isa_;
  PoolMode mode_;
  int64_t kernel_h_, kernel_w_, stride_h_, stride_w_, pad_h_, pad_w_;
  bool ceil_mode_, count_include_pad_, same_padding_;
  int64_t input_h_, input_w_;
  bool global_ = false;
};

class ReLU : public Layer {
 public:
  using Layer::Layer;
  const char* kind() const override { return "relu"; }
  Shape output_shape(const Shape& input) const override { return input; }
  void forward(const TensorView& in, const MutableTensorView& out,
               const ForwardContext& ctx) const override;
};

// {C, H, W} -> {C*H*W} in C, H, W order (PyTorch's flatten); {F} passes through.
class Flatten : public Layer {
 public:
  explicit Flatten(std::string name);
  const char* kind() const override { return "flatten"; }
  Isa isa() const { return isa_; }  // of the transpose kernel
  Shape output_shape(const Shape& input) const override;
  void forward(const TensorView& in, const MutableTensorView& out,
               const ForwardContext& ctx) const override;

 private:
  Isa isa_;
};

// Softmax over the features of each sample; input {F}.
class Softmax : public Layer {
 public:
  using Layer::Layer;
  const char* kind() const override { return "softmax"; }
  Shape output_shape(const Shape& input) const override;
  void forward(const TensorView& in, const MutableTensorView& out,
               const ForwardContext& ctx) const override;
};

// The identity at inference.
class Dropout : public Layer {
 public:
  using Layer::Layer;
  const char* kind() const override { return "dropout"; }
  bool is_identity() const override { return true; }
  Shape output_shape(const Shape& input) const override { return input; }
  void forward(const TensorView& in, const MutableTensorView& out,
               const ForwardContext& ctx) const override;
};

}  // namespace sparsenet
