// A canonical-Huffman inflater after Mark Adler's puff.c (the zlib reference
// decoder): bit-by-bit decoding, every length and distance checked.
#include "inflate.h"

#include <array>

#include "sparsenet/errors.h"

namespace sparsenet {
namespace {

constexpr int kMaxBits = 15;

struct Huffman {
  std::array<uint16_t, kMaxBits + 1> count{};
  std::array<uint16_t, 288> symbol{};
};

class Inflater {
 public:
  Inflater(const uint8_t* in, size_t size, size_t expected, const std::string& context)
      : in_(in), size_(size), expected_(expected), context_(context) {
    out_.reserve(expected);
  }

  std::vector<uint8_t> run() {
    bool last = false;
    while (!last) {
      last = bits(1) != 0;
      switch (bits(2)) {
        case 0: stored(); break;
        case 1: fixed(); break;
        case 2: dynamic(); break;
        default: fail("invalid block type");
      }
    }
    if (out_.size() != expected_)
      fail("decoded " + std::to_string(out_.size()) + " bytes, the header declares " +
           std::to_string(expected_));
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(context_ + ": corrupt deflate data: " + what);
  }

  int bits(int need) {
    uint32_t value = bit_buffer_;
    while (bit_count_ < need) {
      if (pos_ == size_) fail("unexpected end of stream");
      value |= static_cast<uint32_t>(in_[pos_++]) << bit_count_;
      bit_count_ += 8;
    }
    bit_buffer_ = value >> need;
    bit_count_ -= need;
    return static_cast<int>(value & ((1u << need) - 1));
  }

  void put(uint8_t byte) {
    if (out_.size() == expected_) fail("more output than the header declares");
    out_.push_back(byte);
  }

  void stored() {
    bit_buffer_ = 0;
    bit_count_ = 0;
    if (size_ - pos_ < 4) fail("truncated stored block");
    const unsigned len = in_[pos_] | (in_[pos_ + 1] << 8);
    const unsigned nlen = in_[pos_ + 2] | (in_[pos_ + 3] << 8);
    pos_ += 4;
    if (len != (~nlen & 0xffffu)) fail("stored block length check");
    if (size_ - pos_ < len) fail("truncated stored block");
    if (expected_ - out_.size() < len) fail("more output than the header declares");
    out_.insert(out_.end(), in_ + pos_, in_ + pos_ + len);
    pos_ += len;
  }

  int decode(const Huffman& h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= kMaxBits; ++len) {
      code |= bits(1);
      const int count = h.count[len];
      if (code - count < first) return h.symbol[index + (code - first)];
      index += count;
      first += count;
      first <<= 1;
      code <<= 1;
    }
    fail("invalid Huffman code");
  }

  // Returns 0 for a complete code, > 0 for an incomplete one, < 0 if over-subscribed.
  static int construct(Huffman& h, const uint16_t* length, int n) {
    h.count.fill(0);
    for (int s = 0; s < n; ++s) h.count[length[s]]++;
    if (h.count[0] == n) return 0;
    int left = 1;
    for (int len = 1; len <= kMaxBits; ++len) {
      left <<= 1;
      left -= h.count[len];
      if (left < 0) return left;
    }
    std::array<uint16_t, kMaxBits + 1> offs{};
    for (int len = 1; len < kMaxBits; ++len) offs[len + 1] = offs[len] + h.count[len];
    for (int s = 0; s < n; ++s)
      if (length[s] != 0) h.symbol[offs[length[s]]++] = static_cast<uint16_t>(s);
    return left;
  }

  void codes(const Huffman& lencode, const Huffman& distcode) {
    static const uint16_t kLengthBase[29] = {3,  4,  5,  6,  7,  8,  9,  10,  11,  13,
                                             15, 17, 19, 23, 27, 31, 35, 43,  51,  59,
                                             67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const uint8_t kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                             2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const uint16_t kDistBase[30] = {1,    2,    3,    4,    5,    7,     9,     13,
                                           17,   25,   33,   49,   65,   97,    129,   193,
                                           257,  385,  513,  769,  1025, 1537,  2049,  3073,
                                           4097, 6145, 8193, 12289, 16385, 24577};
    static const uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                           6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    for (;;) {
      int symbol = decode(lencode);
      if (symbol < 256) {
        put(static_cast<uint8_t>(symbol));
      } else if (symbol == 256) {
        return;
      } else {
        symbol -= 257;
        if (symbol >= 29) fail("invalid length symbol");
        const size_t len = kLengthBase[symbol] + bits(kLengthExtra[symbol]);
        symbol = decode(distcode);
        if (symbol >= 30) fail("invalid distance symbol");
        const size_t dist = kDistBase[symbol] + bits(kDistExtra[symbol]);
        if (dist > out_.size()) fail("distance too far back");
        if (expected_ - out_.size() < len) fail("more output than the header declares");
        const size_t from = out_.size() - dist;
        for (size_t i = 0; i < len; ++i) out_.push_back(out_[from + i]);
      }
    }
  }

  void fixed() {
    static Huffman lencode, distcode;
    static const bool built = [] {
      uint16_t lengths[288];
      int s = 0;
      for (; s < 144; ++s) lengths[s] = 8;
      for (; s < 256; ++s) lengths[s] = 9;
      for (; s < 280; ++s) lengths[s] = 7;
      for (; s < 288; ++s) lengths[s] = 8;
      construct(lencode, lengths, 288);
      for (s = 0; s < 30; ++s) lengths[s] = 5;
      construct(distcode, lengths, 30);
      return true;
    }();
    (void)built;
    codes(lencode, distcode);
  }

  void dynamic() {
    static const uint8_t kOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint16_t lengths[320] = {};
    const int nlen = bits(5) + 257;
    const int ndist = bits(5) + 1;
    const int ncode = bits(4) + 4;
    if (nlen > 286 || ndist > 30) fail("bad code counts");
    for (int i = 0; i < ncode; ++i) lengths[kOrder[i]] = static_cast<uint16_t>(bits(3));
    Huffman lencode, distcode;
    if (construct(lencode, lengths, 19) != 0) fail("incomplete code-length code");
    int index = 0;
    while (index < nlen + ndist) {
      int symbol = decode(lencode);
      if (symbol < 16) {
        lengths[index++] = static_cast<uint16_t>(symbol);
        continue;
      }
      uint16_t len = 0;
      if (symbol == 16) {
        if (index == 0) fail("repeat with no previous length");
        len = lengths[index - 1];
        symbol = 3 + bits(2);
      } else if (symbol == 17) {
        symbol = 3 + bits(3);
      } else {
        symbol = 11 + bits(7);
      }
      if (index + symbol > nlen + ndist) fail("too many lengths");
      while (symbol--) lengths[index++] = len;
    }
    if (lengths[256] == 0) fail("no end-of-block code");
    int err = construct(lencode, lengths, nlen);
    if (err < 0 || (err > 0 && nlen != lencode.count[0] + lencode.count[1]))
      fail("bad literal/length code");
    err = construct(distcode, lengths + nlen, ndist);
    if (err < 0 || (err > 0 && ndist != distcode.count[0] + distcode.count[1]))
      fail("bad distance code");
    codes(lencode, distcode);
  }

  const uint8_t* in_;
  size_t size_;
  size_t pos_ = 0;
  uint32_t bit_buffer_ = 0;
  int bit_count_ = 0;
  size_t expected_;
  const std::string& context_;
  std::vector<uint8_t> out_;
};

}  // namespace

std::vector<uint8_t> inflate_raw(const uint8_t* in, size_t size, size_t expected_size,
                                 const std::string& context) {
  return Inflater(in, size, expected_size, context).run();
}

uint32_t crc32(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

}  // namespace sparsenet
