// evaluate_corpus: sentence mode equals per-sentence evaluation from zero state, stream mode
// equals one long carried stream whatever the batch geometry (every position predicted once:
// count == tokens + sentences), max_tokens, and the EvalResult formulas (perplexity,
// mean_perplexity, to_json, describe). Slices (app/eval_slices.h): every target in exactly one,
// the per-position NLLs add up to the total, and the slices' token-weighted combination is the
// overall perplexity, per direction and mean.
#include "app/evaluate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

// </S> = 0, <S> = 1, <UNK> = 2, words 3..11.
Vocab test_vocab() {
  std::vector<std::string> tokens = {"</S>", "<S>", "<UNK>"};
  for (int i = 0; i < 9; ++i) tokens.push_back("w" + std::to_string(i));
  return Vocab::from_tokens(tokens, "test");
}

// Two shards of sentences of different lengths (word ids 3..11).
std::vector<std::vector<std::vector<int32_t>>> test_sentences() {
  return {{{3, 4, 5}, {6, 7}, {8, 9, 10, 11, 3}, {4}},
          {{5, 6, 7, 8}, {9, 10}, {11, 3, 4, 5, 6, 7}}};
}

std::unique_ptr<BiLM> test_model(bool bidirectional = true) {
  BilmShape shape;
  shape.vocab = 12;
  shape.embedding_dim = 4;
  shape.cell_size = 6;
  shape.proj_dim = 4;
  shape.layers = 2;
  shape.bidirectional = bidirectional;
  BilmTrainOptions options;
  options.softmax = SoftmaxKind::kFull;
  auto model = std::make_unique<BiLM>(shape, options);
  model->init(17, 0.5f, 1.0f);
  return model;
}

// NLL of each sentence evaluated on its own from zero state, both directions (the layout of
// io/batcher.h: fwd inputs [<S>, w..], targets [w.., </S>]; bwd the mirror).
NllSum per_sentence(BiLM& model, int d, const std::vector<std::vector<std::vector<int32_t>>>& all,
                    const Vocab& vocab) {
  NllSum sum;
  for (const auto& shard : all)
    for (std::vector<int32_t> words : shard) {
      if (d == 1) std::reverse(words.begin(), words.end());
      const int32_t start = d == 0 ? vocab.bos_id() : vocab.eos_id();
      const int32_t end = d == 0 ? vocab.eos_id() : vocab.bos_id();
      std::vector<int32_t> inputs = {start}, targets = words;
      inputs.insert(inputs.end(), words.begin(), words.end());
      targets.push_back(end);
      const int64_t n = static_cast<int64_t>(inputs.size());
      LstmState state = model.zero_state(1);
      const NllSum s = model.evaluate(d, {1, n, inputs.data(), targets.data()}, state);
      sum.nll += s.nll;
      sum.count += s.count;
    }
  return sum;
}

// The whole corpus as one stream of one row, evaluated in a single batch.
NllSum one_stream(BiLM& model, int d, const std::vector<std::vector<std::vector<int32_t>>>& all,
                  const Vocab& vocab) {
  std::vector<int32_t> inputs, targets;
  for (const auto& shard : all)
    for (std::vector<int32_t> words : shard) {
      if (d == 1) std::reverse(words.begin(), words.end());
      inputs.push_back(d == 0 ? vocab.bos_id() : vocab.eos_id());
      inputs.insert(inputs.end(), words.begin(), words.end());
      targets.insert(targets.end(), words.begin(), words.end());
      targets.push_back(d == 0 ? vocab.eos_id() : vocab.bos_id());
    }
  LstmState state = model.zero_state(1);
  const int64_t n = static_cast<int64_t>(inputs.size());
  return model.evaluate(d, {1, n, inputs.data(), targets.data()}, state);
}

class EvaluateCorpus : public ::testing::Test {
 protected:
  Vocab vocab = test_vocab();
  std::vector<std::vector<std::vector<int32_t>>> sentences = test_sentences();
  TokenCache data = TokenCache::from_sentences(sentences, 12, 2);
  int64_t tokens = 0, count_sentences = 0;
  void SetUp() override {
    for (const auto& shard : sentences)
      for (const auto& s : shard) tokens += s.size(), ++count_sentences;
  }
};

TEST_F(EvaluateCorpus, SentenceModeEqualsEachSentenceFromZeroState) {
  auto model = test_model();
  EvalSettings settings;
  settings.mode = EvalMode::kSentence;
  settings.rows = 3;
  const EvalResult r = evaluate_corpus(*model, data, vocab, settings);
  ASSERT_EQ(r.directions, 2);
  for (int d = 0; d < 2; ++d) {
    const NllSum want = per_sentence(*model, d, sentences, vocab);
    EXPECT_EQ(r.direction[d].count, tokens + count_sentences) << "direction " << d;
    EXPECT_EQ(r.direction[d].count, want.count);
    EXPECT_NEAR(r.direction[d].nll, want.nll, 1e-4 * want.nll) << "direction " << d;
  }
}

TEST_F(EvaluateCorpus, StreamModeCountsEveryPredictionWhateverTheGeometry) {
  auto model = test_model();
  for (int d = 0; d < 2; ++d) {
    const NllSum want = one_stream(*model, d, sentences, vocab);
    ASSERT_EQ(want.count, tokens + count_sentences);
    // One row: the state is carried through the whole text, so any unroll gives the same NLL.
    for (int64_t steps : {4, 7, 100}) {
      EvalSettings settings;
      settings.rows = 1;
      settings.steps = steps;
      const EvalResult r = evaluate_corpus(*model, data, vocab, settings);
      EXPECT_EQ(r.direction[d].count, tokens + count_sentences) << "steps " << steps;
      EXPECT_NEAR(r.direction[d].nll, want.nll, 1e-4 * want.nll) << "steps " << steps;
    }
  }
  // More rows: the stream is cut into row segments (each starts from zero state), so the NLL
  // changes but every position is still predicted exactly once.
  for (int64_t rows : {2, 3, 5}) {
    EvalSettings settings;
    settings.rows = rows;
    settings.steps = 3;
    const EvalResult r = evaluate_corpus(*model, data, vocab, settings);
    for (int d = 0; d < 2; ++d)
      EXPECT_EQ(r.direction[d].count, tokens + count_sentences) << "rows " << rows;
    EXPECT_GT(r.perplexity(0), 1.0);
  }
}

TEST_F(EvaluateCorpus, StreamAndSentenceModesDiffer) {
  auto model = test_model();
  EvalSettings stream;
  EvalSettings sentence;
  sentence.mode = EvalMode::kSentence;
  const EvalResult a = evaluate_corpus(*model, data, vocab, stream);
  const EvalResult b = evaluate_corpus(*model, data, vocab, sentence);
  EXPECT_EQ(a.direction[0].count, b.direction[0].count);
  EXPECT_GT(std::fabs(a.direction[0].nll - b.direction[0].nll), 1e-4);
  EXPECT_GT(std::fabs(a.direction[1].nll - b.direction[1].nll), 1e-4);
}

TEST_F(EvaluateCorpus, ForwardOnlyModelHasOneDirection) {
  auto model = test_model(false);
  const EvalResult r = evaluate_corpus(*model, data, vocab, EvalSettings{});
  EXPECT_EQ(r.directions, 1);
  EXPECT_EQ(r.direction[0].count, tokens + count_sentences);
  EXPECT_EQ(r.direction[1].count, 0);
  const nlohmann::json j = r.to_json();
  EXPECT_FALSE(j.contains("ppl_bwd"));
  EXPECT_DOUBLE_EQ(j["ppl"].get<double>(), r.perplexity(0));
  EXPECT_EQ(describe(r).find("bwd"), std::string::npos) << describe(r);
}

TEST_F(EvaluateCorpus, MaxTokensStopsEarly) {
  auto model = test_model();
  EvalSettings settings;
  settings.rows = 1;
  settings.steps = 4;
  settings.max_tokens = 6;
  const EvalResult r = evaluate_corpus(*model, data, vocab, settings);
  EXPECT_GE(r.direction[0].count, 6);
  EXPECT_LT(r.direction[0].count, tokens + count_sentences);
  EXPECT_EQ(r.direction[0].count, 8);  // two batches of 4
}

TEST(EvalResult, Formulas) {
  EvalResult r;
  r.directions = 2;
  r.direction[0] = {10.0, 5};   // mean 2
  r.direction[1] = {30.0, 10};  // mean 3
  EXPECT_DOUBLE_EQ(r.perplexity(0), std::exp(2.0));
  EXPECT_DOUBLE_EQ(r.perplexity(1), std::exp(3.0));
  // Token-weighted over directions: (10 + 30) / 15, not the mean of the two perplexities.
  EXPECT_DOUBLE_EQ(r.mean_perplexity(), std::exp(40.0 / 15.0));
  const nlohmann::json j = r.to_json();
  EXPECT_DOUBLE_EQ(j["ppl_fwd"].get<double>(), std::exp(2.0));
  EXPECT_DOUBLE_EQ(j["ppl_bwd"].get<double>(), std::exp(3.0));
  EXPECT_DOUBLE_EQ(j["ppl"].get<double>(), std::exp(40.0 / 15.0));
  EXPECT_EQ(j["tokens"].get<int64_t>(), 5);
  const std::string text = describe(r);
  EXPECT_NE(text.find("fwd 7.39"), std::string::npos) << text;
  EXPECT_NE(text.find("bwd 20.09"), std::string::npos) << text;
  EXPECT_NE(text.find("mean 14.39"), std::string::npos) << text;
  EXPECT_NE(text.find("5 tokens"), std::string::npos) << text;
  // Nothing evaluated: 0, not NaN or a crash.
  EvalResult empty;
  EXPECT_EQ(empty.perplexity(0), 0.0);
  EXPECT_EQ(empty.mean_perplexity(), 0.0);
  r.directions = 1;
  EXPECT_DOUBLE_EQ(r.mean_perplexity(), std::exp(2.0));
  EXPECT_NE(describe(r).find("fwd 7.39 (5 tokens)"), std::string::npos) << describe(r);
}

// Slices of the 12-word test vocabulary with head_ids 6, torso_ids 9: head 3..5, torso 6..8,
// tail 9..11, <UNK> 2, </S> 0 and <S> 1.
TEST(EvalSlices, EveryTargetFallsInExactlyOneSlice) {
  const Vocab vocab = test_vocab();
  const SliceBounds b = slice_bounds(vocab, 6, 9);
  EXPECT_EQ(b.slice_of(0), kSliceEos);
  EXPECT_EQ(b.slice_of(1), kSliceEos);
  EXPECT_EQ(b.slice_of(2), kSliceUnk);
  for (int32_t id : {3, 4, 5}) EXPECT_EQ(b.slice_of(id), kSliceHead) << id;
  for (int32_t id : {6, 7, 8}) EXPECT_EQ(b.slice_of(id), kSliceTorso) << id;
  for (int32_t id : {9, 10, 11}) EXPECT_EQ(b.slice_of(id), kSliceTail) << id;
  EXPECT_EQ(b.ids(kSliceHead), "3 .. 5");
  EXPECT_EQ(b.ids(kSliceTorso), "6 .. 8");
  EXPECT_EQ(b.ids(kSliceTail), "9 .. 11");
  EXPECT_EQ(b.ids(kSliceUnk), "2");
  EXPECT_EQ(b.ids(kSliceEos), "0, 1");
  // Specials wherever the file put them: matched by id, never by range.
  const Vocab late = Vocab::from_tokens({"a", "b", "c", "</S>", "<S>", "<UNK>", "d"}, "late");
  const SliceBounds l = slice_bounds(late, 2, 6);
  EXPECT_EQ(l.slice_of(late.eos_id()), kSliceEos);
  EXPECT_EQ(l.slice_of(late.unk_id()), kSliceUnk);
  EXPECT_EQ(l.slice_of(0), kSliceHead);
  EXPECT_EQ(l.slice_of(2), kSliceTorso);
  EXPECT_EQ(l.slice_of(6), kSliceTail);
}

TEST(EvalSlices, DefaultBoundsAreOneAndTenPercentOfTheWords) {
  std::vector<std::string> words;
  for (int i = 0; i < 2000; ++i) words.push_back("w" + std::to_string(i));
  const Vocab vocab = Vocab::from_tokens(words, "words");  // + </S> <S> <UNK> = 2003
  const SliceBounds b = slice_bounds(vocab, 0, 0);
  EXPECT_EQ(b.first_word, 3);
  EXPECT_EQ(b.head_end, 23);    // 3 + 20 words
  EXPECT_EQ(b.torso_end, 203);  // 3 + 200 words
  EXPECT_EQ(b.ids(kSliceHead), "3 .. 22");
  // Shares round up: 15 words still have a head word.
  const Vocab small =
      Vocab::from_tokens(std::vector<std::string>(words.begin(), words.begin() + 15), "small");
  EXPECT_EQ(slice_bounds(small, 0, 0).head_end, 4);
  EXPECT_EQ(slice_bounds(small, 0, 0).torso_end, 5);
  EXPECT_EQ(slice_bounds(vocab, 50, 0).head_end, 50);
  // 9 words: head 3 .. 3, and the default torso ends where the head does (empty, not an error).
  const SliceBounds tiny = slice_bounds(test_vocab(), 0, 0);
  EXPECT_EQ(tiny.head_end, 4);
  EXPECT_EQ(tiny.torso_end, 4);
  EXPECT_EQ(tiny.ids(kSliceTorso), "none");
  EXPECT_EQ(slice_bounds(vocab, 0, 5000).torso_end, 5000);  // beyond the vocabulary: empty tail
  EXPECT_EQ(slice_bounds(vocab, 0, 5000).ids(kSliceTail), "none");
  // A head bound from one key and a torso bound from the other that cross: refused, naming both.
  try {
    slice_bounds(vocab, 500, 0);
    ADD_FAILURE() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("eval.head_ids"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("torso bound 203"), std::string::npos) << e.what();
  }
}

// Must-show: the slices' token-weighted combination equals the overall perplexity:
// sum over slices of count * log(ppl) == total count * log(total ppl), per direction and mean.
TEST_F(EvaluateCorpus, SlicesCombineToTheOverallPerplexity) {
  // A corpus with every kind of target, unknown words (id 2) included.
  const std::vector<std::vector<std::vector<int32_t>>> with_unk = {
      {{3, 4, 2, 5}, {6, 7, 11}, {8, 9, 10, 2, 3}, {4}}, {{5, 6, 2, 8}, {9, 10}, {11, 3, 4}}};
  const TokenCache corpus = TokenCache::from_sentences(with_unk, 12, 2);
  auto model = test_model();
  for (const EvalMode mode : {EvalMode::kStream, EvalMode::kSentence}) {
    EvalSettings settings;
    settings.mode = mode;
    settings.rows = 3;  // the last batches are padded: ignored positions must not count
    settings.steps = 4;
    settings.head_ids = 6;
    settings.torso_ids = 9;
    const EvalResult r = evaluate_corpus(*model, corpus, vocab, settings);
    ASSERT_EQ(r.directions, 2);
    double mean_weighted = 0.0;
    int64_t mean_count = 0;
    for (int d = 0; d < 2; ++d) {
      double weighted = 0.0;
      int64_t count = 0;
      for (int s = 0; s < kEvalSlices; ++s) {
        const int64_t n = r.slices[d].slice[s].count;
        EXPECT_GT(n, 0) << "direction " << d << " slice " << slice_name(s);
        weighted += n * std::log(r.slice_perplexity(s, d));
        count += n;
      }
      EXPECT_EQ(count, r.direction[d].count) << "every prediction in exactly one slice";
      EXPECT_NEAR(weighted, count * std::log(r.perplexity(d)), 1e-9 * std::fabs(weighted))
          << "direction " << d;
      mean_weighted += weighted;
      mean_count += count;
    }
    double mean_from_slices = 0.0, shares = 0.0;
    for (int s = 0; s < kEvalSlices; ++s) {
      int64_t n = 0;
      for (int d = 0; d < 2; ++d) n += r.slices[d].slice[s].count;
      mean_from_slices += n * std::log(r.slice_perplexity(s));
      shares += r.slice_share(s);
    }
    EXPECT_NEAR(mean_from_slices, mean_count * std::log(r.mean_perplexity()),
                1e-9 * std::fabs(mean_from_slices));
    EXPECT_NEAR(mean_weighted, mean_from_slices, 1e-9 * std::fabs(mean_from_slices));
    EXPECT_NEAR(shares, 1.0, 1e-12);
    // The end of each direction: </S> forward, <S> backward, one per sentence.
    EXPECT_EQ(r.slices[0].slice[kSliceEos].count, 7);
    EXPECT_EQ(r.slices[1].slice[kSliceEos].count, 7);
    EXPECT_EQ(r.slices[0].slice[kSliceUnk].count, 3);
    // JSON and the printed table carry the same numbers.
    const nlohmann::json j = r.to_json();
    EXPECT_EQ(j["slices"]["unk"]["tokens_fwd"], 3);
    EXPECT_EQ(j["slices"]["head"]["ids"], "3 .. 5");
    EXPECT_NEAR(j["slices"]["tail"]["ppl"].get<double>(), r.slice_perplexity(kSliceTail), 1e-9);
    const std::vector<std::string> table = slice_table(r);
    ASSERT_EQ(table.size(), 7u);  // header, 5 slices, all
    EXPECT_NE(table[4].find("<UNK>"), std::string::npos) << table[4];
    EXPECT_NE(table[6].find("100.0%"), std::string::npos) << table[6];
  }
}

TEST_F(EvaluateCorpus, PositionNllsAreTheTermsOfTheSumInBatchLayout) {
  auto model = test_model();
  // Two rows of 5 steps; the second row's last two positions are ignored.
  std::vector<int32_t> inputs = {1, 3, 4, 5, 6, 1, 7, 8, 9, 10};
  std::vector<int32_t> targets = {3, 4, 5, 6, 0, 7, 8, 9, kIgnoreTarget, kIgnoreTarget};
  for (int d = 0; d < 2; ++d) {
    LstmState state = model->zero_state(2);
    std::vector<double> nll(10);
    const NllSum sum = model->evaluate(d, {2, 5, inputs.data(), targets.data()}, state, nll.data());
    EXPECT_EQ(sum.count, 8);
    EXPECT_TRUE(std::isnan(nll[8]) && std::isnan(nll[9]));
    // The sum runs time-major (t * rows + b): the same order gives the same bits.
    double total = 0.0;
    for (int t = 0; t < 5; ++t)
      for (int b = 0; b < 2; ++b)
        if (targets[b * 5 + t] != kIgnoreTarget) total += nll[b * 5 + t];
    EXPECT_EQ(total, sum.nll);
    // Row 1 alone from zero state gives the same per-position NLLs: the layout is [rows, steps].
    LstmState one = model->zero_state(1);
    std::vector<double> alone(5);
    model->evaluate(d, {1, 5, inputs.data() + 5, targets.data() + 5}, one, alone.data());
    for (int t = 0; t < 3; ++t) EXPECT_NEAR(alone[t], nll[5 + t], 1e-5) << "position " << t;
  }
}

TEST(EvalSlices, ValidationScalarsNameEverySlice) {
  EvalResult r;
  r.directions = 2;
  r.direction[0] = {10.0, 5};
  r.direction[1] = {10.0, 5};
  r.slices[0].slice[kSliceHead] = {6.0, 3};
  r.slices[0].slice[kSliceEos] = {4.0, 2};
  r.slices[1].slice[kSliceHead] = {6.0, 3};
  r.slices[1].slice[kSliceEos] = {4.0, 2};
  const Scalars s = validation_scalars(r, 12.5);
  const auto value = [&](const std::string& key) {
    for (const auto& [name, v] : s)
      if (name == key) return v;
    ADD_FAILURE() << key << " missing";
    return 0.0;
  };
  EXPECT_EQ(s[0].first, "time");
  EXPECT_EQ(value("time"), 12.5);
  EXPECT_DOUBLE_EQ(value("valid_ppl"), std::exp(2.0));
  EXPECT_DOUBLE_EQ(value("valid_ppl_head"), std::exp(2.0));
  EXPECT_DOUBLE_EQ(value("valid_share_head"), 0.6);
  EXPECT_DOUBLE_EQ(value("valid_share_eos"), 0.4);
  EXPECT_TRUE(std::isnan(value("valid_ppl_tail")));  // empty: null in metrics.jsonl
  EXPECT_EQ(value("valid_share_tail"), 0.0);
  EXPECT_TRUE(r.to_json()["slices"]["tail"]["ppl"].is_null());
}

}  // namespace
}  // namespace elmo
