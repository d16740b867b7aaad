#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

#include "blas.h"
#include "sparsenet/runtime.h"

namespace sparsenet {
namespace {

thread_local bool tls_in_pool_worker = false;

// A bounded busy-wait: expired() yields the CPU and says when
// ThreadPool::kSpinSeconds have passed (the clock is read every 64 polls).
// Yielding rather than pausing matters when the scheduler has put a spinning
// thread on the same CPU as the thread it waits for (as it does for a while
// after a pool starts): a pause loop then eats that thread's time slices.
// Measured with LeNet-5 at batch 1 on 2 vCPUs: the first few hundred calls of
// a process took 600-680 us with pause and 100-120 us with yield; afterwards,
// both 70 us.
class Spin {
 public:
  bool expired() {
    std::this_thread::yield();
    if (++polls_ % 64 != 0) return false;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count() >
           ThreadPool::kSpinSeconds;
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  uint32_t polls_ = 0;
};

int default_num_threads() {
  if (const char* env = std::getenv("SPARSENET_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return std::min(n, kMaxThreads);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(std::min<unsigned>(hw, kMaxThreads));
}

std::mutex g_pool_mutex;
std::shared_ptr<ThreadPool> g_pool;

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_tasks(size_t worker) {
  for (;;) {
    const size_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= num_tasks_) return;
    try {
      (*job_)(task, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      next_task_.store(num_tasks_, std::memory_order_relaxed);  // the others stop claiming
    }
  }
}

void ThreadPool::worker_loop(size_t worker) {
  tls_in_pool_worker = true;
  uint64_t seen = 0;
  for (;;) {
    // Poll for the next generation for up to kSpinSeconds, then sleep.
    uint64_t now = generation_.load(std::memory_order_acquire);
    for (Spin spin; now == seen && !stop_.load(std::memory_order_relaxed);
         now = generation_.load(std::memory_order_acquire)) {
      if (spin.expired()) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      }
    }
    if (stop_.load()) return;
    seen = now;
    run_tasks(worker);
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);  // the caller checks active_ under it
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(size_t num_tasks, FunctionRef<void(size_t, size_t)> fn) {
  if (num_tasks == 0) return;
  std::unique_lock<std::mutex> owner(busy_, std::defer_lock);
  if (workers_.empty() || num_tasks == 1 || tls_in_pool_worker || !owner.try_lock()) {
    for (size_t t = 0; t < num_tasks; ++t) fn(t, 0);
    return;
  }
  job_ = &fn;
  num_tasks_ = num_tasks;
  error_ = nullptr;  // no worker is running: the last job's active_ reached 0
  next_task_.store(0, std::memory_order_relaxed);
  active_.store(workers_.size(), std::memory_order_relaxed);
  {
    // Under the mutex, so a worker between its check and its wait cannot miss it.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();  // no system call when nobody sleeps
  run_tasks(0);
  for (Spin spin; active_.load(std::memory_order_acquire) != 0;) {
    if (spin.expired()) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return active_.load(std::memory_order_acquire) == 0; });
    }
  }
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;
    error = error_;
  }
  if (error) std::rethrow_exception(error);
}

std::shared_ptr<ThreadPool> current_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) {
    const int n = default_num_threads();
    g_pool = std::make_shared<ThreadPool>(n);
    blas_set_num_threads(1);  // BLAS calls are made from the pool's workers, one thread each
  }
  return g_pool;
}

void set_num_threads(int num_threads) {
  if (num_threads < 1 || num_threads > kMaxThreads)
    throw std::invalid_argument("set_num_threads: need 1 to " + std::to_string(kMaxThreads) + " threads, got " +
                                std::to_string(num_threads));
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool || g_pool->num_threads() != num_threads)
    g_pool = std::make_shared<ThreadPool>(num_threads);
  blas_set_num_threads(1);
}

int get_num_threads() { return current_pool()->num_threads(); }

}  // namespace sparsenet
