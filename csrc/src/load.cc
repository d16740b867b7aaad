// Loading the sparsenet .npz format (docs/format.md) in C++, with the same
// checks and messages as the Python loader (python/sparsenet/format.py).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <system_error>

#include "json.h"
#include "npz.h"
#include "sparsenet/errors.h"
#include "sparsenet/io.h"

namespace sparsenet {
namespace {

constexpr int kFormatVersion = 2;  // reads 1 and 2 (format.py: what version 2 added)
constexpr uint64_t kMaxGraphBytes = 1 << 20;
constexpr int64_t kMaxElements = int64_t{1} << 40;
constexpr int64_t kMaxDim = int64_t{1} << 31;

const Json& field(const Json& entry, const char* key, Json::Type type, const std::string& where) {
  const Json* value = entry.find(key);
  if (value == nullptr) throw FormatError(where + ": missing field '" + key + "'");
  if (value->type != type)
    throw FormatError(where + ": field '" + key + "' has the wrong type");
  return *value;
}

int64_t small_int(const Json& v, const std::string& what, const std::string& where) {
  if (v.type != Json::Type::kNumber || !v.integral || v.integer < 0 || v.integer >= kMaxDim)
    throw FormatError(where + ": " + what + " must be an int or a pair of ints in [0, 2^31)");
  return v.integer;
}

// An int or a two-element list of ints; `fallback` when absent or null.
std::pair<int64_t, int64_t> pair_field(const Json& entry, const char* key, const std::string& where,
                                       std::pair<int64_t, int64_t> fallback, bool required = false) {
  const Json* v = entry.find(key);
  if (v == nullptr || v->type == Json::Type::kNull) {
    if (required) throw FormatError(where + ": missing field '" + key + "'");
    return fallback;
  }
  if (v->type == Json::Type::kArray) {
    if (v->array.size() != 2)
      throw FormatError(where + ": " + key + " must be an int or a pair of ints in [0, 2^31)");
    return {small_int(v->array[0], key, where), small_int(v->array[1], key, where)};
  }
  const int64_t x = small_int(*v, key, where);
  return {x, x};
}

bool bool_field(const Json& entry, const char* key, bool fallback, const std::string& where) {
  const Json* v = entry.find(key);
  if (v == nullptr) return fallback;
  if (v->type != Json::Type::kBool) throw FormatError(where + ": field '" + key + "' must be true or false");
  return v->boolean;
}

Shape weight_shape(const Json& meta, const std::string& where) {
  const Json& shape = field(meta, "shape", Json::Type::kArray, where);
  Shape dims;
  int64_t total = 1;
  for (const Json& d : shape.array) {
    if (d.type != Json::Type::kNumber || !d.integral || d.integer <= 0 || d.integer >= kMaxDim)
      throw FormatError(where + ": weight shape must be 2 or 4 positive dimensions below 2^31");
    dims.push_back(d.integer);
    total = total > kMaxElements / d.integer ? kMaxElements + 1 : total * d.integer;
  }
  if (dims.size() != 2 && dims.size() != 4)
    throw FormatError(where + ": weight shape must be 2 or 4 positive dimensions below 2^31");
  if (total > kMaxElements) throw FormatError(where + ": weight shape " + shape_to_string(dims) + " is absurdly large");
  return dims;
}

struct Weights {
  CsrMatrix matrix;
  std::vector<float> bias;
  Shape shape;
};

Weights read_weights(NpzReader& npz, const Json& entry, const std::string& kind, const std::string& name,
                     const std::string& where, Backend backend, uint64_t& dense_budget) {
  const Json& meta = field(entry, "weight", Json::Type::kObject, where);
  Weights w;
  w.shape = weight_shape(meta, where);
  const int64_t rows = w.shape[0];
  int64_t cols = 1;
  for (size_t i = 1; i < w.shape.size(); ++i) cols *= w.shape[i];
  const std::string storage = field(meta, "storage", Json::Type::kString, where).string;
  const std::string context = kind + " layer '" + name + "'";
  const std::string key = name + ".weight";
  if (storage == "csr") {
    const NpyArray data = npz.read(key + ".data", "f", context);
    const NpyArray indices = npz.read(key + ".indices", "iu", context);
    const NpyArray indptr = npz.read(key + ".indptr", "iu", context);
    for (const auto& part : {std::make_pair("data", &data), std::make_pair("indices", &indices),
                             std::make_pair("indptr", &indptr)})
      if (part.second->shape.size() != 1)
        throw FormatError(npz.label() + ": " + context + " key '" + key + "." + part.first +
                          "': expected 1-D, got shape " + shape_to_string(part.second->shape));
    if (const Json* nnz = meta.find("nnz"))  // optional; when given, the data's length
      if (nnz->type != Json::Type::kNumber || !nnz->integral || nnz->integer < 0 ||
          nnz->integer != data.shape[0])
        throw FormatError(where + ": weight nnz " + (nnz->type == Json::Type::kNumber && nnz->integral
                                                         ? std::to_string(nnz->integer) : std::string("(not an int)")) +
                          " differs from the " + std::to_string(data.shape[0]) + " values in '" + key + ".data'");
    const std::vector<float> values = data.to_float();
    const std::vector<int64_t> col = indices.to_int64();
    const std::vector<int64_t> ptr = indptr.to_int64();
    if (ptr.empty())
      throw WeightError(context + " key '" + key + "': indptr is empty");
    w.matrix = CsrMatrix::from_arrays(context + " key '" + key + "'", rows, cols, ptr.data(), ptr.size(),
                                      col.data(), col.size(), values.data(), values.size());
  } else if (storage == "dense") {
    const NpyArray dense = npz.read(key, "f", context);
    if (dense.shape != w.shape)
      throw FormatError(npz.label() + ": " + context + " key '" + key + "': array shape " +
                        shape_to_string(dense.shape) + " differs from the declared " + shape_to_string(w.shape));
    const std::vector<float> values = dense.to_float();
    w.matrix = CsrMatrix::from_dense(context + " key '" + key + "'", rows, cols, values.data());
  } else {
    throw FormatError(where + ": unknown weight storage '" + storage + "' (expected 'csr' or 'dense')");
  }
  // Dense copies (every layer for kDense; for kAuto those denser than the
  // always-sparse density, which keep both forms) must fit max_bytes.
  const double always_sparse = kind == "linear" ? kAutoLinearSparseDensity : kAutoConvSparseDensity;
  if (backend == Backend::kDense ||
      (backend == Backend::kAuto && !auto_always_sparse(always_sparse, rows, cols, w.matrix.nnz()))) {
    const uint64_t need = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) * 4;
    if (need > dense_budget)
      throw FormatError(npz.label() + ": the dense copies of the weights would need more than max_bytes=" +
                        std::to_string(npz.max_bytes()) + " bytes");
    dense_budget -= need;
  }
  if (field(entry, "bias", Json::Type::kBool, where).boolean) {
    const NpyArray bias = npz.read(name + ".bias", "f", context);
    if (bias.shape != Shape{rows})
      throw FormatError(npz.label() + ": " + context + " key '" + name + ".bias': shape " +
                        shape_to_string(bias.shape) + ", expected (" + std::to_string(rows) +
                        ",) for weight " + shape_to_string(w.shape));
    w.bias = bias.to_float();
  }
  return w;
}

std::shared_ptr<const Layer> build_layer(NpzReader& npz, const Json& entry, const std::string& kind,
                                         const std::string& name, const std::string& where,
                                         Backend backend, uint64_t& dense_budget) {
  if (kind == "linear") {
    Weights w = read_weights(npz, entry, kind, name, where, backend, dense_budget);
    if (w.shape.size() != 2) throw WeightError("linear layer '" + name + "': weight must be 2-D (out, in)");
    return std::make_shared<Linear>(name, std::move(w.matrix), std::move(w.bias), backend);
  }
  if (kind == "conv2d") {
    Weights w = read_weights(npz, entry, kind, name, where, backend, dense_budget);
    if (w.shape.size() != 4)
      throw FormatError(where + ": conv2d weight shape " + shape_to_string(w.shape) + " must be (O, I, kh, kw)");
    const auto stride = pair_field(entry, "stride", where, {1, 1});
    const auto padding = pair_field(entry, "padding", where, {0, 0});
    return std::make_shared<Conv2d>(name, std::move(w.matrix), std::move(w.bias), w.shape[1], w.shape[2],
                                    w.shape[3], stride.first, stride.second, padding.first,
                                    padding.second, backend, bool_field(entry, "same_padding", false, where));
  }
  if (kind == "maxpool2d" || kind == "avgpool2d") {
    const auto kernel = pair_field(entry, "kernel_size", where, {0, 0}, true);
    const auto stride = pair_field(entry, "stride", where, kernel);
    const auto padding = pair_field(entry, "padding", where, {0, 0});
    const auto input_size = pair_field(entry, "input_size", where, {0, 0});
    return std::make_shared<Pool2d>(name, kind == "maxpool2d" ? PoolMode::kMax : PoolMode::kAverage,
                                    kernel.first, kernel.second, stride.first, stride.second,
                                    padding.first, padding.second, bool_field(entry, "ceil_mode", false, where),
                                    bool_field(entry, "count_include_pad", true, where),
                                    bool_field(entry, "same_padding", false, where), input_size.first,
                                    input_size.second);
  }
  if (kind == "globalavgpool2d") return Pool2d::global(name, PoolMode::kAverage);
  if (kind == "relu") return std::make_shared<ReLU>(name);
  if (kind == "flatten") return std::make_shared<Flatten>(name);
  if (kind == "softmax") return std::make_shared<Softmax>(name);
  if (kind == "dropout") {
    if (const Json* p = entry.find("p"))  // kept for the record only, but checked as Python does
      if (p->type != Json::Type::kNumber || !(p->number >= 0.0 && p->number < 1.0))
        throw FormatError(where + ": dropout p must be a number in [0, 1)");
    return std::make_shared<Dropout>(name);
  }
  throw FormatError(where + ": unknown layer kind '" + kind +
                    "' (known: linear, conv2d, maxpool2d, avgpool2d, globalavgpool2d, relu, flatten, softmax, "
                    "dropout)");
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) throw FormatError(path + ": is a directory, not a file");
  std::ifstream file(path, std::ios::binary);
  if (!file) throw FormatError(path + ": cannot open the file");
  try {  // libstdc++ reports some read errors (EIO, EISDIR) by throwing
    std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    if (file.bad()) throw FormatError(path + ": cannot read the file");
    return bytes;
  } catch (const std::ios_base::failure& e) {
    throw FormatError(path + ": cannot read the file (" + e.what() + ")");
  }
}

Model load(std::vector<uint8_t> bytes, const LoadOptions& options, const std::string& label) {
  if (options.backend != Backend::kAuto && options.backend != Backend::kSparse &&
      options.backend != Backend::kDense)
    throw FormatError("unknown backend");
  NpzReader npz(std::move(bytes), label, options.max_bytes);
  if (!npz.contains("__sparsenet__"))
    throw FormatError(label + ": no '__sparsenet__' graph, so this is not a sparsenet model file");
  const NpyArray raw = npz.read("__sparsenet__", "S", "", kMaxGraphBytes);
  if (!raw.shape.empty())
    throw FormatError(label + ": key '__sparsenet__' must be one string, got shape " + shape_to_string(raw.shape));
  const Json graph = parse_json(raw.to_string(), label + ": key '__sparsenet__'");
  const Json* format = graph.find("format");
  if (format == nullptr || format->type != Json::Type::kString || format->string != "sparsenet")
    throw FormatError(label + ": key '__sparsenet__' is not a sparsenet graph");
  const Json* version = graph.find("version");
  if (version == nullptr || version->type != Json::Type::kNumber || !version->integral ||
      version->integer < 1 || version->integer > kFormatVersion)
    throw FormatError(label + ": format version is not supported (this sparsenet reads versions 1 to " +
                      std::to_string(kFormatVersion) + ")");
  const Json* entries = graph.find("layers");
  if (entries == nullptr || entries->type != Json::Type::kArray || entries->array.empty())
    throw FormatError(label + ": the graph has no layer list");

  uint64_t dense_budget = options.max_bytes;
  std::vector<std::shared_ptr<const Layer>> layers;
  for (size_t i = 0; i < entries->array.size(); ++i) {
    const Json& entry = entries->array[i];
    std::string where = label + ": layer " + std::to_string(i);
    if (entry.type != Json::Type::kObject) throw FormatError(where + ": not an object");
    const std::string name = field(entry, "name", Json::Type::kString, where).string;
    const std::string kind = field(entry, "kind", Json::Type::kString, where).string;
    where += " '" + name + "'";
    layers.push_back(build_layer(npz, entry, kind, name, where, options.backend, dense_budget));
  }
  Shape input_shape;
  const Json* input = graph.find("input_shape");
  if (input != nullptr && input->type != Json::Type::kNull) {
    bool ok = input->type == Json::Type::kArray;
    if (ok)
      for (const Json& d : input->array) {
        ok = ok && d.type == Json::Type::kNumber && d.integral && d.integer > 0 && d.integer < kMaxDim;
        if (ok) input_shape.push_back(d.integer);
      }
    if (!ok) throw FormatError(label + ": input_shape is not a list of positive ints");
  }
  const Json* name = graph.find("name");
  return Model(std::move(layers), name && name->type == Json::Type::kString ? name->string : "",
               std::move(input_shape));
}

}  // namespace

Model load_model(const std::string& path, const LoadOptions& options) {
  return load(read_file(path), options, path);
}

Model load_model_from_memory(const void* data, size_t size, const LoadOptions& options,
                             const std::string& label) {
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  return load(std::vector<uint8_t>(bytes, bytes + size), options, label);
}

Tensor load_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  const NpyArray array = parse_npy(bytes.data(), bytes.size(), path);
  Tensor t;
  t.shape = array.shape;
  if (array.kind == 'f') {
    t.data = array.to_float();
  } else if (array.kind == 'i' || array.kind == 'u') {
    const std::vector<int64_t> values = array.to_int64();
    t.data.assign(values.begin(), values.end());
  } else {
    throw FormatError(path + ": expected a numeric array");
  }
  return t;
}

void save_npy(const std::string& path, const Tensor& tensor) {
  size_t elements = 1;
  for (int64_t d : tensor.shape) {
    if (d < 0) throw ShapeError(path + ": tensor shape " + shape_to_string(tensor.shape) + " has a negative size");
    elements *= static_cast<size_t>(d);
  }
  if (elements != tensor.data.size())
    throw ShapeError(path + ": tensor shape " + shape_to_string(tensor.shape) + " needs " + std::to_string(elements) +
                     " floats but it holds " + std::to_string(tensor.data.size()));
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < tensor.shape.size(); ++i)
    header += std::to_string(tensor.shape[i]) + (tensor.shape.size() == 1 || i + 1 < tensor.shape.size() ? ", " : "");
  header += "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream file(path, std::ios::binary);
  if (!file) throw FormatError(path + ": cannot open for writing");
  const uint16_t len = static_cast<uint16_t>(header.size());
  file.write("\x93NUMPY\x01\x00", 8);
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  file.write(len_bytes, 2);
  file.write(header.data(), static_cast<std::streamsize>(header.size()));
  file.write(reinterpret_cast<const char*>(tensor.data.data()),
             static_cast<std::streamsize>(tensor.data.size() * sizeof(float)));
  if (!file) throw FormatError(path + ": write failed");
}

}  // namespace sparsenet
