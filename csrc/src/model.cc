#include "sparsenet/model.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>

#include "finite.h"
#include "kernels.h"
#include "sparsenet/aligned.h"
#include "sparsenet/errors.h"
#include "thread_pool.h"

namespace sparsenet {
namespace {

// No tensor may hold more than 2^40 floats (4 TiB): anything larger is a shape lie.
constexpr int64_t kMaxElements = int64_t{1} << 40;

int64_t checked_numel(const Shape& s, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 1) throw ShapeError(what + " has a non-positive dimension: " + shape_to_string(s));
    if (n > kMaxElements / d) throw ShapeError(what + " is too large: " + shape_to_string(s));
    n *= d;
  }
  return n;
}

// The floats of a shape checked_numel has accepted.
size_t elements(const Shape& s) {
  size_t n = 1;
  for (int64_t d : s) n *= static_cast<size_t>(d);
  return n;
}

}  // namespace

Model::Model(std::vector<std::shared_ptr<const Layer>> layers, std::string name, Shape input_shape)
    : layers_(std::move(layers)),
      name_(std::move(name)),
      input_shape_(std::move(input_shape)),
      workspaces_(std::make_unique<Workspaces>()),
      isa_(active_isa()) {
  if (layers_.empty()) throw FormatError("a model needs at least one layer");
  std::set<std::string> names;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i]) throw FormatError("layer " + std::to_string(i) + " is null");
    if (!names.insert(layers_[i]->name()).second)
      throw FormatError("two layers are named '" + layers_[i]->name() + "'; names must be unique");
    const Layer* layer = layers_[i].get();
    if (layer->is_identity()) continue;
    if (layer->kind() == std::string("relu") && !steps_.empty() && !steps_.back().fuse_relu &&
        steps_.back().layer->accepts_fused_relu()) {
      steps_.back().fuse_relu = true;
      continue;
    }
    steps_.push_back({layer, false});
  }
  if (!input_shape_.empty()) output_shape(input_shape_);
}

namespace {

// Image by image: a batch whose leading feature-map layers (convolutions,
// pools: (C, H, W) in and out) run all of them on one image before the next,
// each worker on its own images, when no image's activations exceed this
// (a step's input plus its output): the maps then pass from layer to layer in
// L2 instead of through memory, and the workers meet once instead of at
// every layer. mnist_cnn at batch 64 (100 KB per map): its pools were 8 % of
// the pass and did not scale to two threads, reading the convolutions'
// output back from L3.
constexpr size_t kImageByImageBytes = 512 * 1024;

}  // namespace

struct Model::Workspaces {
  struct Buffers {
    // 64-byte aligned: batched layers load each input row (of the batch's
    // floats) in zmm registers, which straddle two cache lines where the rows
    // are not aligned (mnist_cnn's fc1 at batch 64: 1.05x slower).
    CacheLineVector<float> a, b, scratch;
    CacheLineVector<float> images;  // image-by-image steps: two maps per worker
  };
  // The shapes and buffer sizes of one (input shape, batch, thread count):
  // the last one is kept, so that repeated calls with the same input build no
  // shapes or strings (no allocation) and only take a reference.
  struct Plan {
    Shape input;
    int64_t batch;
    size_t workers;
    Shape output;
    std::vector<Shape> shapes;  // the input, then each step's output
    size_t max_elements;
    size_t scratch_per_worker;
    // The leading steps run image by image (0: none) and the floats of one
    // image's largest map among them.
    size_t image_steps;
    size_t image_elements;
  };
  std::mutex mutex;
  std::vector<std::unique_ptr<Buffers>> free;
  std::shared_ptr<const Plan> plan;  // under mutex

  std::unique_ptr<Buffers> acquire() {
    std::lock_guard<std::mutex> lock(mutex);
    if (free.empty()) return std::make_unique<Buffers>();
    std::unique_ptr<Buffers> buffers = std::move(free.back());
    free.pop_back();
    return buffers;
  }
  void release(std::unique_ptr<Buffers> buffers) {
    std::lock_guard<std::mutex> lock(mutex);
    free.push_back(std::move(buffers));
  }
};

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Tensor Model::forward(const Tensor& input) const {
  if (input.shape.size() != 2 && input.shape.size() != 4)
    throw ShapeError("input must be (N, C, H, W) or (N, F), got " + shape_to_string(input.shape));
  const Shape sample(input.shape.begin() + 1, input.shape.end());
  const int64_t batch = input.shape[0];
  if (batch < 0) throw ShapeError("batch size must be >= 0, got " + std::to_string(batch));
  const int64_t in_numel = checked_numel(sample, "input sample") * batch;
  if (static_cast<int64_t>(input.data.size()) != in_numel)
    throw ShapeError("input tensor of shape " + shape_to_string(input.shape) + " holds " +
                     std::to_string(input.data.size()) + " floats, expected " + std::to_string(in_numel));
  Tensor out;
  out.shape = {batch};
  const Shape sample_out = output_shape(sample);
  out.shape.insert(out.shape.end(), sample_out.begin(), sample_out.end());
  out.data.resize(static_cast<size_t>(checked_numel(sample_out, "output") * batch));
  forward(input.data.data(), batch, sample, out.data.data());
  return out;
}

Shape Model::output_shape(const Shape& input) const {
  if (input.size() != 1 && input.size() != 3)
    throw ShapeError("model input must be (N, C, H, W) or (N, F); got per-sample shape " +
                     shape_to_string(input));
  checked_numel(input, "model input");
  Shape shape = input;
  for (const auto& layer : layers_) {
    shape = layer->output_shape(shape);
    checked_numel(shape, std::string(layer->kind()) + " layer '" + layer->name() + "' output");
  }
  return shape;
}

void Model::forward(const float* in, int64_t batch, const Shape& input, float* out) const {
  if (batch < 0) throw ShapeError("batch size must be >= 0, got " + std::to_string(batch));
  if (batch > 0 && (in == nullptr || out == nullptr))
    throw InputError(std::string(in == nullptr ? "input" : "output") + " pointer is null for a batch of " +
                     std::to_string(batch));
  std::shared_ptr<ThreadPool> pool = current_pool();
  const size_t workers = static_cast<size_t>(pool->num_threads());
  std::shared_ptr<const Workspaces::Plan> plan;
  {
    std::lock_guard<std::mutex> lock(workspaces_->mutex);
    const auto& last = workspaces_->plan;
    if (last && last->batch == batch && last->workers == workers && last->input == input)
      plan = last;
  }
  if (!plan) {
    auto fresh = std::make_shared<Workspaces::Plan>();
    fresh->input = input;
    fresh->batch = batch;
    fresh->workers = workers;
    fresh->output = output_shape(input);
    if (batch == 0) return;
    fresh->shapes.push_back(input);
    fresh->max_elements = 0;
    for (const Step& step : steps_)
      fresh->shapes.push_back(step.layer->output_shape(fresh->shapes.back()));
    for (const Shape& s : fresh->shapes) {
      const int64_t n = checked_numel(s, "activation");
      if (n > kMaxElements / batch)
        throw ShapeError("batch too large for activation " + shape_to_string(s));
      fresh->max_elements = std::max(fresh->max_elements, static_cast<size_t>(n * batch));
    }
    // Image by image: the leading steps from (C, H, W) to (C, H, W), at least
    // two (a lone layer parallelizes over images itself), on batches that give
    // each worker two images or more, with small enough maps.
    size_t steps = 0, image_elements = 0;
    while (steps < steps_.size() && fresh->shapes[steps].size() == 3 &&
           fresh->shapes[steps + 1].size() == 3) {
      const size_t in_n = elements(fresh->shapes[steps]);
      const size_t out_n = elements(fresh->shapes[steps + 1]);
      if (sizeof(float) * (in_n + out_n) > kImageByImageBytes) break;
      image_elements = std::max(image_elements, out_n);
      ++steps;
    }
    const bool by_image = steps >= 2 && static_cast<size_t>(batch) >= 2 * workers;
    fresh->image_steps = by_image ? steps : 0;
    fresh->image_elements = by_image ? image_elements : 0;
    fresh->scratch_per_worker = 0;
    for (size_t i = 0; i < steps_.size(); ++i)
      fresh->scratch_per_worker =
          std::max(fresh->scratch_per_worker,
                   steps_[i].layer->scratch_floats(fresh->shapes[i], i < fresh->image_steps ? 1 : batch));
    plan = fresh;
    std::lock_guard<std::mutex> lock(workspaces_->mutex);
    workspaces_->plan = plan;
  }
  if (batch == 0) return;
  size_t in_elements = static_cast<size_t>(batch);
  for (int64_t d : input) in_elements *= static_cast<size_t>(d);
  if (!all_finite(in, in_elements)) {
    Shape full{batch};
    full.insert(full.end(), input.begin(), input.end());
    throw InputError("input of shape " + shape_to_string(full) + " contains NaN or Inf");
  }
  const Shape& final_shape = plan->output;
  const std::vector<Shape>& shapes = plan->shapes;
  const size_t max_elements = plan->max_elements;

  ForwardContext ctx;
  ctx.pool = pool.get();
  ctx.num_workers = workers;
  ctx.scratch_per_worker = plan->scratch_per_worker;

  struct Lease {  // returns the buffers to the model however the call ends
    Workspaces* pool;
    std::unique_ptr<Workspaces::Buffers> buffers;
    ~Lease() { pool->release(std::move(buffers)); }
  } lease{workspaces_.get(), workspaces_->acquire()};
  Workspaces::Buffers& ws = *lease.buffers;
  if (ws.a.size() < max_elements) ws.a.resize(max_elements);
  if (ws.b.size() < max_elements) ws.b.resize(max_elements);
  if (ws.scratch.size() < ctx.num_workers * ctx.scratch_per_worker)
    ws.scratch.resize(ctx.num_workers * ctx.scratch_per_worker);
  if (ws.images.size() < 2 * workers * plan->image_elements)
    ws.images.resize(2 * workers * plan->image_elements);
  CacheLineVector<float>& buffer_a = ws.a;
  CacheLineVector<float>& buffer_b = ws.b;
  ctx.scratch = ws.scratch.data();

  const size_t nb = static_cast<size_t>(batch);
  const float* current = in;
  if (input.size() == 1 && nb > 1) {  // caller's (N, F) to feature-major (F, N)
    transpose_matrix(kernel_table(isa_), in, nb, static_cast<size_t>(input[0]), buffer_a.data(), pool.get(),
                     workers);
    current = buffer_a.data();
  }
  size_t out_elements = nb;
  for (int64_t d : final_shape) out_elements *= static_cast<size_t>(d);
  // The last layer writes straight into `out` (no copy of the result: 12.8 MB
  // for VGG's first convolution alone), unless its output is feature-major and
  // goes back to the caller's (N, F) by a transpose, or `out` overlaps `in`.
  const auto address = [](const float* p) { return reinterpret_cast<uintptr_t>(p); };
  const bool overlaps = address(out) < address(in + in_elements) && address(in) < address(out + out_elements);
  const bool transpose_out = final_shape.size() == 1 && nb > 1;
  const auto target_of = [&](size_t i) {
    if (i + 1 == steps_.size() && !transpose_out && !overlaps) return out;
    return current == buffer_a.data() ? buffer_b.data() : buffer_a.data();
  };
  const size_t image_steps = plan->image_steps;
  if (image_steps > 0) {
    // Each image through the leading steps on one worker, serially (no pool),
    // between the worker's two maps; the last step writes into the batch.
    float* target = target_of(image_steps - 1);
    const size_t in_stride = elements(shapes[0]);
    const size_t out_stride = elements(shapes[image_steps]);
    pool->parallel_for(nb, [&](size_t image, size_t worker) {
      ForwardContext local;
      local.scratch = ctx.scratch + worker * ctx.scratch_per_worker;
      local.scratch_per_worker = ctx.scratch_per_worker;
      float* maps = ws.images.data() + 2 * worker * plan->image_elements;
      const float* map = current + image * in_stride;
      for (size_t i = 0; i < image_steps; ++i) {
        float* next = i + 1 == image_steps ? target + image * out_stride
                                           : maps + (i % 2) * plan->image_elements;
        local.fuse_relu = steps_[i].fuse_relu;
        steps_[i].layer->forward({map, 1, shapes[i]}, {next, 1, shapes[i + 1]}, local);
        map = next;
      }
    });
    current = target;
  }
  for (size_t i = image_steps; i < steps_.size(); ++i) {
    float* target = target_of(i);
    ctx.fuse_relu = steps_[i].fuse_relu;
    steps_[i].layer->forward({current, batch, shapes[i]}, {target, batch, shapes[i + 1]}, ctx);
    current = target;
  }
  if (current == out) return;
  if (transpose_out)
    transpose_matrix(kernel_table(isa_), current, static_cast<size_t>(final_shape[0]), nb, out, pool.get(),
                     workers);
  else
    std::memcpy(out, current, sizeof(float) * out_elements);
}

}  // namespace sparsenet
