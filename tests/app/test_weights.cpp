// import-bilm / export-bilm through the binary on the allennlp fixture: import -> export ->
// import gives identical model tensors (and the exported LSTM weights are the original ones),
// and the refusals: an existing checkpoint in --out, a vocabulary of the wrong size, a weights
// file without an embedding and no --embedding.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/atomic_file.h"
#include "io/bilm_hdf5.h"
#include "io/safetensors.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

std::string fixture_dir() { return testing::data_dir() + "/elmo-fixtures/allennlp/elmo"; }

std::string import_args(const std::string& out) {
  const std::string e = fixture_dir();
  return "import-bilm --weights " + e + "/lm_weights.hdf5 --embedding " + e +
         "/elmo_token_embeddings.hdf5 --vocab " + e + "/vocab_test.txt --out " + out;
}

void expect_same_tensors(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.shape(), b[i].second.shape()) << a[i].first;
    EXPECT_EQ(a[i].second.to_floats(), b[i].second.to_floats()) << a[i].first << " differs";
  }
}

TEST(Weights, ImportExportImportRoundTrip) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::temp_dir("weights_roundtrip");
  const auto first = run_elmo(import_args(dir + "/a"));
  ASSERT_EQ(first.status, 0) << first.output;
  const std::string model_a = dir + "/a/checkpoints/step-0/model.safetensors";
  ASSERT_TRUE(fs::exists(model_a)) << first.output;
  EXPECT_TRUE(fs::exists(dir + "/a/vocab.txt"));

  const std::string exported = dir + "/exported.hdf5";
  const auto ex = run_elmo("export-bilm --checkpoint " + dir + "/a -o " + exported);
  ASSERT_EQ(ex.status, 0) << ex.output;
  ASSERT_TRUE(fs::exists(exported));

  // The exported file holds the embedding and softmax, so it imports on its own.
  const auto second = run_elmo("import-bilm --weights " + exported + " --vocab " + dir +
                               "/a/vocab.txt --out " + dir + "/b");
  ASSERT_EQ(second.status, 0) << second.output;
  const SafetensorsFile a = load_safetensors(model_a);
  const SafetensorsFile b = load_safetensors(dir + "/b/checkpoints/step-0/model.safetensors");
  expect_same_tensors(a.tensors, b.tensors);
  EXPECT_EQ(read_file(dir + "/a/vocab.txt"), read_file(dir + "/b/vocab.txt"));

  // The LSTM kernels and the embedding are exported bitwise as they came in.
  const std::string original = fixture_dir() + "/lm_weights.hdf5";
  for (const char* name : {"RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0",
                           "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0",
                           "RNN_0/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"})
    EXPECT_EQ(read_hdf5_matrix(exported, name).to_floats(),
              read_hdf5_matrix(original, name).to_floats())
        << name;
  EXPECT_EQ(read_hdf5_matrix(exported, "embedding").to_floats(),
            read_hdf5_matrix(fixture_dir() + "/elmo_token_embeddings.hdf5", "embedding")
                .to_floats());
  // The fixture has no softmax: imported as zeros (with a warning), exported as zeros.
  EXPECT_NE(first.output.find("softmax"), std::string::npos) << first.output;
  for (float v : read_hdf5_matrix(exported, "softmax/W").to_floats()) ASSERT_EQ(v, 0.0f);
}

TEST(Weights, ImportRefusesAFolderWithACheckpoint) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::temp_dir("weights_exists");
  ASSERT_EQ(run_elmo(import_args(dir + "/run")).status, 0);
  const std::string model = dir + "/run/checkpoints/step-0/model.safetensors";
  const std::string before = read_file(model);
  const auto again = run_elmo(import_args(dir + "/run"));
  EXPECT_EQ(again.status, 2) << again.output;
  EXPECT_NE(again.output.find("already holds a checkpoint"), std::string::npos) << again.output;
  EXPECT_EQ(read_file(model), before);
}

TEST(Weights, ImportRefusesAVocabularyOfTheWrongSize) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::temp_dir("weights_vocab");
  const std::string vocab = dir + "/vocab.txt";
  write_file_atomic(vocab, "</S>\n<S>\n<UNK>\nthe\nof\n");
  const int64_t rows =
      read_hdf5_matrix(fixture_dir() + "/elmo_token_embeddings.hdf5", "embedding").size(0);
  ASSERT_NE(rows, 5);
  const std::string e = fixture_dir();
  const auto r = run_elmo("import-bilm --weights " + e + "/lm_weights.hdf5 --embedding " + e +
                          "/elmo_token_embeddings.hdf5 --vocab " + vocab + " --out " + dir +
                          "/run");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("has 5 tokens"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("has " + std::to_string(rows) + " rows"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoints"));
}

TEST(Weights, ImportWithoutEmbeddingSaysToPassIt) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::temp_dir("weights_noemb");
  const std::string e = fixture_dir();
  const auto r = run_elmo("import-bilm --weights " + e + "/lm_weights.hdf5 --vocab " + e +
                          "/vocab_test.txt --out " + dir + "/run");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("no 'embedding' dataset"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--embedding"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoints"));
}

TEST(Weights, ExportOfAMissingCheckpointFails) {
  const std::string dir = testing::temp_dir("weights_export_missing");
  const auto r = run_elmo("export-bilm --checkpoint " + dir + "/nothing -o " + dir + "/x.hdf5");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nothing"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/x.hdf5"));
}

TEST(Weights, ImportOfANonHdf5FileFails) {
  const std::string dir = testing::temp_dir("weights_not_hdf5");
  write_file_atomic(dir + "/w.hdf5", "not an hdf5 file\n");
  write_file_atomic(dir + "/v.txt", "</S>\n<S>\n<UNK>\na\n");
  const auto r = run_elmo("import-bilm --weights " + dir + "/w.hdf5 --vocab " + dir +
                          "/v.txt --out " + dir + "/run");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("w.hdf5"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos);
}

}  // namespace
}  // namespace elmo
