// The long run on SimGrid.
//
// What is simulated: the job's allocation is one host whose state profile turns it off at every
// failure and planned stop of the trial (the job is synchronous: any node down stops all of it).
// One job actor lives on that host and plays the protocol: train, checkpoint, and after a kill
// (SimGrid kills the actor when its host goes down; it is auto-restarted when the host comes back)
// detect, replace the node (hot spare or requeue), start processes, build communicators, load the
// last checkpoint that survived, and train again. A failure during any of these kills the actor
// again, so failures during recovery cost what they cost. Inside one training segment the
// checkpoint cycle is periodic, so it is computed, not simulated event by event: a segment is one
// SimGrid activity, which keeps 1,000 trials of 54 days cheap.
//
// Trials run one after the other on the same host, each in its own window of simulated time, in a
// few forked processes (SimGrid keeps global state across engines; see DESIGN.md). Every random
// draw of trial i comes from (seed, i) before the simulation starts, so results do not depend on
// how trials are spread over processes.
#include "sim/longrun.hpp"

#include "sim/child_process.hpp"

#include <simgrid/kernel/ProfileBuilder.hpp>
#include <simgrid/s4u.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "model/errors.hpp"
#include "model/report.hpp"  // defines: to_run_trace

XBT_LOG_NEW_DEFAULT_CATEGORY(ditwin_sim_longrun, "ditwin: long runs through failures");

namespace sg4 = simgrid::s4u;

namespace ditwin::sim {

const char* to_string(Cause c) {
  switch (c) {
    case Cause::detection: return "detection";
    case Cause::reschedule: return "reschedule";
    case Cause::spare_swap: return "spare_swap";
    case Cause::process_start: return "process_start";
    case Cause::comm_init: return "comm_init";
    case Cause::checkpoint_load: return "checkpoint_load";
    case Cause::rollback: return "rollback";
    case Cause::checkpoint_stall: return "checkpoint_stall";
    case Cause::stragglers: return "stragglers";
    case Cause::planned_maintenance: return "planned_maintenance";
    case Cause::numerical: return "numerical";
    case Cause::rollout: return "rollout";
    case Cause::count: break;
  }
  return "?";
}

LongRunInputs longrun_inputs(const Plan& plan, double step_time_s, double mfu) {
  if (!(step_time_s > 0)) throw std::invalid_argument("longrun_inputs: step time must be > 0");
  const auto& rel = plan.reliability;
  LongRunInputs in;
  in.plan = plan.name;
  in.nodes = plan.cluster.nodes;
  in.step_time_s = step_time_s;
  in.mfu = mfu;
  in.tokens_per_step = static_cast<double>(plan.tokens_per_step());
  in.failures = cost::failure_model(rel, plan.cluster.devices_per_node);
  in.heartbeat_s = rel.heartbeat_s;
  in.timeout_s = rel.nccl_timeout_s;
  in.reschedule_s = rel.reschedule_s;
  in.process_start_s = rel.process_start_s;
  in.comm_init_s = rel.comm_init_s;
  in.spare_nodes = rel.spare_nodes;
  in.spare_swap_s = rel.spare_swap_s;
  in.spare_repair_s = rel.spare_repair_s;
  cost::CheckpointCosts ck = cost::checkpoint_costs(plan);
  in.checkpoint_mode = rel.checkpoint.mode;
  in.stall_s = ck.stall_s;
  in.persist_s = ck.persist_s;
  in.load_s = ck.load_s;
  in.stop_write_s = ck.write_s;
  in.checkpoint_bytes = ck.bytes;
  in.straggler_fraction = rel.straggler_fraction;
  in.straggler_slowdown = rel.straggler_slowdown;
  double interval = rel.checkpoint.interval_s;
  if (interval < 0) {
    double rate = in.failures.unexpected_per_node_s() * in.nodes;
    // Daly needs a cost per checkpoint; an async write that has not finished holds the next one back.
    interval = rate > 0 ? cost::daly_interval_s(std::max(ck.stall_s, 1e-3), 1 / rate) : 86400.0 * 365;
    interval = std::max(interval, ck.persist_s);
  }
  // Checkpoints happen between steps.
  in.interval_s = std::max(1.0, std::ceil(interval / step_time_s - 1e-9)) * step_time_s;
  if (rel.checkpoint.interval_steps > 0) in.interval_s = static_cast<double>(rel.checkpoint.interval_steps) * step_time_s;
  in.restart = rel.restart;
  in.numerical_policy = rel.numerical.policy;  // numerical faults
  in.numerical_per_s = rel.numerical.rate_per_day / 86400;
  if (plan.run.duration_s > 0) {
    in.duration_s = plan.run.duration_s;
  } else {
    in.work_s = plan.run.steps * step_time_s;
  }
  // Controlled rollouts: a window in steps is priced at the plan's step time (the regressed one is
  // not needed: a rolled-back window's work is all lost, however slowly it ran).
  for (std::size_t i = 0; i < rel.rollouts.size(); ++i) {
    const auto& r = rel.rollouts[i];
    LongRunInputs::Rollout o;
    o.name = r.change.empty() ? "rollout " + std::to_string(i + 1) : r.change;
    if (r.at_step >= 0) o.at_work_s = static_cast<double>(r.at_step) * step_time_s;
    else o.at_wall_s = r.at_s;
    o.watch_s = r.watch_steps > 0 ? static_cast<double>(r.watch_steps) * step_time_s : r.watch_s;
    o.regress_probability = r.regress_probability;
    o.restart = r.restart;
    in.rollouts.push_back(o);
  }
  return in;
}

// --- controlled rollouts (issue 18 part 3) ---
double LongRunInputs::rollout_expected_s() const {
  double total = 0;
  for (const auto& r : rollouts)
    total += (r.restart ? stop_write_s + rollout_restart_s() : 0) + r.regress_probability * (r.watch_s + rollout_restart_s());
  return total;
}
// --- end controlled rollouts ---


std::vector<LongRunInputs::Scheduled> schedule_injections(LongRunInputs& in, const std::vector<InjectSpec>& inject,
                                                          long long steps, double exit_detection_s) {
  using Scheduled = LongRunInputs::Scheduled;
  const double step_s = in.step_time_s;
  const long long every = std::max(1LL, std::llround(in.interval_s / step_s));
  const bool sync = in.checkpoint_mode == "sync";
  in.work_s = static_cast<double>(steps) * step_s;
  in.duration_s = 0;
  std::vector<bool> fired(inject.size(), false);
  std::vector<Scheduled> out;
  struct Durable { long long step; double at; };
  std::vector<Durable> checkpoints;  // of the current lineage
  long long resume = 0;
  double t = 0;  // the attempt's training start, from the job's start
  for (int attempt = 0; attempt < 1000; ++attempt) {
    double start = t;
    // Play the attempt until a fault fires or the run ends.
    double fire_t = -1;
    int which = -1;
    auto consider = [&](int i, double when) {
      if (fire_t < 0 || when < fire_t) fire_t = when, which = i;
    };
    for (long long s = resume; s < steps && fire_t < 0; ++s) {
      for (std::size_t i = 0; i < inject.size(); ++i) {
        const auto& f = inject[i];
        if (fired[i] || f.at_s >= 0 || f.step != s || (f.kind != "kill" && f.kind != "hang")) continue;
        consider(static_cast<int>(i), t);
      }
      double step_end = t + step_s, cycle_end = step_end;
      long long done = s + 1;
      bool checkpoint = done % every == 0 && done < steps;
      if (checkpoint) cycle_end += in.stall_s;
      // Numerical faults are caught at the end of the step's backward, before its update (and before
      // the checkpoint after it). A skip costs the step and changes nothing else; a rollback ends the
      // walk like a failure and restarts it from the newest durable checkpoint, in process.
      for (std::size_t i = 0; i < inject.size(); ++i) {
        const auto& f = inject[i];
        if (fired[i] || !f.numerical() || f.step != s || (fire_t >= 0 && fire_t <= step_end)) continue;
        if (in.numerical_policy == "rollback") {
          consider(static_cast<int>(i), step_end);
        } else {
          fired[i] = true;
          // after the checkpoint that follows the step, which the executor still takes: the
          // player's checkpoint cycle then stays on the executor's steps
          out.push_back({cycle_end, "injected " + f.describe(), false, 0.0, true});
        }
      }
      for (std::size_t i = 0; i < inject.size(); ++i) {
        const auto& f = inject[i];
        if (fired[i]) continue;
        if ((f.kind == "kill" || f.kind == "hang") && f.at_s >= 0 && start + f.at_s < cycle_end && start + f.at_s >= t)
          consider(static_cast<int>(i), start + f.at_s);
        if (checkpoint && f.kind == "kill_during_checkpoint" && f.step == done)
          consider(static_cast<int>(i), sync ? step_end + f.fraction * in.stall_s
                                             : step_end + in.stall_s + f.fraction * in.persist_s);
      }
      if (fire_t >= 0) break;
      if (checkpoint) checkpoints.push_back({done, cycle_end + (sync ? 0 : in.persist_s)});
      t = cycle_end;
    }
    if (fire_t < 0) break;  // the run ends
    fired[which] = true;
    const auto& f = inject[which];
    bool hang = f.kind == "hang";
    if (f.numerical()) out.push_back({fire_t, "injected " + f.describe(), false, 0.0, true});
    else out.push_back({fire_t, "injected " + f.describe(), hang, hang ? in.heartbeat_s : exit_detection_s});
    resume = 0;
    for (const auto& c : checkpoints)
      if (c.at <= fire_t) resume = std::max(resume, c.step);
    checkpoints.erase(std::remove_if(checkpoints.begin(), checkpoints.end(), [&](const Durable& c) { return c.step > resume; }),
                      checkpoints.end());
    if (f.numerical()) {  // in process: the host is "down" for off_s in the player, then the load
      t = fire_t + 1e-3 + in.load_s;
      continue;
    }
    int restart = static_cast<int>(std::count_if(out.begin(), out.end(), [](const Scheduled& e) { return !e.numerical; }));
    t = fire_t + out.back().detect_s + in.restart.backoff_before(restart) + in.process_start_s + in.comm_init_s + in.load_s;
  }
  in.failures.categories.clear();
  in.failures.planned_per_node_s = 0;
  in.failures.source = "injected (deterministic)";
  in.numerical_per_s = 0;  // the injected ones replace the sampled ones
  for (const auto& e : out) in.failures.categories.push_back({e.name, 0.0, e.hang, false});
  in.scheduled = out;
  return out;
}

namespace {

std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// SplitMix64: a small, well-mixed generator that makes trial i's stream depend on (seed, i) only.
struct Rng {
  std::uint64_t state;
  std::uint64_t next() {
    return mix64(state += 0x9E3779B97F4A7C15ULL);
  }
  double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // in (0, 1)
};

constexpr double off_s = 1e-3;  // how long the allocation host stays down per event

struct Event {
  double t = 0;       // from the trial's start
  int category = -1;  // into FailureModel::categories; -1 = planned maintenance
  bool slow_after = false;  // the allocation that resumes after it has a straggler
  bool lead = true;         // false: falls while the host is already down for the event before
  double detect_s = -1;     // >= 0 (deterministic mode): this detection delay instead of the category's
  bool numerical = false;   // a numerical fault (category -2 when sampled)
};

struct TrialDraw {
  std::vector<Event> events;
  bool slow_initial = false;
};

double horizon_s(const LongRunInputs& in) {
  // A step-count run that has not finished by ten times its ideal length plus a week is cut there.
  return in.duration_s > 0 ? in.duration_s : in.work_s * 10 + 7 * 86400.0;
}

TrialDraw draw_trial(const LongRunInputs& in, std::uint64_t seed, int trial) {
  // Hash (seed, trial) into a starting state: nearby seeds or trials must not give shifted streams.
  Rng rng{mix64(mix64(seed + 0x6A09E667F3BCC909ULL) ^ mix64(static_cast<std::uint64_t>(trial) + 0xBB67AE8584CAA73BULL))};
  TrialDraw d;
  if (!in.scheduled.empty()) {  // deterministic: the same failures in every trial
    for (std::size_t i = 0; i < in.scheduled.size(); ++i) {
      Event e;
      e.t = in.scheduled[i].t_s;
      e.category = static_cast<int>(i);
      e.detect_s = in.scheduled[i].detect_s;
      e.numerical = in.scheduled[i].numerical;
      d.events.push_back(e);
    }
    double lead_t = -1e300;
    for (auto& e : d.events) {
      e.lead = e.t >= lead_t + 1.5 * off_s;
      if (e.lead) lead_t = e.t;
    }
    return d;
  }
  double horizon = horizon_s(in);
  const auto& f = in.failures;
  // Superposition: independent per-node processes add up to one job-level process of rate N r. With
  // a Weibull shape k != 1 the job-level inter-arrival times are Weibull(k) with that mean.
  double rate = f.unexpected_per_node_s() * in.nodes;
  if (rate > 0) {
    double k = f.weibull_shape;
    double scale = 1 / (rate * std::tgamma(1 + 1 / k));
    double total = f.unexpected_per_node_s();
    for (double t = 0;;) {
      t += scale * std::pow(-std::log(rng.uniform()), 1 / k);
      if (t >= horizon) break;
      double pick = rng.uniform() * total;
      int c = 0;
      while (c + 1 < static_cast<int>(f.categories.size()) && pick >= f.categories[c].per_node_s)
        pick -= f.categories[c++].per_node_s;
      d.events.push_back({t, c, false});
    }
  }
  double planned = f.planned_per_node_s * in.nodes;
  if (planned > 0)
    for (double t = 0;;) {
      t += -std::log(rng.uniform()) / planned;
      if (t >= horizon) break;
      d.events.push_back({t, -1, false});
    }
  if (in.numerical_per_s > 0) {  // numerical faults: their own stream, so other draws do not move
    Rng nrng{mix64(mix64(seed + 0x3C6EF372FE94F82BULL) ^ mix64(static_cast<std::uint64_t>(trial) + 0xA54FF53A5F1D36F1ULL))};
    for (double t = 0;;) {
      t += -std::log(nrng.uniform()) / in.numerical_per_s;
      if (t >= horizon) break;
      Event e;
      e.t = t;
      e.category = -2;
      e.numerical = true;
      d.events.push_back(e);
    }
  }
  std::sort(d.events.begin(), d.events.end(), [](const Event& a, const Event& b) { return a.t < b.t; });
  // Events within one down time of the event that took the host down are one interruption.
  double lead_t = -1e300;
  for (auto& e : d.events) {
    e.lead = e.t >= lead_t + 1.5 * off_s;
    if (e.lead) lead_t = e.t;
  }
  // Stragglers: each allocation (the first, and each one after a restart) holds a slow node with
  // probability 1 - (1 - f)^N; a synchronous step then runs at the slow node's pace.
  double p_slow = in.straggler_slowdown > 1 ? 1 - std::pow(1 - in.straggler_fraction, in.nodes) : 0;
  d.slow_initial = rng.uniform() < p_slow;
  for (auto& e : d.events) e.slow_after = rng.uniform() < p_slow;
  return d;
}


struct Phase {
  Cause cause;
  double duration_s;
  const char* name;
};

// Plays a list of trials on one host, one after the other; see the top of the file.
class Player {
public:
  Player(const LongRunInputs& in, std::vector<int> ids, std::vector<TrialDraw> draws, double span, bool timeline)
      : in_(in), ids_(std::move(ids)), draws_(std::move(draws)), span_(span), timeline_(timeline) {
    results_.resize(ids_.size());
  }

  double base(size_t i) const { return static_cast<double>(i) * span_; }

  // The host's state profile: off at every event of every trial, on again off_s later.
  std::string profile() const {
    std::ostringstream s;
    s.precision(17);
    for (size_t i = 0; i < draws_.size(); ++i)
      for (const auto& e : draws_[i].events)
        if (e.lead) s << base(i) + e.t << " 0\n" << base(i) + e.t + off_s << " 1\n";
    return s.str();
  }

  // The job actor's body. It runs again from the top after every kill.
  void operator()() {
    if (active_) recover(sg4::Engine::get_clock());
    while (current_ < ids_.size()) {
      if (!active_) start_trial();
      if (!phases_.empty()) {
        Phase p = phases_.front();
        double d = std::min(p.duration_s, trial_end_ - now_abs());
        phase_ = p;
        in_work_ = false;
        phase_start_ = now_abs();
        if (d > 0) sleep(d, p.name);
        account(p.cause, d);
        mark(p.name, "recovery", phase_start_, d);
        phases_.pop_front();
        if (now_abs() >= trial_end_ - 1e-3) end_trial(false);
        continue;
      }
      double needed = segment_end();
      double d = std::min(needed, trial_end_ - now_abs());
      in_work_ = true;
      seg_start_ = now_abs();
      if (d > 0) sleep(d, "train");
      in_work_ = false;
      close_segment(d, Close::end);
      end_trial(d >= needed - 1e-9);
    }
  }

  std::vector<TrialResult> results_;
  std::vector<TimelineEvent> events_;
  double activities_ = 0;

private:
  enum class Close { killed, planned, end };

  double now_abs() const { return sg4::Engine::get_clock(); }
  void sleep(double d, const char* name) {
    activities_ += 1;
    sg4::this_actor::sleep_for(d);
    (void)name;
  }
  TrialResult& result() { return results_[current_]; }
  void account(Cause c, double s) { result().lost_s[static_cast<int>(c)] += s; }
  void mark(const std::string& name, const char* cat, double start_abs, double d) {
    if (timeline_ && ids_[current_] == 0 && events_.size() < 200000)
      events_.push_back({name, cat, start_abs - base(current_), d});
  }

  void start_trial() {
    double b = base(current_);
    if (now_abs() < b) sg4::this_actor::sleep_until(b);
    const auto& draw = draws_[current_];
    next_event_ = 0;
    saved_s_ = 0;
    slow_ = draw.slow_initial ? in_.straggler_slowdown : 1.0;
    spares_ = in_.spare_nodes;
    repairs_.clear();
    phases_.clear();
    trial_end_ = b + horizon_s(in_);
    active_ = true;
  }

  void end_trial(bool finished) {
    TrialResult& r = result();
    r.wall_s = now_abs() - base(current_);
    r.finished = in_.duration_s > 0 || finished;
    active_ = false;
    ++current_;
  }

  // Cycle length: an async write still running when the next checkpoint is due holds it back.
  double stall() const { return in_.stall_s + std::max(0.0, in_.persist_s - in_.interval_s); }
  double cycle() const { return in_.interval_s + stall(); }

  // Wall time, from the segment's start, until the run's work is done (or "never" for a window).
  double segment_end() const {
    if (in_.duration_s > 0) return trial_end_ - now_abs();
    double m = std::max(0.0, in_.work_s - saved_s_) * slow_;  // working wall time still needed
    double k = std::max(0.0, std::ceil(m / in_.interval_s) - 1);
    return k * cycle() + (m - k * in_.interval_s);
  }

  // Splits e seconds of a training segment into kept work, rollback, stalls and straggler time.
  void close_segment(double e, Close how, Cause lost_as = Cause::rollback) {
    double c = cycle(), w = stall();
    double k = std::floor(e / c + 1e-12);
    double r = std::max(0.0, e - k * c);
    double work = k * in_.interval_s + std::min(r, in_.interval_s);
    double stalled = k * w + std::max(0.0, r - in_.interval_s);
    double kept = work;
    if (how == Close::killed) {
      double durable = (k > 0 && k * c + in_.persist_s <= e) ? k : std::max(0.0, k - 1);
      kept = durable * in_.interval_s;
    }
    account(lost_as, work - kept);
    account(Cause::checkpoint_stall, stalled);
    account(Cause::stragglers, kept * (1 - 1 / slow_));
    result().productive_s += kept / slow_;
    saved_s_ += kept / slow_;
    if (timeline_ && ids_[current_] == 0) {
      mark(slow_ > 1 ? "train (straggler)" : "train", "train", seg_start_, e);
      for (double j = 1; j <= k && events_.size() < 200000; ++j)
        mark("checkpoint", "checkpoint", seg_start_ + j * c - w, w);
      if (how == Close::killed && work > kept)
        mark("rolled back", "rollback", seg_start_ + e - (work - kept), work - kept);
    }
  }

  // Called at the top of the body after a kill: the host went down at an event of this trial.
  void recover(double now) {
    const auto& draw = draws_[current_];
    double rel_now = now - base(current_);
    if (next_event_ >= draw.events.size() || std::abs(draw.events[next_event_].t + off_s - rel_now) > 1e-4)
      throw std::logic_error("longrun: actor restarted without a pending event at t=" + std::to_string(rel_now));
    const Event& ev = draw.events[next_event_];
    double t_abs = base(current_) + ev.t;
    if (recover_numerical(draw, now, t_abs)) return;
    bool planned = ev.category == -1;
    if (in_work_) {
      close_segment(t_abs - seg_start_, planned ? Close::planned : Close::killed);
      in_work_ = false;
    } else if (!phases_.empty()) {
      double d = t_abs - phase_start_;
      account(phase_.cause, d);
      mark(std::string(phase_.name) + " (interrupted)", "recovery", phase_start_, d);
    }
    phases_.clear();
    // Events that fell within the same down time are one interruption, recovered together.
    bool node_lost = false, hang = false, failed = false;
    double detect_s = ev.detect_s;
    for (bool first = true; next_event_ < draw.events.size() && (first || !draw.events[next_event_].lead);
         ++next_event_, first = false) {
      const Event& e = draw.events[next_event_];
      if (e.numerical) {  // folded into the failure beside it: its recovery rolls back anyway
        mark("numerical fault", "failure", base(current_) + e.t, 0);
      } else if (e.category < 0) {
        result().planned++;
        mark("planned maintenance", "failure", base(current_) + e.t, 0);
      } else {
        const auto& cat = in_.failures.categories[e.category];
        result().failures++;
        failed = true;
        node_lost = node_lost || cat.node_lost;
        hang = hang || cat.hang;
        mark("failure: " + cat.name, "failure", base(current_) + e.t, 0);
      }
      slow_ = e.slow_after ? in_.straggler_slowdown : 1.0;
    }
    if (planned && !failed) {
      Cause pm = Cause::planned_maintenance;
      account(pm, now - t_abs);
      phases_ = {{pm, in_.stop_write_s, "planned: checkpoint and stop"}, {pm, in_.reschedule_s, "planned: requeue"},
                 {pm, in_.process_start_s, "planned: process start"}, {pm, in_.comm_init_s, "planned: comm init"},
                 {pm, in_.load_s, "planned: checkpoint load"}};
      return;
    }
    account(Cause::detection, now - t_abs);
    if (detect_s >= 0)
      phases_.push_back({Cause::detection, detect_s - off_s, hang ? "detect (heartbeat timeout)" : "detect (process exit)"});
    else
      phases_.push_back({Cause::detection, (hang ? in_.timeout_s : in_.heartbeat_s) - off_s,
                         hang ? "detect (collective timeout)" : "detect (missed heartbeat)"});
    double backoff = in_.restart.backoff_before(result().failures);
    if (backoff > 0) phases_.push_back({Cause::reschedule, backoff, "restart backoff"});
    if (node_lost) {
      while (!repairs_.empty() && repairs_.front() <= now) repairs_.pop_front(), ++spares_;
      if (spares_ > 0) {
        --spares_;
        repairs_.push_back(now + in_.spare_repair_s);
        phases_.push_back({Cause::spare_swap, in_.spare_swap_s, "swap in hot spare"});
      } else {
        phases_.push_back({Cause::reschedule, in_.reschedule_s, "requeue"});
      }
    }
    phases_.push_back({Cause::process_start, in_.process_start_s, "process start"});
    phases_.push_back({Cause::comm_init, in_.comm_init_s, "communicator init"});
    phases_.push_back({Cause::checkpoint_load, in_.load_s, "checkpoint load"});
    for (auto& p : phases_) p.duration_s = std::max(0.0, p.duration_s);
  }

  // --- numerical faults (issue 18 part 2) ---
  // An interruption made of numerical faults only: the processes live on. Skip: the step's work is
  // lost, the run goes on from where it was. Rollback: the work since the last durable checkpoint is
  // lost (as in a failure) and the checkpoint is loaded, in process. The host's down time (off_s)
  // counts as numerical. A fault that falls outside training (a recovery phase) is not one: the
  // guard only sees steps; the phase goes on. Returns false when a failure is part of it.
  bool recover_numerical(const TrialDraw& draw, double now, double t_abs) {
    std::size_t end = next_event_;
    for (bool first = true; end < draw.events.size() && (first || !draw.events[end].lead); ++end, first = false)
      if (!draw.events[end].numerical) return false;
    account(Cause::numerical, now - t_abs);
    if (!in_work_) {
      if (!phases_.empty()) {  // the phase resumes for what it had left
        double d = t_abs - phase_start_;
        account(phase_.cause, d);
        phases_.front().duration_s = std::max(0.0, phases_.front().duration_s - d);
      }
      next_event_ = end;
      return true;
    }
    in_work_ = false;
    for (std::size_t i = next_event_; i < end; ++i) {
      result().numerical++;
      mark("numerical fault", "failure", base(current_) + draw.events[i].t, 0);
    }
    if (in_.numerical_policy == "rollback") {
      close_segment(t_abs - seg_start_, Close::killed, Cause::numerical);
      phases_.push_back({Cause::numerical, in_.load_s, "numerical: checkpoint load"});
    } else {
      close_segment(t_abs - seg_start_, Close::planned);
      double d = std::min(in_.step_time_s * static_cast<double>(end - next_event_), result().productive_s);
      result().productive_s -= d;  // the steps ran; their updates were dropped
      account(Cause::numerical, d);
    }
    next_event_ = end;
    return true;
  }

  const LongRunInputs& in_;
  std::vector<int> ids_;
  std::vector<TrialDraw> draws_;
  double span_;
  bool timeline_;
  // The state of the trial being played (kept here: the actor's stack is lost at each kill).
  size_t current_ = 0;
  bool active_ = false;
  size_t next_event_ = 0;
  double trial_end_ = 0;
  double saved_s_ = 0;  // nominal work in the last surviving checkpoint (or done, at the end)
  double slow_ = 1;
  int spares_ = 0;
  std::deque<double> repairs_;
  std::deque<Phase> phases_;
  Phase phase_{Cause::detection, 0, ""};
  double phase_start_ = 0;
  bool in_work_ = false;
  double seg_start_ = 0;
};

nlohmann::json play_in_this_process(const LongRunInputs& in, const std::vector<int>& ids, std::uint64_t seed,
                                    bool timeline) {
  std::vector<TrialDraw> draws;
  double span = horizon_s(in) + 10;
  for (int id : ids) draws.push_back(draw_trial(in, seed, id));
  Player player(in, ids, std::move(draws), span, timeline);

  // The job actor is restarted at every failure: small stacks without guard pages make that cheap
  // (its frames are a few calls deep; no recursion).
  char name[] = "ditwin-longrun";
  char stack[] = "--cfg=contexts/stack-size:256";
  char guard[] = "--cfg=contexts/guard-size:0";
  char* argv[] = {name, stack, guard, nullptr};
  int argc = 3;
  xbt_log_control_set("root.thresh:critical");
  sg4::Engine engine(&argc, argv);
  xbt_log_control_set("root.thresh:critical");
  auto* zone = sg4::create_full_zone("longrun");
  auto* control = zone->create_host("control", 1.0);
  auto* allocation = zone->create_host("allocation", 1.0);
  allocation->set_state_profile(
      simgrid::kernel::profile::ProfileBuilder::from_string("failures", player.profile(), -1));
  zone->seal();
  // Auto-restart only brings an actor back while another one is alive: this one waits out the run.
  double end = span * static_cast<double>(ids.size());
  sg4::Actor::create("keeper", control, [end] { sg4::this_actor::sleep_until(end); });
  sg4::Actor::create("job", allocation, [&player] { player(); })->set_auto_restart(true);
  engine.run();

  nlohmann::json out;
  auto& rows = out["trials"] = nlohmann::json::array();
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& r = player.results_[i];
    rows.push_back({ids[i], r.wall_s, r.productive_s, r.lost_s, r.failures, r.planned, r.finished, r.numerical});
  }
  auto& ev = out["timeline"] = nlohmann::json::array();
  for (const auto& e : player.events_) ev.push_back({e.name, e.category, e.start_s, e.duration_s});
  out["activities"] = player.activities_;
  return out;
}

}  // namespace

// --- controlled rollouts (issue 18 part 3) ---
namespace {

// Each trial's rollouts, on its result: a rollout happens when the trial reaches it (its work or
// its wall time); its cost is added to the wall time of a step-count run, or taken from the
// productive time of a fixed window. Whether it regresses is drawn from (seed, trial, rollout)
// alone, so the failure draws do not move. Failures during a rollout's restarts and window are not
// played (minutes in weeks). Trial 0's timeline gets a `rollout` lane, later events shifted.
void apply_rollouts(LongRunResult& result, std::uint64_t seed) {
  const auto& in = result.inputs;
  if (in.rollouts.empty()) return;
  const int lane = static_cast<int>(Cause::rollout);
  for (std::size_t t = 0; t < result.trials.size(); ++t) {
    TrialResult& r = result.trials[t];
    const double ettr = r.wall_s > 0 ? r.productive_s / r.wall_s : 1;
    double added_s = 0;  // wall time added by earlier rollouts of this trial
    for (std::size_t k = 0; k < in.rollouts.size(); ++k) {
      const auto& o = in.rollouts[k];
      // When it happens, on this trial's clock before rollouts (training runs at its mean ETTR).
      double at_wall = o.at_wall_s >= 0 ? o.at_wall_s : (ettr > 0 ? o.at_work_s / ettr : r.wall_s);
      bool reached = o.at_wall_s >= 0 ? at_wall < r.wall_s - added_s : o.at_work_s <= r.productive_s + 1e-9;
      if (!reached) continue;
      std::uint64_t z = mix64(mix64(seed ^ 0x52DCE729DA3ED7B5ULL) ^ mix64(t * 1024 + k + 0x3C6EF372FE94F82BULL));
      double u = static_cast<double>(z >> 11) * 0x1.0p-53;
      bool regressed = u < o.regress_probability;
      double apply_s = o.restart ? in.stop_write_s + in.rollout_restart_s() : 0;
      double cost = apply_s + (regressed ? o.watch_s + in.rollout_restart_s() : 0);
      r.rollouts++;
      if (regressed) r.rollouts_regressed++;
      r.lost_s[lane] += cost;
      if (in.duration_s > 0) {
        // A fixed window: the rollout's time comes out of the training it would have done.
        double take = std::min(cost, r.productive_s);
        r.productive_s -= take;
        r.lost_s[lane] += take - cost;
      } else {
        r.wall_s += cost;
      }
      if (t == 0) {
        double start = at_wall + added_s;
        for (auto& e : result.timeline)
          if (e.start_s >= start) e.start_s += cost;
        if (apply_s > 0) result.timeline.push_back({"rollout: " + o.name + " (save, restart, load)", "rollout", start, apply_s});
        if (regressed) {
          result.timeline.push_back({"rollout window (regressed, work lost)", "rollout", start + apply_s, o.watch_s});
          result.timeline.push_back({"rollout rolled back (restart, load)", "rollout", start + apply_s + o.watch_s,
                                     in.rollout_restart_s()});
        } else {
          result.timeline.push_back({"rollout kept", "rollout", start + apply_s, 0});
        }
      }
      added_s += cost;
    }
  }
  if (in.duration_s > 0)
    for (auto& e : result.timeline) e.duration_s = std::max(0.0, std::min(e.duration_s, in.duration_s - e.start_s));
}

}  // namespace
// --- end controlled rollouts ---

LongRunResult simulate_longrun(const LongRunInputs& in, const LongRunOptions& options) {
  if (options.trials < 1) throw InputError("--trials: must be >= 1");
  // Each trial keeps its row of results (~1 KB with its JSON): a bound well inside a laptop's memory.
  constexpr int max_trials = 200000;
  if (options.trials > max_trials)
    throw InputError("--trials " + std::to_string(options.trials) + ": at most " + std::to_string(max_trials) +
                     " (each trial keeps a row of results; 1,000 already give ETTR to a fraction of a percent)");
  if (!(in.interval_s > 0)) throw std::invalid_argument("longrun: checkpoint interval must be > 0");
  int workers = std::max(1, std::min(options.workers, options.trials));
  std::vector<std::vector<int>> ids(workers);
  for (int t = 0; t < options.trials; ++t) ids[t % workers].push_back(t);
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (int w = 0; w < workers; ++w) {
    bool timeline = options.timeline && w == 0;
    children.push_back(std::make_unique<ChildProcess>(
        [&, w, timeline] { return play_in_this_process(in, ids[w], options.seed, timeline).dump(); }));
  }

  LongRunResult result;
  result.inputs = in;
  result.trials.resize(options.trials);
  std::string error;
  for (int w = 0; w < workers; ++w) {
    std::string payload;
    try {
      payload = children[w]->wait();
    } catch (const std::exception& e) {
      error = e.what();
      continue;
    }
    nlohmann::json out = nlohmann::json::parse(payload);
    for (const auto& row : out["trials"]) {
      TrialResult r;
      r.wall_s = row[1];
      r.productive_s = row[2];
      r.lost_s = row[3].get<std::array<double, cause_count>>();
      r.failures = row[4];
      r.planned = row[5];
      r.finished = row[6];
      if (row.size() > 7) r.numerical = row[7];
      result.trials[row[0].get<int>()] = r;
    }
    for (const auto& e : out["timeline"]) result.timeline.push_back({e[0], e[1], e[2], e[3]});
    result.simgrid_events += out["activities"].get<double>();
  }
  if (!error.empty()) throw std::runtime_error("longrun: " + error);
  apply_rollouts(result, options.seed);  // controlled rollouts (issue 18 part 3)
  return result;
}

Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {  // linear interpolation between order statistics
    double x = p * static_cast<double>(v.size() - 1);
    size_t i = static_cast<size_t>(x);
    double f = x - static_cast<double>(i);
    return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
  };
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.stddev = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0;
  s.ci95 = 1.96 * s.stddev / std::sqrt(static_cast<double>(v.size()));
  s.p5 = pct(0.05);
  s.p50 = pct(0.5);
  s.p95 = pct(0.95);
  return s;
}

namespace {

nlohmann::json to_json(const Summary& s) {
  return {{"mean", s.mean}, {"p5", s.p5}, {"p50", s.p50}, {"p95", s.p95}, {"stddev", s.stddev},
          {"ci95", {s.mean - s.ci95, s.mean + s.ci95}}};
}

Summary summary_of(const LongRunResult& r, double (*f)(const TrialResult&, const LongRunInputs&)) {
  std::vector<double> v;
  for (const auto& t : r.trials) v.push_back(f(t, r.inputs));
  return summarize(v);
}

}  // namespace

// --- controlled rollouts: the report's summary ---
static nlohmann::json rollouts_json(const LongRunResult& r) {
  const auto& in = r.inputs;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& o : in.rollouts)
    list.push_back({{"name", o.name}, {"at_work_s", o.at_work_s}, {"at_wall_s", o.at_wall_s}, {"watch_s", o.watch_s},
                    {"regress_probability", o.regress_probability}, {"restart", o.restart}});
  double n = static_cast<double>(std::max<std::size_t>(1, r.trials.size())), applied = 0, regressed = 0, lost = 0;
  for (const auto& t : r.trials) {
    applied += t.rollouts;
    regressed += t.rollouts_regressed;
    lost += t.lost_s[static_cast<int>(Cause::rollout)];
  }
  return {{"list", list}, {"per_trial", applied / n}, {"regressed_per_trial", regressed / n},
          {"lost_hours_mean", lost / n / 3600},
          {"analytic_lost_hours", in.rollout_expected_s() / 3600},  // every rollout reached
          {"restart_s", in.stop_write_s + in.rollout_restart_s()}, {"rollback_restart_s", in.rollout_restart_s()}};
}
// --- end controlled rollouts ---

nlohmann::json to_json(const LongRunResult& r) {
  using nlohmann::json;
  const auto& in = r.inputs;
  Summary ettr = summary_of(r, [](const TrialResult& t, const LongRunInputs&) { return t.ettr(); });
  Summary ipd = summary_of(r, [](const TrialResult& t, const LongRunInputs&) { return t.failures / (t.wall_s / 86400); });
  Summary ppd = summary_of(r, [](const TrialResult& t, const LongRunInputs&) { return t.planned / (t.wall_s / 86400); });
  Summary days = summary_of(r, [](const TrialResult& t, const LongRunInputs&) { return t.wall_s / 86400; });
  // Spares sit idle: the cluster the job holds is nodes + spares.
  double held = static_cast<double>(in.nodes) / (in.nodes + in.spare_nodes);
  Summary emfu = summary_of(r, [](const TrialResult& t, const LongRunInputs& i) {
    return i.mfu * t.ettr() * i.nodes / (i.nodes + i.spare_nodes);
  });
  double tokens_per_s = in.tokens_per_step / in.step_time_s;
  json lost_h = json::object(), lost_frac = json::object(), restart = json::object();
  std::array<double, cause_count> mean_lost{};
  double mean_wall = 0;
  for (const auto& t : r.trials) {
    mean_wall += t.wall_s / static_cast<double>(r.trials.size());
    for (int c = 0; c < cause_count; ++c) mean_lost[c] += t.lost_s[c] / static_cast<double>(r.trials.size());
  }
  auto lost = [&](Cause c) { return mean_lost[static_cast<int>(c)]; };
  double restart_s = lost(Cause::reschedule) + lost(Cause::spare_swap) + lost(Cause::process_start) +
                     lost(Cause::comm_init) + lost(Cause::checkpoint_load);
  std::vector<std::pair<std::string, double>> groups = {
      {"rollback", lost(Cause::rollback)}, {"restart", restart_s}, {"detection", lost(Cause::detection)},
      {"checkpoint_stall", lost(Cause::checkpoint_stall)}, {"stragglers", lost(Cause::stragglers)},
      {"planned_maintenance", lost(Cause::planned_maintenance)}, {"numerical", lost(Cause::numerical)},
      {"rollout", lost(Cause::rollout)}};
  for (const auto& [k, v] : groups) {
    lost_h[k] = v / 3600;
    lost_frac[k] = mean_wall > 0 ? v / mean_wall : 0;
  }
  for (Cause c : {Cause::reschedule, Cause::spare_swap, Cause::process_start, Cause::comm_init, Cause::checkpoint_load})
    restart[to_string(c)] = lost(c) / 3600;
  int unfinished = 0;
  for (const auto& t : r.trials) unfinished += t.finished ? 0 : 1;
  json scheduled = json::array();
  for (const auto& f : in.scheduled)
    scheduled.push_back({{"at_s", f.t_s}, {"name", f.name}, {"hang", f.hang}, {"detect_s", f.detect_s},
                         {"category", f.numerical ? "numerical" : "failure"}});
  double mtbf = in.failures.unexpected_per_node_s() * in.nodes;
  mtbf = mtbf > 0 ? 1 / mtbf : 0;
  json analytic = {{"job_mtbf_h", mtbf / 3600}};
  if (mtbf > 0) {
    double delta = std::max(in.stall_s, 1e-3);
    analytic["young_interval_min"] = cost::young_interval_s(delta, mtbf) / 60;
    analytic["daly_interval_min"] = cost::daly_interval_s(delta, mtbf) / 60;
  }
  return {{"schema", "ditwin.longrun_report/1"},
          {"plan", in.plan},
          {"trials", r.trials.size()},
          {"ettr", to_json(ettr)},
          {"goodput", {{"tokens_per_s", ettr.mean * tokens_per_s},
                       {"steps_per_s", ettr.mean / in.step_time_s},
                       {"fraction_of_ideal", ettr.mean}}},
          {"effective_mfu", emfu.mean},
          {"effective_mfu_p5_p95", {emfu.p5, emfu.p95}},
          {"mfu", in.mfu},
          {"cluster_share_training", held},
          {"interruptions_per_day", ipd.mean},
          {"interruptions_per_day_stats", to_json(ipd)},
          {"planned_per_day", ppd.mean},
          {"wall_days", to_json(days)},
          {"unfinished_trials", unfinished},
          {"lost_hours_by_cause", lost_h},
          {"lost_fraction_by_cause", lost_frac},
          {"restart_hours_by_step", restart},
          {"policy", {{"checkpoint_mode", in.checkpoint_mode}, {"interval_min", in.interval_s / 60},
                      {"stall_s", in.stall_s}, {"persist_s", in.persist_s}, {"load_s", in.load_s},
                      {"checkpoint_bytes", in.checkpoint_bytes}, {"spare_nodes", in.spare_nodes},
                      {"heartbeat_s", in.heartbeat_s}, {"nccl_timeout_s", in.timeout_s}}},
          {"failure_model", {{"source", in.failures.source}, {"weibull_shape", in.failures.weibull_shape},
                             {"unexpected_per_node_day", in.failures.unexpected_per_node_s() * 86400},
                             {"planned_per_node_day", in.failures.planned_per_node_s * 86400}}},
          {"analytic", analytic},
          {"step_time_s", in.step_time_s},
          {"wall_s", mean_wall},
          {"productive_s", mean_wall - std::accumulate(mean_lost.begin(), mean_lost.end(), 0.0)},
          {"scheduled_failures", scheduled},
          {"numerical", {{"policy", in.numerical_policy}, {"rate_per_day", in.numerical_per_s * 86400},
                         {"faults_per_trial", std::accumulate(r.trials.begin(), r.trials.end(), 0.0,
                                                              [](double a, const TrialResult& t) { return a + t.numerical; }) /
                                                  static_cast<double>(std::max<std::size_t>(1, r.trials.size()))}}},
          {"rollouts", rollouts_json(r)},  // controlled rollouts (issue 18 part 3)
          {"simgrid_activities", r.simgrid_events}};
}

nlohmann::json to_trace(const LongRunResult& r) {
  std::vector<RunEvent> events;
  for (const auto& e : r.timeline) events.push_back({e.name, e.category, e.start_s, e.duration_s});
  return to_run_trace("job " + r.inputs.plan + " (trial 0)", events, {{"plan", r.inputs.plan}, {"kind", "longrun"}});
}

nlohmann::json optimize_checkpoint(const Plan& plan, double step_time_s, double mfu, const LongRunOptions& options,
                                   bool modes) {
  using nlohmann::json;
  std::vector<std::string> mode_list = modes ? std::vector<std::string>{"sync", "async", "in_memory"}
                                             : std::vector<std::string>{plan.reliability.checkpoint.mode};
  LongRunOptions quiet = options;
  quiet.timeline = false;
  json candidates = json::array(), per_mode = json::object();
  json best;
  for (const auto& mode : mode_list) {
    Plan p = plan;
    p.reliability.checkpoint.mode = mode;
    p.reliability.checkpoint.interval_s = 1800;
    LongRunInputs base = longrun_inputs(p, step_time_s, mfu);
    double rate = base.failures.unexpected_per_node_s() * base.nodes;
    if (rate <= 0) throw InputError("--optimize: the plan has no failures (reliability.failures), nothing to trade against");
    double mtbf = 1 / rate, delta = std::max(base.stall_s, 1e-3);
    double young = cost::young_interval_s(delta, mtbf), daly = cost::daly_interval_s(delta, mtbf);
    std::vector<std::pair<std::string, double>> grid = {{"young", young}, {"daly", daly}};
    for (double f : {0.125, 0.25, 0.5, 0.7071, 1.4142, 2.0, 4.0, 8.0}) grid.push_back({"grid", daly * f});
    if (plan.reliability.checkpoint.interval_s > 0) grid.push_back({"plan", plan.reliability.checkpoint.interval_s});
    json mode_out = {{"young_interval_min", young / 60}, {"daly_interval_min", daly / 60},
                     {"checkpoint_stall_s", base.stall_s}, {"job_mtbf_h", mtbf / 3600}};
    for (const auto& [label, interval] : grid) {
      // Below one step, or below the time an async write takes, the interval cannot be kept.
      double usable = std::max({interval, base.persist_s, step_time_s});
      p.reliability.checkpoint.interval_s = usable;
      LongRunInputs in = longrun_inputs(p, step_time_s, mfu);
      Summary s = summarize([&] {
        std::vector<double> v;
        for (const auto& t : simulate_longrun(in, quiet).trials) v.push_back(t.ettr());
        return v;
      }());
      json c = {{"mode", mode}, {"label", label}, {"interval_min", in.interval_s / 60}, {"ettr", to_json(s)}};
      if (label == "young" || label == "daly") mode_out[label + "_ettr"] = to_json(s);
      candidates.push_back(c);
      if (best.is_null() || s.mean > best["ettr"]["mean"].get<double>()) best = c;
    }
    per_mode[mode] = mode_out;
  }
  return {{"candidates", candidates}, {"best", best}, {"by_mode", per_mode}, {"trials", options.trials},
          {"seed", options.seed}};
}

}  // namespace ditwin::sim
