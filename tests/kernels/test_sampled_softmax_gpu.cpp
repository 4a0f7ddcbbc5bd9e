// GPU twin check: the CUDA sampled-softmax row kernels against the CPU twins.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/sampled_softmax.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

template <typename T>
Tensor device_copy(const std::vector<T>& v) {
  Tensor host = Tensor::empty({static_cast<int64_t>(v.size())}, dtype_of<T>());
  std::memcpy(host.raw(), v.data(), sizeof(T) * v.size());
  return host.to(Device::cuda(0));
}

TEST(SampledSoftmaxGpu, RowsMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  for (const int64_t s : {int64_t{1}, int64_t{300}, int64_t{8192}}) {  // < block, tail, big
    const int64_t n = 67;
    Rng rng(17, kRngSynthetic);
    std::vector<float> logits(n * s), true_logits(n), correction(s), loss(n);
    std::vector<int32_t> ids(s), targets(n);
    for (auto& v : logits) v = 4.0f * rng.normal();
    for (auto& v : true_logits) v = 4.0f * rng.normal();
    for (auto& v : correction) v = rng.normal();
    for (int64_t j = 0; j < s; ++j) ids[j] = static_cast<int32_t>(2 * j);
    for (int64_t r = 0; r < n; ++r)
      targets[r] = r % 2 ? ids[(r * 7) % s] : static_cast<int32_t>(2 * s + r);  // hits
    for (const bool grad : {false, true}) {
      Tensor g_logits = device_copy(logits), g_true = device_copy(true_logits);
      Tensor g_corr = device_copy(correction), g_ids = device_copy(ids);
      Tensor g_targets = device_copy(targets), g_loss = device_copy(loss);
      std::vector<float> c_logits = logits, c_true = true_logits, c_loss(n);
      const SampledSoftmaxRowsParams params{n, s, 0.3f, grad};
      sampled_softmax_rows(Device::cpu(), c_logits.data(), c_true.data(), correction.data(),
                           ids.data(), targets.data(), c_loss.data(), params);
      sampled_softmax_rows(Device::cuda(0), g_logits.data<float>(), g_true.data<float>(),
                           g_corr.data<float>(), g_ids.data<int32_t>(), g_targets.data<int32_t>(),
                           g_loss.data<float>(), params);
      // f32 block reductions in another order than the CPU's double sums: 1e-5 relative.
      EXPECT_TRUE(testing::all_close(g_loss.to_floats(), c_loss, 1e-5f, 1e-5f)) << s;
      EXPECT_TRUE(testing::all_close(g_logits.to_floats(), c_logits, 1e-7f, 1e-5f)) << s;
      EXPECT_TRUE(testing::all_close(g_true.to_floats(), c_true, 1e-7f, 1e-5f)) << s;
    }
  }
}

TEST(SampledSoftmaxGpu, TargetLogitsMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t vocab = 1000, dim = 77, n = 45, tries = 3000;
  Rng rng(3, kRngSynthetic);
  std::vector<float> weight(vocab * dim), bias(vocab), h(n * dim), out(n);
  std::vector<int32_t> targets(n);
  for (auto& v : weight) v = rng.normal();
  for (auto& v : bias) v = rng.normal();
  for (auto& v : h) v = rng.normal();
  for (auto& t : targets) t = static_cast<int32_t>(rng.below(vocab));
  sampled_softmax_target_logits(Device::cpu(), weight.data(), bias.data(), h.data(), targets.data(),
                                n, dim, tries, vocab, out.data());
  Tensor g_w = device_copy(weight), g_b = device_copy(bias), g_h = device_copy(h);
  Tensor g_t = device_copy(targets), g_out = device_copy(out);
  sampled_softmax_target_logits(Device::cuda(0), g_w.data<float>(), g_b.data<float>(),
                                g_h.data<float>(), g_t.data<int32_t>(), n, dim, tries, vocab,
                                g_out.data<float>());
  // Dot products of 77 terms in another order: 1e-5 relative + 1e-5 absolute.
  EXPECT_TRUE(testing::all_close(g_out.to_floats(), out, 1e-5f, 1e-5f));
}

TEST(SampledSoftmaxGpu, CorrectionsMatchCpuBitwise) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t vocab = 5000, s = 1000;  // several blocks and a partial one
  Rng rng(5, kRngSynthetic);
  std::vector<float> bias(vocab), log_expected(s), out(s);
  std::vector<int32_t> ids(s);
  for (auto& v : bias) v = rng.normal();
  for (auto& v : log_expected) v = -3.0f * rng.uniform();
  for (auto& id : ids) id = static_cast<int32_t>(rng.below(vocab));
  sampled_softmax_corrections(Device::cpu(), bias.data(), ids.data(), log_expected.data(), s,
                              out.data());
  Tensor g_b = device_copy(bias), g_ids = device_copy(ids), g_le = device_copy(log_expected);
  Tensor g_out = device_copy(out);
  sampled_softmax_corrections(Device::cuda(0), g_b.data<float>(), g_ids.data<int32_t>(),
                              g_le.data<float>(), s, g_out.data<float>());
  EXPECT_TRUE(testing::all_close(g_out.to_floats(), out, 0.0f, 0.0f));  // one rounded subtraction
}

TEST(SampledSoftmaxGpu, SampleBiasGradMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t n = 2560, s = 1000;  // the lane order spreads the rows; a partial 32-column block
  Rng rng(7, kRngSynthetic);
  std::vector<float> dlogits(n * s);
  for (auto& v : dlogits) v = 1e-3f * rng.normal();
  std::vector<double> db(s, 0.25);
  Tensor host_db = Tensor::empty({s}, DType::kI64);  // f64 values in an i64 tensor
  std::memcpy(host_db.raw(), db.data(), sizeof(double) * db.size());
  Tensor g_dlogits = device_copy(dlogits), g_db = host_db.to(Device::cuda(0));
  sampled_softmax_sample_bias_grad(Device::cpu(), dlogits.data(), n, s, db.data());
  sampled_softmax_sample_bias_grad(Device::cuda(0), g_dlogits.data<float>(), n, s,
                                   reinterpret_cast<double*>(g_db.raw()));
  const Tensor host = g_db.to(Device::cpu());
  const double* got = reinterpret_cast<const double*>(host.raw());
  // Double sums of 2560 f32 terms in two orders: far below 1e-12 of the magnitudes involved.
  for (int64_t j = 0; j < s; ++j) ASSERT_NEAR(got[j], db[j], 1e-12) << j;
}

}  // namespace
}  // namespace elmo
