// Compressed sparse row weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "sparsenet/aligned.h"

namespace sparsenet {

// A rows x cols fp32 matrix in CSR form, owning its buffers.
//
//   row_ptr: rows + 1 entries, row_ptr[0] == 0, non-decreasing, row_ptr[rows] == nnz.
//   values:  nnz fp32 values, finite.
//   column indices: nnz entries in [0, cols), non-decreasing within each row,
//   stored as uint16 when cols <= 65536 (col16) and as uint32 otherwise (col32);
//   the other vector is empty. from_arrays takes each row's nonzeros in any
//   order and sorts them by column, stably; repeated columns add up.
class CsrMatrix {
 public:
  CsrMatrix() = default;

  // Validates and copies the arrays. `context` names the layer and key in
  // error messages, e.g. "layer 'fc1' key 'fc1.weight'". Throws WeightError.
  static CsrMatrix from_arrays(const std::string& context, int64_t rows, int64_t cols,
                               const int64_t* row_ptr, size_t row_ptr_len,
                               const int64_t* col_idx, size_t col_idx_len,
                               const float* values, size_t values_len);

  // Builds CSR from a dense row-major rows x cols matrix, keeping nonzeros.
  static CsrMatrix from_dense(const std::string& context, int64_t rows, int64_t cols,
                              const float* dense);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  size_t nnz() const { return values_.size(); }
  double density() const;
  bool narrow_indices() const { return narrow_columns(cols_); }  // col16 in use
  static bool narrow_columns(int64_t cols) { return cols <= 65536; }

  const std::vector<uint32_t>& row_ptr() const { return row_ptr_; }
  const std::vector<uint16_t>& col16() const { return col16_; }
  const std::vector<uint32_t>& col32() const { return col32_; }
  const std::vector<float>& values() const { return values_; }

  // Bytes held by values, column indices and row pointers.
  size_t stored_bytes() const;

  // Writes the dense rows x cols row-major matrix into `out` (rows*cols floats).
  void to_dense(float* out) const;

 private:
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::vector<uint32_t> row_ptr_;
  std::vector<uint16_t> col16_;
  std::vector<uint32_t> col32_;
  std::vector<float> values_;
};

// A CSR matrix's sliced-window layout, its batch-1 product on AVX-512
// (kernels.h's SellRef says what the arrays hold; the internal sell.h builds
// it): rows in groups of 16 lanes, each step 16 values whose columns lie in
// one 32-column window of x.
struct SellLayout {
  std::vector<uint32_t> group_start;  // groups + 1
  std::vector<uint32_t> window;       // per step
  std::vector<uint8_t> index;         // 16 per step
  CacheLineVector<float> values;      // 16 per step: a step is one aligned zmm

  bool empty() const { return group_start.empty(); }
  size_t steps() const { return window.size(); }
  size_t bytes() const {
    return group_start.size() * sizeof(uint32_t) + window.size() * sizeof(uint32_t) + index.size() +
           values.size() * sizeof(float);
  }
};

}  // namespace sparsenet
