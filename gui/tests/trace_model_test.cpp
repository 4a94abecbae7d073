// Reading traces: the simulator's format, folding of identical ranks, binary-searched visible
// ranges, op matching, and a clear error for every kind of malformed input.
#include <QtTest>

#include "gui/compare_model.hpp"
#include "gui/tests/fixtures.hpp"
#include "gui/trace_model.hpp"

using namespace ditwin;
using namespace ditwin::gui;
using namespace ditwin::gui::testing;

class TraceModelTest : public QObject {
  Q_OBJECT
 private slots:
  void ReadsTheSimulatorsTraceFormat() {
    auto t = trace_of(small_step(1));
    QCOMPARE(t->source, std::string("predicted"));
    QCOMPARE(t->plan, std::string("test-plan"));
    QVERIFY(t->step_time_s && qAbs(*t->step_time_s - 4e-3) < 1e-12);
    QCOMPARE(t->processes.size(), std::size_t(1));
    const Process& p = t->processes[0];
    QCOMPARE(p.name, std::string("rank 0"));
    QCOMPARE(p.pid, 1LL);  // rank r is pid r + 1
    QCOMPARE(p.rank, 0LL);
    // step (tid 0), compute (1), dp (4): tracks without slices (tp, cp, pp) are dropped.
    QCOMPARE(p.tracks.size(), std::size_t(3));
    QCOMPARE(p.tracks[1].name, std::string("compute"));
    QCOMPARE(p.tracks[2].name, std::string("dp"));
    const Slice& mlp = p.tracks[1].slices[1];
    QCOMPARE(t->name_of(mlp), std::string("L0.mlp.fwd.mb0"));
    QCOMPARE(t->category_of(mlp), std::string("compute"));
    QVERIFY(qAbs(mlp.start_s - 1e-3) < 1e-12 && qAbs(mlp.duration_s - 2e-3) < 1e-12);
    QCOMPARE(mlp.flops, 6e12);
    QCOMPARE(t->slice_count, std::size_t(4));
    QVERIFY(qAbs(t->end_s - 4e-3) < 1e-12);
    QVERIFY(!t->is_run);
  }
  void FoldsIdenticalRanksIntoOneClass() {
    StepReport r = small_step(6);
    // Ranks 4 and 5 run their all-reduce later: a second class.
    for (auto& o : r.ops)
      if (o.rank >= 4 && o.stream == Stream::dp) o.start_s += 1e-4;
    auto t = trace_of(r);
    QCOMPARE(t->processes.size(), std::size_t(6));
    QCOMPARE(t->classes.size(), std::size_t(2));
    QCOMPARE(t->classes[0].members, (std::vector<std::size_t>{0, 1, 2, 3}));
    QCOMPARE(t->classes[1].members, (std::vector<std::size_t>{4, 5}));
  }
  void VisibleRangeFindsSlicesByBinarySearchEvenUnderALongOne() {
    Trace t;
    Process p;
    Track tr;
    tr.tid = 1;
    auto add = [&](double start, double dur) { Slice s; s.start_s = start; s.duration_s = dur; tr.slices.push_back(s); };
    add(0, 10);  // encloses everything
    for (int i = 0; i < 100; ++i) add(i * 0.1, 0.05);
    p.tracks.push_back(tr);
    t.processes.push_back(p);
    t.intern_name("x");
    t.intern_category("");
    t.finalize();
    const Track& s = t.processes[0].tracks[0];
    auto [a, b] = s.visible(5.0, 5.25);
    QCOMPARE(a, std::size_t(0));  // the enclosing slice still shows
    QCOMPARE(b, std::size_t(54));  // the enclosing one and small ones 0..52 (start <= 5.25)
    Trace u;
    Process q;
    Track v;
    for (int i = 0; i < 100; ++i) { Slice x; x.start_s = i; x.duration_s = 0.5; v.slices.push_back(x); }
    q.tracks.push_back(v);
    u.processes.push_back(q);
    u.finalize();
    auto [c, d] = u.processes[0].tracks[0].visible(40.7, 42.2);
    QCOMPARE(c, std::size_t(41));
    QCOMPARE(d, std::size_t(43));
  }
  void RefusesMalformedTracesWithTheEventAndKey_data() {
    QTest::addColumn<QString>("text");
    QTest::addColumn<QString>("message");
    QTest::newRow("not json") << "{\"traceEvents\": [" << "not valid JSON";
    QTest::newRow("empty file") << "" << "not valid JSON";
    QTest::newRow("a number") << "42" << "top level: expected an object";
    QTest::newRow("a report") << "{\"step_time_s\": 1}" << "no \"traceEvents\"";
    QTest::newRow("events not array") << "{\"traceEvents\": {}}" << "traceEvents: expected an array";
    QTest::newRow("event not object") << "{\"traceEvents\": [3]}" << "traceEvents[0]: expected an event object";
    QTest::newRow("no ph") << "{\"traceEvents\": [{\"name\":\"a\"}]}" << "traceEvents[0]: missing \"ph\"";
    QTest::newRow("string pid") << R"({"traceEvents":[{"ph":"X","name":"a","pid":"zero","tid":1,"ts":0,"dur":1}]})"
                                << "traceEvents[0].pid: expected an integer, got \"zero\"";
    QTest::newRow("fractional pid") << R"({"traceEvents":[{"ph":"X","name":"a","pid":1.5,"tid":1,"ts":0,"dur":1}]})"
                                    << "traceEvents[0].pid: expected an integer, got 1.5";
    QTest::newRow("missing tid") << R"({"traceEvents":[{"ph":"X","name":"a","pid":0,"ts":0,"dur":1}]})"
                                 << "traceEvents[0]: missing \"tid\"";
    QTest::newRow("string ts") << R"({"traceEvents":[{"ph":"X","name":"a","pid":0,"tid":1,"ts":"0","dur":1}]})"
                               << "traceEvents[0].ts: expected a number";
    QTest::newRow("negative dur") << R"({"traceEvents":[{"ph":"X","name":"a","pid":0,"tid":1,"ts":0,"dur":-1}]})"
                                  << "traceEvents[0].dur: negative duration";
    QTest::newRow("name not string") << R"({"traceEvents":[{"ph":"X","name":7,"pid":0,"tid":1,"ts":0,"dur":1}]})"
                                     << "traceEvents[0].name: expected a string";
    QTest::newRow("args not object") << R"({"traceEvents":[{"ph":"X","name":"a","pid":0,"tid":1,"ts":0,"dur":1,"args":[1]}]})"
                                     << "traceEvents[0].args: expected an object";
    QTest::newRow("bad metadata") << R"({"traceEvents":[{"ph":"M","name":"process_name","pid":0,"args":{"name":3}}]})"
                                  << "traceEvents[0].name: expected a string";
    QTest::newRow("only metadata") << R"({"traceEvents":[{"ph":"M","name":"process_name","pid":0,"args":{"name":"r"}}]})"
                                   << "no events to show";
    QTest::newRow("nothing") << R"({"traceEvents":[]})" << "no events to show";
  }
  void RefusesMalformedTracesWithTheEventAndKey() {
    QFETCH(QString, text);
    QFETCH(QString, message);
    try {
      parse_trace(text.toStdString(), "bad.json");
      QFAIL("no error");
    } catch (const TraceError& e) {
      QString what = e.what();
      QVERIFY2(what.startsWith("bad.json: "), qPrintable(what));
      QVERIFY2(what.contains(message), qPrintable(what));
    }
  }
  void MissingFileIsAnError() {
    QVERIFY_THROWS_EXCEPTION(TraceError, load_trace("/nonexistent/ditwin/t.json"));
  }
  void ReadsALongRunTraceWithInstantFailures() {
    const char* text = R"json({"traceEvents":[
      {"ph":"M","name":"process_name","pid":0,"tid":0,"args":{"name":"job x (trial 0)"}},
      {"ph":"X","name":"train","pid":0,"tid":0,"ts":0,"dur":3.6e9,"cat":"train"},
      {"ph":"X","name":"rolled back","pid":0,"tid":4,"ts":3.0e9,"dur":0.6e9,"cat":"rollback"},
      {"ph":"i","s":"p","name":"failure: GPU","pid":0,"tid":2,"ts":3.6e9,"cat":"failure"},
      {"ph":"X","name":"restart","pid":0,"tid":3,"ts":3.6e9,"dur":0.4e9,"cat":"recovery"}],
      "otherData":{"plan":"x","kind":"longrun"}})json";
    Trace t = parse_trace(std::string(text), "run.json");
    QVERIFY(t.is_run);
    QCOMPARE(t.slice_count, std::size_t(4));
    QVERIFY(qAbs(t.end_s - 4000) < 1e-6);
    const Track& failures = t.processes[0].tracks[1];
    QCOMPARE(failures.tid, 2LL);
    QVERIFY(failures.slices[0].instant);
    QCOMPARE(failures.slices[0].duration_s, 0.0);
  }
  void ComparesOpsByRankNameAndOccurrence() {
    StepReport predicted = small_step(2);
    StepReport measured = small_step(2, "measured");
    for (auto& o : measured.ops) {
      if (o.name == "L0.mlp.fwd.mb0" && o.rank == 1) o.duration_s *= 1.5;  // 50% longer than predicted
      if (o.name == "grads.bucket0.allreduce") o.duration_s *= 0.8;
    }
    measured.ops.push_back(op("extra.op", 0, Stream::compute, OpKind::compute, 3.5e-3, 1e-4));
    auto p = trace_of(predicted);
    auto m = trace_of(measured);
    Comparison c = compare(*p, *m);
    QCOMPARE(c.diffs.size(), std::size_t(6));  // 3 ops on each of 2 ranks (the step slices are steps)
    QCOMPARE(c.unmatched_predicted, std::size_t(0));
    QCOMPARE(c.unmatched_measured, std::size_t(1));
    QCOMPARE(c.measured_step, 0LL);
    const OpDiff& top = c.diffs.front();  // largest |difference| first: rank 1's mlp (1 ms)
    QCOMPARE(top.name, std::string("L0.mlp.fwd.mb0"));
    QCOMPARE(top.pid, 2LL);  // rank 1
    QCOMPARE(top.rank, 1LL);
    // As ditwin compare: predicted / measured - 1, negative when the run was slower.
    QVERIFY(qAbs(top.error() - (1 / 1.5 - 1)) < 1e-9);
    QVERIFY(qAbs(top.diff_s() + 1e-3) < 1e-12);
    std::size_t mlp = 1;  // compute track holds qkv, mlp, extra on the measured side too
    QVERIFY(qAbs(c.predicted_error[1][1][mlp] - static_cast<float>(1 / 1.5 - 1)) < 1e-6);
    QVERIFY(qAbs(c.measured_error[1][1][mlp] - static_cast<float>(1 / 1.5 - 1)) < 1e-6);
    QVERIFY(std::isnan(c.measured_error[0][1][2]));  // extra.op has no prediction
    QVERIFY(qAbs(c.predicted_error[0][2][0] - 0.25f) < 1e-6);  // the all-reduce ran 20% faster
  }
  void ComparesTheMedianSteadyStepOrTheChosenOne() {
    // A measured run of three steps: 0 (warm-up, slow), 1 (4 ms) and 2 (5 ms, the mlp slower).
    StepReport measured = small_step(1, "measured");
    measured.timeline.clear();
    const double spans[] = {9e-3, 4e-3, 5e-3};
    double at = 0;
    for (int k = 0; k < 3; ++k) {
      for (OpRecord o : small_step(1, "measured").ops) {
        if (k == 0) o.duration_s *= 2;
        if (k == 2 && o.name == "L0.mlp.fwd.mb0") o.duration_s = 3e-3;
        o.start_s += at;
        measured.timeline.push_back(o);
      }
      measured.steps.push_back({at, spans[k]});
      at += spans[k];
    }
    auto p = trace_of(small_step(1));
    auto m = trace_of(measured);
    Comparison c = compare(*p, *m);
    QCOMPARE(c.measured_steps.size(), std::size_t(3));
    QCOMPARE(c.default_measured_step, 1LL);  // of the steady steps 1 and 2 (4 and 5 ms): the lower median
    QCOMPARE(c.measured_step, 1LL);
    QCOMPARE(c.diffs.size(), std::size_t(3));  // one step's ops, not all three steps'
    for (const auto& d : c.diffs) QVERIFY2(qAbs(d.error()) < 1e-9, d.name.c_str());  // step 1 ran as predicted
    QVERIFY(qAbs(c.measured_step_s - 4e-3) < 1e-12);
    Comparison two = compare(*p, *m, 2);
    QCOMPARE(two.measured_step, 2LL);
    QCOMPARE(two.diffs.front().name, std::string("L0.mlp.fwd.mb0"));
    QVERIFY(qAbs(two.diffs.front().error() - (2.0 / 3.0 - 1)) < 1e-9);
    QVERIFY(qAbs(two.measured_step_s - 5e-3) < 1e-12);
    bool refused = false;
    try {
      compare(*p, *m, 7);
    } catch (const std::exception& e) {
      refused = std::string(e.what()).find("no step 7") != std::string::npos;
    }
    QVERIFY(refused);
  }
  void MatchesARunsAttemptsToThePredictedSegments() {
    const char* predicted = R"json({"traceEvents":[
      {"ph":"X","name":"train","pid":1,"tid":0,"ts":0,"dur":3.0e9,"cat":"train"},
      {"ph":"X","name":"train","pid":1,"tid":0,"ts":3.5e9,"dur":2.0e9,"cat":"train"}],"otherData":{"kind":"longrun"}})json";
    const char* measured = R"json({"traceEvents":[
      {"ph":"X","name":"train (attempt 1)","pid":1,"tid":0,"ts":0,"dur":3.3e9,"cat":"train"},
      {"ph":"X","name":"train (attempt 2)","pid":1,"tid":0,"ts":3.9e9,"dur":2.0e9,"cat":"train"}],"otherData":{"kind":"longrun"}})json";
    Comparison c = compare(parse_trace(std::string(predicted), "p.json"), parse_trace(std::string(measured), "m.json"));
    QCOMPARE(c.diffs.size(), std::size_t(2));
    QCOMPARE(c.unmatched_predicted + c.unmatched_measured, std::size_t(0));
    QCOMPARE(c.diffs.front().name, std::string("train"));
    QVERIFY(qAbs(c.diffs.front().error() - (3.0 / 3.3 - 1)) < 1e-9);
  }
};

QTEST_APPLESS_MAIN(TraceModelTest)
#include "trace_model_test.moc"
