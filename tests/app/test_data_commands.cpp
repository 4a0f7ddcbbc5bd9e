// vocab and prepare through the binary: the vocabulary file (specials first, then words by
// frequency, --min-count, --max-size); the token cache built, reused on a second run and
// rebuilt when the corpus file is touched.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/token_cache.h"
#include "io/vocab.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::string text = read_file(path), line;
  for (char ch : text) {
    if (ch == '\n') {
      out.push_back(line);
      line.clear();
    } else {
      line += ch;
    }
  }
  if (!line.empty()) out.push_back(line);
  return out;
}

TEST(DataCommands, VocabWritesSpecialsThenWordsByFrequency) {
  const std::string dir = testing::temp_dir("vocab_cmd");
  const std::string corpus = dir + "/corpus.txt";
  // the x5, cat x3, sat x2, mat x2 (tie: byte order), on x1
  write_file_atomic(corpus, "the cat sat on the mat\nthe cat sat\nthe mat the cat\n");
  const auto r = run_elmo("vocab --corpus " + corpus + " --out " + dir + "/vocab.txt");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(lines_of(dir + "/vocab.txt"),
            (std::vector<std::string>{"</S>", "<S>", "<UNK>", "the", "cat", "mat", "sat", "on"}));

  const auto min2 =
      run_elmo("vocab --corpus " + corpus + " --out " + dir + "/v2.txt --min-count 2");
  ASSERT_EQ(min2.status, 0) << min2.output;
  EXPECT_EQ(lines_of(dir + "/v2.txt"),
            (std::vector<std::string>{"</S>", "<S>", "<UNK>", "the", "cat", "mat", "sat"}));

  const auto capped = run_elmo("vocab --corpus " + corpus + " -o " + dir + "/v3.txt --max-size 5");
  ASSERT_EQ(capped.status, 0) << capped.output;
  EXPECT_EQ(lines_of(dir + "/v3.txt"),
            (std::vector<std::string>{"</S>", "<S>", "<UNK>", "the", "cat"}));

  // A folder of files counts them all.
  fs::create_directories(dir + "/folder");
  write_file_atomic(dir + "/folder/a.txt", "x y\n");
  write_file_atomic(dir + "/folder/b.txt", "y z y\n");
  ASSERT_EQ(run_elmo("vocab --corpus " + dir + "/folder --out " + dir + "/v4.txt").status, 0);
  EXPECT_EQ(lines_of(dir + "/v4.txt"),
            (std::vector<std::string>{"</S>", "<S>", "<UNK>", "y", "x", "z"}));
}

TEST(DataCommands, VocabOfAMissingCorpusFails) {
  const std::string dir = testing::temp_dir("vocab_missing");
  const auto r = run_elmo("vocab --corpus " + dir + "/nope.txt --out " + dir + "/v.txt");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("nope.txt"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/v.txt"));
}

TEST(DataCommands, PrepareBuildsReusesAndRebuildsTheCache) {
  const std::string dir = testing::temp_dir("prepare_cmd");
  const std::string train = dir + "/train.txt", valid = dir + "/valid.txt";
  write_file_atomic(train, "a b c\nb c\nc a a b\n");
  write_file_atomic(valid, "a c\nzz b\n");
  const std::string config = dir + "/run.toml";
  write_file_atomic(config, "[run]\ndir = \"" + dir + "/run\"\n[data]\ncorpus = \"" + train +
                                "\"\nvalid = \"" + valid + "\"\n");
  const auto first = run_elmo("prepare --config " + config);
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_NE(first.output.find("train: "), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("1 rebuilt, 0 reused"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("3 sentences, 9 tokens"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("2 sentences, 4 tokens"), std::string::npos) << first.output;
  const std::string cache_train = token_cache_path(dir + "/run/cache", train);
  const std::string cache_valid = token_cache_path(dir + "/run/cache", valid);
  ASSERT_TRUE(fs::exists(cache_train)) << first.output;
  ASSERT_TRUE(fs::exists(cache_valid)) << first.output;
  ASSERT_TRUE(fs::exists(dir + "/run/vocab.txt"));
  EXPECT_EQ(Vocab::load(dir + "/run/vocab.txt").size(), 6);

  // The cache opens in-process with the run's vocabulary and holds the corpus.
  {
    const Vocab vocab = Vocab::load(dir + "/run/vocab.txt");
    const TokenCache cache = TokenCache::open_or_build(train, vocab, dir + "/run/cache");
    EXPECT_EQ(cache.shards_rebuilt(), 0);
    EXPECT_EQ(cache.stats().sentences, 3);
    EXPECT_EQ(cache.stats().tokens, 9);
  }

  const auto second = run_elmo("prepare --config " + config);
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_EQ(second.output.find("1 rebuilt"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("0 rebuilt, 1 reused"), std::string::npos) << second.output;

  // Touching the training corpus (same bytes, new mtime) rebuilds its cache only.
  fs::last_write_time(train, fs::last_write_time(train) + std::chrono::seconds(5));
  const auto third = run_elmo("prepare --config " + config);
  ASSERT_EQ(third.status, 0) << third.output;
  const size_t train_line = third.output.find("train: ");
  const size_t valid_line = third.output.find("valid: ");
  ASSERT_NE(train_line, std::string::npos) << third.output;
  ASSERT_NE(valid_line, std::string::npos) << third.output;
  const std::string train_part = third.output.substr(train_line, valid_line - train_line);
  const std::string valid_part = third.output.substr(valid_line);
  EXPECT_NE(train_part.find("1 rebuilt, 0 reused"), std::string::npos) << third.output;
  EXPECT_NE(valid_part.find("0 rebuilt, 1 reused"), std::string::npos) << third.output;
}

TEST(DataCommands, PrepareWithAMissingCorpusFails) {
  const std::string dir = testing::temp_dir("prepare_missing");
  const std::string config = dir + "/run.toml";
  write_file_atomic(config, "[run]\ndir = \"" + dir + "/run\"\n[data]\ncorpus = \"" + dir +
                                "/absent.txt\"\n");
  const auto r = run_elmo("prepare --config " + config);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("absent.txt"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace elmo
