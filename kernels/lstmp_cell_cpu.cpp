// CPU twin of the fused LSTM cell: parallel over rows; within a row, chunks of kChunk columns are
// computed into local arrays (no aliasing with the outputs, so the loops vectorise) with the
// per-element math of lstmp_cell.h, then stored.
//
// GCC only if-converts (and so vectorises) the clamps and selects of the activations when it may
// assume that float comparisons do not trap; nothing here reads the FP exception flags. The
// pragma precedes the includes so the inlined header math is compiled with the same options.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <algorithm>

#include "kernels/launchers.h"
#include "kernels/lstmp_cell.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {
constexpr int64_t kChunk = 64;
constexpr float kZeros[kChunk] = {};

// Rows per parallel chunk: about 16k elements of work per thread before it is worth forking.
int64_t row_grain(int64_t cell) { return std::max<int64_t>(1, (16384 + cell - 1) / cell); }

void store(float* dst, const float* src, int64_t n) { std::copy(src, src + n, dst); }

// One chunk of n <= kChunk columns into local arrays. Separate functions with restrict
// pointers, kept out of line: GCC vectorises these loops, not the same loops inlined into the
// row loop (the call costs nothing next to 64 elements of work).
__attribute__((noinline)) void forward_chunk(int64_t n, int64_t cell, float cell_clip,
                                             const float* __restrict__ zi,
                                             const float* __restrict__ cp, float* __restrict__ li,
                                             float* __restrict__ lf, float* __restrict__ lg,
                                             float* __restrict__ lo, float* __restrict__ lraw,
                                             float* __restrict__ lc, float* __restrict__ lm) {
  for (int64_t k = 0; k < n; ++k) {
    const LstmCellForward r = lstmp_cell_forward_math(zi[k], zi[cell + k], zi[2 * cell + k],
                                                      zi[3 * cell + k], cp[k], cell_clip);
    li[k] = r.i;
    lf[k] = r.f;
    lg[k] = r.g;
    lo[k] = r.o;
    lraw[k] = r.c_raw;
    lc[k] = r.c;
    lm[k] = r.m;
  }
}

__attribute__((noinline)) void backward_chunk(
    int64_t n, int64_t cell, float cell_clip, const float* __restrict__ gi,
    const float* __restrict__ cp, const float* __restrict__ raw, const float* __restrict__ dm,
    const float* __restrict__ dcn, float* __restrict__ li, float* __restrict__ lf,
    float* __restrict__ lg, float* __restrict__ lo, float* __restrict__ ldcp) {
  for (int64_t k = 0; k < n; ++k) {
    const LstmCellBackward r =
        lstmp_cell_backward_math(gi[k], gi[cell + k], gi[2 * cell + k], gi[3 * cell + k], cp[k],
                                 raw[k], cell_clip, dm[k], dcn[k]);
    li[k] = r.dzi;
    lf[k] = r.dzf;
    lg[k] = r.dzg;
    lo[k] = r.dzo;
    ldcp[k] = r.dc_prev;
  }
}
}  // namespace

void lstmp_cell_forward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* z,
                            const float* c_prev, float* c, float* m, float* gates, float* c_raw) {
  parallel_for(rows, row_grain(cell), [&](int64_t begin, int64_t end) {
    float li[kChunk], lf[kChunk], lg[kChunk], lo[kChunk], lraw[kChunk], lc[kChunk], lm[kChunk];
    for (int64_t b = begin; b < end; ++b) {
      const float* z_row = z + b * 4 * cell;  // [4C]: i, f, g, o blocks
      for (int64_t j0 = 0; j0 < cell; j0 += kChunk) {
        const int64_t n = std::min(kChunk, cell - j0);
        const float* cp = c_prev ? c_prev + b * cell + j0 : kZeros;
        forward_chunk(n, cell, cell_clip, z_row + j0, cp, li, lf, lg, lo, lraw, lc, lm);
        // All of this chunk's z is read: the gates may now overwrite it (gates == z).
        const int64_t e = b * cell + j0;
        store(c + e, lc, n);
        store(m + e, lm, n);
        if (c_raw) store(c_raw + e, lraw, n);
        if (gates) {
          float* g_row = gates + b * 4 * cell + j0;
          store(g_row, li, n);
          store(g_row + cell, lf, n);
          store(g_row + 2 * cell, lg, n);
          store(g_row + 3 * cell, lo, n);
        }
      }
    }
  });
}

void lstmp_cell_backward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* gates,
                             const float* c_prev, const float* c_raw, const float* dm,
                             const float* dc_next, float* dz, float* dc_prev) {
  parallel_for(rows, row_grain(cell), [&](int64_t begin, int64_t end) {
    float li[kChunk], lf[kChunk], lg[kChunk], lo[kChunk], ldcp[kChunk];
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t j0 = 0; j0 < cell; j0 += kChunk) {
        const int64_t n = std::min(kChunk, cell - j0);
        const int64_t e = b * cell + j0;
        backward_chunk(n, cell, cell_clip, gates + b * 4 * cell + j0, c_prev ? c_prev + e : kZeros,
                       c_raw + e, dm + e, dc_next ? dc_next + e : kZeros, li, lf, lg, lo, ldcp);
        // dz may be gates and dc_prev may be dc_next: stored after the chunk is read.
        float* dz_row = dz + b * 4 * cell + j0;
        store(dz_row, li, n);
        store(dz_row + cell, lf, n);
        store(dz_row + 2 * cell, lg, n);
        store(dz_row + 3 * cell, lo, n);
        if (dc_prev) store(dc_prev + e, ldcp, n);
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
  lstmp_cell_forward(z.device(), rows, cell, cell_clip, z.data<float>(), cp, c.data<float>(),
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
  lstmp_cell_backward(gates.device(), rows, cell, cell_clip, gates.data<float>(), cp,
                      c_raw.data<float>(), dm.data<float>(), dcn, dz.data<float>(), dcp);
}

void lstmp_cell_forward(Device device, int64_t rows, int64_t cell, float cell_clip, const float* z,
                        const float* c_prev, float* c, float* m, float* gates, float* c_raw) {
  if (device.is_cpu())
    lstmp_cell_forward_cpu(rows, cell, cell_clip, z, c_prev, c, m, gates, c_raw);
  else
    lstmp_cell_forward_cuda(rows, cell, cell_clip, z, c_prev, c, m, gates, c_raw);
}

void lstmp_cell_backward(Device device, int64_t rows, int64_t cell, float cell_clip,
                         const float* gates, const float* c_prev, const float* c_raw,
                         const float* dm, const float* dc_next, float* dz, float* dc_prev) {
  if (device.is_cpu())
    lstmp_cell_backward_cpu(rows, cell, cell_clip, gates, c_prev, c_raw, dm, dc_next, dz, dc_prev);
  else
    lstmp_cell_backward_cuda(rows, cell, cell_clip, gates, c_prev, c_raw, dm, dc_next, dz, dc_prev);
}

}  // namespace elmo
