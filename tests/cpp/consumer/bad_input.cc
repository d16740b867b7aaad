// Checks the C++ API's error contract on bad input: every case must throw the
// named sparsenet::Error subclass (never crash, never return a result).
//
//   bad_input MODEL.npz BATCH SCRATCH_DIR
//
// Model::forward: a NaN or an Inf at the first and at the last input float,
// and a null input or output pointer (InputError); save_npy of a tensor whose
// data does not fill its shape (ShapeError); load_model of a directory
// (FormatError). Prints "refused: <message>" per case; exits 0 when all are.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "sparsenet/sparsenet.h"

namespace {

int failures = 0;

template <typename Expected>
void expect(const char* what, const std::function<void()>& call) {
  try {
    call();
    std::printf("accepted: %s\n", what);
    ++failures;
  } catch (const Expected& e) {
    std::printf("refused: %s\n", e.what());
  } catch (const std::exception& e) {
    std::printf("wrong exception for %s: %s\n", what, e.what());
    ++failures;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: bad_input MODEL.npz BATCH SCRATCH_DIR\n");
    return 2;
  }
  const int64_t batch = std::atoll(argv[2]);
  const std::string scratch = argv[3];
  const sparsenet::Model model = sparsenet::load_model(argv[1], sparsenet::LoadOptions{});
  const sparsenet::Shape input = model.input_shape();
  size_t in_size = static_cast<size_t>(batch), out_size = static_cast<size_t>(batch);
  for (int64_t d : input) in_size *= static_cast<size_t>(d);
  for (int64_t d : model.output_shape(input)) out_size *= static_cast<size_t>(d);
  std::vector<float> y(out_size);
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  for (float bad : bad_values) {
    for (size_t at : {size_t{0}, in_size - 1}) {
      std::vector<float> x(in_size, 0.5f);
      x[at] = bad;
      expect<sparsenet::InputError>("a non-finite input", [&] { model.forward(x.data(), batch, input, y.data()); });
    }
  }
  std::vector<float> x(in_size, 0.5f);
  expect<sparsenet::InputError>("a null input", [&] { model.forward(nullptr, batch, input, y.data()); });
  expect<sparsenet::InputError>("a null output", [&] { model.forward(x.data(), batch, input, nullptr); });
  expect<sparsenet::ShapeError>("a tensor short of its shape",
                                [&] { sparsenet::save_npy(scratch + "/short.npy", sparsenet::Tensor{{5}, {1.0f}}); });
  expect<sparsenet::FormatError>("a directory as a model",
                                 [&] { sparsenet::load_model(scratch, sparsenet::LoadOptions{}); });
  return failures == 0 ? 0 : 1;
}
