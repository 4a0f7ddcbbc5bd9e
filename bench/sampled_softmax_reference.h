// The plain reference of bench_sampled_softmax: TF sampled_softmax_loss semantics (REFERENCE.md
// "Sampled softmax"), written the obvious way with separate steps so that its output can be
// trusted and its time is what an unfused implementation costs:
//
//   gather    W_s [S, P], b_s [S] (sample rows), W_t [N, P], b_t [N] (target rows)
//   GEMM      logits [N, S] = h [N, P] @ W_s^T                                      (cuBLAS)
//   kernel    z_true[r] = h_r . W_t[r] + b_t[r] - log E(t_r)
//   kernel    per row: z_j = logits[r, j] + b_s[j] - log E(s_j), excluded when s_j == t_r;
//             lse = log(exp(z_true) + sum_j exp(z_j)); loss_r = lse - z_true;
//             dz_j = scale * exp(z_j - lse) (0 when excluded); dz_true = scale * (exp(z_true - lse) - 1)
//   GEMM      dh = dz [N, S] @ W_s, then kernel dh[r] += dz_true[r] * W_t[r]
//   GEMM      dW_s [S, P] = dz^T @ h;  kernel db_s[j] = sum_r dz[r, j]
//   kernel    grad_U[slot(s_j)] += dW_s[j], grad_U[slot(t_r)] += dz_true[r] * h[r] (atomicAdd;
//             U = sorted unique(samples ∪ targets), the rows the trainer's sparse gradient has)
//
// It shares no code with model/sampled_softmax or kernels/sampled_softmax: its own kernels,
// its own cuBLAS handle, log expected counts computed by the caller on the host.
// GEMM precision: fp32 (CUBLAS_COMPUTE_32F), tf32 (CUBLAS_COMPUTE_32F_FAST_TF32) or bf16
// (operands rounded to bf16 by a kernel, f32 accumulate and output), like runtime/gemm.h's
// three settings. What it is not: fast, deterministic (atomics), or part of the trainer.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "runtime/gemm.h"
#include "runtime/tensor.h"

namespace elmo::bench {

struct SampledSoftmaxProblem {
  int64_t vocab = 0, dim = 0, samples = 0, rows = 0, touched = 0;  // V, P, S, N, |U|
  // Device pointers (the caller owns them).
  const float* weight = nullptr;              // [V, P]
  const float* bias = nullptr;                // [V]
  const float* h = nullptr;                   // [N, P]
  const int32_t* targets = nullptr;           // [N]
  const int32_t* sample_ids = nullptr;        // [S]
  const float* sample_log_expected = nullptr;  // [S] log E(s_j)
  const float* target_log_expected = nullptr;  // [N] log E(t_r)
  const int32_t* sample_slot = nullptr;       // [S] index of s_j in U
  const int32_t* target_slot = nullptr;       // [N] index of t_r in U
  float grad_scale = 1.0f;
};

class SampledSoftmaxReference {
 public:
  SampledSoftmaxReference(const SampledSoftmaxProblem& problem, GemmPrecision precision);
  ~SampledSoftmaxReference();
  SampledSoftmaxReference(const SampledSoftmaxReference&) = delete;
  SampledSoftmaxReference& operator=(const SampledSoftmaxReference&) = delete;

  // One forward + backward on the current stream (asynchronous).
  void run();

  const float* loss() const { return loss_.data<float>(); }      // [N] per-row NLL
  const float* dh() const { return dh_.data<float>(); }          // [N, P]
  const float* grad_w() const { return grad_u_.data<float>(); }  // [|U|, P]
  const float* grad_b() const { return grad_ub_.data<float>(); }  // [|U|]

 private:
  // Row-major C[m, n] = op(A) @ op(B) (+ beta C) with the reference's precision.
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
            int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc);

  SampledSoftmaxProblem p_;
  GemmPrecision precision_;
  cublasHandle_t handle_ = nullptr;
  Tensor ws_, bs_, wt_, bt_;  // gathered rows and biases
  Tensor logits_, z_true_, loss_, dh_, dws_, dbs_, grad_u_, grad_ub_;
  Tensor a16_, b16_;  // bf16 operand copies (kBf16)
};

}  // namespace elmo::bench
