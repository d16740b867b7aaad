// A sequential model: a list of layers run in order.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "sparsenet/layers.h"

namespace sparsenet {

class Model {
 public:
  // Takes shared ownership of the layers. A ReLU that follows a Linear or
  // Conv2d is fused into that layer's epilogue; Dropout is skipped. Throws
  // FormatError for an empty list or a null layer.
  explicit Model(std::vector<std::shared_ptr<const Layer>> layers);

  const std::vector<std::shared_ptr<const Layer>>& layers() const { return layers_; }

  // One sample's output shape, or ShapeError naming the first layer that does
  // not accept its input (and the previous layer that produced it).
  Shape output_shape(const Shape& input) const;

  // in:  batch samples of shape `input`, sample-major: (N, C, H, W) or (N, F)
  //      row-major, batch * prod(input) floats.
  // out: batch * prod(output_shape(input)) floats, sample-major.
  // Thread-safe: may be called concurrently on one Model.
  void forward(const float* in, int64_t batch, const Shape& input, float* out) const;

 private:
  struct Step {
    const Layer* layer;
    bool fuse_relu;
  };
  std::vector<std::shared_ptr<const Layer>> layers_;
  std::vector<Step> steps_;
};

}  // namespace sparsenet
