#include "sparsenet/csr.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>

#include "sparsenet/errors.h"

namespace sparsenet {
namespace {

constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();

std::string str(int64_t v) { return std::to_string(v); }

// Puts each row's nonzeros in increasing column order, stably (duplicates keep
// their order); rows already in order, the usual case, cost one pass.
template <typename Index>
void sort_rows(const std::vector<uint32_t>& row_ptr, std::vector<Index>& cols, std::vector<float>& values) {
  std::vector<std::pair<Index, float>> row;
  for (size_t r = 0; r + 1 < row_ptr.size(); ++r) {
    const size_t begin = row_ptr[r], end = row_ptr[r + 1];
    if (std::is_sorted(cols.begin() + begin, cols.begin() + end)) continue;
    row.clear();
    for (size_t k = begin; k < end; ++k) row.emplace_back(cols[k], values[k]);
    std::stable_sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t k = begin; k < end; ++k) std::tie(cols[k], values[k]) = row[k - begin];
  }
}

}  // namespace

CsrMatrix CsrMatrix::from_arrays(const std::string& context, int64_t rows, int64_t cols,
                                 const int64_t* row_ptr, size_t row_ptr_len,
                                 const int64_t* col_idx, size_t col_idx_len, const float* values,
                                 size_t values_len) {
  if (rows < 0 || cols < 0 || rows > kMaxDim || cols > kMaxDim)
    throw WeightError(context + ": matrix shape (" + str(rows) + ", " + str(cols) +
                      ") is out of range [0, 2^31)");
  if (row_ptr_len != static_cast<size_t>(rows) + 1)
    throw WeightError(context + ": indptr has " + str(row_ptr_len) + " entries, expected rows + 1 = " +
                      str(rows + 1) + " for shape (" + str(rows) + ", " + str(cols) + ")");
  if (col_idx_len != values_len)
    throw WeightError(context + ": indices has " + str(col_idx_len) + " entries but data has " +
                      str(values_len));
  if (values_len >= std::numeric_limits<uint32_t>::max())
    throw WeightError(context + ": " + str(values_len) + " nonzeros exceed the 2^32-1 limit");
  if (row_ptr[0] != 0)
    throw WeightError(context + ": indptr[0] is " + str(row_ptr[0]) + ", expected 0");
  for (int64_t r = 0; r < rows; ++r) {
    if (row_ptr[r + 1] < row_ptr[r])
      throw WeightError(context + ": indptr decreases at row " + str(r) + " (" + str(row_ptr[r]) +
                        " -> " + str(row_ptr[r + 1]) + ")");
  }
  if (row_ptr[rows] != static_cast<int64_t>(values_len))
    throw WeightError(context + ": indptr[-1] is " + str(row_ptr[rows]) + " but there are " +
                      str(values_len) + " nonzeros");
  for (size_t k = 0; k < col_idx_len; ++k) {
    if (col_idx[k] < 0 || col_idx[k] >= cols)
      throw WeightError(context + ": column index " + str(col_idx[k]) + " at position " +
                        str(static_cast<int64_t>(k)) + " is out of range [0, " + str(cols) + ")");
  }
  for (size_t k = 0; k < values_len; ++k) {
    if (!std::isfinite(values[k]))
      throw WeightError(context + ": value at position " + str(static_cast<int64_t>(k)) +
                        " is not finite (NaN or Inf)");
  }

  CsrMatrix m;
  m.rows_ = rows;
  m.cols_ = cols;
  m.row_ptr_.assign(row_ptr, row_ptr + row_ptr_len);
  m.values_.assign(values, values + values_len);
  if (narrow_columns(cols)) {
    m.col16_.assign(col_idx, col_idx + col_idx_len);
    sort_rows(m.row_ptr_, m.col16_, m.values_);
  } else {
    m.col32_.assign(col_idx, col_idx + col_idx_len);
    sort_rows(m.row_ptr_, m.col32_, m.values_);
  }
  return m;
}

CsrMatrix CsrMatrix::from_dense(const std::string& context, int64_t rows, int64_t cols,
                                const float* dense) {
  std::vector<int64_t> row_ptr(static_cast<size_t>(rows) + 1, 0);
  std::vector<int64_t> col_idx;
  std::vector<float> values;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = dense[r * cols + c];
      if (v != 0.0f || std::isnan(v)) {
        col_idx.push_back(c);
        values.push_back(v);
      }
    }
    row_ptr[r + 1] = static_cast<int64_t>(values.size());
  }
  return from_arrays(context, rows, cols, row_ptr.data(), row_ptr.size(), col_idx.data(),
                     col_idx.size(), values.data(), values.size());
}

double CsrMatrix::density() const {
  const double total = static_cast<double>(rows_) * static_cast<double>(cols_);
  return total == 0 ? 0.0 : static_cast<double>(nnz()) / total;
}

size_t CsrMatrix::stored_bytes() const {
  return values_.size() * sizeof(float) + col16_.size() * sizeof(uint16_t) +
         col32_.size() * sizeof(uint32_t) + row_ptr_.size() * sizeof(uint32_t);
}

void CsrMatrix::to_dense(float* out) const {
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(rows_) * static_cast<size_t>(cols_));
  for (int64_t r = 0; r < rows_; ++r) {
    for (uint32_t k = row_ptr_[r]; k < row_ptr_[r + 1]; ++k) {
      const size_t c = col16_.empty() ? col32_[k] : col16_[k];
      out[static_cast<size_t>(r) * static_cast<size_t>(cols_) + c] += values_[k];
    }
  }
}

}  // namespace sparsenet
