// The search's analytic tier: a step time for a candidate plan in microseconds, from the same cost
// models and the same lowering as the simulator, without SimGrid (docs/search.md).
//
// A probe (the candidate's model cut to three blocks per pipeline stage, one micro-batch) is
// lowered and played by the Program player on an idle network, with op times from cost_models/:
// the middle block's period gives one block's forward and backward (tensor- and context-parallel
// communication, recompute, ZeRO-3's gathers and the overlaps the lowering allows, included), the
// rest the embedding's and the head's, and its sends the pipeline transfer. Probes depend on (tp,
// cp, sequence parallelism, micro-batch, recompute, ZeRO-3's group) only, so a sweep lowers a few
// hundred of them. A candidate's step is then composed in closed form:
// the pipeline schedule's fill, steady state and drain over its stages, the data-parallel
// gradient reduction left exposed after the last backward, ZeRO's parameter gathers, and the
// optimizer step.
#pragma once
#include <map>
#include <tuple>

#include "cost_models/comm.hpp"
#include "cost_models/profile.hpp"
#include "model/accounting.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"

namespace ditwin::search {

struct Estimate {
  double step_s = 0;
  double pipeline_s = 0;    // forward and backward of every micro-batch through the pipeline
  double bubble_s = 0;      // of which fill and drain
  double exposed_dp_s = 0;  // gradient reduction and parameter gathers not hidden by compute
  double optimizer_s = 0;
};

class AnalyticModel {
 public:
  explicit AnalyticModel(const cost::DeviceProfile& profile) : profile_(profile) {}
  // `plan` is a validated candidate and `memory` its accounting.
  Estimate estimate(const Plan& plan, const MemoryReport& memory);

  // One micro-batch of one block and of the model's two ends, on one rank (seconds).
  struct Probe {
    double f_layer = 0, b_layer = 0;  // one block forward; backward with its recompute
    double f_first = 0, b_first = 0;  // the embedding side (first stage)
    double f_last = 0, b_last = 0;    // the head and loss (last stage)
    double p2p_bytes = 0;             // one pipeline transfer
    Op optimizer;                     // the probe's optimizer step ...
    double optimizer_params = 0;      // ... over this many parameters
  };
  const Probe& probe(const Plan& plan);

 private:
  const cost::DeviceProfile& profile_;
  // tp, cp, sp, micro-batch, recompute, pp > 1, ZeRO-3 with its data-parallel group's shape and prefetch
  using Key = std::tuple<int, int, bool, long long, int, bool, bool, int, int, bool>;
  std::map<Key, Probe> probes_;
  std::map<std::tuple<int, int, int>, cost::GroupShape> dp_shapes_;  // (tp, cp, pp) -> the dp x cp group
  cost::GroupShape dp_shape(const Plan& plan);
};

}  // namespace ditwin::search
