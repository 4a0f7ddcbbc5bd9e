#include "comm/topology.h"

#include "runtime/error.h"

namespace elmo {

std::string Topology::label() const {
  return world_size == 1 ? std::string() : str("rank ", rank, "/", world_size);
}

RowRange rank_rows(int64_t rows, int rank, int world_size) {
  ELMO_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "rank ", rank, " of world ",
             world_size);
  const int64_t base = rows / world_size, extra = rows % world_size;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace elmo
