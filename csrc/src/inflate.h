// Raw DEFLATE (RFC 1951) decoding and CRC-32, for deflate-compressed .npz
// members, with no external compression library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sparsenet {

// Decodes the raw deflate stream in[0, size) into exactly `expected_size`
// bytes. Throws FormatError (prefixed with `context`) for a malformed or
// truncated stream, or one that decodes to any other length.
std::vector<uint8_t> inflate_raw(const uint8_t* in, size_t size, size_t expected_size,
                                 const std::string& context);

uint32_t crc32(const uint8_t* data, size_t size);

}  // namespace sparsenet
