// What binds the 3-wide direct convolution's inner loop on this CPU: FMAs or
// loads. Without PMU counters (VMs seldom expose them) this is how to tell.
//
// f32_conv3_{avx512,avx2}.cc run, per output channel, tile and input-channel
// panel, the entries of its weights: one kernel row (c, i) each, its input
// run loaded once (T vectors, aligned) for the one to three kernel columns
// it holds. An entry holding one column does one FMA per vector loaded; one
// holding two columns does two. This probe times those two loop shapes alone
// (random aligned offsets into an input panel, 128 rows of 40 entries) next
// to the core's FMA peak (12 independent chains on registers), for zmm (where
// the CPU has AVX-512F) and ymm vectors, and prints useful GFLOP/s and the
// share of the peak.
//
//   g++ -O3 bench/probes/conv3_loop.cc -o /tmp/conv3_loop && /tmp/conv3_loop
//
// Zen 5 (EPYC, 2 vCPUs, 48 KiB L1d), one thread, 2026-12-02: zmm peak 227-231
// GFLOP/s; one-column entries 130-133 (57-59 %) at T = 4 (the 64-position
// tile) and 148-153 (65-67 %) at T = 8 (two tiles at once); two-column
// entries 171-177 (75-78 %). ymm peak 116-118; one-column 91-94 (79-80 %),
// two-column 102-105 (87-89 %). So the zmm loop is bound by loads (about 1.2
// zmm loads per cycle reach it; two entries per iteration in eight chains ran
// no faster, so not by FMA latency), and the ymm one nearly by FMAs. Numbers
// move 10-15 % between runs on a shared host: compare within one run.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

constexpr size_t kRows = 128, kEntries = 40;  // per row; a panel of VGG's conv2_2 at Han's 36 %

double seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Fastest of 15 repetitions of 100 calls, in seconds per call.
template <typename F>
double time_of(F&& f) {
  for (int i = 0; i < 20; ++i) f();
  double best = 1e300;
  for (int rep = 0; rep < 15; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 100; ++i) f();
    best = std::min(best, seconds(start) / 100);
  }
  return best;
}

#define ZMM __attribute__((target("avx512f,fma"), noinline))
#define YMM __attribute__((target("avx2,fma"), noinline))

// FMA peak: 12 chains of a = a * b + c, register operands only.
ZMM double peak_zmm(long n) {
  __m512 a0 = _mm512_set1_ps(0.1f), a1 = _mm512_set1_ps(0.2f), a2 = _mm512_set1_ps(0.3f), a3 = _mm512_set1_ps(0.4f),
         a4 = _mm512_set1_ps(0.5f), a5 = _mm512_set1_ps(0.6f), a6 = _mm512_set1_ps(0.7f), a7 = _mm512_set1_ps(0.8f),
         a8 = _mm512_set1_ps(0.9f), a9 = _mm512_set1_ps(1.0f), a10 = _mm512_set1_ps(1.1f), a11 = _mm512_set1_ps(1.2f);
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
  const auto start = std::chrono::steady_clock::now();
  for (long k = 0; k < n; ++k) {
#define STEP(x) x = _mm512_fmadd_ps(x, b, c);
    STEP(a0) STEP(a1) STEP(a2) STEP(a3) STEP(a4) STEP(a5) STEP(a6) STEP(a7) STEP(a8) STEP(a9) STEP(a10) STEP(a11)
#undef STEP
    __asm__ volatile("" : "+v"(a0), "+v"(a6));
  }
  const double s = seconds(start);
  const __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                   _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)),
                                                 _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11))));
  float lanes[16];
  _mm512_storeu_ps(lanes, sum);
  if (lanes[0] == 0.0f) std::puts("");  // keeps the chains live
  return 2.0 * 16 * 12 * static_cast<double>(n) / s / 1e9;
}

YMM double peak_ymm(long n) {
  __m256 a0 = _mm256_set1_ps(0.1f), a1 = _mm256_set1_ps(0.2f), a2 = _mm256_set1_ps(0.3f), a3 = _mm256_set1_ps(0.4f),
         a4 = _mm256_set1_ps(0.5f), a5 = _mm256_set1_ps(0.6f), a6 = _mm256_set1_ps(0.7f), a7 = _mm256_set1_ps(0.8f),
         a8 = _mm256_set1_ps(0.9f), a9 = _mm256_set1_ps(1.0f), a10 = _mm256_set1_ps(1.1f), a11 = _mm256_set1_ps(1.2f);
  const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
  const auto start = std::chrono::steady_clock::now();
  for (long k = 0; k < n; ++k) {
#define STEP(x) x = _mm256_fmadd_ps(x, b, c);
    STEP(a0) STEP(a1) STEP(a2) STEP(a3) STEP(a4) STEP(a5) STEP(a6) STEP(a7) STEP(a8) STEP(a9) STEP(a10) STEP(a11)
#undef STEP
    __asm__ volatile("" : "+x"(a0), "+x"(a6));
  }
  const double s = seconds(start);
  __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)),
                                           _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11))));
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  if (lanes[0] == 0.0f) std::puts("");
  return 2.0 * 8 * 12 * static_cast<double>(n) / s / 1e9;
}

struct Problem {
  const float* w;         // kRows * kEntries weights
  const uint32_t* off;    // kRows * kEntries offsets, multiples of the vector width
  const float* x;         // the panel, 64-byte aligned
  float* y;               // kRows * 2 * 128 floats
};

// One-column entries: per entry one broadcast and T loads, each feeding one FMA.
template <int T>
ZMM void one_column_zmm(const Problem& p) {
  for (size_t r = 0; r < kRows; ++r) {
    __m512 a[T];
    for (int t = 0; t < T; ++t) a[t] = _mm512_setzero_ps();
    const float* w = p.w + r * kEntries;
    const uint32_t* off = p.off + r * kEntries;
    for (size_t e = 0; e < kEntries; ++e) {
      const float* xe = p.x + off[e];
      const __m512 v = _mm512_set1_ps(w[e]);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) a[t] = _mm512_fmadd_ps(v, _mm512_load_ps(xe + 16 * t), a[t]);
    }
    for (int t = 0; t < T; ++t) _mm512_storeu_ps(p.y + r * 256 + 16 * t, a[t]);
  }
}

// Two-column entries: per entry two broadcasts and T loads, each feeding two FMAs.
template <int T>
ZMM void two_column_zmm(const Problem& p) {
  for (size_t r = 0; r < kRows; ++r) {
    __m512 a[T], b[T];
    for (int t = 0; t < T; ++t) a[t] = b[t] = _mm512_setzero_ps();
    const float* w = p.w + r * kEntries;
    const uint32_t* off = p.off + r * kEntries;
    for (size_t e = 0; e + 1 < kEntries; e += 2) {
      const float* xe = p.x + off[e];
      const __m512 va = _mm512_set1_ps(w[e]), vb = _mm512_set1_ps(w[e + 1]);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 xt = _mm512_load_ps(xe + 16 * t);
        a[t] = _mm512_fmadd_ps(va, xt, a[t]);
        b[t] = _mm512_fmadd_ps(vb, xt, b[t]);
      }
    }
    for (int t = 0; t < T; ++t) _mm512_storeu_ps(p.y + r * 256 + 16 * t, _mm512_add_ps(a[t], b[t]));
  }
}

template <int T>
YMM void one_column_ymm(const Problem& p) {
  for (size_t r = 0; r < kRows; ++r) {
    __m256 a[T];
    for (int t = 0; t < T; ++t) a[t] = _mm256_setzero_ps();
    const float* w = p.w + r * kEntries;
    const uint32_t* off = p.off + r * kEntries;
    for (size_t e = 0; e < kEntries; ++e) {
      const float* xe = p.x + off[e];
      const __m256 v = _mm256_broadcast_ss(w + e);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) a[t] = _mm256_fmadd_ps(v, _mm256_load_ps(xe + 8 * t), a[t]);
    }
    for (int t = 0; t < T; ++t) _mm256_storeu_ps(p.y + r * 256 + 8 * t, a[t]);
  }
}

template <int T>
YMM void two_column_ymm(const Problem& p) {
  for (size_t r = 0; r < kRows; ++r) {
    __m256 a[T], b[T];
    for (int t = 0; t < T; ++t) a[t] = b[t] = _mm256_setzero_ps();
    const float* w = p.w + r * kEntries;
    const uint32_t* off = p.off + r * kEntries;
    for (size_t e = 0; e + 1 < kEntries; e += 2) {
      const float* xe = p.x + off[e];
      const __m256 va = _mm256_broadcast_ss(w + e), vb = _mm256_broadcast_ss(w + e + 1);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m256 xt = _mm256_load_ps(xe + 8 * t);
        a[t] = _mm256_fmadd_ps(va, xt, a[t]);
        b[t] = _mm256_fmadd_ps(vb, xt, b[t]);
      }
    }
    for (int t = 0; t < T; ++t) _mm256_storeu_ps(p.y + r * 256 + 8 * t, _mm256_add_ps(a[t], b[t]));
  }
}

struct Panel {
  float* x;
  std::vector<uint32_t> off;
  Panel(size_t kib, size_t run) : x(static_cast<float*>(std::aligned_alloc(64, kib * 1024 + 1024))) {
    for (size_t i = 0; i < (kib * 1024 + 1024) / 4; ++i) x[i] = 1.0f;
    std::mt19937 rng(1);
    const size_t slots = (kib * 1024 / 4 - run) / 16 + 1;  // 64-byte aligned runs inside the panel
    off.resize(kRows * kEntries);
    for (auto& o : off) o = static_cast<uint32_t>(rng() % slots * 16);
  }
  ~Panel() { std::free(x); }
};

void report(const char* what, size_t vector_floats, int t, size_t kib, double peak, void (*f)(const Problem&)) {
  static std::vector<float> w(kRows * kEntries, 0.5f), y(kRows * 256);
  const Panel panel(kib, vector_floats * t);
  const Problem p{w.data(), panel.off.data(), panel.x, y.data()};
  const double gflops = 2.0 * kRows * kEntries * vector_floats * t / time_of([&] { f(p); }) / 1e9;
  std::printf("  %-34s T=%d  panel %2zu KiB  %6.1f GFLOP/s  %3.0f %% of peak\n", what, t, kib, gflops,
              100.0 * gflops / peak);
}

}  // namespace

int main() {
  __builtin_cpu_init();
  const long n = 100000000;
  if (__builtin_cpu_supports("avx512f")) {
    const double peak = peak_zmm(n);
    std::printf("zmm FMA peak %.1f GFLOP/s\n", peak);
    for (size_t kib : {16, 32}) {
      report("one-column entries (1 load : 1 FMA)", 16, 4, kib, peak, one_column_zmm<4>);
      report("one-column entries (1 load : 1 FMA)", 16, 8, kib, peak, one_column_zmm<8>);
      report("two-column entries (1 load : 2 FMA)", 16, 4, kib, peak, two_column_zmm<4>);
    }
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    const double peak = peak_ymm(n);
    std::printf("ymm FMA peak %.1f GFLOP/s\n", peak);
    for (size_t kib : {16, 32}) {
      report("one-column entries (1 load : 1 FMA)", 8, 8, kib, peak, one_column_ymm<8>);
      report("two-column entries (1 load : 2 FMA)", 8, 4, kib, peak, two_column_ymm<4>);
    }
  }
  return 0;
}
