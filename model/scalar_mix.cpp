#include "model/scalar_mix.h"

#include <algorithm>
#include <cmath>

namespace elmo {

ScalarMix::ScalarMix(ParameterStore& params, int64_t num_layers) : num_layers_(num_layers) {
  ELMO_REQUIRE(num_layers >= 1, "scalar mix needs at least one layer, got ", num_layers);
  if (params.has(kScalarMixWeights) || params.has(kScalarMixGamma)) {
    weights_ = &params.get(kScalarMixWeights);
    gamma_ = &params.get(kScalarMixGamma);
    ELMO_CHECK(weights_->value.shape() == Shape{num_layers} && gamma_->value.shape() == Shape{1},
               "scalar mix: expected ", kScalarMixWeights, " [", num_layers, "] and ",
               kScalarMixGamma, " [1], found ", weights_->value.describe(), " and ",
               gamma_->value.describe());
    return;
  }
  weights_ = &params.add(kScalarMixWeights, {num_layers});  // zeros: equal mix
  gamma_ = &params.add(kScalarMixGamma, {1});
  gamma_->value.fill_(1.0f);
}

std::vector<double> ScalarMix::normalized_weights() const {
  const std::vector<float> w = weights_->value.to_floats();
  const double max_w = *std::max_element(w.begin(), w.end());
  std::vector<double> s(w.size());
  double total = 0.0;
  for (size_t k = 0; k < w.size(); ++k) total += s[k] = std::exp(static_cast<double>(w[k]) - max_w);
  for (double& v : s) v /= total;
  return s;
}

double ScalarMix::gamma() const { return gamma_->value.to_floats()[0]; }

void ScalarMix::check_layers(const std::vector<Tensor>& layers) const {
  ELMO_CHECK(static_cast<int64_t>(layers.size()) == num_layers_, "scalar mix of ", num_layers_,
             " layers got ", layers.size());
  for (size_t k = 0; k < layers.size(); ++k) {
    check_tensor(layers[k], "scalar mix layer", DType::kF32, layers[0].shape());
    check_same_device(layers[k], layers[0], "scalar mix layers");
  }
}

void ScalarMix::forward(const std::vector<Tensor>& layers, Tensor& out) const {
  check_layers(layers);
  const std::vector<double> s = normalized_weights();
  const double gamma = this->gamma();
  const int64_t n = layers[0].numel();
  Tensor host_out = Tensor::empty(layers[0].shape());
  float* y = host_out.data<float>();
  for (int64_t k = 0; k < num_layers_; ++k) {
    const Tensor x = layers[k].to(Device::cpu());
    const float* xk = x.data<float>();
    const float c = static_cast<float>(gamma * s[k]);  // gamma s_k
    if (k == 0)
      for (int64_t e = 0; e < n; ++e) y[e] = c * xk[e];
    else
      for (int64_t e = 0; e < n; ++e) y[e] += c * xk[e];
  }
  const Device device = layers[0].device();
  if (!out.defined() || !(out.shape() == layers[0].shape()) || out.dtype() != DType::kF32 ||
      !(out.device() == device))
    out = Tensor::empty(layers[0].shape(), DType::kF32, device);
  out.copy_from(host_out);
}

void ScalarMix::backward(const std::vector<Tensor>& layers, const Tensor& d_out,
                         std::vector<Tensor>* d_layers) {
  check_layers(layers);
  check_tensor(d_out, "scalar mix d_out", DType::kF32, layers[0].shape());
  const std::vector<double> s = normalized_weights();
  const double gamma = this->gamma();
  const int64_t n = layers[0].numel();
  const Tensor dy_host = d_out.to(Device::cpu());
  const float* dy = dy_host.data<float>();

  // dot_k = <d_out, layer_k>;  d gamma = sum_k s_k dot_k;  d s_k = gamma dot_k;
  // d w_j = s_j (d s_j - sum_k s_k d s_k)   (softmax Jacobian).
  std::vector<double> dot(num_layers_, 0.0);
  for (int64_t k = 0; k < num_layers_; ++k) {
    const Tensor x = layers[k].to(Device::cpu());
    const float* xk = x.data<float>();
    double sum = 0.0;
    for (int64_t e = 0; e < n; ++e) sum += static_cast<double>(dy[e]) * xk[e];
    dot[k] = sum;
  }
  double d_gamma = 0.0, mean_ds = 0.0;
  for (int64_t k = 0; k < num_layers_; ++k) {
    d_gamma += s[k] * dot[k];
    mean_ds += s[k] * gamma * dot[k];
  }
  Tensor d_weights = Tensor::empty({num_layers_});
  for (int64_t k = 0; k < num_layers_; ++k)
    d_weights.data<float>()[k] = static_cast<float>(s[k] * (gamma * dot[k] - mean_ds));
  Tensor d_gamma_t = Tensor::from_floats({static_cast<float>(d_gamma)}, {1});

  // Accumulate into the (dense) gradients, wherever they live.
  auto accumulate = [](Tensor& grad, const Tensor& add) {
    Tensor host = grad.to(Device::cpu()).clone();
    for (int64_t e = 0; e < host.numel(); ++e) host.data<float>()[e] += add.data<float>()[e];
    grad.copy_from(host);
  };
  accumulate(weights_->grad, d_weights);
  accumulate(gamma_->grad, d_gamma_t);

  if (d_layers == nullptr) return;
  d_layers->clear();
  for (int64_t k = 0; k < num_layers_; ++k) {
    Tensor dx = Tensor::empty(layers[0].shape());
    const float c = static_cast<float>(gamma * s[k]);
    float* out = dx.data<float>();
    for (int64_t e = 0; e < n; ++e) out[e] = c * dy[e];
    d_layers->push_back(dx.to(layers[0].device()));
  }
}

}  // namespace elmo
