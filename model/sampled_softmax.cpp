#include "model/sampled_softmax.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/embedding.h"
#include "kernels/pointwise.h"
#include "kernels/sampled_softmax.h"
#include "runtime/cpu_blas.h"
#include "runtime/cuda_memory.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "runtime/parallel.h"
#include "runtime/pinned.h"

namespace elmo {

namespace {
// f64 device buffers are i64 tensors (the Tensor runtime has no f64 dtype).
double* f64(const Tensor& t) { return reinterpret_cast<double*>(t.data<int64_t>()); }

// t grown (never shrunk) to at least n elements of dtype on device; contents undefined after
// a growth.
void ensure(Tensor& t, int64_t n, DType dtype, Device device) {
  n = std::max<int64_t>(n, 1);
  if (!t.defined() || t.numel() < n) t = Tensor::empty({n + n / 4}, dtype, device);
}

void upload(Device device, const Tensor& dst, const void* src, size_t bytes) {
  upload_to_device(device.index, dst.raw(), src, bytes);
}
}  // namespace

// Device buffers of the CUDA path (sizes in elements).
struct SampledSoftmax::Cuda {
  Tensor sample_ids;     // i32 [S]
  Tensor sample_rows;    // i32 [S] their rows in the weight and bias (set_row_slots)
  Tensor target_rows[kMaxSampledSoftmaxCalls];  // i32 [N] per call: rows of its targets
  Tensor log_expected;   // f32 [S]
  Tensor sample_w;       // [S, P] weight rows of the samples
  Tensor correction;     // [S] b[s_j] - log E(s_j)
  Tensor logits;         // [N, S] logits, then dlogits
  Tensor dtrue[kMaxSampledSoftmaxCalls];  // [N] per call: corrected true logits, then dtrue
  Tensor true_scratch;   // [N] forward_loss
  Tensor loss;           // [N] per-row NLL
  Tensor loss_sums;      // f64 [kMaxSampledSoftmaxCalls + 1]: per call, then forward_loss
  Tensor sample_dw;      // [S, P] accumulated dW of the sample rows
  Tensor sample_db;      // f64 [S]
  Tensor offsets;        // i32 [|U| + 1] plan: target positions of each touched row
  Tensor positions;      // i32 [total targets]
  Tensor sample_of_row;  // i32 [|U|] sample index of each touched row, -1 if none
};

SampledSoftmax::~SampledSoftmax() = default;

SampledSoftmax::SampledSoftmax(int64_t vocab, int64_t dim, int64_t samples, Device device)
    : vocab_(vocab), dim_(dim), num_samples_(samples), device_(device) {
  ELMO_CHECK(vocab > 0 && vocab <= std::numeric_limits<int32_t>::max(),
             "sampled softmax vocab size ", vocab, " must be in [1, 2^31)");
  ELMO_CHECK(dim > 0, "sampled softmax dim ", dim, " must be positive");
  ELMO_CHECK(samples > 0 && samples < vocab, "sampled softmax needs 0 < samples < vocab, got ",
             "samples = ", samples, " and vocab = ", vocab,
             "; lower the number of samples (or use the full softmax)");
  seen_.assign(static_cast<size_t>(vocab), 0);
  slot_.assign(static_cast<size_t>(vocab), -1);
  if (device.is_cuda()) cuda_ = std::make_unique<Cuda>();
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
  sample_log_uniform_unique(vocab_, num_samples_, rng, samples_, seen_);
  open_step(targets_per_direction);
}

void SampledSoftmax::begin_step(
    const SampleSet& samples,
    const std::vector<std::pair<const int32_t*, int64_t>>& targets_per_direction) {
  ELMO_CHECK(static_cast<int64_t>(samples.ids.size()) == num_samples_ &&
                 samples.log_expected.size() == samples.ids.size(),
             "sampled softmax: ", samples.ids.size(), " samples (", samples.log_expected.size(),
             " expected counts) given to a layer of ", num_samples_);
  for (size_t j = 0; j < samples.ids.size(); ++j)
    ELMO_CHECK(samples.ids[j] >= 0 && samples.ids[j] < vocab_, "sampled softmax: sample ", j,
               " (id ", samples.ids[j], ") is outside the vocabulary [0, ", vocab_, ")");
  bool distinct = true;
  for (const int32_t id : samples.ids) distinct = distinct && !seen_[id], seen_[id] = 1;
  for (const int32_t id : samples.ids) seen_[id] = 0;
  ELMO_CHECK(distinct, "sampled softmax: the ", samples.ids.size(), " samples are not distinct");
  for (const auto& [targets, n] : targets_per_direction) check_targets(targets, n, false);
  samples_ = samples;
  open_step(targets_per_direction);
}

void SampledSoftmax::open_step(
    const std::vector<std::pair<const int32_t*, int64_t>>& targets_per_direction) {
  for (const int32_t id : touched_) slot_[id] = -1;
  touched_.clear();

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

  target_counts_.clear();
  for (const auto& entry : targets_per_direction) target_counts_.push_back(entry.second);
  loss_sums_.clear();
  calls_.clear();
  gathered_weight_ = gathered_bias_ = nullptr;
  step_open_ = true;
  if (!grad_w_.defined() || grad_w_.size(0) < u) {
    const int64_t capacity = std::max<int64_t>(u, u + u / 4);
    grad_w_ = Tensor::empty({capacity, dim_}, DType::kF32, device_);  // [capacity, P]
    grad_b_ = Tensor::empty({capacity, 1}, DType::kF32, device_);     // [capacity, 1]
  }
  if (device_.is_cuda()) {
    begin_step_cuda(targets_per_direction);
    return;
  }
  std::memset(grad_w_.data<float>(), 0, sizeof(float) * static_cast<size_t>(u * dim_));
  std::memset(grad_b_.data<float>(), 0, sizeof(float) * static_cast<size_t>(u));
  sample_dw_.assign(static_cast<size_t>(num_samples_ * dim_), 0.0f);
  sample_db_.assign(static_cast<size_t>(num_samples_), 0.0);
}

void SampledSoftmax::begin_step_cuda(
    const std::vector<std::pair<const int32_t*, int64_t>>& targets_per_direction) {
  Cuda& d = *cuda_;
  cuda_set_device(device_.index);
  const int64_t s = num_samples_, p = dim_, u = static_cast<int64_t>(touched_.size());
  ELMO_CHECK(static_cast<int>(targets_per_direction.size()) <= kMaxSampledSoftmaxCalls,
             "sampled softmax on CUDA: ", targets_per_direction.size(), " target sets in one ",
             "step (at most ", kMaxSampledSoftmaxCalls, ")");
  // Plan of the target rows' summation: for every touched row, the positions (targets of all
  // sets concatenated in order) whose target it is, ascending (a stable counting sort).
  int64_t total = 0;
  for (const auto& entry : targets_per_direction) total += entry.second;
  std::vector<int32_t> offsets(static_cast<size_t>(u) + 1, 0), positions(static_cast<size_t>(total));
  for (const auto& [targets, n] : targets_per_direction)
    for (int64_t r = 0; r < n; ++r) ++offsets[slot_[targets[r]] + 1];
  for (int64_t i = 0; i < u; ++i) offsets[i + 1] += offsets[i];
  std::vector<int32_t> cursor(offsets.begin(), offsets.end() - 1);
  int32_t position = 0;
  for (const auto& [targets, n] : targets_per_direction)
    for (int64_t r = 0; r < n; ++r) positions[cursor[slot_[targets[r]]]++] = position++;
  std::vector<int32_t> sample_of_row(static_cast<size_t>(u), -1);
  for (int64_t j = 0; j < s; ++j) sample_of_row[sample_slot_[j]] = static_cast<int32_t>(j);

  ensure(d.sample_ids, s, DType::kI32, device_);
  ensure(d.sample_rows, s, DType::kI32, device_);
  ensure(d.log_expected, s, DType::kF32, device_);
  ensure(d.offsets, u + 1, DType::kI32, device_);
  ensure(d.positions, total, DType::kI32, device_);
  ensure(d.sample_of_row, u, DType::kI32, device_);
  upload(device_, d.sample_ids, samples_.ids.data(), sizeof(int32_t) * s);
  if (row_of_id_) {  // the rows each call reads, from the host copies of the ids
    std::vector<int32_t> rows(static_cast<size_t>(s));
    for (int64_t j = 0; j < s; ++j) rows[j] = row_of_id_[samples_.ids[j]];
    upload(device_, d.sample_rows, rows.data(), sizeof(int32_t) * s);
    for (size_t k = 0; k < targets_per_direction.size(); ++k) {
      const auto& [targets, n] = targets_per_direction[k];
      rows.resize(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) rows[r] = row_of_id_[targets[r]];
      ensure(d.target_rows[k], n, DType::kI32, device_);
      upload(device_, d.target_rows[k], rows.data(), sizeof(int32_t) * n);
    }
  } else {
    upload(device_, d.sample_rows, samples_.ids.data(), sizeof(int32_t) * s);
  }
  upload(device_, d.log_expected, samples_.log_expected.data(), sizeof(float) * s);
  upload(device_, d.offsets, offsets.data(), sizeof(int32_t) * offsets.size());
  upload(device_, d.positions, positions.data(), sizeof(int32_t) * positions.size());
  upload(device_, d.sample_of_row, sample_of_row.data(), sizeof(int32_t) * sample_of_row.size());
  ensure(d.sample_w, s * p, DType::kF32, device_);
  ensure(d.correction, s, DType::kF32, device_);
  ensure(d.sample_dw, s * p, DType::kF32, device_);
  ensure(d.sample_db, s, DType::kI64, device_);
  ensure(d.loss_sums, kMaxSampledSoftmaxCalls + 1, DType::kI64, device_);
  fill_floats_cuda(d.sample_dw.data<float>(), s * p, 0.0f);
  cuda_zero(d.sample_db.raw(), device_.index, sizeof(double) * static_cast<size_t>(s));
}

void SampledSoftmax::gather_samples_cuda(const float* weight, const float* bias) {
  if (gathered_weight_ == weight && gathered_bias_ == bias) return;
  Cuda& d = *cuda_;
  embedding_gather_cuda(weight, vocab_, dim_, d.sample_rows.data<int32_t>(), num_samples_,
                        d.sample_w.data<float>(), nullptr);
  sampled_softmax_corrections_cuda(bias, d.sample_rows.data<int32_t>(),
                                   d.log_expected.data<float>(), num_samples_,
                                   d.correction.data<float>());
  gathered_weight_ = weight;
  gathered_bias_ = bias;
}

void SampledSoftmax::forward_backward_cuda(const float* weight, const float* bias, const float* h,
                                           const int32_t* targets, int64_t n, float grad_scale,
                                           float* dh) {
  Cuda& d = *cuda_;
  const int k = static_cast<int>(calls_.size());
  ELMO_CHECK(k < static_cast<int>(target_counts_.size()) && target_counts_[k] == n,
             "sampled softmax on CUDA: forward_backward call ", k, " has ", n, " rows, but ",
             k < static_cast<int>(target_counts_.size())
                 ? str("target set ", k, " given to begin_step has ", target_counts_[k])
                 : str("begin_step was given only ", target_counts_.size(), " target sets"),
             " (each call must use the device copy of its begin_step targets, in order)");
  const Device dev = device_;
  const int64_t s = num_samples_, p = dim_;
  cuda_set_device(dev.index);
  gather_samples_cuda(weight, bias);
  ensure(d.logits, n * s, DType::kF32, dev);
  ensure(d.dtrue[k], n, DType::kF32, dev);
  ensure(d.loss, n, DType::kF32, dev);
  float* logits = d.logits.data<float>();  // [N, S]
  float* dtrue = d.dtrue[k].data<float>();  // [N]
  // logits [N, S] = h [N, P] @ W_s^T [P, S]
  gemm(dev, false, true, n, s, p, 1.0f, h, p, d.sample_w.data<float>(), p, 0.0f, logits, s);
  const int32_t* rows = row_of_id_ ? d.target_rows[k].data<int32_t>() : targets;
  sampled_softmax_target_logits_cuda(weight, bias, h, targets, n, p, samples_.tries, vocab_, dtrue,
                                     rows);
  SampledSoftmaxRowsParams params;
  params.rows = n;
  params.samples = s;
  params.grad_scale = grad_scale;
  params.compute_grad = true;
  sampled_softmax_rows_cuda(logits, dtrue, d.correction.data<float>(),
                            d.sample_ids.data<int32_t>(), targets, d.loss.data<float>(), params);
  sum_to_double_cuda(d.loss.data<float>(), n, f64(d.loss_sums) + k);
  if (dh != nullptr) {
    // dh [N, P] = dlogits [N, S] @ W_s [S, P] + dtrue * w_target
    gemm(dev, false, false, n, p, s, 1.0f, logits, s, d.sample_w.data<float>(), p, 0.0f, dh, p);
    add_scaled_table_rows_cuda(dh, dtrue, weight, rows, n, p);
  }
  // dW_s [S, P] += dlogits^T [S, N] @ h [N, P];  db_s [S] += column sums of dlogits
  gemm(dev, true, false, s, p, n, 1.0f, logits, s, h, p, 1.0f, d.sample_dw.data<float>(), p);
  column_sums_add_f64_cuda(logits, n, s, s, f64(d.sample_db));
  calls_.push_back({h, n});
}

void SampledSoftmax::gather_samples(const float* weight, const float* bias) {
  if (gathered_weight_ == weight && gathered_bias_ == bias) return;
  const int64_t s = num_samples_, p = dim_;
  sample_w_.resize(static_cast<size_t>(s * p));
  correction_.resize(static_cast<size_t>(s));
  parallel_for(s, std::max<int64_t>(1, 16384 / p), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t row = row_of_id_ ? row_of_id_[samples_.ids[j]] : samples_.ids[j];
      std::memcpy(sample_w_.data() + j * p, weight + row * p, sizeof(float) * p);
      correction_[j] = bias[row] - samples_.log_expected[j];
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
  const int32_t* rows = nullptr;
  if (row_of_id_) {
    target_rows_.resize(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) target_rows_[r] = row_of_id_[targets[r]];
    rows = target_rows_.data();
  }
  sampled_softmax_target_logits_cpu(weight, bias, h, targets, n, p, samples_.tries, vocab_,
                                    true_.data(), rows);
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
  forward_backward_deferred(weight, bias, h, targets, n, grad_scale, dh);
  if (n == 0) return 0.0;
  return loss_sums().back() / static_cast<double>(n);
}

std::vector<double> SampledSoftmax::loss_sums() {
  if (device_.is_cpu()) return loss_sums_;
  std::vector<double> out(calls_.size(), 0.0);
  if (out.empty()) return out;
  cuda_set_device(device_.index);
  cuda_copy(out.data(), Device::cpu(), cuda_->loss_sums.raw(), device_,
            sizeof(double) * out.size());  // synchronises
  for (size_t k = 0; k < calls_.size(); ++k)
    if (calls_[k].n == 0) out[k] = 0.0;  // a call without rows wrote no sum
  return out;
}

void SampledSoftmax::forward_backward_deferred(const float* weight, const float* bias,
                                               const float* h, const int32_t* targets, int64_t n,
                                               float grad_scale, float* dh) {
  ELMO_CHECK(step_open_, "SampledSoftmax::forward_backward called outside begin_step/finish_step");
  ELMO_CHECK(n >= 0, "sampled softmax: negative row count ", n);
  if (device_.is_cuda()) {
    if (n == 0) {
      calls_.push_back({h, 0});
      return;
    }
    forward_backward_cuda(weight, bias, h, targets, n, grad_scale, dh);
    return;
  }
  if (n == 0) {
    loss_sums_.push_back(0.0);
    return;
  }
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
        const int64_t row = row_of_id_ ? target_rows_[r] : targets[r];
        const float* w = weight + row * p;
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
  loss_sums_.push_back(total);
}

double SampledSoftmax::forward_loss(const float* weight, const float* bias, const float* h,
                                    const int32_t* targets, int64_t n) {
  ELMO_CHECK(!samples_.ids.empty(), "SampledSoftmax::forward_loss called before any begin_step");
  ELMO_CHECK(n >= 0, "sampled softmax: negative row count ", n);
  if (n == 0) return 0.0;
  if (device_.is_cpu()) {
    check_targets(targets, n, false);
    return rows_pass(weight, bias, h, targets, n, 0.0f, false) / static_cast<double>(n);
  }
  ELMO_CHECK(row_of_id_ == nullptr, "sampled softmax on CUDA: forward_loss reads rows by id; ",
             "a compacted table (set_row_slots) is not supported there");
  Cuda& d = *cuda_;
  const Device dev = device_;
  const int64_t s = num_samples_, p = dim_;
  cuda_set_device(dev.index);
  gather_samples_cuda(weight, bias);
  ensure(d.logits, n * s, DType::kF32, dev);
  ensure(d.true_scratch, n, DType::kF32, dev);
  ensure(d.loss, n, DType::kF32, dev);
  gemm(dev, false, true, n, s, p, 1.0f, h, p, d.sample_w.data<float>(), p, 0.0f,
       d.logits.data<float>(), s);
  sampled_softmax_target_logits_cuda(weight, bias, h, targets, n, p, samples_.tries, vocab_,
                                     d.true_scratch.data<float>());
  SampledSoftmaxRowsParams params;
  params.rows = n;
  params.samples = s;
  params.compute_grad = false;
  sampled_softmax_rows_cuda(d.logits.data<float>(), d.true_scratch.data<float>(),
                            d.correction.data<float>(), d.sample_ids.data<int32_t>(), targets,
                            d.loss.data<float>(), params);
  double* slot = f64(d.loss_sums) + kMaxSampledSoftmaxCalls;
  sum_to_double_cuda(d.loss.data<float>(), n, slot);
  double total = 0.0;
  cuda_copy(&total, Device::cpu(), slot, dev, sizeof(double));  // synchronises
  return total / static_cast<double>(n);
}

void SampledSoftmax::finish_step(Parameter& weight, Parameter& bias) {
  ELMO_CHECK(step_open_, "SampledSoftmax::finish_step called without begin_step");
  // A compacted table (set_row_slots) has its own number of rows.
  ELMO_CHECK((row_of_id_ || weight.rows() == vocab_) && weight.row_dim() == dim_,
             "sampled softmax: parameter ", weight.name, " is ", weight.value.describe(),
             ", expected [", vocab_, ", ", dim_, "]");
  ELMO_CHECK((row_of_id_ || bias.rows() == vocab_) && bias.row_dim() == 1,
             "sampled softmax: parameter ", bias.name, " is ", bias.value.describe(),
             ", expected [", vocab_, "]");
  const int64_t u = static_cast<int64_t>(touched_.size()), p = dim_;
  if (device_.is_cuda()) {
    finish_step_cuda();
    weight.sparse_grad.ids = touched_;
    weight.sparse_grad.values = grad_w_.rows(0, u);  // [|U|, P]
    bias.sparse_grad.ids = touched_;
    bias.sparse_grad.values = grad_b_.rows(0, u);  // [|U|, 1]
    gathered_weight_ = gathered_bias_ = nullptr;
    step_open_ = false;
    return;
  }
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

void SampledSoftmax::finish_step_cuda() {
  ELMO_CHECK(calls_.size() == target_counts_.size(), "sampled softmax on CUDA: finish_step after ",
             calls_.size(), " forward_backward calls, but begin_step was given ",
             target_counts_.size(), " target sets (one call per set is needed)");
  Cuda& d = *cuda_;
  cuda_set_device(device_.index);
  const float* h[kMaxSampledSoftmaxCalls] = {};
  const float* dtrue[kMaxSampledSoftmaxCalls] = {};
  int64_t rows[kMaxSampledSoftmaxCalls] = {};
  for (size_t k = 0; k < calls_.size(); ++k) {
    h[k] = calls_[k].h;
    rows[k] = calls_[k].n;
    dtrue[k] = calls_[k].n > 0 ? d.dtrue[k].data<float>() : nullptr;
  }
  sampled_softmax_touched_rows_cuda(h, dtrue, rows, static_cast<int>(calls_.size()), dim_,
                                    d.offsets.data<int32_t>(), d.positions.data<int32_t>(),
                                    d.sample_of_row.data<int32_t>(), d.sample_dw.data<float>(),
                                    f64(d.sample_db), static_cast<int64_t>(touched_.size()),
                                    grad_w_.data<float>(), grad_b_.data<float>());
}

}  // namespace elmo
