// CUDA twins of the sampled-softmax row kernels (see kernels/sampled_softmax.h):
// target logits one warp per row; the fused masked log-sum-exp / loss / gradient pass one
// block per row with block-wide max and sum reductions. Same ELMO_HD math as the CPU twin.
#include <algorithm>

#include "kernels/block_reduce.cuh"
#include "kernels/sampled_softmax.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

constexpr int kRowThreads = 256;
constexpr int kWarpsPerBlock = 8;

__global__ void target_logits_kernel(const float* __restrict__ weight,
                                     const float* __restrict__ bias, const float* __restrict__ h,
                                     const int32_t* __restrict__ targets, int64_t rows, int64_t dim,
                                     int64_t tries, int64_t vocab, float* __restrict__ true_logits,
                                     const int32_t* __restrict__ target_rows) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const int32_t t = targets[r];
  const int64_t row = target_rows ? target_rows[r] : t;
  const float* w = weight + row * dim;  // [dim]
  const float* x = h + r * dim;         // [dim]
  float dot = 0.0f;
  for (int64_t d = lane; d < dim; d += 32) dot += x[d] * w[d];
  dot = warp_sum(dot);
  if (lane == 0)
    true_logits[r] = dot + bias[row] - static_cast<float>(log_expected_count(t, tries, vocab));
}

__global__ void rows_kernel(float* __restrict__ logits, float* __restrict__ true_logits,
                            const float* __restrict__ correction,
                            const int32_t* __restrict__ sample_ids,
                            const int32_t* __restrict__ targets, float* __restrict__ loss,
                            int64_t samples, float grad_scale, bool grad) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const int32_t t = targets[r];
  const float z_true = true_logits[r];
  float* row = logits + r * samples;  // [S]
  float max = z_true;
  for (int64_t j = threadIdx.x; j < samples; j += blockDim.x) {
    const float z = sampled_softmax_logit(row[j], correction[j], sample_ids[j], t);
    if (grad) row[j] = z;
    max = fmaxf(max, z);
  }
  max = block_reduce<true>(max, shared);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < samples; j += blockDim.x) {
    const float z = grad ? row[j] : sampled_softmax_logit(row[j], correction[j], sample_ids[j], t);
    const float e = sampled_softmax_exp(z, max);
    if (grad) row[j] = e;
    sum += e;
  }
  const float e_true = expf(z_true - max);
  sum = block_reduce<false>(sum, shared) + e_true;
  if (threadIdx.x == 0) loss[r] = max + logf(sum) - z_true;
  if (!grad) return;
  const float scale = grad_scale / sum;
  for (int64_t j = threadIdx.x; j < samples; j += blockDim.x) row[j] *= scale;
  if (threadIdx.x == 0) true_logits[r] = grad_scale * (e_true / sum - 1.0f);
}

__global__ void corrections_kernel(const float* __restrict__ bias,
                                   const int32_t* __restrict__ sample_ids,
                                   const float* __restrict__ log_expected, int64_t samples,
                                   float* __restrict__ correction) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < samples) correction[j] = __fsub_rn(bias[sample_ids[j]], log_expected[j]);
}

struct CallTable {
  const float* h[kMaxSampledSoftmaxCalls];
  const float* dtrue[kMaxSampledSoftmaxCalls];
  int64_t begin[kMaxSampledSoftmaxCalls + 1];  // first global position of each call
  int count;
};

// One thread per (touched row u, column c <= dim); column dim is the bias.
__global__ void touched_rows_kernel(CallTable calls, int64_t dim, const int32_t* __restrict__ offsets,
                                    const int32_t* __restrict__ positions,
                                    const int32_t* __restrict__ sample_of_row,
                                    const float* __restrict__ sample_dw,
                                    const double* __restrict__ sample_db,
                                    float* __restrict__ grad_w, float* __restrict__ grad_b) {
  const int64_t u = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c > dim) return;
  const bool bias = c == dim;
  float acc = 0.0f;
  for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) {
    const int64_t p = positions[k];
    int s = 0;
    while (s + 1 < calls.count && p >= calls.begin[s + 1]) ++s;
    const int64_t r = p - calls.begin[s];
    const float g = calls.dtrue[s][r];
    acc = bias ? __fadd_rn(acc, g) : __fadd_rn(acc, __fmul_rn(g, calls.h[s][r * dim + c]));
  }
  const int32_t j = sample_of_row[u];
  if (j >= 0)
    acc = bias ? __fadd_rn(acc, static_cast<float>(sample_db[j]))
               : __fadd_rn(acc, sample_dw[static_cast<int64_t>(j) * dim + c]);
  if (bias)
    grad_b[u] = acc;
  else
    grad_w[u * dim + c] = acc;
}

}  // namespace

void sampled_softmax_target_logits_cuda(const float* weight, const float* bias, const float* h,
                                        const int32_t* targets, int64_t rows, int64_t dim,
                                        int64_t tries, int64_t vocab, float* true_logits,
                                        const int32_t* target_rows) {
  if (rows == 0) return;
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  target_logits_kernel<<<blocks, kWarpsPerBlock * 32, 0, current_stream()>>>(
      weight, bias, h, targets, rows, dim, tries, vocab, true_logits, target_rows);
  ELMO_CUDA_CHECK_LAUNCH();
}

void sampled_softmax_rows_cuda(float* logits, float* true_logits, const float* correction,
                               const int32_t* sample_ids, const int32_t* targets, float* loss,
                               const SampledSoftmaxRowsParams& params) {
  if (params.rows == 0) return;
  rows_kernel<<<static_cast<unsigned>(params.rows), kRowThreads, 0, current_stream()>>>(
      logits, true_logits, correction, sample_ids, targets, loss, params.samples, params.grad_scale,
      params.compute_grad);
  ELMO_CUDA_CHECK_LAUNCH();
}

void sampled_softmax_corrections_cuda(const float* bias, const int32_t* sample_ids,
                                      const float* log_expected, int64_t samples,
                                      float* correction) {
  if (samples <= 0) return;
  const unsigned blocks = static_cast<unsigned>((samples + kRowThreads - 1) / kRowThreads);
  corrections_kernel<<<blocks, kRowThreads, 0, current_stream()>>>(bias, sample_ids,
                                                                   log_expected, samples,
                                                                   correction);
  ELMO_CUDA_CHECK_LAUNCH();
}

void sampled_softmax_touched_rows_cuda(const float* const* h, const float* const* dtrue,
                                       const int64_t* rows, int calls, int64_t dim,
                                       const int32_t* offsets, const int32_t* positions,
                                       const int32_t* sample_of_row, const float* sample_dw,
                                       const double* sample_db, int64_t n_touched,
                                       float* grad_w, float* grad_b) {
  ELMO_CHECK(calls >= 0 && calls <= kMaxSampledSoftmaxCalls, "sampled softmax: ", calls,
             " forward_backward calls in one step (at most ", kMaxSampledSoftmaxCalls,
             " on CUDA)");
  ELMO_CHECK(n_touched < (int64_t{1} << 31), "sampled softmax: ", n_touched, " touched rows");
  if (n_touched == 0) return;
  CallTable table{};
  table.count = calls;
  int64_t total = 0;
  for (int s = 0; s < calls; ++s) {
    table.h[s] = h[s];
    table.dtrue[s] = dtrue[s];
    table.begin[s] = total;
    total += rows[s];
  }
  table.begin[calls] = total;
  const int threads = static_cast<int>(std::min<int64_t>(kRowThreads, (dim + 1 + 31) / 32 * 32));
  const dim3 grid(static_cast<unsigned>(n_touched),
                  static_cast<unsigned>((dim + 1 + threads - 1) / threads));
  touched_rows_kernel<<<grid, threads, 0, current_stream()>>>(
      table, dim, offsets, positions, sample_of_row, sample_dw, sample_db, grad_w, grad_b);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
