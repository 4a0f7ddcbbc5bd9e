#include "comm/topology.h"

#include "runtime/partition.h"

namespace elmo {

std::string Topology::label() const {
  return world_size == 1 ? std::string() : str("rank ", rank, "/", world_size);
}

RowRange rank_rows(int64_t rows, int rank, int world_size) {
  const IndexRange range = even_part(rows, rank, world_size);
  return {range.begin, range.end};
}

}  // namespace elmo
