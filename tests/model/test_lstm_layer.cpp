// LSTMP layer: forward against a double-precision reference, every gradient (dx, dW_ih, dW_hh,
// db, dW_hr) against central differences of that reference, state carrying, inference mode,
// workspace reuse and error cases.
#include "model/lstm_layer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using Vec = std::vector<double>;

std::vector<float> random_floats(Rng& rng, int64_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (float& e : v) e = lo + (hi - lo) * rng.uniform();
  return v;
}
Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

double clip_d(double x, double limit) {
  return limit <= 0 ? x : std::min(limit, std::max(-limit, x));
}
double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct RefParams {
  Vec w_ih, w_hh, b, w_hr, x, h0, c0;  // h0 / c0 empty = zeros
};
struct RefOut {
  Vec y, h_last, c_last;
  double min_clip_distance = 1e30;  // smallest | |pre-clip| - clip | over clipped quantities
  int64_t cell_clipped = 0, proj_clipped = 0;
};

// Straightforward double-precision LSTMP forward (DESIGN.md §4), loops only.
RefOut reference_forward(const LstmLayerShape& s, const RefParams& p, int64_t T, int64_t B) {
  const int64_t in = s.input_dim, C = s.cell_size, P = s.proj_dim, H = s.hidden();
  RefOut out;
  out.y.assign(T * B * H, 0.0);
  Vec h(B * H, 0.0), c(B * C, 0.0);
  if (!p.h0.empty()) h = p.h0;
  if (!p.c0.empty()) c = p.c0;
  for (int64_t t = 0; t < T; ++t) {
    Vec h_new(B * H), c_new(B * C), m(C);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < C; ++j) {
        double z[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t row = k * C + j;
          double acc = p.b[row];
          for (int64_t q = 0; q < in; ++q) acc += p.w_ih[row * in + q] * p.x[(t * B + b) * in + q];
          for (int64_t q = 0; q < H; ++q) acc += p.w_hh[row * H + q] * h[b * H + q];
          z[k] = acc;
        }
        const double i = sigmoid_d(z[0]), f = sigmoid_d(z[1]), g = std::tanh(z[2]),
                     o = sigmoid_d(z[3]);
        const double raw = f * c[b * C + j] + i * g;
        if (s.cell_clip > 0) {
          out.min_clip_distance =
              std::min(out.min_clip_distance, std::fabs(std::fabs(raw) - s.cell_clip));
          if (std::fabs(raw) > s.cell_clip) ++out.cell_clipped;
        }
        c_new[b * C + j] = clip_d(raw, s.cell_clip);
        m[j] = o * std::tanh(c_new[b * C + j]);
      }
      for (int64_t k = 0; k < H; ++k) {
        double v = m[k];
        if (P > 0) {
          v = 0;
          for (int64_t j = 0; j < C; ++j) v += p.w_hr[k * C + j] * m[j];
          if (s.proj_clip > 0) {
            out.min_clip_distance =
                std::min(out.min_clip_distance, std::fabs(std::fabs(v) - s.proj_clip));
            if (std::fabs(v) > s.proj_clip) ++out.proj_clipped;
          }
          v = clip_d(v, s.proj_clip);
        }
        h_new[b * H + k] = v;
        out.y[(t * B + b) * H + k] = v;
      }
    }
    h = h_new;
    c = c_new;
  }
  out.h_last = h;
  out.c_last = c;
  return out;
}

// A small layer problem in float (for the implementation) and double (for the reference).
struct Problem {
  LstmLayerShape shape;
  int64_t T = 0, B = 0;
  std::vector<float> w_ih, w_hh, b, w_hr, x, h0, c0, r;  // r: loss weights, loss = sum(y * r)

  Problem(LstmLayerShape s, int64_t t, int64_t batch, bool with_state, uint64_t seed)
      : shape(s), T(t), B(batch) {
    Rng rng(seed, kRngInit);
    const int64_t G = 4 * s.cell_size, H = s.hidden();
    w_ih = random_floats(rng, G * s.input_dim, -1.5f, 1.5f);
    w_hh = random_floats(rng, G * H, -1.0f, 1.0f);
    b = random_floats(rng, G, -0.5f, 0.5f);
    if (s.proj_dim > 0) w_hr = random_floats(rng, s.proj_dim * s.cell_size, -1.5f, 1.5f);
    x = random_floats(rng, T * B * s.input_dim, -1.0f, 1.0f);
    if (with_state) {
      h0 = random_floats(rng, B * H, -0.4f, 0.4f);
      c0 = random_floats(rng, B * s.cell_size, -0.4f, 0.4f);
    }
    r = random_floats(rng, T * B * H, -1.0f, 1.0f);
  }
  LstmLayerWeights weights() const {
    return {w_ih.data(), w_hh.data(), b.data(), w_hr.empty() ? nullptr : w_hr.data()};
  }
  RefParams ref() const {
    return {to_double(w_ih), to_double(w_hh), to_double(b), to_double(w_hr),
            to_double(x),    to_double(h0),   to_double(c0)};
  }
  const float* h0p() const { return h0.empty() ? nullptr : h0.data(); }
  const float* c0p() const { return c0.empty() ? nullptr : c0.data(); }
  double ref_loss(const RefParams& p) const {
    const RefOut o = reference_forward(shape, p, T, B);
    double loss = 0;
    for (size_t k = 0; k < o.y.size(); ++k) loss += o.y[k] * r[k];
    return loss;
  }
};

// Central difference of the double reference loss w.r.t. every element of one parameter.
Vec reference_gradient(const Problem& pr, Vec RefParams::*member) {
  RefParams p = pr.ref();
  Vec& v = p.*member;
  Vec grad(v.size());
  const double eps = 1e-6;  // double forward: truncation ~eps^2, rounding ~1e-16/eps
  for (size_t k = 0; k < v.size(); ++k) {
    const double saved = v[k];
    v[k] = saved + eps;
    const double up = pr.ref_loss(p);
    v[k] = saved - eps;
    const double down = pr.ref_loss(p);
    v[k] = saved;
    grad[k] = (up - down) / (2 * eps);
  }
  return grad;
}

// Analytic (float) vs reference (double FD) gradient. Tolerance: the float backward carries
// ~1e-6 relative rounding per operation over T steps of BPTT; 1e-4 absolute + 1e-3 relative is
// far below any real error (a wrong term is O(1e-1)).
::testing::AssertionResult gradient_close(const std::vector<float>& analytic, const Vec& numeric,
                                          const char* what) {
  for (size_t k = 0; k < numeric.size(); ++k) {
    const double diff = std::fabs(analytic[k] - numeric[k]);
    if (!(diff <= 1e-4 + 1e-3 * std::fabs(numeric[k])))
      return ::testing::AssertionFailure() << what << "[" << k << "]: analytic " << analytic[k]
                                           << ", numeric " << numeric[k];
  }
  return ::testing::AssertionSuccess();
}

void check_gradients(const Problem& pr) {
  const LstmLayerShape& s = pr.shape;
  const int64_t H = s.hidden(), T = pr.T, B = pr.B;
  // Clips must be active somewhere but no reference quantity may sit within FD reach of them.
  const RefOut ro = reference_forward(s, pr.ref(), T, B);
  if (s.cell_clip > 0) {
    EXPECT_GT(ro.cell_clipped, 0) << "test inputs do not exercise cell_clip";
  }
  if (s.proj_dim > 0 && s.proj_clip > 0) {
    EXPECT_GT(ro.proj_clipped, 0) << "test inputs do not exercise proj_clip";
  }
  ASSERT_GT(ro.min_clip_distance, 1e-3) << "an FD point sits on a clip boundary";

  std::vector<float> y(T * B * H), h_last(B * H), c_last(B * s.cell_size);
  LstmLayerWorkspace ws;
  lstm_layer_forward(s, pr.weights(), T, B, pr.x.data(), pr.h0p(), pr.c0p(), y.data(),
                     h_last.data(), c_last.data(), &ws, true);
  // Forward: float vs double reference; tolerance from f32 rounding over T steps.
  EXPECT_TRUE(testing::all_close(y, std::vector<float>(ro.y.begin(), ro.y.end()), 2e-6f, 1e-5f));
  EXPECT_TRUE(testing::all_close(h_last, std::vector<float>(ro.h_last.begin(), ro.h_last.end()),
                                 2e-6f, 1e-5f));
  EXPECT_TRUE(testing::all_close(c_last, std::vector<float>(ro.c_last.begin(), ro.c_last.end()),
                                 2e-6f, 1e-5f));

  std::vector<float> gw_ih(pr.w_ih.size(), 0.0f), gw_hh(pr.w_hh.size(), 0.0f),
      gb(pr.b.size(), 0.0f), gw_hr(pr.w_hr.size(), 0.0f), dx(pr.x.size(), 0.0f);
  LstmLayerGrads grads{gw_ih.data(), gw_hh.data(), gb.data(),
                       gw_hr.empty() ? nullptr : gw_hr.data()};
  lstm_layer_backward(s, pr.weights(), T, B, pr.x.data(), y.data(), ws, pr.r.data(), dx.data(),
                      grads);
  EXPECT_TRUE(gradient_close(dx, reference_gradient(pr, &RefParams::x), "dx"));
  EXPECT_TRUE(gradient_close(gw_ih, reference_gradient(pr, &RefParams::w_ih), "dW_ih"));
  EXPECT_TRUE(gradient_close(gw_hh, reference_gradient(pr, &RefParams::w_hh), "dW_hh"));
  EXPECT_TRUE(gradient_close(gb, reference_gradient(pr, &RefParams::b), "db"));
  if (s.proj_dim > 0) {
    EXPECT_TRUE(gradient_close(gw_hr, reference_gradient(pr, &RefParams::w_hr), "dW_hr"));
  }
}

const LstmLayerShape kProjShape{5, 4, 3, 0.5f, 0.5f};

TEST(LstmLayer, GradientsWithProjectionClipsAndInitialState) {
  check_gradients(Problem(kProjShape, 4, 2, true, 11));
}

TEST(LstmLayer, GradientsWithProjectionFromZeroState) {
  check_gradients(Problem(kProjShape, 4, 2, false, 12));
}

TEST(LstmLayer, GradientsWithoutClips) {
  check_gradients(Problem({5, 4, 3, 0.0f, 0.0f}, 4, 2, true, 13));
}

TEST(LstmLayer, GradientsWithoutProjection) {
  check_gradients(Problem({5, 4, 0, 0.5f, 0.0f}, 4, 2, true, 14));
  check_gradients(Problem({3, 6, 0, 0.0f, 0.0f}, 3, 3, false, 15));
}

TEST(LstmLayer, SingleStep) { check_gradients(Problem(kProjShape, 1, 6, true, 16)); }

TEST(LstmLayer, GradientsAccumulate) {
  const Problem pr(kProjShape, 3, 2, true, 17);
  const int64_t H = kProjShape.hidden();
  std::vector<float> y(pr.T * pr.B * H);
  std::vector<float> g1[4], g2[4];
  const size_t sizes[4] = {pr.w_ih.size(), pr.w_hh.size(), pr.b.size(), pr.w_hr.size()};
  for (int k = 0; k < 4; ++k) {
    g1[k].assign(sizes[k], 0.0f);
    g2[k].assign(sizes[k], 0.5f);
  }
  LstmLayerWorkspace ws;
  for (auto* g : {g1, g2}) {
    lstm_layer_forward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), pr.h0p(), pr.c0p(),
                       y.data(), nullptr, nullptr, &ws, true);
    lstm_layer_backward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), y.data(), ws,
                        pr.r.data(), nullptr, {g[0].data(), g[1].data(), g[2].data(), g[3].data()});
  }
  for (int k = 0; k < 4; ++k)
    for (size_t e = 0; e < sizes[k]; ++e) EXPECT_FLOAT_EQ(g2[k][e], g1[k][e] + 0.5f);
}

// Running T steps at once equals two halves with the carried (h, c). The input GEMM covers a
// different number of rows, so allow f32 rounding (1e-6) rather than demanding bit equality.
TEST(LstmLayer, TwoHalvesWithCarriedStateEqualWhole) {
  for (int64_t P : {int64_t{3}, int64_t{0}}) {
    const LstmLayerShape s{5, 4, P, 0.5f, 0.5f};
    const Problem pr(s, 6, 3, true, 21);
    const int64_t H = s.hidden(), B = pr.B, C = s.cell_size, in = s.input_dim;
    std::vector<float> y(pr.T * B * H), h(B * H), c(B * C);
    lstm_layer_forward(s, pr.weights(), pr.T, B, pr.x.data(), pr.h0p(), pr.c0p(), y.data(),
                       h.data(), c.data(), nullptr, false);
    std::vector<float> y2(pr.T * B * H), h2 = pr.h0, c2 = pr.c0;
    LstmLayerWorkspace ws;
    // Carried state aliases the initial state (what the trainer does).
    lstm_layer_forward(s, pr.weights(), 2, B, pr.x.data(), h2.data(), c2.data(), y2.data(),
                       h2.data(), c2.data(), &ws, true);
    lstm_layer_forward(s, pr.weights(), 4, B, pr.x.data() + 2 * B * in, h2.data(), c2.data(),
                       y2.data() + 2 * B * H, h2.data(), c2.data(), &ws, false);
    EXPECT_TRUE(testing::all_close(y2, y, 1e-6f, 1e-6f));
    EXPECT_TRUE(testing::all_close(h2, h, 1e-6f, 1e-6f));
    EXPECT_TRUE(testing::all_close(c2, c, 1e-6f, 1e-6f));
  }
}

TEST(LstmLayer, InferenceEqualsTrainingForwardBitwise) {
  for (int64_t P : {int64_t{3}, int64_t{0}}) {
    const LstmLayerShape s{5, 4, P, 0.5f, 0.5f};
    const Problem pr(s, 5, 2, true, 31);
    const int64_t n = pr.T * pr.B * s.hidden();
    std::vector<float> a(n), b(n), ha(pr.B * s.hidden()), hb(ha.size()), ca(pr.B * 4), cb(ca.size());
    LstmLayerWorkspace ws;
    lstm_layer_forward(s, pr.weights(), pr.T, pr.B, pr.x.data(), pr.h0p(), pr.c0p(), a.data(),
                       ha.data(), ca.data(), &ws, true);
    lstm_layer_forward(s, pr.weights(), pr.T, pr.B, pr.x.data(), pr.h0p(), pr.c0p(), b.data(),
                       hb.data(), cb.data(), nullptr, false);
    EXPECT_EQ(a, b);
    EXPECT_EQ(ha, hb);
    EXPECT_EQ(ca, cb);
  }
}

// Large enough that the cell runs on several threads (rows * C > grain); forward vs double.
TEST(LstmLayer, LargerLayerMatchesReference) {
  const LstmLayerShape s{16, 64, 24, 3.0f, 3.0f};
  const Problem pr(s, 3, 600, true, 41);
  const RefOut ro = reference_forward(s, pr.ref(), pr.T, pr.B);
  std::vector<float> y(pr.T * pr.B * s.hidden());
  LstmLayerWorkspace ws;
  lstm_layer_forward(s, pr.weights(), pr.T, pr.B, pr.x.data(), pr.h0p(), pr.c0p(), y.data(),
                     nullptr, nullptr, &ws, true);
  // Tolerance: pre-activations are f32 sums of 16 + 24 products with |z| up to ~20 and the
  // projection sums 64; f32 rounding of those sums (~2^-24 * 20 * sqrt(n)) reaches a few 1e-6
  // and carries over 3 steps, so 5e-5 absolute; a wrong term would be O(1e-1).
  EXPECT_TRUE(testing::all_close(y, std::vector<float>(ro.y.begin(), ro.y.end()), 5e-5f, 1e-5f));
}

TEST(LstmLayer, WorkspaceIsReusedWithoutGrowing) {
  const Problem pr(kProjShape, 4, 2, true, 51);
  std::vector<float> y(pr.T * pr.B * 3), dx(pr.x.size());
  std::vector<float> g[4] = {std::vector<float>(pr.w_ih.size()), std::vector<float>(pr.w_hh.size()),
                             std::vector<float>(pr.b.size()), std::vector<float>(pr.w_hr.size())};
  LstmLayerWorkspace ws;
  int64_t bytes = 0;
  for (int round = 0; round < 3; ++round) {
    lstm_layer_forward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), pr.h0p(), pr.c0p(),
                       y.data(), nullptr, nullptr, &ws, true);
    lstm_layer_backward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), y.data(), ws,
                        pr.r.data(), dx.data(), {g[0].data(), g[1].data(), g[2].data(), g[3].data()});
    if (round == 0) bytes = ws.bytes();
    EXPECT_EQ(ws.bytes(), bytes);
  }
  // Smaller problems fit in the same buffers.
  lstm_layer_forward(kProjShape, pr.weights(), 2, 1, pr.x.data(), nullptr, nullptr, y.data(),
                     nullptr, nullptr, &ws, true);
  EXPECT_EQ(ws.bytes(), bytes);
}

TEST(LstmLayer, MisuseIsAnError) {
  const Problem pr(kProjShape, 2, 2, false, 61);
  std::vector<float> y(pr.T * pr.B * 3), dx(pr.x.size()), g(64);
  LstmLayerGrads grads{g.data(), g.data(), g.data(), g.data()};
  LstmLayerWorkspace ws;
  // Backward without a training forward.
  EXPECT_THROW(lstm_layer_backward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), y.data(),
                                   ws, pr.r.data(), dx.data(), grads),
               Error);
  lstm_layer_forward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), nullptr, nullptr,
                     y.data(), nullptr, nullptr, &ws, true);
  // Wrong T.
  EXPECT_THROW(lstm_layer_backward(kProjShape, pr.weights(), 1, pr.B, pr.x.data(), y.data(), ws,
                                   pr.r.data(), dx.data(), grads),
               Error);
  std::vector<float> gi(pr.w_ih.size()), gh(pr.w_hh.size()), gb(pr.b.size()), gr(pr.w_hr.size());
  lstm_layer_backward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), y.data(), ws,
                      pr.r.data(), dx.data(), {gi.data(), gh.data(), gb.data(), gr.data()});
  // Second backward of the same forward: the saved gates were consumed.
  EXPECT_THROW(lstm_layer_backward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), y.data(),
                                   ws, pr.r.data(), dx.data(), grads),
               Error);
  // Training without a workspace; projection weight missing; bad sizes.
  EXPECT_THROW(lstm_layer_forward(kProjShape, pr.weights(), pr.T, pr.B, pr.x.data(), nullptr,
                                  nullptr, y.data(), nullptr, nullptr, nullptr, true),
               Error);
  LstmLayerWeights no_proj = pr.weights();
  no_proj.w_hr = nullptr;
  EXPECT_THROW(lstm_layer_forward(kProjShape, no_proj, pr.T, pr.B, pr.x.data(), nullptr, nullptr,
                                  y.data(), nullptr, nullptr, &ws, false),
               Error);
  EXPECT_THROW(lstm_layer_forward({0, 4, 3, 0, 0}, pr.weights(), pr.T, pr.B, pr.x.data(),
                                  nullptr, nullptr, y.data(), nullptr, nullptr, &ws, false),
               Error);
}

}  // namespace
}  // namespace elmo
