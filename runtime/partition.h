// Even partition of `count` items into `parts` contiguous ranges, lower parts taking the
// remainder first. The one rule behind data rows per rank (io/batcher) and row ownership
// (comm/topology), so the two can never disagree.
#pragma once

#include <algorithm>
#include <cstdint>

#include "runtime/error.h"

namespace elmo {

struct IndexRange {
  int64_t begin = 0;
  int64_t end = 0;
};

inline IndexRange even_part(int64_t count, int part, int parts) {
  ELMO_CHECK(parts > 0 && part >= 0 && part < parts, "rank ", part, " of world ", parts);
  const int64_t base = count / parts, extra = count % parts;
  const int64_t begin = part * base + std::min<int64_t>(part, extra);
  return {begin, begin + base + (part < extra ? 1 : 0)};
}

}  // namespace elmo
