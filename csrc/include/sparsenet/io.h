// Reading sparsenet model files and .npy arrays from C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "sparsenet/layers.h"
#include "sparsenet/model.h"

namespace sparsenet {

struct LoadOptions {
  Backend backend = Backend::kAuto;   // per-layer choice; kSparse / kDense force one
  uint64_t max_bytes = uint64_t{16} << 30;  // cap on the bytes read out of the file
};

// Loads a sparsenet .npz file as Model.save writes it (stored or deflated
// members; docs/format.md). Every array header is checked against the bytes
// really present and max_bytes before anything is allocated; CSR invariants,
// NaN/Inf and layer shapes are validated as in Python. Throws FormatError,
// WeightError or ShapeError naming the file, layer, key and shapes; a path
// that cannot be opened or read (missing, a directory) throws FormatError too.
Model load_model(const std::string& path, const LoadOptions& options = {});

// The same from a file image in memory; `label` names it in error messages.
Model load_model_from_memory(const void* data, size_t size, const LoadOptions& options = {},
                             const std::string& label = "<memory>");

// Reads a .npy file holding a float32, float64 or (unsigned) integer array,
// converted to float32 (integers as their values, without scaling).
Tensor load_npy(const std::string& path);

// Writes a float32 .npy file (version 1.0, C order). Throws ShapeError when
// tensor.data does not hold prod(tensor.shape) floats, FormatError when the
// file cannot be written.
void save_npy(const std::string& path, const Tensor& tensor);

}  // namespace sparsenet
