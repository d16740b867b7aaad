// Process-wide runtime settings: threads and instruction-set selection.
#pragma once

#include <string>

namespace sparsenet {

enum class Isa { kScalar, kAvx2 };

// Number of threads used by sparse kernels and by the BLAS together. At start
// it is SPARSENET_NUM_THREADS if set, else the number of hardware threads (at
// most kMaxThreads either way). set_num_threads throws std::invalid_argument
// outside [1, kMaxThreads]: each thread is a real worker with its own stack.
constexpr int kMaxThreads = 1024;
void set_num_threads(int num_threads);
int get_num_threads();

// The instruction set that layers built from now on use. Detected once from the
// CPU; SPARSENET_ISA=scalar|avx2 in the environment forces one (asking for avx2
// on a CPU without AVX2+FMA throws FormatError naming the variable).
Isa active_isa();
bool cpu_has_avx2_fma();
const char* isa_name(Isa isa);

// Human-readable name and version of the BLAS linked for the dense path.
std::string blas_info();

}  // namespace sparsenet
