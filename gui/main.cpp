// ditwin-gui: opens one trace, or a predicted/measured pair; `--screenshot out.png` renders the
// window to a PNG without a display and exits.
#include <QApplication>
#include <QCommandLineParser>
#include <QElapsedTimer>
#include <QImage>
#include <QLineEdit>
#include <QTimer>

#include <cstdio>
#include <cstdlib>

#include "gui/main_window.hpp"
#include "gui/timeline_widget.hpp"

namespace {

bool wants_screenshot(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    QByteArray a(argv[i]);
    if (a == "--screenshot" || a.startsWith("--screenshot=")) return true;
  }
  return false;
}

int fail(const QString& message) {
  std::fprintf(stderr, "ditwin-gui: %s\n", message.toLocal8Bit().constData());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // A screenshot needs no display: pick the offscreen platform unless the caller chose one.
  if (wants_screenshot(argc, argv) && qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  QApplication::setApplicationName("ditwin-gui");

  QCommandLineParser parser;
  parser.setApplicationDescription("Timeline viewer for ditwin traces: one trace, or a predicted and a measured one to compare.");
  parser.addHelpOption();
  parser.addPositionalArgument("TRACE", "a trace (ditwin simulate --trace), predicted when two are given");
  parser.addPositionalArgument("[TRACE2]", "a measured trace to compare with the first");
  QCommandLineOption screenshot("screenshot", "render the window to FILE (PNG) and exit", "FILE");
  QCommandLineOption size("size", "window size for --screenshot, WIDTHxHEIGHT (default 1600x1000)", "WxH", "1600x1000");
  QCommandLineOption report("report", "a step report (ditwin simulate --report) for the side panel", "FILE");
  QCommandLineOption report2("report2", "the measured run's report", "FILE");
  QCommandLineOption search("search", "highlight ops whose name contains TEXT", "TEXT");
  QCommandLineOption range("range", "show the times FROM:TO, in milliseconds", "FROM:TO");
  QCommandLineOption expand("expand", "expand every folded rank class");
  QCommandLineOption select("select", "select the first op whose name contains TEXT (details, dependency arrows)", "TEXT");
  QCommandLineOption measure("measure", "measure the times FROM:TO, in milliseconds", "FROM:TO");
  QCommandLineOption timings("timings", "print the time to load the traces and to paint the window (stderr)");
  parser.addOptions({screenshot, size, report, report2, search, range, expand, select, measure, timings});
  parser.process(app);

  ditwin::gui::MainWindow window;
  QStringList traces = parser.positionalArguments();
  bool shot = parser.isSet(screenshot);
  if (shot && traces.empty()) return fail("--screenshot needs a trace");
  if (traces.size() > 2) return fail("give one trace, or two: predicted then measured");

  auto report_error = [&](const QString& message) {
    if (shot) return fail(message);
    window.show_error(message);
    return 0;
  };
  QSize window_size(1600, 1000);
  {
    QStringList wh = parser.value(size).split('x');
    bool ok_w = false, ok_h = false;
    if (wh.size() == 2) window_size = QSize(wh[0].toInt(&ok_w), wh[1].toInt(&ok_h));
    if (!ok_w || !ok_h || window_size.width() < 400 || window_size.height() < 300 || window_size.width() > 8000 ||
        window_size.height() > 8000)
      return fail("--size: expected WIDTHxHEIGHT between 400x300 and 8000x8000, got " + parser.value(size));
  }
  window.resize(window_size);
  QElapsedTimer clock;
  clock.start();
  if (!traces.empty()) {
    QString error = window.open_traces(traces);
    if (parser.isSet(timings)) std::fprintf(stderr, "ditwin-gui: load %.0f ms\n", static_cast<double>(clock.nsecsElapsed()) / 1e6);
    if (!error.isEmpty()) {
      if (int rc = report_error(error); rc) return rc;
    }
  }
  for (auto [option, measured] : {std::pair{&report, false}, std::pair{&report2, true}})
    if (parser.isSet(*option)) {
      QString error = window.open_report(parser.value(*option), measured);
      if (!error.isEmpty())
        if (int rc = report_error(error); rc) return rc;
    }
  if (parser.isSet(expand)) window.timeline()->set_all_expanded(true);
  if (parser.isSet(search)) window.search_box()->setText(parser.value(search));
  window.show();
  QApplication::processEvents();
  if (parser.isSet(range)) {
    QStringList r = parser.value(range).split(':');
    bool ok_a = false, ok_b = false;
    double a = r.size() == 2 ? r[0].toDouble(&ok_a) : 0, b = r.size() == 2 ? r[1].toDouble(&ok_b) : 0;
    if (!ok_a || !ok_b || !(b > a)) return fail("--range: expected FROM:TO in milliseconds with FROM < TO, got " + parser.value(range));
    window.timeline()->zoom_to(a * 1e-3, b * 1e-3);
  }
  if (parser.isSet(select) && !window.timeline()->select_first(parser.value(select)))
    if (int rc = report_error("--select: no op's name contains " + parser.value(select)); rc) return rc;
  if (parser.isSet(measure)) {
    QStringList r = parser.value(measure).split(':');
    bool ok_a = false, ok_b = false;
    double a = r.size() == 2 ? r[0].toDouble(&ok_a) : 0, b = r.size() == 2 ? r[1].toDouble(&ok_b) : 0;
    if (!ok_a || !ok_b || !(b > a)) return fail("--measure: expected FROM:TO in milliseconds with FROM < TO, got " + parser.value(measure));
    window.timeline()->set_measure(a * 1e-3, b * 1e-3);
  }
  if (shot) {
    QApplication::processEvents();
    clock.restart();
    QImage image = window.grab().toImage();
    if (parser.isSet(timings)) {
      double window_ms = static_cast<double>(clock.nsecsElapsed()) / 1e6;
      clock.restart();
      (void)window.timeline()->grab();
      std::fprintf(stderr, "ditwin-gui: paint %.0f ms (window), %.1f ms (timeline alone, again)\n", window_ms,
                   static_cast<double>(clock.nsecsElapsed()) / 1e6);
    }
    QString out = parser.value(screenshot);
    if (!image.save(out, "PNG")) return fail(out + ": cannot write the PNG");
    std::printf("%s: %dx%d\n", out.toLocal8Bit().constData(), image.width(), image.height());
    return 0;
  }
  return app.exec();
}
