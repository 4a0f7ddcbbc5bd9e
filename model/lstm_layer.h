// One LSTM-with-projection (LSTMP) layer over T steps of B rows: forward and BPTT, on the CPU or
// on a CUDA device (LstmLayerWeights::device; every pointer passed lives there).
//
// What it is: the DESIGN.md §4 layer
//   z_t = W_ih x_t + W_hh h_{t-1} + b          gate blocks i, f, g, o (each C wide)
//   c_t = clip(f*c_{t-1} + i*g, ±cell_clip);  m_t = o*tanh(c_t)
//   h_t = clip(W_hr m_t, ±proj_clip)           (proj_dim == 0: plain LSTM, h_t = m_t, H = C)
// with weights in PyTorch layout (weight_ih [4C, in], weight_hh [4C, H], bias [4C],
// weight_hr [P, C]) and time-major activations (x [T, B, in], y [T, B, H]). A clip value <= 0
// means no clip. Backward is truncated at the batch boundary: no gradient reaches h0 or c0.
// What it is not: parameter storage, dropout or residuals (model/lstm_stack.h).
//
// Work per call: one GEMM for the input part of all T steps, then per step the recurrent GEMM,
// the fused cell (kernels/lstmp_cell.h) and the projection GEMM. Backward batches the weight
// gradients over all T*B rows (dW_ih = dZ^T X and friends are single GEMMs). One code path
// for both backends: GEMMs through runtime/gemm.h (cuBLAS on the current stream, with the
// thread's GEMM precision), the cell through kernels/lstmp_cell.h, the rest through
// kernels/pointwise.h. The bias gradient is a GEMM with a ones vector run in fp32 whatever the
// precision (a sum over T*B rows should not see bf16-rounded inputs).
// At the bf16 GEMM precision on CUDA each forward first converts the weights to bf16 once (into
// the workspace); its GEMMs and the matching backward's use that copy (gemm_with_bf16_b)
// instead of converting a weight per GEMM, W_hh and W_hr at every time step.
// With LstmKernel::kPersistent the per-step loop of forward and of backward is replaced by one
// launch of kernels/lstmp_persistent.h each; the input GEMM, the saved activations and the
// weight-gradient GEMMs stay the same, so either backward can follow either forward.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/lstmp_persistent.h"
#include "runtime/tensor.h"

namespace elmo {

struct LstmLayerShape {
  int64_t input_dim = 0;
  int64_t cell_size = 0;
  int64_t proj_dim = 0;  // 0: no projection
  float cell_clip = 0.0f;  // <= 0: no clip
  float proj_clip = 0.0f;  // <= 0: no clip (ignored without projection)
  int64_t hidden() const { return proj_dim > 0 ? proj_dim : cell_size; }
  int64_t gates() const { return 4 * cell_size; }
};

// How the T-step recurrence of a layer runs (the input GEMM and the weight-gradient GEMMs are
// the same either way).
//   kStandard    per step a recurrent GEMM, the fused cell and the projection GEMM (cuBLAS /
//                OpenBLAS at the thread's GEMM precision).
//   kPersistent  kernels/lstmp_persistent.h: the whole recurrence (forward, and the BPTT loop of
//                backward) in one cooperative launch with W_hh and W_hr held on chip in bf16,
//                whatever the GEMM precision. Needs a projection and a shape the device fits;
//                anything else is an error naming the reason. On the CPU it runs the kernels'
//                CPU twin (same bf16 roundings), planned for an H100.
//   kAuto        the standard path. The persistent kernels have been compiled for sm_90 but
//                never run on a GPU; kAuto must keep choosing kStandard until a device run has
//                checked them (tests/kernels/test_lstmp_persistent_gpu.cpp,
//                tests/model/test_lstm_layer_persistent_gpu.cpp) and measured them faster.
//                Then it may pick kPersistent where lstmp_persistent_supported() is "" (and,
//                since the persistent path always rounds to bf16, where the GEMM precision is
//                bf16).
enum class LstmKernel : uint8_t { kStandard, kPersistent, kAuto };

const char* lstm_kernel_name(LstmKernel kernel);  // "standard", "persistent", "auto"
// Parses "standard", "persistent" or "auto"; throws UsageError naming the accepted values.
LstmKernel parse_lstm_kernel(const std::string& text);

struct LstmLayerWeights {
  const float* w_ih = nullptr;  // [4C, in]
  const float* w_hh = nullptr;  // [4C, H]
  const float* bias = nullptr;  // [4C]
  const float* w_hr = nullptr;  // [P, C]; nullptr when proj_dim == 0
  Device device = Device::cpu();  // where these, the activations and the gradients live
  LstmKernel kernel = LstmKernel::kAuto;  // how the recurrence runs on them (see LstmKernel)
};

// Gradients are ACCUMULATED (+=) into these.
struct LstmLayerGrads {
  float* w_ih = nullptr;
  float* w_hh = nullptr;
  float* bias = nullptr;
  float* w_hr = nullptr;
};

// A grow-only f32 buffer (64-byte aligned through Tensor) on one device; reallocates only when
// asked for more or for another device. CUDA: allocated on the current stream, so a buffer is
// best used on the stream it was first allocated on.
class FloatBuffer {
 public:
  float* ensure(int64_t n, Device device = Device::cpu());
  float* data() const { return tensor_.defined() ? tensor_.data<float>() : nullptr; }
  int64_t capacity() const { return tensor_.defined() ? tensor_.numel() : 0; }

 private:
  Tensor tensor_;
};

// The persistent kernels' plan for (C, P, device), computed once, and their scratch.
struct LstmPersistentState {
  LstmpPersistentPlan plan;
  int64_t cell = 0, proj = 0;
  Device device = Device::cpu();
  bool planned = false;
  FloatBuffer scratch;  // lstmp_persistent_scratch_bytes + 256 (aligned up to 256 bytes)
};

// Scratch and saved activations of one layer, allocated on first use and reused: after the
// first call with the largest (T, B), forward and backward allocate nothing. Training mode
// keeps what backward needs; backward consumes it (it overwrites the gates with dZ in place), so
// every backward needs its own training-mode forward.
class LstmLayerWorkspace {
 public:
  int64_t bytes() const;  // memory held

 private:
  friend void lstm_layer_forward(const LstmLayerShape&, const LstmLayerWeights&, int64_t,
                                 int64_t, const float*, const float*, const float*, float*,
                                 float*, float*, LstmLayerWorkspace*, bool);
  friend void lstm_layer_backward(const LstmLayerShape&, const LstmLayerWeights&, int64_t,
                                  int64_t, const float*, const float*, LstmLayerWorkspace&,
                                  const float*, float*, const LstmLayerGrads&);

  FloatBuffer gates_;  // [T, B, 4C]: z, then activated gates (training), then dZ (backward)
  FloatBuffer c_;      // training [T, B, C] clipped cell states; inference [2, B, C] ping-pong
  FloatBuffer c_raw_;  // [T, B, C] pre-clip cell states (training with cell_clip > 0)
  FloatBuffer m_;      // training [T, B, C]; inference [B, C] (projection only)
  FloatBuffer r_;      // [T, B, P] pre-clip projections (training with proj_clip > 0)
  FloatBuffer h0_, c0_;  // [B, H], [B, C] copies of the initial state (training)
  FloatBuffer dr_;     // [T, B, P] gradient w.r.t. the pre-clip projection (backward)
  FloatBuffer dm_;     // [B, C]
  FloatBuffer dc_;     // [B, C] cell-state gradient carried backwards in time
  FloatBuffer ones_;   // [T * B] for the bias-gradient GEMM
  // GEMMs reading bf16 (CUDA at kBf16): bf16 copies of W_ih, W_hh and W_hr (packed, at
  // weights_bf16_offsets_), made by each forward from the weights it reads and used by its
  // GEMMs and by the backward that consumes it, instead of a conversion per GEMM (W_hh and W_hr
  // at every time step). A copy never outlives the forward that made it, so it cannot be older
  // than the weights: the next forward (after the optimizer step) makes a new one. fp32 / tf32
  // / CPU: never allocated.
  Tensor weights_bf16_;
  int64_t weights_bf16_offsets_[3] = {0, 0, 0};  // W_ih, W_hh, W_hr, in bf16 elements
  bool has_weights_bf16_ = false;
  LstmPersistentState persistent_;
  int64_t ones_filled_ = 0;
  const float* ones_data_ = nullptr;
  int64_t saved_T_ = 0, saved_B_ = 0;
  bool has_h0_ = false, has_c0_ = false;
  bool ready_for_backward_ = false;
};

// x [T, B, in]; h0 [B, H] and c0 [B, C] (nullptr = zeros) -> y [T, B, H], h_last [B, H] and
// c_last [B, C] (each nullable; they may alias h0 / c0 for state carrying).
// training = true keeps the activations backward needs in `ws`; false saves nothing.
// ws == nullptr (inference only) uses a temporary workspace: convenient, but allocates per call.
void lstm_layer_forward(const LstmLayerShape& shape, const LstmLayerWeights& weights, int64_t T,
                        int64_t B, const float* x, const float* h0, const float* c0, float* y,
                        float* h_last, float* c_last, LstmLayerWorkspace* ws, bool training);

// Backward of the last training forward that used `ws`, with the same x and y it read/wrote.
// dy [T, B, H] -> dx [T, B, in] (overwritten; nullable to skip) and grads += dW_ih, dW_hh, db,
// dW_hr (w_hr only with projection). Throws if `ws` holds no matching training forward.
void lstm_layer_backward(const LstmLayerShape& shape, const LstmLayerWeights& weights, int64_t T,
                         int64_t B, const float* x, const float* y, LstmLayerWorkspace& ws,
                         const float* dy, float* dx, const LstmLayerGrads& grads);

// Checks dimensions and weights; throws elmo::Error naming what is wrong.
void check_lstm_layer_shape(const LstmLayerShape& shape, const char* where);

}  // namespace elmo
