// ThreadPool under ThreadSanitizer: thousands of fork-join rounds of varying
// size (workers spinning, and asleep after a pause), exceptions from tasks,
// and concurrent callers (one owns the pool, the others run inline). Built and
// run by tests/sanitize/run.sh; exits non-zero on a wrong result, and TSan
// (halt_on_error=1) on a data race.
#include "thread_pool.h"
#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <thread>
#include <vector>
// thread_pool.cc calls into the BLAS wrapper; this test links without it.
namespace sparsenet { void blas_set_num_threads(int) {} }
using namespace sparsenet;
int main() {
  for (int threads : {2, 3, 4}) {
    ThreadPool pool(threads);
    std::vector<int> data(1000);
    for (int round = 0; round < 3000; ++round) {
      const size_t tasks = 1 + round % 17;
      std::atomic<size_t> sum{0};
      pool.parallel_for(tasks, [&](size_t t, size_t w) {
        data[t] = round;  // distinct slots per task
        sum += t + 1;
        if (w >= static_cast<size_t>(threads)) std::abort();
      });
      for (size_t t = 0; t < tasks; ++t) if (data[t] != round) { std::printf("missed task\n"); return 1; }
      if (sum != tasks * (tasks + 1) / 2) { std::printf("bad sum\n"); return 1; }
      if (round % 500 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));  // workers fall asleep
      if (round % 97 == 0) {
        bool caught = false;
        try { pool.parallel_for(5, [&](size_t t, size_t) { if (t == 3) throw std::runtime_error("x"); }); }
        catch (const std::runtime_error&) { caught = true; }
        if (!caught) { std::printf("lost exception\n"); return 1; }
      }
    }
    // concurrent callers: one owns the pool, the others run inline
    std::vector<std::thread> callers;
    std::atomic<int> done{0};
    for (int c = 0; c < 3; ++c) callers.emplace_back([&] {
      for (int r = 0; r < 300; ++r) { std::atomic<int> n{0}; pool.parallel_for(8, [&](size_t, size_t) { ++n; }); if (n != 8) std::abort(); }
      ++done; });
    for (auto& t : callers) t.join();
  }
  std::printf("ok\n");
}
