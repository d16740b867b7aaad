// A small fork-join pool for kernel parallelism.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "sparsenet/function_ref.h"

namespace sparsenet {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // the caller counts as one of num_threads
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task, worker) for every task in [0, num_tasks), worker in
  // [0, num_threads()), and returns when all are done. When the pool is
  // already serving another caller (concurrent forward passes) or is called
  // from one of its own workers, the tasks run inline on the caller as worker 0:
  // never a deadlock, never oversubscription.
  void parallel_for(size_t num_tasks, FunctionRef<void(size_t, size_t)> fn);

  // How long a worker keeps polling for the next job, and the caller for the
  // workers to finish, before sleeping on a condition variable. A forward pass
  // calls parallel_for once per layer, often microseconds apart: a futex
  // wake-up per layer cost more than small layers take (LeNet-5 at batch 1
  // ran slower on 2 threads than on 1), as in OpenMP runtimes and pthreadpool.
  static constexpr double kSpinSeconds = 100e-6;

 private:
  void worker_loop(size_t worker);
  void run_tasks(size_t worker);

  std::vector<std::thread> workers_;
  std::mutex busy_;  // held by the caller that owns the pool for one parallel_for
  // The job: written by the caller before it publishes a new generation_
  // (release), read by workers after they see it (acquire).
  const FunctionRef<void(size_t, size_t)>* job_ = nullptr;
  size_t num_tasks_ = 0;
  std::atomic<size_t> next_task_{0};
  std::atomic<size_t> active_{0};  // workers that have not finished the current job
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  // Sleeping, after the spin: workers wait on wake_, the caller on done_.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::exception_ptr error_;  // under mutex_
};

// The process-wide pool sized by set_num_threads(); callers keep the returned
// pointer for the duration of one forward pass.
std::shared_ptr<ThreadPool> current_pool();

}  // namespace sparsenet
