// The viewer's window: toolbar (open, fit, zoom, fold, search), the timeline, a side panel of
// metrics and, for a predicted/measured pair, the table of the largest differences.
#pragma once
#include <QMainWindow>
#include <QString>
#include <QStringList>

#include <memory>
#include <nlohmann/json.hpp>

#include "gui/compare_model.hpp"
#include "gui/trace_model.hpp"

class QAction;
class QComboBox;
class QDockWidget;
class QLabel;
class QLineEdit;
class QSortFilterProxyModel;
class QSplitter;
class QTableView;
class QTextBrowser;
class QToolBar;

namespace ditwin::gui {

class CompareTableModel;
class OverviewWidget;
class TimelineWidget;

class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  explicit MainWindow(QWidget* parent = nullptr);

  // Loads one trace, or a predicted/measured pair (in that order). Returns an empty string on
  // success; otherwise the message, and what was shown before stays.
  QString open_traces(const QStringList& paths);
  // open_traces, and on failure the message in a dialog (the interactive path: never a crash).
  bool open_or_explain(const QStringList& paths);
  // A step report (ditwin simulate --report) for the side panel; `measured` for the second trace's.
  QString open_report(const QString& path, bool measured = false);
  // Shows a message box without blocking (tests find it as a child of the window).
  void show_error(const QString& message);

  TimelineWidget* timeline() const { return timeline_; }
  QTableView* diff_table() const { return table_; }
  QLineEdit* search_box() const { return search_; }
  QTextBrowser* metrics_panel() const { return panel_; }
  // The compare view's step picker: the measured trace's steps; the comparison follows it.
  QComboBox* step_picker() const { return step_picker_; }
  // Compares against measured step `step` (-1: the median steady-state one). Returns an empty
  // string on success, else the message (the comparison shown stays).
  QString compare_step(long long step);
  const Comparison* comparison() const { return comparison_.get(); }

  // --- viewer tools: details pane, next/previous match, overview (issue 17) ---
  QTextBrowser* details_panel() const { return details_; }
  OverviewWidget* overview() const { return overview_; }

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;  // Enter / Shift+Enter in the search box

 private:
  void open_dialog(bool pair);
  void update_panel();
  void update_status();
  void zoom_to_diff(const QModelIndex& index);
  // Viewer tools: built once by the constructor, refreshed when traces open.
  void setup_viewer_tools(QToolBar* bar, QSplitter* left);
  void viewer_tools_opened();
  void update_details();

  std::shared_ptr<const Trace> primary_, measured_;
  // The measured trace as drawn: shifted so that its compared step lines up with the prediction's.
  std::shared_ptr<const Trace> measured_shown_;
  void show_comparison();
  std::shared_ptr<const Comparison> comparison_;
  nlohmann::json report_, measured_report_;
  TimelineWidget* timeline_ = nullptr;
  QTextBrowser* panel_ = nullptr;
  QTableView* table_ = nullptr;
  CompareTableModel* table_model_ = nullptr;
  QSortFilterProxyModel* table_proxy_ = nullptr;
  QLineEdit* search_ = nullptr;
  QLabel* matches_ = nullptr;
  QComboBox* step_picker_ = nullptr;
  QAction* step_picker_action_ = nullptr;
  void fill_step_picker();
  // Viewer tools.
  QDockWidget* details_dock_ = nullptr;
  QTextBrowser* details_ = nullptr;
  OverviewWidget* overview_ = nullptr;
};

}  // namespace ditwin::gui
