// CPU SGD: dense (parallel over elements) and row-sparse (parallel over rows), and the device
// dispatch.
#include <algorithm>

#include "kernels/launchers.h"
#include "kernels/sgd.h"
#include "runtime/parallel.h"

namespace elmo {

void sgd_dense_cpu(float* p, const float* g, int64_t n, float lr, float grad_scale) {
  parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) sgd_update(p[e], g[e], lr, grad_scale);
  });
}

void sgd_rows_cpu(float* table, int64_t dim, const int32_t* ids, const float* grad_rows,
                  int64_t n_ids, float lr, float grad_scale) {
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(dim, 1));
  parallel_for(n_ids, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      float* row = table + static_cast<int64_t>(ids[k]) * dim;  // table[ids[k], :]
      const float* g = grad_rows + k * dim;                     // grad_rows[k, :]
      for (int64_t c = 0; c < dim; ++c) sgd_update(row[c], g[c], lr, grad_scale);
    }
  });
}

void sgd_dense(Device device, float* p, const float* g, int64_t n, float lr, float grad_scale) {
  if (device.is_cpu())
    sgd_dense_cpu(p, g, n, lr, grad_scale);
  else
    sgd_dense_cuda(p, g, n, lr, grad_scale);
}

void sgd_rows(Device device, float* table, int64_t dim, const int32_t* ids, const float* grad_rows,
              int64_t n_ids, float lr, float grad_scale) {
  if (device.is_cpu())
    sgd_rows_cpu(table, dim, ids, grad_rows, n_ids, lr, grad_scale);
  else
    sgd_rows_cuda(table, dim, ids, grad_rows, n_ids, lr, grad_scale);
}

}  // namespace elmo
