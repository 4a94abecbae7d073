// Traces for the GUI tests, written by the same model/report.cpp to_trace the simulator uses.
#pragma once
#include <QTemporaryDir>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gui/trace_model.hpp"
#include "model/report.hpp"

namespace ditwin::gui::testing {

inline OpRecord op(const std::string& name, long long rank, Stream stream, OpKind kind, double start_s, double duration_s,
                   double flops = 0, double bytes = 0) {
  OpRecord o;
  o.name = name;
  o.rank = rank;
  o.stream = stream;
  o.kind = kind;
  o.start_s = start_s;
  o.duration_s = duration_s;
  o.flops = flops;
  o.bytes = bytes;
  return o;
}

// One step on `ranks` identical ranks: qkv 0-1 ms, mlp 1-3 ms on compute; allreduce 2-4 ms on dp;
// mlp depends on qkv, the all-reduce on mlp.
inline StepReport small_step(int ranks = 1, const std::string& source = "predicted", double scale = 1.0) {
  StepReport r;
  r.source = source;
  r.plan = "test-plan";
  r.step_time_s = 4e-3 * scale;
  r.mfu = 0.4;
  for (int k = 0; k < ranks; ++k) {
    r.ops.push_back(op("L0.attn.qkv.fwd.mb0", k, Stream::compute, OpKind::compute, 0, 1e-3 * scale, 2e12, 4e9));
    r.ops.push_back(op("L0.mlp.fwd.mb0", k, Stream::compute, OpKind::compute, 1e-3 * scale, 2e-3 * scale, 6e12, 1e9));
    r.ops.back().deps = {"L0.attn.qkv.fwd.mb0"};
    r.ops.push_back(op("grads.bucket0.allreduce", k, Stream::dp, OpKind::collective, 2e-3 * scale, 2e-3 * scale, 0, 8e9));
    r.ops.back().deps = {"L0.mlp.fwd.mb0"};
  }
  return r;
}

inline std::string write(const QTemporaryDir& dir, const std::string& name, const std::string& text) {
  std::string path = dir.filePath(QString::fromStdString(name)).toStdString();
  std::ofstream(path) << text;
  return path;
}

inline std::shared_ptr<const Trace> trace_of(const StepReport& r) {
  return std::make_shared<const Trace>(parse_trace(to_trace(r), r.source));
}

}  // namespace ditwin::gui::testing
