#include "model/row_layout.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace elmo {

RowLayout RowLayout::sharded(int64_t vocab, int64_t hot, int rank, int world, int64_t cache) {
  ELMO_CHECK(vocab > 0 && vocab <= std::numeric_limits<int32_t>::max(), "table of ", vocab,
             " rows: need 1 to 2^31-1");
  ELMO_CHECK(hot >= 0 && hot <= vocab, "hot rows ", hot, " outside [0, ", vocab, "]");
  ELMO_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " of ", world);
  ELMO_CHECK(cache >= 0, "step cache of ", cache, " rows");
  if (world == 1) return whole(vocab);
  return RowLayout{vocab, hot, rank, world, cache};
}

RowSlots::RowSlots(const RowLayout& layout) : layout_(layout) {
  if (!layout.is_sharded()) return;
  map_.assign(static_cast<size_t>(layout.vocab), -1);
  for (int64_t s = 0; s < layout.home(); ++s)
    map_[static_cast<size_t>(layout.home_id(s))] = static_cast<int32_t>(s);
}

void RowSlots::place(const std::vector<int32_t>& ids) {
  if (map_.empty()) {
    ELMO_CHECK(ids.empty(), "row slots: ", ids.size(), " rows placed in an identity layout");
    return;
  }
  ELMO_CHECK(static_cast<int64_t>(ids.size()) <= layout_.cache, "row slots: ", ids.size(),
             " fetched rows do not fit the step cache of ", layout_.cache, " rows");
  for (const int32_t id : placed_) map_[id] = -1;
  placed_ = ids;
  const int32_t first = static_cast<int32_t>(layout_.home());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    ELMO_CHECK(id >= 0 && id < layout_.vocab && !layout_.is_home(id), "row slots: id ", id,
               " is not a remote row of rank ", layout_.rank);
    map_[id] = first + static_cast<int32_t>(i);
  }
  peak_placed_ = std::max<int64_t>(peak_placed_, static_cast<int64_t>(ids.size()));
}

Tensor take_home_rows(const RowLayout& layout, const Tensor& whole) {
  if (!layout.is_sharded()) return whole;
  // Already the home rows (a rank's share of a checkpoint, io/checkpoint.h CheckpointPart).
  if (whole.defined() && whole.size(0) == layout.home() && whole.dtype() == DType::kF32)
    return whole.device().is_cpu() ? whole : whole.to(Device::cpu());
  ELMO_CHECK(whole.defined() && whole.size(0) == layout.vocab && whole.dtype() == DType::kF32,
             "table rows: expected f32 with ", layout.vocab, " rows, got ",
             whole.defined() ? whole.describe() : std::string("undefined"));
  const Tensor host = whole.device().is_cpu() ? whole : whole.to(Device::cpu());
  std::vector<int64_t> dims = whole.shape().vec();
  dims[0] = layout.home();
  Tensor out = Tensor::empty(Shape(dims), DType::kF32);
  const int64_t dim = whole.numel() / whole.size(0);
  const float* in = host.data<float>();
  float* o = out.data<float>();
  for (int64_t s = 0; s < layout.home(); ++s)
    std::memcpy(o + s * dim, in + layout.home_id(s) * dim, sizeof(float) * dim);
  return out;
}

}  // namespace elmo
