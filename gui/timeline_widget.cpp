// Painting and interaction of the timeline widget.
#include "gui/timeline_widget.hpp"

#include <QFontMetrics>
#include <QHelpEvent>
#include <QKeyEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QPolygonF>
#include <QToolTip>
#include <QWheelEvent>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <unordered_map>

namespace ditwin::gui {

namespace {

const QColor background(255, 255, 255);
const QColor stripe(243, 245, 249);
const QColor measured_stripe(250, 245, 236);
const QColor label_background(236, 238, 242);
const QColor ruler_background(226, 229, 235);

std::uint32_t fnv(const std::string& s) {
  std::uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

QColor category_colour(const std::string& c) {
  if (c == "compute") return {76, 114, 176};
  if (c == "collective") return {221, 132, 82};
  if (c == "p2p") return {85, 168, 104};
  if (c == "copy") return {129, 114, 179};
  if (c == "optimizer") return {196, 78, 82};
  if (c == "step") return {190, 190, 190};
  // The run view's categories: what a long run spent its hours on.
  if (c == "productive" || c == "train") return {77, 175, 74};
  if (c == "checkpoint") return {55, 126, 184};
  if (c == "failure") return {228, 26, 28};
  if (c == "restart" || c == "recovery") return {255, 127, 0};
  if (c == "detection") return {152, 78, 163};
  if (c == "lost" || c == "rollback") return {120, 120, 120};
  return QColor::fromHsv(static_cast<int>(fnv(c) % 360), 120, 200);
}

QColor dimmed(const QColor& c) {
  return QColor((c.red() + 3 * background.red()) / 4, (c.green() + 3 * background.green()) / 4,
                (c.blue() + 3 * background.blue()) / 4);
}

QColor mix(const QColor& a, const QColor& b, double f) {
  f = std::clamp(f, 0.0, 1.0);
  return QColor(static_cast<int>(std::lround(a.red() + (b.red() - a.red()) * f)),
                static_cast<int>(std::lround(a.green() + (b.green() - a.green()) * f)),
                static_cast<int>(std::lround(a.blue() + (b.blue() - a.blue()) * f)));
}

QString number_with_unit(double v, const char* unit) {
  const char* prefixes[] = {"", " K", " M", " G", " T", " P", " E"};
  int i = 0;
  while (std::fabs(v) >= 1000 && i < 6) {
    v /= 1000;
    ++i;
  }
  return QString::number(v, 'g', 4) + prefixes[i] + (i == 0 ? " " : "") + unit;
}

// Unit for times around `scale`: its divisor in seconds and its name.
std::pair<double, QString> unit_for(double scale) {
  scale = std::fabs(scale);
  if (scale < 1e-6) return {1e-9, "ns"};
  if (scale < 1e-3) return {1e-6, QString::fromUtf8("\u00b5s")};
  if (scale < 1) return {1e-3, "ms"};
  if (scale < 120) return {1, "s"};
  if (scale < 7200) return {60, "min"};
  return {3600, "h"};
}

}  // namespace

QString format_time(double seconds) {
  auto [unit, name] = unit_for(seconds);
  if (std::fabs(seconds) < 1e-12) return "0";  // below a trace's resolution (1 ns would be 1e-3 us)
  return QString::number(seconds / unit, 'g', 4) + " " + name;
}

TimelineWidget::TimelineWidget(QWidget* parent) : QWidget(parent) {
  setMouseTracking(true);
  setFocusPolicy(Qt::StrongFocus);
  setMinimumSize(label_width + 200, ruler_height + 4 * row_height);
  setAttribute(Qt::WA_OpaquePaintEvent);
}

void TimelineWidget::set_traces(std::shared_ptr<const Trace> primary, std::shared_ptr<const Trace> measured,
                                std::shared_ptr<const Comparison> comparison) {
  primary_ = std::move(primary);
  measured_ = primary_ ? std::move(measured) : nullptr;
  comparison_ = measured_ ? std::move(comparison) : nullptr;
  expanded_.assign((primary_ ? primary_->classes.size() : 0) + (measured_ ? measured_->classes.size() : 0), false);
  scroll_y_ = 0;
  selected_.reset();  // indices into the old traces
  arrows_.clear();
  measure_.reset();
  rebuild_rows();
  set_search(search_);
  fit();
  emit traces_changed();
  emit selection_changed();
}

double TimelineWidget::data_start() const {
  double s = primary_ ? primary_->start_s : 0;
  return measured_ ? std::min(s, measured_->start_s) : s;
}

double TimelineWidget::data_end() const {
  double e = primary_ ? primary_->end_s : 1;
  return measured_ ? std::max(e, measured_->end_s) : e;
}

void TimelineWidget::changed() {
  update();
  emit view_changed();
}

void TimelineWidget::set_mapping(const TimeMapping& m) {
  mapping_ = m.resized(time_width()).clamped(data_start(), data_end());
  changed();
}

void TimelineWidget::fit() {
  mapping_ = TimeMapping::fit(data_start(), data_end(), time_width());
  changed();
}

void TimelineWidget::zoom_to(double t0_s, double t1_s) {
  if (t1_s < t0_s) std::swap(t0_s, t1_s);
  set_mapping(TimeMapping(t0_s, t1_s, time_width()));
}

void TimelineWidget::zoom_by(double factor) { set_mapping(mapping_.zoomed(factor, time_width() / 2)); }

void TimelineWidget::set_scroll_y(int y) {
  int content = content_height();
  int view = std::max(0, height() - ruler_height);
  scroll_y_ = std::clamp(y, 0, std::max(0, content - view));
  changed();
}

void TimelineWidget::set_search(const QString& text) {
  search_ = text.trimmed();
  search_matches_ = 0;
  auto matches = [&](const Trace* t, std::vector<bool>& out) {
    out.clear();
    if (!t) return;
    out.resize(t->names.size());
    for (std::size_t i = 0; i < t->names.size(); ++i)
      out[i] = !search_.isEmpty() && QString::fromStdString(t->names[i]).contains(search_, Qt::CaseInsensitive);
    if (search_.isEmpty()) return;
    for (const auto& p : t->processes)
      for (const auto& tr : p.tracks)
        for (const auto& s : tr.slices) search_matches_ += out[static_cast<std::size_t>(s.name)] ? 1 : 0;
  };
  matches(primary_.get(), primary_match_);
  matches(measured_.get(), measured_match_);
  changed();
}

bool TimelineWidget::name_matches(const Trace& t, const Slice& s) const {
  const auto& m = &t == measured_.get() ? measured_match_ : primary_match_;
  return m[static_cast<std::size_t>(s.name)];
}

bool TimelineWidget::is_expanded(std::size_t c) const { return c < expanded_.size() && expanded_[c]; }

void TimelineWidget::set_expanded(std::size_t c, bool e) {
  if (c >= expanded_.size()) return;
  expanded_[c] = e;
  rebuild_rows();
  set_scroll_y(scroll_y_);
}

void TimelineWidget::set_all_expanded(bool e) {
  std::fill(expanded_.begin(), expanded_.end(), e);
  rebuild_rows();
  set_scroll_y(scroll_y_);
}

void TimelineWidget::rebuild_rows() {
  rows_.clear();
  row_y_.assign(1, 0);
  if (!primary_) return;
  const Trace& pt = *primary_;
  std::unordered_map<long long, std::size_t> measured_of_pid;
  std::vector<bool> measured_shown;
  if (measured_) {
    for (std::size_t i = 0; i < measured_->processes.size(); ++i) measured_of_pid.emplace(measured_->processes[i].pid, i);
    measured_shown.assign(measured_->processes.size(), false);
  }
  auto add_process = [&](bool measured, std::size_t proc, std::size_t cls, std::size_t size) {
    const Process& p = (measured ? *measured_ : pt).processes[proc];
    for (std::size_t k = 0; k < p.tracks.size(); ++k) rows_.push_back(Row{measured, proc, k, cls, size, k == 0});
  };
  for (std::size_t c = 0; c < pt.classes.size(); ++c) {
    const auto& members = pt.classes[c].members;
    std::size_t shown = expanded_[c] ? members.size() : 1;
    std::size_t size = expanded_[c] ? 1 : members.size();
    for (std::size_t m = 0; m < shown; ++m) {
      std::size_t proc = members[m];
      const Process& p = pt.processes[proc];
      auto other = measured_ ? measured_of_pid.find(p.pid) : measured_of_pid.end();
      if (other == measured_of_pid.end()) {
        add_process(false, proc, c, size);
        continue;
      }
      // Pair each predicted lane with the measured lane of the same rank and stream.
      const Process& mp = measured_->processes[other->second];
      measured_shown[other->second] = true;
      std::vector<bool> used(mp.tracks.size(), false);
      for (std::size_t k = 0; k < p.tracks.size(); ++k) {
        rows_.push_back(Row{false, proc, k, c, size, k == 0});
        for (std::size_t j = 0; j < mp.tracks.size(); ++j)
          if (mp.tracks[j].tid == p.tracks[k].tid) {
            rows_.push_back(Row{true, other->second, j, c, size, false});
            used[j] = true;
          }
      }
      for (std::size_t j = 0; j < mp.tracks.size(); ++j)
        if (!used[j]) rows_.push_back(Row{true, other->second, j, c, size, false});
    }
  }
  // Measured ranks with no predicted counterpart, folded by their own classes.
  for (std::size_t c = 0; measured_ && c < measured_->classes.size(); ++c) {
    std::size_t global = pt.classes.size() + c;
    const auto& members = measured_->classes[c].members;
    std::size_t shown = expanded_[global] ? members.size() : 1;
    std::size_t size = expanded_[global] ? 1 : members.size();
    for (std::size_t m = 0; m < shown; ++m)
      if (!measured_shown[members[m]]) add_process(true, members[m], global, size);
  }
  // A lane is as high as its track's sub-rows.
  row_y_.assign(rows_.size() + 1, 0);
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    rows_[r].depth = track_of(rows_[r]).depth;
    row_y_[r + 1] = row_y_[r] + rows_[r].depth * row_height;
  }
}

int TimelineWidget::row_at_y(int y) const {
  if (rows_.empty() || y < ruler_height) return -1;
  int content = y - ruler_height + scroll_y_;
  auto it = std::upper_bound(row_y_.begin(), row_y_.end(), content);
  int r = static_cast<int>(it - row_y_.begin()) - 1;
  return r >= 0 && r < static_cast<int>(rows_.size()) ? r : -1;
}

int TimelineWidget::row_of(long long pid, long long tid, bool measured) const {
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    const Row& row = rows_[r];
    if (row.measured != measured) continue;
    const Trace& t = trace_of(row);
    if (t.processes[row.process].pid == pid && track_of(row).tid == tid) return static_cast<int>(r);
  }
  return -1;
}

int TimelineWidget::x_of(double t_s) const {
  return label_width + static_cast<int>(std::floor(mapping_.x_of(t_s)));
}

QColor TimelineWidget::error_colour(double e) {
  if (std::isnan(e)) return {150, 150, 150};  // no counterpart in the other trace
  const QColor good(102, 189, 99), warm(254, 224, 139), bad(215, 48, 39), cool(145, 191, 219), fast(69, 117, 180);
  double a = std::fabs(e);
  if (a <= 0.05) return good;
  // e = predicted / measured - 1 (model/compare): negative when the run was slower than predicted.
  if (e < 0) return a <= 0.25 ? mix(good, warm, (a - 0.05) / 0.20) : mix(warm, bad, (a - 0.25) / 0.25);
  return a <= 0.25 ? mix(good, cool, (a - 0.05) / 0.20) : mix(cool, fast, (a - 0.25) / 0.25);
}

QColor TimelineWidget::colour_of(const Row& row, std::size_t slice) const {
  const Trace& t = trace_of(row);
  const Slice& s = track_of(row).slices[slice];
  if (comparison_) {
    const auto& errors = row.measured ? comparison_->measured_error : comparison_->predicted_error;
    return error_colour(errors[row.process][row.track][slice]);
  }
  QColor c = category_colour(t.category_of(s));
  // Neighbouring ops of one kind get one of three shades, so their boundaries show.
  return QColor(c.lighter(100 + static_cast<int>(fnv(t.name_of(s)) % 3) * 12).rgb());
}

namespace {

// Binary search over positions [lo, hi): the first for which `f` holds (f false, then true).
template <class F>
std::size_t first_true(std::size_t lo, std::size_t hi, F f) {
  while (lo < hi) {
    std::size_t mid = lo + (hi - lo) / 2;
    if (f(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

// The slices one sub-row shows, as positions 0..size(): all of a track's when it has one
// sub-row, else one sub-row's. Both are sorted by start with a running max of ends.
struct AllSlices {
  const Track& tr;
  std::size_t size() const { return tr.slices.size(); }
  std::size_t index(std::size_t k) const { return k; }
  double start(std::size_t k) const { return tr.slices[k].start_s; }
  double max_end(std::size_t k) const { return tr.max_end_s[k]; }
  std::pair<std::size_t, std::size_t> visible(double t0, double t1) const { return tr.visible(t0, t1); }
};
struct SubRowSlices {
  const Track& tr;
  std::size_t row;
  std::size_t size() const { return tr.sub_rows[row].size(); }
  std::size_t index(std::size_t k) const { return tr.sub_rows[row][k]; }
  double start(std::size_t k) const { return tr.slices[index(k)].start_s; }
  double max_end(std::size_t k) const { return tr.sub_max_end_s[row][k]; }
  std::pair<std::size_t, std::size_t> visible(double t0, double t1) const {
    std::size_t first = first_true(0, size(), [&](std::size_t k) { return max_end(k) >= t0; });
    std::size_t last = first_true(first, size(), [&](std::size_t k) { return start(k) > t1; });
    return {first, last};
  }
};

}  // namespace

template <class Seq>
void TimelineWidget::paint_slices(QPainter& p, const Row& row, const Seq& seq, int top, int h, double width) const {
  const Track& tr = track_of(row);
  const Trace& t = trace_of(row);
  auto [first, last] = seq.visible(mapping_.t_of(-1), mapping_.t_of(width + 1));
  const bool searching = !search_.isEmpty();
  const QFontMetrics fm(p.font());

  // A run of merged sub-pixel slices, in pixel columns [run_x0, run_x1].
  int run_x0 = -1, run_x1 = -1;
  QColor run_colour;
  auto flush = [&] {
    if (run_x0 < 0) return;
    p.fillRect(QRect(label_width + run_x0, top, run_x1 - run_x0 + 1, h), run_colour);
    run_x0 = -1;
  };
  for (std::size_t k = first; k < last; ++k) {
    const std::size_t i = seq.index(k);
    const Slice& s = tr.slices[i];
    double x0 = mapping_.x_of(s.start_s), x1 = mapping_.x_of(s.end_s());
    if (x1 < 0 || x0 > width) continue;
    bool hit = !searching || name_matches(t, s);
    if (s.instant) {  // a marker 5 px wide, so a failure shows at any zoom
      flush();
      QColor c = colour_of(row, i);
      p.fillRect(QRect(label_width + static_cast<int>(std::floor(x0)) - 2, top, 5, h), hit ? c : dimmed(c));
      continue;
    }
    if (x1 - x0 >= 1.0) {
      flush();
      double a = std::max(x0, -2.0), b = std::min(x1, width + 2);
      QColor c = colour_of(row, i);
      QRectF r(label_width + a, top, b - a >= 4 ? b - a - 1 : b - a, h);  // a 1 px gap between wide neighbours
      p.fillRect(r, hit ? c : dimmed(c));
      if (searching && hit) {
        p.setPen(QPen(QColor(20, 20, 20), 2));
        p.drawRect(r.adjusted(1, 1, -1, -1));
      }
      if (r.width() > 24) {
        // Elided with "…" when it does not fit; the tooltip and the details pane have it whole.
        p.setPen(c.lightness() > 150 || !hit ? QColor(20, 20, 20) : QColor(255, 255, 255));
        QRectF text = r.adjusted(6, 0, -2, 0);  // clear of the search outline
        p.drawText(text, Qt::AlignVCenter | Qt::AlignLeft,
                   fm.elidedText(QString::fromStdString(t.name_of(s)), Qt::ElideRight, static_cast<int>(text.width())));
      }
      continue;
    }
    int px0 = std::max(0, static_cast<int>(std::floor(x0)));
    int px1 = std::max(px0, static_cast<int>(std::floor(x1)));
    if (run_x0 >= 0 && px0 <= run_x1 + 1) {
      run_x1 = std::max(run_x1, px1);
    } else {
      flush();
      run_x0 = px0;
      run_x1 = px1;
      QColor c = colour_of(row, i);
      run_colour = hit ? c : dimmed(c);
    }
    // Everything else starting in this pixel column joins the run: one binary search skips it.
    // The last of them may reach past the column: it is then taken next, as usual; if an earlier
    // one reaches further (an enclosing slice), they are walked one by one.
    double next = mapping_.t_of(run_x1 + 1);
    std::size_t j = first_true(k + 1, last, [&](std::size_t q) { return seq.start(q) >= next; });
    if (j > k + 1 && seq.max_end(j - 1) <= next) k = j - 1;
    else if (j > k + 2 && seq.max_end(j - 2) <= next) k = j - 2;
  }
  flush();
}

void TimelineWidget::paint_row(QPainter& p, const Row& row, int y, int right) const {
  const Track& tr = track_of(row);
  const double width = right - label_width;
  if (tr.depth <= 1) {
    paint_slices(p, row, AllSlices{tr}, y + 2, row_height - 4, width);
    return;
  }
  for (int k = 0; k < tr.depth; ++k)
    paint_slices(p, row, SubRowSlices{tr, static_cast<std::size_t>(k)}, y + k * row_height + 2, row_height - 4, width);
}

QString TimelineWidget::stream_label(const Row& row) const {
  QString stream = QString::fromStdString(track_of(row).name);
  if (measured_) stream = (row.measured ? "measured " : "predicted ") + stream;
  return stream;
}

QString TimelineWidget::rank_label(const Row& row) const {
  const Process& proc = trace_of(row).processes[row.process];
  QString name = QString::fromStdString(proc.name);
  const auto& classes = row.measured && row.rank_class >= primary_->classes.size() ? measured_->classes : primary_->classes;
  std::size_t local = row.rank_class >= primary_->classes.size() ? row.rank_class - primary_->classes.size() : row.rank_class;
  bool foldable = local < classes.size() && classes[local].members.size() > 1;
  if (foldable) name = QString(is_expanded(row.rank_class) ? "- " : "+ ") + name;
  if (row.class_size > 1) name += QString::fromUtf8(" \u00d7") + QString::number(row.class_size);
  return name;
}

void TimelineWidget::paint_labels(QPainter& p, int first, int last, int height) const {
  p.fillRect(QRect(0, ruler_height, label_width, height - ruler_height), label_background);
  QFont bold = p.font();
  bold.setBold(true);
  const QFont normal = p.font();
  for (int r = first; r < last; ++r) {
    const Row& row = rows_[static_cast<std::size_t>(r)];
    int y = row_top(r);
    QRect box(6, y, label_width - 12, row_height);
    // Beside a rank label the stream keeps at most half the box, the rank label the rest. Both elided
    // with "…" when too long (the tooltip over the label has them whole).
    p.setFont(normal);
    QString stream = p.fontMetrics().elidedText(stream_label(row), Qt::ElideRight, row.first_of_process ? box.width() / 2 : box.width());
    int stream_width = p.fontMetrics().horizontalAdvance(stream);
    p.setPen(QColor(90, 90, 90));
    p.drawText(box, Qt::AlignVCenter | Qt::AlignRight, stream);
    if (row.first_of_process) {
      p.setFont(bold);
      p.setPen(QColor(20, 20, 20));
      int room = std::max(0, box.width() - stream_width - 8);
      p.drawText(QRect(box.x(), box.y(), room, box.height()), Qt::AlignVCenter | Qt::AlignLeft,
                 p.fontMetrics().elidedText(rank_label(row), Qt::ElideRight, room));
    }
  }
  p.setFont(normal);
  p.setPen(QColor(180, 183, 190));
  p.drawLine(label_width - 1, ruler_height, label_width - 1, height);
}

void TimelineWidget::paint_ruler(QPainter& p, int width) const {
  p.fillRect(QRect(0, 0, width, ruler_height), ruler_background);
  // A tick every ~110 px, at 1, 2 or 5 times a power of ten of the unit shown (so hours tick at
  // 100 h, not at 500,000 s).
  double raw = mapping_.seconds_per_px() * 110;
  auto [unit, unit_name] = unit_for(raw);
  double decade = std::pow(10.0, std::floor(std::log10(raw / unit)));
  double step = unit * decade * (raw / unit / decade <= 2 ? 2 : raw / unit / decade <= 5 ? 5 : 10);
  int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step / unit) + 1e-9)));
  p.setPen(QColor(60, 60, 60));
  double t = std::ceil(mapping_.t_of(0) / step) * step;
  for (int n = 0; t <= mapping_.t_of(width - label_width) && n < 1000; t += step, ++n) {
    int x = x_of(t);
    p.drawLine(x, ruler_height - 8, x, ruler_height - 1);
    double v = t / unit;
    if (std::fabs(v) < 1e-9) v = 0;
    p.drawText(QRect(x + 3, 2, 120, ruler_height - 10), Qt::AlignLeft | Qt::AlignVCenter,
               QString::number(v, 'f', decimals) + " " + unit_name);
  }
  // The top-left corner: what is shown, or in compare mode the error legend.
  p.fillRect(QRect(0, 0, label_width, ruler_height), label_background);
  if (comparison_) {
    QRect bar(8, 4, label_width - 16, 10);
    for (int x = 0; x < bar.width(); ++x)
      p.fillRect(QRect(bar.x() + x, bar.y(), 1, bar.height()), error_colour(0.6 - 1.2 * x / (bar.width() - 1)));
    QFont small = p.font();
    small.setPointSizeF(small.pointSizeF() * 0.85);
    QFont keep = p.font();
    p.setFont(small);
    p.setPen(QColor(40, 40, 40));
    QRect under(bar.x(), bar.bottom() + 1, bar.width(), ruler_height - bar.bottom() - 2);
    p.drawText(under, Qt::AlignLeft | Qt::AlignVCenter, "faster");
    p.drawText(under, Qt::AlignHCenter | Qt::AlignVCenter, "measured vs predicted");
    p.drawText(under, Qt::AlignRight | Qt::AlignVCenter, "slower");
    p.setFont(keep);
  } else if (primary_) {
    p.setPen(QColor(20, 20, 20));
    QString what = QString::fromStdString(primary_->plan.empty() ? primary_->origin : primary_->plan);
    if (!primary_->source.empty()) what += " (" + QString::fromStdString(primary_->source) + ")";
    p.drawText(QRect(6, 0, label_width - 12, ruler_height), Qt::AlignVCenter | Qt::AlignLeft,
               p.fontMetrics().elidedText(what, Qt::ElideMiddle, label_width - 12));
  }
  p.setPen(QColor(170, 173, 180));
  p.drawLine(0, ruler_height - 1, width, ruler_height - 1);
}

void TimelineWidget::paint(QPainter& p, QSize size) const {
  p.fillRect(QRect(QPoint(0, 0), size), background);
  if (!primary_) {
    p.setPen(QColor(90, 90, 90));
    p.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter, "Open a trace (File > Open) to see its timeline");
    return;
  }
  int first = 0, last = 0;
  if (!rows_.empty()) {
    first = std::max(0, static_cast<int>(std::upper_bound(row_y_.begin(), row_y_.end(), scroll_y_) - row_y_.begin()) - 1);
    int bottom = scroll_y_ + size.height() - ruler_height;
    last = std::min(static_cast<int>(rows_.size()),
                    static_cast<int>(std::lower_bound(row_y_.begin(), row_y_.end(), bottom) - row_y_.begin()));
  }
  p.save();
  p.setClipRect(QRect(label_width, ruler_height, size.width() - label_width, size.height() - ruler_height));
  // Stripes per rank, a tint on measured lanes, then the time grid, then the slices.
  std::size_t stripe_index = 0;
  for (int r = 0; r < last; ++r) {
    const Row& row = rows_[static_cast<std::size_t>(r)];
    if (row.first_of_process && r > 0) ++stripe_index;
    if (r < first) continue;
    QColor c = row.measured ? measured_stripe : (stripe_index % 2 ? stripe : background);
    p.fillRect(QRect(label_width, row_top(r), size.width() - label_width, row_pixels(r)), c);
  }
  for (int r = first; r < last; ++r) paint_row(p, rows_[static_cast<std::size_t>(r)], row_top(r), size.width());
  paint_selection(p, size);
  p.restore();
  paint_labels(p, first, last, size.height());
  paint_ruler(p, size.width());
  paint_measure(p, size);
  if (drag_ == Drag::box) {
    QRect band = QRect(drag_from_, drag_to_).normalized();
    band.setTop(ruler_height);
    band.setBottom(size.height());
    p.fillRect(band, QColor(66, 133, 244, 50));
    p.setPen(QColor(66, 133, 244));
    p.drawRect(band.adjusted(0, 0, -1, -1));
  }
}

void TimelineWidget::paintEvent(QPaintEvent*) {
  QPainter p(this);
  paint(p, size());
}

void TimelineWidget::resizeEvent(QResizeEvent*) {
  mapping_ = mapping_.resized(time_width());
  set_scroll_y(scroll_y_);
}

std::optional<TimelineWidget::Hit> TimelineWidget::hit_at(QPoint pos) const {
  if (!primary_ || pos.x() < label_width || pos.y() < ruler_height) return std::nullopt;
  int r = row_at_y(pos.y());
  if (r < 0) return std::nullopt;
  const Row& row = rows_[static_cast<std::size_t>(r)];
  const Track& tr = track_of(row);
  const int sub = std::clamp((pos.y() - row_top(r)) / row_height, 0, tr.depth - 1);
  double t = mapping_.t_of(pos.x() - label_width + 0.5);
  double tolerance = 2 * mapping_.seconds_per_px();
  std::optional<std::size_t> best;
  double best_score = INFINITY;
  auto search = [&](const auto& seq) {
    auto [first, last] = seq.visible(t - tolerance, t + tolerance);
    for (std::size_t k = first; k < last; ++k) {
      const std::size_t i = seq.index(k);
      const Slice& s = tr.slices[i];
      if (s.end_s() < t - tolerance) continue;
      // Inside beats near; among those inside, the shortest (innermost) wins.
      double outside = s.start_s > t ? s.start_s - t : t > s.end_s() ? t - s.end_s() : 0;
      double score = outside > 0 ? 1e30 + outside : s.duration_s;
      if (score < best_score) {
        best_score = score;
        best = i;
      }
    }
  };
  if (tr.depth <= 1) search(AllSlices{tr});
  else search(SubRowSlices{tr, static_cast<std::size_t>(sub)});
  if (!best) return std::nullopt;
  return Hit{r, row.measured, row.process, row.track, *best};
}

QString TimelineWidget::tooltip_at(QPoint pos) const {
  if (primary_ && pos.x() < label_width && pos.y() >= ruler_height) {  // a lane's label, whole
    int r = row_at_y(pos.y());
    if (r < 0) return {};
    const Row& row = rows_[static_cast<std::size_t>(r)];
    return "<b>" + rank_label(row).toHtmlEscaped() + "</b> &middot; " + stream_label(row).toHtmlEscaped();
  }
  auto hit = hit_at(pos);
  if (!hit) return {};
  const Row& row = rows_[static_cast<std::size_t>(hit->row)];
  const Trace& t = trace_of(row);
  const Process& proc = t.processes[hit->process];
  const Track& tr = proc.tracks[hit->track];
  const Slice& s = tr.slices[hit->slice];
  QString html = "<b>" + QString::fromStdString(t.name_of(s)).toHtmlEscaped() + "</b><br>";
  html += QString::fromStdString(proc.name).toHtmlEscaped() + " &middot; " + QString::fromStdString(tr.name).toHtmlEscaped();
  if (!t.category_of(s).empty()) html += " &middot; " + QString::fromStdString(t.category_of(s)).toHtmlEscaped();
  if (row.class_size > 1) html += QString("<br><i>one of %1 identical ranks</i>").arg(row.class_size);
  html += "<br>start: " + format_time(s.start_s) + "<br>duration: " + format_time(s.duration_s);
  if (s.flops > 0) html += "<br>FLOPs: " + number_with_unit(s.flops, "FLOP");
  if (s.bytes > 0) html += "<br>bytes: " + number_with_unit(s.bytes, "B");
  if (s.duration_s > 0 && s.flops > 0) html += "<br>achieved: " + QString::number(s.flops / s.duration_s / 1e12, 'f', 1) + " TFLOP/s";
  if (s.duration_s > 0 && s.bytes > 0) html += "<br>achieved: " + QString::number(s.bytes / s.duration_s / 1e9, 'f', 1) + " GB/s";
  if (comparison_) {
    float e = (row.measured ? comparison_->measured_error : comparison_->predicted_error)[hit->process][hit->track][hit->slice];
    html += std::isnan(e) ? QString("<br>no counterpart in the other trace")
                          : QString("<br>error (predicted / measured - 1): %1%2%").arg(e >= 0 ? "+" : "").arg(100.0 * e, 0, 'f', 1);
  }
  return html;
}

void TimelineWidget::wheelEvent(QWheelEvent* e) {
  double dy = e->angleDelta().y();
  if (dy == 0) dy = e->angleDelta().x();
  if (e->modifiers() & Qt::ShiftModifier) {
    set_scroll_y(scroll_y_ - static_cast<int>(dy / 120 * 3 * row_height));
  } else {
    // One notch (120) zooms by sqrt(2) about the time under the cursor.
    set_mapping(mapping_.zoomed(std::pow(2.0, dy / 240.0), e->position().x() - label_width));
  }
  e->accept();
}

void TimelineWidget::mousePressEvent(QMouseEvent* e) {
  QPoint pos = e->position().toPoint();
  if (e->button() == Qt::LeftButton && pos.x() < label_width && pos.y() >= ruler_height) {
    int r = row_at_y(pos.y());
    if (r >= 0) {
      std::size_t c = rows_[static_cast<std::size_t>(r)].rank_class;
      set_expanded(c, !is_expanded(c));
    }
    return;
  }
  if (e->button() == Qt::LeftButton && (e->modifiers() & Qt::ControlModifier) && pos.x() >= label_width) {
    drag_ = Drag::measure;  // Ctrl+drag: measure a time range
  } else if (e->button() == Qt::RightButton || (e->button() == Qt::LeftButton && (e->modifiers() & Qt::ShiftModifier))) {
    drag_ = Drag::box;
  } else if (e->button() == Qt::LeftButton) {
    drag_ = Drag::pan;
    setCursor(Qt::ClosedHandCursor);
  } else {
    return;
  }
  drag_from_ = drag_to_ = pos;
  drag_mapping_ = mapping_;
  drag_scroll_ = scroll_y_;
}

void TimelineWidget::mouseMoveEvent(QMouseEvent* e) {
  QPoint pos = e->position().toPoint();
  if (drag_ == Drag::pan) {
    set_mapping(drag_mapping_.panned(pos.x() - drag_from_.x()));
    set_scroll_y(drag_scroll_ - (pos.y() - drag_from_.y()));
  } else if (drag_ == Drag::box) {
    drag_to_ = pos;
    update();
  } else if (drag_ == Drag::measure) {
    drag_to_ = pos;
    if (std::abs(drag_to_.x() - drag_from_.x()) >= 2)
      set_measure(mapping_.t_of(drag_from_.x() - label_width), mapping_.t_of(drag_to_.x() - label_width));
  }
}

void TimelineWidget::mouseReleaseEvent(QMouseEvent* e) {
  if (drag_ == Drag::box) {
    drag_to_ = e->position().toPoint();
    int a = std::min(drag_from_.x(), drag_to_.x()) - label_width;
    int b = std::max(drag_from_.x(), drag_to_.x()) - label_width;
    drag_ = Drag::none;
    if (b - a >= 3) zoom_to(mapping_.t_of(a), mapping_.t_of(b));
    else update();
  } else if (drag_ == Drag::measure) {
    drag_to_ = e->position().toPoint();
    if (std::abs(drag_to_.x() - drag_from_.x()) >= 2)
      set_measure(mapping_.t_of(drag_from_.x() - label_width), mapping_.t_of(drag_to_.x() - label_width));
    else
      clear_measure();
  } else if (drag_ == Drag::pan) {
    // A press and release in place is a click: it selects the slice under it (or clears).
    QPoint to = e->position().toPoint();
    if ((to - drag_from_).manhattanLength() < 3) {
      auto hit = hit_at(to);
      select(hit ? std::optional<SliceRef>(SliceRef{hit->measured, hit->process, hit->track, hit->slice}) : std::nullopt);
    }
  }
  drag_ = Drag::none;
  unsetCursor();
}

void TimelineWidget::mouseDoubleClickEvent(QMouseEvent* e) {
  if (e->button() == Qt::LeftButton && e->position().x() >= label_width) fit();
}

void TimelineWidget::keyPressEvent(QKeyEvent* e) {
  double w = time_width();
  switch (e->key()) {
    case Qt::Key_F: case Qt::Key_0: case Qt::Key_Home: fit(); break;
    case Qt::Key_Plus: case Qt::Key_Equal: zoom_by(2); break;
    case Qt::Key_Minus: zoom_by(0.5); break;
    case Qt::Key_Left: set_mapping(mapping_.panned(w / 5)); break;
    case Qt::Key_Right: set_mapping(mapping_.panned(-w / 5)); break;
    case Qt::Key_Up: set_scroll_y(scroll_y_ - row_height); break;
    case Qt::Key_Down: set_scroll_y(scroll_y_ + row_height); break;
    case Qt::Key_PageUp: set_scroll_y(scroll_y_ - (height() - ruler_height)); break;
    case Qt::Key_PageDown: set_scroll_y(scroll_y_ + (height() - ruler_height)); break;
    case Qt::Key_Escape:  // clears the selection and the measured range
      if (!selected_ && !measure_) {
        QWidget::keyPressEvent(e);
        return;
      }
      measure_.reset();
      select(std::nullopt);
      break;
    default: QWidget::keyPressEvent(e); return;
  }
  e->accept();
}

bool TimelineWidget::event(QEvent* e) {
  if (e->type() == QEvent::ToolTip) {
    auto* help = static_cast<QHelpEvent*>(e);
    QString text = tooltip_at(help->pos());
    if (text.isEmpty()) {
      QToolTip::hideText();
      e->ignore();
    } else {
      QToolTip::showText(help->globalPos(), text, this);
    }
    return true;
  }
  return QWidget::event(e);
}

// --- selection, dependency arrows, measured range, stepping through matches ---

namespace {

const QColor selection_colour(255, 176, 0);
const QColor dependency_colour(25, 25, 140);   // arrows from what the selection waits for
const QColor dependent_colour(190, 30, 140);   // arrows to what waits for the selection
const QColor measure_colour(0, 150, 136);

QString html_row(const QString& k, const QString& v) {
  return "<tr><td>" + k + "</td><td>" + v + "</td></tr>";
}

// One arg as the details pane shows it: units on the figures ditwin writes.
QString arg_text(const std::string& key, const nlohmann::json& v) {
  if (v.is_number()) {
    double d = v.get<double>();
    if (key == "flops") return number_with_unit(d, "FLOP");
    if (key == "bytes") return number_with_unit(d, "B");
    if (key == "tflops_per_s") return QString::number(d, 'f', 1) + " TFLOP/s";
    if (key == "gbytes_per_s") return QString::number(d, 'f', 1) + " GB/s";
    return v.is_number_integer() ? QString::number(v.get<long long>()) : QString::number(d, 'g', 6);
  }
  if (v.is_string()) return QString::fromStdString(v.get<std::string>()).toHtmlEscaped();
  return QString::fromStdString(v.dump()).toHtmlEscaped();
}

}  // namespace

const Slice& TimelineWidget::slice_of(const SliceRef& s) const {
  return trace_of(s).processes[s.process].tracks[s.track].slices[s.slice];
}

int TimelineWidget::row_of_slice(const SliceRef& s) const {
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    const Row& row = rows_[r];
    if (row.measured == s.measured && row.process == s.process && row.track == s.track) return static_cast<int>(r);
  }
  return -1;
}

QRectF TimelineWidget::slice_rect(const SliceRef& s) const {
  int r = row_of_slice(s);
  if (r < 0) return {};
  const Slice& sl = slice_of(s);
  int sub = track_of(rows_[static_cast<std::size_t>(r)]).sub_row_of(s.slice);
  double x0 = label_width + mapping_.x_of(sl.start_s), x1 = label_width + mapping_.x_of(sl.end_s());
  if (x1 - x0 < 3) {  // thin slices and instants still get a visible outline
    double mid = (x0 + x1) / 2;
    x0 = mid - 1.5;
    x1 = mid + 1.5;
  }
  return QRectF(x0, row_top(r) + sub * row_height + 2, x1 - x0, row_height - 4);
}

void TimelineWidget::select(std::optional<SliceRef> s) {
  if (s && (!primary_ || (s->measured && !measured_))) s.reset();
  selected_ = s;
  compute_arrows();
  update();
  emit selection_changed();
}

void TimelineWidget::compute_arrows() {
  arrows_.clear();
  if (!selected_) return;
  const SliceRef sel_ref = *selected_;
  const Trace& t = trace_of(sel_ref);
  const Process& proc = t.processes[sel_ref.process];
  const Slice& sel = slice_of(sel_ref);
  const std::string& sel_name = t.name_of(sel);
  constexpr double eps = 1e-10;
  // What the selection waits for: args.deps, by name, on the same rank.
  std::vector<std::int32_t> dep_ids;
  const auto& args = t.args_of(sel);
  if (auto d = args.find("deps"); d != args.end() && d->is_array())
    for (const auto& n : *d)
      if (n.is_string())
        if (auto id = t.find_name(n.get<std::string>())) dep_ids.push_back(*id);
  // Which args objects name the selection among their deps (shared by many slices).
  std::vector<char> names_selection(t.args.size(), 0);
  for (std::size_t a = 0; a < t.args.size(); ++a)
    if (auto d = t.args[a].find("deps"); d != t.args[a].end() && d->is_array())
      for (const auto& n : *d)
        if (n.is_string() && n.get_ref<const std::string&>() == sel_name) names_selection[a] = 1;
  // Of several occurrences (a measured trace's steps), the dependency that ends last before the
  // selection starts and the dependent that starts first after it ends.
  struct Best {
    SliceRef ref;
    double score = INFINITY;
  };
  std::map<std::int32_t, Best> deps, dependents;
  for (std::size_t k = 0; k < proc.tracks.size(); ++k) {
    const auto& slices = proc.tracks[k].slices;
    for (std::size_t i = 0; i < slices.size(); ++i) {
      const Slice& s = slices[i];
      SliceRef ref{sel_ref.measured, sel_ref.process, k, i};
      if (ref == sel_ref) continue;
      if (std::find(dep_ids.begin(), dep_ids.end(), s.name) != dep_ids.end()) {
        double score = s.end_s() <= sel.start_s + eps ? sel.start_s - s.end_s() : 1e30 + std::fabs(s.start_s - sel.start_s);
        Best& b = deps[s.name];
        if (score < b.score) b = {ref, score};
      }
      if (s.args >= 0 && names_selection[static_cast<std::size_t>(s.args)]) {
        double score = s.start_s >= sel.end_s() - eps ? s.start_s - sel.end_s() : 1e30 + std::fabs(s.start_s - sel.start_s);
        Best& b = dependents[s.name];
        if (score < b.score) b = {ref, score};
      }
    }
  }
  for (std::int32_t id : dep_ids)
    if (auto it = deps.find(id); it != deps.end()) arrows_.push_back({it->second.ref, sel_ref, false});
  std::vector<Arrow> after;
  for (const auto& [id, b] : dependents) after.push_back({sel_ref, b.ref, true});
  std::sort(after.begin(), after.end(), [&](const Arrow& a, const Arrow& b) { return slice_of(a.to).start_s < slice_of(b.to).start_s; });
  arrows_.insert(arrows_.end(), after.begin(), after.end());
}

void TimelineWidget::paint_selection(QPainter& p, QSize) const {
  if (!selected_) return;
  p.save();
  p.setRenderHint(QPainter::Antialiasing, true);
  for (const Arrow& a : arrows_) {
    QRectF from = slice_rect(a.from), to = slice_rect(a.to);
    if (from.isNull() || to.isNull()) continue;
    QPointF p0(label_width + mapping_.x_of(slice_of(a.from).end_s()), from.center().y());
    QPointF p1(label_width + mapping_.x_of(slice_of(a.to).start_s), to.center().y());
    QColor c = a.dependent ? dependent_colour : dependency_colour;
    p.setPen(QPen(c, 1.5));
    p.drawLine(p0, p1);
    // The head at the waiting op's start.
    QLineF line(p1, p0);
    if (line.length() < 1) continue;
    QLineF unit = line.unitVector();
    QPointF d(unit.dx() * 7, unit.dy() * 7), n(-unit.dy() * 3.5, unit.dx() * 3.5);
    QPolygonF head({p1, p1 + d + n, p1 + d - n});
    p.setBrush(c);
    p.drawPolygon(head);
  }
  p.setRenderHint(QPainter::Antialiasing, false);
  QRectF r = slice_rect(*selected_);
  if (!r.isNull()) {
    p.setBrush(Qt::NoBrush);
    p.setPen(QPen(QColor(20, 20, 20), 1));
    p.drawRect(r.adjusted(-3, -3, 3, 3));
    p.setPen(QPen(selection_colour, 2));
    p.drawRect(r.adjusted(-1, -1, 1, 1));
  }
  p.restore();
}

void TimelineWidget::set_measure(double t0_s, double t1_s) {
  if (t1_s < t0_s) std::swap(t0_s, t1_s);
  measure_ = std::make_pair(t0_s, t1_s);
  update();
  emit selection_changed();
}

void TimelineWidget::clear_measure() {
  if (!measure_) return;
  measure_.reset();
  update();
  emit selection_changed();
}

void TimelineWidget::paint_measure(QPainter& p, QSize size) const {
  if (!measure_) return;
  int x0 = std::max(label_width, x_of(measure_->first)), x1 = std::min(size.width(), x_of(measure_->second));
  if (x1 < label_width || x0 > size.width()) return;
  QColor band = measure_colour;
  band.setAlpha(40);
  p.fillRect(QRect(x0, ruler_height, std::max(1, x1 - x0), size.height() - ruler_height), band);
  p.setPen(QPen(measure_colour, 1));
  p.drawLine(x0, 0, x0, size.height());
  p.drawLine(x1, 0, x1, size.height());
  // On the ruler: start, end and length, centred on the range (kept on screen).
  QString text = format_time(measure_->first) + QString::fromUtf8(" \u2013 ") + format_time(measure_->second) + "  (" +
                 format_time(measure_->second - measure_->first) + ")";
  int w = p.fontMetrics().horizontalAdvance(text) + 12;
  int cx = std::clamp((x0 + x1) / 2 - w / 2, label_width, std::max(label_width, size.width() - w));
  QRect box(cx, 3, w, ruler_height - 6);
  p.fillRect(box, measure_colour);
  p.setPen(Qt::white);
  p.drawText(box, Qt::AlignCenter, text);
}

bool TimelineWidget::step_match(bool forward) {
  if (!primary_ || search_.isEmpty() || search_matches_ == 0) return false;
  using Key = std::tuple<double, int, std::size_t>;  // start, row, slice
  std::optional<Key> current;
  if (selected_) {
    int r = row_of_slice(*selected_);
    if (r >= 0) current = Key{slice_of(*selected_).start_s, r, selected_->slice};
  }
  std::optional<Key> best, wrap;
  std::optional<SliceRef> best_ref, wrap_ref;
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    const Row& row = rows_[r];
    const Trace& t = trace_of(row);
    const auto& slices = track_of(row).slices;
    for (std::size_t i = 0; i < slices.size(); ++i) {
      if (!name_matches(t, slices[i])) continue;
      Key k{slices[i].start_s, static_cast<int>(r), i};
      SliceRef ref{row.measured, row.process, row.track, i};
      if (forward) {
        if ((!current || k > *current) && (!best || k < *best)) best = k, best_ref = ref;
        if (!wrap || k < *wrap) wrap = k, wrap_ref = ref;
      } else {
        if ((!current || k < *current) && (!best || k > *best)) best = k, best_ref = ref;
        if (!wrap || k > *wrap) wrap = k, wrap_ref = ref;
      }
    }
  }
  if (!best_ref) best_ref = wrap_ref;
  if (!best_ref) return false;
  select(best_ref);
  reveal(*best_ref);
  return true;
}

bool TimelineWidget::select_first(const QString& text) {
  if (!primary_ || text.trimmed().isEmpty()) return false;
  std::optional<std::pair<double, int>> best;
  std::optional<SliceRef> best_ref;
  auto names_hit = [&](const Trace* t) {  // per name: contains `text`
    std::vector<char> hit(t ? t->names.size() : 0, 0);
    for (std::size_t n = 0; n < hit.size(); ++n) hit[n] = QString::fromStdString(t->names[n]).contains(text.trimmed(), Qt::CaseInsensitive);
    return hit;
  };
  const std::vector<char> primary_hit = names_hit(primary_.get()), measured_hit = names_hit(measured_.get());
  for (std::size_t r = 0; r < rows_.size(); ++r) {
    const Row& row = rows_[r];
    const auto& slices = track_of(row).slices;
    const auto& hit = row.measured ? measured_hit : primary_hit;
    for (std::size_t i = 0; i < slices.size(); ++i) {
      if (!hit[static_cast<std::size_t>(slices[i].name)]) continue;
      std::pair<double, int> k{slices[i].start_s, static_cast<int>(r)};
      if (!best || k < *best) best = k, best_ref = SliceRef{row.measured, row.process, row.track, i};
      break;  // slices are sorted by start: the first match is this lane's earliest
    }
  }
  if (!best_ref) return false;
  select(best_ref);
  // Moves only when the op is off screen: a range chosen first (--range) is kept.
  const Slice& s = slice_of(*best_ref);
  QRectF r = slice_rect(*best_ref);
  if (s.start_s < mapping_.start_s() || s.end_s() > mapping_.end_s() || r.top() < ruler_height || r.bottom() > height()) reveal(*best_ref);
  return true;
}

void TimelineWidget::reveal(const SliceRef& s) {
  int r = row_of_slice(s);
  if (r < 0) return;
  const Slice& sl = slice_of(s);
  double span = mapping_.span_s();
  if (sl.duration_s > 0.8 * span) {
    double pad = 0.25 * sl.duration_s;
    set_mapping(TimeMapping(sl.start_s - pad, sl.end_s() + pad, time_width()));
  } else {
    double mid = sl.start_s + sl.duration_s / 2;
    set_mapping(TimeMapping(mid - span / 2, mid + span / 2, time_width()));
  }
  int sub = track_of(rows_[static_cast<std::size_t>(r)]).sub_row_of(s.slice);
  set_scroll_y(row_y_[static_cast<std::size_t>(r)] + sub * row_height - (height() - ruler_height) / 2 + row_height / 2);
}

void TimelineWidget::reveal_process(std::size_t process) {
  if (!primary_ || process >= primary_->processes.size()) return;
  for (std::size_t c = 0; c < primary_->classes.size(); ++c) {
    const auto& m = primary_->classes[c].members;
    if (std::find(m.begin(), m.end(), process) == m.end()) continue;
    if (process != primary_->classes[c].representative() && !is_expanded(c)) set_expanded(c, true);
    break;
  }
  for (std::size_t r = 0; r < rows_.size(); ++r)
    if (!rows_[r].measured && rows_[r].process == process) {
      set_scroll_y(row_y_[r]);
      return;
    }
}

std::pair<std::size_t, std::size_t> TimelineWidget::visible_processes() const {
  if (!primary_ || rows_.empty()) return {0, 0};
  int first = row_at_y(ruler_height);
  int last = row_at_y(std::max(ruler_height, height() - 1));
  if (first < 0) return {0, 0};
  if (last < 0) last = static_cast<int>(rows_.size()) - 1;
  std::size_t lo = SIZE_MAX, hi = 0;
  for (int r = first; r <= last; ++r) {
    const Row& row = rows_[static_cast<std::size_t>(r)];
    if (row.measured || row.rank_class >= primary_->classes.size()) continue;
    // A folded row stands for every rank of its class.
    const auto& members = primary_->classes[row.rank_class].members;
    bool folded = row.class_size > 1;
    lo = std::min(lo, folded ? members.front() : row.process);
    hi = std::max(hi, folded ? members.back() : row.process);
  }
  if (lo == SIZE_MAX) return {0, 0};
  return {lo, hi};
}

QString TimelineWidget::details_html() const {
  QString h;
  if (selected_) {
    const SliceRef& ref = *selected_;
    const Trace& t = trace_of(ref);
    const Process& proc = t.processes[ref.process];
    const Track& tr = proc.tracks[ref.track];
    const Slice& s = tr.slices[ref.slice];
    h += "<h3>" + QString::fromStdString(t.name_of(s)).toHtmlEscaped() + "</h3><table>";
    QString rank = QString::number(proc.rank);
    if (proc.name != "rank " + std::to_string(proc.rank)) rank += " (" + QString::fromStdString(proc.name).toHtmlEscaped() + ")";
    h += html_row("rank", rank);
    int r = row_of_slice(ref);
    if (r >= 0 && rows_[static_cast<std::size_t>(r)].class_size > 1)
      h += html_row("", QString("one of %1 identical ranks").arg(rows_[static_cast<std::size_t>(r)].class_size));
    h += html_row("stream", QString::fromStdString(tr.name).toHtmlEscaped());
    if (measured_) h += html_row("trace", ref.measured ? "measured" : "predicted");
    if (!t.category_of(s).empty()) h += html_row("category", QString::fromStdString(t.category_of(s)).toHtmlEscaped());
    h += html_row("start", format_time(s.start_s));
    h += html_row("duration", format_time(s.duration_s));
    h += html_row("end", format_time(s.end_s()));
    const auto& args = t.args_of(s);
    for (auto it = args.begin(); it != args.end(); ++it)
      if (it.key() != "deps") h += html_row(QString::fromStdString(it.key()).toHtmlEscaped(), arg_text(it.key(), it.value()));
    if (!args.contains("tflops_per_s") && s.duration_s > 0 && s.flops > 0) h += html_row("achieved", arg_text("tflops_per_s", s.flops / s.duration_s / 1e12));
    if (!args.contains("gbytes_per_s") && s.duration_s > 0 && s.bytes > 0) h += html_row("achieved", arg_text("gbytes_per_s", s.bytes / s.duration_s / 1e9));
    if (comparison_) {
      // The matched pair holding this slice (same rank, name and duration on this side).
      const OpDiff* pair = nullptr;
      for (const auto& d : comparison_->diffs)
        if (d.pid == proc.pid && d.name == t.name_of(s) && (ref.measured ? d.measured_s : d.predicted_s) == s.duration_s) {
          pair = &d;
          break;
        }
      if (!pair) {
        h += html_row("compare", "not compared (no counterpart in the compared step)");
      } else {
        h += html_row("predicted", format_time(pair->predicted_s));
        h += html_row("measured", format_time(pair->measured_s));
        if (pair->measured_s > 0)  // as ditwin compare reports it: negative when the run was slower
          h += html_row("predicted / measured - 1", QString("%1%2%").arg(pair->predicted_s >= pair->measured_s ? "+" : "")
                                                         .arg(100.0 * (pair->predicted_s / pair->measured_s - 1), 0, 'f', 1));
      }
    }
    h += "</table>";
    if (auto d = args.find("deps"); d != args.end() && d->is_array() && !d->empty()) {
      h += "<p><b>depends on</b> (arrows in blue)</p><ul>";
      for (const auto& n : *d) {
        QString name = QString::fromStdString(n.is_string() ? n.get<std::string>() : n.dump()).toHtmlEscaped();
        bool shown = std::any_of(arrows_.begin(), arrows_.end(), [&](const Arrow& a) {
          return !a.dependent && n.is_string() && t.name_of(slice_of(a.from)) == n.get<std::string>();
        });
        h += "<li>" + name + (shown ? "" : " <i>(not in this trace)</i>") + "</li>";
      }
      h += "</ul>";
    }
    bool any_dependent = std::any_of(arrows_.begin(), arrows_.end(), [](const Arrow& a) { return a.dependent; });
    if (any_dependent) {
      h += "<p><b>needed by</b> (arrows in magenta)</p><ul>";
      for (const Arrow& a : arrows_)
        if (a.dependent) h += "<li>" + QString::fromStdString(t.name_of(slice_of(a.to))).toHtmlEscaped() + "</li>";
      h += "</ul>";
    }
  }
  if (measure_) {
    h += "<h3>time range</h3><table>";
    h += html_row("start", format_time(measure_->first));
    h += html_row("end", format_time(measure_->second));
    h += html_row("length", format_time(measure_->second - measure_->first));
    h += "</table>";
  }
  return h;
}

}  // namespace ditwin::gui
