// Optimizer on CUDA parameters against the same optimizer on CPU parameters.
#include <gtest/gtest.h>

#include "model/optimizer.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

void build(ParameterStore& params, Device device) {
  params.add("lstm.fwd.0.weight_ih", {64, 32}, false, device);
  params.add("embedding.weight", {500, 32}, true, device);
  params.add("softmax.bias", {500}, true, device);
  Rng rng(1, 0);
  for (Parameter* p : params.all()) {
    Tensor host = Tensor::empty(p->value.shape());
    for (int64_t e = 0; e < host.numel(); ++e) host.data<float>()[e] = rng.uniform() - 0.5f;
    p->value.copy_from(host);
  }
}

void set_grads(ParameterStore& params, uint64_t seed) {
  Rng rng(seed, 0);
  for (Parameter* p : params.all()) {
    const Device device = p->value.device();
    if (!p->row_sparse) {
      Tensor host = Tensor::empty(p->value.shape());
      for (int64_t e = 0; e < host.numel(); ++e) host.data<float>()[e] = rng.normal();
      p->grad.copy_from(host);
      continue;
    }
    p->sparse_grad.ids.clear();
    for (int32_t id = static_cast<int32_t>(seed % 3); id < 500; id += 7)
      p->sparse_grad.ids.push_back(id);
    const int64_t n = static_cast<int64_t>(p->sparse_grad.ids.size());
    Tensor host = Tensor::empty({n, p->row_dim()});
    for (int64_t e = 0; e < host.numel(); ++e) host.data<float>()[e] = rng.normal();
    p->sparse_grad.values = host.to(device);
  }
}

TEST(OptimizerGpu, AdagradWithClipMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  ParameterStore cpu, gpu;
  build(cpu, Device::cpu());
  build(gpu, Device::cuda(0));
  OptimizerOptions config;
  config.clip_norm = 5.0f;  // the random gradients have norm ~100: clipped
  Optimizer cpu_opt(cpu, config), gpu_opt(gpu, config);
  for (uint64_t step = 0; step < 3; ++step) {
    set_grads(cpu, 10 + step);
    set_grads(gpu, 10 + step);
    const auto a = cpu_opt.step(0), b = gpu_opt.step(0);
    // Tolerance: double sums in another order.
    EXPECT_NEAR(b.grad_norm, a.grad_norm, 1e-12 * a.grad_norm);
  }
  // Tolerance: the clip factor may differ in the last bit (norm rounding), then 3 steps.
  for (size_t k = 0; k < cpu.size(); ++k)
    EXPECT_TRUE(testing::all_close(gpu.all()[k]->value.to_floats(), cpu.all()[k]->value.to_floats(),
                                   1e-6f, 1e-6f))
        << cpu.all()[k]->name;
}

}  // namespace
}  // namespace elmo
