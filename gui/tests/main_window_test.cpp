// The window: a malformed trace shows an error and never crashes; a pair opens the compare view
// with its table sorted by the largest difference; a report fills the side panel.
#include <QtTest>
#include <QComboBox>
#include <QLineEdit>
#include <QMessageBox>
#include <QSortFilterProxyModel>
#include <QTableView>
#include <QTextBrowser>

#include "gui/main_window.hpp"
#include "gui/tests/fixtures.hpp"
#include "gui/timeline_widget.hpp"

using namespace ditwin;
using namespace ditwin::gui;
using namespace ditwin::gui::testing;

class MainWindowTest : public QObject {
  Q_OBJECT
 private slots:
  void MalformedTraceShowsAnErrorAndKeepsTheView_data() {
    QTest::addColumn<QString>("text");
    QTest::addColumn<QString>("message");
    QTest::newRow("truncated") << "{\"traceEvents\": [{\"ph\": \"X\"" << "not valid JSON";
    QTest::newRow("pid not integer") << R"({"traceEvents":[{"ph":"X","name":"a","pid":"r0","tid":1,"ts":0,"dur":1}]})"
                                     << "traceEvents[0].pid: expected an integer";
    QTest::newRow("missing fields") << R"({"traceEvents":[{"ph":"X","name":"a"}]})" << "missing \"pid\"";
    QTest::newRow("binary") << QString::fromLatin1("\x01\x02\xff\xfe") << "not valid JSON";
  }
  void MalformedTraceShowsAnErrorAndKeepsTheView() {
    QFETCH(QString, text);
    QFETCH(QString, message);
    QTemporaryDir dir;
    MainWindow w;
    w.resize(1000, 600);
    w.show();
    std::string good = write(dir, "good.json", to_trace(small_step(1)).dump());
    QVERIFY(w.open_or_explain({QString::fromStdString(good)}));
    std::string bad = write(dir, "bad.json", text.toStdString());
    QVERIFY(!w.open_or_explain({QString::fromStdString(bad)}));
    auto* box = w.findChild<QMessageBox*>();
    QVERIFY(box);
    QVERIFY(box->isVisible());
    QVERIFY2(box->text().contains(message), qPrintable(box->text()));
    QVERIFY(box->text().contains("bad.json"));
    QCOMPARE(w.timeline()->primary()->slice_count, std::size_t(4));  // the good trace is still shown
    box->accept();
  }
  void MissingSecondTraceIsAnErrorToo() {
    QTemporaryDir dir;
    MainWindow w;
    std::string good = write(dir, "good.json", to_trace(small_step(1)).dump());
    QString error = w.open_traces({QString::fromStdString(good), dir.filePath("absent.json")});
    QVERIFY2(error.contains("absent.json: cannot open"), qPrintable(error));
    QVERIFY(w.timeline()->primary() == nullptr);
    QVERIFY(!w.open_report(dir.filePath("absent.json")).isEmpty());
  }
  void PairOpensTheCompareViewSortedByLargestDifference() {
    QTemporaryDir dir;
    StepReport measured = small_step(2, "measured");
    for (auto& o : measured.ops) {
      if (o.name == "L0.attn.qkv.fwd.mb0") o.duration_s *= 1.1;
      if (o.name == "grads.bucket0.allreduce" && o.rank == 1) o.duration_s *= 2;  // +2 ms, the largest
    }
    std::string a = write(dir, "p.json", to_trace(small_step(2)).dump());
    std::string b = write(dir, "m.json", to_trace(measured).dump());
    MainWindow w;
    w.resize(1400, 900);
    QCOMPARE(w.open_traces({QString::fromStdString(a), QString::fromStdString(b)}), QString());
    w.show();
    QVERIFY(QTest::qWaitForWindowExposed(&w));
    QVERIFY(w.diff_table()->isVisible());
    auto* model = w.diff_table()->model();
    QCOMPARE(model->rowCount(), 6);  // 3 ops on 2 ranks: the step slices are the steps compared
    QCOMPARE(model->index(0, 0).data().toString(), QString("grads.bucket0.allreduce"));
    QCOMPARE(model->index(0, 1).data().toLongLong(), 1LL);
    QCOMPARE(model->index(0, 5).data().toString(), QString("-50.0%"));  // predicted / measured - 1
    // Sort by error, ascending: an exact match (0%) comes first.
    w.diff_table()->sortByColumn(5, Qt::AscendingOrder);
    QCOMPARE(model->index(0, 5).data().toString(), QString("+0.0%"));
    QVERIFY(w.metrics_panel()->toPlainText().contains("ops matched"));
    QVERIFY(w.metrics_panel()->toPlainText().contains("measured"));
  }
  void StepPickerComparesTheChosenMeasuredStep() {
    QTemporaryDir dir;
    StepReport measured = small_step(1, "measured");
    const double spans[] = {9e-3, 4e-3, 5e-3};
    double at = 0;
    for (int k = 0; k < 3; ++k) {
      for (OpRecord o : small_step(1, "measured").ops) {
        if (k == 2 && o.name == "L0.mlp.fwd.mb0") o.duration_s = 3e-3;
        o.start_s += at;
        measured.timeline.push_back(o);
      }
      measured.steps.push_back({at, spans[k]});
      at += spans[k];
    }
    std::string a = write(dir, "p.json", to_trace(small_step(1)).dump());
    std::string b = write(dir, "m.json", to_trace(measured).dump());
    MainWindow w;
    QCOMPARE(w.open_traces({QString::fromStdString(a), QString::fromStdString(b)}), QString());
    QCOMPARE(w.step_picker()->count(), 3);
    QCOMPARE(w.step_picker()->currentData().toLongLong(), 1LL);  // the median steady-state step
    QVERIFY(w.step_picker()->currentText().contains("median"));
    QCOMPARE(w.comparison()->measured_step, 1LL);
    QCOMPARE(w.compare_step(2), QString());
    QCOMPARE(w.comparison()->measured_step, 2LL);
    QCOMPARE(w.step_picker()->currentData().toLongLong(), 2LL);
    // The measured trace is drawn shifted so that step 2 starts where the predicted step does.
    const Trace* shown = w.timeline()->measured();
    bool found = false;
    for (const auto& tr : shown->processes[0].tracks)
      for (const auto& sl : tr.slices)
        if (shown->name_of(sl) == "ProfilerStep#2") {
          found = true;
          QVERIFY(qAbs(sl.start_s) < 1e-12);
        }
    QVERIFY(found);
    QVERIFY2(w.metrics_panel()->toPlainText().contains("measured step"), qPrintable(w.metrics_panel()->toPlainText()));
    QVERIFY(w.compare_step(9).contains("no step 9"));
    QCOMPARE(w.comparison()->measured_step, 2LL);  // a refused step keeps the comparison shown
  }
  void ReportFillsTheSidePanel() {
    QTemporaryDir dir;
    StepReport r = small_step(1);
    r.breakdown.compute_s = 3e-3;
    r.breakdown.exposed_comm_s = {{"dp", 1e-3}};
    r.memory = {{"peak_bytes", 8.0 * (1 << 30)}, {"capacity_bytes", 80.0 * (1 << 30)}, {"fits", true}};
    std::string t = write(dir, "t.json", to_trace(r).dump());
    std::string rep = write(dir, "r.json", to_json(r).dump());
    MainWindow w;
    QCOMPARE(w.open_traces({QString::fromStdString(t)}), QString());
    QCOMPARE(w.open_report(QString::fromStdString(rep)), QString());
    QString text = w.metrics_panel()->toPlainText();
    QVERIFY2(text.contains("step time") && text.contains("4 ms"), qPrintable(text));
    QVERIFY2(text.contains("MFU") && text.contains("40.0%"), qPrintable(text));
    QVERIFY2(text.contains("8.00 GiB of 80.00 GiB (fits)"), qPrintable(text));
    QVERIFY2(text.contains("exposed dp") && text.contains("25.0%"), qPrintable(text));
    QVERIFY2(text.contains("compute") && text.contains("75.0%"), qPrintable(text));
  }
  void RunTraceShowsEttrLostTimeAndFailures() {
    // The shape sim/longrun.cpp writes: lanes train, checkpoint, failure (instants), recovery, rollback.
    const char* trace = R"json({"traceEvents":[
      {"ph":"M","name":"process_name","pid":0,"tid":0,"args":{"name":"job x (trial 0)"}},
      {"ph":"X","name":"train","pid":0,"tid":0,"ts":0,"dur":9.0e9,"cat":"train"},
      {"ph":"X","name":"checkpoint","pid":0,"tid":1,"ts":3.6e9,"dur":1e6,"cat":"checkpoint"},
      {"ph":"i","s":"p","name":"failure: GPU","pid":0,"tid":2,"ts":9.0e9,"cat":"failure"},
      {"ph":"X","name":"restart","pid":0,"tid":3,"ts":9.0e9,"dur":1.0e9,"cat":"recovery"},
      {"ph":"X","name":"rolled back","pid":0,"tid":4,"ts":7.2e9,"dur":1.8e9,"cat":"rollback"}],
      "otherData":{"plan":"x","kind":"longrun"}})json";
    QTemporaryDir dir;
    std::string t = write(dir, "run.json", trace);
    std::string r = write(dir, "run_report.json", R"({"ettr": {"mean": 0.8123}})");
    MainWindow w;
    QCOMPARE(w.open_traces({QString::fromStdString(t)}), QString());
    QCOMPARE(w.open_report(QString::fromStdString(r)), QString());
    QString text = w.metrics_panel()->toPlainText();
    QVERIFY2(text.contains("ETTR (reported)") && text.contains("81.2%"), qPrintable(text));
    // (9000 s trained - 1800 s rolled back) / 10000 s span = 72%.
    QVERIFY2(text.contains("ETTR of this trial") && text.contains("72.0%"), qPrintable(text));
    QVERIFY2(text.contains("lost (rolled back)") && text.contains("30 min"), qPrintable(text));
    QVERIFY2(text.contains(QRegularExpression("failure events\\s+1\\b")), qPrintable(text));
  }
  void SearchBoxHighlightsOps() {
    QTemporaryDir dir;
    MainWindow w;
    std::string t = write(dir, "t.json", to_trace(small_step(3)).dump());
    QCOMPARE(w.open_traces({QString::fromStdString(t)}), QString());
    QTest::keyClicks(w.search_box(), "allreduce");
    QCOMPARE(w.timeline()->search_matches(), std::size_t(3));
  }
};

QTEST_MAIN(MainWindowTest)
#include "main_window_test.moc"
