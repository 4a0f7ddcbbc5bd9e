// CUDA row scatter: one thread per (row, column) of the written rows; see row_scatter.h.
#include "kernels/launchers.h"
#include "kernels/row_scatter.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
constexpr int kThreads = 256;

__global__ void scatter_rows_kernel(float* __restrict__ table, int64_t dim,
                                    const int32_t* __restrict__ ids, int64_t n,
                                    const float* __restrict__ rows) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n * dim) return;
  const int64_t k = e / dim, c = e - k * dim;
  table[static_cast<int64_t>(ids[k]) * dim + c] = rows[e];
}
}  // namespace

void scatter_rows_cuda(float* table, int64_t dim, const int32_t* ids, int64_t n,
                       const float* rows) {
  const int64_t total = n * dim;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>((total + kThreads - 1) / kThreads);
  scatter_rows_kernel<<<blocks, kThreads, 0, current_stream()>>>(table, dim, ids, n, rows);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
