// embed: the allennlp golden fixture through import-bilm + embed --stateful (DESIGN.md §7),
// zero-state mode, the scalar mix and the error paths of the command.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/embeddings_hdf5.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::run_elmo;

struct Fixture {
  std::string dir, run, sentences_file;
  std::vector<std::vector<std::string>> sentences;  // [3][10]
};

// Imports the allennlp fixture and writes its 30 sentences in batch order: batch i holds
// sentences[0][i], sentences[1][i], sentences[2][i] as rows 0, 1, 2.
Fixture import_fixture() {
  Fixture f;
  const std::string elmo = testing::data_dir() + "/elmo-fixtures/allennlp/elmo";
  f.dir = testing::temp_dir("golden");
  f.run = f.dir + "/run";
  const auto imported = run_elmo("import-bilm --weights " + elmo + "/lm_weights.hdf5 --embedding " +
                                 elmo + "/elmo_token_embeddings.hdf5 --vocab " + elmo +
                                 "/vocab_test.txt --out " + f.run);
  EXPECT_EQ(imported.status, 0) << imported.output;
  const auto json = nlohmann::json::parse(read_file(elmo + "/sentences.json"));
  f.sentences = json.get<std::vector<std::vector<std::string>>>();
  std::string text;
  for (size_t i = 0; i < f.sentences[0].size(); ++i)
    for (size_t k = 0; k < f.sentences.size(); ++k) text += f.sentences[k][i] + "\n";
  f.sentences_file = f.dir + "/sentences.txt";
  write_file_atomic(f.sentences_file, text);
  return f;
}

TEST(Embed, GoldenAllennlpFixtureStateful) {
  ELMO_SKIP_WITHOUT_DATA();
  const Fixture f = import_fixture();
  const std::string out = f.dir + "/out.hdf5";
  const auto embedded = run_elmo("embed --checkpoint " + f.run + " --input " + f.sentences_file +
                                 " --out " + out + " --stateful --batch-size 3");
  ASSERT_EQ(embedded.status, 0) << embedded.output;
  const EmbeddingsHdf5 ours = read_embeddings_hdf5(out);
  ASSERT_EQ(ours.sentences.size(), 30u);
  const std::string elmo = testing::data_dir() + "/elmo-fixtures/allennlp/elmo";
  int64_t compared = 0;
  for (int k = 0; k < 3; ++k) {
    const EmbeddingsHdf5 expected =
        read_embeddings_hdf5(elmo + "/lm_embeddings_" + std::to_string(k) + ".hdf5");
    ASSERT_EQ(expected.sentences.size(), 10u);
    for (int i = 0; i < 10; ++i) {
      const Tensor& want = expected.sentences[i];  // [2, n, 16]: fwd, bwd of the top layer
      const Tensor& got = ours.sentences[3 * i + k];  // [3, n, 32]
      const int64_t n = want.size(1);
      ASSERT_EQ(got.shape(), Shape({3, n, 32})) << "sentence " << k << "," << i;
      std::vector<float> top(2 * n * 16), ref = want.to_floats();
      const float* g = got.data<float>() + 2 * n * 32;  // layer 2
      for (int d = 0; d < 2; ++d)
        for (int64_t j = 0; j < n; ++j)
          for (int c = 0; c < 16; ++c) top[(d * n + j) * 16 + c] = g[j * 32 + d * 16 + c];
      // 1e-5: the fixture's own re-implementations agree to 1e-6; float32 summation order differs.
      EXPECT_TRUE(testing::all_close(top, ref, 1e-5f, 0.0f)) << "sentence [" << k << "][" << i << "]";
      compared += 2 * n * 16;
    }
  }
  EXPECT_EQ(compared, 744 * 32);
}

TEST(Embed, ZeroStateIsDeterministicAndDiffersFromStateful) {
  ELMO_SKIP_WITHOUT_DATA();
  const Fixture f = import_fixture();
  const std::string a = f.dir + "/a.hdf5", b = f.dir + "/b.hdf5", mixed = f.dir + "/m.hdf5";
  ASSERT_EQ(run_elmo("embed --checkpoint " + f.run + " --input " + f.sentences_file + " -o " + a).status, 0);
  ASSERT_EQ(run_elmo("embed --checkpoint " + f.run + " --input " + f.sentences_file + " -o " + b).status, 0);
  const auto ea = read_embeddings_hdf5(a), eb = read_embeddings_hdf5(b);
  ASSERT_EQ(ea.sentences.size(), 30u);
  EXPECT_EQ(ea.sentences[7].to_floats(), eb.sentences[7].to_floats());
  // Token layer = the embedding twice.
  const std::vector<float> s0 = ea.sentences[0].to_floats();
  for (int c = 0; c < 16; ++c) EXPECT_EQ(s0[c], s0[16 + c]);
  // Scalar mix of equal weights = mean of the three layers.
  ASSERT_EQ(run_elmo("embed --checkpoint " + f.run + " --input " + f.sentences_file + " -o " +
                     mixed + " --scalar-mix 0,0,0 --gamma 3")
                .status,
            0);
  const auto em = read_embeddings_hdf5(mixed);
  const Tensor& layers = ea.sentences[4];
  const int64_t n = layers.size(1);
  ASSERT_EQ(em.sentences[4].shape(), Shape({n, 32}));
  std::vector<float> sum(n * 32, 0.0f);
  const std::vector<float> all = layers.to_floats();
  for (int k = 0; k < 3; ++k)
    for (int64_t i = 0; i < n * 32; ++i) sum[i] += all[k * n * 32 + i];
  EXPECT_TRUE(testing::all_close(em.sentences[4].to_floats(), sum, 1e-5f, 1e-5f));
}

TEST(Embed, BadInputIsAClearError) {
  ELMO_SKIP_WITHOUT_DATA();
  const Fixture f = import_fixture();
  const std::string bad = f.dir + "/bad.txt";
  write_file_atomic(bad, "the cat\n\xff\xfe oops\n");
  auto r = run_elmo("embed --checkpoint " + f.run + " --input " + bad + " -o " + f.dir + "/x.h5");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("bad.txt:2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("UTF-8"), std::string::npos) << r.output;
  r = run_elmo("embed --checkpoint " + f.run + " --input " + f.sentences_file + " -o " + f.dir +
               "/x.h5 --scalar-mix 1,2");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("needs 3 weights"), std::string::npos) << r.output;
  r = run_elmo("embed --checkpoint " + f.dir + "/nothing --input " + f.sentences_file + " -o x.h5");
  EXPECT_NE(r.status, 0);
}

// A model trained with data.packing = "contiguous" never saw <S>: embed starts its sentences
// with </S>. The same weights read as a sentence-packing model (<S> first) give the same token
// layer and other LSTM outputs.
TEST(Embed, ContiguousModelsStartSentencesWithTheEndMarker) {
  const std::string dir = testing::temp_dir("embed_contiguous");
  const std::string run = dir + "/run";
  write_file_atomic(dir + "/run.toml",
                    "[run]\ndir = \"" + run +
                        "\"\n"
                        "[synthetic]\nvocab_size = 60\nclasses = 4\ntrain_sentences = 200\n"
                        "valid_sentences = 10\n"
                        "[data]\npacking = \"contiguous\"\nshuffle = false\n"
                        "[model]\nembedding_dim = 8\ncell_size = 16\nprojection_dim = 8\n"
                        "bidirectional = false\n"
                        "[softmax]\ntype = \"full\"\n"
                        "[train]\nbatch_size = 4\nunroll_steps = 5\nmax_steps = 3\nthreads = 1\n"
                        "device = \"cpu\"\n");
  const auto trained = run_elmo("--config " + dir + "/run.toml");
  ASSERT_EQ(trained.status, 0) << trained.output;
  std::string text;
  for (const auto& e : std::filesystem::recursive_directory_iterator(run + "/data"))
    if (e.path().filename() == "valid.txt") text = read_file(e.path().string());
  ASSERT_FALSE(text.empty());
  const std::string sentences = dir + "/sentences.txt";
  write_file_atomic(sentences, text);
  const std::string contiguous = dir + "/contiguous.h5", sentence_packing = dir + "/sentences.h5";
  auto r = run_elmo("embed --checkpoint " + run + " --input " + sentences + " -o " + contiguous);
  ASSERT_EQ(r.status, 0) << r.output;
  // The same checkpoint, its config saying sentence packing.
  const std::string state_path = run + "/checkpoints/step-3/state.json";
  auto state = nlohmann::json::parse(read_file(state_path));
  std::string config = state.at("config").get<std::string>();
  const std::string from = "packing = \"contiguous\"";
  ASSERT_NE(config.find(from), std::string::npos);
  config.replace(config.find(from), from.size(), "packing = \"sentences\"");
  update_checkpoint_state(run + "/checkpoints/step-3", {{"config", config}});  // its checksum too
  r = run_elmo("embed --checkpoint " + run + " --input " + sentences + " -o " + sentence_packing);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto a = read_embeddings_hdf5(contiguous), b = read_embeddings_hdf5(sentence_packing);
  ASSERT_EQ(a.sentences.size(), b.sentences.size());
  ASSERT_GE(a.sentences.size(), 10u);
  for (size_t i = 0; i < a.sentences.size(); ++i) {
    const Tensor& x = a.sentences[i];  // [3, n, 8]: token layer, layer 1, layer 2
    ASSERT_EQ(x.shape(), b.sentences[i].shape());
    const int64_t layer = x.size(1) * x.size(2);
    const std::vector<float> fx = x.to_floats(), fy = b.sentences[i].to_floats();
    EXPECT_TRUE(std::equal(fx.begin(), fx.begin() + layer, fy.begin())) << "token layer " << i;
    EXPECT_FALSE(std::equal(fx.begin() + layer, fx.end(), fy.begin() + layer)) << "sentence " << i;
  }
}

}  // namespace
}  // namespace elmo
