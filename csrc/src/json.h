// A small strict JSON parser for the model graph (no dependencies).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sparsenet {

struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  double number = 0.0;
  bool integral = false;   // a number written without fraction or exponent that fits int64
  int64_t integer = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  const Json* find(const std::string& key) const;  // nullptr when absent or not an object
};

// Throws FormatError("<where>: ...") on malformed input or nesting deeper than 64.
Json parse_json(const std::string& text, const std::string& where);

}  // namespace sparsenet
