// Unit tests of comm/sparse_exchange_wire: the rows payload round trip (contiguous and gathered
// rows), requests without values, and the parser's refusal of malformed payloads.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "comm/sparse_exchange_wire.h"

namespace elmo::sparse_wire {
namespace {

struct Fixture {
  std::vector<float> a = std::vector<float>(10 * 3), b = std::vector<float>(6 * 1);
  std::vector<SparseTable> tables;
  Fixture() {
    std::iota(a.begin(), a.end(), 0.0f);
    std::iota(b.begin(), b.end(), 100.0f);
    tables = {{"a", a.data(), 10, 3, 2}, {"b", b.data(), 6, 1, 0}};
  }
};

// A buffer of exactly `bytes`, backed by `storage` (8-byte aligned like the pool's).
StagingBuffer buffer_of(std::vector<int64_t>& storage, size_t bytes) {
  storage.assign(bytes / 8 + 1, 0);
  StagingBuffer buffer;
  buffer.data = reinterpret_cast<char*>(storage.data());
  buffer.capacity = storage.size() * 8;
  buffer.size = bytes;
  return buffer;
}

TEST(SparseExchangeWire, RowsRoundTripWithGatheredAndContiguousRows) {
  Fixture f;
  const std::vector<int32_t> ids_a = {2, 7, 9}, ids_b = {5};
  const std::vector<float> rows_b = {-1.5f};
  const std::vector<RowsSource> sources = {{ids_a, nullptr, {}}, {ids_b, rows_b.data(), {}}};
  const size_t bytes = rows_payload_bytes(f.tables, sources, true);
  EXPECT_EQ(bytes, 2 * 8 + 4 * 4 + (3 * 3 + 1) * 4u);
  std::vector<int64_t> storage;
  StagingBuffer buffer = buffer_of(storage, bytes);
  write_rows(buffer, f.tables, sources, true);
  RowsView view;
  ASSERT_EQ(parse_rows(&buffer, f.tables, true, &view), "");
  EXPECT_EQ(view.rows, 4);
  EXPECT_EQ(std::vector<int32_t>(view.ids[0].begin(), view.ids[0].end()), ids_a);
  EXPECT_EQ(std::vector<int32_t>(view.ids[1].begin(), view.ids[1].end()), ids_b);
  for (size_t i = 0; i < ids_a.size(); ++i)  // gathered from table a
    EXPECT_EQ(std::memcmp(view.values[0] + i * 3, f.a.data() + ids_a[i] * 3, 12), 0);
  EXPECT_EQ(view.values[1][0], -1.5f);  // copied from the contiguous rows
}

// Rows picked out of a larger block by position (one owner's share of a gradient list).
TEST(SparseExchangeWire, RowsAtPositionsArePickedFromTheBlock) {
  Fixture f;
  const std::vector<int32_t> ids = {4, 9}, positions = {2, 0};
  const std::vector<float> block = {1, 1, 1, 2, 2, 2, 3, 3, 3};  // [3, 3]
  const std::vector<RowsSource> sources = {{ids, block.data(), positions}, {}};
  std::vector<int64_t> storage;
  StagingBuffer buffer = buffer_of(storage, rows_payload_bytes(f.tables, sources, true));
  write_rows(buffer, f.tables, sources, true);
  RowsView view;
  ASSERT_EQ(parse_rows(&buffer, f.tables, true, &view), "");
  EXPECT_EQ(std::vector<float>(view.values[0], view.values[0] + 6),
            (std::vector<float>{3, 3, 3, 1, 1, 1}));
}

TEST(SparseExchangeWire, OwnedIdsFollowTheShard) {
  const TailShard shard = tail_shard(20, 4, 1, 3);  // owns 5, 8, 11, 14, 17
  EXPECT_EQ(check_owned_ids(std::vector<int32_t>{5, 11, 17}, shard), "");
  EXPECT_EQ(check_owned_ids(std::vector<int32_t>{}, shard), "");
  EXPECT_EQ(check_owned_ids(std::vector<int32_t>{5, 6}, shard),
            "id 6 at position 1 belongs to rank 2, not to rank 1");
  EXPECT_EQ(check_owned_ids(std::vector<int32_t>{2}, shard), "id 2 at position 0 is outside [4, 20)");
  EXPECT_EQ(check_owned_ids(std::vector<int32_t>{8, 5}, shard),
            "ids are not ascending and unique: position 1 holds 5 after 8");
}

TEST(SparseExchangeWire, RequestsCarryIdsOnlyAndEmptyListsAreFine) {
  Fixture f;
  const std::vector<int32_t> ids = {3};
  const std::vector<RowsSource> sources = {{ids, nullptr, {}}, {}};
  const size_t bytes = rows_payload_bytes(f.tables, sources, false);
  EXPECT_EQ(bytes, 2 * 8 + 4u);
  std::vector<int64_t> storage;
  StagingBuffer buffer = buffer_of(storage, bytes);
  write_rows(buffer, f.tables, sources, false);
  RowsView view;
  ASSERT_EQ(parse_rows(&buffer, f.tables, false, &view), "");
  EXPECT_EQ(view.ids[0].size(), 1u);
  EXPECT_TRUE(view.ids[1].empty());
  EXPECT_EQ(view.values[0], nullptr);
  // The same bytes read as a message with values are too short.
  EXPECT_NE(parse_rows(&buffer, f.tables, true, &view).find("counts need"), std::string::npos);
}

TEST(SparseExchangeWire, MalformedPayloadsAreRefused) {
  Fixture f;
  RowsView view;
  EXPECT_NE(parse_rows(nullptr, f.tables, false, &view).find("shorter than its 2 counts"),
            std::string::npos);
  std::vector<int64_t> storage;
  StagingBuffer buffer = buffer_of(storage, 16);
  storage[0] = 11;  // table a has 10 rows
  EXPECT_NE(parse_rows(&buffer, f.tables, false, &view).find("table 0 count 11 outside [0, 10]"),
            std::string::npos);
  storage[0] = -1;
  EXPECT_NE(parse_rows(&buffer, f.tables, false, &view).find("count -1"), std::string::npos);
  storage[0] = 1;
  EXPECT_NE(parse_rows(&buffer, f.tables, false, &view).find("has 16 bytes but its counts need 20"),
            std::string::npos);
}

TEST(SparseExchangeWire, IdRunChecksAndKindNames) {
  const std::vector<int32_t> good = {2, 3, 9}, outside = {2, 10}, repeated = {4, 4};
  EXPECT_EQ(check_id_run(good, 2, 10), "");
  EXPECT_EQ(check_id_run({}, 0, 0), "");
  EXPECT_EQ(check_id_run(outside, 2, 10), "id 10 at position 1 is outside [2, 10)");
  EXPECT_EQ(check_id_run(repeated, 0, 10),
            "ids are not ascending and unique: position 1 holds 4 after 4");
  EXPECT_STREQ(kind_name(static_cast<uint32_t>(MsgKind::kStepDone)), "step completion");
  EXPECT_STREQ(kind_name(kLastKind + 1), "unknown");
}

// check_header, as a rank checks what arrives from a peer before anything else.
TEST(SparseExchangeWire, HeadersFromPeersAreChecked) {
  const auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  MsgHeader h;
  h.kind = static_cast<uint32_t>(MsgKind::kGradients);
  h.src = 2;
  h.num_tables = 3;
  h.payload_bytes = 40;
  MsgHeader out;
  EXPECT_EQ(check_header(&h, sizeof h, 40, 1, 3, &out), "");
  EXPECT_EQ(out.src, 2);
  EXPECT_TRUE(has(check_header(&h, sizeof h - 1, 40, 1, 3, &out), "header of 31 bytes"));
  EXPECT_TRUE(has(check_header(&h, sizeof h, 41, 1, 3, &out), "41 bytes, header says 40"));
  EXPECT_TRUE(has(check_header(&h, sizeof h, 40, 2, 3, &out), "sender rank 2 is not a peer"));
  EXPECT_TRUE(has(check_header(&h, sizeof h, 40, 1, 2, &out), "sender rank 2 is not a peer"));
  MsgHeader bad = h;
  bad.magic ^= 1;
  EXPECT_EQ(check_header(&bad, sizeof bad, 40, 1, 3, &out), "wrong magic number");
  bad = h;
  bad.kind = 99;
  EXPECT_EQ(check_header(&bad, sizeof bad, 40, 1, 3, &out), "unknown message kind 99");
}
}  // namespace
}  // namespace elmo::sparse_wire
