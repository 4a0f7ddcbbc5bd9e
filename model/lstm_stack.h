// One direction's stack of L LSTMP layers, reading its weights from a ParameterStore by their
// DESIGN.md §5 names; it runs on the device its parameters live on (CPU or one CUDA device;
// every pointer passed in or returned lives there, CUDA work goes to the current stream).
//
// What it is, per layer l (in_0 = the input embeddings [T, B, E], in_l = out_{l-1}):
//   x_l   = dropout(in_l)                        training only; site dir*64 + l
//   y_l   = lstm_l(x_l)                          model/lstm_layer.h, carried state (h, c)_l
//   out_l = y_l + x_l   if skip_connections and l > 0 (the DROPPED input, as bilm-tf wraps
//                       Dropout(Residual(cell))), else y_l
//   top   = dropout(out_{L-1})                   training only; site dir*64 + 63
// The carried state of a layer is its pre-residual h_T and c_T. Backward stops at the batch
// boundary (no gradient to the initial state) and accumulates (+=) into each parameter's .grad.
// What it is not: the embedding lookup, the softmax, or the choice of direction's token order
// (the backward direction's caller feeds reversed streams).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/dropout.h"
#include "model/lstm_layer.h"
#include "model/parameters.h"
#include "runtime/rng.h"

namespace elmo {

struct LstmStackShape {
  int64_t embedding_dim = 0;
  int64_t cell_size = 0;
  int64_t proj_dim = 0;  // 0: plain LSTM (hidden = cell_size)
  int64_t layers = 0;
  float cell_clip = 0.0f;  // <= 0: no clip
  float proj_clip = 0.0f;  // <= 0: no clip
  bool skip_connections = false;

  int64_t hidden() const { return proj_dim > 0 ? proj_dim : cell_size; }
  LstmLayerShape layer(int64_t l) const {
    return {l == 0 ? embedding_dim : hidden(), cell_size, proj_dim, cell_clip, proj_clip};
  }
};

// Throws UsageError naming the bad field.
void check_lstm_stack_shape(const LstmStackShape& shape);

// "lstm.<direction>.<layer>.<what>", e.g. lstm_parameter_name("fwd", 1, "weight_hh").
std::string lstm_parameter_name(const std::string& direction, int64_t layer, const char* what);

// Adds lstm.<direction>.<l>.{weight_ih, weight_hh, bias[, weight_hr]} for every layer, in that
// order (zero-initialised, dense, on `device`). direction is "fwd" or "bwd".
void register_lstm_parameters(ParameterStore& store, const std::string& direction,
                              const LstmStackShape& shape, Device device = Device::cpu());

// weight_ih, weight_hh, weight_hr ~ uniform(-init_scale, init_scale) drawn from `rng` in
// registration order; bias = forget_bias on the forget block [C, 2C), 0 elsewhere (a starting
// forget bias is the same as TF's forget_bias added inside the cell: the gradients and so the
// updates do not depend on it). Drawn on the host and copied, so the values do not depend on the
// parameters' device.
void init_lstm_parameters(ParameterStore& store, const std::string& direction,
                          const LstmStackShape& shape, float init_scale, Rng& rng,
                          float forget_bias = 1.0f);

// How one forward runs. Dropout uses DropoutParams{p, seed, dropout_stream(step, site)}.
struct LstmStackRun {
  bool training = false;
  float dropout = 0.0f;  // probability, [0, 1); ignored unless training
  uint64_t seed = 0;
  uint64_t step = 0;
  // Row shard of a distributed batch: this stack holds rows [row_offset, row_offset + B) of
  // global_rows per time step (0 = all of them); the dropout masks follow the global rows.
  int64_t global_rows = 0;
  int64_t row_offset = 0;
};

class LstmStack {
 public:
  // Binds to the registered parameters of `direction` ("fwd" or "bwd"); they must exist with the
  // shapes `shape` implies and all live on one device, which the stack then runs on. `kernel`
  // says how every layer runs its recurrence (model/lstm_layer.h LstmKernel).
  LstmStack(ParameterStore& store, const std::string& direction, const LstmStackShape& shape,
            LstmKernel kernel = LstmKernel::kAuto);

  // x [T, B, E]; h0 [L, B, H], c0 [L, B, C] (nullptr = zeros) -> h_last [L, B, H],
  // c_last [L, B, C] (nullable; may alias h0 / c0). T and B may change from call to call
  // (buffers grow, never shrink). Outputs stay valid until the next forward. A training run
  // keeps pointing at x: leave it unchanged until backward.
  void forward(int64_t T, int64_t B, const float* x, const float* h0, const float* c0,
               float* h_last, float* c_last, const LstmStackRun& run);

  const float* output() const { return top_; }  // [T, B, H], after the top dropout
  // out_l [T, B, H] (after the residual, before the top dropout): for embedding extraction.
  const float* layer_output(int64_t l) const;

  // Backward of the last forward (which must have been a training run): d_output [T, B, H]
  // -> d_input [T, B, E] (overwritten; nullable), parameters' .grad += their gradients.
  // layer_done(l), when given, is called as soon as layer l's gradients are complete (CUDA:
  // queued on the current stream), from the top layer down: a distributed rank starts their
  // all-reduce there.
  void backward(const float* d_output, float* d_input,
                const std::function<void(int64_t)>& layer_done = {});

  const LstmStackShape& shape() const { return shape_; }
  const std::string& direction() const { return direction_; }
  Device device() const { return device_; }
  LstmKernel kernel() const { return kernel_; }

 private:
  struct Layer {
    Parameter* w_ih = nullptr;
    Parameter* w_hh = nullptr;
    Parameter* bias = nullptr;
    Parameter* w_hr = nullptr;
    LstmLayerWorkspace ws;
    FloatBuffer x_drop;  // [T, B, in_l] dropped input (training with dropout > 0)
    FloatBuffer y;       // [T, B, H] layer output
    FloatBuffer out;     // [T, B, H] residual sum (skip_connections and l > 0)
    const float* x = nullptr;    // what the layer read: in_l or x_drop
    const float* in = nullptr;   // in_l
    const float* outp = nullptr;  // out_l: y or out
  };
  LstmLayerWeights weights(const Layer& layer) const;
  uint32_t dropout_site(int64_t l) const { return static_cast<uint32_t>(dir_index_ * 64 + l); }
  // Dropout of site `site` over a [T, B, dim] tensor of the run `run`.
  static DropoutParams dropout_params(const LstmStackRun& run, uint32_t site, int64_t B,
                                      int64_t dim);

  LstmStackShape shape_;
  std::string direction_;
  Device device_;
  LstmKernel kernel_ = LstmKernel::kAuto;
  int dir_index_ = 0;
  std::vector<Layer> layers_;
  FloatBuffer top_drop_;  // [T, B, H]
  FloatBuffer grad_a_, grad_b_;  // [T, B, max(E, H)] backward ping-pong
  const float* top_ = nullptr;
  int64_t T_ = 0, B_ = 0;
  LstmStackRun run_;
  bool ready_for_backward_ = false;
};

}  // namespace elmo
