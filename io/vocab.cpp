#include "io/vocab.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <numeric>

#include "io/atomic_file.h"
#include "io/corpus.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/parallel.h"

namespace elmo {

uint64_t hash_bytes(std::string_view bytes, uint64_t seed) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  const char* p = bytes.data();
  size_t n = bytes.size();
  uint64_t h = seed ^ (static_cast<uint64_t>(n) * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
  }
  // splitmix64 finaliser
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

namespace {

uint64_t table_size_for(size_t n) {
  uint64_t size = 16;
  while (size < 2 * static_cast<uint64_t>(n) + 2) size <<= 1;
  return size;
}

uint64_t fnv1a(uint64_t h, std::string_view bytes) {
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

// Token -> count table for build_vocab: open addressing, keys owned once per distinct token.
class CountTable {
 public:
  CountTable() : slots_(1024, -1) {}

  void add(std::string_view token, int64_t count) {
    const uint64_t h = hash_bytes(token);
    uint64_t mask = slots_.size() - 1;
    for (uint64_t s = h & mask;; s = (s + 1) & mask) {
      const int32_t k = slots_[s];
      if (k < 0) {
        slots_[s] = static_cast<int32_t>(keys_.size());
        keys_.emplace_back(token);
        hashes_.push_back(h);
        counts_.push_back(count);
        if (keys_.size() * 2 > slots_.size()) grow();
        return;
      }
      if (hashes_[k] == h && keys_[k] == token) {
        counts_[k] += count;
        return;
      }
    }
  }
  const std::vector<std::string>& keys() const { return keys_; }
  const std::vector<int64_t>& counts() const { return counts_; }

 private:
  void grow() {
    std::vector<int32_t> slots(slots_.size() * 2, -1);
    const uint64_t mask = slots.size() - 1;
    for (size_t k = 0; k < keys_.size(); ++k) {
      uint64_t s = hashes_[k] & mask;
      while (slots[s] >= 0) s = (s + 1) & mask;
      slots[s] = static_cast<int32_t>(k);
    }
    slots_.swap(slots);
  }

  std::vector<int32_t> slots_;
  std::vector<std::string> keys_;
  std::vector<uint64_t> hashes_;
  std::vector<int64_t> counts_;
};

bool is_special(std::string_view t) { return t == kBosToken || t == kEosToken || t == kUnkToken; }

}  // namespace

int32_t Vocab::find(std::string_view token) const {
  if (slots_.empty()) return -1;
  const uint64_t mask = slots_.size() - 1;
  for (uint64_t s = hash_bytes(token) & mask;; s = (s + 1) & mask) {
    const int32_t k = slots_[s];
    if (k < 0) return -1;
    if (tokens_[k] == token) return k;
  }
}

int32_t Vocab::id(std::string_view token) const {
  const int32_t k = find(token);
  return k >= 0 ? k : unk_;
}

bool Vocab::contains(std::string_view token) const { return find(token) >= 0; }

const std::string& Vocab::token(int32_t id) const {
  ELMO_CHECK(id >= 0 && id < size(), "token id ", id, " is outside the vocabulary of ", size(),
             " tokens");
  return tokens_[id];
}

// Adds missing specials at the front, builds the lookup table, checks duplicates.
void Vocab::index(const std::string& origin, const std::vector<int64_t>& line_numbers) {
  if (tokens_.empty())
    throw Error(str(origin, " is empty: build one with `elmo_fast vocab`"));
  std::vector<int64_t> lines = line_numbers;
  if (lines.size() != tokens_.size()) {
    lines.resize(tokens_.size());
    std::iota(lines.begin(), lines.end(), 1);
  }
  // Index first (duplicates are reported with the file's own line numbers).
  ELMO_CHECK(tokens_.size() < static_cast<size_t>(INT32_MAX) - 3, origin, " has too many tokens");
  const uint64_t table = table_size_for(tokens_.size() + 3);
  slots_.assign(table, -1);
  const uint64_t mask = table - 1;
  for (size_t k = 0; k < tokens_.size(); ++k) {
    for (uint64_t s = hash_bytes(tokens_[k]) & mask;; s = (s + 1) & mask) {
      const int32_t other = slots_[s];
      if (other < 0) {
        slots_[s] = static_cast<int32_t>(k);
        break;
      }
      if (tokens_[other] == tokens_[k])
        throw Error(str(origin, ": token '", tokens_[k], "' appears twice (lines ",
                        lines[other], " and ", lines[k], "): a vocabulary lists each token once"));
    }
  }
  std::vector<std::string> missing;
  for (const std::string_view special : {kEosToken, kBosToken, kUnkToken})
    if (find(special) < 0) missing.emplace_back(special);
  if (!missing.empty()) {
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    log_warn(origin, " lacks ", names, ": added at the front (ids of the listed tokens shift by ",
             missing.size(), ")");
    tokens_.insert(tokens_.begin(), missing.begin(), missing.end());
    slots_.assign(table, -1);
    for (size_t k = 0; k < tokens_.size(); ++k) {
      uint64_t s = hash_bytes(tokens_[k]) & mask;
      while (slots_[s] >= 0) s = (s + 1) & mask;
      slots_[s] = static_cast<int32_t>(k);
    }
  }
  bos_ = find(kBosToken);
  eos_ = find(kEosToken);
  unk_ = find(kUnkToken);
  uint64_t h = 0xCBF29CE484222325ull;
  for (const auto& t : tokens_) {
    h = fnv1a(h, t);
    h = fnv1a(h, "\n");
  }
  hash_ = h;
}

Vocab Vocab::from_tokens(const std::vector<std::string>& tokens, const std::string& origin) {
  Vocab v;
  v.tokens_.reserve(tokens.size() + 3);
  for (const auto& t : tokens) {
    ELMO_CHECK(!t.empty(), origin, ": empty token at position ", v.tokens_.size());
    v.tokens_.push_back(t);
  }
  v.index(origin, {});
  return v;
}

Vocab Vocab::load(const std::string& path) {
  Vocab v;
  std::vector<int64_t> lines;
  LineReader reader(path);
  std::vector<std::string_view> fields;
  while (reader.next_sentence(&fields)) {
    v.tokens_.emplace_back(fields[0]);
    lines.push_back(reader.line_number());
  }
  v.index(path, lines);
  return v;
}

void Vocab::save(const std::string& path) const {
  std::string text;
  size_t bytes = 0;
  for (const auto& t : tokens_) bytes += t.size() + 1;
  text.reserve(bytes);
  for (const auto& t : tokens_) {
    text += t;
    text += '\n';
  }
  write_file_atomic(path, text);
}

Vocab build_vocab(const std::vector<std::string>& files, int64_t min_count, int64_t max_vocab,
                  std::vector<int64_t>* counts) {
  ELMO_REQUIRE(!files.empty(), "build_vocab: no corpus files given");
  ELMO_REQUIRE(max_vocab == 0 || max_vocab >= 3,
               "max_vocab must be 0 (no cap) or at least 3 (the special tokens), got ", max_vocab);
  const int64_t n_files = static_cast<int64_t>(files.size());
  std::vector<CountTable> tables(files.size());
  std::vector<std::exception_ptr> errors(files.size());
  parallel_for(n_files, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::string_view> tokens;
    for (int64_t f = begin; f < end; ++f) {
      try {
        LineReader reader(files[f]);
        CountTable& table = tables[f];
        while (reader.next_sentence(&tokens))
          for (const auto t : tokens)
            if (!is_special(t)) table.add(t, 1);
      } catch (...) {
        errors[f] = std::current_exception();
      }
    }
  });
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);

  CountTable total;
  for (const auto& t : tables)
    for (size_t k = 0; k < t.keys().size(); ++k) total.add(t.keys()[k], t.counts()[k]);
  tables.clear();

  std::vector<int32_t> order;
  int64_t n_tokens = 0;
  for (size_t k = 0; k < total.keys().size(); ++k) {
    n_tokens += total.counts()[k];
    if (total.counts()[k] >= min_count) order.push_back(static_cast<int32_t>(k));
  }
  if (n_tokens == 0 && total.keys().empty()) {
    std::string names = files.front() + (files.size() > 1 ? str(" and ", files.size() - 1, " more") : "");
    throw Error(str("corpus is empty: no tokens in ", names));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const int64_t ca = total.counts()[a], cb = total.counts()[b];
    if (ca != cb) return ca > cb;
    return total.keys()[a] < total.keys()[b];
  });
  if (max_vocab > 0 && static_cast<int64_t>(order.size()) > max_vocab - 3)
    order.resize(static_cast<size_t>(max_vocab - 3));

  std::vector<std::string> tokens{std::string(kEosToken), std::string(kBosToken),
                                  std::string(kUnkToken)};
  tokens.reserve(order.size() + 3);
  if (counts) counts->assign(3, 0);
  for (const int32_t k : order) {
    tokens.push_back(total.keys()[k]);
    if (counts) counts->push_back(total.counts()[k]);
  }
  log_info("vocab: ", n_tokens, " tokens, ", total.keys().size(), " distinct, kept ",
           tokens.size(), " (min_count ", min_count, max_vocab > 0 ? str(", max ", max_vocab) : "",
           ")");
  return Vocab::from_tokens(tokens, "built vocabulary");
}

}  // namespace elmo
