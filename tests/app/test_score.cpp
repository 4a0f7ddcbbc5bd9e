// score through the binary on a freshly trained tiny model: one JSON line per input line, whose
// per-sentence sums equal eval --mode sentence's totals bit for bit (same --batch-size), token
// log-probabilities that add up to the sentence's, <UNK> positions marked, blank lines kept in
// place, forward-only models; empty input, a missing file and invalid UTF-8 fail clearly with
// nothing written.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/vocab.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

std::string tiny_config(const std::string& run_dir, bool bidirectional) {
  return "[run]\ndir = \"" + run_dir +
         "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 500\n"
         "valid_sentences = 0\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "bidirectional = " +
         std::string(bidirectional ? "true" : "false") +
         "\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 3\nthreads = 2\n"
         "device = \"cpu\"\n"
         "[checkpoint]\nevery_steps = 0\n"
         "[metrics]\ntensorboard = false\n";
}

struct Trained {
  std::string dir, run, text;
  int lines = 0;
};

// Trains once per test binary run; `text`: 7 lines (the training words, an unknown word, a
// blank line, a literal <UNK>).
const Trained& trained(bool bidirectional) {
  static Trained cache[2];
  Trained& t = cache[bidirectional ? 1 : 0];
  if (!t.dir.empty()) return t;
  t.dir = testing::temp_dir(bidirectional ? "score" : "score_fwd");
  t.run = t.dir + "/run";
  write_file_atomic(t.dir + "/run.toml", tiny_config(t.run, bidirectional));
  const auto r = run_elmo("--config " + t.dir + "/run.toml");
  EXPECT_EQ(r.status, 0) << r.output;
  const Vocab vocab = Vocab::load(t.run + "/vocab.txt");
  for (int s = 0; s < 6; ++s) {
    if (s == 3) t.text += "\n";  // a blank line
    for (int w = 0; w <= s; ++w)
      t.text += (w ? " " : "") + vocab.token(static_cast<int32_t>(3 + (s * 7 + w * 3) % 40));
    if (s == 2) t.text += " never-seen-word";
    if (s == 5) t.text += " <UNK>";
    t.text += "\n";
  }
  t.lines = 7;
  write_file_atomic(t.dir + "/held_out.txt", t.text);
  return t;
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Sums of the per-sentence values in file order against eval's totals. With one sentence per
// batch (the default of both) they are the same additions in the same order: bit for bit.
// Larger batches add a batch's positions step by step across its rows (time-major), so the
// same terms are grouped differently: equal to rounding.
TEST(Score, SumsEqualEvalSentenceModeBitForBit) {
  const Trained& t = trained(true);
  for (const int batch : {1, 4}) {
    const std::string flag = batch == 1 ? "" : " --batch-size 4";
    const std::string scores = t.dir + "/scores" + std::to_string(batch) + ".jsonl";
    const std::string eval_json = t.dir + "/eval" + std::to_string(batch) + ".json";
    const auto s = run_elmo("score --checkpoint " + t.run + " --input " + t.dir +
                            "/held_out.txt --out " + scores + flag);
    ASSERT_EQ(s.status, 0) << s.output;
    const auto e = run_elmo("eval --checkpoint " + t.run + " --corpus " + t.dir +
                            "/held_out.txt --mode sentence --json " + eval_json + flag);
    ASSERT_EQ(e.status, 0) << e.output;
    const auto lines = read_lines(scores);
    ASSERT_EQ(static_cast<int>(lines.size()), t.lines);
    double nll_fwd = 0.0, nll_bwd = 0.0;
    int64_t tokens = 0;
    for (const auto& j : lines) {
      if (j.value("blank", false)) continue;
      nll_fwd += -j.at("logprob_fwd").get<double>();
      nll_bwd += -j.at("logprob_bwd").get<double>();
      tokens += j.at("tokens").get<int64_t>();
    }
    const auto ev = nlohmann::json::parse(read_file(eval_json));
    EXPECT_EQ(tokens, ev.at("tokens").get<int64_t>()) << batch;
    const double fwd = ev.at("nll_fwd").get<double>(), bwd = ev.at("nll_bwd").get<double>();
    if (batch == 1) {
      EXPECT_EQ(nll_fwd, fwd);  // bit for bit
      EXPECT_EQ(nll_bwd, bwd);
      EXPECT_EQ(std::exp(nll_fwd / static_cast<double>(tokens)), ev.at("ppl_fwd").get<double>());
    } else {
      EXPECT_NEAR(nll_fwd, fwd, 1e-12 * fwd);
      EXPECT_NEAR(nll_bwd, bwd, 1e-12 * bwd);
    }
  }
  // The same sentences whatever the batch: the per-sentence values agree to rounding.
  const auto one = read_lines(t.dir + "/scores1.jsonl"),
             four = read_lines(t.dir + "/scores4.jsonl");
  for (size_t i = 0; i < one.size(); ++i)
    if (!one[i].value("blank", false))
      EXPECT_NEAR(one[i]["logprob_fwd"].get<double>(), four[i]["logprob_fwd"].get<double>(), 1e-4);
}

TEST(Score, LinesTokensUnknownWordsAndBlankLines) {
  const Trained& t = trained(true);
  // Without --out the lines go to stdout (the log to stderr).
  const auto r = testing::run_command("(" + testing::elmo_binary() + " score --checkpoint " +
                                      t.run + " --input " + t.dir + "/held_out.txt --tokens 2>" +
                                      t.dir + "/stderr.txt) >" + t.dir + "/stdout.jsonl");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::vector<nlohmann::json> lines = read_lines(t.dir + "/stdout.jsonl");
  ASSERT_EQ(static_cast<int>(lines.size()), t.lines);
  EXPECT_NE(read_file(t.dir + "/stderr.txt").find("scored 6 sentences"), std::string::npos);
  EXPECT_EQ(lines[3], nlohmann::json({{"line", 4}, {"blank", true}}));
  for (int i = 0; i < t.lines; ++i) {
    const nlohmann::json& j = lines[i];
    EXPECT_EQ(j.at("line"), i + 1);
    if (i == 3) continue;
    const int64_t words = j.at("words");
    EXPECT_EQ(j.at("tokens"), words + 1);
    const auto& tokens = j.at("token_logprobs");
    ASSERT_EQ(static_cast<int64_t>(tokens.size()), words + 2);
    EXPECT_EQ(tokens.front().at("token"), "<S>");
    EXPECT_FALSE(tokens.front().contains("fwd"));
    EXPECT_EQ(tokens.back().at("token"), "</S>");
    EXPECT_FALSE(tokens.back().contains("bwd"));
    double fwd = 0.0, bwd = 0.0;
    for (const auto& tok : tokens) {
      fwd += tok.value("fwd", 0.0);
      bwd += tok.value("bwd", 0.0);
      if (tok.contains("fwd")) EXPECT_LT(tok["fwd"].get<double>(), 0.0);
    }
    EXPECT_NEAR(fwd, j.at("logprob_fwd").get<double>(), 1e-9);
    EXPECT_NEAR(bwd, j.at("logprob_bwd").get<double>(), 1e-9);
    EXPECT_DOUBLE_EQ(j.at("logprob_mean").get<double>(),
                     0.5 * (j["logprob_fwd"].get<double>() + j["logprob_bwd"].get<double>()));
    EXPECT_NEAR(j.at("perplexity").get<double>(),
                std::exp(-(j["logprob_fwd"].get<double>() + j["logprob_bwd"].get<double>()) /
                         (2.0 * (words + 1))),
                1e-9 * j["perplexity"].get<double>());
    int64_t unk = 0;
    for (const auto& tok : tokens) unk += tok.value("unk", false);
    EXPECT_EQ(j.at("unk"), unk);
  }
  // Line 3 (sentence 2) has "never-seen-word", line 7 (sentence 5) a literal <UNK>.
  EXPECT_EQ(lines[2]["unk"], 1);
  EXPECT_EQ(lines[2]["token_logprobs"][4]["token"], "never-seen-word");
  EXPECT_EQ(lines[2]["token_logprobs"][4]["unk"], true);
  EXPECT_EQ(lines[6]["unk"], 1);
  EXPECT_EQ(lines[0]["unk"], 0);
}

TEST(Score, ForwardOnlyModelsHaveNoBackwardFields) {
  const Trained& t = trained(false);
  const std::string out = t.dir + "/fwd.jsonl";
  const auto r = run_elmo("score --checkpoint " + t.run + " --input " + t.dir +
                          "/held_out.txt --tokens --out " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  for (const auto& j : read_lines(out)) {
    if (j.value("blank", false)) continue;
    EXPECT_FALSE(j.contains("logprob_bwd"));
    EXPECT_EQ(j["logprob_mean"], j["logprob_fwd"]);
    for (const auto& tok : j["token_logprobs"]) EXPECT_FALSE(tok.contains("bwd"));
    EXPECT_NE(j["token_logprobs"].front()["token"], "<S>");
  }
}

TEST(Score, BadInputFailsClearlyAndWritesNothing) {
  const Trained& t = trained(true);
  const std::string out = t.dir + "/never.jsonl";
  struct Case {
    std::string name, content, expect;
    int status;
  };
  std::string bad_utf8 = "fine line\nbroken \xff\xfe here\n";
  for (const Case& c : std::vector<Case>{
           {"empty.txt", "", "holds no sentence to score (0 lines", 1},
           {"blank.txt", "\n  \n\n", "holds no sentence to score (3 lines, all blank)", 1},
           {"bad.txt", bad_utf8, "bad.txt:2", 1},
       }) {
    const std::string input = testing::write_text_file(t.dir, c.name, c.content);
    const auto r = run_elmo("score --checkpoint " + t.run + " --input " + input + " --out " + out);
    EXPECT_EQ(r.status, c.status) << c.name << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.name << "\n" << r.output;
    EXPECT_FALSE(fs::exists(out)) << c.name;
  }
  const auto missing = run_elmo("score --checkpoint " + t.run + " --input " + t.dir + "/nope.txt");
  EXPECT_EQ(missing.status, 2) << missing.output;
  EXPECT_NE(missing.output.find("nope.txt"), std::string::npos) << missing.output;
  const auto no_checkpoint =
      run_elmo("score --checkpoint " + t.dir + "/nothing --input " + t.dir + "/held_out.txt");
  EXPECT_EQ(no_checkpoint.status, 1) << no_checkpoint.output;
  EXPECT_NE(no_checkpoint.output.find("no such checkpoint folder"), std::string::npos);
  const auto zero_batch = run_elmo("score --checkpoint " + t.run + " --input " + t.dir +
                                   "/held_out.txt --batch-size 0");
  EXPECT_EQ(zero_batch.status, 2) << zero_batch.output;
}

}  // namespace
}  // namespace elmo
