// The main window: loading, the side panel's metrics, the difference table.
#include "gui/main_window.hpp"

#include <QAction>
#include <QDockWidget>
#include <QKeyEvent>
#include <QComboBox>
#include <QFileDialog>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QSignalBlocker>
#include <QSortFilterProxyModel>
#include <QSplitter>
#include <QStatusBar>
#include <QTableView>
#include <QTextBrowser>
#include <QToolBar>

#include <algorithm>
#include <cmath>
#include <map>

#include "gui/compare_table.hpp"
#include "gui/overview_widget.hpp"
#include "gui/timeline_widget.hpp"

namespace ditwin::gui {

using nlohmann::json;

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setWindowTitle("ditwin-gui");
  timeline_ = new TimelineWidget;
  panel_ = new QTextBrowser;
  panel_->setMinimumWidth(240);
  table_model_ = new CompareTableModel(this);
  table_proxy_ = new QSortFilterProxyModel(this);
  table_proxy_->setSourceModel(table_model_);
  table_proxy_->setSortRole(CompareTableModel::sort_role);
  table_ = new QTableView;
  table_->setModel(table_proxy_);
  table_->setSortingEnabled(true);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->verticalHeader()->hide();
  table_->horizontalHeader()->setSectionResizeMode(CompareTableModel::op, QHeaderView::Stretch);
  table_->hide();
  connect(table_, &QTableView::doubleClicked, this, &MainWindow::zoom_to_diff);

  auto* left = new QSplitter(Qt::Vertical);
  left->addWidget(timeline_);
  left->addWidget(table_);
  left->setStretchFactor(0, 3);
  left->setStretchFactor(1, 1);
  auto* split = new QSplitter(Qt::Horizontal);
  split->addWidget(left);
  split->addWidget(panel_);
  split->setStretchFactor(0, 1);
  split->setStretchFactor(1, 0);
  split->setSizes({1200, 320});  // scaled to the window: the timeline gets the room
  left->setSizes({700, 250});
  setCentralWidget(split);

  QToolBar* bar = addToolBar("view");
  bar->setMovable(false);
  bar->addAction("Open…", this, [this] { open_dialog(false); })->setShortcut(QKeySequence::Open);
  bar->addAction("Open pair…", this, [this] { open_dialog(true); });
  bar->addSeparator();
  bar->addAction("Fit", timeline_, &TimelineWidget::fit);
  bar->addAction("Zoom in", this, [this] { timeline_->zoom_by(2); });
  bar->addAction("Zoom out", this, [this] { timeline_->zoom_by(0.5); });
  bar->addAction("Expand all", this, [this] { timeline_->set_all_expanded(true); });
  bar->addAction("Fold all", this, [this] { timeline_->set_all_expanded(false); });
  bar->addSeparator();
  search_ = new QLineEdit;
  search_->setPlaceholderText("search ops by name");
  search_->setClearButtonEnabled(true);
  search_->setMaximumWidth(260);
  bar->addWidget(search_);
  matches_ = new QLabel;
  bar->addWidget(matches_);
  setup_viewer_tools(bar, left);  // next/previous match, the overview strip, the details pane
  connect(search_, &QLineEdit::textChanged, this, [this](const QString& text) {
    timeline_->set_search(text);
    matches_->setText(text.trimmed().isEmpty() ? QString() : QString("  %1 ops").arg(timeline_->search_matches()));
  });
  connect(timeline_, &TimelineWidget::view_changed, this, &MainWindow::update_status);
  // Compare view: which measured step the prediction is compared against.
  bar->addSeparator();
  step_picker_ = new QComboBox;
  step_picker_->setToolTip("the measured step the prediction is compared against (default: the median steady-state step)");
  step_picker_->setSizeAdjustPolicy(QComboBox::AdjustToContents);
  step_picker_->setVisible(false);
  step_picker_action_ = bar->addWidget(step_picker_);
  step_picker_action_->setVisible(false);
  connect(step_picker_, QOverload<int>::of(&QComboBox::activated), this, [this](int i) {
    QString err = compare_step(step_picker_->itemData(i).toLongLong());
    if (!err.isEmpty()) show_error(err);
  });
  update_panel();
}

QString MainWindow::compare_step(long long step) {
  if (!primary_ || !measured_) return "open a predicted and a measured trace to compare";
  std::shared_ptr<const Comparison> c;
  try {
    c = std::make_shared<const Comparison>(compare(*primary_, *measured_, step));
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  comparison_ = c;
  show_comparison();
  fill_step_picker();
  update_panel();
  update_status();
  return {};
}

void MainWindow::show_comparison() {
  measured_shown_ = measured_;
  if (measured_ && comparison_) {
    const double by = comparison_->predicted_step_start_s - comparison_->measured_step_start_s;
    if (by != 0) measured_shown_ = std::make_shared<const Trace>(shifted(*measured_, by));
  }
  timeline_->set_traces(primary_, measured_shown_, comparison_);
  table_model_->set_comparison(comparison_);
}

void MainWindow::fill_step_picker() {
  const bool steps = comparison_ && !comparison_->measured_steps.empty();
  step_picker_action_->setVisible(steps);
  step_picker_->setVisible(steps);
  QSignalBlocker quiet(step_picker_);
  step_picker_->clear();
  if (!steps) return;
  for (const auto& st : comparison_->measured_steps) {
    QString label = QString("step %1  %2").arg(st.step).arg(format_time(st.duration_s));
    if (st.step == comparison_->default_measured_step) label += "  (median)";
    step_picker_->addItem(label, QVariant::fromValue(st.step));
    if (st.step == comparison_->measured_step) step_picker_->setCurrentIndex(step_picker_->count() - 1);
  }
}

QString MainWindow::open_traces(const QStringList& paths) {
  if (paths.empty() || paths.size() > 2) return "give one trace, or two: predicted then measured";
  std::shared_ptr<const Trace> a, b;
  std::shared_ptr<const Comparison> c;
  try {
    a = std::make_shared<const Trace>(load_trace(paths[0].toStdString()));
    if (paths.size() == 2) {
      b = std::make_shared<const Trace>(load_trace(paths[1].toStdString()));
      c = std::make_shared<const Comparison>(compare(*a, *b));
    }
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  primary_ = a;
  measured_ = b;
  comparison_ = c;
  report_ = measured_report_ = json();
  show_comparison();
  table_->setVisible(comparison_ != nullptr);
  table_->sortByColumn(CompareTableModel::difference, Qt::DescendingOrder);
  fill_step_picker();
  setWindowTitle("ditwin-gui: " + paths.join(" vs "));
  update_panel();
  update_status();
  return {};
}

QString MainWindow::open_report(const QString& path, bool measured) {
  try {
    (measured ? measured_report_ : report_) = load_report(path.toStdString());
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  update_panel();
  return {};
}

void MainWindow::show_error(const QString& message) {
  auto* box = new QMessageBox(QMessageBox::Critical, "ditwin-gui", message, QMessageBox::Ok, this);
  box->setAttribute(Qt::WA_DeleteOnClose);
  box->open();
}

void MainWindow::open_dialog(bool pair) {
  QStringList paths;
  if (pair) {
    QString a = QFileDialog::getOpenFileName(this, "Predicted trace", {}, "Traces (*.json);;All files (*)");
    if (a.isEmpty()) return;
    QString b = QFileDialog::getOpenFileName(this, "Measured trace", {}, "Traces (*.json);;All files (*)");
    if (b.isEmpty()) return;
    paths = {a, b};
  } else {
    QString a = QFileDialog::getOpenFileName(this, "Open trace", {}, "Traces (*.json);;All files (*)");
    if (a.isEmpty()) return;
    paths = {a};
  }
  open_or_explain(paths);
}

bool MainWindow::open_or_explain(const QStringList& paths) {
  QString error = open_traces(paths);
  if (error.isEmpty()) return true;
  show_error(error);
  return false;
}

void MainWindow::zoom_to_diff(const QModelIndex& index) {
  const OpDiff* d = table_model_->diff_at(table_proxy_->mapToSource(index).row());
  if (!d) return;
  // The diff's starts count from the compared steps, which the view lines up at the prediction's.
  const double at = comparison_ ? comparison_->predicted_step_start_s : 0;
  double lo = at + std::min(d->predicted_start_s, d->measured_start_s);
  double hi = at + std::max(d->predicted_start_s + d->predicted_s, d->measured_start_s + d->measured_s);
  double pad = std::max(hi - lo, 1e-6) * 0.5;
  timeline_->zoom_to(lo - pad, hi + pad);
  int row = timeline_->row_of(d->pid, d->tid);
  if (row >= 0)  // rows differ in height (sub-rows): from the row's top, two rows of context above
    timeline_->set_scroll_y(timeline_->row_top(row) + timeline_->scroll_y() - TimelineWidget::ruler_height -
                            2 * TimelineWidget::row_height);
}

namespace {

QString fmt_bytes(double b) { return QString::number(b / (1024.0 * 1024 * 1024), 'f', 2) + " GiB"; }
QString pct(double v) { return QString::number(100 * v, 'f', 1) + "%"; }

std::optional<double> number_at(const json& j, std::initializer_list<const char*> path) {
  const json* v = &j;
  for (const char* k : path) {
    if (!v->is_object() || !v->contains(k)) return std::nullopt;
    v = &(*v)[k];
  }
  if (!v->is_number()) return std::nullopt;
  return v->get<double>();
}

// Time per category summed over one rank (the representative of the first class).
std::map<std::string, double> busy_by_category(const Trace& t) {
  std::map<std::string, double> out;
  if (t.processes.empty()) return out;
  for (const auto& tr : t.processes[t.classes.front().representative()].tracks)
    for (const auto& s : tr.slices)
      if (!s.instant) out[t.category_of(s)] += s.duration_s;
  return out;
}

// Instant events (failures in a run trace) per category, on the same rank.
std::map<std::string, std::size_t> instants_by_category(const Trace& t) {
  std::map<std::string, std::size_t> out;
  if (t.processes.empty()) return out;
  for (const auto& tr : t.processes[t.classes.front().representative()].tracks)
    for (const auto& s : tr.slices)
      if (s.instant) ++out[t.category_of(s)];
  return out;
}

QString row(const QString& k, const QString& v, const QString& w = QString()) {
  return "<tr><td>" + k + "</td><td align=right>" + v + "</td>" + (w.isNull() ? QString() : "<td align=right>" + w + "</td>") + "</tr>";
}

QString trace_section(const Trace& t, const json& report) {
  QString h;
  if (!t.source.empty()) h += row("source", QString::fromStdString(t.source).toHtmlEscaped());
  if (!t.plan.empty()) h += row("plan", QString::fromStdString(t.plan).toHtmlEscaped());
  auto step = number_at(report, {"step_time_s"});
  if (!step) step = t.step_time_s;
  if (step) h += row("step time", format_time(*step));
  auto mfu = number_at(report, {"mfu"});
  if (!mfu) mfu = t.mfu;
  if (mfu) h += row("MFU", pct(*mfu));
  if (auto v = number_at(report, {"hfu"})) h += row("HFU", pct(*v));
  if (auto v = number_at(report, {"tflops_per_gpu"})) h += row("TFLOP/s per GPU", QString::number(*v, 'f', 1));
  if (auto v = number_at(report, {"tokens_per_s"})) h += row("tokens/s", QString::number(*v / 1e6, 'f', 2) + " M");
  if (auto peak = number_at(report, {"memory", "peak_bytes"})) {
    QString m = fmt_bytes(*peak);
    if (auto cap = number_at(report, {"memory", "capacity_bytes"})) m += " of " + fmt_bytes(*cap);
    if (report["memory"].contains("fits") && report["memory"]["fits"].is_boolean())
      m += report["memory"]["fits"].get<bool>() ? " (fits)" : " <b>(does not fit)</b>";
    h += row("memory per GPU", m);
  }
  if (step && *step > 0 && report.contains("breakdown")) {
    auto part = [&](const QString& name, std::optional<double> v) {
      if (v) h += row("&nbsp;&nbsp;" + name, format_time(*v) + " (" + pct(*v / *step) + ")");
    };
    h += "<tr><td colspan=2><b>breakdown</b></td></tr>";
    part("compute", number_at(report, {"breakdown", "compute_s"}));
    part("optimizer", number_at(report, {"breakdown", "optimizer_s"}));
    for (const char* k : {"tp", "cp", "dp", "pp"}) part(QString("exposed ") + k, number_at(report, {"breakdown", "exposed_comm_s", k}));
    part("bubble", number_at(report, {"breakdown", "bubble_s"}));
  }
  h += row("ranks shown", QString("%1 in %2 classes").arg(t.processes.size()).arg(t.classes.size()));
  h += row("events", QString::number(t.slice_count));
  h += row("span", format_time(t.end_s - t.start_s));
  if (t.is_run) {
    auto busy = busy_by_category(t);
    double span = t.end_s - t.start_s, productive = 0, lost = 0;
    for (const auto& [cat, secs] : busy) {
      if (is_productive_category(cat)) productive += secs;
      if (is_lost_category(cat)) lost += secs;
    }
    h += "<tr><td colspan=2><b>run</b></td></tr>";
    auto reported = number_at(report, {"ettr", "mean"});
    if (!reported) reported = number_at(report, {"ettr"});
    if (!reported) reported = t.ettr;
    if (reported) h += row("ETTR (reported)", pct(*reported));
    if (span > 0) h += row("ETTR of this trial", pct(std::max(0.0, productive - lost) / span));
    h += row("&nbsp;&nbsp;trained, kept", format_time(std::max(0.0, productive - lost)));
    h += row("&nbsp;&nbsp;lost (rolled back)", format_time(lost));
    for (const auto& [cat, secs] : busy)
      if (!is_productive_category(cat) && !is_lost_category(cat))
        h += row("&nbsp;&nbsp;" + QString::fromStdString(cat.empty() ? "(none)" : cat).toHtmlEscaped(), format_time(secs));
    for (const auto& [cat, n] : instants_by_category(t))
      h += row("&nbsp;&nbsp;" + QString::fromStdString(cat.empty() ? "(none)" : cat).toHtmlEscaped() + " events", QString::number(n));
  } else {
    auto busy = busy_by_category(t);
    if (!busy.empty()) {
      h += "<tr><td colspan=2><b>busy time by kind</b> (first rank shown)</td></tr>";
      for (const auto& [cat, secs] : busy)
        h += row("&nbsp;&nbsp;" + QString::fromStdString(cat.empty() ? "(none)" : cat).toHtmlEscaped(), format_time(secs));
    }
  }
  return h;
}

}  // namespace

void MainWindow::update_panel() {
  if (!primary_) {
    panel_->setHtml("<p>No trace open.</p><p>Open one with <i>Open…</i>, or a predicted and a measured trace with <i>Open pair…</i>.</p>"
                    "<p>Wheel: zoom; Shift+wheel: scroll; drag: pan; right-drag or Shift+drag: zoom to a box; double-click or F: fit; "
                    "click a rank's label: expand or fold its identical ranks.</p>");
    return;
  }
  QString h = "<style>td{padding:1px 4px;}</style>";
  h += "<h3>" + QString::fromStdString(primary_->is_run ? "run" : "step") + "</h3><table width=100%>";
  h += trace_section(*primary_, report_);
  h += "</table>";
  if (measured_) {
    h += "<h3>measured</h3><table width=100%>" + trace_section(*measured_, measured_report_) + "</table>";
    const auto& d = comparison_->diffs;
    std::vector<double> errors;
    for (const auto& x : d)
      if (std::isfinite(x.error())) errors.push_back(std::fabs(x.error()));
    std::sort(errors.begin(), errors.end());
    h += "<h3>comparison</h3><table width=100%>";
    if (comparison_->measured_step >= 0)
      h += row("measured step", QString("%1%2").arg(comparison_->measured_step)
                                    .arg(comparison_->measured_step == comparison_->default_measured_step ? " (median steady-state)" : ""));
    h += row("ops matched", QString::number(d.size()));
    h += row("only predicted / only measured", QString("%1 / %2").arg(comparison_->unmatched_predicted).arg(comparison_->unmatched_measured));
    if (!errors.empty()) {
      h += row("median |error|", pct(errors[errors.size() / 2]));
      auto within = std::upper_bound(errors.begin(), errors.end(), 0.10) - errors.begin();
      h += row("ops within 10%", pct(static_cast<double>(within) / static_cast<double>(errors.size())));
    }
    // As `ditwin compare`: predicted / measured - 1, the compared steps' lengths.
    if (comparison_->measured_step_s > 0 && comparison_->measured_step >= 0)
      h += row("step time error", pct(comparison_->predicted_step_s / comparison_->measured_step_s - 1));
    h += "</table>";
  }
  panel_->setHtml(h);
}

void MainWindow::update_status() {
  if (!primary_) return;
  const auto& m = timeline_->mapping();
  statusBar()->showMessage(QString("%1 events, %2 lanes; view %3 to %4 (%5)")
                               .arg(primary_->slice_count + (measured_ ? measured_->slice_count : 0))
                               .arg(timeline_->rows().size())
                               .arg(format_time(m.start_s()), format_time(m.end_s()), format_time(m.span_s())));
}

// --- viewer tools: the details pane, next/previous match, the overview strip (issue 17) ---

void MainWindow::setup_viewer_tools(QToolBar* bar, QSplitter* left) {
  // Next / previous match: buttons, F3 / Shift+F3 anywhere, Enter / Shift+Enter in the search box.
  QAction* previous = bar->addAction(QString::fromUtf8("\u25c0 Prev"), this, [this] { timeline_->step_match(false); });
  previous->setShortcut(QKeySequence(Qt::SHIFT | Qt::Key_F3));
  previous->setToolTip("previous match in time order (Shift+F3; Shift+Enter in the search box)");
  QAction* next = bar->addAction(QString::fromUtf8("Next \u25b6"), this, [this] { timeline_->step_match(true); });
  next->setShortcut(QKeySequence(Qt::Key_F3));
  next->setToolTip("next match in time order (F3; Enter in the search box)");
  search_->installEventFilter(this);

  overview_ = new OverviewWidget;
  left->insertWidget(0, overview_);
  left->setCollapsible(0, false);
  connect(overview_, &OverviewWidget::process_clicked, timeline_, &TimelineWidget::reveal_process);
  connect(timeline_, &TimelineWidget::traces_changed, this, &MainWindow::viewer_tools_opened);
  connect(timeline_, &TimelineWidget::view_changed, this, [this] {
    auto [first, last] = timeline_->visible_processes();
    overview_->set_visible_processes(first, last);
  });

  details_ = new QTextBrowser;
  details_->setMinimumWidth(240);
  details_dock_ = new QDockWidget("Details", this);
  details_dock_->setObjectName("details");
  details_dock_->setWidget(details_);
  details_dock_->setFeatures(QDockWidget::DockWidgetMovable | QDockWidget::DockWidgetFloatable);
  addDockWidget(Qt::RightDockWidgetArea, details_dock_);
  connect(timeline_, &TimelineWidget::selection_changed, this, &MainWindow::update_details);
  update_details();
}

void MainWindow::viewer_tools_opened() { overview_->set_trace(timeline_->primary_shared()); }

void MainWindow::update_details() {
  QString h = timeline_->details_html();
  if (h.isEmpty())
    h = "<p><i>Click an op for its details and its dependencies (arrows); Ctrl+drag to measure a time range; "
        "Esc clears both.</i></p>";
  details_->setHtml(h);
}

bool MainWindow::eventFilter(QObject* watched, QEvent* event) {
  if (watched == search_ && event->type() == QEvent::KeyPress) {
    auto* key = static_cast<QKeyEvent*>(event);
    if (key->key() == Qt::Key_Return || key->key() == Qt::Key_Enter) {
      timeline_->step_match(!(key->modifiers() & Qt::ShiftModifier));
      return true;
    }
  }
  return QMainWindow::eventFilter(watched, event);
}

}  // namespace ditwin::gui
