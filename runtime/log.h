// Plain log lines on stderr: "[elmo_fast 12:03:04] message" (+ rank context when set).
#pragma once

#include <string>

#include "runtime/error.h"

namespace elmo {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kQuiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& message);

template <typename... Parts>
void log_info(const Parts&... parts) {
  if (log_level() <= LogLevel::kInfo) log_line(LogLevel::kInfo, str(parts...));
}
template <typename... Parts>
void log_warn(const Parts&... parts) {
  if (log_level() <= LogLevel::kWarn) log_line(LogLevel::kWarn, str(parts...));
}
template <typename... Parts>
void log_error(const Parts&... parts) {
  log_line(LogLevel::kError, str(parts...));
}
template <typename... Parts>
void log_debug(const Parts&... parts) {
  if (log_level() <= LogLevel::kDebug) log_line(LogLevel::kDebug, str(parts...));
}

}  // namespace elmo
