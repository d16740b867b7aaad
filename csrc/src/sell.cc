#include "sell.h"

#include <algorithm>
#include <limits>

#include "sparsenet/errors.h"

namespace sparsenet {

SellLayout build_sell(const CsrMatrix& a) {
  const size_t rows = static_cast<size_t>(a.rows()), cols = static_cast<size_t>(a.cols());
  if (cols < kSellWindow) throw ShapeError("build_sell: needs at least 32 columns");
  const bool narrow = a.narrow_indices();
  const auto column = [&](size_t k) -> size_t { return narrow ? a.col16()[k] : a.col32()[k]; };
  const std::vector<uint32_t>& rp = a.row_ptr();
  SellLayout s;
  const size_t groups = (rows + kSellLanes - 1) / kSellLanes;
  s.group_start.reserve(groups + 1);
  s.group_start.push_back(0);
  for (size_t g = 0; g < groups; ++g) {
    size_t next[kSellLanes], end[kSellLanes];
    for (size_t l = 0; l < kSellLanes; ++l) {
      const size_t r = g * kSellLanes + l;
      next[l] = r < rows ? rp[r] : 0;
      end[l] = r < rows ? rp[r + 1] : 0;
    }
    for (;;) {
      size_t first = std::numeric_limits<size_t>::max();
      for (size_t l = 0; l < kSellLanes; ++l)
        if (next[l] < end[l]) first = std::min(first, column(next[l]));
      if (first == std::numeric_limits<size_t>::max()) break;
      first = std::min(first, cols - kSellWindow);
      s.window.push_back(static_cast<uint32_t>(first));
      for (size_t l = 0; l < kSellLanes; ++l) {
        const bool take = next[l] < end[l] && column(next[l]) < first + kSellWindow;
        s.index.push_back(take ? static_cast<uint8_t>(column(next[l]) - first) : 0);
        s.values.push_back(take ? a.values()[next[l]] : 0.0f);
        if (take) ++next[l];
      }
    }
    s.group_start.push_back(static_cast<uint32_t>(s.window.size()));
  }
  return s;
}

}  // namespace sparsenet
