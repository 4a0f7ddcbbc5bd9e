// Optimizers over the whole ParameterStore: global gradient-norm clip, then Adagrad or SGD.
//
// Global norm: sqrt(sum of squares of every dense gradient and every sparse gradient row),
// accumulated in double in registry order. When clip_norm > 0 and norm > clip_norm every
// gradient is scaled by clip_norm / norm (applied inside the update, gradients are not
// rewritten). step() returns the pre-clip norm.
//
// Adagrad (type "adagrad"):  acc += g*g;  p -= lr * g / (sqrt(acc) + epsilon)
//   acc starts at initial_accumulator; state tensor "<param>.adagrad_acc" (shape of the param).
// SGD (type "sgd"):          p -= lr * g   (no momentum, no state)
// Learning rate at 0-based epoch i (TF PTB tutorial):
//   lr(i) = learning_rate * lr_decay ^ max(i + 1 - decay_after_epochs, 0)
// lr_decay 1 (default) keeps it constant. Dense parameters update every element; row-sparse
// parameters (Parameter::row_sparse) update only the rows in sparse_grad (ids unique and
// ascending), and only those rows of their accumulator. Empty sparse gradients update nothing.
// After the update all gradients are zeroed (ParameterStore::zero_grads).
// CUDA parameters are updated by the kernels' device twins on the current stream (sparse ids
// uploaded through pinned memory); the gradient norm is the one host synchronisation.
// What it is not: the distributed gradient exchange (comm/) or the checkpoint writer (io/).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/parameters.h"

namespace elmo {

struct OptimizerOptions {
  std::string type = "adagrad";  // "adagrad" | "sgd"
  float learning_rate = 0.2f;    // bilm-tf / lapse-elmo
  float initial_accumulator = 1.0f;
  float epsilon = 1e-7f;           // lapse-elmo's Adagrad eps (bilm-tf has none)
  float clip_norm = 10.0f;         // <= 0: no clipping
  float lr_decay = 1.0f;           // per epoch after decay_after_epochs (PTB: 0.5, 0.8, 1/1.15)
  int64_t decay_after_epochs = 0;  // PTB "max_epoch"
};

class Optimizer {
 public:
  // Validates the config (UsageError naming the key) and creates the accumulators.
  Optimizer(ParameterStore& params, const OptimizerOptions& config);

  const OptimizerOptions& config() const { return config_; }
  // lr(epoch) (header comment) times lr_scale().
  float learning_rate(int64_t epoch) const;
  // A factor on every learning rate (1 at the start): the trainer lowers it when it goes back to
  // a checkpoint after steps that were not finite (train.bad_step_lr_scale).
  void set_lr_scale(double scale);
  double lr_scale() const { return lr_scale_; }

  struct StepStats {
    double grad_norm = 0.0;  // before clipping
    float lr = 0.0f;
    float grad_scale = 1.0f;  // clip factor applied (1 when not clipped)
  };
  // Clip + update with lr(epoch), then zero every gradient.
  StepStats step(int64_t epoch);

  // The pieces of step(), for callers that combine gradients across ranks first.
  double global_grad_norm() const;         // sqrt(sum of squares), in double
  float clip_scale(double norm) const;     // clip_norm / norm when clipping, else 1
  void apply(float lr, float grad_scale);  // update only; gradients are left as they are

  // Optimizer state by name ("<param>.adagrad_acc"), in registry order; the tensors share
  // storage with the optimizer (read them to save a checkpoint).
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  // Copies `value` into the named state tensor. Error on an unknown name or a shape mismatch.
  void load_state(const std::string& name, const Tensor& value);

 private:
  struct Slot {
    Parameter* param;
    Tensor accumulator;  // Adagrad only
  };
  void check_sparse_grad(const Parameter& p) const;

  ParameterStore& params_;
  OptimizerOptions config_;
  bool adagrad_ = true;
  double lr_scale_ = 1.0;
  std::vector<Slot> slots_;
};

}  // namespace elmo
