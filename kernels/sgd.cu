// CUDA SGD: one thread per element (dense) or per (row, column) of the touched rows.
#include "kernels/launchers.h"
#include "kernels/sgd.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
constexpr int kThreads = 256;

__global__ void sgd_dense_kernel(float* __restrict__ p, const float* __restrict__ g, int64_t n,
                                 float lr, float grad_scale) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < n) sgd_update(p[e], g[e], lr, grad_scale);
}

__global__ void sgd_rows_kernel(float* __restrict__ table, int64_t dim,
                                const int32_t* __restrict__ ids,
                                const float* __restrict__ grad_rows, int64_t n_ids, float lr,
                                float grad_scale) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n_ids * dim) return;
  const int64_t k = e / dim, c = e - k * dim;
  sgd_update(table[static_cast<int64_t>(ids[k]) * dim + c], grad_rows[e], lr, grad_scale);
}
}  // namespace

void sgd_dense_cuda(float* p, const float* g, int64_t n, float lr, float grad_scale) {
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  sgd_dense_kernel<<<blocks, kThreads, 0, current_stream()>>>(p, g, n, lr, grad_scale);
  ELMO_CUDA_CHECK_LAUNCH();
}

void sgd_rows_cuda(float* table, int64_t dim, const int32_t* ids, const float* grad_rows,
                   int64_t n_ids, float lr, float grad_scale) {
  const int64_t n = n_ids * dim;
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  sgd_rows_kernel<<<blocks, kThreads, 0, current_stream()>>>(table, dim, ids, grad_rows, n_ids, lr,
                                                             grad_scale);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
