#include "runtime/parallel.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

extern "C" void openblas_set_num_threads(int num_threads);

namespace elmo {

namespace {
int g_threads = 0;
}

void set_num_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_threads = threads;
  omp_set_num_threads(threads);
  // OpenBLAS stays single-threaded: its idle workers spin (sched_yield) and fight OpenMP for
  // the cores. cpu_gemm splits large products over OpenMP threads instead.
  openblas_set_num_threads(1);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}


void run_concurrently(int n, const std::function<void(int)>& task) {
  if (n <= 1 || num_threads() <= 1 || omp_in_parallel()) {
    for (int i = 0; i < n; ++i) task(i);
    return;
  }
  std::vector<std::exception_ptr> errors(n);
#pragma omp parallel num_threads(n)
  {
    const int i = omp_get_thread_num();
    try {
      task(i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  const int threads = num_threads();
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / grain);
  if (chunks <= 1 || omp_in_parallel()) {
    body(0, n);
    return;
  }
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    body(begin, end);
  }
}

}  // namespace elmo
