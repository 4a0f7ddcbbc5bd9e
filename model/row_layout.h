// Where the rows of a sparse table (embedding [V, E], softmax weight [V, P] and bias [V]) live
// in one process's storage (DESIGN.md §6, docs/ARCHITECTURE.md "Sharded storage").
//
// A process alone (world 1) stores every row at its id: the layout is the identity and nothing
// below costs anything. A rank of a distributed run stores, in one [stored(), dim] tensor:
//   slots [0, hot)                 the hot head, replicated (slot = id)
//   slots [hot, hot + owned())     its own tail rows, compacted in id order: the tail is dealt
//                                  round-robin, rank r owns ids hot + r + k * world, at slot
//                                  hot + k (comm/sparse_exchange.h TailShard deals the same)
//   slots [home(), stored())       the step cache: remote tail rows fetched for the current
//                                  step, placed there step by step (RowSlots::place)
// Only hot and owned rows ("home" rows) have optimizer state, so the accumulators are
// [home(), dim]. Ids map to slots through a host map [V] of int32 (-1: not held), which the
// model reads when it gathers rows; the ids the model computes with (targets, samples,
// gradients) stay vocabulary ids.
// What it is not: the row exchange (comm/sparse_exchange.h) nor the choice of the hot head.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace elmo {

struct RowLayout {
  int64_t vocab = 0;  // V
  int64_t hot = 0;    // ids below are replicated (sharded layouts only)
  int rank = 0;
  int world = 1;      // 1: the identity layout (every row at its id)
  int64_t cache = 0;  // step-cache slots (sharded layouts only)

  // The identity layout of a table of `vocab` rows.
  static RowLayout whole(int64_t vocab) { return RowLayout{vocab, 0, 0, 1, 0}; }
  // Rank `rank` of `world` with ids < hot replicated and room for `cache` fetched rows; world 1
  // gives the identity layout.
  static RowLayout sharded(int64_t vocab, int64_t hot, int rank, int world, int64_t cache);

  bool is_sharded() const { return world > 1; }
  int64_t owned() const {
    if (!is_sharded()) return vocab - hot;
    const int64_t tail = vocab - hot;
    return tail > rank ? (tail - rank + world - 1) / world : 0;
  }
  int64_t home() const { return is_sharded() ? hot + owned() : vocab; }  // rows with state
  int64_t stored() const { return is_sharded() ? home() + cache : vocab; }
  bool is_home(int64_t id) const { return !is_sharded() || id < hot || (id - hot) % world == rank; }
  // Slot of a home id (hot or owned).
  int64_t home_slot(int64_t id) const {
    return id < hot || !is_sharded() ? id : hot + (id - hot) / world;
  }
  // Id of home slot s.
  int64_t home_id(int64_t s) const {
    return s < hot || !is_sharded() ? s : hot + rank + (s - hot) * world;
  }
};

// A table group's layout and its host id -> slot map (the embedding has one, the softmax weight
// and bias share one). The map exists only for sharded layouts; slot() is the identity
// otherwise.
class RowSlots {
 public:
  RowSlots() = default;
  explicit RowSlots(const RowLayout& layout);

  const RowLayout& layout() const { return layout_; }
  // The map [V] (null for the identity layout): home ids at their slots, placed ids at their
  // cache slots, -1 elsewhere.
  const int32_t* map() const { return map_.empty() ? nullptr : map_.data(); }
  int32_t slot(int32_t id) const { return map_.empty() ? id : map_[id]; }
  // Puts `ids` (remote tail ids, ascending unique, at most layout().cache of them) into the
  // cache slots home() + i, replacing the previous placement (its ids map to -1 again). Error
  // when they do not fit or one is a home id.
  void place(const std::vector<int32_t>& ids);
  const std::vector<int32_t>& placed() const { return placed_; }
  // Most ids placed at once so far (how much of the cache was ever written).
  int64_t peak_placed() const { return peak_placed_; }

 private:
  RowLayout layout_ = RowLayout::whole(0);
  std::vector<int32_t> map_;
  std::vector<int32_t> placed_;
  int64_t peak_placed_ = 0;
};

// The embedding's and the softmax's layouts (BiLM's constructor).
struct TableLayouts {
  RowLayout embedding = RowLayout::whole(0);
  RowLayout softmax = RowLayout::whole(0);
  static TableLayouts whole(int64_t vocab) {
    return {RowLayout::whole(vocab), RowLayout::whole(vocab)};
  }
};

// The home rows of `layout` taken from a whole table [V, ...] (any device): a host tensor
// [home(), ...] (the tensor itself, shared, for the identity layout).
Tensor take_home_rows(const RowLayout& layout, const Tensor& whole);

}  // namespace elmo
