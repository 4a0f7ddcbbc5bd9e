// Chunked full softmax: NLL against a naive double reference (tail chunk, single chunk,
// ignored rows) and finite-difference checks of its training gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/full_softmax.h"
#include "runtime/error.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

struct Problem {
  int64_t vocab, dim, n;
  std::vector<float> w, b, h;
  std::vector<int32_t> targets;
  Problem(int64_t vocab_, int64_t dim_, int64_t n_, uint64_t seed)
      : vocab(vocab_), dim(dim_), n(n_) {
    Rng rng(seed, kRngSynthetic);
    w.resize(vocab * dim);
    b.resize(vocab);
    h.resize(n * dim);
    for (auto& v : w) v = 0.5f * rng.normal();
    for (auto& v : b) v = 0.5f * rng.normal();
    for (auto& v : h) v = rng.normal();
    for (int64_t r = 0; r < n; ++r) targets.push_back(static_cast<int32_t>(rng.below(vocab)));
    targets[0] = static_cast<int32_t>(vocab - 1);  // in the tail chunk
    if (n > 2) targets[2] = kIgnoreTarget;
  }
  // Naive double reference: sum of NLL over counted rows.
  NllSum reference() const {
    NllSum out;
    for (int64_t r = 0; r < n; ++r) {
      if (targets[r] < 0) continue;
      std::vector<double> z(vocab);
      double max = -INFINITY;
      for (int64_t k = 0; k < vocab; ++k) {
        z[k] = b[k];
        for (int64_t d = 0; d < dim; ++d) z[k] += double(h[r * dim + d]) * w[k * dim + d];
        max = std::max(max, z[k]);
      }
      double sum = 0.0;
      for (const double v : z) sum += std::exp(v - max);
      out.nll += max + std::log(sum) - z[targets[r]];
      ++out.count;
    }
    return out;
  }
};

TEST(FullSoftmax, NllMatchesNaiveReferenceForEveryChunking) {
  Problem p(1037, 16, 9, 31);
  const NllSum ref = p.reference();
  EXPECT_EQ(ref.count, 8);
  FullSoftmaxWorkspace ws;
  for (const int64_t chunk : {int64_t{256}, int64_t{1000}, int64_t{4096}, int64_t{1}}) {
    // 256: 4 chunks + tail of 13; 1000: tail of 37; 4096: one chunk; 1: all tails.
    const NllSum got = full_softmax_nll(p.w.data(), p.b.data(), p.vocab, p.dim, p.h.data(),
                                        p.targets.data(), p.n, chunk, &ws);
    EXPECT_EQ(got.count, ref.count) << chunk;
    // f32 GEMM logits over dim 16, double merge: 1e-5 relative on a sum of ~8 * 7.
    EXPECT_NEAR(got.nll, ref.nll, 1e-5 * ref.nll) << chunk;
  }
}

// Evaluation sorts each row's NLL into slices (app/eval_slices.h): the rows are the very terms
// of the sum (same order, same bits), NaN where the target is ignored.
TEST(FullSoftmax, RowNllsAreTheTermsOfTheSum) {
  Problem p(1037, 16, 9, 31);
  FullSoftmaxWorkspace ws;
  const NllSum got = full_softmax_nll(p.w.data(), p.b.data(), p.vocab, p.dim, p.h.data(),
                                      p.targets.data(), p.n, 256, &ws);
  std::vector<double> rows(p.n);
  full_softmax_row_nll(ws, p.n, Device::cpu(), rows.data());
  double total = 0.0;
  for (int64_t r = 0; r < p.n; ++r) {
    if (p.targets[r] == kIgnoreTarget) {
      EXPECT_TRUE(std::isnan(rows[r])) << r;
      continue;
    }
    EXPECT_GT(rows[r], 0.0) << r;
    total += rows[r];
  }
  EXPECT_EQ(total, got.nll);
  // More rows than the last call kept: an error, not a read past the end.
  std::vector<double> more(p.n + 1);
  EXPECT_THROW(full_softmax_row_nll(ws, p.n + 1, Device::cpu(), more.data()), Error);
}

TEST(FullSoftmax, TrainingGradientsMatchFiniteDifferencesAndAccumulate) {
  Problem p(45, 6, 5, 77);  // chunk 16: two chunks + tail of 13
  const float scale = 0.35f;
  std::vector<float> dh(p.n * p.dim, 123.0f);  // overwritten
  std::vector<float> dw(p.vocab * p.dim, 0.0f), db(p.vocab, 0.0f);
  const NllSum out = full_softmax_forward_backward(p.w.data(), p.b.data(), p.vocab, p.dim,
                                                   p.h.data(), p.targets.data(), p.n, scale,
                                                   dh.data(), dw.data(), db.data(), 16);
  const NllSum ref = p.reference();
  EXPECT_EQ(out.count, ref.count);
  EXPECT_NEAR(out.nll, ref.nll, 1e-5 * ref.nll);
  for (int64_t d = 0; d < p.dim; ++d) EXPECT_EQ(dh[2 * p.dim + d], 0.0f);  // ignored row
  auto loss = [&] { return scale * p.reference().nll; };
  // eps 1e-3 on O(1) f32 values; reference in double.
  EXPECT_TRUE(
      testing::gradient_matches(loss, p.h.data(), dh.data(), p.n * p.dim, 1e-3, 1e-3, p.n * p.dim));
  EXPECT_TRUE(testing::gradient_matches(loss, p.w.data(), dw.data(), p.vocab * p.dim, 1e-3, 1e-3,
                                        p.vocab * p.dim));
  EXPECT_TRUE(testing::gradient_matches(loss, p.b.data(), db.data(), p.vocab, 1e-3, 1e-3, p.vocab));
  // dweight and dbias accumulate: a second call adds the same again.
  std::vector<float> dw2 = dw, db2 = db;
  full_softmax_forward_backward(p.w.data(), p.b.data(), p.vocab, p.dim, p.h.data(),
                                p.targets.data(), p.n, scale, nullptr, dw2.data(), db2.data(), 16);
  for (auto& v : dw) v *= 2.0f;
  for (auto& v : db) v *= 2.0f;
  EXPECT_TRUE(testing::all_close(dw2, dw, 1e-6f, 1e-6f));  // x + x vs 2x: f32 rounding
  EXPECT_TRUE(testing::all_close(db2, db, 1e-6f, 1e-6f));
}

TEST(FullSoftmax, BadTargetIsAnError) {
  Problem p(10, 4, 3, 1);
  p.targets[1] = 10;
  EXPECT_THROW(
      full_softmax_nll(p.w.data(), p.b.data(), p.vocab, p.dim, p.h.data(), p.targets.data(), p.n),
      Error);
  p.targets[1] = -5;
  EXPECT_THROW(
      full_softmax_nll(p.w.data(), p.b.data(), p.vocab, p.dim, p.h.data(), p.targets.data(), p.n),
      Error);
}

}  // namespace
}  // namespace elmo
