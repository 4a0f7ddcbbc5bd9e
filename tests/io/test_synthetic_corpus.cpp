#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "io/atomic_file.h"
#include "io/synthetic_corpus.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

SyntheticSpec small_spec() {
  SyntheticSpec s;
  s.vocab_size = 300;
  s.classes = 7;  // 300 / 7: uneven class sizes
  s.zipf_exponent = 0.9;
  s.mean_sentence_length = 4.5;
  s.train_sentences = 200;
  s.valid_sentences = 30;
  s.seed = 99;
  return s;
}

// Closed form valid for this generator: every class state has the same next-token entropy.
double closed_form_entropy(const SyntheticLanguage& lang) {
  double hz = 0;
  for (int64_t r = 0; r < lang.vocab_size(); ++r) {
    const double p = lang.zipf_probability(r);
    hz -= p * std::log(p);
  }
  const double q = lang.stop_probability();
  const double l = lang.spec().mean_sentence_length;
  const double hq = q >= 1 ? 0.0 : -(q * std::log(q) + (1 - q) * std::log(1 - q));
  return (hz + l * (hq + (1 - q) * hz)) / (l + 1);
}

// Mean -ln p per predicted token of `sentences` sentences drawn with `rng` (n words + </S>).
double monte_carlo_entropy(const SyntheticLanguage& lang, int64_t sentences, Rng rng,
                           double* mean_length) {
  double nll = 0;
  int64_t tokens = 0, words = 0;
  for (int64_t i = 0; i < sentences; ++i) {
    const std::vector<int32_t> s = lang.sample_sentence(rng);
    int64_t current = SyntheticLanguage::kSentenceStart;
    for (const int32_t w : s) {
      nll -= lang.log_prob(current, w);
      current = w;
    }
    nll -= lang.log_prob(current, SyntheticLanguage::kSentenceEnd);
    tokens += static_cast<int64_t>(s.size()) + 1;
    words += static_cast<int64_t>(s.size());
  }
  *mean_length = static_cast<double>(words) / sentences;
  return nll / tokens;
}

TEST(SyntheticCorpus, WordsAreUniquePronounceableAscii) {
  EXPECT_EQ(synthetic_word(0), "ba");
  EXPECT_EQ(synthetic_word(69), "zu");
  EXPECT_EQ(synthetic_word(70), "baba");
  EXPECT_EQ(synthetic_word(71), "babe");
  std::set<std::string> seen;
  for (int64_t i = 0; i < 400000; ++i) {
    const std::string w = synthetic_word(i);
    ASSERT_TRUE(seen.insert(w).second) << "duplicate spelling " << w << " at " << i;
    ASSERT_EQ(w.size() % 2, 0u);
    for (size_t c = 0; c < w.size(); c += 2) {
      ASSERT_NE(std::string("bdfgklmnprstvz").find(w[c]), std::string::npos) << w;
      ASSERT_NE(std::string("aeiou").find(w[c + 1]), std::string::npos) << w;
    }
  }
}

TEST(SyntheticCorpus, ClassesAreEqualSizedAndTransitionsDependOnlyOnClass) {
  const SyntheticLanguage lang(small_spec());
  const int64_t v = lang.vocab_size(), k = lang.num_classes();
  std::vector<int64_t> sizes(k, 0);
  for (int64_t w = 0; w < v; ++w) ++sizes[lang.word_class(w)];
  for (int64_t c = 0; c < k; ++c) {
    EXPECT_GE(sizes[c], v / k) << c;
    EXPECT_LE(sizes[c], v / k + 1) << c;
  }
  // Every state's order is a permutation and its next-token distribution sums to 1.
  for (int64_t s = 0; s <= k; ++s) {
    std::set<int64_t> words;
    for (int64_t r = 0; r < v; ++r) words.insert(lang.word_at_rank(s, r));
    EXPECT_EQ(static_cast<int64_t>(words.size()), v) << s;
  }
  for (int64_t current = SyntheticLanguage::kSentenceStart; current < v; ++current) {
    double total = 0;
    for (int64_t next = 0; next < v; ++next) total += std::exp(lang.log_prob(current, next));
    total += std::exp(lang.log_prob(current, SyntheticLanguage::kSentenceEnd));
    ASSERT_NEAR(total, 1.0, 1e-12) << current;  // double sums of 301 terms
  }
  EXPECT_EQ(lang.log_prob(SyntheticLanguage::kSentenceStart, SyntheticLanguage::kSentenceEnd),
            -INFINITY);
  // Two words of the same class predict identically; words of different classes do not.
  int64_t a = -1, b = -1, other = -1;
  for (int64_t w = 0; w < v && (b < 0 || other < 0); ++w) {
    if (a < 0)
      a = w;
    else if (lang.word_class(w) == lang.word_class(a) && b < 0)
      b = w;
    else if (lang.word_class(w) != lang.word_class(a) && other < 0)
      other = w;
  }
  ASSERT_GE(b, 0);
  ASSERT_GE(other, 0);
  bool differs = false;
  for (int64_t next = 0; next < v; ++next) {
    EXPECT_EQ(lang.log_prob(a, next), lang.log_prob(b, next));
    differs |= lang.log_prob(a, next) != lang.log_prob(other, next);
  }
  EXPECT_TRUE(differs);
  // The most likely word after <S> has the Zipf head mass.
  EXPECT_DOUBLE_EQ(
      std::exp(lang.log_prob(SyntheticLanguage::kSentenceStart, lang.word_at_rank(0, 0))),
      lang.zipf_probability(0));
}

TEST(SyntheticCorpus, EmpiricalTransitionsMatchTheModel) {
  SyntheticSpec spec = small_spec();
  spec.vocab_size = 40;
  spec.classes = 3;
  const SyntheticLanguage lang(spec);
  // Counts of next tokens after <S> and after each class; 40 words + </S> = index 40.
  std::vector<std::vector<double>> counts(spec.classes + 1, std::vector<double>(41, 0));
  Rng rng = lang.train_rng();
  for (int i = 0; i < 60000; ++i) {
    int64_t state = 0;
    for (const int32_t w : lang.sample_sentence(rng)) {
      counts[state][w] += 1;
      state = lang.word_class(w) + 1;
    }
    counts[state][40] += 1;
  }
  for (int64_t s = 0; s <= spec.classes; ++s) {
    // Any word of class s-1 stands for the state.
    int64_t current = SyntheticLanguage::kSentenceStart;
    if (s > 0)
      for (int64_t w = 0; w < 40; ++w)
        if (lang.word_class(w) == s - 1) current = w;
    double total = 0, tv = 0;
    for (double c : counts[s]) total += c;
    ASSERT_GT(total, 10000);
    for (int64_t next = 0; next <= 40; ++next) {
      const double p = std::exp(lang.log_prob(current, next == 40 ? -2 : next));
      tv += std::abs(counts[s][next] / total - p);
    }
    // Total variation of >= 10k draws over 41 outcomes: expected ~0.03, 0.06 is far out.
    EXPECT_LT(0.5 * tv, 0.06) << "state " << s;
  }
}

TEST(SyntheticCorpus, EntropyIsExactAndMatchesMonteCarlo) {
  for (const SyntheticSpec& spec : {SyntheticSpec{}, small_spec()}) {
    const SyntheticLanguage lang(spec);
    SCOPED_TRACE(spec.vocab_size);
    EXPECT_NEAR(lang.expected_words_per_sentence(), spec.mean_sentence_length, 1e-9);
    EXPECT_NEAR(lang.entropy_per_token(), closed_form_entropy(lang), 1e-12);
    double mean_length = 0;
    const double mc = monte_carlo_entropy(lang, 20000, Rng(4242, kRngSynthetic), &mean_length);
    // Monte Carlo over ~90k-340k tokens: standard error ~0.1%; 1% is the declared tolerance.
    EXPECT_NEAR(mc, lang.entropy_per_token(), 0.01 * lang.entropy_per_token());
    EXPECT_NEAR(mean_length, spec.mean_sentence_length, 0.03 * spec.mean_sentence_length);
  }
}

TEST(SyntheticCorpus, DefaultBoundIsTheDocumentedValue) {
  const SyntheticLanguage lang{SyntheticSpec{}};
  EXPECT_NEAR(lang.perplexity_bound(), 84.4, 0.1);  // io/synthetic_corpus.h and run.toml
  EXPECT_NEAR(std::log(lang.perplexity_bound()), lang.entropy_per_token(), 1e-12);
}

TEST(SyntheticCorpus, OneWordSentencesWhenLengthIsOne) {
  SyntheticSpec spec = small_spec();
  spec.mean_sentence_length = 1;
  const SyntheticLanguage lang(spec);
  Rng rng = lang.train_rng();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(lang.sample_sentence(rng).size(), 1u);
  EXPECT_NEAR(lang.entropy_per_token(), closed_form_entropy(lang), 1e-12);
}

TEST(SyntheticCorpus, DeterministicBySeed) {
  const SyntheticLanguage a(small_spec()), b(small_spec());
  Rng ra = a.train_rng(), rb = b.train_rng();
  const std::string text = a.generate_text(100, ra);
  EXPECT_EQ(text, b.generate_text(100, rb));
  Rng again = a.train_rng();
  EXPECT_EQ(a.generate_text(100, again), text);
  Rng valid = a.valid_rng();
  EXPECT_NE(a.generate_text(100, valid), text);
  SyntheticSpec other = small_spec();
  other.seed = 100;
  const SyntheticLanguage c(other);
  Rng rc = c.train_rng();
  EXPECT_NE(c.generate_text(100, rc), text);
  // Lines: 100 non-empty sentences of known words.
  std::set<std::string> words(a.words().begin(), a.words().end());
  size_t begin = 0;
  int lines = 0;
  while (begin < text.size()) {
    const size_t end = text.find('\n', begin);
    ASSERT_NE(end, std::string::npos);
    const std::string line = text.substr(begin, end - begin);
    ASSERT_FALSE(line.empty());
    size_t w0 = 0;
    while (w0 <= line.size()) {
      size_t w1 = line.find(' ', w0);
      if (w1 == std::string::npos) w1 = line.size();
      ASSERT_TRUE(words.count(line.substr(w0, w1 - w0))) << line;
      w0 = w1 + 1;
    }
    ++lines;
    begin = end + 1;
  }
  EXPECT_EQ(lines, 100);
}

TEST(SyntheticCorpus, WritesCorpusFilesAndReusesThem) {
  const std::string dir = testing::temp_dir("synthetic");
  const SyntheticSpec spec = small_spec();
  write_synthetic_corpus(spec, dir + "/train.txt", dir + "/valid.txt");
  const SyntheticLanguage lang(spec);
  Rng train = lang.train_rng(), valid = lang.valid_rng();
  EXPECT_EQ(read_file(dir + "/train.txt"), lang.generate_text(spec.train_sentences, train));
  EXPECT_EQ(read_file(dir + "/valid.txt"), lang.generate_text(spec.valid_sentences, valid));
  write_synthetic_corpus(spec, dir + "/train2.txt", "");
  EXPECT_FALSE(std::filesystem::exists(dir + "/valid2.txt"));

  const SyntheticFiles files = ensure_synthetic_corpus(spec, dir + "/cache");
  EXPECT_EQ(read_file(files.train), read_file(dir + "/train.txt"));
  EXPECT_EQ(read_file(files.valid), read_file(dir + "/valid.txt"));
  const auto stamp = std::filesystem::last_write_time(files.train);
  const SyntheticFiles again = ensure_synthetic_corpus(spec, dir + "/cache");
  EXPECT_EQ(again.train, files.train);
  EXPECT_EQ(std::filesystem::last_write_time(again.train), stamp);  // not rewritten
  SyntheticSpec other = spec;
  other.train_sentences = 201;
  other.valid_sentences = 0;
  const SyntheticFiles different = ensure_synthetic_corpus(other, dir + "/cache");
  EXPECT_NE(different.train, files.train);
  EXPECT_EQ(different.valid, "");
}

TEST(SyntheticCorpus, RejectsBadSpecs) {
  SyntheticSpec spec = small_spec();
  spec.classes = spec.vocab_size + 1;
  EXPECT_THROW(SyntheticLanguage{spec}, UsageError);
  spec = small_spec();
  spec.mean_sentence_length = 0.5;
  EXPECT_THROW(SyntheticLanguage{spec}, UsageError);
  spec = small_spec();
  spec.vocab_size = 1;
  EXPECT_THROW(SyntheticLanguage{spec}, UsageError);
  spec = small_spec();
  spec.zipf_exponent = std::nan("");
  EXPECT_THROW(SyntheticLanguage{spec}, UsageError);
}

}  // namespace
}  // namespace elmo
