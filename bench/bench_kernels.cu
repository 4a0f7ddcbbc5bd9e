// Device helpers of the GPU benchmarks: hashed fills and 16-bit conversions (bench_kernels.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "bench/bench_kernels.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo::bench {

namespace {
constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  // Grid-stride loops below: cap the grid, every thread loops.
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

__global__ void fill_hash_uniform_kernel(float* p, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = hash_uniform(seed, static_cast<uint64_t>(i), lo, hi);
}

__global__ void gather_rows_kernel(const float* __restrict__ table, int64_t dim,
                                   const int32_t* __restrict__ ids, int64_t n,
                                   float* __restrict__ out) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n * dim;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = e / dim, c = e - k * dim;
    out[e] = table[static_cast<int64_t>(ids[k]) * dim + c];
  }
}

template <typename T>
__global__ void to_16_kernel(const float* src, int64_t n, T* dst) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) dst[i] = __float2bfloat16_rn(src[i]);
    else dst[i] = __float2half_rn(src[i]);
  }
}

template <typename T>
__global__ void to_32_kernel(const T* src, int64_t n, float* dst) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) dst[i] = __bfloat162float(src[i]);
    else dst[i] = __half2float(src[i]);
  }
}
}  // namespace

void fill_hash_uniform_cuda(float* p, int64_t n, uint64_t seed, float lo, float hi) {
  if (n <= 0) return;
  fill_hash_uniform_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(p, n, seed, lo, hi);
  ELMO_CUDA_CHECK_LAUNCH();
}

void gather_rows_cuda(const float* table, int64_t dim, const int32_t* ids, int64_t n, float* out) {
  if (n <= 0 || dim <= 0) return;
  gather_rows_kernel<<<blocks_for(n * dim), kThreads, 0, current_stream()>>>(table, dim, ids, n,
                                                                             out);
  ELMO_CUDA_CHECK_LAUNCH();
}

void f32_to_16_cuda(Half16 type, const float* src, int64_t n, void* dst) {
  if (n <= 0) return;
  if (type == Half16::kBf16)
    to_16_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(
        src, n, static_cast<__nv_bfloat16*>(dst));
  else
    to_16_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(src, n,
                                                                   static_cast<__half*>(dst));
  ELMO_CUDA_CHECK_LAUNCH();
}

void f16_to_32_cuda(Half16 type, const void* src, int64_t n, float* dst) {
  if (n <= 0) return;
  if (type == Half16::kBf16)
    to_32_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(
        static_cast<const __nv_bfloat16*>(src), n, dst);
  else
    to_32_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(
        static_cast<const __half*>(src), n, dst);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo::bench
