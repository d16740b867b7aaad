// libFuzzer harness for the C++ model loader: zip and zip64 directories,
// inflate, CRC-32, .npy headers, the JSON graph and every weight check.
// Input: one options byte (its low bits pick the backend; the same convention
// as tests/fuzz/fuzz_load.py, so the two share a corpus), then the file image.
// A loaded model must also run on a small input.
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include <sparsenet/sparsenet.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  sparsenet::LoadOptions options;
  options.backend = static_cast<sparsenet::Backend>(data[0] % 3);
  options.max_bytes = 64 << 20;
  try {
    const sparsenet::Model model = sparsenet::load_model_from_memory(data + 1, size - 1, options, "fuzz");
    const sparsenet::Shape& sample = model.input_shape();
    int64_t numel = sample.empty() ? 0 : 1;
    for (int64_t d : sample) numel = d > 4096 ? 1 << 30 : numel * d;
    if (numel > 0 && numel <= 4096) {
      sparsenet::Tensor x;
      x.shape = {2};
      x.shape.insert(x.shape.end(), sample.begin(), sample.end());
      x.data.assign(static_cast<size_t>(2 * numel), 0.5f);
      model.forward(x);
    }
  } catch (const sparsenet::Error&) {
  } catch (const std::bad_alloc&) {
  }
  return 0;
}
