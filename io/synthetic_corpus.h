// The built-in corpus ("builtin:synthetic"): a seeded Zipfian Markov language whose entropy per
// predicted token is known exactly, so the best perplexity any model can reach is known.
//
// The language (implemented exactly like this; V = vocab_size, K = classes, a = zipf_exponent,
// L = mean_sentence_length, q = 1/L):
//   - Words w_0..w_{V-1}, spelled as unique pronounceable ASCII strings: word i is i written in
//     bijective base 70 with the "digits" ba be bi bo bu da ... zu (14 consonants x 5 vowels),
//     so w_0 = "ba", w_69 = "zu", w_70 = "baba", ...
//   - Structure RNG: Rng(derive_seed(seed, 0), kRngSynthetic). From it, in this order:
//       1. a Fisher-Yates permutation pi of 0..V-1; word pi[j] gets class floor(j*K/V)
//          (K classes of equal size, +-1);
//       2. K+1 Fisher-Yates permutations order_s of 0..V-1, s = 0 for the start state <S> and
//          s = k+1 for class k: order_s[r] is the word of rank r in state s.
//   - Zipf law over ranks: z(r) = (r+1)^-a / sum_{j<V} (j+1)^-a, r = 0..V-1.
//   - A sentence is a first-order Markov chain whose transition depends only on the class of
//     the current token: from <S> the next token is word order_0[r] with probability z(r)
//     (never </S>: no empty sentences); after a word of class k the next token is </S> with
//     probability q, else word order_{k+1}[r] with probability (1-q) z(r).
//   - Sampling (per word): one uniform_double u picks the rank (the first r whose cumulative
//     Zipf mass exceeds u * total), then one uniform_double v ends the sentence when v < q.
//   - Text RNGs: Rng(derive_seed(seed, 1), kRngSynthetic) for training text,
//     Rng(derive_seed(seed, 2), kRngSynthetic) for held-out text.
// Sentence lengths are geometric with mean exactly L.
//
// Entropy bound: a sentence <S> w1..wn </S> makes n+1 predictions. With H_s the entropy of
// the next-token distribution in state s and v_k the expected number of visits to words of
// class k (from the absorbing chain over the K classes: v = a + v M, a = class mass of the start
// distribution, M[j][k] = (1-q) * class-k mass of state j; solved by Gaussian elimination),
//   entropy_per_token = (H_<S> + sum_k v_k H_k) / (1 + sum_k v_k)      [nats]
// and sum_k v_k = E[n] = L. The backward LM predicts the same tokens in reverse order; by the
// chain rule its total entropy per sentence is the same, so the bound holds for forward,
// backward and their mean. With the defaults (V 2000, K 16, a 1.2, L 16) the bound perplexity
// exp(entropy_per_token) is about 84.4.
//
// What it is not: no vocab, no token ids for the trainer (the corpus is text, read like any
// other corpus), no <UNK>.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"
#include "runtime/rng.h"

namespace elmo {

// The generator's parameters are the [synthetic] config section.
using SyntheticSpec = SyntheticConfig;

// splitmix64(seed + purpose * golden ratio): independent seeds per purpose (0 structure,
// 1 training text, 2 held-out text).
uint64_t derive_seed(uint64_t seed, uint64_t purpose);

// Word i's spelling (bijective base 70 over consonant-vowel syllables).
std::string synthetic_word(int64_t index);

class SyntheticLanguage {
 public:
  // Token codes used by log_prob: the sentence boundary states.
  static constexpr int64_t kSentenceStart = -1;  // <S> (as the current token)
  static constexpr int64_t kSentenceEnd = -2;    // </S> (as the next token)

  // UsageError when the spec is out of range (same limits as the config keys).
  explicit SyntheticLanguage(const SyntheticSpec& spec);

  const SyntheticSpec& spec() const { return spec_; }
  int64_t vocab_size() const { return spec_.vocab_size; }
  int64_t num_classes() const { return spec_.classes; }
  double stop_probability() const { return stop_probability_; }
  const std::string& word(int64_t id) const { return words_[id]; }
  const std::vector<std::string>& words() const { return words_; }
  int64_t word_class(int64_t id) const { return word_class_[id]; }
  // Word of rank r in state s (0 = <S>, k+1 = class k).
  int64_t word_at_rank(int64_t state, int64_t rank) const {
    return order_[state * spec_.vocab_size + rank];
  }
  double zipf_probability(int64_t rank) const { return zipf_[rank]; }

  // ln p(next | current) under the true model; current = a word id or kSentenceStart, next =
  // a word id or kSentenceEnd. -inf for impossible transitions (<S> -> </S>).
  double log_prob(int64_t current, int64_t next) const;

  // One sentence as word ids (length >= 1) / as space-separated text.
  std::vector<int32_t> sample_sentence(Rng& rng) const;
  std::string sample_sentence_text(Rng& rng) const;
  // `sentences` lines, each "w1 w2 ... wn\n".
  std::string generate_text(int64_t sentences, Rng& rng) const;

  Rng train_rng() const { return Rng(derive_seed(spec_.seed, 1), kRngSynthetic); }
  Rng valid_rng() const { return Rng(derive_seed(spec_.seed, 2), kRngSynthetic); }

  // Exact entropy per predicted token (nats) and exp of it: no model can beat this perplexity
  // in expectation, forward, backward or mean.
  double entropy_per_token() const { return entropy_per_token_; }
  double perplexity_bound() const;
  // E[n] from the class chain (equals mean_sentence_length; exposed for tests).
  double expected_words_per_sentence() const { return expected_words_; }

 private:
  int64_t sample_rank(Rng& rng) const;
  void compute_entropy();

  SyntheticSpec spec_;
  double stop_probability_ = 0;      // q
  std::vector<std::string> words_;   // [V]
  std::vector<int32_t> word_class_;  // [V]
  std::vector<int32_t> order_;       // [(K+1) * V]: word of rank r in state s
  std::vector<int32_t> rank_;        // [(K+1) * V]: rank of word w in state s
  std::vector<double> zipf_;         // [V]
  std::vector<double> zipf_cdf_;     // [V], inclusive prefix sums
  double entropy_per_token_ = 0;
  double expected_words_ = 0;
};

// Writes the training text (train_sentences sentences from train_rng) to train_path and, when
// valid_path is not empty and valid_sentences > 0, the held-out text to valid_path; each file
// atomically (io/atomic_file.h).
void write_synthetic_corpus(const SyntheticSpec& spec, const std::string& train_path,
                            const std::string& valid_path);

struct SyntheticFiles {
  std::string train;  // <dir>/synthetic-<hash>/train.txt
  std::string valid;  // <dir>/synthetic-<hash>/valid.txt, "" when valid_sentences == 0
};
// Writes the corpus under `dir` unless files for exactly this spec (hash of every field) are
// already there; returns their paths. Creates `dir` as needed.
SyntheticFiles ensure_synthetic_corpus(const SyntheticSpec& spec, const std::string& dir);

}  // namespace elmo
