// The plain sampled-softmax reference of bench_sampled_softmax; see sampled_softmax_reference.h.
#include <algorithm>
#include <cfloat>

#include "bench/bench_kernels.h"
#include "bench/sampled_softmax_reference.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo::bench {

namespace {
constexpr int kThreads = 256;

// Block-wide reduction through shared memory (a plain tree; blockDim.x == kThreads).
template <bool kMax>
__device__ float block_reduce_tree(float v, float* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half)
      shared[threadIdx.x] = kMax ? fmaxf(shared[threadIdx.x], shared[threadIdx.x + half])
                                 : shared[threadIdx.x] + shared[threadIdx.x + half];
    __syncthreads();
  }
  const float result = shared[0];
  __syncthreads();
  return result;
}

// z_true[r] = h_r . W_t[r] + b_t[r] - log E(t_r); one block per row.
__global__ void true_logits_kernel(const float* h, const float* wt, const float* bt,
                                   const float* target_log_expected, int64_t dim, float* z_true) {
  __shared__ float shared[kThreads];
  const int64_t r = blockIdx.x;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < dim; c += kThreads) sum += h[r * dim + c] * wt[r * dim + c];
  sum = block_reduce_tree<false>(sum, shared);
  if (threadIdx.x == 0) z_true[r] = sum + bt[r] - target_log_expected[r];
}

// Softmax cross-entropy over [true, samples...] of one row per block, in place on logits.
__global__ void softmax_xent_kernel(float* logits, float* z_true_then_dtrue, const float* bs,
                                    const float* sample_log_expected, const int32_t* sample_ids,
                                    const int32_t* targets, int64_t samples, float scale,
                                    float* loss) {
  __shared__ float shared[kThreads];
  const int64_t r = blockIdx.x;
  float* row = logits + r * samples;
  const int32_t target = targets[r];
  const float zt = z_true_then_dtrue[r];
  float max = zt;
  for (int64_t j = threadIdx.x; j < samples; j += kThreads)
    if (sample_ids[j] != target) max = fmaxf(max, row[j] + bs[j] - sample_log_expected[j]);
  max = block_reduce_tree<true>(max, shared);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < samples; j += kThreads)
    if (sample_ids[j] != target) sum += expf(row[j] + bs[j] - sample_log_expected[j] - max);
  sum = block_reduce_tree<false>(sum, shared) + expf(zt - max);
  const float lse = max + logf(sum);
  for (int64_t j = threadIdx.x; j < samples; j += kThreads)
    row[j] = sample_ids[j] == target
                 ? 0.0f
                 : scale * expf(row[j] + bs[j] - sample_log_expected[j] - lse);
  if (threadIdx.x == 0) {
    loss[r] = lse - zt;
    z_true_then_dtrue[r] = scale * (expf(zt - lse) - 1.0f);
  }
}

// dh[r, c] += dtrue[r] * W_t[r, c]
__global__ void add_target_rows_kernel(float* dh, const float* dtrue, const float* wt,
                                       int64_t rows, int64_t dim) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * dim;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dh[e] += dtrue[e / dim] * wt[e];
}

// db_s[j] = sum_r dz[r, j]; one thread per column.
__global__ void column_sums_kernel(const float* dz, int64_t rows, int64_t cols, float* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  float sum = 0.0f;
  for (int64_t r = 0; r < rows; ++r) sum += dz[r * cols + j];
  out[j] = sum;
}

// grad_u[sample_slot[j]] += dW_s[j]; grad_ub[sample_slot[j]] += db_s[j]
__global__ void scatter_samples_kernel(const float* dws, const float* dbs, const int32_t* slot,
                                       int64_t samples, int64_t dim, float* grad_u,
                                       float* grad_ub) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < samples * dim; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e / dim, c = e - j * dim;
    atomicAdd(grad_u + static_cast<int64_t>(slot[j]) * dim + c, dws[e]);
    if (c == 0) atomicAdd(grad_ub + slot[j], dbs[j]);
  }
}

// grad_u[target_slot[r]] += dtrue[r] * h[r]; grad_ub[target_slot[r]] += dtrue[r]
__global__ void scatter_targets_kernel(const float* h, const float* dtrue, const int32_t* slot,
                                       int64_t rows, int64_t dim, float* grad_u, float* grad_ub) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * dim;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / dim, c = e - r * dim;
    atomicAdd(grad_u + static_cast<int64_t>(slot[r]) * dim + c, dtrue[r] * h[e]);
    if (c == 0) atomicAdd(grad_ub + slot[r], dtrue[r]);
  }
}

unsigned grid(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(str("sampled softmax reference: ", what, " failed: ", cublasGetStatusString(status)));
}
}  // namespace

SampledSoftmaxReference::SampledSoftmaxReference(const SampledSoftmaxProblem& problem,
                                                 GemmPrecision precision)
    : p_(problem), precision_(precision) {
  const Device gpu = Device::cuda(0);
  const int64_t s = p_.samples, n = p_.rows, d = p_.dim, u = p_.touched;
  check_cublas(cublasCreate(&handle_), "cublasCreate");
  ws_ = Tensor::empty({s, d}, DType::kF32, gpu);
  bs_ = Tensor::empty({s}, DType::kF32, gpu);
  wt_ = Tensor::empty({n, d}, DType::kF32, gpu);
  bt_ = Tensor::empty({n}, DType::kF32, gpu);
  logits_ = Tensor::empty({n, s}, DType::kF32, gpu);
  z_true_ = Tensor::empty({n}, DType::kF32, gpu);
  loss_ = Tensor::empty({n}, DType::kF32, gpu);
  dh_ = Tensor::empty({n, d}, DType::kF32, gpu);
  dws_ = Tensor::empty({s, d}, DType::kF32, gpu);
  dbs_ = Tensor::empty({s}, DType::kF32, gpu);
  grad_u_ = Tensor::empty({u, d}, DType::kF32, gpu);
  grad_ub_ = Tensor::empty({u}, DType::kF32, gpu);
  if (precision_ == GemmPrecision::kBf16) {
    // The largest operands: logits/dz [N, S] and W_s or h.
    const int64_t biggest = std::max(n * s, std::max(s * d, n * d));
    a16_ = Tensor::empty({biggest}, DType::kBF16, gpu);
    b16_ = Tensor::empty({biggest}, DType::kBF16, gpu);
  }
}

SampledSoftmaxReference::~SampledSoftmaxReference() {
  if (handle_) cublasDestroy(handle_);
}

void SampledSoftmaxReference::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                                   const float* a, int64_t lda, const float* b, int64_t ldb,
                                   float* c, int64_t ldc) {
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const float alpha = 1.0f, beta = 0.0f;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const void* a_ptr = a;
  const void* b_ptr = b;
  cudaDataType_t in_type = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if (precision_ == GemmPrecision::kTf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  if (precision_ == GemmPrecision::kBf16) {
    // Operands are dense here (ld == row length), so one conversion of the whole array each.
    const int64_t a_elems = (trans_a ? k : m) * lda, b_elems = (trans_b ? n : k) * ldb;
    f32_to_16_cuda(Half16::kBf16, a, a_elems, a16_.raw());
    f32_to_16_cuda(Half16::kBf16, b, b_elems, b16_.raw());
    a_ptr = a16_.raw();
    b_ptr = b16_.raw();
    in_type = CUDA_R_16BF;
  }
  check_cublas(cublasSetStream(handle_, current_stream()), "cublasSetStream");
  check_cublas(cublasGemmEx(handle_, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                            static_cast<int>(k), &alpha, b_ptr, in_type, static_cast<int>(ldb),
                            a_ptr, in_type, static_cast<int>(lda), &beta, c, CUDA_R_32F,
                            static_cast<int>(ldc), compute, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

void SampledSoftmaxReference::run() {
  const cudaStream_t stream = current_stream();
  const int64_t s = p_.samples, n = p_.rows, d = p_.dim, u = p_.touched;
  float* ws = ws_.data<float>();
  float* wt = wt_.data<float>();
  float* logits = logits_.data<float>();
  float* z_true = z_true_.data<float>();
  gather_rows_cuda(p_.weight, d, p_.sample_ids, s, ws);
  gather_rows_cuda(p_.bias, 1, p_.sample_ids, s, bs_.data<float>());
  gather_rows_cuda(p_.weight, d, p_.targets, n, wt);
  gather_rows_cuda(p_.bias, 1, p_.targets, n, bt_.data<float>());
  gemm(false, true, n, s, d, p_.h, d, ws, d, logits, s);  // logits [N, S] = h W_s^T
  true_logits_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      p_.h, wt, bt_.data<float>(), p_.target_log_expected, d, z_true);
  ELMO_CUDA_CHECK_LAUNCH();
  softmax_xent_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      logits, z_true, bs_.data<float>(), p_.sample_log_expected, p_.sample_ids, p_.targets, s,
      p_.grad_scale, loss_.data<float>());
  ELMO_CUDA_CHECK_LAUNCH();
  gemm(false, false, n, d, s, logits, s, ws, d, dh_.data<float>(), d);  // dh = dz W_s
  add_target_rows_kernel<<<grid(n * d), kThreads, 0, stream>>>(dh_.data<float>(), z_true, wt, n,
                                                                d);
  ELMO_CUDA_CHECK_LAUNCH();
  gemm(true, false, s, d, n, logits, s, p_.h, d, dws_.data<float>(), d);  // dW_s = dz^T h
  column_sums_kernel<<<grid(s), kThreads, 0, stream>>>(logits, n, s, dbs_.data<float>());
  ELMO_CUDA_CHECK_LAUNCH();
  ELMO_CUDA_CHECK(cudaMemsetAsync(grad_u_.raw(), 0, sizeof(float) * u * d, stream));
  ELMO_CUDA_CHECK(cudaMemsetAsync(grad_ub_.raw(), 0, sizeof(float) * u, stream));
  scatter_samples_kernel<<<grid(s * d), kThreads, 0, stream>>>(
      dws_.data<float>(), dbs_.data<float>(), p_.sample_slot, s, d, grad_u_.data<float>(),
      grad_ub_.data<float>());
  ELMO_CUDA_CHECK_LAUNCH();
  scatter_targets_kernel<<<grid(n * d), kThreads, 0, stream>>>(
      p_.h, z_true, p_.target_slot, n, d, grad_u_.data<float>(), grad_ub_.data<float>());
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo::bench
