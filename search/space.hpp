// The layouts `ditwin search` considers (docs/search.md): a list of values per knob, from
// defaults that follow the plan and its cluster or from a JSON file, enumerated as one mixed-radix
// index so that any share of the indices can go to any MPI rank and the union is the same.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "model/plan.hpp"

namespace ditwin::search {

struct ScheduleChoice {
  PipelineSchedule kind = PipelineSchedule::one_f_one_b;
  int virtual_stages = 1;
  bool operator==(const ScheduleChoice& o) const { return kind == o.kind && virtual_stages == o.virtual_stages; }
};

struct Space {
  // Data parallelism is what the GPUs leave: dp = gpus / (tp x cp x pp).
  std::vector<int> tp, cp, pp;
  std::vector<int> zero;
  std::vector<long long> micro_batch;
  std::vector<Recompute> recompute;
  std::vector<int> sequence_parallel;  // 0 / 1
  std::vector<ScheduleChoice> schedules;
  std::vector<double> bucket_mb;
  // The checkpoint policy: searched only for the goodput objective of a plan with failures.
  std::vector<std::string> checkpoint_mode;
  std::vector<double> checkpoint_interval_min;  // < 0: the optimal (Daly) interval
  double memory_headroom = 0.05;  // a candidate must fit in (1 - this) of the device's memory
  bool tp_within_node = true;     // tensor parallelism stays on one node's NVLink
};

// Defaults for this plan (docs/search.md). `goodput`: also the checkpoint policy.
Space default_space(const Plan& plan, bool goodput);
// The defaults with each list the file gives replaced (unknown keys and bad values refused, naming
// the file and the key).
Space load_space(const std::string& path, const Plan& plan, bool goodput);
nlohmann::json to_json(const Space& space);

// One candidate: every searched setting.
struct Choice {
  int tp = 1, cp = 1, pp = 1;
  long long dp = 1;
  int zero = 0;
  long long micro_batch = 1;
  Recompute recompute = Recompute::none;
  bool sequence_parallel = false;
  ScheduleChoice schedule;
  double bucket_mb = 25;
  std::string checkpoint_mode;     // empty: the plan's
  double checkpoint_interval_min = 0;  // with a mode: < 0 the optimal interval
};

class Enumeration {
 public:
  // Layouts (tp, cp, pp) whose product divides `gpus`.
  Enumeration(const Space& space, long long gpus);
  std::uint64_t size() const { return size_; }
  // Fills `out` for index i in [0, size()); false when i repeats another candidate (sequence
  // parallelism at tp 1, a pipeline schedule at pp 1), which is then not counted.
  bool decode(std::uint64_t i, Choice& out) const;

 private:
  struct Layout {
    int tp, cp, pp;
    long long dp;
  };
  const Space& space_;
  std::vector<Layout> layouts_;
  std::vector<std::uint64_t> radix_;  // per dimension after the layout
  std::uint64_t size_ = 0;
};

// The report's description of a candidate ("parallelism", "training", "checkpoint").
nlohmann::json describe(const Choice& c);
// Puts a candidate's settings into a plan (then validate_plan judges it).
void apply(const Choice& c, Plan& plan);
// ... and into the plan's JSON document (the --best-plan file), leaving everything else as written.
void apply(const Choice& c, nlohmann::json& document, long long nodes);

}  // namespace ditwin::search
