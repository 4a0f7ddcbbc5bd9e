// CUDA Adagrad: one thread per element (dense) or per (row, column) of the touched rows.
#include "kernels/adagrad.h"
#include "kernels/launchers.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
constexpr int kThreads = 256;

__global__ void adagrad_dense_kernel(float* __restrict__ p, float* __restrict__ acc,
                                     const float* __restrict__ g, int64_t n, float lr, float eps,
                                     float grad_scale) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < n) adagrad_update(p[e], acc[e], g[e], lr, eps, grad_scale);
}

__global__ void adagrad_rows_kernel(float* __restrict__ table, float* __restrict__ acc, int64_t dim,
                                    const int32_t* __restrict__ ids,
                                    const float* __restrict__ grad_rows, int64_t n_ids, float lr,
                                    float eps, float grad_scale) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n_ids * dim) return;
  const int64_t k = e / dim, c = e - k * dim;
  const int64_t at = static_cast<int64_t>(ids[k]) * dim + c;  // table[ids[k], c]
  adagrad_update(table[at], acc[at], grad_rows[e], lr, eps, grad_scale);
}
}  // namespace

void adagrad_dense_cuda(float* p, float* acc, const float* g, int64_t n, float lr, float eps,
                        float grad_scale) {
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  adagrad_dense_kernel<<<blocks, kThreads, 0, current_stream()>>>(p, acc, g, n, lr, eps,
                                                                  grad_scale);
  ELMO_CUDA_CHECK_LAUNCH();
}

void adagrad_rows_cuda(float* table, float* acc, int64_t dim, const int32_t* ids,
                       const float* grad_rows, int64_t n_ids, float lr, float eps,
                       float grad_scale) {
  const int64_t n = n_ids * dim;
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  adagrad_rows_kernel<<<blocks, kThreads, 0, current_stream()>>>(table, acc, dim, ids, grad_rows,
                                                                 n_ids, lr, eps, grad_scale);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
