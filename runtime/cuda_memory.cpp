#include "runtime/cuda_memory.h"

#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "runtime/cuda_check.h"
#include "runtime/log.h"
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

bool cuda_compiled_in() { return true; }

namespace {
struct DeviceCount {
  int count = 0;
  std::string why_none;  // "" when count > 0
};
const DeviceCount& device_count() {
  static const DeviceCount result = [] {
    DeviceCount r;
    const cudaError_t status = cudaGetDeviceCount(&r.count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "no driver" error
      r.count = 0;
      r.why_none = str("cudaGetDeviceCount failed: ", cudaGetErrorString(status), " (",
                       cudaGetErrorName(status), ")");
    } else if (r.count == 0) {
      r.why_none = "cudaGetDeviceCount found no CUDA device";
    }
    return r;
  }();
  return result;
}
}  // namespace

int cuda_device_count() { return device_count().count; }

std::string cuda_unavailable_reason() { return device_count().why_none; }

std::string cuda_device_name(int index) {
  cudaDeviceProp prop{};
  ELMO_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return prop.name;
}

namespace {
struct PoolStats {
  struct Block {
    size_t bytes = 0;
    bool pooled = true;  // cudaMallocAsync (freed with cudaFreeAsync) or cudaMalloc (cudaFree)
  };
  std::mutex mutex;
  std::unordered_map<void*, Block> blocks;
  size_t live = 0;
  size_t peak = 0;
};
PoolStats& pool_stats(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, PoolStats> stats;
  std::lock_guard<std::mutex> lock(mutex);
  return stats[device];
}

// How one device allocates, decided before its first allocation.
struct DeviceAllocation {
  bool decided = false;
  bool pooled = true;
};
std::mutex& allocation_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::unordered_map<int, DeviceAllocation>& allocations() {
  static std::unordered_map<int, DeviceAllocation> map;
  return map;
}

// From now on `device` allocates with plain cudaMalloc/cudaFree; says so once.
void fall_back_to_plain(int device, DeviceAllocation& a, const std::string& reason) {
  if (a.decided && !a.pooled) return;
  a.decided = true;
  a.pooled = false;
  log_warn("cuda:", device, ": ", reason, "; allocating with plain cudaMalloc/cudaFree instead ",
           "(slower: every free waits for the device; peak memory is still counted)");
}

// True when `device` allocates from its stream-ordered pool. Decided once per device: where
// the driver has pools, the pool cudaMallocAsync draws from keeps what is freed (release
// threshold "everything") instead of handing it back to the driver at every synchronisation
// and mapping it again at the next step's first allocations (the default threshold is 0);
// where it has none (some sandboxed drivers), plain allocation.
bool device_uses_pool(int device) {
  std::lock_guard<std::mutex> lock(allocation_mutex());
  DeviceAllocation& a = allocations()[device];
  if (a.decided) return a.pooled;
  int supported = 0;
  if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess) {
    (void)cudaGetLastError();
    supported = -1;
  }
  const std::string why = cuda_pool_fallback_reason(supported, false);
  if (!why.empty()) {
    fall_back_to_plain(device, a, why);
    return false;
  }
  cudaMemPool_t pool = nullptr;
  ELMO_CUDA_CHECK(cudaDeviceGetMemPool(&pool, device));
  uint64_t keep = UINT64_MAX;
  ELMO_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  a.decided = true;
  return true;
}
}  // namespace

void cuda_fall_back_to_plain_allocation(int device, const std::string& reason) {
  std::lock_guard<std::mutex> lock(allocation_mutex());
  fall_back_to_plain(device, allocations()[device], reason);
}

bool cuda_uses_pool(int device) { return device_uses_pool(device); }

void* cuda_allocate(size_t bytes, int device) {
  ELMO_CHECK(device < cuda_device_count(), "cuda:", device, " requested but ",
             cuda_device_count(), " GPU(s) are visible");
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  void* ptr = nullptr;
  if (bytes == 0) return nullptr;
  bool pooled = device_uses_pool(device);
  cudaError_t status =
      pooled ? cudaMallocAsync(&ptr, bytes, current_stream()) : cudaMalloc(&ptr, bytes);
  if (pooled && status == cudaErrorNotSupported) {
    (void)cudaGetLastError();
    cuda_fall_back_to_plain_allocation(device, cuda_pool_fallback_reason(1, true));
    pooled = false;
    status = cudaMalloc(&ptr, bytes);
  }
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw Error(str("out of GPU memory on cuda:", device, " allocating ", bytes,
                    " bytes (", pool_stats(device).live, " bytes live in elmo_fast's pool)"));
  }
  ELMO_CUDA_CHECK(status);
  PoolStats& stats = pool_stats(device);
  std::lock_guard<std::mutex> lock(stats.mutex);
  stats.blocks[ptr] = {bytes, pooled};
  stats.live += bytes;
  stats.peak = std::max(stats.peak, stats.live);
  return ptr;
}

void cuda_release(void* ptr, int device) {
  if (ptr == nullptr) return;
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  PoolStats& stats = pool_stats(device);
  bool pooled = true;
  bool known = false;
  {
    std::lock_guard<std::mutex> lock(stats.mutex);
    auto it = stats.blocks.find(ptr);
    if (it != stats.blocks.end()) {
      known = true;
      pooled = it->second.pooled;
      stats.live -= it->second.bytes;
      stats.blocks.erase(it);
    }
  }
  if (!known) pooled = device_uses_pool(device);
  // Plain cudaFree waits for the device's queued work first, so it is stream-ordered too.
  if (pooled)
    ELMO_CUDA_CHECK(cudaFreeAsync(ptr, current_stream()));
  else
    ELMO_CUDA_CHECK(cudaFree(ptr));
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

void cuda_memory_info(int device, size_t* free_bytes, size_t* total_bytes) {
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  ELMO_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

size_t cuda_peak_bytes(int device) {
  PoolStats& stats = pool_stats(device);
  std::lock_guard<std::mutex> lock(stats.mutex);
  return stats.peak;
}

}  // namespace elmo
