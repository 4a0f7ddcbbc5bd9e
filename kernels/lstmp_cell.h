// Fused pointwise LSTM cell (the part of an LSTMP step between the GEMMs), forward and backward.
//
// What it is: given pre-activation gates z = x W_ih^T + h_prev W_hh^T + b (gate blocks i, f, g, o,
// each C wide) and the previous cell state, it computes
//   i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
//   c_raw = f * c_prev + i * g
//   c     = clip(c_raw, ±cell_clip)          (cell_clip <= 0: no clip)
//   m     = o * tanh(c)                      (the projection input; h = m without projection)
// and its exact gradient. What it is not: the GEMMs, the projection or the time loop (see
// model/lstm_layer.h).
//
// Saved for backward: the activated gates [B, 4C] and c_raw [B, C] (the pre-clip state: the clip
// mask is |c_raw| <= cell_clip and c = clip(c_raw), so tanh(c) is recomputed, not stored), plus
// c_prev, which the caller keeps anyway (it is the previous step's c).
// Clip gradient (TF clip_by_value): passes where -clip <= c_raw <= clip, zero outside.
//
// Aliasing: `gates` may be `z` (activated in place); `dz` may be `gates`; `dc_prev` may be
// `dc_next`. c_prev == nullptr means a zero previous state; dc_next == nullptr means no gradient
// from the next step; dc_prev == nullptr skips that output. All arrays are contiguous row-major.
#pragma once

#include <math.h>

#include <cstdint>

#include "runtime/hd.h"
#include "runtime/tensor.h"

namespace elmo {

ELMO_HD float lstm_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// clip_by_value(x, -limit, limit); limit <= 0 means no clip.
ELMO_HD float clip_symmetric(float x, float limit) {
  if (limit <= 0.0f) return x;
  return x < -limit ? -limit : (x > limit ? limit : x);
}

// 1 where the gradient of clip_symmetric passes (TF semantics: -limit <= x <= limit), else 0.
ELMO_HD float clip_pass(float x, float limit) {
  return (limit <= 0.0f || (x >= -limit && x <= limit)) ? 1.0f : 0.0f;
}

// One element (row b, column j < C). z_row and gates_row point at row b's 4C values.
ELMO_HD void lstmp_cell_forward_at(int64_t cell, int64_t j, const float* z_row, float c_prev,
                                   float cell_clip, float* gates_row, float* c_out,
                                   float* c_raw_out, float* m_out) {
  const float i = lstm_sigmoid(z_row[j]);
  const float f = lstm_sigmoid(z_row[cell + j]);
  const float g = tanhf(z_row[2 * cell + j]);
  const float o = lstm_sigmoid(z_row[3 * cell + j]);
  const float c_raw = f * c_prev + i * g;
  const float c = clip_symmetric(c_raw, cell_clip);
  *c_out = c;
  if (c_raw_out) *c_raw_out = c_raw;
  *m_out = o * tanhf(c);
  if (gates_row) {
    gates_row[j] = i;
    gates_row[cell + j] = f;
    gates_row[2 * cell + j] = g;
    gates_row[3 * cell + j] = o;
  }
}

// Backward of one element. Reads the activated gates (row b), writes dz for the same four
// positions (dz_row may be gates_row) and returns dc_prev.
ELMO_HD float lstmp_cell_backward_at(int64_t cell, int64_t j, const float* gates_row,
                                     float c_prev, float c_raw, float cell_clip, float dm,
                                     float dc_next, float* dz_row) {
  const float i = gates_row[j];
  const float f = gates_row[cell + j];
  const float g = gates_row[2 * cell + j];
  const float o = gates_row[3 * cell + j];
  const float tc = tanhf(clip_symmetric(c_raw, cell_clip));
  // Gradient reaching the clipped state c (from m and from the next step), then through the clip.
  const float dc = (dc_next + dm * o * (1.0f - tc * tc)) * clip_pass(c_raw, cell_clip);
  dz_row[j] = dc * g * i * (1.0f - i);
  dz_row[cell + j] = dc * c_prev * f * (1.0f - f);
  dz_row[2 * cell + j] = dc * i * (1.0f - g * g);
  dz_row[3 * cell + j] = dm * tc * o * (1.0f - o);
  return dc * f;
}

// Raw launchers. rows = B, cell = C.
//   z [B, 4C], c_prev [B, C] | nullptr -> c [B, C], m [B, C], gates [B, 4C] | nullptr,
//   c_raw [B, C] | nullptr (inference passes nullptr for both saved outputs).
void lstmp_cell_forward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* z,
                            const float* c_prev, float* c, float* m, float* gates, float* c_raw);
void lstmp_cell_forward_cuda(int64_t rows, int64_t cell, float cell_clip, const float* z,
                             const float* c_prev, float* c, float* m, float* gates, float* c_raw);
//   gates [B, 4C], c_prev [B, C] | nullptr, c_raw [B, C], dm [B, C], dc_next [B, C] | nullptr
//   -> dz [B, 4C], dc_prev [B, C] | nullptr.
void lstmp_cell_backward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* gates,
                             const float* c_prev, const float* c_raw, const float* dm,
                             const float* dc_next, float* dz, float* dc_prev);
void lstmp_cell_backward_cuda(int64_t rows, int64_t cell, float cell_clip, const float* gates,
                              const float* c_prev, const float* c_raw, const float* dm,
                              const float* dc_next, float* dz, float* dc_prev);

// Entry points: check dtype (f32), shapes and devices, then dispatch on the device of z / gates.
// Optional tensors are passed undefined (Tensor()) to mean "absent" as described above (so the
// optional outputs are const handles: the data they point at is written).
void lstmp_cell_forward(const Tensor& z, const Tensor& c_prev, float cell_clip, Tensor& c,
                        Tensor& m, const Tensor& gates, const Tensor& c_raw);
void lstmp_cell_backward(const Tensor& gates, const Tensor& c_prev, const Tensor& c_raw,
                         float cell_clip, const Tensor& dm, const Tensor& dc_next, Tensor& dz,
                         const Tensor& dc_prev);

}  // namespace elmo
