// The built-in Zipfian Markov language: structure, sampling, exact entropy, corpus files.
#include "io/synthetic_corpus.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "io/atomic_file.h"
#include "runtime/error.h"

namespace elmo {
namespace {

constexpr char kConsonants[] = "bdfgklmnprstvz";  // 14
constexpr char kVowels[] = "aeiou";               // 5
constexpr int64_t kSyllables = 14 * 5;
constexpr int64_t kMaxTableEntries = int64_t{1} << 25;  // (K+1) * V, two int32 tables

void check_spec(const SyntheticSpec& s) {
  ELMO_REQUIRE(s.vocab_size >= 2 && s.vocab_size <= 1000000,
               "synthetic.vocab_size = ", s.vocab_size, " is out of range (2 .. 1000000)");
  ELMO_REQUIRE(s.classes >= 1 && s.classes <= 256 && s.classes <= s.vocab_size,
               "synthetic.classes = ", s.classes, " must be in 1 .. min(256, vocab_size)");
  ELMO_REQUIRE(s.vocab_size * (s.classes + 1) <= kMaxTableEntries,
               "synthetic.vocab_size x (classes + 1) = ", s.vocab_size * (s.classes + 1),
               " exceeds ", kMaxTableEntries, ": use fewer words or classes");
  ELMO_REQUIRE(s.zipf_exponent >= 0 && s.zipf_exponent <= 10,
               "synthetic.zipf_exponent = ", s.zipf_exponent, " is out of range [0, 10]");
  ELMO_REQUIRE(s.mean_sentence_length >= 1 && s.mean_sentence_length <= 10000,
               "synthetic.mean_sentence_length = ", s.mean_sentence_length,
               " is out of range [1, 10000]");
  ELMO_REQUIRE(s.train_sentences >= 0 && s.valid_sentences >= 0,
               "synthetic sentence counts must be >= 0");
}

// Fisher-Yates: a uniformly random permutation of 0..n-1.
std::vector<int32_t> random_permutation(int64_t n, Rng& rng) {
  std::vector<int32_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(i);
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.below(i + 1)]);
  return p;
}

// Solves x A = b for x (A is n x n, row-major), i.e. A^T x^T = b^T, by Gaussian elimination
// with partial pivoting in double.
std::vector<double> solve_left(std::vector<double> a, std::vector<double> b, int64_t n) {
  // Transpose so that we solve A^T y = b.
  std::vector<double> m(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m[i * n + j] = a[j * n + i];
  for (int64_t col = 0; col < n; ++col) {
    int64_t pivot = col;
    for (int64_t r = col + 1; r < n; ++r)
      if (std::abs(m[r * n + col]) > std::abs(m[pivot * n + col])) pivot = r;
    ELMO_CHECK(std::abs(m[pivot * n + col]) > 1e-300, "singular class chain");
    if (pivot != col) {
      for (int64_t j = 0; j < n; ++j) std::swap(m[col * n + j], m[pivot * n + j]);
      std::swap(b[col], b[pivot]);
    }
    for (int64_t r = col + 1; r < n; ++r) {
      const double f = m[r * n + col] / m[col * n + col];
      if (f == 0) continue;
      for (int64_t j = col; j < n; ++j) m[r * n + j] -= f * m[col * n + j];
      b[r] -= f * b[col];
    }
  }
  std::vector<double> x(n);
  for (int64_t r = n - 1; r >= 0; --r) {
    double s = b[r];
    for (int64_t j = r + 1; j < n; ++j) s -= m[r * n + j] * x[j];
    x[r] = s / m[r * n + r];
  }
  return x;
}

double xlogx(double p) { return p > 0 ? p * std::log(p) : 0.0; }

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t purpose) {
  uint64_t z = seed + purpose * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string synthetic_word(int64_t index) {
  std::string reversed;
  int64_t n = index + 1;  // bijective numeration: no leading "zero" digit, every string unique
  while (n > 0) {
    --n;
    const int64_t digit = n % kSyllables;
    reversed += kVowels[digit % 5];
    reversed += kConsonants[digit / 5];
    n /= kSyllables;
  }
  return std::string(reversed.rbegin(), reversed.rend());
}

SyntheticLanguage::SyntheticLanguage(const SyntheticSpec& spec) : spec_(spec) {
  check_spec(spec_);
  const int64_t v = spec_.vocab_size, k = spec_.classes;
  stop_probability_ = 1.0 / spec_.mean_sentence_length;

  words_.resize(v);
  for (int64_t i = 0; i < v; ++i) words_[i] = synthetic_word(i);

  Rng rng(derive_seed(spec_.seed, 0), kRngSynthetic);
  const std::vector<int32_t> pi = random_permutation(v, rng);
  word_class_.resize(v);
  for (int64_t j = 0; j < v; ++j) word_class_[pi[j]] = static_cast<int32_t>(j * k / v);

  order_.resize((k + 1) * v);  // [(K+1), V]
  rank_.resize((k + 1) * v);   // [(K+1), V]
  for (int64_t s = 0; s <= k; ++s) {
    const std::vector<int32_t> order = random_permutation(v, rng);
    for (int64_t r = 0; r < v; ++r) {
      order_[s * v + r] = order[r];
      rank_[s * v + order[r]] = static_cast<int32_t>(r);
    }
  }

  zipf_.resize(v);
  zipf_cdf_.resize(v);
  double total = 0;
  for (int64_t r = 0; r < v; ++r)
    total += std::pow(static_cast<double>(r + 1), -spec_.zipf_exponent);
  double cumulative = 0;
  for (int64_t r = 0; r < v; ++r) {
    zipf_[r] = std::pow(static_cast<double>(r + 1), -spec_.zipf_exponent) / total;
    cumulative += zipf_[r];
    zipf_cdf_[r] = cumulative;
  }
  compute_entropy();
}

void SyntheticLanguage::compute_entropy() {
  const int64_t v = spec_.vocab_size, k = spec_.classes;
  const double q = stop_probability_;
  // class_mass[s][c]: probability that state s emits a word of class c (before the 1-q).
  std::vector<double> class_mass((k + 1) * k, 0.0);  // [(K+1), K]
  for (int64_t s = 0; s <= k; ++s)
    for (int64_t r = 0; r < v; ++r) class_mass[s * k + word_class_[order_[s * v + r]]] += zipf_[r];
  // Next-token entropy per state, summed over the actual distributions.
  std::vector<double> state_entropy(k + 1, 0.0);
  for (int64_t s = 0; s <= k; ++s) {
    const double word_mass = s == 0 ? 1.0 : 1.0 - q;
    double h = s == 0 ? 0.0 : -xlogx(q);
    for (int64_t r = 0; r < v; ++r) h -= xlogx(word_mass * zipf_[r]);
    state_entropy[s] = h;
  }
  // Expected visits v (row vector over classes): v = a + v M  <=>  v (I - M) = a.
  std::vector<double> a(k), i_minus_m(k * k);  // [K], [K, K]
  for (int64_t c = 0; c < k; ++c) a[c] = class_mass[c];
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < k; ++c)
      i_minus_m[j * k + c] = (j == c ? 1.0 : 0.0) - (1.0 - q) * class_mass[(j + 1) * k + c];
  const std::vector<double> visits = solve_left(i_minus_m, a, k);
  double total_entropy = state_entropy[0], words = 0;
  for (int64_t c = 0; c < k; ++c) {
    total_entropy += visits[c] * state_entropy[c + 1];
    words += visits[c];
  }
  expected_words_ = words;
  entropy_per_token_ = total_entropy / (1.0 + words);
}

double SyntheticLanguage::perplexity_bound() const { return std::exp(entropy_per_token_); }

double SyntheticLanguage::log_prob(int64_t current, int64_t next) const {
  const int64_t v = spec_.vocab_size;
  ELMO_CHECK(current == kSentenceStart || (current >= 0 && current < v), "bad token ", current);
  ELMO_CHECK(next == kSentenceEnd || (next >= 0 && next < v), "bad token ", next);
  const double q = stop_probability_;
  if (current == kSentenceStart) {
    if (next == kSentenceEnd) return -std::numeric_limits<double>::infinity();
    return std::log(zipf_[rank_[next]]);
  }
  const int64_t state = word_class_[current] + 1;
  if (next == kSentenceEnd) return std::log(q);
  return std::log1p(-q) + std::log(zipf_[rank_[state * v + next]]);
}

int64_t SyntheticLanguage::sample_rank(Rng& rng) const {
  const double u = rng.uniform_double() * zipf_cdf_.back();
  const auto it = std::upper_bound(zipf_cdf_.begin(), zipf_cdf_.end(), u);
  return std::min<int64_t>(it - zipf_cdf_.begin(), spec_.vocab_size - 1);
}

std::vector<int32_t> SyntheticLanguage::sample_sentence(Rng& rng) const {
  const int64_t v = spec_.vocab_size;
  std::vector<int32_t> sentence;
  int64_t state = 0;  // <S>
  for (;;) {
    const int32_t word = order_[state * v + sample_rank(rng)];
    sentence.push_back(word);
    state = word_class_[word] + 1;
    if (rng.uniform_double() < stop_probability_) break;
  }
  return sentence;
}

std::string SyntheticLanguage::sample_sentence_text(Rng& rng) const {
  std::string line;
  for (const int32_t w : sample_sentence(rng)) {
    if (!line.empty()) line += ' ';
    line += words_[w];
  }
  return line;
}

std::string SyntheticLanguage::generate_text(int64_t sentences, Rng& rng) const {
  std::string text;
  text.reserve(static_cast<size_t>(sentences * (spec_.mean_sentence_length * 6 + 1)));
  for (int64_t i = 0; i < sentences; ++i) {
    text += sample_sentence_text(rng);
    text += '\n';
  }
  return text;
}

namespace {

// Valid first, train last: in ensure_synthetic_corpus the train file marks a complete pair.
void write_files(const SyntheticLanguage& language, const std::string& train_path,
                 const std::string& valid_path) {
  const SyntheticSpec& spec = language.spec();
  if (!valid_path.empty() && spec.valid_sentences > 0) {
    Rng valid = language.valid_rng();
    write_file_atomic(valid_path, language.generate_text(spec.valid_sentences, valid));
  }
  Rng train = language.train_rng();
  write_file_atomic(train_path, language.generate_text(spec.train_sentences, train));
}

}  // namespace

void write_synthetic_corpus(const SyntheticSpec& spec, const std::string& train_path,
                            const std::string& valid_path) {
  write_files(SyntheticLanguage(spec), train_path, valid_path);
}

SyntheticFiles ensure_synthetic_corpus(const SyntheticSpec& spec, const std::string& dir) {
  char fingerprint[256];
  std::snprintf(fingerprint, sizeof(fingerprint), "v1;%lld;%lld;%.17g;%.17g;%lld;%lld;%lld",
                static_cast<long long>(spec.vocab_size), static_cast<long long>(spec.classes),
                spec.zipf_exponent, spec.mean_sentence_length,
                static_cast<long long>(spec.train_sentences),
                static_cast<long long>(spec.valid_sentences), static_cast<long long>(spec.seed));
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(fnv1a64(fingerprint)));
  const std::filesystem::path folder =
      std::filesystem::path(dir) / ("synthetic-" + std::string(hex));
  SyntheticFiles files;
  files.train = (folder / "train.txt").string();
  files.valid = spec.valid_sentences > 0 ? (folder / "valid.txt").string() : "";
  const bool present = std::filesystem::exists(files.train) &&
                       (files.valid.empty() || std::filesystem::exists(files.valid));
  if (present) return files;
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  ELMO_CHECK(!ec, "cannot create folder ", folder.string(), ": ", ec.message());
  write_files(SyntheticLanguage(spec), files.train, files.valid);
  return files;
}

}  // namespace elmo
