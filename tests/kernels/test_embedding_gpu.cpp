// GPU twin of the embedding kernels: bit-identical to the CPU (same sums in the same order).
#include <gtest/gtest.h>

#include <algorithm>

#include "kernels/embedding.h"
#include "kernels/row_sum.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

Tensor random_ids(int64_t n, int64_t rows, uint64_t seed) {
  Rng rng(seed, 0);
  Tensor t = Tensor::empty({n}, DType::kI32);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = static_cast<int32_t>(rng.below(rows));
  return t;
}

using testing::random_tensor;

TEST(EmbeddingGpu, GatherMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  const int64_t rows = 5000, dim = 130, n = 4097;
  Tensor table = random_tensor({rows, dim}, 1);
  Tensor ids = random_ids(n, rows, 2);
  Tensor cpu_out = Tensor::empty({n, dim});
  embedding_gather(table, ids, cpu_out);
  Tensor gpu_out = Tensor::empty({n, dim}, DType::kF32, gpu);
  embedding_gather(table.to(gpu), ids.to(gpu), gpu_out);
  EXPECT_TRUE(testing::all_close(gpu_out.to_floats(), cpu_out.to_floats(), 0.0f, 0.0f));
}

TEST(EmbeddingGpu, GatherBadIdIsAnError) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Tensor table = random_tensor({10, 4}, 1).to(gpu);
  Tensor ids = Tensor::empty({3}, DType::kI32);
  ids.data<int32_t>()[0] = 1;
  ids.data<int32_t>()[1] = 10;
  ids.data<int32_t>()[2] = 2;
  Tensor out = Tensor::empty({3, 4}, DType::kF32, gpu);
  EXPECT_THROW(embedding_gather(table, ids.to(gpu), out), Error);
}

TEST(EmbeddingGpu, BackwardMatchesCpuBitForBit) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  for (int64_t dim : {1, 16, 300}) {
    const int64_t rows = 800;
    std::vector<Tensor> ids = {random_ids(2560, rows, 3), random_ids(2560, rows / 4, 4),
                               random_ids(7, rows, 5)};
    std::vector<Tensor> dy;
    for (size_t s = 0; s < ids.size(); ++s)
      dy.push_back(random_tensor({ids[s].size(0), dim}, 10 + s));
    std::vector<int32_t> cpu_unique, gpu_unique;
    Tensor cpu_values, gpu_values;
    embedding_backward(ids, dy, rows, cpu_unique, cpu_values);
    std::vector<Tensor> gids, gdy;
    for (size_t s = 0; s < ids.size(); ++s) {
      gids.push_back(ids[s].to(gpu));
      gdy.push_back(dy[s].to(gpu));
    }
    embedding_backward(gids, gdy, rows, gpu_unique, gpu_values);
    EXPECT_EQ(gpu_unique, cpu_unique) << "dim " << dim;
    // Tolerance 0: both sum the same rows in position order starting from 0.
    EXPECT_TRUE(testing::all_close(gpu_values.to_floats(), cpu_values.to_floats(), 0.0f, 0.0f))
        << "dim " << dim;
  }
}

TEST(EmbeddingGpu, BackwardBadIdIsAnError) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Tensor ids = random_ids(100, 50, 1);
  ids.data<int32_t>()[42] = 50;
  std::vector<int32_t> unique;
  Tensor values;
  EXPECT_THROW(
      embedding_backward({ids.to(gpu)}, {random_tensor({100, 3}, 2).to(gpu)}, 50, unique, values),
      Error);
}

// The plan-driven device sum (host sort, no read-back) equals the CPU twin bit for bit.
TEST(EmbeddingGpu, RowSumByPlanMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  const int64_t rows = 7000, dim = 300;
  const Tensor ids[2] = {random_ids(5000, rows, 11), random_ids(3000, 50, 12)};
  const Tensor dy[2] = {random_tensor({5000, dim}, 13), random_tensor({3000, dim}, 14)};
  const Tensor gdy[2] = {dy[0].to(gpu), dy[1].to(gpu)};
  std::vector<std::pair<const int32_t*, int64_t>> host;
  RowSumSegment cpu_segments[2], gpu_segments[2];
  for (int s = 0; s < 2; ++s) {
    host.emplace_back(ids[s].data<int32_t>(), ids[s].size(0));
    cpu_segments[s] = {dy[s].data<float>(), nullptr, ids[s].size(0)};
    gpu_segments[s] = {gdy[s].data<float>(), nullptr, ids[s].size(0)};
  }
  RowSumPlan plan;
  build_row_sum_plan(host, rows, plan);
  const int64_t u = static_cast<int64_t>(plan.unique_ids.size());
  Tensor expected = Tensor::empty({u, dim});
  row_sum_by_plan(Device::cpu(), cpu_segments, 2, dim, plan.offsets.data(), plan.positions.data(),
                  u, expected.data<float>());
  Tensor offsets = Tensor::empty({u + 1}, DType::kI32);
  Tensor positions = Tensor::empty({static_cast<int64_t>(plan.positions.size())}, DType::kI32);
  std::copy(plan.offsets.begin(), plan.offsets.end(), offsets.data<int32_t>());
  std::copy(plan.positions.begin(), plan.positions.end(), positions.data<int32_t>());
  const Tensor goffsets = offsets.to(gpu), gpositions = positions.to(gpu);
  Tensor got = Tensor::empty({u, dim}, DType::kF32, gpu);
  row_sum_by_plan(gpu, gpu_segments, 2, dim, goffsets.data<int32_t>(), gpositions.data<int32_t>(),
                  u, got.data<float>());
  EXPECT_TRUE(testing::all_close(got.to_floats(), expected.to_floats(), 0.0f, 0.0f));
}

}  // namespace
}  // namespace elmo
