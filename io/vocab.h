// Vocabulary: token <-> id, most frequent first (the id is the frequency rank: the log-uniform
// sampler and the hot-row split rely on it), plus `elmo_fast vocab` (build_vocab).
//
// File format: one token per line; only the first whitespace-separated field counts (a count
// after it is ignored); blank lines are skipped. `<S>`, `</S>`, `<UNK>` must be present: any that
// are missing are added at the front (in the order `</S>`, `<S>`, `<UNK>`, bilm-tf's) with a
// warning, which shifts the file's ids. A token listed twice is an Error naming both lines.
// Unknown words map to `<UNK>`. Special tokens are matched case-sensitively; PTB's `<unk>` is an
// ordinary word.
//
// Not a tokenizer (see io/corpus.h) and not thread-safe for mutation (lookups are const and
// safe from many threads).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace elmo {

inline constexpr std::string_view kBosToken = "<S>";
inline constexpr std::string_view kEosToken = "</S>";
inline constexpr std::string_view kUnkToken = "<UNK>";

class Vocab {
 public:
  Vocab() = default;

  // Reads a vocab file (see the header comment). Errors: unreadable, empty, duplicate tokens,
  // invalid UTF-8.
  static Vocab load(const std::string& path);
  // Same rules as load (missing specials added at the front with a warning, duplicates are an
  // Error) for tokens held in memory; `origin` names them in messages.
  static Vocab from_tokens(const std::vector<std::string>& tokens,
                           const std::string& origin = "vocab");

  // Writes one token per line, atomically (temporary file + rename).
  void save(const std::string& path) const;

  int32_t id(std::string_view token) const;      // unk_id() when absent
  bool contains(std::string_view token) const;
  const std::string& token(int32_t id) const;    // Error when out of range
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  int32_t unk_id() const { return unk_; }
  const std::vector<std::string>& tokens() const { return tokens_; }
  // 64-bit FNV-1a of the tokens in id order, each followed by '\n': equal vocabularies (same
  // tokens, same order) have equal hashes. Stored in token caches.
  uint64_t hash() const { return hash_; }

 private:
  void index(const std::string& origin, const std::vector<int64_t>& line_numbers);
  int32_t find(std::string_view token) const;  // -1 when absent

  std::vector<std::string> tokens_;
  std::vector<int32_t> slots_;  // open-addressing table of ids, -1 = empty; size power of two
  uint64_t hash_ = 0;
  int32_t bos_ = -1, eos_ = -1, unk_ = -1;
};

// Counts whitespace tokens over `files` (each read with LineReader; invalid UTF-8 is an Error)
// and returns `</S>`, `<S>`, `<UNK>` followed by every token seen at least `min_count` times,
// by count descending, ties broken by byte-wise lexicographic order (deterministic whatever the
// file order or thread count). Occurrences of the special tokens in the text are not counted
// (they stay in the three front slots). max_vocab > 0 caps the total size including the three
// specials; 0 = no cap. A corpus with no tokens is an Error. Files are counted in parallel.
// If `counts` is given it receives the count of every returned token (0 for the specials).
Vocab build_vocab(const std::vector<std::string>& files, int64_t min_count, int64_t max_vocab,
                  std::vector<int64_t>* counts = nullptr);

// 64-bit hash of a byte string (fast, not cryptographic); shared by the vocab table and caches.
uint64_t hash_bytes(std::string_view bytes, uint64_t seed = 0);

}  // namespace elmo
