// CPU twin of the chunked full-softmax row kernels (see kernels/full_softmax.h): rows in
// parallel; the chunk sum is accumulated in double. And the device dispatch.
#include <algorithm>
#include <cmath>

#include "kernels/full_softmax.h"
#include "kernels/launchers.h"
#include "runtime/parallel.h"

namespace elmo {

void full_softmax_chunk_lse_cpu(const float* logits, int64_t ld, const float* bias,
                                const int32_t* targets, int64_t rows, int64_t chunk, int64_t begin,
                                float* row_max, double* row_sum, float* target_logit) {
  parallel_for(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(chunk, 1)),
               [&](int64_t row_begin, int64_t row_end) {
                 for (int64_t r = row_begin; r < row_end; ++r) {
                   const int64_t t = targets[r];
                   if (t < 0) continue;
                   const float* l = logits + r * ld;  // [C]
                   float max = -INFINITY;
                   for (int64_t j = 0; j < chunk; ++j) max = std::max(max, l[j] + bias[j]);
                   double sum = 0.0;
                   for (int64_t j = 0; j < chunk; ++j) sum += std::exp(l[j] + bias[j] - max);
                   log_sum_exp_merge(row_max[r], row_sum[r], max, sum);
                   if (t >= begin && t < begin + chunk)
                     target_logit[r] = l[t - begin] + bias[t - begin];
                 }
               });
}

void full_softmax_chunk_grad_cpu(float* logits, int64_t ld, const float* bias,
                                 const int32_t* targets, const float* lse, int64_t rows,
                                 int64_t chunk, int64_t begin, float grad_scale) {
  parallel_for(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(chunk, 1)),
               [&](int64_t row_begin, int64_t row_end) {
                 for (int64_t r = row_begin; r < row_end; ++r) {
                   const int64_t t = targets[r];
                   float* l = logits + r * ld;  // [C]
                   if (t < 0) {
                     std::fill(l, l + chunk, 0.0f);
                     continue;
                   }
                   const float row_lse = lse[r];
                   for (int64_t j = 0; j < chunk; ++j)
                     l[j] = full_softmax_grad(l[j] + bias[j], row_lse, begin + j == t, grad_scale);
                 }
               });
}

void full_softmax_finish_cpu(const float* row_max, const double* row_sum, const float* target_logit,
                             const int32_t* targets, int64_t rows, float* lse, double* result,
                             double* row_nll) {
  double nll = 0.0;
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) {
      if (row_nll) row_nll[r] = std::nan("");
      continue;
    }
    const double row_lse = static_cast<double>(row_max[r]) + std::log(row_sum[r]);
    lse[r] = static_cast<float>(row_lse);
    const double row = row_lse - target_logit[r];
    if (row_nll) row_nll[r] = row;
    nll += row;
    ++count;
  }
  result[0] = nll;
  result[1] = static_cast<double>(count);
}

void full_softmax_chunk_lse(Device device, const float* logits, int64_t ld, const float* bias,
                            const int32_t* targets, int64_t rows, int64_t chunk, int64_t begin,
                            float* row_max, double* row_sum, float* target_logit) {
  if (device.is_cpu())
    full_softmax_chunk_lse_cpu(logits, ld, bias, targets, rows, chunk, begin, row_max, row_sum,
                               target_logit);
  else
    full_softmax_chunk_lse_cuda(logits, ld, bias, targets, rows, chunk, begin, row_max, row_sum,
                                target_logit);
}

void full_softmax_chunk_grad(Device device, float* logits, int64_t ld, const float* bias,
                             const int32_t* targets, const float* lse, int64_t rows, int64_t chunk,
                             int64_t begin, float grad_scale) {
  if (device.is_cpu())
    full_softmax_chunk_grad_cpu(logits, ld, bias, targets, lse, rows, chunk, begin, grad_scale);
  else
    full_softmax_chunk_grad_cuda(logits, ld, bias, targets, lse, rows, chunk, begin, grad_scale);
}

void full_softmax_finish(Device device, const float* row_max, const double* row_sum,
                         const float* target_logit, const int32_t* targets, int64_t rows,
                         float* lse, double* result, double* row_nll) {
  if (device.is_cpu())
    full_softmax_finish_cpu(row_max, row_sum, target_logit, targets, rows, lse, result, row_nll);
  else
    full_softmax_finish_cuda(row_max, row_sum, target_logit, targets, rows, lse, result, row_nll);
}

}  // namespace elmo
