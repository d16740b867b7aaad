// A sequential model: a list of layers run in order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparsenet/layers.h"

namespace sparsenet {

// A small owning tensor: `shape` includes the batch dimension, `data` holds
// prod(shape) floats in row-major (C) order.
struct Tensor {
  Shape shape;
  std::vector<float> data;
};

class Model {
 public:
  // Takes shared ownership of the layers. A ReLU that follows a Linear or
  // Conv2d is fused into that layer's epilogue; Dropout is skipped. Throws
  // FormatError for an empty list, a null layer or two layers of one name.
  // `input_shape` (one sample, may be empty = unknown) is checked against the
  // whole chain when given (ShapeError).
  explicit Model(std::vector<std::shared_ptr<const Layer>> layers, std::string name = "",
                 Shape input_shape = {});
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  const std::vector<std::shared_ptr<const Layer>>& layers() const { return layers_; }
  const std::string& name() const { return name_; }
  const Shape& input_shape() const { return input_shape_; }

  // One sample's output shape, or ShapeError naming the first layer that does
  // not accept its input (and the previous layer that produced it).
  Shape output_shape(const Shape& input) const;

  // in:  batch samples of shape `input`, sample-major: (N, C, H, W) or (N, F)
  //      row-major, batch * prod(input) floats.
  // out: batch * prod(output_shape(input)) floats, sample-major. The last layer
  //      writes there directly; `out` may overlap `in` (then it is copied).
  // Throws ShapeError when the layers do not accept `input`, InputError when
  // `in` or `out` is null (batch > 0) or `in` holds a NaN or an Inf (checked
  // before any layer runs).
  // Thread-safe: may be called concurrently on one Model. Buffers are reused
  // between calls: after the first call for a batch size, no allocation.
  // Layers run one after the other over the whole batch on the thread pool,
  // except that a batch of two images or more per worker takes each image
  // through the leading feature-map layers (convolutions, pools) on one
  // worker while its maps are small (see model.cc).
  void forward(const float* in, int64_t batch, const Shape& input, float* out) const;

  // The same on a Tensor of shape (N, C, H, W) or (N, F); returns (N, ...).
  Tensor forward(const Tensor& input) const;

 private:
  struct Step {
    const Layer* layer;
    bool fuse_relu;
  };
  // Activation and scratch buffers, kept between calls (grow-only) so that a
  // steady stream of forward passes allocates nothing; one per concurrent call.
  struct Workspaces;

  std::vector<std::shared_ptr<const Layer>> layers_;
  std::vector<Step> steps_;
  std::string name_;
  Shape input_shape_;
  std::unique_ptr<Workspaces> workspaces_;
  Isa isa_;  // of the transposes between the caller's (N, F) and feature-major (F, N)
};

}  // namespace sparsenet
