#include "io/corpus.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::error_of;

std::vector<std::vector<std::string>> read_all(const std::string& path, size_t block = 1 << 20) {
  LineReader reader(path, block);
  std::vector<std::string_view> tokens;
  std::vector<std::vector<std::string>> out;
  while (reader.next_sentence(&tokens)) out.emplace_back(tokens.begin(), tokens.end());
  return out;
}

TEST(Corpus, ResolvesFileFolderAndGlob) {
  const std::string dir = testing::temp_dir("corpus");
  testing::write_text_file(dir, "news.en-00002-of-00100", "b\n");
  testing::write_text_file(dir, "news.en-00001-of-00100", "a\n");
  testing::write_text_file(dir, ".hidden", "h\n");
  testing::write_text_file(dir, "other.txt", "o\n");
  std::filesystem::create_directories(dir + "/sub");
  testing::write_text_file(dir + "/sub", "inner", "i\n");

  EXPECT_EQ(resolve_corpus(dir + "/other.txt"), std::vector<std::string>{dir + "/other.txt"});
  EXPECT_EQ(resolve_corpus(dir),
            (std::vector<std::string>{dir + "/news.en-00001-of-00100",
                                      dir + "/news.en-00002-of-00100", dir + "/other.txt"}));
  EXPECT_EQ(resolve_corpus(dir + "/news.en-*-of-00100"),
            (std::vector<std::string>{dir + "/news.en-00001-of-00100",
                                      dir + "/news.en-00002-of-00100"}));
}

TEST(Corpus, MissingPathsAndEmptyCorporaAreErrorsNamingTheSpec) {
  const std::string dir = testing::temp_dir("corpus");
  std::string msg = error_of([&] { resolve_corpus(dir + "/absent.txt"); });
  EXPECT_NE(msg.find(dir + "/absent.txt"), std::string::npos) << msg;
  msg = error_of([&] { resolve_corpus(dir + "/news-*"); });
  EXPECT_NE(msg.find(dir + "/news-*"), std::string::npos) << msg;
  EXPECT_NE(msg.find("matches no"), std::string::npos) << msg;
  msg = error_of([&] { resolve_corpus(dir); });  // empty folder
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  testing::write_text_file(dir, "empty", "");
  msg = error_of([&] { resolve_corpus(dir); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
}

TEST(Corpus, ReadsSentencesSkippingBlankLines) {
  const std::string dir = testing::temp_dir("corpus");
  const auto path = testing::write_text_file(dir, "c.txt", " the  cat\tsat \r\n\n   \nna\xC3\xAFve caf\xC3\xA9\nlast line");
  const auto s = read_all(path);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0], (std::vector<std::string>{"the", "cat", "sat"}));
  EXPECT_EQ(s[1], (std::vector<std::string>{"na\xC3\xAFve", "caf\xC3\xA9"}));
  EXPECT_EQ(s[2], (std::vector<std::string>{"last", "line"}));
}

TEST(Corpus, LinesLongerThanTheBlockAndManyBlocks) {
  const std::string dir = testing::temp_dir("corpus");
  std::string text, long_line;
  for (int i = 0; i < 3000; ++i) long_line.append("w").append(std::to_string(i)).append(" ");
  text += long_line + "\n";
  for (int i = 0; i < 500; ++i) text.append("s").append(std::to_string(i)).append(" x\n");
  const auto path = testing::write_text_file(dir, "c.txt", text);
  const auto small = read_all(path, 4096);  // buffer must grow and refill many times
  const auto big = read_all(path);
  ASSERT_EQ(small.size(), 501u);
  EXPECT_EQ(small, big);
  EXPECT_EQ(small[0].size(), 3000u);
  EXPECT_EQ(small[500], (std::vector<std::string>{"s499", "x"}));
}

TEST(Corpus, InvalidUtf8NamesFileLineAndColumn) {
  const std::string dir = testing::temp_dir("corpus");
  const auto path = testing::write_text_file(dir, "bad.txt", "fine line\n\nab \xC3\x28 cd\n");
  const std::string msg = error_of([&] { read_all(path); });
  EXPECT_NE(msg.find(path + ":3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte 4"), std::string::npos) << msg;
}

TEST(Corpus, Utf8Validation) {
  size_t bad = 0;
  EXPECT_TRUE(is_valid_utf8("plain ascii text, long enough for the word path", &bad));
  EXPECT_TRUE(is_valid_utf8("\xE2\x82\xAC \xF0\x9F\x98\x80 \xED\x9F\xBF", &bad));
  EXPECT_FALSE(is_valid_utf8("abc\xC0\xAF", &bad));  // overlong
  EXPECT_EQ(bad, 3u);
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80", &bad));  // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80", &bad));  // > U+10FFFF
  EXPECT_FALSE(is_valid_utf8("abcdefgh\xE2\x82", &bad));  // truncated at the end
  EXPECT_EQ(bad, 8u);
  EXPECT_FALSE(is_valid_utf8("\x80", &bad));
}

TEST(Corpus, Lm1bSampleHasItsKnownWordCount) {
  ELMO_SKIP_WITHOUT_DATA();
  const auto files = resolve_corpus(testing::data_dir() + "/lm1b-sample/shard*");
  ASSERT_EQ(files.size(), 10u);
  int64_t words = 0, sentences = 0;
  for (const auto& f : files) {
    LineReader reader(f);
    std::vector<std::string_view> tokens;
    while (reader.next_sentence(&tokens)) words += static_cast<int64_t>(tokens.size()), ++sentences;
  }
  EXPECT_EQ(sentences, 1000);
  // README gives 25,267 from GNU `wc -w`, which skips words without printable characters;
  // splitting on ASCII whitespace (Python bytes.split()) gives 25,276.
  EXPECT_EQ(words, 25276);
}

}  // namespace
}  // namespace elmo
