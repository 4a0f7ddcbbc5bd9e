// ELMO_HD marks math shared by the CPU and CUDA backends (host + device inline functions).
#pragma once

#if defined(__CUDACC__)
#define ELMO_HD __host__ __device__ __forceinline__
#else
#define ELMO_HD inline
#endif
