// CPU Adagrad: dense (parallel over elements) and row-sparse (parallel over rows), and the
// device dispatch.
#include <algorithm>

#include "kernels/adagrad.h"
#include "kernels/launchers.h"
#include "runtime/parallel.h"

namespace elmo {

void adagrad_dense_cpu(float* p, float* acc, const float* g, int64_t n, float lr, float eps,
                       float grad_scale) {
  parallel_for(n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) adagrad_update(p[e], acc[e], g[e], lr, eps, grad_scale);
  });
}

void adagrad_rows_cpu(float* table, float* acc, int64_t dim, const int32_t* ids,
                      const float* grad_rows, int64_t n_ids, float lr, float eps,
                      float grad_scale) {
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(dim, 1));
  parallel_for(n_ids, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t row = static_cast<int64_t>(ids[k]) * dim;  // table[ids[k], :]
      const float* g = grad_rows + k * dim;                    // grad_rows[k, :]
      for (int64_t c = 0; c < dim; ++c)
        adagrad_update(table[row + c], acc[row + c], g[c], lr, eps, grad_scale);
    }
  });
}

void adagrad_dense(Device device, float* p, float* acc, const float* g, int64_t n, float lr,
                   float eps, float grad_scale) {
  if (device.is_cpu())
    adagrad_dense_cpu(p, acc, g, n, lr, eps, grad_scale);
  else
    adagrad_dense_cuda(p, acc, g, n, lr, eps, grad_scale);
}

void adagrad_rows(Device device, float* table, float* acc, int64_t dim, const int32_t* ids,
                  const float* grad_rows, int64_t n_ids, float lr, float eps, float grad_scale) {
  if (device.is_cpu())
    adagrad_rows_cpu(table, acc, dim, ids, grad_rows, n_ids, lr, eps, grad_scale);
  else
    adagrad_rows_cuda(table, acc, dim, ids, grad_rows, n_ids, lr, eps, grad_scale);
}

}  // namespace elmo
