// Persistent LSTMP kernels on CUDA against their CPU twin (the same plan, so the same tiles and
// the same cross-tile summation order): forward outputs and saved activations, then the backward
// from identical saved activations; shapes that reach every kernel instance the device plans
// (16/32/48/64 units per block where the SM count allows), a partial 16-row tile, the bilm-tf
// size, with and without clips; and run-to-run bit identity. Skips without a GPU.
//
// Never run so far (no GPU where it was written). Tolerance: both sides round W, h, m, dr, dz to
// bf16 the same way and accumulate in fp32; only the summation order inside a tile (tensor
// cores vs a sequential loop, ~K * 2^-24 relative) and FMA contraction in the cell (~1 ulp)
// differ. Such a difference flips the bf16 rounding of an exchanged value now and then (one
// bf16 ulp, 2^-8 relative, of one term of the next products), so results stay within a few
// 2^-9 (u) of the largest value of each tensor: forward 2u, backward 4u. A wrong index is O(1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/lstmp_persistent.h"
#include "runtime/rng.h"
#include "tests/support/persistent_skip.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

constexpr float kU = 1.0f / 512.0f;
const Device kGpu = Device::cuda(0);

Tensor upload(const std::vector<float>& v) {
  return Tensor::from_floats(v, {static_cast<int64_t>(v.size())}).to(kGpu);
}
Tensor zeros_gpu(int64_t n) { return Tensor::zeros({std::max<int64_t>(n, 1)}, DType::kF32, kGpu); }

struct Case {
  int64_t C, P, B, T;
  float cell_clip, proj_clip;
  uint64_t seed;
};

// Host copies of everything one forward + backward produces.
struct Result {
  std::vector<float> gates, c, c_raw, m, r, y, dz, dr;
};

struct Problem {
  Case k;
  LstmpPersistentPlan plan;
  std::vector<float> w_hh, w_hr, h0, c0, zx, dy;
  explicit Problem(const Case& c) : k(c) {
    plan = lstmp_persistent_plan(c.C, c.P, lstmp_persistent_device_limits(0));
    w_hh = testing::uniform_floats(c.seed + 1, 4 * c.C * c.P, 2.0f / std::sqrt(float(c.P)));
    w_hr = testing::uniform_floats(c.seed + 2, c.P * c.C, 2.0f / std::sqrt(float(c.C)));
    h0 = testing::uniform_floats(c.seed + 3, c.B * c.P, 0.4f);
    c0 = testing::uniform_floats(c.seed + 4, c.B * c.C, 0.4f);
    zx = testing::uniform_floats(c.seed + 5, c.T * c.B * 4 * c.C, 1.5f);
    dy = testing::uniform_floats(c.seed + 6, c.T * c.B * c.P, 1.0f);
  }
};

// Forward on the GPU (or the twin), then backward from `saved` (the GPU forward's activations)
// when given, else from this run's own.
Result run(const Problem& p, bool gpu, const Result* saved) {
  const Case& k = p.k;
  const int64_t TBC = k.T * k.B * k.C, TBP = k.T * k.B * k.P;
  Result out;
  out.gates = p.zx;
  out.c.assign(TBC, 0.0f);
  out.c_raw.assign(TBC, 0.0f);
  out.m.assign(TBC, 0.0f);
  out.r.assign(TBP, 0.0f);
  out.y.assign(TBP, 0.0f);
  std::vector<float> dc(k.B * k.C, 0.0f);
  out.dr.assign(TBP, 0.0f);
  const bool cell_clip = k.cell_clip > 0, proj_clip = k.proj_clip > 0;

  LstmpForwardArgs f;
  f.T = k.T;
  f.B = k.B;
  f.cell_clip = k.cell_clip;
  f.proj_clip = k.proj_clip;
  f.save_gates = true;
  f.c_slots = k.T;
  LstmpBackwardArgs b;
  b.T = k.T;
  b.B = k.B;
  b.cell_clip = k.cell_clip;
  b.proj_clip = k.proj_clip;
  if (!gpu) {
    f.w_hh = p.w_hh.data();
    f.w_hr = p.w_hr.data();
    f.h0 = p.h0.data();
    f.c0 = p.c0.data();
    f.z = out.gates.data();
    f.c = out.c.data();
    f.c_raw = cell_clip ? out.c_raw.data() : nullptr;
    f.m = out.m.data();
    f.r = proj_clip ? out.r.data() : nullptr;
    f.y = out.y.data();
    lstmp_persistent_forward(Device::cpu(), p.plan, f);
    Result in = saved ? *saved : out;
    b.w_hh = p.w_hh.data();
    b.w_hr = p.w_hr.data();
    b.gates = in.gates.data();
    b.c = in.c.data();
    b.c_raw = cell_clip ? in.c_raw.data() : in.c.data();
    b.c0 = p.c0.data();
    b.r = proj_clip ? in.r.data() : nullptr;
    b.dy = p.dy.data();
    b.dr = out.dr.data();
    b.dc = dc.data();
    lstmp_persistent_backward(Device::cpu(), p.plan, b);
    out.dz = in.gates;
    return out;
  }
  const Tensor w_hh = upload(p.w_hh), w_hr = upload(p.w_hr), h0 = upload(p.h0), c0 = upload(p.c0),
               dy = upload(p.dy);
  Tensor gates = upload(p.zx), c = zeros_gpu(TBC), c_raw = zeros_gpu(TBC), m = zeros_gpu(TBC),
         r = zeros_gpu(TBP), y = zeros_gpu(TBP), dr = zeros_gpu(TBP), dcg = zeros_gpu(k.B * k.C);
  const size_t bytes = lstmp_persistent_scratch_bytes(p.plan, k.B) + 256;
  Tensor scratch = zeros_gpu(static_cast<int64_t>(bytes / 4 + 1));
  void* aligned = reinterpret_cast<void*>(
      (reinterpret_cast<uintptr_t>(scratch.data<float>()) + 255) / 256 * 256);
  f.w_hh = w_hh.data<float>();
  f.w_hr = w_hr.data<float>();
  f.h0 = h0.data<float>();
  f.c0 = c0.data<float>();
  f.z = gates.data<float>();
  f.c = c.data<float>();
  f.c_raw = cell_clip ? c_raw.data<float>() : nullptr;
  f.m = m.data<float>();
  f.r = proj_clip ? r.data<float>() : nullptr;
  f.y = y.data<float>();
  f.scratch = aligned;
  lstmp_persistent_forward(Device::cuda(0), p.plan, f);
  out.gates = gates.to_floats();
  out.c = c.to_floats();
  out.c_raw = c_raw.to_floats();
  out.m = m.to_floats();
  out.r = r.to_floats();
  out.y = y.to_floats();
  if (saved) {  // backward from the given activations
    gates = upload(saved->gates);
    c = upload(saved->c);
    c_raw = upload(saved->c_raw);
    r = upload(saved->r);
  }
  b.w_hh = w_hh.data<float>();
  b.w_hr = w_hr.data<float>();
  b.gates = gates.data<float>();
  b.c = c.data<float>();
  b.c_raw = cell_clip ? c_raw.data<float>() : c.data<float>();
  b.c0 = c0.data<float>();
  b.r = proj_clip ? r.data<float>() : nullptr;
  b.dy = dy.data<float>();
  b.dr = dr.data<float>();
  b.dc = dcg.data<float>();
  b.scratch = aligned;
  lstmp_persistent_backward(Device::cuda(0), p.plan, b);
  out.dz = gates.to_floats();
  out.dr = dr.to_floats();
  return out;
}

void check_against_twin(const Case& k) {
  const Problem p(k);
  ASSERT_TRUE(p.plan.ok()) << p.plan.reason;
  ASSERT_EQ(lstmp_persistent_supported(k.C, k.P, 0), "");
  std::printf("C %lld P %lld: %lld units per block, fwd grid %d, bwd grid %d\n", (long long)k.C,
              (long long)k.P, (long long)p.plan.units, p.plan.fwd_grid, p.plan.bwd_grid);
  const Result gpu = run(p, true, nullptr);
  Result gpu_saved = gpu;
  gpu_saved.gates = gpu.gates;  // activated gates as the GPU forward saved them
  const Result twin = run(p, false, &gpu_saved);
  // Forward: the twin's own forward vs the GPU's.
  EXPECT_TRUE(testing::within_scale(gpu.y, twin.y, 2 * kU, "y"));
  EXPECT_TRUE(testing::within_scale(gpu.c, twin.c, 2 * kU, "c"));
  EXPECT_TRUE(testing::within_scale(gpu.m, twin.m, 2 * kU, "m"));
  if (k.cell_clip > 0) {
    EXPECT_TRUE(testing::within_scale(gpu.c_raw, twin.c_raw, 2 * kU, "c_raw"));
  }
  if (k.proj_clip > 0) {
    EXPECT_TRUE(testing::within_scale(gpu.r, twin.r, 2 * kU, "r"));
  }
  // Backward: both from the GPU forward's saved activations.
  EXPECT_TRUE(testing::within_scale(gpu.dz, twin.dz, 4 * kU, "dz"));
  EXPECT_TRUE(testing::within_scale(gpu.dr, twin.dr, 4 * kU, "dr"));
}

TEST(LstmpPersistentGpu, SmallWithClipsMatchesTwin) {
  ELMO_SKIP_WITHOUT_GPU();
  ELMO_SKIP_UNLESS_PERSISTENT_RUNS(64, 32);
  check_against_twin({64, 32, 5, 4, 0.5f, 0.3f, 10});
}

TEST(LstmpPersistentGpu, PartialRowTileWithoutClipsMatchesTwin) {
  ELMO_SKIP_WITHOUT_GPU();
  ELMO_SKIP_UNLESS_PERSISTENT_RUNS(256, 48);
  check_against_twin({256, 48, 17, 3, 0.0f, 0.0f, 20});
}

TEST(LstmpPersistentGpu, EveryUnitGroupWidthMatchesTwin) {
  ELMO_SKIP_WITHOUT_GPU();
  // On 132 SMs: 16, 32, 48 and 64 units per block (kSub 1..4). A device with fewer SMs cannot
  // run the larger ones; those are reported and left out.
  int checked = 0;
  std::string left_out;
  for (int64_t C : {int64_t{2048}, int64_t{4096}, int64_t{6336}, int64_t{8192}}) {
    const std::string why = lstmp_persistent_supported(C, 16, 0);
    if (!why.empty()) {
      std::printf("C %lld left out on this device: %s\n", (long long)C, why.c_str());
      left_out += str(" C ", C, ": ", why, ";");
      continue;
    }
    check_against_twin({C, 16, 3, 2, 1.0f, 0.5f, static_cast<uint64_t>(C)});
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no unit-group width runs on this GPU:" << left_out;
}

TEST(LstmpPersistentGpu, ElmoSizeMatchesTwin) {
  ELMO_SKIP_WITHOUT_GPU();
  ELMO_SKIP_UNLESS_PERSISTENT_RUNS(4096, 512);
  check_against_twin({4096, 512, 16, 3, 3.0f, 3.0f, 30});
}

TEST(LstmpPersistentGpu, RunsAreBitIdentical) {
  ELMO_SKIP_WITHOUT_GPU();
  ELMO_SKIP_UNLESS_PERSISTENT_RUNS(4096, 512);
  const Problem p({4096, 512, 32, 4, 3.0f, 3.0f, 40});
  ASSERT_TRUE(p.plan.ok()) << p.plan.reason;
  const Result a = run(p, true, nullptr), b = run(p, true, nullptr);
  EXPECT_EQ(a.y, b.y);
  EXPECT_EQ(a.c, b.c);
  EXPECT_EQ(a.dz, b.dz);
  EXPECT_EQ(a.dr, b.dr);
}

TEST(LstmpPersistentGpu, SupportedSaysWhyNot) {
  ELMO_SKIP_WITHOUT_GPU();
  EXPECT_NE(lstmp_persistent_supported(64, 0, 0).find("projection"), std::string::npos);
  EXPECT_NE(lstmp_persistent_supported(40, 16, 0).find("multiples of 16"), std::string::npos);
  // bilm-tf sizes: runnable where the device's plan fits (an H100 SXM), and otherwise refused
  // with the plan's reason (an H100 PCIe: 114 SMs leave too little shared memory per block).
  const LstmpPersistentPlan plan =
      lstmp_persistent_plan(4096, 512, lstmp_persistent_device_limits(0));
  EXPECT_EQ(lstmp_persistent_supported(4096, 512, 0), plan.ok() ? "" : plan.reason);
}

}  // namespace
}  // namespace elmo
