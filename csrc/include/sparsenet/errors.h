// Exceptions thrown by the sparsenet engine.
//
// Every error that user input can cause is one of these types; the Python
// bindings map them to ValueError subclasses of the same names. Messages name
// the layer, the weight key and the shapes involved.
#pragma once

#include <stdexcept>
#include <string>

namespace sparsenet {

// Base class of all errors caused by a bad model, file or input.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Shapes that do not fit: an input of the wrong shape, layers that do not chain.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// Weights that break an invariant: CSR structure, NaN/Inf values, lengths.
class WeightError : public Error {
 public:
  using Error::Error;
};

// A malformed or unsupported model description or file.
class FormatError : public Error {
 public:
  using Error::Error;
};

// An input that cannot be run: Model::forward (and CudaModel's, for a host
// input) refuses NaN or Inf values, which would otherwise come out as
// numbers (a max pool or a ReLU drops a NaN) instead of an error.
class InputError : public Error {
 public:
  using Error::Error;
};

// The CUDA path cannot run: not built (SPARSENET_ENABLE_CUDA=OFF), no CUDA
// device or driver, or a CUDA call failed. Device memory exhaustion is
// std::bad_alloc instead.
class DeviceError : public Error {
 public:
  using Error::Error;
};

}  // namespace sparsenet
