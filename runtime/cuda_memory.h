// CUDA device discovery and memory, callable from plain C++ (no CUDA headers leak out).
// On a machine without a GPU or driver, cuda_device_count() is 0 and nothing else is called.
#pragma once

#include <cstddef>
#include <string>

#include "runtime/dtype.h"

namespace elmo {

int cuda_device_count();                 // 0 when there is no usable GPU or driver
std::string cuda_device_name(int index);  // "NVIDIA H100 80GB HBM3"
// Stream-ordered (cudaMallocAsync on the current stream) from the device's current pool, whose
// release threshold is set once per device to keep freed memory for the next allocations.
void* cuda_allocate(size_t bytes, int device);
void cuda_release(void* ptr, int device);
void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void cuda_zero(void* ptr, int device, size_t bytes);
void cuda_synchronize(int device);
void cuda_set_device(int device);  // the calling thread's current device (launches go there)
size_t cuda_peak_bytes(int device);  // high-water mark of this process's pool

}  // namespace elmo
