// CPU threading: every parallel loop is an OpenMP region, and OpenBLAS itself runs
// single-threaded (cpu_gemm splits big products over the OpenMP threads), so one set of worker
// threads owns the cores.
//
// parallel_for splits [0, n) into contiguous chunks of at least `grain` items; small loops run
// inline on the calling thread (no fork/join cost).
#pragma once

#include <cstdint>
#include <functional>

namespace elmo {

void set_num_threads(int threads);  // <= 0: all cores
int num_threads();

// Runs task(0) .. task(n - 1) at the same time, one thread each (task 0 on the caller). Inside
// the tasks parallel_for and cpu_gemm run inline (single-threaded), so n independent pieces of
// work (e.g. the two directions of a biLM) share the cores without oversubscription.
void run_concurrently(int n, const std::function<void(int)>& task);

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace elmo
