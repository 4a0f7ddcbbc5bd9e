// Topology: where this process sits in a run (rank, world, node, local rank, device).
// Rank-parameterised decisions (data sharding, row ownership) are pure functions of it, so they
// can be tested in one process. A single-process run is rank 0 of world 1.
#pragma once

#include <cstdint>
#include <string>

namespace elmo {

struct Topology {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  int node = 0;

  bool is_root() const { return rank == 0; }
  std::string label() const;  // "rank 1/4" ("" for a single process)
};

// Rows [begin, end) of `rows` owned by `rank` when split as evenly as possible, lower ranks
// taking the remainder first. Used for data rows now and for sharded table rows later.
struct RowRange {
  int64_t begin = 0;
  int64_t end = 0;
};
RowRange rank_rows(int64_t rows, int rank, int world_size);

}  // namespace elmo
