// The CUDA stream that ops launch on, per host thread. Default: the legacy default stream.
// StreamGuard switches it for a scope (used to put directions/layers on separate streams).
// CudaStream and CudaEvent own a stream / an event of one device (fork/join between streams:
// record an event on the producer, make the consumer wait on it).
// What it is not: a scheduler; every op simply launches on current_stream().
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

// The flags every CudaStream is created with: non-blocking, so its work does not serialise
// with the legacy default stream (stream 0) in either direction. Whatever stream 0 issues and
// a CudaStream reads (or the other way round) needs an event: record() on the producer,
// wait() on the consumer. Without this two streams forked from stream 0 cannot overlap: an
// event recorded on stream 0 would first wait for every blocking stream's queued work.
constexpr unsigned kCudaStreamFlags = cudaStreamNonBlocking;

// A stream created on cuda:device with kCudaStreamFlags. The destructor waits for the stream's
// work and releases its per-stream resources (cuBLAS handle, pinned staging:
// release_stream_resources); it never throws.
class CudaStream {
 public:
  explicit CudaStream(int device);
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
};

// An event without timing on cuda:device. record() marks the work issued so far on a stream;
// wait() makes another stream wait for it (no host synchronisation); synchronize() blocks the
// host until it completed.
class CudaEvent {
 public:
  explicit CudaEvent(int device);
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record(cudaStream_t stream);
  void wait(cudaStream_t waiter) const;
  void synchronize() const;

 private:
  cudaEvent_t event_ = nullptr;
};

// Frees what this process keeps per (device, stream) - the cuBLAS handle and workspaces of
// runtime/gemm.h and the pinned staging of runtime/pinned.h - after the stream's work is done.
// Call it before destroying a stream (CudaStream does). Never throws.
void release_stream_resources(int device, cudaStream_t stream) noexcept;

}  // namespace elmo
