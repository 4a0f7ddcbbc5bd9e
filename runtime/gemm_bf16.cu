// The f32 -> bf16 operand conversion of the kBf16 GEMM precision (runtime/gemm.h).
#include <cuda_bf16.h>

#include "runtime/cuda_check.h"
#include "runtime/gemm.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
__global__ void to_bf16_kernel(const float* __restrict__ src, int64_t rows, int64_t cols,
                               int64_t ld, __nv_bfloat16* __restrict__ dst) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // r * cols + c
  if (e >= rows * cols) return;
  const int64_t r = e / cols, c = e - r * cols;
  dst[e] = __float2bfloat16_rn(src[r * ld + c]);
}
}  // namespace

void convert_to_bf16_cuda(const float* src, int64_t rows, int64_t cols, int64_t ld, void* dst) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  to_bf16_kernel<<<blocks, kThreads, 0, current_stream()>>>(src, rows, cols, ld,
                                                            static_cast<__nv_bfloat16*>(dst));
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
