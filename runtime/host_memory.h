// Host memory of this machine and this process, as Linux reports it: what a new allocation can
// still get (MemAvailable, or a cgroup limit when that is lower) and the process's resident set
// (now and its high-water mark). Used by `elmo_fast plan` and by training's check that a
// configuration fits before it allocates anything big.
// What it is not: an allocator or a tracker of our own allocations (the device pool's
// bookkeeping is runtime/cuda_memory.h).
#pragma once

#include <cstdint>
#include <string>

namespace elmo {

struct HostMemoryAvailable {
  int64_t bytes = -1;  // what new allocations can get; -1 when nothing could be read
  std::string source;  // "MemAvailable" or "cgroup memory.max of /path"
};

// min(MemAvailable of /proc/meminfo, the smallest (limit - usage) of this process's cgroup and
// its ancestors: cgroup v2 memory.max / memory.current, v1 memory.limit_in_bytes /
// memory.usage_in_bytes). `proc_root` and `cgroup_root` are "/proc" and "/sys/fs/cgroup" except
// in tests.
HostMemoryAvailable host_memory_available(const std::string& proc_root = "/proc",
                                          const std::string& cgroup_root = "/sys/fs/cgroup");

// VmRSS / VmHWM of /proc/self/status in bytes (-1 when unreadable).
int64_t process_rss_bytes();
int64_t process_peak_rss_bytes();

// "1.50 GiB", "312 MiB", "4.0 KiB", "17 B".
std::string format_bytes(int64_t bytes);

}  // namespace elmo
