// Small device helpers of the GPU benchmarks: deterministic fills of large device arrays
// (the same values computable on the host, so a host check needs no download of the whole
// array) and f32 <-> bf16 / f16 conversions for the cuDNN reference of bench_lstmp.
// What it is not: part of the trainer; nothing outside bench/ uses these.
#pragma once

#include <cstdint>

#include "runtime/hd.h"

namespace elmo::bench {

// A value in [lo, hi) that depends only on (seed, index): a 64-bit mix (splitmix64 finaliser
// constants), top 24 bits as the fraction. Host and device give the same float.
ELMO_HD float hash_uniform(uint64_t seed, uint64_t index, float lo, float hi) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float unit = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
#if defined(__CUDA_ARCH__)
  return __fadd_rn(lo, __fmul_rn(hi - lo, unit));  // no FMA contraction: same bits as the host
#else
  return lo + (hi - lo) * unit;
#endif
}

// p[i] = hash_uniform(seed, i, lo, hi) for i in [0, n). Device pointer, current stream.
void fill_hash_uniform_cuda(float* p, int64_t n, uint64_t seed, float lo, float hi);

// out[k, :] = table[ids[k], :] for k in [0, n); table [rows, dim], out [n, dim]. Ids are not
// checked (the callers build them). Device pointers, current stream.
void gather_rows_cuda(const float* table, int64_t dim, const int32_t* ids, int64_t n, float* out);

// 16-bit storage types of the cuDNN reference.
enum class Half16 : uint8_t { kBf16, kFp16 };

// dst[i] = round-to-nearest-even 16-bit value of src[i]; device pointers, current stream.
void f32_to_16_cuda(Half16 type, const float* src, int64_t n, void* dst);
// dst[i] = float(src[i]) (exact); device pointers, current stream.
void f16_to_32_cuda(Half16 type, const void* src, int64_t n, float* dst);

}  // namespace elmo::bench
