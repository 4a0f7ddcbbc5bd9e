// CPU twin of the fused LSTM cell: parallel over rows, the per-element math from lstmp_cell.h.
#include "kernels/lstmp_cell.h"

#include <algorithm>

#include "runtime/parallel.h"

namespace elmo {

namespace {
// Rows per parallel chunk: about 16k elements of work per thread before it is worth forking.
int64_t row_grain(int64_t cell) { return std::max<int64_t>(1, (16384 + cell - 1) / cell); }
}  // namespace

void lstmp_cell_forward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* z,
                            const float* c_prev, float* c, float* m, float* gates, float* c_raw) {
  parallel_for(rows, row_grain(cell), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* z_row = z + b * 4 * cell;                    // [4C]
      float* g_row = gates ? gates + b * 4 * cell : nullptr;    // [4C]
      const float* cp_row = c_prev ? c_prev + b * cell : nullptr;
      float* c_row = c + b * cell;
      float* cr_row = c_raw ? c_raw + b * cell : nullptr;
      float* m_row = m + b * cell;
      for (int64_t j = 0; j < cell; ++j)
        lstmp_cell_forward_at(cell, j, z_row, cp_row ? cp_row[j] : 0.0f, cell_clip, g_row,
                              c_row + j, cr_row ? cr_row + j : nullptr, m_row + j);
    }
  });
}

void lstmp_cell_backward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* gates,
                             const float* c_prev, const float* c_raw, const float* dm,
                             const float* dc_next, float* dz, float* dc_prev) {
  parallel_for(rows, row_grain(cell), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* g_row = gates + b * 4 * cell;  // [4C]
      float* dz_row = dz + b * 4 * cell;          // [4C]
      const int64_t o = b * cell;
      for (int64_t j = 0; j < cell; ++j) {
        const float dcp = lstmp_cell_backward_at(
            cell, j, g_row, c_prev ? c_prev[o + j] : 0.0f, c_raw[o + j], cell_clip, dm[o + j],
            dc_next ? dc_next[o + j] : 0.0f, dz_row);
        if (dc_prev) dc_prev[o + j] = dcp;
      }
    }
  });
}

namespace {
void check_optional(const Tensor& t, const char* what, const Shape& shape, const Tensor& like) {
  if (!t.defined()) return;
  check_tensor(t, what, DType::kF32, shape);
  check_same_device(t, like, what);
}
}  // namespace

void lstmp_cell_forward(const Tensor& z, const Tensor& c_prev, float cell_clip, Tensor& c,
                        Tensor& m, const Tensor& gates, const Tensor& c_raw) {
  ELMO_CHECK(z.defined() && z.ndim() == 2 && z.size(1) % 4 == 0,
             "lstmp_cell_forward: z must be [B, 4C], got ", z.describe());
  const int64_t rows = z.size(0), cell = z.size(1) / 4;
  check_tensor(z, "lstmp_cell_forward z", DType::kF32, {rows, 4 * cell});
  check_tensor(c, "lstmp_cell_forward c", DType::kF32, {rows, cell});
  check_tensor(m, "lstmp_cell_forward m", DType::kF32, {rows, cell});
  check_same_device(z, c, "lstmp_cell_forward c");
  check_same_device(z, m, "lstmp_cell_forward m");
  check_optional(c_prev, "lstmp_cell_forward c_prev", {rows, cell}, z);
  check_optional(gates, "lstmp_cell_forward gates", {rows, 4 * cell}, z);
  check_optional(c_raw, "lstmp_cell_forward c_raw", {rows, cell}, z);
  const float* cp = c_prev.defined() ? c_prev.data<float>() : nullptr;
  float* g = gates.defined() ? gates.data<float>() : nullptr;
  float* cr = c_raw.defined() ? c_raw.data<float>() : nullptr;
  if (z.device().is_cpu())
    lstmp_cell_forward_cpu(rows, cell, cell_clip, z.data<float>(), cp, c.data<float>(),
                           m.data<float>(), g, cr);
  else
    lstmp_cell_forward_cuda(rows, cell, cell_clip, z.data<float>(), cp, c.data<float>(),
                            m.data<float>(), g, cr);
}

void lstmp_cell_backward(const Tensor& gates, const Tensor& c_prev, const Tensor& c_raw,
                         float cell_clip, const Tensor& dm, const Tensor& dc_next, Tensor& dz,
                         const Tensor& dc_prev) {
  ELMO_CHECK(gates.defined() && gates.ndim() == 2 && gates.size(1) % 4 == 0,
             "lstmp_cell_backward: gates must be [B, 4C], got ", gates.describe());
  const int64_t rows = gates.size(0), cell = gates.size(1) / 4;
  check_tensor(gates, "lstmp_cell_backward gates", DType::kF32, {rows, 4 * cell});
  check_tensor(c_raw, "lstmp_cell_backward c_raw", DType::kF32, {rows, cell});
  check_tensor(dm, "lstmp_cell_backward dm", DType::kF32, {rows, cell});
  check_tensor(dz, "lstmp_cell_backward dz", DType::kF32, {rows, 4 * cell});
  check_same_device(gates, c_raw, "lstmp_cell_backward c_raw");
  check_same_device(gates, dm, "lstmp_cell_backward dm");
  check_same_device(gates, dz, "lstmp_cell_backward dz");
  check_optional(c_prev, "lstmp_cell_backward c_prev", {rows, cell}, gates);
  check_optional(dc_next, "lstmp_cell_backward dc_next", {rows, cell}, gates);
  check_optional(dc_prev, "lstmp_cell_backward dc_prev", {rows, cell}, gates);
  const float* cp = c_prev.defined() ? c_prev.data<float>() : nullptr;
  const float* dcn = dc_next.defined() ? dc_next.data<float>() : nullptr;
  float* dcp = dc_prev.defined() ? dc_prev.data<float>() : nullptr;
  if (gates.device().is_cpu())
    lstmp_cell_backward_cpu(rows, cell, cell_clip, gates.data<float>(), cp, c_raw.data<float>(),
                            dm.data<float>(), dcn, dz.data<float>(), dcp);
  else
    lstmp_cell_backward_cuda(rows, cell, cell_clip, gates.data<float>(), cp,
                             c_raw.data<float>(), dm.data<float>(), dcn, dz.data<float>(), dcp);
}

}  // namespace elmo
