// The executor's scheduler. One thread per rank walks the compute stream in program order;
// data-parallel collectives are posted, non-blocking and in program order, as soon as their
// dependencies are done, and polled between compute ops, so gradient buckets reduce while
// backward continues. ZeRO stages follow the Program: which collectives run, on which parameter
// groups, and who updates which shard. The model, the arrays and the clocks belong to a Backend
// (CPU or CUDA), so this one scheduler drives both.
#include "exec/runtime.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <limits>
#include <stdexcept>
#include <thread>

#include "exec/ft/crypto.hpp"
#include "exec/model/rng.hpp"
#include "kernels/gaussian_noise.hpp"  // defines: add_gaussian_noise
#include "model/accounting.hpp"
#include "model/errors.hpp"
#include "model/player.hpp"
#include "model/privacy.hpp"

namespace ditwin::exec {

namespace {

using Clock = std::chrono::steady_clock;

// Splits n floats into `parts` contiguous near-equal pieces.
std::vector<int> split(std::size_t n, int parts) {
  std::vector<int> counts(parts, static_cast<int>(n / parts));
  for (std::size_t i = 0; i < n % parts; ++i) ++counts[i];
  return counts;
}

struct Range {
  std::size_t begin = 0, size = 0;
};

// A unit of ZeRO sharding: a bucket (ZeRO-1/2) or a parameter group (ZeRO-3).
struct Shard {
  Range whole;              // in the flat parameter array
  std::vector<int> counts;  // per rank
  std::size_t mine_begin = 0;  // this rank's slice, relative to whole.begin
  int mine = 0;
  Buffer grad;      // this rank's gradient slice (accumulated over micro-batches)
  Buffer m, v;      // optimizer states of this rank's slice
  Buffer params;    // ZeRO-3: this rank's parameter slice (the only copy kept)
};

// The parameter group a compute op works on (ZeRO-3 binds that group's gathered copy).
std::string group_of(const Op& op) {
  if (op.layer >= 0) return "L" + std::to_string(op.layer);
  if (op.part.rfind("embed.", 0) == 0) return "embed";
  return "head";
}

constexpr GroupKind comm_groups[] = {GroupKind::tp, GroupKind::cp, GroupKind::dp, GroupKind::dp_cp, GroupKind::pp};

class Runner {
 public:
  Runner(const Plan& plan, const Program& program, Communicator& comm, DataSource& data, const ExecOptions& options,
         Backend& backend)
      : plan_(plan), program_(program), comm_(comm), data_(data), options_(options),
        ops_(program.class_of(comm.rank()).ops),
        micro_batches_(static_cast<int>(plan.micro_batches())),
        model_(backend) {
    ranks_ = comm.size();
    rank_ = comm.rank();
    place_ = program.place_of(rank_);
    // One communicator per group this rank belongs to, split from the world in the same order on
    // every rank; a group is named by its lowest rank.
    for (GroupKind kind : comm_groups)
      groups_comm_[static_cast<int>(kind)] =
          comm.split(static_cast<int>(program.group_members(kind, rank_).front()), rank_);
    dpc_ = groups_comm_[static_cast<int>(GroupKind::dp_cp)].get();
    for (const auto& g : model_.groups()) groups_[g.name] = g;
    total_ = model_.parameter_count();
    zero_ = dpc_->size() > 1 ? plan.parallelism.zero : 0;
    last_stage_ = place_.pp == program.pp - 1;
    // Who reports the loss: the last stage; every TP rank when the final layer holds a sequence
    // shard (their losses are parts), else TP rank 0 alone (the others hold the same value).
    loss_rank_ = last_stage_ && (program.sequence_parallel || place_.tp == 0);
    std::vector<float> init(total_);
    model_.init_parameters(init.data(), plan.training.seed);
    if (zero_ < 3) {
      params_ = Buffer(model_, total_);
      model_.upload(params_.data(), init.data(), total_);
      grads_ = Buffer(model_, total_);
      for (const auto& [name, g] : groups_) model_.bind(name, params_.data() + g.offset, grads_.data() + g.offset);
    }
    build_shards(init);
    plan_releases();
    if (plan.training.privacy.enabled) {
      private_ = true;
      model_.enable_privacy(plan.training.privacy.clip_norm);
      noise_multiplier_ = resolved_noise_multiplier(plan);
      expected_batch_ = privacy_expected_batch(plan);
      sampling_rate_ = privacy_sampling_rate(plan);
      if (options.canaries) pick_canaries(*options.canaries);
      // DP needs the noise and the batch draws unknown to an adversary; the plan's seed is not a
      // secret, so a key from DITWIN_PRIVACY_NOISE_KEY is mixed into both when it is set.
      if (const char* hex = std::getenv("DITWIN_PRIVACY_NOISE_KEY"); hex && *hex) {
        SecretKey key = key_from_hex(hex, "DITWIN_PRIVACY_NOISE_KEY");
        for (std::size_t i = 0; i < SecretKey::size; ++i) secret_ = splitmix64(secret_ += key.data()[i]);
        has_secret_ = true;
      }
    }
  }

  ExecResult run() {
    ExecResult result;
    losses_so_far_ = &result.losses;  // numerical faults: the spike guard's window
    std::vector<std::vector<double>> starts(ops_.size()), durations(ops_.size());
    std::vector<double> timeline;  // (step, op, start, duration) of every op, for the trace
    FaultTolerance* ft = options_.ft;
    std::unique_ptr<CheckpointStore> store;
    std::unique_ptr<Checkpointer> checkpointer;
    if (!options_.checkpoint.dir.empty()) {
      store = std::make_unique<CheckpointStore>(options_.checkpoint.dir,
                                                options_.checkpoint.codec ? *options_.checkpoint.codec : identity_codec());
      if (options_.checkpoint.resume) load_numerical_state();  // before resume: the data position depends on it
      if (options_.checkpoint.resume) resume(*store, result);
      if (start_step_ == 0 && !options_.checkpoint.previous_stage.dir.empty()) start_from_previous_stage();
      checkpointer = std::make_unique<Checkpointer>(*store, comm_, checkpointer_options(*store));
    }
    if (start_step_ >= options_.steps)
      throw InputError("--steps " + std::to_string(options_.steps) + ": the checkpoint in " + options_.checkpoint.dir +
                       " is already at step " + std::to_string(start_step_) + "; nothing left to run");
    steps_run_ = options_.steps - start_step_;
    if (ft) {
      ft->beat(start_step_);
      ft->event({{"event", "train_start"}, {"step", start_step_}});
      ft->training_started();
    }
    auto since_checkpoint = Clock::now();
    for (long long step = start_step_; step < options_.steps; ++step) {
      if (ft) ft->before_step(step);
      // The batch is ready before the step starts, as a prefetching data loader has it; the
      // Program has no data op, so its cost stays out of the step as it does in the prediction.
      set_batches(data_step(step));  // numerical faults: a rollback skips a window of data
      auto t0 = Clock::now();
      verdict_ = Verdict::ok;
      guarded_ = false;
      run_step(step, t0);
      model_.synchronize();  // a GPU's step ends when its streams drain, not when the host has enqueued it
      double local = seconds(Clock::now() - t0);
      model_.step_times(start_, end_);
      double step_time = comm_.all_reduce_max(local);
      double loss = 0;
      if (loss_rank_)
        for (int mb = 0; mb < micro_batches_; ++mb) loss += model_.loss(mb);
      loss = comm_.all_reduce_sum(loss / micro_batches_) / program_.dp;
      if (guarded_) loss = guard_loss_;  // the loss the step guard judged (an injected NaN or spike included)
      if (!std::isfinite(loss) && verdict_ == Verdict::ok) throw std::runtime_error("step " + std::to_string(step) + ": the loss is " + std::to_string(loss));
      result.losses.push_back(loss);
      result.step_times_s.push_back(step_time);
      for (std::size_t i = 0; i < ops_.size(); ++i) {
        if (step >= warmup()) {
          starts[i].push_back(start_[i]);
          durations[i].push_back(end_[i] - start_[i]);
        }
        timeline.insert(timeline.end(), {static_cast<double>(rank_), static_cast<double>(step), static_cast<double>(i),
                                         step_offset_ + start_[i], end_[i] - start_[i]});
      }
      // The trace lays every rank's steps end to end at the synchronous step time (the slowest
      // rank's, what the report's step_times_s holds): each rank's ops then sit inside its step.
      step_offset_ += step_time;
      step_spans_.push_back(step_time);
      if (rank_ == 0 && options_.on_step) options_.on_step(step, loss, step_time);
      // --- numerical faults: the guard's verdict, reached alike on every rank ---
      if (verdict_ != Verdict::ok) {
        record_numerical(step, loss, step_time);
        if (verdict_ == Verdict::rollback) {
          step = rollback(step, store.get(), checkpointer.get(), result) - 1;  // the loop's ++ resumes there
          continue;
        }
      }
      // Checkpoints between steps; the time they block training is the checkpoint stall.
      double stall_s = 0;
      if (checkpointer) {
        if (ft) ft->checkpointing();
        stall_s += checkpointer->poll();
        long long done = step + 1;
        bool due = false;
        if (done < options_.steps) {
          if (options_.checkpoint.interval_steps > 0) due = done % options_.checkpoint.interval_steps == 0;
          else due = comm_.all_reduce_max(seconds(Clock::now() - since_checkpoint) >= options_.checkpoint.interval_s ? 1 : 0) > 0;
        }
        if (done == options_.steps && options_.checkpoint.save_final) due = true;  // a stage's hand-over
        if (due) {
          auto t0 = Clock::now();
          ShardState state = export_state(done);  // the snapshot to host memory
          nlohmann::json extra = {{"losses", result.losses}, {"adamw_step", done}, {"zero", zero_}, {"dp", ranks_},
                                  {"data", {{"next_step", done}, {"samples_seen", samples_before(data_step(done))},
                                            {"source", data_.describe()}}},
                                  {"numerical", numerical_state()},
                                  {"rng", {{"kind", "counter-based SplitMix64"}, {"seed", plan_.training.seed},
                                           {"state", "none beyond (seed, step): restoring the step restores every stream"}}}};
          double snapshot_s = seconds(Clock::now() - t0);
          double blocked_s = checkpointer->save(std::move(state), std::move(extra));
          stall_s += snapshot_s + blocked_s;
          since_checkpoint = Clock::now();
          if (ft && rank_ == 0)
            ft->event({{"event", "checkpoint_saved"}, {"step", done}, {"mode", options_.checkpoint.mode},
                       {"snapshot_s", snapshot_s}, {"blocked_s", blocked_s}});
        }
      }
      if (ft) {
        ft->beat(step + 1);
        if (rank_ == 0)
          ft->event({{"event", "step"}, {"step", step + 1}, {"loss", loss}, {"step_s", step_time}, {"stall_s", stall_s},
                     {"skipped", verdict_ == Verdict::skip}});
      }
      checkpoint_stall_s_ += stall_s;
    }
    if (ft) ft->finishing();
    if (checkpointer) {
      double s = checkpointer->finish();
      checkpoint_stall_s_ += s;
      if (ft && rank_ == 0 && s > 0) ft->event({{"event", "checkpoint_drain"}, {"stall_s", s}});
    }
    StepReport& r = result.report;
    r.source = "measured";
    std::vector<double> after(result.step_times_s.begin() + warmup(), result.step_times_s.end());
    r.step_time_s = median(after);
    // Per-op medians of each stage's first rank (the rank the simulator predicts for the stage).
    std::vector<double> medians;
    if (place_.tp == 0 && place_.cp == 0 && place_.dp == 0)
      for (std::size_t i = 0; i < ops_.size(); ++i)
        medians.insert(medians.end(), {static_cast<double>(rank_), static_cast<double>(i), median(starts[i]), median(durations[i])});
    std::vector<double> stage_medians = comm_.gather_to_root(medians);
    for (std::size_t k = 0; k + 4 <= stage_medians.size(); k += 4) {
      long long who = static_cast<long long>(stage_medians[k]);
      const Op& op = program_.class_of(who).ops.at(static_cast<std::size_t>(stage_medians[k + 1]));
      OpRecord rec;
      rec.name = op.name;
      rec.rank = who;
      rec.stage = program_.stage_of(who);
      rec.stream = op.stream;
      rec.kind = op.kind;
      rec.collective = op.collective;
      rec.group_size = op.group_size;
      rec.start_s = stage_medians[k + 2];
      rec.duration_s = stage_medians[k + 3];
      rec.flops = op.flops;
      rec.bytes = op.bytes;
      rec.deps = dep_names(program_.class_of(who), op);  // the trace's args.deps
      r.ops.push_back(rec);
    }
    std::sort(r.ops.begin(), r.ops.end(), [](const OpRecord& a, const OpRecord& b) { return a.start_s < b.start_s; });
    fill_metrics(r, plan_, options_.peak_flops);
    // Every rank's timeline, for the trace.
    std::vector<double> all = comm_.gather_to_root(timeline);
    for (std::size_t k = 0; k + 5 <= all.size(); k += 5) {
      const Op& op = program_.class_of(static_cast<long long>(all[k])).ops.at(static_cast<std::size_t>(all[k + 2]));
      OpRecord rec;
      rec.name = op.name;
      rec.rank = static_cast<long long>(all[k]);
      rec.stage = program_.stage_of(rec.rank);
      rec.stream = op.stream;
      rec.kind = op.kind;
      rec.start_s = all[k + 3];
      rec.duration_s = all[k + 4];
      rec.flops = op.flops;
      rec.bytes = op.bytes;
      rec.deps = dep_names(program_.class_of(rec.rank), op);  // the trace's args.deps
      r.timeline.push_back(std::move(rec));
    }
    double offset = 0;
    for (double span : step_spans_) {
      r.steps.push_back({offset, span});
      offset += span;
    }
    measured_breakdown(r);  // of the median steady-state step, as a prediction's; spread and skew beside it
    r.extra.update(nlohmann::json{{"executor", model_.name()}, {"ranks", ranks_}, {"steps", options_.steps}, {"warmup_steps", warmup()},
               {"losses", result.losses}, {"step_times_s", result.step_times_s}, {"zero", zero_}});
    if (private_) {
      // The budget spent by the steps run (no data, no per-sample figures: only the mechanism).
      const auto& p = plan_.training.privacy;
      auto spent = privacy_spent(accountant_of(p), conversion_of(p), sampling_rate_, noise_multiplier_,
                                 static_cast<double>(options_.steps), p.delta);
      r.extra["privacy"] = {{"epsilon", std::isinf(spent.epsilon) ? nlohmann::json("inf") : nlohmann::json(spent.epsilon)},
                            {"delta", p.delta},
                            {"accountant", to_string(accountant_of(p))},
                            {"best_order", spent.best_order},
                            {"conversion", to_string(conversion_of(p))},
                            {"noise_multiplier", noise_multiplier_},
                            {"clip_norm", p.clip_norm},
                            {"sampling", p.sampling},
                            {"sampling_rate", sampling_rate_},
                            {"steps", options_.steps},
                            {"expected_batch", expected_batch_},
                            {"poisson_examples_dropped", poisson_dropped_},
                            {"secret_noise_key", has_secret_}};
    }
    r.extra["data"] = {{"source", data_.describe()}, {"first_sample", samples_before(data_step(start_step_))},
                       {"samples_seen", samples_before(data_step(options_.steps))}};
    r.extra["numerical"] = numerical_state();
    if (!options_.checkpoint.dir.empty())
      r.extra["checkpoint"] = {{"dir", options_.checkpoint.dir}, {"mode", options_.checkpoint.mode},
                               {"resumed_from_step", start_step_}, {"stall_s", checkpoint_stall_s_}};
    result.parameters = full_parameters();
    if (audit_) {  // each rank scored and drew only what it owns: sum the shares
      std::vector<double> mine = canary_score_;
      mine.push_back(static_cast<double>(canary_draws_));
      std::vector<double> all = comm_.gather_to_root(mine);
      if (rank_ == 0) {
        result.canary_scores.assign(canary_score_.size(), 0.0);
        for (std::size_t k = 0; k < all.size(); ++k) {
          std::size_t i = k % mine.size();
          if (i < canary_score_.size()) result.canary_scores[i] += all[k];
          else result.canary_draws += static_cast<long long>(all[k]);
        }
      }
    }
    return result;
  }

 private:
  const Plan& plan_;
  const Program& program_;
  Communicator& comm_;
  DataSource& data_;
  ExecOptions options_;
  const std::vector<Op>& ops_;
  int micro_batches_;
  Backend& model_;
  int ranks_ = 1, rank_ = 0, zero_ = 0;
  Program::Place place_;
  std::unique_ptr<Communicator> groups_comm_[8];
  Communicator* dpc_ = nullptr;  // the data- and context-parallel group: gradients and ZeRO shards
  bool last_stage_ = true, loss_rank_ = true;
  std::size_t total_ = 0;
  std::map<std::string, ParamGroup> groups_;
  Buffer params_, grads_;                      // full copies (ZeRO 0-2), in the backend's memory
  std::map<std::string, Shard> shards_;        // by bucket key or group name
  Buffer full_m_, full_v_;                     // ZeRO-0 optimizer states
  // ZeRO-3 working copies, one per gather (an "epoch" of a group), keyed by the gather op.
  std::map<std::size_t, Buffer> gathered_, gathered_grads_;
  std::map<std::size_t, std::vector<std::size_t>> release_after_;  // compute op -> epochs to free
  std::map<std::size_t, std::size_t> epoch_of_;                    // compute or reduce-scatter op -> epoch
  std::vector<double> start_, end_;
  std::vector<double> step_spans_;
  double step_offset_ = 0;
  // DP-SGD.
  bool private_ = false;
  double noise_multiplier_ = 0, sampling_rate_ = 0;
  long long expected_batch_ = 0;  // Poisson: examples a step draws on average (<= its slots)
  long long poisson_dropped_ = 0;  // examples a Poisson draw picked beyond the step's slots
  std::uint64_t secret_ = 0;      // from DITWIN_PRIVACY_NOISE_KEY (0 without it)
  bool has_secret_ = false;

  long long start_step_ = 0, steps_run_ = 0;  // a resumed run starts at its checkpoint's step
  // The data position: data_samples_ samples were consumed before step data_step_ (0 and 0, or
  // what the checkpoint a run resumed from saved).
  long long data_step_ = 0, data_samples_ = 0;
  long long samples_before(long long step) const { return data_samples_ + (step - data_step_) * plan_.training.global_batch; }
  double checkpoint_stall_s_ = 0;
  long long warmup() const { return std::min<long long>(options_.warmup_steps, std::max<long long>(0, steps_run_ - 1)); }

  CheckpointIdentity identity() const {
    CheckpointIdentity id;
    id.plan_identity = options_.checkpoint.plan_identity;
    id.plan_name = plan_.name;
    id.parameters = model_.global_parameter_count();
    id.optimizer = plan_.training.optimizer.kind;
    id.seed = plan_.training.seed;
    return id;
  }

  Checkpointer::Options checkpointer_options(const CheckpointStore& store) {
    Checkpointer::Options o;
    o.mode = options_.checkpoint.mode;
    o.keep = options_.checkpoint.keep;
    o.identity = identity();
    if (FaultTolerance* ft = options_.ft) {
      o.during_write = [ft](std::size_t written, std::size_t total, long long step) {
        ft->during_checkpoint_write(written, total, step);
      };
      int rank = rank_;
      o.after_write = [ft, &store, rank](long long step) { ft->after_checkpoint_write(step, store.shard_path(step, rank)); };
      o.before_commit = [ft](long long step) { ft->event({{"event", "checkpoint_shards_written"}, {"step", step}}); };
      o.on_commit = [ft](const nlohmann::json& body) {
        ft->event({{"event", "checkpoint_committed"}, {"step", body["step"]}, {"ranks", body["ranks"]}});
      };
    }
    return o;
  }

  // Whether this rank writes local element k of its flat array: every element of the one-rank
  // array is written by exactly one rank (TP rank 0 for what every TP rank holds whole).
  bool writes(std::size_t k) const { return place_.tp == 0 || !model_.tp_replicated()[k]; }

  // This rank's share of the state, in the one-rank flat layout (so any layout can load it): under
  // ZeRO its own slices (the only up-to-date copy of its parameters), under DDP an even split of
  // the replicated arrays over the DP x CP group; contiguous runs of global indices.
  ShardState export_state(long long step) const {
    ShardState s;
    s.rank = rank_;
    s.ranks = ranks_;
    s.step = step;
    const auto& global = model_.global_index();
    // Local range [begin, begin + n) of arrays p, m, v (in the backend's memory).
    auto add_range = [&](std::size_t begin, std::size_t n, const float* p, const float* m, const float* v) {
      if (n == 0) return;
      std::vector<float> hp(n), hm(n), hv(n);
      model_.download(hp.data(), p, n);  // the backend's memory (a GPU's) to the host
      model_.download(hm.data(), m, n);
      model_.download(hv.data(), v, n);
      for (std::size_t k = 0; k < n;) {
        if (!writes(begin + k)) {
          ++k;
          continue;
        }
        std::size_t a = k;
        while (k < n && writes(begin + k) && (k == a || global[begin + k] == global[begin + k - 1] + 1)) ++k;
        s.slices.push_back({"params", global[begin + a], std::vector<float>(hp.begin() + a, hp.begin() + k)});
        s.slices.push_back({"m", global[begin + a], std::vector<float>(hm.begin() + a, hm.begin() + k)});
        s.slices.push_back({"v", global[begin + a], std::vector<float>(hv.begin() + a, hv.begin() + k)});
      }
    };
    if (zero_ == 0) {
      auto counts = split(total_, dpc_->size());
      std::size_t begin = 0;
      for (int r = 0; r < dpc_->rank(); ++r) begin += counts[r];
      std::size_t n = counts[dpc_->rank()];
      add_range(begin, n, params_.data() + begin, full_m_.data() + begin, full_v_.data() + begin);
      return s;
    }
    for (const auto& [key, sh] : shards_) {
      std::size_t begin = sh.whole.begin + sh.mine_begin, n = static_cast<std::size_t>(sh.mine);
      add_range(begin, n, zero_ == 3 ? sh.params.data() : params_.data() + begin, sh.m.data(), sh.v.data());
    }
    return s;
  }

  // Installs a loaded checkpoint, whatever layout wrote it: the arrays are whole (one-rank
  // layout), and each rank takes the elements its own layout gives it.
  void import_state(const LoadedCheckpoint& c) {
    const auto& global = model_.global_index();
    // Into the backend's memory; optimizer states a checkpoint does not carry (SGD) start at zero.
    auto fill = [&](float* dst, const std::vector<float>& a, std::size_t begin, std::size_t n) {
      if (n == 0) return;
      if (a.empty()) {
        model_.zero(dst, n);
        return;
      }
      std::vector<float> host(n);
      for (std::size_t k = 0; k < n; ++k) host[k] = a.at(global[begin + k]);
      model_.upload(dst, host.data(), n);
    };
    if (zero_ < 3) fill(params_.data(), c.params, 0, total_);
    if (zero_ == 0) {
      fill(full_m_.data(), c.m, 0, total_);
      fill(full_v_.data(), c.v, 0, total_);
    }
    for (auto& [key, sh] : shards_) {
      std::size_t begin = sh.whole.begin + sh.mine_begin, n = static_cast<std::size_t>(sh.mine);
      fill(sh.m.data(), c.m, begin, n);
      fill(sh.v.data(), c.v, begin, n);
      if (zero_ == 3) fill(sh.params.data(), c.params, begin, n);
    }
    model_.parameters_changed();
    if (zero_ < 3)
      for (const auto& [name, g] : groups_) model_.bind(name, params_.data() + g.offset, grads_.data() + g.offset);
  }

  void resume(const CheckpointStore& store, ExecResult& result) {
    auto t0 = Clock::now();
    FaultTolerance* ft = options_.ft;
    std::vector<nlohmann::json> refused;
    LoadedCheckpoint c;
    bool found = load_latest(store, comm_, identity(), c, [&](long long step, const std::string& why) {
      refused.push_back({{"step", step}, {"why", why}});
      if (rank_ == 0) std::cerr << "ditwin: checkpoint of step " << step << " refused: " << why << "\n";
    }, options_.steps);
    double load_s = seconds(Clock::now() - t0);
    if (!found) {
      if (ft && rank_ == 0) ft->event({{"event", "loaded"}, {"step", 0}, {"load_s", load_s}, {"refused", refused}});
      return;
    }
    import_state(c);
    start_step_ = c.step;
    // The data order continues where the checkpoint's run left it, whatever the rank count.
    data_step_ = c.step;
    data_samples_ = c.step * plan_.training.global_batch;
    const auto& saved = c.manifest.value("data", nlohmann::json::object());
    if (saved.contains("samples_seen") && saved["samples_seen"].is_number_integer())
      data_samples_ = saved["samples_seen"].get<long long>();
    // A step the guard caught with a NaN loss is saved as null.
    for (const auto& l : c.manifest.value("losses", nlohmann::json::array()))
      result.losses.push_back(l.is_number() ? l.get<double>() : std::numeric_limits<double>::quiet_NaN());
    data_step_ = data_step(c.step);
    if (rank_ == 0)
      std::cout << "resumed from the checkpoint of step " << c.step << " (" << store.step_dir(c.step) << ", written by "
                << c.ranks << " rank(s)" << (c.ranks != ranks_ ? ", resharded" : "") << "); the data continues at sample "
                << data_samples_ << "\n" << std::flush;
    if (ft && rank_ == 0)
      ft->event({{"event", "loaded"}, {"step", c.step}, {"load_s", load_s}, {"refused", refused}, {"written_by_ranks", c.ranks}});
  }
  // Multi-stage campaigns: the previous stage's final checkpoint, whatever layout wrote it, becomes
  // this stage's start (weights and optimizer states; the step and the data position continue).
  void start_from_previous_stage() {
    const auto& prev = options_.checkpoint.previous_stage;
    CheckpointStore store(prev.dir, options_.checkpoint.codec ? *options_.checkpoint.codec : identity_codec());
    CheckpointIdentity id = identity();
    id.plan_identity = prev.plan_identity;
    id.optimizer = prev.optimizer;
    std::string why_not;
    LoadedCheckpoint c;
    bool found = load_latest(store, comm_, id, c, [&](long long step, const std::string& why) {
      why_not += "; step " + std::to_string(step) + ": " + why;
    }, prev.step + 1);
    if (!found || c.step != prev.step)
      throw InputError("the previous stage's final checkpoint (step " + std::to_string(prev.step) + " in " + prev.dir +
                       ") is missing or unusable" + (found ? "; the newest is step " + std::to_string(c.step) : "") +
                       why_not + ": run the previous stage to its end first");
    import_state(c);
    start_step_ = data_step_ = c.step;
    data_samples_ = c.manifest.value("data", nlohmann::json::object()).value("samples_seen", c.step * plan_.training.global_batch);
    if (rank_ == 0)
      std::cout << "starting from the previous stage's checkpoint of step " << c.step << " (" << store.step_dir(c.step)
                << ", written by " << c.ranks << " rank(s)"
                << "), resharded to this stage's layout; the data continues at sample " << data_samples_ << "\n"
                << std::flush;
    if (options_.ft && rank_ == 0)
      options_.ft->event({{"event", "stage_start"}, {"step", c.step}, {"from", prev.dir}, {"written_by_ranks", c.ranks}});
  }
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
  static double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  }

  Range range_of(const std::vector<std::string>& names) const {
    std::size_t begin = total_, end = 0, size = 0;
    for (const auto& n : names) {
      const auto& g = groups_.at(n);
      begin = std::min(begin, g.offset);
      end = std::max(end, g.offset + g.size);
      size += g.size;
    }
    if (end - begin != size) throw std::logic_error("gradient bucket groups are not contiguous in the parameter array");
    return {begin, size};
  }
  static std::string key_of(const std::vector<std::string>& names) {
    std::string k;
    for (const auto& n : names) k += n + ",";
    return k;
  }

  Shard make_shard(Range whole) const {
    Shard s;
    s.whole = whole;
    s.counts = split(whole.size, dpc_->size());
    for (int r = 0; r < dpc_->rank(); ++r) s.mine_begin += s.counts[r];
    s.mine = s.counts[dpc_->rank()];
    s.grad = Buffer(model_, s.mine);
    s.m = Buffer(model_, s.mine);
    s.v = Buffer(model_, s.mine);
    return s;
  }

  void build_shards(const std::vector<float>& init) {
    if (zero_ == 0) {
      full_m_ = Buffer(model_, total_);
      full_v_ = Buffer(model_, total_);
      return;
    }
    for (const auto& op : ops_) {
      if (op.param_groups.empty() || op.kind != OpKind::collective) continue;
      std::string key = zero_ == 3 ? op.param_groups.at(0) : key_of(op.param_groups);
      if (shards_.count(key)) continue;
      Shard s = make_shard(range_of(op.param_groups));
      if (zero_ == 3) {
        s.params = Buffer(model_, s.mine);
        model_.upload(s.params.data(), init.data() + s.whole.begin + s.mine_begin, s.mine);
      }
      shards_[key] = std::move(s);
    }
    std::size_t covered = 0;
    for (const auto& [k, s] : shards_) covered += s.whole.size;
    if (covered != total_)
      throw std::logic_error("the Program's collectives cover " + std::to_string(covered) + " of " + std::to_string(total_) + " parameters");
  }

  // ZeRO-3: each gather opens an epoch of its group; the group's compute ops up to the next
  // gather use that epoch's copy, which is freed after the last of them. Prefetched gathers
  // therefore never touch a copy still in use.
  void plan_releases() {
    if (zero_ != 3) return;
    std::map<std::string, std::size_t> current, last_use;
    auto close = [&](const std::string& g) {
      auto it = last_use.find(g);
      if (it != last_use.end()) release_after_[it->second].push_back(current[g]);
      last_use.erase(g);
    };
    for (std::size_t i = 0; i < ops_.size(); ++i) {
      const Op& op = ops_[i];
      if (op.collective == Collective::all_gather && !op.param_groups.empty()) {
        close(op.param_groups[0]);
        current[op.param_groups[0]] = i;
      } else if (op.kind == OpKind::compute && op.phase == Phase::gradient_sync && !op.param_groups.empty()) {
        epoch_of_[i] = current.at(op.param_groups[0]);  // DP-SGD noise into the group's gathered gradients
      } else if (op.kind == OpKind::compute) {
        std::string g = group_of(op);
        if (!current.count(g)) throw std::logic_error("ZeRO-3 op " + op.name + " runs before its parameters are gathered");
        epoch_of_[i] = current[g];
        last_use[g] = i;
      } else if (op.collective == Collective::reduce_scatter && !op.param_groups.empty()) {
        epoch_of_[i] = current.at(op.param_groups[0]);
      }
    }
    for (const auto& [g, i] : std::map<std::string, std::size_t>(last_use)) release_after_[i].push_back(current[g]);
  }

  // Poisson sampling (DP-SGD): example j of the dataset joins step `step`'s batch with
  // probability q, independently; every rank draws the same set (seeded by seed and step).
  // Geometric gaps between chosen examples make this O(batch), not O(dataset).
  std::vector<long long> poisson_draw(long long step) const {
    std::vector<long long> out;
    const long long n = plan_.training.privacy.dataset_size;
    Rng rng({plan_.training.seed, static_cast<std::uint64_t>(step), 0x706f6973736f6eULL, secret_});  // "poisson"
    const double log_keep = std::log1p(-sampling_rate_);
    long long j = -1;
    while (true) {
      double u = 1.0 - rng.uniform();  // (0, 1]
      double gap = sampling_rate_ >= 1 ? 0 : std::floor(std::log(u) / log_keep);
      if (gap >= static_cast<double>(n)) break;
      j += 1 + static_cast<long long>(gap);
      if (j >= n) break;
      out.push_back(j);
    }
    // In random order, so that an overflow of the step's slots drops random examples, not the
    // highest-numbered ones.
    for (std::size_t i = out.size(); i > 1; --i) std::swap(out[i - 1], out[rng.next() % i]);
    return out;
  }

  void set_batches(long long step) {
    long long b = plan_.training.micro_batch;
    if (private_ && plan_.training.privacy.sampling == "poisson") {
      set_poisson_batches(step);
      return;
    }
    for (int mb = 0; mb < micro_batches_; ++mb) {
      Batch batch;
      for (long long i = 0; i < b; ++i) append_samples(batch, data_.sample(sample_ref(step, mb, i)));
      model_.set_batch(mb, std::move(batch));
    }
    // The next step's samples are read while this one trains (a no-op for synthetic data).
    if (step + 1 < options_.steps) {
      std::vector<SampleRef> next;
      for (int mb = 0; mb < micro_batches_; ++mb)
        for (long long i = 0; i < b; ++i) next.push_back(sample_ref(step + 1, mb, i));
      data_.prefetch(std::move(next));
    }
  }

  // Sample i of micro-batch mb of this rank at `step`: its index in the global batch (so any split
  // over ranks and micro-batches names the same samples) and its place in the data order.
  SampleRef sample_ref(long long step, int mb, long long i) const {
    long long slot = (static_cast<long long>(place_.dp) * micro_batches_ + mb) * plan_.training.micro_batch + i;
    return {step, slot, samples_before(step) + slot};
  }

  // The step's slots (global_batch of them, rank-major as the fixed batches) take the drawn
  // examples; slots left over are masked (weight 0: they run but contribute nothing);
  // examples drawn beyond the slots are dropped and counted (docs/privacy.md).
  void set_poisson_batches(long long step) {
    long long b = plan_.training.micro_batch;
    std::vector<long long> drawn = poisson_draw(step);
    long long slots = plan_.training.global_batch;
    if (static_cast<long long>(drawn.size()) > slots) poisson_dropped_ += static_cast<long long>(drawn.size()) - slots;
    for (int mb = 0; mb < micro_batches_; ++mb) {
      Batch batch;
      for (long long i = 0; i < b; ++i) {
        long long slot = (static_cast<long long>(place_.dp) * micro_batches_ + mb) * b + i;
        bool used = slot < static_cast<long long>(drawn.size());
        long long example = used ? drawn[slot] : slot;
        // The example's latent and class are fixed; its diffusion noise and timestep are the step's.
        Batch item = data_.example(example, step);
        item.weight = {used ? 1.0f : 0.0f};
        append_samples(batch, item);
      }
      model_.set_batch(mb, std::move(batch));
    }
  }

  // --- one-run privacy audit (ExecOptions::canaries) ---------------------------------------
  // A canary is a coordinate of the one-rank model's flat parameters (the same in every layout).
  // Each rank holding it adds its gradient where the rank adds that element's noise (so a
  // parameter every TP rank holds whole gets it on each, as its noise); the one owner (TP rank 0
  // for those) counts its draws and scores it.
  struct LocalCanary {
    std::size_t canary, local;  // which canary, at which element of this rank's flat array
    bool owner;
  };
  std::vector<LocalCanary> canary_at_;   // this rank's canaries, by local element
  std::vector<char> canary_in_;
  std::uint64_t canary_key_ = 0;
  std::vector<double> canary_score_;     // this rank's share: the coordinates it owns
  long long canary_draws_ = 0;

  void pick_canaries(const Canaries& c) {
    const std::size_t whole = model_.global_parameter_count();
    if (c.included.size() > whole / 2)
      throw InputError("privacy audit: " + std::to_string(c.included.size()) + " canaries for a model of " +
                       std::to_string(whole) + " parameters; use at most half as many canaries as parameters");
    canary_in_ = c.included;
    canary_key_ = c.key;
    canary_score_.assign(c.included.size(), 0.0);
    // Distinct coordinates, uniform over the parameters (rejection: at most half are taken).
    Rng rng({c.key, 0x636f6f7264ULL});  // "coord"
    std::map<std::size_t, std::size_t> canary_of;  // one-rank coordinate -> canary
    while (canary_of.size() < c.included.size()) {
      std::size_t j = static_cast<std::size_t>(rng.next() % whole);
      canary_of.emplace(j, canary_of.size());
    }
    const auto& global = model_.global_index();
    const auto& replicated = model_.tp_replicated();
    const bool tp_first = place_.tp == 0;
    for (std::size_t k = 0; k < total_; ++k) {
      auto it = canary_of.find(global[k]);
      if (it != canary_of.end()) canary_at_.push_back({it->second, k, tp_first || !replicated[k]});
    }
    audit_ = true;
  }
  bool audit_ = false;
  // Whether included canary i joins step `step` (probability q, the same on every rank).
  bool canary_drawn(std::size_t i, long long step) const {
    return canary_in_[i] && Rng({canary_key_, static_cast<std::uint64_t>(step), i, 0x64726177ULL}).uniform() < sampling_rate_;
  }
  // Each drawn canary's gradient, clip_norm on its coordinate, into the slice [begin, begin + n)
  // of the flat gradient held at `grads`, in the buffers' scale (sum / (micro_batch x micro-batches)).
  void add_canaries(float* grads, std::size_t begin, std::size_t n, long long step, double scale) {
    for (const auto& c : canary_at_) {
      std::size_t j = c.local;
      if (j < begin || j >= begin + n || !canary_drawn(c.canary, step)) continue;
      float value = 0;
      model_.download(&value, grads + (j - begin), 1);
      value += static_cast<float>(plan_.training.privacy.clip_norm / scale);
      model_.upload(grads + (j - begin), &value, 1);
      if (c.owner) ++canary_draws_;
    }
  }
  // The released gradient at each canary's coordinate, read by the rank that updates it.
  void score_canaries(const float* grads, std::size_t begin, std::size_t n) {
    for (const auto& c : canary_at_) {
      std::size_t j = c.local;
      if (j < begin || j >= begin + n || !c.owner) continue;
      float value = 0;
      model_.download(&value, grads + (j - begin), 1);
      canary_score_[c.canary] += value;
    }
  }

  // DP-SGD noise: this rank's slice of the bucket (the slice a reduce-scatter would give it), so
  // that the reduced sum carries each element's noise exactly once. Element i of the one-rank flat
  // parameter array draws N_i of the (seed, step) stream, whichever rank adds it. The buffers hold
  // sum_b c_b g_b / (micro_batch x micro-batches), so the noise std is scaled the same way.
  // ZeRO-3: the op names one parameter group, whose gradients are the group's gathered-gradient
  // buffer of this epoch; the slice is the shard its reduce-scatter gives this rank.
  void add_noise(std::size_t i, long long step) {
    const Op& op = ops_[i];
    if (noise_multiplier_ == 0 && !audit_) return;
    Range r = range_of(op.param_groups);
    std::vector<int> counts = split(r.size, dpc_->size());
    const int me = dpc_->rank();
    std::size_t begin = r.begin;
    for (int k = 0; k < me; ++k) begin += counts[k];
    double scale = static_cast<double>(plan_.training.micro_batch) * micro_batches_;
    float stddev = static_cast<float>(noise_multiplier_ * plan_.training.privacy.clip_norm / scale);
    std::uint64_t key = Rng({plan_.training.seed, static_cast<std::uint64_t>(step), 0x6e6f697365ULL, secret_}).next();  // "noise"
    float* grads = grads_.data() + begin;
    if (zero_ == 3) grads = gathered_grads_.at(epoch_of_.at(i)).data() + (begin - r.begin);
    if (audit_) add_canaries(grads, begin, static_cast<std::size_t>(counts[me]), step, scale);
    if (noise_multiplier_ > 0) add_noise_by_global_index(grads, begin, static_cast<std::size_t>(counts[me]), key, stddev);
  }
  // Local elements [begin, begin + n) draw the noise of their one-rank (global) indices: under TP
  // the ranks hold different parameters at the same local index, and keying by it would give them
  // the same draw. So a TP run adds exactly the one-rank run's noise to each parameter (a
  // replicated one the same on every TP rank, as its values are). Runs of consecutive global
  // indices go to the kernel whole: one run, today's call, when tp is 1.
  void add_noise_by_global_index(float* grads, std::size_t begin, std::size_t n, std::uint64_t key, float stddev) {
    const auto& global = model_.global_index();
    for (std::size_t k = 0; k < n;) {
      const std::size_t first = global[begin + k];
      std::size_t run = 1;
      while (k + run < n && global[begin + k + run] == first + run) ++run;
      model_.add_gaussian_noise(grads + k, run, first, key, stddev);
      k += run;
    }
  }

  // --- the step: the Program player drives this engine ------------------------------------
  // Compute ops run on this thread when the player starts them (and are reported finished at
  // once); communication is posted non-blocking and tested whenever the player waits, so
  // gradient buckets and pipeline transfers progress between compute ops.
  class Engine final : public PlayerEngine {
   public:
    Engine(Runner& r, long long step) : r_(r), step_(step) {}
    void start(std::size_t i) override { r_.start_op(i, step_); }
    void ready(std::size_t i) override { r_.capture(i); }
    std::size_t wait_any() override {
      auto t0 = Clock::now();
      for (unsigned spins = 0;; ++spins) {
        r_.poll();
        if (!r_.finished_now_.empty()) {
          std::size_t i = r_.finished_now_.front();
          r_.finished_now_.pop_front();
          return i;
        }
        if (r_.in_flight_.empty()) throw std::logic_error("the player waits, but no op is in flight");
        if ((spins & 1023) == 1023) {
          double waited = seconds(Clock::now() - t0);
          if (r_.options_.collective_timeout_s > 0 && waited > r_.options_.collective_timeout_s)
            throw std::runtime_error("collective timeout: op " + r_.ops_[r_.in_flight_.begin()->first].name + " on rank " +
                                     std::to_string(r_.rank_) + " has not completed after " + std::to_string(waited) +
                                     " s (reliability.nccl_timeout_s); a peer is hung or dead");
          std::this_thread::yield();
        }
      }
    }

   private:
    Runner& r_;
    long long step_;
  };

  struct InFlight {
    Communicator* comm = nullptr;
    Communicator::Handle handle = 0;
  };
  std::map<std::size_t, InFlight> in_flight_;
  std::deque<std::size_t> finished_now_;
  std::map<std::size_t, Buffer> send_buffers_, recv_buffers_;
  Clock::time_point t0_;

  double now() const { return seconds(Clock::now() - t0_); }

  void run_step(long long step, Clock::time_point t0) {
    t0_ = t0;
    model_.step_begin(ops_.size());
    finished_now_.clear();
    if (zero_ < 3) model_.zero(grads_.data(), total_);
    for (auto& [k, s] : shards_) model_.zero(s.grad.data(), s.mine);
    Engine engine(*this, step);
    ProgramPlayer(ops_).play(engine);
  }

  Communicator& group_comm(GroupKind g) { return *groups_comm_[static_cast<int>(g)]; }

  // A gradient reduce-scatter (ZeRO 1/2) takes its bucket's gradients when they are complete, and
  // the next micro-batch's backward starts again from zero, even if the dp stream is still busy.
  void capture(std::size_t i) {
    const Op& op = ops_[i];
    if (op.collective != Collective::reduce_scatter || op.param_groups.empty() || zero_ == 0 || zero_ == 3) return;
    if (dpc_->size() == 1 || op.group_size == 1) return;
    Shard& s = shard_for(op);
    Buffer send(model_, s.whole.size);
    model_.copy(send.data(), grads_.data() + s.whole.begin, s.whole.size);
    model_.zero(grads_.data() + s.whole.begin, s.whole.size);
    send_buffers_[i] = std::move(send);
  }

  void start_op(std::size_t i, long long step) {
    const Op& op = ops_[i];
    if (op.kind == OpKind::compute || op.kind == OpKind::optimizer) {
      flush_sends();
      if (zero_ == 3 && op.kind == OpKind::compute && op.phase != Phase::gradient_sync) {
        std::size_t e = epoch_of_.at(i);
        auto grads = gathered_grads_.find(e);
        model_.bind(group_of(op), gathered_.at(e).data(), grads == gathered_grads_.end() ? nullptr : grads->second.data());
      }
      model_.compute_begin(i);
      if (op.kind == OpKind::optimizer) optimizer_step(step + 1);
      else if (op.phase == Phase::gradient_sync) add_noise(i, step);
      else model_.run(op.part, op.layer, op.phase, op.microbatch);
      model_.compute_end(i);
      auto rel = release_after_.find(i);
      if (rel != release_after_.end())
        for (std::size_t e : rel->second) gathered_.erase(e);
      finished_now_.push_back(i);
      return;
    }
    model_.collective_begin(i);
    if (op.kind == OpKind::p2p) post_p2p(i);
    else if (!op.param_groups.empty() && op.group != GroupKind::tp) post(i);
    else post_tensor(i);
  }

  void finish_comm(std::size_t i) {
    model_.collective_end(i);
    finished_now_.push_back(i);
  }

  // MPI moves a large message only while both ranks are inside MPI calls (Open MPI's
  // shared-memory rendezvous needs the sender to answer the receiver), and a rank computing
  // makes none: a pipeline send posted just before a long op (the last stage's final gradient
  // before its optimizer step) would reach the waiting peer only after it. So before computing
  // again a rank drives its outgoing transfers for a bounded time: enough to finish one whose
  // receiver is waiting (~0.1 ms for tiny-cpu's 136 KiB), not long enough to stall on one whose
  // receiver is itself still computing. NCCL progresses on its own stream; there this is moot.
  void flush_sends() {
    auto sending = [&] {
      for (const auto& [j, f] : in_flight_)
        if (ops_[j].kind == OpKind::p2p && ops_[j].collective == Collective::send) return true;
      return false;
    };
    for (auto t0 = Clock::now(); sending() && seconds(Clock::now() - t0) < send_flush_s;) poll();
  }
  static constexpr double send_flush_s = 5e-4;

  // Pipeline transfers: to or from the same-place rank of stage peer_stage (the PP group is
  // ordered by stage), tagged with the Program's match id.
  void post_p2p(std::size_t i) {
    const Op& op = ops_[i];
    Communicator& pp = group_comm(GroupKind::pp);
    TensorComm io = model_.comm_begin(op);
    InFlight f{&pp, 0};
    if (op.collective == Collective::send) f.handle = pp.send(io.send, io.send_count, op.peer_stage, op.match_id);
    else f.handle = pp.recv(io.recv, io.recv_count, op.peer_stage, op.match_id);
    model_.collective_posted(i);
    in_flight_[i] = f;
  }

  // The model's own tensor collectives (TP, sequence parallel, CP).
  void post_tensor(std::size_t i) {
    const Op& op = ops_[i];
    Communicator& c = group_comm(op.group);
    if (c.size() == 1 || op.group_size == 1) {  // a group of one: nothing to talk about
      finish_comm(i);
      return;
    }
    TensorComm io;
    if (op.param_groups.empty()) io = model_.comm_begin(op);
    InFlight f{&c, 0};
    const int n = c.size();
    if (op.collective == Collective::all_reduce) {
      if (op.param_groups.empty()) f.handle = c.all_reduce_sum(io.recv, io.recv_count);
      else {  // gradients of the parameters every TP rank holds whole, summed over the sequence shards
        Range r = range_of(op.param_groups);
        tp_sum_ = replicated_runs(r);
        std::size_t count = 0;
        for (auto [b, len] : tp_sum_) count += len;
        if (count == 0) {
          finish_comm(i);
          return;
        }
        sum_buffer_ = Buffer(model_, count);
        std::size_t at = 0;
        for (auto [b, len] : tp_sum_) {
          model_.copy(sum_buffer_.data() + at, grads_.data() + b, len);
          at += len;
        }
        f.handle = c.all_reduce_sum(sum_buffer_.data(), count);
        sum_op_ = i;
      }
    } else if (op.collective == Collective::all_gather) {
      f.handle = c.all_gather(io.send, io.recv, split(io.recv_count, n));
    } else if (op.collective == Collective::reduce_scatter) {
      f.handle = c.reduce_scatter_sum(io.send, io.recv, split(io.send_count, n));
    } else {
      throw std::logic_error("collective " + std::string(to_string(op.collective)) + " of op " + op.name +
                             " is not supported by the executor");
    }
    model_.collective_posted(i);
    in_flight_[i] = f;
  }
  // Sequence parallelism: the runs of a group range whose parameters every TP rank holds whole.
  std::vector<std::pair<std::size_t, std::size_t>> tp_sum_;
  std::size_t sum_op_ = ~std::size_t(0);
  Buffer sum_buffer_;
  std::vector<std::pair<std::size_t, std::size_t>> replicated_runs(Range r) const {
    std::vector<std::pair<std::size_t, std::size_t>> runs;
    const auto& rep = model_.tp_replicated();
    for (std::size_t k = r.begin; k < r.begin + r.size;) {
      if (!rep[k]) {
        ++k;
        continue;
      }
      std::size_t b = k;
      while (k < r.begin + r.size && rep[k]) ++k;
      runs.push_back({b, k - b});
    }
    return runs;
  }

  // Tests every communication in flight a few times: MPI moves a non-blocking operation forward
  // only inside MPI calls, one protocol step at a time (each pass costs ~1 us when idle).
  void poll() {
    for (int pass = 0; pass < 8 && !in_flight_.empty(); ++pass) {
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        if (it->second.comm->test(it->second.handle)) {
          std::size_t i = it->first;
          it = in_flight_.erase(it);
          complete(i);
        } else {
          ++it;
        }
      }
    }
  }

  Shard& shard_for(const Op& op) {

    std::string key = zero_ == 3 ? op.param_groups.at(0) : key_of(op.param_groups);
    return shards_.at(key);
  }

  // Starts data-parallel collective i (gradient buckets, parameter gathers) over the DP x CP group.
  void post(std::size_t i) {
    const Op& op = ops_[i];
    if (dpc_->size() == 1 || op.group_size == 1) {  // nothing to talk about
      finish_comm(i);
      return;
    }
    Communicator& comm = *dpc_;
    Communicator::Handle h = 0;
    if (op.collective == Collective::all_reduce) {
      Range r = range_of(op.param_groups);
      h = comm.all_reduce_sum(grads_.data() + r.begin, r.size);
    } else if (op.collective == Collective::reduce_scatter) {
      Shard& s = shard_for(op);
      // Copy the gradients out so the next micro-batch's backward can reuse the buffer.
      Buffer send;
      if (zero_ == 3) {
        std::size_t e = epoch_of_.at(i);
        send = std::move(gathered_grads_.at(e));
        gathered_grads_.erase(e);
        send_buffers_[i] = std::move(send);
      }  // ZeRO 1/2: captured when the op became ready
      recv_buffers_[i] = Buffer(model_, s.mine);
      h = comm.reduce_scatter_sum(send_buffers_[i].data(), recv_buffers_[i].data(), s.counts);
    } else if (op.collective == Collective::all_gather) {
      Shard& s = shard_for(op);
      const float* mine = zero_ == 3 ? s.params.data() : params_.data() + s.whole.begin + s.mine_begin;
      send_buffers_[i] = Buffer(model_, s.mine);
      model_.copy(send_buffers_[i].data(), mine, s.mine);
      float* out;
      if (zero_ == 3) {
        auto& full = gathered_[i];
        full = Buffer(model_, s.whole.size);
        out = full.data();
        if (op.phase == Phase::backward) gathered_grads_[i] = Buffer(model_, s.whole.size);
      } else {
        out = params_.data() + s.whole.begin;
      }
      h = comm.all_gather(send_buffers_[i].data(), out, s.counts);
    } else {
      throw std::logic_error("collective " + std::string(to_string(op.collective)) + " is not supported by the executor");
    }
    model_.collective_posted(i);
    in_flight_[i] = InFlight{&comm, h};
  }

  void complete(std::size_t i) {
    const Op& op = ops_[i];
    if (op.kind == OpKind::p2p || (op.param_groups.empty() && op.kind == OpKind::collective)) {
      model_.comm_end(op);
      finish_comm(i);
      return;
    }
    if (i == sum_op_) {  // the summed replicated gradients back into place
      std::size_t at = 0;
      for (auto [b, len] : tp_sum_) {
        model_.copy(grads_.data() + b, sum_buffer_.data() + at, len);
        at += len;
      }
      sum_op_ = ~std::size_t(0);
      sum_buffer_ = Buffer();
      finish_comm(i);
      return;
    }
    if (op.collective == Collective::reduce_scatter) {
      Shard& s = shard_for(op);
      model_.add(s.grad.data(), recv_buffers_.at(i).data(), s.mine);
    }
    if (op.collective == Collective::all_gather && zero_ < 3) model_.parameters_changed();
    send_buffers_.erase(i);
    recv_buffers_.erase(i);
    finish_comm(i);
  }

  void optimizer_step(long long step) {
    // The model seeds each micro-batch's backward with 1/micro_batches, so the accumulated
    // gradient is that of the rank's mean loss; the ranks' gradients are summed: average them.
    float scale = 1.0f / static_cast<float>(program_.dp);
    // DP-SGD with Poisson sampling averages over the expected batch, not over the slots.
    if (private_ && expected_batch_ != plan_.training.global_batch)
      scale *= static_cast<float>(plan_.training.global_batch) / static_cast<float>(expected_batch_);
    if (!guard(step - 1, scale)) return;  // numerical faults: this update is dropped (skip) or undone (rollback)
    OptimizerSpec opt = plan_.training.optimizer;
    opt.lr *= lr_factor_at(step - 1);
    if (audit_) {  // the reduced, noisy gradient: what DP-SGD releases
      if (zero_ == 0 && dpc_->rank() == 0) score_canaries(grads_.data(), 0, total_);
      if (zero_ != 0)
        for (auto& [key, s] : shards_) score_canaries(s.grad.data(), s.whole.begin + s.mine_begin, static_cast<std::size_t>(s.mine));
    }
    if (zero_ == 0) {
      if (scale != 1.0f) model_.scale(grads_.data(), scale, total_);  // 1 rank too: Poisson sampling's expected batch
      model_.update(params_.data(), grads_.data(), full_m_.data(), full_v_.data(), total_, opt, step);
      model_.parameters_changed();
      return;
    }
    for (auto& [key, s] : shards_) {
      model_.scale(s.grad.data(), scale, s.mine);
      float* p = zero_ == 3 ? s.params.data() : params_.data() + s.whole.begin + s.mine_begin;
      model_.update(p, s.grad.data(), s.m.data(), s.v.data(), static_cast<std::size_t>(s.mine), opt, step);
    }
    model_.parameters_changed();
  }

  // --- numerical faults (issue 18 part 2; docs/reliability.md, "Numerical faults") ---------------
  // The guard runs inside the optimizer op, before any update: every rank's mean loss and its
  // owned part of the squared gradient norm are summed over the world, each rank judges them, and
  // the verdicts are max-reduced, so all ranks drop (or roll back) the same step.
  enum class Verdict { ok = 0, skip = 1, rollback = 2 };
  Verdict verdict_ = Verdict::ok;
  bool guarded_ = false;
  double guard_loss_ = 0, guard_grad_norm_ = 0;
  std::string guard_what_;
  int rollbacks_ = 0;
  struct Detour {
    long long from = 0, skip = 0, lr_steps = 0;  // from this step on: data `skip` steps ahead; lr x factor for lr_steps
    double lr_factor = 1;
  };
  std::vector<Detour> detours_;      // every rollback's, in order (also in DIR/numerical.json)
  std::set<long long> flagged_;      // steps the guard caught: their losses stay out of the spike window
  std::vector<nlohmann::json> numerical_events_;

  long long data_step(long long s) const {
    for (const auto& d : detours_)
      if (s >= d.from) s += d.skip;
    return s;
  }
  double lr_factor_at(long long s) const {
    double f = 1;
    for (const auto& d : detours_)
      if (s >= d.from && s < d.from + d.lr_steps) f *= d.lr_factor;
    return f;
  }
  nlohmann::json numerical_state() const {
    nlohmann::json d = nlohmann::json::array();
    for (const auto& x : detours_)
      d.push_back({{"from_step", x.from}, {"skip_data_steps", x.skip}, {"lr_factor", x.lr_factor}, {"lr_steps", x.lr_steps}});
    return {{"policy", plan_.reliability.numerical.policy}, {"detours", d}, {"flagged_steps", flagged_},
            {"events", numerical_events_}};
  }
  std::string numerical_file() const {
    return options_.checkpoint.dir.empty() ? "" : options_.checkpoint.dir + "/numerical.json";
  }
  // DIR/numerical.json: the run's detours, so that an attempt restarted after a kill (or a run that
  // should skip a window from the start, as the tests' reference) keeps the same data order.
  void load_numerical_state() {
    std::string path = numerical_file();
    std::error_code ec;
    if (path.empty() || !std::filesystem::exists(path, ec)) return;
    nlohmann::json j = read_json_file(path);
    try {
      detours_.clear();
      for (const auto& d : j.at("detours"))
        detours_.push_back({d.at("from_step").get<long long>(), d.value("skip_data_steps", 0LL), d.value("lr_steps", 0LL),
                            d.value("lr_factor", 1.0)});
      for (const auto& s : j.value("flagged_steps", nlohmann::json::array())) flagged_.insert(s.get<long long>());
    } catch (const nlohmann::json::exception& e) {
      throw InputError(path + ": not a numerical-state file (" + e.what() + ")");
    }
  }
  void save_numerical_state() {
    std::string path = numerical_file();
    if (path.empty() || rank_ != 0) return;
    nlohmann::json j = numerical_state();
    j.erase("events");
    {
      std::ofstream out(path + ".tmp");
      out << j.dump(1) << "\n";
      if (!out) throw std::runtime_error("cannot write " + path + ".tmp");
    }
    std::filesystem::rename(path + ".tmp", path);
  }

  // Returns true when the update may go ahead. `scale` is what the gradients are multiplied by
  // before the update (the norm reported is of the averaged gradient).
  bool guard(long long step, float scale) {
    const auto& num = plan_.reliability.numerical;
    double local_loss = 0;
    if (loss_rank_)
      for (int mb = 0; mb < micro_batches_; ++mb) local_loss += model_.loss(mb);
    local_loss /= micro_batches_;
    FaultTolerance::NumericalInjection inj;
    if (options_.ft) inj = options_.ft->numerical_at(step);
    // The gradients this rank applies (ZeRO: its shards; DDP: the replicated array, counted once per
    // DP x CP group), each with its first element's index in the flat array: a parameter every TP
    // rank holds whole counts on TP rank 0 only (writes()), so the norm is the one-rank model's.
    struct Part {
      float* p;
      std::size_t n, begin;
    };
    std::vector<Part> parts;
    if (zero_ == 0) parts.push_back({grads_.data(), total_, 0});
    else
      for (auto& [key, s] : shards_)
        parts.push_back({s.grad.data(), static_cast<std::size_t>(s.mine), s.whole.begin + static_cast<std::size_t>(s.mine_begin)});
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (auto& [p, n, begin] : parts) {
      if (inj.nan) model_.scale(p, nan, n);
      if (inj.factor != 1) model_.scale(p, static_cast<float>(inj.factor), n);
    }
    if (inj.nan) local_loss = std::numeric_limits<double>::quiet_NaN();
    local_loss *= inj.factor;
    double sq = 0;
    if (zero_ != 0 || dpc_->rank() == 0) {
      std::vector<float> host;
      for (auto& [p, n, begin] : parts) {
        host.resize(n);
        model_.download(host.data(), p, n);
        for (std::size_t i = 0; i < n; ++i)
          if (writes(begin + i)) sq += static_cast<double>(host[i]) * host[i];
      }
    }
    guard_loss_ = comm_.all_reduce_sum(local_loss) / program_.dp;
    guard_grad_norm_ = std::sqrt(comm_.all_reduce_sum(sq)) * scale;
    guarded_ = true;
    // This rank's judgement, then everyone's: the worst verdict wins on every rank.
    std::string what;
    if (!std::isfinite(guard_loss_)) what = "non-finite loss";
    else if (!std::isfinite(guard_grad_norm_)) what = "non-finite gradient norm";
    else if (num.spike_sigma > 0) {
      std::vector<double> w = spike_window(step);
      if (static_cast<int>(w.size()) >= num.window) {
        double mean = std::accumulate(w.begin(), w.end(), 0.0) / static_cast<double>(w.size()), var = 0;
        for (double x : w) var += (x - mean) * (x - mean);
        double sd = std::sqrt(var / static_cast<double>(w.size() - 1));
        if (guard_loss_ > mean + num.spike_sigma * sd)
          what = "loss spike (" + std::to_string(guard_loss_) + " > mean " + std::to_string(mean) + " + " +
                 std::to_string(num.spike_sigma) + " x sd " + std::to_string(sd) + " of the last " + std::to_string(w.size()) + ")";
      }
    }
    double mine = what.empty() ? 0 : (num.policy == "rollback" ? 2 : 1);
    double all = comm_.all_reduce_max(mine);
    verdict_ = static_cast<Verdict>(static_cast<int>(all));
    guard_what_ = what.empty() && verdict_ != Verdict::ok ? "caught on another rank" : what;
    return verdict_ == Verdict::ok;
  }
  // The losses the spike guard compares with: the last `window` accepted ones before `step`.
  std::vector<double> spike_window(long long step) const {
    std::vector<double> w;
    const auto& losses = losses_so_far_ ? *losses_so_far_ : std::vector<double>{};
    for (long long s = std::min<long long>(step, static_cast<long long>(losses.size())) - 1;
         s >= 0 && static_cast<int>(w.size()) < plan_.reliability.numerical.window; --s)
      if (!flagged_.count(s) && std::isfinite(losses[static_cast<std::size_t>(s)])) w.push_back(losses[static_cast<std::size_t>(s)]);
    return w;
  }
  const std::vector<double>* losses_so_far_ = nullptr;

  void record_numerical(long long step, double loss, double step_time) {
    const auto& num = plan_.reliability.numerical;
    flagged_.insert(step);
    nlohmann::json e = {{"event", "numerical"}, {"category", "numerical"}, {"step", step + 1}, {"bad_step", step},
                        {"what", guard_what_}, {"policy", num.policy},
                        {"loss", std::isfinite(loss) ? nlohmann::json(loss) : nlohmann::json(std::to_string(loss))},
                        {"grad_norm", std::isfinite(guard_grad_norm_) ? nlohmann::json(guard_grad_norm_)
                                                                      : nlohmann::json(std::to_string(guard_grad_norm_))},
                        {"step_s", step_time}};
    numerical_events_.push_back(e);
    if (rank_ == 0) {
      std::cout << "numerical fault at step " << step << ": " << guard_what_ << " (loss " << loss << ", gradient norm "
                << guard_grad_norm_ << "); " << (verdict_ == Verdict::skip ? "update skipped" : "rolling back") << "\n"
                << std::flush;
      if (options_.ft) options_.ft->event(e);
    }
    if (verdict_ == Verdict::skip) save_numerical_state();
  }

  // Back to the newest checkpoint at or before `step` (the initial state when there is none),
  // with the data from `step` on moved skip_data_window steps ahead. Returns the step to resume at.
  long long rollback(long long step, CheckpointStore* store, Checkpointer* checkpointer, ExecResult& result) {
    const auto& num = plan_.reliability.numerical;
    FaultTolerance* ft = options_.ft;
    if (ft && rank_ == 0)  // the bad step's time: computed, then thrown away
      ft->event({{"event", "step"}, {"step", step + 1}, {"loss", nullptr}, {"step_s", step_spans_.back()}, {"stall_s", 0.0},
                 {"rolled_back", true}});
    if (++rollbacks_ > num.max_rollbacks)
      throw std::runtime_error("step " + std::to_string(step) + ": numerical fault (" + guard_what_ + ") after " +
                               std::to_string(num.max_rollbacks) + " rollback(s) (reliability.numerical.max_rollbacks)");
    auto t0 = Clock::now();
    if (checkpointer) checkpoint_stall_s_ += checkpointer->finish();  // an async write in flight lands first
    LoadedCheckpoint c;
    bool found = store && load_latest(*store, comm_, identity(), c, [&](long long s, const std::string& why) {
      if (rank_ == 0) std::cerr << "ditwin: checkpoint of step " << s << " refused: " << why << "\n";
    }, step + 1);
    result.losses.clear();
    if (found) {
      import_state(c);
      for (const auto& l : c.manifest.value("losses", nlohmann::json::array()))
        result.losses.push_back(l.is_number() ? l.get<double>() : std::numeric_limits<double>::quiet_NaN());
    } else {  // the initial state: the seed's parameters, optimizer state zero
      std::vector<float> init(total_);
      model_.init_parameters(init.data(), plan_.training.seed);
      c.params.assign(model_.global_parameter_count(), 0.0f);
      const auto& global = model_.global_index();
      for (std::size_t k = 0; k < total_; ++k) c.params[global[k]] = init[k];
      import_state(c);
      c.step = 0;
    }
    // The data position of the state restored, before the new detour moves what follows.
    long long to = found ? c.step : 0;
    data_step_ = data_step(to);
    data_samples_ = data_step_ * plan_.training.global_batch;
    if (found) {
      const auto& saved = c.manifest.value("data", nlohmann::json::object());
      if (saved.contains("samples_seen") && saved["samples_seen"].is_number_integer())
        data_samples_ = saved["samples_seen"].get<long long>();
    }
    detours_.push_back({step, num.skip_data_window, num.lr_factor != 1 ? num.lr_steps : 0, num.lr_factor});
    save_numerical_state();
    double load_s = seconds(Clock::now() - t0);
    nlohmann::json e = {{"event", "numerical_rollback"}, {"category", "numerical"}, {"bad_step", step}, {"to_step", to},
                        {"load_s", load_s}, {"skip_data_steps", num.skip_data_window}, {"lr_factor", num.lr_factor},
                        {"lr_steps", num.lr_steps}, {"from_checkpoint", found}};
    numerical_events_.push_back(e);
    if (rank_ == 0) {
      std::cout << "rolled back to " << (found ? "the checkpoint of step " + std::to_string(to) : std::string("the initial state"))
                << " in " << load_s << " s; the data of steps " << step << ".." << step + num.skip_data_window - 1
                << " is skipped" << (num.lr_factor != 1 ? ", lr x " + std::to_string(num.lr_factor) + " for " + std::to_string(num.lr_steps) + " steps" : std::string()) << "\n" << std::flush;
      if (ft) ft->event(e);
    }
    if (ft) ft->beat(to);
    return to;
  }
  // --- end numerical faults ---------------------------------------------------------------------

  // The whole model in the one-rank flat layout, on rank 0 (empty elsewhere): every rank's
  // current parameters (ZeRO shards gathered first), each element from the rank that writes it.
  std::vector<float> full_parameters() {
    std::vector<float> local(total_);
    if (zero_ == 0) {
      model_.download(local.data(), params_.data(), total_);
    } else if (zero_ < 3) {  // the last step's update is gathered only at the next step's start
      for (auto& [key, s] : shards_) {
        Buffer mine(model_, s.mine);
        model_.copy(mine.data(), params_.data() + s.whole.begin + s.mine_begin, s.mine);
        dpc_->wait(dpc_->all_gather(mine.data(), params_.data() + s.whole.begin, s.counts));
      }
      model_.download(local.data(), params_.data(), total_);
    } else {
      Buffer full(model_, total_);
      for (auto& [key, s] : shards_) dpc_->wait(dpc_->all_gather(s.params.data(), full.data() + s.whole.begin, s.counts));
      model_.download(local.data(), full.data(), total_);
    }
    if (ranks_ == 1) return local;
    // (global index, value) pairs from the ranks that write them: DP x CP rank 0 of each place.
    std::vector<double> pairs;
    if (place_.dp == 0 && place_.cp == 0) {
      const auto& global = model_.global_index();
      for (std::size_t k = 0; k < total_; ++k)
        if (writes(k)) pairs.insert(pairs.end(), {static_cast<double>(global[k]), static_cast<double>(local[k])});
    }
    std::vector<double> all = comm_.gather_to_root(pairs);
    if (rank_ != 0) return {};
    std::vector<float> whole(model_.global_parameter_count(), std::numeric_limits<float>::quiet_NaN());
    for (std::size_t k = 0; k + 1 < all.size(); k += 2) whole.at(static_cast<std::size_t>(all[k])) = static_cast<float>(all[k + 1]);
    return whole;
  }
};

}  // namespace

ModelShard shard_of(const Program& program, long long rank) {
  Program::Place p = program.place_of(rank);
  ModelShard s;
  s.tp = program.tp;
  s.tp_index = p.tp;
  s.sequence_parallel = program.sequence_parallel;
  s.cp = program.cp;
  s.cp_index = p.cp;
  s.pp = program.pp;
  s.stage = p.pp;
  s.virtual_stages = program.virtual_stages;
  s.groups = program.class_of(rank).param_groups;
  return s;
}

void check_plan(const Plan& plan, const std::string& backend) {
  const auto& par = plan.parallelism;
  const std::string who = backend == "cuda" ? "the CUDA executor" : "the CPU executor";
  if (backend != "cpu" && backend != "cuda") throw InputError("--backend " + backend + ": choose cpu or cuda");
  const ModelFamily family = plan.model.family;
  const std::string fam = to_string(family);
  if (backend == "cuda" && family != ModelFamily::dit)
    throw InputError("model.family: " + who + " trains dit models; this plan is " + fam +
                     " (the CPU executor trains dit, mmdit and unified: --backend cpu)");
  if (family != ModelFamily::dit && family != ModelFamily::mmdit && family != ModelFamily::unified)
    throw InputError("model.family: " + who + " trains dit, mmdit and unified models; this plan is " + fam);
  if (family == ModelFamily::unified && par.sequence_parallel && par.tp > 1)
    throw InputError("parallelism.sequence_parallel: " + who + " runs the unified model's tensor parallelism without it "
                     "(its vocabulary-parallel LM head reads every text row); set it to false");
  if (backend == "cuda" && (par.tp != 1 || par.pp != 1 || par.cp != 1))
    throw InputError("parallelism: " + who + " runs data parallelism only (tp, pp and cp must be 1; the CPU executor "
                     "runs every layout: --backend cpu)");
  if (plan.training.privacy.enabled) {
    // Under TP, CP and PP each rank's per-sample squared norms are partial sums the lowering
    // all-reduces over the TP group, the CP group (after gathering each op's rows: a sample's norm
    // is not a sum of its token shards' norms) and the stages ("privacy.norms.*_allreduce").
    if (par.tp > 1 && par.sequence_parallel)
      throw InputError("parallelism.sequence_parallel: the executor runs DP-SGD (training.privacy) under tensor "
                       "parallelism without it (the replicated parameters' per-sample gradients are then partial "
                       "sums over the TP ranks, whose norms cannot be summed); set it to false");
  }
  if (par.sequence_parallel && par.tp > 1 && par.zero == 3 && par.dp * par.cp > 1)
    throw InputError("parallelism.zero: the executor runs sequence parallelism with ZeRO 0, 1 or 2 (ZeRO-3 is simulated only)");
  if (backend == "cpu" && plan.training.precision != Precision::fp32)
    throw InputError("training.precision: the CPU executor trains in fp32; set \"precision\": \"fp32\"");
  if (backend == "cuda" && plan.training.precision != Precision::bf16)
    throw InputError("training.precision: the CUDA executor trains in bf16 (fp32 master weights); set \"precision\": \"bf16\"");
  if (plan.training.objective.kind != "rectified_flow")
    throw InputError("training.objective.kind: " + who + " trains \"rectified_flow\", not \"" +
                     plan.training.objective.kind + "\"");
  if (plan.training.privacy.enabled && plan.training.privacy.dataset_size > 2147483647LL)
    throw InputError("training.privacy.dataset_size: the CPU executor's data source numbers examples with 32-bit ints (at most 2147483647)");
}

ExecResult execute_plan(const Plan& plan, const Program& program, Communicator& comm, DataSource& data,
                        const ExecOptions& options) {
  check_plan(plan);
  auto backend = make_cpu_backend(plan, shard_of(program, comm.rank()));
  return execute_plan(plan, program, comm, data, options, *backend);
}

ExecResult execute_plan(const Plan& plan, const Program& program, Communicator& comm, DataSource& data,
                        const ExecOptions& options, Backend& backend) {
  check_plan(plan, backend.name());
  if (comm.size() != program.world())
    throw InputError("parallelism: the plan runs on " + std::to_string(program.world()) + " ranks (dp x tp x pp x cp) but " +
                     std::to_string(comm.size()) + " processes are running (use --ranks " + std::to_string(program.world()) + ")");
  if (options.steps < 1) throw InputError("--steps must be >= 1");
  return Runner(plan, program, comm, data, options, backend).run();
}

}  // namespace ditwin::exec
