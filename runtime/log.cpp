#include "runtime/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace elmo {

namespace {
LogLevel g_level = LogLevel::kInfo;
std::mutex g_log_mutex;
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_line(LogLevel level, const std::string& message) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&now, &local);
  char stamp[16];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &local);
  const char* tag = level == LogLevel::kWarn ? "warning: " : level == LogLevel::kError ? "error: " : "";
  std::lock_guard<std::mutex> lock(g_log_mutex);
  if (error_context().empty())
    std::fprintf(stderr, "[elmo_fast %s] %s%s\n", stamp, tag, message.c_str());
  else
    std::fprintf(stderr, "[elmo_fast %s %s] %s%s\n", stamp, error_context().c_str(), tag,
                 message.c_str());
  std::fflush(stderr);
}

}  // namespace elmo
