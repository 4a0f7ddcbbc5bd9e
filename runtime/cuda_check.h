// Check macros for CUDA runtime and cuBLAS calls: on failure they throw elmo::Error naming the
// call, file, line, the error string and the rank/host context. Include only where CUDA
// headers are available (.cu files and the .cpp files of runtime that talk to CUDA).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "runtime/error.h"

namespace elmo {
[[noreturn]] void throw_cuda_failure(const char* expr, const char* file, int line,
                                     const char* error);
const char* cublas_status_name(cublasStatus_t status);
}  // namespace elmo

#define ELMO_CUDA_CHECK(expr)                                                      \
  do {                                                                             \
    cudaError_t elmo_status_ = (expr);                                             \
    if (elmo_status_ != cudaSuccess) [[unlikely]]                                  \
      ::elmo::throw_cuda_failure(#expr, __FILE__, __LINE__,                        \
                                 cudaGetErrorString(elmo_status_));                \
  } while (0)

#define ELMO_CUBLAS_CHECK(expr)                                                    \
  do {                                                                             \
    cublasStatus_t elmo_status_ = (expr);                                          \
    if (elmo_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                        \
      ::elmo::throw_cuda_failure(#expr, __FILE__, __LINE__,                        \
                                 ::elmo::cublas_status_name(elmo_status_));        \
  } while (0)

// After a kernel launch: reports a bad configuration at the launch site.
#define ELMO_CUDA_CHECK_LAUNCH() ELMO_CUDA_CHECK(cudaGetLastError())
