// std::vector storage aligned to 64 bytes (a cache line, one zmm register), for
// arrays that kernels read with full-width vector loads: a 64-byte load that
// straddles two lines costs two (Zen 5: aligned zmm loads issue at 2 per
// cycle, straddling ones at 1).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace sparsenet {

template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::size_t kAlignment = 64;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kAlignment)));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(kAlignment)); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const noexcept { return false; }
};

template <typename T>
using CacheLineVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace sparsenet
