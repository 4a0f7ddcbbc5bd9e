// Full softmax over a large vocabulary in chunks, the per-row parts: an online log-sum-exp
// merge of one vocabulary chunk into per-row running state, and the softmax gradient of one
// chunk once the row's log-sum-exp is known.
//
// For a chunk of vocabulary ids [begin, begin + C) with raw logits l = h @ W_c^T ([N, C]):
//   z_j        = l[r, j] + bias[j]
//   chunk max  m_c = max_j z_j,  chunk sum s_c = sum_j exp(z_j - m_c)
//   merge      M' = max(M, m_c),  S' = S exp(M - M') + s_c exp(m_c - M')    (M = -inf, S = 0 first)
//   target     z_t captured when targets[r] falls in the chunk
// after all chunks: lse_r = M + log S, NLL_r = lse_r - z_t.
// Gradient of scale * NLL_r w.r.t. z_j: scale * (exp(z_j - lse_r) - [j == target]).
// Rows whose target is negative (kIgnoreTarget) take no part: their state is left as is and
// their gradient row is 0. The GEMMs around this live in model/full_softmax.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/dtype.h"
#include "runtime/hd.h"

namespace elmo {

// Target value of a row that is not predicted (padding in evaluation batches).
inline constexpr int32_t kIgnoreTarget = -1;

// Merges a chunk's (max, sum) into a row's running (max, sum).
ELMO_HD void log_sum_exp_merge(float& max, double& sum, float chunk_max, double chunk_sum) {
  if (chunk_sum == 0.0) return;
  if (sum == 0.0 || chunk_max > max) {
    sum = chunk_sum + (sum == 0.0 ? 0.0 : sum * exp(static_cast<double>(max) - chunk_max));
    max = chunk_max;
  } else {
    sum += chunk_sum * exp(static_cast<double>(chunk_max) - max);
  }
}

// Softmax gradient of one logit given the row's log-sum-exp.
ELMO_HD float full_softmax_grad(float z, float lse, bool is_target, float scale) {
  return scale * (expf(z - lse) - (is_target ? 1.0f : 0.0f));
}

// Entry points: every pointer on `device` (CUDA: launched on the current stream).
// Merges one chunk into the running state.
//   logits [N, C] raw h @ W_c^T (row stride ld), bias [C] = bias of ids [begin, begin + C)
//   row_max [N], row_sum [N] running state; target_logit [N] written when the target is here
void full_softmax_chunk_lse(Device device, const float* logits, int64_t ld, const float* bias,
                            const int32_t* targets, int64_t rows, int64_t chunk, int64_t begin,
                            float* row_max, double* row_sum, float* target_logit);

// logits [N, C] in: raw h @ W_c^T, out: scale * dNLL/dz;  lse [N] of every row.
void full_softmax_chunk_grad(Device device, float* logits, int64_t ld, const float* bias,
                             const int32_t* targets, const float* lse, int64_t rows, int64_t chunk,
                             int64_t begin, float grad_scale);

// After the last chunk: for every row with a target, lse[r] = (float)(row_max + log(row_sum))
// and NLL_r = lse_r - target_logit[r] in double; result[0] = sum of NLL_r, result[1] = number of
// such rows (as a double); lse of the other rows is left as it was. row_nll (optional, [rows])
// receives every NLL_r that enters the sum, NaN for rows without a target. The CPU sums in row
// order; CUDA runs one block with fixed-order tree sums (deterministic, but result[0] differs
// from the CPU's in the last bits). result [2] and row_nll are on `device`.
void full_softmax_finish(Device device, const float* row_max, const double* row_sum,
                         const float* target_logit, const int32_t* targets, int64_t rows,
                         float* lse, double* result, double* row_nll = nullptr);

}  // namespace elmo
