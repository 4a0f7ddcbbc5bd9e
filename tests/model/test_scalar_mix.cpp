// Scalar mix: forward against the formula, backward against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "model/scalar_mix.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::random_tensor;

TEST(ScalarMix, DefaultsToTheMeanOfTheLayers) {
  ParameterStore params;
  ScalarMix mix(params, 3);
  EXPECT_EQ(params.get("scalar_mix.weights").value.shape(), (Shape{3}));
  EXPECT_EQ(params.get("scalar_mix.gamma").value.to_floats(), (std::vector<float>{1.0f}));
  std::vector<Tensor> layers = {Tensor::from_floats({3, 6}, {1, 2}),
                                Tensor::from_floats({0, 3}, {1, 2}),
                                Tensor::from_floats({6, 0}, {1, 2})};
  Tensor out;
  mix.forward(layers, out);
  EXPECT_TRUE(testing::all_close(out.to_floats(), {3.0f, 3.0f}, 1e-6f, 1e-6f));
  ScalarMix again(params, 3);  // reuses the registered parameters
  EXPECT_THROW(ScalarMix(params, 2), Error);
  EXPECT_THROW(mix.forward({layers[0]}, out), Error);
}

TEST(ScalarMix, BackwardMatchesFiniteDifferences) {
  ParameterStore params;
  const int64_t k_layers = 3;
  ScalarMix mix(params, k_layers);
  Parameter& w = params.get("scalar_mix.weights");
  Parameter& gamma = params.get("scalar_mix.gamma");
  w.value.copy_from(Tensor::from_floats({0.3f, -0.7f, 1.1f}, {3}));
  gamma.value.fill_(1.7f);
  std::vector<Tensor> layers;
  for (int64_t k = 0; k < k_layers; ++k) layers.push_back(random_tensor({5, 6}, 10 + k));
  const Tensor d_out = random_tensor({5, 6}, 20);
  auto loss = [&]() {  // <d_out, mix(layers)> in double
    Tensor out;
    mix.forward(layers, out);
    double total = 0.0;
    for (int64_t e = 0; e < out.numel(); ++e)
      total += static_cast<double>(out.data<float>()[e]) * d_out.data<float>()[e];
    return total;
  };
  std::vector<Tensor> d_layers;
  mix.backward(layers, d_out, &d_layers);
  // eps 1e-3 on inputs of order 1 with f32 forward: FD error ~1e-5 relative.
  EXPECT_TRUE(testing::gradient_matches(loss, w.value.data<float>(), w.grad.data<float>(), 3, 1e-3,
                                        2e-3, 3));
  EXPECT_TRUE(testing::gradient_matches(loss, gamma.value.data<float>(), gamma.grad.data<float>(),
                                        1, 1e-3, 2e-3, 1));
  for (int64_t k = 0; k < k_layers; ++k)
    EXPECT_TRUE(testing::gradient_matches(loss, layers[k].data<float>(), d_layers[k].data<float>(),
                                          30, 1e-2, 2e-3, 30))
        << "layer " << k;
  // Backward accumulates into the parameter gradients.
  const auto first = w.grad.to_floats();
  mix.backward(layers, d_out, nullptr);
  const auto twice = w.grad.to_floats();
  for (int k = 0; k < 3; ++k) EXPECT_FLOAT_EQ(twice[k], 2 * first[k]);
}

}  // namespace
}  // namespace elmo
