// Training progress for people: a live status line on a terminal (rewritten in place), plain
// log lines otherwise (files, CI, pipes).
#pragma once

#include <cstdint>
#include <string>

namespace elmo {

struct ProgressSnapshot {
  int64_t step = 0, total_steps = 0;
  double tokens_per_s = 0.0, loss = 0.0, perplexity = 0.0, lr = 0.0, epoch = 0.0;
  double eta_seconds = 0.0;
};

class Progress {
 public:
  Progress();  // detects whether stderr is a terminal
  void update(const ProgressSnapshot& s, bool log_line_due);
  void finish();  // ends the live line so later log lines start clean

 private:
  bool live_ = false;
  bool dirty_ = false;
};

std::string format_duration(double seconds);  // "1h02m", "3m05s", "42s"

}  // namespace elmo
