// The overview strip: busy shares per rank, cells mapped to ranks (grouped when ranks outnumber
// pixels), a click scrolls the timeline to the rank; and the window's details pane and search keys.
#include <QtTest>
#include <QLineEdit>
#include <QSignalSpy>
#include <QTextBrowser>

#include "gui/main_window.hpp"
#include "gui/overview_widget.hpp"
#include "gui/tests/fixtures.hpp"
#include "gui/timeline_widget.hpp"

using namespace ditwin;
using namespace ditwin::gui;
using namespace ditwin::gui::testing;

namespace {

// `ranks` ranks, rank k's compute stream busy for (k % 5) ms of a 4 ms step (capped at 4).
std::shared_ptr<const Trace> graded(int ranks) {
  StepReport r;
  r.source = "predicted";
  r.step_time_s = 4e-3;
  for (int k = 0; k < ranks; ++k) {
    r.ops.push_back(op("dp.allreduce", k, Stream::dp, OpKind::collective, 0, 4e-3));
    double busy = std::min(4, k % 5) * 1e-3;
    if (busy > 0) {
      r.ops.push_back(op("fwd", k, Stream::compute, OpKind::compute, 0, busy / 2));
      r.ops.push_back(op("bwd", k, Stream::compute, OpKind::compute, busy / 4, busy * 3 / 4));  // overlaps: counted once
    }
  }
  return trace_of(r);
}

}  // namespace

class OverviewWidgetTest : public QObject {
  Q_OBJECT
 private slots:
  void BusyShareIsTheComputeStreamsUnionOverTheSpan() {
    auto t = graded(6);
    auto shares = busy_shares(*t);
    QCOMPARE(shares.size(), std::size_t(6));
    const double want[] = {0, 0.25, 0.5, 0.75, 1.0, 0};  // communication does not count
    for (int k = 0; k < 6; ++k) QVERIFY2(qAbs(shares[static_cast<std::size_t>(k)] - want[k]) < 1e-9, qPrintable(QString::number(shares[k])));
    QCOMPARE(OverviewWidget::share_colour(0), QColor(247, 251, 255));
    QVERIFY(OverviewWidget::share_colour(1).lightness() < 80);
  }

  void CellsMapToRanksAndGroupThemWhenRanksOutnumberPixels() {
    OverviewWidget w;
    w.resize(96 + 100, OverviewWidget::strip_height);  // 100 pixels of cells
    w.set_trace(graded(16));
    QCOMPARE(w.cell_count(), 16);  // fewer ranks than pixels: one cell each
    QCOMPARE(w.processes_of_cell(5), (std::pair<std::size_t, std::size_t>(5, 6)));
    QCOMPARE(w.cell_at(96 + 5 * 100 / 16 + 1), 5);
    w.set_trace(graded(1000));
    QCOMPARE(w.cell_count(), 100);  // 10 ranks per cell
    QCOMPARE(w.processes_of_cell(0), (std::pair<std::size_t, std::size_t>(0, 10)));
    QCOMPARE(w.processes_of_cell(37), (std::pair<std::size_t, std::size_t>(370, 380)));
    QCOMPARE(w.cell_at(96 + 37), 37);
    QCOMPARE(w.cell_at(10), -1);  // the caption
    // Every rank belongs to exactly one cell.
    std::size_t next = 0;
    for (int c = 0; c < w.cell_count(); ++c) {
      QCOMPARE(w.processes_of_cell(c).first, next);
      next = w.processes_of_cell(c).second;
    }
    QCOMPARE(next, std::size_t(1000));
    QSignalSpy clicked(&w, &OverviewWidget::process_clicked);
    QTest::mouseClick(&w, Qt::LeftButton, Qt::NoModifier, QPoint(96 + 37, OverviewWidget::strip_height / 2));
    QCOMPARE(clicked.count(), 1);
    QCOMPARE(clicked.at(0).at(0).value<std::size_t>(), std::size_t(370));
  }

  void ClickingACellScrollsTheTimelineToThatRank() {
    MainWindow window;
    window.resize(1200, 700);
    QTemporaryDir dir;
    std::string path = write(dir, "t.json", to_trace(small_step(64)).dump());  // 64 identical ranks: one folded class
    QVERIFY(window.open_traces({QString::fromStdString(path)}).isEmpty());
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    OverviewWidget* o = window.overview();
    QVERIFY(o);
    QCOMPARE(o->shares().size(), std::size_t(64));
    QVERIFY(qAbs(o->shares()[0] - 0.75) < 1e-9);  // qkv and mlp: 3 of 4 ms
    int cell = o->cell_count() - 1;  // the last rank
    auto [first, last] = o->processes_of_cell(cell);
    QCOMPARE(last, std::size_t(64));
    QTest::mouseClick(o, Qt::LeftButton, Qt::NoModifier, o->cell_rect(cell).center());
    TimelineWidget* t = window.timeline();
    QVERIFY(t->is_expanded(0));  // unfolded to show it
    int row = t->row_of(static_cast<long long>(first) + 1, 0);
    QVERIFY(row >= 0);
    QVERIFY2(t->row_top(row) >= TimelineWidget::ruler_height && t->row_top(row) < t->height(), qPrintable(QString::number(t->row_top(row))));
  }

  void TheDetailsPaneFollowsTheSelectionAndEnterStepsThroughMatches() {
    MainWindow window;
    window.resize(1400, 700);
    QTemporaryDir dir;
    std::string path = write(dir, "t.json", to_trace(small_step(1)).dump());
    QVERIFY(window.open_traces({QString::fromStdString(path)}).isEmpty());
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    window.search_box()->setText("mb0");
    window.search_box()->setFocus();
    QTest::keyClick(window.search_box(), Qt::Key_Return);
    TimelineWidget* t = window.timeline();
    QVERIFY(t->selected());
    QVERIFY2(window.details_panel()->toPlainText().contains("L0.attn.qkv.fwd.mb0"), qPrintable(window.details_panel()->toPlainText()));
    QTest::keyClick(window.search_box(), Qt::Key_Return);
    QVERIFY(window.details_panel()->toPlainText().contains("L0.mlp.fwd.mb0"));
    QTest::keyClick(window.search_box(), Qt::Key_Return, Qt::ShiftModifier);
    QVERIFY(window.details_panel()->toPlainText().startsWith("L0.attn.qkv.fwd.mb0"));
    t->select(std::nullopt);
    QVERIFY(window.details_panel()->toPlainText().contains("Click an op"));
  }
};

QTEST_MAIN(OverviewWidgetTest)
#include "overview_widget_test.moc"
