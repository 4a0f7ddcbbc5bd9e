// Line plots as standalone inline SVG (no script, no external font or file): axes with "nice"
// ticks, light grid, one polyline per series (with point markers when a series has few points,
// so a single evaluation still shows), and a legend under the plot area.
//
// The <svg> element carries what a test needs without a browser: data-x-min, data-x-max,
// data-y-min, data-y-max (the axis ranges, always finite) and data-y-scale ("linear" | "log");
// every series is a <g class="series" data-series="LABEL" data-points="N">. Points whose x or y
// is not finite are left out; a plot without any point says "no data".
// What it is not: a charting library (one plot type, no interaction).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace elmo {

struct PlotPoint {
  double x = 0.0, y = 0.0;
};

struct PlotSeries {
  std::string label;              // legend text and data-series
  std::string color;              // CSS colour
  std::string dash;               // stroke-dasharray ("" = solid)
  std::vector<PlotPoint> points;  // x ascending
};

struct LegendEntry {
  std::string label, color, dash;
};

enum class AxisFormat { kNumber, kDuration };  // kDuration: seconds shown as "30s", "1h05m"

struct PlotSpec {
  std::string title, x_label, y_label;
  AxisFormat x_format = AxisFormat::kNumber;
  bool log_y = false;  // logarithmic y when every y > 0 and they span more than a factor 4
  double x_lo = 0.0, x_hi = 0.0;  // the x axis covers at least this range when x_lo < x_hi
  std::vector<PlotSeries> series;
  std::vector<LegendEntry> legend;  // drawn under the plot; empty = none
  int width = 640, height = 300;    // of the plot without the legend
};

std::string svg_plot(const PlotSpec& spec);

// At most about max_points points of a long series, for drawing: the points are cut into
// max_points / 2 buckets of consecutive points and each bucket keeps its lowest and highest y
// (in x order), so spikes and dips survive; the first and last points are always kept. Shorter
// series are returned unchanged. max_points >= 4.
std::vector<PlotPoint> downsample_min_max(const std::vector<PlotPoint>& points, size_t max_points);

// Axis ticks: multiples of 1, 2 or 5 x 10^k (or, for kDuration, of 1, 2, 5, 10, 15, 30 s/min,
// 1, 2, 3, 6, 12 h, days) covering [lo, hi] with about `target` ticks; the range is widened to
// the outer ticks (svg_plot does so for y; its x axis ends with the data). lo <= hi, finite.
struct Ticks {
  double lo = 0.0, hi = 1.0;
  std::vector<double> values;
};
Ticks nice_ticks(double lo, double hi, int target, AxisFormat format = AxisFormat::kNumber);

// "1.5k", "20", "0.003", "2e-05"; `step` (the tick spacing) decides the decimals.
std::string format_tick(double value, double step);

// Escapes & < > " ' for HTML and XML text and attributes.
std::string escape_xml(const std::string& text);

}  // namespace elmo
