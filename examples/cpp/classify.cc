// classify: run a sparsenet model on one input with the sparse and the dense
// backend, print the top-5 classes and the latency of each.
//
//   classify MODEL.npz INPUT.{npy,pgm} [--threads N] [--runs N] [--out OUTPUT.npy]
//
// A .npy input is one sample (its shape is the model's input shape) or a batch;
// a binary PGM (P5, 8-bit) becomes a 1 x 1 x H x W image scaled to [0, 1].
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include <sparsenet/sparsenet.h>

namespace {

sparsenet::Tensor read_pgm(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw sparsenet::FormatError(path + ": cannot open the file");
  std::string magic;
  int width = 0, height = 0, max_value = 0;
  file >> magic >> width >> height >> max_value;
  if (!file || magic != "P5" || width <= 0 || height <= 0 || max_value <= 0 || max_value > 255)
    throw sparsenet::FormatError(path + ": not an 8-bit binary PGM (P5) image");
  file.get();  // the single whitespace after the header
  std::vector<unsigned char> pixels(static_cast<size_t>(width) * height);
  file.read(reinterpret_cast<char*>(pixels.data()), static_cast<std::streamsize>(pixels.size()));
  if (!file) throw sparsenet::FormatError(path + ": truncated PGM image");
  sparsenet::Tensor t;
  t.shape = {1, 1, height, width};
  for (unsigned char p : pixels) t.data.push_back(static_cast<float>(p) / static_cast<float>(max_value));
  return t;
}

sparsenet::Tensor read_input(const std::string& path, const sparsenet::Shape& input_shape) {
  const bool pgm = path.size() > 4 && path.compare(path.size() - 4, 4, ".pgm") == 0;
  sparsenet::Tensor t = pgm ? read_pgm(path) : sparsenet::load_npy(path);
  if (!input_shape.empty() && t.shape == input_shape) t.shape.insert(t.shape.begin(), 1);
  return t;
}

double median_ms(const sparsenet::Model& model, const sparsenet::Tensor& x, int runs,
                 sparsenet::Tensor* out) {
  *out = model.forward(x);  // warm-up
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    *out = model.forward(x);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: classify MODEL.npz INPUT.{npy,pgm} [--threads N] [--runs N] [--out OUTPUT.npy]\n";
    return 2;
  }
  std::string out_path;
  int runs = 20;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") sparsenet::set_num_threads(std::atoi(argv[i + 1]));
    else if (flag == "--runs") runs = std::max(1, std::atoi(argv[i + 1]));
    else if (flag == "--out") out_path = argv[i + 1];
    else {
      std::cerr << "classify: unknown option " << flag << "\n";
      return 2;
    }
  }
  try {
    sparsenet::LoadOptions options;
    options.backend = sparsenet::Backend::kSparse;
    const sparsenet::Model sparse = sparsenet::load_model(argv[1], options);
    options.backend = sparsenet::Backend::kDense;
    const sparsenet::Model dense = sparsenet::load_model(argv[1], options);
    const sparsenet::Tensor x = read_input(argv[2], sparse.input_shape());

    sparsenet::Tensor y_sparse, y_dense;
    const double t_sparse = median_ms(sparse, x, runs, &y_sparse);
    const double t_dense = median_ms(dense, x, runs, &y_dense);

    const size_t classes = y_sparse.data.size() / static_cast<size_t>(y_sparse.shape[0]);
    std::vector<size_t> order(classes);
    std::iota(order.begin(), order.end(), 0);
    const float* scores = y_sparse.data.data();  // the first sample
    const size_t top = std::min<size_t>(5, classes);
    std::partial_sort(order.begin(), order.begin() + top, order.end(),
                      [&](size_t a, size_t b) { return scores[a] > scores[b]; });
    std::printf("model %s (%s kernels, %d threads), input %s\n", sparse.name().c_str(),
                sparsenet::isa_name(sparsenet::active_isa()), sparsenet::get_num_threads(),
                sparsenet::shape_to_string(x.shape).c_str());
    std::printf("dense baseline: %s\n", sparsenet::blas_info().c_str());
    std::printf("top-%zu classes of sample 0:\n", top);
    for (size_t i = 0; i < top; ++i) std::printf("  %zu  %.6g\n", order[i], scores[order[i]]);
    double max_diff = 0;
    for (size_t i = 0; i < y_sparse.data.size(); ++i)
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(y_sparse.data[i] - y_dense.data[i])));
    std::printf("latency (median of %d): sparse %.3f ms, dense %.3f ms, speedup %.2fx; max |sparse - dense| %.2g\n",
                runs, t_sparse, t_dense, t_dense / t_sparse, max_diff);
    if (!out_path.empty()) sparsenet::save_npy(out_path, y_sparse);
  } catch (const sparsenet::Error& e) {
    std::cerr << "classify: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
