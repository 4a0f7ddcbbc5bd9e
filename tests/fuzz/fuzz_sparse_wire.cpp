// Fuzz target: the sparse-exchange messages (comm/sparse_exchange_wire.h) as a rank receives
// them from a peer: the active-message header (check_header), then the rows payload
// (parse_rows) and the id checks an owner or a requester applies (check_owned_ids,
// check_id_run). Input: 32 header bytes, then the payload. The receiver is rank 1 of 3; its
// tables are those of a small model (50 rows, 10 hot; dims 4, 4 and 1). Invariant: a payload
// that parses lies wholly inside the buffer.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "comm/sparse_exchange_wire.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
constexpr int kRank = 1, kWorld = 3;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  using namespace elmo::sparse_wire;
  static float values[3][50 * 4] = {};
  const std::vector<SparseTable> tables = {{"embedding.weight", values[0], 50, 4, 10},
                                           {"softmax.weight", values[1], 50, 4, 10},
                                           {"softmax.bias", values[2], 50, 1, 10}};
  const size_t header_bytes = std::min<size_t>(size, sizeof(MsgHeader));
  const size_t payload_bytes = size - header_bytes;
  MsgHeader header;
  if (!check_header(data, header_bytes, payload_bytes, kRank, kWorld, &header).empty()) return 0;
  // Staged as the receiver stages it: a 64-byte aligned buffer.
  const size_t capacity = (payload_bytes + 63) / 64 * 64 + 64;
  std::unique_ptr<char, decltype(&std::free)> memory(
      static_cast<char*>(std::aligned_alloc(64, capacity)), &std::free);
  if (payload_bytes > 0) std::memcpy(memory.get(), data + header_bytes, payload_bytes);
  StagingBuffer buffer{memory.get(), capacity, payload_bytes, nullptr};
  if (header.num_tables != static_cast<int32_t>(tables.size())) return 0;  // refused by dispatch
  const auto kind = static_cast<MsgKind>(header.kind);
  if (kind == MsgKind::kHello || kind == MsgKind::kGoodbye) return 0;
  const bool with_values = kind != MsgKind::kFetchRequest;
  RowsView view;
  if (!parse_rows(payload_bytes > 0 ? &buffer : nullptr, tables, with_values, &view).empty())
    return 0;
  const char* end = memory.get() + payload_bytes;
  for (size_t t = 0; t < tables.size(); ++t) {
    if (reinterpret_cast<const char*>(view.ids[t].data() + view.ids[t].size()) > end)
      fuzz::fail("ids beyond the payload");
    if (with_values &&
        reinterpret_cast<const char*>(view.values[t] + view.ids[t].size() * tables[t].dim) > end)
      fuzz::fail("values beyond the payload");
    const TailShard own{tables[t].rows, tables[t].hot_rows, kRank, kWorld};
    check_owned_ids(view.ids[t], own);
    check_id_run(view.ids[t], 0, tables[t].rows);
  }
  return 0;
}
