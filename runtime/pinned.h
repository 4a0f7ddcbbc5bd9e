// Host-to-device uploads that do not stall the host: the bytes are copied into pinned host
// memory and a cudaMemcpyAsync on the current stream moves them to the device, ordered before
// the kernels launched after it. (A copy from pageable memory would first wait for everything
// already queued on the stream: one host synchronisation per upload.)
//
// Staging is kept per (device, stream) in two pinned arenas used in turn: an arena is reused
// only after the event recorded behind its last copy completed, so the caller's buffer may be
// changed as soon as upload() returns. Arenas grow (at a host synchronisation) when a single
// upload does not fit; in the steady state nothing is allocated.
// What it is not: a device allocator (dst is any device memory the caller owns) or a download
// path (device-to-host copies are synchronous anyway: Tensor::to / cuda_copy).
#pragma once

#include <cstddef>

namespace elmo {

// Copies `bytes` from host memory `src` to device memory `dst` on cuda:device, ordered on the
// current stream. Returns without waiting for the copy.
void upload_to_device(int device, void* dst, const void* src, size_t bytes);

}  // namespace elmo
