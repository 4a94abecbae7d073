// The overview: a strip with one cell per rank (or per group of ranks when there are more ranks
// than pixels) coloured by that rank's busy share, so a 16,384-rank trace can be scanned at a
// glance; a click scrolls the timeline to the rank under it. The lanes on screen are marked.
#pragma once
#include <QColor>
#include <QWidget>

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "gui/trace_model.hpp"

namespace ditwin::gui {

// Each process's busy share: the time its compute stream is busy (slices of category compute or
// optimizer, overlaps counted once) over the trace's span; a trace with neither category counts
// every slice but the step ones. Indexed like Trace::processes.
std::vector<double> busy_shares(const Trace& t);

class OverviewWidget : public QWidget {
  Q_OBJECT

 public:
  static constexpr int strip_height = 22;

  explicit OverviewWidget(QWidget* parent = nullptr);
  void set_trace(std::shared_ptr<const Trace> t);
  const std::vector<double>& shares() const { return shares_; }

  // Cells across the width: one per process, or per group when processes outnumber pixels.
  int cell_count() const;
  int cell_at(int x) const;  // -1 outside
  // Processes [first, last) that cell `c` stands for; its colour is their mean busy share.
  std::pair<std::size_t, std::size_t> processes_of_cell(int c) const;
  QRect cell_rect(int c) const;
  static QColor share_colour(double share);  // light (idle) to dark blue (busy)

  void set_visible_processes(std::size_t first, std::size_t last);  // marked with a frame
  QSize sizeHint() const override { return {400, strip_height}; }
  QSize minimumSizeHint() const override { return {100, strip_height}; }

 signals:
  void process_clicked(std::size_t process);

 protected:
  void paintEvent(QPaintEvent*) override;
  void mousePressEvent(QMouseEvent*) override;
  bool event(QEvent*) override;

 private:
  static constexpr int caption_width = 96;  // "busy share" legend on the left
  int cells_width() const { return std::max(1, width() - caption_width); }

  std::shared_ptr<const Trace> trace_;
  std::vector<double> shares_;
  std::size_t visible_first_ = 0, visible_last_ = 0;
};

}  // namespace ditwin::gui
