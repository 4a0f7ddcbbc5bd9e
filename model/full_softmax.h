// Full softmax over the whole vocabulary: evaluation NLL and (PTB-style training) its
// gradients, computed in vocabulary chunks so no [N, V] matrix ever exists. CPU or CUDA (the
// `device` argument; every pointer lives there, CUDA work goes to the current stream).
//
//   z[r, k] = h[r] . W[k] + b[k]            k in [0, V)
//   NLL_r   = logsumexp_k z[r, k] - z[r, targets[r]]
// Per chunk of `chunk` vocabulary rows: one GEMM h @ W_c^T ([N, chunk]) and an online
// log-sum-exp merge (kernels/full_softmax.h). Training runs a second sweep that recomputes
// each chunk's logits, turns them into grad_scale * (softmax - onehot) and does
// dh += dz @ W_c, dW_c += dz^T @ h, db_c += column sums.
// Rows with target kIgnoreTarget (-1) are skipped: not counted, zero dh.
// CUDA: targets are device memory and are not range-checked (the caller checks its host copy);
// the NLL sum is summed on the device (a fixed tree, so it differs from the CPU's sequential
// double sum in the last bits: kernels/full_softmax.h) and read back by the NllSum-returning
// calls (one synchronisation); the _deferred form leaves it in the workspace until
// full_softmax_result.
// What it is not: the sampled softmax used for training the big models (model/sampled_softmax.h).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/full_softmax.h"
#include "runtime/tensor.h"

namespace elmo {

inline constexpr int64_t kFullSoftmaxChunk = 4096;

struct NllSum {
  double nll = 0.0;   // summed NLL over the counted rows
  int64_t count = 0;  // rows whose target is not kIgnoreTarget
};

// Scratch reused across calls (grows to the largest N * chunk seen), on the calls' device.
// One workspace serves one device and (CUDA) one stream at a time.
struct FullSoftmaxWorkspace {
  Tensor logits;                               // [N, chunk]
  Tensor row_max, row_sum, target_logit, lse;  // [N] (row_sum f64, held in an i64 tensor)
  Tensor result;                               // f64 [2]: summed NLL and count of the last call
  Tensor row_nll;                              // f64 [N] of the last full_softmax_nll call
  int64_t row_nll_rows = 0;                    // its N
};

// weight [V, P], bias [V], h [N, P], targets [N] in [0, V) or kIgnoreTarget. Also keeps each
// row's NLL in the workspace (full_softmax_row_nll).
NllSum full_softmax_nll(const float* weight, const float* bias, int64_t vocab, int64_t dim,
                        const float* h, const int32_t* targets, int64_t n,
                        int64_t chunk = kFullSoftmaxChunk,
                        FullSoftmaxWorkspace* workspace = nullptr, Device device = Device::cpu());

// Training: returns the (unscaled) summed NLL and count; writes dh [N, P] =
// grad_scale * d(sum NLL)/dh (dh may be null) and ADDS grad_scale * d(sum NLL)/dW into
// dweight [V, P] and /db into dbias [V] (dense).
NllSum full_softmax_forward_backward(const float* weight, const float* bias, int64_t vocab,
                                     int64_t dim, const float* h, const int32_t* targets, int64_t n,
                                     float grad_scale, float* dh, float* dweight, float* dbias,
                                     int64_t chunk = kFullSoftmaxChunk,
                                     FullSoftmaxWorkspace* workspace = nullptr,
                                     Device device = Device::cpu());

// The same training pass, its NLL kept in `workspace` (on the device for CUDA) for
// full_softmax_result: no synchronisation.
void full_softmax_forward_backward_deferred(const float* weight, const float* bias, int64_t vocab,
                                            int64_t dim, const float* h, const int32_t* targets,
                                            int64_t n, float grad_scale, float* dh, float* dweight,
                                            float* dbias, int64_t chunk,
                                            FullSoftmaxWorkspace& workspace, Device device);
// The NllSum of the workspace's last call (CUDA: reads it back, one synchronisation).
NllSum full_softmax_result(const FullSoftmaxWorkspace& workspace, Device device);

// One process's part of a distributed full softmax (a rank scoring its rows of a sharded
// table, model/bilm.h BiLM::evaluate): per row, the log-sum-exp state over rows [0, rows) of
// `weight` / `bias` and the target's logit when the target is among them. local_targets [N]
// (on `device`): the target's row in [0, rows), kTargetElsewhere (scored by another process;
// the row still takes part) or kIgnoreTarget. Host results.
inline constexpr int32_t kTargetElsewhere = 0x7fffffff;
struct PartialLse {
  std::vector<float> max;     // [N] running max (-inf with no rows)
  std::vector<double> sum;    // [N] sum of exp(z - max) (0 with no rows)
  std::vector<float> target;  // [N] the target's logit, 0 when it is elsewhere
};
void full_softmax_partial(const float* weight, const float* bias, int64_t rows, int64_t dim,
                          const float* h, const int32_t* local_targets, int64_t n,
                          FullSoftmaxWorkspace& workspace, Device device, PartialLse& out);

// The per-row NLLs of the workspace's last full_softmax_nll call over `n` rows: out[r] = NLL_r,
// the very terms its NllSum adds up, NaN for rows whose target is kIgnoreTarget. Host `out`;
// CUDA: copies them back (synchronises).
void full_softmax_row_nll(const FullSoftmaxWorkspace& workspace, int64_t n, Device device,
                          double* out);

}  // namespace elmo
