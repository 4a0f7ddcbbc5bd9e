#include "model/sampled_softmax.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/embedding.h"
#include "kernels/pointwise.h"
#include "kernels/sampled_softmax.h"
#include "runtime/cuda_memory.h"
#include "runtime/error.h"
#include "runtime/gemm.h"

namespace elmo {

namespace {
// Target sets (directions) one step may have: each is a segment of the touched-row sum.
constexpr int kMaxCalls = kMaxRowSumSegments;

// f64 buffers are i64 tensors (the Tensor runtime has no f64 dtype).
double* f64(const Tensor& t) { return reinterpret_cast<double*>(t.data<int64_t>()); }

// t grown (never shrunk) to at least n elements of dtype on device; contents undefined after
// a growth.
void ensure(Tensor& t, int64_t n, DType dtype, Device device) {
  n = std::max<int64_t>(n, 1);
  if (!t.defined() || t.numel() < n) t = Tensor::empty({n + n / 4}, dtype, device);
}

// Host vector readable on `device` (itself on the CPU, an upload into `staging` on CUDA).
template <typename T>
const T* on_device(Device device, const std::vector<T>& host, Tensor& staging) {
  return static_cast<const T*>(host_data_on(device, host.data(), sizeof(T) * host.size(), staging));
}
}  // namespace

// Buffers on the layer's device (sizes in elements).
struct SampledSoftmax::Buffers {
  // This step's host data as the device reads it, and its device copies (unused on the CPU).
  const int32_t* sample_ids = nullptr;     // [S]
  const float* log_expected = nullptr;     // [S]
  const int32_t* offsets = nullptr;        // [|U| + 1] the plan of the touched rows
  const int32_t* positions = nullptr;      // [total targets]
  const int32_t* sample_of_row = nullptr;  // [|U|]
  // A compacted table (set_row_slots): the samples' rows and each call's target rows (null:
  // the rows are the ids), with their host copies.
  const int32_t* sample_rows = nullptr;            // [S]
  const int32_t* target_rows[kMaxCalls] = {};      // [N] per call
  std::vector<int32_t> host_sample_rows;           // [S]
  std::vector<int32_t> host_target_rows[kMaxCalls];
  Tensor staging[6 + kMaxCalls];
  Tensor sample_w;          // [S, P] weight rows of the samples
  Tensor correction;        // [S] b[s_j] - log E(s_j)
  Tensor logits;            // [N, S] logits, then dlogits
  Tensor dtrue[kMaxCalls];  // [N] per call: corrected true logits, then dtrue
  Tensor true_scratch;      // [N] forward_loss
  Tensor loss;              // [N] per-row NLL
  Tensor loss_sums;         // f64 [kMaxCalls + 1]: per call, then forward_loss
  Tensor sample_dw;         // [S, P] accumulated dW of the sample rows
  Tensor sample_db;         // f64 [S] accumulated db of the sample rows
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
  buf_ = std::make_unique<Buffers>();
}

void SampledSoftmax::use_device() const {
  if (device_.is_cuda()) cuda_set_device(device_.index);
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
  ELMO_CHECK(static_cast<int>(targets_per_direction.size()) <= kMaxCalls,
             "sampled softmax: ", targets_per_direction.size(),
             " target sets in one step (at most ", kMaxCalls, ")");
  use_device();
  for (const int32_t id : plan_.unique_ids) slot_[id] = -1;

  // U = sorted unique(samples ∪ targets), and for every id of U the positions (targets of all
  // sets concatenated in order) whose target it is, ascending.
  build_row_sum_plan(targets_per_direction, vocab_, plan_, samples_.ids, "sampled softmax");
  const std::vector<int32_t>& touched = plan_.unique_ids;
  const int64_t u = static_cast<int64_t>(touched.size()), s = num_samples_, p = dim_;
  for (int64_t i = 0; i < u; ++i) slot_[touched[i]] = static_cast<int32_t>(i);
  sample_of_row_.assign(static_cast<size_t>(u), -1);
  for (int64_t j = 0; j < s; ++j) sample_of_row_[slot_[samples_.ids[j]]] = static_cast<int32_t>(j);

  target_counts_.clear();
  step_targets_.clear();
  for (const auto& [targets, n] : targets_per_direction) {
    target_counts_.push_back(n);
    step_targets_.insert(step_targets_.end(), targets, targets + n);
  }
  calls_.clear();
  gathered_weight_ = gathered_bias_ = nullptr;
  step_open_ = true;
  if (!grad_w_.defined() || grad_w_.size(0) < u) {
    const int64_t capacity = std::max<int64_t>(u, u + u / 4);
    grad_w_ = Tensor::empty({capacity, dim_}, DType::kF32, device_);  // [capacity, P]
    grad_b_ = Tensor::empty({capacity, 1}, DType::kF32, device_);     // [capacity, 1]
  }

  Buffers& d = *buf_;
  d.sample_ids = on_device(device_, samples_.ids, d.staging[0]);
  d.log_expected = on_device(device_, samples_.log_expected, d.staging[1]);
  d.offsets = on_device(device_, plan_.offsets, d.staging[2]);
  d.positions = on_device(device_, plan_.positions, d.staging[3]);
  d.sample_of_row = on_device(device_, sample_of_row_, d.staging[4]);
  d.sample_rows = d.sample_ids;
  for (int k = 0; k < kMaxCalls; ++k) d.target_rows[k] = nullptr;
  if (row_of_id_) {  // the rows each call reads, from the host copies of the ids
    d.host_sample_rows.resize(static_cast<size_t>(s));
    for (int64_t j = 0; j < s; ++j) d.host_sample_rows[j] = row_of_id_[samples_.ids[j]];
    d.sample_rows = on_device(device_, d.host_sample_rows, d.staging[5]);
    for (size_t k = 0; k < targets_per_direction.size(); ++k) {
      const auto& [targets, n] = targets_per_direction[k];
      std::vector<int32_t>& rows = d.host_target_rows[k];
      rows.resize(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) rows[r] = row_of_id_[targets[r]];
      d.target_rows[k] = on_device(device_, rows, d.staging[6 + k]);
    }
  }
  ensure(d.sample_w, s * p, DType::kF32, device_);
  ensure(d.correction, s, DType::kF32, device_);
  ensure(d.sample_dw, s * p, DType::kF32, device_);
  ensure(d.sample_db, s, DType::kI64, device_);
  ensure(d.loss_sums, kMaxCalls + 1, DType::kI64, device_);
  fill_floats(device_, d.sample_dw.data<float>(), s * p, 0.0f);
  d.sample_db.rows(0, s).zero_();
}

void SampledSoftmax::gather_samples(const float* weight, const float* bias) {
  if (gathered_weight_ == weight && gathered_bias_ == bias) return;
  Buffers& d = *buf_;
  embedding_gather(device_, weight, vocab_, dim_, d.sample_rows, num_samples_,
                   d.sample_w.data<float>());
  sampled_softmax_corrections(device_, bias, d.sample_rows, d.log_expected, num_samples_,
                              d.correction.data<float>());
  gathered_weight_ = weight;
  gathered_bias_ = bias;
}

void SampledSoftmax::rows_pass(const float* weight, const float* bias, const float* h,
                               const int32_t* targets, const int32_t* target_rows, int64_t n,
                               float grad_scale, bool compute_grad, float* true_logits,
                               double* loss_sum) {
  Buffers& d = *buf_;
  const int64_t s = num_samples_, p = dim_;
  gather_samples(weight, bias);
  ensure(d.logits, n * s, DType::kF32, device_);
  ensure(d.loss, n, DType::kF32, device_);
  float* logits = d.logits.data<float>();  // [N, S]
  // logits [N, S] = h [N, P] @ W_s^T [P, S]
  gemm(device_, false, true, n, s, p, 1.0f, h, p, d.sample_w.data<float>(), p, 0.0f, logits, s);
  sampled_softmax_target_logits(device_, weight, bias, h, targets, n, p, samples_.tries, vocab_,
                                true_logits, target_rows);
  SampledSoftmaxRowsParams params;
  params.rows = n;
  params.samples = s;
  params.grad_scale = grad_scale;
  params.compute_grad = compute_grad;
  sampled_softmax_rows(device_, logits, true_logits, d.correction.data<float>(), d.sample_ids,
                       targets, d.loss.data<float>(), params);
  sum_to_double(device_, d.loss.data<float>(), n, loss_sum);
}

double SampledSoftmax::forward_backward(const float* weight, const float* bias, const float* h,
                                        const int32_t* targets, int64_t n, float grad_scale,
                                        float* dh) {
  forward_backward_deferred(weight, bias, h, targets, n, grad_scale, dh);
  if (n == 0) return 0.0;
  return loss_sums().back() / static_cast<double>(n);
}

std::vector<double> SampledSoftmax::loss_sums() {
  std::vector<double> out(calls_.size(), 0.0);
  if (out.empty()) return out;
  use_device();
  const int64_t calls = static_cast<int64_t>(calls_.size());
  const Tensor host = buf_->loss_sums.rows(0, calls).to(Device::cpu());  // CUDA: synchronises
  std::memcpy(out.data(), host.raw(), sizeof(double) * out.size());
  for (size_t k = 0; k < calls_.size(); ++k)
    if (calls_[k].n == 0) out[k] = 0.0;  // a call without rows wrote no sum
  return out;
}

void SampledSoftmax::forward_backward_deferred(const float* weight, const float* bias,
                                               const float* h, const int32_t* targets, int64_t n,
                                               float grad_scale, float* dh) {
  ELMO_CHECK(step_open_, "SampledSoftmax::forward_backward called outside begin_step/finish_step");
  ELMO_CHECK(n >= 0, "sampled softmax: negative row count ", n);
  const int k = static_cast<int>(calls_.size());
  ELMO_CHECK(k < static_cast<int>(target_counts_.size()) && target_counts_[k] == n,
             "sampled softmax: forward_backward call ", k, " has ", n, " rows, but ",
             k < static_cast<int>(target_counts_.size())
                 ? str("target set ", k, " given to begin_step has ", target_counts_[k])
                 : str("begin_step was given only ", target_counts_.size(), " target sets"),
             " (each call must use its begin_step targets, in order)");
  if (n == 0) {
    calls_.push_back({h, 0});
    return;
  }
  if (device_.is_cpu()) {  // host targets: check them against begin_step's set k
    check_targets(targets, n, true);
    int64_t first = 0;
    for (int i = 0; i < k; ++i) first += target_counts_[i];
    ELMO_CHECK(std::equal(targets, targets + n, step_targets_.begin() + first),
               "sampled softmax: the targets of forward_backward call ", k,
               " differ from target set ", k, " given to begin_step");
  }
  use_device();
  Buffers& d = *buf_;
  const int64_t s = num_samples_, p = dim_;
  ensure(d.dtrue[k], n, DType::kF32, device_);
  float* dtrue = d.dtrue[k].data<float>();  // [N]
  const int32_t* rows = d.target_rows[k];  // null: the targets are the rows
  rows_pass(weight, bias, h, targets, rows, n, grad_scale, true, dtrue, f64(d.loss_sums) + k);
  const float* dlogits = d.logits.data<float>();  // [N, S]
  if (dh != nullptr) {
    // dh [N, P] = dlogits [N, S] @ W_s [S, P] + dtrue * w_target
    gemm(device_, false, false, n, p, s, 1.0f, dlogits, s, d.sample_w.data<float>(), p, 0.0f, dh,
         p);
    add_scaled_table_rows(device_, dh, dtrue, weight, rows ? rows : targets, n, p);
  }
  // dW_s [S, P] += dlogits^T [S, N] @ h [N, P];  db_s [S] += column sums of dlogits
  gemm(device_, true, false, s, p, n, 1.0f, dlogits, s, h, p, 1.0f, d.sample_dw.data<float>(), p);
  sampled_softmax_sample_bias_grad(device_, dlogits, n, s, f64(d.sample_db));
  calls_.push_back({h, n});
}

double SampledSoftmax::forward_loss(const float* weight, const float* bias, const float* h,
                                    const int32_t* targets, int64_t n) {
  ELMO_CHECK(!samples_.ids.empty(), "SampledSoftmax::forward_loss called before any begin_step");
  ELMO_CHECK(n >= 0, "sampled softmax: negative row count ", n);
  if (n == 0) return 0.0;
  if (device_.is_cpu()) check_targets(targets, n, false);  // host targets
  ELMO_CHECK(row_of_id_ == nullptr || device_.is_cpu(),
             "sampled softmax on CUDA: forward_loss reads rows by id; a compacted table ",
             "(set_row_slots) is not supported there");
  use_device();
  Buffers& d = *buf_;
  ensure(d.true_scratch, n, DType::kF32, device_);
  const int32_t* rows = nullptr;
  std::vector<int32_t> host_rows;
  if (row_of_id_) {  // host targets (CPU)
    host_rows.resize(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) host_rows[r] = row_of_id_[targets[r]];
    rows = host_rows.data();
  }
  rows_pass(weight, bias, h, targets, rows, n, 1.0f, false, d.true_scratch.data<float>(),
            f64(d.loss_sums) + kMaxCalls);
  const Tensor host =
      d.loss_sums.rows(kMaxCalls, kMaxCalls + 1).to(Device::cpu());  // CUDA: synchronises
  return f64(host)[0] / static_cast<double>(n);
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
  ELMO_CHECK(calls_.size() == target_counts_.size(), "sampled softmax: finish_step after ",
             calls_.size(), " forward_backward calls, but begin_step was given ",
             target_counts_.size(), " target sets (one call per set is needed)");
  use_device();
  Buffers& d = *buf_;
  const int64_t u = static_cast<int64_t>(plan_.unique_ids.size()), p = dim_;
  // Per touched id: the target rows dtrue * h (weight) and dtrue (bias) in call and row order,
  // then the sample's accumulated row.
  RowSumSegment w_rows[kMaxCalls], b_rows[kMaxCalls];
  for (size_t k = 0; k < calls_.size(); ++k) {
    const float* dtrue = calls_[k].n > 0 ? d.dtrue[k].data<float>() : nullptr;
    w_rows[k] = {calls_[k].h, dtrue, calls_[k].n};
    b_rows[k] = {dtrue, nullptr, calls_[k].n};
  }
  const int calls = static_cast<int>(calls_.size());
  RowSumTail tail;
  tail.index = d.sample_of_row;
  tail.values = d.sample_dw.data<float>();
  row_sum_by_plan(device_, w_rows, calls, p, d.offsets, d.positions, u, grad_w_.data<float>(),
                  tail);
  tail.values = nullptr;
  tail.values_f64 = f64(d.sample_db);
  row_sum_by_plan(device_, b_rows, calls, 1, d.offsets, d.positions, u, grad_b_.data<float>(),
                  tail);
  weight.sparse_grad.ids = plan_.unique_ids;
  weight.sparse_grad.values = grad_w_.rows(0, u);  // [|U|, P]
  bias.sparse_grad.ids = plan_.unique_ids;
  bias.sparse_grad.values = grad_b_.rows(0, u);  // [|U|, 1]
  gathered_weight_ = gathered_bias_ = nullptr;
  step_open_ = false;
}

}  // namespace elmo
