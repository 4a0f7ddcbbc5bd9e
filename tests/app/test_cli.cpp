// cli: help and version, exit codes of usage errors (unknown flag or subcommand, missing files,
// missing required options), `config --reference` (every key of describe_keys()) and
// `config --set` printing the effective config.
#include <gtest/gtest.h>

#include <cstdio>

#include "io/config.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::run_elmo;

TEST(Cli, HelpListsEverySubcommand) {
  const auto r = run_elmo("--help");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const char* sub : {"train", "vocab", "prepare", "eval", "import-bilm", "export-bilm",
                          "embed", "report", "config"})
    EXPECT_NE(r.output.find(sub), std::string::npos) << sub << " missing from --help:\n"
                                                       << r.output;
  EXPECT_NE(r.output.find("--config"), std::string::npos);
  // Subcommand help works too and names its options.
  const auto eval = run_elmo("eval --help");
  EXPECT_EQ(eval.status, 0) << eval.output;
  EXPECT_NE(eval.output.find("--checkpoint"), std::string::npos) << eval.output;
  EXPECT_NE(eval.output.find("--mode"), std::string::npos) << eval.output;
}

TEST(Cli, NoArgumentsPrintsHelpAndFails) {
  const auto r = run_elmo("");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("import-bilm"), std::string::npos) << r.output;
}

TEST(Cli, Version) {
  const auto r = run_elmo("--version");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("elmo_fast 0."), std::string::npos) << r.output;
}

TEST(Cli, UsageErrorsExitTwo) {
  const std::string dir = testing::temp_dir("cli_usage");
  struct Case {
    std::string args, mention;
  };
  const std::vector<Case> cases = {
      {"--no-such-flag", "--no-such-flag"},
      {"frobnicate", "frobnicate"},
      {"--config " + dir + "/missing.toml", "missing.toml"},
      {"train --config " + dir + "/missing.toml", "missing.toml"},
      {"train", "--config"},                       // required
      {"eval --corpus x.txt", "--checkpoint"},     // required
      {"eval --checkpoint a --corpus b --mode sideways", "sideways"},
      {"eval --checkpoint a --corpus b --batch-size 0", "batch-size"},
      {"vocab --corpus x.txt", "--out"},
      {"config --set model.no_such_key=3", "no_such_key"},
      {"config --set model.cell_size=-5", "model.cell_size"},
      {"--role worker --root_uri 127.0.0.1 --root_port 29701 --world_size 1 --job_token x",
       "--config is required"},
      {"--role bogus", "bogus"},
      {"--nodes 2 --workers_per_node -1 --config " + testing::source_dir() + "/run.toml",
       "--workers_per_node must be >= 1"},
  };
  for (const Case& c : cases) {
    const auto r = run_elmo(c.args);
    EXPECT_EQ(r.status, 2) << c.args << ":\n" << r.output;
    EXPECT_NE(r.output.find(c.mention), std::string::npos) << c.args << ":\n" << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << c.args;
  }
}

TEST(Cli, ConfigReferenceListsEveryKey) {
  const auto r = run_elmo("config --reference");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, config_reference_markdown());
  const auto keys = describe_keys();
  ASSERT_GT(keys.size(), 30u);
  for (const ConfigKeyInfo& k : keys)
    EXPECT_NE(r.output.find(k.key), std::string::npos) << k.key << " missing from the reference";
  EXPECT_NE(r.output.find("| Key"), std::string::npos);
}

TEST(Cli, ConfigPrintsTheEffectiveConfigWithOverrides) {
  const auto defaults = run_elmo("config");
  ASSERT_EQ(defaults.status, 0) << defaults.output;
  EXPECT_NE(defaults.output.find("cell_size = 512"), std::string::npos) << defaults.output;

  const auto r = run_elmo("config --set model.cell_size=77 --set softmax.type=full");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("cell_size = 77"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("cell_size = 512"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("type = \"full\""), std::string::npos) << r.output;
  // The printed TOML is itself a valid config equal to defaults + overrides.
  Config want;
  want.model.cell_size = 77;
  want.softmax.type = "full";
  EXPECT_EQ(config_from_string(r.output, "printed"), want);

  // From a file, with an override on top.
  const std::string dir = testing::temp_dir("cli_config");
  const std::string path = dir + "/run.toml";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("[model]\nlayers = 3\ncell_size = 64\n", f);
    std::fclose(f);
  }
  const auto file = run_elmo("config --config " + path + " --set model.cell_size=96");
  ASSERT_EQ(file.status, 0) << file.output;
  const Config got = config_from_string(file.output, "printed");
  EXPECT_EQ(got.model.layers, 3);
  EXPECT_EQ(got.model.cell_size, 96);
}

}  // namespace
}  // namespace elmo
