#include "app/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "runtime/error.h"

namespace elmo {

namespace {

// Geometry of the plot area inside the SVG (pixels).
constexpr double kLeft = 66, kRight = 18, kTop = 30, kBottom = 44;
constexpr double kLegendRow = 18, kCharWidth = 6.8;
constexpr size_t kMarkersUpTo = 24;  // series with at most this many points get markers

std::string num(double v) {  // SVG coordinates: one decimal
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", v);
  return text;
}

std::string format_duration_tick(double seconds, double step) {
  char text[48];
  if (step < 1.0) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
    return text;
  }
  const long long s = std::llround(seconds);
  if (s < 60) {
    std::snprintf(text, sizeof text, "%llds", s);
  } else if (s < 3600) {
    if (s % 60 == 0)
      std::snprintf(text, sizeof text, "%lldm", s / 60);
    else
      std::snprintf(text, sizeof text, "%lldm%02llds", s / 60, s % 60);
  } else if (s % 3600 == 0) {
    std::snprintf(text, sizeof text, "%lldh", s / 3600);
  } else {
    std::snprintf(text, sizeof text, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  }
  return text;
}

double nice_number_step(double raw) {
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / magnitude;
  return magnitude * (r < 1.5 ? 1.0 : r < 3.0 ? 2.0 : r < 7.0 ? 5.0 : 10.0);
}

double nice_duration_step(double raw) {
  static const double steps[] = {0.1, 0.2, 0.5, 1,    2,    5,    10,    15,    30,    60,   120,
                                 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400};
  for (const double s : steps)
    if (s >= raw) return s;
  return 86400.0 * nice_number_step(raw / 86400.0);
}

// Ticks of a log10 axis over [lo, hi] (exponents): decades, or 1-2-5 / 1..9 multiples when the
// range holds too few decades. Returns the values (not exponents).
std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> out;
  const auto collect = [&](const std::vector<double>& multiples) {
    out.clear();
    for (double k = std::floor(lo); k <= std::ceil(hi); ++k)
      for (const double m : multiples) {
        const double v = m * std::pow(10.0, k);
        const double e = std::log10(v);
        if (e >= lo - 1e-9 && e <= hi + 1e-9) out.push_back(v);
      }
  };
  collect({1});
  if (out.size() > 8) {  // many decades: every other one
    std::vector<double> thinned;
    for (size_t i = 0; i < out.size(); i += 2) thinned.push_back(out[i]);
    out = thinned;
  }
  if (out.size() < 3) collect({1, 2, 5});
  if (out.size() < 3) collect({1, 2, 3, 4, 5, 6, 7, 8, 9});
  return out;
}

struct Scale {
  double lo, hi, pixel_lo, pixel_hi;
  bool log = false;
  double operator()(double v) const {
    const double t = log ? std::log10(v) : v;
    return pixel_lo + (t - lo) / (hi - lo) * (pixel_hi - pixel_lo);
  }
};

std::string text(double x, double y, const std::string& anchor, const std::string& body,
                 const std::string& extra = "") {
  return str("<text x=\"", num(x), "\" y=\"", num(y), "\" text-anchor=\"", anchor, "\"", extra, ">",
             escape_xml(body), "</text>\n");
}

std::string swatch(double x, double y, const std::string& color, const std::string& dash) {
  return str("<line x1=\"", num(x), "\" y1=\"", num(y), "\" x2=\"", num(x + 22), "\" y2=\"", num(y),
             "\" stroke=\"", color, "\" stroke-width=\"2\"",
             dash.empty() ? "" : str(" stroke-dasharray=\"", dash, "\""), "/>\n");
}

// The legend under the plot, entries flowing left to right in rows; returns its height.
double draw_legend(const std::vector<LegendEntry>& legend, double width, double top,
                   std::string& out) {
  if (legend.empty()) return 0.0;
  out += "<g class=\"legend\">\n";
  double x = kLeft, y = top + kLegendRow / 2;
  for (const LegendEntry& e : legend) {
    const double w = 28 + kCharWidth * static_cast<double>(e.label.size()) + 18;
    if (x + w > width - kRight && x > kLeft) x = kLeft, y += kLegendRow;
    out += swatch(x, y, e.color, e.dash);
    out += text(x + 28, y + 4, "start", e.label);
    x += w;
  }
  out += "</g>\n";
  return y + kLegendRow / 2 - top + 4;
}

}  // namespace

std::string escape_xml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

std::string format_tick(double value, double step) {
  char text[48];
  if (!(step > 0) || !std::isfinite(step)) {
    std::snprintf(text, sizeof text, "%.4g", value);
    return text;
  }
  if (std::fabs(value) < step * 1e-6) return "0";
  const auto with_decimals = [&](double v, double s, const char* suffix) {
    const int decimals = std::clamp(static_cast<int>(-std::floor(std::log10(s) + 1e-9)), 0, 6);
    std::snprintf(text, sizeof text, "%.*f%s", decimals, v, suffix);
    return std::string(text);
  };
  if (std::fabs(value) >= 1e6 && step >= 1e5) return with_decimals(value / 1e6, step / 1e6, "M");
  if (std::fabs(value) >= 1e4 && step >= 100) return with_decimals(value / 1e3, step / 1e3, "k");
  if (step < 1e-5) {
    std::snprintf(text, sizeof text, "%.2g", value);
    return text;
  }
  return with_decimals(value, step, "");
}

Ticks nice_ticks(double lo, double hi, int target, AxisFormat format) {
  ELMO_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "nice_ticks: bad range [", lo,
             ", ", hi, "]");
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
    const double pad = lo == 0.0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double step =
      format == AxisFormat::kDuration ? nice_duration_step(raw) : nice_number_step(raw);
  Ticks ticks;
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  ticks.lo = first * step;
  ticks.hi = last * step;
  for (double k = first; k <= last + 0.5; ++k) ticks.values.push_back(k * step);
  return ticks;
}

std::vector<PlotPoint> downsample_min_max(const std::vector<PlotPoint>& points, size_t max_points) {
  ELMO_CHECK(max_points >= 4, "downsample_min_max: max_points ", max_points, " < 4");
  if (points.size() <= max_points) return points;
  const size_t buckets = (max_points - 2) / 2, n = points.size() - 2;  // first, last aside
  std::vector<PlotPoint> out = {points.front()};
  for (size_t b = 0; b < buckets; ++b) {
    const size_t begin = 1 + b * n / buckets, end = 1 + (b + 1) * n / buckets;
    if (begin >= end) continue;
    size_t low = begin, high = begin;
    for (size_t i = begin; i < end; ++i) {
      if (points[i].y < points[low].y) low = i;
      if (points[i].y > points[high].y) high = i;
    }
    out.push_back(points[std::min(low, high)]);
    if (low != high) out.push_back(points[std::max(low, high)]);
  }
  out.push_back(points.back());
  return out;
}

std::string svg_plot(const PlotSpec& spec) {
  const double width = spec.width, height = spec.height;
  const double x0 = kLeft, x1 = width - kRight, y0 = kTop, y1 = height - kBottom;
  // The finite points of every series.
  std::vector<std::vector<PlotPoint>> shown;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const PlotSeries& s : spec.series) {
    std::vector<PlotPoint> kept;
    for (const PlotPoint& p : s.points)
      if (std::isfinite(p.x) && std::isfinite(p.y)) kept.push_back(p);
    for (const PlotPoint& p : kept) {
      xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x);
      ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
    }
    shown.push_back(std::move(kept));
  }
  const bool empty = !(xmin <= xmax);
  if (empty) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (spec.x_lo < spec.x_hi) xmin = std::min(xmin, spec.x_lo), xmax = std::max(xmax, spec.x_hi);
  const bool log_y = spec.log_y && !empty && ymin > 0 && ymax / ymin > 4.0;

  const int x_target = std::max(3, static_cast<int>((x1 - x0) / 95));
  Ticks xt = nice_ticks(xmin, xmax, x_target, spec.x_format);
  if (xmin < xmax) {  // the x axis ends with the data, not at the next round tick
    const double eps = 1e-9 * (xmax - xmin);
    std::vector<double> inside;
    for (const double v : xt.values)
      if (v >= xmin - eps && v <= xmax + eps) inside.push_back(v);
    if (inside.size() >= 2) xt = {xmin, xmax, inside};
  }
  Ticks yt;
  if (log_y) {
    const double lo = std::log10(ymin), hi = std::log10(ymax), pad = 0.04 * (hi - lo);
    yt.lo = lo - pad;
    yt.hi = hi + pad;
    yt.values = log_ticks(yt.lo, yt.hi);
  } else {
    yt = nice_ticks(ymin, ymax, 5);
  }
  const Scale sx{xt.lo, xt.hi, x0, x1};
  const Scale sy{yt.lo, yt.hi, y1, y0, log_y};

  std::string body;
  // Grid, ticks and tick labels.
  const double x_step = xt.values.size() > 1 ? xt.values[1] - xt.values[0] : 1.0;
  const double y_step = yt.values.size() > 1 ? yt.values[1] - yt.values[0] : 1.0;
  body += "<g class=\"grid\" stroke=\"#e4e4e4\" stroke-width=\"1\">\n";
  for (const double v : xt.values)
    body += str("<line x1=\"", num(sx(v)), "\" y1=\"", num(y0), "\" x2=\"", num(sx(v)), "\" y2=\"",
                num(y1), "\"/>\n");
  for (const double v : yt.values)
    body += str("<line x1=\"", num(x0), "\" y1=\"", num(sy(v)), "\" x2=\"", num(x1), "\" y2=\"",
                num(sy(v)), "\"/>\n");
  body += "</g>\n<g class=\"ticks\" fill=\"#444\">\n";
  for (const double v : xt.values)
    body += text(sx(v), y1 + 16, "middle",
                 spec.x_format == AxisFormat::kDuration ? format_duration_tick(v, x_step)
                                                        : format_tick(v, x_step));
  for (const double v : yt.values)
    body += text(x0 - 6, sy(v) + 4, "end", format_tick(v, log_y ? v : y_step));
  body += "</g>\n";
  body += str("<rect x=\"", num(x0), "\" y=\"", num(y0), "\" width=\"", num(x1 - x0),
              "\" height=\"", num(y1 - y0), "\" fill=\"none\" stroke=\"#999\"/>\n");
  // Series.
  const std::string x_name = spec.x_format == AxisFormat::kDuration ? "time" : spec.x_label;
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const PlotSeries& s = spec.series[i];
    const std::vector<PlotPoint>& pts = shown[i];
    body += str("<g class=\"series\" data-series=\"", escape_xml(s.label), "\" data-points=\"",
                pts.size(), "\">\n");
    if (pts.size() > 1) {
      std::string coords;
      for (const PlotPoint& p : pts) coords += num(sx(p.x)) + "," + num(sy(p.y)) + " ";
      coords.pop_back();
      body += str("<polyline fill=\"none\" stroke=\"", s.color, "\" stroke-width=\"1.6\"",
                  s.dash.empty() ? "" : str(" stroke-dasharray=\"", s.dash, "\""),
                  " stroke-linejoin=\"round\" points=\"", coords, "\"/>\n");
    }
    if (pts.size() <= kMarkersUpTo)
      for (const PlotPoint& p : pts) {
        const std::string at = spec.x_format == AxisFormat::kDuration
                                   ? format_duration_tick(p.x, 1.0)
                                   : format_tick(p.x, 1.0);
        body += str("<circle cx=\"", num(sx(p.x)), "\" cy=\"", num(sy(p.y)), "\" r=\"2.8\" fill=\"",
                    s.color, "\"><title>",
                    escape_xml(str(s.label, " at ", x_name, x_name.empty() ? "" : " ", at, ": ",
                                   format_tick(p.y, 0.0))),
                    "</title></circle>\n");
      }
    body += "</g>\n";
  }
  if (empty) body += text((x0 + x1) / 2, (y0 + y1) / 2, "middle", "no data", " fill=\"#888\"");
  // Labels.
  body += text(x0, 18, "start", spec.title, " font-size=\"13\" font-weight=\"bold\"");
  body += text((x0 + x1) / 2, height - 8, "middle", spec.x_label, " fill=\"#444\"");
  body += text(16, (y0 + y1) / 2, "middle", spec.y_label,
               str(" fill=\"#444\" transform=\"rotate(-90 16 ", num((y0 + y1) / 2), ")\""));
  const double legend_height = draw_legend(spec.legend, width, height, body);

  char range[256];
  std::snprintf(range, sizeof range,
                " data-x-min=\"%.9g\" data-x-max=\"%.9g\" data-y-min=\"%.9g\" data-y-max=\"%.9g\"",
                xt.lo, xt.hi, log_y ? std::pow(10.0, yt.lo) : yt.lo,
                log_y ? std::pow(10.0, yt.hi) : yt.hi);
  const double total_height = height + legend_height;
  return str("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", num(width), "\" height=\"",
             num(total_height), "\" viewBox=\"0 0 ", num(width), " ", num(total_height), "\"",
             range, " data-y-scale=\"", log_y ? "log" : "linear", "\" font-family=\"sans-serif\" ",
             "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", body,
             "</svg>\n");
}

}  // namespace elmo
