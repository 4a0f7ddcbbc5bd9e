// LSTMP layer on the device of its weights: GEMMs through runtime/gemm.h, the pointwise cell
// through kernels/lstmp_cell, copies/clips through kernels/pointwise.h. See lstm_layer.h for the
// semantics and buffer layouts.
#include "model/lstm_layer.h"

#include <algorithm>

#include "kernels/lstmp_cell.h"
#include "kernels/lstmp_persistent.h"
#include "kernels/pointwise.h"
#include "runtime/gemm.h"

namespace elmo {

float* FloatBuffer::ensure(int64_t n, Device device) {
  n = std::max<int64_t>(n, 1);
  if (capacity() < n || !(tensor_.device() == device))
    tensor_ = Tensor::empty({n}, DType::kF32, device);
  return tensor_.data<float>();
}

int64_t LstmLayerWorkspace::bytes() const {
  const FloatBuffer* all[] = {&gates_, &c_,  &c_raw_, &m_,  &r_,    &h0_,
                              &c0_,    &dr_, &dm_,    &dc_, &ones_, &persistent_.scratch};
  int64_t n = 0;
  for (const FloatBuffer* b : all) n += b->capacity();
  const int64_t bf16_bytes =
      weights_bf16_.defined() ? static_cast<int64_t>(weights_bf16_.nbytes()) : 0;
  return n * static_cast<int64_t>(sizeof(float)) + bf16_bytes;
}

const char* lstm_kernel_name(LstmKernel kernel) {
  switch (kernel) {
    case LstmKernel::kStandard:
      return "standard";
    case LstmKernel::kPersistent:
      return "persistent";
    case LstmKernel::kAuto:
      return "auto";
  }
  return "unknown";
}

LstmKernel parse_lstm_kernel(const std::string& text) {
  if (text == "standard") return LstmKernel::kStandard;
  if (text == "persistent") return LstmKernel::kPersistent;
  if (text == "auto") return LstmKernel::kAuto;
  throw UsageError(str("LSTM kernel \"", text, "\" is not known; use \"standard\", ",
                       "\"persistent\" or \"auto\""));
}

void check_lstm_layer_shape(const LstmLayerShape& shape, const char* where) {
  ELMO_CHECK(shape.input_dim > 0 && shape.cell_size > 0 && shape.proj_dim >= 0, where,
             ": LSTM layer needs input_dim > 0, cell_size > 0 and proj_dim >= 0, got input_dim ",
             shape.input_dim, ", cell_size ", shape.cell_size, ", proj_dim ", shape.proj_dim);
}

namespace {

void check_weights(const LstmLayerShape& shape, const LstmLayerWeights& w, const char* where) {
  check_lstm_layer_shape(shape, where);
  ELMO_CHECK(w.w_ih && w.w_hh && w.bias, where, ": weight_ih, weight_hh and bias must be set");
  ELMO_CHECK((shape.proj_dim > 0) == (w.w_hr != nullptr), where, ": weight_hr must be given ",
             "exactly when proj_dim > 0 (proj_dim ", shape.proj_dim, ")");
}

// True when this call runs the persistent kernels (throws, naming the reason, when kPersistent
// was asked for a shape or device they do not support). kAuto is the standard path until the
// kernels have been verified on a GPU (see LstmKernel in lstm_layer.h).
bool use_persistent(const LstmLayerShape& shape, const LstmLayerWeights& w,
                    LstmPersistentState& state, const char* where) {
  if (w.kernel != LstmKernel::kPersistent) return false;
  if (!state.planned || state.cell != shape.cell_size || state.proj != shape.proj_dim ||
      !(state.device == w.device)) {
    state.plan = lstmp_persistent_plan_for(shape.cell_size, shape.proj_dim, w.device);
    state.cell = shape.cell_size;
    state.proj = shape.proj_dim;
    state.device = w.device;
    state.planned = true;
  }
  ELMO_CHECK(state.plan.ok(), where, ": the persistent LSTM kernel was asked for (cell_size ",
             shape.cell_size, ", proj_dim ", shape.proj_dim, ", ", w.device.str(),
             ") but cannot run it: ", state.plan.reason);
  return true;
}

// The forward's bf16 copies of the weights (see LstmLayerWorkspace::weights_bf16_), made when
// this thread's GEMMs read bf16 on the weights' device; otherwise nothing is kept.
void make_weights_bf16(const LstmLayerShape& shape, const LstmLayerWeights& w, Tensor& copies,
                       int64_t* offsets, bool& made) {
  made = false;
  if (!gemm_uses_bf16(w.device)) return;
  const int64_t G = shape.gates();
  const int64_t counts[3] = {G * shape.input_dim, G * shape.hidden(),
                             shape.proj_dim * shape.cell_size};
  const float* sources[3] = {w.w_ih, w.w_hh, w.w_hr};
  int64_t total = 0;
  for (int i = 0; i < 3; ++i) {
    offsets[i] = total;
    total += (counts[i] + 127) / 128 * 128;  // each copy 256-byte aligned
  }
  if (!copies.defined() || copies.numel() < total || !(copies.device() == w.device))
    copies = Tensor::empty({total}, DType::kBF16, w.device);
  auto* base = static_cast<uint16_t*>(copies.raw());
  for (int i = 0; i < 3; ++i)
    if (counts[i] > 0) convert_to_bf16(w.device, sources[i], counts[i], base + offsets[i]);
  made = true;
}

// Pointers to the copies (W_ih, W_hh, W_hr) when `made` and this thread's GEMMs read bf16;
// nullptrs otherwise (each GEMM then converts its own operands, or reads f32).
void weights_bf16_pointers(const Tensor& copies, const int64_t* offsets, bool made, Device device,
                           const uint16_t** out) {
  const bool use = made && gemm_uses_bf16(device);
  for (int i = 0; i < 3; ++i)
    out[i] = use ? static_cast<const uint16_t*>(copies.raw()) + offsets[i] : nullptr;
}

// Scratch of the CUDA kernels, 256-byte aligned; nullptr on the CPU (the twin needs none).
void* persistent_scratch(LstmPersistentState& state, int64_t B, Device device) {
  if (device.is_cpu()) return nullptr;
  const size_t bytes = lstmp_persistent_scratch_bytes(state.plan, B) + 256;
  float* raw = state.scratch.ensure(static_cast<int64_t>((bytes + 3) / 4), device);
  const uintptr_t aligned = (reinterpret_cast<uintptr_t>(raw) + 255) / 256 * 256;
  return reinterpret_cast<void*>(aligned);
}

}  // namespace

void lstm_layer_forward(const LstmLayerShape& shape, const LstmLayerWeights& weights, int64_t T,
                        int64_t B, const float* x, const float* h0, const float* c0, float* y,
                        float* h_last, float* c_last, LstmLayerWorkspace* ws, bool training) {
  check_weights(shape, weights, "lstm_layer_forward");
  ELMO_CHECK(T >= 0 && B >= 0, "lstm_layer_forward: negative T ", T, " or B ", B);
  ELMO_CHECK(ws != nullptr || !training,
             "lstm_layer_forward: training mode needs a workspace to save activations in");
  LstmLayerWorkspace local;
  if (!ws) ws = &local;
  ws->ready_for_backward_ = false;
  ws->has_weights_bf16_ = false;
  const bool persistent = use_persistent(shape, weights, ws->persistent_, "lstm_layer_forward");

  const Device dev = weights.device;
  const int64_t in = shape.input_dim, C = shape.cell_size, P = shape.proj_dim;
  const int64_t H = shape.hidden(), G = shape.gates();
  const bool project = P > 0;
  const bool save_c_raw = training && shape.cell_clip > 0.0f;
  const bool save_r = training && project && shape.proj_clip > 0.0f;

  if (T == 0) {  // nothing to run: the state passes through
    if (h_last && h_last != h0) {
      if (h0)
        copy_floats(dev, h_last, h0, B * H);
      else
        fill_floats(dev, h_last, B * H, 0.0f);
    }
    if (c_last && c_last != c0) {
      if (c0)
        copy_floats(dev, c_last, c0, B * C);
      else
        fill_floats(dev, c_last, B * C, 0.0f);
    }
    if (training) {
      ws->saved_T_ = 0;
      ws->saved_B_ = B;
      ws->ready_for_backward_ = true;
    }
    return;
  }

  float* z = ws->gates_.ensure(T * B * G, dev);                             // [T, B, 4C]
  float* c_all = ws->c_.ensure((training ? T : 2) * B * C, dev);            // [T|2, B, C]
  float* c_raw = save_c_raw ? ws->c_raw_.ensure(T * B * C, dev) : nullptr;  // [T, B, C]
  float* m_all = project ? ws->m_.ensure((training ? T : 1) * B * C, dev) : nullptr;
  float* r_all = save_r ? ws->r_.ensure(T * B * P, dev) : nullptr;  // [T, B, P]
  if (training) {
    ws->has_h0_ = h0 != nullptr;
    ws->has_c0_ = c0 != nullptr;
    if (h0) copy_floats(dev, ws->h0_.ensure(B * H, dev), h0, B * H);
    if (c0) copy_floats(dev, ws->c0_.ensure(B * C, dev), c0, B * C);
  }

  // bf16 GEMMs: the weights converted once for this forward (and its backward).
  make_weights_bf16(shape, weights, ws->weights_bf16_, ws->weights_bf16_offsets_,
                    ws->has_weights_bf16_);
  const uint16_t* w16[3];  // W_ih, W_hh, W_hr in bf16, or nullptrs
  weights_bf16_pointers(ws->weights_bf16_, ws->weights_bf16_offsets_, ws->has_weights_bf16_, dev,
                        w16);

  // Input part of every step at once: z = b + x W_ih^T over T*B rows.
  broadcast_rows(dev, weights.bias, G, T * B, z);
  gemm_with_bf16_b(dev, false, true, T * B, G, in, 1.0f, x, in, weights.w_ih, w16[0], in, 1.0f, z,
                   G);

  const float* c_last_src = nullptr;  // [B, C] the cell state after step T-1
  if (persistent) {
    LstmpForwardArgs a;
    a.T = T;
    a.B = B;
    a.cell_clip = shape.cell_clip;
    a.proj_clip = shape.proj_clip;
    a.w_hh = weights.w_hh;
    a.w_hr = weights.w_hr;
    a.h0 = h0;
    a.c0 = c0;
    a.z = z;
    a.save_gates = training;
    a.c = c_all;
    a.c_slots = training ? T : 2;
    a.c_raw = c_raw;
    a.m = training ? m_all : nullptr;
    a.r = r_all;
    a.y = y;
    a.scratch = persistent_scratch(ws->persistent_, B, dev);
    lstmp_persistent_forward(dev, ws->persistent_.plan, a);
    c_last_src = c_all + ((T - 1) % a.c_slots) * B * C;
  } else {
    const float* h_prev = h0;  // [B, H]
    const float* c_prev = c0;  // [B, C]
    for (int64_t t = 0; t < T; ++t) {
      float* z_t = z + t * B * G;  // [B, 4C]
      if (h_prev)
        gemm_with_bf16_b(dev, false, true, B, G, H, 1.0f, h_prev, H, weights.w_hh, w16[1], H, 1.0f,
                         z_t, G);
      float* c_t = c_all + (training ? t : t % 2) * B * C;  // [B, C]
      float* y_t = y + t * B * H;                           // [B, H]
      float* m_t = project ? m_all + (training ? t * B * C : 0) : y_t;  // [B, C]
      lstmp_cell_forward(dev, B, C, shape.cell_clip, z_t, c_prev, c_t, m_t,
                         training ? z_t : nullptr, c_raw ? c_raw + t * B * C : nullptr);
      if (project) {
        float* r_t = r_all ? r_all + t * B * P : y_t;  // [B, P] pre-clip projection
        gemm_with_bf16_b(dev, false, true, B, P, C, 1.0f, m_t, C, weights.w_hr, w16[2], C, 0.0f,
                         r_t, P);
        if (shape.proj_clip > 0.0f) clip_values(dev, r_t, y_t, B * P, shape.proj_clip);
      }
      h_prev = y_t;
      c_prev = c_t;
    }
    c_last_src = c_prev;
  }
  if (h_last) copy_floats(dev, h_last, y + (T - 1) * B * H, B * H);
  if (c_last) copy_floats(dev, c_last, c_last_src, B * C);
  if (training) {
    ws->saved_T_ = T;
    ws->saved_B_ = B;
    ws->ready_for_backward_ = true;
  }
}

void lstm_layer_backward(const LstmLayerShape& shape, const LstmLayerWeights& weights, int64_t T,
                         int64_t B, const float* x, const float* y, LstmLayerWorkspace& ws,
                         const float* dy, float* dx, const LstmLayerGrads& grads) {
  check_weights(shape, weights, "lstm_layer_backward");
  ELMO_CHECK(ws.ready_for_backward_,
             "lstm_layer_backward: the workspace holds no training-mode forward (run "
             "lstm_layer_forward with training = true before each backward)");
  ELMO_CHECK(ws.saved_T_ == T && ws.saved_B_ == B, "lstm_layer_backward: called with T ", T, ", B ",
             B, " but the saved forward ran with T ", ws.saved_T_, ", B ", ws.saved_B_);
  ELMO_CHECK(grads.w_ih && grads.w_hh && grads.bias && (shape.proj_dim == 0 || grads.w_hr),
             "lstm_layer_backward: a gradient pointer is missing");
  const bool persistent = use_persistent(shape, weights, ws.persistent_, "lstm_layer_backward");
  ws.ready_for_backward_ = false;  // dZ overwrites the saved gates
  const Device dev = weights.device;
  const int64_t in = shape.input_dim, C = shape.cell_size, P = shape.proj_dim;
  const int64_t H = shape.hidden(), G = shape.gates();
  const bool project = P > 0;
  if (T == 0) {
    if (dx) fill_floats(dev, dx, T * B * in, 0.0f);
    return;
  }

  float* gates = ws.gates_.data();    // [T, B, 4C] activated gates -> dZ in place
  const float* c_all = ws.c_.data();  // [T, B, C]
  const float* c_raw_all = shape.cell_clip > 0.0f ? ws.c_raw_.data() : c_all;
  const float* m_all = project ? ws.m_.data() : nullptr;
  const float* r_all = project && shape.proj_clip > 0.0f ? ws.r_.data() : nullptr;
  const float* c0 = ws.has_c0_ ? ws.c0_.data() : nullptr;
  float* dr_all = project ? ws.dr_.ensure(T * B * P, dev) : nullptr;  // [T, B, P]
  float* dm = ws.dm_.ensure(B * C, dev);                              // [B, C]
  float* dc = ws.dc_.ensure(B * C, dev);                              // [B, C]
  const uint16_t* w16[3];  // the forward's bf16 copies of W_ih, W_hh, W_hr, or nullptrs
  weights_bf16_pointers(ws.weights_bf16_, ws.weights_bf16_offsets_, ws.has_weights_bf16_, dev, w16);

  if (persistent) {  // the BPTT loop in one launch: dZ over the gates, dR_t in dr_all
    LstmpBackwardArgs a;
    a.T = T;
    a.B = B;
    a.cell_clip = shape.cell_clip;
    a.proj_clip = shape.proj_clip;
    a.w_hh = weights.w_hh;
    a.w_hr = weights.w_hr;
    a.gates = gates;
    a.c = c_all;
    a.c_raw = c_raw_all;
    a.c0 = c0;
    a.r = r_all;
    a.dy = dy;
    a.dr = dr_all;
    a.dc = dc;
    a.scratch = persistent_scratch(ws.persistent_, B, dev);
    lstmp_persistent_backward(dev, ws.persistent_.plan, a);
  } else {
    for (int64_t t = T - 1; t >= 0; --t) {
      // dh_t = dy_t + dz_{t+1} W_hh, written where it is consumed: dR_t (projection) or dm.
      float* dh = project ? dr_all + t * B * P : dm;  // [B, H]
      copy_floats(dev, dh, dy + t * B * H, B * H);
      if (t + 1 < T)
        gemm_with_bf16_b(dev, false, false, B, H, G, 1.0f, gates + (t + 1) * B * G, G, weights.w_hh,
                         w16[1], H, 1.0f, dh, H);
      if (project) {
        if (r_all) mask_clip_grad(dev, dh, r_all + t * B * P, B * P, shape.proj_clip);
        // dm = dR W_hr
        gemm_with_bf16_b(dev, false, false, B, C, P, 1.0f, dh, P, weights.w_hr, w16[2], C, 0.0f, dm,
                         C);
      }
      const float* c_prev = t > 0 ? c_all + (t - 1) * B * C : c0;
      float* z_t = gates + t * B * G;
      lstmp_cell_backward(dev, B, C, shape.cell_clip, z_t, c_prev, c_raw_all + t * B * C, dm,
                          t + 1 < T ? dc : nullptr, z_t, t > 0 ? dc : nullptr);
    }
  }

  const float* dz = gates;  // [T*B, 4C]
  const int64_t rows = T * B;
  if (dx)
    gemm_with_bf16_b(dev, false, false, rows, in, G, 1.0f, dz, G, weights.w_ih, w16[0], in, 0.0f,
                     dx, in);
  gemm(dev, true, false, G, in, rows, 1.0f, dz, G, x, in, 1.0f, grads.w_ih, in);
  // dW_hh += dZ_t^T h_{t-1}: h_{t-1} = y_{t-1} for t >= 1 (one GEMM), h0 for t = 0.
  if (T > 1)
    gemm(dev, true, false, G, H, (T - 1) * B, 1.0f, dz + B * G, G, y, H, 1.0f, grads.w_hh, H);
  if (ws.has_h0_)
    gemm(dev, true, false, G, H, B, 1.0f, dz, G, ws.h0_.data(), H, 1.0f, grads.w_hh, H);
  float* ones = ws.ones_.ensure(rows, dev);  // [T*B]
  if (ws.ones_filled_ < rows || ws.ones_.data() != ws.ones_data_) {
    fill_floats(dev, ones, rows, 1.0f);
    ws.ones_filled_ = rows;
    ws.ones_data_ = ones;
  }
  {
    GemmPrecisionGuard exact(GemmPrecision::kFp32);  // a sum over T*B rows: keep it f32
    gemm(dev, false, false, 1, G, rows, 1.0f, ones, rows, dz, G, 1.0f, grads.bias, G);
  }
  if (project) gemm(dev, true, false, P, C, rows, 1.0f, dr_all, P, m_all, C, 1.0f, grads.w_hr, C);
}

}  // namespace elmo
