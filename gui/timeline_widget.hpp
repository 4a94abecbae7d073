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
    int depth = 1;               // sub-rows: the track's overlapping slices stacked
  };
  struct Hit {
    int row = 0;
    bool measured = false;
    std::size_t process = 0, track = 0, slice = 0;
  };
  // A slice of either trace, independent of which rows are shown (folding changes rows).
  struct SliceRef {
    bool measured = false;
    std::size_t process = 0, track = 0, slice = 0;
    bool operator==(const SliceRef&) const = default;
  };
  // A Program dependency of the selected op drawn as an arrow from `from`'s end to `to`'s start:
  // `dependent` false: `from` is a dependency of the selection (`to`); true: `to` depends on it.
  struct Arrow {
    SliceRef from, to;
    bool dependent = false;
  };

  explicit TimelineWidget(QWidget* parent = nullptr);

  // A null `measured` shows one trace; with one, lanes are paired and coloured by `comparison`.
  void set_traces(std::shared_ptr<const Trace> primary, std::shared_ptr<const Trace> measured = nullptr,
                  std::shared_ptr<const Comparison> comparison = nullptr);
  const Trace* primary() const { return primary_.get(); }
  const Trace* measured() const { return measured_.get(); }
  std::shared_ptr<const Trace> primary_shared() const { return primary_; }

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
  int row_top(int row) const { return ruler_height + row_y_[static_cast<std::size_t>(row)] - scroll_y_; }
  int row_pixels(int row) const { return rows_[static_cast<std::size_t>(row)].depth * row_height; }
  int content_height() const { return row_y_.empty() ? 0 : row_y_.back(); }
  int row_at_y(int y) const;  // the row under widget y; -1 when none
  int x_of(double t_s) const;  // widget x of a time
  std::optional<Hit> hit_at(QPoint pos) const;
  QString tooltip_at(QPoint pos) const;

  // The fill colour of a slice as painted (before search dimming).
  QColor colour_of(const Row& row, std::size_t slice) const;
  static QColor error_colour(double relative_error);

  // Paints the whole view into `size`; paintEvent, screenshots and benchmarks all use it.
  void paint(QPainter& p, QSize size) const;

  // --- selection, dependencies, measuring, stepping through matches, labels ---
  // Click selects a slice (outlined), Esc clears; the window's details pane shows details_html().
  void select(std::optional<SliceRef> s);
  const std::optional<SliceRef>& selected() const { return selected_; }
  const std::vector<Arrow>& arrows() const { return arrows_; }  // of the selection
  // The first shown row holding `s`'s track (and which sub-row); -1 when its rank is folded away.
  int row_of_slice(const SliceRef& s) const;
  const Slice& slice_of(const SliceRef& s) const;
  const Trace& trace_of(const SliceRef& s) const { return s.measured ? *measured_ : *primary_; }
  // Ctrl+drag measures a time range; shown on the ruler and in the details pane.
  void set_measure(double t0_s, double t1_s);
  void clear_measure();
  const std::optional<std::pair<double, double>>& measure() const { return measure_; }
  // Selects the next (or previous) search match in time order across the shown lanes (ties:
  // by lane, top first), wrapping around, and centres it. False when nothing matches.
  bool step_match(bool forward);
  // Selects and centres the first op (in time order, shown lanes) whose name contains `text`.
  bool select_first(const QString& text);
  // Scrolls (and pans, or zooms out when it is wider than the view) so `s` is in the middle.
  void reveal(const SliceRef& s);
  // Expands the class holding this process of the primary trace if needed, scrolls to its lanes.
  void reveal_process(std::size_t process);
  // The first and last primary process whose lanes are on screen (for the overview's marker).
  std::pair<std::size_t, std::size_t> visible_processes() const;
  // A lane's label (rank, fold count, stream) in full; painted elided, whole in the tooltip.
  QString rank_label(const Row& row) const;
  QString stream_label(const Row& row) const;
  // What the details pane shows: the selected slice (name, rank, stream, times, every arg,
  // predicted vs measured, dependencies) and the measured range. Empty when neither.
  QString details_html() const;

 signals:
  void view_changed();
  void selection_changed();  // the selection or the measured range
  void traces_changed();     // set_traces was called

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
  template <class Seq>
  void paint_slices(QPainter& p, const Row& row, const Seq& seq, int top, int h, double width) const;
  void paint_selection(QPainter& p, QSize size) const;
  void paint_measure(QPainter& p, QSize size) const;
  QRectF slice_rect(const SliceRef& s) const;  // on screen; empty when not shown
  void compute_arrows();
  std::vector<std::size_t> shown_rows_of(const SliceRef& s) const;
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
  std::vector<int> row_y_;  // content y of each row's top; one more entry: the total height
  std::vector<bool> expanded_;
  TimeMapping mapping_;
  int scroll_y_ = 0;
  QString search_;
  std::vector<bool> primary_match_, measured_match_;  // per name id
  std::size_t search_matches_ = 0;

  std::optional<SliceRef> selected_;
  std::vector<Arrow> arrows_;
  std::optional<std::pair<double, double>> measure_;

  enum class Drag { none, pan, box, measure } drag_ = Drag::none;
  QPoint drag_from_, drag_to_;
  TimeMapping drag_mapping_;
  int drag_scroll_ = 0;
};

// Human units for a time: "12.5 us", "3.20 ms", "1.50 s", "2.0 h".
QString format_time(double seconds);

}  // namespace ditwin::gui
