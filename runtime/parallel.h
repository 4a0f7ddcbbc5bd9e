// CPU threading: one knob for OpenMP loops and OpenBLAS.
//
// parallel_for splits [0, n) into contiguous chunks of at least `grain` items; small loops run
// inline on the calling thread (no fork/join cost).
#pragma once

#include <cstdint>
#include <functional>

namespace elmo {

void set_num_threads(int threads);  // <= 0: all cores
int num_threads();
// Threads OpenBLAS may use inside one GEMM (set 1 when callers already run in parallel).
void set_blas_threads(int threads);

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace elmo
