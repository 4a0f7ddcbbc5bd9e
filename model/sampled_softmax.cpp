#include "model/sampled_softmax.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/sampled_softmax.h"
#include "runtime/cpu_blas.h"
#include "runtime/error.h"
#include "runtime/parallel.h"

namespace elmo {

SampledSoftmax::SampledSoftmax(int64_t vocab, int64_t dim, int64_t samples)
    : vocab_(vocab), dim_(dim), num_samples_(samples) {
  ELMO_CHECK(vocab > 0 && vocab <= std::numeric_limits<int32_t>::max(),
             "sampled softmax vocab size ", vocab, " must be in [1, 2^31)");
  ELMO_CHECK(dim > 0, "sampled softmax dim ", dim, " must be positive");
  ELMO_CHECK(samples > 0 && samples < vocab, "sampled softmax needs 0 < samples < vocab, got ",
             "samples = ", samples, " and vocab = ", vocab,
             "; lower the number of samples (or use the full softmax)");
  seen_.assign(static_cast<size_t>(vocab), 0);
  slot_.assign(static_cast<size_t>(vocab), -1);
}

void SampledSoftmax::check_targets(const int32_t* targets, int64_t n, bool must_be_touched) const {
  for (int64_t r = 0; r < n; ++r) {
    const int32_t t = targets[r];
    ELMO_CHECK(t >= 0 && t < vocab_, "sampled softmax: target ", t, " of row ", r,
               " is outside the vocabulary [0, ", vocab_, ")");
    if (must_be_touched)
      ELMO_CHECK(slot_[t] >= 0, "sampled softmax: target ", t, " of row ", r,
                 " was not among the targets passed to begin_step");
  }
}

void SampledSoftmax::begin_step(
    Rng& rng, const std::vector<std::pair<const int32_t*, int64_t>>& targets_per_direction) {
  for (const auto& [targets, n] : targets_per_direction) check_targets(targets, n, false);
  for (const int32_t id : touched_) slot_[id] = -1;
  touched_.clear();

  sample_log_uniform_unique(vocab_, num_samples_, rng, samples_, seen_);

  // U = sorted unique(samples ∪ targets); seen_ dedupes and is cleared again afterwards.
  auto touch = [&](int32_t id) {
    if (!seen_[id]) {
      seen_[id] = 1;
      touched_.push_back(id);
    }
  };
  for (const int32_t id : samples_.ids) touch(id);
  for (const auto& [targets, n] : targets_per_direction)
    for (int64_t r = 0; r < n; ++r) touch(targets[r]);
  for (const int32_t id : touched_) seen_[id] = 0;
  std::sort(touched_.begin(), touched_.end());
  const int64_t u = static_cast<int64_t>(touched_.size());
  for (int64_t i = 0; i < u; ++i) slot_[touched_[i]] = static_cast<int32_t>(i);
  sample_slot_.resize(static_cast<size_t>(num_samples_));
  for (int64_t j = 0; j < num_samples_; ++j) sample_slot_[j] = slot_[samples_.ids[j]];

  if (!grad_w_.defined() || grad_w_.size(0) < u) {
    const int64_t capacity = std::max<int64_t>(u, u + u / 4);
    grad_w_ = Tensor::empty({capacity, dim_});  // [capacity, P]
    grad_b_ = Tensor::empty({capacity, 1});     // [capacity, 1]
  }
  std::memset(grad_w_.data<float>(), 0, sizeof(float) * static_cast<size_t>(u * dim_));
  std::memset(grad_b_.data<float>(), 0, sizeof(float) * static_cast<size_t>(u));
  sample_dw_.assign(static_cast<size_t>(num_samples_ * dim_), 0.0f);
  sample_db_.assign(static_cast<size_t>(num_samples_), 0.0);
  gathered_weight_ = gathered_bias_ = nullptr;
  step_open_ = true;
}

void SampledSoftmax::gather_samples(const float* weight, const float* bias) {
  if (gathered_weight_ == weight && gathered_bias_ == bias) return;
  const int64_t s = num_samples_, p = dim_;
  sample_w_.resize(static_cast<size_t>(s * p));
  correction_.resize(static_cast<size_t>(s));
  parallel_for(s, std::max<int64_t>(1, 16384 / p), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t id = samples_.ids[j];
      std::memcpy(sample_w_.data() + j * p, weight + id * p, sizeof(float) * p);
      correction_[j] = bias[id] - samples_.log_expected[j];
    }
  });
  gathered_weight_ = weight;
  gathered_bias_ = bias;
}

double SampledSoftmax::rows_pass(const float* weight, const float* bias, const float* h,
                                 const int32_t* targets, int64_t n, float grad_scale,
                                 bool compute_grad) {
  const int64_t s = num_samples_, p = dim_;
  gather_samples(weight, bias);
  if (static_cast<int64_t>(logits_.size()) < n * s) logits_.resize(static_cast<size_t>(n * s));
  if (static_cast<int64_t>(true_.size()) < n) {
    true_.resize(static_cast<size_t>(n));
    loss_.resize(static_cast<size_t>(n));
  }
  // logits [N, S] = h [N, P] @ W_s^T [P, S]
  cpu_gemm(false, true, n, s, p, 1.0f, h, p, sample_w_.data(), p, 0.0f, logits_.data(), s);
  sampled_softmax_target_logits_cpu(weight, bias, h, targets, n, p, samples_.tries, vocab_,
                                    true_.data());
  SampledSoftmaxRowsParams params;
  params.rows = n;
  params.samples = s;
  params.grad_scale = grad_scale;
  params.compute_grad = compute_grad;
  sampled_softmax_rows_cpu(logits_.data(), true_.data(), correction_.data(), samples_.ids.data(),
                           targets, loss_.data(), params);
  double total = 0.0;
  for (int64_t r = 0; r < n; ++r) total += loss_[r];
  return total;
}

double SampledSoftmax::forward_backward(const float* weight, const float* bias, const float* h,
                                        const int32_t* targets, int64_t n, float grad_scale,
                                        float* dh) {
  ELMO_CHECK(step_open_, "SampledSoftmax::forward_backward called outside begin_step/finish_step");
  ELMO_CHECK(n >= 0, "sampled softmax: negative row count ", n);
  if (n == 0) return 0.0;
  check_targets(targets, n, true);
  const int64_t s = num_samples_, p = dim_;
  const double total = rows_pass(weight, bias, h, targets, n, grad_scale, true);
  const float* dlogits = logits_.data();  // [N, S]
  const float* dtrue = true_.data();      // [N]

  if (dh != nullptr) {
    // dh [N, P] = dlogits [N, S] @ W_s [S, P] + dtrue * w_target
    cpu_gemm(false, false, n, p, s, 1.0f, dlogits, s, sample_w_.data(), p, 0.0f, dh, p);
    parallel_for(n, std::max<int64_t>(1, 16384 / p), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float g = dtrue[r];
        const float* w = weight + static_cast<int64_t>(targets[r]) * p;
        float* out = dh + r * p;
        for (int64_t d = 0; d < p; ++d) out[d] += g * w[d];
      }
    });
  }
  // dW_s [S, P] += dlogits^T [S, N] @ h [N, P]
  cpu_gemm(true, false, s, p, n, 1.0f, dlogits, s, h, p, 1.0f, sample_dw_.data(), p);
  // db_s [S] += column sums of dlogits (each thread owns columns, rows in order).
  parallel_for(s, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < n; ++r) {
      const float* row = dlogits + r * s;
      for (int64_t j = begin; j < end; ++j) sample_db_[j] += row[j];
    }
  });
  // Target rows: grad_w[slot(t_r)] += dtrue_r * h_r in row order (threads own columns).
  float* gw = grad_w_.data<float>();
  float* gb = grad_b_.data<float>();
  parallel_for(p, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < n; ++r) {
      const float g = dtrue[r];
      float* out = gw + static_cast<int64_t>(slot_[targets[r]]) * p;
      const float* x = h + r * p;
      for (int64_t d = begin; d < end; ++d) out[d] += g * x[d];
    }
  });
  for (int64_t r = 0; r < n; ++r) gb[slot_[targets[r]]] += dtrue[r];
  return total / static_cast<double>(n);
}

double SampledSoftmax::forward_loss(const float* weight, const float* bias, const float* h,
                                    const int32_t* targets, int64_t n) {
  ELMO_CHECK(!samples_.ids.empty(), "SampledSoftmax::forward_loss called before any begin_step");
  ELMO_CHECK(n >= 0, "sampled softmax: negative row count ", n);
  if (n == 0) return 0.0;
  check_targets(targets, n, false);
  return rows_pass(weight, bias, h, targets, n, 0.0f, false) / static_cast<double>(n);
}

void SampledSoftmax::finish_step(Parameter& weight, Parameter& bias) {
  ELMO_CHECK(step_open_, "SampledSoftmax::finish_step called without begin_step");
  ELMO_CHECK(weight.rows() == vocab_ && weight.row_dim() == dim_, "sampled softmax: parameter ",
             weight.name, " is ", weight.value.describe(), ", expected [", vocab_, ", ", dim_, "]");
  ELMO_CHECK(bias.rows() == vocab_ && bias.row_dim() == 1, "sampled softmax: parameter ", bias.name,
             " is ", bias.value.describe(), ", expected [", vocab_, "]");
  const int64_t u = static_cast<int64_t>(touched_.size()), p = dim_;
  float* gw = grad_w_.data<float>();
  float* gb = grad_b_.data<float>();
  // Sample rows after the target rows: a fixed summation order per id.
  parallel_for(num_samples_, std::max<int64_t>(1, 16384 / p), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      float* out = gw + static_cast<int64_t>(sample_slot_[j]) * p;
      const float* in = sample_dw_.data() + j * p;
      for (int64_t d = 0; d < p; ++d) out[d] += in[d];
      gb[sample_slot_[j]] += static_cast<float>(sample_db_[j]);
    }
  });
  weight.sparse_grad.ids = touched_;
  weight.sparse_grad.values = grad_w_.rows(0, u);  // [|U|, P]
  bias.sparse_grad.ids = touched_;
  bias.sparse_grad.values = grad_b_.rows(0, u);  // [|U|, 1]
  gathered_weight_ = gathered_bias_ = nullptr;
  step_open_ = false;
}

}  // namespace elmo
