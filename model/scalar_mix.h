// Scalar mix of the biLM layers (ELMo's task-specific combination, as in allennlp ScalarMix
// without layer norm):
//
//   s   = softmax(scalar_mix.weights)                 weights [K] (K = L + 1 layers)
//   out = gamma * sum_k s_k * layer_k                 gamma [1]; layer_k, out [n, D]
//
// Parameters are registered dense: "scalar_mix.weights" [K] = 0 (equal mix) and
// "scalar_mix.gamma" [1] = 1. The softmax and all reductions run in double; the forward
// output is sum_k (gamma s_k) layer_k in f32. Layers may live on any device (the mix runs on
// the host; CUDA inputs are copied, the output goes back to the layers' device).
// What it is not: layer normalisation (allennlp's do_layer_norm), which is not implemented.
#pragma once

#include <cstdint>
#include <vector>

#include "model/parameters.h"
#include "runtime/tensor.h"

namespace elmo {

inline constexpr const char* kScalarMixWeights = "scalar_mix.weights";
inline constexpr const char* kScalarMixGamma = "scalar_mix.gamma";

class ScalarMix {
 public:
  // Registers the two parameters (or uses them when the store already has them with the
  // right shapes, e.g. loaded from a checkpoint).
  ScalarMix(ParameterStore& params, int64_t num_layers);

  int64_t num_layers() const { return num_layers_; }
  // softmax(weights) in double, and gamma.
  std::vector<double> normalized_weights() const;
  double gamma() const;

  // layers: K tensors f32 [n, D] (same shape and device) -> out f32 [n, D] (allocated when
  // undefined or of another shape/device).
  void forward(const std::vector<Tensor>& layers, Tensor& out) const;
  // Adds d(loss)/d(weights) and d(loss)/d(gamma) to the parameters' gradients; when d_layers is
  // not null it receives K tensors [n, D] with d(loss)/d(layer_k) = gamma s_k d_out.
  void backward(const std::vector<Tensor>& layers, const Tensor& d_out,
                std::vector<Tensor>* d_layers);

 private:
  void check_layers(const std::vector<Tensor>& layers) const;

  Parameter* weights_;
  Parameter* gamma_;
  int64_t num_layers_;
};

}  // namespace elmo
