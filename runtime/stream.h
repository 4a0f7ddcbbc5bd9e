// The CUDA stream that ops launch on, per host thread. Default: the legacy default stream.
// StreamGuard switches it for a scope (used to put directions/layers on separate streams).
// CudaStream and CudaEvent own a stream / an event of one device (fork/join between streams:
// record an event on the producer, make the consumer wait on it).
// What it is not: a scheduler; every op simply launches on current_stream().
//
// No CUDA header is needed to use this one: streams and events are opaque handles, the very
// types the CUDA runtime names cudaStream_t (CUstream_st*) and cudaEvent_t (CUevent_st*). In a
// CPU-only build (-DELMO_CUDA=OFF) the current stream is still a per-thread value, and creating
// a CudaStream or CudaEvent is a UsageError (runtime/no_cuda.cpp).
#pragma once

struct CUstream_st;
struct CUevent_st;

namespace elmo {

using CudaStreamHandle = CUstream_st*;  // == cudaStream_t; nullptr is the legacy default stream
using CudaEventHandle = CUevent_st*;    // == cudaEvent_t

CudaStreamHandle current_stream();
void set_current_stream(CudaStreamHandle stream);

class StreamGuard {
 public:
  explicit StreamGuard(CudaStreamHandle stream) : saved_(current_stream()) {
    set_current_stream(stream);
  }
  ~StreamGuard() { set_current_stream(saved_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  CudaStreamHandle saved_;
};

// The flags every CudaStream is created with: non-blocking, so its work does not serialise
// with the legacy default stream (stream 0) in either direction. Whatever stream 0 issues and
// a CudaStream reads (or the other way round) needs an event: record() on the producer,
// wait() on the consumer. Without this two streams forked from stream 0 cannot overlap: an
// event recorded on stream 0 would first wait for every blocking stream's queued work.
constexpr unsigned kCudaStreamNonBlocking = 0x01u;  // cudaStreamNonBlocking (stream.cpp checks)
constexpr unsigned kCudaStreamFlags = kCudaStreamNonBlocking;

// A stream created on cuda:device with kCudaStreamFlags. The destructor waits for the stream's
// work and releases its per-stream resources (cuBLAS handle, pinned staging:
// release_stream_resources); it never throws.
class CudaStream {
 public:
  explicit CudaStream(int device);
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  CudaStreamHandle get() const { return stream_; }
  int device() const { return device_; }

 private:
  CudaStreamHandle stream_ = nullptr;
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
  void record(CudaStreamHandle stream);
  void wait(CudaStreamHandle waiter) const;
  void synchronize() const;

 private:
  CudaEventHandle event_ = nullptr;
};

// Frees what this process keeps per (device, stream) - the cuBLAS handle and workspaces of
// runtime/gemm.h and the pinned staging of runtime/pinned.h - after the stream's work is done.
// Call it before destroying a stream (CudaStream does). Never throws.
void release_stream_resources(int device, CudaStreamHandle stream) noexcept;

}  // namespace elmo
