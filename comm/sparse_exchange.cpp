// SparseExchange: the caller-side step protocol (requests, applying replies and refreshes,
// rank-order sums, refresh and deferred answers in rows_updated) and the public wrapper. Row
// ownership, construction and teardown are in sparse_exchange_setup.cpp, the comm thread in
// sparse_exchange_comm.cpp; semantics in the header.
#include "comm/sparse_exchange.h"

#include <algorithm>
#include <cstring>

#include "comm/sparse_exchange_impl.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

using namespace sparse_wire;
using namespace sparse_detail;

// ---------------------------------------------------------------------------------------------
// Caller side

void SparseExchange::Impl::check_table(int t) const {
  if (t < 0 || t >= num_tables())
    throw Error(str("SparseExchange: table ", t, " does not exist (", num_tables(), " tables)"));
}

int SparseExchange::Impl::owner(int t, int64_t id) const {
  check_table(t);
  const SparseTable& table = tables_[t];
  if (id < 0 || id >= table.rows)
    throw Error(str("SparseExchange::owner: id ", id, " of table ", t, " '", table.name,
                    "' is out of range [0, ", table.rows, ")"));
  return tail_owner(table.rows, table.hot_rows, topo_.world_size, id);
}

void SparseExchange::Impl::check_usable(const char* call) const {
  if (closed_) throw Error(str("SparseExchange::", call, " (", label_, ") after close()"));
}

void SparseExchange::Impl::check_ids(const char* call, int64_t step, int t,
                                     std::span<const int32_t> ids) const {
  const std::string problem = check_id_run(ids, 0, tables_[t].rows);
  if (!problem.empty())
    throw Error(str("SparseExchange::", call, "(step ", step, ", ", label_, "): table ", t, " '",
                    tables_[t].name, "': ", problem,
                    "; pass each table's ids sorted ascending without duplicates, in [0, rows)"));
}

// Deals the ids of every table out to their owners (hot ids to nobody), keeping each id's
// position in `ids` so that its row can be found in the caller's [ids.size(), dim] rows.
void SparseExchange::Impl::split_by_owner(const std::vector<std::span<const int32_t>>& ids,
                                          OwnerSplit& split) const {
  const int world = topo_.world_size;
  split.ids.resize(tables_.size());
  split.positions.resize(tables_.size());
  for (size_t t = 0; t < tables_.size(); ++t) {
    split.ids[t].resize(world);
    split.positions[t].resize(world);
    for (int r = 0; r < world; ++r) {
      split.ids[t][r].clear();
      split.positions[t][r].clear();
    }
    const int64_t hot = tables_[t].hot_rows;
    for (size_t i = 0; i < ids[t].size(); ++i) {
      const int32_t id = ids[t][i];
      if (id < hot) continue;
      const int owner = static_cast<int>((id - hot) % world);
      split.ids[t][owner].push_back(id);
      split.positions[t][owner].push_back(static_cast<int32_t>(i));
    }
  }
}

// The rows payload sources of `rank`'s part of a split; rows[t] null: gather from the table.
std::vector<RowsSource> SparseExchange::Impl::owner_sources(const OwnerSplit& split,
                                                            const std::vector<const float*>& rows,
                                                            int rank) const {
  std::vector<RowsSource> sources(tables_.size());
  for (size_t t = 0; t < tables_.size(); ++t) {
    sources[t].ids = split.ids[t][rank];
    sources[t].rows = rows[t];
    if (rows[t] != nullptr) sources[t].positions = split.positions[t][rank];
  }
  return sources;
}

BufferRef SparseExchange::Impl::encode_rows(const std::vector<RowsSource>& sources,
                                            bool with_values) {
  BufferRef buffer = pool_->acquire(rows_payload_bytes(tables_, sources, with_values));
  write_rows(*buffer, tables_, sources, with_values);
  return buffer;
}

void SparseExchange::Impl::enqueue(std::vector<Outgoing> messages) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& message : messages) outbox_.push_back(std::move(message));
  }
  wake();
}

void SparseExchange::Impl::throw_if_failed(const char* call, int64_t step) const {
  const std::string where = str(" [", call, ", step ", step, "]");
  if (first_lost_ >= 0) throw PeerLost(first_lost_, lost_message_ + where);
  if (!fatal_.empty()) throw CommError(fatal_ + where);
}

std::vector<int> SparseExchange::Impl::missing_in(const Staged& staged, int64_t step) const {
  std::vector<int> missing;
  const auto it = staged.find(step);
  for (int r = 0; r < topo_.world_size; ++r) {
    if (r == topo_.rank) continue;
    if (it == staged.end() || !it->second[r]) missing.push_back(r);
  }
  return missing;
}

void SparseExchange::Impl::check_stale(const Staged& staged, int64_t first_valid, const char* what,
                                       const char* call, int64_t step) const {
  if (staged.empty() || staged.begin()->first >= first_valid) return;
  const auto& [old_step, slots] = *staged.begin();
  int sender = -1;
  for (int r = 0; r < topo_.world_size && sender < 0; ++r)
    if (slots[r]) sender = r;
  throw CommError(str("SparseExchange (", label_, "): protocol error with rank ", sender, ": a ",
                      what, " for step ", old_step, " is left over in ", call, " at step ", step,
                      "; every rank must make the same calls for the same steps"));
}

void SparseExchange::Impl::request_rows(int64_t step,
                                        const std::vector<std::vector<int32_t>>& ids_per_table) {
  check_usable("request_rows");
  if (requested_ && step != *requested_ + 1)
    throw Error(str("SparseExchange::request_rows(step ", step, ", ", label_,
                    "): the previous "
                    "request was for step ",
                    *requested_, "; steps must be consecutive"));
  if (requested_ && waited_ != requested_)
    throw Error(str("SparseExchange::request_rows(step ", step, ", ", label_, "): call wait_rows(",
                    *requested_, ") first (one step of prefetch at most)"));
  if (ids_per_table.size() != tables_.size())
    throw Error(str("SparseExchange::request_rows(step ", step, ", ", label_, "): got ",
                    ids_per_table.size(), " id lists for ", tables_.size(), " tables"));
  std::vector<std::span<const int32_t>> ids(tables_.size());
  for (int t = 0; t < num_tables(); ++t) {
    ids[t] = ids_per_table[t];
    check_ids("request_rows", step, t, ids[t]);
  }
  const int world = topo_.world_size;
  if (world > 1) {
    std::unique_lock<std::mutex> lock(mu_);
    throw_if_failed("request_rows", step);
    lock.unlock();
    std::vector<IdLists> per_peer(world);
    std::vector<Outgoing> messages;
    const std::vector<const float*> no_rows(tables_.size(), nullptr);
    split_by_owner(ids, split_);
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      const std::vector<RowsSource> slices = owner_sources(split_, no_rows, peer);
      per_peer[peer].resize(tables_.size());
      for (int t = 0; t < num_tables(); ++t)
        per_peer[peer][t].assign(slices[t].ids.begin(), slices[t].ids.end());
      BufferRef payload = encode_rows(slices, false);
      stats_.bytes_requested += static_cast<int64_t>(payload->size);
      messages.push_back({peer, MsgKind::kFetchRequest, step, std::move(payload)});
    }
    requested_ids_[step] = std::move(per_peer);
    enqueue(std::move(messages));
  }
  requested_ = step;
}

void SparseExchange::Impl::wait_rows(int64_t step) {
  check_usable("wait_rows");
  if (requested_ != step)
    throw Error(str("SparseExchange::wait_rows(step ", step, ", ", label_,
                    "): no request_rows for this step", requested_ ? " (last request: step " : "",
                    requested_ ? std::to_string(*requested_) + ")" : std::string()));
  if (waited_ && *waited_ == step)
    throw Error(str("SparseExchange::wait_rows(step ", step, ", ", label_, ") called twice"));
  if (waited_ && updated_ != waited_)
    throw Error(str("SparseExchange::wait_rows(step ", step, ", ", label_, "): finish step ",
                    *waited_, " first (exchange_gradients, rows_updated)"));
  const bool need_completions = waited_.has_value();  // not at this rank's first step
  const int world = topo_.world_size;
  if (world > 1) {
    const auto start = Clock::now();
    std::vector<BufferRef> replies, completions;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wait_until(
          lock, "wait_rows", step,
          [&] {
            return missing_in(replies_, step).empty() &&
                   (!need_completions || missing_in(done_, step - 1).empty());
          },
          [&] {
            std::string text;
            const std::vector<int> replies_missing = missing_in(replies_, step);
            if (!replies_missing.empty())
              text = str("fetch replies from ", rank_list(replies_missing));
            if (need_completions) {
              const std::vector<int> done_missing = missing_in(done_, step - 1);
              if (!done_missing.empty())
                text += str(text.empty() ? "" : " and ", "step-", step - 1, " completions from ",
                            rank_list(done_missing));
            }
            return text;
          });
      replies = std::move(replies_[step]);
      replies_.erase(step);
      if (need_completions) {
        completions = std::move(done_[step - 1]);
        done_.erase(step - 1);
      }
      check_stale(replies_, step + 1, "fetch reply", "wait_rows", step);
      check_stale(done_, step, "step completion", "wait_rows", step);
    }
    stats_.wait_rows_s += seconds_since(start);

    const auto apply_start = Clock::now();
    const std::vector<IdLists>& asked = requested_ids_.at(step);
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      RowsView view;
      std::string problem = parse_rows(replies[peer].get(), tables_, true, &view);
      for (int t = 0; t < num_tables() && problem.empty(); ++t)
        if (!std::equal(view.ids[t].begin(), view.ids[t].end(), asked[peer][t].begin(),
                        asked[peer][t].end()))
          problem = str("table ", t, " ids differ from the ids asked for");
      if (!problem.empty())
        throw CommError(str("SparseExchange (", label_, "): bad fetch reply from rank ", peer,
                            " for step ", step, ": ", problem));
      for (int t = 0; t < num_tables(); ++t) {
        const int64_t dim = tables_[t].dim;
        for (size_t i = 0; i < view.ids[t].size(); ++i)
          std::memcpy(tables_[t].row(view.ids[t][i]), view.values[t] + i * dim,
                      dim * sizeof(float));
      }
      stats_.rows_fetched += view.rows;
      stats_.bytes_fetched += static_cast<int64_t>(replies[peer]->size);
    }
    for (int peer = 0; peer < world && need_completions; ++peer) {
      if (peer == topo_.rank) continue;
      RowsView view;
      std::string problem = parse_rows(completions[peer].get(), tables_, true, &view);
      for (int t = 0; t < num_tables() && problem.empty(); ++t) {
        problem = check_owned_ids(view.ids[t], shards_[t][peer]);
        for (const int32_t id : view.ids[t])
          if (problem.empty() &&
              !std::binary_search(asked[peer][t].begin(), asked[peer][t].end(), id))
            problem = str("table ", t, " id ", id, " was not asked for");
      }
      if (!problem.empty())
        throw CommError(str("SparseExchange (", label_, "): bad step-", step - 1,
                            " completion from rank ", peer, ": ", problem));
      for (int t = 0; t < num_tables(); ++t) {
        const int64_t dim = tables_[t].dim;
        for (size_t i = 0; i < view.ids[t].size(); ++i)
          std::memcpy(tables_[t].row(view.ids[t][i]), view.values[t] + i * dim,
                      dim * sizeof(float));
      }
      stats_.rows_refreshed += view.rows;
      stats_.bytes_refreshed += static_cast<int64_t>(completions[peer]->size);
    }
    requested_ids_.erase(step);
    stats_.apply_rows_s += seconds_since(apply_start);
  }
  waited_ = step;
}

void SparseExchange::Impl::exchange_gradients(int64_t step, const GradientRows& grads_per_table,
                                              std::vector<SummedRows>& sums) {
  check_usable("exchange_gradients");
  if (waited_ != step)
    throw Error(str("SparseExchange::exchange_gradients(step ", step, ", ", label_,
                    "): call wait_rows(", step, ") first"));
  if (exchanged_ && *exchanged_ == step)
    throw Error(
        str("SparseExchange::exchange_gradients(step ", step, ", ", label_, ") called twice"));
  if (grads_per_table.size() != tables_.size())
    throw Error(str("SparseExchange::exchange_gradients(step ", step, ", ", label_, "): got ",
                    grads_per_table.size(), " gradient tables for ", tables_.size(), " tables"));
  std::vector<std::span<const int32_t>> ids(tables_.size());
  std::vector<const float*> rows(tables_.size());
  for (int t = 0; t < num_tables(); ++t) {
    const auto& [table_ids, table_rows] = grads_per_table[t];
    if (table_ids == nullptr || (table_rows == nullptr && !table_ids->empty()))
      throw Error(str("SparseExchange::exchange_gradients(step ", step, ", ", label_, "): table ",
                      t, " '", tables_[t].name, "' has a null id list or rows"));
    ids[t] = *table_ids;
    rows[t] = table_rows;
    check_ids("exchange_gradients", step, t, ids[t]);
  }
  const int world = topo_.world_size;
  std::vector<BufferRef> contributions(world);
  split_by_owner(ids, split_);
  if (world > 1) {
    std::vector<Outgoing> messages;
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      const std::vector<RowsSource> slices = owner_sources(split_, rows, peer);
      BufferRef payload = encode_rows(slices, true);
      for (const auto& slice : slices) stats_.rows_pushed += static_cast<int64_t>(slice.ids.size());
      stats_.bytes_pushed += static_cast<int64_t>(payload->size);
      messages.push_back({peer, MsgKind::kGradients, step, std::move(payload)});
    }
    enqueue(std::move(messages));
    const auto start = Clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    wait_until(
        lock, "exchange_gradients", step, [&] { return missing_in(grads_, step).empty(); },
        [&] { return str("gradients from ", rank_list(missing_in(grads_, step))); });
    update_step_ = step;  // from here on the comm thread defers fetch requests
    wait_until(
        lock, "exchange_gradients", step, [&] { return readers_ == 0; },
        [] { return std::string("this rank's comm thread to finish answering a fetch"); });
    contributions = std::move(grads_[step]);
    grads_.erase(step);
    check_stale(grads_, step + 1, "gradients", "exchange_gradients", step);
    lock.unlock();
    stats_.exchange_wait_s += seconds_since(start);
  }

  const auto sum_start = Clock::now();
  const std::vector<RowsSource> own = owner_sources(split_, rows, topo_.rank);
  std::vector<RowsView> views(world);
  for (int peer = 0; peer < world; ++peer) {
    if (peer == topo_.rank) continue;
    std::string problem = parse_rows(contributions[peer].get(), tables_, true, &views[peer]);
    for (int t = 0; t < num_tables() && problem.empty(); ++t)
      problem = check_owned_ids(views[peer].ids[t], owned_[t]);
    if (!problem.empty())
      throw CommError(str("SparseExchange (", label_, "): bad gradients from rank ", peer,
                          " for step ", step, ": ", problem));
    stats_.rows_received += views[peer].rows;
    stats_.bytes_received += static_cast<int64_t>(contributions[peer]->size);
  }
  sums.resize(tables_.size());
  for (int t = 0; t < num_tables(); ++t) {
    const int64_t dim = tables_[t].dim;
    std::vector<RowsSource> sources(world);  // rank order
    for (int r = 0; r < world; ++r)
      sources[r] = r == topo_.rank ? own[t] : RowsSource{views[r].ids[t], views[r].values[t], {}};
    std::vector<int32_t>& union_ids = sums[t].ids;
    union_ids.clear();
    for (const auto& source : sources)
      union_ids.insert(union_ids.end(), source.ids.begin(), source.ids.end());
    std::sort(union_ids.begin(), union_ids.end());
    union_ids.erase(std::unique(union_ids.begin(), union_ids.end()), union_ids.end());
    std::vector<float>& out = sums[t].values;
    out.resize(union_ids.size() * dim);  // every element is written below
    std::vector<char> seen(union_ids.size(), 0);
    for (const auto& source : sources) {
      size_t j = 0;
      for (size_t i = 0; i < source.ids.size(); ++i) {
        while (union_ids[j] < source.ids[i]) ++j;
        float* dst = out.data() + j * dim;
        const float* src = source.row(i, dim);
        if (!seen[j]) {
          std::memcpy(dst, src, dim * sizeof(float));
          seen[j] = 1;
        } else {
          for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
        }
      }
    }
    updated_ids_[t] = union_ids;
  }
  stats_.exchange_sum_s += seconds_since(sum_start);
  exchanged_ = step;
}

void SparseExchange::Impl::rows_updated(int64_t step) {
  check_usable("rows_updated");
  if (exchanged_ != step)
    throw Error(str("SparseExchange::rows_updated(step ", step, ", ", label_,
                    "): call exchange_gradients(", step, ") first"));
  if (updated_ && *updated_ == step)
    throw Error(str("SparseExchange::rows_updated(step ", step, ", ", label_, ") called twice"));
  const int world = topo_.world_size;
  if (world > 1) {
    const auto start = Clock::now();
    // Rows asked for step+1 before this update and changed by it: refreshed in the completion.
    std::vector<IdLists> refresh(world, IdLists(tables_.size()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      throw_if_failed("rows_updated", step);
      for (const FetchRequest& request : remembered_) {
        if (request.step != step + 1) continue;
        for (int t = 0; t < num_tables(); ++t)
          std::set_intersection(request.ids[t].begin(), request.ids[t].end(),
                                updated_ids_[t].begin(), updated_ids_[t].end(),
                                std::back_inserter(refresh[request.peer][t]));
      }
      std::erase_if(remembered_, [&](const FetchRequest& r) { return r.step <= step + 1; });
    }
    std::vector<Outgoing> messages;
    int64_t served_rows = 0, served_bytes = 0;
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      std::vector<RowsSource> sources(tables_.size());
      for (int t = 0; t < num_tables(); ++t) {
        sources[t].ids = refresh[peer][t];
        served_rows += static_cast<int64_t>(refresh[peer][t].size());
      }
      BufferRef payload = encode_rows(sources, true);
      served_bytes += static_cast<int64_t>(payload->size);
      messages.push_back({peer, MsgKind::kStepDone, step, std::move(payload)});
    }
    // Answer the requests deferred during the update window, until none is left; then close
    // the window in the same critical section.
    while (true) {
      std::vector<FetchRequest> deferred;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (deferred_.empty()) {
          update_step_.reset();
          last_updated_ = step;
          for (auto& message : messages) outbox_.push_back(std::move(message));
          break;
        }
        deferred.swap(deferred_);
      }
      for (const FetchRequest& request : deferred) {
        std::vector<RowsSource> sources(tables_.size());
        for (int t = 0; t < num_tables(); ++t) {
          sources[t].ids = request.ids[t];
          served_rows += static_cast<int64_t>(request.ids[t].size());
        }
        BufferRef payload = encode_rows(sources, true);
        served_bytes += static_cast<int64_t>(payload->size);
        messages.push_back({request.peer, MsgKind::kFetchReply, request.step, std::move(payload)});
      }
    }
    wake();
    stats_.rows_served += served_rows;
    stats_.bytes_served += served_bytes;
    stats_.rows_updated_s += seconds_since(start);
  }
  updated_ = step;
  ++stats_.steps;
}

const SparseExchangeStats& SparseExchange::Impl::stats() const {
  merged_stats_ = stats_;
  merged_stats_.rows_served += served_rows_.load();
  merged_stats_.bytes_served += served_bytes_.load();
  merged_stats_.requests_deferred = deferred_count_.load();
  return merged_stats_;
}

// ---------------------------------------------------------------------------------------------
// Public wrapper

SparseExchange::SparseExchange(KvStore& store, const Topology& topo,
                               std::vector<SparseTable> tables,
                               const SparseExchangeOptions& options)
    : impl_(std::make_unique<Impl>(store, topo, std::move(tables), options)) {}
SparseExchange::~SparseExchange() = default;
int SparseExchange::num_tables() const { return impl_->num_tables(); }
const SparseTable& SparseExchange::table(int t) const { return impl_->table(t); }
TailShard SparseExchange::owned_rows(int table) const { return impl_->owned_rows(table); }
int SparseExchange::owner(int table, int64_t id) const { return impl_->owner(table, id); }
void SparseExchange::request_rows(int64_t step,
                                  const std::vector<std::vector<int32_t>>& ids_per_table) {
  impl_->request_rows(step, ids_per_table);
}
void SparseExchange::wait_rows(int64_t step) { impl_->wait_rows(step); }
std::vector<SummedRows> SparseExchange::exchange_gradients(int64_t step,
                                                           const GradientRows& grads_per_table) {
  std::vector<SummedRows> sums;
  impl_->exchange_gradients(step, grads_per_table, sums);
  return sums;
}
void SparseExchange::exchange_gradients(int64_t step, const GradientRows& grads_per_table,
                                        std::vector<SummedRows>& sums) {
  impl_->exchange_gradients(step, grads_per_table, sums);
}
void SparseExchange::rows_updated(int64_t step) { impl_->rows_updated(step); }
void SparseExchange::close() { impl_->close(); }
const SparseExchangeStats& SparseExchange::stats() const { return impl_->stats(); }

}  // namespace elmo
