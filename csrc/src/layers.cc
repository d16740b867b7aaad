#include "sparsenet/layers.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>

#include "blas.h"
#include "im2col.h"
#include "kernels.h"
#include "sell.h"
#include "sparsenet/errors.h"
#include "thread_pool.h"

namespace sparsenet {
namespace {

// Below this many multiply-adds a layer runs on one thread: waking the pool
// costs more than it saves.
constexpr double kMinParallelWork = 64.0 * 1024.0;
// The sliced-window layout (build_sell) only where at least this share of its
// lanes hold nonzeros: its padding costs loads, multiplies and bytes (7.3 per
// nonzero at 70 % fill, 10 at 51 %, against 6 for the CSR). bench/ab.py, Zen
// 5, 1 / 2 threads, against csrmv (SPARSENET_SELL=0): uniform 10 % weights
// fill 70 % of the lanes, and 4096x4096 ran 1.77x / 1.47x faster, fc6 (which
// streams from memory, prefetched) 1.35x / 1.26x; at 4 % (fill 51 %)
// 4096x4096 1.15x / 1.15x, fc6 1.17x on one thread.
constexpr double kSellMinFill = 0.45;
// BLAS calls run far faster per multiply-add, so they split later.
constexpr double kMinParallelDenseWork = 1024.0 * 1024.0;
// Direct convolution: on 2 vCPUs of Zen 3, a 1M multiply-add layer (90 us)
// ran no faster on 2 threads; 3.8M ran 1.15-1.3x faster.
constexpr double kMinParallelDirectWork = 2.0 * 1024.0 * 1024.0;
// Dense direct convolution's tiles keep both workers busy sooner: mnist_cnn's
// conv1 (0.63M multiply-adds) ran 1.5x faster on 2 threads than on 1.
constexpr double kMinParallelDenseDirectWork = 256.0 * 1024.0;

// Copies and transposes of fewer floats (256 KiB) stay on one thread.
constexpr size_t kMinParallelCopyFloats = 64 * 1024;

// An auto layer remembers at most this many input sizes (then starts over).
constexpr size_t kMaxAutoChoices = 64;

// Batch sizes share an auto choice within power-of-two buckets above 8.
int64_t batch_bucket(int64_t n) {
  int64_t bucket = 1;
  if (n <= 8) return n;
  while (bucket < n) bucket <<= 1;
  return bucket;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Window parameters below 2^31 keep every size computation far from int64 overflow.
bool window_in_range(std::initializer_list<int64_t> values) {
  for (int64_t v : values)
    if (v >= (int64_t{1} << 31)) return false;
  return true;
}

std::string dims(int64_t a, int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// TensorFlow / ONNX 'SAME' padding for one axis: in total what makes the output
// ceil(in / stride); its first half before the input, the rest after.
int64_t same_padding_total(int64_t in, int64_t kernel, int64_t stride) {
  const int64_t out = (in + stride - 1) / stride;
  return std::max<int64_t>((out - 1) * stride + kernel - in, 0);
}

// A layer whose padding was resolved from 'SAME' for one input size runs
// another size only where 'SAME' pads it alike (both sides pad_h / pad_w):
// else the output could keep its shape and silently shift by a row or a
// column (a stride-2 'SAME' layer imported for 9x9 pads 1 and 1; a 10x10
// input needs 0 and 1). The message names both paddings. Returns the error
// text, empty when the input fits.
std::string same_padding_mismatch(const Shape& input, const Window2d& w) {
  const int64_t th = same_padding_total(input[1], w.kernel_h, w.stride_h);
  const int64_t tw = same_padding_total(input[2], w.kernel_w, w.stride_w);
  if (th == 2 * w.pad_h && tw == 2 * w.pad_w) return "";
  return "has 'same' padding resolved at import to " + dims(w.pad_h, w.pad_w) +
         " on each side, but input " + shape_to_string(input) + " needs " + dims(th / 2, tw / 2) +
         " rows / columns before and " + dims(th - th / 2, tw - tw / 2) +
         " after; run inputs of the size it was imported for, or import it again for this size";
}

}  // namespace

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::kSparse: return "sparse";
    case Backend::kDense: return "dense";
    default: return "auto";
  }
}

const char* choice_name(Choice choice) {
  switch (choice) {
    case Choice::kSparse: return "sparse";
    case Choice::kDense: return "dense";
    case Choice::kDenseDirect: return "dense-direct";
    default: return "dense-winograd";
  }
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

size_t Layer::scratch_floats(const Shape&, int64_t) const { return 0; }

std::string Layer::describe(const char* what) const {
  return std::string(kind()) + " layer '" + name_ + "': " + what;
}

// --- WeightedLayer ---------------------------------------------------------

bool auto_always_sparse(double always_sparse_density, int64_t rows, int64_t cols, size_t nnz) {
  const double size = static_cast<double>(rows) * static_cast<double>(cols);
  return static_cast<double>(nnz) <= std::ceil(always_sparse_density * size);
}

WeightedLayer::WeightedLayer(std::string name, CsrMatrix weight, std::vector<float> bias,
                             Backend backend, double always_sparse_density)
    : Layer(std::move(name)),
      rows_(weight.rows()),
      cols_(weight.cols()),
      nnz_(weight.nnz()),
      backend_(backend),
      isa_(active_isa()),
      bias_(std::move(bias)) {
  for (int64_t v : {rows_, cols_, static_cast<int64_t>(nnz_), static_cast<int64_t>(isa_),
                    static_cast<int64_t>(bias_.empty())})
    mix_signature(v);
  if (!bias_.empty() && static_cast<int64_t>(bias_.size()) != rows_)
    throw WeightError("layer '" + this->name() + "' key '" + this->name() + ".bias': bias has " +
                      std::to_string(bias_.size()) + " entries but the weight " +
                      dims(rows_, cols_) + " has " + std::to_string(rows_) + " outputs");
  for (size_t i = 0; i < bias_.size(); ++i)
    if (!std::isfinite(bias_[i]))
      throw WeightError("layer '" + this->name() + "' key '" + this->name() + ".bias': entry " +
                        std::to_string(i) + " is not finite (NaN or Inf)");
  if (backend_ == Backend::kAuto && auto_always_sparse(always_sparse_density, rows_, cols_, weight.nnz()))
    backend_ = Backend::kSparse;
  if (backend_ != Backend::kSparse) {
    dense_.resize(static_cast<size_t>(rows_) * static_cast<size_t>(cols_));
    weight.to_dense(dense_.data());
  }
  if (backend_ != Backend::kDense) {
    sparse_ = std::move(weight);
    csrmv_loads_ = isa_ == Isa::kAvx2 && sparse_.narrow_indices() &&
                   static_cast<size_t>(cols_) <= kL1VectorFloats && csrmv_l1_loads_win();
    const size_t index_bytes = sparse_.narrow_indices() ? sizeof(uint16_t) : sizeof(uint32_t);
    csrmv_stream_ = sparse_.nnz() * (sizeof(float) + index_bytes) > csrmv_stream_bytes();
  }
}

namespace {
// Column panels (see sparse_tile and panel_starts_): an X panel of
// kPanelColumns weight columns by kPanelBatch batch columns is 64 KiB, which
// stays in L2 beside the row block's Y slice (128 KiB) while every row of the
// block walks its nonzeros in that panel. Sparser layers get wider panels so
// each row still has about kPanelMinRowNonzeros nonzeros per panel to pay for
// loading and storing its slice of Y once more per panel. Measured in a C++
// probe at batch 64 on Zen 3, one thread, with the nonzeros stored in walk
// order: 4096x4096 at 10 % 34 GFLOP/s with 128- or 256-column panels, 21 with
// 512, 17 with 960; 25088x4096 at 4 % 16 GFLOP/s at 256 columns; at 1-2 %
// 512-1024 columns (about 10 nonzeros per row and panel) beat 256 by 10-40 %.
// Walking the same panels through the CSR rows in place (jumping from row to
// row) ran at 15-20 GFLOP/s whatever the width: the stored walk order is what
// lets panels this narrow pay.
constexpr int64_t kPanelColumns = 256;
constexpr size_t kPanelBatch = 64;
constexpr double kPanelMinRowNonzeros = 10.0;
// Panels only when an X slice of kPanelBatch columns is larger than this.
constexpr uint64_t kPanelMinXBytes = 256 * 1024;
// Rows per block when walking panels: all of X is read once per block.
constexpr size_t kPanelRowBlock = 512;
// Without panels, the AVX2 csrmm prefetches X rows when the 32-column slice of
// X it walks per output row is larger than this (about L2: measured on Zen 3,
// 4096x512 lost 15 % to the extra instructions, larger X gained 5 % to 2x).
constexpr uint64_t kPrefetchMinXBytes = 256 * 1024;
}  // namespace

namespace {
// Where each row's nonzeros enter column panels of `width` columns: entry
// [p * rows + r] is row r's first nonzero at or after column p * width, for
// p in [0, panels); entry [panels * rows + r] is the row's end.
std::vector<uint32_t> column_panel_starts(const CsrMatrix& w, int64_t width, size_t panels) {
  const size_t rows = static_cast<size_t>(w.rows());
  std::vector<uint32_t> starts((panels + 1) * rows);
  const auto& rp = w.row_ptr();
  for (size_t r = 0; r < rows; ++r) {
    uint32_t k = rp[r];
    for (size_t p = 0; p < panels; ++p) {
      const int64_t first = static_cast<int64_t>(p) * width;
      while (k < rp[r + 1] && (w.narrow_indices() ? w.col16()[k] : w.col32()[k]) < first) ++k;
      starts[p * rows + r] = k;
    }
    starts[panels * rows + r] = rp[r + 1];
  }
  return starts;
}
}  // namespace

size_t WeightedLayer::panel_batch() const { return kPanelBatch; }

namespace {
// Vector panels (see vector_starts_): x slices of at most this many floats
// (16 KiB, half of a 32 KiB L1D, beside the value and index streams).
constexpr int64_t kVectorPanelFloats = 4096;
// ... and only while a row keeps about this many nonzeros per panel.
constexpr double kVectorPanelMinRowNonzeros = 16.0;
}  // namespace

void WeightedLayer::build_sell() {
  if (backend_ == Backend::kDense || isa_ != Isa::kAvx2 || kernel_table(isa_).sellmv == nullptr ||
      rows_ == 0 || nnz_ == 0 || cols_ < static_cast<int64_t>(kSellWindow))
    return;
  if (const char* env = std::getenv("SPARSENET_SELL"); env && std::strcmp(env, "0") == 0) return;
  if (!sellmv_win()) return;
  const size_t steps = sell_steps(sparse_);
  if (static_cast<double>(nnz_) < kSellMinFill * static_cast<double>(steps * kSellLanes)) return;
  sell_ = sparsenet::build_sell(sparse_, steps);
  sell_stream_ = sell_.bytes() > csrmv_stream_bytes();
}

void WeightedLayer::build_vector_panels() {
  const double density = sparse_.density();
  if (backend_ == Backend::kDense || rows_ == 0 || static_cast<size_t>(cols_) <= kL1VectorFloats ||
      uses_sell())
    return;
  // Equal slices, a multiple of 64 columns wide (fc6's 25,088: 7 of 3,584).
  const int64_t slices = (cols_ + kVectorPanelFloats - 1) / kVectorPanelFloats;
  const int64_t width = ((cols_ + slices - 1) / slices + 63) / 64 * 64;
  if (density * static_cast<double>(width) < kVectorPanelMinRowNonzeros) return;
  const size_t rows = static_cast<size_t>(rows_);
  const size_t count = static_cast<size_t>((cols_ + width - 1) / width);  // rounding may drop one
  const std::vector<uint32_t> csr_starts = column_panel_starts(sparse_, width, count);
  const bool narrow = sparse_.narrow_indices();
  vector_starts_.resize(count * (rows + 1));
  vector_values_.resize(nnz_);
  vector_col16_.resize(nnz_);
  size_t next = 0;
  for (size_t p = 0; p < count; ++p) {
    const uint32_t first = static_cast<uint32_t>(static_cast<int64_t>(p) * width);
    for (size_t r = 0; r < rows; ++r) {
      vector_starts_[p * (rows + 1) + r] = static_cast<uint32_t>(next);
      for (uint32_t k = csr_starts[p * rows + r]; k < csr_starts[(p + 1) * rows + r]; ++k, ++next) {
        vector_values_[next] = sparse_.values()[k];
        vector_col16_[next] = static_cast<uint16_t>((narrow ? sparse_.col16()[k] : sparse_.col32()[k]) - first);
      }
    }
    vector_starts_[p * (rows + 1) + rows] = static_cast<uint32_t>(next);
  }
  vector_panels_ = count;
  vector_width_ = static_cast<size_t>(width);
  vector_loads_ = isa_ == Isa::kAvx2 && csrmv_l1_loads_win();
}

void WeightedLayer::build_column_panels() {
  const double density = sparse_.density();
  if (backend_ == Backend::kDense || rows_ == 0 || density <= 0.0) return;
  int64_t width = std::max<int64_t>(
      kPanelColumns, static_cast<int64_t>(std::ceil(kPanelMinRowNonzeros / density)));
  width = (width + 63) / 64 * 64;
  if (width >= cols_ || static_cast<uint64_t>(cols_) * kPanelBatch * sizeof(float) <= kPanelMinXBytes)
    return;
  const size_t rows = static_cast<size_t>(rows_);
  const size_t panels = static_cast<size_t>((cols_ + width - 1) / width);
  const std::vector<uint32_t> csr_starts = column_panel_starts(sparse_, width, panels);
  const bool narrow = sparse_.narrow_indices();
  panel_starts_.resize(panels * rows + 1);
  panel_values_.resize(nnz_);
  if (narrow)
    panel_col16_.resize(nnz_);
  else
    panel_col32_.resize(nnz_);
  // One walk in sparse_tile's order copies each row's nonzeros in each panel.
  size_t i = 0, next = 0;
  for (size_t r0 = 0; r0 < rows; r0 += kPanelRowBlock) {
    const size_t r1 = std::min(rows, r0 + kPanelRowBlock);
    for (size_t p = 0; p < panels; ++p)
      for (size_t r = r0; r < r1; ++r) {
        panel_starts_[i++] = static_cast<uint32_t>(next);
        for (uint32_t k = csr_starts[p * rows + r]; k < csr_starts[(p + 1) * rows + r]; ++k, ++next) {
          panel_values_[next] = sparse_.values()[k];
          if (narrow)
            panel_col16_[next] = sparse_.col16()[k];
          else
            panel_col32_[next] = sparse_.col32()[k];
        }
      }
  }
  panel_starts_[i] = static_cast<uint32_t>(next);
  panels_ = panels;
}

std::vector<std::pair<int64_t, Choice>> WeightedLayer::choices() const {
  std::lock_guard<std::mutex> lock(choices_mutex_);
  return {choices_.begin(), choices_.end()};
}

bool WeightedLayer::has_chosen(Choice choice) const {
  std::lock_guard<std::mutex> lock(choices_mutex_);
  if (pinned_) return *pinned_ == choice;
  for (const auto& kv : choices_)
    if (kv.second == choice) return true;
  return false;
}

bool WeightedLayer::can_run(Choice choice) const {
  switch (choice) {
    case Choice::kSparse: return backend_ != Backend::kDense;
    case Choice::kDense: return backend_ != Backend::kSparse;
    default: return false;
  }
}

void WeightedLayer::pin_choice(Choice choice) {
  if (backend_ != Backend::kAuto)
    throw FormatError(describe((std::string("only an auto layer can pin a choice; this one is ") +
                                backend_name(backend_)).c_str()));
  if (!can_run(choice))
    throw FormatError(describe((std::string("cannot run '") + choice_name(choice) + "'").c_str()));
  std::lock_guard<std::mutex> lock(choices_mutex_);
  pinned_ = choice;
}

namespace {
// Process-wide record of measured choices, keyed by a layer's signature (kind,
// shape, nnz, geometry, ISA), the input-size key and the thread count: two
// loads of one model choose alike (so give identical results) and a reload
// does not measure again.
struct SharedChoices {
  std::mutex mutex;
  std::map<std::tuple<uint64_t, int64_t, size_t>, Choice> map;
};
SharedChoices& shared_choices() {
  static SharedChoices* choices = new SharedChoices();  // never destroyed: used until exit
  return *choices;
}
constexpr size_t kMaxSharedChoices = 4096;
}  // namespace

void WeightedLayer::mix_signature(int64_t value) {
  // FNV-1a over the 8 bytes of each value.
  for (int i = 0; i < 8; ++i) {
    signature_ ^= static_cast<uint64_t>(value >> (8 * i)) & 0xff;
    signature_ *= 1099511628211ull;
  }
}

void WeightedLayer::run_chosen(int64_t key, size_t workers,
                               FunctionRef<void(Choice, bool)> run) const {
  if (backend_ != Backend::kAuto)
    return run(backend_ == Backend::kSparse ? Choice::kSparse : Choice::kDense, false);
  // Run outside the lock: forward passes on several threads (and the image by
  // image steps of one, model.cc) run the same layer at once.
  std::optional<Choice> known;
  {
    std::lock_guard<std::mutex> lock(choices_mutex_);
    if (pinned_) {
      known = *pinned_;
    } else {
      const auto it = choices_.find(key);
      if (it != choices_.end()) known = it->second;
    }
  }
  if (known) return run(*known, false);
  SharedChoices& shared = shared_choices();
  const auto shared_key = std::make_tuple(signature_, key, workers);
  {
    std::unique_lock<std::mutex> lock(shared.mutex);
    const auto it = shared.map.find(shared_key);
    if (it != shared.map.end()) {
      const Choice chosen = it->second;
      lock.unlock();
      {
        std::lock_guard<std::mutex> own(choices_mutex_);
        if (choices_.size() >= kMaxAutoChoices) choices_.clear();
        choices_.emplace(key, chosen);
      }
      return run(chosen, false);
    }
  }
  // Best of runs in rotating order (sparse, dense[, direct, winograd], then starting one
  // later each round), so that first-touch and cache effects fall on all; a
  // third round unless the first two were costly and the fastest clearly (1.5x)
  // ahead of the next: on a shared machine one slow run can otherwise decide a
  // close call.
  Choice candidates[4];
  size_t count = 0;
  for (Choice c : {Choice::kSparse, Choice::kDense, Choice::kDenseDirect, Choice::kDenseWinograd})
    if (can_run(c)) candidates[count++] = c;
  double best[4] = {1e300, 1e300, 1e300, 1e300};
  size_t fastest = 0;
  for (size_t round = 0; round < 3; ++round) {
    double total = 0.0;
    for (size_t i = 0; i < count; ++i) {
      const size_t c = (round + i) % count;
      const auto start = std::chrono::steady_clock::now();
      run(candidates[c], true);
      best[c] = std::min(best[c], seconds_since(start));
      total += best[c];
    }
    fastest = static_cast<size_t>(std::min_element(best, best + count) - best);
    double runner_up = 1e300;
    for (size_t c = 0; c < count; ++c)
      if (c != fastest) runner_up = std::min(runner_up, best[c]);
    if (round >= 1 && total > 0.02 && runner_up > 1.5 * best[fastest]) break;
  }
  Choice chosen = candidates[fastest];
  {
    // Concurrent first calls may measure at once: all of them run what was stored first.
    std::lock_guard<std::mutex> lock(shared.mutex);
    if (shared.map.size() >= kMaxSharedChoices) shared.map.clear();
    chosen = shared.map.emplace(shared_key, chosen).first->second;
  }
  {
    std::lock_guard<std::mutex> lock(choices_mutex_);
    if (choices_.size() >= kMaxAutoChoices) choices_.clear();
    chosen = choices_.emplace(key, chosen).first->second;
  }
  run(chosen, false);
}

CsrMatrix WeightedLayer::weight_csr() const {
  if (backend_ == Backend::kDense)
    return CsrMatrix::from_dense("layer '" + name() + "'", rows_, cols_, dense_.data());
  if (!csr_released_) return sparse_;
  // From the column panels, row by row, its pieces in panel order: each piece
  // is sorted and lies in its panel's columns, so the row comes back as it was.
  const size_t rows = static_cast<size_t>(rows_);
  const bool narrow = CsrMatrix::narrow_columns(cols_);
  std::vector<int64_t> row_ptr(rows + 1, 0), cols;
  std::vector<float> values;
  cols.reserve(nnz_);
  values.reserve(nnz_);
  for (size_t r = 0; r < rows; ++r) {
    const size_t r0 = r / kPanelRowBlock * kPanelRowBlock, r1 = std::min(rows, r0 + kPanelRowBlock);
    for (size_t p = 0; p < panels_; ++p) {
      const size_t i = r0 * panels_ + p * (r1 - r0) + (r - r0);
      for (uint32_t k = panel_starts_[i]; k < panel_starts_[i + 1]; ++k) {
        cols.push_back(static_cast<int64_t>(narrow ? panel_col16_[k] : panel_col32_[k]));
        values.push_back(panel_values_[k]);
      }
    }
    row_ptr[r + 1] = static_cast<int64_t>(cols.size());
  }
  return CsrMatrix::from_arrays("layer '" + name() + "'", rows_, cols_, row_ptr.data(), row_ptr.size(),
                                cols.data(), cols.size(), values.data(), values.size());
}

std::vector<float> WeightedLayer::weight_dense() const {
  if (backend_ != Backend::kSparse) return dense_;
  std::vector<float> dense(static_cast<size_t>(rows_) * static_cast<size_t>(cols_));
  (csr_released_ ? weight_csr() : sparse_).to_dense(dense.data());
  return dense;
}

void WeightedLayer::release_csr_entries() {
  if (backend_ == Backend::kDense || panels_ == 0 || (vector_panels_ == 0 && !uses_sell())) return;
  row_ptr_ = sparse_.row_ptr();
  sparse_ = CsrMatrix();
  csr_released_ = true;
}

void WeightedLayer::sparse_matmul_serial(const float* x, size_t ldx, size_t n, float* y,
                                         size_t ldy, bool relu) const {
  sparse_tile(x, ldx, 0, static_cast<size_t>(rows_), 0, n, y, ldy, relu);
}

void WeightedLayer::sparse_tile(const float* x, size_t ldx, size_t row_begin, size_t row_end,
                                size_t col_begin, size_t col_end, float* y, size_t ldy,
                                bool relu) const {
  const Epilogue ep{bias_.empty() ? nullptr : bias_.data(), relu};
  const KernelTable& k = kernel_table(isa_);
  const uint32_t* rp = sparse_.row_ptr().data();
  const float* v = sparse_.values().data();
  const bool narrow = CsrMatrix::narrow_columns(cols_);  // sparse_ may be released
  if (col_begin == 0 && col_end == 1 && ldx == 1 && ldy == 1) {
    if (uses_sell()) {
      k.sellmv(sell_ref(sell_, sell_stream_), x, ep, row_begin, row_end, y);
    } else if (vector_panels_ > 0) {
      // x in L1-sized slices: the row range once per panel, adding into y.
      const size_t rows = static_cast<size_t>(rows_);
      for (size_t p = 0; p < vector_panels_; ++p) {
        const bool last = p + 1 == vector_panels_;
        const Epilogue pe{last ? ep.bias : nullptr, last && relu, p > 0};
        const CsrRef<uint16_t> panel{vector_starts_.data() + p * (rows + 1), vector_col16_.data(),
                                     vector_values_.data(), nullptr, false, csrmv_stream_};
        (vector_loads_ ? k.csrmv_u16_l1 : k.csrmv_u16)(panel, x + p * vector_width_, pe, row_begin,
                                                       row_end, y);
      }
    } else if (narrow) {
      (csrmv_loads_ ? k.csrmv_u16_l1 : k.csrmv_u16)(
          {rp, sparse_.col16().data(), v, nullptr, false, csrmv_stream_}, x, ep, row_begin, row_end, y);
    } else {
      k.csrmv_u32({rp, sparse_.col32().data(), v, nullptr, false, csrmv_stream_}, x, ep, row_begin,
                  row_end, y);
    }
  } else if (panels_ > 1) {
    // X has too many rows to stay in cache while a row walks all of it: block
    // by block of rows, panel by panel (X panels of 64 KiB, see
    // kPanelColumns), adding every panel's products into Y, the bias and ReLU
    // with the last. The nonzeros are stored in this order (panel_starts_).
    const size_t rows = static_cast<size_t>(rows_);
    for (size_t r0 = row_begin / kPanelRowBlock * kPanelRowBlock; r0 < row_end; r0 += kPanelRowBlock) {
      const size_t r1 = std::min(rows, r0 + kPanelRowBlock);
      const size_t rb = std::max(row_begin, r0), re = std::min(row_end, r1);
      for (size_t c0 = col_begin; c0 < col_end; c0 += kPanelBatch) {
        const size_t c1 = std::min(col_end, c0 + kPanelBatch);
        for (size_t p = 0; p < panels_; ++p) {
          const bool last = p + 1 == panels_;
          const Epilogue pe{last ? ep.bias : nullptr, last && relu, p > 0};
          // Row r's nonzeros in this block and panel: [starts[r], starts[r + 1]).
          const uint32_t* starts = panel_starts_.data() + r0 * panels_ + p * (r1 - r0) - r0;
          if (narrow)
            k.csrmm_u16({starts, panel_col16_.data(), panel_values_.data()}, x, ldx, pe, rb, re,
                        c0, c1, y, ldy);
          else
            k.csrmm_u32({starts, panel_col32_.data(), panel_values_.data()}, x, ldx, pe, rb, re,
                        c0, c1, y, ldy);
        }
      }
    }
  } else {
    const bool prefetch = prefetch_x(col_end - col_begin);
    if (narrow)
      k.csrmm_u16({rp, sparse_.col16().data(), v, nullptr, prefetch}, x, ldx, ep, row_begin,
                  row_end, col_begin, col_end, y, ldy);
    else
      k.csrmm_u32({rp, sparse_.col32().data(), v, nullptr, prefetch}, x, ldx, ep, row_begin,
                  row_end, col_begin, col_end, y, ldy);
  }
}

void WeightedLayer::sparse_offsets_tile(const uint32_t* offsets, const uint32_t* starts,
                                        const uint32_t* ends, const float* x, size_t row_begin,
                                        size_t row_end, size_t col_begin, size_t col_end, float* y,
                                        size_t ldy, bool accumulate, bool finish, bool relu) const {
  const Epilogue ep{finish && !bias_.empty() ? bias_.data() : nullptr, finish && relu, accumulate};
  kernel_table(isa_).csrmm_u32({starts ? starts : sparse_.row_ptr().data(), offsets,
                                sparse_.values().data(), ends},
                               x, 1, ep, row_begin, row_end, col_begin, col_end, y, ldy);
}

bool WeightedLayer::prefetch_x(size_t n) const {
  // Bytes of X one output row's 32-column tile reads: a row of X per weight column.
  return static_cast<uint64_t>(cols_) * std::min<size_t>(n, 32) * sizeof(float) > kPrefetchMinXBytes;
}

void WeightedLayer::dense_block(const float* x, size_t ldx, size_t row_begin, size_t row_end,
                                size_t col_begin, size_t col_end, float* y, size_t ldy,
                                bool relu) const {
  const int m = static_cast<int>(row_end - row_begin), n = static_cast<int>(col_end - col_begin);
  const float* a = dense_.data() + row_begin * static_cast<size_t>(cols_);
  if (n == 1 && ldx == 1 && ldy == 1)
    blas_sgemv(m, static_cast<int>(cols_), a, static_cast<int>(cols_), x, y + row_begin);
  else
    blas_sgemm(m, n, static_cast<int>(cols_), a, static_cast<int>(cols_), x + col_begin,
               static_cast<int>(ldx), y + row_begin * ldy + col_begin, static_cast<int>(ldy));
  if (bias_.empty() && !relu) return;
  const Epilogue ep{bias_.empty() ? nullptr : bias_.data(), relu};
  for (size_t r = row_begin; r < row_end; ++r) {
    float* yr = y + r * ldy;
    for (size_t c = col_begin; c < col_end; ++c) yr[c] = apply_epilogue(yr[c], ep, r);
  }
}

void WeightedLayer::matmul(const ForwardContext& ctx, Backend backend, const float* x, size_t ldx,
                           size_t n, float* y, size_t ldy) const {
  const bool relu = ctx.fuse_relu;
  if (backend == Backend::kDense) {
    // Single-threaded BLAS calls on blocks spread over the engine's own pool:
    // columns when there are many (batch, output pixels), rows otherwise.
    const size_t workers = ctx.num_workers;
    const double work = static_cast<double>(rows_) * static_cast<double>(cols_) * static_cast<double>(n);
    if (workers <= 1 || ctx.pool == nullptr || work < kMinParallelDenseWork) {
      dense_block(x, ldx, 0, static_cast<size_t>(rows_), 0, n, y, ldy, relu);
      return;
    }
    const bool by_columns = n >= 16 * workers;
    const size_t extent = by_columns ? n : static_cast<size_t>(rows_);
    const size_t step = by_columns ? 16 : 8;
    const size_t blocks = std::min(workers, (extent + step - 1) / step);
    const size_t width = ((extent + blocks - 1) / blocks + step - 1) / step * step;
    ctx.pool->parallel_for((extent + width - 1) / width, [&](size_t b, size_t) {
      const size_t lo = b * width, hi = std::min(extent, lo + width);
      if (by_columns)
        dense_block(x, ldx, 0, static_cast<size_t>(rows_), lo, hi, y, ldy, relu);
      else
        dense_block(x, ldx, lo, hi, 0, n, y, ldy, relu);
    });
    return;
  }

  const size_t workers = ctx.num_workers;
  const double work = static_cast<double>(nnz_) * static_cast<double>(n);
  if (workers <= 1 || ctx.pool == nullptr || work < kMinParallelWork || rows_ == 0) {
    sparse_tile(x, ldx, 0, rows_, 0, n, y, ldy, relu);
    return;
  }
  const size_t target = 4 * workers;
  if (n == 1 && ldx == 1 && ldy == 1 && uses_sell()) {
    // Blocks of whole row groups, balanced by steps.
    const std::vector<uint32_t>& group_start = sell_.group_start;
    const size_t groups = group_start.size() - 1, blocks = std::min(groups, target);
    const uint64_t steps = group_start.back();
    const auto group_bound = [&](size_t b) -> size_t {
      if (b == blocks) return groups;
      const uint64_t goal = steps * b / blocks;
      return static_cast<size_t>(
          std::lower_bound(group_start.begin(), group_start.end(), goal) - group_start.begin());
    };
    ctx.pool->parallel_for(blocks, [&](size_t b, size_t) {
      const size_t rows = static_cast<size_t>(rows_);
      sparse_tile(x, 1, std::min(rows, group_bound(b) * kSellLanes),
                  std::min(rows, group_bound(b + 1) * kSellLanes), 0, 1, y, 1, relu);
    });
    return;
  }
  // Tiles: row blocks balanced by nonzeros, and column blocks (multiples of 32)
  // when there are too few rows to keep every worker busy.
  const size_t row_blocks = std::min<size_t>(static_cast<size_t>(rows_), target);
  size_t col_blocks = 1;
  if (row_blocks < target && n >= 64)
    col_blocks = std::min<size_t>((n + 31) / 32, (target + row_blocks - 1) / row_blocks);
  const size_t col_width = ((n + col_blocks - 1) / col_blocks + 31) / 32 * 32;
  col_blocks = (n + col_width - 1) / col_width;

  // Row block b starts at the first row whose nonzeros reach b/row_blocks of
  // the total (each task finds its own bounds: no allocation per call).
  const auto& rp = csr_row_ptr();
  const auto row_bound = [&](size_t b) -> size_t {
    if (b == 0) return 0;
    if (b == row_blocks) return static_cast<size_t>(rows_);
    const uint64_t goal = static_cast<uint64_t>(nnz_) * b / row_blocks;
    const size_t r = static_cast<size_t>(std::lower_bound(rp.begin(), rp.end(), goal) - rp.begin());
    // At least one row per block: block b starts in [b, rows - (row_blocks - b)].
    return std::min<size_t>(std::max(r, b), static_cast<size_t>(rows_) - (row_blocks - b));
  };

  ctx.pool->parallel_for(row_blocks * col_blocks, [&](size_t task, size_t) {
    const size_t rb = task / col_blocks, cb = task % col_blocks;
    const size_t c0 = cb * col_width, c1 = std::min(n, c0 + col_width);
    sparse_tile(x, ldx, row_bound(rb), row_bound(rb + 1), c0, c1, y, ldy, relu);
  });
}

// --- Linear ----------------------------------------------------------------

Linear::Linear(std::string name, CsrMatrix weight, std::vector<float> bias, Backend backend)
    : WeightedLayer(std::move(name), std::move(weight), std::move(bias), backend,
                    kAutoLinearSparseDensity) {
  mix_signature(1);  // kind: linear
  build_column_panels();
  build_sell();
  build_vector_panels();
  release_csr_entries();  // batch 1 runs on its own layout, batches on the column panels
}

Shape Linear::output_shape(const Shape& input) const {
  if (input.size() != 1 || input[0] != cols()) {
    std::string msg = "expects " + std::to_string(cols()) +
                      " input features (weight shape " + dims(rows(), cols()) +
                      ") but its input has per-sample shape " + shape_to_string(input);
    if (input.size() == 3) msg += "; add a Flatten before it";
    throw ShapeError(describe(msg.c_str()));
  }
  return {rows()};
}

size_t Linear::scratch_floats(const Shape&, int64_t batch) const {
  if (!has_column_panels() || static_cast<size_t>(batch) <= panel_batch()) return 0;
  return static_cast<size_t>(cols()) * panel_batch();
}

void Linear::forward(const TensorView& in, const MutableTensorView& out,
                     const ForwardContext& ctx) const {
  const size_t n = static_cast<size_t>(in.batch);
  const size_t chunk = panel_batch();
  run_chosen(batch_bucket(in.batch), ctx.num_workers, [&](Choice choice, bool) {
    if (choice != Choice::kSparse || !has_column_panels() || n <= chunk) {
      matmul(ctx, choice == Choice::kSparse ? Backend::kSparse : Backend::kDense, in.data, n, n,
             out.data, n);
      return;
    }
    // The column panel walk reads X in 64-column slices of a panel's rows: in
    // the (features, batch) input those rows lie n floats apart, spread over
    // n / 64 times the memory, and batch 256 ran 1.3-1.4x slower per sample
    // than 64 (4096x4096 and 25088x4096 at 10 %). So each 64 batch columns are
    // first copied into one contiguous chunk (worker 0's scratch).
    float* packed = ctx.scratch;
    const size_t features = static_cast<size_t>(cols());
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
      const size_t width = std::min(chunk, n - c0);
      const auto copy = [&](size_t f0, size_t f1) {
        for (size_t f = f0; f < f1; ++f)
          std::memcpy(packed + f * width, in.data + f * n + c0, sizeof(float) * width);
      };
      if (ctx.pool == nullptr || ctx.num_workers <= 1) {
        copy(0, features);
      } else {
        const size_t tasks = ctx.num_workers;
        ctx.pool->parallel_for(tasks, [&](size_t t, size_t) {
          copy(t * features / tasks, (t + 1) * features / tasks);
        });
      }
      matmul(ctx, Backend::kSparse, packed, width, width, out.data + c0, n);
    }
  });
}

// --- Conv2d ----------------------------------------------------------------

Conv2d::Conv2d(std::string name, CsrMatrix weight, std::vector<float> bias, int64_t in_channels,
               int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
               int64_t pad_h, int64_t pad_w, Backend backend, bool same_padding)
    : WeightedLayer(std::move(name), std::move(weight), std::move(bias), backend,
                    kAutoConvSparseDensity),
      in_channels_(in_channels),
      kernel_h_(kernel_h),
      kernel_w_(kernel_w),
      stride_h_(stride_h),
      stride_w_(stride_w),
      pad_h_(pad_h),
      pad_w_(pad_w),
      same_padding_(same_padding) {
  if (in_channels < 1 || kernel_h < 1 || kernel_w < 1 || stride_h < 1 || stride_w < 1 ||
      pad_h < 0 || pad_w < 0 || !window_in_range({kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w}))
    throw FormatError(describe("in_channels, kernel size and stride must be >= 1 and padding >= 0, all below 2^31"));
  if (in_channels * kernel_h * kernel_w != cols())
    throw WeightError(describe(("weight has " + std::to_string(cols()) +
                                " columns but in_channels * kernel_h * kernel_w = " +
                                std::to_string(in_channels * kernel_h * kernel_w))
                                   .c_str()));
  for (int64_t v : {int64_t{2}, in_channels, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w})
    mix_signature(v);  // kind: conv2d, and its geometry
  if (!direct_capable()) build_column_panels();  // direct convolutions never run im2col + SpMM
}

bool Conv2d::is_pointwise() const {
  return kernel_h_ == 1 && kernel_w_ == 1 && stride_h_ == 1 && stride_w_ == 1 && pad_h_ == 0 &&
         pad_w_ == 0;
}

Shape Conv2d::output_shape(const Shape& input) const {
  if (input.size() != 3 || input[0] != in_channels_) {
    const std::string msg = "expects a feature map of " + std::to_string(in_channels_) +
                            " channels (C, H, W) but its input has per-sample shape " +
                            shape_to_string(input);
    throw ShapeError(describe(msg.c_str()));
  }
  if (same_padding_) {
    const std::string mismatch = same_padding_mismatch(input, window());
    if (!mismatch.empty()) throw ShapeError(describe(mismatch.c_str()));
  }
  const int64_t oh = (input[1] + 2 * pad_h_ - kernel_h_) / stride_h_ + 1;
  const int64_t ow = (input[2] + 2 * pad_w_ - kernel_w_) / stride_w_ + 1;
  if (input[1] + 2 * pad_h_ < kernel_h_ || input[2] + 2 * pad_w_ < kernel_w_ || oh < 1 || ow < 1) {
    const std::string msg = "kernel " + dims(kernel_h_, kernel_w_) + " with padding " +
                            dims(pad_h_, pad_w_) + " does not fit input " + shape_to_string(input);
    throw ShapeError(describe(msg.c_str()));
  }
  return {rows(), oh, ow};
}

bool Conv2d::uses_conv3() const {
  return direct_capable() && kernel_w_ == 3 && kernel_table(isa()).conv3 != nullptr;
}

bool Conv2d::direct_capable() const {
  return stride_h_ == 1 && stride_w_ == 1 && !is_pointwise();
}

namespace {
// Direct convolution computes blocks of output rows over the padded width (the
// columns past out_w are discarded), so that even 14x14 maps give the kernel
// runs of a few hundred columns. About this many columns per block:
constexpr int64_t kDirectBlockColumns = 512;

// conv3 computes whole 64-position tiles (the last one of a block past its
// end): it takes, among heights from that up to 4x, the one whose blocks
// compute the fewest positions. VGG's 224x224 maps (rows of 232): blocks of
// 8 rows, 29 whole tiles, instead of 2 rows, 7.25 tiles (9 % of the FMAs
// wasted); 112x112 (rows of 120): 8 rows, 15 tiles, instead of 4, 7.5.
int64_t direct_block_rows(int64_t out_h, int64_t padded_w, bool whole_tiles) {
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(out_h, kDirectBlockColumns / padded_w));
  if (!whole_tiles) return rows;
  const auto tiles = [&](int64_t n) { return (n * padded_w + 63) / 64; };
  int64_t best = rows, best_tiles = 0;
  for (int64_t r = rows; r <= std::min(out_h, 4 * rows); ++r) {
    const int64_t computed = out_h / r * tiles(r) + tiles(out_h % r);
    if (r == rows || computed < best_tiles) best = r, best_tiles = computed;
  }
  return best;
}

// Floats of a zero-padded image (channels planes `plane` floats apart) plus
// the tail that direct convolution's loads run over past the last plane: a
// sparse tile's last run reaches kernel_w - 1 past it, a dense tile's 16-float
// loads up to 15, a conv3 tile's loads up to 63 (it computes whole 64-position
// tiles).
size_t padded_image_floats(int64_t channels, int64_t plane, int64_t kernel_w) {
  return static_cast<size_t>(channels * plane + std::max<int64_t>(kernel_w, 64));
}

// Floats from one padded row to the next: padded_w, for conv3 rounded up to a
// multiple of 8, so that with the image 64-byte aligned and the kernel column
// out of the offsets every load of a tile is 32-byte aligned (the extra
// columns are computed and discarded).
int64_t direct_row(int64_t padded_w, bool conv3) { return conv3 ? (padded_w + 7) / 8 * 8 : padded_w; }

// Floats from one channel's padded plane to the next: padded_h rows, for conv3
// 16 more where that would be an even number of 64-byte lines. A panel's runs
// for one tile sit at the same place in each plane; planes a power-of-two
// number of lines apart put them in a few L1 sets only (VGG's 14x14 maps: 16x16
// planes, 16 lines, every fourth set: a quarter of the L1 for the panel).
int64_t direct_plane(int64_t padded_h, int64_t row, bool conv3) {
  const int64_t plane = padded_h * row;
  return conv3 && plane % 32 == 0 ? plane + 16 : plane;
}

// Floats between one output channel's block of rows and the next in direct
// convolution's output tile, past its end: conv3 writes two before each row's
// first tile (kernels.h), which must not be the row before's last two.
constexpr int64_t kDirectRowGap = 16;

// im2col lowers at most about this many floats (4 MiB) at a time: whole rows
// of output, at least one. The whole patch matrix of VGG's conv1_2 (576 x
// 224^2) is 115 MB per worker; chunks of it give the BLAS and sparse products
// enough columns (1,792 there) at a fraction of the memory.
constexpr size_t kIm2colChunkFloats = 1 << 20;
}  // namespace

int64_t Conv2d::im2col_chunk_rows(int64_t out_h, int64_t out_w) const {
  const size_t row_floats = std::max<size_t>(1, static_cast<size_t>(cols()) * static_cast<size_t>(out_w));
  return std::max<int64_t>(1, std::min<int64_t>(out_h, static_cast<int64_t>(kIm2colChunkFloats / row_floats)));
}

// Rows W floats apart without padding columns, where the kernel masks the
// neighbours past a row's ends (KernelTable::conv3_periodic: the AVX-512
// kernel) and W is a multiple of 8 (aligned loads): a 3-wide kernel padded by
// one column, VGG's. With padding columns VGG's 112- and 56-wide maps take
// rows of 120 and 64 floats (114 and 58 rounded up to a multiple of 8), 6.7 %
// and 12.5 % of the positions computed and thrown away. Zen 4, one thread,
// Han's densities (bench/ab.py): conv1_2 1.08x, conv2_x 1.09-1.11x, conv3_x
// 1.11-1.15x faster; the 28- and 14-wide maps keep their padding columns.
Conv2d::DirectLayout Conv2d::direct_layout(int64_t height, int64_t width) const {
  const bool conv3 = uses_conv3();
  DirectLayout layout{};
  if (conv3 && kernel_table(isa()).conv3_periodic && pad_w_ == 1 && width % 8 == 0) {
    layout.row = width;
    layout.left = 0;
    layout.period = width;
  } else {
    layout.row = direct_row(width + 2 * pad_w_, conv3);
    layout.left = pad_w_;
    layout.period = 0;
  }
  layout.plane = direct_plane(height + 2 * pad_h_, layout.row, conv3);
  return layout;
}

size_t Conv2d::scratch_floats(const Shape& input, int64_t) const {
  if (is_pointwise()) return 0;
  const Shape out = output_shape(input);
  size_t floats = 0;
  if (direct_capable() && backend() != Backend::kDense) {
    // The padded image (+ the row tail the last loads run over), 16 floats to
    // align it to 64 bytes, 16 before the block of output rows, and that
    // block, its rows kDirectRowGap floats apart (conv3 writes 2 floats before
    // a row's first tile).
    const DirectLayout layout = direct_layout(input[1], input[2]);
    floats = padded_image_floats(input[0], layout.plane, kernel_w_) + 32 +
             static_cast<size_t>(rows() * (direct_block_rows(out[1], layout.row, uses_conv3()) * layout.row +
                                           kDirectRowGap));
  }
  if (!direct_capable() || backend() != Backend::kSparse)  // a chunk of the im2col patch matrix
    floats = std::max(floats, static_cast<size_t>(cols()) *
                                  static_cast<size_t>(im2col_chunk_rows(out[1], out[2]) * out[2]));
  if (can_run(Choice::kDenseWinograd)) floats = std::max(floats, winograd_scratch_floats(out[1], out[2]));
  return floats;
}

namespace {
// Direct convolution goes tile by tile: kDirectTile output columns (of a block
// of rows over the padded width; the kernel's 64-column register tile) for
// every output channel, so that the input runs one tile reads are reused from
// L1 by all output channels instead of coming back from L2 for each. Wide
// layers split the input channels into panels whose runs for one tile fit
// kDirectPanelBytes (half of a 32 KiB L1), accumulating each panel's products
// into the tile. On Zen 3 this took VGG-16's conv3-5 layers from 12-15 to
// 19-30 useful GFLOP/s on one core (32-column tiles or 32 KiB panels: slower).
// conv3 on some maps takes two tiles at a time (DirectPlan::tile, below).
constexpr size_t kDirectTile = 64;
constexpr int64_t kDirectPanelBytes = 16 * 1024;
// conv3's panels are twice that: each row of each panel pays the kernel's
// fixed cost (its groups' loops, the three columns combined, the tile's loads
// and stores), which at low density outweighs the L1 misses (Zen 4, one
// thread, AVX-512 kernel,
// VGG-16 at Han's densities: 1.01-1.08x per layer, 4 % in all; conv4_2 at 5 %
// 1.19x, at 10 % 1.11x; the AVX2 kernel alike). Only with the planes spread
// over the L1 sets (direct_plane): before that, 32 KiB panels made the 14x14
// layers 13 % slower. With joint entries (kernels.h), 48 KiB measured
// 0.86-1.05x per layer; 64 and 128 KiB 0.75-1.02x (conv3_2, conv4_2, conv5_2,
// conv4_2 at 5 % and 10 %), 24 and 40 KiB within noise.
constexpr int64_t kConv3PanelBytes = 32 * 1024;
constexpr double kJointMinShare = 1.15;  // see direct_plan
// conv3 calls of two tiles (KernelTable::conv3_double_tiles) on maps whose
// rows take more than kConv3DoubleTileRows[0] and at most
// kConv3DoubleTileRows[1] floats: each row of each panel pays the kernel's
// fixed cost (its groups' loops, combining the columns, the tile's stores)
// half as often per position, for panels of 1.5x fewer channels (rows of 32:
// a tile's span per channel grows from 130 to 194 floats). Zen 4, VGG-16 at
// Han's densities, both plans timed alternately in one process on a busy host
// (the same plan against itself: 0.96-1.03x), 1 / 2 threads: conv4_x (28x28
// maps in rows of 32) 1.02-1.03x / 1.03x, conv4_2 at 10 % 1.06x / 1.04x, at 5 %
// 1.06x / 0.96x; conv5_x (14x14 in rows of 16, where the panels shrink 1.65x)
// 0.97-1.03x / 0.83-0.98x, conv3_x (rows of 56-64) and conv2_x 0.93-0.99x, so
// those keep one tile per call. Not measured on rows of 24.
// Where 512-bit FMAs run at full rate (cpu_full_width_avx512(): Zen 5), every
// map takes two tiles per call. There a one-column entry's loop is bound by
// loads, not FMAs (bench/probes/conv3_loop.cc: 57-59 % of the FMA peak at 64
// positions per broadcast, 65-67 % at 128, 75-78 % where two columns share
// each load), and a row's fixed cost counts twice as much against FMAs twice
// as fast. Zen 5, VGG-16 at Han's densities, both plans in alternating
// processes (bench/ab.py, three runs at one thread, one at two): conv1_2
// 1.03-1.07x, conv2_1 0.98-1.04x, conv2_2 1.01-1.03x, conv3_2 1.05-1.09x,
// conv3_3 1.04-1.08x, conv3_2 at 10 % 1.07x; conv5_x (rows of 16)
// 1.05-1.12x at one thread and 1.07-1.08x at two.
constexpr int64_t kConv3DoubleTileRows[2] = {16, 32};
// Every tile streams the nonzeros of all output channels it computes; in
// groups of output channels whose nonzeros take about this many bytes, a
// group's stay in L2/L3 from one tile to the next. Measured on VGG-16 at one
// thread on Zen 3: 0.75-2 MiB alike; without groups conv4_x and conv5_x are
// 20-40 % slower, conv2_x and conv3_x unaffected.
constexpr double kDirectGroupBytes = 1024.0 * 1024.0;
// Padded images of at least this many floats (1 MiB) are padded by all workers.
constexpr size_t kParallelPadFloats = 256 * 1024;
}  // namespace

std::shared_ptr<const Conv2d::DirectPlan> Conv2d::direct_plan(int64_t height, int64_t width) const {
  std::lock_guard<std::mutex> lock(plan_mutex_);
  if (plan_ && plan_height_ == height && plan_width_ == width) return plan_;
  const int64_t padded_h = height + 2 * pad_h_, padded_w = width + 2 * pad_w_;
  const int64_t plane = padded_h * padded_w;
  auto plan = std::make_shared<DirectPlan>();
  plan->conv3 = uses_conv3();
  plan->layout = direct_layout(height, width);
  const int64_t row = plan->layout.row;
  if (static_cast<uint64_t>(padded_image_floats(in_channels_, plan->layout.plane, kernel_w_)) >= (uint64_t{1} << 32))
    throw ShapeError(describe("padded input too large for 32-bit offsets"));
  // Positions per kernel call, and the input floats one call reads per
  // channel: kernel_h runs of tile + kernel_w - 1 (+ 16: a run rarely starts
  // on a cache line), or one span when the call wraps a padded row.
  const bool double_tiles = kernel_table(isa()).conv3_double_tiles &&
                            (cpu_full_width_avx512() ||
                             (row > kConv3DoubleTileRows[0] && row <= kConv3DoubleTileRows[1]));
  plan->tile = plan->conv3 && double_tiles ? 2 * kDirectTile : kDirectTile;
  const int64_t tile = static_cast<int64_t>(plan->tile);
  const int64_t span = std::min((kernel_h_ - 1) * row + tile + kernel_w_ - 1,
                                kernel_h_ * (tile + kernel_w_ - 1 + 16));
  const int64_t fit = std::max<int64_t>(1, (plan->conv3 ? kConv3PanelBytes : kDirectPanelBytes) / (4 * span));
  const size_t panels = static_cast<size_t>((in_channels_ + fit - 1) / fit);
  const int64_t per_panel = (in_channels_ + static_cast<int64_t>(panels) - 1) /
                            static_cast<int64_t>(panels);  // balanced panels
  plan->panels = panels;
  const CsrMatrix& w = sparse_weight();
  const size_t out_channels = static_cast<size_t>(rows());
  const auto column = [&](size_t k) -> int64_t { return w.narrow_indices() ? w.col16()[k] : w.col32()[k]; };
  const auto panel_of = [&](int64_t col) { return static_cast<size_t>(col / (kernel_h_ * kernel_w_) / per_panel); };
  const auto offset_of = [&](int64_t col) {  // conv3's offsets leave the kernel column out
    const int64_t c = col / (kernel_h_ * kernel_w_);
    const int64_t i = (col / kernel_w_) % kernel_h_;
    const int64_t j = col % kernel_w_;
    return static_cast<uint32_t>(c * plan->layout.plane + i * row + (plan->conv3 ? 0 : j));
  };
  const auto& row_ptr = w.row_ptr();
  if (!plan->conv3) {
    // Each row's nonzeros by panel: the panels being ranges of columns, CSR order.
    plan->offsets.resize(w.nnz());
    plan->starts.assign((panels + 1) * out_channels, 0);
    for (size_t r = 0; r < out_channels; ++r) {
      size_t p = 0;
      for (size_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) {
        const int64_t col = column(k);
        for (; p <= panel_of(col); ++p) plan->starts[p * out_channels + r] = static_cast<uint32_t>(k);
        plan->offsets[k] = offset_of(col);
      }
      for (; p <= panels; ++p) plan->starts[p * out_channels + r] = row_ptr[r + 1];
    }
  } else {
    // conv3 (kernels.h): each row's nonzeros as entries, one per kernel row
    // (c, i) (or, where the kernel cannot share a load, one per nonzero), by
    // panel and by the kernel columns they hold (group), CSR order within a
    // group; kConv3Slots slots per row and panel, panel p's at
    // starts[(kConv3Slots * p + s) * rows + r].
    // Joint entries where the kernel shares loads and enough nonzeros share a
    // kernel row: kJointMinShare fewer loads (at random, 3d / (1 - (1 - d)^3):
    // 1.11x at 10 % density, 1.26x at 22 %). Below, the joint groups' extra
    // loops cost more than the loads they save (VGG's conv4_2 at 10 %: 0.89x).
    bool joint = kernel_table(isa()).conv3_joint_entries;
    if (joint) {
      size_t kernel_rows = 0;  // entries if joint: distinct (row, kernel row) pairs
      for (size_t r = 0; r < out_channels; ++r)
        for (size_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k)
          if (k == row_ptr[r] || column(k) / kernel_w_ != column(k - 1) / kernel_w_) ++kernel_rows;
      joint = static_cast<double>(w.nnz()) >= kJointMinShare * static_cast<double>(kernel_rows);
    }
    struct Entry {
      uint32_t key;  // panel * kConv3Groups + group
      uint32_t offset;
      float w[3];
    };
    std::vector<Entry> entries;
    std::vector<uint32_t> count(panels * kConv3Groups + 1), next, order;
    plan->offsets.reserve(w.nnz());
    plan->values.reserve(w.nnz());
    plan->starts.assign(kConv3Slots * panels * out_channels, 0);
    const auto group_of = [](unsigned columns) {
      return static_cast<uint32_t>(std::find(kConv3Columns, kConv3Columns + kConv3Groups, columns) - kConv3Columns);
    };
    for (size_t r = 0; r < out_channels; ++r) {
      entries.clear();
      unsigned columns = 0;  // of the entry being filled, entries.back(), whose key lacks its group
      const auto close = [&] {
        if (!entries.empty()) entries.back().key += group_of(columns);
      };
      for (size_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) {
        const int64_t col = column(k);
        const unsigned j = static_cast<unsigned>(col % kernel_w_);
        // A new entry: another kernel row, or its column j taken (a duplicate).
        if (!joint || k == row_ptr[r] || col / kernel_w_ != column(k - 1) / kernel_w_ || (columns >> j & 1)) {
          close();
          entries.push_back({static_cast<uint32_t>(panel_of(col) * kConv3Groups), offset_of(col), {0, 0, 0}});
          columns = 0;
        }
        columns |= 1u << j;
        entries.back().w[j] = w.values()[k];
      }
      close();
      // A counting sort by key, stable (CSR order within a group): count[key]
      // becomes the key's first entry, order the entries in key order.
      std::fill(count.begin(), count.end(), 0);
      for (const Entry& e : entries) ++count[e.key + 1];
      for (size_t key = 0; key < panels * kConv3Groups; ++key) count[key + 1] += count[key];
      order.resize(entries.size());
      next.assign(count.begin(), count.end());
      for (size_t i = 0; i < entries.size(); ++i) order[next[entries[i].key]++] = static_cast<uint32_t>(i);
      const uint32_t first = static_cast<uint32_t>(plan->offsets.size());
      const auto slot = [&](size_t p, size_t s) -> uint32_t& {
        return plan->starts[(kConv3Slots * p + s) * out_channels + r];
      };
      for (size_t p = 0; p < panels; ++p) {
        for (size_t g = 0; g <= kConv3Groups; ++g) slot(p, g) = first + count[p * kConv3Groups + g];
        slot(p, kConv3Slots - 1) = static_cast<uint32_t>(plan->values.size());
        for (uint32_t at = count[p * kConv3Groups]; at < count[(p + 1) * kConv3Groups]; ++at) {
          const Entry& e = entries[order[at]];
          plan->offsets.push_back(e.offset);
          const unsigned held = kConv3Columns[e.key % kConv3Groups];
          for (unsigned j = 0; j < 3; ++j)
            if (held >> j & 1) plan->values.push_back(e.w[j]);
        }
      }
    }
  }
  if (can_run(Choice::kDenseDirect)) {
    plan->dense_offsets.resize(static_cast<size_t>(cols()));
    for (int64_t col = 0; col < cols(); ++col) {
      const int64_t c = col / (kernel_h_ * kernel_w_);
      const int64_t i = (col / kernel_w_) % kernel_h_;
      const int64_t j = col % kernel_w_;
      plan->dense_offsets[static_cast<size_t>(col)] = static_cast<uint32_t>(c * plane + i * padded_w + j);
    }
  }
  plan_height_ = height;
  plan_width_ = width;
  plan_ = plan;
  return plan_;
}

void Conv2d::pad_channels(const float* image, float* padded, int64_t height, int64_t width,
                          int64_t row, int64_t left, int64_t plane_floats, int64_t c0, int64_t c1) const {
  const int64_t channels = in_channels_;
  const int64_t padded_w = row;
  const size_t padded_plane = static_cast<size_t>(plane_floats);
  const size_t tail = c1 == channels ? padded_image_floats(channels, plane_floats, kernel_w_) -
                                           static_cast<size_t>(channels) * padded_plane
                                     : 0;
  // Only the border is zeroed, each float of the plane written once: the top
  // rows with the first row's left pad, then after each row its right pad with
  // the next row's left pad (the bottom rows and the plane's end after the last).
  const size_t bottom = padded_plane - static_cast<size_t>((pad_h_ + height) * padded_w);
  const size_t pad_w = static_cast<size_t>(left);
  const size_t right = static_cast<size_t>(padded_w - width) - pad_w;  // pad_w, or more past a wider row
  for (int64_t c = c0; c < c1; ++c) {
    float* plane = padded + static_cast<size_t>(c) * padded_plane;
    const float* source = image + c * height * width;
    std::memset(plane, 0, sizeof(float) * (static_cast<size_t>(pad_h_ * padded_w) + pad_w));
    for (int64_t y = 0; y < height; ++y) {
      float* row = plane + (y + pad_h_) * padded_w + left;
      std::memcpy(row, source + y * width, sizeof(float) * width);
      const size_t gap = y + 1 < height ? right + pad_w : right + bottom;
      std::memset(row + width, 0, sizeof(float) * gap);
    }
  }
  std::memset(padded + static_cast<size_t>(channels) * padded_plane, 0, sizeof(float) * tail);
}

void Conv2d::pad_image(const ForwardContext& ctx, const float* image, float* padded, int64_t height,
                       int64_t width, int64_t row, int64_t left, int64_t plane, bool all_workers) const {
  // Padding in parallel only when the image is large (VGG's 224x224 maps):
  // another fork-join costs more than copying a small one.
  const size_t size = padded_image_floats(in_channels_, plane, kernel_w_);
  if (!all_workers || ctx.pool == nullptr || ctx.num_workers <= 1 || size < kParallelPadFloats)
    return pad_channels(image, padded, height, width, row, left, plane, 0, in_channels_);
  const int64_t tasks = static_cast<int64_t>(std::min<size_t>(ctx.num_workers, static_cast<size_t>(in_channels_)));
  ctx.pool->parallel_for(static_cast<size_t>(tasks), [&](size_t t, size_t) {
    const int64_t task = static_cast<int64_t>(t);
    pad_channels(image, padded, height, width, row, left, plane, task * in_channels_ / tasks,
                 (task + 1) * in_channels_ / tasks);
  });
}

void Conv2d::forward_direct(const TensorView& in, const MutableTensorView& out,
                            const ForwardContext& ctx) const {
  const int64_t channels = in.shape[0], height = in.shape[1], width = in.shape[2];
  const std::shared_ptr<const DirectPlan> plan = direct_plan(height, width);
  const DirectLayout& layout = plan->layout;
  const int64_t padded_w = layout.row;
  const int64_t out_h = out.shape[1], out_w = out.shape[2];
  const size_t in_stride = static_cast<size_t>(channels * height * width);
  const size_t out_plane = static_cast<size_t>(out_h * out_w);
  const size_t out_stride = static_cast<size_t>(rows()) * out_plane;
  const size_t padded_size = padded_image_floats(channels, layout.plane, kernel_w_) + 16;  // see scratch_floats
  const auto pad_one = [&](const float* image, float* padded) {
    pad_image(ctx, image, padded, height, width, padded_w, layout.left, layout.plane, false);
  };
  const int64_t block_rows = direct_block_rows(out_h, padded_w, plan->conv3);
  const int64_t blocks = (out_h + block_rows - 1) / block_rows;
  const size_t out_channels = static_cast<size_t>(rows());
  const size_t panels = plan->panels;
  const Conv3Kernel conv3 = kernel_table(isa()).conv3;
  // Output rows [y0, y1) of output channels [r0, r1): the input runs start at
  // padded + y0 * padded_w. Tile by tile, each tile panel by panel.
  const auto block = [&](const float* padded, float* out_image, int64_t index, float* tile,
                         size_t r0, size_t r1) {
    const int64_t y0 = index * block_rows, y1 = std::min(out_h, y0 + block_rows);
    const size_t n = static_cast<size_t>((y1 - y0) * padded_w);
    const size_t ldy = n + kDirectRowGap;
    const float* x = padded + y0 * padded_w;
    // Output (y, x) at tile[r * ldy + (y - y0) * padded_w + x], or one float
    // earlier without padding columns (kernels.h: position p is column
    // (p + 1) % W), the first at tile[r * ldy - 1], which the first tile adds to.
    const int64_t first = layout.period > 0 ? -1 : 0;
    if (plan->conv3)
      for (size_t r = r0; r < r1; ++r) tile[r * ldy - 2] = tile[r * ldy - 1] = 0.0f;
    for (size_t c0 = 0; c0 < n; c0 += plan->tile) {
      const size_t c1 = std::min(n, c0 + plan->tile);
      for (size_t p = 0; p < panels; ++p) {
        if (plan->conv3) {  // it also finishes the tile before's last two positions
          const bool finish = p + 1 == panels;
          const Epilogue ep{finish && !bias().empty() ? bias().data() : nullptr, finish && ctx.fuse_relu, p > 0};
          conv3(plan->values.data(), plan->offsets.data(), plan->starts.data() + kConv3Slots * p * out_channels,
                out_channels, x, ep, r0, r1, c0, c1, tile, ldy, static_cast<size_t>(layout.period));
          continue;
        }
        const uint32_t* starts = plan->starts.data() + p * out_channels;
        sparse_offsets_tile(plan->offsets.data(), starts, starts + out_channels, x, r0, r1, c0,
                            c1, tile, ldy, p > 0, p + 1 == panels, ctx.fuse_relu);
      }
    }
    if (layout.period > 0 && n % kDirectTile == 0) {
      // The block's last output, position n - 2, is a whole tile's last but
      // one, which conv3 leaves for the next tile to finish (kernels.h); with
      // padding columns it is one of them. Its sum is whole (z_2 at n is left
      // out): the epilogue.
      const Epilogue ep{bias().empty() ? nullptr : bias().data(), ctx.fuse_relu, false};
      for (size_t r = r0; r < r1; ++r) tile[r * ldy + n - 2] = apply_epilogue(tile[r * ldy + n - 2], ep, r);
    }
    for (size_t r = r0; r < r1; ++r)
      for (int64_t y = y0; y < y1; ++y)
        std::memcpy(out_image + r * out_plane + y * out_w,
                    tile + static_cast<int64_t>(r * ldy) + (y - y0) * padded_w + first, sizeof(float) * out_w);
  };
  // A worker's padded image at the first 64-byte boundary of its scratch.
  const auto padded_of = [&](size_t worker) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(ctx.scratch + worker * ctx.scratch_per_worker);
    return reinterpret_cast<float*>((at + 63) & ~uintptr_t{63});
  };
  const auto tile_of = [&](size_t worker) {
    return padded_of(worker) + padded_size;
  };
  // Output channels in groups whose nonzeros (value and offset, 8 bytes each)
  // take about kDirectGroupBytes, each group tile by tile over the block.
  const double row_bytes =
      8.0 * static_cast<double>(nnz()) / static_cast<double>(std::max<size_t>(1, out_channels));
  const size_t group_rows =
      std::max<size_t>(8, static_cast<size_t>(kDirectGroupBytes / std::max(1.0, row_bytes)));
  const auto all_rows = [&](const float* padded, float* out_image, int64_t b, float* tile) {
    for (size_t r0 = 0; r0 < out_channels; r0 += group_rows)
      block(padded, out_image, b, tile, r0, std::min(out_channels, r0 + group_rows));
  };

  const size_t batch = static_cast<size_t>(in.batch);
  const size_t workers = ctx.num_workers;
  const double work = static_cast<double>(nnz()) * static_cast<double>(out_plane);
  if (ctx.pool == nullptr || workers <= 1 ||
      work * static_cast<double>(batch) < kMinParallelDirectWork) {
    for (size_t image = 0; image < batch; ++image) {
      pad_one(in.data + image * in_stride, padded_of(0));
      for (int64_t b = 0; b < blocks; ++b)
        all_rows(padded_of(0), out.data + image * out_stride, b, tile_of(0));
    }
    return;
  }
  if (batch >= workers) {
    ctx.pool->parallel_for(batch, [&](size_t image, size_t worker) {
      float* padded = padded_of(worker);
      pad_one(in.data + image * in_stride, padded);
      for (int64_t b = 0; b < blocks; ++b)
        all_rows(padded, out.data + image * out_stride, b, tile_of(worker));
    });
    return;
  }
  // Few images: one padded copy (worker 0's scratch), its row blocks spread over
  // the workers, each block's output channels in chunks: the groups above, or
  // more when there are fewer blocks than twice the workers (small maps: VGG's
  // 14x14 layers are one block); a multiple of the workers, so that equal tasks
  // keep them all busy to the end, and at least 8 channels each.
  size_t chunks = std::max(
      (out_channels + group_rows - 1) / group_rows,
      (2 * workers + static_cast<size_t>(blocks) - 1) / static_cast<size_t>(blocks));
  chunks = std::min((chunks + workers - 1) / workers * workers,
                    std::max<size_t>(1, out_channels / 8));
  for (size_t image = 0; image < batch; ++image) {
    pad_image(ctx, in.data + image * in_stride, padded_of(0), height, width, padded_w, layout.left, layout.plane,
              true);
    float* out_image = out.data + image * out_stride;
    ctx.pool->parallel_for(static_cast<size_t>(blocks) * chunks, [&](size_t task, size_t worker) {
      const size_t b = task / chunks, j = task % chunks;
      block(padded_of(0), out_image, static_cast<int64_t>(b), tile_of(worker),
            j * out_channels / chunks, (j + 1) * out_channels / chunks);
    });
  }
}

namespace {
// Dense direct convolution (see forward_dense_direct): the input one tile call
// reads stays within this much of L1, and a group of channel tiles' weights for
// one panel within this much of L2 ...
constexpr int64_t kDenseDirectPanelBytes = 16 * 1024;
constexpr double kDenseDirectGroupBytes = 256.0 * 1024.0;
// ... and the input of a block of output rows within this much of L2.
constexpr int64_t kDenseDirectSlabBytes = 128 * 1024;
}  // namespace

void Conv2d::forward_dense_direct(const TensorView& in, const MutableTensorView& out,
                                  const ForwardContext& ctx) const {
  const int64_t height = in.shape[1], width = in.shape[2];
  const int64_t padded_w = width + 2 * pad_w_;
  const int64_t plane = (height + 2 * pad_h_) * padded_w;
  const int64_t out_h = out.shape[1], out_w = out.shape[2];
  const size_t in_stride = static_cast<size_t>(numel(in.shape));
  const size_t out_plane = static_cast<size_t>(out_h * out_w);
  const size_t out_stride = static_cast<size_t>(rows()) * out_plane;
  const std::shared_ptr<const DirectPlan> plan = direct_plan(height, width);
  const KernelTable& kt = kernel_table(isa());
  // The widest tile the table has (conv_dense_tile picks one per call).
  const int64_t tile_cols = static_cast<int64_t>(kt.conv_dense_wide ? kConvDenseWideCols : kConvDenseCols);
  const float* w = dense_weight().data();
  const size_t k = static_cast<size_t>(cols());
  const Epilogue ep{bias().empty() ? nullptr : bias().data(), ctx.fuse_relu};
  // Register tiles of kConvDenseRows channels (the last one may hold fewer).
  const size_t channels_out = static_cast<size_t>(rows());
  const size_t tiles = (channels_out + kConvDenseRows - 1) / kConvDenseRows;
  // Input channels in panels whose input one tile reads (kernel_h runs of
  // tile_cols + kernel_w - 1 floats per channel) fits kDenseDirectPanelBytes of L1.
  const int64_t taps = kernel_h_ * kernel_w_;
  const int64_t fit =
      std::max<int64_t>(1, kDenseDirectPanelBytes / (4 * kernel_h_ * (tile_cols + kernel_w_ - 1)));
  const int64_t panels = (in_channels_ + fit - 1) / fit;
  const size_t panel_cols = static_cast<size_t>((in_channels_ + panels - 1) / panels * taps);
  const size_t group =
      std::max<size_t>(1, static_cast<size_t>(kDenseDirectGroupBytes / (4.0 * kConvDenseRows * panel_cols)));
  const uint32_t* offsets = plan->dense_offsets.data();
  // One tile call: channel tile t, output row y, columns from x0, weight columns [c0, c1).
  // The columns from x0 that a tile call computes (conv_dense_tile).
  const auto tile_width = [&](int64_t x0) {
    return std::min(out_w - x0, static_cast<int64_t>(conv_dense_tile(kt, static_cast<size_t>(out_w - x0)).cols));
  };
  const auto tile = [&](const float* padded, float* out_image, size_t t, int64_t y, int64_t x0,
                        size_t c0, size_t c1) {
    const size_t r0 = t * kConvDenseRows;
    const bool last = c1 == k;
    const Epilogue pe{last ? ep.bias : nullptr, last && ep.relu, c0 > 0};
    conv_dense_tile(kt, static_cast<size_t>(out_w - x0))
        .kernel(w + r0 * k + c0, k, std::min(kConvDenseRows, channels_out - r0), offsets + c0, c1 - c0,
                padded + y * padded_w + x0, static_cast<size_t>(tile_width(x0)), pe, r0,
                out_image + r0 * out_plane + static_cast<size_t>(y * out_w + x0), out_plane);
  };
  // Output rows in blocks whose input (one panel's channels, the block's rows
  // plus kernel_h - 1) fits kDenseDirectSlabBytes of L2.
  const int64_t slab_row_bytes = 4 * (static_cast<int64_t>(panel_cols) / taps) * padded_w;
  const int64_t block_rows =
      std::max<int64_t>(1, static_cast<int64_t>(kDenseDirectSlabBytes) / slab_row_bytes - (kernel_h_ - 1));
  // Output rows [y0, y1) of channel tiles [t0, t1) of one image, block by block.
  // One panel: each tile over the block's rows before the next, its weights
  // staying in L1 (measured 0-40 % faster than all tiles per row on Zen 3, most
  // on small layers such as mnist_cnn's conv1). Several: groups of tiles whose
  // weights for one panel fit kDenseDirectGroupBytes of L2, each group panel by
  // panel, every tile of the group reusing one input slice from L1.
  const auto run = [&](const float* padded, float* out_image, size_t t0, size_t t1, int64_t y0,
                       int64_t y1) {
    for (int64_t b0 = y0; b0 < y1; b0 += block_rows) {
      const int64_t b1 = std::min(y1, b0 + block_rows);
      if (panels == 1) {
        for (size_t t = t0; t < t1; ++t)
          for (int64_t y = b0; y < b1; ++y)
            for (int64_t x0 = 0; x0 < out_w; x0 += tile_width(x0))
              tile(padded, out_image, t, y, x0, 0, k);
        continue;
      }
      for (size_t g0 = t0; g0 < t1; g0 += group)
        for (size_t c0 = 0; c0 < k; c0 += panel_cols)
          for (int64_t y = b0; y < b1; ++y)
            for (int64_t x0 = 0; x0 < out_w; x0 += tile_width(x0))
              for (size_t t = g0; t < std::min(t1, g0 + group); ++t)
                tile(padded, out_image, t, y, x0, c0, std::min(k, c0 + panel_cols));
    }
  };
  const auto whole_image = [&](const float* padded, float* out_image) {
    run(padded, out_image, 0, tiles, 0, out_h);
  };

  const size_t batch = static_cast<size_t>(in.batch);
  const size_t workers = ctx.num_workers;
  const double work = static_cast<double>(channels_out * k) * static_cast<double>(out_plane);
  if (ctx.pool == nullptr || workers <= 1 || work * static_cast<double>(batch) < kMinParallelDenseDirectWork) {
    for (size_t image = 0; image < batch; ++image) {
      pad_image(ctx, in.data + image * in_stride, ctx.scratch, height, width, padded_w, pad_w_, plane, false);
      whole_image(ctx.scratch, out.data + image * out_stride);
    }
    return;
  }
  if (batch >= workers) {
    ctx.pool->parallel_for(batch, [&](size_t image, size_t worker) {
      float* padded = ctx.scratch + worker * ctx.scratch_per_worker;
      pad_image(ctx, in.data + image * in_stride, padded, height, width, padded_w, pad_w_, plane, false);
      whole_image(padded, out.data + image * out_stride);
    });
    return;
  }
  // Few images: one padded copy (worker 0's scratch); tasks are up to 4 chunks
  // of channel tiles per worker x at least 2 chunks of rows, at least 4 tasks
  // per worker in all: with 2 per worker (11 tiles in 4 chunks for 64
  // channels) the last task held one worker alone; measured 1.15x on VGG's
  // conv1_1 at 2 threads, 1.02-1.05x on mnist_cnn's conv2.
  const size_t tile_chunks = std::min(tiles, 4 * workers);
  const size_t row_chunks = std::min<size_t>(
      static_cast<size_t>(out_h), std::max<size_t>(2, (4 * workers + tile_chunks - 1) / tile_chunks));
  for (size_t image = 0; image < batch; ++image) {
    pad_image(ctx, in.data + image * in_stride, ctx.scratch, height, width, padded_w, pad_w_, plane, true);
    float* out_image = out.data + image * out_stride;
    ctx.pool->parallel_for(tile_chunks * row_chunks, [&](size_t task, size_t) {
      const size_t g = task / row_chunks, c = task % row_chunks;
      run(ctx.scratch, out_image, g * tiles / tile_chunks, (g + 1) * tiles / tile_chunks,
          static_cast<int64_t>(c) * out_h / static_cast<int64_t>(row_chunks),
          static_cast<int64_t>(c + 1) * out_h / static_cast<int64_t>(row_chunks));
    });
  }
}

void Conv2d::forward(const TensorView& in, const MutableTensorView& out,
                     const ForwardContext& ctx) const {
  // Auto layers choose per map size and batch bucket, measuring on as many
  // images as there are workers (enough to exercise the batch-parallel path).
  const int64_t key = (in.shape[1] * 1000003 + in.shape[2]) * 1000003 + batch_bucket(in.batch);
  const int64_t sample = std::min<int64_t>(in.batch, static_cast<int64_t>(std::max<size_t>(1, ctx.num_workers)));
  run_chosen(key, ctx.num_workers, [&](Choice choice, bool measure) {
    if (!measure) return forward_with(choice, in, out, ctx);
    forward_with(choice, {in.data, sample, in.shape}, {out.data, sample, out.shape}, ctx);
  });
  if (can_run(Choice::kDenseWinograd)) release_unchosen_winograd();
}

bool Conv2d::can_run(Choice choice) const {
  if (choice == Choice::kDenseDirect)
    return backend() == Backend::kAuto && direct_capable() && !dense_weight().empty();
  if (choice == Choice::kDenseWinograd) return winograd_tile() > 0;
  return WeightedLayer::can_run(choice);
}

void Conv2d::forward_with(Choice choice, const TensorView& in, const MutableTensorView& out,
                          const ForwardContext& ctx) const {
  const ConvGeometry g{in.shape[0], in.shape[1], in.shape[2], kernel_h_, kernel_w_, stride_h_,
                       stride_w_, pad_h_, pad_w_, out.shape[1], out.shape[2]};
  const size_t patches = static_cast<size_t>(g.out_h * g.out_w);
  const size_t in_stride = static_cast<size_t>(numel(in.shape));
  const size_t out_stride = static_cast<size_t>(rows()) * patches;
  const bool pointwise = is_pointwise();
  // Output rows [y0, y1) of one image: the patch matrix's columns for them
  // (the input itself for a pointwise layer, else im2col into scratch), then
  // their product into those columns of the image's output.
  const int64_t chunk = pointwise ? g.out_h : im2col_chunk_rows(g.out_h, g.out_w);
  const auto lower = [&](size_t image, int64_t y0, int64_t y1, float* scratch) -> const float* {
    const float* src = in.data + image * in_stride;
    if (pointwise) return src;
    im2col(src, g, y0, y1, scratch);
    return scratch;
  };

  if (choice == Choice::kSparse && direct_capable()) {
    forward_direct(in, out, ctx);
    return;
  }
  if (choice == Choice::kDenseDirect) {
    forward_dense_direct(in, out, ctx);
    return;
  }
  if (choice == Choice::kDenseWinograd) {
    forward_winograd(in, out, ctx);
    return;
  }
  const Backend backend = choice == Choice::kSparse ? Backend::kSparse : Backend::kDense;
  const size_t batch = static_cast<size_t>(in.batch);
  if (ctx.num_workers > 1 && batch >= ctx.num_workers && ctx.pool != nullptr) {
    ctx.pool->parallel_for(batch, [&](size_t image, size_t worker) {
      for (int64_t y0 = 0; y0 < g.out_h; y0 += chunk) {
        const int64_t y1 = std::min(g.out_h, y0 + chunk);
        const size_t n = static_cast<size_t>((y1 - y0) * g.out_w);
        const float* cols = lower(image, y0, y1, ctx.scratch + worker * ctx.scratch_per_worker);
        float* y = out.data + image * out_stride + static_cast<size_t>(y0 * g.out_w);
        if (backend == Backend::kSparse)
          sparse_matmul_serial(cols, n, n, y, patches, ctx.fuse_relu);
        else
          dense_block(cols, n, 0, static_cast<size_t>(rows()), 0, n, y, patches, ctx.fuse_relu);
      }
    });
    return;
  }
  for (size_t image = 0; image < batch; ++image)
    for (int64_t y0 = 0; y0 < g.out_h; y0 += chunk) {
      const int64_t y1 = std::min(g.out_h, y0 + chunk);
      const size_t n = static_cast<size_t>((y1 - y0) * g.out_w);
      const float* cols = lower(image, y0, y1, ctx.scratch);
      matmul(ctx, backend, cols, n, n, out.data + image * out_stride + static_cast<size_t>(y0 * g.out_w), patches);
    }
}

// --- Pool2d ----------------------------------------------------------------

Pool2d::Pool2d(std::string name, PoolMode mode, int64_t kernel_h, int64_t kernel_w,
               int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, bool ceil_mode,
               bool count_include_pad, bool same_padding, int64_t input_h, int64_t input_w)
    : Layer(std::move(name)),
      isa_(active_isa()),
      mode_(mode),
      kernel_h_(kernel_h),
      kernel_w_(kernel_w),
      stride_h_(stride_h),
      stride_w_(stride_w),
      pad_h_(pad_h),
      pad_w_(pad_w),
      ceil_mode_(ceil_mode),
      count_include_pad_(count_include_pad),
      same_padding_(same_padding),
      input_h_(input_h),
      input_w_(input_w) {
  if (input_h < 0 || input_w < 0 || (input_h > 0) != (input_w > 0) ||
      !window_in_range({input_h, input_w}))
    throw FormatError(describe("input_size must be two positive sizes below 2^31, or none"));
  if (kernel_h < 1 || kernel_w < 1 || stride_h < 1 || stride_w < 1 || pad_h < 0 || pad_w < 0 ||
      !window_in_range({kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w}))
    throw FormatError(describe("kernel size and stride must be >= 1 and padding >= 0, all below 2^31"));
  if (2 * pad_h > kernel_h || 2 * pad_w > kernel_w)
    throw FormatError(describe("padding must be at most half the kernel size"));
}

std::shared_ptr<Pool2d> Pool2d::global(std::string name, PoolMode mode) {
  auto pool = std::make_shared<Pool2d>(std::move(name), mode, 1, 1, 1, 1, 0, 0, false, false);
  pool->global_ = true;
  return pool;
}

const char* Pool2d::kind() const {
  if (global_) return mode_ == PoolMode::kMax ? "globalmaxpool2d" : "globalavgpool2d";
  return mode_ == PoolMode::kMax ? "maxpool2d" : "avgpool2d";
}

Window2d Pool2d::window(const Shape& input) const {
  if (global_) return {input[1], input[2], input[1], input[2], 0, 0};
  return {kernel_h_, kernel_w_, stride_h_, stride_w_, pad_h_, pad_w_};
}

namespace {
int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  const int64_t span = in + 2 * p - k;
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  // As in PyTorch and Caffe: the last window must start inside the input or left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}
}  // namespace

Shape Pool2d::output_shape(const Shape& input) const {
  if (input.size() != 3) {
    const std::string msg =
        "expects a feature map (C, H, W) but its input has per-sample shape " + shape_to_string(input);
    throw ShapeError(describe(msg.c_str()));
  }
  if (global_) {
    if (input[1] < 1 || input[2] < 1) throw ShapeError(describe(("input " + shape_to_string(input) + " is empty").c_str()));
    return {input[0], 1, 1};
  }
  if (same_padding_) {
    const std::string mismatch = same_padding_mismatch(input, window(input));
    if (!mismatch.empty()) throw ShapeError(describe(mismatch.c_str()));
  }
  if (input_h_ > 0 && (input[1] != input_h_ || input[2] != input_w_)) {
    const std::string msg = "was resolved for " + dims(input_h_, input_w_) + " maps at import (an adaptive pool) " +
                            "and cannot run input " + shape_to_string(input) +
                            "; import the model again for this input size";
    throw ShapeError(describe(msg.c_str()));
  }
  const int64_t oh = pooled_size(input[1], kernel_h_, stride_h_, pad_h_, ceil_mode_);
  const int64_t ow = pooled_size(input[2], kernel_w_, stride_w_, pad_w_, ceil_mode_);
  if (oh < 1 || ow < 1) {
    const std::string msg = "window " + dims(kernel_h_, kernel_w_) + " does not fit input " +
                            shape_to_string(input);
    throw ShapeError(describe(msg.c_str()));
  }
  return {input[0], oh, ow};
}

void Pool2d::forward(const TensorView& in, const MutableTensorView& out,
                     const ForwardContext& ctx) const {
  const int64_t h = in.shape[1], w = in.shape[2];
  const int64_t oh = out.shape[1], ow = out.shape[2];
  const size_t planes = static_cast<size_t>(in.batch * in.shape[0]);
  const Window2d win = window(in.shape);
  const auto pool_plane = [&](size_t plane, size_t) {
    const float* src = in.data + plane * static_cast<size_t>(h * w);
    float* dst = out.data + plane * static_cast<size_t>(oh * ow);
    for (int64_t oy = 0; oy < oh; ++oy) {
      const int64_t y0 = oy * win.stride_h - win.pad_h;
      const int64_t y1 = std::min(y0 + win.kernel_h, h + win.pad_h);
      const int64_t ys = std::max<int64_t>(y0, 0), ye = std::min(y1, h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const int64_t x0 = ox * win.stride_w - win.pad_w;
        const int64_t x1 = std::min(x0 + win.kernel_w, w + win.pad_w);
        const int64_t xs = std::max<int64_t>(x0, 0), xe = std::min(x1, w);
        float result;
        if (mode_ == PoolMode::kMax) {
          result = -std::numeric_limits<float>::infinity();
          for (int64_t y = ys; y < ye; ++y)
            for (int64_t x = xs; x < xe; ++x) result = std::max(result, src[y * w + x]);
        } else {
          float sum = 0.0f;
          for (int64_t y = ys; y < ye; ++y)
            for (int64_t x = xs; x < xe; ++x) sum += src[y * w + x];
          const int64_t count =
              count_include_pad_ ? (y1 - y0) * (x1 - x0) : (ye - ys) * (xe - xs);
          result = count > 0 ? sum / static_cast<float>(count) : 0.0f;
        }
        dst[oy * ow + ox] = result;
      }
    }
  };
  // Every window inside the map (no padding, none cut short by ceil_mode), as
  // in LeNet's and VGG's pools: no clipping, the same visiting order, so the
  // same results as pool_plane; 2-5x faster on LeNet-5's first pool.
  const int64_t kh = win.kernel_h, kw = win.kernel_w, sh = win.stride_h, sw = win.stride_w;
  const bool inside = win.pad_h == 0 && win.pad_w == 0 && (oh - 1) * sh + kh <= h && (ow - 1) * sw + kw <= w;
  const bool is_max = mode_ == PoolMode::kMax;
  const MaxPool2x2Kernel maxpool2x2 = kernel_table(isa_).maxpool2x2;
  const auto pool_plane_inside = [&](size_t plane, size_t) {
    const float* src = in.data + plane * static_cast<size_t>(h * w);
    float* dst = out.data + plane * static_cast<size_t>(oh * ow);
    for (int64_t oy = 0; oy < oh; ++oy) {
      const float* top = src + oy * sh * w;
      float* d = dst + oy * ow;
      if (is_max && kh == 2 && kw == 2 && sw == 2) {
        maxpool2x2(top, static_cast<size_t>(w), static_cast<size_t>(ow), d);
        continue;
      }
      for (int64_t ox = 0; ox < ow; ++ox) {
        const float* win = top + ox * sw;
        float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int64_t y = 0; y < kh; ++y)
          for (int64_t x = 0; x < kw; ++x)
            acc = is_max ? std::max(acc, win[y * w + x]) : acc + win[y * w + x];
        d[ox] = is_max ? acc : acc / static_cast<float>(kh * kw);
      }
    }
  };
  const double work = static_cast<double>(planes * oh * ow * kh * kw);
  const auto run_planes = [&](const auto& plane_fn) {
    if (ctx.pool && ctx.num_workers > 1 && work >= kMinParallelWork)
      ctx.pool->parallel_for(planes, plane_fn);
    else
      for (size_t p = 0; p < planes; ++p) plane_fn(p, 0);
  };
  if (inside)
    run_planes(pool_plane_inside);
  else
    run_planes(pool_plane);
}

// --- ReLU, Flatten, Softmax, Dropout ----------------------------------------

void ReLU::forward(const TensorView& in, const MutableTensorView& out,
                   const ForwardContext&) const {
  const size_t n = static_cast<size_t>(in.batch * numel(in.shape));
  for (size_t i = 0; i < n; ++i) out.data[i] = in.data[i] > 0.0f ? in.data[i] : 0.0f;
}

void transpose_matrix(const KernelTable& table, const float* in, size_t rows, size_t cols, float* out,
                      ThreadPool* pool, size_t workers) {
  if (pool == nullptr || workers <= 1 || rows * cols < kMinParallelCopyFloats) {
    table.transpose(in, cols, rows, cols, out, rows);
    return;
  }
  // Bands along the longer side, one per worker, in steps of 16 (whole lines).
  constexpr size_t kStep = 16;
  const bool by_rows = rows >= cols;
  const size_t extent = by_rows ? rows : cols;
  const size_t steps = (extent + kStep - 1) / kStep;
  const size_t tasks = std::min(steps, workers);
  pool->parallel_for(tasks, [&](size_t t, size_t) {
    const size_t lo = t * steps / tasks * kStep;
    const size_t hi = std::min(extent, (t + 1) * steps / tasks * kStep);
    if (by_rows)
      table.transpose(in + lo * cols, cols, hi - lo, cols, out + lo, rows);
    else
      table.transpose(in + lo, cols, rows, hi - lo, out + lo * rows, rows);
  });
}

Flatten::Flatten(std::string name) : Layer(std::move(name)), isa_(active_isa()) {}

Shape Flatten::output_shape(const Shape& input) const {
  if (input.size() != 1 && input.size() != 3) {
    const std::string msg = "expects (C, H, W) or (F,) per sample, got " + shape_to_string(input);
    throw ShapeError(describe(msg.c_str()));
  }
  return {numel(input)};
}

void Flatten::forward(const TensorView& in, const MutableTensorView& out,
                      const ForwardContext& ctx) const {
  const size_t batch = static_cast<size_t>(in.batch);
  const size_t features = static_cast<size_t>(numel(in.shape));
  if (in.shape.size() == 1 || batch == 1) {
    std::memcpy(out.data, in.data, sizeof(float) * batch * features);
    return;
  }
  // Sample-major (N, F) to feature-major (F, N).
  transpose_matrix(kernel_table(isa_), in.data, batch, features, out.data, ctx.pool, ctx.num_workers);
}

Shape Softmax::output_shape(const Shape& input) const {
  if (input.size() != 1) {
    const std::string msg =
        "expects a feature vector (F,) per sample, got " + shape_to_string(input) +
        "; add a Flatten before it";
    throw ShapeError(describe(msg.c_str()));
  }
  return input;
}

void Softmax::forward(const TensorView& in, const MutableTensorView& out,
                      const ForwardContext&) const {
  const size_t batch = static_cast<size_t>(in.batch);
  const size_t features = static_cast<size_t>(in.shape[0]);
  for (size_t n = 0; n < batch; ++n) {
    float peak = -std::numeric_limits<float>::infinity();
    for (size_t f = 0; f < features; ++f) peak = std::max(peak, in.data[f * batch + n]);
    double total = 0.0;
    for (size_t f = 0; f < features; ++f) {
      const float e = std::exp(in.data[f * batch + n] - peak);
      out.data[f * batch + n] = e;
      total += e;
    }
    const float scale = static_cast<float>(1.0 / total);
    for (size_t f = 0; f < features; ++f) out.data[f * batch + n] *= scale;
  }
}

void Dropout::forward(const TensorView& in, const MutableTensorView& out,
                      const ForwardContext&) const {
  std::memcpy(out.data, in.data, sizeof(float) * static_cast<size_t>(in.batch * numel(in.shape)));
}

}  // namespace sparsenet
