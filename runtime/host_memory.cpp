#include "runtime/host_memory.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace elmo {

namespace {

namespace fs = std::filesystem;

// The first number of a file; -1 for "max", an unreadable file or a value beyond int64.
int64_t read_number(const fs::path& path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word) || word.empty() || word.find_first_not_of("0123456789") != std::string::npos)
    return -1;
  try {
    return std::stoll(word);
  } catch (...) {
    return -1;
  }
}

// The value of "<key> <number>" in a stat file (memory.stat), or 0.
int64_t stat_value(const fs::path& path, const std::string& key) {
  std::ifstream in(path);
  std::string k;
  int64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

// "Key:   123 kB" of a /proc file, in bytes, or -1.
int64_t proc_kib_field(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    int64_t kib = -1;
    fields >> kib;
    return kib < 0 ? -1 : kib * 1024;
  }
  return -1;
}

struct Room {
  int64_t bytes = -1;  // -1: no limit found
  std::string where;
};

// From `dir` up to `root`: the smallest limit - (usage - inactive file pages), the working set
// as container runtimes count it (inactive page cache is reclaimed before the limit bites).
void walk_cgroup(fs::path dir, const fs::path& root, const char* limit_file, const char* usage_file,
                 const char* inactive_key, Room* best) {
  constexpr int64_t kUnlimited = int64_t{1} << 60;  // v1 writes ~2^63 for "no limit"
  const std::string root_text = root.lexically_normal().string();
  for (;;) {
    const int64_t limit = read_number(dir / limit_file);
    if (limit > 0 && limit < kUnlimited) {
      const int64_t usage = std::max<int64_t>(0, read_number(dir / usage_file));
      const int64_t inactive = stat_value(dir / "memory.stat", inactive_key);
      const int64_t room = std::max<int64_t>(0, limit - std::max<int64_t>(0, usage - inactive));
      if (best->bytes < 0 || room < best->bytes) {
        best->bytes = room;
        best->where = (dir / limit_file).string();
      }
    }
    const fs::path parent = dir.parent_path();
    if (dir.lexically_normal().string().size() <= root_text.size() || parent == dir) return;
    dir = parent;
  }
}

}  // namespace

HostMemoryAvailable host_memory_available(const std::string& proc_root,
                                          const std::string& cgroup_root) {
  HostMemoryAvailable out;
  out.bytes = proc_kib_field(proc_root + "/meminfo", "MemAvailable");
  if (out.bytes >= 0) out.source = "MemAvailable of " + proc_root + "/meminfo";
  Room room;
  std::ifstream cgroups(proc_root + "/self/cgroup");
  std::string line;
  while (std::getline(cgroups, line)) {  // "<id>:<controllers>:<path>"
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    if (controllers.empty()) {  // cgroup v2 (possibly under "unified" on hybrid systems)
      for (const char* base : {"", "/unified"}) {
        const fs::path root = cgroup_root + base;
        if (fs::exists(root / "cgroup.controllers"))
          walk_cgroup(root / fs::path(path).relative_path(), root, "memory.max", "memory.current",
                      "inactive_file", &room);
      }
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      const fs::path root = cgroup_root + "/memory";
      walk_cgroup(root / fs::path(path).relative_path(), root, "memory.limit_in_bytes",
                  "memory.usage_in_bytes", "total_inactive_file", &room);
    }
  }
  if (room.bytes >= 0 && (out.bytes < 0 || room.bytes < out.bytes)) {
    out.bytes = room.bytes;
    out.source = "cgroup limit " + room.where;
  }
  return out;
}

int64_t process_rss_bytes() { return proc_kib_field("/proc/self/status", "VmRSS"); }
int64_t process_peak_rss_bytes() { return proc_kib_field("/proc/self/status", "VmHWM"); }

std::string format_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (std::abs(value) >= 1024.0 && unit < 5) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0)
    std::snprintf(text, sizeof text, "%lld B", static_cast<long long>(bytes));
  else
    std::snprintf(text, sizeof text,
                  value < 10    ? "%.2f %s"
                  : value < 100 ? "%.1f %s"
                                : "%.0f %s",
                  value, units[unit]);
  return text;
}

}  // namespace elmo
