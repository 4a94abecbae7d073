// The busy-share overview strip: shares computed once per trace, cells mapped to process ranges.
#include "gui/overview_widget.hpp"

#include <QHelpEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QToolTip>

#include <algorithm>

namespace ditwin::gui {

std::vector<double> busy_shares(const Trace& t) {
  std::vector<double> out(t.processes.size(), 0.0);
  const double span = t.end_s - t.start_s;
  if (!(span > 0)) return out;
  std::vector<char> compute(t.categories.size(), 0);
  bool any = false;
  for (std::size_t c = 0; c < t.categories.size(); ++c) {
    compute[c] = t.categories[c] == "compute" || t.categories[c] == "optimizer";
    any = any || compute[c];
  }
  if (!any)  // a foreign trace: every slice but ditwin's step slices
    for (std::size_t c = 0; c < t.categories.size(); ++c) compute[c] = t.categories[c] != "step";
  std::vector<std::pair<double, double>> spans;
  for (std::size_t p = 0; p < t.processes.size(); ++p) {
    spans.clear();
    for (const auto& tr : t.processes[p].tracks)
      for (const auto& s : tr.slices)
        if (!s.instant && compute[static_cast<std::size_t>(s.category)]) spans.emplace_back(s.start_s, s.end_s());
    std::sort(spans.begin(), spans.end());
    double busy = 0, a = -INFINITY, b = -INFINITY;  // the union of the spans
    for (const auto& [s, e] : spans) {
      if (s > b) {
        if (b > a) busy += b - a;
        a = s;
        b = e;
      } else {
        b = std::max(b, e);
      }
    }
    if (b > a) busy += b - a;
    out[p] = std::clamp(busy / span, 0.0, 1.0);
  }
  return out;
}

OverviewWidget::OverviewWidget(QWidget* parent) : QWidget(parent) {
  setFixedHeight(strip_height);
  setMouseTracking(true);
}

void OverviewWidget::set_trace(std::shared_ptr<const Trace> t) {
  if (t == trace_) return;  // the same trace again (a new comparison): shares unchanged
  trace_ = std::move(t);
  shares_ = trace_ ? busy_shares(*trace_) : std::vector<double>();
  visible_first_ = visible_last_ = 0;
  update();
}

int OverviewWidget::cell_count() const {
  return static_cast<int>(std::min<std::size_t>(shares_.size(), static_cast<std::size_t>(cells_width())));
}

std::pair<std::size_t, std::size_t> OverviewWidget::processes_of_cell(int c) const {
  const std::size_t n = shares_.size(), cells = static_cast<std::size_t>(cell_count());
  if (c < 0 || static_cast<std::size_t>(c) >= cells) return {0, 0};
  auto k = static_cast<std::size_t>(c);
  return {k * n / cells, (k + 1) * n / cells};
}

QRect OverviewWidget::cell_rect(int c) const {
  const int cells = cell_count();
  if (c < 0 || c >= cells) return {};
  const int w = cells_width();
  int x0 = caption_width + static_cast<int>(1LL * c * w / cells), x1 = caption_width + static_cast<int>(1LL * (c + 1) * w / cells);
  return QRect(x0, 0, std::max(1, x1 - x0), height());
}

int OverviewWidget::cell_at(int x) const {
  const int cells = cell_count();
  if (cells == 0 || x < caption_width || x >= caption_width + cells_width()) return -1;
  return std::clamp(static_cast<int>(1LL * (x - caption_width) * cells / cells_width()), 0, cells - 1);
}

QColor OverviewWidget::share_colour(double share) {
  share = std::clamp(share, 0.0, 1.0);
  const QColor idle(247, 251, 255), busy(8, 48, 107);
  return QColor(static_cast<int>(idle.red() + (busy.red() - idle.red()) * share),
                static_cast<int>(idle.green() + (busy.green() - idle.green()) * share),
                static_cast<int>(idle.blue() + (busy.blue() - idle.blue()) * share));
}

void OverviewWidget::set_visible_processes(std::size_t first, std::size_t last) {
  if (first == visible_first_ && last == visible_last_) return;
  visible_first_ = first;
  visible_last_ = last;
  update();
}

void OverviewWidget::paintEvent(QPaintEvent*) {
  QPainter p(this);
  p.fillRect(rect(), QColor(236, 238, 242));
  p.setPen(QColor(60, 60, 60));
  p.drawText(QRect(6, 0, caption_width - 10, height()), Qt::AlignVCenter | Qt::AlignLeft, "busy share");
  const int cells = cell_count();
  int mark_x0 = -1, mark_x1 = -1;
  for (int c = 0; c < cells; ++c) {
    auto [a, b] = processes_of_cell(c);
    double sum = 0;
    for (std::size_t i = a; i < b; ++i) sum += shares_[i];
    QRect r = cell_rect(c);
    p.fillRect(r.adjusted(0, 2, 0, -2), share_colour(b > a ? sum / static_cast<double>(b - a) : 0));
    if (b > visible_first_ && a <= visible_last_ && !shares_.empty()) {
      if (mark_x0 < 0) mark_x0 = r.left();
      mark_x1 = r.right();
    }
  }
  if (mark_x0 >= 0) {  // the ranks whose lanes are on screen
    p.setPen(QPen(QColor(255, 176, 0), 2));
    p.drawRect(QRect(mark_x0, 1, std::max(2, mark_x1 - mark_x0 + 1), height() - 2));
  }
}

void OverviewWidget::mousePressEvent(QMouseEvent* e) {
  int c = cell_at(static_cast<int>(e->position().x()));
  if (c < 0 || e->button() != Qt::LeftButton) return;
  emit process_clicked(processes_of_cell(c).first);
}

bool OverviewWidget::event(QEvent* e) {
  if (e->type() == QEvent::ToolTip && trace_) {
    auto* help = static_cast<QHelpEvent*>(e);
    int c = cell_at(help->pos().x());
    if (c < 0) {
      QToolTip::hideText();
      e->ignore();
      return true;
    }
    auto [a, b] = processes_of_cell(c);
    double sum = 0;
    for (std::size_t i = a; i < b; ++i) sum += shares_[i];
    const auto& procs = trace_->processes;
    QString who = b - a == 1 ? QString::fromStdString(procs[a].name)
                             : QString("ranks %1 to %2").arg(procs[a].rank).arg(procs[b - 1].rank);
    QToolTip::showText(help->globalPos(),
                       who + QString(": busy %1%, click to show").arg(100.0 * sum / static_cast<double>(b - a), 0, 'f', 1), this);
    return true;
  }
  return QWidget::event(e);
}

}  // namespace ditwin::gui
