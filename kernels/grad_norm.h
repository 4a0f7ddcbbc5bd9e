// Sum of squares of several f32 buffers, accumulated in double: the global gradient norm is
// sqrt(sum_of_squares(every dense gradient and every sparse gradient row buffer)).
//
// Deterministic: each buffer is cut into fixed chunks of kSumSquaresChunk elements, every
// chunk is summed sequentially in double, and the chunk sums are added in buffer/chunk order.
// The result therefore depends neither on the thread count nor on the order threads finish.
// The CUDA twin does the same in one pass over all buffers (one block per chunk), then adds
// the chunk sums in a fixed tree order; it agrees with the CPU to double rounding (~1e-15).
// What it is not: the clip itself (model/optimizer.h scales the gradients).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace elmo {

constexpr int64_t kSumSquaresChunk = 4096;

struct FloatSpan {
  const float* data = nullptr;
  int64_t n = 0;
};

// Entry point: f32 tensors, all on one device (undefined or empty tensors are skipped). CUDA:
// the sum comes back to the host (one synchronisation).
double sum_of_squares(const std::vector<Tensor>& tensors);

}  // namespace elmo
