// Reads a run's metrics.jsonl (io/metrics.h) back as one time series per key, for reports.
//
// Lines: every line that is a JSON object with an integer "step" is a record; any other
// non-blank line (torn by a crash, edited by hand) is skipped with a warning "FILE:LINE: ...".
// Numbers become points; null (a non-finite value) is counted and left out; keys of another
// type are ignored, so later additions to the format do not break old readers.
//
// Processes: a resumed run appends to the same file, and its "time" restarts at 0. A record
// starts a new segment (the next process) when its step is below the previous record's, its
// time below the previous time, or, when both lines carry wall_time, wall_time - time (the
// process's start) moved by more than 2 s. Then:
//   - points an earlier segment logged at the new segment's first step or later are dropped
//     (the resumed process went back to its checkpoint and logged those steps again);
//   - time keeps counting: a segment's times are offset by the sum of the earlier segments'
//     durations (the last time each logged), so `time` is seconds of running, the gaps between
//     processes left out.
// A record without "time" (validation lines of files written before it was added) takes the
// time of the record before it in the same segment (0 when it is the first).
// What it is not: a writer (io/metrics.h), or a check that the values make sense.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace elmo {

struct MetricPoint {
  int64_t step = 0;
  double time = 0.0;  // seconds of running, across resumes (see above)
  double value = 0.0;
};

struct MetricsHistory {
  std::map<std::string, std::vector<MetricPoint>> series;  // by key; steps ascending
  int64_t records = 0;                                     // lines read as records
  int segments = 0;        // processes that wrote the file: 1 + resumes (0 when no records)
  int64_t superseded = 0;  // points dropped because a resumed process logged their steps again
  int64_t non_finite = 0;  // null values left out
  int64_t damaged = 0;     // lines skipped
  std::vector<std::string> warnings;  // the first damaged lines, "FILE:LINE: ...", then a count

  const std::vector<MetricPoint>* find(const std::string& key) const;  // nullptr when absent
};

// Error when the file cannot be opened or read.
MetricsHistory read_metrics_history(const std::string& path);

}  // namespace elmo
