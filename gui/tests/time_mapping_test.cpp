// The time-to-pixel mapping, tested as a plain value: no display, no widget.
#include <QtTest>

#include "gui/time_mapping.hpp"

using ditwin::gui::TimeMapping;

class TimeMappingTest : public QObject {
  Q_OBJECT
 private slots:
  void MapsTimesToPixelsLinearly() {
    TimeMapping m(1.0, 3.0, 1000);
    QCOMPARE(m.x_of(1.0), 0.0);
    QCOMPARE(m.x_of(3.0), 1000.0);
    QCOMPARE(m.x_of(2.0), 500.0);
    QCOMPARE(m.t_of(250), 1.5);
    QCOMPARE(m.seconds_per_px(), 0.002);
  }
  void ZoomKeepsTheTimeUnderTheCursor() {
    TimeMapping m(0.0, 10.0, 1000);
    TimeMapping z = m.zoomed(4, 300);
    QVERIFY(qAbs(z.t_of(300) - m.t_of(300)) < 1e-12);
    QVERIFY(qAbs(z.span_s() - 2.5) < 1e-12);
    TimeMapping back = z.zoomed(0.25, 300);
    QVERIFY(qAbs(back.start_s() - 0.0) < 1e-12 && qAbs(back.end_s() - 10.0) < 1e-12);
  }
  void ZoomStopsAtANanosecondAndIgnoresNonsense() {
    TimeMapping m(0.0, 1e-6, 1000);
    QCOMPARE(m.zoomed(1e9, 500).span_s(), TimeMapping::min_span_s);
    QCOMPARE(m.zoomed(0, 10), m);
    QCOMPARE(m.zoomed(-2, 10), m);
    QCOMPARE(m.zoomed(std::numeric_limits<double>::quiet_NaN(), 10), m);
  }
  void PanMovesTheContentByPixels() {
    TimeMapping m(0.0, 1.0, 1000);
    TimeMapping p = m.panned(100);  // dragged right: earlier times come into view
    QVERIFY(qAbs(p.start_s() + 0.1) < 1e-12);
    QVERIFY(qAbs(p.x_of(0.0) - 100) < 1e-9);
    QCOMPARE(p.span_s(), m.span_s());
  }
  void FitShowsTheDataWithAOnePercentMargin() {
    TimeMapping f = TimeMapping::fit(2.0, 4.0, 800);
    QVERIFY(qAbs(f.start_s() - 1.98) < 1e-12);
    QVERIFY(qAbs(f.end_s() - 4.02) < 1e-12);
    QCOMPARE(f.width_px(), 800.0);
  }
  void ClampStopsZoomingOutPastTheDataAndScrollingOffIt() {
    TimeMapping wide(-100, 100, 500);
    TimeMapping c = wide.clamped(0, 10);
    QVERIFY(qAbs(c.start_s() + 0.1) < 1e-12 && qAbs(c.end_s() - 10.1) < 1e-12);
    TimeMapping past(50, 51, 500);
    TimeMapping d = past.clamped(0, 10);
    QVERIFY(qAbs(d.end_s() - 10.1) < 1e-12 && qAbs(d.span_s() - 1) < 1e-12);
    TimeMapping inside(2, 3, 500);
    QCOMPARE(inside.clamped(0, 10), inside);
  }
  void ResizeKeepsTheTimeRange() {
    TimeMapping m(1, 2, 400);
    TimeMapping r = m.resized(1600);
    QCOMPARE(r.start_s(), 1.0);
    QCOMPARE(r.end_s(), 2.0);
    QCOMPARE(r.x_of(1.5), 800.0);
  }
};

QTEST_APPLESS_MAIN(TimeMappingTest)
#include "time_mapping_test.moc"
