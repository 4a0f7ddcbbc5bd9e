// Sampled softmax layer of the biLM (DESIGN.md §4), on the CPU or one CUDA device.
//
// One softmax weight [V, P] and bias [V] shared by both directions. Per training step:
//   begin_step        draws S unique log-uniform ids (shared by the whole batch and both
//                     directions) and fixes the touched rows U = sorted unique(targets ∪ samples)
//   forward_backward  once per direction: NLL of every row over [true, sampled...] with the
//                     log-expected-count correction and accidental hits masked; dh, and the
//                     weight/bias gradient rows of U accumulated inside the layer
//   finish_step       hands the summed rows to the parameters as SparseRows over U
//
// Scale convention: forward_backward returns the mean NLL over its N rows (unscaled) and
// produces gradients of grad_scale * sum_r NLL_r. The trainer wants gradients of
// loss * T with loss = 0.5 * (mean_fwd + mean_bwd), so it passes grad_scale = 0.5 * T / N
// per direction.
//
// Per direction: logits [N, S] = h @ W_s^T (one GEMM over the gathered sample rows), true
// logits by dot products, one fused row pass (kernels/sampled_softmax.h), then
// dh = dlogits @ W_s + dtrue * w_target, dW_s += dlogits^T @ h and db_s += column sums of dlogits.
// finish_step sums the touched rows' gradients in one planned row sum (kernels/row_sum.h): per
// id the target rows dtrue * h in call order, then row order, then the sample's own row; the
// plan is built on the host in begin_step (from the host copies of the targets), so the sums
// are deterministic and the same on every device. Buffers grow to the largest step and are
// reused.
//
// One code path for the CPU and one CUDA device (given to the constructor): every buffer lives
// on the device, the kernels' entry points pick the backend; on CUDA the host data (samples,
// plan) is uploaded through pinned memory and everything runs on the current stream. Call k
// must pass begin_step's k-th target set (its device copy on CUDA) and keep h unchanged until
// finish_step. Losses stay on the device until loss_sums() (one synchronisation per step);
// forward_backward and forward_loss read theirs back at once.
// What it is not: the full softmax used for evaluation (model/full_softmax.h).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/log_uniform_sampler.h"
#include "kernels/row_sum.h"
#include "model/parameters.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace elmo {

class SampledSoftmax {
 public:
  // 0 < samples < vocab (elmo::Error otherwise, naming the values), dim > 0. The pointers
  // given to forward_backward / forward_loss live on `device`.
  SampledSoftmax(int64_t vocab, int64_t dim, int64_t samples, Device device = Device::cpu());
  ~SampledSoftmax();
  SampledSoftmax(const SampledSoftmax&) = delete;
  SampledSoftmax& operator=(const SampledSoftmax&) = delete;

  // Draws this step's samples from rng (stream kRngSampler is the caller's choice) and fixes
  // U from the targets of every direction ({pointer, count} per direction, at most 8; HOST
  // memory on every device). Zeroes the accumulated gradients. Every target must be in [0, V).
  void begin_step(Rng& rng,
                  const std::vector<std::pair<const int32_t*, int64_t>>& targets_per_direction);
  // The same with samples drawn beforehand (model/negative_sampler.h): S distinct ids in
  // [0, V) with their log expected counts, as sample_log_uniform_unique returns them (sizes, range
  // and distinctness are checked).
  void begin_step(const SampleSet& samples,
                  const std::vector<std::pair<const int32_t*, int64_t>>& targets_per_direction);

  // One direction. weight [V, P], bias [V], h [N, P], targets [N]: call k passes begin_step's
  // k-th target set (checked on the CPU; on CUDA its device copy, of which only n is checked).
  // Returns the mean NLL over the N rows; writes dh [N, P] = grad_scale * d(sum NLL)/dh and
  // accumulates grad_scale * d(sum NLL)/d(weight, bias) for the rows of U. dh may be null
  // (no input gradient wanted). The weight and bias must not change between begin_step and
  // finish_step (the sample rows are gathered once per step), nor h until finish_step.
  double forward_backward(const float* weight, const float* bias, const float* h,
                          const int32_t* targets, int64_t n, float grad_scale, float* dh);
  // The same without reading the loss back: it is kept (on the device) for loss_sums().
  void forward_backward_deferred(const float* weight, const float* bias, const float* h,
                                 const int32_t* targets, int64_t n, float grad_scale, float* dh);
  // Summed (not mean) NLL of every forward_backward call since begin_step, in call order.
  // CUDA: one synchronisation.
  std::vector<double> loss_sums();

  // Loss only (no gradient, nothing accumulated) over the current samples: mean NLL over the
  // N rows. Targets need not have been passed to begin_step; they must be in [0, V) (checked
  // on the CPU only: on CUDA the caller checks).
  double forward_loss(const float* weight, const float* bias, const float* h,
                      const int32_t* targets, int64_t n);

  // weight.sparse_grad = {U, [|U|, P]}, bias.sparse_grad = {U, [|U|, 1]} (replacing what was
  // there). The value tensors are views of this layer's buffers: valid until the next
  // begin_step; copy them to keep them longer.
  void finish_step(Parameter& weight, Parameter& bias);

  // Rows of the weight and bias that hold each id: a host map [V] (model/row_layout.h RowSlots;
  // every id the step reads must map to a row), or null (row = id, the default). Read at
  // begin_step and by forward_loss; ids, samples and gradients stay vocabulary ids.
  // forward_loss on CUDA needs the identity.
  void set_row_slots(const int32_t* slots) { row_of_id_ = slots; }

  const SampleSet& samples() const { return samples_; }
  const std::vector<int32_t>& touched_ids() const { return plan_.unique_ids; }  // U, ascending
  int64_t vocab() const { return vocab_; }
  int64_t dim() const { return dim_; }
  int64_t num_samples() const { return num_samples_; }
  Device device() const { return device_; }

 private:
  struct Buffers;  // on the layer's device (sampled_softmax.cpp)
  void check_targets(const int32_t* targets, int64_t n, bool must_be_touched) const;
  // The rest of begin_step once samples_ holds the step's samples: U, the slots, the buffers.
  void open_step(const std::vector<std::pair<const int32_t*, int64_t>>& targets_per_direction);
  void use_device() const;  // CUDA: makes device_ the calling thread's current device
  void gather_samples(const float* weight, const float* bias);
  // logits [N, S] and true_logits [N] filled and run through the row pass; the summed NLL goes
  // to loss_sum (device memory). target_rows: the targets' rows in weight and bias (null: the ids).
  void rows_pass(const float* weight, const float* bias, const float* h, const int32_t* targets,
                 const int32_t* target_rows, int64_t n, float grad_scale, bool compute_grad,
                 float* true_logits, double* loss_sum);

  int64_t vocab_, dim_, num_samples_;
  Device device_;
  std::unique_ptr<Buffers> buf_;
  std::vector<int64_t> target_counts_;  // rows of each target set given to begin_step
  std::vector<int32_t> step_targets_;   // those sets, concatenated (host)
  struct Call {
    const float* h;
    int64_t n;
  };
  std::vector<Call> calls_;  // forward_backward calls since begin_step
  SampleSet samples_;
  std::vector<uint8_t> seen_;           // [V] sampler scratch, all zero between calls
  std::vector<int32_t> slot_;           // [V] index in U of each id, -1 outside U
  RowSumPlan plan_;                     // U = plan_.unique_ids and the target rows of each
  std::vector<int32_t> sample_of_row_;  // [|U|] sample index of each touched row, -1 if none
  bool step_open_ = false;
  const int32_t* row_of_id_ = nullptr;      // set_row_slots
  const float* gathered_weight_ = nullptr;  // weight whose sample rows are in the buffers
  const float* gathered_bias_ = nullptr;
  Tensor grad_w_;  // [capacity, P]; rows [0, |U|) = dW of U
  Tensor grad_b_;  // [capacity, 1]
};

}  // namespace elmo
