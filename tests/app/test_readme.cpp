// README's promises that code can check: the configuration table is the one the binary prints,
// and every config and command file the README names exists.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "io/atomic_file.h"
#include "io/config.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(Readme, ConfigTableIsTheBinarysReference) {
  const std::string readme = read_file(testing::source_dir() + "/README.md");
  EXPECT_NE(readme.find(config_reference_markdown()), std::string::npos)
      << "README's configuration table is stale: replace it with `elmo_fast config --reference`";
  for (const ConfigKeyInfo& key : describe_keys())
    EXPECT_NE(readme.find("`" + key.key + "`"), std::string::npos) << key.key;
}

TEST(Readme, NamedFilesExist) {
  for (const char* path :
       {"run.toml", "setup.sh", ".ci/run", "configs/elmo-1b.toml", "configs/ptb-small.toml",
        "configs/ptb-medium.toml", "configs/ptb-large.toml", "configs/lm1b-sample.toml",
        "configs/lm1b-finetune.toml", "bench/bench_train_cpu.py", "bench/bench_train_gpu.py",
        "bench/reference/torch_elmo.py", "bench/gpu_check.py", "tools/device_deps.py",
        "docs/ARCHITECTURE.md", "BENCHMARKS.md", "docs/report.png"})
    EXPECT_TRUE(std::filesystem::exists(testing::source_dir() + "/" + path)) << path;
}

// docs/FAULTS.md names the test that checks each fault: every one of them exists.
TEST(Readme, FaultsTableNamesTestsThatExist) {
  namespace fs = std::filesystem;
  const std::string faults = read_file(testing::source_dir() + "/docs/FAULTS.md");
  std::string sources;
  for (const auto& e : fs::recursive_directory_iterator(testing::source_dir() + "/tests"))
    if (e.path().extension() == ".cpp") sources += read_file(e.path().string());
  const std::regex named("`([A-Z][A-Za-z0-9]*)\\.([A-Z][A-Za-z0-9]*)`");
  int tests = 0;
  for (auto it = std::sregex_iterator(faults.begin(), faults.end(), named);
       it != std::sregex_iterator(); ++it) {
    if ((*it)[1] == "Suite") continue;  // the naming pattern itself
    ++tests;
    EXPECT_NE(sources.find("TEST(" + (*it)[1].str() + ", " + (*it)[2].str() + ")"),
              std::string::npos)
        << (*it)[0];
  }
  EXPECT_GE(tests, 40);
  const std::regex replay("`fuzz_replay_([a-z_]+)`");
  for (auto it = std::sregex_iterator(faults.begin(), faults.end(), replay);
       it != std::sregex_iterator(); ++it)
    EXPECT_TRUE(fs::exists(testing::source_dir() + "/tests/fuzz/fuzz_" + (*it)[1].str() + ".cpp"))
        << (*it)[0];
}

}  // namespace
}  // namespace elmo
