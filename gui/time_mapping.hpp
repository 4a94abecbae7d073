// The timeline's time-to-pixel mapping: a plain value type, so that zoom, pan and fit arithmetic
// is tested without a display. Times in seconds, x in pixels from the left edge of the time area.
#pragma once
#include <algorithm>
#include <cmath>

namespace ditwin::gui {

class TimeMapping {
 public:
  // Shortest span the view zooms into: far below any op a trace records (its unit is 1 us).
  static constexpr double min_span_s = 1e-9;

  TimeMapping() = default;
  TimeMapping(double start_s, double end_s, double width_px)
      : start_s_(start_s), span_s_(std::max(end_s - start_s, min_span_s)), width_px_(std::max(width_px, 1.0)) {}

  double start_s() const { return start_s_; }
  double end_s() const { return start_s_ + span_s_; }
  double span_s() const { return span_s_; }
  double width_px() const { return width_px_; }
  double seconds_per_px() const { return span_s_ / width_px_; }

  double x_of(double t_s) const { return (t_s - start_s_) / span_s_ * width_px_; }
  double t_of(double x_px) const { return start_s_ + x_px / width_px_ * span_s_; }

  // Zooms by `factor` (> 1 zooms in) and keeps the time under `x_px` where it is on screen.
  TimeMapping zoomed(double factor, double x_px) const {
    if (!(factor > 0) || !std::isfinite(factor)) return *this;
    double anchor = t_of(x_px);
    double span = std::max(span_s_ / factor, min_span_s);
    TimeMapping m = *this;
    m.span_s_ = span;
    m.start_s_ = anchor - x_px / width_px_ * span;
    return m;
  }
  // Moves the content `dx_px` pixels to the right (as dragging it does).
  TimeMapping panned(double dx_px) const {
    TimeMapping m = *this;
    m.start_s_ -= dx_px * seconds_per_px();
    return m;
  }
  // Same time range over a new width (a resized window keeps what it showed).
  TimeMapping resized(double width_px) const { return TimeMapping(start_s_, end_s(), width_px); }

  // The view of [lo, hi] with a small margin on each side.
  static TimeMapping fit(double lo_s, double hi_s, double width_px) {
    double margin = margin_of(lo_s, hi_s);
    return TimeMapping(lo_s - margin, hi_s + margin, width_px);
  }
  // Keeps the view on the data: no wider than `fit`, and never scrolled past either end.
  TimeMapping clamped(double lo_s, double hi_s) const {
    double margin = margin_of(lo_s, hi_s);
    double full = std::max(hi_s - lo_s, min_span_s) + 2 * margin;
    TimeMapping m = *this;
    m.span_s_ = std::clamp(span_s_, min_span_s, full);
    m.start_s_ = std::clamp(start_s_, lo_s - margin, hi_s + margin - m.span_s_);
    return m;
  }

  bool operator==(const TimeMapping&) const = default;

 private:
  static double margin_of(double lo_s, double hi_s) { return 0.01 * std::max(hi_s - lo_s, min_span_s); }
  double start_s_ = 0;
  double span_s_ = 1;
  double width_px_ = 1;
};

}  // namespace ditwin::gui
