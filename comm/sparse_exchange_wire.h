// The messages of comm/sparse_exchange: active-message header, message kinds and the "rows
// payload" layout (per-table counts, ids, row values) with its writer and its checked parser.
// What it is not: a general serialisation library; both ends run the same build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "comm/sparse_exchange.h"
#include "comm/ucx_util.h"

namespace elmo::sparse_wire {

constexpr uint32_t kMagic = 0x454c4d58;  // "ELMX"
constexpr unsigned kAmId = 7;            // the one active-message id; the kind is in the header

enum class MsgKind : uint32_t {
  kHello = 1,         // payload: table descriptor text
  kFetchRequest = 2,  // rows payload without values: the ids asked for
  kFetchReply = 3,    // rows payload: the ids asked for and their values
  kStepDone = 4,      // rows payload: refreshed rows of the requester's next step
  kGradients = 5,     // rows payload: gradient rows for the receiver's owned ids
  kGoodbye = 6,       // no payload
};
constexpr uint32_t kLastKind = 6;
const char* kind_name(uint32_t kind);  // "fetch reply"; "unknown" outside the enum

// Active-message header. In UCX 1.13 it must stay valid until the send completes.
struct MsgHeader {
  uint32_t magic = kMagic;
  uint32_t kind = 0;
  int64_t step = 0;
  int32_t src = 0;
  int32_t num_tables = 0;
  uint64_t payload_bytes = 0;
};

// Checks the active-message header that arrived with a payload of payload_bytes at `rank` of a
// world of `world_size`: its size, magic, sender (a peer), kind and payload size. "" and *out
// filled when it is fine, else what is wrong (the message is then dropped as a protocol error).
std::string check_header(const void* header, size_t header_length, size_t payload_bytes, int rank,
                         int world_size, MsgHeader* out);

// Rows payload: int64 counts[num_tables]; int32 ids[sum of counts] (table after table);
// then, when the message carries rows, f32 values[sum of counts_t * dim_t] (table after table).
// Buffers are 64-byte aligned, so every part is aligned for its type.
struct RowsSource {
  std::span<const int32_t> ids;
  const float* rows = nullptr;  // nullptr: gather the ids' rows from the table values
  // Empty: ids[i]'s row is rows[i * dim]; else rows[positions[i] * dim] (a subset of a larger
  // [n, dim] block).
  std::span<const int32_t> positions;

  const float* row(size_t i, int64_t dim) const {
    return rows + (positions.empty() ? static_cast<int64_t>(i) : positions[i]) * dim;
  }
};

struct RowsView {
  std::vector<std::span<const int32_t>> ids;  // [table]
  std::vector<const float*> values;           // [table] -> [ids.size(), dim] or nullptr
  int64_t rows = 0;                           // total ids over tables
};

size_t rows_payload_bytes(const std::vector<SparseTable>& tables,
                          const std::vector<RowsSource>& sources, bool with_values);
// Writes sources[t] for every table into buffer (whose size is rows_payload_bytes(...)).
void write_rows(StagingBuffer& buffer, const std::vector<SparseTable>& tables,
                const std::vector<RowsSource>& sources, bool with_values);
// Parses a rows payload (nullptr: empty); returns "" or what is wrong with it. The view points
// into the buffer.
std::string parse_rows(const StagingBuffer* buffer, const std::vector<SparseTable>& tables,
                       bool with_values, RowsView* view);
// "" when ids are ascending, unique and inside [begin, end); else what is wrong.
std::string check_id_run(std::span<const int32_t> ids, int64_t begin, int64_t end);
// "" when ids are ascending, unique and owned by `shard`; else what is wrong.
std::string check_owned_ids(std::span<const int32_t> ids, const TailShard& shard);

}  // namespace elmo::sparse_wire
