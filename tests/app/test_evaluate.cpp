// evaluate_corpus: sentence mode equals per-sentence evaluation from zero state, stream mode
// equals one long carried stream whatever the batch geometry (every position predicted once:
// count == tokens + sentences), max_tokens, and the EvalResult formulas (perplexity,
// mean_perplexity, to_json, describe).
#include "app/evaluate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

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

}  // namespace
}  // namespace elmo
