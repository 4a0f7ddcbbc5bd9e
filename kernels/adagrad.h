// Adagrad update of dense parameters and of selected rows of a table.
//
//   g    = grad * grad_scale                      (grad_scale: global-norm clip factor, or 1)
//   acc += g * g
//   p   -= lr * g / (sqrt(acc) + eps)
//
// This is PyTorch's / lapse-elmo's form (eps outside the square root). bilm-tf (TF1 Adagrad)
// has no eps; with the default initial accumulator 1.0 and eps 1e-7 the two differ by < 1e-7
// relative. The row form updates only rows ids[0..n_ids) of the table and of its accumulator;
// ids must be unique (one thread per element, no races) and in range (callers check).
// Each step is a fixed sequence of correctly rounded f32 operations (no FMA contraction on
// the device), so CPU and CUDA agree bit for bit when the host compiler does not contract.
// What it is not: the optimizer (model/optimizer.h decides what to update and with which lr).
#pragma once

#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/hd.h"

namespace elmo {

ELMO_HD void adagrad_update(float& p, float& acc, float grad, float lr, float eps,
                            float grad_scale) {
#if defined(__CUDA_ARCH__)
  const float g = __fmul_rn(grad, grad_scale);
  acc = __fadd_rn(acc, __fmul_rn(g, g));
  p = __fsub_rn(p, __fdiv_rn(__fmul_rn(lr, g), __fadd_rn(__fsqrt_rn(acc), eps)));
#else
  const float g = grad * grad_scale;
  acc = acc + g * g;
  p = p - (lr * g) / (__builtin_sqrtf(acc) + eps);
#endif
}

// Entry points: every pointer on `device` (CUDA: launched on the current stream).
// Dense: p, acc, g [n].
void adagrad_dense(Device device, float* p, float* acc, const float* g, int64_t n, float lr,
                   float eps, float grad_scale);
// Rows: table, acc [rows, dim]; ids [n_ids] unique; grad_rows [n_ids, dim] (row k belongs to
// ids[k]).
void adagrad_rows(Device device, float* table, float* acc, int64_t dim, const int32_t* ids,
                  const float* grad_rows, int64_t n_ids, float lr, float eps, float grad_scale);

}  // namespace elmo
