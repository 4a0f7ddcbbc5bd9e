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
// The activations (lstm_exp, lstm_sigmoid, lstm_tanh) are branch-free f32 functions defined
// here, ~1-2 ulp from the exact values: glibc's tanhf costs ~70 ns, which would make the cell
// slower than the GEMMs around it, and both backends get the same function.
//
// Aliasing: `gates` may be `z` (activated in place); `dz` may be `gates`; `dc_prev` may be
// `dc_next`. c_prev == nullptr means a zero previous state; dc_next == nullptr means no gradient
// from the next step; dc_prev == nullptr skips that output. All arrays are contiguous row-major.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "runtime/hd.h"
#include "runtime/tensor.h"

// The cell math must inline completely into the CPU loops for them to vectorise.
#if !defined(__CUDACC__) && defined(__GNUC__)
#define ELMO_CELL_HD inline __attribute__((always_inline))
#else
#define ELMO_CELL_HD ELMO_HD
#endif

namespace elmo {

// Reinterprets 32 bits as a float (exponent construction in lstm_exp).
ELMO_CELL_HD float lstm_float_from_bits(int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// exp(x) in f32 without branches or library calls, so CPU loops vectorise and both backends
// compute the same function: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
// reduction), a degree-6 minimax polynomial for e^r (Cephes expf coefficients), times 2^n built
// from its bits. Max error ~1 ulp. x is clamped to [-87, 80]: the result stays normal and
// finite, and so does 1 / (1 + e^x) (>= 1.8e-35). The upper bound matters for speed: GCC
// if-converts the clamp into a constant-folded path that every SIMD lane evaluates, and with
// e^88 that path computes on denormals (microcode assists made the cell 2x slower).
ELMO_CELL_HD float lstm_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 80.0f ? 80.0f : x);
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * lstm_float_from_bits((static_cast<int32_t>(n) + 127) << 23);
}

ELMO_CELL_HD float lstm_sigmoid(float x) { return 1.0f / (1.0f + lstm_exp(-x)); }

// tanh(x): odd polynomial for |x| < 0.625 (keeps the relative accuracy near 0), else
// sign(x) * (1 - 2 / (e^{2|x|} + 1)). Both branches are computed and selected (vectorisable).
ELMO_CELL_HD float lstm_tanh(float x) {
  const float a = x < 0.0f ? -x : x;
  const float big = 1.0f - 2.0f / (lstm_exp(2.0f * a) + 1.0f);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = x + x * z * p;
  return a < 0.625f ? small : (x < 0.0f ? -big : big);
}

// clip_by_value(x, -limit, limit); limit <= 0 means no clip. (Selects, no branches.)
ELMO_CELL_HD float clip_symmetric(float x, float limit) {
  const float lim = limit > 0.0f ? limit : INFINITY;
  const float lower = x < -lim ? -lim : x;
  return lower > lim ? lim : lower;
}

// 1 where the gradient of clip_symmetric passes (TF semantics: -limit <= x <= limit), else 0.
ELMO_CELL_HD float clip_pass(float x, float limit) {
  const float lim = limit > 0.0f ? limit : INFINITY;
  return ((x >= -lim) & (x <= lim)) ? 1.0f : 0.0f;
}

struct LstmCellForward {
  float i, f, g, o;  // activated gates
  float c_raw, c, m;
};

// Forward of one element from its four gate pre-activations and c_prev.
ELMO_CELL_HD LstmCellForward lstmp_cell_forward_math(float zi, float zf, float zg, float zo,
                                                float c_prev, float cell_clip) {
  LstmCellForward r;
  r.i = lstm_sigmoid(zi);
  r.f = lstm_sigmoid(zf);
  r.g = lstm_tanh(zg);
  r.o = lstm_sigmoid(zo);
  r.c_raw = r.f * c_prev + r.i * r.g;
  r.c = clip_symmetric(r.c_raw, cell_clip);
  r.m = r.o * lstm_tanh(r.c);
  return r;
}

struct LstmCellBackward {
  float dzi, dzf, dzg, dzo, dc_prev;
};

// Backward of one element: dm = dL/dm, dc_next = dL/dc (the clipped state, from the next step).
ELMO_CELL_HD LstmCellBackward lstmp_cell_backward_math(float i, float f, float g, float o,
                                                  float c_prev, float c_raw, float cell_clip,
                                                  float dm, float dc_next) {
  const float tc = lstm_tanh(clip_symmetric(c_raw, cell_clip));
  // Gradient reaching the clipped state c (from m and from the next step), then through the clip.
  const float dc = (dc_next + dm * o * (1.0f - tc * tc)) * clip_pass(c_raw, cell_clip);
  LstmCellBackward r;
  r.dzi = dc * g * i * (1.0f - i);
  r.dzf = dc * c_prev * f * (1.0f - f);
  r.dzg = dc * i * (1.0f - g * g);
  r.dzo = dm * tc * o * (1.0f - o);
  r.dc_prev = dc * f;
  return r;
}

// Entry points over pointers on `device`. rows = B, cell = C.
//   z [B, 4C], c_prev [B, C] | nullptr -> c [B, C], m [B, C], gates [B, 4C] | nullptr,
//   c_raw [B, C] | nullptr (inference passes nullptr for both saved outputs).
void lstmp_cell_forward(Device device, int64_t rows, int64_t cell, float cell_clip, const float* z,
                        const float* c_prev, float* c, float* m, float* gates, float* c_raw);
//   gates [B, 4C], c_prev [B, C] | nullptr, c_raw [B, C], dm [B, C], dc_next [B, C] | nullptr
//   -> dz [B, 4C], dc_prev [B, C] | nullptr.
void lstmp_cell_backward(Device device, int64_t rows, int64_t cell, float cell_clip,
                         const float* gates, const float* c_prev, const float* c_raw,
                         const float* dm, const float* dc_next, float* dz, float* dc_prev);

// Entry points over tensors: check dtype (f32), shapes and devices, then dispatch on the device
// of z / gates.
// Optional tensors are passed undefined (Tensor()) to mean "absent" as described above (so the
// optional outputs are const handles: the data they point at is written).
void lstmp_cell_forward(const Tensor& z, const Tensor& c_prev, float cell_clip, Tensor& c,
                        Tensor& m, const Tensor& gates, const Tensor& c_raw);
void lstmp_cell_backward(const Tensor& gates, const Tensor& c_prev, const Tensor& c_raw,
                         float cell_clip, const Tensor& dm, const Tensor& dc_next, Tensor& dz,
                         const Tensor& dc_prev);

}  // namespace elmo
