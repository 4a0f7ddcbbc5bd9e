#include "io/token_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/corpus.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/parallel.h"

namespace elmo {

static_assert(std::endian::native == std::endian::little, "token caches are little-endian");

namespace {

constexpr char kMagic[8] = {'E', 'L', 'M', 'O', 'T', 'O', 'K', '1'};
constexpr uint32_t kVersion = 1;

struct CacheHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;  // this struct + path + padding (multiple of 8)
  uint64_t vocab_hash;
  uint64_t vocab_size;
  uint64_t source_size;
  int64_t source_mtime_ns;
  uint64_t sentences;
  uint64_t tokens;
  uint64_t unknown;
  uint64_t ids_count;       // tokens + sentences
  uint64_t body_checksum;   // of ids then offsets (see Checksum)
  uint64_t path_bytes;
  uint64_t header_checksum; // hash_bytes of the fields above + path
};
static_assert(sizeof(CacheHeader) == 104);

uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

uint64_t file_bytes(const CacheHeader& h) {
  return h.header_bytes + align8(h.ids_count * 4) + (h.sentences + 1) * 8;
}

uint64_t header_checksum(const CacheHeader& h, std::string_view path) {
  return hash_bytes(path, hash_bytes(std::string_view(reinterpret_cast<const char*>(&h),
                                                      offsetof(CacheHeader, header_checksum))));
}

// Streaming 4-lane multiply-xor checksum over 32-byte blocks (any chunking gives the same value).
class Checksum {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    if (pending_ > 0) {
      const size_t take = std::min(n, sizeof(tail_) - pending_);
      std::memcpy(tail_ + pending_, p, take);
      pending_ += take;
      p += take;
      n -= take;
      if (pending_ < sizeof(tail_)) return;
      block(tail_);
      pending_ = 0;
    }
    while (n >= 32) {
      block(p);
      p += 32;
      n -= 32;
    }
    std::memcpy(tail_, p, n);
    pending_ = n;
  }
  uint64_t finish() {
    std::memset(tail_ + pending_, 0, sizeof(tail_) - pending_);
    block(tail_);
    uint64_t h = bytes_;
    for (const uint64_t l : lane_) h = hash_bytes(std::string_view(reinterpret_cast<const char*>(&l), 8), h);
    return h;
  }

 private:
  void block(const unsigned char* p) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, p + 8 * k, 8);
      lane_[k] = (lane_[k] ^ w) * 0x9E3779B97F4A7C15ull;
      lane_[k] ^= lane_[k] >> 31;
    }
    bytes_ += 32;
  }
  uint64_t lane_[4] = {1, 2, 3, 4};
  uint64_t bytes_ = 0;
  unsigned char tail_[32];
  size_t pending_ = 0;
};

struct SourceStat {
  std::string abs_path;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

SourceStat stat_source(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error(str("cannot stat corpus file '", path, "': ", std::strerror(errno)));
  SourceStat s;
  s.abs_path = std::filesystem::absolute(path).lexically_normal().string();
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return s;
}

// Tokenizes one corpus file into (ids, offsets) through `sink(ids, n)` chunks.
struct TokenizeResult {
  std::vector<uint64_t> offsets;
  int64_t tokens = 0, unknown = 0;
};

template <typename Sink>
TokenizeResult tokenize_file(const std::string& path, const Vocab& vocab, Sink&& sink) {
  TokenizeResult r;
  const int32_t unk = vocab.unk_id();
  std::vector<uint32_t> chunk;
  constexpr size_t kChunk = size_t{1} << 20;  // ids per sink call (4 MB)
  chunk.reserve(kChunk + 4096);
  uint64_t written = 0;
  LineReader reader(path);
  std::vector<std::string_view> tokens;
  r.offsets.push_back(0);
  while (reader.next_sentence(&tokens)) {
    for (const auto t : tokens) {
      const int32_t id = vocab.id(t);
      r.unknown += id == unk;
      chunk.push_back(static_cast<uint32_t>(id));
    }
    chunk.push_back(kSentenceEnd);
    r.tokens += static_cast<int64_t>(tokens.size());
    written += tokens.size() + 1;
    r.offsets.push_back(written);
    if (chunk.size() >= kChunk) {
      sink(chunk.data(), chunk.size());
      chunk.clear();
    }
  }
  if (!chunk.empty()) sink(chunk.data(), chunk.size());
  return r;
}

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(str("cannot write token cache '", path, "': ", std::strerror(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Builds the cache file for `source` at `cache_path` (temporary name, fsync, rename).
void build_cache_file(const SourceStat& source, const std::string& source_path, const Vocab& vocab,
                      const std::string& cache_path, int64_t index) {
  const std::string tmp = str(cache_path, ".tmp-", ::getpid(), "-", index);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error(str("cannot create token cache '", tmp, "': ", std::strerror(errno),
                    " (check that the cache folder is writable)"));
  try {
    CacheHeader h{};
    std::memcpy(h.magic, kMagic, 8);
    h.version = kVersion;
    h.path_bytes = source.abs_path.size();
    h.header_bytes = static_cast<uint32_t>(align8(sizeof(CacheHeader) + h.path_bytes));
    std::vector<char> head(h.header_bytes, 0);
    write_all(fd, head.data(), head.size(), tmp);  // placeholder, rewritten at the end
    Checksum sum;
    uint64_t ids = 0;
    TokenizeResult r = tokenize_file(source_path, vocab, [&](const uint32_t* p, size_t n) {
      write_all(fd, p, n * 4, tmp);
      sum.update(p, n * 4);
      ids += n;
    });
    const uint64_t pad = align8(ids * 4) - ids * 4;
    const char zeros[8] = {};
    write_all(fd, zeros, pad, tmp);
    sum.update(zeros, pad);
    write_all(fd, r.offsets.data(), r.offsets.size() * 8, tmp);
    sum.update(r.offsets.data(), r.offsets.size() * 8);
    h.vocab_hash = vocab.hash();
    h.vocab_size = static_cast<uint64_t>(vocab.size());
    h.source_size = source.size;
    h.source_mtime_ns = source.mtime_ns;
    h.sentences = r.offsets.size() - 1;
    h.tokens = static_cast<uint64_t>(r.tokens);
    h.unknown = static_cast<uint64_t>(r.unknown);
    h.ids_count = ids;
    h.body_checksum = sum.finish();
    h.header_checksum = header_checksum(h, source.abs_path);
    std::memcpy(head.data(), &h, sizeof h);
    std::memcpy(head.data() + sizeof h, source.abs_path.data(), source.abs_path.size());
    if (::pwrite(fd, head.data(), head.size(), 0) != static_cast<ssize_t>(head.size()))
      throw Error(str("cannot write token cache '", tmp, "': ", std::strerror(errno)));
    if (::fsync(fd) != 0)
      throw Error(str("cannot flush token cache '", tmp, "': ", std::strerror(errno)));
    ::close(fd);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), cache_path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(tmp.c_str());
    throw Error(str("cannot replace token cache '", cache_path, "': ", std::strerror(saved),
                    " (remove it or choose another cache folder)"));
  }
}

// Result of checking an existing cache file against its source and the vocabulary.
struct Probe {
  bool usable = false;
  bool corrupt = false;   // warn instead of info
  std::string reason;     // why it is not usable
  void* data = nullptr;   // mapping when usable
  size_t bytes = 0;
};

Probe probe_cache(const std::string& cache_path, const SourceStat& source, const Vocab& vocab,
                  bool verify) {
  Probe p;
  const int fd = ::open(cache_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    p.reason = errno == ENOENT ? "no cache yet" : str("cannot open (", std::strerror(errno), ")");
    return p;
  }
  struct stat st {};
  ::fstat(fd, &st);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  auto fail = [&](bool corrupt, std::string reason) {
    ::close(fd);
    p.corrupt = corrupt;
    p.reason = std::move(reason);
    return p;
  };
  if (!S_ISREG(st.st_mode)) return fail(true, "not a regular file");
  if (size < sizeof(CacheHeader)) return fail(true, "corrupt (truncated header)");
  void* data = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (data == MAP_FAILED) {
    p.reason = str("cannot map (", std::strerror(errno), ")");
    p.corrupt = true;
    return p;
  }
  const TokenCacheSource expected{source.abs_path, source.size, source.mtime_ns};
  p.reason = check_token_cache_image({static_cast<const char*>(data), size}, expected, vocab.hash(),
                                     static_cast<uint64_t>(vocab.size()), verify, &p.corrupt);
  if (!p.reason.empty()) {
    ::munmap(data, size);
    return p;
  }
  p.usable = true;
  p.data = data;
  p.bytes = size;
  return p;
}

TokenShard shard_view(const void* data) {
  const char* base = static_cast<const char*>(data);
  CacheHeader h;
  std::memcpy(&h, base, sizeof h);
  TokenShard s;
  s.ids = reinterpret_cast<const uint32_t*>(base + h.header_bytes);
  s.offsets = reinterpret_cast<const uint64_t*>(base + h.header_bytes + align8(h.ids_count * 4));
  s.sentences = static_cast<int64_t>(h.sentences);
  s.tokens = static_cast<int64_t>(h.tokens);
  return s;
}

void rethrow_first(std::vector<std::exception_ptr>& errors) {
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace

std::string check_token_cache_image(std::string_view image, const TokenCacheSource& source,
                                    uint64_t vocab_hash, uint64_t vocab_size, bool verify_body,
                                    bool* corrupt) {
  *corrupt = true;
  CacheHeader h{};
  const uint64_t size = image.size();
  if (size < sizeof h) return "corrupt (truncated header)";
  std::memcpy(&h, image.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0) return "not a token cache (foreign magic)";
  if (h.version != kVersion) {
    *corrupt = false;
    return str("cache format version ", h.version);
  }
  if (h.path_bytes > 65536 || h.header_bytes != align8(sizeof h + h.path_bytes) ||
      size < h.header_bytes)
    return "corrupt (bad header)";
  const std::string path(image.substr(sizeof h, h.path_bytes));
  if (header_checksum(h, path) != h.header_checksum) return "corrupt (header checksum)";
  // Sizes are checked against the file before any arithmetic on them can overflow.
  uint64_t ids_count = 0;
  if (__builtin_add_overflow(h.tokens, h.sentences, &ids_count) || ids_count != h.ids_count ||
      h.ids_count > size / 4 || h.sentences >= size / 8 || size != file_bytes(h))
    return "corrupt (truncated or wrong size)";
  *corrupt = false;
  if (path != source.abs_path || h.source_size != source.size ||
      h.source_mtime_ns != source.mtime_ns)
    return "corpus file changed";
  if (h.vocab_hash != vocab_hash || h.vocab_size != vocab_size) return "vocab changed";
  *corrupt = true;
  const char* base = image.data();
  const char* body = base + h.header_bytes;
  const uint64_t* offsets = reinterpret_cast<const uint64_t*>(body + align8(h.ids_count * 4));
  if (verify_body) {
    Checksum sum;
    sum.update(body, size - h.header_bytes);
    if (sum.finish() != h.body_checksum) return "corrupt (checksum or offsets mismatch)";
  }
  // Structure (cheap, always): offsets increase and end at the ids count.
  bool ok = offsets[0] == 0 && offsets[h.sentences] == h.ids_count;
  for (uint64_t i = 0; ok && i < h.sentences; ++i) ok = offsets[i + 1] > offsets[i];
  if (!ok) return "corrupt (checksum or offsets mismatch)";
  if (verify_body) {  // with the body read anyway: every sentence ends, every id is a word
    const auto* ids = reinterpret_cast<const uint32_t*>(body);
    for (uint64_t i = 0; i < h.sentences; ++i) {
      for (uint64_t k = offsets[i]; k + 1 < offsets[i + 1]; ++k)
        if (ids[k] >= vocab_size) return "corrupt (a word id outside the vocabulary)";
      if (ids[offsets[i + 1] - 1] != kSentenceEnd) return "corrupt (a sentence without its end)";
    }
  }
  *corrupt = false;
  return "";
}

void seal_token_cache_image(std::string& image) {
  ELMO_CHECK(image.size() >= sizeof(CacheHeader), "a token cache image needs its header");
  CacheHeader h;
  std::memcpy(&h, image.data(), sizeof h);
  if (h.header_bytes <= image.size()) {  // the body checksum is part of the header's
    Checksum sum;
    sum.update(image.data() + h.header_bytes, image.size() - h.header_bytes);
    h.body_checksum = sum.finish();
  }
  if (h.path_bytes <= image.size() - sizeof h)
    h.header_checksum = header_checksum(h, image.substr(sizeof h, h.path_bytes));
  std::memcpy(image.data(), &h, sizeof h);
}

std::string token_cache_path(const std::string& cache_dir, const std::string& source) {
  const std::string abs = std::filesystem::absolute(source).lexically_normal().string();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_bytes(abs)));
  return (std::filesystem::path(cache_dir) /
          str(std::filesystem::path(abs).filename().string(), "-", hex, ".elmotok"))
      .string();
}

TokenCache::TokenCache(TokenCache&& other) noexcept { *this = std::move(other); }

TokenCache& TokenCache::operator=(TokenCache&& other) noexcept {
  if (this != &other) {
    release();
    shards_ = std::move(other.shards_);
    info_ = std::move(other.info_);
    mappings_ = std::move(other.mappings_);
    owned_ids_ = std::move(other.owned_ids_);
    owned_offsets_ = std::move(other.owned_offsets_);
    stats_ = other.stats_;
    vocab_size_ = other.vocab_size_;
    vocab_hash_ = other.vocab_hash_;
    other.mappings_.clear();
    other.shards_.clear();
  }
  return *this;
}

TokenCache::~TokenCache() { release(); }

void TokenCache::release() {
  for (auto& m : mappings_)
    if (m.data) ::munmap(m.data, m.bytes);
  mappings_.clear();
}

int64_t TokenCache::shards_rebuilt() const {
  int64_t n = 0;
  for (const auto& i : info_) n += i.rebuilt;
  return n;
}

TokenCache TokenCache::open_or_build(const std::string& corpus_spec, const Vocab& vocab,
                                     const std::string& cache_dir,
                                     const TokenCacheOptions& options) {
  ELMO_REQUIRE(vocab.size() > 0, "token cache: the vocabulary is empty");
  const std::vector<std::string> files = resolve_corpus(corpus_spec);
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  if (ec) throw Error(str("cannot create cache folder '", cache_dir, "': ", ec.message()));

  const int64_t n = static_cast<int64_t>(files.size());
  TokenCache cache;
  cache.info_.resize(files.size());
  cache.mappings_.resize(files.size());
  cache.shards_.resize(files.size());
  cache.vocab_size_ = vocab.size();
  cache.vocab_hash_ = vocab.hash();
  std::vector<std::exception_ptr> errors(files.size());
  parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      try {
        const SourceStat source = stat_source(files[f]);
        CacheShardInfo& info = cache.info_[f];
        info.source = files[f];
        info.cache_path = token_cache_path(cache_dir, files[f]);
        Probe p;
        if (options.force_rebuild) {
          p.reason = "rebuild requested";
        } else {
          p = probe_cache(info.cache_path, source, vocab, options.verify);
        }
        if (!p.usable) {
          if (p.corrupt)
            log_warn("token cache ", info.cache_path, " is ", p.reason, ": rebuilding it");
          else
            log_info("token cache for ", files[f], ": ", p.reason, ", building ",
                     info.cache_path);
          info.rebuilt = true;
          info.reason = p.reason;
          build_cache_file(source, files[f], vocab, info.cache_path, f);
          p = probe_cache(info.cache_path, source, vocab, /*verify=*/false);
          if (!p.usable)
            throw Error(str("token cache ", info.cache_path, " written but unreadable: ", p.reason,
                            " (was the corpus file modified while it was read?)"));
        }
        cache.mappings_[f] = {p.data, p.bytes};
        cache.shards_[f] = shard_view(p.data);
      } catch (...) {
        errors[f] = std::current_exception();
      }
    }
  });
  try {
    rethrow_first(errors);
  } catch (...) {
    cache.release();
    throw;
  }
  fsync_directory(cache_dir);
  for (int64_t f = 0; f < n; ++f) {
    const auto* h = static_cast<const CacheHeader*>(cache.mappings_[f].data);
    cache.stats_.sentences += static_cast<int64_t>(h->sentences);
    cache.stats_.tokens += static_cast<int64_t>(h->tokens);
    cache.stats_.unknown += static_cast<int64_t>(h->unknown);
  }
  if (cache.stats_.tokens == 0)
    throw Error(str("corpus '", corpus_spec, "' is empty: its ", n, " file(s) hold no tokens"));
  log_info("token cache: ", n, " file(s), ", cache.shards_rebuilt(), " built, ",
           cache.stats_.sentences, " sentences, ", cache.stats_.tokens, " tokens, unknown rate ",
           cache.stats_.unknown_rate());
  return cache;
}

TokenCache TokenCache::tokenize(const std::string& corpus_spec, const Vocab& vocab) {
  const std::vector<std::string> files = resolve_corpus(corpus_spec);
  const int64_t n = static_cast<int64_t>(files.size());
  TokenCache cache;
  cache.info_.resize(files.size());
  cache.shards_.resize(files.size());
  cache.owned_ids_.resize(files.size());
  cache.owned_offsets_.resize(files.size());
  cache.vocab_size_ = vocab.size();
  cache.vocab_hash_ = vocab.hash();
  std::vector<TokenStats> stats(files.size());
  std::vector<std::exception_ptr> errors(files.size());
  parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      try {
        auto& ids = cache.owned_ids_[f];
        TokenizeResult r = tokenize_file(files[f], vocab, [&](const uint32_t* p, size_t k) {
          ids.insert(ids.end(), p, p + k);
        });
        cache.owned_offsets_[f] = std::move(r.offsets);
        stats[f] = {static_cast<int64_t>(cache.owned_offsets_[f].size()) - 1, r.tokens, r.unknown};
        cache.info_[f].source = files[f];
      } catch (...) {
        errors[f] = std::current_exception();
      }
    }
  });
  rethrow_first(errors);
  for (int64_t f = 0; f < n; ++f) {
    TokenShard& s = cache.shards_[f];
    s.ids = cache.owned_ids_[f].data();
    s.offsets = cache.owned_offsets_[f].data();
    s.sentences = stats[f].sentences;
    s.tokens = stats[f].tokens;
    cache.stats_.sentences += stats[f].sentences;
    cache.stats_.tokens += stats[f].tokens;
    cache.stats_.unknown += stats[f].unknown;
  }
  if (cache.stats_.tokens == 0)
    throw Error(str("corpus '", corpus_spec, "' is empty: its ", n, " file(s) hold no tokens"));
  return cache;
}

TokenCache TokenCache::from_sentences(
    const std::vector<std::vector<std::vector<int32_t>>>& shards, int64_t vocab_size,
    int32_t unk_id) {
  TokenCache cache;
  cache.vocab_size_ = vocab_size;
  const size_t n = shards.size();
  cache.owned_ids_.resize(n);
  cache.owned_offsets_.resize(n);
  cache.shards_.resize(n);
  cache.info_.resize(n);
  for (size_t f = 0; f < n; ++f) {
    auto& ids = cache.owned_ids_[f];
    auto& offsets = cache.owned_offsets_[f];
    offsets.push_back(0);
    int64_t tokens = 0;
    for (const auto& sentence : shards[f]) {
      for (const int32_t id : sentence) {
        ELMO_CHECK(id >= 0 && id < vocab_size, "token id ", id, " outside the vocabulary of ",
                   vocab_size);
        ids.push_back(static_cast<uint32_t>(id));
        cache.stats_.unknown += id == unk_id;
      }
      ids.push_back(kSentenceEnd);
      offsets.push_back(ids.size());
      tokens += static_cast<int64_t>(sentence.size());
    }
    cache.shards_[f] = {ids.data(), offsets.data(), static_cast<int64_t>(shards[f].size()), tokens};
    cache.info_[f].source = str("<memory shard ", f, ">");
    cache.stats_.sentences += static_cast<int64_t>(shards[f].size());
    cache.stats_.tokens += tokens;
  }
  return cache;
}

}  // namespace elmo
