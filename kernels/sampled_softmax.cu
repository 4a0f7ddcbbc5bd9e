// CUDA twins of the sampled-softmax row kernels (see kernels/sampled_softmax.h):
// target logits one warp per row; the fused masked log-sum-exp / loss / gradient pass one
// block per row with block-wide max and sum reductions. Same ELMO_HD math as the CPU twin.
#include <algorithm>

#include "kernels/block_reduce.cuh"
#include "kernels/launchers.h"
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
  corrections_kernel<<<blocks, kRowThreads, 0, current_stream()>>>(bias, sample_ids, log_expected,
                                                                   samples, correction);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
