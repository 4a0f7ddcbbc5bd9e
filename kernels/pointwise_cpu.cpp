// CPU side of kernels/pointwise.h and the device dispatch. The CPU loops are the ones the model
// layers ran inline before they moved here (same grains, same order), so CPU results are
// unchanged bit for bit. The f64 column sums follow the CUDA kernel's lane order (pointwise.h),
// so both backends give the same bits; the f32 ones keep the CPU's row order (see pointwise.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/launchers.h"
#include "kernels/lstmp_cell.h"
#include "kernels/pointwise.h"
#include "runtime/cuda_memory.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {
constexpr int64_t kPointwiseGrain = 1 << 15;  // elements per thread for simple loops

// out[j] += sum_r x[r * ld + j] in the lane order of pointwise.h (the CUDA kernel's): per
// column kColumnSumLanes partial sums over rows r = l (mod lanes), then halving.
template <typename Acc>
void column_sums_in_lane_order(const float* x, int64_t rows, int64_t cols, int64_t ld, Acc* out) {
  constexpr int64_t kLanes = kColumnSumLanes, kTile = 256;  // columns per pass
  parallel_for(cols, 1024, [&](int64_t j0, int64_t j1) {
    std::vector<Acc> lanes(static_cast<size_t>(kLanes * kTile));  // [lane][column of the tile]
    for (int64_t t0 = j0; t0 < j1; t0 += kTile) {
      const int64_t w = std::min(kTile, j1 - t0);
      std::fill(lanes.begin(), lanes.end(), Acc(0));
      for (int64_t r = 0; r < rows; ++r) {
        Acc* lane = lanes.data() + (r % kLanes) * kTile;
        const float* row = x + r * ld + t0;
        for (int64_t j = 0; j < w; ++j) lane[j] += static_cast<Acc>(row[j]);
      }
      for (int64_t half = kLanes / 2; half > 0; half /= 2)
        for (int64_t l = 0; l < half; ++l) {
          Acc* into = lanes.data() + l * kTile;
          const Acc* from = lanes.data() + (l + half) * kTile;
          for (int64_t j = 0; j < w; ++j) into[j] += from[j];
        }
      for (int64_t j = 0; j < w; ++j) out[t0 + j] += lanes[j];
    }
  });
}
}  // namespace

void copy_floats(Device device, float* dst, const float* src, int64_t n) {
  if (n <= 0 || dst == src) return;
  const size_t bytes = sizeof(float) * static_cast<size_t>(n);
  if (device.is_cpu())
    std::memcpy(dst, src, bytes);
  else
    cuda_copy(dst, device, src, device, bytes);
}

void fill_floats(Device device, float* x, int64_t n, float value) {
  if (n <= 0) return;
  if (device.is_cpu())
    std::fill(x, x + n, value);
  else
    fill_floats_cuda(x, n, value);
}

uint16_t float_to_bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, then truncate.
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

void floats_to_bf16(Device device, const float* x, uint16_t* y, int64_t n) {
  if (n <= 0) return;
  if (!device.is_cpu()) return floats_to_bf16_cuda(x, y, n);
  parallel_for(n, kPointwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) y[e] = float_to_bf16_bits(x[e]);
  });
}

void bf16_to_floats(Device device, const uint16_t* x, float* y, int64_t n) {
  if (n <= 0) return;
  if (!device.is_cpu()) return bf16_to_floats_cuda(x, y, n);
  parallel_for(n, kPointwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const uint32_t bits = static_cast<uint32_t>(x[e]) << 16;
      std::memcpy(y + e, &bits, sizeof bits);
    }
  });
}

void broadcast_rows(Device device, const float* row, int64_t dim, int64_t rows, float* out) {
  if (rows <= 0 || dim <= 0) return;
  if (!device.is_cpu()) return broadcast_rows_cuda(row, dim, rows, out);
  parallel_for(rows, std::max<int64_t>(1, kPointwiseGrain / dim), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      std::memcpy(out + r * dim, row, sizeof(float) * static_cast<size_t>(dim));
  });
}

void clip_values(Device device, const float* x, float* y, int64_t n, float limit) {
  if (n <= 0) return;
  if (!device.is_cpu()) return clip_values_cuda(x, y, n, limit);
  parallel_for(n, kPointwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) y[e] = clip_symmetric(x[e], limit);
  });
}

void mask_clip_grad(Device device, float* g, const float* x, int64_t n, float limit) {
  if (n <= 0) return;
  if (!device.is_cpu()) return mask_clip_grad_cuda(g, x, n, limit);
  parallel_for(n, kPointwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) g[e] *= clip_pass(x[e], limit);
  });
}

void add_floats(Device device, const float* a, const float* b, float* out, int64_t n) {
  if (n <= 0) return;
  if (!device.is_cpu()) return add_floats_cuda(a, b, out, n);
  parallel_for(n, kPointwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) out[e] = a[e] + b[e];
  });
}

void column_sums_add(Device device, const float* x, int64_t rows, int64_t cols, int64_t ld,
                     float* out) {
  if (rows <= 0 || cols <= 0) return;
  if (!device.is_cpu()) return column_sums_add_cuda(x, rows, cols, ld, out);
  parallel_for(cols, 1024, [&](int64_t j0, int64_t j1) {  // threads own columns, rows in order
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * ld;
      for (int64_t j = j0; j < j1; ++j) out[j] += row[j];
    }
  });
}

void column_sums_add_f64(Device device, const float* x, int64_t rows, int64_t cols, int64_t ld,
                         double* out) {
  if (rows <= 0 || cols <= 0) return;
  if (!device.is_cpu()) return column_sums_add_f64_cuda(x, rows, cols, ld, out);
  column_sums_in_lane_order(x, rows, cols, ld, out);
}

void add_scaled_table_rows(Device device, float* out, const float* scale, const float* table,
                           const int32_t* ids, int64_t n, int64_t dim) {
  if (n <= 0 || dim <= 0) return;
  if (!device.is_cpu()) return add_scaled_table_rows_cuda(out, scale, table, ids, n, dim);
  parallel_for(n, std::max<int64_t>(1, 16384 / dim), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float g = scale[r];
      const float* w = table + static_cast<int64_t>(ids[r]) * dim;
      float* o = out + r * dim;
      for (int64_t d = 0; d < dim; ++d) o[d] += g * w[d];
    }
  });
}

void sum_to_double(Device device, const float* x, int64_t n, double* out) {
  if (!device.is_cpu()) return sum_to_double_cuda(x, n, out);
  double total = 0.0;
  for (int64_t e = 0; e < n; ++e) total += x[e];
  *out = total;
}

}  // namespace elmo
