// Plain SGD update (no momentum) of dense parameters and of selected rows of a table.
//
//   p -= lr * (grad * grad_scale)
//
// The learning-rate schedule lives in model/optimizer.h. The row form updates only rows
// ids[0..n_ids) (unique, in range: callers check). Explicitly rounded f32 operations on the
// device (no FMA contraction) keep CPU and CUDA bit-identical.
// What it is not: the optimizer.
#pragma once

#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/hd.h"

namespace elmo {

ELMO_HD void sgd_update(float& p, float grad, float lr, float grad_scale) {
#if defined(__CUDA_ARCH__)
  p = __fsub_rn(p, __fmul_rn(lr, __fmul_rn(grad, grad_scale)));
#else
  p = p - lr * (grad * grad_scale);
#endif
}

// Entry points: every pointer on `device` (CUDA: launched on the current stream).
// Dense: p, g [n].
void sgd_dense(Device device, float* p, const float* g, int64_t n, float lr, float grad_scale);
// Rows: table [rows, dim]; ids [n_ids] unique; grad_rows [n_ids, dim].
void sgd_rows(Device device, float* table, int64_t dim, const int32_t* ids, const float* grad_rows,
              int64_t n_ids, float lr, float grad_scale);

}  // namespace elmo
