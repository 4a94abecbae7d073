// The timeline rendered offscreen: pixel colours at the times of known ops, sub-pixel merging,
// compare colours, and zoom / pan / box zoom / fold driven by QTest events.
#include <QtTest>
#include <QSignalSpy>
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
  // --- selection, dependencies, sub-rows, labels, next/previous, measuring (issue 17) ---

  void ClickSelectsASliceOutlinesItAndTheDetailsListItsArgs() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 200);
    w.set_traces(trace_of(small_step(1)));
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    w.zoom_to(0, 4.1e-3);
    int compute = w.row_of(1, 1);
    QSignalSpy changed(&w, &TimelineWidget::selection_changed);
    QTest::mouseClick(&w, Qt::LeftButton, Qt::NoModifier, QPoint(w.x_of(2e-3), mid_y(w, compute)));
    QVERIFY(w.selected().has_value());
    QCOMPARE(changed.count(), 1);
    QCOMPARE(w.trace_of(*w.selected()).name_of(w.slice_of(*w.selected())), std::string("L0.mlp.fwd.mb0"));
    QString d = w.details_html();
    for (const char* want : {"L0.mlp.fwd.mb0", "<td>rank</td><td>0</td>", "<td>stream</td><td>compute</td>",
                             "<td>category</td><td>compute</td>", "<td>start</td><td>1 ms</td>", "<td>duration</td><td>2 ms</td>",
                             "<td>flops</td><td>6 TFLOP</td>", "<td>bytes</td><td>1 GB</td>",
                             "<td>tflops_per_s</td><td>3000.0 TFLOP/s</td>", "<td>gbytes_per_s</td><td>500.0 GB/s</td>",
                             "depends on", "L0.attn.qkv.fwd.mb0", "needed by", "grads.bucket0.allreduce"})
      QVERIFY2(d.contains(want), qPrintable(QString(want) + " not in " + d));
    // The outline: selection colour just outside the slice's top edge (1 ms is 200 px).
    QImage image = render(w);
    QColor outline = pixel(image, w.x_of(2e-3), w.row_top(compute) + 1);
    QVERIFY2(outline.red() > 230 && outline.green() > 150 && outline.blue() < 60, qPrintable(outline.name()));
    // A click on nothing clears it, and so does Esc.
    QTest::mouseClick(&w, Qt::LeftButton, Qt::NoModifier, QPoint(w.x_of(3.6e-3), mid_y(w, compute)));
    QVERIFY(!w.selected());
    QTest::mouseClick(&w, Qt::LeftButton, Qt::NoModifier, QPoint(w.x_of(0.5e-3), mid_y(w, compute)));
    QVERIFY(w.selected());
    QTest::keyClick(&w, Qt::Key_Escape);
    QVERIFY(!w.selected());
    QVERIFY(w.details_html().isEmpty());
  }

  void DetailsOfAComparedOpGiveBothDurationsAsDitwinCompareDoes() {
    StepReport measured = small_step(1, "measured");
    for (auto& o : measured.ops)
      if (o.name == "L0.mlp.fwd.mb0") o.duration_s *= 1.6;  // 3.2 ms measured against 2 ms predicted
    auto p = trace_of(small_step(1));
    auto m = trace_of(measured);
    auto c = std::make_shared<const Comparison>(compare(*p, *m));
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 300);
    w.set_traces(p, m, c);
    int row = w.row_of(1, 1, true);
    const auto& r = w.rows()[static_cast<std::size_t>(row)];
    w.select(TimelineWidget::SliceRef{true, r.process, r.track, 1});
    QString d = w.details_html();
    for (const char* want : {"<td>trace</td><td>measured</td>", "<td>predicted</td><td>2 ms</td>", "<td>measured</td><td>3.2 ms</td>",
                             "<td>predicted / measured - 1</td><td>-37.5%</td>"})
      QVERIFY2(d.contains(want), qPrintable(QString(want) + " not in " + d));
  }

  void ArrowsRunFromEachDependencyToTheSelectedOpAndOnToItsDependents() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 200);
    w.set_traces(trace_of(small_step(2)));  // two identical ranks: arrows stay on the rank selected
    w.set_expanded(0, true);
    w.zoom_to(0, 4.1e-3);
    const Trace& t = *w.primary();
    auto p2 = *t.process_of(2);  // rank 1
    const auto& tracks = t.processes[p2].tracks;
    std::size_t compute = 0;
    while (tracks[compute].tid != 1) ++compute;
    w.select(TimelineWidget::SliceRef{false, p2, compute, 1});  // mlp
    const auto& arrows = w.arrows();
    QCOMPARE(arrows.size(), std::size_t(2));
    QVERIFY(!arrows[0].dependent);
    QCOMPARE(t.name_of(w.slice_of(arrows[0].from)), std::string("L0.attn.qkv.fwd.mb0"));
    QCOMPARE(arrows[0].from.process, p2);
    QVERIFY(arrows[0].to == *w.selected());
    QVERIFY(arrows[1].dependent);
    QVERIFY(arrows[1].from == *w.selected());
    QCOMPARE(t.name_of(w.slice_of(arrows[1].to)), std::string("grads.bucket0.allreduce"));
    QCOMPARE(arrows[1].to.process, p2);
    // Drawn: the dependent arrow runs from mlp's end (3 ms, compute lane) to the all-reduce's
    // start (2 ms, dp lane); its head sits at the all-reduce's start.
    QImage image = render(w);
    int dp = w.row_of(2, 4);
    QColor head = pixel(image, w.x_of(2e-3) + 3, mid_y(w, dp) - 1);
    QVERIFY2(head.red() > 120 && head.green() < 110 && head.blue() > 100, qPrintable(head.name()));  // magenta
    // Without deps in the trace there are no arrows.
    w.set_traces(std::make_shared<const Trace>(parse_trace(std::string(
        R"({"traceEvents":[{"ph":"X","name":"a","pid":1,"tid":1,"ts":0,"dur":5},{"ph":"X","name":"b","pid":1,"tid":1,"ts":5,"dur":5}]})"), "t")));
    w.select(TimelineWidget::SliceRef{false, 0, 0, 1});
    QVERIFY(w.arrows().empty());
  }

  void OverlappingSlicesAreStackedInSubRowsFirstFreeAtTheirStart() {
    // a 0-10, b 2-5 (inside a), c 6-12 (overlaps a: b's sub-row is free again), d 11-13 (a is
    // over), e 13-14 (touches d: same sub-row). In microseconds.
    const char* text = R"({"traceEvents":[
      {"ph":"X","name":"a","pid":1,"tid":7,"ts":0,"dur":10},{"ph":"X","name":"b","pid":1,"tid":7,"ts":2,"dur":3},
      {"ph":"X","name":"c","pid":1,"tid":7,"ts":6,"dur":6},{"ph":"X","name":"d","pid":1,"tid":7,"ts":11,"dur":2},
      {"ph":"X","name":"e","pid":1,"tid":7,"ts":13,"dur":1},{"ph":"X","name":"x","pid":1,"tid":8,"ts":0,"dur":14}]})";
    auto trace = std::make_shared<const Trace>(parse_trace(std::string(text), "overlap.json"));
    const Track& tr = trace->processes[0].tracks[0];
    QCOMPARE(tr.depth, 2);
    std::vector<int> rows;
    for (std::size_t i = 0; i < tr.slices.size(); ++i) rows.push_back(tr.sub_row_of(i));
    QCOMPARE(rows, (std::vector<int>{0, 1, 1, 0, 0}));
    QCOMPARE(trace->processes[0].tracks[1].depth, 1);
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 700, 200);
    w.set_traces(trace);
    w.zoom_to(0, 14e-6);  // 50 px per microsecond
    QCOMPARE(w.row_pixels(0), 2 * TimelineWidget::row_height);  // the lane grows
    QCOMPARE(w.row_top(1), w.row_top(0) + 2 * TimelineWidget::row_height);
    QImage image = render(w);
    auto at = [&](double us, int sub) { return pixel(image, w.x_of(us * 1e-6) + 3, w.row_top(0) + sub * TimelineWidget::row_height + 4); };
    const auto& row = w.rows()[0];
    QCOMPARE(at(2, 0), w.colour_of(row, 0));  // a, under b
    QCOMPARE(at(2, 1), w.colour_of(row, 1));  // b
    QCOMPARE(at(10, 1), w.colour_of(row, 2));  // c, beside a
    QCOMPARE(at(11, 0), w.colour_of(row, 3));  // d
    QVERIFY(at(0.5, 1).lightness() > 230);     // sub-row 1 empty before b
    // A click in the second sub-row picks what is drawn there.
    auto hit = w.hit_at(QPoint(w.x_of(3e-6), w.row_top(0) + TimelineWidget::row_height + 8));
    QVERIFY(hit);
    QCOMPARE(hit->slice, std::size_t(1));
    hit = w.hit_at(QPoint(w.x_of(3e-6), w.row_top(0) + 8));
    QVERIFY(hit);
    QCOMPARE(hit->slice, std::size_t(0));
  }

  void LaneLabelsAreElidedAndTheTooltipHasThemWhole() {
    StepReport r = small_step(4);
    auto j = to_trace(r);
    for (auto& e : j["traceEvents"])  // a long process name, as hand-made traces have
      if (e["ph"] == "M" && e["name"] == "process_name") e["args"]["name"] = "rank " + std::to_string(e["pid"].get<int>() - 1) + " (stage 0, data parallel replica of a long name)";
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 600, 200);
    w.set_traces(std::make_shared<const Trace>(parse_trace(j, "long.json")));
    QString full = w.rank_label(w.rows()[0]);
    QVERIFY2(full.endsWith(QString::fromUtf8(" \u00d74")), qPrintable(full));  // the fold count is part of it
    QFontMetrics fm(w.font());
    QVERIFY(fm.horizontalAdvance(full) > TimelineWidget::label_width);  // too long: painted elided
    QString elided = fm.elidedText(full, Qt::ElideRight, TimelineWidget::label_width / 2);
    QVERIFY(elided.endsWith(QString::fromUtf8("\u2026")));
    QString tip = w.tooltip_at(QPoint(20, mid_y(w, 0)));
    QVERIFY2(tip.contains(full.toHtmlEscaped()) && tip.contains("step"), qPrintable(tip));
  }

  void NextAndPreviousMatchStepInTimeOrderAcrossLanes() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 200);
    w.set_traces(trace_of(small_step(1)));
    w.zoom_to(0, 1e-3);
    w.set_search("0");  // ProfilerStep#0 (0 ms, step lane), qkv (0 ms, compute), mlp (1 ms), all-reduce (2 ms)
    QCOMPARE(w.search_matches(), std::size_t(4));
    auto name = [&] { return w.trace_of(*w.selected()).name_of(w.slice_of(*w.selected())); };
    std::vector<std::string> forward;
    for (int i = 0; i < 5; ++i) {
      QVERIFY(w.step_match(true));
      forward.push_back(name());
    }
    QCOMPARE(forward, (std::vector<std::string>{"ProfilerStep#0", "L0.attn.qkv.fwd.mb0", "L0.mlp.fwd.mb0",
                                                "grads.bucket0.allreduce", "ProfilerStep#0"}));  // wraps
    QVERIFY(w.step_match(false));
    QCOMPARE(name(), std::string("grads.bucket0.allreduce"));  // back over the wrap
    QVERIFY(w.step_match(false));
    QCOMPARE(name(), std::string("L0.mlp.fwd.mb0"));
    // Centred: the match's middle (2 ms) is in the middle of the view.
    QVERIFY(qAbs((w.mapping().start_s() + w.mapping().end_s()) / 2 - 2e-3) < 1e-9);
    w.set_search("no such op");
    QVERIFY(!w.step_match(true));
  }

  void CtrlDragMeasuresATimeRangeShownOnTheRuler() {
    TimelineWidget w;
    w.resize(TimelineWidget::label_width + 820, 200);
    w.set_traces(trace_of(small_step(1)));
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    w.zoom_to(0, 4.1e-3);
    TimeMapping before = w.mapping();
    int y = mid_y(w, w.row_of(1, 1));
    QTest::mousePress(&w, Qt::LeftButton, Qt::ControlModifier, QPoint(w.x_of(1e-3), y));
    QTest::mouseMove(&w, QPoint(w.x_of(2e-3), y));
    QTest::mouseRelease(&w, Qt::LeftButton, Qt::ControlModifier, QPoint(w.x_of(3e-3), y));
    QVERIFY(w.measure());
    QCOMPARE(w.mapping(), before);  // no pan
    double px = before.seconds_per_px();
    QVERIFY(qAbs(w.measure()->first - 1e-3) <= px && qAbs(w.measure()->second - 3e-3) <= px);
    QString d = w.details_html();
    QString length = format_time(w.measure()->second - w.measure()->first);  // whole pixels: 1.995 ms
    QVERIFY2(d.contains("time range") && d.contains("<td>length</td><td>" + length + "</td>"), qPrintable(d));
    QVERIFY(qAbs(w.measure()->second - w.measure()->first - 2e-3) <= 2 * px);
    // The ruler shows it: a band of the measure colour in the middle of the range, on the ruler.
    QImage image = render(w);
    QColor label = pixel(image, w.x_of(2e-3) - 20, 5);
    QVERIFY2(label.green() > 120 && label.red() < 60, qPrintable(label.name()));
    QTest::keyClick(&w, Qt::Key_Escape);
    QVERIFY(!w.measure());
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
