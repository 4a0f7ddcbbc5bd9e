// eval through the binary on a freshly trained tiny model: JSON output (forward, backward and
// token-weighted mean perplexity over every predicted position), sentence mode, --max-tokens,
// and a vocabulary of the wrong size refused with both sizes named.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/vocab.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

// The tests/app/test_train.cpp tiny model, trained for 3 steps only.
std::string tiny_config(const std::string& run_dir) {
  return "[run]\ndir = \"" + run_dir + "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 500\n"
         "valid_sentences = 40\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "dropout = 0.1\ncell_clip = 0.5\nproj_clip = 0.5\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 3\nthreads = 2\n"
         "log_every = 3\n"
         "[checkpoint]\nevery_steps = 3\nkeep_last = 0\n"
         "[eval]\nbatch_size = 4\nmax_tokens = 200\n"
         "[metrics]\ntensorboard = false\n";
}

struct Trained {
  std::string dir, run, text;
  int64_t predictions = 0;  // tokens + sentences of `text`
};

// Trains once per test binary run (the tests only read the run folder).
const Trained& trained() {
  static const Trained t = [] {
    Trained t;
    t.dir = testing::temp_dir("eval_cmd");
    t.run = t.dir + "/run";
    write_file_atomic(t.dir + "/run.toml", tiny_config(t.run));
    const auto r = run_elmo("--config " + t.dir + "/run.toml");
    EXPECT_EQ(r.status, 0) << r.output;
    // Held-out text: the training corpus's own words (some unknown ones too), 6 sentences.
    const Vocab vocab = Vocab::load(t.run + "/vocab.txt");
    std::string text;
    int64_t words = 0;
    for (int s = 0; s < 6; ++s) {
      for (int w = 0; w <= s; ++w) {
        text += (w ? " " : "") + vocab.token(static_cast<int32_t>(3 + (s * 7 + w * 3) % 40));
        ++words;
      }
      if (s == 4) text += " never-seen-word", ++words;
      text += "\n";
    }
    t.text = t.dir + "/held_out.txt";
    write_file_atomic(t.text, text);
    t.predictions = words + 6;
    return t;
  }();
  return t;
}

TEST(EvalCommand, WritesJsonWithEveryPerplexity) {
  const Trained& t = trained();
  ASSERT_TRUE(fs::exists(t.run + "/checkpoints/step-3/model.safetensors"));
  const std::string out = t.dir + "/out.json";
  const auto r = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text + " --json " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("perplexity (stream): fwd "), std::string::npos) << r.output;
  const auto j = nlohmann::json::parse(read_file(out));
  ASSERT_TRUE(j.contains("ppl_fwd") && j.contains("ppl_bwd") && j.contains("ppl")) << j.dump();
  const double fwd = j["ppl_fwd"], bwd = j["ppl_bwd"], mean = j["ppl"];
  const int64_t vocab = Vocab::load(t.run + "/vocab.txt").size();
  for (double p : {fwd, bwd, mean}) {
    EXPECT_GT(p, 1.0);
    EXPECT_LT(p, 3.0 * vocab);  // 3 steps from a near-uniform init: about V, not wildly above
  }
  EXPECT_NE(fwd, bwd);
  // Same count per direction, so the token-weighted mean is the geometric mean.
  EXPECT_NEAR(mean, std::sqrt(fwd * bwd), 1e-6 * mean);
  EXPECT_EQ(j["tokens"].get<int64_t>(), t.predictions);
  EXPECT_EQ(j["mode"], "stream");
  EXPECT_EQ(j["checkpoint_step"], 3);

  // Slices: the printed table and the JSON; every prediction in exactly one slice.
  EXPECT_NE(r.output.find("</S> <S>"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("100.0%"), std::string::npos) << r.output;
  ASSERT_TRUE(j.contains("slices")) << j.dump();
  int64_t counted = 0;
  double shares = 0.0;
  for (const char* slice : {"head", "torso", "tail", "unk", "eos"}) {
    counted += j["slices"][slice]["tokens_fwd"].get<int64_t>();
    shares += j["slices"][slice]["share"].get<double>();
  }
  EXPECT_EQ(counted, t.predictions);
  EXPECT_NEAR(shares, 1.0, 1e-12);
  EXPECT_EQ(j["slices"]["unk"]["tokens_fwd"], 1);  // never-seen-word
  EXPECT_EQ(j["slices"]["eos"]["tokens_fwd"], 6);  // one </S> per sentence

  // The step folder and the checkpoints folder name the same model.
  const std::string out2 = t.dir + "/out2.json";
  const auto r2 = run_elmo("eval --checkpoint " + t.run + "/checkpoints/step-3 --corpus " +
                           t.text + " --json " + out2);
  ASSERT_EQ(r2.status, 0) << r2.output;
  EXPECT_EQ(nlohmann::json::parse(read_file(out2))["ppl"], j["ppl"]);
}

TEST(EvalCommand, SentenceModeAndMaxTokens) {
  const Trained& t = trained();
  const std::string stream = t.dir + "/stream.json", sentence = t.dir + "/sentence.json";
  ASSERT_EQ(run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text + " --json " + stream)
                .status,
            0);
  const auto r = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text +
                          " --mode sentence --batch-size 4 --json " + sentence);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("perplexity (sentence)"), std::string::npos) << r.output;
  const auto a = nlohmann::json::parse(read_file(stream));
  const auto b = nlohmann::json::parse(read_file(sentence));
  EXPECT_EQ(b["mode"], "sentence");
  EXPECT_EQ(b["tokens"], a["tokens"]);
  EXPECT_NE(b["ppl_fwd"].get<double>(), a["ppl_fwd"].get<double>());

  const std::string limited = t.dir + "/limited.json";
  ASSERT_EQ(run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text +
                     " --unroll-steps 5 --max-tokens 7 --json " + limited)
                .status,
            0);
  EXPECT_EQ(nlohmann::json::parse(read_file(limited))["tokens"], 10);  // two batches of 5
}

TEST(EvalCommand, SliceBoundsFromTheCommandLine) {
  const Trained& t = trained();
  const std::string out = t.dir + "/bounds.json";
  auto r = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text +
                    " --head-ids 10 --torso-ids 20 --json " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(read_file(out));
  EXPECT_EQ(j["slices"]["head"]["ids"], "3 .. 9");
  EXPECT_EQ(j["slices"]["torso"]["ids"], "10 .. 19");
  // Crossed bounds and negative ones are usage errors naming what to change.
  r = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text +
               " --head-ids 30 --torso-ids 20");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(
                "head bound 30 (eval.head_ids / --head-ids) must not exceed the torso bound 20"),
            std::string::npos)
      << r.output;
  r = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text + " --head-ids -3");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--head-ids"), std::string::npos) << r.output;
}

TEST(EvalCommand, VocabularyOfTheWrongSizeIsRefused) {
  const Trained& t = trained();
  const int64_t rows = Vocab::load(t.run + "/vocab.txt").size();
  const std::string vocab = t.dir + "/small_vocab.txt";
  write_file_atomic(vocab, "</S>\n<S>\n<UNK>\na\nb\n");
  const auto r = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.text + " --vocab " +
                          vocab);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("has 5 tokens"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(std::to_string(rows) + " rows"), std::string::npos) << r.output;
}

TEST(EvalCommand, MissingInputsFail) {
  const Trained& t = trained();
  auto r = run_elmo("eval --checkpoint " + t.dir + "/no_run --corpus " + t.text);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no_run"), std::string::npos) << r.output;
  r = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.dir + "/no_text.txt");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no_text.txt"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace elmo
