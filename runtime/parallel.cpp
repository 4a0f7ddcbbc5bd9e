#include "runtime/parallel.h"

#include <omp.h>

#include <algorithm>
#include <thread>

extern "C" void openblas_set_num_threads(int num_threads);

namespace elmo {

namespace {
int g_threads = 0;
}

void set_num_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_threads = threads;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

void set_blas_threads(int threads) { openblas_set_num_threads(std::max(1, threads)); }

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
