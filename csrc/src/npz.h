// A defensive reader for .npz archives (zip of .npy members, stored or
// deflated) and .npy files: sizes are checked against the bytes really present
// and a byte budget before anything is allocated or decompressed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sparsenet/layers.h"

namespace sparsenet {

struct NpyArray {
  char kind = 'f';        // 'f' float, 'i' signed, 'u' unsigned, 'S' bytes, 'b' bool
  size_t itemsize = 4;
  Shape shape;            // may be empty (a 0-d array)
  std::vector<uint8_t> bytes;  // little-endian, C order

  int64_t numel() const;
  std::vector<float> to_float() const;      // kind 'f' (float32 or float64)
  std::vector<int64_t> to_int64() const;    // kinds 'i' / 'u'; throws beyond int64
  std::string to_string() const;            // kind 'S', 0-d
};

// Parses one .npy image. `where` prefixes error messages.
NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& where);

class NpzReader {
 public:
  // `label` names the archive in messages (its path); `max_bytes` caps the
  // total bytes read out of it.
  NpzReader(std::vector<uint8_t> archive, std::string label, uint64_t max_bytes);

  bool contains(const std::string& key) const { return members_.count(key) != 0; }
  std::vector<std::string> keys() const;
  const std::string& label() const { return label_; }
  uint64_t max_bytes() const { return max_bytes_; }

  // The array under `key` (member "key.npy"); `kinds` lists accepted dtype
  // kinds, `limit` (if nonzero) caps this member's size. Throws FormatError.
  NpyArray read(const std::string& key, const std::string& kinds, const std::string& context,
                uint64_t limit = 0);

 private:
  struct Member {
    uint64_t local_offset = 0;
    uint64_t compressed_size = 0;
    uint64_t size = 0;
    uint16_t method = 0;
    uint16_t flags = 0;
    uint32_t crc = 0;
  };
  std::vector<uint8_t> archive_;
  std::string label_;
  uint64_t max_bytes_;
  uint64_t bytes_read_ = 0;
  std::map<std::string, Member> members_;
};

}  // namespace sparsenet
