// Batchers: token-cache sentences -> [B, T] input/target id batches.
//
// Training (Batcher) uses bilm-tf packing. There are B global rows; each row is an endless
// stream of sentences. A sentence w1..wn contributes n+1 positions:
//   forward   inputs [<S>, w1 .. wn]   targets [w1 .. wn, </S>]
//   backward  inputs [</S>, wn .. w1]  targets [wn .. w1, <S>]   (the mirror: predicts the
//             previous token; the reversed sentence is packed exactly like a forward one)
// so the final `</S>` (backward: `<S>`) is a target, never an input, and there is no padding.
// A batch takes the next T positions of every row; sentences continue across batches.
// Row filling rule (bilm-tf's, reproduces REFERENCE.md's golden): for each batch, rows are
// visited in order 0..B-1, and a row takes the next sentence of the shared sentence source only
// when it has no positions left and still needs some for this batch (a row that ends exactly at
// a batch boundary pulls its next sentence during the following batch, in row order).
// Both directions use the SAME sentences at the same rows and positions (the backward batch is
// the per-sentence mirror of the forward batch), so one row state serves both and each
// direction's carried LSTM state is consistent along its own row stream.
//
// Sentence source: an epoch is one pass over every sentence of the cache. With shuffle on, the
// shard order and the sentence order inside each shard are permuted with Philox stream
// kRngShuffle: the shard order of epoch e uses block e*(S+1), shard s's sentence order uses
// block e*(S+1)+1+s (block = word position >> 36), so the whole order is a pure function of
// (seed, epoch) and each epoch differs. shuffle=false keeps file order. When the source runs
// dry, the next epoch starts (reshuffled) in the middle of a batch, seamlessly.
//
// Ranks: every rank simulates all B rows (cheap: cursor arithmetic) and copies only its rows
// rank_rows(B, rank, world) (same even split as comm/topology.h, reimplemented here as
// split_rows because io sits below comm). The global row streams are therefore identical for
// every world size, and the checkpoint state is the same on every rank.
//
// Evaluation (EvalBatcher): the cache's sentences in file order, either as one stream cut into
// B contiguous row segments (state carried; the final batch may be shorter: `steps` = T_actual
// and `mask` marks real positions) or one sentence per row from zero state (mask pads rows to
// the longest sentence of the batch).
//
// Not a model component: no tensors, no device memory; ids are int32 host vectors.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "io/token_cache.h"
#include "io/vocab.h"

namespace elmo {

// Rows [begin, end) of `rows` owned by `rank`: even split, lower ranks take the remainder
// (identical to comm/topology.h rank_rows).
struct RowSplit {
  int64_t begin = 0;
  int64_t end = 0;
};
RowSplit split_rows(int64_t rows, int rank, int world_size);

struct Batch {
  int64_t rows = 0;       // rows served to this rank
  int64_t steps = 0;      // T (eval: the final batch may be shorter)
  int64_t row_begin = 0;  // global index of the first row served
  std::vector<int32_t> inputs;   // [rows, steps] row-major
  std::vector<int32_t> targets;  // [rows, steps]
  std::vector<uint8_t> mask;     // [rows, steps] 1 = real position; EMPTY = every position real
  int64_t valid = 0;             // number of real positions (the tokens this batch predicts)
};

struct BatcherOptions {
  int64_t rows = 1;   // global batch rows B (over all ranks)
  int64_t steps = 1;  // unroll T
  bool shuffle = true;
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
};

// Exact position of a Batcher; the same on every rank. JSON round trip via to_json/from_json.
struct BatcherState {
  int64_t rows = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  // corpus fingerprint, checked on restore
  int64_t num_shards = 0, total_sentences = 0, total_tokens = 0;
  // sentence source: epoch, index into the shard order, index into the shard's sentence order
  int64_t epoch = 0, shard_cursor = 0, sentence_cursor = 0;
  int64_t epoch_positions = 0;  // positions (n+1 per sentence) pulled in this epoch
  int64_t batches = 0;
  // per global row: current sentence (shard -1 = none yet) and next position in it
  std::vector<int64_t> row_shard, row_sentence, row_offset;

  nlohmann::json to_json() const;
  static BatcherState from_json(const nlohmann::json& j);  // Error on missing/bad fields
};

class Batcher {
 public:
  // `data` must outlive the batcher. Errors: no sentences, bad options, vocab mismatch.
  Batcher(const TokenCache& data, const Vocab& vocab, const BatcherOptions& options);

  // Next batch: forward always; backward too when non-null (its mirror). Buffers are reused.
  void next(Batch* forward, Batch* backward);

  int64_t epoch() const { return epoch_; }                // current epoch index (0-based)
  double epoch_progress() const;                         // fraction of this epoch pulled [0, 1]
  double epochs_done() const { return epoch_ + epoch_progress(); }
  int64_t batches() const { return batches_; }           // batches drawn so far
  int64_t epoch_positions() const { return total_positions_; }  // tokens + sentences per epoch
  RowSplit my_rows() const { return my_rows_; }

  BatcherState state() const;
  // Continues exactly from `state` (which may come from a run with another world size or T).
  // Error when rows or the corpus fingerprint differ. Seed and shuffle come from the state.
  void restore(const BatcherState& state);

 private:
  void start_epoch(int64_t epoch);
  void enter_shard();                   // builds the permutation of shard_order_[shard_cursor_]
  void pull(int64_t row);               // next sentence of the source into `row`
  void permute(uint64_t block, std::vector<uint32_t>* perm) const;

  const TokenCache& data_;
  BatcherOptions options_;
  RowSplit my_rows_;
  int32_t bos_, eos_;
  int64_t vocab_size_;
  int64_t total_sentences_ = 0, total_positions_ = 0;

  int64_t epoch_ = 0, shard_cursor_ = 0, sentence_cursor_ = 0, epoch_pulled_ = 0;
  int64_t batches_ = 0;
  std::vector<uint32_t> shard_order_;     // [S]
  std::vector<uint32_t> sentence_order_;  // [sentences of the current shard] (shuffle only)
  std::vector<int64_t> row_shard_, row_sentence_, row_offset_, row_length_;  // [B]
};

enum class EvalMode { kStream, kSentence };

struct EvalOptions {
  EvalMode mode = EvalMode::kStream;
  int64_t rows = 1;   // global rows B
  int64_t steps = 1;  // T (stream mode; sentence mode sizes each batch to its longest sentence)
  int rank = 0;
  int world_size = 1;
};

class EvalBatcher {
 public:
  EvalBatcher(const TokenCache& data, const Vocab& vocab, const EvalOptions& options);

  // Next batch (backward optional); false when the data is exhausted. Every rank gets the same
  // number of batches (rows without data are fully masked).
  bool next(Batch* forward, Batch* backward);
  void reset();                                       // back to the start
  int64_t num_batches() const { return num_batches_; }
  int64_t total_positions() const { return total_positions_; }  // predicted tokens, all rows

 private:
  struct Cursor {
    int64_t shard = 0, sentence = 0, offset = 0, remaining = 0;
  };
  void locate(int64_t position, Cursor* cursor) const;

  const TokenCache& data_;
  EvalOptions options_;
  RowSplit my_rows_;
  int32_t bos_, eos_;
  int64_t vocab_size_;
  int64_t total_positions_ = 0, total_sentences_ = 0, num_batches_ = 0, row_length_ = 0;
  int64_t batch_index_ = 0;
  std::vector<Cursor> cursors_;  // stream mode: [my rows]; sentence mode: [1] global cursor
};

}  // namespace elmo
