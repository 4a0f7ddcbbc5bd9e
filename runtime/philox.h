// Philox4x32-10 counter-based RNG (Salmon et al., SC'11), identical on host and device.
//
// A draw is a pure function of (key, counter): element e of stream s under seed k is
// philox_uniform(k, s, e), whatever device or thread computes it. Dropout masks, the sampler
// and initialisation use this, so the CPU and CUDA backends produce the same random numbers.
#pragma once

#include <cstdint>

#include "runtime/hd.h"

namespace elmo {

struct U32x4 {
  uint32_t v[4];
};

ELMO_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

// 10 rounds over the 128-bit counter (c0..c3) with the 64-bit key (k0, k1).
ELMO_HD U32x4 philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// 32 random bits number `index` of stream `stream` under `seed`.
ELMO_HD uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox4x32(seed, index >> 2, stream).v[index & 3];
}

// Uniform in [0, 1) with 24 random bits (exactly representable in f32).
ELMO_HD float u32_to_unit_float(uint32_t bits) { return (bits >> 8) * (1.0f / 16777216.0f); }

// Uniform in [0, 1) with 53 random bits, from two words.
ELMO_HD double u32_pair_to_unit_double(uint32_t hi, uint32_t lo) {
  const uint64_t bits = (static_cast<uint64_t>(hi >> 5) << 26) | (lo >> 6);
  return bits * (1.0 / 9007199254740992.0);
}

ELMO_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return u32_to_unit_float(philox_u32(seed, stream, index));
}

}  // namespace elmo
