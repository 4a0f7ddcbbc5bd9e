#include "io/metrics_reader.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "runtime/error.h"

namespace elmo {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kProcessStartTolerance = 2.0;  // seconds
constexpr size_t kWarningsListed = 10;

struct Record {
  int64_t step = 0;
  double time = kNaN, wall_time = kNaN;
};

bool starts_new_segment(const Record& previous, const Record& next) {
  if (next.step < previous.step) return true;
  if (std::isnan(next.time) || std::isnan(previous.time)) return false;
  if (next.time < previous.time) return true;
  if (std::isnan(next.wall_time) || std::isnan(previous.wall_time)) return false;
  const double previous_start = previous.wall_time - previous.time;
  return std::fabs(next.wall_time - next.time - previous_start) > kProcessStartTolerance;
}

bool blank(const std::string& line) {
  for (const char ch : line)
    if (ch != ' ' && ch != '\t' && ch != '\r') return false;
  return true;
}

}  // namespace

const std::vector<MetricPoint>* MetricsHistory::find(const std::string& key) const {
  const auto it = series.find(key);
  return it == series.end() ? nullptr : &it->second;
}

MetricsHistory read_metrics_history(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(str("cannot open metrics file '", path, "': ", std::strerror(errno)));
  MetricsHistory history;
  Record previous;
  double offset = 0.0;       // summed durations of the finished segments
  double segment_end = 0.0;  // the largest time of the current segment
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (blank(line)) continue;
    const nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto step = object.is_object() ? object.find("step") : object.end();
    if (!object.is_object() || step == object.end() || !step->is_number_integer()) {
      if (history.warnings.size() < kWarningsListed)
        history.warnings.push_back(str(path, ":", number,
                                       ": damaged line skipped (not a JSON object with an integer "
                                       "\"step\"",
                                       line.size() > 60 ? "" : str(": ", line), ")"));
      ++history.damaged;
      continue;
    }
    Record record;
    record.step = step->get<int64_t>();
    const auto number_of = [&](const char* key) {
      const auto it = object.find(key);
      return it != object.end() && it->is_number() ? it->get<double>() : kNaN;
    };
    record.time = number_of("time");
    record.wall_time = number_of("wall_time");
    if (history.records == 0) {
      history.segments = 1;
    } else if (starts_new_segment(previous, record)) {
      ++history.segments;
      offset += segment_end;
      segment_end = 0.0;
      for (auto& [key, points] : history.series)
        while (!points.empty() && points.back().step >= record.step) {
          points.pop_back();
          ++history.superseded;
        }
    } else if (std::isnan(record.time)) {
      record.time = previous.time;  // same process: the time of the line before
    }
    if (std::isnan(record.time)) record.time = 0.0;
    segment_end = std::max(segment_end, record.time);
    ++history.records;
    for (const auto& [key, value] : object.items()) {
      if (key == "step" || key == "time" || key == "wall_time") continue;
      if (value.is_null()) {
        ++history.non_finite;
        continue;
      }
      if (!value.is_number()) continue;
      const double v = value.get<double>();
      if (!std::isfinite(v)) {
        ++history.non_finite;
        continue;
      }
      history.series[key].push_back({record.step, offset + record.time, v});
    }
    previous = record;
  }
  if (in.bad()) throw Error(str("cannot read metrics file '", path, "': ", std::strerror(errno)));
  if (history.damaged > static_cast<int64_t>(history.warnings.size()))
    history.warnings.push_back(str(path, ": ", history.damaged - history.warnings.size(),
                                   " more damaged line(s) skipped"));
  return history;
}

}  // namespace elmo
