// Checks that Model::forward refuses an input holding NaN or Inf with
// sparsenet::InputError before any layer runs, for C++ callers as for Python.
//
//   non_finite MODEL.npz BATCH
//
// Exits 0 and prints "refused: <message>" per case when every case throws
// InputError; a NaN or an Inf at the first and at the last input float.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "sparsenet/sparsenet.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: non_finite MODEL.npz BATCH\n");
    return 2;
  }
  const int64_t batch = std::atoll(argv[2]);
  const sparsenet::Model model = sparsenet::load_model(argv[1], sparsenet::LoadOptions{});
  const sparsenet::Shape input = model.input_shape();
  size_t in_size = static_cast<size_t>(batch), out_size = static_cast<size_t>(batch);
  for (int64_t d : input) in_size *= static_cast<size_t>(d);
  for (int64_t d : model.output_shape(input)) out_size *= static_cast<size_t>(d);
  std::vector<float> y(out_size);
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  int failures = 0;
  for (float bad : bad_values) {
    for (size_t at : {size_t{0}, in_size - 1}) {
      std::vector<float> x(in_size, 0.5f);
      x[at] = bad;
      try {
        model.forward(x.data(), batch, input, y.data());
        std::printf("accepted: %f at %zu\n", static_cast<double>(bad), at);
        ++failures;
      } catch (const sparsenet::InputError& e) {
        std::printf("refused: %s\n", e.what());
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
