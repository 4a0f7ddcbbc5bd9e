// CPU twin of the sampled-softmax row kernels (see kernels/sampled_softmax.h): rows in
// parallel, each row in three passes (mask + max, exp + sum, normalise); sums in double. And
// the device dispatch.
#include <algorithm>
#include <cmath>

#include "kernels/launchers.h"
#include "kernels/lstmp_cell.h"
#include "kernels/pointwise.h"
#include "kernels/sampled_softmax.h"
#include "runtime/parallel.h"

namespace elmo {

void sampled_softmax_target_logits_cpu(const float* weight, const float* bias, const float* h,
                                       const int32_t* targets, int64_t rows, int64_t dim,
                                       int64_t tries, int64_t vocab, float* true_logits,
                                       const int32_t* target_rows) {
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t r = begin; r < end; ++r) {
                   const int32_t t = targets[r];
                   const int64_t row = target_rows ? target_rows[r] : t;
                   const float* w = weight + row * dim;  // [dim]
                   const float* x = h + r * dim;         // [dim]
                   float dot = 0.0f;
                   for (int64_t d = 0; d < dim; ++d) dot += x[d] * w[d];
                   true_logits[r] =
                       dot + bias[row] - static_cast<float>(log_expected_count(t, tries, vocab));
                 }
               });
}

void sampled_softmax_rows_cpu(float* logits, float* true_logits, const float* correction,
                              const int32_t* sample_ids, const int32_t* targets, float* loss,
                              const SampledSoftmaxRowsParams& params) {
  const int64_t s = params.samples;
  const bool grad = params.compute_grad;
  parallel_for(params.rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(s, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t r = begin; r < end; ++r) {
                   const int32_t t = targets[r];
                   const float z_true = true_logits[r];
                   float* row = logits + r * s;  // [S]
                   float max = z_true;
                   for (int64_t j = 0; j < s; ++j) {
                     const float z = sampled_softmax_logit(row[j], correction[j], sample_ids[j], t);
                     if (grad) row[j] = z;
                     max = std::max(max, z);
                   }
                   const float e_true = std::exp(z_true - max);
                   double sum = e_true;
                   if (grad) {
                     // Branch-free exp (kernels/lstmp_cell.h) so the loop vectorises; masked
                     // logits give exactly 0. Eight partial sums in a fixed order keep the
                     // double accumulation fast and deterministic.
                     for (int64_t j = 0; j < s; ++j)
                       row[j] = row[j] == -FLT_MAX ? 0.0f : lstm_exp(row[j] - max);
                     double partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                     int64_t j = 0;
                     for (; j + 8 <= s; j += 8)
                       for (int k = 0; k < 8; ++k) partial[k] += row[j + k];
                     for (; j < s; ++j) partial[j & 7] += row[j];
                     for (double part : partial) sum += part;
                   } else {
                     for (int64_t j = 0; j < s; ++j)
                       sum += sampled_softmax_exp(
                           sampled_softmax_logit(row[j], correction[j], sample_ids[j], t), max);
                   }
                   loss[r] = static_cast<float>(static_cast<double>(max) + std::log(sum) - z_true);
                   if (grad) {
                     const float scale = static_cast<float>(params.grad_scale / sum);
                     for (int64_t j = 0; j < s; ++j) row[j] *= scale;
                     true_logits[r] = static_cast<float>(params.grad_scale *
                                                         (static_cast<double>(e_true) / sum - 1.0));
                   }
                 }
               });
}

void sampled_softmax_corrections_cpu(const float* bias, const int32_t* sample_ids,
                                     const float* log_expected, int64_t samples,
                                     float* correction) {
  for (int64_t j = 0; j < samples; ++j) correction[j] = bias[sample_ids[j]] - log_expected[j];
}

void sampled_softmax_sample_bias_grad_cpu(const float* dlogits, int64_t rows, int64_t samples,
                                          double* db) {
  parallel_for(samples, 1024, [&](int64_t begin, int64_t end) {  // threads own columns
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dlogits + r * samples;  // [S]
      for (int64_t j = begin; j < end; ++j) db[j] += row[j];
    }
  });
}

void sampled_softmax_sample_bias_grad(Device device, const float* dlogits, int64_t rows,
                                      int64_t samples, double* db) {
  if (rows <= 0 || samples <= 0) return;
  if (device.is_cpu())
    sampled_softmax_sample_bias_grad_cpu(dlogits, rows, samples, db);
  else
    column_sums_add_f64(device, dlogits, rows, samples, samples, db);
}

void sampled_softmax_target_logits(Device device, const float* weight, const float* bias,
                                   const float* h, const int32_t* targets, int64_t rows,
                                   int64_t dim, int64_t tries, int64_t vocab, float* true_logits,
                                   const int32_t* target_rows) {
  if (device.is_cpu())
    sampled_softmax_target_logits_cpu(weight, bias, h, targets, rows, dim, tries, vocab,
                                      true_logits, target_rows);
  else
    sampled_softmax_target_logits_cuda(weight, bias, h, targets, rows, dim, tries, vocab,
                                       true_logits, target_rows);
}

void sampled_softmax_rows(Device device, float* logits, float* true_logits, const float* correction,
                          const int32_t* sample_ids, const int32_t* targets, float* loss,
                          const SampledSoftmaxRowsParams& params) {
  if (device.is_cpu())
    sampled_softmax_rows_cpu(logits, true_logits, correction, sample_ids, targets, loss, params);
  else
    sampled_softmax_rows_cuda(logits, true_logits, correction, sample_ids, targets, loss, params);
}

void sampled_softmax_corrections(Device device, const float* bias, const int32_t* sample_ids,
                                 const float* log_expected, int64_t samples, float* correction) {
  if (samples <= 0) return;
  if (device.is_cpu())
    sampled_softmax_corrections_cpu(bias, sample_ids, log_expected, samples, correction);
  else
    sampled_softmax_corrections_cuda(bias, sample_ids, log_expected, samples, correction);
}

}  // namespace elmo
