// GPU twin check: the CUDA full-softmax chunk kernels against the CPU twins.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/full_softmax.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

template <typename T>
Tensor device_copy(const std::vector<T>& v, DType dtype) {
  Tensor host = Tensor::empty({static_cast<int64_t>(v.size())}, dtype);
  std::memcpy(host.raw(), v.data(), sizeof(T) * v.size());
  return host.to(Device::cuda(0));
}

template <typename T>
std::vector<T> host_copy(const Tensor& t) {
  Tensor host = t.to(Device::cpu());
  std::vector<T> v(host.nbytes() / sizeof(T));
  std::memcpy(v.data(), host.raw(), host.nbytes());
  return v;
}

TEST(FullSoftmaxGpu, ChunkMergeAndGradientMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t n = 33, vocab = 5000, chunk = 1024;  // 4 chunks + tail of 904
  Rng rng(21, kRngSynthetic);
  std::vector<float> logits(n * vocab), bias(vocab);
  std::vector<int32_t> targets(n);
  for (auto& v : logits) v = 5.0f * rng.normal();
  for (auto& v : bias) v = rng.normal();
  for (auto& t : targets) t = static_cast<int32_t>(rng.below(vocab));
  targets[4] = kIgnoreTarget;
  targets[5] = static_cast<int32_t>(vocab - 1);
  std::vector<float> c_max(n, -INFINITY), c_target(n, 0.0f);
  std::vector<double> c_sum(n, 0.0);
  // double stored in an i64 tensor (the runtime has no f64 dtype; only the bytes matter).
  Tensor g_logits = device_copy(logits, DType::kF32), g_bias = device_copy(bias, DType::kF32);
  Tensor g_targets = device_copy(targets, DType::kI32);
  Tensor g_max = device_copy(c_max, DType::kF32), g_target = device_copy(c_target, DType::kF32);
  Tensor g_sum = device_copy(c_sum, DType::kI64);
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    full_softmax_chunk_lse(Device::cpu(), logits.data() + begin, vocab, bias.data() + begin,
                           targets.data(), n, c, begin, c_max.data(), c_sum.data(),
                           c_target.data());
    full_softmax_chunk_lse(Device::cuda(0), g_logits.data<float>() + begin, vocab,
                           g_bias.data<float>() + begin, g_targets.data<int32_t>(), n, c, begin,
                           g_max.data<float>(), static_cast<double*>(g_sum.raw()),
                           g_target.data<float>());
  }
  const std::vector<double> g_sum_host = host_copy<double>(g_sum);
  const std::vector<float> g_max_host = g_max.to_floats();
  std::vector<float> c_lse(n, 0.0f), g_lse(n, 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] < 0) continue;
    c_lse[r] = static_cast<float>(c_max[r] + std::log(c_sum[r]));
    g_lse[r] = static_cast<float>(g_max_host[r] + std::log(g_sum_host[r]));
  }
  // f32 chunk sums in a different order: 1e-5 relative on the log-sum-exp.
  EXPECT_TRUE(testing::all_close(g_lse, c_lse, 1e-5f, 1e-5f));
  EXPECT_TRUE(testing::all_close(g_target.to_floats(), c_target, 0.0f, 0.0f));  // same f32 add

  Tensor g_lse_dev = device_copy(c_lse, DType::kF32);
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    full_softmax_chunk_grad(Device::cpu(), logits.data() + begin, vocab, bias.data() + begin,
                            targets.data(), c_lse.data(), n, c, begin, 0.25f);
    full_softmax_chunk_grad(Device::cuda(0), g_logits.data<float>() + begin, vocab,
                            g_bias.data<float>() + begin, g_targets.data<int32_t>(),
                            g_lse_dev.data<float>(), n, c, begin, 0.25f);
  }
  // Same f32 formula; expf may differ by an ulp or two between host and device.
  EXPECT_TRUE(testing::all_close(g_logits.to_floats(), logits, 1e-7f, 1e-5f));
}

// The finish on both backends, from 1000 random rows (several rows per thread of the one block)
// where every ignore_every-th row (from ignore_first) has no target; with_row_nll: the per-row
// NLLs too. The lse: the device's log in double, then the f32 rounding, at most an ulp apart.
// result[0]: a fixed tree against a sequential double sum of ~860 terms, 1e-12 relative. The row
// NLLs: the same double formula on both sides (the device's log may differ from the host's by an
// ulp: 1e-13 relative to the row's lse covers it), NaN on both for the rows without a target.
void expect_finish_matches_cpu(uint64_t seed, int64_t ignore_every, int64_t ignore_first,
                               bool with_row_nll) {
  const int64_t n = 1000;
  Rng rng(seed, kRngSynthetic);
  std::vector<float> row_max(n), target_logit(n), c_lse(n, 0.0f);
  std::vector<double> row_sum(n), c_row_nll(n, 0.0);
  std::vector<int32_t> targets(n);
  for (int64_t r = 0; r < n; ++r) {
    row_max[r] = 3.0f * rng.normal();
    row_sum[r] = 1.0 + 100.0 * rng.uniform();
    target_logit[r] = row_max[r] - 2.0f * rng.uniform();
    targets[r] = r % ignore_every == ignore_first ? kIgnoreTarget : static_cast<int32_t>(r);
  }
  double c_result[2] = {0.0, 0.0};
  full_softmax_finish(Device::cpu(), row_max.data(), row_sum.data(), target_logit.data(),
                      targets.data(), n, c_lse.data(), c_result,
                      with_row_nll ? c_row_nll.data() : nullptr);
  Tensor g_max = device_copy(row_max, DType::kF32), g_sum = device_copy(row_sum, DType::kI64);
  Tensor g_target = device_copy(target_logit, DType::kF32);
  Tensor g_targets = device_copy(targets, DType::kI32);
  Tensor g_lse = device_copy(std::vector<float>(n, 0.0f), DType::kF32);
  Tensor g_result = device_copy(std::vector<double>(2, 0.0), DType::kI64);
  Tensor g_row_nll = device_copy(std::vector<double>(n, 0.0), DType::kI64);
  full_softmax_finish(Device::cuda(0), g_max.data<float>(), static_cast<double*>(g_sum.raw()),
                      g_target.data<float>(), g_targets.data<int32_t>(), n, g_lse.data<float>(),
                      static_cast<double*>(g_result.raw()),
                      with_row_nll ? static_cast<double*>(g_row_nll.raw()) : nullptr);
  EXPECT_TRUE(testing::all_close(g_lse.to_floats(), c_lse, 0.0f, 2e-7f));
  const std::vector<double> g = host_copy<double>(g_result);
  EXPECT_NEAR(g[0], c_result[0], 1e-12 * std::fabs(c_result[0]));
  EXPECT_EQ(g[1], c_result[1]);
  if (!with_row_nll) return;
  const std::vector<double> g_rows = host_copy<double>(g_row_nll);
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] < 0) {
      EXPECT_TRUE(std::isnan(g_rows[r]) && std::isnan(c_row_nll[r])) << r;
      continue;
    }
    const double row_lse = std::fabs(static_cast<double>(c_lse[r]));
    EXPECT_NEAR(g_rows[r], c_row_nll[r], 1e-13 * std::max(1.0, row_lse)) << r;
  }
}

TEST(FullSoftmaxGpu, FinishMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  expect_finish_matches_cpu(22, 7, 3, /*with_row_nll=*/false);
}

TEST(FullSoftmaxGpu, FinishRowNllMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  expect_finish_matches_cpu(23, 5, 1, /*with_row_nll=*/true);
}
}  // namespace
}  // namespace elmo
