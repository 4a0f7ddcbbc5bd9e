// The decisions of runtime/cuda_memory.h that call no CUDA function, so CPU-only builds (and
// their unit tests) have them too.
#include "runtime/cuda_memory.h"

namespace elmo {

std::string cuda_pool_fallback_reason(int pools_supported, bool async_not_supported) {
  if (pools_supported < 0)
    return "the driver did not say whether it supports stream-ordered memory pools "
           "(cudaDevAttrMemoryPoolsSupported could not be read)";
  if (pools_supported == 0)
    return "the driver does not support stream-ordered memory pools "
           "(cudaDevAttrMemoryPoolsSupported = 0)";
  if (async_not_supported) return "cudaMallocAsync is not supported here (cudaErrorNotSupported)";
  return "";
}

}  // namespace elmo
