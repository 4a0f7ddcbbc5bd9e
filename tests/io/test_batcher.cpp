#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "io/batcher.h"
#include "io/corpus.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using Ids = std::vector<int32_t>;
using Sentences = std::vector<std::vector<int32_t>>;

Vocab golden_vocab() { return Vocab::from_tokens({"<S>", "</S>", "<UNK>", "the", "."}); }

// Vocab "<S>" "</S>" "<UNK>" w3 .. w{n-1}.
Vocab numbered_vocab(int n) {
  std::vector<std::string> t{"<S>", "</S>", "<UNK>"};
  for (int i = 3; i < n; ++i) t.push_back(std::string("w").append(std::to_string(i)));
  return Vocab::from_tokens(t);
}

// Shards of sentences whose FIRST word identifies them uniquely (ids 3..), random lengths 1..7.
std::vector<Sentences> tagged_corpus(int shards, int per_shard, int vocab) {
  std::vector<Sentences> out(shards);
  uint32_t x = 12345;
  int tag = 3;
  for (auto& shard : out) {
    const int n = per_shard + (static_cast<int>(&shard - out.data()) % 3);  // unequal shards
    for (int i = 0; i < n; ++i) {
      x = x * 1664525u + 1013904223u;
      std::vector<int32_t> s{tag++};
      const int len = 1 + static_cast<int>((x >> 16) % 7);
      for (int k = 1; k < len; ++k) {
        x = x * 1664525u + 1013904223u;
        s.push_back(3 + static_cast<int32_t>((x >> 8) % (vocab - 3)));
      }
      shard.push_back(s);
    }
  }
  return out;
}

std::vector<Batch> draw(Batcher& b, int n, std::vector<Batch>* backward = nullptr) {
  std::vector<Batch> out(n);
  if (backward) backward->resize(n);
  for (int i = 0; i < n; ++i) b.next(&out[i], backward ? &(*backward)[i] : nullptr);
  return out;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].inputs, b[i].inputs) << "batch " << i;
    EXPECT_EQ(a[i].targets, b[i].targets) << "batch " << i;
  }
}

// Sentence tags in the order a single-row, T=1 batcher pulls them (tag = input after <S>).
std::vector<int32_t> pulled_tags(Batcher& b, int positions, int32_t bos) {
  std::vector<int32_t> tags;
  Batch f;
  bool after_bos = false;
  for (int i = 0; i < positions; ++i) {
    b.next(&f, nullptr);
    if (after_bos) tags.push_back(f.inputs[0]);
    after_bos = f.inputs[0] == bos;
  }
  return tags;
}

TEST(Batcher, PackingGoldenFromReference) {
  const Vocab vocab = golden_vocab();
  // "the unknown ." , "th ." , "the"
  const TokenCache data =
      TokenCache::from_sentences({{{3, 2, 4}, {2, 4}, {3}}}, vocab.size(), vocab.unk_id());
  BatcherOptions o;
  o.rows = 2;
  o.steps = 3;
  o.shuffle = false;
  Batcher b(data, vocab, o);
  Batch f, r;
  b.next(&f, &r);
  EXPECT_EQ(f.rows, 2);
  EXPECT_EQ(f.steps, 3);
  EXPECT_TRUE(f.mask.empty());
  EXPECT_EQ(f.valid, 6);
  EXPECT_EQ(f.inputs, (Ids{0, 3, 2, 0, 2, 4}));
  EXPECT_EQ(f.targets, (Ids{3, 2, 4, 2, 4, 1}));
  // Backward mirror: reversed sentences, inputs [</S>, wn..w1], targets [wn..w1, <S>].
  EXPECT_EQ(r.inputs, (Ids{1, 4, 2, 1, 4, 2}));
  EXPECT_EQ(r.targets, (Ids{4, 2, 3, 4, 2, 0}));
  b.next(&f, &r);
  EXPECT_EQ(f.inputs, (Ids{4, 0, 3, 0, 3, 2}));
  EXPECT_EQ(f.targets, (Ids{1, 3, 1, 3, 2, 4}));
  EXPECT_EQ(r.inputs, (Ids{3, 1, 3, 1, 4, 2}));
  EXPECT_EQ(r.targets, (Ids{0, 3, 0, 4, 2, 3}));
  EXPECT_EQ(b.epoch(), 1);  // the third pull (row 1, batch 2) started the next epoch
}

TEST(Batcher, BackwardIsThePerSentenceMirrorOfForward) {
  const Vocab vocab = numbered_vocab(40);
  const TokenCache data = TokenCache::from_sentences(tagged_corpus(3, 9, 40), vocab.size());
  BatcherOptions o;
  o.rows = 1;
  o.steps = 7;
  o.seed = 5;
  Batcher b(data, vocab, o);
  // Concatenate the single row's streams over many batches and cut them into sentences.
  Ids fin, ftg, bin, btg;
  Batch f, r;
  for (int i = 0; i < 60; ++i) {
    b.next(&f, &r);
    fin.insert(fin.end(), f.inputs.begin(), f.inputs.end());
    ftg.insert(ftg.end(), f.targets.begin(), f.targets.end());
    bin.insert(bin.end(), r.inputs.begin(), r.inputs.end());
    btg.insert(btg.end(), r.targets.begin(), r.targets.end());
  }
  size_t start = 0;
  int checked = 0;
  for (size_t i = 1; i <= fin.size(); ++i) {
    if (i < fin.size() && fin[i] != vocab.bos_id()) continue;
    if (i == fin.size()) break;  // last sentence may be cut by the batch end
    // Sentence occupies positions [start, i): forward inputs <S> w1..wn, targets w1..wn </S>.
    const size_t n = i - start - 1;
    ASSERT_EQ(fin[start], vocab.bos_id());
    ASSERT_EQ(ftg[i - 1], vocab.eos_id());
    ASSERT_EQ(bin[start], vocab.eos_id());
    ASSERT_EQ(btg[i - 1], vocab.bos_id());
    for (size_t k = 0; k < n; ++k) {
      EXPECT_EQ(fin[start + 1 + k], ftg[start + k]);           // targets = inputs shifted
      EXPECT_EQ(bin[start + 1 + k], fin[start + n - k]);       // backward reads it reversed
      EXPECT_EQ(btg[start + k], fin[start + n - k]);
    }
    start = i;
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

TEST(Batcher, ShuffleIsDeterministicBySeedAndDiffersByEpoch) {
  const Vocab vocab = numbered_vocab(400);
  const auto corpus = tagged_corpus(4, 20, 400);  // 4 shards, 20..22 sentences each
  const TokenCache data = TokenCache::from_sentences(corpus, vocab.size());
  const int64_t sentences = data.stats().sentences;
  const int64_t positions = data.stats().tokens + sentences;
  BatcherOptions o;
  o.rows = 1;
  o.steps = 1;
  o.seed = 42;
  Batcher a(data, vocab, o), same(data, vocab, o);
  o.seed = 43;
  Batcher other(data, vocab, o);
  const auto tags = pulled_tags(a, static_cast<int>(3 * positions + 1), vocab.bos_id());
  EXPECT_EQ(tags, pulled_tags(same, static_cast<int>(3 * positions + 1), vocab.bos_id()));
  EXPECT_NE(tags, pulled_tags(other, static_cast<int>(3 * positions + 1), vocab.bos_id()));
  ASSERT_GE(tags.size(), static_cast<size_t>(3 * sentences));
  std::vector<int32_t> e0(tags.begin(), tags.begin() + sentences);
  std::vector<int32_t> e1(tags.begin() + sentences, tags.begin() + 2 * sentences);
  EXPECT_NE(e0, e1);  // reshuffled
  // Each epoch is a permutation of all sentences ...
  std::vector<int32_t> all(sentences);
  for (int64_t i = 0; i < sentences; ++i) all[i] = static_cast<int32_t>(3 + i);
  auto sorted = [](std::vector<int32_t> v) { return std::sort(v.begin(), v.end()), v; };
  EXPECT_EQ(sorted(e0), all);
  EXPECT_EQ(sorted(e1), all);
  // ... that visits shards one at a time (shard order shuffled, sentences shuffled inside).
  auto shard_of = [&](int32_t tag) {
    int64_t t = tag - 3;
    for (size_t s = 0; s < corpus.size(); ++s) {
      if (t < static_cast<int64_t>(corpus[s].size())) return static_cast<int>(s);
      t -= static_cast<int64_t>(corpus[s].size());
    }
    return -1;
  };
  int switches = 0;
  for (int64_t i = 1; i < sentences; ++i) switches += shard_of(e0[i]) != shard_of(e0[i - 1]);
  EXPECT_EQ(switches, 3);
  EXPECT_NE(e0, all);  // really shuffled
}

TEST(Batcher, NoShuffleKeepsFileOrderAndReportsEpochProgress) {
  const Vocab vocab = numbered_vocab(100);
  const TokenCache data = TokenCache::from_sentences(tagged_corpus(2, 5, 100), vocab.size());
  const int64_t sentences = data.stats().sentences;
  const int64_t positions = data.stats().tokens + sentences;
  BatcherOptions o;
  o.rows = 1;
  o.steps = 1;
  o.shuffle = false;
  Batcher b(data, vocab, o);
  EXPECT_EQ(b.epoch_positions(), positions);
  Batch f;
  std::vector<int32_t> tags;
  bool after_bos = false;
  for (int64_t i = 0; i < positions; ++i) {
    b.next(&f, nullptr);
    if (after_bos) tags.push_back(f.inputs[0]);
    after_bos = f.inputs[0] == vocab.bos_id();
  }
  EXPECT_EQ(b.epoch(), 0);
  EXPECT_DOUBLE_EQ(b.epoch_progress(), 1.0);
  b.next(&f, nullptr);  // first position of the next epoch
  EXPECT_EQ(b.epoch(), 1);
  EXPECT_EQ(f.inputs[0], vocab.bos_id());
  EXPECT_GT(b.epoch_progress(), 0.0);
  EXPECT_LT(b.epoch_progress(), 0.5);
  EXPECT_NEAR(b.epochs_done(), 1.0 + b.epoch_progress(), 1e-12);
  ASSERT_EQ(tags.size(), static_cast<size_t>(sentences));
  for (size_t i = 0; i < tags.size(); ++i) EXPECT_EQ(tags[i], static_cast<int32_t>(3 + i));
}

TEST(Batcher, ResumeContinuesIdentically) {
  const Vocab vocab = numbered_vocab(60);
  const TokenCache data = TokenCache::from_sentences(tagged_corpus(5, 6, 60), vocab.size());
  BatcherOptions o;
  o.rows = 3;
  o.steps = 5;
  o.seed = 7;
  for (const int n : {0, 1, 13, 40}) {  // 40 batches span several epochs
    Batcher a(data, vocab, o);
    draw(a, n);
    const std::string saved = a.state().to_json().dump();
    std::vector<Batch> a_bwd;
    const auto a_fwd = draw(a, 25, &a_bwd);

    Batcher b(data, vocab, o);
    draw(b, 3);  // somewhere else entirely
    b.restore(BatcherState::from_json(nlohmann::json::parse(saved)));
    EXPECT_EQ(b.batches(), n);
    std::vector<Batch> b_bwd;
    const auto b_fwd = draw(b, 25, &b_bwd);
    expect_same(a_fwd, b_fwd);
    expect_same(a_bwd, b_bwd);
    EXPECT_EQ(a.epoch(), b.epoch());
    EXPECT_EQ(a.epoch_progress(), b.epoch_progress());
  }
}

TEST(Batcher, RestoreRejectsAnotherCorpusOrBatchSize) {
  const Vocab vocab = numbered_vocab(60);
  const TokenCache data = TokenCache::from_sentences(tagged_corpus(2, 6, 60), vocab.size());
  const TokenCache other = TokenCache::from_sentences(tagged_corpus(3, 6, 60), vocab.size());
  BatcherOptions o;
  o.rows = 2;
  o.steps = 4;
  Batcher a(data, vocab, o);
  draw(a, 2);
  const BatcherState s = a.state();
  Batcher b(other, vocab, o);
  EXPECT_THROW(b.restore(s), Error);
  o.rows = 3;
  Batcher c(data, vocab, o);
  EXPECT_THROW(c.restore(s), Error);
  nlohmann::json j = s.to_json();
  j.erase("row_offset");
  EXPECT_THROW(BatcherState::from_json(j), Error);
}

TEST(Batcher, RankShardsConcatenateToTheWholeBatch) {
  const Vocab vocab = numbered_vocab(80);
  const TokenCache data = TokenCache::from_sentences(tagged_corpus(3, 10, 80), vocab.size());
  BatcherOptions o;
  o.rows = 5;
  o.steps = 4;
  o.seed = 3;
  Batcher whole(data, vocab, o);
  std::vector<Batch> whole_bwd;
  const auto want = draw(whole, 30, &whole_bwd);
  for (const int world : {2, 3, 5, 7}) {
    std::vector<Ids> fin(30), ftg(30), bin(30);
    for (int rank = 0; rank < world; ++rank) {
      BatcherOptions ro = o;
      ro.rank = rank;
      ro.world_size = world;
      Batcher part(data, vocab, ro);
      EXPECT_EQ(part.my_rows().begin, split_rows(5, rank, world).begin);
      std::vector<Batch> bwd;
      const auto got = draw(part, 30, &bwd);
      for (int i = 0; i < 30; ++i) {
        EXPECT_EQ(got[i].rows, part.my_rows().end - part.my_rows().begin);
        EXPECT_EQ(got[i].row_begin, part.my_rows().begin);
        fin[i].insert(fin[i].end(), got[i].inputs.begin(), got[i].inputs.end());
        ftg[i].insert(ftg[i].end(), got[i].targets.begin(), got[i].targets.end());
        bin[i].insert(bin[i].end(), bwd[i].inputs.begin(), bwd[i].inputs.end());
      }
      EXPECT_EQ(part.state().to_json(), whole.state().to_json());
    }
    for (int i = 0; i < 30; ++i) {
      EXPECT_EQ(fin[i], want[i].inputs) << "world " << world << " batch " << i;
      EXPECT_EQ(ftg[i], want[i].targets) << "world " << world << " batch " << i;
      EXPECT_EQ(bin[i], whole_bwd[i].inputs) << "world " << world << " batch " << i;
    }
  }
}

TEST(Batcher, SplitRowsMatchesTheEvenSplit) {
  EXPECT_EQ(split_rows(10, 0, 3).begin, 0);
  EXPECT_EQ(split_rows(10, 0, 3).end, 4);
  EXPECT_EQ(split_rows(10, 1, 3).begin, 4);
  EXPECT_EQ(split_rows(10, 2, 3).end, 10);
  EXPECT_EQ(split_rows(2, 3, 4).begin, split_rows(2, 3, 4).end);
  EXPECT_THROW(split_rows(2, 4, 4), Error);
}

TEST(Batcher, RejectsBadOptionsAndForeignCaches) {
  const Vocab vocab = golden_vocab();
  const TokenCache data = TokenCache::from_sentences({{{3}}}, vocab.size());
  BatcherOptions o;
  o.rows = 0;
  EXPECT_THROW(Batcher(data, vocab, o), UsageError);
  o.rows = 1;
  o.steps = 0;
  EXPECT_THROW(Batcher(data, vocab, o), UsageError);
  const TokenCache empty = TokenCache::from_sentences({{}}, vocab.size());
  EXPECT_THROW(Batcher(empty, vocab, BatcherOptions{}), Error);
  const TokenCache big = TokenCache::from_sentences({{{3}}}, 50);
  EXPECT_THROW(Batcher(big, vocab, BatcherOptions{}), Error);
}

// ---- evaluation ----

TEST(EvalBatcher, StreamWithOneRowIsTheWholeTextInOrder) {
  const Vocab vocab = golden_vocab();
  const TokenCache data = TokenCache::from_sentences({{{3, 2, 4}, {2, 4}}, {}, {{3}}},
                                                     vocab.size());
  EvalOptions o;
  o.rows = 1;
  o.steps = 4;
  EvalBatcher e(data, vocab, o);
  EXPECT_EQ(e.num_batches(), 3);     // 4 + 3 + 2 = 9 positions
  EXPECT_EQ(e.total_positions(), 9);
  Ids fin, ftg, bin, btg;
  Batch f, r;
  std::vector<int64_t> steps;
  int64_t valid = 0;
  while (e.next(&f, &r)) {
    steps.push_back(f.steps);
    valid += f.valid;
    EXPECT_EQ(f.mask, std::vector<uint8_t>(f.steps, 1));
    fin.insert(fin.end(), f.inputs.begin(), f.inputs.end());
    ftg.insert(ftg.end(), f.targets.begin(), f.targets.end());
    bin.insert(bin.end(), r.inputs.begin(), r.inputs.end());
    btg.insert(btg.end(), r.targets.begin(), r.targets.end());
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 4, 1}));  // final batch is T_actual = 1
  EXPECT_EQ(valid, 9);
  EXPECT_EQ(fin, (Ids{0, 3, 2, 4, 0, 2, 4, 0, 3}));
  EXPECT_EQ(ftg, (Ids{3, 2, 4, 1, 2, 4, 1, 3, 1}));
  EXPECT_EQ(bin, (Ids{1, 4, 2, 3, 1, 4, 2, 1, 3}));
  EXPECT_EQ(btg, (Ids{4, 2, 3, 0, 4, 2, 0, 3, 0}));
  e.reset();
  EXPECT_TRUE(e.next(&f, nullptr));
  EXPECT_EQ(f.inputs, (Ids{0, 3, 2, 4}));
}

TEST(EvalBatcher, StreamRowsAreContiguousSegmentsWithAMask) {
  const Vocab vocab = numbered_vocab(50);
  const TokenCache data = TokenCache::from_sentences(tagged_corpus(3, 4, 50), vocab.size());
  // Reference: the whole stream with one row.
  EvalOptions one;
  one.rows = 1;
  one.steps = 1000;
  EvalBatcher single(data, vocab, one);
  Batch f;
  ASSERT_TRUE(single.next(&f, nullptr));
  const Ids stream_in = f.inputs, stream_tg = f.targets;
  const int64_t P = single.total_positions();
  ASSERT_EQ(static_cast<int64_t>(stream_in.size()), P);

  for (const int world : {1, 2}) {
    std::vector<Ids> rows_in(3), rows_tg(3);
    int64_t valid = 0, batches = -1;
    for (int rank = 0; rank < world; ++rank) {
      EvalOptions o;
      o.rows = 3;
      o.steps = 4;
      o.rank = rank;
      o.world_size = world;
      EvalBatcher e(data, vocab, o);
      const RowSplit mine = split_rows(3, rank, world);
      int64_t count = 0;
      while (e.next(&f, nullptr)) {
        ++count;
        ASSERT_EQ(f.rows, mine.end - mine.begin);
        for (int64_t r = 0; r < f.rows; ++r)
          for (int64_t t = 0; t < f.steps; ++t)
            if (f.mask[r * f.steps + t]) {
              rows_in[mine.begin + r].push_back(f.inputs[r * f.steps + t]);
              rows_tg[mine.begin + r].push_back(f.targets[r * f.steps + t]);
            }
        valid += f.valid;
      }
      if (batches >= 0) {
        EXPECT_EQ(count, batches);  // every rank sees the same batch count
      }
      batches = count;
    }
    EXPECT_EQ(valid, P);
    Ids cat_in, cat_tg;
    for (int r = 0; r < 3; ++r) {
      const RowSplit seg = split_rows(P, r, 3);
      EXPECT_EQ(static_cast<int64_t>(rows_in[r].size()), seg.end - seg.begin);
      cat_in.insert(cat_in.end(), rows_in[r].begin(), rows_in[r].end());
      cat_tg.insert(cat_tg.end(), rows_tg[r].begin(), rows_tg[r].end());
    }
    EXPECT_EQ(cat_in, stream_in);
    EXPECT_EQ(cat_tg, stream_tg);
  }
}

TEST(EvalBatcher, SentenceModeYieldsEachSentenceAlone) {
  const Vocab vocab = golden_vocab();
  const TokenCache data = TokenCache::from_sentences({{{3, 2, 4}}, {{2, 4}, {3}}}, vocab.size());
  EvalOptions o;
  o.mode = EvalMode::kSentence;
  EvalBatcher e(data, vocab, o);
  EXPECT_EQ(e.num_batches(), 3);
  Batch f, r;
  ASSERT_TRUE(e.next(&f, &r));
  EXPECT_EQ(f.steps, 4);
  EXPECT_EQ(f.inputs, (Ids{0, 3, 2, 4}));
  EXPECT_EQ(f.targets, (Ids{3, 2, 4, 1}));
  EXPECT_EQ(r.inputs, (Ids{1, 4, 2, 3}));
  EXPECT_EQ(r.targets, (Ids{4, 2, 3, 0}));
  ASSERT_TRUE(e.next(&f, &r));
  EXPECT_EQ(f.inputs, (Ids{0, 2, 4}));
  ASSERT_TRUE(e.next(&f, &r));
  EXPECT_EQ(f.inputs, (Ids{0, 3}));
  EXPECT_EQ(f.targets, (Ids{3, 1}));
  EXPECT_EQ(f.valid, 2);
  EXPECT_FALSE(e.next(&f, &r));

  // Several rows: padded to the longest sentence, mask marks the real positions.
  o.rows = 2;
  EvalBatcher two(data, vocab, o);
  ASSERT_TRUE(two.next(&f, nullptr));
  EXPECT_EQ(f.steps, 4);
  EXPECT_EQ(f.mask, (std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1, 0}));
  EXPECT_EQ(f.valid, 7);
  ASSERT_TRUE(two.next(&f, nullptr));
  EXPECT_EQ(f.steps, 2);
  EXPECT_EQ(f.mask, (std::vector<uint8_t>{1, 1, 0, 0}));  // second row has no sentence
  EXPECT_FALSE(two.next(&f, nullptr));
}

TEST(EvalBatcher, PtbTestStreamPredictsWordsPlusOneEndPerLine) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::data_dir() + "/ptb/";
  const Vocab vocab = build_vocab({dir + "ptb.train.txt"}, 1, 0);
  const TokenCache test = TokenCache::tokenize(dir + "ptb.test.txt", vocab);
  EXPECT_EQ(test.stats().unknown, 0);  // PTB valid/test have no OOV
  EvalOptions o;
  o.rows = 20;
  o.steps = 35;
  EvalBatcher e(test, vocab, o);
  EXPECT_EQ(e.total_positions(), 82430);  // data README: 78,669 words + 3,761 line ends
  Batch f;
  int64_t valid = 0;
  while (e.next(&f, nullptr)) valid += f.valid;
  EXPECT_EQ(valid, 82430);
}

// ---- contiguous packing (the TF PTB tutorial's reader) --------------------------------------

// Two shards, sentences [5 6 7] [8] | [9 10] [11 12 13]: the stream S (each sentence followed by
// </S> = 1, no <S>) is 5 6 7 1 8 1 9 10 1 11 12 13 1, N = 13.
TokenCache contiguous_corpus(const Vocab& vocab) {
  return TokenCache::from_sentences({{{5, 6, 7}, {8}}, {{9, 10}, {11, 12, 13}}}, vocab.size());
}

BatcherOptions contiguous_options(int64_t rows, int64_t steps) {
  BatcherOptions o;
  o.rows = rows;
  o.steps = steps;
  o.shuffle = false;
  o.packing = Packing::kContiguous;
  return o;
}

TEST(Batcher, ContiguousRowsAreTheStreamCutAsTheTutorialCutsIt) {
  const Vocab vocab = numbered_vocab(20);
  const TokenCache data = contiguous_corpus(vocab);
  // B = 2: L = 13 / 2 = 6, row 0 = S[0, 6) = 5 6 7 1 8 1, row 1 = S[6, 12) = 9 10 1 11 12 13
  // (S[12] is never used); T = 2: (L - 1) / T = 2 batches per epoch.
  Batcher b(data, vocab, contiguous_options(2, 2));
  EXPECT_EQ(b.epoch_positions(), 2 * 2 * 2);
  Batch f, r;
  b.next(&f, &r);
  EXPECT_EQ(f.inputs, (Ids{5, 6, 9, 10}));
  EXPECT_EQ(f.targets, (Ids{6, 7, 10, 1}));
  EXPECT_TRUE(f.reset_state);  // the first batch of an epoch starts from zero state
  EXPECT_TRUE(f.mask.empty());
  EXPECT_EQ(f.valid, 4);
  EXPECT_EQ(b.epoch(), 0);
  EXPECT_DOUBLE_EQ(b.epoch_progress(), 0.5);
  b.next(&f, &r);
  EXPECT_EQ(f.inputs, (Ids{7, 1, 1, 11}));
  EXPECT_EQ(f.targets, (Ids{1, 8, 11, 12}));
  EXPECT_FALSE(f.reset_state);
  EXPECT_EQ(b.epoch(), 0);  // the batch that ends epoch 0 still belongs to it (lr schedule)
  EXPECT_DOUBLE_EQ(b.epoch_progress(), 1.0);
  b.next(&f, &r);  // epoch 1 starts again at the head of every row
  EXPECT_EQ(f.inputs, (Ids{5, 6, 9, 10}));
  EXPECT_EQ(f.targets, (Ids{6, 7, 10, 1}));
  EXPECT_TRUE(f.reset_state);
  EXPECT_EQ(b.epoch(), 1);
  EXPECT_EQ(b.batches(), 3);

  // B = 1, T = 4: one row of 13, (13 - 1) / 4 = 3 batches, the last reaching S[12].
  Batcher one(data, vocab, contiguous_options(1, 4));
  const auto batches = draw(one, 4);
  EXPECT_EQ(batches[0].inputs, (Ids{5, 6, 7, 1}));
  EXPECT_EQ(batches[0].targets, (Ids{6, 7, 1, 8}));
  EXPECT_EQ(batches[1].inputs, (Ids{8, 1, 9, 10}));
  EXPECT_EQ(batches[1].targets, (Ids{1, 9, 10, 1}));
  EXPECT_EQ(batches[2].inputs, (Ids{1, 11, 12, 13}));
  EXPECT_EQ(batches[2].targets, (Ids{11, 12, 13, 1}));
  EXPECT_EQ(batches[3].inputs, batches[0].inputs);
  EXPECT_TRUE(batches[3].reset_state);
  EXPECT_FALSE(batches[2].reset_state);
  EXPECT_EQ(one.epoch(), 1);
}

TEST(Batcher, ContiguousPtbRowsMatchTheTutorialsArithmetic) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::data_dir() + "/ptb/";
  const Vocab vocab = build_vocab({dir + "ptb.train.txt"}, 1, 0);
  const TokenCache data = TokenCache::tokenize(dir + "ptb.train.txt", vocab);
  // 887,521 words + 42,068 line ends = 929,589 ids; / 20 rows = 46,479; (46,479 - 1) / 20 =
  // 2,323 batches per epoch (the tutorial's small-config epoch_size).
  Batcher b(data, vocab, contiguous_options(20, 20));
  EXPECT_EQ(b.epoch_positions(), 2323 * 20 * 20);
  Batch f;
  b.next(&f, nullptr);
  // Row 0 starts with the first words of the file; row 1 with id 46,479 of the stream.
  std::vector<int32_t> stream;
  for (int64_t i = 0; i < data.shard(0).sentences; ++i) {
    for (const uint32_t w : data.shard(0).sentence(i)) stream.push_back(static_cast<int32_t>(w));
    stream.push_back(vocab.eos_id());
  }
  ASSERT_EQ(stream.size(), 929589u);
  for (int64_t r = 0; r < 20; ++r)
    for (int64_t t = 0; t < 20; ++t) {
      EXPECT_EQ(f.inputs[r * 20 + t], stream[r * 46479 + t]) << r << " " << t;
      EXPECT_EQ(f.targets[r * 20 + t], stream[r * 46479 + t + 1]) << r << " " << t;
    }
  for (int k = 1; k < 2323; ++k) b.next(&f, nullptr);  // the last batch of epoch 0
  EXPECT_EQ(b.epoch(), 0);
  EXPECT_EQ(f.targets[19 * 20 + 19], stream[19 * 46479 + 2323 * 20]);
  b.next(&f, nullptr);
  EXPECT_EQ(b.epoch(), 1);
  EXPECT_TRUE(f.reset_state);
  EXPECT_EQ(f.inputs[0], stream[0]);
}

TEST(Batcher, ContiguousResumeContinuesIdenticallyAndRankRowsConcatenate) {
  const Vocab vocab = numbered_vocab(60);
  const TokenCache data = TokenCache::from_sentences(tagged_corpus(4, 9, 60), vocab.size());
  const BatcherOptions o = contiguous_options(3, 4);
  Batcher probe(data, vocab, o);
  const int64_t per_epoch = probe.epoch_positions() / (3 * 4);
  ASSERT_GE(per_epoch, 3);
  for (const int64_t n : {int64_t{0}, int64_t{1}, per_epoch, per_epoch + 2}) {
    Batcher a(data, vocab, o);
    draw(a, static_cast<int>(n));
    const std::string saved = a.state().to_json().dump();
    const auto a_fwd = draw(a, static_cast<int>(2 * per_epoch));
    Batcher b(data, vocab, o);
    draw(b, 2);  // somewhere else
    b.restore(BatcherState::from_json(nlohmann::json::parse(saved)));
    EXPECT_EQ(b.batches(), n);
    const auto b_fwd = draw(b, static_cast<int>(2 * per_epoch));
    expect_same(a_fwd, b_fwd);
    for (size_t i = 0; i < a_fwd.size(); ++i)
      EXPECT_EQ(a_fwd[i].reset_state, b_fwd[i].reset_state) << i;
    EXPECT_EQ(a.epoch(), b.epoch());
    EXPECT_EQ(a.epoch_progress(), b.epoch_progress());
  }
  // Ranks: every rank computes the same rows as one process would, and copies its own.
  Batcher whole(data, vocab, o);
  BatcherOptions r0 = o, r1 = o;
  r0.world_size = r1.world_size = 2;
  r1.rank = 1;
  Batcher first(data, vocab, r0), second(data, vocab, r1);
  for (int i = 0; i < 2 * per_epoch; ++i) {
    Batch w, a, c;
    whole.next(&w, nullptr);
    first.next(&a, nullptr);
    second.next(&c, nullptr);
    Ids joined = a.inputs;
    joined.insert(joined.end(), c.inputs.begin(), c.inputs.end());
    EXPECT_EQ(joined, w.inputs) << i;
    EXPECT_EQ(c.row_begin, 2);
    EXPECT_EQ(a.reset_state, w.reset_state);
    EXPECT_EQ(c.reset_state, w.reset_state);
  }
  EXPECT_TRUE(first.state().to_json() == second.state().to_json());
}

TEST(Batcher, ContiguousRefusesShuffleShortTextsAndForeignStates) {
  const Vocab vocab = numbered_vocab(20);
  const TokenCache data = contiguous_corpus(vocab);
  BatcherOptions shuffled = contiguous_options(2, 2);
  shuffled.shuffle = true;
  EXPECT_THROW(Batcher(data, vocab, shuffled), UsageError);
  // 13 ids in 7 rows: rows of 1 id cannot give a batch of T = 1 (needs 2).
  try {
    Batcher(data, vocab, contiguous_options(7, 1));
    ADD_FAILURE() << "a text too short for one batch was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("train.batch_size"), std::string::npos) << e.what();
  }
  Batcher contiguous(data, vocab, contiguous_options(2, 2));
  draw(contiguous, 1);
  BatcherOptions sentences = contiguous_options(2, 2);
  sentences.packing = Packing::kSentences;
  Batcher other(data, vocab, sentences);
  EXPECT_THROW(other.restore(contiguous.state()), Error);  // packing differs
  EXPECT_THROW(contiguous.restore(other.state()), Error);
  Batcher longer(data, vocab, contiguous_options(2, 3));
  EXPECT_THROW(longer.restore(contiguous.state()), Error);  // T differs: rows cut differently
  nlohmann::json j = contiguous.state().to_json();
  EXPECT_EQ(j.at("packing"), "contiguous");
  j["epoch_batch"] = 9;  // more than the 2 batches of an epoch
  EXPECT_THROW(contiguous.restore(BatcherState::from_json(j)), Error);
  j.erase("epoch_batch");
  EXPECT_THROW(BatcherState::from_json(j), Error);
  j = contiguous.state().to_json();
  j["packing"] = "rows";
  EXPECT_THROW(BatcherState::from_json(j), Error);
  // Sentence-packing states are written as before (no new fields) and read as sentences.
  EXPECT_FALSE(other.state().to_json().contains("packing"));
  EXPECT_EQ(BatcherState::from_json(other.state().to_json()).packing, Packing::kSentences);
  EXPECT_EQ(packing_from_name("contiguous"), Packing::kContiguous);
  EXPECT_THROW(packing_from_name("stream"), Error);
}

TEST(EvalBatcher, ContiguousStreamPredictsEveryIdButTheFirst) {
  const Vocab vocab = numbered_vocab(20);
  const TokenCache data = contiguous_corpus(vocab);
  EvalOptions o;
  o.packing = Packing::kContiguous;
  o.rows = 1;
  o.steps = 5;
  EvalBatcher one(data, vocab, o);
  EXPECT_EQ(one.total_positions(), 12);  // S[1 .. 13) from S[0 .. 12), as the tutorial's test
  Batch f;
  ASSERT_TRUE(one.next(&f, nullptr));
  EXPECT_EQ(f.inputs, (Ids{5, 6, 7, 1, 8}));
  EXPECT_EQ(f.targets, (Ids{6, 7, 1, 8, 1}));
  ASSERT_TRUE(one.next(&f, nullptr));
  EXPECT_EQ(f.inputs, (Ids{1, 9, 10, 1, 11}));
  EXPECT_EQ(f.targets, (Ids{9, 10, 1, 11, 12}));
  ASSERT_TRUE(one.next(&f, nullptr));
  EXPECT_EQ(f.steps, 2);
  EXPECT_EQ(f.inputs, (Ids{12, 13}));
  EXPECT_EQ(f.targets, (Ids{13, 1}));
  EXPECT_FALSE(one.next(&f, nullptr));
  // Two rows: the 12 predictions cut into 6 + 6.
  o.rows = 2;
  o.steps = 6;
  EvalBatcher two(data, vocab, o);
  ASSERT_TRUE(two.next(&f, nullptr));
  EXPECT_EQ(f.inputs, (Ids{5, 6, 7, 1, 8, 1, 9, 10, 1, 11, 12, 13}));
  EXPECT_EQ(f.targets, (Ids{6, 7, 1, 8, 1, 9, 10, 1, 11, 12, 13, 1}));
  EXPECT_EQ(f.valid, 12);
  EXPECT_FALSE(two.next(&f, nullptr));
  // Sentence mode: every sentence from zero state, </S> as its first input.
  o.mode = EvalMode::kSentence;
  o.rows = 4;
  EvalBatcher sentences(data, vocab, o);
  ASSERT_TRUE(sentences.next(&f, nullptr));
  EXPECT_EQ(f.steps, 4);
  EXPECT_EQ(f.inputs, (Ids{1, 5, 6, 7, 1, 8, 0, 0, 1, 9, 10, 0, 1, 11, 12, 13}));
  EXPECT_EQ(f.targets, (Ids{5, 6, 7, 1, 8, 1, 0, 0, 9, 10, 1, 0, 11, 12, 13, 1}));
  EXPECT_EQ(f.valid, 13);
}

TEST(EvalBatcher, ContiguousPtbTestPredictsAllButTheFirstWord) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::data_dir() + "/ptb/";
  const Vocab vocab = build_vocab({dir + "ptb.train.txt"}, 1, 0);
  const TokenCache test = TokenCache::tokenize(dir + "ptb.test.txt", vocab);
  EvalOptions o;
  o.packing = Packing::kContiguous;
  o.rows = 1;
  o.steps = 20;
  EvalBatcher e(test, vocab, o);
  EXPECT_EQ(e.total_positions(), 82429);  // the tutorial's test: (82,430 - 1) // 1 steps
  Batch f;
  int64_t valid = 0;
  while (e.next(&f, nullptr)) valid += f.valid;
  EXPECT_EQ(valid, 82429);
}

TEST(Batcher, Lm1bSampleEpochCoversEveryToken) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string spec = testing::data_dir() + "/lm1b-sample/shard*";
  const Vocab vocab = build_vocab(resolve_corpus(spec), 1, 0);
  const TokenCache data = TokenCache::tokenize(spec, vocab);
  EXPECT_EQ(data.stats().sentences, 1000);
  BatcherOptions o;
  o.rows = 8;
  o.steps = 20;
  o.seed = 1;
  Batcher b(data, vocab, o);
  Batch f;
  int64_t eos_targets = 0;
  while (b.epoch() == 0) {
    b.next(&f, nullptr);
    for (const int32_t t : f.targets) eos_targets += t == vocab.eos_id();
  }
  // Every sentence of epoch 0 was pulled; all but at most `rows` of them already ended.
  EXPECT_GE(eos_targets, 1000 - 8);
  EXPECT_LE(eos_targets, 1000 + 8);
}

}  // namespace
}  // namespace elmo
