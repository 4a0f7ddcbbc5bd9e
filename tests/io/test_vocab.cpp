#include "io/vocab.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "io/corpus.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::error_of;

TEST(Vocab, LoadsBilmTfFileWithCountsIgnored) {
  const std::string dir = testing::temp_dir("vocab");
  const std::string path = testing::write_text_file(dir, "vocab.txt", "</S>\n<S>\n<UNK>\nthe 120\n. 7\n\nof\t3\n");
  ::testing::internal::CaptureStderr();
  const Vocab v = Vocab::load(path);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // nothing missing: no warning
  ASSERT_EQ(v.size(), 6);
  EXPECT_EQ(v.eos_id(), 0);
  EXPECT_EQ(v.bos_id(), 1);
  EXPECT_EQ(v.unk_id(), 2);
  EXPECT_EQ(v.id("the"), 3);
  EXPECT_EQ(v.id("."), 4);
  EXPECT_EQ(v.id("of"), 5);
  EXPECT_EQ(v.id("missing"), v.unk_id());
  EXPECT_FALSE(v.contains("missing"));
  EXPECT_EQ(v.token(5), "of");
  EXPECT_THROW(v.token(6), Error);
}

TEST(Vocab, MissingSpecialsAreAddedAtTheFrontWithAWarning) {
  const std::string dir = testing::temp_dir("vocab");
  const std::string path = testing::write_text_file(dir, "vocab.txt", "the\n<S>\n<unk>\n");
  ::testing::internal::CaptureStderr();
  const Vocab v = Vocab::load(path);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("warning"), std::string::npos) << log;
  EXPECT_NE(log.find("</S>"), std::string::npos) << log;
  EXPECT_NE(log.find("<UNK>"), std::string::npos) << log;
  ASSERT_EQ(v.size(), 5);
  EXPECT_EQ(v.token(0), "</S>");
  EXPECT_EQ(v.token(1), "<UNK>");
  EXPECT_EQ(v.token(2), "the");
  EXPECT_EQ(v.bos_id(), 3);
  EXPECT_EQ(v.id("<unk>"), 4);  // PTB's <unk> is an ordinary word
}

TEST(Vocab, DuplicateTokenNamesBothLines) {
  const std::string dir = testing::temp_dir("vocab");
  const std::string path = testing::write_text_file(dir, "vocab.txt", "<S>\n</S>\n<UNK>\na\nb 4\n\nb 3\n");
  const std::string msg = error_of([&] { Vocab::load(path); });
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lines 5 and 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(Vocab, EmptyFileIsAnError) {
  const std::string dir = testing::temp_dir("vocab");
  const std::string path = testing::write_text_file(dir, "vocab.txt", "\n  \n");
  const std::string msg = error_of([&] { Vocab::load(path); });
  EXPECT_NE(msg.find("vocab.txt is empty: build one with `elmo_fast vocab`"), std::string::npos)
      << msg;
  EXPECT_NE(error_of([&] { Vocab::load(dir + "/absent.txt"); }).find("absent.txt"),
            std::string::npos);
}

TEST(Vocab, HashDependsOnTokensAndOrder) {
  const Vocab a = Vocab::from_tokens({"<S>", "</S>", "<UNK>", "x", "y"});
  const Vocab b = Vocab::from_tokens({"<S>", "</S>", "<UNK>", "x", "y"});
  const Vocab c = Vocab::from_tokens({"<S>", "</S>", "<UNK>", "y", "x"});
  const Vocab d = Vocab::from_tokens({"<S>", "</S>", "<UNK>", "xy"});
  EXPECT_EQ(a.hash(), b.hash());
  EXPECT_NE(a.hash(), c.hash());
  EXPECT_NE(a.hash(), d.hash());
}

TEST(Vocab, BuildCountsSortsAndSavesRoundTrip) {
  const std::string dir = testing::temp_dir("vocab");
  // counts: the 4, a 3 (ties with b broken lexicographically), b 3, c 2, z 1; specials ignored
  testing::write_text_file(dir, "part1", "the a b <S> the\nc a\n\n");
  testing::write_text_file(dir, "part2", "b the </S> z <UNK>\nthe a b c");  // last line without newline
  const auto files = resolve_corpus(dir);
  std::vector<int64_t> counts;
  const Vocab v = build_vocab(files, 2, 0, &counts);
  const std::vector<std::string> expected{"</S>", "<S>", "<UNK>", "the", "a", "b", "c"};
  EXPECT_EQ(v.tokens(), expected);
  EXPECT_EQ(counts, (std::vector<int64_t>{0, 0, 0, 4, 3, 3, 2}));
  const Vocab capped = build_vocab(files, 1, 5);
  EXPECT_EQ(capped.tokens(), (std::vector<std::string>{"</S>", "<S>", "<UNK>", "the", "a"}));
  const Vocab all = build_vocab(files, 1, 0);
  EXPECT_EQ(all.size(), 8);
  EXPECT_EQ(all.token(7), "z");

  const std::string out = dir + "/out/vocab.txt";
  std::filesystem::create_directories(dir + "/out");
  v.save(out);
  EXPECT_EQ(read_file(out), "</S>\n<S>\n<UNK>\nthe\na\nb\nc\n");
  const Vocab back = Vocab::load(out);
  EXPECT_EQ(back.tokens(), v.tokens());
  EXPECT_EQ(back.hash(), v.hash());
}

TEST(Vocab, BuildIsIndependentOfFileOrder) {
  const std::string dir = testing::temp_dir("vocab");
  const auto a = testing::write_text_file(dir, "a", "x y z w\ny x\n");
  const auto b = testing::write_text_file(dir, "b", "w w z\n");
  EXPECT_EQ(build_vocab({a, b}, 1, 0).tokens(), build_vocab({b, a}, 1, 0).tokens());
}

TEST(Vocab, BuildOnEmptyCorpusIsAnError) {
  const std::string dir = testing::temp_dir("vocab");
  const auto a = testing::write_text_file(dir, "a", "\n \n\t\n");
  const std::string msg = error_of([&] { build_vocab({a}, 1, 0); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
}

TEST(Vocab, BuildOnPtbMatchesItsKnownSize) {
  ELMO_SKIP_WITHOUT_DATA();
  const Vocab v = build_vocab({testing::data_dir() + "/ptb/ptb.train.txt"}, 1, 0);
  // 9,999 distinct tokens (incl. <unk>) + the three specials.
  EXPECT_EQ(v.size(), 9999 + 3);
  EXPECT_EQ(v.token(3), "the");
  EXPECT_NE(v.id("<unk>"), v.unk_id());
}

TEST(Vocab, LoadsTheFixtureVocabularies) {
  ELMO_SKIP_WITHOUT_DATA();
  ::testing::internal::CaptureStderr();
  const Vocab bilm = Vocab::load(testing::data_dir() + "/elmo-fixtures/bilm-tf/data/vocab_test.txt");
  const Vocab allen = Vocab::load(testing::data_dir() + "/elmo-fixtures/allennlp/elmo/vocab_test.txt");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // specials present: no warning
  EXPECT_EQ(bilm.size(), 100);
  EXPECT_EQ(bilm.eos_id(), 0);
  EXPECT_EQ(bilm.bos_id(), 1);
  EXPECT_EQ(bilm.unk_id(), 2);
  EXPECT_EQ(bilm.token(3), "the");
  // allennlp's test vocab keeps its order (specials in the middle; last line has no newline).
  EXPECT_EQ(allen.size(), 458);
  EXPECT_EQ(allen.token(0), "good");
  EXPECT_EQ(allen.bos_id(), 20);
  EXPECT_EQ(allen.unk_id(), 117);
  EXPECT_EQ(allen.eos_id(), 224);
}

}  // namespace
}  // namespace elmo
