#include "io/metrics.h"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace elmo {

MetricsSink::MetricsSink(const std::string& path) : path_(path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) throw Error(str("cannot create folder '", parent.string(), "': ", ec.message()));
  file_ = std::fopen(path.c_str(), "ab+");
  if (!file_) throw Error(str("cannot open metrics file '", path, "': ", std::strerror(errno)));
  // A crash may have left a torn last line: start ours on a fresh line.
  if (std::fseek(file_, 0, SEEK_END) == 0 && std::ftell(file_) > 0 &&
      std::fseek(file_, -1, SEEK_END) == 0 && std::fgetc(file_) != '\n') {
    std::fseek(file_, 0, SEEK_END);
    std::fputc('\n', file_);
    std::fflush(file_);
  }
}

MetricsSink::~MetricsSink() {
  if (file_) std::fclose(file_);
}

void MetricsSink::write(const nlohmann::ordered_json& object) {
  const std::string line =
      object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  std::fseek(file_, 0, SEEK_END);  // "a" mode appends anyway; required between read and write
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw Error(str("cannot write metrics file '", path_, "': ", std::strerror(errno)));
}

nlohmann::ordered_json metrics_object(int64_t step, const Scalars& scalars) {
  nlohmann::ordered_json ordered;
  ordered["step"] = step;
  constexpr double kExactIntegers = 9007199254740992.0;  // 2^53
  for (const auto& [name, value] : scalars) {
    if (!std::isfinite(value))
      ordered[name] = nullptr;
    else if (value == std::floor(value) && std::fabs(value) < kExactIntegers)
      ordered[name] = static_cast<int64_t>(value);
    else
      ordered[name] = value;
  }
  return ordered;
}

MetricsLogger::MetricsLogger(const std::string& run_dir, bool jsonl, bool tensorboard) {
  if (jsonl) jsonl_ = std::make_unique<MetricsSink>(run_dir + "/metrics.jsonl");
  if (tensorboard) tensorboard_ = std::make_unique<TensorBoardWriter>(run_dir + "/tb");
}

void MetricsLogger::log(int64_t step, const Scalars& scalars) {
  if (jsonl_) {
    nlohmann::ordered_json object = metrics_object(step, scalars);
    const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    object["wall_time"] = std::round(now * 1e3) / 1e3;  // milliseconds are plenty
    jsonl_->write(object);
  }
  if (tensorboard_) tensorboard_->add_scalars(step, scalars);
}

}  // namespace elmo
