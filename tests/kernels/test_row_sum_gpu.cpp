// GPU twin check: the CUDA planned row sum against the CPU twin, bit for bit (both sum in plan
// order with every operation rounded on its own), through the entry point on both devices:
// scaled and unscaled segments, f32 and f64 tails, one and several column blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/row_sum.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

template <typename T>
Tensor on(Device device, const std::vector<T>& v) {
  Tensor host = Tensor::empty(
      {static_cast<int64_t>(std::max<size_t>(v.size(), 1)) * static_cast<int64_t>(sizeof(T))},
      DType::kU8);
  if (!v.empty()) std::memcpy(host.raw(), v.data(), sizeof(T) * v.size());
  return host.to(device);
}

TEST(RowSumGpu, MatchesCpuBitwise) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  for (const int64_t dim : {int64_t{1}, int64_t{300}}) {  // one column block; two, with a tail
    Rng rng(31 + dim, kRngSynthetic);
    const int64_t rows = 3000;
    std::vector<std::vector<int32_t>> ids(3);
    std::vector<std::vector<float>> x(3), scale(3);
    for (int s = 0; s < 3; ++s) {
      const int64_t n = s == 1 ? 0 : 2000 + 500 * s;
      for (int64_t i = 0; i < n; ++i) ids[s].push_back(static_cast<int32_t>(rng.below(rows / 2)));
      x[s].resize(n * dim);
      for (float& v : x[s]) v = rng.normal();
      if (s == 2) {
        scale[s].resize(n);
        for (float& v : scale[s]) v = rng.normal();
      }
    }
    std::vector<int32_t> extra;
    for (int i = 0; i < 400; ++i) extra.push_back(static_cast<int32_t>(rng.below(rows)));
    RowSumPlan plan;
    std::vector<std::pair<const int32_t*, int64_t>> host;
    for (const auto& v : ids) host.emplace_back(v.data(), static_cast<int64_t>(v.size()));
    build_row_sum_plan(host, rows, plan, extra);
    const int64_t n_out = static_cast<int64_t>(plan.unique_ids.size());
    std::vector<int32_t> index(n_out, -1);
    for (int64_t u = 0; u < n_out; ++u)
      if (u % 3 == 0) index[u] = static_cast<int32_t>(u % 400);
    std::vector<float> tail(400 * dim);
    std::vector<double> tail_f64(400 * dim);
    for (float& v : tail) v = rng.normal();
    for (double& v : tail_f64) v = 0.1 + rng.normal();

    std::vector<Tensor> keep;  // device copies stay alive for the launch
    auto run = [&](Device device, bool f64_tail) {
      std::vector<RowSumSegment> segs;
      for (int s = 0; s < 3; ++s) {
        keep.push_back(on(device, x[s]));
        const float* rows_ptr = static_cast<const float*>(keep.back().raw());
        const float* scale_ptr = nullptr;
        if (!scale[s].empty()) {
          keep.push_back(on(device, scale[s]));
          scale_ptr = static_cast<const float*>(keep.back().raw());
        }
        segs.push_back({rows_ptr, scale_ptr, static_cast<int64_t>(ids[s].size())});
      }
      keep.push_back(on(device, plan.offsets));
      const auto* offsets = static_cast<const int32_t*>(keep.back().raw());
      keep.push_back(on(device, plan.positions));
      const auto* positions = static_cast<const int32_t*>(keep.back().raw());
      keep.push_back(on(device, index));
      RowSumTail t;
      t.index = static_cast<const int32_t*>(keep.back().raw());
      if (f64_tail) {
        keep.push_back(on(device, tail_f64));
        t.values_f64 = static_cast<const double*>(keep.back().raw());
      } else {
        keep.push_back(on(device, tail));
        t.values = static_cast<const float*>(keep.back().raw());
      }
      Tensor out = Tensor::empty({n_out, dim}, DType::kF32, device);
      row_sum_by_plan(device, segs.data(), 3, dim, offsets, positions, n_out, out.data<float>(), t);
      return out.to_floats();
    };
    for (const bool f64_tail : {false, true}) {
      const std::vector<float> cpu = run(Device::cpu(), f64_tail);
      const std::vector<float> cuda = run(gpu, f64_tail);
      EXPECT_TRUE(testing::all_close(cuda, cpu, 0.0f, 0.0f))
          << "dim " << dim << " f64 tail " << f64_tail;
    }
  }
}

}  // namespace
}  // namespace elmo
