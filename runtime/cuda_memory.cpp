#include "runtime/cuda_memory.h"

#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

void throw_cuda_failure(const char* expr, const char* file, int line, const char* error) {
  std::string where = str(file, ":", line);
  if (!error_context().empty()) where += str(" [", error_context(), "]");
  throw Error(str("CUDA call failed: ", expr, ": ", error, " (at ", where, ")"));
}

const char* cublas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "no driver" error
      return 0;
    }
    return n;
  }();
  return count;
}

std::string cuda_device_name(int index) {
  cudaDeviceProp prop{};
  ELMO_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.name;
}

namespace {
struct PoolStats {
  std::mutex mutex;
  std::unordered_map<void*, size_t> sizes;
  size_t live = 0;
  size_t peak = 0;
};
PoolStats& pool_stats(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, PoolStats> stats;
  std::lock_guard<std::mutex> lock(mutex);
  return stats[device];
}

// Once per device, before its first allocation: the pool cudaMallocAsync draws from keeps what
// is freed (release threshold "everything") instead of handing it back to the driver at every
// synchronisation and mapping it again at the next step's first allocations (the default
// threshold is 0).
void prepare_pool(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, bool> prepared;
  std::lock_guard<std::mutex> lock(mutex);
  if (prepared[device]) return;
  cudaMemPool_t pool = nullptr;
  ELMO_CUDA_CHECK(cudaDeviceGetMemPool(&pool, device));
  uint64_t keep = UINT64_MAX;
  ELMO_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  prepared[device] = true;
}
}  // namespace

void* cuda_allocate(size_t bytes, int device) {
  ELMO_CHECK(device < cuda_device_count(), "cuda:", device, " requested but ",
             cuda_device_count(), " GPU(s) are visible");
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  void* ptr = nullptr;
  if (bytes == 0) return nullptr;
  prepare_pool(device);
  cudaError_t status = cudaMallocAsync(&ptr, bytes, current_stream());
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw Error(str("out of GPU memory on cuda:", device, " allocating ", bytes,
                    " bytes (", pool_stats(device).live, " bytes live in elmo_fast's pool)"));
  }
  ELMO_CUDA_CHECK(status);
  PoolStats& stats = pool_stats(device);
  std::lock_guard<std::mutex> lock(stats.mutex);
  stats.sizes[ptr] = bytes;
  stats.live += bytes;
  stats.peak = std::max(stats.peak, stats.live);
  return ptr;
}

void cuda_release(void* ptr, int device) {
  if (ptr == nullptr) return;
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  ELMO_CUDA_CHECK(cudaFreeAsync(ptr, current_stream()));
  PoolStats& stats = pool_stats(device);
  std::lock_guard<std::mutex> lock(stats.mutex);
  auto it = stats.sizes.find(ptr);
  if (it != stats.sizes.end()) {
    stats.live -= it->second;
    stats.sizes.erase(it);
  }
}

void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  cudaMemcpyKind kind = cudaMemcpyDefault;
  if (dst_device.is_cuda()) ELMO_CUDA_CHECK(cudaSetDevice(dst_device.index));
  else ELMO_CUDA_CHECK(cudaSetDevice(src_device.index));
  ELMO_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, current_stream()));
  if (dst_device.is_cpu() || src_device.is_cpu())
    ELMO_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}

void cuda_zero(void* ptr, int device, size_t bytes) {
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  ELMO_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, current_stream()));
}

void cuda_synchronize(int device) {
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  ELMO_CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_set_device(int device) { ELMO_CUDA_CHECK(cudaSetDevice(device)); }

size_t cuda_peak_bytes(int device) {
  PoolStats& stats = pool_stats(device);
  std::lock_guard<std::mutex> lock(stats.mutex);
  return stats.peak;
}

}  // namespace elmo
