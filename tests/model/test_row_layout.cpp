// Row layouts of the sparse tables (model/row_layout.h): the identity for a process alone; a
// rank's hot head, own rows (dealt round-robin, compacted) and step cache; placing fetched rows;
// taking a rank's rows of a whole table; initialising a compacted table with the whole table's
// draws.
#include <gtest/gtest.h>

#include <vector>

#include "model/embedding.h"
#include "model/row_layout.h"
#include "runtime/error.h"

namespace elmo {
namespace {

TEST(RowLayout, WholeAndWorldOfOneAreTheIdentity) {
  for (const RowLayout& layout : {RowLayout::whole(10), RowLayout::sharded(10, 4, 0, 1, 7)}) {
    EXPECT_FALSE(layout.is_sharded());
    EXPECT_EQ(layout.home(), 10);
    EXPECT_EQ(layout.stored(), 10);
    for (int64_t id = 0; id < 10; ++id) {
      EXPECT_TRUE(layout.is_home(id));
      EXPECT_EQ(layout.home_slot(id), id);
      EXPECT_EQ(layout.home_id(id), id);
    }
    const RowSlots slots(layout);
    EXPECT_EQ(slots.map(), nullptr);
    EXPECT_EQ(slots.slot(7), 7);
  }
}

TEST(RowLayout, ARankStoresTheHotHeadItsDealtRowsAndACache) {
  // 26 ids, 4 hot; rank 1 of 3 owns 5, 8, 11, 14, 17, 20, 23 (as comm's TailShard deals them).
  const RowLayout layout = RowLayout::sharded(26, 4, 1, 3, 5);
  EXPECT_TRUE(layout.is_sharded());
  EXPECT_EQ(layout.owned(), 7);
  EXPECT_EQ(layout.home(), 11);
  EXPECT_EQ(layout.stored(), 16);
  const std::vector<int64_t> owned = {5, 8, 11, 14, 17, 20, 23};
  for (int64_t k = 0; k < 7; ++k) {
    EXPECT_TRUE(layout.is_home(owned[k]));
    EXPECT_EQ(layout.home_slot(owned[k]), 4 + k);
    EXPECT_EQ(layout.home_id(4 + k), owned[k]);
  }
  for (int64_t id : {4, 6, 7, 25}) EXPECT_FALSE(layout.is_home(id)) << id;
  // Owned counts over the ranks cover the tail, also with more ranks than tail rows.
  int64_t total = 0;
  for (int r = 0; r < 3; ++r) total += RowLayout::sharded(26, 4, r, 3, 0).owned();
  EXPECT_EQ(total, 22);
  EXPECT_EQ(RowLayout::sharded(6, 4, 3, 5, 0).owned(), 0);
  EXPECT_EQ(RowLayout::sharded(6, 4, 1, 5, 0).owned(), 1);
  EXPECT_THROW(RowLayout::sharded(6, 7, 0, 2, 0), Error);
  EXPECT_THROW(RowLayout::sharded(6, 2, 2, 2, 0), Error);
  EXPECT_THROW(RowLayout::sharded(6, 2, 0, 2, -1), Error);
}

TEST(RowSlots, PlacedRowsTakeTheCacheAndReplaceThePreviousStep) {
  RowSlots slots(RowLayout::sharded(26, 4, 1, 3, 3));
  ASSERT_NE(slots.map(), nullptr);
  EXPECT_EQ(slots.slot(2), 2);
  EXPECT_EQ(slots.slot(8), 5);
  EXPECT_EQ(slots.slot(6), -1);
  slots.place({6, 7, 25});
  EXPECT_EQ(slots.slot(6), 11);
  EXPECT_EQ(slots.slot(7), 12);
  EXPECT_EQ(slots.slot(25), 13);
  slots.place({4});
  EXPECT_EQ(slots.slot(4), 11);
  EXPECT_EQ(slots.slot(6), -1);
  EXPECT_EQ(slots.slot(25), -1);
  EXPECT_EQ(slots.slot(8), 5);  // home rows never move
  EXPECT_EQ(slots.peak_placed(), 3);
  EXPECT_THROW(slots.place({4, 6, 7, 9}), Error);  // more than the cache holds
  EXPECT_THROW(slots.place({8}), Error);           // an own row is never fetched
  EXPECT_THROW(slots.place({1}), Error);           // nor a hot one
  RowSlots whole(RowLayout::whole(5));
  EXPECT_NO_THROW(whole.place({}));
  EXPECT_THROW(whole.place({3}), Error);
}

TEST(RowLayout, HomeRowsOfAWholeTableAndTheirInitialValues) {
  const int64_t V = 11, dim = 3;
  const RowLayout layout = RowLayout::sharded(V, 2, 0, 2, 4);  // owns 2, 4, 6, 8, 10
  ParameterStore store;
  Parameter& whole = store.add("whole", {V, dim}, true);
  Parameter& part = store.add("part", {layout.stored(), dim}, true);
  Rng a(3, kRngInit), b(3, kRngInit);
  init_uniform(whole, 0.5f, a);
  init_uniform_rows(part, layout, 0.5f, b);
  EXPECT_EQ(a.uniform(), b.uniform());  // the same number of draws
  const Tensor home = take_home_rows(layout, whole.value);
  ASSERT_EQ(home.size(0), 7);
  const std::vector<int64_t> ids = {0, 1, 2, 4, 6, 8, 10};
  for (int64_t s = 0; s < 7; ++s)
    for (int64_t e = 0; e < dim; ++e) {
      EXPECT_EQ(home.data<float>()[s * dim + e], whole.value.data<float>()[ids[s] * dim + e]);
      EXPECT_EQ(part.value.data<float>()[s * dim + e], whole.value.data<float>()[ids[s] * dim + e]);
    }
  EXPECT_THROW(take_home_rows(layout, Tensor::zeros({V - 1, dim})), Error);
  // The identity layout shares the tensor.
  EXPECT_EQ(take_home_rows(RowLayout::whole(V), whole.value).data<float>(),
            whole.value.data<float>());
}

}  // namespace
}  // namespace elmo
