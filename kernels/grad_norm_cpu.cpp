// CPU sum of squares over several buffers: fixed chunks, double partials, fixed-order total.
#include <algorithm>
#include <vector>

#include "kernels/grad_norm.h"
#include "kernels/launchers.h"
#include "runtime/parallel.h"

namespace elmo {

double sum_of_squares_cpu(const FloatSpan* buffers, int count) {
  // Chunk table: (buffer, first element) of every chunk, in buffer order.
  struct Chunk {
    const float* data;
    int64_t n;
  };
  std::vector<Chunk> chunks;
  for (int b = 0; b < count; ++b)
    for (int64_t start = 0; start < buffers[b].n; start += kSumSquaresChunk)
      chunks.push_back(
          {buffers[b].data + start, std::min<int64_t>(kSumSquaresChunk, buffers[b].n - start)});
  std::vector<double> partial(chunks.size(), 0.0);
  parallel_for(static_cast<int64_t>(chunks.size()), 4, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      double sum = 0.0;
      const float* x = chunks[k].data;
      for (int64_t e = 0; e < chunks[k].n; ++e) sum += static_cast<double>(x[e]) * x[e];
      partial[k] = sum;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

double sum_of_squares(const std::vector<Tensor>& tensors) {
  std::vector<FloatSpan> spans;
  Device device = Device::cpu();
  bool first = true;
  for (const Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    ELMO_CHECK(t.dtype() == DType::kF32, "sum_of_squares: expected f32 tensors, got ",
               t.describe());
    if (first) device = t.device();
    ELMO_CHECK(t.device() == device, "sum_of_squares: tensors on ", device.str(), " and ",
               t.device().str());
    first = false;
    spans.push_back({t.data<float>(), t.numel()});
  }
  if (spans.empty()) return 0.0;
  if (device.is_cpu()) return sum_of_squares_cpu(spans.data(), static_cast<int>(spans.size()));
  return sum_of_squares_cuda(spans.data(), static_cast<int>(spans.size()), device.index);
}

}  // namespace elmo
