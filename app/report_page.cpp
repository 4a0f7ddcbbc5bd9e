// The HTML page of `elmo_fast report` (see app/report.h): tables from summary.json and the
// config, plots from the metrics history (app/svg_plot.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "app/eval_slices.h"
#include "app/report.h"
#include "app/svg_plot.h"

namespace elmo {

namespace {

constexpr size_t kMaxPlotPoints = 1200;  // per series, after min/max downsampling

const char* const kRunColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                  "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
const char* const kRunDashes[] = {"", "7 4", "2 3", "10 3 2 3", "4 4", "1 4", "12 4", "6 2 2 2"};
// Slice curves: all (black), then head, torso, tail, <UNK>, </S> <S>.
const char* const kSliceColors[] = {"#222222", "#1f77b4", "#2ca02c",
                                    "#d62728", "#9467bd", "#ff7f0e"};

const char* run_color(size_t i) { return kRunColors[i % std::size(kRunColors)]; }
const char* run_dash(size_t i) { return kRunDashes[i % std::size(kRunDashes)]; }

std::string format_value(const nlohmann::json& v) {
  if (v.is_null()) return "-";
  if (v.is_number_integer()) return str(v.get<int64_t>());
  if (v.is_number_float()) {
    char text[48];
    std::snprintf(text, sizeof text, "%.6g", v.get<double>());
    return text;
  }
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

// summary.json as "key" / "valid.ppl" rows (the slices have their own table).
void flatten(const nlohmann::json& j, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  for (const auto& [key, value] : j.items()) {
    if (key == "slices") continue;
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (value.is_object())
      flatten(value, name, out);
    else
      out.emplace_back(name, format_value(value));
  }
}

// The canonical TOML of config_to_toml as "section.key" -> value.
std::map<std::string, std::string> config_values(const std::string& toml) {
  std::map<std::string, std::string> out;
  std::istringstream in(toml);
  std::string section, line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line.substr(1, line.find(']') - 1);
      continue;
    }
    const size_t eq = line.find(" = ");
    if (eq != std::string::npos) out[section + "." + line.substr(0, eq)] = line.substr(eq + 3);
  }
  return out;
}

std::string cell(const std::string& text, const char* tag = "td") {
  return str("<", tag, ">", escape_xml(text), "</", tag, ">");
}

// A table with one row per key and one column per run; rows whose values differ are marked.
std::string comparison_table(
    const std::vector<ReportRun>& runs,
    const std::vector<std::vector<std::pair<std::string, std::string>>>& rows_per_run,
    bool only_differences) {
  std::vector<std::string> keys;
  std::vector<std::map<std::string, std::string>> values(runs.size());
  for (size_t r = 0; r < runs.size(); ++r)
    for (const auto& [key, value] : rows_per_run[r]) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
      values[r][key] = value;
    }
  std::string html = "<table>\n<tr>" + cell("", "th");
  for (const ReportRun& r : runs) html += cell(r.name, "th");
  html += "</tr>\n";
  int shown = 0;
  for (const std::string& key : keys) {
    bool differ = false;
    for (size_t r = 1; r < runs.size(); ++r) differ |= values[r][key] != values[0][key];
    if (only_differences && !differ) continue;
    ++shown;
    html += str("<tr", differ && runs.size() > 1 ? " class=\"diff\"" : "", ">", cell(key));
    for (size_t r = 0; r < runs.size(); ++r) {
      const auto it = values[r].find(key);
      html += cell(it == values[r].end() ? "-" : it->second);
    }
    html += "</tr>\n";
  }
  html += "</table>\n";
  if (only_differences && shown == 0) return "<p>The configurations are identical.</p>\n";
  return html;
}

// The final evaluation's slices (summary.json), else the latest one in the metrics.
struct SliceRow {
  std::string ids, share, fwd, bwd, mean;
};
std::vector<SliceRow> slice_rows(const ReportRun& run, std::string& source) {
  std::vector<SliceRow> rows(kEvalSlices);
  const auto pct = [](double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f%%", 100.0 * v);
    return std::string(text);
  };
  const auto ppl = [](const nlohmann::json& v) {
    if (!v.is_number()) return std::string("-");
    char text[32];
    std::snprintf(text, sizeof text, "%.2f", v.get<double>());
    return std::string(text);
  };
  const nlohmann::json* slices = nullptr;
  if (run.summary.is_object() && run.summary.contains("valid") &&
      run.summary["valid"].is_object() && run.summary["valid"].contains("slices"))
    slices = &run.summary["valid"]["slices"];
  if (slices && slices->is_object()) {
    source = "final validation (summary.json)";
    for (int s = 0; s < kEvalSlices; ++s) {
      const nlohmann::json o = slices->value(slice_name(s), nlohmann::json::object());
      rows[s] = {
          o.value("ids", ""),
          o.contains("share") && o["share"].is_number() ? pct(o["share"].get<double>()) : "-",
          ppl(o.value("ppl_fwd", nlohmann::json())), ppl(o.value("ppl_bwd", nlohmann::json())),
          ppl(o.value("ppl", nlohmann::json()))};
    }
    return rows;
  }
  const std::vector<MetricPoint>* all = run.metrics.find("valid_ppl_head");
  if (!all || all->empty()) return {};
  const int64_t step = all->back().step;
  source = str("latest validation in metrics.jsonl (step ", step, ")");
  for (int s = 0; s < kEvalSlices; ++s) {
    const auto last_at = [&](const std::string& key) -> nlohmann::json {
      const std::vector<MetricPoint>* p = run.metrics.find(key);
      return p && !p->empty() && p->back().step == step ? nlohmann::json(p->back().value)
                                                        : nlohmann::json();
    };
    const nlohmann::json share = last_at(str("valid_share_", slice_name(s)));
    rows[s] = {"", share.is_number() ? pct(share.get<double>()) : "-", "-", "-",
               ppl(last_at(str("valid_ppl_", slice_name(s))))};
  }
  return rows;
}

std::string slices_section(const std::vector<ReportRun>& runs) {
  std::string html =
      "<h2>Validation perplexity by word frequency</h2>\n<p class=\"note\">Targets by frequency "
      "rank in the training vocabulary: head (the most frequent ids), torso, tail, &lt;UNK&gt;, "
      "and each direction's sentence end (&lt;/S&gt; forward, &lt;S&gt; backward); share = "
      "share of all predicted tokens. The token-weighted combination of the slices is the "
      "overall perplexity.</p>\n";
  if (runs.size() == 1) {
    std::string source;
    const std::vector<SliceRow> rows = slice_rows(runs[0], source);
    if (rows.empty()) return html + "<p>No evaluation with slices yet.</p>\n";
    html += str("<p class=\"note\">From the ", escape_xml(source), ".</p>\n<table>\n<tr>",
                cell("slice", "th"), cell("ids", "th"), cell("share", "th"), cell("fwd", "th"),
                cell("bwd", "th"), cell("mean", "th"), "</tr>\n");
    for (int s = 0; s < kEvalSlices; ++s)
      html += str("<tr>", cell(slice_label(s)), cell(rows[s].ids), cell(rows[s].share),
                  cell(rows[s].fwd), cell(rows[s].bwd), cell(rows[s].mean), "</tr>\n");
    return html + "</table>\n";
  }
  std::vector<std::vector<std::pair<std::string, std::string>>> per_run;
  for (const ReportRun& run : runs) {
    std::string source;
    const std::vector<SliceRow> rows = slice_rows(run, source);
    per_run.emplace_back();
    for (int s = 0; s < static_cast<int>(rows.size()); ++s)
      per_run.back().emplace_back(slice_label(s), rows[s].mean + " (" + rows[s].share + ")");
  }
  return html + "<p class=\"note\">Mean perplexity over the directions (share).</p>\n" +
         comparison_table(runs, per_run, false);
}

// One metric of every run against step or time.
struct Figure {
  std::string title, y_label;
  std::vector<std::string> keys;  // one curve per key per run
  bool log_y = false, slices = false;
};

std::string plot(const std::vector<ReportRun>& runs, const Figure& f, bool by_time) {
  PlotSpec spec;
  spec.title = f.title + (by_time ? " vs time" : " vs step");
  spec.x_label = by_time ? "time (running, resumes stitched)" : "step";
  spec.x_format = by_time ? AxisFormat::kDuration : AxisFormat::kNumber;
  spec.y_label = f.y_label;
  spec.log_y = f.log_y;
  const bool several = runs.size() > 1;
  for (size_t r = 0; r < runs.size(); ++r) {
    for (size_t k = 0; k < f.keys.size(); ++k) {
      PlotSeries s;
      const std::string part =
          f.slices ? (k == 0 ? "all" : slice_label(static_cast<int>(k - 1))) : std::string();
      s.label = several ? (f.slices ? runs[r].name + " " + part : runs[r].name) : part;
      if (s.label.empty()) s.label = f.keys[k];
      s.color = f.slices ? kSliceColors[k] : run_color(r);
      s.dash = run_dash(r);
      if (const std::vector<MetricPoint>* points = runs[r].metrics.find(f.keys[k])) {
        std::vector<PlotPoint> xy;
        for (const MetricPoint& p : *points)
          xy.push_back({by_time ? p.time : static_cast<double>(p.step), p.value});
        s.points = downsample_min_max(xy, kMaxPlotPoints);
      }
      spec.series.push_back(std::move(s));
    }
    // Every plot of a run spans the run's whole step (time) range.
    if (const std::vector<MetricPoint>* loss = runs[r].metrics.find("loss"))
      if (!loss->empty())
        spec.x_hi = std::max(spec.x_hi,
                             by_time ? loss->back().time : static_cast<double>(loss->back().step));
  }
  if (f.slices)
    for (size_t k = 0; k < f.keys.size(); ++k)
      spec.legend.push_back(
          {k == 0 ? "all" : slice_label(static_cast<int>(k - 1)), kSliceColors[k], ""});
  if (several)
    for (size_t r = 0; r < runs.size(); ++r)
      spec.legend.push_back({runs[r].name, f.slices ? "#555555" : run_color(r), run_dash(r)});
  return svg_plot(spec);
}

std::string figures_section(const std::vector<ReportRun>& runs, const std::string& heading,
                            const std::vector<Figure>& figures) {
  std::string html = "<h2>" + escape_xml(heading) + "</h2>\n";
  for (const Figure& f : figures)
    html += str("<div class=\"pair\">\n", plot(runs, f, false), plot(runs, f, true), "</div>\n");
  return html;
}

std::string runs_section(const std::vector<ReportRun>& runs) {
  std::string html = "<ul class=\"runs\">\n";
  for (size_t r = 0; r < runs.size(); ++r) {
    const ReportRun& run = runs[r];
    std::string state;
    const std::vector<MetricPoint>* loss = run.metrics.find("loss");
    const std::string last = loss && !loss->empty() ? str("step ", loss->back().step) : "";
    if (run.summary.is_object())
      state = str("finished: ", format_value(run.summary.value("steps", nlohmann::json())),
                  " steps (summary.json)");
    else
      state = str("no summary.json: still running, stopped or failed",
                  last.empty() ? "" : "; metrics up to " + last);
    if (run.metrics.segments > 1) state += str("; resumed ", run.metrics.segments - 1, " time(s)");
    html += str("<li><span class=\"swatch\" style=\"border-top: 3px ", r == 0 ? "solid" : "dashed",
                " ", run_color(r), "\"></span><b>", escape_xml(run.name), "</b> <code>",
                escape_xml(run.dir), "</code>: ", escape_xml(state), "</li>\n");
  }
  return html + "</ul>\n";
}

std::string config_section(const std::vector<ReportRun>& runs) {
  std::string html = "<h2>Configuration</h2>\n";
  if (runs.size() > 1) {
    std::vector<std::vector<std::pair<std::string, std::string>>> per_run;
    for (const ReportRun& run : runs) {
      per_run.emplace_back();
      for (const auto& kv : config_values(run.config)) per_run.back().push_back(kv);
    }
    html +=
        "<p class=\"note\">Keys whose values differ:</p>\n" + comparison_table(runs, per_run, true);
  }
  for (const ReportRun& run : runs) {
    const std::string body =
        run.config.empty() ? "(no checkpoint with a saved configuration yet)" : run.config;
    html += runs.size() > 1 ? str("<details><summary>", escape_xml(run.name), "</summary><pre>",
                                  escape_xml(body), "</pre></details>\n")
                            : str("<pre>", escape_xml(body), "</pre>\n");
  }
  return html;
}

constexpr const char* kStyle = R"(<style>
body { font-family: sans-serif; margin: 20px 24px; color: #222; font-size: 14px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: right; }
th { background: #f3f3f3; } td:first-child { text-align: left; }
tr.diff td { background: #fff4cc; }
.pair { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 10px; }
.pair svg { border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 8px; font-size: 12px; max-height: 420px; overflow: auto; }
.note { color: #555; font-size: 13px; } ul.runs { list-style: none; padding-left: 0; }
.swatch { display: inline-block; width: 26px; margin-right: 8px; vertical-align: middle; }
</style>
)";

}  // namespace

std::string render_report(const std::vector<ReportRun>& runs,
                          const std::vector<std::string>& notes) {
  std::string names;
  for (const ReportRun& r : runs) names += (names.empty() ? "" : ", ") + r.name;
  std::string html = str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
                         "<title>elmo_fast report: ", escape_xml(names), "</title>\n", kStyle,
                         "</head>\n<body>\n<h1>elmo_fast report</h1>\n", runs_section(runs));

  std::vector<std::vector<std::pair<std::string, std::string>>> summaries;
  for (const ReportRun& run : runs) {
    summaries.emplace_back();
    if (run.summary.is_object()) flatten(run.summary, "", summaries.back());
  }
  html += "<h2>Summary</h2>\n";
  bool any_summary = false;
  for (const ReportRun& run : runs) any_summary |= run.summary.is_object();
  html += any_summary ? comparison_table(runs, summaries, false)
                      : "<p>No summary.json yet (written when a run finishes).</p>\n";
  html += slices_section(runs);

  std::vector<std::string> slice_keys = {"valid_ppl"};
  for (int s = 0; s < kEvalSlices; ++s) slice_keys.push_back(str("valid_ppl_", slice_name(s)));
  html += figures_section(runs, "Training",
                          {{"Training loss", "loss (mean NLL per token)", {"loss"}},
                           {"Throughput", "tokens/s", {"tokens_per_s"}},
                           {"Learning rate", "learning rate", {"lr"}},
                           {"Gradient norm", "gradient norm", {"grad_norm"}}});
  html +=
      figures_section(runs, "Validation",
                      {{"Validation perplexity", "perplexity", {"valid_ppl"}, true},
                       {"Validation perplexity by slice", "perplexity", slice_keys, true, true}});
  html += config_section(runs);

  std::vector<std::string> all_notes = notes;
  for (const ReportRun& run : runs) {
    for (const std::string& n : run.notes) all_notes.push_back(n);
    const MetricsHistory& m = run.metrics;
    if (m.superseded > 0)
      all_notes.push_back(str(run.name, ": ", m.superseded, " point(s) logged before a resume ",
                              "were replaced by the resumed process's"));
    if (m.non_finite > 0)
      all_notes.push_back(str(run.name, ": ", m.non_finite, " null value(s) (an empty slice's ",
                              "perplexity, or a non-finite value) left out of the plots"));
  }
  if (!all_notes.empty()) {
    html += "<h2>Notes</h2>\n<ul>\n";
    for (const std::string& n : all_notes) html += "<li>" + escape_xml(n) + "</li>\n";
    html += "</ul>\n";
  }
  html +=
      "<p class=\"note\">Made by <code>elmo_fast report</code> from metrics.jsonl, "
      "summary.json and the latest checkpoint's state.json.</p>\n</body>\n</html>\n";
  return html;
}

}  // namespace elmo
