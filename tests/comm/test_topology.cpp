#include "comm/topology.h"

#include <gtest/gtest.h>

#include "runtime/error.h"

namespace elmo {
namespace {

TEST(Topology, RankRowsPartitionEveryRowOnce) {
  for (int world = 1; world <= 5; ++world) {
    int64_t next = 0;
    for (int rank = 0; rank < world; ++rank) {
      RowRange r = rank_rows(13, rank, world);
      EXPECT_EQ(r.begin, next);
      EXPECT_GE(r.end - r.begin, 13 / world);
      next = r.end;
    }
    EXPECT_EQ(next, 13);
  }
  EXPECT_THROW(rank_rows(4, 2, 2), Error);
  EXPECT_EQ(Topology{}.label(), "");
  EXPECT_EQ((Topology{1, 4}).label(), "rank 1/4");
}

}  // namespace
}  // namespace elmo
