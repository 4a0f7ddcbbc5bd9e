// CUDA twins of the chunked full-softmax row kernels (see kernels/full_softmax.h): one block
// per row, block-wide max and sum reductions, the merge into the running state by thread 0.
#include "kernels/block_reduce.cuh"
#include "kernels/full_softmax.h"
#include "kernels/launchers.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

constexpr int kRowThreads = 256;


__global__ void chunk_lse_kernel(const float* __restrict__ logits, int64_t ld,
                                 const float* __restrict__ bias,
                                 const int32_t* __restrict__ targets, int64_t chunk, int64_t begin,
                                 float* __restrict__ row_max, double* __restrict__ row_sum,
                                 float* __restrict__ target_logit) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const int64_t t = targets[r];
  if (t < 0) return;                 // uniform over the block
  const float* l = logits + r * ld;  // [C]
  float max = -INFINITY;
  for (int64_t j = threadIdx.x; j < chunk; j += blockDim.x) max = fmaxf(max, l[j] + bias[j]);
  max = block_reduce<true>(max, shared);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < chunk; j += blockDim.x) sum += expf(l[j] + bias[j] - max);
  sum = block_reduce<false>(sum, shared);
  if (threadIdx.x == 0) {
    log_sum_exp_merge(row_max[r], row_sum[r], max, static_cast<double>(sum));
    if (t >= begin && t < begin + chunk) target_logit[r] = l[t - begin] + bias[t - begin];
  }
}

__global__ void chunk_grad_kernel(float* __restrict__ logits, int64_t ld,
                                  const float* __restrict__ bias,
                                  const int32_t* __restrict__ targets,
                                  const float* __restrict__ lse, int64_t chunk, int64_t begin,
                                  float grad_scale) {
  const int64_t r = blockIdx.x;
  const int64_t t = targets[r];
  float* l = logits + r * ld;  // [C]
  if (t < 0) {
    for (int64_t j = threadIdx.x; j < chunk; j += blockDim.x) l[j] = 0.0f;
    return;
  }
  const float row_lse = lse[r];
  for (int64_t j = threadIdx.x; j < chunk; j += blockDim.x)
    l[j] = full_softmax_grad(l[j] + bias[j], row_lse, begin + j == t, grad_scale);
}

__global__ void finish_kernel(const float* __restrict__ row_max, const double* __restrict__ row_sum,
                              const float* __restrict__ target_logit,
                              const int32_t* __restrict__ targets, int64_t rows,
                              float* __restrict__ lse, double* __restrict__ result,
                              double* __restrict__ row_nll) {
  __shared__ double nll_shared[kRowThreads];
  __shared__ double count_shared[kRowThreads];
  double nll = 0.0, count = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    if (targets[r] < 0) {
      if (row_nll) row_nll[r] = nan("");
      continue;
    }
    const double row_lse = static_cast<double>(row_max[r]) + log(row_sum[r]);
    lse[r] = static_cast<float>(row_lse);
    const double row = row_lse - static_cast<double>(target_logit[r]);
    if (row_nll) row_nll[r] = row;
    nll += row;
    count += 1.0;
  }
  nll_shared[threadIdx.x] = nll;
  count_shared[threadIdx.x] = count;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      nll_shared[threadIdx.x] += nll_shared[threadIdx.x + stride];
      count_shared[threadIdx.x] += count_shared[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    result[0] = nll_shared[0];
    result[1] = count_shared[0];
  }
}

}  // namespace

void full_softmax_finish_cuda(const float* row_max, const double* row_sum,
                              const float* target_logit, const int32_t* targets, int64_t rows,
                              float* lse, double* result, double* row_nll) {
  finish_kernel<<<1, kRowThreads, 0, current_stream()>>>(row_max, row_sum, target_logit, targets,
                                                         rows, lse, result, row_nll);
  ELMO_CUDA_CHECK_LAUNCH();
}

void full_softmax_chunk_lse_cuda(const float* logits, int64_t ld, const float* bias,
                                 const int32_t* targets, int64_t rows, int64_t chunk, int64_t begin,
                                 float* row_max, double* row_sum, float* target_logit) {
  if (rows == 0 || chunk == 0) return;
  chunk_lse_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, current_stream()>>>(
      logits, ld, bias, targets, chunk, begin, row_max, row_sum, target_logit);
  ELMO_CUDA_CHECK_LAUNCH();
}

void full_softmax_chunk_grad_cuda(float* logits, int64_t ld, const float* bias,
                                  const int32_t* targets, const float* lse, int64_t rows,
                                  int64_t chunk, int64_t begin, float grad_scale) {
  if (rows == 0 || chunk == 0) return;
  chunk_grad_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, current_stream()>>>(
      logits, ld, bias, targets, lse, chunk, begin, grad_scale);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
