#include "app/progress.h"

#include <unistd.h>

#include <cstdio>

#include "runtime/log.h"

namespace elmo {

Progress::Progress() : live_(::isatty(STDERR_FILENO) == 1) {}

std::string format_duration(double seconds) {
  if (!(seconds >= 0.0) || seconds > 1e8) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  else if (s >= 60)
    std::snprintf(text, sizeof text, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  else
    std::snprintf(text, sizeof text, "%llds", static_cast<long long>(s));
  return text;
}

void Progress::update(const ProgressSnapshot& s, bool log_line_due) {
  char line[256];
  std::snprintf(line, sizeof line,
                "step %lld/%lld (%.0f%%) | epoch %.2f | %.0f tok/s | loss %.4f | ppl %.2f | "
                "lr %.4g | ETA %s",
                static_cast<long long>(s.step), static_cast<long long>(s.total_steps),
                s.total_steps ? 100.0 * s.step / s.total_steps : 0.0, s.epoch, s.tokens_per_s,
                s.loss, s.perplexity, s.lr, format_duration(s.eta_seconds).c_str());
  if (live_) {
    std::fprintf(stderr, "\r\033[K%s", line);
    std::fflush(stderr);
    dirty_ = true;
  } else if (log_line_due) {
    log_info(line);
  }
}

void Progress::finish() {
  if (live_ && dirty_) {
    std::fputc('\n', stderr);
    dirty_ = false;
  }
}

}  // namespace elmo
