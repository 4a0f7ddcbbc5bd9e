// Host-side random stream over Philox: (seed, stream, position) is its whole state, so it can
// be saved in a checkpoint and restored to continue bit-identically.
#pragma once

#include <cstdint>

#include "runtime/philox.h"

namespace elmo {

struct RngState {
  uint64_t seed = 0;
  uint64_t stream = 0;
  uint64_t position = 0;  // number of 32-bit words drawn so far
};

class Rng {
 public:
  Rng() = default;
  Rng(uint64_t seed, uint64_t stream) : state_{seed, stream, 0} {}
  explicit Rng(RngState state) : state_(state) {}

  uint32_t next_u32() { return philox_u32(state_.seed, state_.stream, state_.position++); }
  uint64_t next_u64() {
    const uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }
  float uniform() { return u32_to_unit_float(next_u32()); }  // [0, 1)
  double uniform_double() {                                  // [0, 1), 53 bits
    const uint32_t hi = next_u32();
    return u32_pair_to_unit_double(hi, next_u32());
  }
  // Uniform integer in [0, n) without modulo bias.
  uint64_t below(uint64_t n);
  float normal();  // standard normal (Box-Muller, uses two words)

  const RngState& state() const { return state_; }

 private:
  RngState state_;
};

// Stream ids: fixed, documented purposes so independent consumers never share numbers.
enum RngStream : uint64_t {
  kRngInit = 1,
  kRngShuffle = 2,
  kRngSampler = 3,
  kRngDropout = 4,
  kRngSynthetic = 5,
};

}  // namespace elmo
