// bench_lstmp: one LSTMP layer direction, forward + backward, on a CUDA device: ours
// (model/lstm_layer.h, the path training takes on CUDA devices) against cuDNN's LSTM with
// recurrent projection (cudnnRNNForward, cudnnRNNBackwardData_v8, cudnnRNNBackwardWeights_v8)
// in the same invocation, on the same weights, inputs, initial state and output gradient.
//
// Mapping onto cuDNN (one layer, unidirectional, CUDNN_LSTM, CUDNN_RNN_ALGO_STANDARD,
// CUDNN_LINEAR_INPUT, CUDNN_RNN_SINGLE_INP_BIAS: one bias vector like ours):
//   weight space, pseudo-layer 0: linLayerID 0..3 = input matrices of gates i, f, g, o, each
//   [C, in] row-major, with the bias [C]; 4..7 = recurrent matrices [C, H] (no bias in this
//   mode); 8 = the projection [P, C] (projSize = P; projSize = C turns projection off). These are
//   our own gate blocks i, f, g, o of weight_ih [4C, in], weight_hh [4C, H], bias [4C] and
//   weight_hr [P, C] (DESIGN.md §5, PyTorch's layout), copied block by block; the matrix shapes
//   cuDNN reports are checked against them, and the forward/backward comparison below checks
//   the mapping itself (a swapped gate is O(1) off).
//   data: CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_UNPACKED with every sequence T long = our [T, B, vec];
//   hx [1, B, H], cx [1, B, C]; no dhy/dcy (zero), dhx/dcx not computed (ours stops at h0/c0).
//   precision: fp32 = FLOAT data, FLOAT math, CUDNN_FMA_MATH (no tensor cores);
//   tf32 = FLOAT data, FLOAT math, CUDNN_DEFAULT_MATH (TF32 tensor cores allowed, unless
//   NVIDIA_TF32_OVERRIDE=0, which the JSON records);
//   bf16 = BFLOAT16 data, FLOAT math, CUDNN_TENSOR_OP_MATH; when cuDNN refuses bf16 RNNs the
//   case falls back to HALF data (labelled in the table and JSON). Ours keeps f32 tensors and
//   rounds GEMM operands to bf16 (runtime/gemm.h); cuDNN stores everything in 16 bits.
// Clipping: cuDNN has an LSTM cell clip (cudnnRNNSetClip_v9) but no projection clip, so the
// compared runs have both clips off; "clipped ms" is ours with cell_clip = proj_clip = 3 (the
// bilm-tf setting), timed only.
//
// FLOPs per fwd+bwd = 3 * 2*T*B*(4C*(in + H) + C*P): the forward GEMMs (input, recurrent,
// projection) and twice that in backward (data and weight gradients); pointwise work and the
// bias reduction are not counted. TFLOP/s = FLOPs / median time.
// Timed per repetition, for both: zeroing the weight gradients (ours accumulates, cuDNN's
// backward-weights adds) + training forward + backward data + backward weights.
//
//   ./build/bench/bench_lstmp [--shapes elmo,ptb] [--precisions fp32,tf32,bf16] [--reps 20]
//                             [--quick] [--json bench/results/lstmp.json]
//
// Exit codes: gpu_bench.h (77 = no CUDA device, nothing measured).
// What it is not: a benchmark of the two-direction stack, dropout or residuals (model/lstm_stack).
#include <cudnn.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_kernels.h"
#include "bench/bench_lstmp_cases.h"
#include "bench/gpu_bench.h"
#include "model/lstm_layer.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_memory.h"
#include "runtime/gemm.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace elmo::bench {
namespace {

// A cuDNN call that failed: the status is kept so the bf16 case can tell "not supported".
struct CudnnFailure : Error {
  cudnnStatus_t status;
  CudnnFailure(cudnnStatus_t s, const std::string& message) : Error(message), status(s) {}
};

#define BENCH_CUDNN_CHECK(expr)                                                              \
  do {                                                                                       \
    const cudnnStatus_t bench_status_ = (expr);                                              \
    if (bench_status_ != CUDNN_STATUS_SUCCESS)                                               \
      throw CudnnFailure(bench_status_, ::elmo::str(#expr, " failed at ", __FILE__, ":",     \
                                                    __LINE__, ": ",                          \
                                                    cudnnGetErrorString(bench_status_)));    \
  } while (0)

// Tolerances on max|ours - cuDNN| / max|cuDNN| per output (forward outputs, then gradients).
//   fp32: both sides do f32 GEMMs (K up to 4096) and f32 pointwise math in different orders and
//     with different exp/tanh implementations: ~1e-6 relative per step; the recurrence is
//     contractive at these weight scales (uniform +-1/sqrt(C)), so T steps do not amplify it;
//     the weight gradients sum T*B <= 5120 rows. 1e-4 / 5e-4 leave a wide margin; a swapped
//     gate block, a missing h0 term or a wrong transpose is >= 1e-2 of the maximum. fp32 is the
//     check of the mapping; tf32/bf16 only guard against gross errors.
//   tf32: GEMM operands rounded to 10-bit mantissas (2^-11 relative) on both sides, possibly
//     with different rounding (cuDNN may convert differently from cuBLAS), accumulated over K
//     and carried through T steps: 2e-2 / 3e-2.
//   bf16: cuDNN keeps y, dx, the states and the gradients in bf16 (2^-9 relative each store)
//     while ours keeps f32 activations: 5e-2 / 8e-2.
struct Tolerance {
  double forward, gradient;
};
Tolerance tolerance_for(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::kFp32: return {1e-4, 5e-4};
    case GemmPrecision::kTf32: return {2e-2, 3e-2};
    case GemmPrecision::kBf16: return {5e-2, 8e-2};
  }
  return {0, 0};
}

constexpr uint64_t kSeedWih = 31, kSeedWhh = 32, kSeedBias = 33, kSeedWhr = 34, kSeedX = 35,
                   kSeedH0 = 36, kSeedC0 = 37, kSeedDy = 38;

// The problem in our layout, f32, on the device.
struct Problem {
  LayerShape s;
  Tensor w_ih, w_hh, bias, w_hr, x, h0, c0, dy;
  explicit Problem(const LayerShape& shape) : s(shape) {
    const Device gpu = Device::cuda(0);
    const int64_t G = 4 * s.C, H = s.H();
    const float k = 1.0f / std::sqrt(static_cast<float>(s.C));  // PyTorch's LSTM init range
    auto filled = [&](int64_t n, uint64_t seed, float lo, float hi) {
      Tensor t = Tensor::empty({n}, DType::kF32, gpu);
      fill_hash_uniform_cuda(t.data<float>(), n, seed, lo, hi);
      return t;
    };
    w_ih = filled(G * s.in, kSeedWih, -k, k);
    w_hh = filled(G * H, kSeedWhh, -k, k);
    bias = filled(G, kSeedBias, -k, k);
    if (s.P > 0) w_hr = filled(s.P * s.C, kSeedWhr, -k, k);
    x = filled(s.T * s.B * s.in, kSeedX, -1.0f, 1.0f);
    h0 = filled(s.B * H, kSeedH0, -0.5f, 0.5f);
    c0 = filled(s.B * s.C, kSeedC0, -0.5f, 0.5f);
    dy = filled(s.T * s.B * H, kSeedDy, -1.0f, 1.0f);
  }
};

// Outputs of one fwd+bwd in our layout, downloaded as f32.
struct Outputs {
  std::vector<float> y, h_last, c_last, dx, g_ih, g_hh, g_b, g_hr;
};

// --- ours -----------------------------------------------------------------------------------

class Ours {
 public:
  Ours(const Problem& p, bool clipped, LstmKernel kernel) : p_(p), kernel_(kernel) {
    const Device gpu = Device::cuda(0);
    const LayerShape& s = p.s;
    const int64_t G = 4 * s.C, H = s.H();
    shape_.input_dim = s.in;
    shape_.cell_size = s.C;
    shape_.proj_dim = s.P;
    shape_.cell_clip = clipped ? 3.0f : 0.0f;
    shape_.proj_clip = clipped && s.P > 0 ? 3.0f : 0.0f;
    y_ = Tensor::empty({s.T * s.B * H}, DType::kF32, gpu);
    h_last_ = Tensor::empty({s.B * H}, DType::kF32, gpu);
    c_last_ = Tensor::empty({s.B * s.C}, DType::kF32, gpu);
    dx_ = Tensor::empty({s.T * s.B * s.in}, DType::kF32, gpu);
    g_ih_ = Tensor::empty({G * s.in}, DType::kF32, gpu);
    g_hh_ = Tensor::empty({G * H}, DType::kF32, gpu);
    g_b_ = Tensor::empty({G}, DType::kF32, gpu);
    if (s.P > 0) g_hr_ = Tensor::empty({s.P * s.C}, DType::kF32, gpu);
  }

  void run() {
    const cudaStream_t stream = current_stream();
    for (Tensor* g : {&g_ih_, &g_hh_, &g_b_, &g_hr_})
      if (g->defined()) ELMO_CUDA_CHECK(cudaMemsetAsync(g->raw(), 0, g->nbytes(), stream));
    LstmLayerWeights w{p_.w_ih.data<float>(), p_.w_hh.data<float>(), p_.bias.data<float>(),
                       p_.s.P > 0 ? p_.w_hr.data<float>() : nullptr, Device::cuda(0)};
    w.kernel = kernel_;
    const LstmLayerGrads g{g_ih_.data<float>(), g_hh_.data<float>(), g_b_.data<float>(),
                           p_.s.P > 0 ? g_hr_.data<float>() : nullptr};
    lstm_layer_forward(shape_, w, p_.s.T, p_.s.B, p_.x.data<float>(), p_.h0.data<float>(),
                       p_.c0.data<float>(), y_.data<float>(), h_last_.data<float>(),
                       c_last_.data<float>(), &ws_, true);
    lstm_layer_backward(shape_, w, p_.s.T, p_.s.B, p_.x.data<float>(), y_.data<float>(), ws_,
                        p_.dy.data<float>(), dx_.data<float>(), g);
  }

  Outputs outputs() const {
    Outputs o{download(y_), download(h_last_), download(c_last_), download(dx_),
              download(g_ih_), download(g_hh_), download(g_b_), {}};
    if (g_hr_.defined()) o.g_hr = download(g_hr_);
    return o;
  }

 private:
  static std::vector<float> download(const Tensor& t) {
    return download_floats(t.data<float>(), t.numel());
  }
  const Problem& p_;
  LstmKernel kernel_;
  LstmLayerShape shape_;
  LstmLayerWorkspace ws_;
  Tensor y_, h_last_, c_last_, dx_, g_ih_, g_hh_, g_b_, g_hr_;
};

// --- cuDNN ----------------------------------------------------------------------------------

class CudnnLstm {
 public:
  // data: CUDNN_DATA_FLOAT, CUDNN_DATA_BFLOAT16 or CUDNN_DATA_HALF.
  CudnnLstm(const Problem& p, cudnnDataType_t data, cudnnMathType_t math) : p_(p), data_(data) {
    try {
      setup(math);
    } catch (...) {
      release();  // the destructor does not run for a throwing constructor
      throw;
    }
  }
  ~CudnnLstm() { release(); }
  CudnnLstm(const CudnnLstm&) = delete;
  CudnnLstm& operator=(const CudnnLstm&) = delete;

 private:
  void setup(cudnnMathType_t math) {
    const Problem& p = p_;
    const cudnnDataType_t data = data_;
    const LayerShape& s = p.s;
    const Device gpu = Device::cuda(0);
    elem_ = data == CUDNN_DATA_FLOAT ? 4 : 2;
    BENCH_CUDNN_CHECK(cudnnCreate(&handle_));
    BENCH_CUDNN_CHECK(cudnnSetStream(handle_, current_stream()));
    BENCH_CUDNN_CHECK(cudnnCreateDropoutDescriptor(&dropout_));
    BENCH_CUDNN_CHECK(cudnnSetDropoutDescriptor(dropout_, handle_, 0.0f, nullptr, 0, 0));
    BENCH_CUDNN_CHECK(cudnnCreateRNNDescriptor(&rnn_));
    BENCH_CUDNN_CHECK(cudnnSetRNNDescriptor_v8(
        rnn_, CUDNN_RNN_ALGO_STANDARD, CUDNN_LSTM, CUDNN_RNN_SINGLE_INP_BIAS, CUDNN_UNIDIRECTIONAL,
        CUDNN_LINEAR_INPUT, data, CUDNN_DATA_FLOAT, math, static_cast<int32_t>(s.in),
        static_cast<int32_t>(s.C), static_cast<int32_t>(s.H()), 1, dropout_,
        CUDNN_RNN_PADDED_IO_ENABLED));
    const std::vector<int> lengths(static_cast<size_t>(s.B), static_cast<int>(s.T));
    BENCH_CUDNN_CHECK(cudnnCreateRNNDataDescriptor(&x_desc_));
    BENCH_CUDNN_CHECK(cudnnCreateRNNDataDescriptor(&y_desc_));
    BENCH_CUDNN_CHECK(cudnnSetRNNDataDescriptor(
        x_desc_, data, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_UNPACKED, static_cast<int>(s.T),
        static_cast<int>(s.B), static_cast<int>(s.in), lengths.data(), nullptr));
    BENCH_CUDNN_CHECK(cudnnSetRNNDataDescriptor(
        y_desc_, data, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_UNPACKED, static_cast<int>(s.T),
        static_cast<int>(s.B), static_cast<int>(s.H()), lengths.data(), nullptr));
    BENCH_CUDNN_CHECK(cudnnCreateTensorDescriptor(&h_desc_));
    BENCH_CUDNN_CHECK(cudnnCreateTensorDescriptor(&c_desc_));
    set_3d(h_desc_, s.B, s.H());
    set_3d(c_desc_, s.B, s.C);

    size_t weight_bytes = 0, work_bytes = 0, reserve_bytes = 0;
    BENCH_CUDNN_CHECK(cudnnGetRNNWeightSpaceSize(handle_, rnn_, &weight_bytes));
    BENCH_CUDNN_CHECK(cudnnGetRNNTempSpaceSizes(handle_, rnn_, CUDNN_FWD_MODE_TRAINING, x_desc_,
                                                &work_bytes, &reserve_bytes));
    weight_bytes_ = weight_bytes;
    work_bytes_ = work_bytes;
    reserve_bytes_ = reserve_bytes;
    auto bytes = [&](size_t n) { return Tensor::empty({static_cast<int64_t>(std::max<size_t>(n, 1))}, DType::kU8, gpu); };
    weights_ = bytes(weight_bytes);
    dweights_ = bytes(weight_bytes);
    work_ = bytes(work_bytes);
    reserve_ = bytes(reserve_bytes);
    cuda_zero(weights_.raw(), 0, weights_.nbytes());  // unmapped parts (if any) stay zero
    seq_lengths_ = Tensor::empty({s.B}, DType::kI32, gpu);
    cuda_copy(seq_lengths_.raw(), gpu, lengths.data(), Device::cpu(), sizeof(int) * lengths.size());

    const int64_t H = s.H();
    x_ = bytes(elem_ * s.T * s.B * s.in);
    y_ = bytes(elem_ * s.T * s.B * H);
    dy_ = bytes(elem_ * s.T * s.B * H);
    dx_ = bytes(elem_ * s.T * s.B * s.in);
    hx_ = bytes(elem_ * s.B * H);
    cx_ = bytes(elem_ * s.B * s.C);
    hy_ = bytes(elem_ * s.B * H);
    cy_ = bytes(elem_ * s.B * s.C);
    to_cudnn(p.x, x_.raw());
    to_cudnn(p.dy, dy_.raw());
    to_cudnn(p.h0, hx_.raw());
    to_cudnn(p.c0, cx_.raw());
    // Our weights into cuDNN's weight space, gate block by gate block.
    for (int id = 0; id < linear_layers(); ++id) {
      const Block b = block(id, weights_.raw());
      to_cudnn(matrix_source(id), b.matrix, b.rows * b.cols);
      if (b.bias && id < 4) to_cudnn(p.bias.data<float>() + id * s.C, b.bias, s.C);
      else if (b.bias && id < 8)  // a recurrent bias, if this cuDNN keeps one anyway: zero
        ELMO_CUDA_CHECK(cudaMemsetAsync(b.bias, 0, elem_ * s.C, current_stream()));
    }
  }

  void release() noexcept {
    if (h_desc_) cudnnDestroyTensorDescriptor(h_desc_);
    if (c_desc_) cudnnDestroyTensorDescriptor(c_desc_);
    if (x_desc_) cudnnDestroyRNNDataDescriptor(x_desc_);
    if (y_desc_) cudnnDestroyRNNDataDescriptor(y_desc_);
    if (rnn_) cudnnDestroyRNNDescriptor(rnn_);
    if (dropout_) cudnnDestroyDropoutDescriptor(dropout_);
    if (handle_) cudnnDestroy(handle_);
    h_desc_ = c_desc_ = nullptr;
    x_desc_ = y_desc_ = nullptr;
    rnn_ = nullptr;
    dropout_ = nullptr;
    handle_ = nullptr;
  }

 public:
  void run() {
    ELMO_CUDA_CHECK(cudaMemsetAsync(dweights_.raw(), 0, weight_bytes_, current_stream()));
    const int32_t* lengths = seq_lengths_.data<int32_t>();
    BENCH_CUDNN_CHECK(cudnnRNNForward(handle_, rnn_, CUDNN_FWD_MODE_TRAINING, lengths, x_desc_,
                                      x_.raw(), y_desc_, y_.raw(), h_desc_, hx_.raw(), hy_.raw(),
                                      c_desc_, cx_.raw(), cy_.raw(), weight_bytes_,
                                      weights_.raw(), work_bytes_, work_.raw(), reserve_bytes_,
                                      reserve_.raw()));
    BENCH_CUDNN_CHECK(cudnnRNNBackwardData_v8(
        handle_, rnn_, lengths, y_desc_, y_.raw(), dy_.raw(), x_desc_, dx_.raw(), h_desc_,
        hx_.raw(), nullptr, nullptr, c_desc_, cx_.raw(), nullptr, nullptr, weight_bytes_,
        weights_.raw(), work_bytes_, work_.raw(), reserve_bytes_, reserve_.raw()));
    BENCH_CUDNN_CHECK(cudnnRNNBackwardWeights_v8(
        handle_, rnn_, CUDNN_WGRAD_MODE_ADD, lengths, x_desc_, x_.raw(), h_desc_, hx_.raw(),
        y_desc_, y_.raw(), weight_bytes_, dweights_.raw(), work_bytes_, work_.raw(),
        reserve_bytes_, reserve_.raw()));
  }

  // cuDNN's results in our layout, f32.
  Outputs outputs() {
    const LayerShape& s = p_.s;
    const int64_t G = 4 * s.C, H = s.H();
    Outputs o;
    o.y = from_cudnn(y_.raw(), s.T * s.B * H);
    o.h_last = from_cudnn(hy_.raw(), s.B * H);
    o.c_last = from_cudnn(cy_.raw(), s.B * s.C);
    o.dx = from_cudnn(dx_.raw(), s.T * s.B * s.in);
    o.g_ih.resize(static_cast<size_t>(G * s.in));
    o.g_hh.resize(static_cast<size_t>(G * H));
    o.g_b.resize(static_cast<size_t>(G));
    if (s.P > 0) o.g_hr.resize(static_cast<size_t>(s.P * s.C));
    for (int id = 0; id < linear_layers(); ++id) {
      const Block b = block(id, dweights_.raw());
      const std::vector<float> m = from_cudnn(b.matrix, b.rows * b.cols);
      float* dst = id < 4 ? o.g_ih.data() + id * s.C * s.in
                   : id < 8 ? o.g_hh.data() + (id - 4) * s.C * H
                            : o.g_hr.data();
      std::copy(m.begin(), m.end(), dst);
      if (b.bias && id < 4) {
        const std::vector<float> bias = from_cudnn(b.bias, s.C);
        std::copy(bias.begin(), bias.end(), o.g_b.data() + id * s.C);
      }
    }
    return o;
  }

  size_t weight_bytes() const { return weight_bytes_; }
  size_t work_bytes() const { return work_bytes_; }
  size_t reserve_bytes() const { return reserve_bytes_; }

 private:
  struct Block {
    void* matrix = nullptr;
    void* bias = nullptr;
    int64_t rows = 0, cols = 0;
  };

  int linear_layers() const { return p_.s.P > 0 ? 9 : 8; }

  // Our f32 source of linear layer `id` (its rows x cols block).
  const float* matrix_source(int id) const {
    const LayerShape& s = p_.s;
    if (id < 4) return p_.w_ih.data<float>() + id * s.C * s.in;
    if (id < 8) return p_.w_hh.data<float>() + (id - 4) * s.C * s.H();
    return p_.w_hr.data<float>();
  }

  // Where linear layer `id` lives in `space` (weights or their gradients); checks its shape.
  Block block(int id, void* space) {
    const LayerShape& s = p_.s;
    cudnnTensorDescriptor_t m_desc = nullptr, b_desc = nullptr;
    BENCH_CUDNN_CHECK(cudnnCreateTensorDescriptor(&m_desc));
    BENCH_CUDNN_CHECK(cudnnCreateTensorDescriptor(&b_desc));
    Block b;
    try {
      BENCH_CUDNN_CHECK(cudnnGetRNNWeightParams(handle_, rnn_, 0, weight_bytes_, space, id, m_desc,
                                                &b.matrix, b_desc, &b.bias));
      cudnnDataType_t type;
      int dims = 0, dim[8] = {}, stride[8] = {};
      BENCH_CUDNN_CHECK(cudnnGetTensorNdDescriptor(m_desc, 8, &type, &dims, dim, stride));
      // Expected: [1, rows, cols] packed row-major. Accept any unit dims around rows and cols,
      // but demand that order and a packed layout: anything else is reported, never guessed.
      std::vector<int64_t> sizes;
      bool packed = dims > 0 && stride[dims - 1] == 1;
      int64_t expected_stride = 1;
      std::string shown;
      for (int k = dims - 1; k >= 0; --k) {
        if (dim[k] > 1) {
          packed &= stride[k] == expected_stride;
          sizes.insert(sizes.begin(), dim[k]);
        }
        expected_stride *= dim[k];
        shown = str(dim[k], "/", stride[k], k + 1 < dims ? ", " : "", shown);
      }
      const int64_t want_rows = id < 8 ? s.C : s.P;
      const int64_t want_cols = id < 4 ? s.in : id < 8 ? s.H() : s.C;
      ELMO_CHECK(b.matrix != nullptr && packed &&
                     sizes == std::vector<int64_t>({want_rows, want_cols}),
                 "cuDNN linear layer ", id, " has dims/strides [", shown,
                 "]; expected a packed row-major [", want_rows, ", ", want_cols, "] matrix");
      b.rows = want_rows;
      b.cols = want_cols;
    } catch (...) {
      cudnnDestroyTensorDescriptor(m_desc);
      cudnnDestroyTensorDescriptor(b_desc);
      throw;
    }
    cudnnDestroyTensorDescriptor(m_desc);
    cudnnDestroyTensorDescriptor(b_desc);
    return b;
  }

  void set_3d(cudnnTensorDescriptor_t desc, int64_t rows, int64_t width) {
    const int dim[3] = {1, static_cast<int>(rows), static_cast<int>(width)};
    const int stride[3] = {static_cast<int>(rows * width), static_cast<int>(width), 1};
    BENCH_CUDNN_CHECK(cudnnSetTensorNdDescriptor(desc, data_, 3, dim, stride));
  }

  Half16 half_type() const { return data_ == CUDNN_DATA_BFLOAT16 ? Half16::kBf16 : Half16::kFp16; }

  void to_cudnn(const Tensor& src, void* dst) { to_cudnn(src.data<float>(), dst, src.numel()); }
  void to_cudnn(const float* src, void* dst, int64_t n) {
    if (data_ == CUDNN_DATA_FLOAT)
      ELMO_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToDevice,
                                      current_stream()));
    else f32_to_16_cuda(half_type(), src, n, dst);
  }
  std::vector<float> from_cudnn(const void* src, int64_t n) {
    if (data_ == CUDNN_DATA_FLOAT) return download_floats(static_cast<const float*>(src), n);
    Tensor tmp = Tensor::empty({n}, DType::kF32, Device::cuda(0));
    f16_to_32_cuda(half_type(), src, n, tmp.data<float>());
    return download_floats(tmp.data<float>(), n);
  }

  const Problem& p_;
  cudnnDataType_t data_;
  int64_t elem_ = 4;
  cudnnHandle_t handle_ = nullptr;
  cudnnDropoutDescriptor_t dropout_ = nullptr;
  cudnnRNNDescriptor_t rnn_ = nullptr;
  cudnnRNNDataDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  cudnnTensorDescriptor_t h_desc_ = nullptr, c_desc_ = nullptr;
  size_t weight_bytes_ = 0, work_bytes_ = 0, reserve_bytes_ = 0;
  Tensor weights_, dweights_, work_, reserve_, seq_lengths_;
  Tensor x_, y_, dy_, dx_, hx_, cx_, hy_, cy_;
};

const char* cudnn_type_name(cudnnDataType_t t) {
  switch (t) {
    case CUDNN_DATA_FLOAT: return "float";
    case CUDNN_DATA_BFLOAT16: return "bfloat16";
    case CUDNN_DATA_HALF: return "half";
    default: return "other";
  }
}

struct Options : CommonOptions {  // --reps --warmup --quick --json (gpu_bench.h)
  Options() { json = "bench/results/lstmp.json"; }
  std::vector<std::string> shape_sets = {"elmo", "ptb"};
  std::vector<std::string> precisions = {"fp32", "tf32", "bf16"};
  bool clipped = true;
  std::string kernel = "standard";  // our recurrence: standard | persistent (model/lstm_layer.h)
};

struct CaseResult {
  nlohmann::json json;
  bool ok = true;
};

CaseResult run_case(const Options& o, const LayerShape& s, GemmPrecision precision) {
  GemmPrecisionGuard guard(precision);
  const Problem problem(s);
  // cuDNN side: precision -> data type and math type (header comment).
  cudnnDataType_t data = CUDNN_DATA_FLOAT;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  if (precision == GemmPrecision::kTf32) math = CUDNN_DEFAULT_MATH;
  if (precision == GemmPrecision::kBf16) {
    data = CUDNN_DATA_BFLOAT16;
    math = CUDNN_TENSOR_OP_MATH;
  }
  std::string fallback;
  std::unique_ptr<CudnnLstm> cudnn;
  Outputs ref;
  for (;;) {
    try {
      cudnn = std::make_unique<CudnnLstm>(problem, data, math);
      cudnn->run();
      ref = cudnn->outputs();
      break;
    } catch (const CudnnFailure& e) {
      if (data != CUDNN_DATA_BFLOAT16 || !cudnn_refused(e.status)) throw;
      fallback = str("cuDNN refused bf16 data (", e.what(), "); reference runs with half data");
      std::printf("    note: %s\n", fallback.c_str());
      cudnn.reset();
      data = CUDNN_DATA_HALF;
    }
  }
  const LstmKernel kernel = parse_lstm_kernel(o.kernel);
  Ours ours(problem, false, kernel);
  ours.run();
  const Outputs mine = ours.outputs();

  // The persistent path holds W_hh and W_hr in bf16 whatever the GEMM precision: bf16 bounds.
  const Tolerance tol =
      tolerance_for(kernel == LstmKernel::kPersistent ? GemmPrecision::kBf16 : precision);
  struct Pair {
    const char* name;
    const std::vector<float>* ours;
    const std::vector<float>* ref;
    double tol;
  };
  std::vector<Pair> pairs = {{"y", &mine.y, &ref.y, tol.forward},
                             {"h_last", &mine.h_last, &ref.h_last, tol.forward},
                             {"c_last", &mine.c_last, &ref.c_last, tol.forward},
                             {"dx", &mine.dx, &ref.dx, tol.gradient},
                             {"dW_ih", &mine.g_ih, &ref.g_ih, tol.gradient},
                             {"dW_hh", &mine.g_hh, &ref.g_hh, tol.gradient},
                             {"db", &mine.g_b, &ref.g_b, tol.gradient}};
  if (s.P > 0) pairs.push_back({"dW_hr", &mine.g_hr, &ref.g_hr, tol.gradient});
  CaseResult result;
  nlohmann::json checks = nlohmann::json::array();
  for (const Pair& pair : pairs) {
    const Diff d = compare_outputs(pair.name, *pair.ours, *pair.ref, pair.tol);
    std::printf("    check %s\n", diff_line(d, *pair.ours, *pair.ref).c_str());
    result.ok &= d.ok();
    checks.push_back(diff_json(d));
  }

  const cudaStream_t stream = current_stream();
  const Timing t_ours = time_on_stream(stream, o.warmup, o.reps, [&] { ours.run(); });
  const Timing t_cudnn = time_on_stream(stream, o.warmup, o.reps, [&] { cudnn->run(); });
  Timing t_clipped;
  if (o.clipped) {
    Ours clipped(problem, true, kernel);
    t_clipped = time_on_stream(stream, o.warmup, o.reps, [&] { clipped.run(); });
  }
  const double flops = s.flops();
  const double tf_ours = flops / (t_ours.median_ms * 1e-3) / 1e12;
  const double tf_cudnn = flops / (t_cudnn.median_ms * 1e-3) / 1e12;
  const std::string prec = str(gemm_precision_name(precision), data == CUDNN_DATA_HALF ? "*" : "");
  char clip_ms[32] = "-";
  if (o.clipped) std::snprintf(clip_ms, sizeof clip_ms, "%.3f", t_clipped.median_ms);
  std::printf("%-10s %4lld %3lld %5lld %5lld %4lld %5s %9.3f %9.3f %7.3f %8.1f %8.1f %9s %6s\n",
              s.name.c_str(), static_cast<long long>(s.B), static_cast<long long>(s.T),
              static_cast<long long>(s.in), static_cast<long long>(s.C),
              static_cast<long long>(s.P), prec.c_str(), t_ours.median_ms, t_cudnn.median_ms,
              t_ours.median_ms / t_cudnn.median_ms, tf_ours, tf_cudnn,
              clip_ms,
              result.ok ? "ok" : "WRONG");
  result.json = {{"shape", s.name},
                 {"B", s.B},
                 {"T", s.T},
                 {"input", s.in},
                 {"cell", s.C},
                 {"proj", s.P},
                 {"precision", gemm_precision_name(precision)},
                 {"cudnn_data_type", cudnn_type_name(data)},
                 {"cudnn_math_type", math == CUDNN_FMA_MATH       ? "CUDNN_FMA_MATH"
                                     : math == CUDNN_DEFAULT_MATH ? "CUDNN_DEFAULT_MATH"
                                                                  : "CUDNN_TENSOR_OP_MATH"},
                 {"cudnn_fallback", fallback},
                 {"cudnn_weight_bytes", cudnn->weight_bytes()},
                 {"cudnn_workspace_bytes", cudnn->work_bytes()},
                 {"cudnn_reserve_bytes", cudnn->reserve_bytes()},
                 {"flops", flops},
                 {"ours_ms", t_ours.median_ms},
                 {"ours_min_ms", t_ours.min_ms},
                 {"ours_max_ms", t_ours.max_ms},
                 {"cudnn_ms", t_cudnn.median_ms},
                 {"cudnn_min_ms", t_cudnn.min_ms},
                 {"cudnn_max_ms", t_cudnn.max_ms},
                 {"ratio_ours_over_cudnn", t_ours.median_ms / t_cudnn.median_ms},
                 {"ours_TFLOPs", tf_ours},
                 {"cudnn_TFLOPs", tf_cudnn},
                 {"reps", o.reps},
                 {"checks", checks},
                 {"ok", result.ok}};
  if (o.clipped) {
    result.json["ours_clipped_ms"] = t_clipped.median_ms;
    result.json["ours_clipped_note"] = "cell_clip = proj_clip = 3, timed only (cuDNN: no clip)";
  }
  return result;
}

int run(const Options& o) {
  std::vector<GemmPrecision> precisions;  // flags first: a bad one is an error even without a GPU
  for (const std::string& p : o.precisions) precisions.push_back(parse_gemm_precision(p));
  const std::vector<LayerShape> shapes = shapes_for(o.shape_sets, o.quick);
  nlohmann::json device;
  if (const int rc = open_device("bench_lstmp", &device)) return rc;
  device["cudnn_version_runtime"] = cudnnGetVersion();
  device["cudnn_version_compiled"] = CUDNN_VERSION;
  std::printf("LSTMP layer, one direction, fwd+bwd: ours (model/lstm_layer) vs cuDNN %zu "
              "(CUDNN_LSTM, projSize, ALGO_STANDARD); %s\n",
              cudnnGetVersion(), device["name"].get<std::string>().c_str());
  std::printf("%-10s %4s %3s %5s %5s %4s %5s %9s %9s %7s %8s %8s %9s %6s\n", "shape", "B", "T",
              "in", "C", "P", "prec", "ours ms", "cuDNN ms", "ours/cu", "ours TF", "cuDNN TF",
              "clip ms", "check");
  nlohmann::json cases = nlohmann::json::array(), skipped = nlohmann::json::array();
  bool ok = true;
  const auto supported = [](int64_t C, int64_t P) { return lstmp_persistent_supported(C, P, 0); };
  for (const LayerShape& s : shapes) {
    // The persistent kernels need a projection (and a shape this device fits): the other
    // shapes are left out, saying why, instead of failing the whole run.
    const std::string skip = o.kernel == "persistent" ? persistent_skip_reason(s, supported) : "";
    if (!skip.empty()) {
      std::printf("%-10s skipped: %s\n", s.name.c_str(), skip.c_str());
      skipped.push_back({{"shape", s.name}, {"cell", s.C}, {"proj", s.P}, {"reason", skip}});
      continue;
    }
    for (GemmPrecision p : precisions) {
      CaseResult r = run_case(o, s, p);
      ok &= r.ok;
      cases.push_back(std::move(r.json));
    }
  }
  if (cases.empty()) {
    std::fprintf(stderr,
                 "bench_lstmp: nothing to measure: every shape was skipped (--kernel %s "
                 "needs a projection: use --shapes elmo)\n",
                 o.kernel.c_str());
    return kExitError;
  }
  std::printf("(* = cuDNN ran with half data: it refused bf16; TF = TFLOP/s from the FLOP model "
              "3*2*T*B*(4C*(in+H) + C*P))\n");
  const nlohmann::json out = {
      {"benchmark", "lstmp_layer"},
      {"device", device},
      {"ours", "model/lstm_layer: lstm_layer_forward (training) + lstm_layer_backward"},
      {"ours_kernel", o.kernel},
      {"reference", "cuDNN cudnnRNNForward + cudnnRNNBackwardData_v8 + cudnnRNNBackwardWeights_v8"},
      {"flop_model", "3*2*T*B*(4C*(in+H) + C*P)"},
      {"timed", "zero weight grads + forward (training) + backward data + backward weights"},
      {"clips", "off in the compared runs (cuDNN has no projection clip)"},
      {"cases", cases},
      {"skipped", skipped}};
  return finish("bench_lstmp", o, out, ok,
                "an output differs from cuDNN's beyond its tolerance (see the check lines)");
}

}  // namespace
}  // namespace elmo::bench

int main(int argc, char** argv) {
  elmo::bench::Options o;
  CLI::App app{"One LSTMP layer direction fwd+bwd on the GPU: ours vs cuDNN"};
  app.add_option("--shapes", o.shape_sets, "shape sets: elmo (B 128/256, T 20, in 512, C 4096, "
                 "P 512), ptb (C 200/650/1500, no projection)")
      ->delimiter(',');
  app.add_option("--precisions", o.precisions, "GEMM precisions: fp32, tf32, bf16")
      ->delimiter(',');
  elmo::bench::add_common_flags(app, o, "small shapes (one per set), 3 reps");
  app.add_flag("!--no-clipped", o.clipped, "skip timing ours with clips on");
  app.add_option("--kernel", o.kernel,
                 "our recurrence: standard (per-step GEMMs) or persistent (one cooperative launch; "
                 "needs a projection: shapes without one, the ptb set, are skipped)")
      ->check(CLI::IsMember({"standard", "persistent"}));
  return elmo::bench::bench_main("bench_lstmp", app, o, argc, argv,
                                 [&] { return elmo::bench::run(o); });
}
