#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "io/corpus.h"
#include "io/token_cache.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::error_of;

void set_mtime(const std::string& path, int64_t seconds) {
  struct timeval times[2] = {{seconds, 0}, {seconds, 0}};
  ASSERT_EQ(::utimes(path.c_str(), times), 0);
}

std::vector<std::vector<uint32_t>> sentences_of(const TokenShard& s) {
  std::vector<std::vector<uint32_t>> out;
  for (int64_t i = 0; i < s.sentences; ++i) {
    const auto w = s.sentence(i);
    out.emplace_back(w.begin(), w.end());
  }
  return out;
}

struct Fixture {
  std::string dir, corpus, cache;
  Vocab vocab = Vocab::from_tokens({"<S>", "</S>", "<UNK>", "the", "cat", "."});
  Fixture() {
    dir = testing::temp_dir("token_cache");
    corpus = dir + "/corpus";
    cache = dir + "/cache";
    std::filesystem::create_directories(corpus);
    testing::write_text_file(corpus, "shard0", "the cat .\n\nthe dog .\n");
    testing::write_text_file(corpus, "shard1", "cat\nthe the the");
  }
};

TEST(TokenCache, BuildsIdsWithTerminatorsAndStats) {
  Fixture f;
  const TokenCache c = TokenCache::open_or_build(f.corpus, f.vocab, f.cache);
  ASSERT_EQ(c.num_shards(), 2);
  EXPECT_EQ(c.shards_rebuilt(), 2);
  EXPECT_EQ(sentences_of(c.shard(0)),
            (std::vector<std::vector<uint32_t>>{{3, 4, 5}, {3, 2, 5}}));
  EXPECT_EQ(sentences_of(c.shard(1)), (std::vector<std::vector<uint32_t>>{{4}, {3, 3, 3}}));
  EXPECT_EQ(c.shard(0).ids[3], kSentenceEnd);
  EXPECT_EQ(c.stats().sentences, 4);
  EXPECT_EQ(c.stats().tokens, 10);
  EXPECT_EQ(c.stats().unknown, 1);
  EXPECT_DOUBLE_EQ(c.stats().unknown_rate(), 0.1);
  EXPECT_TRUE(std::filesystem::exists(token_cache_path(f.cache, f.corpus + "/shard0")));
  // Nothing but the two cache files is left in the folder (temporaries renamed away).
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(f.cache)) (void)e, ++entries;
  EXPECT_EQ(entries, 2);
}

TEST(TokenCache, ReusesUnchangedFiles) {
  Fixture f;
  { TokenCache::open_or_build(f.corpus, f.vocab, f.cache); }
  const TokenCache again = TokenCache::open_or_build(f.corpus, f.vocab, f.cache);
  EXPECT_EQ(again.shards_rebuilt(), 0);
  EXPECT_EQ(sentences_of(again.shard(1)), (std::vector<std::vector<uint32_t>>{{4}, {3, 3, 3}}));
}

TEST(TokenCache, RebuildsWhenTheCorpusFileChanges) {
  Fixture f;
  { TokenCache::open_or_build(f.corpus, f.vocab, f.cache); }
  // Same size, only the mtime differs.
  set_mtime(f.corpus + "/shard1", 1000000000);
  ::testing::internal::CaptureStderr();
  const TokenCache c = TokenCache::open_or_build(f.corpus, f.vocab, f.cache);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("corpus file changed"), std::string::npos) << log;
  ASSERT_EQ(c.shards_rebuilt(), 1);
  EXPECT_FALSE(c.shard_info()[0].rebuilt);
  EXPECT_TRUE(c.shard_info()[1].rebuilt);
  EXPECT_EQ(c.shard_info()[1].reason, "corpus file changed");
  // Content change (size differs) is picked up.
  testing::write_text_file(f.corpus, "shard0", "cat cat\n");
  const TokenCache d = TokenCache::open_or_build(f.corpus, f.vocab, f.cache);
  EXPECT_TRUE(d.shard_info()[0].rebuilt);
  EXPECT_EQ(sentences_of(d.shard(0)), (std::vector<std::vector<uint32_t>>{{4, 4}}));
}

TEST(TokenCache, RebuildsWhenTheVocabChanges) {
  Fixture f;
  { TokenCache::open_or_build(f.corpus, f.vocab, f.cache); }
  const Vocab other = Vocab::from_tokens({"<S>", "</S>", "<UNK>", "cat", "the", "dog", "."});
  ::testing::internal::CaptureStderr();
  const TokenCache c = TokenCache::open_or_build(f.corpus, other, f.cache);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("vocab changed"), std::string::npos) << log;
  EXPECT_EQ(c.shards_rebuilt(), 2);
  EXPECT_EQ(c.vocab_hash(), other.hash());
  EXPECT_EQ(sentences_of(c.shard(0)),
            (std::vector<std::vector<uint32_t>>{{4, 3, 6}, {4, 5, 6}}));
}

TEST(TokenCache, CorruptOrTruncatedFilesAreRebuiltWithAWarning) {
  Fixture f;
  { TokenCache::open_or_build(f.corpus, f.vocab, f.cache); }
  const std::string p0 = token_cache_path(f.cache, f.corpus + "/shard0");
  const std::string p1 = token_cache_path(f.cache, f.corpus + "/shard1");
  std::string bytes = read_file(p0);
  write_file_atomic(p0, bytes.substr(0, bytes.size() - 5));  // truncated
  bytes = read_file(p1);
  bytes[bytes.size() - 20] ^= 0x5A;                           // body bit flips
  write_file_atomic(p1, bytes);
  ::testing::internal::CaptureStderr();
  const TokenCache c = TokenCache::open_or_build(f.corpus, f.vocab, f.cache);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("warning"), std::string::npos) << log;
  EXPECT_NE(log.find("corrupt"), std::string::npos) << log;
  EXPECT_EQ(c.shards_rebuilt(), 2);
  EXPECT_EQ(sentences_of(c.shard(1)), (std::vector<std::vector<uint32_t>>{{4}, {3, 3, 3}}));
}

TEST(TokenCache, ForeignFileIsReplacedOrReportedWhenItCannotBe) {
  Fixture f;
  std::filesystem::create_directories(f.cache);
  const std::string p0 = token_cache_path(f.cache, f.corpus + "/shard0");
  write_file_atomic(p0, std::string("PK\x03\x04 some other file format").append(300, '.'));
  ::testing::internal::CaptureStderr();
  const TokenCache c = TokenCache::open_or_build(f.corpus, f.vocab, f.cache);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("foreign magic"), std::string::npos) << log;
  EXPECT_TRUE(c.shard_info()[0].rebuilt);
  // A non-empty folder in place of the cache file cannot be replaced: an Error naming it.
  const std::string p1 = token_cache_path(f.cache, f.corpus + "/shard1");
  std::filesystem::remove(p1);
  std::filesystem::create_directories(p1 + "/blocker");
  ::testing::internal::CaptureStderr();
  const std::string msg = error_of([&] { TokenCache::open_or_build(f.corpus, f.vocab, f.cache); });
  ::testing::internal::GetCapturedStderr();
  EXPECT_NE(msg.find(p1), std::string::npos) << msg;
}

TEST(TokenCache, EmptyCorpusAndInvalidUtf8AreErrors) {
  const std::string dir = testing::temp_dir("token_cache");
  const Vocab vocab = Vocab::from_tokens({"<S>", "</S>", "<UNK>", "a"});
  testing::write_text_file(dir, "blank", "\n\n   \n");
  std::string msg = error_of([&] { TokenCache::open_or_build(dir + "/blank", vocab, dir + "/c"); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  testing::write_text_file(dir, "bad", "a a\na \xFF a\n");
  msg = error_of([&] { TokenCache::open_or_build(dir + "/bad", vocab, dir + "/c"); });
  EXPECT_NE(msg.find(dir + "/bad:2"), std::string::npos) << msg;
  msg = error_of([&] { TokenCache::tokenize(dir + "/bad", vocab); });
  EXPECT_NE(msg.find(dir + "/bad:2"), std::string::npos) << msg;
}

TEST(TokenCache, InMemoryTokenizeMatchesTheFileCache) {
  Fixture f;
  const TokenCache disk = TokenCache::open_or_build(f.corpus, f.vocab, f.cache);
  const TokenCache mem = TokenCache::tokenize(f.corpus, f.vocab);
  ASSERT_EQ(mem.num_shards(), disk.num_shards());
  for (int64_t s = 0; s < mem.num_shards(); ++s)
    EXPECT_EQ(sentences_of(mem.shard(s)), sentences_of(disk.shard(s)));
  EXPECT_EQ(mem.stats().unknown, disk.stats().unknown);
  TokenCache moved = std::move(const_cast<TokenCache&>(mem));
  EXPECT_EQ(sentences_of(moved.shard(1)), (std::vector<std::vector<uint32_t>>{{4}, {3, 3, 3}}));
}

TEST(TokenCache, PtbTrainCountsMatchTheDataReadme) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string ptb = testing::data_dir() + "/ptb/ptb.train.txt";
  const Vocab vocab = build_vocab({ptb}, 1, 0);
  const std::string cache = testing::temp_dir("token_cache_ptb");
  const TokenCache c = TokenCache::open_or_build(ptb, vocab, cache);
  EXPECT_EQ(c.stats().tokens, 887521);
  EXPECT_EQ(c.stats().sentences, 42068);
  EXPECT_EQ(c.stats().unknown, 0);  // <unk> is a word of this vocab
  const TokenCache again = TokenCache::open_or_build(ptb, vocab, cache);
  EXPECT_EQ(again.shards_rebuilt(), 0);
}

// check_token_cache_image (what open_or_build checks before it maps a file in), on images whose
// checksums are resealed so that the checks behind them see the damage: sizes in the header are
// checked before they are used, and a verified body holds only words and sentence ends.
TEST(TokenCache, ImageChecksCatchWhatTheChecksumsWouldNot) {
  Fixture f;
  { TokenCache::open_or_build(f.corpus, f.vocab, f.cache); }
  const std::string source = f.corpus + "/shard0";
  const std::string good = read_file(token_cache_path(f.cache, source));
  struct stat st {};
  ASSERT_EQ(::stat(source.c_str(), &st), 0);
  const TokenCacheSource src{
      std::filesystem::absolute(source).lexically_normal().string(),
      static_cast<uint64_t>(st.st_size),
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
  const auto check = [&](std::string image, bool verify = true) {
    seal_token_cache_image(image);
    bool corrupt = false;
    return check_token_cache_image(image, src, f.vocab.hash(), f.vocab.size(), verify, &corrupt);
  };
  EXPECT_EQ(check(good), "");
  // ids_count and sentences (offsets 72 and 48) so large that their byte sizes wrap around.
  for (const size_t field : {size_t{48}, size_t{56}, size_t{72}}) {
    std::string image = good;
    const uint64_t huge = uint64_t{1} << 62;
    std::memcpy(image.data() + field, &huge, 8);
    EXPECT_EQ(check(image), "corrupt (truncated or wrong size)") << field;
  }
  // A word id outside the vocabulary, and a sentence end replaced by a word.
  uint32_t header_bytes = 0;
  std::memcpy(&header_bytes, good.data() + 12, 4);
  std::string image = good;
  const uint32_t outside = 1000;
  std::memcpy(image.data() + header_bytes, &outside, 4);
  EXPECT_EQ(check(image), "corrupt (a word id outside the vocabulary)");
  EXPECT_EQ(check(image, /*verify=*/false), "") << "the cheap check reads no ids";
  image = good;
  const uint32_t word = 3;
  std::memcpy(image.data() + header_bytes + 3 * 4, &word, 4);  // "the cat ." then the end
  EXPECT_EQ(check(image), "corrupt (a sentence without its end)");
  bool corrupt = false;
  EXPECT_EQ(check_token_cache_image(good.substr(0, 50), src, 0, 0, true, &corrupt),
            "corrupt (truncated header)");
  EXPECT_TRUE(corrupt);
}
}  // namespace
}  // namespace elmo
