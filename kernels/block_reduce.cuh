// Warp- and block-wide reductions shared by the row kernels (sampled and full softmax).
// Include only from .cu files.
#pragma once

#include <cfloat>

namespace elmo {

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Block-wide max (kMax; identity -FLT_MAX, the masked-logit value) or sum; every thread gets
// the result. shared: [32]. Every thread of the block must call it.
template <bool kMax>
__device__ float block_reduce(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float identity = kMax ? -FLT_MAX : 0.0f;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // shared may still be read from the previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? shared[lane] : identity;
    v = kMax ? warp_max(v) : warp_sum(v);
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  return shared[0];
}

}  // namespace elmo
