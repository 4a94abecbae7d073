// The timeline rendered offscreen: pixel colours at the times of known ops, sub-pixel merging,
// compare colours, and zoom / pan / box zoom / fold driven by QTest events.
#include <QtTest>
#include <QWheelEvent>

#include "gui/tests/fixtures.hpp"
#include "gui/timeline_widget.hpp"

using namespace ditwin;
using namespace ditwin::gui;
using namespace ditwin::gui::testing;

namespace {

QImage render(TimelineWidget& w) { return w.grab().toImage().convertToFormat(QImage::Format_RGB32); }

QColor pixel(const QImage& image, int x, int y) { return QColor(image.pixel(x, y)); }

int mid_y(const TimelineWidget& w, int row) { return w.row_top(row) + TimelineWidget::row_height / 2; }

}  // namespace

class TimelineWidgetTest : public QObject {
  Q_OBJECT
 private slots:
  void PaintsEachOpInItsColourAtItsTime() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 200);
    w.set_traces(trace_of(small_step(1)));
    w.zoom_to(0, 4.1e-3);  // 0.005 ms per pixel: 1 ms is 200 px
    QImage image = render(w);
    int compute = w.row_of(1, 1), dp = w.row_of(1, 4);
    QVERIFY(compute >= 0 && dp >= 0);
    const auto& rows = w.rows();
    // qkv 0-1 ms and mlp 1-3 ms on compute; the all-reduce 2-4 ms on dp. Check near each op's
    // left end (names are written from 4 px in) and a gap where nothing runs.
    QCOMPARE(pixel(image, w.x_of(0.2e-3), w.row_top(compute) + 3), w.colour_of(rows[compute], 0));
    QCOMPARE(pixel(image, w.x_of(1.2e-3), w.row_top(compute) + 3), w.colour_of(rows[compute], 1));
    QCOMPARE(pixel(image, w.x_of(2.5e-3), w.row_top(dp) + 3), w.colour_of(rows[dp], 0));
    QColor gap = pixel(image, w.x_of(1.0e-3), w.row_top(dp) + 3);  // dp idle before 2 ms
    QVERIFY(gap != w.colour_of(rows[dp], 0));
    QVERIFY(gap.lightness() > 230);
    QColor after = pixel(image, w.x_of(3.5e-3), mid_y(w, compute));  // compute idle after 3 ms
    QVERIFY(after.lightness() > 230);
    // Compute and communication are told apart by colour.
    QVERIFY(w.colour_of(rows[compute], 1).blue() > w.colour_of(rows[compute], 1).red());
    QVERIFY(w.colour_of(rows[dp], 0).red() > w.colour_of(rows[dp], 0).blue());
  }

  void MergesSubPixelSlicesSoEveryBusyPixelIsPainted() {
    StepReport r;
    r.source = "predicted";
    r.step_time_s = 1.0;
    // 50,000 ops of 5 us every 10 us over the first half second: at 0.5 ms per pixel, 50 of them
    // share each pixel column.
    for (int i = 0; i < 50000; ++i) r.ops.push_back(op("tiny" + std::to_string(i % 7), 0, Stream::compute, OpKind::compute, i * 1e-5, 5e-6));
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 2000, 120);
    w.set_traces(trace_of(r));
    w.zoom_to(0, 1.0);
    QImage image = render(w);
    int row = w.row_of(1, 1);
    int y = mid_y(w, row);
    int busy = 0;
    for (int x = w.x_of(0.01); x < w.x_of(0.49); ++x) busy += pixel(image, x, y).lightness() < 200 ? 1 : 0;
    QCOMPARE(busy, w.x_of(0.49) - w.x_of(0.01));
    int idle = 0;  // after the last op (0.5 s) the lane is empty
    for (int x = w.x_of(0.51); x < w.x_of(0.99); ++x) idle += pixel(image, x, y).lightness() > 230 ? 1 : 0;
    QCOMPARE(idle, w.x_of(0.99) - w.x_of(0.51));
  }

  void ComparePairsLanesAndColoursOpsByRelativeError() {
    StepReport measured = small_step(1, "measured");
    for (auto& o : measured.ops)
      if (o.name == "L0.mlp.fwd.mb0") o.duration_s *= 2.5;  // 2.5 times as long as predicted
    auto p = trace_of(small_step(1));
    auto m = trace_of(measured);
    auto c = std::make_shared<const Comparison>(compare(*p, *m));
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 300);
    w.set_traces(p, m, c);
    w.zoom_to(0, 4.1e-3);
    int predicted = w.row_of(1, 1, false), measured_row = w.row_of(1, 1, true);
    QCOMPARE(measured_row, predicted + 1);  // paired, measured right below
    QImage image = render(w);
    QColor slow = pixel(image, w.x_of(1.2e-3), w.row_top(predicted) + 3);
    const double e = 1 / 2.5 - 1;  // predicted / measured - 1, as ditwin compare: -60%
    QCOMPARE(slow, TimelineWidget::error_colour(e));
    QVERIFY(slow.red() > 180 && slow.green() < 100);  // red: slower than predicted
    QCOMPARE(pixel(image, w.x_of(1.2e-3), w.row_top(measured_row) + 3), TimelineWidget::error_colour(e));
    QColor exact = pixel(image, w.x_of(0.2e-3), w.row_top(predicted) + 3);
    QCOMPARE(exact, TimelineWidget::error_colour(0.0));
    QVERIFY(exact.green() > exact.red());  // green: on the prediction
  }

  void WheelZoomsAboutTheCursorAndDragPans() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 800, 200);
    w.set_traces(trace_of(small_step(1)));
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    TimeMapping before = w.mapping();
    QPoint at(TimelineWidget::label_width + 200, 60);
    double t_at = before.t_of(200);
    QWheelEvent wheel(at, w.mapToGlobal(at), QPoint(), QPoint(0, 240), Qt::NoButton, Qt::NoModifier, Qt::NoScrollPhase, false);
    QApplication::sendEvent(&w, &wheel);
    QVERIFY(qAbs(w.mapping().span_s() - before.span_s() / 2) < 1e-12);  // two notches: 2x
    QVERIFY(qAbs(w.mapping().t_of(200) - t_at) < 1e-12);
    TimeMapping zoomed = w.mapping();
    QTest::mousePress(&w, Qt::LeftButton, Qt::NoModifier, QPoint(TimelineWidget::label_width + 400, 60));
    QTest::mouseMove(&w, QPoint(TimelineWidget::label_width + 300, 60));
    QTest::mouseRelease(&w, Qt::LeftButton, Qt::NoModifier, QPoint(TimelineWidget::label_width + 300, 60));
    QVERIFY(qAbs(w.mapping().start_s() - (zoomed.start_s() + 100 * zoomed.seconds_per_px())) < 1e-12);
    QCOMPARE(w.mapping().span_s(), zoomed.span_s());
    QTest::keyClick(&w, Qt::Key_F);
    QVERIFY(qAbs(w.mapping().span_s() - before.span_s()) < 1e-12);
  }

  void BoxZoomShowsTheDraggedRangeAndDoubleClickFits() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 800, 200);
    w.set_traces(trace_of(small_step(1)));
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    TimeMapping fit = w.mapping();
    double t0 = fit.t_of(100), t1 = fit.t_of(300);
    QTest::mousePress(&w, Qt::RightButton, Qt::NoModifier, QPoint(TimelineWidget::label_width + 100, 80));
    QTest::mouseMove(&w, QPoint(TimelineWidget::label_width + 300, 90));
    QTest::mouseRelease(&w, Qt::RightButton, Qt::NoModifier, QPoint(TimelineWidget::label_width + 300, 90));
    QVERIFY(qAbs(w.mapping().start_s() - t0) < 1e-12);
    QVERIFY(qAbs(w.mapping().end_s() - t1) < 1e-12);
    QTest::mouseDClick(&w, Qt::LeftButton, Qt::NoModifier, QPoint(TimelineWidget::label_width + 100, 80));
    QVERIFY(qAbs(w.mapping().span_s() - fit.span_s()) < 1e-12);
  }

  void ClickingARankLabelExpandsItsFoldedClass() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 600, 400);
    w.set_traces(trace_of(small_step(8)));
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    QCOMPARE(w.rows().size(), std::size_t(3));  // one class of 8 ranks: step, compute, dp
    QCOMPARE(w.rows()[0].class_size, std::size_t(8));
    QTest::mouseClick(&w, Qt::LeftButton, Qt::NoModifier, QPoint(20, mid_y(w, 0)));
    QCOMPARE(w.rows().size(), std::size_t(24));
    QCOMPARE(w.rows()[0].class_size, std::size_t(1));
    QCOMPARE(w.row_of(8, 4), 23);  // rank 7 is pid 8
    QTest::mouseClick(&w, Qt::LeftButton, Qt::NoModifier, QPoint(20, mid_y(w, 0)));
    QCOMPARE(w.rows().size(), std::size_t(3));
  }

  void SearchHighlightsMatchesAndDimsTheRest() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 200);
    w.set_traces(trace_of(small_step(1)));
    w.zoom_to(0, 4.1e-3);
    w.set_search("MLP");
    QCOMPARE(w.search_matches(), std::size_t(1));
    QImage image = render(w);
    int compute = w.row_of(1, 1);
    QColor qkv = w.colour_of(w.rows()[compute], 0), mlp = w.colour_of(w.rows()[compute], 1);
    // Just inside each op's left end, mid-height: clear of the outline and of the name.
    QColor dimmed = pixel(image, w.x_of(0) + 4, mid_y(w, compute));
    QVERIFY(dimmed != qkv && dimmed.lightness() > qkv.lightness() + 40);
    QCOMPARE(pixel(image, w.x_of(1e-3) + 4, mid_y(w, compute)), mlp);
    QColor outline = pixel(image, w.x_of(1e-3) + 1, mid_y(w, compute));
    QVERIFY(outline.lightness() < 40);
    w.set_search("");
    QCOMPARE(w.search_matches(), std::size_t(0));
  }

  void FailureInstantsShowAsMarkersAtAnyZoom() {
    const char* text = R"json({"traceEvents":[
      {"ph":"X","name":"train","pid":1,"tid":0,"ts":0,"dur":3.6e10,"cat":"train"},
      {"ph":"i","s":"t","name":"failure: GPU","pid":1,"tid":2,"ts":1.8e10,"cat":"failure"}],
      "otherData":{"kind":"longrun"}})json";
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 1000, 120);
    w.set_traces(std::make_shared<const Trace>(parse_trace(std::string(text), "run.json")));
    QVERIFY(w.primary()->is_run);
    int lane = w.row_of(1, 2);
    QImage image = render(w);  // ten hours over 1000 px: the instant has no width of its own
    QColor marker = pixel(image, w.x_of(1.8e4), mid_y(w, lane));
    QVERIFY(marker.red() > 200 && marker.green() < 60);
    QVERIFY(pixel(image, w.x_of(1.8e4) - 6, mid_y(w, lane)).lightness() > 230);
    QVERIFY(pixel(image, w.x_of(1.0e4), mid_y(w, w.row_of(1, 0))).green() > 150);  // train: green
  }
  void TooltipNamesTheOpWithItsFigures() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 200);
    w.set_traces(trace_of(small_step(1)));
    w.zoom_to(0, 4.1e-3);
    QString tip = w.tooltip_at(QPoint(w.x_of(0.5e-3), mid_y(w, w.row_of(1, 1))));
    QVERIFY2(tip.contains("L0.attn.qkv.fwd.mb0"), qPrintable(tip));
    QVERIFY2(tip.contains("duration: 1 ms"), qPrintable(tip));
    QVERIFY2(tip.contains("2 TFLOP"), qPrintable(tip));
    QVERIFY2(tip.contains("2000.0 TFLOP/s"), qPrintable(tip));  // 2e12 FLOP in 1 ms
    QVERIFY2(tip.contains("4000.0 GB/s"), qPrintable(tip));     // 4e9 B in 1 ms
    QVERIFY(w.tooltip_at(QPoint(w.x_of(3.6e-3), mid_y(w, w.row_of(1, 1)))).isEmpty());
  }
};

QTEST_MAIN(TimelineWidgetTest)
#include "timeline_widget_test.moc"
