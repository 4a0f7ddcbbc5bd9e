// README's promises that code can check: the configuration table is the one the binary prints,
// and every config and command file the README names exists.
#include <gtest/gtest.h>

#include <filesystem>

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

}  // namespace
}  // namespace elmo
