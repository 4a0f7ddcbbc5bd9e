#include "kernels/dropout.h"

#include "runtime/parallel.h"

namespace elmo {

void dropout_cpu(const float* x, float* y, int64_t n, const DropoutParams& params) {
  if (params.p <= 0.0f) {
    if (x != y)
      for (int64_t e = 0; e < n; ++e) y[e] = x[e];
    return;
  }
  const float scale = 1.0f / (1.0f - params.p);
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e)
      y[e] = x[e] * dropout_scale_at(params.seed, params.stream, e, params.p, scale);
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
