// Chunked full softmax on the CPU or one CUDA device: one code path over runtime/gemm.h,
// kernels/full_softmax.h and kernels/pointwise.h, with every buffer on the calls' device.
#include "model/full_softmax.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/pointwise.h"
#include "runtime/error.h"
#include "runtime/gemm.h"

namespace elmo {

namespace {

double* f64(const Tensor& t) { return reinterpret_cast<double*>(t.data<int64_t>()); }

void ensure(Tensor& t, int64_t n, DType dtype, Device device) {
  n = std::max<int64_t>(n, 1);
  if (!t.defined() || t.numel() < n || !(t.device() == device))
    t = Tensor::empty({n}, dtype, device);
}

void check_inputs(int64_t vocab, int64_t dim, const int32_t* targets, int64_t n, int64_t chunk,
                  Device device) {
  ELMO_CHECK(vocab > 0 && dim > 0, "full softmax: vocab ", vocab, " and dim ", dim,
             " must be positive");
  ELMO_CHECK(chunk > 0, "full softmax: chunk size ", chunk, " must be positive");
  ELMO_CHECK(n >= 0, "full softmax: negative row count ", n);
  if (!device.is_cpu()) return;  // device targets: the caller checked its host copy
  for (int64_t r = 0; r < n; ++r)
    ELMO_CHECK(targets[r] == kIgnoreTarget || (targets[r] >= 0 && targets[r] < vocab),
               "full softmax: target ", targets[r], " of row ", r, " is outside [0, ", vocab,
               ") and is not kIgnoreTarget (-1)");
}

// The per-row state of a sweep, on the workspace's device.
struct Rows {
  float* logits;  // [N, chunk]
  float* row_max;
  double* row_sum;
  float* target_logit;
  float* lse;
};

Rows prepare_rows(FullSoftmaxWorkspace& ws, int64_t n, int64_t chunk, Device device) {
  ensure(ws.logits, n * chunk, DType::kF32, device);
  ensure(ws.row_max, n, DType::kF32, device);
  ensure(ws.row_sum, n, DType::kI64, device);
  ensure(ws.target_logit, n, DType::kF32, device);
  ensure(ws.lse, n, DType::kF32, device);
  ensure(ws.result, 2, DType::kI64, device);
  fill_floats(device, ws.row_max.data<float>(), n, -INFINITY);
  ws.row_sum.rows(0, n).zero_();
  fill_floats(device, ws.target_logit.data<float>(), n, 0.0f);
  fill_floats(device, ws.lse.data<float>(), n, 0.0f);
  return {ws.logits.data<float>(), ws.row_max.data<float>(), f64(ws.row_sum),
          ws.target_logit.data<float>(), ws.lse.data<float>()};
}

// Sweep 1: running log-sum-exp over all chunks; fills the lse and ws.result.
// keep_row_nll: also store each row's NLL (ws.row_nll).
Rows lse_sweep(const float* weight, const float* bias, int64_t vocab, int64_t dim, const float* h,
               const int32_t* targets, int64_t n, int64_t chunk, FullSoftmaxWorkspace& ws,
               Device device, bool keep_row_nll) {
  chunk = std::min(chunk, vocab);
  const Rows rows = prepare_rows(ws, n, chunk, device);
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    // logits [N, c] = h [N, P] @ W_c^T [P, c]   (row stride chunk)
    gemm(device, false, true, n, c, dim, 1.0f, h, dim, weight + begin * dim, dim, 0.0f, rows.logits,
         chunk);
    full_softmax_chunk_lse(device, rows.logits, chunk, bias + begin, targets, n, c, begin,
                           rows.row_max, rows.row_sum, rows.target_logit);
  }
  if (keep_row_nll) {
    ensure(ws.row_nll, n, DType::kI64, device);
    ws.row_nll_rows = n;
  }
  full_softmax_finish(device, rows.row_max, rows.row_sum, rows.target_logit, targets, n, rows.lse,
                      f64(ws.result), keep_row_nll ? f64(ws.row_nll) : nullptr);
  return rows;
}

void clear_result(FullSoftmaxWorkspace& ws, Device device) {
  ensure(ws.result, 2, DType::kI64, device);
  ws.result.rows(0, 2).zero_();
}

}  // namespace

NllSum full_softmax_result(const FullSoftmaxWorkspace& ws, Device device) {
  if (!ws.result.defined()) return {};
  ELMO_CHECK(ws.result.device() == device, "full_softmax_result: the workspace is on ",
             ws.result.device().str(), ", not ", device.str());
  const Tensor host = ws.result.rows(0, 2).to(Device::cpu());  // CUDA: synchronises
  const double* values = f64(host);
  return {values[0], static_cast<int64_t>(values[1])};
}

void full_softmax_row_nll(const FullSoftmaxWorkspace& ws, int64_t n, Device device, double* out) {
  if (n == 0) return;
  const int64_t kept = ws.row_nll.defined() ? ws.row_nll_rows : 0;
  ELMO_CHECK(kept >= n && ws.row_nll.device() == device, "full_softmax_row_nll: ", n,
             " rows asked, the last full_softmax_nll call kept ", kept);
  const Tensor host = ws.row_nll.rows(0, n).to(Device::cpu());  // CUDA: synchronises
  std::copy_n(f64(host), n, out);
}

void full_softmax_partial(const float* weight, const float* bias, int64_t rows, int64_t dim,
                          const float* h, const int32_t* local_targets, int64_t n,
                          FullSoftmaxWorkspace& ws, Device device, PartialLse& out) {
  ELMO_CHECK(rows >= 0 && dim > 0 && n >= 0, "full softmax part: rows ", rows, ", dim ", dim,
             ", positions ", n);
  out.max.assign(static_cast<size_t>(n), -INFINITY);
  out.sum.assign(static_cast<size_t>(n), 0.0);
  out.target.assign(static_cast<size_t>(n), 0.0f);
  if (n == 0 || rows == 0) return;
  const int64_t chunk = std::min(kFullSoftmaxChunk, rows);
  const Rows state = prepare_rows(ws, n, chunk, device);
  for (int64_t begin = 0; begin < rows; begin += chunk) {
    const int64_t c = std::min(chunk, rows - begin);
    gemm(device, false, true, n, c, dim, 1.0f, h, dim, weight + begin * dim, dim, 0.0f,
         state.logits, chunk);
    full_softmax_chunk_lse(device, state.logits, chunk, bias + begin, local_targets, n, c, begin,
                           state.row_max, state.row_sum, state.target_logit);
  }
  // The parts to the host (CUDA: synchronises).
  const Tensor max = ws.row_max.rows(0, n).to(Device::cpu());
  const Tensor sum = ws.row_sum.rows(0, n).to(Device::cpu());
  const Tensor target = ws.target_logit.rows(0, n).to(Device::cpu());
  std::copy_n(max.data<float>(), n, out.max.data());
  std::copy_n(f64(sum), n, out.sum.data());
  std::copy_n(target.data<float>(), n, out.target.data());
}

NllSum full_softmax_nll(const float* weight, const float* bias, int64_t vocab, int64_t dim,
                        const float* h, const int32_t* targets, int64_t n, int64_t chunk,
                        FullSoftmaxWorkspace* workspace, Device device) {
  check_inputs(vocab, dim, targets, n, chunk, device);
  if (n == 0) return {};
  FullSoftmaxWorkspace local;
  FullSoftmaxWorkspace& ws = workspace ? *workspace : local;
  lse_sweep(weight, bias, vocab, dim, h, targets, n, chunk, ws, device, /*keep_row_nll=*/true);
  return full_softmax_result(ws, device);
}

void full_softmax_forward_backward_deferred(const float* weight, const float* bias, int64_t vocab,
                                            int64_t dim, const float* h, const int32_t* targets,
                                            int64_t n, float grad_scale, float* dh, float* dweight,
                                            float* dbias, int64_t chunk, FullSoftmaxWorkspace& ws,
                                            Device device) {
  check_inputs(vocab, dim, targets, n, chunk, device);
  if (n == 0) {
    clear_result(ws, device);
    return;
  }
  ELMO_CHECK(dweight != nullptr && dbias != nullptr,
             "full softmax training needs dweight and dbias buffers");
  const Rows rows =
      lse_sweep(weight, bias, vocab, dim, h, targets, n, chunk, ws, device, /*keep_row_nll=*/false);
  chunk = std::min(chunk, vocab);
  if (dh != nullptr) fill_floats(device, dh, n * dim, 0.0f);
  float* dz = rows.logits;  // [N, c] with row stride chunk
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    gemm(device, false, true, n, c, dim, 1.0f, h, dim, weight + begin * dim, dim, 0.0f, dz, chunk);
    full_softmax_chunk_grad(device, dz, chunk, bias + begin, targets, rows.lse, n, c, begin,
                            grad_scale);
    // dh [N, P] += dz [N, c] @ W_c [c, P]
    if (dh != nullptr)
      gemm(device, false, false, n, dim, c, 1.0f, dz, chunk, weight + begin * dim, dim, 1.0f, dh,
           dim);
    // dW_c [c, P] += dz^T [c, N] @ h [N, P]
    gemm(device, true, false, c, dim, n, 1.0f, dz, chunk, h, dim, 1.0f, dweight + begin * dim, dim);
    // db_c [c] += column sums of dz (one accumulator per column, rows in order)
    column_sums_add(device, dz, n, c, chunk, dbias + begin);
  }
}

NllSum full_softmax_forward_backward(const float* weight, const float* bias, int64_t vocab,
                                     int64_t dim, const float* h, const int32_t* targets, int64_t n,
                                     float grad_scale, float* dh, float* dweight, float* dbias,
                                     int64_t chunk, FullSoftmaxWorkspace* workspace,
                                     Device device) {
  FullSoftmaxWorkspace local;
  FullSoftmaxWorkspace& ws = workspace ? *workspace : local;
  full_softmax_forward_backward_deferred(weight, bias, vocab, dim, h, targets, n, grad_scale, dh,
                                         dweight, dbias, chunk, ws, device);
  if (n == 0) return {};
  return full_softmax_result(ws, device);
}

}  // namespace elmo
