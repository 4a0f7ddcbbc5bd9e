// Small elementwise and reduction ops the model layers need between their GEMMs and fused
// kernels, each dispatching on a Device given by the caller (pointers live on it). With these
// and runtime/gemm.h a layer is written once for both backends.
//
//   copy_floats            dst[e] = src[e]                       (CUDA: on the current stream)
//   fill_floats            x[e] = value
//   broadcast_rows         out[r, :] = row[:]                     row [dim], out [rows, dim]
//   clip_values            y[e] = clip(x[e], ±limit)              (limit <= 0: no clip)
//   mask_clip_grad         g[e] *= [-limit <= x[e] <= limit]      (TF clip_by_value gradient)
//   add_floats             out[e] = a[e] + b[e]                   (out may alias a or b)
//   column_sums_add        out[j] += sum_r x[r * ld + j]           f32 accumulators (see below)
//   column_sums_add_f64    out[j] += sum_r x[r * ld + j]           f64 accumulators, lane order
//   add_scaled_table_rows  out[r, :] += scale[r] * table[ids[r], :]
//   sum_to_double          *out = sum_e x[e] in double            (CUDA: *out is device memory)
//   floats_to_bf16         y[e] = bf16(x[e])  round to nearest even, NaN stays NaN (quiet)
//   bf16_to_floats         y[e] = f32(x[e])   exact
//
// The reductions are deterministic on both backends. Column sums, lane order (column_sums_add_f64
// on both backends and column_sums_add on CUDA, so the f64 sums agree bit for bit): kColumnSumLanes
// partial sums per column, lane l adding rows l, l + L, l + 2L, ... in ascending order from 0, then
// the lanes combined by halving (lane l += lane l + L/2 for l < L/2, then L/4, ... 1) and the total
// added to out[j]. On CUDA a block of L x 32 threads owns 32 columns (one thread per lane and
// column), so a sum over thousands of rows spreads over L threads instead of one. The CPU's f32
// column_sums_add adds rows in order 0, 1, 2, ... (the order every CPU full-softmax result was
// trained with, kept so those results reproduce bit for bit); it and the CUDA kernel differ in the
// last bits, by at most 2 * rows * 2^-24 * (|out[j]| + sum_r |x[r, j]|) per column (each of the
// `rows` roundings of either order errs by at most 2^-24 times a partial sum of those).
// sum_to_double: a fixed tree on CUDA, sequential on the CPU, so the two differ in the last bits.
// Products and sums on the device are explicitly rounded (no FMA contraction), matching the CPU's
// -ffp-contract=off arithmetic. What it is not: a general tensor library; the ops take raw pointers
// and sizes.
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace elmo {

void copy_floats(Device device, float* dst, const float* src, int64_t n);
void fill_floats(Device device, float* x, int64_t n, float value);
// bf16 values as raw 16-bit words (the upper half of the f32 bit pattern).
void floats_to_bf16(Device device, const float* x, uint16_t* y, int64_t n);
void bf16_to_floats(Device device, const uint16_t* x, float* y, int64_t n);
uint16_t float_to_bf16_bits(float x);  // the CPU rounding, for one value
void broadcast_rows(Device device, const float* row, int64_t dim, int64_t rows, float* out);
void clip_values(Device device, const float* x, float* y, int64_t n, float limit);
void mask_clip_grad(Device device, float* g, const float* x, int64_t n, float limit);
void add_floats(Device device, const float* a, const float* b, float* out, int64_t n);
constexpr int kColumnSumLanes = 32;  // partial sums per column (see the lane order above)
void column_sums_add(Device device, const float* x, int64_t rows, int64_t cols, int64_t ld,
                     float* out);
void column_sums_add_f64(Device device, const float* x, int64_t rows, int64_t cols, int64_t ld,
                         double* out);
void add_scaled_table_rows(Device device, float* out, const float* scale, const float* table,
                           const int32_t* ids, int64_t n, int64_t dim);
void sum_to_double(Device device, const float* x, int64_t n, double* out);

}  // namespace elmo
