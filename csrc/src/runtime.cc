#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>  // sysconf
#endif

#include "kernels.h"
#include "sell.h"
#include "sparsenet/errors.h"
#include "sparsenet/runtime.h"

namespace sparsenet {

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512vl() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }();
  return has;
#else
  return false;
#endif
}

bool avx512_kernels_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SPARSENET_AVX512");
    return cpu_has_avx512vl() && !(env != nullptr && std::string(env) == "0");
  }();
  return enabled;
}

const char* isa_name(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "scalar"; }

// Read at every layer construction (cheap), so that a process can build layers
// for both ISAs; a built layer keeps the ISA it was built with.
Isa active_isa() {
  const char* env = std::getenv("SPARSENET_ISA");
  if (env == nullptr || *env == '\0') return cpu_has_avx2_fma() ? Isa::kAvx2 : Isa::kScalar;
  std::string value(env);
  for (char& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));  // AVX2 as avx2
  if (value == "scalar") return Isa::kScalar;
  if (value == "avx2") {
    if (!cpu_has_avx2_fma())
      throw FormatError("SPARSENET_ISA=avx2 but this CPU lacks AVX2+FMA; use SPARSENET_ISA=scalar");
    return Isa::kAvx2;
  }
  throw FormatError("SPARSENET_ISA='" + std::string(env) + "' is not one of: scalar, avx2");
}

const KernelTable& kernel_table(Isa isa) {
  static const KernelTable scalar{Isa::kScalar, f32_csrmv_u16_scalar, f32_csrmv_u32_scalar,
                                  f32_csrmv_u16_scalar, f32_csrmm_u16_scalar, f32_csrmm_u32_scalar,
                                  f32_conv_dense_scalar, f32_maxpool2x2_scalar,
                                  f32_winograd_input_scalar, f32_winograd_output_scalar,
                                  f32_transpose_scalar};
  static const KernelTable avx2{Isa::kAvx2, f32_csrmv_u16_avx2, f32_csrmv_u32_avx2,
                                avx512_kernels_enabled() ? f32_csrmv_u16_l1_avx512 : f32_csrmv_u16_l1_avx2,
                                avx512_kernels_enabled() ? f32_csrmm_u16_avx512 : f32_csrmm_u16_avx2,
                                avx512_kernels_enabled() ? f32_csrmm_u32_avx512 : f32_csrmm_u32_avx2,
                                f32_conv_dense_avx2, f32_maxpool2x2_avx2,
                                f32_winograd_input_avx2, f32_winograd_output_avx2, f32_transpose_avx2,
                                avx512_kernels_enabled() ? f32_conv3_avx512 : f32_conv3_avx2,
                                avx512_kernels_enabled(), avx512_kernels_enabled(), avx512_kernels_enabled(),
                                avx512_kernels_enabled() ? f32_sellmv_avx512 : nullptr,
                                avx512_kernels_enabled() ? f32_conv_dense_avx512 : nullptr};
  if (isa == Isa::kAvx2) {
    if (!cpu_has_avx2_fma()) throw FormatError("the avx2 kernels need a CPU with AVX2+FMA");
    return avx2;
  }
  return scalar;
}

namespace {

// The synthetic matrix both calibrations time: 256x4096 at 10 % (104,704
// nonzeros). A fixed LCG, so that every process measures the same one.
CsrMatrix calibration_matrix() {
  constexpr size_t kRows = 256, kCols = 4096, kPerRow = kCols / 10;
  std::vector<int64_t> row_ptr(kRows + 1), col(kRows * kPerRow);
  std::vector<float> values(col.size(), 0.5f);
  uint32_t state = 12345;
  for (size_t r = 0; r < kRows; ++r) {
    row_ptr[r + 1] = static_cast<int64_t>((r + 1) * kPerRow);
    for (size_t k = 0; k < kPerRow; ++k) {
      state = state * 1664525u + 1013904223u;
      col[r * kPerRow + k] = static_cast<int64_t>(k * 10 + (state >> 16) % 10);
    }
  }
  return CsrMatrix::from_arrays("calibration", kRows, kCols, row_ptr.data(), row_ptr.size(), col.data(),
                                col.size(), values.data(), values.size());
}

// The best of seven calls of run(), after one to warm the caches.
template <typename Run>
double best_of(Run run) {
  run();
  double best = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

bool csrmv_l1_loads_win() {
  static const bool win = [] {
    if (!cpu_has_avx2_fma()) return false;
    const CsrMatrix m = calibration_matrix();
    const CsrRef<uint16_t> a{m.row_ptr().data(), m.col16().data(), m.values().data()};
    const std::vector<float> x(static_cast<size_t>(m.cols()), 1.0f);
    std::vector<float> y(static_cast<size_t>(m.rows()));
    const Epilogue ep{nullptr, false};
    const auto time = [&](CsrmvKernel<uint16_t> kernel) {
      return best_of([&] { kernel(a, x.data(), ep, 0, y.size(), y.data()); });
    };
    const double gather = time(f32_csrmv_u16_avx2);
    return time(kernel_table(Isa::kAvx2).csrmv_u16_l1) < gather;
  }();
  return win;
}

bool sellmv_win() {
  static const bool win = [] {
    if (!cpu_has_avx2_fma() || kernel_table(Isa::kAvx2).sellmv == nullptr) return false;
    const KernelTable& k = kernel_table(Isa::kAvx2);
    const CsrMatrix m = calibration_matrix();
    const SellLayout sell = build_sell(m);
    const CsrRef<uint16_t> a{m.row_ptr().data(), m.col16().data(), m.values().data(), nullptr, false, false};
    const std::vector<float> x(static_cast<size_t>(m.cols()), 1.0f);
    std::vector<float> y(static_cast<size_t>(m.rows()));
    const Epilogue ep{nullptr, false};
    const double csr = best_of([&] { k.csrmv_u16_l1(a, x.data(), ep, 0, y.size(), y.data()); });
    return best_of([&] { k.sellmv(sell_ref(sell, false), x.data(), ep, 0, y.size(), y.data()); }) < csr;
  }();
  return win;
}

bool cpu_full_width_avx512() {
  static const bool full = [] {
    if (!avx512_kernels_enabled()) return false;
    constexpr long kIterations = 4096;  // 49K FMAs, 14-28 us at 3.6 GHz
    volatile float sink = 0.0f;
    const double zmm = best_of([&] { sink = f32_fma_chains_avx512(16, kIterations); });
    const double ymm = best_of([&] { sink = f32_fma_chains_avx512(8, kIterations); });
    // FLOP/s at 16 lanes over FLOP/s at 8: 2 where the widths run at one
    // rate, 1 where 512-bit FMAs take two passes.
    return 2.0 * ymm / zmm > 1.5;
  }();
  return full;
}

namespace {

// The largest data or unified cache of CPU 0 as Linux's sysfs lists it
// (cache/index*/size, "32768K"), 0 where it lists none. A cloud guest may see
// through CPUID (and so through sysconf) the L3 of the whole host socket,
// which no core has: glibc reports 384 MiB on 2 vCPUs of a Zen 5 EPYC whose
// sysfs, like lscpu, lists the 32 MiB its cores share.
size_t sysfs_last_level_cache_bytes() {
  size_t best_level = 0, best_bytes = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_file(dir + "level"), type_file(dir + "type"), size_file(dir + "size");
    size_t level = 0;
    std::string type, size;
    if (!(level_file >> level) || !(type_file >> type) || !(size_file >> size)) continue;
    if (type == "Instruction" || size.empty() || !std::isdigit(static_cast<unsigned char>(size[0]))) continue;
    size_t bytes = std::stoull(size);
    const char unit = size.back();
    bytes *= unit == 'K' ? size_t{1} << 10 : unit == 'M' ? size_t{1} << 20 : unit == 'G' ? size_t{1} << 30 : 1;
    if (level > best_level || (level == best_level && bytes > best_bytes)) {
      best_level = level;
      best_bytes = bytes;
    }
  }
  return best_bytes;
}

}  // namespace

size_t last_level_cache_bytes() {
  static const size_t bytes = [] {
    if (const size_t sysfs = sysfs_last_level_cache_bytes(); sysfs > 0) return sysfs;
    long size = 0;
#if defined(_SC_LEVEL3_CACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    size = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (size <= 0) size = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return size > 0 ? static_cast<size_t>(size) : size_t{0};
  }();
  return bytes;
}

size_t csrmv_stream_bytes() { return last_level_cache_bytes() / 2; }

}  // namespace sparsenet
