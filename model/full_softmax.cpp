#include "model/full_softmax.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/cpu_blas.h"
#include "runtime/error.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {

void check_inputs(int64_t vocab, int64_t dim, const int32_t* targets, int64_t n, int64_t chunk) {
  ELMO_CHECK(vocab > 0 && dim > 0, "full softmax: vocab ", vocab, " and dim ", dim,
             " must be positive");
  ELMO_CHECK(chunk > 0, "full softmax: chunk size ", chunk, " must be positive");
  ELMO_CHECK(n >= 0, "full softmax: negative row count ", n);
  for (int64_t r = 0; r < n; ++r)
    ELMO_CHECK(targets[r] == kIgnoreTarget || (targets[r] >= 0 && targets[r] < vocab),
               "full softmax: target ", targets[r], " of row ", r, " is outside [0, ", vocab,
               ") and is not kIgnoreTarget (-1)");
}

// Sweep 1: running log-sum-exp over all chunks; fills ws.lse and returns the NLL sum.
NllSum lse_sweep(const float* weight, const float* bias, int64_t vocab, int64_t dim, const float* h,
                 const int32_t* targets, int64_t n, int64_t chunk, FullSoftmaxWorkspace& ws) {
  chunk = std::min(chunk, vocab);
  if (static_cast<int64_t>(ws.logits.size()) < n * chunk)
    ws.logits.resize(static_cast<size_t>(n * chunk));
  ws.row_max.assign(static_cast<size_t>(n), -INFINITY);
  ws.row_sum.assign(static_cast<size_t>(n), 0.0);
  ws.target_logit.assign(static_cast<size_t>(n), 0.0f);
  ws.lse.assign(static_cast<size_t>(n), 0.0f);
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    // logits [N, c] = h [N, P] @ W_c^T [P, c]   (row stride chunk)
    cpu_gemm(false, true, n, c, dim, 1.0f, h, dim, weight + begin * dim, dim, 0.0f,
             ws.logits.data(), chunk);
    full_softmax_chunk_lse_cpu(ws.logits.data(), chunk, bias + begin, targets, n, c, begin,
                               ws.row_max.data(), ws.row_sum.data(), ws.target_logit.data());
  }
  NllSum out;
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] < 0) continue;
    const double lse = static_cast<double>(ws.row_max[r]) + std::log(ws.row_sum[r]);
    ws.lse[r] = static_cast<float>(lse);
    out.nll += lse - ws.target_logit[r];
    ++out.count;
  }
  return out;
}

}  // namespace

NllSum full_softmax_nll(const float* weight, const float* bias, int64_t vocab, int64_t dim,
                        const float* h, const int32_t* targets, int64_t n, int64_t chunk,
                        FullSoftmaxWorkspace* workspace) {
  check_inputs(vocab, dim, targets, n, chunk);
  if (n == 0) return {};
  FullSoftmaxWorkspace local;
  FullSoftmaxWorkspace& ws = workspace ? *workspace : local;
  return lse_sweep(weight, bias, vocab, dim, h, targets, n, chunk, ws);
}

NllSum full_softmax_forward_backward(const float* weight, const float* bias, int64_t vocab,
                                     int64_t dim, const float* h, const int32_t* targets, int64_t n,
                                     float grad_scale, float* dh, float* dweight, float* dbias,
                                     int64_t chunk, FullSoftmaxWorkspace* workspace) {
  check_inputs(vocab, dim, targets, n, chunk);
  if (n == 0) return {};
  ELMO_CHECK(dweight != nullptr && dbias != nullptr,
             "full softmax training needs dweight and dbias buffers");
  FullSoftmaxWorkspace local;
  FullSoftmaxWorkspace& ws = workspace ? *workspace : local;
  const NllSum out = lse_sweep(weight, bias, vocab, dim, h, targets, n, chunk, ws);
  chunk = std::min(chunk, vocab);
  if (dh != nullptr) std::memset(dh, 0, sizeof(float) * static_cast<size_t>(n * dim));
  float* dz = ws.logits.data();  // [N, c] with row stride chunk
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    cpu_gemm(false, true, n, c, dim, 1.0f, h, dim, weight + begin * dim, dim, 0.0f, dz, chunk);
    full_softmax_chunk_grad_cpu(dz, chunk, bias + begin, targets, ws.lse.data(), n, c, begin,
                                grad_scale);
    // dh [N, P] += dz [N, c] @ W_c [c, P]
    if (dh != nullptr)
      cpu_gemm(false, false, n, dim, c, 1.0f, dz, chunk, weight + begin * dim, dim, 1.0f, dh, dim);
    // dW_c [c, P] += dz^T [c, N] @ h [N, P]
    cpu_gemm(true, false, c, dim, n, 1.0f, dz, chunk, h, dim, 1.0f, dweight + begin * dim, dim);
    // db_c [c] += column sums of dz (threads own columns, rows in order)
    parallel_for(c, 1024, [&](int64_t j0, int64_t j1) {
      for (int64_t r = 0; r < n; ++r) {
        const float* row = dz + r * chunk;
        for (int64_t j = j0; j < j1; ++j) dbias[begin + j] += row[j];
      }
    });
  }
  return out;
}

}  // namespace elmo
