// Model embedding on CUDA: forward with and without the host copy of the ids, and backward
// through the host-built plan (with an existing sparse gradient entering the sum first) and
// through the device sort, both bit-identical to the CPU (same sums in the same order).
#include <gtest/gtest.h>

#include <vector>

#include "model/embedding.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

const Device kGpu = Device::cuda(0);

std::vector<int32_t> random_ids(int64_t n, int64_t rows, uint64_t seed) {
  Rng rng(seed, 0);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.below(rows));
  return ids;
}

Tensor ids_tensor(const std::vector<int32_t>& ids, Device device) {
  Tensor t = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::kI32);
  std::copy(ids.begin(), ids.end(), t.data<int32_t>());
  return t.to(device);
}

TEST(EmbeddingModelGpu, ForwardMatchesCpuAndChecksHostIds) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t rows = 4000, dim = 64;
  ParameterStore cpu_params, gpu_params;
  Parameter& cpu = register_embedding(cpu_params, rows, dim);
  Parameter& gpu = register_embedding(gpu_params, rows, dim, kGpu);
  Rng a(1, kRngInit), b(1, kRngInit);
  init_uniform(cpu, 0.5f, a);
  init_uniform(gpu, 0.5f, b);
  EXPECT_EQ(gpu.value.to_floats(), cpu.value.to_floats());
  const std::vector<int32_t> ids = random_ids(999, rows, 2);
  Tensor expected, with_host, without_host;
  embedding_forward(cpu, ids_tensor(ids, Device::cpu()), expected);
  embedding_forward(gpu, ids_tensor(ids, kGpu), with_host, ids.data());
  embedding_forward(gpu, ids_tensor(ids, kGpu), without_host);
  EXPECT_EQ(with_host.device(), kGpu);
  EXPECT_EQ(with_host.to_floats(), expected.to_floats());
  EXPECT_EQ(without_host.to_floats(), expected.to_floats());
  std::vector<int32_t> bad = ids;
  bad[7] = static_cast<int32_t>(rows);
  const std::string message = testing::error_of(
      [&] { embedding_forward(gpu, ids_tensor(bad, kGpu), with_host, bad.data()); });
  EXPECT_NE(message.find("position 7"), std::string::npos) << message;
}

TEST(EmbeddingModelGpu, BackwardMatchesCpuBitForBit) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t rows = 3000, dim = 40;
  const std::vector<int32_t> ids[2] = {random_ids(2000, rows, 3), random_ids(1500, 60, 4)};
  const Tensor dy[2] = {testing::random_tensor({2000, dim}, 5),
                        testing::random_tensor({1500, dim}, 6)};
  for (const bool planned : {true, false}) {
    SCOPED_TRACE(planned ? "host plan" : "device sort");
    ParameterStore cpu_params, gpu_params;
    Parameter& cpu = register_embedding(cpu_params, rows, dim);
    Parameter& gpu = register_embedding(gpu_params, rows, dim, kGpu);
    // Two calls: the second adds to the sparse gradient of the first.
    for (int call = 0; call < 2; ++call) {
      std::vector<EmbeddingGrad> cpu_grads, gpu_grads;
      for (int s = 0; s < 2; ++s) {
        cpu_grads.push_back({ids_tensor(ids[s], Device::cpu()), dy[s]});
        gpu_grads.push_back(
            {ids_tensor(ids[s], kGpu), dy[s].to(kGpu), planned ? ids[s].data() : nullptr});
      }
      embedding_backward(cpu, cpu_grads);
      embedding_backward(gpu, gpu_grads);
    }
    EXPECT_EQ(gpu.sparse_grad.ids, cpu.sparse_grad.ids);
    EXPECT_EQ(gpu.sparse_grad.values.device(), kGpu);
    EXPECT_EQ(gpu.sparse_grad.values.to_floats(), cpu.sparse_grad.values.to_floats());
  }
}

}  // namespace
}  // namespace elmo
