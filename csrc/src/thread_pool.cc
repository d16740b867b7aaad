#include "thread_pool.h"

#include <cstdlib>
#include <string>

#include "blas.h"
#include "sparsenet/runtime.h"

namespace sparsenet {
namespace {

thread_local bool tls_in_pool_worker = false;

int default_num_threads() {
  if (const char* env = std::getenv("SPARSENET_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
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
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_tasks(size_t worker) {
  for (;;) {
    size_t task;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_task_ >= num_tasks_) return;
      task = next_task_++;
    }
    try {
      (*job_)(task, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      next_task_ = num_tasks_;
    }
  }
}

void ThreadPool::worker_loop(size_t worker) {
  tls_in_pool_worker = true;
  size_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_tasks(worker);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(size_t num_tasks, const std::function<void(size_t, size_t)>& fn) {
  if (num_tasks == 0) return;
  std::unique_lock<std::mutex> owner(busy_, std::defer_lock);
  if (workers_.empty() || num_tasks == 1 || tls_in_pool_worker || !owner.try_lock()) {
    for (size_t t = 0; t < num_tasks; ++t) fn(t, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    num_tasks_ = num_tasks;
    next_task_ = 0;
    active_ = workers_.size();
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  run_tasks(0);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return active_ == 0; });
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
  if (num_threads < 1)
    throw std::invalid_argument("set_num_threads: need at least 1 thread, got " +
                                std::to_string(num_threads));
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool || g_pool->num_threads() != num_threads)
    g_pool = std::make_shared<ThreadPool>(num_threads);
  blas_set_num_threads(1);
}

int get_num_threads() { return current_pool()->num_threads(); }

}  // namespace sparsenet
