// The sliced-window layout of a CSR matrix (SellRef in kernels.h), built once
// per layer for its batch-1 product (WeightedLayer::build_sell).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "sparsenet/aligned.h"
#include "sparsenet/csr.h"

namespace sparsenet {

struct SellLayout {
  std::vector<uint32_t> group_start;  // groups + 1
  std::vector<uint32_t> window;       // per step
  std::vector<uint8_t> index;         // kSellLanes per step
  CacheLineVector<float> values;      // kSellLanes per step: a step is one aligned zmm

  size_t steps() const { return window.size(); }
  size_t bytes() const {
    return group_start.size() * sizeof(uint32_t) + window.size() * sizeof(uint32_t) + index.size() +
           values.size() * sizeof(float);
  }
  SellRef ref() const { return {group_start.data(), window.data(), index.data(), values.data()}; }
};

// Greedy windows, group by group: each step's window starts at the smallest
// column any lane of the group has left (moved left to cols - kSellWindow at
// the end, so that the two loads of x stay inside it), and each lane whose
// next nonzero lies in the window takes that one. Keeps every row's nonzeros
// in their stored order. Needs a.cols() >= kSellWindow.
SellLayout build_sell(const CsrMatrix& a);

}  // namespace sparsenet
