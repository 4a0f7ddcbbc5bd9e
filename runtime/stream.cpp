#include "runtime/stream.h"

#include "runtime/cuda_check.h"

namespace elmo {

static_assert(kCudaStreamNonBlocking == cudaStreamNonBlocking,
              "runtime/stream.h spells cudaStreamNonBlocking without the CUDA headers");

// Defined in gemm.cpp and pinned.cpp (runtime-internal): drop the per-stream entries.
void release_gemm_stream(int device, cudaStream_t stream) noexcept;
void release_pinned_stream(int device, cudaStream_t stream) noexcept;

namespace {
thread_local cudaStream_t g_current_stream = nullptr;
}

cudaStream_t current_stream() { return g_current_stream; }
void set_current_stream(cudaStream_t stream) { g_current_stream = stream; }

CudaStream::CudaStream(int device) : device_(device) {
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  ELMO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, kCudaStreamFlags));
}

CudaStream::~CudaStream() {
  if (stream_ == nullptr) return;
  (void)cudaSetDevice(device_);
  (void)cudaStreamSynchronize(stream_);
  release_stream_resources(device_, stream_);
  (void)cudaStreamDestroy(stream_);
  (void)cudaGetLastError();  // a failure here is reported by the next checked call
}

CudaEvent::CudaEvent(int device) {
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  ELMO_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
}

CudaEvent::~CudaEvent() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

void CudaEvent::record(cudaStream_t stream) { ELMO_CUDA_CHECK(cudaEventRecord(event_, stream)); }

void CudaEvent::wait(cudaStream_t waiter) const {
  ELMO_CUDA_CHECK(cudaStreamWaitEvent(waiter, event_, 0));
}

void CudaEvent::synchronize() const { ELMO_CUDA_CHECK(cudaEventSynchronize(event_)); }

void release_stream_resources(int device, cudaStream_t stream) noexcept {
  release_gemm_stream(device, stream);
  release_pinned_stream(device, stream);
}

}  // namespace elmo
