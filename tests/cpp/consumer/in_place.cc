// Checks that Model::forward may write its result over its own input (`out`
// overlapping `in`): the result must equal the one written to a separate buffer.
//
//   in_place MODEL.npz BATCH
//
// Exits 0 and prints "in place: same" when both results are bit-for-bit equal.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sparsenet/sparsenet.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: in_place MODEL.npz BATCH\n");
    return 2;
  }
  const int64_t batch = std::atoll(argv[2]);
  const sparsenet::Model model = sparsenet::load_model(argv[1], sparsenet::LoadOptions{});
  const sparsenet::Shape input = model.input_shape();
  size_t in_size = static_cast<size_t>(batch), out_size = static_cast<size_t>(batch);
  for (int64_t d : input) in_size *= static_cast<size_t>(d);
  for (int64_t d : model.output_shape(input)) out_size *= static_cast<size_t>(d);
  std::vector<float> x(in_size), y(out_size);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  model.forward(x.data(), batch, input, y.data());
  std::vector<float> z(std::max(in_size, out_size));
  std::copy(x.begin(), x.end(), z.begin());
  model.forward(z.data(), batch, input, z.data());
  const bool same = std::memcmp(y.data(), z.data(), sizeof(float) * out_size) == 0;
  std::printf("in place: %s\n", same ? "same" : "DIFFERENT");
  return same ? 0 : 1;
}
