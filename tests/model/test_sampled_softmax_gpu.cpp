// Sampled softmax step on CUDA against the CPU layer: the same samples and touched rows, the
// losses (deferred and immediate), dh of both directions, the sparse weight/bias gradient rows
// (ids identical, values close), two steps in a row (buffer reuse), forward_loss, and the CUDA
// call-order contract.
//
// Tolerances (fp32 GEMMs, TF32 off): logits and dh come from GEMMs of K = P or S terms summed
// in another order than OpenBLAS (~K * 2^-24 relative); the CPU row pass uses a polynomial exp
// and double sums, the CUDA one expf and float block sums (~1e-6 relative): losses rtol 1e-5,
// dh and gradient rows atol 2e-5 / rtol 1e-4.
#include <gtest/gtest.h>

#include <vector>

#include "model/sampled_softmax.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

constexpr int64_t kVocab = 3000, kDim = 48, kSamples = 256, kRows = 200;
const Device kGpu = Device::cuda(0);

struct Step {
  std::vector<double> losses;
  std::vector<float> dh[2];
  std::vector<int32_t> ids;
  std::vector<float> grad_w, grad_b;
  std::vector<int32_t> samples;
  double loss_only = 0.0;
};

struct Data {
  Tensor w, b, h[2];
  std::vector<int32_t> targets[2];
  Data() {
    w = testing::random_tensor({kVocab, kDim}, 1);
    b = testing::random_tensor({kVocab}, 2);
    h[0] = testing::random_tensor({kRows, kDim}, 3);
    h[1] = testing::random_tensor({kRows, kDim}, 4);
    Rng rng(5, kRngSynthetic);
    for (auto& t : targets)
      for (int64_t r = 0; r < kRows; ++r)  // Zipf-ish: many repeats among small ids
        t.push_back(static_cast<int32_t>(rng.below(r % 3 == 0 ? 20 : kVocab)));
  }
};

Tensor ids_tensor(const std::vector<int32_t>& ids, Device device) {
  Tensor t = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::kI32);
  std::copy(ids.begin(), ids.end(), t.data<int32_t>());
  return t.to(device);
}

Step run(const Data& data, Device device, uint64_t sampler_seed, bool deferred) {
  ParameterStore store;
  Parameter& weight = store.add("softmax.weight", {kVocab, kDim}, true, device);
  Parameter& bias = store.add("softmax.bias", {kVocab}, true, device);
  weight.value.copy_from(data.w);
  bias.value.copy_from(data.b);
  const Tensor h[2] = {data.h[0].to(device), data.h[1].to(device)};
  const Tensor targets[2] = {ids_tensor(data.targets[0], device),
                             ids_tensor(data.targets[1], device)};
  Tensor dh[2] = {Tensor::zeros({kRows, kDim}, DType::kF32, device),
                  Tensor::zeros({kRows, kDim}, DType::kF32, device)};
  SampledSoftmax layer(kVocab, kDim, kSamples, device);
  Rng sampler(sampler_seed, kRngSampler);
  Step out;
  for (int step = 0; step < 2; ++step) {  // the second step reuses every buffer
    layer.begin_step(sampler, {{data.targets[0].data(), kRows}, {data.targets[1].data(), kRows}});
    out.losses.clear();
    for (int d = 0; d < 2; ++d) {
      const float scale = 0.5f / kRows;
      if (deferred)
        layer.forward_backward_deferred(weight.value.data<float>(), bias.value.data<float>(),
                                        h[d].data<float>(), targets[d].data<int32_t>(), kRows,
                                        scale, dh[d].data<float>());
      else
        out.losses.push_back(layer.forward_backward(
            weight.value.data<float>(), bias.value.data<float>(), h[d].data<float>(),
            targets[d].data<int32_t>(), kRows, scale, dh[d].data<float>()) * kRows);
    }
    if (deferred) out.losses = layer.loss_sums();
    layer.finish_step(weight, bias);
  }
  for (int d = 0; d < 2; ++d) out.dh[d] = dh[d].to_floats();
  out.ids = weight.sparse_grad.ids;
  EXPECT_EQ(bias.sparse_grad.ids, out.ids);
  out.grad_w = weight.sparse_grad.values.to_floats();
  out.grad_b = bias.sparse_grad.values.to_floats();
  out.samples = layer.samples().ids;
  out.loss_only = layer.forward_loss(weight.value.data<float>(), bias.value.data<float>(),
                                     h[0].data<float>(), targets[0].data<int32_t>(), kRows);
  return out;
}

void compare(const Step& gpu, const Step& cpu) {
  EXPECT_EQ(gpu.samples, cpu.samples);
  ASSERT_EQ(gpu.losses.size(), 2u);
  for (int d = 0; d < 2; ++d) {
    EXPECT_NEAR(gpu.losses[d], cpu.losses[d], 1e-5 * cpu.losses[d]) << "direction " << d;
    EXPECT_TRUE(testing::all_close(gpu.dh[d], cpu.dh[d], 2e-5f, 1e-4f)) << "dh " << d;
  }
  EXPECT_EQ(gpu.ids, cpu.ids);
  EXPECT_TRUE(testing::all_close(gpu.grad_w, cpu.grad_w, 2e-5f, 1e-4f)) << "weight rows";
  EXPECT_TRUE(testing::all_close(gpu.grad_b, cpu.grad_b, 2e-5f, 1e-4f)) << "bias rows";
  EXPECT_NEAR(gpu.loss_only, cpu.loss_only, 1e-5 * cpu.loss_only);
}

TEST(SampledSoftmaxGpu, StepMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Data data;
  compare(run(data, kGpu, 7, false), run(data, Device::cpu(), 7, false));
}

TEST(SampledSoftmaxGpu, DeferredLossesMatchCpuAndTheGpuIsDeterministic) {
  ELMO_SKIP_WITHOUT_GPU();
  const Data data;
  const Step a = run(data, kGpu, 8, true), b = run(data, kGpu, 8, true);
  compare(a, run(data, Device::cpu(), 8, true));
  EXPECT_EQ(a.grad_w, b.grad_w);  // no atomics: bit-identical run to run
  EXPECT_EQ(a.grad_b, b.grad_b);
  EXPECT_EQ(a.dh[0], b.dh[0]);
  EXPECT_EQ(a.losses, b.losses);
}

TEST(SampledSoftmaxGpu, CallsMustFollowTheTargetSetsOfBeginStep) {
  ELMO_SKIP_WITHOUT_GPU();
  const Data data;
  Tensor w = data.w.to(kGpu), b = data.b.to(kGpu), h = data.h[0].to(kGpu);
  const Tensor t = ids_tensor(data.targets[0], kGpu);
  SampledSoftmax layer(kVocab, kDim, kSamples, kGpu);
  Rng sampler(9, kRngSampler);
  layer.begin_step(sampler, {{data.targets[0].data(), kRows}});
  const std::string message = testing::error_of([&] {
    layer.forward_backward(w.data<float>(), b.data<float>(), h.data<float>(), t.data<int32_t>(),
                           kRows - 1, 1.0f, nullptr);
  });
  EXPECT_NE(message.find("begin_step"), std::string::npos) << message;
  ParameterStore store;
  Parameter& weight = store.add("softmax.weight", {kVocab, kDim}, true, kGpu);
  Parameter& bias = store.add("softmax.bias", {kVocab}, true, kGpu);
  EXPECT_THROW(layer.finish_step(weight, bias), Error);  // no call for the target set
}

}  // namespace
}  // namespace elmo
