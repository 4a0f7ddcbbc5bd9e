// Host-side helpers of the GPU ranks in app/data_parallel (no GPU, no peers needed): which
// requested rows were fetched from other ranks, and how the device bucket is cut for NCCL.
#include <gtest/gtest.h>

#include <vector>

#include "app/data_parallel.h"

namespace elmo {
namespace {

TEST(DataParallelHelpers, RemoteIdsDropHotAndOwnedRows) {
  const std::vector<int32_t> requested = {0, 3, 4, 9, 10, 11, 19, 20, 25};
  // hot ids < 4; rank 1 of 3 owns 5, 8, 11, 14, 17, 20, 23
  const TailShard own = tail_shard(26, 4, 1, 3);
  EXPECT_EQ(remote_ids(requested, 4, own), (std::vector<int32_t>{4, 9, 10, 19, 25}));
  EXPECT_EQ(remote_ids({}, 4, own), std::vector<int32_t>{});
  // Owning nothing (more ranks than tail rows) keeps every tail id.
  EXPECT_EQ(remote_ids(requested, 10, tail_shard(26, 10, 20, 21)),
            (std::vector<int32_t>{10, 11, 19, 20, 25}));
}

TEST(DataParallelHelpers, BucketPiecesCoverTheBucketInOrder) {
  const int64_t max_bytes = 10 * sizeof(float);
  const auto pieces = bucket_pieces(25, max_bytes);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0], (std::pair<int64_t, int64_t>{0, 10}));
  EXPECT_EQ(pieces[1], (std::pair<int64_t, int64_t>{10, 10}));
  EXPECT_EQ(pieces[2], (std::pair<int64_t, int64_t>{20, 5}));
  EXPECT_TRUE(bucket_pieces(0, max_bytes).empty());
  EXPECT_EQ(bucket_pieces(3, 1).size(), 3u);  // at least one float per piece
  // The default: 25 MB of f32 per NCCL call.
  EXPECT_EQ(bucket_pieces(kNcclBucketBytes / 4 + 1, kNcclBucketBytes).size(), 2u);
}

}  // namespace
}  // namespace elmo
