// Chunked full softmax on CUDA against the CPU: NLL (with a tail chunk and ignored rows) and the
// training pass (dh, dense dW and db accumulated onto existing values), immediate and deferred.
//
// Tolerances (fp32 GEMMs, TF32 off): logits are K = P term dot products summed in another order
// (~P * 2^-24 relative); the chunk log-sum-exp uses expf on the device and std::exp on the host,
// and the NLL sum is a double tree vs a sequential double sum: NLL rtol 1e-5; gradients are
// sums over N rows of softmax probabilities times h: atol 1e-5 / rtol 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/full_softmax.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

const Device kGpu = Device::cuda(0);

struct Problem {
  int64_t vocab = 5003, dim = 32, n = 150;
  Tensor w, b, h, targets;
  Problem() {
    w = testing::random_tensor({vocab, dim}, 1);
    b = testing::random_tensor({vocab}, 2);
    h = testing::random_tensor({n, dim}, 3);
    targets = Tensor::empty({n}, DType::kI32);
    Rng rng(4, kRngSynthetic);
    for (int64_t r = 0; r < n; ++r)
      targets.data<int32_t>()[r] = static_cast<int32_t>(rng.below(vocab));
    targets.data<int32_t>()[0] = static_cast<int32_t>(vocab - 1);  // tail chunk
    targets.data<int32_t>()[5] = kIgnoreTarget;
    targets.data<int32_t>()[6] = kIgnoreTarget;
  }
};

struct Result {
  NllSum nll, trained;
  std::vector<float> dh, dw, db;
};

Result run(const Problem& p, Device device, int64_t chunk, bool deferred) {
  const Tensor w = p.w.to(device), b = p.b.to(device), h = p.h.to(device);
  const Tensor t = p.targets.to(device);
  FullSoftmaxWorkspace ws;
  Result out;
  out.nll = full_softmax_nll(w.data<float>(), b.data<float>(), p.vocab, p.dim, h.data<float>(),
                             t.data<int32_t>(), p.n, chunk, &ws, device);
  Tensor dh = Tensor::zeros({p.n, p.dim}, DType::kF32, device);
  // Existing gradient values: the pass adds to them.
  Tensor dw = testing::random_tensor({p.vocab, p.dim}, 5).to(device);
  Tensor db = testing::random_tensor({p.vocab}, 6).to(device);
  const float scale = 0.37f;
  if (deferred) {
    full_softmax_forward_backward_deferred(w.data<float>(), b.data<float>(), p.vocab, p.dim,
                                           h.data<float>(), t.data<int32_t>(), p.n, scale,
                                           dh.data<float>(), dw.data<float>(), db.data<float>(),
                                           chunk, ws, device);
    out.trained = full_softmax_result(ws, device);
  } else {
    out.trained = full_softmax_forward_backward(
        w.data<float>(), b.data<float>(), p.vocab, p.dim, h.data<float>(), t.data<int32_t>(), p.n,
        scale, dh.data<float>(), dw.data<float>(), db.data<float>(), chunk, &ws, device);
  }
  out.dh = dh.to_floats();
  out.dw = dw.to_floats();
  out.db = db.to_floats();
  return out;
}

void compare(const Result& gpu, const Result& cpu) {
  EXPECT_EQ(gpu.nll.count, cpu.nll.count);
  EXPECT_NEAR(gpu.nll.nll, cpu.nll.nll, 1e-5 * cpu.nll.nll);
  EXPECT_EQ(gpu.trained.count, cpu.trained.count);
  EXPECT_NEAR(gpu.trained.nll, cpu.trained.nll, 1e-5 * cpu.trained.nll);
  EXPECT_TRUE(testing::all_close(gpu.dh, cpu.dh, 1e-5f, 1e-4f)) << "dh";
  EXPECT_TRUE(testing::all_close(gpu.dw, cpu.dw, 1e-5f, 1e-4f)) << "dW";
  EXPECT_TRUE(testing::all_close(gpu.db, cpu.db, 1e-5f, 1e-4f)) << "db";
}

TEST(FullSoftmaxGpu, MatchesCpuForSeveralChunkings) {
  ELMO_SKIP_WITHOUT_GPU();
  const Problem p;
  for (const int64_t chunk : {int64_t{4096}, int64_t{1000}, int64_t{100000}}) {
    SCOPED_TRACE(chunk);
    compare(run(p, kGpu, chunk, false), run(p, Device::cpu(), chunk, false));
  }
}

TEST(FullSoftmaxGpu, DeferredResultEqualsImmediate) {
  ELMO_SKIP_WITHOUT_GPU();
  const Problem p;
  const Result a = run(p, kGpu, 2048, true), b = run(p, kGpu, 2048, false);
  EXPECT_EQ(a.trained.nll, b.trained.nll);  // deterministic device sums
  EXPECT_EQ(a.trained.count, b.trained.count);
  EXPECT_EQ(a.dw, b.dw);
  compare(a, run(p, Device::cpu(), 2048, true));
}

// The per-row NLLs evaluation sorts into slices (app/eval_slices.h): the device's terms of its
// sum (they add up to it; NaN for ignored rows) and the CPU's rows within the NLL tolerance.
TEST(FullSoftmaxGpu, RowNllsAreTheTermsOfTheSumAndMatchTheCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Problem p;
  std::vector<double> rows[2];
  NllSum sums[2];
  const Device devices[2] = {kGpu, Device::cpu()};
  for (int i = 0; i < 2; ++i) {
    const Tensor w = p.w.to(devices[i]), b = p.b.to(devices[i]), h = p.h.to(devices[i]);
    const Tensor t = p.targets.to(devices[i]);
    FullSoftmaxWorkspace ws;
    sums[i] = full_softmax_nll(w.data<float>(), b.data<float>(), p.vocab, p.dim, h.data<float>(),
                               t.data<int32_t>(), p.n, 1000, &ws, devices[i]);
    rows[i].resize(p.n);
    full_softmax_row_nll(ws, p.n, devices[i], rows[i].data());
  }
  double total = 0.0;
  for (int64_t r = 0; r < p.n; ++r) {
    if (p.targets.data<int32_t>()[r] == kIgnoreTarget) {
      EXPECT_TRUE(std::isnan(rows[0][r]) && std::isnan(rows[1][r])) << r;
      continue;
    }
    total += rows[0][r];
    EXPECT_NEAR(rows[0][r], rows[1][r], 1e-5 * std::fabs(rows[1][r]) + 1e-6) << "row " << r;
  }
  EXPECT_NEAR(total, sums[0].nll, 1e-12 * std::fabs(sums[0].nll));  // tree vs sequential order
}

}  // namespace
}  // namespace elmo
