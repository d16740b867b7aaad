// Builds the sliced-window layout of a CSR matrix (SellLayout in
// sparsenet/csr.h, SellRef in kernels.h), once per layer for its batch-1
// product (WeightedLayer::build_sell).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "sparsenet/csr.h"

namespace sparsenet {

static_assert(kSellLanes == 16, "SellLayout (sparsenet/csr.h) holds 16 lanes a step");

// The kernels' view of a layout.
inline SellRef sell_ref(const SellLayout& s, bool stream) {
  return {s.group_start.data(), s.window.data(), s.index.data(), s.values.data(), stream};
}

// Greedy windows, group by group: each step's window starts at the smallest
// column any lane of the group has left (moved left to cols - kSellWindow at
// the end, so that the two loads of x stay inside it), and each lane whose
// next nonzero lies in the window takes that one. Keeps every row's nonzeros
// in their stored order. Needs a.cols() >= kSellWindow (else ShapeError).
SellLayout build_sell(const CsrMatrix& a);
// The same given steps = sell_steps(a), which counts the layout's steps
// without building it (a layer decides from the fill whether to build).
size_t sell_steps(const CsrMatrix& a);
SellLayout build_sell(const CsrMatrix& a, size_t steps);

}  // namespace sparsenet
