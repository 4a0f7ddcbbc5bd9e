// Chunked full softmax on the CPU or one CUDA device: one code path over runtime/gemm.h,
// kernels/full_softmax.h and kernels/pointwise.h; only the per-row finish (lse, NLL sum) differs:
// a host loop on the CPU, one kernel on CUDA.
#include "model/full_softmax.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/pointwise.h"
#include "runtime/cuda_memory.h"
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
  if (device.is_cpu()) {
    if (static_cast<int64_t>(ws.logits.size()) < n * chunk)
      ws.logits.resize(static_cast<size_t>(n * chunk));
    ws.row_max.assign(static_cast<size_t>(n), -INFINITY);
    ws.row_sum.assign(static_cast<size_t>(n), 0.0);
    ws.target_logit.assign(static_cast<size_t>(n), 0.0f);
    ws.lse.assign(static_cast<size_t>(n), 0.0f);
    return {ws.logits.data(), ws.row_max.data(), ws.row_sum.data(), ws.target_logit.data(),
            ws.lse.data()};
  }
  cuda_set_device(device.index);
  if (!ws.d_logits.defined() || ws.d_logits.numel() < n * chunk || !(ws.d_logits.device() == device))
    ws.d_logits = Tensor::empty({std::max<int64_t>(n * chunk, 1)}, DType::kF32, device);
  ensure(ws.d_row_max, n, DType::kF32, device);
  ensure(ws.d_row_sum, n, DType::kI64, device);
  ensure(ws.d_target_logit, n, DType::kF32, device);
  ensure(ws.d_lse, n, DType::kF32, device);
  ensure(ws.d_result, 2, DType::kI64, device);
  fill_floats(device, ws.d_row_max.data<float>(), n, -INFINITY);
  cuda_zero(ws.d_row_sum.raw(), device.index, sizeof(double) * static_cast<size_t>(n));
  fill_floats(device, ws.d_target_logit.data<float>(), n, 0.0f);
  fill_floats(device, ws.d_lse.data<float>(), n, 0.0f);
  return {ws.d_logits.data<float>(), ws.d_row_max.data<float>(), f64(ws.d_row_sum),
          ws.d_target_logit.data<float>(), ws.d_lse.data<float>()};
}

// Sweep 1: running log-sum-exp over all chunks; fills the lse and the result (ws.result on the
// CPU, ws.d_result on CUDA).
// keep_row_nll: also store each row's NLL (ws.row_nll / ws.d_row_nll).
Rows lse_sweep(const float* weight, const float* bias, int64_t vocab, int64_t dim, const float* h,
               const int32_t* targets, int64_t n, int64_t chunk, FullSoftmaxWorkspace& ws,
               Device device, bool keep_row_nll) {
  chunk = std::min(chunk, vocab);
  const Rows rows = prepare_rows(ws, n, chunk, device);
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    // logits [N, c] = h [N, P] @ W_c^T [P, c]   (row stride chunk)
    gemm(device, false, true, n, c, dim, 1.0f, h, dim, weight + begin * dim, dim, 0.0f,
         rows.logits, chunk);
    (device.is_cpu() ? full_softmax_chunk_lse_cpu : full_softmax_chunk_lse_cuda)(
        rows.logits, chunk, bias + begin, targets, n, c, begin, rows.row_max, rows.row_sum,
        rows.target_logit);
  }
  if (!device.is_cpu()) {
    if (keep_row_nll) ensure(ws.d_row_nll, n, DType::kI64, device);
    full_softmax_finish_cuda(rows.row_max, rows.row_sum, rows.target_logit, targets, n, rows.lse,
                             f64(ws.d_result), keep_row_nll ? f64(ws.d_row_nll) : nullptr);
    return rows;
  }
  if (keep_row_nll) ws.row_nll.assign(static_cast<size_t>(n), std::nan(""));
  NllSum out;
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] < 0) continue;
    const double lse = static_cast<double>(ws.row_max[r]) + std::log(ws.row_sum[r]);
    ws.lse[r] = static_cast<float>(lse);
    const double nll = lse - ws.target_logit[r];
    if (keep_row_nll) ws.row_nll[r] = nll;
    out.nll += nll;
    ++out.count;
  }
  ws.result = out;
  return rows;
}

void clear_result(FullSoftmaxWorkspace& ws, Device device) {
  ws.result = {};
  if (device.is_cpu()) return;
  ensure(ws.d_result, 2, DType::kI64, device);
  cuda_zero(ws.d_result.raw(), device.index, 2 * sizeof(double));
}

}  // namespace

NllSum full_softmax_result(const FullSoftmaxWorkspace& ws, Device device) {
  if (device.is_cpu()) return ws.result;
  double values[2] = {0.0, 0.0};
  cuda_copy(values, Device::cpu(), ws.d_result.raw(), device, sizeof values);  // synchronises
  return {values[0], static_cast<int64_t>(values[1])};
}

void full_softmax_row_nll(const FullSoftmaxWorkspace& ws, int64_t n, Device device, double* out) {
  if (n == 0) return;
  if (device.is_cpu()) {
    ELMO_CHECK(static_cast<int64_t>(ws.row_nll.size()) >= n, "full_softmax_row_nll: ", n,
               " rows asked, the last full_softmax_nll call kept ", ws.row_nll.size());
    std::copy_n(ws.row_nll.begin(), n, out);
    return;
  }
  ELMO_CHECK(ws.d_row_nll.defined() && ws.d_row_nll.numel() >= n, "full_softmax_row_nll: ", n,
             " rows asked, the last full_softmax_nll call kept fewer");
  cuda_copy(out, Device::cpu(), ws.d_row_nll.raw(), device,
            sizeof(double) * static_cast<size_t>(n));
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
    (device.is_cpu() ? full_softmax_chunk_grad_cpu : full_softmax_chunk_grad_cuda)(
        dz, chunk, bias + begin, targets, rows.lse, n, c, begin, grad_scale);
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
