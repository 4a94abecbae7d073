// The timeline: one widget paints every visible lane (one per rank and stream; identical ranks
// folded into one class, expanded on demand), a time ruler and, in compare mode, predicted and
// measured lanes in pairs coloured by relative error. Slices are found by binary search and
// slices narrower than a pixel are merged, so a million events paint in milliseconds.
#pragma once
#include <QColor>
#include <QPoint>
#include <QRect>
#include <QString>
#include <QWidget>

#include <memory>
#include <optional>
#include <vector>

#include "gui/compare_model.hpp"
#include "gui/time_mapping.hpp"
#include "gui/trace_model.hpp"

class QPainter;

namespace ditwin::gui {

class TimelineWidget : public QWidget {
  Q_OBJECT

 public:
  static constexpr int ruler_height = 30;
  static constexpr int row_height = 18;
  static constexpr int label_width = 220;

  struct Row {
    bool measured = false;     // which trace: the primary (predicted) or the measured one
    std::size_t process = 0;   // index into that trace's processes
    std::size_t track = 0;     // index into the process's tracks
    std::size_t rank_class = 0;  // the primary trace's class it belongs to (or the measured one's)
    std::size_t class_size = 1;  // ranks the row stands for (1 when expanded)
    bool first_of_process = false;
  };
  struct Hit {
    int row = 0;
    bool measured = false;
    std::size_t process = 0, track = 0, slice = 0;
  };

  explicit TimelineWidget(QWidget* parent = nullptr);

  // A null `measured` shows one trace; with one, lanes are paired and coloured by `comparison`.
  void set_traces(std::shared_ptr<const Trace> primary, std::shared_ptr<const Trace> measured = nullptr,
                  std::shared_ptr<const Comparison> comparison = nullptr);
  const Trace* primary() const { return primary_.get(); }
  const Trace* measured() const { return measured_.get(); }

  const TimeMapping& mapping() const { return mapping_; }
  void set_mapping(const TimeMapping& m);  // clamped to the data
  void fit();
  void zoom_to(double t0_s, double t1_s);
  void zoom_by(double factor);  // about the middle of the view
  int scroll_y() const { return scroll_y_; }
  void set_scroll_y(int y);

  void set_search(const QString& text);
  std::size_t search_matches() const { return search_matches_; }  // slices whose name matches

  void set_expanded(std::size_t rank_class, bool expanded);
  void set_all_expanded(bool expanded);
  bool is_expanded(std::size_t rank_class) const;

  const std::vector<Row>& rows() const { return rows_; }
  // The first row showing (pid, tid) of the primary (or measured) trace; -1 when none.
  int row_of(long long pid, long long tid, bool measured = false) const;
  int row_top(int row) const { return ruler_height + row * row_height - scroll_y_; }
  int x_of(double t_s) const;  // widget x of a time
  std::optional<Hit> hit_at(QPoint pos) const;
  QString tooltip_at(QPoint pos) const;

  // The fill colour of a slice as painted (before search dimming).
  QColor colour_of(const Row& row, std::size_t slice) const;
  static QColor error_colour(double relative_error);

  // Paints the whole view into `size`; paintEvent, screenshots and benchmarks all use it.
  void paint(QPainter& p, QSize size) const;

 signals:
  void view_changed();

 protected:
  void paintEvent(QPaintEvent*) override;
  void resizeEvent(QResizeEvent*) override;
  void wheelEvent(QWheelEvent*) override;
  void mousePressEvent(QMouseEvent*) override;
  void mouseMoveEvent(QMouseEvent*) override;
  void mouseReleaseEvent(QMouseEvent*) override;
  void mouseDoubleClickEvent(QMouseEvent*) override;
  void keyPressEvent(QKeyEvent*) override;
  bool event(QEvent*) override;

 private:
  const Trace& trace_of(const Row& r) const { return r.measured ? *measured_ : *primary_; }
  const Track& track_of(const Row& r) const { return trace_of(r).processes[r.process].tracks[r.track]; }
  void rebuild_rows();
  void changed();
  double data_start() const;
  double data_end() const;
  double time_width() const { return std::max(1, width() - label_width); }
  void paint_row(QPainter& p, const Row& row, int y, int right) const;
  void paint_labels(QPainter& p, int first, int last, int height) const;
  void paint_ruler(QPainter& p, int width) const;
  bool name_matches(const Trace& t, const Slice& s) const;

  std::shared_ptr<const Trace> primary_, measured_;
  std::shared_ptr<const Comparison> comparison_;
  std::vector<Row> rows_;
  std::vector<bool> expanded_;
  TimeMapping mapping_;
  int scroll_y_ = 0;
  QString search_;
  std::vector<bool> primary_match_, measured_match_;  // per name id
  std::size_t search_matches_ = 0;

  enum class Drag { none, pan, box } drag_ = Drag::none;
  QPoint drag_from_, drag_to_;
  TimeMapping drag_mapping_;
  int drag_scroll_ = 0;
};

// Human units for a time: "12.5 us", "3.20 ms", "1.50 s", "2.0 h".
QString format_time(double seconds);

}  // namespace ditwin::gui
