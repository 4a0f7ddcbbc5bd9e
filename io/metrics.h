// Training metrics sinks: JSON lines in <run_dir>/metrics.jsonl and TensorBoard event files in
// <run_dir>/tb/, fed by one MetricsLogger.
//
// metrics.jsonl holds one JSON object per log interval: {"step": N, then every scalar in the
// order given, then "wall_time"} (the trainer passes time, tokens, loss, ppl, tokens_per_s, lr,
// grad_norm and optional extras such as epoch or valid_ppl; "time" is seconds since the process
// started, so it restarts in a resumed run). MetricsLogger appends "wall_time", Unix seconds
// (to the millisecond), to the JSON lines only: wall_time - time tells which process wrote a
// line. Integral values are written as integers, non-finite values as null. The file is
// appended to (a resumed run continues it) and flushed after every line; a torn last line left
// by a crash is closed with a newline before appending.
// What it is not: a place for per-step data (the caller decides the interval); the reader is
// io/metrics_reader.h.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "io/tensorboard.h"

namespace elmo {

// Appends JSON objects, one per line, flushed per line.
class MetricsSink {
 public:
  explicit MetricsSink(const std::string& path);  // creates the parent folder if needed
  ~MetricsSink();
  MetricsSink(const MetricsSink&) = delete;
  MetricsSink& operator=(const MetricsSink&) = delete;

  void write(const nlohmann::ordered_json& object);  // keys in insertion order
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// {"step": step, name: value, ...} with integral values as integers and NaN/inf as null.
nlohmann::ordered_json metrics_object(int64_t step, const Scalars& scalars);

class MetricsLogger {
 public:
  // jsonl: <run_dir>/metrics.jsonl; tensorboard: a new event file in <run_dir>/tb/.
  MetricsLogger(const std::string& run_dir, bool jsonl, bool tensorboard);
  void log(int64_t step, const Scalars& scalars);

  const MetricsSink* jsonl() const { return jsonl_.get(); }
  const TensorBoardWriter* tensorboard() const { return tensorboard_.get(); }

 private:
  std::unique_ptr<MetricsSink> jsonl_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

}  // namespace elmo
