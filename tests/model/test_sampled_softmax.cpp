// SampledSoftmax layer: loss against a double-precision reference, finite-difference checks of
// dh and of the sparse weight/bias rows, the touched-row set and per-id summation, samples given
// to begin_step instead of drawn there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "model/sampled_softmax.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

constexpr int64_t kVocab = 60, kDim = 8, kSamples = 12, kRows = 7;
constexpr uint64_t kSeed = 2024;

// Double-precision reference: sum over rows of NLL over [true, sampled...].
double reference_sum_nll(const std::vector<float>& weight, const std::vector<float>& bias,
                         const float* h, const std::vector<int32_t>& targets,
                         const SampleSet& samples, int64_t vocab, int64_t dim) {
  auto logit = [&](int64_t r, int32_t id) {
    double z = bias[id];
    for (int64_t d = 0; d < dim; ++d)
      z += static_cast<double>(h[r * dim + d]) * weight[id * dim + d];
    const double p = log_uniform_prob(id, vocab);
    return z - std::log(1.0 - std::pow(1.0 - p, static_cast<double>(samples.tries)));
  };
  double total = 0.0;
  for (int64_t r = 0; r < static_cast<int64_t>(targets.size()); ++r) {
    std::vector<double> z = {logit(r, targets[r])};
    for (const int32_t id : samples.ids)
      if (id != targets[r]) z.push_back(logit(r, id));
    const double max = *std::max_element(z.begin(), z.end());
    double sum = 0.0;
    for (const double v : z) sum += std::exp(v - max);
    total += max + std::log(sum) - z[0];
  }
  return total;
}

struct Fixture {
  ParameterStore store;
  Parameter* weight;
  Parameter* bias;
  std::vector<float> w, b, h_fwd, h_bwd;
  std::vector<int32_t> t_fwd, t_bwd;
  SampleSet expected_samples;  // what begin_step will draw (replayed)

  Fixture() {
    weight = &store.add("softmax.weight", {kVocab, kDim}, true);
    bias = &store.add("softmax.bias", {kVocab}, true);
    Rng init(kSeed, kRngInit);
    w.resize(kVocab * kDim);
    b.resize(kVocab);
    h_fwd.resize(kRows * kDim);
    h_bwd.resize(kRows * kDim);
    for (auto& v : w) v = 0.5f * init.normal();
    for (auto& v : b) v = 0.5f * init.normal();
    for (auto& v : h_fwd) v = init.normal();
    for (auto& v : h_bwd) v = init.normal();
    Rng replay(kSeed, kRngSampler);
    expected_samples = sample_log_uniform_unique(kVocab, kSamples, replay);
    const auto& s = expected_samples.ids;
    // Repeated targets, targets that are also samples (accidental hits), and shared ids
    // between directions.
    t_fwd = {s[0], 59, s[0], 5, s[3], 59, 17};
    t_bwd = {s[3], 2, 17, s[0], 40, 2, s[5]};
  }
  double reference_total(float gs_fwd, float gs_bwd) const {
    return gs_fwd * reference_sum_nll(w, b, h_fwd.data(), t_fwd, expected_samples, kVocab, kDim) +
           gs_bwd * reference_sum_nll(w, b, h_bwd.data(), t_bwd, expected_samples, kVocab, kDim);
  }
};

// Runs one step; returns {mean_fwd, mean_bwd}; fills dh of both directions.
std::pair<double, double> run_step(Fixture& f, SampledSoftmax& layer, float gs_fwd, float gs_bwd,
                                   std::vector<float>& dh_fwd, std::vector<float>& dh_bwd) {
  Rng rng(kSeed, kRngSampler);
  layer.begin_step(rng, {{f.t_fwd.data(), kRows}, {f.t_bwd.data(), kRows}});
  dh_fwd.assign(kRows * kDim, 0.0f);
  dh_bwd.assign(kRows * kDim, 0.0f);
  const double fwd = layer.forward_backward(f.w.data(), f.b.data(), f.h_fwd.data(), f.t_fwd.data(),
                                            kRows, gs_fwd, dh_fwd.data());
  const double bwd = layer.forward_backward(f.w.data(), f.b.data(), f.h_bwd.data(), f.t_bwd.data(),
                                            kRows, gs_bwd, dh_bwd.data());
  layer.finish_step(*f.weight, *f.bias);
  return {fwd, bwd};
}

TEST(SampledSoftmax, LossMatchesDoubleReferenceAndSamplesAreTheRngsDraws) {
  Fixture f;
  SampledSoftmax layer(kVocab, kDim, kSamples);
  std::vector<float> dh_fwd, dh_bwd;
  const auto [fwd, bwd] = run_step(f, layer, 1.0f, 1.0f, dh_fwd, dh_bwd);
  EXPECT_EQ(layer.samples().ids, f.expected_samples.ids);
  EXPECT_EQ(layer.samples().tries, f.expected_samples.tries);
  const double ref_fwd =
      reference_sum_nll(f.w, f.b, f.h_fwd.data(), f.t_fwd, f.expected_samples, kVocab, kDim) /
      kRows;
  const double ref_bwd =
      reference_sum_nll(f.w, f.b, f.h_bwd.data(), f.t_bwd, f.expected_samples, kVocab, kDim) /
      kRows;
  // f32 GEMM logits, f32 log expected counts: 1e-5 relative.
  EXPECT_NEAR(fwd, ref_fwd, 1e-5 * ref_fwd);
  EXPECT_NEAR(bwd, ref_bwd, 1e-5 * ref_bwd);
  EXPECT_NEAR(layer.forward_loss(f.w.data(), f.b.data(), f.h_fwd.data(), f.t_fwd.data(), kRows),
              fwd, 1e-6 * fwd);
}

TEST(SampledSoftmax, InputGradientsMatchFiniteDifferences) {
  Fixture f;
  SampledSoftmax layer(kVocab, kDim, kSamples);
  const float gs_fwd = 0.5f * 3 / kRows, gs_bwd = 0.7f;
  std::vector<float> dh_fwd, dh_bwd;
  run_step(f, layer, gs_fwd, gs_bwd, dh_fwd, dh_bwd);
  auto loss = [&] { return f.reference_total(gs_fwd, gs_bwd); };
  // eps 1e-3 on O(1) f32 inputs: the f32 rounding of x +- eps limits agreement to ~1e-4.
  EXPECT_TRUE(testing::gradient_matches(loss, f.h_fwd.data(), dh_fwd.data(), kRows * kDim, 1e-3,
                                        1e-3, kRows * kDim));
  EXPECT_TRUE(testing::gradient_matches(loss, f.h_bwd.data(), dh_bwd.data(), kRows * kDim, 1e-3,
                                        1e-3, kRows * kDim));
}

TEST(SampledSoftmax, SparseRowGradientsMatchFiniteDifferencesAndSumPerId) {
  Fixture f;
  SampledSoftmax layer(kVocab, kDim, kSamples);
  const float gs_fwd = 0.25f, gs_bwd = 0.6f;
  std::vector<float> dh_fwd, dh_bwd;
  run_step(f, layer, gs_fwd, gs_bwd, dh_fwd, dh_bwd);

  // U = sorted unique(targets of both directions ∪ samples).
  std::set<int32_t> u(f.expected_samples.ids.begin(), f.expected_samples.ids.end());
  u.insert(f.t_fwd.begin(), f.t_fwd.end());
  u.insert(f.t_bwd.begin(), f.t_bwd.end());
  const std::vector<int32_t> expected_ids(u.begin(), u.end());
  EXPECT_EQ(layer.touched_ids(), expected_ids);
  ASSERT_EQ(f.weight->sparse_grad.ids, expected_ids);
  ASSERT_EQ(f.bias->sparse_grad.ids, expected_ids);
  const int64_t nu = static_cast<int64_t>(expected_ids.size());
  ASSERT_EQ(f.weight->sparse_grad.values.shape(), Shape({nu, kDim}));
  ASSERT_EQ(f.bias->sparse_grad.values.shape(), Shape({nu, 1}));

  // Dense view of the sparse rows; rows outside U stay 0 and must have 0 numeric gradient.
  std::vector<float> dw(kVocab * kDim, 0.0f), db(kVocab, 0.0f);
  const float* gw = f.weight->sparse_grad.values.data<float>();
  const float* gb = f.bias->sparse_grad.values.data<float>();
  for (int64_t i = 0; i < nu; ++i) {
    for (int64_t d = 0; d < kDim; ++d) dw[expected_ids[i] * kDim + d] = gw[i * kDim + d];
    db[expected_ids[i]] = gb[i];
  }
  auto loss = [&] { return f.reference_total(gs_fwd, gs_bwd); };
  // Every weight and bias entry: 480 + 60 finite differences of a tiny reference.
  EXPECT_TRUE(testing::gradient_matches(loss, f.w.data(), dw.data(), kVocab * kDim, 1e-3, 1e-3,
                                        kVocab * kDim));
  EXPECT_TRUE(testing::gradient_matches(loss, f.b.data(), db.data(), kVocab, 1e-3, 1e-3, kVocab));
}

TEST(SampledSoftmax, StepsAreDeterministicAndReuseBuffersCleanly) {
  Fixture f;
  SampledSoftmax reused(kVocab, kDim, kSamples);
  std::vector<float> dh_fwd, dh_bwd, dh_fwd2, dh_bwd2;
  // A first step with other targets, then the fixture's step: must equal a fresh layer's.
  {
    Fixture other;
    std::swap(other.t_fwd, other.t_bwd);
    other.t_fwd[1] = 33;
    run_step(other, reused, 0.3f, 0.3f, dh_fwd, dh_bwd);
  }
  const auto a = run_step(f, reused, 0.4f, 0.2f, dh_fwd, dh_bwd);
  const std::vector<float> gw = f.weight->sparse_grad.values.to_floats();
  const std::vector<float> gb = f.bias->sparse_grad.values.to_floats();
  const std::vector<int32_t> ids = f.weight->sparse_grad.ids;
  SampledSoftmax fresh(kVocab, kDim, kSamples);
  const auto b = run_step(f, fresh, 0.4f, 0.2f, dh_fwd2, dh_bwd2);
  EXPECT_EQ(a, b);
  EXPECT_EQ(dh_fwd, dh_fwd2);
  EXPECT_EQ(dh_bwd, dh_bwd2);
  EXPECT_EQ(ids, f.weight->sparse_grad.ids);
  EXPECT_EQ(gw, f.weight->sparse_grad.values.to_floats());  // bitwise
  EXPECT_EQ(gb, f.bias->sparse_grad.values.to_floats());
}

TEST(SampledSoftmax, BadSizesAndTargetsAreErrors) {
  try {
    SampledSoftmax layer(100, 4, 100);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("samples = 100"), std::string::npos) << what;
    EXPECT_NE(what.find("vocab = 100"), std::string::npos) << what;
  }
  Fixture f;
  SampledSoftmax layer(kVocab, kDim, kSamples);
  Rng rng(kSeed, kRngSampler);
  const std::vector<int32_t> bad = {1, kVocab};
  EXPECT_THROW(layer.begin_step(rng, {{bad.data(), 2}}), Error);
  layer.begin_step(rng, {{f.t_fwd.data(), kRows}});
  std::vector<float> dh(kRows * kDim);
  // t_bwd holds ids that were not passed to begin_step.
  EXPECT_THROW(layer.forward_backward(f.w.data(), f.b.data(), f.h_bwd.data(), f.t_bwd.data(), kRows,
                                      1.0f, dh.data()),
               Error);
}

// begin_step with samples drawn beforehand (what BiLM's NegativeSampler hands over) computes
// exactly what drawing them from the same stream inside begin_step does; samples that cannot
// be the sampler's (wrong count, out of range, repeated) are errors naming the problem.
TEST(SampledSoftmax, GivenSamplesEqualDrawingThemFromTheStream) {
  Fixture f;
  SampledSoftmax drawn(kVocab, kDim, kSamples), given(kVocab, kDim, kSamples);
  std::vector<float> dh_fwd, dh_bwd, dh_fwd2, dh_bwd2;
  const auto a = run_step(f, drawn, 0.4f, 0.2f, dh_fwd, dh_bwd);
  const std::vector<float> gw = f.weight->sparse_grad.values.to_floats();
  const std::vector<float> gb = f.bias->sparse_grad.values.to_floats();
  const std::vector<int32_t> ids = f.weight->sparse_grad.ids;

  given.begin_step(f.expected_samples, {{f.t_fwd.data(), kRows}, {f.t_bwd.data(), kRows}});
  dh_fwd2.assign(kRows * kDim, 0.0f);
  dh_bwd2.assign(kRows * kDim, 0.0f);
  const double fwd = given.forward_backward(f.w.data(), f.b.data(), f.h_fwd.data(), f.t_fwd.data(),
                                            kRows, 0.4f, dh_fwd2.data());
  const double bwd = given.forward_backward(f.w.data(), f.b.data(), f.h_bwd.data(), f.t_bwd.data(),
                                            kRows, 0.2f, dh_bwd2.data());
  given.finish_step(*f.weight, *f.bias);
  EXPECT_EQ(a, std::make_pair(fwd, bwd));
  EXPECT_EQ(given.samples().ids, drawn.samples().ids);
  EXPECT_EQ(given.samples().tries, drawn.samples().tries);
  EXPECT_EQ(dh_fwd, dh_fwd2);
  EXPECT_EQ(dh_bwd, dh_bwd2);
  EXPECT_EQ(ids, f.weight->sparse_grad.ids);
  EXPECT_EQ(gw, f.weight->sparse_grad.values.to_floats());  // bitwise
  EXPECT_EQ(gb, f.bias->sparse_grad.values.to_floats());

  SampleSet short_set = f.expected_samples;
  short_set.ids.pop_back();
  short_set.log_expected.pop_back();
  SampleSet outside = f.expected_samples;
  outside.ids[2] = kVocab;
  SampleSet repeated = f.expected_samples;
  repeated.ids[1] = repeated.ids[0];
  const std::vector<std::pair<const int32_t*, int64_t>> targets = {{f.t_fwd.data(), kRows}};
  EXPECT_NE(testing::error_of([&] { given.begin_step(short_set, targets); }).find("11 samples"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { given.begin_step(outside, targets); }).find("outside"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { given.begin_step(repeated, targets); }).find("not distinct"),
            std::string::npos);
  // A refused set leaves the layer usable: U = sorted unique(samples ∪ targets).
  given.begin_step(f.expected_samples, targets);
  std::set<int32_t> touched(f.expected_samples.ids.begin(), f.expected_samples.ids.end());
  touched.insert(f.t_fwd.begin(), f.t_fwd.end());
  EXPECT_EQ(given.touched_ids(), std::vector<int32_t>(touched.begin(), touched.end()));
}

// The touched rows are summed from begin_step's target sets, so a call must pass its set: the
// CPU checks the contents (here a reordering of the set, every id touched), and every device the
// row count and the number of calls.
TEST(SampledSoftmax, CallsMustPassTheirBeginStepTargetSets) {
  Fixture f;
  SampledSoftmax layer(kVocab, kDim, kSamples);
  Rng rng(kSeed, kRngSampler);
  layer.begin_step(rng, {{f.t_fwd.data(), kRows}});
  std::vector<int32_t> reordered(f.t_fwd.rbegin(), f.t_fwd.rend());
  std::vector<float> dh(kRows * kDim);
  std::string message = testing::error_of([&] {
    layer.forward_backward(f.w.data(), f.b.data(), f.h_fwd.data(), reordered.data(), kRows, 1.0f,
                           dh.data());
  });
  EXPECT_NE(message.find("differ from target set 0 given to begin_step"), std::string::npos)
      << message;
  message = testing::error_of([&] {
    layer.forward_backward(f.w.data(), f.b.data(), f.h_fwd.data(), f.t_fwd.data(), kRows - 1, 1.0f,
                           dh.data());
  });
  EXPECT_NE(message.find("target set 0 given to begin_step has 7"), std::string::npos) << message;
  EXPECT_THROW(layer.finish_step(*f.weight, *f.bias), Error);  // no call for the set yet
  layer.forward_backward(f.w.data(), f.b.data(), f.h_fwd.data(), f.t_fwd.data(), kRows, 1.0f,
                         dh.data());
  message = testing::error_of([&] {
    layer.forward_backward(f.w.data(), f.b.data(), f.h_bwd.data(), f.t_bwd.data(), kRows, 1.0f,
                           dh.data());
  });
  EXPECT_NE(message.find("begin_step was given only 1 target sets"), std::string::npos) << message;
  layer.finish_step(*f.weight, *f.bias);
}

}  // namespace
}  // namespace elmo
