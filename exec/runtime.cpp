// The executor's scheduler. One thread per rank walks the compute stream in program order;
// data-parallel collectives are posted, non-blocking and in program order, as soon as their
// dependencies are done, and polled between compute ops, so gradient buckets reduce while
// backward continues. ZeRO stages follow the Program: which collectives run, on which parameter
// groups, and who updates which shard.
#include "exec/runtime.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <stdexcept>

#include "model/accounting.hpp"
#include "model/errors.hpp"

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
  std::vector<float> grad;      // this rank's gradient slice (accumulated over micro-batches)
  std::vector<float> m, v;      // optimizer states of this rank's slice
  std::vector<float> params;    // ZeRO-3: this rank's parameter slice (the only copy kept)
};

std::string group_of(const Op& op) {
  if (op.layer >= 0) return "L" + std::to_string(op.layer);
  if (op.name.rfind("embed.", 0) == 0) return "embed";
  return "head";
}

class Runner {
 public:
  Runner(const Plan& plan, const Program& program, Communicator& comm, DataSource& data, const ExecOptions& options)
      : plan_(plan), program_(program), comm_(comm), data_(data), options_(options),
        ops_(program.classes.at(0).ops),
        micro_batches_(static_cast<int>(plan.micro_batches())),
        model_(plan.model, static_cast<int>(plan.training.micro_batch), micro_batches_) {
    ranks_ = comm.size();
    rank_ = comm.rank();
    for (const auto& g : model_.groups()) groups_[g.name] = g;
    total_ = model_.parameter_count();
    zero_ = ranks_ > 1 ? plan.parallelism.zero : 0;
    std::vector<float> init(total_);
    model_.init_parameters(init.data(), plan.training.seed);
    if (zero_ < 3) {
      params_ = std::move(init);
      grads_.assign(total_, 0.f);
      for (const auto& [name, g] : groups_) model_.bind(name, params_.data() + g.offset, grads_.data() + g.offset);
    }
    build_shards(init);
    plan_releases();
  }

  ExecResult run() {
    ExecResult result;
    std::vector<std::vector<double>> starts(ops_.size()), durations(ops_.size());
    std::vector<double> timeline;  // (step, op, start, duration) of every op, for the trace
    FaultTolerance* ft = options_.ft;
    std::unique_ptr<CheckpointStore> store;
    std::unique_ptr<Checkpointer> checkpointer;
    if (!options_.checkpoint.dir.empty()) {
      store = std::make_unique<CheckpointStore>(options_.checkpoint.dir,
                                                options_.checkpoint.codec ? *options_.checkpoint.codec : identity_codec());
      if (options_.checkpoint.resume) resume(*store, result);
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
      set_batches(step);
      auto t0 = Clock::now();
      run_step(step, t0);
      double local = seconds(Clock::now() - t0);
      double step_time = comm_.all_reduce_max(local);
      double loss = 0;
      for (int mb = 0; mb < micro_batches_; ++mb) loss += model_.loss(mb);
      loss = comm_.all_reduce_sum(loss / micro_batches_) / ranks_;
      if (!std::isfinite(loss)) throw std::runtime_error("step " + std::to_string(step) + ": the loss is " + std::to_string(loss));
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
      step_offset_ += local;
      step_spans_.push_back(local);
      if (rank_ == 0 && options_.on_step) options_.on_step(step, loss, step_time);
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
        if (due) {
          auto t0 = Clock::now();
          ShardState state = export_state(done);  // the snapshot to host memory
          nlohmann::json extra = {{"losses", result.losses}, {"adamw_step", done}, {"zero", zero_}, {"dp", ranks_},
                                  {"data", {{"next_step", done}, {"samples_seen", done * plan_.training.global_batch},
                                            {"sample", "a function of (training.seed, step, index in the global batch)"}}},
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
          ft->event({{"event", "step"}, {"step", step + 1}, {"loss", loss}, {"step_s", step_time}, {"stall_s", stall_s}});
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
    for (std::size_t i = 0; i < ops_.size(); ++i) {
      const Op& op = ops_[i];
      OpRecord rec;
      rec.name = op.name;
      rec.rank = 0;
      rec.stage = 0;
      rec.stream = op.stream;
      rec.kind = op.kind;
      rec.collective = op.collective;
      rec.group_size = op.group_size;
      rec.start_s = median(starts[i]);
      rec.duration_s = median(durations[i]);
      rec.flops = op.flops;
      rec.bytes = op.bytes;
      r.ops.push_back(rec);
    }
    std::sort(r.ops.begin(), r.ops.end(), [](const OpRecord& a, const OpRecord& b) { return a.start_s < b.start_s; });
    fill_metrics(r, plan_, options_.peak_flops);
    r.breakdown = breakdown_of(r.ops, r.step_time_s);
    // Every rank's timeline, for the trace.
    std::vector<double> all = comm_.gather_to_root(timeline);
    for (std::size_t k = 0; k + 5 <= all.size(); k += 5) {
      const Op& op = ops_[static_cast<std::size_t>(all[k + 2])];
      OpRecord rec;
      rec.name = op.name;
      rec.rank = static_cast<long long>(all[k]);
      rec.stream = op.stream;
      rec.kind = op.kind;
      rec.start_s = all[k + 3];
      rec.duration_s = all[k + 4];
      rec.flops = op.flops;
      rec.bytes = op.bytes;
      r.timeline.push_back(std::move(rec));
    }
    double offset = 0;
    for (double span : step_spans_) {
      r.steps.push_back({offset, span});
      offset += span;
    }
    r.extra = {{"executor", "cpu"}, {"ranks", ranks_}, {"steps", options_.steps}, {"warmup_steps", warmup()},
               {"losses", result.losses}, {"step_times_s", result.step_times_s}, {"zero", zero_}};
    if (!options_.checkpoint.dir.empty())
      r.extra["checkpoint"] = {{"dir", options_.checkpoint.dir}, {"mode", options_.checkpoint.mode},
                               {"resumed_from_step", start_step_}, {"stall_s", checkpoint_stall_s_}};
    result.parameters = full_parameters();
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
  DiT model_;
  int ranks_ = 1, rank_ = 0, zero_ = 0;
  std::size_t total_ = 0;
  std::map<std::string, ParamGroup> groups_;
  std::vector<float> params_, grads_;         // full copies (ZeRO 0-2)
  std::map<std::string, Shard> shards_;        // by bucket key or group name
  std::vector<float> full_m_, full_v_;         // ZeRO-0 optimizer states
  // ZeRO-3 working copies, one per gather (an "epoch" of a group), keyed by the gather op.
  std::map<std::size_t, std::vector<float>> gathered_, gathered_grads_;
  std::map<std::size_t, std::vector<std::size_t>> release_after_;  // compute op -> epochs to free
  std::map<std::size_t, std::size_t> epoch_of_;                    // compute or reduce-scatter op -> epoch
  std::vector<double> start_, end_;
  std::vector<double> step_spans_;
  double step_offset_ = 0;

  long long start_step_ = 0, steps_run_ = 0;  // a resumed run starts at its checkpoint's step
  double checkpoint_stall_s_ = 0;
  long long warmup() const { return std::min<long long>(options_.warmup_steps, std::max<long long>(0, steps_run_ - 1)); }

  CheckpointIdentity identity() const {
    CheckpointIdentity id;
    id.plan_identity = options_.checkpoint.plan_identity;
    id.plan_name = plan_.name;
    id.parameters = total_;
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

  // This rank's share of the state, in the flat layout: under ZeRO its own slices (the only
  // up-to-date copy of its parameters), under DDP an even split of the replicated arrays.
  ShardState export_state(long long step) const {
    ShardState s;
    s.rank = rank_;
    s.ranks = ranks_;
    s.step = step;
    auto add = [&](const char* name, std::size_t begin, const float* p, std::size_t n) {
      s.slices.push_back({name, begin, std::vector<float>(p, p + n)});
    };
    if (zero_ == 0) {
      auto counts = split(total_, ranks_);
      std::size_t begin = 0;
      for (int r = 0; r < rank_; ++r) begin += counts[r];
      std::size_t n = counts[rank_];
      add("params", begin, params_.data() + begin, n);
      add("m", begin, full_m_.data() + begin, n);
      add("v", begin, full_v_.data() + begin, n);
      return s;
    }
    for (const auto& [key, sh] : shards_) {
      std::size_t begin = sh.whole.begin + sh.mine_begin, n = static_cast<std::size_t>(sh.mine);
      add("params", begin, zero_ == 3 ? sh.params.data() : params_.data() + begin, n);
      add("m", begin, sh.m.data(), n);
      add("v", begin, sh.v.data(), n);
    }
    return s;
  }

  // Installs a loaded checkpoint, whatever rank count and ZeRO stage wrote it: the arrays are
  // whole, and each rank takes the slices its own layout gives it.
  void import_state(const LoadedCheckpoint& c) {
    auto slice = [](const std::vector<float>& a, std::size_t begin, std::size_t n) {
      return a.empty() ? std::vector<float>(n, 0.f) : std::vector<float>(a.begin() + begin, a.begin() + begin + n);
    };
    if (zero_ < 3) params_ = c.params;
    if (zero_ == 0) {
      full_m_ = slice(c.m, 0, total_);
      full_v_ = slice(c.v, 0, total_);
    }
    for (auto& [key, sh] : shards_) {
      std::size_t begin = sh.whole.begin + sh.mine_begin, n = static_cast<std::size_t>(sh.mine);
      sh.m = slice(c.m, begin, n);
      sh.v = slice(c.v, begin, n);
      if (zero_ == 3) sh.params = slice(c.params, begin, n);
    }
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
    for (const auto& l : c.manifest.value("losses", nlohmann::json::array())) result.losses.push_back(l.get<double>());
    if (rank_ == 0)
      std::cout << "resumed from the checkpoint of step " << c.step << " (" << store.step_dir(c.step) << ", written by "
                << c.ranks << " rank(s)" << (c.ranks != ranks_ ? ", resharded" : "") << ")\n" << std::flush;
    if (ft && rank_ == 0)
      ft->event({{"event", "loaded"}, {"step", c.step}, {"load_s", load_s}, {"refused", refused}, {"written_by_ranks", c.ranks}});
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
    s.counts = split(whole.size, ranks_);
    for (int r = 0; r < rank_; ++r) s.mine_begin += s.counts[r];
    s.mine = s.counts[rank_];
    s.grad.assign(s.mine, 0.f);
    s.m.assign(s.mine, 0.f);
    s.v.assign(s.mine, 0.f);
    return s;
  }

  void build_shards(const std::vector<float>& init) {
    if (zero_ == 0) {
      full_m_.assign(total_, 0.f);
      full_v_.assign(total_, 0.f);
      return;
    }
    for (const auto& op : ops_) {
      if (op.param_groups.empty() || op.kind != OpKind::collective) continue;
      std::string key = zero_ == 3 ? op.param_groups.at(0) : key_of(op.param_groups);
      if (shards_.count(key)) continue;
      Shard s = make_shard(range_of(op.param_groups));
      if (zero_ == 3) s.params.assign(init.begin() + s.whole.begin + s.mine_begin, init.begin() + s.whole.begin + s.mine_begin + s.mine);
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

  void set_batches(long long step) {
    long long b = plan_.training.micro_batch;
    for (int mb = 0; mb < micro_batches_; ++mb) {
      Batch batch;
      batch.size = static_cast<int>(b);
      for (long long i = 0; i < b; ++i) {
        // Each sample is a function of (seed, step, its index in the global batch) alone, so any
        // split of the batch over ranks and micro-batches sees the same data.
        long long index = (static_cast<long long>(rank_) * micro_batches_ + mb) * b + i;
        Batch one = data_.batch(step, 0, static_cast<int>(index), 1);
        batch.x0.insert(batch.x0.end(), one.x0.begin(), one.x0.end());
        batch.noise.insert(batch.noise.end(), one.noise.begin(), one.noise.end());
        batch.t.insert(batch.t.end(), one.t.begin(), one.t.end());
        batch.y.insert(batch.y.end(), one.y.begin(), one.y.end());
      }
      model_.set_batch(mb, std::move(batch));
    }
  }

  // --- the step -------------------------------------------------------------------------
  std::vector<int> waiting_;
  std::vector<std::vector<std::size_t>> dependents_;
  std::deque<std::size_t> dp_queue_;
  std::map<std::size_t, Communicator::Handle> in_flight_;
  std::map<std::size_t, std::vector<float>> send_buffers_, recv_buffers_;
  Clock::time_point t0_;

  double now() const { return seconds(Clock::now() - t0_); }

  void run_step(long long step, Clock::time_point t0) {
    t0_ = t0;
    std::size_t n = ops_.size();
    start_.assign(n, 0);
    end_.assign(n, 0);
    waiting_.assign(n, 0);
    finished_.assign(n, false);
    dependents_.assign(n, {});
    dp_queue_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      waiting_[i] = static_cast<int>(ops_[i].deps.size());
      for (auto d : ops_[i].deps) dependents_[d].push_back(i);
      if (ops_[i].stream == Stream::dp) dp_queue_.push_back(i);
      else if (ops_[i].stream != Stream::compute)
        throw InputError(std::string("parallelism: the CPU executor runs data parallelism only; op ") + ops_[i].name +
                         " needs the " + to_string(ops_[i].stream) + " stream");
    }
    if (zero_ < 3) std::fill(grads_.begin(), grads_.end(), 0.f);
    for (auto& [k, s] : shards_) std::fill(s.grad.begin(), s.grad.end(), 0.f);
    for (std::size_t i = 0; i < n; ++i) {
      const Op& op = ops_[i];
      if (op.stream != Stream::compute) continue;
      for (auto d : op.deps) wait_for(d);
      if (zero_ == 3 && op.kind == OpKind::compute) {
        std::size_t e = epoch_of_.at(i);
        auto grads = gathered_grads_.find(e);
        model_.bind(group_of(op), gathered_.at(e).data(), grads == gathered_grads_.end() ? nullptr : grads->second.data());
      }
      start_[i] = now();
      if (op.kind == OpKind::optimizer) optimizer_step(step + 1);
      else {
        auto address = parse_op_name(op.name);
        model_.run(address.part, address.layer, op.phase, address.microbatch);
      }
      end_[i] = now();
      done(i);
      auto rel = release_after_.find(i);
      if (rel != release_after_.end())
        for (std::size_t e : rel->second) gathered_.erase(e);
      poll();
    }
    // Whatever communication is left (parameter gathers after the optimizer).
    while (!dp_queue_.empty() || !in_flight_.empty()) {
      launch_ready();
      if (!in_flight_.empty()) wait_for(in_flight_.begin()->first);
      else if (!dp_queue_.empty())
        throw std::logic_error("data-parallel op " + ops_[dp_queue_.front()].name + " can never start");
    }
  }

  void done(std::size_t i) {
    finished_[i] = true;
    for (auto d : dependents_[i]) --waiting_[d];
    launch_ready();
  }

  void launch_ready() {
    while (!dp_queue_.empty() && waiting_[dp_queue_.front()] == 0) {
      std::size_t i = dp_queue_.front();
      dp_queue_.pop_front();
      start_[i] = now();
      post(i);
    }
  }

  // Drives outstanding collectives between ops. MPI advances a non-blocking collective only
  // inside MPI calls, one protocol step or fragment at a time, so a few passes per op let the
  // buckets keep pace with backward (each pass costs ~1 us when nothing is ready).
  void poll() {
    for (int pass = 0; pass < 8 && !in_flight_.empty(); ++pass) {
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        if (comm_.test(it->second)) {
          std::size_t i = it->first;
          it = in_flight_.erase(it);
          complete(i);
        } else {
          ++it;
        }
      }
    }
  }

  // Blocks until op i has finished, completing earlier collectives as needed.
  void wait_for(std::size_t i) {
    while (!finished_[i]) {
      launch_ready();
      if (finished_[i]) return;
      if (in_flight_.empty())
        throw std::logic_error("op " + ops_[i].name + " waits on a collective that can never start");
      // Collectives complete in the order they were posted on every rank.
      auto it = in_flight_.count(i) ? in_flight_.find(i) : in_flight_.begin();
      std::size_t j = it->first;
      comm_.wait(it->second);
      in_flight_.erase(it);
      complete(j);
    }
  }
  std::vector<bool> finished_;

  Shard& shard_for(const Op& op) {
    std::string key = zero_ == 3 ? op.param_groups.at(0) : key_of(op.param_groups);
    return shards_.at(key);
  }

  // Starts collective i.
  void post(std::size_t i) {
    const Op& op = ops_[i];
    if (ranks_ == 1 || op.param_groups.empty()) {  // nothing to talk about
      end_[i] = now();
      done(i);
      return;
    }
    Communicator::Handle h = 0;
    if (op.collective == Collective::all_reduce) {
      Range r = range_of(op.param_groups);
      h = comm_.all_reduce_sum(grads_.data() + r.begin, r.size);
    } else if (op.collective == Collective::reduce_scatter) {
      Shard& s = shard_for(op);
      // Copy the gradients out so the next micro-batch's backward can reuse the buffer.
      std::vector<float> send(s.whole.size);
      if (zero_ == 3) {
        std::size_t e = epoch_of_.at(i);
        send = std::move(gathered_grads_.at(e));
        gathered_grads_.erase(e);
      } else {
        std::copy(grads_.begin() + s.whole.begin, grads_.begin() + s.whole.begin + s.whole.size, send.begin());
        std::fill(grads_.begin() + s.whole.begin, grads_.begin() + s.whole.begin + s.whole.size, 0.f);
      }
      send_buffers_[i] = std::move(send);
      recv_buffers_[i].assign(s.mine, 0.f);
      h = comm_.reduce_scatter_sum(send_buffers_[i].data(), recv_buffers_[i].data(), s.counts);
    } else if (op.collective == Collective::all_gather) {
      Shard& s = shard_for(op);
      const float* mine = zero_ == 3 ? s.params.data() : params_.data() + s.whole.begin + s.mine_begin;
      send_buffers_[i].assign(mine, mine + s.mine);
      float* out;
      if (zero_ == 3) {
        auto& full = gathered_[i];
        full.assign(s.whole.size, 0.f);
        out = full.data();
        if (op.phase == Phase::backward) gathered_grads_[i].assign(s.whole.size, 0.f);
      } else {
        out = params_.data() + s.whole.begin;
      }
      h = comm_.all_gather(send_buffers_[i].data(), out, s.counts);
    } else {
      throw std::logic_error("collective " + std::string(to_string(op.collective)) + " is not supported by the CPU executor");
    }
    in_flight_[i] = h;
  }

  void complete(std::size_t i) {
    const Op& op = ops_[i];
    if (op.collective == Collective::reduce_scatter) {
      Shard& s = shard_for(op);
      const auto& got = recv_buffers_.at(i);
      for (int k = 0; k < s.mine; ++k) s.grad[k] += got[k];
    }
    send_buffers_.erase(i);
    recv_buffers_.erase(i);
    end_[i] = now();
    done(i);
  }

  void optimizer_step(long long step) {
    // The model seeds each micro-batch's backward with 1/micro_batches, so the accumulated
    // gradient is that of the rank's mean loss; the ranks' gradients are summed: average them.
    float scale = 1.0f / static_cast<float>(ranks_);
    const auto& opt = plan_.training.optimizer;
    auto update = [&](float* p, const float* g, float* m, float* v, std::size_t n) {
      if (opt.kind == "adamw") {
        adamw_update(p, g, m, v, n, opt, step);
        return;
      }
      // SGD with optional momentum and decoupled weight decay.
      float lr = static_cast<float>(opt.lr), mu = static_cast<float>(opt.momentum), wd = static_cast<float>(opt.weight_decay);
      for (std::size_t i = 0; i < n; ++i) {
        float d = g[i];
        if (mu > 0) d = m[i] = mu * m[i] + d;
        p[i] -= lr * (d + wd * p[i]);
      }
    };
    if (zero_ == 0) {
      for (auto& g : grads_) g *= scale;
      update(params_.data(), grads_.data(), full_m_.data(), full_v_.data(), total_);
      return;
    }
    for (auto& [key, s] : shards_) {
      for (auto& g : s.grad) g *= scale;
      float* p = zero_ == 3 ? s.params.data() : params_.data() + s.whole.begin + s.mine_begin;
      update(p, s.grad.data(), s.m.data(), s.v.data(), static_cast<std::size_t>(s.mine));
    }
  }

  std::vector<float> full_parameters() {
    if (zero_ == 0) return params_;
    if (zero_ < 3) {  // the last step's update is gathered only at the next step's start
      for (auto& [key, s] : shards_) {
        std::vector<float> mine(params_.begin() + s.whole.begin + s.mine_begin,
                                params_.begin() + s.whole.begin + s.mine_begin + s.mine);
        comm_.wait(comm_.all_gather(mine.data(), params_.data() + s.whole.begin, s.counts));
      }
      return params_;
    }
    std::vector<float> full(total_);
    for (auto& [key, s] : shards_) {
      auto h = comm_.all_gather(s.params.data(), full.data() + s.whole.begin, s.counts);
      comm_.wait(h);
    }
    return full;
  }
};

}  // namespace

void check_plan(const Plan& plan) {
  const auto& par = plan.parallelism;
  if (plan.model.family != ModelFamily::dit)
    throw InputError("model.family: the CPU executor trains dit models; this plan is " + std::string(to_string(plan.model.family)));
  if (par.tp != 1 || par.pp != 1 || par.cp != 1)
    throw InputError("parallelism: the CPU executor runs data parallelism only (tp, pp and cp must be 1)");
  if (plan.training.precision != Precision::fp32)
    throw InputError("training.precision: the CPU executor trains in fp32; set \"precision\": \"fp32\"");
  if (plan.training.objective.kind != "rectified_flow")
    throw InputError("training.objective.kind: the CPU executor trains \"rectified_flow\", not \"" +
                     plan.training.objective.kind + "\"");
  if (plan.training.privacy.enabled)
    throw InputError("training.privacy.enabled: DP-SGD is not implemented in the executor yet");
}

ExecResult execute_plan(const Plan& plan, const Program& program, Communicator& comm, DataSource& data,
                        const ExecOptions& options) {
  check_plan(plan);
  const auto& par = plan.parallelism;
  if (comm.size() != par.dp)
    throw InputError("parallelism.dp: the plan has " + std::to_string(par.dp) + " data-parallel ranks but " +
                     std::to_string(comm.size()) + " processes are running (use --ranks " + std::to_string(par.dp) + ")");
  if (options.steps < 1) throw InputError("--steps must be >= 1");
  return Runner(plan, program, comm, data, options).run();
}

}  // namespace ditwin::exec
