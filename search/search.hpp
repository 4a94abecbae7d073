// `ditwin search` (docs/search.md): the best layout of a plan's model on a cluster. Every
// candidate of the space goes through the analytic tier (search/analytic.hpp), the best K through
// the SimGrid step simulator, the best few through the long-run simulator when the plan has
// failures. The work splits over ranks by candidate index (the CLI runs it under MPI); each piece
// is deterministic, so any number of ranks gives the same result as one.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cost_models/profile.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"
#include "search/analytic.hpp"
#include "search/space.hpp"

namespace ditwin::search {

struct Options {
  std::string objective = "throughput";  // throughput | goodput (throughput x ETTR)
  int top = 20;                          // simulated with SimGrid
  int longrun_best = 3;                  // played through weeks of failures (plans with failures)
  int longrun_trials = 20;
  long long gpus = 0;                    // 0: the plan's cluster
  std::string space_path;                // empty: default_space
  std::string profile_path;              // empty: the device preset
  double max_memory_bytes = default_program_memory_bytes;  // a candidate's Program may take this much
};

// A feasible candidate after the analytic tier.
struct Scored {
  std::uint64_t index = 0;
  double step_s = 0, tokens_per_s = 0, mfu = 0, memory_bytes = 0;
  double ettr = 1;  // analytic (renewal model) when the plan has failures; 1 without
  double score = 0; // the objective: tokens/s, or tokens/s x ETTR
};

// What a share of the candidates gave; shares merge into the whole.
struct Tally {
  std::uint64_t considered = 0, feasible = 0;
  std::map<std::string, std::uint64_t> refused;  // reason -> candidates
  std::map<std::string, std::string> example;    // reason -> the first refusal's message
  std::vector<Scored> best;                      // the best by score, best first
  std::vector<Scored> memory_front;              // Pareto front: tokens/s up, memory per GPU down
  std::vector<Scored> reliability_front;         // Pareto front: MFU up, ETTR up (plans with failures)
};
nlohmann::json to_json(const Tally& t);
Tally tally_from_json(const nlohmann::json& j);
Tally merge(const std::vector<Tally>& parts, std::size_t keep);

class Search {
 public:
  Search(const std::string& plan_path, const Options& options);
  ~Search();
  std::uint64_t indices() const { return enumeration_->size(); }
  bool has_failures() const { return failures_; }

  // The analytic tier over indices rank, rank + ranks, ...; `progress(done, total)` now and then.
  Tally analytic(int rank, int ranks, const std::function<void(std::uint64_t, std::uint64_t)>& progress) const;
  // The SimGrid step of merged.best[i] for every i with i % ranks == rank (one JSON object each,
  // carrying "i").
  std::vector<nlohmann::json> simulate(const Tally& merged, int rank, int ranks,
                                       const std::function<void(int, int)>& progress) const;
  // The SimGrid step of one candidate: step_time_s, tokens_per_s, mfu, memory_per_gpu_bytes, fits,
  // breakdown.
  nlohmann::json simulate_one(std::uint64_t index) const;
  // The plan as the user wrote it, simulated (null when --gpus names another cluster size).
  nlohmann::json as_written() const;
  // Ranks the simulated candidates, plays the best few through failures, and builds the report.
  nlohmann::json report(const Tally& merged, std::vector<nlohmann::json> simulated, const nlohmann::json& as_written,
                        double analytic_s, double simgrid_s, int ranks) const;
  // The plan file of report["top"][0]: the user's plan with the searched keys replaced.
  nlohmann::json best_plan(const nlohmann::json& report) const;

  const Plan& base() const { return base_; }
  const Space& space() const { return space_; }

 private:
  Options options_;
  std::string plan_path_;
  nlohmann::json document_;
  Plan base_;
  bool failures_ = false, goodput_ = false;
  cost::DeviceProfile profile_;
  Space space_;
  std::unique_ptr<Enumeration> enumeration_;
  double model_flops_ = 0, peak_ = 0;
  long long written_gpus_ = 0;  // the plan's own cluster size

  Plan candidate(std::uint64_t index, Choice& choice) const;
  double analytic_ettr(const Plan& plan, double step_s, double mfu) const;
};

// Throws InputError when no candidate survived, naming the rule that eliminated most of them.
void require_feasible(const Tally& merged, const std::string& plan_path);

// Spearman's rank correlation of two equally long series (average ranks for ties).
double spearman(const std::vector<double>& a, const std::vector<double>& b);

// The text table of a report's top candidates (what the CLI prints).
std::string format_report(const nlohmann::json& report);

}  // namespace ditwin::search
