// Host memory: MemAvailable, cgroup v1 and v2 limits (the smallest wins, inactive page cache
// does not count as used, "max" and ~2^63 mean no limit), ancestors' limits, the resident set of
// this process, and byte formatting. The /proc and /sys/fs/cgroup trees are fakes in a folder.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "runtime/host_memory.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;

struct FakeSystem {
  std::string proc, cgroup;
  explicit FakeSystem(const std::string& tag) {
    const std::string root = testing::temp_dir(tag);
    proc = root + "/proc";
    cgroup = root + "/cgroup";
    fs::create_directories(proc + "/self");
    fs::create_directories(cgroup);
  }
  void file(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    testing::write_text_file(fs::path(path).parent_path().string(),
                             fs::path(path).filename().string(), text);
  }
};

constexpr int64_t kGiB = int64_t{1} << 30;

TEST(HostMemory, MemAvailableWithoutLimits) {
  FakeSystem sys("host_mem_plain");
  sys.file(sys.proc + "/meminfo", "MemTotal: 33554432 kB\nMemAvailable:    8388608 kB\n");
  sys.file(sys.proc + "/self/cgroup", "0::/\n");
  sys.file(sys.cgroup + "/cgroup.controllers", "cpu memory\n");
  sys.file(sys.cgroup + "/memory.max", "max\n");
  const HostMemoryAvailable a = host_memory_available(sys.proc, sys.cgroup);
  EXPECT_EQ(a.bytes, 8 * kGiB);
  EXPECT_NE(a.source.find("MemAvailable"), std::string::npos);
}

TEST(HostMemory, CgroupV2LimitOfTheGroupOrAnAncestorWins) {
  FakeSystem sys("host_mem_v2");
  sys.file(sys.proc + "/meminfo", "MemAvailable: 16777216 kB\n");  // 16 GiB
  sys.file(sys.proc + "/self/cgroup", "0::/jobs/mine\n");
  sys.file(sys.cgroup + "/cgroup.controllers", "memory\n");
  sys.file(sys.cgroup + "/jobs/mine/memory.max", "max\n");
  sys.file(sys.cgroup + "/jobs/memory.max", std::to_string(4 * kGiB) + "\n");
  // 3 GiB charged, 1 GiB of it inactive page cache: 2 GiB in use, 2 GiB of room.
  sys.file(sys.cgroup + "/jobs/memory.current", std::to_string(3 * kGiB) + "\n");
  sys.file(sys.cgroup + "/jobs/memory.stat",
           "anon 1\ninactive_file " + std::to_string(kGiB) + "\n");
  const HostMemoryAvailable a = host_memory_available(sys.proc, sys.cgroup);
  EXPECT_EQ(a.bytes, 2 * kGiB);
  EXPECT_NE(a.source.find("/jobs/memory.max"), std::string::npos) << a.source;
}

TEST(HostMemory, CgroupV1LimitAndUnlimitedValues) {
  FakeSystem sys("host_mem_v1");
  sys.file(sys.proc + "/meminfo", "MemAvailable: 16777216 kB\n");
  sys.file(sys.proc + "/self/cgroup", "4:memory:/api/abc\n3:cpuset:/\n");
  sys.file(sys.cgroup + "/memory/memory.limit_in_bytes", "9223372036854771712\n");  // none
  sys.file(sys.cgroup + "/memory/api/abc/memory.limit_in_bytes", std::to_string(kGiB) + "\n");
  sys.file(sys.cgroup + "/memory/api/abc/memory.usage_in_bytes", std::to_string(kGiB / 4) + "\n");
  HostMemoryAvailable a = host_memory_available(sys.proc, sys.cgroup);
  EXPECT_EQ(a.bytes, kGiB - kGiB / 4);
  EXPECT_NE(a.source.find("memory.limit_in_bytes"), std::string::npos);
  // A limit above MemAvailable does not matter.
  sys.file(sys.cgroup + "/memory/api/abc/memory.limit_in_bytes", std::to_string(64 * kGiB));
  a = host_memory_available(sys.proc, sys.cgroup);
  EXPECT_EQ(a.bytes, 16 * kGiB);
}

TEST(HostMemory, NothingReadableMeansUnknown) {
  FakeSystem sys("host_mem_none");
  EXPECT_EQ(host_memory_available(sys.proc, sys.cgroup).bytes, -1);
}

TEST(HostMemory, ThisProcessAndFormatting) {
  const int64_t rss = process_rss_bytes(), peak = process_peak_rss_bytes();
  EXPECT_GT(rss, 0);
  EXPECT_GE(peak, rss);
  EXPECT_GT(host_memory_available().bytes, 0);
  EXPECT_EQ(format_bytes(17), "17 B");
  EXPECT_EQ(format_bytes(4096), "4.00 KiB");
  EXPECT_EQ(format_bytes(int64_t{312} << 20), "312 MiB");
  EXPECT_EQ(format_bytes(int64_t{3} << 29), "1.50 GiB");
  EXPECT_EQ(format_bytes(int64_t{80} << 30), "80.0 GiB");
}

}  // namespace
}  // namespace elmo
