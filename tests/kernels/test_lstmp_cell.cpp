// Fused LSTM cell (CPU twin): forward against double math, backward against central differences
// of the double forward, clip semantics at the boundary, aliasing, optional inputs, the
// parallel path and entry-point checks.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/lstmp_cell.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

std::vector<float> random_floats(uint64_t seed, int64_t n, float lo, float hi) {
  Rng rng(seed, kRngSynthetic);
  std::vector<float> v(n);
  for (float& e : v) e = lo + (hi - lo) * rng.uniform();
  return v;
}

double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double clip_d(double x, double limit) {
  return limit <= 0 ? x : std::min(limit, std::max(-limit, x));
}

// Double reference of one element: returns (c, m) and the pre-clip state.
struct RefElem {
  double c, m, raw;
};
RefElem ref_elem(const double* z_row, int64_t C, int64_t j, double c_prev, double clip) {
  const double i = sigmoid_d(z_row[j]), f = sigmoid_d(z_row[C + j]),
               g = std::tanh(z_row[2 * C + j]), o = sigmoid_d(z_row[3 * C + j]);
  const double raw = f * c_prev + i * g;
  const double c = clip_d(raw, clip);
  return {c, o * std::tanh(c), raw};
}

// loss = sum(m * wm + c * wc) in double over all rows.
double ref_loss(const std::vector<double>& z, const std::vector<double>& c_prev, int64_t B,
                int64_t C, double clip, const std::vector<float>& wm,
                const std::vector<float>& wc) {
  double loss = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < C; ++j) {
      const RefElem e = ref_elem(z.data() + b * 4 * C, C, j, c_prev[b * C + j], clip);
      loss += e.m * wm[b * C + j] + e.c * wc[b * C + j];
    }
  return loss;
}

TEST(LstmpCell, ForwardAndBackwardMatchDoubleReference) {
  const int64_t B = 3, C = 5;
  for (float clip : {0.0f, 0.6f}) {
    // Gate pre-activations in [-3, 3] and c_prev in [-1, 1]: with clip 0.6 some states clip.
    const std::vector<float> z = random_floats(1, B * 4 * C, -3.0f, 3.0f);
    const std::vector<float> c_prev = random_floats(2, B * C, -1.0f, 1.0f);
    const std::vector<float> wm = random_floats(3, B * C, -1.0f, 1.0f);
    const std::vector<float> wc = random_floats(4, B * C, -1.0f, 1.0f);
    std::vector<float> c(B * C), m(B * C), gates(B * 4 * C), c_raw(B * C);
    lstmp_cell_forward(Device::cpu(), B, C, clip, z.data(), c_prev.data(), c.data(), m.data(),
                       gates.data(), c_raw.data());
    std::vector<double> zd(z.begin(), z.end()), cpd(c_prev.begin(), c_prev.end());
    int clipped = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < C; ++j) {
        const RefElem e = ref_elem(zd.data() + b * 4 * C, C, j, cpd[b * C + j], clip);
        // f32 transcendental functions: a few ulp of O(1) values.
        EXPECT_NEAR(c[b * C + j], e.c, 1e-6);
        EXPECT_NEAR(m[b * C + j], e.m, 1e-6);
        EXPECT_NEAR(c_raw[b * C + j], e.raw, 1e-6);
        if (clip > 0 && std::fabs(e.raw) > clip) ++clipped;
        // FD points must not sit on the clip boundary.
        if (clip > 0) {
          ASSERT_GT(std::fabs(std::fabs(e.raw) - clip), 1e-3);
        }
      }
    if (clip > 0) {
      EXPECT_GT(clipped, 0);
    }

    // Backward: dm = wm, dc_next = wc (the loss's direct weight on c) -> dz, dc_prev.
    std::vector<float> dz(B * 4 * C), dc_prev(B * C);
    lstmp_cell_backward(Device::cpu(), B, C, clip, gates.data(), c_prev.data(), c_raw.data(),
                        wm.data(), wc.data(), dz.data(), dc_prev.data());
    const double eps = 1e-6;
    auto fd = [&](std::vector<double>& v, size_t k) {
      const double saved = v[k];
      v[k] = saved + eps;
      const double up = ref_loss(zd, cpd, B, C, clip, wm, wc);
      v[k] = saved - eps;
      const double down = ref_loss(zd, cpd, B, C, clip, wm, wc);
      v[k] = saved;
      return (up - down) / (2 * eps);
    };
    // f32 analytic vs double FD (truncation ~1e-12): 1e-5 covers f32 rounding of O(1) terms.
    for (size_t k = 0; k < zd.size(); ++k) EXPECT_NEAR(dz[k], fd(zd, k), 1e-5) << "dz " << k;
    for (size_t k = 0; k < cpd.size(); ++k)
      EXPECT_NEAR(dc_prev[k], fd(cpd, k), 1e-5) << "dc_prev " << k;
  }
}

// The branch-free activations against libm in double, over the range that matters and beyond.
TEST(LstmpCell, ActivationsAreAccurate) {
  double worst_exp = 0, worst_sig = 0, worst_tanh = 0;
  for (int k = -200000; k <= 200000; ++k) {
    const float x = k * 1e-4f;  // [-20, 20], steps of 1e-4 (crosses the tanh switch at 0.625)
    const double xd = x;
    worst_exp = std::max(worst_exp, std::fabs(lstm_exp(x) - std::exp(xd)) / std::exp(xd));
    worst_sig = std::max(worst_sig, std::fabs(lstm_sigmoid(x) - sigmoid_d(xd)));
    // tanh: relative near 0 (the polynomial branch), absolute elsewhere.
    const double t = std::tanh(xd);
    worst_tanh = std::max(worst_tanh, std::fabs(lstm_tanh(x) - t) / std::max(std::fabs(t), 1.0));
  }
  // A few f32 ulps (2^-24 ~ 6e-8 relative).
  EXPECT_LT(worst_exp, 3e-7);
  EXPECT_LT(worst_sig, 2e-7);
  EXPECT_LT(worst_tanh, 3e-7);
  for (float tiny : {1e-3f, 1e-6f, -1e-20f}) EXPECT_NEAR(lstm_tanh(tiny) / tiny, 1.0, 1e-6);
  // Extremes saturate cleanly (no inf / NaN from the clamp).
  EXPECT_EQ(lstm_sigmoid(1000.0f), 1.0f);
  EXPECT_LT(lstm_sigmoid(-1000.0f), 1e-30f);
  EXPECT_GE(lstm_sigmoid(-1000.0f), 0.0f);
  EXPECT_EQ(lstm_tanh(1000.0f), 1.0f);
  EXPECT_EQ(lstm_tanh(-1000.0f), -1.0f);
  EXPECT_TRUE(std::isfinite(lstm_exp(1e30f)));
  EXPECT_TRUE(std::isnan(lstm_tanh(NAN)));
}

TEST(LstmpCell, ClipGradientPassesOnTheBoundaryOnly) {
  EXPECT_EQ(clip_symmetric(0.7f, 0.5f), 0.5f);
  EXPECT_EQ(clip_symmetric(-0.7f, 0.5f), -0.5f);
  EXPECT_EQ(clip_symmetric(0.7f, 0.0f), 0.7f);   // no clip
  EXPECT_EQ(clip_symmetric(0.7f, -1.0f), 0.7f);  // no clip
  EXPECT_EQ(clip_pass(0.5f, 0.5f), 1.0f);        // TF: min <= x <= max passes
  EXPECT_EQ(clip_pass(-0.5f, 0.5f), 1.0f);
  EXPECT_EQ(clip_pass(std::nextafter(0.5f, 1.0f), 0.5f), 0.0f);
  EXPECT_EQ(clip_pass(-0.6f, 0.5f), 0.0f);
  EXPECT_EQ(clip_pass(100.0f, 0.0f), 1.0f);

  // A state exactly on the boundary passes its gradient; one beyond it does not.
  const int64_t C = 1;
  const float gates[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  const float dm = 0.0f, dc_next = 1.0f;
  float dz[4], dc_prev;
  const float on = 0.5f, beyond = 0.75f;
  lstmp_cell_backward(Device::cpu(), 1, C, 0.5f, gates, &on, &on, &dm, &dc_next, dz, &dc_prev);
  EXPECT_EQ(dc_prev, 0.5f);  // dc * f
  lstmp_cell_backward(Device::cpu(), 1, C, 0.5f, gates, &on, &beyond, &dm, &dc_next, dz, &dc_prev);
  EXPECT_EQ(dc_prev, 0.0f);
  for (float v : dz) EXPECT_EQ(v, 0.0f);
}

// In place (gates = z, dz = gates, dc_prev = dc_next) and nullptr optionals give the same
// numbers as separate buffers with explicit zeros.
TEST(LstmpCell, AliasingAndOptionalArguments) {
  const int64_t B = 4, C = 6;
  const float clip = 0.5f;
  const std::vector<float> z = random_floats(5, B * 4 * C, -3.0f, 3.0f);
  const std::vector<float> zeros(B * C, 0.0f);
  const std::vector<float> dm = random_floats(6, B * C, -1.0f, 1.0f);
  const std::vector<float> dc_next = random_floats(7, B * C, -1.0f, 1.0f);
  std::vector<float> c(B * C), m(B * C), gates(B * 4 * C), c_raw(B * C);
  lstmp_cell_forward(Device::cpu(), B, C, clip, z.data(), zeros.data(), c.data(), m.data(),
                     gates.data(), c_raw.data());
  std::vector<float> z2 = z, c2(B * C), m2(B * C), c_raw2(B * C);
  lstmp_cell_forward(Device::cpu(), B, C, clip, z2.data(), nullptr, c2.data(), m2.data(), z2.data(),
                     c_raw2.data());
  EXPECT_EQ(z2, gates);
  EXPECT_EQ(c2, c);
  EXPECT_EQ(m2, m);
  EXPECT_EQ(c_raw2, c_raw);
  std::vector<float> c3(B * C), m3(B * C);
  lstmp_cell_forward(Device::cpu(), B, C, clip, z.data(), nullptr, c3.data(), m3.data(), nullptr,
                     nullptr);
  EXPECT_EQ(c3, c);  // inference: same outputs, nothing saved
  EXPECT_EQ(m3, m);

  std::vector<float> dz(B * 4 * C), dc_prev(B * C);
  lstmp_cell_backward(Device::cpu(), B, C, clip, gates.data(), zeros.data(), c_raw.data(),
                      dm.data(), dc_next.data(), dz.data(), dc_prev.data());
  std::vector<float> g2 = gates, dc2 = dc_next;
  lstmp_cell_backward(Device::cpu(), B, C, clip, g2.data(), nullptr, c_raw.data(), dm.data(),
                      dc2.data(), g2.data(), dc2.data());
  EXPECT_EQ(g2, dz);
  EXPECT_EQ(dc2, dc_prev);
  std::vector<float> dz4(B * 4 * C), dz5(B * 4 * C);
  lstmp_cell_backward(Device::cpu(), B, C, clip, gates.data(), nullptr, c_raw.data(), dm.data(),
                      nullptr, dz4.data(), nullptr);
  lstmp_cell_backward(Device::cpu(), B, C, clip, gates.data(), nullptr, c_raw.data(), dm.data(),
                      zeros.data(), dz5.data(), nullptr);
  EXPECT_EQ(dz4, dz5);
}

// Enough rows for several parallel chunks: every row equals the row computed alone.
TEST(LstmpCell, ParallelRowsEqualSerialRows) {
  const int64_t B = 700, C = 96;
  const std::vector<float> z = random_floats(8, B * 4 * C, -4.0f, 4.0f);
  const std::vector<float> c_prev = random_floats(9, B * C, -2.0f, 2.0f);
  std::vector<float> c(B * C), m(B * C), gates(B * 4 * C), c_raw(B * C);
  lstmp_cell_forward(Device::cpu(), B, C, 1.0f, z.data(), c_prev.data(), c.data(), m.data(),
                     gates.data(), c_raw.data());
  for (int64_t b : {int64_t{0}, int64_t{349}, B - 1}) {
    std::vector<float> c1(C), m1(C), g1(4 * C), r1(C);
    lstmp_cell_forward(Device::cpu(), 1, C, 1.0f, z.data() + b * 4 * C, c_prev.data() + b * C,
                       c1.data(), m1.data(), g1.data(), r1.data());
    EXPECT_EQ(c1, std::vector<float>(c.begin() + b * C, c.begin() + (b + 1) * C));
    EXPECT_EQ(m1, std::vector<float>(m.begin() + b * C, m.begin() + (b + 1) * C));
  }
}

TEST(LstmpCell, TensorEntryPointsCheckShapes) {
  const int64_t B = 2, C = 3;
  Tensor z = Tensor::from_floats(random_floats(10, B * 4 * C, -2.0f, 2.0f), {B, 4 * C});
  Tensor c = Tensor::empty({B, C}), m = Tensor::empty({B, C});
  Tensor gates = Tensor::empty({B, 4 * C}), c_raw = Tensor::empty({B, C});
  lstmp_cell_forward(z, Tensor(), 0.5f, c, m, gates, c_raw);
  std::vector<float> c_ref(B * C), m_ref(B * C);
  lstmp_cell_forward(Device::cpu(), B, C, 0.5f, z.data<float>(), nullptr, c_ref.data(),
                     m_ref.data(), nullptr, nullptr);
  EXPECT_EQ(c.to_floats(), c_ref);
  EXPECT_EQ(m.to_floats(), m_ref);

  Tensor dm = Tensor::from_floats(random_floats(11, B * C, -1.0f, 1.0f), {B, C});
  Tensor dz = Tensor::empty({B, 4 * C}), dc_prev = Tensor::empty({B, C});
  lstmp_cell_backward(gates, Tensor(), c_raw, 0.5f, dm, Tensor(), dz, dc_prev);
  std::vector<float> dz_ref(B * 4 * C), dcp_ref(B * C);
  lstmp_cell_backward(Device::cpu(), B, C, 0.5f, gates.data<float>(), nullptr, c_raw.data<float>(),
                      dm.data<float>(), nullptr, dz_ref.data(), dcp_ref.data());
  EXPECT_EQ(dz.to_floats(), dz_ref);
  EXPECT_EQ(dc_prev.to_floats(), dcp_ref);

  Tensor bad = Tensor::empty({B, C + 1});
  EXPECT_THROW(lstmp_cell_forward(z, Tensor(), 0.5f, bad, m, gates, c_raw), Error);
  Tensor odd = Tensor::empty({B, 7});
  EXPECT_THROW(lstmp_cell_forward(odd, Tensor(), 0.5f, c, m, Tensor(), Tensor()), Error);
  EXPECT_THROW(lstmp_cell_backward(gates, Tensor(), c_raw, 0.5f, bad, Tensor(), dz, Tensor()),
               Error);
}

}  // namespace
}  // namespace elmo
