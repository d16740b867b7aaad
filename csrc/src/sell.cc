#include "sell.h"

#include <algorithm>
#include <limits>

#include "sparsenet/errors.h"

namespace sparsenet {
namespace {

// The greedy walk (see build_sell): counts the steps, and with kFill writes
// them into s, whose arrays already hold that many.
template <bool kFill>
size_t walk(const CsrMatrix& a, SellLayout* s) {
  const size_t rows = static_cast<size_t>(a.rows()), cols = static_cast<size_t>(a.cols());
  if (cols < kSellWindow) throw ShapeError("build_sell: needs at least 32 columns");
  const bool narrow = a.narrow_indices();
  const auto column = [&](size_t k) -> size_t { return narrow ? a.col16()[k] : a.col32()[k]; };
  const std::vector<uint32_t>& rp = a.row_ptr();
  const size_t groups = (rows + kSellLanes - 1) / kSellLanes;
  size_t step = 0;
  for (size_t g = 0; g < groups; ++g) {
    if constexpr (kFill) s->group_start[g] = static_cast<uint32_t>(step);
    size_t next[kSellLanes], end[kSellLanes];
    for (size_t l = 0; l < kSellLanes; ++l) {
      const size_t r = g * kSellLanes + l;
      next[l] = r < rows ? rp[r] : 0;
      end[l] = r < rows ? rp[r + 1] : 0;
    }
    for (;; ++step) {
      size_t first = std::numeric_limits<size_t>::max();
      for (size_t l = 0; l < kSellLanes; ++l)
        if (next[l] < end[l]) first = std::min(first, column(next[l]));
      if (first == std::numeric_limits<size_t>::max()) break;
      first = std::min(first, cols - kSellWindow);
      if constexpr (kFill) s->window[step] = static_cast<uint32_t>(first);
      for (size_t l = 0; l < kSellLanes; ++l) {
        const bool take = next[l] < end[l] && column(next[l]) < first + kSellWindow;
        if constexpr (kFill) {
          s->index[step * kSellLanes + l] = take ? static_cast<uint8_t>(column(next[l]) - first) : 0;
          s->values[step * kSellLanes + l] = take ? a.values()[next[l]] : 0.0f;
        }
        if (take) ++next[l];
      }
    }
  }
  if constexpr (kFill) s->group_start[groups] = static_cast<uint32_t>(step);
  return step;
}

}  // namespace

size_t sell_steps(const CsrMatrix& a) { return walk<false>(a, nullptr); }

SellLayout build_sell(const CsrMatrix& a, size_t steps) {
  SellLayout s;
  s.group_start.resize((static_cast<size_t>(a.rows()) + kSellLanes - 1) / kSellLanes + 1);
  s.window.resize(steps);
  s.index.resize(steps * kSellLanes);
  s.values.resize(steps * kSellLanes);
  if (walk<true>(a, &s) != steps) throw FormatError("build_sell: the step count is not sell_steps' (a bug)");
  return s;
}

SellLayout build_sell(const CsrMatrix& a) { return build_sell(a, sell_steps(a)); }

}  // namespace sparsenet
