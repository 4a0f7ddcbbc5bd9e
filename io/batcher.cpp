#include "io/batcher.h"

#include "runtime/partition.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/rng.h"

namespace elmo {

namespace {

constexpr int kBlockShift = 36;  // words of shuffle randomness per (epoch, shard) block

// Copies positions [offset, offset + take) of sentence `w` (n = w.size() words) into the row
// buffers. Forward: inputs [<S>, w1..wn], targets [w1..wn, </S>]. Backward (mirror): inputs
// [</S>, wn..w1], targets [wn..w1, <S>]. Returns the largest word id read (range check).
uint32_t copy_positions(std::span<const uint32_t> w, int64_t offset, int64_t take, int32_t bos,
                        int32_t eos, int32_t* f_in, int32_t* f_tgt, int32_t* b_in,
                        int32_t* b_tgt) {
  const int64_t n = static_cast<int64_t>(w.size());
  uint32_t max_id = 0;
  for (int64_t k = 0; k < take; ++k) {
    const int64_t o = offset + k;  // position in [0, n]
    const uint32_t in_f = o == 0 ? static_cast<uint32_t>(bos) : w[o - 1];
    const uint32_t tg_f = o < n ? w[o] : static_cast<uint32_t>(eos);
    f_in[k] = static_cast<int32_t>(in_f);
    f_tgt[k] = static_cast<int32_t>(tg_f);
    max_id = std::max(max_id, std::max(in_f, tg_f));
    if (b_in) {
      b_in[k] = o == 0 ? eos : static_cast<int32_t>(w[n - o]);
      b_tgt[k] = o < n ? static_cast<int32_t>(w[n - 1 - o]) : bos;
    }
  }
  return max_id;
}

void shape_batch(Batch* b, int64_t rows, int64_t steps, int64_t row_begin, bool with_mask) {
  b->reset_state = false;
  b->rows = rows;
  b->steps = steps;
  b->row_begin = row_begin;
  b->inputs.assign(static_cast<size_t>(rows * steps), 0);
  b->targets.assign(static_cast<size_t>(rows * steps), 0);
  if (with_mask)
    b->mask.assign(static_cast<size_t>(rows * steps), 0);
  else
    b->mask.clear();
  b->valid = with_mask ? 0 : rows * steps;
}

void check_vocab(const TokenCache& data, const Vocab& vocab) {
  if (data.vocab_hash() != 0 && data.vocab_hash() != vocab.hash())
    throw Error("the token cache was built with another vocabulary: rebuild it (elmo_fast prepare)");
  if (data.vocab_size() > vocab.size())
    throw Error(str("the token cache was built for ", data.vocab_size(),
                    " vocabulary entries but the vocabulary has ", vocab.size()));
  ELMO_CHECK(vocab.bos_id() >= 0 && vocab.eos_id() >= 0, "vocabulary lacks <S> or </S>");
}

void check_ids(uint32_t max_id, int64_t vocab_size) {
  if (static_cast<int64_t>(max_id) >= vocab_size)
    throw Error(str("token cache holds id ", max_id, " but the vocabulary has ", vocab_size,
                    " entries: the cache is corrupt, delete it and run elmo_fast prepare"));
}

int64_t get_int(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j.at(key).is_number_integer())
    throw Error(str("batcher state: missing or non-integer field '", key, "'"));
  return j.at(key).get<int64_t>();
}

std::vector<int64_t> get_ints(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j.at(key).is_array())
    throw Error(str("batcher state: missing array field '", key, "'"));
  std::vector<int64_t> v;
  for (const auto& x : j.at(key)) {
    if (!x.is_number_integer()) throw Error(str("batcher state: '", key, "' holds a non-integer"));
    v.push_back(x.get<int64_t>());
  }
  return v;
}

// Cursor at global stream position `position` (sentence k of a shard occupies positions
// offsets[k] .. offsets[k+1]-1 of that shard: n+1 positions, matching its ids + terminator).
void locate(const TokenCache& data, int64_t position, StreamCursor* c) {
  int64_t shard = 0;
  while (shard < data.num_shards()) {
    const TokenShard& s = data.shard(shard);
    const int64_t size = s.tokens + s.sentences;
    if (position < size) break;
    position -= size;
    ++shard;
  }
  c->shard = shard;
  c->sentence = 0;
  c->offset = 0;
  if (shard >= data.num_shards()) return;
  const TokenShard& s = data.shard(shard);
  const uint64_t* begin = s.offsets;
  const uint64_t* end = s.offsets + s.sentences + 1;
  const int64_t k = (std::upper_bound(begin, end, static_cast<uint64_t>(position)) - begin) - 1;
  c->sentence = k;
  c->offset = position - static_cast<int64_t>(s.offsets[k]);
}

// Copies `count` positions of the stream from *c on (advancing it over sentence and shard ends)
// into the row buffers at `at` (copy_positions per sentence). Returns the largest id read.
struct RowBuffers {
  int32_t *f_in, *f_tgt, *b_in, *b_tgt;  // b_* null: no backward batch
};
uint32_t copy_stream(const TokenCache& data, StreamCursor* c, int64_t count, int32_t bos,
                     int32_t eos, const RowBuffers& at) {
  uint32_t max_id = 0;
  int64_t pos = 0;
  while (pos < count) {
    const TokenShard* s = &data.shard(c->shard);
    while (c->sentence >= s->sentences || c->offset >= s->sentence_length(c->sentence) + 1) {
      if (c->sentence < s->sentences) {
        ++c->sentence;
        c->offset = 0;
      }
      if (c->sentence >= s->sentences) {
        ++c->shard;
        c->sentence = 0;
        c->offset = 0;
        ELMO_CHECK(c->shard < data.num_shards(), "stream cursor ran past the data");
        s = &data.shard(c->shard);
      }
    }
    const int64_t take = std::min(s->sentence_length(c->sentence) + 1 - c->offset, count - pos);
    max_id = std::max(
        max_id, copy_positions(s->sentence(c->sentence), c->offset, take, bos, eos, at.f_in + pos,
                               at.f_tgt + pos, at.b_in ? at.b_in + pos : nullptr,
                               at.b_tgt ? at.b_tgt + pos : nullptr));
    c->offset += take;
    pos += take;
  }
  return max_id;
}

// Row buffers of row `row` (local index) of batches with `steps` columns.
RowBuffers row_buffers(Batch* forward, Batch* backward, int64_t row, int64_t steps) {
  const int64_t base = row * steps;
  return {forward->inputs.data() + base, forward->targets.data() + base,
          backward ? backward->inputs.data() + base : nullptr,
          backward ? backward->targets.data() + base : nullptr};
}

}  // namespace

Packing packing_from_name(const std::string& name) {
  if (name == "sentences") return Packing::kSentences;
  if (name == "contiguous") return Packing::kContiguous;
  throw Error(str("unknown packing '", name, "' (expected \"sentences\" or \"contiguous\")"));
}

const char* packing_name(Packing packing) {
  return packing == Packing::kContiguous ? "contiguous" : "sentences";
}

RowSplit split_rows(int64_t rows, int rank, int world_size) {
  const IndexRange range = even_part(rows, rank, world_size);
  return {range.begin, range.end};
}

// ---------------------------------------------------------------------------------------------
// BatcherState

nlohmann::json BatcherState::to_json() const {
  nlohmann::json j{{"rows", rows},
                   {"seed", seed},
                   {"shuffle", shuffle},
                   {"rng_stream", static_cast<uint64_t>(kRngShuffle)},
                   {"num_shards", num_shards},
                   {"total_sentences", total_sentences},
                   {"total_tokens", total_tokens},
                   {"epoch", epoch},
                   {"shard_cursor", shard_cursor},
                   {"sentence_cursor", sentence_cursor},
                   {"epoch_positions", epoch_positions},
                   {"batches", batches},
                   {"row_shard", row_shard},
                   {"row_sentence", row_sentence},
                   {"row_offset", row_offset}};
  if (packing == Packing::kContiguous) {
    j["packing"] = packing_name(packing);
    j["steps"] = steps;
    j["epoch_batch"] = epoch_batch;
  }
  return j;
}

BatcherState BatcherState::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("batcher state: expected a JSON object");
  BatcherState s;
  s.rows = get_int(j, "rows");
  if (!j.contains("seed") || !j.at("seed").is_number_integer())
    throw Error("batcher state: missing or non-integer field 'seed'");
  s.seed = j.at("seed").get<uint64_t>();
  if (!j.contains("shuffle") || !j.at("shuffle").is_boolean())
    throw Error("batcher state: missing boolean field 'shuffle'");
  s.shuffle = j.at("shuffle").get<bool>();
  s.num_shards = get_int(j, "num_shards");
  s.total_sentences = get_int(j, "total_sentences");
  s.total_tokens = get_int(j, "total_tokens");
  s.epoch = get_int(j, "epoch");
  s.shard_cursor = get_int(j, "shard_cursor");
  s.sentence_cursor = get_int(j, "sentence_cursor");
  s.epoch_positions = get_int(j, "epoch_positions");
  s.batches = get_int(j, "batches");
  s.row_shard = get_ints(j, "row_shard");
  s.row_sentence = get_ints(j, "row_sentence");
  s.row_offset = get_ints(j, "row_offset");
  if (j.contains("packing")) {  // absent: sentence packing (every state before it existed)
    if (!j.at("packing").is_string())
      throw Error("batcher state: field 'packing' must be a string");
    s.packing = packing_from_name(j.at("packing").get<std::string>());
  }
  if (s.packing == Packing::kContiguous) {
    s.steps = get_int(j, "steps");
    s.epoch_batch = get_int(j, "epoch_batch");
  }
  return s;
}

// Sentences and predicted positions (tokens + one </S> per sentence) of a corpus.
static void count_positions(const TokenCache& data, int64_t* sentences, int64_t* positions) {
  *sentences = *positions = 0;
  for (const auto& shard : data.shards()) {
    *sentences += shard.sentences;
    *positions += shard.tokens + shard.sentences;
  }
}

// ---------------------------------------------------------------------------------------------
// Batcher

Batcher::Batcher(const TokenCache& data, const Vocab& vocab, const BatcherOptions& options)
    : data_(data), options_(options) {
  ELMO_REQUIRE(options.rows >= 1, "batch rows must be >= 1, got ", options.rows);
  ELMO_REQUIRE(options.steps >= 1, "unroll steps must be >= 1, got ", options.steps);
  my_rows_ = split_rows(options.rows, options.rank, options.world_size);
  check_vocab(data, vocab);
  bos_ = vocab.bos_id();
  eos_ = vocab.eos_id();
  vocab_size_ = vocab.size();
  count_positions(data, &total_sentences_, &total_positions_);
  if (total_sentences_ == 0) throw Error("the training corpus holds no sentences");
  if (options.packing == Packing::kContiguous) {
    ELMO_REQUIRE(!options.shuffle,
                 "contiguous packing reads the text in order: it cannot shuffle (set "
                 "data.shuffle = false)");
    row_length_ids_ = total_positions_ / options.rows;
    epoch_batches_ = row_length_ids_ > 0 ? (row_length_ids_ - 1) / options.steps : 0;
    if (epoch_batches_ < 1)
      throw UsageError(
          str("data.packing = \"contiguous\": the training text (", total_positions_,
              " ids with one </S> per sentence) cut into train.batch_size = ", options.rows,
              " rows gives rows of ", row_length_ids_,
              " ids, too short for one batch of train.unroll_steps = ", options.steps, " (needs ",
              options.steps + 1, "): use a larger corpus or fewer rows or steps"));
  }
  const uint64_t blocks = static_cast<uint64_t>(data.num_shards() + 1);
  ELMO_CHECK(blocks < (uint64_t{1} << 20), "too many corpus shards: ", data.num_shards());
  const size_t b = static_cast<size_t>(options.rows);
  row_shard_.assign(b, -1);
  row_sentence_.assign(b, 0);
  row_offset_.assign(b, 0);
  row_length_.assign(b, 0);
  start_epoch(0);
}

void Batcher::permute(uint64_t block, std::vector<uint32_t>* perm) const {
  for (size_t i = 0; i < perm->size(); ++i) (*perm)[i] = static_cast<uint32_t>(i);
  ELMO_CHECK(block < (uint64_t{1} << (64 - kBlockShift)), "shuffle block overflow (epoch ",
             epoch_, ")");
  Rng rng(RngState{options_.seed, kRngShuffle, block << kBlockShift});
  for (size_t i = perm->size(); i > 1; --i) {  // Fisher-Yates
    const size_t j = static_cast<size_t>(rng.below(i));
    std::swap((*perm)[i - 1], (*perm)[j]);
  }
}

void Batcher::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  shard_cursor_ = 0;
  sentence_cursor_ = 0;
  epoch_pulled_ = 0;
  shard_order_.resize(static_cast<size_t>(data_.num_shards()));
  const uint64_t blocks = static_cast<uint64_t>(data_.num_shards() + 1);
  if (options_.shuffle) {
    permute(static_cast<uint64_t>(epoch) * blocks, &shard_order_);
  } else {
    for (size_t i = 0; i < shard_order_.size(); ++i) shard_order_[i] = static_cast<uint32_t>(i);
  }
  enter_shard();
}

void Batcher::enter_shard() {
  if (!options_.shuffle || shard_cursor_ >= data_.num_shards()) {
    sentence_order_.clear();
    return;
  }
  const uint32_t shard = shard_order_[static_cast<size_t>(shard_cursor_)];
  const uint64_t blocks = static_cast<uint64_t>(data_.num_shards() + 1);
  sentence_order_.resize(static_cast<size_t>(data_.shard(shard).sentences));
  permute(static_cast<uint64_t>(epoch_) * blocks + 1 + shard, &sentence_order_);
}

void Batcher::pull(int64_t row) {
  for (;;) {
    if (shard_cursor_ >= data_.num_shards()) {
      start_epoch(epoch_ + 1);
      continue;
    }
    const uint32_t shard = shard_order_[static_cast<size_t>(shard_cursor_)];
    const TokenShard& s = data_.shard(shard);
    if (sentence_cursor_ < s.sentences) {
      const int64_t idx = options_.shuffle ? sentence_order_[static_cast<size_t>(sentence_cursor_)]
                                           : sentence_cursor_;
      ++sentence_cursor_;
      row_shard_[row] = shard;
      row_sentence_[row] = idx;
      row_offset_[row] = 0;
      row_length_[row] = s.sentence_length(idx);
      epoch_pulled_ += row_length_[row] + 1;
      return;
    }
    ++shard_cursor_;
    sentence_cursor_ = 0;
    enter_shard();
  }
}

void Batcher::next(Batch* forward, Batch* backward) {
  ELMO_CHECK(forward != nullptr, "Batcher::next needs a forward batch");
  if (options_.packing == Packing::kContiguous) return next_contiguous(forward, backward);
  const int64_t T = options_.steps;
  const int64_t mine = my_rows_.end - my_rows_.begin;
  shape_batch(forward, mine, T, my_rows_.begin, false);
  if (backward) shape_batch(backward, mine, T, my_rows_.begin, false);
  uint32_t max_id = 0;
  for (int64_t r = 0; r < options_.rows; ++r) {
    const bool copy = r >= my_rows_.begin && r < my_rows_.end;
    const int64_t base = (r - my_rows_.begin) * T;
    int64_t pos = 0;
    while (pos < T) {
      if (row_shard_[r] < 0 || row_offset_[r] >= row_length_[r] + 1) pull(r);
      const int64_t take = std::min(row_length_[r] + 1 - row_offset_[r], T - pos);
      if (copy) {
        const auto w = data_.shard(row_shard_[r]).sentence(row_sentence_[r]);
        max_id = std::max(
            max_id, copy_positions(w, row_offset_[r], take, bos_, eos_,
                                   forward->inputs.data() + base + pos,
                                   forward->targets.data() + base + pos,
                                   backward ? backward->inputs.data() + base + pos : nullptr,
                                   backward ? backward->targets.data() + base + pos : nullptr));
      }
      row_offset_[r] += take;
      pos += take;
    }
  }
  check_ids(max_id, vocab_size_);
  ++batches_;
}

// Batch k of the epoch: row r takes the stream ids from r*L + k*T, which are the positions
// from r*L + k*T + 1 of the sentence-position stream with `</S>` as the start input (position
// q of that stream has input S[q-1] and target S[q]).
void Batcher::next_contiguous(Batch* forward, Batch* backward) {
  if (epoch_batch_ == epoch_batches_) {
    ++epoch_;
    epoch_batch_ = 0;
  }
  const int64_t T = options_.steps;
  const int64_t mine = my_rows_.end - my_rows_.begin;
  shape_batch(forward, mine, T, my_rows_.begin, false);
  if (backward) shape_batch(backward, mine, T, my_rows_.begin, false);
  forward->reset_state = epoch_batch_ == 0;
  if (backward) backward->reset_state = forward->reset_state;
  uint32_t max_id = 0;
  for (int64_t r = my_rows_.begin; r < my_rows_.end; ++r) {
    StreamCursor c;
    locate(data_, r * row_length_ids_ + epoch_batch_ * T + 1, &c);
    max_id = std::max(max_id, copy_stream(data_, &c, T, eos_, eos_,
                                          row_buffers(forward, backward, r - my_rows_.begin, T)));
  }
  check_ids(max_id, vocab_size_);
  ++epoch_batch_;
  ++batches_;
}

int64_t Batcher::epoch_positions() const {
  if (options_.packing == Packing::kContiguous)
    return epoch_batches_ * options_.rows * options_.steps;
  return total_positions_;
}

double Batcher::epoch_progress() const {
  if (options_.packing == Packing::kContiguous)
    return static_cast<double>(epoch_batch_) / static_cast<double>(epoch_batches_);
  return static_cast<double>(epoch_pulled_) / static_cast<double>(total_positions_);
}

BatcherState Batcher::state() const {
  BatcherState s;
  s.rows = options_.rows;
  s.seed = options_.seed;
  s.shuffle = options_.shuffle;
  s.num_shards = data_.num_shards();
  s.total_sentences = total_sentences_;
  s.total_tokens = total_positions_ - total_sentences_;
  s.epoch = epoch_;
  s.shard_cursor = shard_cursor_;
  s.sentence_cursor = sentence_cursor_;
  s.epoch_positions = epoch_pulled_;
  s.batches = batches_;
  s.row_shard = row_shard_;
  s.row_sentence = row_sentence_;
  s.row_offset = row_offset_;
  s.packing = options_.packing;
  if (options_.packing == Packing::kContiguous) {
    s.shard_cursor = s.sentence_cursor = s.epoch_positions = 0;
    s.row_shard.clear();
    s.row_sentence.clear();
    s.row_offset.clear();
    s.steps = options_.steps;
    s.epoch_batch = epoch_batch_;
  }
  return s;
}

void Batcher::restore(const BatcherState& s) {
  if (s.rows != options_.rows)
    throw Error(str("batcher state has ", s.rows, " global rows but this run uses ", options_.rows,
                    ": resume with the same global batch size"));
  if (s.num_shards != data_.num_shards() || s.total_sentences != total_sentences_ ||
      s.total_tokens != total_positions_ - total_sentences_)
    throw Error(str("batcher state was saved for a corpus of ", s.num_shards, " shards, ",
                    s.total_sentences, " sentences, ", s.total_tokens, " tokens; this corpus has ",
                    data_.num_shards(), ", ", total_sentences_, ", ",
                    total_positions_ - total_sentences_, ": the corpus changed"));
  if (s.packing != options_.packing)
    throw Error(str("batcher state was saved with data.packing = \"", packing_name(s.packing),
                    "\" but this run uses \"", packing_name(options_.packing),
                    "\": resume with the packing the run started with"));
  if (s.packing == Packing::kContiguous) {
    if (s.steps != options_.steps)
      throw Error(str("batcher state cut its contiguous rows for train.unroll_steps = ", s.steps,
                      " but this run uses ", options_.steps, ": resume with the same value"));
    if (s.epoch < 0 || s.epoch_batch < 0 || s.epoch_batch > epoch_batches_ || s.batches < 0)
      throw Error(str("batcher state: epoch ", s.epoch, " batch ", s.epoch_batch,
                      " is out of range (", epoch_batches_, " batches per epoch)"));
    if (s.seed != options_.seed)
      log_warn("batcher state was saved with seed ", s.seed, "; continuing with it");
    options_.seed = s.seed;
    epoch_ = s.epoch;
    epoch_batch_ = s.epoch_batch;
    batches_ = s.batches;
    return;
  }
  const size_t b = static_cast<size_t>(s.rows);
  if (s.row_shard.size() != b || s.row_sentence.size() != b || s.row_offset.size() != b)
    throw Error("batcher state: per-row arrays do not match the row count");
  if (s.epoch < 0 || s.shard_cursor < 0 || s.shard_cursor > s.num_shards || s.sentence_cursor < 0)
    throw Error("batcher state: cursor out of range");
  if (s.seed != options_.seed || s.shuffle != options_.shuffle)
    log_warn("batcher state was saved with seed ", s.seed, " shuffle ", s.shuffle,
             "; continuing with those (the configured seed ", options_.seed, " applies to new runs)");
  options_.seed = s.seed;
  options_.shuffle = s.shuffle;
  start_epoch(s.epoch);  // regenerates the shard order of the epoch
  shard_cursor_ = s.shard_cursor;
  enter_shard();         // and the sentence order of the current shard
  if (shard_cursor_ < data_.num_shards() &&
      s.sentence_cursor > data_.shard(shard_order_[shard_cursor_]).sentences)
    throw Error("batcher state: sentence cursor out of range");
  sentence_cursor_ = s.sentence_cursor;
  epoch_pulled_ = s.epoch_positions;
  batches_ = s.batches;
  for (size_t r = 0; r < b; ++r) {
    row_shard_[r] = s.row_shard[r];
    row_sentence_[r] = s.row_sentence[r];
    row_offset_[r] = s.row_offset[r];
    row_length_[r] = 0;
    if (row_shard_[r] < 0) continue;
    if (row_shard_[r] >= data_.num_shards() || row_sentence_[r] < 0 ||
        row_sentence_[r] >= data_.shard(row_shard_[r]).sentences)
      throw Error(str("batcher state: row ", r, " points outside the corpus"));
    row_length_[r] = data_.shard(row_shard_[r]).sentence_length(row_sentence_[r]);
    if (row_offset_[r] < 0 || row_offset_[r] > row_length_[r] + 1)
      throw Error(str("batcher state: row ", r, " offset out of range"));
  }
}

// ---------------------------------------------------------------------------------------------
// EvalBatcher

EvalBatcher::EvalBatcher(const TokenCache& data, const Vocab& vocab, const EvalOptions& options)
    : data_(data), options_(options) {
  ELMO_REQUIRE(options.rows >= 1, "eval rows must be >= 1, got ", options.rows);
  ELMO_REQUIRE(options.steps >= 1, "eval steps must be >= 1, got ", options.steps);
  my_rows_ = split_rows(options.rows, options.rank, options.world_size);
  check_vocab(data, vocab);
  eos_ = vocab.eos_id();
  // Contiguous packing: `</S>` is the start input too (the model never saw `<S>`).
  bos_ = options.packing == Packing::kContiguous ? eos_ : vocab.bos_id();
  vocab_size_ = vocab.size();
  count_positions(data, &total_sentences_, &total_positions_);
  if (total_sentences_ == 0) throw Error("the evaluation corpus holds no sentences");
  if (options.mode == EvalMode::kStream && options.packing == Packing::kContiguous) {
    // S[1..N) predicted from S[0..N-1): positions 1 .. N-1 of the sentence-position stream.
    first_position_ = 1;
    total_positions_ -= 1;
    if (total_positions_ == 0)
      throw Error(
          "the evaluation text is one word: contiguous packing predicts each id from "
          "the one before, which leaves nothing to predict");
  }
  if (options.mode == EvalMode::kStream) {
    row_length_ = (total_positions_ + options.rows - 1) / options.rows;
    num_batches_ = (row_length_ + options.steps - 1) / options.steps;
  } else {
    num_batches_ = (total_sentences_ + options.rows - 1) / options.rows;
  }
  reset();
}

void EvalBatcher::reset() {
  batch_index_ = 0;
  cursors_.clear();
  if (options_.mode == EvalMode::kStream) {
    for (int64_t r = my_rows_.begin; r < my_rows_.end; ++r) {
      const RowSplit seg =
          split_rows(total_positions_, static_cast<int>(r), static_cast<int>(options_.rows));
      StreamCursor c;
      locate(data_, first_position_ + seg.begin, &c);
      c.remaining = seg.end - seg.begin;
      cursors_.push_back(c);
    }
  } else {
    cursors_.push_back(StreamCursor{});  // next sentence in file order
  }
}

bool EvalBatcher::next(Batch* forward, Batch* backward) {
  ELMO_CHECK(forward != nullptr, "EvalBatcher::next needs a forward batch");
  if (batch_index_ >= num_batches_) return false;
  const int64_t mine = my_rows_.end - my_rows_.begin;
  uint32_t max_id = 0;
  // `count` positions from *c into local row `row` of batches `steps` wide, marked real.
  auto emit = [&](StreamCursor* c, int64_t row, int64_t steps, int64_t count) {
    max_id = std::max(max_id, copy_stream(data_, c, count, bos_, eos_,
                                          row_buffers(forward, backward, row, steps)));
    std::fill_n(forward->mask.data() + row * steps, count, uint8_t{1});
    if (backward) std::fill_n(backward->mask.data() + row * steps, count, uint8_t{1});
    forward->valid += count;
    if (backward) backward->valid += count;
  };

  if (options_.mode == EvalMode::kStream) {
    const int64_t steps = std::min(options_.steps, row_length_ - batch_index_ * options_.steps);
    shape_batch(forward, mine, steps, my_rows_.begin, true);
    if (backward) shape_batch(backward, mine, steps, my_rows_.begin, true);
    for (int64_t r = 0; r < mine; ++r) {
      StreamCursor& c = cursors_[static_cast<size_t>(r)];
      const int64_t count = std::min(steps, c.remaining);
      if (count > 0) emit(&c, r, steps, count);
      c.remaining -= count;
    }
  } else {
    // Sentences batch_index*B .. +B-1 in file order; steps = longest of them (all ranks agree).
    StreamCursor& c = cursors_[0];
    const int64_t first = batch_index_ * options_.rows;
    const int64_t count = std::min(options_.rows, total_sentences_ - first);
    std::vector<StreamCursor> starts;
    starts.reserve(static_cast<size_t>(count));
    int64_t steps = 0;
    for (int64_t i = 0; i < count; ++i) {
      while (c.sentence >= data_.shard(c.shard).sentences) {
        ++c.shard;
        c.sentence = 0;
      }
      starts.push_back(c);
      steps = std::max(steps, data_.shard(c.shard).sentence_length(c.sentence) + 1);
      ++c.sentence;
    }
    shape_batch(forward, mine, steps, my_rows_.begin, true);
    if (backward) shape_batch(backward, mine, steps, my_rows_.begin, true);
    for (int64_t r = my_rows_.begin; r < my_rows_.end && r < count; ++r) {
      StreamCursor row = starts[static_cast<size_t>(r)];
      emit(&row, r - my_rows_.begin, steps,
           data_.shard(row.shard).sentence_length(row.sentence) + 1);
    }
  }
  check_ids(max_id, vocab_size_);
  ++batch_index_;
  return true;
}

}  // namespace elmo
