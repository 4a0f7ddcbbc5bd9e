// Token cache (`elmo_fast prepare`): corpus text turned into u32 word ids once, stored in
// memory-mapped files, reused by every later run and every rank.
//
// One cache file per corpus file, named "<basename>-<16 hex of the absolute source path>.elmotok"
// inside the cache folder. Layout (little-endian, 8-byte aligned):
//   header  CacheHeader (magic "ELMOTOK1", version, vocab hash + size, source size + mtime(ns),
//           sentence / token / unknown counts, checksums) followed by the absolute source path,
//           zero-padded to a multiple of 8 bytes
//   ids     u32 [tokens + sentences]: every sentence's word ids followed by kSentenceEnd
//   pad     to 8 bytes
//   offsets u64 [sentences + 1]: start of sentence i in `ids`; the last entry = ids count
// A cache file is reused when its header matches the source (absolute path, size, mtime) and the
// vocabulary hash, and its checksums verify; it is rebuilt otherwise (the log says why: "corpus
// file changed", "vocab changed", "corrupt ..."). A cache built for another vocabulary is never
// read. Files are written to a temporary name, fsynced and renamed, so concurrent ranks and
// crashes never leave a torn cache.
//
// Not the batcher (io/batcher.h) and not a vocabulary builder: ids come from a given Vocab.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/vocab.h"

namespace elmo {

inline constexpr uint32_t kSentenceEnd = 0xFFFFFFFFu;

// Read-only view of one shard's sentences (into a mapping or memory owned by a TokenCache).
struct TokenShard {
  const uint32_t* ids = nullptr;      // [tokens + sentences], sentences end with kSentenceEnd
  const uint64_t* offsets = nullptr;  // [sentences + 1]
  int64_t sentences = 0;
  int64_t tokens = 0;                 // word tokens (terminators not counted)

  // Word ids of sentence i (terminator excluded).
  std::span<const uint32_t> sentence(int64_t i) const {
    return {ids + offsets[i], static_cast<size_t>(offsets[i + 1] - offsets[i] - 1)};
  }
  int64_t sentence_length(int64_t i) const {
    return static_cast<int64_t>(offsets[i + 1] - offsets[i] - 1);
  }
};

struct TokenStats {
  int64_t sentences = 0;
  int64_t tokens = 0;   // word tokens
  int64_t unknown = 0;  // tokens mapped to <UNK>
  double unknown_rate() const { return tokens > 0 ? static_cast<double>(unknown) / tokens : 0.0; }
};

struct TokenCacheOptions {
  bool verify = true;          // check the body checksum of reused files (reads them once)
  bool force_rebuild = false;  // rebuild every file even when its header matches
};

struct CacheShardInfo {
  std::string source;      // corpus file as resolved
  std::string cache_path;  // "" for in-memory caches
  bool rebuilt = false;    // true when this call (re)built the file
  std::string reason;      // why it was rebuilt ("no cache yet", "vocab changed", ...)
};

class TokenCache {
 public:
  TokenCache() = default;
  TokenCache(TokenCache&&) noexcept;
  TokenCache& operator=(TokenCache&&) noexcept;
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;
  ~TokenCache();

  // Resolves `corpus_spec` (io/corpus.h), reuses or rebuilds one cache file per corpus file in
  // `cache_dir` (created if missing), maps them all. Builds run in parallel over files.
  // Errors: spec errors, invalid UTF-8 (file:line), a corpus with no tokens, a cache path that
  // cannot be replaced.
  static TokenCache open_or_build(const std::string& corpus_spec, const Vocab& vocab,
                                  const std::string& cache_dir,
                                  const TokenCacheOptions& options = {});
  // Tokenizes a corpus into memory without touching the disk (evaluation files, tests).
  static TokenCache tokenize(const std::string& corpus_spec, const Vocab& vocab);
  // Shards of already-tokenized sentences (tests, synthetic corpora). Ids must be < vocab_size.
  static TokenCache from_sentences(const std::vector<std::vector<std::vector<int32_t>>>& shards,
                                   int64_t vocab_size, int32_t unk_id = -1);

  int64_t num_shards() const { return static_cast<int64_t>(shards_.size()); }
  const TokenShard& shard(int64_t i) const { return shards_[i]; }
  const std::vector<TokenShard>& shards() const { return shards_; }
  const std::vector<CacheShardInfo>& shard_info() const { return info_; }
  TokenStats stats() const { return stats_; }
  int64_t vocab_size() const { return vocab_size_; }
  uint64_t vocab_hash() const { return vocab_hash_; }
  int64_t shards_rebuilt() const;

 private:
  struct Mapping {
    void* data = nullptr;
    size_t bytes = 0;
  };
  void release();

  std::vector<TokenShard> shards_;
  std::vector<CacheShardInfo> info_;
  std::vector<Mapping> mappings_;
  std::vector<std::vector<uint32_t>> owned_ids_;
  std::vector<std::vector<uint64_t>> owned_offsets_;
  TokenStats stats_;
  int64_t vocab_size_ = 0;
  uint64_t vocab_hash_ = 0;
};

// What open_or_build checks before it uses a cache file, on the whole file `image`: "" when it
// is an intact cache of `source` for the vocabulary (vocab_hash, vocab_size), else why not, as
// the log says it ("corrupt (header checksum)", "vocab changed", ...; *corrupt tells damage from
// staleness). verify_body: also the body checksum and that every id is a word of the vocabulary
// or a sentence end where one belongs (TokenCacheOptions::verify). Sizes in the header are
// checked against the image before they are used. Exposed for tests and the fuzzer.
struct TokenCacheSource {
  std::string abs_path;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};
std::string check_token_cache_image(std::string_view image, const TokenCacheSource& source,
                                    uint64_t vocab_hash, uint64_t vocab_size, bool verify_body,
                                    bool* corrupt);
// Rewrites the header and body checksums of a cache image to match its bytes: tests and the
// fuzzer make images that pass the checksums to reach the checks behind them.
void seal_token_cache_image(std::string& image);

// Cache file path used for `source` inside `cache_dir` (exposed for tests and tools).
std::string token_cache_path(const std::string& cache_dir, const std::string& source);

}  // namespace elmo
