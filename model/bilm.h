// BiLM: the whole ELMo-style language model on one device (the CPU or one CUDA device),
// composed of the pieces in model/: embedding -> per direction an LSTMP stack -> shared softmax
// (sampled or full).
//
// What it is: parameter registration and initialisation, one training step (forward, loss,
// backward into the parameters' gradients), evaluation with the full softmax, and layer
// representations for embedding extraction. What it is not: the optimizer (model/optimizer.h),
// the data pipeline (io/) or the training loop (app/).
//
// Batches come row-major [B, T] in host memory (as the batcher packs them); internally
// activations are time-major [T, B, .] so each step's rows are contiguous. Parameters, carried
// states and returned representations live on the model's device.
//
// CUDA: every call runs on the caller's current stream and two non-blocking streams of its own,
// one per direction (fork/join by events: the call's work is ordered after what the caller issued
// before and before what it issues after). Token ids are uploaded through pinned memory; the
// sampler, the touched-row set and the per-id summation plans are computed on the host while
// the device runs the LSTMs. The one host synchronisation of train_step is the read-back of the
// loss at its end (evaluate: of the NLL sum). GEMMs use options().precision.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/full_softmax.h"
#include "model/lstm_layer.h"
#include "model/parameters.h"
#include "model/row_layout.h"
#include "runtime/gemm.h"
#include "runtime/rng.h"

namespace elmo {

struct BilmShape {
  int64_t vocab = 0;
  int64_t embedding_dim = 0;  // E (= P with projection, = C without)
  int64_t cell_size = 0;      // C
  int64_t proj_dim = 0;       // P (0 = plain LSTM)
  int64_t layers = 2;         // L
  float cell_clip = 3.0f;     // <= 0: off
  float proj_clip = 3.0f;     // <= 0: off
  bool skip_connections = true;
  bool bidirectional = true;

  int64_t hidden() const { return proj_dim > 0 ? proj_dim : cell_size; }  // H
  int directions() const { return bidirectional ? 2 : 1; }
};

enum class SoftmaxKind { kSampled, kFull };

struct BilmTrainOptions {
  SoftmaxKind softmax = SoftmaxKind::kSampled;
  int64_t samples = 8192;  // S, sampled softmax only
  float dropout = 0.0f;
  uint64_t seed = 0;       // dropout masks: philox(seed, dropout_stream(step, site))
  // GEMM precision on CUDA (runtime/gemm.h: fp32, TF32, bf16 inputs with f32 accumulation and
  // f32 master weights). The CPU always computes in f32.
  GemmPrecision precision = GemmPrecision::kFp32;
  // How the LSTM layers run their recurrence (model/lstm_layer.h; config train.lstm_kernel):
  // kAuto is the standard path until the persistent kernels have been checked on a GPU.
  LstmKernel lstm_kernel = LstmKernel::kAuto;
};

// Starting values of the parameters (config model.init_scale, model.embedding_init_scale,
// model.forget_bias, model.softmax_bias_init).
struct BilmInit {
  float init_scale = 0.05f;
  float embedding_scale = 1.0f;
  float forget_bias = 1.0f;           // bilm-tf's; the TF PTB tutorial's cell uses 0
  bool uniform_softmax_bias = false;  // true: uniform(+-init_scale), as every TF variable
};

// Carried LSTM state of one direction: h [L, B, H] and c [L, B, C] (pre-residual), on the
// model's device.
struct LstmState {
  Tensor h, c;
  int64_t rows() const { return h.defined() ? h.size(1) : 0; }
};

// One direction's batch, row-major [B, T]. In a distributed step the B rows are rows
// [row_offset, row_offset + B) of a global batch of global_rows (0 = B): the loss is then
// normalised by the global batch and dropout masks follow the global rows, so the gradients of
// all ranks sum to those of one rank holding the whole batch.
struct TokenBatch {
  int64_t rows = 0, steps = 0;
  const int32_t* inputs = nullptr;
  const int32_t* targets = nullptr;
  int64_t global_rows = 0;
  int64_t row_offset = 0;
};

// Element-wise sums over the ranks of a distributed run (every rank makes the same calls in the
// same order; the result is the same on every rank). BiLM::evaluate of a sharded model uses it.
class RankSum {
 public:
  virtual ~RankSum() = default;
  virtual void sum(float* data, int64_t count) = 0;
  virtual void sum(double* data, int64_t count) = 0;
};

struct TrainStepResult {
  double loss = 0.0;              // 0.5 * (mean_fwd + mean_bwd), or mean_fwd when forward-only
  double nll[2] = {0.0, 0.0};     // mean NLL per direction over this batch's rows (not global)
};

class BiLM {
 public:
  // Parameters are created (zero) on `device`. `layouts` (model/row_layout.h) says which rows of
  // the embedding and the softmax this process stores: the default stores every row at its id;
  // a rank of a distributed run stores the hot head, its own tail rows and a step cache, and
  // places the rows it fetched for a step in row_slots() before the step trains. A sharded
  // softmax needs the sampled softmax (the full softmax reads every row).
  BiLM(const BilmShape& shape, const BilmTrainOptions& options, Device device = Device::cpu(),
       const TableLayouts& layouts = TableLayouts{});
  ~BiLM();
  BiLM(const BiLM&) = delete;
  BiLM& operator=(const BiLM&) = delete;

  const BilmShape& shape() const { return shape_; }
  const BilmTrainOptions& options() const { return options_; }
  // Table groups: the embedding, and the softmax weight and bias (one map for both).
  enum TableGroup { kEmbeddingRows = 0, kSoftmaxRows = 1 };
  RowSlots& row_slots(TableGroup group) { return slots_[group]; }
  const RowSlots& row_slots(TableGroup group) const { return slots_[group]; }
  // Every row of both tables is stored here (no sharded layout): evaluate and representations
  // need it.
  // The layout of a table parameter ("embedding.weight", "softmax.weight", "softmax.bias");
  // null for any other name.
  const RowLayout* table_layout(const std::string& name) const;
  bool holds_every_row() const {
    return !slots_[0].layout().is_sharded() && !slots_[1].layout().is_sharded();
  }
  Device device() const { return device_; }
  ParameterStore& params() { return params_; }
  const ParameterStore& params() const { return params_; }

  // Uniform(+-init_scale) LSTM and softmax weights, LSTM biases 0 but the forget gate's
  // (init.forget_bias), softmax bias 0 or uniform(+-init_scale), embedding uniform
  // (+-embedding_scale); all from Rng(seed, kRngInit) in parameter order, the softmax bias
  // last (the same values on every device, and in every layout: a sharded table draws every
  // row and keeps its own).
  void init(uint64_t seed, const BilmInit& init);
  // = init(seed, {init_scale, embedding_scale}): forget bias 1, softmax bias 0.
  void init(uint64_t seed, float init_scale, float embedding_scale);

  LstmState zero_state(int64_t rows) const;  // on the model's device

  // Forward + loss + backward for both directions (direction 1 only when bidirectional).
  // Gradients (of loss x T) are written into params() (dense .grad and .sparse_grad); the
  // carried states are advanced to the end of the batch. The sampled softmax's samples, shared
  // by the directions, come from the model's sampler: the ones plan_step(step) drew, else drawn
  // now.
  TrainStepResult train_step(const TokenBatch* batches, LstmState* states, uint64_t step);
  // The same with the sampler's stream held by the caller (tests that drive several models with
  // one stream): the model's sampler continues from `sampler`'s position (plans are dropped) and
  // `sampler` is left where the step left it.
  TrainStepResult train_step(const TokenBatch* batches, LstmState* states, uint64_t step,
                             Rng& sampler);

  // What train_step(step) will sample, drawn now from the model's sampler: the sampled
  // softmax's negative samples (null with the full softmax, which uses every row). Steps are
  // planned in order, from the next one to train (a data-parallel rank plans step k + 1 before
  // step k trains, to fetch its softmax rows meanwhile), and each step then uses exactly what
  // was planned for it: planning changes when samples are drawn, never which
  // (model/negative_sampler.h). The ids stay valid until that step trains.
  const std::vector<int32_t>* plan_step(uint64_t step);
  // The sampler's position after the steps trained (planned draws not counted): what a
  // checkpoint stores. It starts at Rng(options().seed, kRngSampler); set_sampler_state
  // continues from a stored position and drops any plan.
  RngState sampler_state() const;
  void set_sampler_state(const RngState& state);

  // Full-softmax NLL of one direction over every position of the batch whose target is not
  // kIgnoreTarget, no dropout; advances the state through all `steps` positions. The two
  // directions may be evaluated concurrently from two host threads. position_nll (optional,
  // host [rows, steps] like batch.targets) receives each position's NLL, the terms of the
  // returned sum (NaN where the target is kIgnoreTarget).
  //
  // A model holding only a rank's rows of its tables (a sharded layout) evaluates together with
  // the other ranks through `ranks` (collective: every rank calls it with the same batch, one
  // direction at a time): each input's embedding row comes from the rank that holds it (the hot
  // head from rank 0), summed over ranks; each rank scores the softmax rows it holds (rank 0 the
  // hot head too), and the per-position log-sum-exp parts and the target's logit are combined
  // in rank order, so every rank gets the same NLLs: one rank's up to float summation order.
  NllSum evaluate(int direction, const TokenBatch& batch, LstmState& state,
                  double* position_nll = nullptr, RankSum* ranks = nullptr);

  // Layer representations of one direction for rows x steps inputs (no dropout):
  // out[0] = embeddings [T, B, E], out[l + 1] = output of layer l [T, B, H] (with residual),
  // on the model's device.
  std::vector<Tensor> representations(int direction, const int32_t* inputs, int64_t rows,
                                       int64_t steps, LstmState& state);

  static const char* direction_name(int direction) { return direction == 0 ? "fwd" : "bwd"; }

  // Called by train_step's backward as soon as the gradients of LSTM layer `layer` of
  // `direction` are complete (CPU: computed, from that direction's thread; CUDA: queued on the
  // direction's stream, which is current during the call). Directions call it concurrently on
  // the CPU. Empty: no calls.
  using GradientHook = std::function<void(int direction, int64_t layer)>;
  void set_gradient_hook(GradientHook hook) { gradient_hook_ = std::move(hook); }

 private:
  struct Impl;
  class Scope;
  // task(d) for d in [first, end): CPU one thread each; CUDA on the directions' own streams,
  // forked from and joined into the caller's current stream.
  void for_each_direction(int first, int end, const std::function<void(int)>& task);
  void require_every_row(const char* what) const;
  // evaluate() of a sharded model, with the other ranks.
  NllSum evaluate_sharded(int direction, const TokenBatch& batch, LstmState& state,
                          double* position_nll,
                          RankSum& ranks);  // Error naming `what` unless holds_every_row
  BilmShape shape_;
  BilmTrainOptions options_;
  Device device_;
  ParameterStore params_;
  RowSlots slots_[2];  // TableGroup
  GradientHook gradient_hook_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace elmo
