#include "comm/sparse_exchange_wire.h"

#include <cstring>

#include "runtime/error.h"

namespace elmo::sparse_wire {

const char* kind_name(uint32_t kind) {
  switch (static_cast<MsgKind>(kind)) {
    case MsgKind::kHello:
      return "hello";
    case MsgKind::kFetchRequest:
      return "fetch request";
    case MsgKind::kFetchReply:
      return "fetch reply";
    case MsgKind::kStepDone:
      return "step completion";
    case MsgKind::kGradients:
      return "gradients";
    case MsgKind::kGoodbye:
      return "goodbye";
  }
  return "unknown";
}

size_t rows_payload_bytes(const std::vector<SparseTable>& tables,
                          const std::vector<RowsSource>& sources, bool with_values) {
  size_t bytes = tables.size() * sizeof(int64_t);
  for (size_t t = 0; t < tables.size(); ++t) {
    bytes += sources[t].ids.size() * sizeof(int32_t);
    if (with_values) bytes += sources[t].ids.size() * tables[t].dim * sizeof(float);
  }
  return bytes;
}

void write_rows(StagingBuffer& buffer, const std::vector<SparseTable>& tables,
                const std::vector<RowsSource>& sources, bool with_values) {
  char* out = buffer.data;
  for (size_t t = 0; t < tables.size(); ++t) {
    const int64_t count = static_cast<int64_t>(sources[t].ids.size());
    std::memcpy(out, &count, sizeof count);
    out += sizeof count;
  }
  for (size_t t = 0; t < tables.size(); ++t) {
    const size_t bytes = sources[t].ids.size() * sizeof(int32_t);
    if (bytes > 0) std::memcpy(out, sources[t].ids.data(), bytes);
    out += bytes;
  }
  if (with_values) {
    for (size_t t = 0; t < tables.size(); ++t) {
      const size_t row_bytes = tables[t].dim * sizeof(float);
      const auto& source = sources[t];
      if (source.rows != nullptr && source.positions.empty()) {
        const size_t bytes = source.ids.size() * row_bytes;
        if (bytes > 0) std::memcpy(out, source.rows, bytes);
        out += bytes;
      } else if (source.rows != nullptr) {
        ELMO_CHECK(source.positions.size() == source.ids.size(), "rows payload: ",
                   source.positions.size(), " positions for ", source.ids.size(), " ids");
        for (size_t i = 0; i < source.ids.size(); ++i) {
          std::memcpy(out, source.row(i, tables[t].dim), row_bytes);
          out += row_bytes;
        }
      } else {
        for (const int32_t id : source.ids) {
          std::memcpy(out, tables[t].row(id), row_bytes);
          out += row_bytes;
        }
      }
    }
  }
  ELMO_CHECK(static_cast<size_t>(out - buffer.data) == buffer.size, "rows payload size");
}

std::string parse_rows(const StagingBuffer* buffer, const std::vector<SparseTable>& tables,
                       bool with_values, RowsView* view) {
  const size_t num_tables = tables.size();
  const size_t bytes = buffer == nullptr ? 0 : buffer->size;
  if (bytes < num_tables * sizeof(int64_t))
    return str("payload of ", bytes, " bytes is shorter than its ", num_tables, " counts");
  const char* in = buffer->data;
  std::vector<int64_t> counts(num_tables);
  std::memcpy(counts.data(), in, num_tables * sizeof(int64_t));
  in += num_tables * sizeof(int64_t);
  size_t expected = num_tables * sizeof(int64_t);
  for (size_t t = 0; t < num_tables; ++t) {
    if (counts[t] < 0 || counts[t] > tables[t].rows)
      return str("table ", t, " count ", counts[t], " outside [0, ", tables[t].rows, "]");
    expected += counts[t] * sizeof(int32_t);
    if (with_values) expected += counts[t] * tables[t].dim * sizeof(float);
  }
  if (bytes != expected) return str("payload has ", bytes, " bytes but its counts need ", expected);
  view->ids.resize(num_tables);
  view->values.assign(num_tables, nullptr);
  view->rows = 0;
  for (size_t t = 0; t < num_tables; ++t) {
    view->ids[t] = {reinterpret_cast<const int32_t*>(in), static_cast<size_t>(counts[t])};
    in += counts[t] * sizeof(int32_t);
    view->rows += counts[t];
  }
  if (with_values) {
    for (size_t t = 0; t < num_tables; ++t) {
      view->values[t] = reinterpret_cast<const float*>(in);
      in += counts[t] * tables[t].dim * sizeof(float);
    }
  }
  return "";
}

std::string check_header(const void* header, size_t header_length, size_t payload_bytes, int rank,
                         int world_size, MsgHeader* out) {
  if (header_length != sizeof(MsgHeader))
    return str("active-message header of ", header_length, " bytes (expected ", sizeof(MsgHeader),
               ")");
  std::memcpy(out, header, sizeof(MsgHeader));
  if (out->magic != kMagic) return "wrong magic number";
  if (out->src < 0 || out->src >= world_size || out->src == rank)
    return str("sender rank ", out->src, " is not a peer");
  if (out->kind < 1 || out->kind > kLastKind) return str("unknown message kind ", out->kind);
  if (out->payload_bytes != payload_bytes)
    return str(kind_name(out->kind), " of ", payload_bytes, " bytes, header says ",
               out->payload_bytes);
  return "";
}

std::string check_id_run(std::span<const int32_t> ids, int64_t begin, int64_t end) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < begin || ids[i] >= end)
      return str("id ", ids[i], " at position ", i, " is outside [", begin, ", ", end, ")");
    if (i > 0 && ids[i] <= ids[i - 1])
      return str("ids are not ascending and unique: position ", i, " holds ", ids[i], " after ",
                 ids[i - 1]);
  }
  return "";
}

std::string check_owned_ids(std::span<const int32_t> ids, const TailShard& shard) {
  const std::string problem = check_id_run(ids, shard.hot_rows, shard.rows);
  if (!problem.empty()) return problem;
  for (size_t i = 0; i < ids.size(); ++i)
    if (!shard.owns(ids[i]))
      return str("id ", ids[i], " at position ", i, " belongs to rank ",
                 (ids[i] - shard.hot_rows) % shard.world_size, ", not to rank ", shard.rank);
  return "";
}

}  // namespace elmo::sparse_wire
