#include <cstdlib>
#include <string>

#include "kernels.h"
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

const char* isa_name(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "scalar"; }

// Read at every layer construction (cheap), so that a process can build layers
// for both ISAs; a built layer keeps the ISA it was built with.
Isa active_isa() {
  const char* env = std::getenv("SPARSENET_ISA");
  if (env == nullptr || *env == '\0') return cpu_has_avx2_fma() ? Isa::kAvx2 : Isa::kScalar;
  const std::string value(env);
  if (value == "scalar") return Isa::kScalar;
  if (value == "avx2") {
    if (!cpu_has_avx2_fma())
      throw FormatError("SPARSENET_ISA=avx2 but this CPU lacks AVX2+FMA; use SPARSENET_ISA=scalar");
    return Isa::kAvx2;
  }
  throw FormatError("SPARSENET_ISA='" + value + "' is not one of: scalar, avx2");
}

const KernelTable& kernel_table(Isa isa) {
  static const KernelTable scalar{Isa::kScalar, f32_csrmv_u16_scalar, f32_csrmv_u32_scalar,
                                  f32_csrmm_u16_scalar, f32_csrmm_u32_scalar};
  static const KernelTable avx2{Isa::kAvx2, f32_csrmv_u16_avx2, f32_csrmv_u32_avx2,
                                f32_csrmm_u16_avx2, f32_csrmm_u32_avx2};
  if (isa == Isa::kAvx2) {
    if (!cpu_has_avx2_fma()) throw FormatError("the avx2 kernels need a CPU with AVX2+FMA");
    return avx2;
  }
  return scalar;
}

}  // namespace sparsenet
