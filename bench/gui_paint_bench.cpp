// Paint time of the GUI timeline at full scale: a synthetic trace of 16,384 ranks and ~1M events
// (16 pipeline stages of 1,024 identical ranks, as the simulator's rank classes are), painted into
// a 1600x1000 QImage offscreen; plus folding, a single 1M-event lane, and JSON loading.
#include <benchmark/benchmark.h>

#include <QApplication>
#include <QImage>
#include <QPainter>

#include <memory>

#include "gui/trace_model.hpp"
#include "gui/timeline_widget.hpp"

using namespace ditwin::gui;

namespace {

constexpr int ranks = 16384, stages = 16;
constexpr int compute_ops = 40, tp_ops = 15, dp_ops = 6;  // + the step slice: 62 events per rank

// `jitter`: every rank's times differ slightly (as measured traces do), so nothing folds.
Trace synthetic(bool jitter) {
  Trace t;
  t.source = "predicted";
  t.plan = "synthetic-16384";
  t.intern_category("compute");
  t.intern_category("collective");
  t.intern_category("step");
  std::vector<std::int32_t> names;
  for (int i = 0; i < compute_ops + tp_ops + dp_ops; ++i) names.push_back(t.intern_name("L" + std::to_string(i) + ".op.fwd.mb0"));
  std::int32_t step = t.intern_name("ProfilerStep#0");
  t.processes.reserve(ranks);
  for (int r = 0; r < ranks; ++r) {
    Process p;
    p.pid = r;
    p.sort_index = r;
    int stage = r / (ranks / stages);
    p.name = "rank " + std::to_string(r) + " (stage " + std::to_string(stage) + ")";
    double offset = stage * 2e-3 + (jitter ? r * 1e-9 : 0);
    auto track = [&](long long tid, const char* name, int n, int first, int category, double period, double busy) {
      Track tr;
      tr.tid = tid;
      tr.name = name;
      for (int i = 0; i < n; ++i) {
        Slice s;
        s.start_s = offset + i * period;
        s.duration_s = busy * period;
        s.name = names[static_cast<std::size_t>(first + i)];
        s.category = category;
        s.flops = 1e12;
        s.bytes = 1e8;
        tr.slices.push_back(s);
      }
      p.tracks.push_back(std::move(tr));
    };
    Track st;
    st.tid = 0;
    st.name = "step";
    Slice whole;
    whole.start_s = 0;
    whole.duration_s = 0.1;
    whole.name = step;
    whole.category = 2;
    st.slices.push_back(whole);
    p.tracks.push_back(std::move(st));
    track(1, "compute", compute_ops, 0, 0, 1.5e-3, 0.9);
    track(2, "tp", tp_ops, compute_ops, 1, 4e-3, 0.5);
    track(4, "dp", dp_ops, compute_ops + tp_ops, 1, 10e-3, 0.8);
    t.processes.push_back(std::move(p));
  }
  t.finalize();
  return t;
}

std::shared_ptr<const Trace> shared_trace(bool jitter) {
  static std::shared_ptr<const Trace> folded = std::make_shared<const Trace>(synthetic(false));
  static std::shared_ptr<const Trace> distinct = std::make_shared<const Trace>(synthetic(true));
  return jitter ? distinct : folded;
}

void paint(benchmark::State& state, TimelineWidget& w) {
  QImage image(w.size(), QImage::Format_RGB32);
  for (auto _ : state) {
    QPainter p(&image);
    w.paint(p, image.size());
    p.end();
    benchmark::DoNotOptimize(image.constBits());
  }
  state.counters["lanes"] = static_cast<double>(w.rows().size());
}

void BM_FoldAndIndex(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    Trace t = synthetic(false);
    for (auto& p : t.processes) std::reverse(p.tracks.begin(), p.tracks.end());  // undo the sorted order
    state.ResumeTiming();
    t.finalize();
    benchmark::DoNotOptimize(t.classes.size());
  }
  state.counters["events"] = static_cast<double>(shared_trace(false)->slice_count);
  state.counters["classes"] = static_cast<double>(shared_trace(false)->classes.size());
}

void BM_PaintFoldedFit(benchmark::State& state) {
  TimelineWidget w;
  w.resize(1600, 1000);
  w.set_traces(shared_trace(false));
  paint(state, w);
}

void BM_PaintExpandedFit(benchmark::State& state) {
  TimelineWidget w;
  w.resize(1600, 1000);
  w.set_traces(shared_trace(false));
  w.set_all_expanded(true);
  w.set_scroll_y(static_cast<int>(w.rows().size()) * TimelineWidget::row_height / 2);
  paint(state, w);
}

void BM_PaintExpandedZoomed(benchmark::State& state) {
  TimelineWidget w;
  w.resize(1600, 1000);
  w.set_traces(shared_trace(false));
  w.set_all_expanded(true);
  w.set_scroll_y(static_cast<int>(w.rows().size()) * TimelineWidget::row_height / 2);
  w.zoom_to(0.030, 0.031);
  paint(state, w);
}

void BM_PaintUnfoldableFit(benchmark::State& state) {
  TimelineWidget w;
  w.resize(1600, 1000);
  w.set_traces(shared_trace(true));
  w.set_scroll_y(static_cast<int>(w.rows().size()) * TimelineWidget::row_height / 2);
  paint(state, w);
}

void BM_PaintOneLaneOfAMillionEvents(benchmark::State& state) {
  Trace t;
  t.intern_category("compute");
  t.intern_name("op");
  Process p;
  Track tr;
  tr.tid = 1;
  tr.name = "compute";
  for (int i = 0; i < 1000000; ++i) {
    Slice s;
    s.start_s = i * 1e-6;
    s.duration_s = 0.6e-6;
    tr.slices.push_back(s);
  }
  p.tracks.push_back(std::move(tr));
  t.processes.push_back(std::move(p));
  t.finalize();
  TimelineWidget w;
  w.resize(1600, 1000);
  w.set_traces(std::make_shared<const Trace>(std::move(t)));
  paint(state, w);
}

void BM_SearchOverAMillionEvents(benchmark::State& state) {
  TimelineWidget w;
  w.resize(1600, 1000);
  w.set_traces(shared_trace(false));
  int i = 0;
  for (auto _ : state) {
    w.set_search(i++ % 2 ? "L3" : "L4");
    benchmark::DoNotOptimize(w.search_matches());
  }
}

void BM_ParseJsonOfAMillionEvents(benchmark::State& state) {
  // The same trace as the simulator would write it (metadata + X events), parsed from text.
  std::string text;
  {
    nlohmann::json events = nlohmann::json::array();
    const Trace& t = *shared_trace(false);
    for (const auto& p : t.processes) {
      events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", p.pid}, {"tid", 0}, {"args", {{"name", p.name}}}});
      for (const auto& tr : p.tracks)
        for (const auto& s : tr.slices)
          events.push_back({{"ph", "X"}, {"name", t.name_of(s)}, {"pid", p.pid}, {"tid", tr.tid}, {"ts", s.start_s * 1e6},
                            {"dur", s.duration_s * 1e6}, {"cat", t.category_of(s)},
                            {"args", {{"flops", s.flops}, {"bytes", s.bytes}}}});
    }
    text = nlohmann::json{{"traceEvents", std::move(events)}}.dump();
  }
  for (auto _ : state) {
    Trace t = parse_trace(text, "synthetic.json");
    benchmark::DoNotOptimize(t.slice_count);
  }
  state.counters["MB"] = static_cast<double>(text.size()) / 1e6;
}

}  // namespace

BENCHMARK(BM_FoldAndIndex)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_PaintFoldedFit)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PaintExpandedFit)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PaintExpandedZoomed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PaintUnfoldableFit)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PaintOneLaneOfAMillionEvents)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SearchOverAMillionEvents)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ParseJsonOfAMillionEvents)->Unit(benchmark::kMillisecond)->Iterations(1);

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
