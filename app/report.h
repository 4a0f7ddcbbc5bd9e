// `elmo_fast report RUN_DIR [RUN_DIR...] --out report.html`, and the report.html every training
// run leaves in its run.dir: one self-contained HTML page (inline CSS and SVG; no script, no
// network, no external font) made from a run folder's files only, so it works on a run that is
// still going, was stopped or failed:
//   metrics.jsonl                    curves (io/metrics_reader.h: damaged lines skipped with a
//                                    warning, resumed runs stitched, null values left out)
//   summary.json                     the summary table and the final per-slice perplexities
//   checkpoints/<latest>/state.json  the configuration ("config")
// The page: the runs and their state, a summary table (side by side for several runs, differing
// rows marked), validation perplexity per slice (app/eval_slices.h), line plots of train loss,
// tokens/s, learning rate, gradient norm, validation perplexity and its slices, each against
// step and against time (seconds of running, resumes stitched), with several runs overlaid
// (colour and dash per run, a legend), the configuration (with several runs: the keys that
// differ, then each in full), and notes on anything skipped. Long series are downsampled for
// drawing (min/max per bucket: app/svg_plot.h), never truncated.
//
// Bad input: a run folder that does not exist is a usage error. A folder with neither metrics
// records nor summary.json has nothing to show: an Error when it is the only run, else it is
// left out with a warning (also listed on the page). A damaged summary.json or state.json is a
// warning; the page is made without it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/metrics_reader.h"

namespace elmo {

struct ReportRun {
  std::string dir, name;  // name: the folder's name, or its path when names repeat
  bool has_metrics = false;
  MetricsHistory metrics;
  nlohmann::json summary;          // null when absent or damaged
  std::string config;              // TOML, "" when not found
  std::vector<std::string> notes;  // warnings about this run's files

  bool has_content() const { return metrics.records > 0 || !summary.is_null(); }
};

// Reads a run folder (see above). UsageError when `dir` is not a folder.
ReportRun load_report_run(const std::string& dir);

// The HTML page of `runs` (at least one); `notes` are listed with the runs' own.
std::string render_report(const std::vector<ReportRun>& runs,
                          const std::vector<std::string>& notes);

// Loads `run_dirs`, names them, leaves out (with a warning in `notes`) those with nothing to
// show, and writes the page to `out` atomically. Error when no run has anything to show.
void write_report(const std::vector<std::string>& run_dirs, const std::string& out);

// The end of a training run: writes run_dir/report.html and logs its path. Never throws (a
// report that cannot be made is a warning: the run itself is over). Does nothing when the folder
// has nothing to show, or, with only_if_stale, when report.html is newer than metrics.jsonl and
// summary.json (a launcher whose rank 0 already wrote it).
void write_run_report(const std::string& run_dir, bool only_if_stale = false);

}  // namespace elmo
