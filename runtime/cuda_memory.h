// CUDA device discovery and memory, callable from plain C++ (no CUDA headers leak out).
// On a machine without a GPU or driver, cuda_device_count() is 0 and nothing else is called.
// In a CPU-only build (-DELMO_CUDA=OFF, or configured where no CUDA toolkit was found) the same
// holds, and every function here but cuda_device_count, cuda_unavailable_reason and
// cuda_compiled_in throws UsageError(kCpuOnlyBuildMessage) (runtime/no_cuda.cpp).
#pragma once

#include <cstddef>
#include <string>

#include "runtime/dtype.h"

namespace elmo {

// What a CPU-only binary says when asked for a GPU.
inline constexpr const char* kCpuOnlyBuildMessage =
    "this elmo_fast was built without CUDA (a CPU-only build): install the CUDA toolkit (nvcc, "
    "cuBLAS, NCCL) and rebuild (rm -rf build && ./setup.sh), or train on the CPU "
    "(train.device = \"cpu\" or \"auto\", train.precision = \"fp32\")";

bool cuda_compiled_in();  // false in a CPU-only build
int cuda_device_count();  // 0 when there is no usable GPU or driver
// "" when cuda_device_count() > 0; otherwise why not: the CUDA runtime's error text from
// cudaGetDeviceCount (e.g. "CUDA driver version is insufficient for CUDA runtime version"),
// that it found no device, or kCpuOnlyBuildMessage.
std::string cuda_unavailable_reason();
std::string cuda_device_name(int index);  // "NVIDIA H100 80GB HBM3"
// Stream-ordered (cudaMallocAsync on the current stream) from the device's current pool, whose
// release threshold is set once per device to keep freed memory for the next allocations.
// Where the driver has no pools (cudaDevAttrMemoryPoolsSupported = 0, or cudaMallocAsync
// answers cudaErrorNotSupported: some sandboxed drivers) the device falls back to plain
// cudaMalloc / cudaFree, with a one-line warning; cuda_peak_bytes counts either way.
void* cuda_allocate(size_t bytes, int device);
void cuda_release(void* ptr, int device);
// Why a device must allocate without the pool, or "" when the pool serves: pools_supported is
// cudaDevAttrMemoryPoolsSupported (-1: the query failed), async_not_supported whether
// cudaMallocAsync answered cudaErrorNotSupported. Pure: the decision cuda_allocate takes.
std::string cuda_pool_fallback_reason(int pools_supported, bool async_not_supported);
// Whether `device` allocates from its pool (decides it, as a first allocation would).
bool cuda_uses_pool(int device);
// From now on `device` allocates with plain cudaMalloc / cudaFree, logging `reason` once (what
// cuda_allocate does on a driver without pools; callable by tests to reach that path on any
// GPU). Blocks allocated before are still freed the way they were allocated.
void cuda_fall_back_to_plain_allocation(int device, const std::string& reason);
void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void cuda_zero(void* ptr, int device, size_t bytes);
void cuda_synchronize(int device);
void cuda_set_device(int device);    // the calling thread's current device (launches go there)
size_t cuda_peak_bytes(int device);  // high-water mark of this process's device memory
// cudaMemGetInfo on `device` (makes it current): what the driver has free for new allocations
// and the device's total, in bytes.
void cuda_memory_info(int device, size_t* free_bytes, size_t* total_bytes);

// CPU-only builds: throws UsageError("<what>: " + kCpuOnlyBuildMessage). Defined only there
// (runtime/no_cuda.cpp), for the stand-ins of every CUDA entry point.
[[noreturn]] void throw_cpu_only_build(const char* what);

}  // namespace elmo
