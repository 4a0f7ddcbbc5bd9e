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
// Contiguous packing (Packing::kContiguous, config data.packing = "contiguous"; the TensorFlow
// PTB tutorial's reader): the text in file order is ONE stream S of N = tokens + sentences
// ids, each sentence's words followed by `</S>` (the tutorial's `<eos>`), with no `<S>`. The
// stream is cut into B rows of L = N / B ids (row r = S[r*L, (r+1)*L)); batch k of an epoch
// has inputs S[r*L + k*T + t] and targets S[r*L + k*T + t + 1], t < T, and an epoch is
// (L - 1) / T batches, so the last ids of every row (fewer than T + 1) and the last N - B*L of
// the stream are never trained on, as in the tutorial. The next epoch starts again at the head
// of every row, and its first batch has `reset_state` set: the carried state of the rows
// restarts from zero (the tutorial's run_epoch starts from the zero state). Shuffle is refused
// (the rows are the text in order). The backward batch, when asked for, is the per-sentence
// mirror with `</S>` at both ends (the config refuses bidirectional training with this packing;
// evaluation fills it and leaves it unused). Evaluation with contiguous packing: stream mode
// predicts S[1..N) from S[0..N-1) (the first word has no context, as in the tutorial's test),
// cut into B contiguous segments; sentence mode starts each sentence from zero state with `</S>`
// as its first input (inputs `</S> w1 .. wn`, targets `w1 .. wn </S>`).
//
// Not a model component: no tensors, no device memory; ids are int32 host vectors.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
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

// How training rows are cut (config data.packing): bilm-tf sentence streams, or the TF PTB
// tutorial's contiguous rows of the text (see the header comment).
enum class Packing { kSentences, kContiguous };
Packing packing_from_name(const std::string& name);  // "sentences" | "contiguous"; else Error
const char* packing_name(Packing packing);

struct Batch {
  int64_t rows = 0;       // rows served to this rank
  int64_t steps = 0;      // T (eval: the final batch may be shorter)
  int64_t row_begin = 0;  // global index of the first row served
  std::vector<int32_t> inputs;   // [rows, steps] row-major
  std::vector<int32_t> targets;  // [rows, steps]
  std::vector<uint8_t> mask;     // [rows, steps] 1 = real position; EMPTY = every position real
  int64_t valid = 0;             // number of real positions (the tokens this batch predicts)
  // Contiguous packing: the first batch of an epoch, whose rows start from zero state (the
  // caller zeroes the carried state before training on it). Always false for sentence packing.
  bool reset_state = false;
};

struct BatcherOptions {
  int64_t rows = 1;   // global batch rows B (over all ranks)
  int64_t steps = 1;  // unroll T
  bool shuffle = true;
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  Packing packing = Packing::kSentences;
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
  // Contiguous packing (written to JSON only then, so sentence-packing states are unchanged):
  // the unroll T the rows were cut for and the batches drawn in the current epoch. The
  // sentence cursors and per-row arrays above stay 0 / empty.
  Packing packing = Packing::kSentences;
  int64_t steps = 0;
  int64_t epoch_batch = 0;

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
  int64_t batches() const { return batches_; }  // batches drawn so far
  // Positions one epoch trains on: sentence packing, tokens + sentences; contiguous packing,
  // (L - 1) / T batches x B x T (so epochs x this / (B x T) is whole epochs of batches).
  int64_t epoch_positions() const;
  RowSplit my_rows() const { return my_rows_; }

  BatcherState state() const;
  // Continues exactly from `state` (sentence packing: it may come from a run with another world
  // size or T; contiguous packing: another world size, the same T). Error when the packing, the
  // rows, T (contiguous) or the corpus fingerprint differ. Seed and shuffle come from the state.
  void restore(const BatcherState& state);

 private:
  void next_contiguous(Batch* forward, Batch* backward);
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
  // Contiguous packing: row length L, batches per epoch, batches drawn in this epoch.
  int64_t row_length_ids_ = 0, epoch_batches_ = 0, epoch_batch_ = 0;
};

// A position in the stream of sentence positions (sentence i of a shard has n_i + 1): the
// batchers' cursor. `remaining` counts the positions a stream-evaluation row has left.
struct StreamCursor {
  int64_t shard = 0, sentence = 0, offset = 0, remaining = 0;
};

enum class EvalMode { kStream, kSentence };

struct EvalOptions {
  EvalMode mode = EvalMode::kStream;
  Packing packing = Packing::kSentences;  // the packing the model was trained with
  int64_t rows = 1;                       // global rows B
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
  const TokenCache& data_;
  EvalOptions options_;
  RowSplit my_rows_;
  int32_t bos_, eos_;  // contiguous packing: both `</S>`
  int64_t vocab_size_;
  int64_t total_positions_ = 0, total_sentences_ = 0, num_batches_ = 0, row_length_ = 0;
  int64_t first_position_ = 0;  // stream mode: 1 with contiguous packing (S[0] is not predicted)
  int64_t batch_index_ = 0;
  std::vector<StreamCursor> cursors_;  // stream mode: [my rows]; sentence mode: [1] global
};

}  // namespace elmo
