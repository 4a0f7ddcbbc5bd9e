// Unit tests of comm/sparse_exchange: row ownership math, the one-rank (no UCX) behaviour and
// argument / call-order validation. The multi-process exchange is in
// test_sparse_exchange_dist.cpp.
#include <gtest/gtest.h>

#include <numeric>

#include "comm/sparse_exchange.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::error_of;

// World 1 never touches the store.
class UnusedStore : public KvStore {
 public:
  void set(const std::string&, const std::string&) override { ADD_FAILURE() << "set called"; }
  std::string get(const std::string& key, double) override {
    ADD_FAILURE() << "get called";
    return key;
  }
};

TEST(SparseExchangeOwnership, TailShardsDealTheTailOnceAndMatchOwner) {
  struct Shape {
    int64_t rows, hot;
  };
  for (const Shape shape : {Shape{100, 10}, Shape{7, 0}, Shape{10, 8}, Shape{5, 5}, Shape{33, 1}}) {
    for (int world = 1; world <= 6; ++world) {
      std::vector<int> owners(static_cast<size_t>(shape.rows), -1);
      int64_t total = 0;
      for (int rank = 0; rank < world; ++rank) {
        const TailShard shard = tail_shard(shape.rows, shape.hot, rank, world);
        total += shard.count();
        for (int64_t i = 0; i < shard.count(); ++i) {
          const int64_t id = shard.id(i);
          ASSERT_TRUE(id >= shape.hot && id < shape.rows) << "rank " << rank << " i " << i;
          ASSERT_EQ(owners[id], -1) << "id " << id << " dealt twice";
          owners[id] = rank;
          EXPECT_TRUE(shard.owns(id));
          EXPECT_EQ(shard.index(id), i);
          if (i > 0) {
            EXPECT_GT(id, shard.id(i - 1));
          }
        }
      }
      EXPECT_EQ(total, shape.rows - shape.hot) << shape.rows << "/" << shape.hot << " world " << world;
      for (int64_t id = 0; id < shape.rows; ++id) {
        ASSERT_EQ(tail_owner(shape.rows, shape.hot, world, id), owners[id])
            << "id " << id << " rows " << shape.rows << " hot " << shape.hot << " world " << world;
        for (int rank = 0; rank < world; ++rank)
          EXPECT_EQ(tail_shard(shape.rows, shape.hot, rank, world).owns(id), owners[id] == rank);
      }
    }
  }
  // Dealt round-robin: neighbouring ids (similar frequencies) go to different ranks, and lower
  // ranks take the remainder.
  EXPECT_EQ(tail_owner(13, 3, 3, 3), 0);
  EXPECT_EQ(tail_owner(13, 3, 3, 4), 1);
  EXPECT_EQ(tail_owner(13, 3, 3, 12), 0);
  EXPECT_EQ(tail_shard(13, 3, 0, 3).count(), 4);
  EXPECT_EQ(tail_shard(13, 3, 2, 3).count(), 3);
  EXPECT_EQ(tail_shard(13, 3, 2, 3).id(2), 11);
  EXPECT_THROW(tail_owner(10, 2, 2, 10), Error);
  EXPECT_THROW(tail_owner(10, 2, 2, -1), Error);
  EXPECT_THROW(tail_shard(10, 11, 0, 2), Error);
  EXPECT_THROW(tail_shard(10, 2, 2, 2), Error);
}

struct OneRankTables {
  std::vector<float> embedding = std::vector<float>(20 * 3), softmax = std::vector<float>(20 * 2);
  OneRankTables() {
    std::iota(embedding.begin(), embedding.end(), 0.0f);
    std::iota(softmax.begin(), softmax.end(), 100.0f);
  }
  std::vector<SparseTable> tables() {
    return {{"embedding", embedding.data(), 20, 3, 5}, {"softmax", softmax.data(), 20, 2, 5}};
  }
};

TEST(SparseExchangeOneRank, StepsAreLocalAndSumsAreTheCallersOwnTailRows) {
  OneRankTables data;
  UnusedStore store;
  SparseExchange exchange(store, Topology{}, data.tables());
  EXPECT_EQ(exchange.num_tables(), 2);
  EXPECT_EQ(exchange.owned_rows(0).count(), 15);
  EXPECT_EQ(exchange.owned_rows(0).id(0), 5);
  EXPECT_EQ(exchange.owner(0, 4), -1);
  EXPECT_EQ(exchange.owner(1, 19), 0);
  const std::vector<float> before = data.embedding;

  // Step 7 with prefetch of step 8, then step 8 without ids at all.
  const std::vector<int32_t> ids0 = {1, 5, 9, 19}, ids1 = {0, 6};
  exchange.request_rows(7, {ids0, ids1});
  exchange.wait_rows(7);
  EXPECT_EQ(data.embedding, before);  // nothing to fetch on one rank
  exchange.request_rows(8, {{}, {}});
  std::vector<float> grad0(ids0.size() * 3), grad1(ids1.size() * 2);
  std::iota(grad0.begin(), grad0.end(), 1.0f);
  std::iota(grad1.begin(), grad1.end(), -3.0f);
  const std::vector<SummedRows> sums =
      exchange.exchange_gradients(7, {{&ids0, grad0.data()}, {&ids1, grad1.data()}});
  ASSERT_EQ(sums.size(), 2u);
  EXPECT_EQ(sums[0].ids, (std::vector<int32_t>{5, 9, 19}));  // hot id 1 dropped
  EXPECT_EQ(sums[0].values, (std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(sums[1].ids, (std::vector<int32_t>{6}));
  EXPECT_EQ(sums[1].values, (std::vector<float>{-1, 0}));
  exchange.rows_updated(7);
  exchange.wait_rows(8);
  const std::vector<int32_t> none;
  const std::vector<SummedRows> empty =
      exchange.exchange_gradients(8, {{&none, nullptr}, {&none, nullptr}});
  EXPECT_TRUE(empty[0].ids.empty() && empty[1].values.empty());
  exchange.rows_updated(8);
  EXPECT_EQ(exchange.stats().steps, 2);
  EXPECT_EQ(exchange.stats().rows_fetched, 0);
  exchange.close();
  exchange.close();  // idempotent
  EXPECT_NE(error_of([&] {
              exchange.request_rows(9, {{}, {}});
            }).find("after close()"),
            std::string::npos);
}

TEST(SparseExchangeOneRank, RejectsBadIdsWithClearMessages) {
  OneRankTables data;
  UnusedStore store;
  SparseExchange exchange(store, Topology{}, data.tables());
  auto request_error = [&](std::vector<int32_t> a, std::vector<int32_t> b) {
    return error_of([&] { exchange.request_rows(0, {a, b}); });
  };
  std::string message = request_error({3, 2}, {});
  EXPECT_NE(message.find("not ascending and unique: position 1 holds 2 after 3"), std::string::npos)
      << message;
  EXPECT_NE(message.find("table 0 'embedding'"), std::string::npos) << message;
  message = request_error({}, {4, 4});
  EXPECT_NE(message.find("position 1 holds 4 after 4"), std::string::npos) << message;
  message = request_error({}, {20});
  EXPECT_NE(message.find("id 20 at position 0 is outside [0, 20)"), std::string::npos) << message;
  EXPECT_NE(request_error({-1}, {}).find("id -1"), std::string::npos);
  message = error_of([&] { exchange.request_rows(0, {{1}}); });
  EXPECT_NE(message.find("got 1 id lists for 2 tables"), std::string::npos) << message;

  exchange.request_rows(0, {{1, 2}, {}});
  exchange.wait_rows(0);
  const std::vector<int32_t> ids = {6, 5}, good = {6};
  std::vector<float> rows(6);
  message = error_of([&] {
    exchange.exchange_gradients(0, {{&ids, rows.data()}, {&good, rows.data()}});
  });
  EXPECT_NE(message.find("exchange_gradients(step 0"), std::string::npos) << message;
  EXPECT_NE(message.find("position 1 holds 5 after 6"), std::string::npos) << message;
  message = error_of([&] {
    exchange.exchange_gradients(0, {{&good, nullptr}, {&good, rows.data()}});
  });
  EXPECT_NE(message.find("null id list or rows"), std::string::npos) << message;
  message = error_of([&] { exchange.exchange_gradients(0, {{&good, rows.data()}}); });
  EXPECT_NE(message.find("got 1 gradient tables for 2 tables"), std::string::npos) << message;
  EXPECT_THROW(exchange.owner(2, 0), Error);
  EXPECT_THROW(exchange.owner(0, 20), Error);
}

TEST(SparseExchangeOneRank, EnforcesTheStepOrder) {
  OneRankTables data;
  UnusedStore store;
  SparseExchange exchange(store, Topology{}, data.tables());
  const std::vector<int32_t> none;
  const std::vector<std::pair<const std::vector<int32_t>*, const float*>> no_grads = {
      {&none, nullptr}, {&none, nullptr}};
  EXPECT_NE(error_of([&] { exchange.wait_rows(3); }).find("no request_rows for this step"),
            std::string::npos);
  exchange.request_rows(3, {{}, {}});
  EXPECT_NE(error_of([&] {
              exchange.request_rows(4, {{}, {}});
            }).find("call wait_rows(3) first"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { exchange.exchange_gradients(3, no_grads); }).find("call wait_rows(3) first"),
      std::string::npos);
  exchange.wait_rows(3);
  EXPECT_NE(error_of([&] { exchange.wait_rows(3); }).find("called twice"), std::string::npos);
  EXPECT_NE(error_of([&] { exchange.rows_updated(3); }).find("call exchange_gradients(3) first"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              exchange.request_rows(5, {{}, {}});
            }).find("steps must be consecutive"),
            std::string::npos);
  exchange.request_rows(4, {{}, {}});
  EXPECT_NE(error_of([&] { exchange.wait_rows(4); }).find("finish step 3 first"),
            std::string::npos);
  exchange.exchange_gradients(3, no_grads);
  EXPECT_NE(error_of([&] { exchange.exchange_gradients(3, no_grads); }).find("called twice"),
            std::string::npos);
  exchange.rows_updated(3);
  EXPECT_NE(error_of([&] { exchange.rows_updated(3); }).find("called twice"), std::string::npos);
  exchange.wait_rows(4);
}

TEST(SparseExchangeOneRank, RejectsBadTables) {
  std::vector<float> values(40);
  UnusedStore store;
  auto construct = [&](SparseTable table) {
    return error_of([&] { SparseExchange exchange(store, Topology{}, {table}); });
  };
  EXPECT_NE(construct({"e", values.data(), 10, 0, 2}).find("table 0 'e' has dim 0"),
            std::string::npos);
  EXPECT_NE(construct({"e", values.data(), 10, 4, 11}).find("hot_rows 11 outside [0, 10]"),
            std::string::npos);
  EXPECT_NE(construct({"e", nullptr, 10, 4, 2}).find("no values"), std::string::npos);
  EXPECT_NE(construct({"e", values.data(), 0, 4, 0}).find("has 0 rows"), std::string::npos);
  EXPECT_NE(construct({"e", values.data(), int64_t{1} << 31, 1, 0}).find("int32"),
            std::string::npos);
  EXPECT_NE(error_of([&] { SparseExchange exchange(store, Topology{}, {}); }).find("no tables"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              SparseExchange exchange(store, Topology{2, 2}, {{"e", values.data(), 10, 4, 0}});
            }).find("rank 2 is not inside world size 2"),
            std::string::npos);
}

}  // namespace
}  // namespace elmo
