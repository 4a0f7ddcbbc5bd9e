// The CUDA stream that ops launch on, per host thread. Default: the legacy default stream.
// StreamGuard switches it for a scope (used to put directions/layers on separate streams).
#pragma once

#include <cuda_runtime_api.h>

namespace elmo {

cudaStream_t current_stream();
void set_current_stream(cudaStream_t stream);

class StreamGuard {
 public:
  explicit StreamGuard(cudaStream_t stream) : saved_(current_stream()) {
    set_current_stream(stream);
  }
  ~StreamGuard() { set_current_stream(saved_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  cudaStream_t saved_;
};

}  // namespace elmo
