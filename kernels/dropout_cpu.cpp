#include <algorithm>

#include "kernels/dropout.h"
#include "kernels/launchers.h"
#include "runtime/parallel.h"

namespace elmo {

void dropout_cpu(const float* x, float* y, int64_t n, const DropoutParams& params) {
  if (params.p <= 0.0f) {
    if (x != y)
      for (int64_t e = 0; e < n; ++e) y[e] = x[e];
    return;
  }
  const DropoutRows& layout = params.layout;
  ELMO_CHECK(layout.rows == 0 ||
                 (layout.dim > 0 && layout.rows > 0 && n % (layout.rows * layout.dim) == 0 &&
                  layout.row_offset >= 0 && layout.row_offset + layout.rows <= layout.global_rows),
             "dropout: row layout (rows ", layout.rows, ", global_rows ", layout.global_rows,
             ", row_offset ", layout.row_offset, ", dim ", layout.dim, ") does not fit ", n,
             " elements");
  // Elements with consecutive global indices [g, g + len) at x + e: one Philox call yields the
  // draws of 4 consecutive global indices (lanes g & 3 of counter g >> 2), the same numbers as
  // dropout_scale_at at a quarter of the cost.
  const auto run = [&](int64_t e, uint64_t g, int64_t len) {
    const float scale = 1.0f / (1.0f - params.p);
    while (len > 0) {
      const U32x4 r = philox4x32(params.seed, g >> 2, params.stream);
      const int lane0 = static_cast<int>(g & 3);
      const int lanes = static_cast<int>(std::min<int64_t>(4 - lane0, len));
      for (int k = 0; k < lanes; ++k)
        y[e + k] = x[e + k] * (u32_to_unit_float(r.v[lane0 + k]) >= params.p ? scale : 0.0f);
      e += lanes, g += static_cast<uint64_t>(lanes), len -= lanes;
    }
  };
  if (layout.rows == 0) {
    const int64_t chunks = (n + 4095) / 4096;  // 4-aligned chunks of one contiguous run
    parallel_for(chunks, 4, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c)
        run(4096 * c, static_cast<uint64_t>(4096 * c), std::min<int64_t>(4096, n - 4096 * c));
    });
  } else {  // one contiguous global run per local row
    parallel_for(
        n / layout.dim, std::max<int64_t>(1, 4096 / layout.dim), [&](int64_t begin, int64_t end) {
          for (int64_t row = begin; row < end; ++row)
            run(row * layout.dim, dropout_global_index(row * layout.dim, layout), layout.dim);
        });
  }
}

void dropout(const Tensor& x, Tensor& y, const DropoutParams& params) {
  check_tensor(y, "dropout output", DType::kF32, x.shape());
  check_tensor(x, "dropout input", DType::kF32, x.shape());
  check_same_device(x, y, "dropout");
  ELMO_CHECK(params.p >= 0.0f && params.p < 1.0f, "dropout probability ", params.p,
             " is outside [0, 1)");
  dropout(x.device(), x.data<float>(), y.data<float>(), x.numel(), params);
}

void dropout(Device device, const float* x, float* y, int64_t n, const DropoutParams& params) {
  if (device.is_cpu())
    dropout_cpu(x, y, n, params);
  else
    dropout_cuda(x, y, n, params);
}

}  // namespace elmo
