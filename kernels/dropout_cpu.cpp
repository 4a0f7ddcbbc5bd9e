#include "kernels/dropout.h"

#include <algorithm>

#include "runtime/parallel.h"

namespace elmo {

void dropout_cpu(const float* x, float* y, int64_t n, const DropoutParams& params) {
  if (params.p <= 0.0f) {
    if (x != y)
      for (int64_t e = 0; e < n; ++e) y[e] = x[e];
    return;
  }
  const float scale = 1.0f / (1.0f - params.p);
  // One Philox call yields the draws of 4 consecutive elements (lanes e & 3 of counter e >> 2):
  // the same numbers as dropout_scale_at, at a quarter of the cost.
  const int64_t blocks = (n + 3) / 4;
  parallel_for(blocks, 1 << 12, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const U32x4 r = philox4x32(params.seed, static_cast<uint64_t>(q), params.stream);
      const int64_t e0 = 4 * q;
      const int lanes = static_cast<int>(std::min<int64_t>(4, n - e0));
      for (int k = 0; k < lanes; ++k)
        y[e0 + k] = x[e0 + k] * (u32_to_unit_float(r.v[k]) >= params.p ? scale : 0.0f);
    }
  });
}

void dropout(const Tensor& x, Tensor& y, const DropoutParams& params) {
  check_tensor(y, "dropout output", DType::kF32, x.shape());
  check_tensor(x, "dropout input", DType::kF32, x.shape());
  check_same_device(x, y, "dropout");
  ELMO_CHECK(params.p >= 0.0f && params.p < 1.0f, "dropout probability ", params.p,
             " is outside [0, 1)");
  if (x.device().is_cpu())
    dropout_cpu(x.data<float>(), y.data<float>(), x.numel(), params);
  else
    dropout_cuda(x.data<float>(), y.data<float>(), x.numel(), params);
}

}  // namespace elmo
