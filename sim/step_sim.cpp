// One training step on the simulated cluster.
//
// One actor per rank class (pipeline stage) plays that class's Program on its representative
// rank: compute ops are executions on the GPU host, collectives are flows over the links their
// ring would use (one flow set per collective, not one message per ring step), pipeline
// transfers are flows to the peer stage's representative. Streams run their ops in order; an op
// starts when its stream is free and its dependencies are done, so overlap, exposed
// communication and pipeline bubbles come out of the simulation.
#include "sim/step_sim.hpp"

#include <simgrid/s4u.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <cstring>
#include <deque>
#include <set>
#include <stdexcept>

#include "cost_models/comm.hpp"
#include "cost_models/compute.hpp"
#include "cost_models/measured.hpp"
#include "model/errors.hpp"
#include "model/player.hpp"
#include "sim/child_process.hpp"
#include "sim/platform.hpp"

XBT_LOG_NEW_DEFAULT_CATEGORY(ditwin_sim_step, "ditwin: one simulated training step");

namespace ditwin::sim {

namespace {

struct Flow {
  sg4::Host* from;
  sg4::Host* to;
  double bytes;
};

// What the simulation hands back per op: which op (stage, index) ran when.
struct Timing {
  std::int32_t stage;
  std::uint32_t op;
  double start_s, duration_s;
};

struct Context {
  const Plan& plan;
  const Program& program;
  const cost::DeviceProfile& profile;
  Platform* platform = nullptr;
  std::vector<Timing> records;
  std::map<std::string, double> p2p_flow_start;  // match key -> when the transfer began
  long long flows = 0, execs = 0;
  double t0 = 0;
};

// The flows one collective puts on the network, seen from `rank`: its ring neighbour inside the
// node over NVLink and its neighbour on the next node through the NIC. Ranks of the same class on
// the same node run the same collective at the same time; their inter-node flows are added when
// they leave the leaf, where they share an uplink with ours.
std::vector<Flow> collective_flows(const Context& ctx, const Op& op, long long rank, bool with_siblings = true) {
  std::vector<Flow> flows;
  const Platform& pf = *ctx.platform;
  auto members = ctx.program.group_members(op.group, rank);
  int n = static_cast<int>(members.size());
  if (n <= 1) return flows;
  long long node = pf.node_of(rank);
  std::vector<long long> local;
  std::vector<long long> nodes;
  for (long long m : members) {
    if (pf.node_of(m) == node) local.push_back(m);
    if (nodes.empty() || nodes.back() != pf.node_of(m)) nodes.push_back(pf.node_of(m));
  }
  int k = static_cast<int>(local.size());
  double volume = op.bytes * cost::bus_factor(op.collective, n);  // what each rank moves
  int position = static_cast<int>(std::find(local.begin(), local.end(), rank) - local.begin());
  if (k > 1) {
    double intra = nodes.size() > 1 ? volume * (k - 1) / k : volume;
    flows.push_back({pf.gpu(rank), pf.gpu(local[(position + 1) % k]), intra});
  }
  if (nodes.size() > 1) {
    size_t at = std::find(nodes.begin(), nodes.end(), node) - nodes.begin();
    long long next_node = nodes[(at + 1) % nodes.size()];
    std::vector<long long> there;
    for (long long m : members)
      if (pf.node_of(m) == next_node) there.push_back(m);
    long long peer = there[position % there.size()];
    flows.push_back({pf.nic(rank), pf.nic(peer), volume / k});
    if (with_siblings && pf.leaf_of(rank) != pf.leaf_of(peer)) {
      long long first = node * ctx.plan.cluster.devices_per_node;
      for (long long s = first; s < first + ctx.plan.cluster.devices_per_node; ++s) {
        if (s == rank || ctx.program.stage_of(s) != ctx.program.stage_of(rank)) continue;
        auto more = collective_flows(ctx, op, s, false);
        for (const auto& f : more)
          if (f.from != pf.gpu(s)) flows.push_back(f);  // only their network flows
      }
    }
  }
  return flows;
}

// Nodes a simulation touches: each representative's node and the nodes its (and its node
// siblings') collective rings step to next.
std::set<long long> nodes_needed(const Plan& plan, const Program& program, const std::vector<long long>& reps) {
  std::set<long long> nodes;
  long long dpn = plan.cluster.devices_per_node;
  for (long long r : reps) {
    nodes.insert(r / dpn);
    std::set<GroupKind> kinds;
    for (const auto& op : program.class_of(r).ops)
      if (op.kind == OpKind::collective) kinds.insert(op.group);
    long long first = (r / dpn) * dpn;
    for (GroupKind g : kinds) {
      for (long long s = first; s < first + dpn && s < program.world(); ++s) {
        auto members = program.group_members(g, s);
        auto self = std::find(members.begin(), members.end(), s);
        if (self == members.end()) continue;
        size_t i = self - members.begin();
        for (size_t j = 1; j < members.size(); ++j) {
          long long m = members[(i + j) % members.size()];
          if (m / dpn != s / dpn) {
            nodes.insert(m / dpn);
            break;
          }
        }
      }
    }
  }
  return nodes;
}

// The SimGrid engine behind the Program player (model/player.hpp): the player decides which op
// starts when, this actor turns each op into activities on the simulated platform and reports
// them finished in simulated time.
class RankActor final : public PlayerEngine {
 public:
  RankActor(Context& ctx, long long rank) : ctx_(ctx), rank_(rank), rc_(ctx.program.class_of(rank)) {}

  void operator()() {
    const auto& ops = rc_.ops;
    size_t n = ops.size();
    dependents_.assign(n, {});
    pending_.assign(n, 0);
    start_.assign(n, -1);
    next_compute_.assign(n, kNone);
    std::uint32_t previous = kNone;
    for (size_t i = 0; i < n; ++i) {
      for (auto d : ops[i].deps) dependents_[d].push_back(static_cast<std::uint32_t>(i));
      if (ops[i].stream == Stream::compute) {
        if (previous != kNone) next_compute_[previous] = static_cast<std::uint32_t>(i);
        previous = static_cast<std::uint32_t>(i);
      }
    }
    ProgramPlayer(ops).play(*this);
  }

  void start(std::size_t i) override {
    auto it = fused_done_.find(static_cast<std::uint32_t>(i));
    if (it != fused_done_.end()) {  // already run inside the fused execution of its chain
      fused_done_.erase(it);
      instant_.push_back(static_cast<std::uint32_t>(i));
      return;
    }
    launch(static_cast<std::uint32_t>(i));
  }

  std::size_t wait_any() override {
    while (true) {
      if (!instant_.empty()) {
        std::uint32_t op = instant_.front();
        instant_.pop_front();
        return op;
      }
      if (running_.empty())
        throw std::logic_error("rank " + std::to_string(rank_) + ": the player waits but nothing runs");
      ssize_t i = sg4::Activity::wait_any(running_);
      std::uint32_t op = running_op_[i];
      running_[i] = running_.back();
      running_.pop_back();
      running_op_[i] = running_op_.back();
      running_op_.pop_back();
      if (--pending_[op] > 0) continue;
      auto latency = awaiting_flows_.find(op);
      if (latency != awaiting_flows_.end()) {  // the latency part is over: now the data moves
        auto flows = std::move(latency->second);
        awaiting_flows_.erase(latency);
        start_flows(op, flows);
        if (pending_[op] > 0) continue;
      }
      complete(op);
      return op;
    }
  }

 private:
  static constexpr std::uint32_t kNone = ~std::uint32_t(0);
  Context& ctx_;
  long long rank_;
  const RankClass& rc_;
  std::vector<int> pending_;
  std::vector<double> start_;
  std::vector<std::vector<std::uint32_t>> dependents_;
  std::vector<std::uint32_t> next_compute_;  // the compute stream's next op, in program order
  std::set<std::uint32_t> fused_done_;       // finished inside a fused chain, not yet started by the player
  std::deque<std::uint32_t> instant_;        // started and finished at once
  std::vector<sg4::ActivityPtr> running_;
  std::vector<std::uint32_t> running_op_;

  double now() const { return sg4::Engine::get_clock() - ctx_.t0; }

  void track(sg4::ActivityPtr a, std::uint32_t op) {
    running_.push_back(std::move(a));
    running_op_.push_back(op);
    ++pending_[op];
  }

  void delay(double seconds, std::uint32_t op, const std::string& name) {
    auto e = sg4::this_actor::exec_init(std::max(seconds, 0.0) * 1.0);
    e->set_host(ctx_.platform->delay())->set_name(name);
    e->start();
    ++ctx_.execs;
    track(e, op);
  }

  double op_time(std::uint32_t i) const {
    return cost::compute_time_s(rc_.ops[i], ctx_.profile, ctx_.plan.training.precision, ctx_.plan.training.flash_attention);
  }

  // Compute ops that only feed the next op of the compute stream run back to back whatever
  // happens elsewhere (the player starts each as soon as the one before ends), so they are
  // simulated as one execution and their times split exactly.
  std::vector<std::pair<std::uint32_t, double>> fusable_chain(std::uint32_t i) {
    std::vector<std::pair<std::uint32_t, double>> chain{{i, op_time(i)}};
    while (true) {
      std::uint32_t last = chain.back().first, next = next_compute_[last];
      if (next == kNone) break;
      if (dependents_[last].size() != 1 || dependents_[last][0] != next) break;
      const Op& n = rc_.ops[next];
      if (n.deps.size() != 1 || n.kind != OpKind::compute) break;
      chain.push_back({next, op_time(next)});
    }
    return chain;
  }
  std::map<std::uint32_t, std::vector<std::pair<std::uint32_t, double>>> fused_;

  void launch(std::uint32_t i) {
    const Op& op = rc_.ops[i];
    start_[i] = now();
    switch (op.kind) {
      case OpKind::compute:
      case OpKind::optimizer:
      case OpKind::copy: {
        double t = op_time(i);
        if (op.kind == OpKind::compute && op.stream == Stream::compute) {
          auto chain = fusable_chain(i);
          if (chain.size() > 1) {
            t = 0;
            for (const auto& c : chain) t += c.second;
            fused_[i] = std::move(chain);
          }
        }
        run_on_gpu(t, i);
        break;
      }
      case OpKind::collective: {
        cost::GroupShape shape = cost::group_shape(ctx_.program, op.group, rank_, ctx_.plan.cluster.devices_per_node);
        if (ctx_.plan.cluster.device.measured) {
          // CPU ranks: MPI moves shared-memory data with the ranks' own cores (no DMA engine, no
          // spare core for progress), so a collective is work on the rank's core, shared with
          // the compute it overlaps, rather than a flow on a link.
          // The executor posts each collective op as one library call, whatever op.calls says.
          // With no spare core, MPI moves the data only while the rank is inside an MPI call:
          // in practice when it has no compute left to run and waits (its traces show buckets
          // completing at the wait before the optimizer). So the collective yields the core to
          // compute: a tiny share beside it, the whole core when the rank would wait.
          run_on_gpu(cost::collective_time_s(op.collective, op.bytes, shape, ctx_.profile), i, 1e-3);
          break;
        }
        // Latency first (algorithm steps, one per library call), then the flows.
        delay(cost::collective_latency_s(op.collective, shape, ctx_.profile) * std::max(1, op.calls), i, op.name + ".latency");
        awaiting_flows_[i] = collective_flows(ctx_, op, rank_);
        break;
      }
      case OpKind::p2p: {
        long long peer = peer_rank(op);
        auto* box = sg4::Mailbox::by_name("p2p:" + op.match);
        double measured = ctx_.plan.cluster.device.measured ? cost::measured_p2p_s(ctx_.profile.tables, op.bytes) : -1;
        if (op.collective == Collective::send && measured >= 0) {
          // CPU ranks: MPI's shared-memory transfer as calibrate measured it (a copy the
          // receiving rank's MPI makes), not a flow on a modelled link.
          delay(measured, i, op.name);
          ctx_.p2p_flow_start[op.match] = now();
        } else if (op.collective == Collective::send) {
          sg4::Host* from = same_node(peer) ? ctx_.platform->gpu(rank_) : ctx_.platform->nic(rank_);
          sg4::Host* to = same_node(peer) ? ctx_.platform->gpu(peer) : ctx_.platform->nic(peer);
          auto c = sg4::Comm::sendto_init(from, to);
          c->set_payload_size(static_cast<std::uint64_t>(std::max(op.bytes, 1.0)))->set_name(op.name);
          c->start();
          ++ctx_.flows;
          ctx_.p2p_flow_start[op.match] = now();
          track(c, i);
        } else {
          auto c = box->get_init()->set_dst_data(reinterpret_cast<void**>(&recv_slot_), sizeof(void*));
          c->set_name(op.name);
          c->start();
          track(c, i);
        }
        break;
      }
    }
  }
  void* recv_slot_ = nullptr;

  // Op i occupies this rank's GPU (its compute host) for `seconds`.
  void run_on_gpu(double seconds, std::uint32_t i, double priority = 1.0) {
    auto e = sg4::this_actor::exec_init(seconds * Platform::gpu_speed);
    e->set_host(ctx_.platform->gpu(rank_))->set_name(rc_.ops[i].name);
    if (priority != 1.0) e->set_priority(priority);
    e->start();
    ++ctx_.execs;
    track(e, i);
  }
  std::map<std::uint32_t, std::vector<Flow>> awaiting_flows_;

  void start_flows(std::uint32_t i, const std::vector<Flow>& flows) {
    for (const auto& f : flows) {
      if (f.bytes <= 0) continue;
      auto c = sg4::Comm::sendto_init(f.from, f.to);
      c->set_payload_size(static_cast<std::uint64_t>(f.bytes))->set_name(rc_.ops[i].name);
      c->start();
      ++ctx_.flows;
      track(c, i);
    }
  }

  bool same_node(long long peer) const { return ctx_.platform->node_of(peer) == ctx_.platform->node_of(rank_); }
  long long peer_rank(const Op& op) const {
    long long stage_size = 1LL * ctx_.program.tp * ctx_.program.cp * ctx_.program.dp;
    return rank_ + (op.peer_stage - ctx_.program.stage_of(rank_)) * stage_size;
  }

  // Finishes op i (and records the ops fused behind it, which the player starts next).
  void complete(std::uint32_t i) {
    auto it = fused_.find(i);
    if (it == fused_.end()) {
      finish(i, start_[i], now());
      return;
    }
    auto chain = std::move(it->second);
    fused_.erase(it);
    double total = 0;
    for (const auto& c : chain) total += c.second;
    double t = start_[i], span = now() - start_[i];
    for (const auto& [op, seconds] : chain) {
      double d = total > 0 ? span * seconds / total : 0;
      finish(op, t, t + d);
      if (op != i) fused_done_.insert(op);
      t += d;
    }
  }

  void finish(std::uint32_t i, double begin, double end) {
    const Op& op = rc_.ops[i];
    if (op.kind == OpKind::p2p) {
      if (op.collective == Collective::send) {
        // Tell the receiver the data is there (the control plane costs nothing).
        static int token = 0;
        sg4::Mailbox::by_name("p2p:" + op.match)->put_init(&token, 0)->detach();
      } else {
        auto it = ctx_.p2p_flow_start.find(op.match);
        if (it != ctx_.p2p_flow_start.end()) begin = std::max(begin, it->second);  // time spent transferring
      }
    }
    ctx_.records.push_back({rc_.stage, i, begin, end - begin});
  }
};

// Runs the simulation; returns its statistics and fills `records`.
nlohmann::json run_in_this_process(const Plan& plan, const Program& program, const cost::DeviceProfile& profile,
                                   std::vector<Timing>& records) {
  int argc = 1;
  char name[] = "ditwin";
  char* argv[] = {name, nullptr};
  xbt_log_control_set("root.thresh:critical");
  sg4::Engine engine(&argc, argv);
  // Plain max-min sharing with no latency/bandwidth fudge: the profile's efficiencies are the
  // only correction to datasheet link bandwidth.
  sg4::Engine::set_config("network/model:CM02");
  sg4::Engine::set_config("network/crosstraffic:0");
  sg4::Engine::set_config("network/TCP-gamma:0");
  xbt_log_control_set("root.thresh:critical");

  std::vector<long long> reps;
  long long stage_size = 1LL * program.tp * program.cp * program.dp;
  for (int s = 0; s < program.pp; ++s) reps.push_back(s * stage_size);
  std::set<long long> actor_ranks(reps.begin(), reps.end());
  Context ctx{plan, program, profile, nullptr, {}, {}, 0, 0, 0};
  Platform platform(plan, profile, nodes_needed(plan, program, reps), actor_ranks);
  ctx.platform = &platform;
  ctx.t0 = sg4::Engine::get_clock();
  for (long long r : reps)
    sg4::Actor::create("rank-" + std::to_string(r), platform.control(r), RankActor(ctx, r));
  engine.run();
  if (ctx.records.size() != program.op_count()) {
    // SimGrid ends a run whose actors all block; say what never ran instead of a partial step.
    std::set<std::pair<int, std::uint32_t>> ran;
    for (const auto& r : ctx.records) ran.insert({r.stage, r.op});
    std::string missing;
    int shown = 0;
    for (const auto& rc : program.classes)
      for (std::uint32_t i = 0; i < rc.ops.size() && shown < 5; ++i)
        if (!ran.count({rc.stage, i})) {
          missing += (shown++ ? ", " : "") + rc.ops[i].name + " (stage " + std::to_string(rc.stage) + ")";
        }
    throw std::logic_error("the simulated step deadlocked: " + std::to_string(program.op_count() - ctx.records.size()) +
                           " ops never ran, first " + missing);
  }

  nlohmann::json out;
  out["t0"] = ctx.t0;
  out["flows"] = ctx.flows;
  out["execs"] = ctx.execs;
  out["hosts"] = engine.get_host_count();
  out["links"] = engine.get_link_count();
  records = std::move(ctx.records);
  return out;
}

}  // namespace

StepReport simulate_step(const Plan& plan, const Program& program, const cost::DeviceProfile& profile) {
  // A profile without a peak for the plan's precision would give ops infinite time (SimGrid then
  // aborts on a deadlock): refuse it, naming both sides.
  double peak = profile.peak_flops(plan.training.precision);
  if (!(peak > 0) || !std::isfinite(peak))
    throw InputError(std::string("training.precision: \"") + to_string(plan.training.precision) + "\" but the device profile (" +
                     (profile.source.empty() ? profile.device : profile.source) + ") has no " +
                     to_string(plan.training.precision) + " peak (a CPU calibration measures fp32 only): train in a "
                     "precision the profile measured, or give a profile of a device that has it");
  // The child returns [u64 record count][records][u64 json size][json statistics].
  ChildProcess child([&] {
    std::vector<Timing> records;
    std::string stats = run_in_this_process(plan, program, profile, records).dump();
    std::uint64_t n = records.size(), len = stats.size();
    std::string out(reinterpret_cast<const char*>(&n), sizeof n);
    out.append(reinterpret_cast<const char*>(records.data()), n * sizeof(Timing));
    out.append(reinterpret_cast<const char*>(&len), sizeof len);
    out += stats;
    return out;
  });
  std::string payload;
  try {
    payload = child.wait();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("simulate: ") + e.what());
  }
  std::uint64_t n = 0, len = 0;
  if (payload.size() < sizeof n) throw std::runtime_error("simulate: truncated simulation output");
  std::memcpy(&n, payload.data(), sizeof n);
  size_t at = sizeof n + n * sizeof(Timing);
  if (payload.size() < at + sizeof len) throw std::runtime_error("simulate: truncated simulation output");
  std::memcpy(&len, payload.data() + at, sizeof len);
  nlohmann::json out = nlohmann::json::parse(payload.substr(at + sizeof len, len));
  std::vector<Timing> timings(n);
  std::memcpy(timings.data(), payload.data() + sizeof n, n * sizeof(Timing));
  std::sort(timings.begin(), timings.end(), [](const Timing& a, const Timing& b) {
    return a.stage != b.stage ? a.stage < b.stage : a.start_s != b.start_s ? a.start_s < b.start_s : a.op < b.op;
  });

  StepReport report;
  report.source = "predicted";
  long long stage_size = 1LL * program.tp * program.cp * program.dp;
  report.ops.reserve(n);
  for (const auto& t : timings) {
    const Op& op = program.classes[t.stage].ops[t.op];
    OpRecord rec;
    rec.name = op.name;
    rec.rank = t.stage * stage_size;
    rec.stage = t.stage;
    rec.stream = op.stream;
    rec.kind = op.kind;
    rec.collective = op.collective;
    rec.group_size = op.group_size;
    rec.start_s = t.start_s;
    rec.duration_s = t.duration_s;
    rec.flops = op.flops;
    rec.bytes = op.bytes;
    rec.deps = dep_names(program.classes[t.stage], op);
    report.step_time_s = std::max(report.step_time_s, rec.start_s + rec.duration_s);
    report.ops.push_back(std::move(rec));
  }
  fill_metrics(report, plan, profile.peak_flops(plan.training.precision));
  report.breakdown = breakdown_of(report.ops, report.step_time_s);
  report.extra.update(nlohmann::json{{"simulator", "SimGrid S4U"},
                  {"simulated_ranks", program.pp},
                  {"flows", out["flows"]},
                  {"executions", out["execs"]},
                  {"hosts", out["hosts"]},
                  {"links", out["links"]},
                  {"profile", profile.source}});
  return report;
}

}  // namespace ditwin::sim
