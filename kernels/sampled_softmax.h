// Sampled softmax, the per-row parts: corrected target logits and the fused masked
// log-sum-exp / loss / softmax-gradient pass over [true, sampled...] of each row.
//
// For row r with target t and the step's samples s_0..s_{S-1}:
//   z_true  = h_r . W[t] + b[t] - log E(t)                     (sampled_softmax_target_logits)
//   z_j     = h_r . W[s_j] + b[s_j] - log E(s_j)   or -FLT_MAX when s_j == t (accidental hit)
//   lse     = log(exp(z_true) + sum_j exp(z_j))
//   loss_r  = lse - z_true                                        (NLL of the true class)
//   dz_true = scale * (exp(z_true - lse) - 1),  dz_j = scale * exp(z_j - lse)   (0 when masked)
// E(k) = -expm1(tries * log1p(-P(k))) (kernels/log_uniform_sampler.h). The GEMMs around this
// (h @ W_s^T, dh, dW) are done by the caller (model/sampled_softmax.h); this file holds no
// model state and knows nothing about directions or parameters.
#pragma once

#include <cfloat>
#include <cstdint>

#include "kernels/log_uniform_sampler.h"
#include "runtime/dtype.h"
#include "runtime/hd.h"

namespace elmo {

// Corrected sampled logit, -FLT_MAX (excluded from the log-sum-exp) on an accidental hit.
ELMO_HD float sampled_softmax_logit(float raw, float correction, int32_t sample_id,
                                    int32_t target) {
  return sample_id == target ? -FLT_MAX : raw + correction;
}

// exp(z - max) for a corrected logit; exactly 0 for a masked one.
ELMO_HD float sampled_softmax_exp(float z, float max) {
  return z == -FLT_MAX ? 0.0f : expf(z - max);
}

struct SampledSoftmaxRowsParams {
  int64_t rows = 0;          // N
  int64_t samples = 0;       // S
  float grad_scale = 1.0f;   // dlogits = grad_scale * d(loss_r)/dz
  bool compute_grad = true;  // false: loss only, logits and true_logits are left as they were
};

// Entry points: every pointer on `device` (CUDA: launched on the current stream).
//
// true_logits[r] = dot(h[r], weight[row_r]) + bias[row_r]
//                  - log_expected_count(targets[r], tries, vocab)
// weight [V, dim], bias [V], h [N, dim], targets [N] (in [0, V), checked by the caller).
// row_r = target_rows[r] when given (a compacted table, model/row_layout.h), else targets[r].
void sampled_softmax_target_logits(Device device, const float* weight, const float* bias,
                                   const float* h, const int32_t* targets, int64_t rows,
                                   int64_t dim, int64_t tries, int64_t vocab, float* true_logits,
                                   const int32_t* target_rows = nullptr);

// The fused row pass.
//   logits       [N, S] in: h @ W_s^T (raw);  out (compute_grad): dz_j
//   true_logits  [N]    in: corrected z_true;  out (compute_grad): dz_true
//   correction   [S]    b[s_j] - log E(s_j)
//   sample_ids   [S], targets [N]
//   loss         [N]    out: loss_r (unscaled NLL)
void sampled_softmax_rows(Device device, float* logits, float* true_logits, const float* correction,
                          const int32_t* sample_ids, const int32_t* targets, float* loss,
                          const SampledSoftmaxRowsParams& params);

// correction[j] = bias[sample_ids[j]] - log_expected[j]      ([S]; one rounded subtraction)
void sampled_softmax_corrections(Device device, const float* bias, const int32_t* sample_ids,
                                 const float* log_expected, int64_t samples, float* correction);

// db[j] += sum_r dlogits[r, j] in double (dlogits [N, S]): the sampled rows' bias gradient. CPU:
// rows in ascending order, each added into db[j] directly (the CPU layer's order since its first
// version); CUDA: the lane order of column_sums_add_f64 (kernels/pointwise.h), which spreads the
// rows over many threads. The two differ in the last bits of the double sums.
void sampled_softmax_sample_bias_grad(Device device, const float* dlogits, int64_t rows,
                                      int64_t samples, double* db);

// The gradient rows of the touched ids (targets and samples) are a planned row sum
// (kernels/row_sum.h): the rows h scaled by dtrue, then each sample's own row as the tail.

}  // namespace elmo
