// A rank's side of supervised execution: the heartbeat the supervisor watches, the events it
// turns into the measured ETTR report, and the faults injected on purpose (reliability.inject,
// `--inject`). Each injection fires once per run: the rank records it in the events file before
// it fires, and the supervisor passes the fired ones to the next attempt, which skips them.
#pragma once
#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "model/plan.hpp"

namespace ditwin::exec {

// Seconds since the Unix epoch (system clock): the one time base of ranks and supervisor.
double wall_now();

struct FtOptions {
  std::string run_dir;  // the supervisor's: heartbeats, events.jsonl ("" = not supervised)
  int attempt = 0;
  std::vector<InjectSpec> inject;  // all of the run's, indexed as the supervisor numbers them
  std::set<int> fired;             // indices that fired in earlier attempts
};

class FaultTolerance {
 public:
  FaultTolerance(FtOptions options, int rank);
  ~FaultTolerance();
  FaultTolerance(const FaultTolerance&) = delete;
  FaultTolerance& operator=(const FaultTolerance&) = delete;

  int rank() const { return rank_; }
  // Appends one JSON line ({"t", "rank", "attempt"} added) to RUN_DIR/events.jsonl.
  void event(nlohmann::json e);
  // RUN_DIR/heartbeat-RANK: "pid step wall_time attempt beat": the supervisor times when the
  // line last changed on its own monotonic clock (a clock step on either side, or another host's
  // clock, never fakes a hang) and declares the rank hung when it stops changing for
  // reliability.heartbeat_s; `beat` counts up so that every call changes the line.
  void beat(long long step);
  // Phases the heartbeat names instead of a step: start-up (MPI, lowering, model, checkpoint load),
  // checkpointing and finishing (final gathers, report) may take longer than a step, and get the
  // supervisor's start-up allowance; the last beat of a rank that ends normally says so, and its
  // process going away is then no failure.
  // A checkpoint write (fsync on a busy disk can take seconds) gets the same allowance.
  static constexpr long long starting_step = -1, finishing_step = -4, exiting_step = -3, checkpointing_step = -5;
  void finishing() { beat(finishing_step); }
  void checkpointing() { beat(checkpointing_step); }
  void exiting() { beat(exiting_step); }
  // Training of this attempt starts: arms the injections timed in seconds (at_s).
  void training_started();
  // At the start of a step: kills or hangs this rank when an injection says so.
  void before_step(long long step);
  // During this rank's write of the checkpoint after `step` steps (kill_during_checkpoint).
  void during_checkpoint_write(std::size_t written, std::size_t total, long long step);
  // This rank's shard of that checkpoint is in place (corrupt_shard flips a byte of it).
  void after_checkpoint_write(long long step, const std::string& shard_path);
  // Numerical faults (issue 18 part 2), asked by the step guard before the optimizer of `step`
  // (0-based): nan makes this rank's loss and gradients NaN, spike scales every rank's by its
  // factor. Each fires once per run, like the others (recorded before it takes effect).
  struct NumericalInjection {
    bool nan = false;
    double factor = 1;
  };
  NumericalInjection numerical_at(long long step);

 private:
  FtOptions options_;
  int rank_;
  int heartbeat_fd_ = -1, events_fd_ = -1;
  std::atomic<unsigned long long> beats_{0};
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread timer_;

  bool armed(int i, const char* kind);
  void record(int i, const std::string& detail);
  [[noreturn]] void fire(int i, const std::string& detail);
};

}  // namespace ditwin::exec
