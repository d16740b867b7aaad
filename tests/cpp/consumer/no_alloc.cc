// Checks Model::forward's promise: after the first calls for a batch size, a
// steady stream of forward passes makes no heap allocation (operator new is
// counted; the engine allocates only through it and std containers).
//
//   no_alloc MODEL.npz BACKEND(sparse|dense|auto) THREADS BATCH
//
// Exits 0 and prints "allocations: 0" when the steady state allocated nothing.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "sparsenet/sparsenet.h"

namespace {
std::atomic<long> g_allocations{0};
}

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: no_alloc MODEL.npz sparse|dense|auto THREADS BATCH\n");
    return 2;
  }
  const std::string backend = argv[2];
  sparsenet::LoadOptions options;
  options.backend = backend == "sparse" ? sparsenet::Backend::kSparse
                    : backend == "dense" ? sparsenet::Backend::kDense
                                         : sparsenet::Backend::kAuto;
  sparsenet::set_num_threads(std::atoi(argv[3]));
  const int64_t batch = std::atoll(argv[4]);
  const sparsenet::Model model = sparsenet::load_model(argv[1], options);
  const sparsenet::Shape input = model.input_shape();
  int64_t in_size = batch, out_size = batch;
  for (int64_t d : input) in_size *= d;
  for (int64_t d : model.output_shape(input)) out_size *= d;
  std::vector<float> x(static_cast<size_t>(in_size)), y(static_cast<size_t>(out_size));
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f;
  // Warm-up: buffers are planned, auto layers measure, direct-convolution plans are built.
  for (int i = 0; i < 3; ++i) model.forward(x.data(), batch, input, y.data());
  const long before = g_allocations.load();
  for (int i = 0; i < 20; ++i) model.forward(x.data(), batch, input, y.data());
  const long allocations = g_allocations.load() - before;
  std::printf("allocations: %ld\n", allocations);
  return allocations == 0 ? 0 : 1;
}
