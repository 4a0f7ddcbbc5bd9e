// svg_plot and its helpers: min/max downsampling keeps extremes, ends and order within the
// budget; ticks are round numbers (and round durations) covering the data; tick labels; the
// SVG carries its axis ranges (finite), one group per series, markers for short series, a log
// axis only when the data span it, and escapes labels.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <regex>

#include "app/svg_plot.h"

namespace elmo {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

double attribute(const std::string& svg, const std::string& name) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(svg, m, std::regex(name + "=\"([^\"]*)\""))) << name;
  return m.empty() ? NAN : std::stod(m[1]);
}

TEST(Downsample, KeepsExtremesEndsAndOrderWithinTheBudget) {
  std::vector<PlotPoint> points;
  for (int i = 0; i < 100000; ++i)
    points.push_back({static_cast<double>(i), std::sin(i * 0.001) + (i % 7) * 0.01});
  points[31337].y = 50.0;  // a spike and a dip somewhere in the middle
  points[77777].y = -50.0;
  const std::vector<PlotPoint> out = downsample_min_max(points, 1000);
  EXPECT_LE(out.size(), 1000u);
  EXPECT_GE(out.size(), 900u);
  EXPECT_EQ(out.front().x, 0.0);
  EXPECT_EQ(out.back().x, 99999.0);
  EXPECT_TRUE(std::is_sorted(out.begin(), out.end(),
                             [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; }));
  const auto has = [&](double x, double y) {
    return std::any_of(out.begin(), out.end(),
                       [&](const PlotPoint& p) { return p.x == x && p.y == y; });
  };
  EXPECT_TRUE(has(31337, 50.0));
  EXPECT_TRUE(has(77777, -50.0));
  // Every bucket's own min and max survive: the range of any window of the output equals the
  // range of the input points it stands for (checked on the whole series).
  double in_min = INFINITY, in_max = -INFINITY, out_min = INFINITY, out_max = -INFINITY;
  for (const PlotPoint& p : points) in_min = std::min(in_min, p.y), in_max = std::max(in_max, p.y);
  for (const PlotPoint& p : out) out_min = std::min(out_min, p.y), out_max = std::max(out_max, p.y);
  EXPECT_EQ(in_min, out_min);
  EXPECT_EQ(in_max, out_max);
  // Short series are returned as they are.
  const std::vector<PlotPoint> few = {{0, 1}, {1, 2}, {2, 3}};
  EXPECT_EQ(downsample_min_max(few, 4).size(), 3u);
  EXPECT_THROW(downsample_min_max(few, 3), std::exception);
}

TEST(Ticks, RoundNumbersCoveringTheRange) {
  const Ticks t = nice_ticks(50, 1988, 6);
  EXPECT_EQ(t.lo, 0.0);
  EXPECT_EQ(t.hi, 2000.0);
  EXPECT_EQ(t.values.size(), 5u);  // 0, 500, ..., 2000
  EXPECT_EQ(t.values[1], 500.0);
  const Ticks small = nice_ticks(91.2, 96.9, 5);
  EXPECT_LE(small.lo, 91.2);
  EXPECT_GE(small.hi, 96.9);
  EXPECT_EQ(small.values[1] - small.values[0], 1.0);
  const Ticks flat = nice_ticks(0.6, 0.6, 5);  // a constant (learning rate): a visible range
  EXPECT_LT(flat.lo, 0.6);
  EXPECT_GT(flat.hi, 0.6);
  const Ticks zero = nice_ticks(0, 0, 5);
  EXPECT_LT(zero.lo, zero.hi);
  const Ticks minutes = nice_ticks(0, 179, 6, AxisFormat::kDuration);
  EXPECT_EQ(minutes.values[1], 30.0);
  const Ticks hours = nice_ticks(0, 5 * 3600, 6, AxisFormat::kDuration);
  EXPECT_EQ(hours.values[1], 3600.0);
  EXPECT_THROW(nice_ticks(NAN, 1, 5), std::exception);
}

TEST(Ticks, LabelsAreShortAndMatchTheSpacing) {
  EXPECT_EQ(format_tick(1500, 500), "1500");
  EXPECT_EQ(format_tick(15000, 5000), "15k");
  EXPECT_EQ(format_tick(12500, 500), "12.5k");
  EXPECT_EQ(format_tick(2e6, 1e6), "2M");
  EXPECT_EQ(format_tick(0.25, 0.05), "0.25");
  EXPECT_EQ(format_tick(1e-17, 0.1), "0");
  EXPECT_EQ(format_tick(2e-6, 1e-6), "2e-06");
  EXPECT_EQ(format_tick(94.0516, 0.0), "94.05");
}

PlotSpec two_series() {
  PlotSpec spec;
  spec.title = "Loss <train> & \"valid\"";
  spec.x_label = "step";
  spec.y_label = "loss";
  PlotSeries a{"run a", "#1f77b4", "", {}};
  for (int i = 0; i < 100; ++i) a.points.push_back({i * 10.0, 5.0 - i * 0.01});
  PlotSeries b{"run b", "#d62728", "7 4", {{0, 6}, {500, 4}}};
  b.points.push_back({600, std::numeric_limits<double>::quiet_NaN()});
  b.points.push_back({std::numeric_limits<double>::infinity(), 1.0});
  spec.series = {a, b};
  spec.legend = {{"run a", "#1f77b4", ""}, {"run b", "#d62728", "7 4"}};
  return spec;
}

TEST(SvgPlot, CarriesRangesSeriesAndLegend) {
  const std::string svg = svg_plot(two_series());
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_THAT(svg, HasSubstr("data-series=\"run a\" data-points=\"100\""));
  EXPECT_THAT(svg, HasSubstr("data-series=\"run b\" data-points=\"2\""));  // NaN, inf left out
  EXPECT_EQ(attribute(svg, "data-x-min"), 0.0);
  EXPECT_EQ(attribute(svg, "data-x-max"), 990.0);  // x ends with the data, ticks inside it
  EXPECT_THAT(svg, HasSubstr(">800</text>"));
  EXPECT_THAT(svg, Not(HasSubstr(">1000</text>")));
  EXPECT_LE(attribute(svg, "data-y-min"), 4.0);
  EXPECT_GE(attribute(svg, "data-y-max"), 6.0);
  EXPECT_THAT(svg, HasSubstr("data-y-scale=\"linear\""));
  EXPECT_THAT(svg, HasSubstr("stroke-dasharray=\"7 4\""));
  EXPECT_THAT(svg, HasSubstr("class=\"legend\""));
  EXPECT_THAT(svg, HasSubstr("Loss &lt;train&gt; &amp; &quot;valid&quot;"));
  EXPECT_THAT(svg, Not(HasSubstr("nan")));
  EXPECT_THAT(svg, Not(HasSubstr("inf")));
  // 100 points: a line, no markers; 2 points: a line with markers.
  EXPECT_THAT(svg, HasSubstr("<circle"));
  const size_t a = svg.find("data-series=\"run a\""), b = svg.find("data-series=\"run b\"");
  EXPECT_EQ(svg.substr(a, b - a).find("<circle"), std::string::npos);
}

TEST(SvgPlot, LogAxisOnlyWhenTheDataSpanIt) {
  PlotSpec spec;
  spec.log_y = true;
  spec.series = {{"ppl", "#000", "", {{0, 2000}, {100, 300}, {200, 95}}}};
  std::string svg = svg_plot(spec);
  EXPECT_THAT(svg, HasSubstr("data-y-scale=\"log\""));
  EXPECT_LE(attribute(svg, "data-y-min"), 95.0);
  EXPECT_GE(attribute(svg, "data-y-max"), 2000.0);
  EXPECT_THAT(svg, HasSubstr(">1000</text>"));
  spec.series[0].points = {{0, 100}, {100, 95}};  // a narrow range: linear
  EXPECT_THAT(svg_plot(spec), HasSubstr("data-y-scale=\"linear\""));
  spec.series[0].points = {{0, 0}, {100, 95}};  // not all positive: linear
  EXPECT_THAT(svg_plot(spec), HasSubstr("data-y-scale=\"linear\""));
}

TEST(SvgPlot, NoDataAndSinglePoints) {
  PlotSpec spec;
  spec.series = {{"valid", "#000", "", {}}};
  std::string svg = svg_plot(spec);
  EXPECT_THAT(svg, HasSubstr(">no data</text>"));
  EXPECT_THAT(svg, HasSubstr("data-points=\"0\""));
  EXPECT_TRUE(std::isfinite(attribute(svg, "data-x-min")));
  EXPECT_TRUE(std::isfinite(attribute(svg, "data-y-max")));
  // One evaluation at the end of the run: a marker, and the x axis spans the hinted run.
  spec.series[0].points = {{1988, 94.05}};
  spec.x_hi = 1988;
  svg = svg_plot(spec);
  EXPECT_THAT(svg, HasSubstr("<circle"));
  EXPECT_EQ(attribute(svg, "data-x-min"), 0.0);
  EXPECT_GE(attribute(svg, "data-x-max"), 1988.0);
  EXPECT_LT(attribute(svg, "data-y-min"), 94.05);
  EXPECT_GT(attribute(svg, "data-y-max"), 94.05);
  // Durations on the x axis.
  spec.x_format = AxisFormat::kDuration;
  spec.series[0].points = {{0, 1}, {150, 2}};
  spec.x_hi = 0;
  svg = svg_plot(spec);
  EXPECT_THAT(svg, HasSubstr(">1m</text>"));
  EXPECT_THAT(svg, HasSubstr(">2m</text>"));
  EXPECT_THAT(svg, HasSubstr(">valid at time 2m30s: 2</title>"));  // the marker's tooltip
}

TEST(SvgPlot, EscapesText) { EXPECT_EQ(escape_xml("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;"); }

}  // namespace
}  // namespace elmo
