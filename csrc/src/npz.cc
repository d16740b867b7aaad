#include "npz.h"

#include <cstring>
#include <limits>

#include "inflate.h"
#include "sparsenet/errors.h"

namespace sparsenet {
namespace {

constexpr uint64_t kMaxDeflateRatio = 1100;  // deflate cannot expand data by more than ~1032:1
constexpr int64_t kMaxElements = int64_t{1} << 40;

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string shape_text(const Shape& shape) { return shape_to_string(shape); }

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> NpyArray::to_float() const {
  const size_t n = static_cast<size_t>(numel());
  std::vector<float> out(n);
  if (kind == 'f' && itemsize == 4) {
    std::memcpy(out.data(), bytes.data(), n * 4);
  } else if (kind == 'f' && itemsize == 8) {
    for (size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, bytes.data() + 8 * i, 8);
      out[i] = static_cast<float>(v);
    }
  } else {
    throw FormatError("float array expected");
  }
  return out;
}

std::vector<int64_t> NpyArray::to_int64() const {
  const size_t n = static_cast<size_t>(numel());
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = bytes.data() + itemsize * i;
    const uint64_t raw = le(p, static_cast<int>(itemsize));
    if (kind == 'u') {
      if (raw > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw FormatError("an index is beyond int64");
      out[i] = static_cast<int64_t>(raw);
    } else {  // sign-extend
      const int shift = 64 - 8 * static_cast<int>(itemsize);
      out[i] = static_cast<int64_t>(raw << shift) >> shift;
    }
  }
  return out;
}

std::string NpyArray::to_string() const {
  std::string s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const size_t end = s.find_last_not_of('\0');  // numpy pads with NULs and strips them at the end only
  return end == std::string::npos ? std::string() : s.substr(0, end + 1);
}

NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& where) {
  if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0)
    throw FormatError(where + ": not a .npy array (bad magic)");
  const int major = data[6];
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<size_t>(le(data + 8, 2));
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw FormatError(where + ": truncated .npy header");
    header_len = static_cast<size_t>(le(data + 8, 4));
    offset = 12;
  } else {
    throw FormatError(where + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_len > 65536 || offset + header_len > size)
    throw FormatError(where + ": truncated or oversized .npy header");
  const std::string header(reinterpret_cast<const char*>(data + offset), header_len);
  const auto field = [&](const char* name) -> size_t {
    const size_t at = header.find(std::string("'") + name + "':");
    if (at == std::string::npos) throw FormatError(where + ": .npy header lacks '" + name + "'");
    size_t p = at + std::strlen(name) + 3;
    while (p < header.size() && header[p] == ' ') ++p;
    return p;
  };

  NpyArray array;
  size_t p = field("descr");
  if (p >= header.size() || header[p] != '\'') throw FormatError(where + ": bad .npy descr");
  const size_t close = header.find('\'', p + 1);
  if (close == std::string::npos) throw FormatError(where + ": bad .npy descr");
  const std::string descr = header.substr(p + 1, close - p - 1);
  if (descr.size() < 3 || (descr[0] != '<' && descr[0] != '|' && descr[0] != '='))
    throw FormatError(where + ": dtype '" + descr + "' is not allowed here (object arrays, "
                      "pickles, structured and big-endian dtypes are refused)");
  array.kind = descr[1];
  size_t itemsize = 0;
  for (size_t i = 2; i < descr.size(); ++i) {
    if (descr[i] < '0' || descr[i] > '9' || itemsize > 1000000)
      throw FormatError(where + ": dtype '" + descr + "' is not allowed here");
    itemsize = itemsize * 10 + static_cast<size_t>(descr[i] - '0');
  }
  const bool numeric = (array.kind == 'f' && (itemsize == 4 || itemsize == 8)) ||
                       ((array.kind == 'i' || array.kind == 'u') &&
                        (itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8));
  if (!numeric && !(array.kind == 'S' && itemsize >= 1))
    throw FormatError(where + ": dtype '" + descr + "' is not allowed here");
  array.itemsize = itemsize;

  p = field("fortran_order");
  const bool fortran = header.compare(p, 4, "True") == 0;
  if (!fortran && header.compare(p, 5, "False") != 0)
    throw FormatError(where + ": bad .npy fortran_order");

  p = field("shape");
  if (p >= header.size() || header[p] != '(') throw FormatError(where + ": bad .npy shape");
  ++p;
  int64_t total = 1;
  for (;;) {
    while (p < header.size() && (header[p] == ' ' || header[p] == ',')) ++p;
    if (p >= header.size()) throw FormatError(where + ": bad .npy shape");
    if (header[p] == ')') break;
    int64_t d = 0;
    if (header[p] < '0' || header[p] > '9') throw FormatError(where + ": bad .npy shape");
    while (p < header.size() && header[p] >= '0' && header[p] <= '9') {
      if (d > kMaxElements) throw FormatError(where + ": absurd .npy shape");
      d = d * 10 + (header[p++] - '0');
    }
    if (d != 0 && total > kMaxElements / d) throw FormatError(where + ": absurd .npy shape");
    total *= d;
    array.shape.push_back(d);
  }
  if (fortran && array.shape.size() > 1)
    throw FormatError(where + ": Fortran-order arrays are not supported");
  const uint64_t nbytes = static_cast<uint64_t>(total) * itemsize;
  const size_t data_offset = offset + header_len;
  if (data_offset + nbytes != size)
    throw FormatError(where + ": header declares shape " + shape_text(array.shape) + " (" +
                      std::to_string(nbytes) + " bytes) but the member holds " +
                      std::to_string(size - data_offset) + " data bytes");
  array.bytes.assign(data + data_offset, data + size);
  return array;
}

NpzReader::NpzReader(std::vector<uint8_t> archive, std::string label, uint64_t max_bytes)
    : archive_(std::move(archive)), label_(std::move(label)), max_bytes_(max_bytes) {
  const uint8_t* d = archive_.data();
  const size_t n = archive_.size();
  const std::string bad = label_ + ": not a readable .npz (zip) file: ";
  if (n < 22) throw FormatError(bad + "too short");
  // End of central directory: the last 22+ bytes, before a comment of up to 64 KiB.
  size_t eocd = std::string::npos;
  for (size_t i = n - 22 + 1; i-- > 0 && n - i <= 22 + 65535;) {
    if (le(d + i, 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd == std::string::npos) throw FormatError(bad + "no end-of-central-directory record");
  uint64_t entries = le(d + eocd + 10, 2);
  uint64_t cd_size = le(d + eocd + 12, 4);
  uint64_t cd_offset = le(d + eocd + 16, 4);
  if (entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    if (eocd < 20 || le(d + eocd - 20, 4) != 0x07064b50) throw FormatError(bad + "bad zip64 locator");
    const uint64_t z = le(d + eocd - 20 + 8, 8);
    if (z > n || n - z < 56 || le(d + z, 4) != 0x06064b50) throw FormatError(bad + "bad zip64 record");
    entries = le(d + z + 32, 8);
    cd_size = le(d + z + 40, 8);
    cd_offset = le(d + z + 48, 8);
  }
  if (cd_offset > n || cd_size > n - cd_offset) throw FormatError(bad + "central directory out of bounds");
  size_t p = static_cast<size_t>(cd_offset);
  const size_t end = static_cast<size_t>(cd_offset + cd_size);
  for (uint64_t e = 0; e < entries; ++e) {
    if (end - p < 46 || le(d + p, 4) != 0x02014b50) throw FormatError(bad + "corrupt central directory");
    Member m;
    m.flags = static_cast<uint16_t>(le(d + p + 8, 2));
    m.method = static_cast<uint16_t>(le(d + p + 10, 2));
    m.crc = static_cast<uint32_t>(le(d + p + 16, 4));
    m.compressed_size = le(d + p + 20, 4);
    m.size = le(d + p + 24, 4);
    const size_t name_len = static_cast<size_t>(le(d + p + 28, 2));
    const size_t extra_len = static_cast<size_t>(le(d + p + 30, 2));
    const size_t comment_len = static_cast<size_t>(le(d + p + 32, 2));
    m.local_offset = le(d + p + 42, 4);
    if (end - p - 46 < name_len + extra_len + comment_len) throw FormatError(bad + "corrupt central directory");
    const std::string name(reinterpret_cast<const char*>(d + p + 46), name_len);
    // zip64 extra field: the 8-byte values of whichever fields were saturated.
    size_t x = p + 46 + name_len;
    const size_t x_end = x + extra_len;
    while (x_end - x >= 4) {
      const uint64_t id = le(d + x, 2), len = le(d + x + 2, 2);
      if (len > x_end - x - 4) break;
      if (id == 0x0001) {
        size_t q = x + 4;
        const size_t q_end = q + static_cast<size_t>(len);
        if (m.size == 0xffffffff && q_end - q >= 8) m.size = le(d + q, 8), q += 8;
        if (m.compressed_size == 0xffffffff && q_end - q >= 8) m.compressed_size = le(d + q, 8), q += 8;
        if (m.local_offset == 0xffffffff && q_end - q >= 8) m.local_offset = le(d + q, 8), q += 8;
      }
      x += 4 + static_cast<size_t>(len);
    }
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0)
      members_[name.substr(0, name.size() - 4)] = m;
    p += 46 + name_len + extra_len + comment_len;
  }
}

std::vector<std::string> NpzReader::keys() const {
  std::vector<std::string> out;
  for (const auto& kv : members_) out.push_back(kv.first);
  return out;
}

NpyArray NpzReader::read(const std::string& key, const std::string& kinds,
                         const std::string& context, uint64_t limit) {
  const std::string where = label_ + ": " + (context.empty() ? "" : context + " ") + "key '" + key + "'";
  const auto it = members_.find(key);
  if (it == members_.end()) {
    std::string list;
    for (const auto& kv : members_) list += (list.empty() ? "" : ", ") + kv.first;
    throw FormatError(where + ": missing from the file (keys: " + (list.empty() ? "none" : list) + ")");
  }
  const Member& m = it->second;
  if (m.flags & 1) throw FormatError(where + ": encrypted zip members are not supported");
  if (m.method != 0 && m.method != 8)
    throw FormatError(where + ": unsupported zip compression method " + std::to_string(m.method));
  if (m.method == 8 && m.size > kMaxDeflateRatio * m.compressed_size + 4096)
    throw FormatError(where + ": declares " + std::to_string(m.size) + " bytes from " +
                      std::to_string(m.compressed_size) + " compressed bytes, more than deflate can produce");
  if (m.method == 0 && m.size != m.compressed_size)
    throw FormatError(where + ": stored member sizes disagree");
  if (limit != 0 && m.size > limit)
    throw FormatError(where + ": " + std::to_string(m.size) + " bytes, more than the " +
                      std::to_string(limit) + " this key may hold");
  if (bytes_read_ + m.size > max_bytes_)
    throw FormatError(where + ": reading " + std::to_string(m.size) +
                      " bytes would exceed the load limit of " + std::to_string(max_bytes_) +
                      " bytes (max_bytes)");
  const uint8_t* d = archive_.data();
  const size_t n = archive_.size();
  if (m.local_offset > n || n - m.local_offset < 30 || le(d + m.local_offset, 4) != 0x04034b50)
    throw FormatError(where + ": corrupt or truncated: bad local header");
  const uint64_t start = m.local_offset + 30 + le(d + m.local_offset + 26, 2) + le(d + m.local_offset + 28, 2);
  if (start > n || m.compressed_size > n - start)
    throw FormatError(where + ": corrupt or truncated: member data runs past the end of the file");
  std::vector<uint8_t> inflated;
  const uint8_t* raw = d + start;
  if (m.method == 8) {
    inflated = inflate_raw(raw, static_cast<size_t>(m.compressed_size), static_cast<size_t>(m.size), where);
    raw = inflated.data();
  }
  if (crc32(raw, static_cast<size_t>(m.size)) != m.crc)
    throw FormatError(where + ": corrupt or truncated: CRC-32 mismatch");
  NpyArray array = parse_npy(raw, static_cast<size_t>(m.size), where);
  if (kinds.find(array.kind) == std::string::npos)
    throw FormatError(where + ": dtype kind '" + std::string(1, array.kind) +
                      "' is not allowed here (expected kinds '" + kinds + "')");
  bytes_read_ += m.size;
  return array;
}

}  // namespace sparsenet
