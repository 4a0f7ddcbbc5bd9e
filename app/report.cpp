// Loading run folders for the report, `elmo_fast report`, and the report at the end of training.
// The page itself is app/report_page.cpp.
#include "app/report.h"

#include <filesystem>
#include <map>

#include "app/commands.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "runtime/log.h"

namespace elmo {

namespace fs = std::filesystem;

namespace {

// A JSON file of the run, or null with a note when it is damaged.
nlohmann::json read_json_file(const std::string& path, std::vector<std::string>& notes) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const std::exception& e) {
    notes.push_back(str(path, ": cannot be read as JSON (", e.what(), "); left out"));
    return nullptr;
  }
}

// The config the run saved with its newest checkpoint.
std::string saved_config(const std::string& dir, std::vector<std::string>& notes) {
  std::optional<std::string> checkpoint;
  try {
    checkpoint = find_latest_checkpoint(dir);
  } catch (const std::exception& e) {
    notes.push_back(str(dir, ": no configuration: ", e.what()));
    return "";
  }
  if (!checkpoint) return "";
  const nlohmann::json state = read_json_file(*checkpoint + "/state.json", notes);
  if (state.is_object() && state.contains("config") && state["config"].is_string())
    return state["config"].get<std::string>();
  return "";
}

fs::file_time_type modified(const std::string& path) {
  std::error_code ec;
  const fs::file_time_type t = fs::last_write_time(path, ec);
  return ec ? fs::file_time_type::min() : t;
}

}  // namespace

ReportRun load_report_run(const std::string& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec))
    throw UsageError(str("report: '", folder, "' is not a folder: give run folders (run.dir)"));
  std::string dir = folder;  // "runs/x/" -> "runs/x" (paths in messages)
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  ReportRun run;
  run.dir = dir;
  run.name = fs::path(dir).lexically_normal().filename().string();
  if (run.name.empty() || run.name == "." || run.name == "..") run.name = dir;
  const std::string metrics = dir + "/metrics.jsonl", summary = dir + "/summary.json";
  if (fs::exists(metrics, ec)) {
    run.metrics = read_metrics_history(metrics);
    run.has_metrics = true;
    for (const std::string& w : run.metrics.warnings) run.notes.push_back(w);
  }
  if (fs::exists(summary, ec)) run.summary = read_json_file(summary, run.notes);
  if (!run.summary.is_null() && !run.summary.is_object()) {
    run.notes.push_back(str(summary, ": not a JSON object; left out"));
    run.summary = nullptr;
  }
  run.config = saved_config(dir, run.notes);
  return run;
}

void write_report(const std::vector<std::string>& run_dirs, const std::string& out) {
  ELMO_REQUIRE(!run_dirs.empty(), "report: give at least one run folder");
  std::vector<ReportRun> runs;
  std::vector<std::string> notes;
  std::map<std::string, int> seen;
  for (const std::string& dir : run_dirs) {
    std::error_code ec;
    std::string key = fs::weakly_canonical(dir, ec).string();
    if (ec) key = dir;
    while (key.size() > 1 && key.back() == '/') key.pop_back();
    if (seen[key]++) {
      notes.push_back(str(dir, ": given twice; shown once"));
      continue;
    }
    ReportRun run = load_report_run(dir);
    if (!run.has_content()) {
      const std::string why =
          str(dir, ": nothing to show: ",
              run.has_metrics ? "metrics.jsonl holds no readable line" : "no metrics.jsonl",
              " and no summary.json (not a run folder, or the run has not logged yet)");
      if (run_dirs.size() == 1) throw Error(str("report: ", why));
      log_warn("report: ", why, "; left out");
      notes.push_back(why + "; left out");
      continue;
    }
    runs.push_back(std::move(run));
  }
  if (runs.empty()) throw Error("report: none of the run folders has anything to show");
  // Names label the curves: the folder name, or the path where two runs share one.
  std::map<std::string, int> names;
  for (const ReportRun& r : runs) ++names[r.name];
  for (ReportRun& r : runs)
    if (names[r.name] > 1) r.name = r.dir;
  for (const ReportRun& r : runs)
    for (const std::string& note : r.notes) log_warn("report: ", note);
  write_file_atomic(out, render_report(runs, notes));
}

void write_run_report(const std::string& run_dir, bool only_if_stale) {
  const std::string out = run_dir + "/report.html";
  try {
    std::error_code ec;
    const bool metrics = fs::exists(run_dir + "/metrics.jsonl", ec);
    const bool summary = fs::exists(run_dir + "/summary.json", ec);
    if (!metrics && !summary) return;
    if (only_if_stale && fs::exists(out, ec)) {
      const auto made = modified(out);
      if (made >= modified(run_dir + "/metrics.jsonl") &&
          made >= modified(run_dir + "/summary.json"))
        return;
    }
    ReportRun run = load_report_run(run_dir);
    if (!run.has_content()) return;
    write_file_atomic(out, render_report({run}, {}));
    log_info("report: ", out);
  } catch (const std::exception& e) {
    log_warn("could not write ", out, ": ", e.what());
  }
}

int report_command(const ReportArgs& args) {
  write_report(args.run_dirs, args.out);
  log_info("report: ", args.out);
  return 0;
}

}  // namespace elmo
