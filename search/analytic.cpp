// The analytic tier (search/analytic.hpp): probes played on an idle network, composed in closed
// form over the candidate's pipeline, data-parallel group and optimizer.
#include "search/analytic.hpp"

#include <algorithm>
#include <cmath>
#include <queue>

#include "cost_models/comm.hpp"
#include "cost_models/compute.hpp"
#include "model/device.hpp"
#include "model/player.hpp"

namespace ditwin::search {

namespace {

// Plays one rank class with op times from the cost models and an idle network: what the
// simulator's actor does, without contention and without SimGrid. Pipeline transfers take no
// time here (the composition adds them), so each class can be played on its own.
class IdleNetworkEngine final : public PlayerEngine {
 public:
  // `dp_group`: the shape data-parallel collectives take (the candidate's, not the probe's).
  IdleNetworkEngine(const Plan& plan, const Program& program, const RankClass& rc, const cost::DeviceProfile& profile,
                    const cost::GroupShape* dp_group)
      : rc_(rc), start_(rc.ops.size(), 0), end_(rc.ops.size(), 0), shares_core_(plan.cluster.device.measured) {
    long long rank = rc.stage * (1LL * program.tp * program.cp * program.dp);
    int dpn = plan.cluster.devices_per_node;
    duration_.resize(rc.ops.size());
    for (std::size_t i = 0; i < rc.ops.size(); ++i) {
      const Op& op = rc.ops[i];
      switch (op.kind) {
        case OpKind::compute:
        case OpKind::optimizer:
        case OpKind::copy:
          duration_[i] = cost::compute_time_s(op, profile, plan.training.precision, plan.training.flash_attention);
          break;
        case OpKind::collective: {
          cost::GroupShape shape = dp_group && (op.group == GroupKind::dp_cp || op.group == GroupKind::dp)
                                       ? *dp_group
                                       : cost::group_shape(program, op.group, rank, dpn);
          duration_[i] = cost::idle_collective_time_s(op.collective, op.bytes, shape, profile, op.calls,
                                                      plan.cluster.device.measured);
          break;
        }
        case OpKind::p2p: duration_[i] = 0; break;
      }
    }
  }
  void start(std::size_t i) override {
    start_[i] = now_;
    end_[i] = now_ + duration_[i];
    // CPU ranks (a measured profile): MPI moves data with the rank's own core, so a collective
    // and compute take turns on it rather than overlapping (as the simulator models it).
    if (shares_core_ && rc_.ops[i].kind != OpKind::p2p) {
      end_[i] = std::max(now_, core_free_) + duration_[i];
      core_free_ = end_[i];
    }
    queue_.push({end_[i], i});
  }
  std::size_t wait_any() override {
    auto [t, i] = queue_.top();
    queue_.pop();
    now_ = t;
    return i;
  }
  const std::vector<double>& starts() const { return start_; }
  const std::vector<double>& ends() const { return end_; }

 private:
  const RankClass& rc_;
  std::vector<double> duration_, start_, end_;
  double now_ = 0;
  bool shares_core_ = false;
  double core_free_ = 0;
  using Item = std::pair<double, std::size_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> queue_;
};

bool is_pass(const Op& op) {
  return op.kind != OpKind::p2p &&
         (op.phase == Phase::forward || op.phase == Phase::backward || op.phase == Phase::recompute);
}

}  // namespace

cost::GroupShape AnalyticModel::dp_shape(const Plan& plan) {
  const auto& par = plan.parallelism;
  auto key = std::make_tuple(par.tp, par.cp, par.pp);
  auto it = dp_shapes_.find(key);
  if (it == dp_shapes_.end()) {
    Program skeleton;
    skeleton.dp = par.dp;
    skeleton.tp = par.tp;
    skeleton.pp = par.pp;
    skeleton.cp = par.cp;
    it = dp_shapes_.emplace(key, cost::group_shape(skeleton, GroupKind::dp_cp, 0, plan.cluster.devices_per_node)).first;
  }
  return it->second;
}

const AnalyticModel::Probe& AnalyticModel::probe(const Plan& plan) {
  const auto& par = plan.parallelism;
  const bool piped = par.pp > 1;
  // ZeRO-3 gathers and reduce-scatters every block on the dp stream: the probe carries them, on
  // the candidate's data-parallel group.
  const bool zero3 = par.zero == 3 && 1LL * par.dp * par.cp > 1;
  cost::GroupShape dp = zero3 ? dp_shape(plan) : cost::GroupShape{};
  Key key{par.tp, par.cp, par.sequence_parallel && par.tp > 1, plan.training.micro_batch,
          static_cast<int>(plan.training.recompute), piped, zero3, dp.n, dp.per_node, par.overlap_param_gather};
  auto found = probes_.find(key);
  if (found != probes_.end()) return found->second;

  // The candidate cut to three blocks per stage (the middle one is the steady state) and one
  // micro-batch, on one data-parallel rank (two under ZeRO-3).
  constexpr int per_stage = 3;
  Plan p = plan;
  p.parallelism.pp = piped ? 2 : 1;
  p.model.layers = per_stage * p.parallelism.pp;
  p.parallelism.virtual_stages = 1;
  p.parallelism.schedule = PipelineSchedule::one_f_one_b;
  p.parallelism.dp = zero3 ? 2 : 1;
  p.parallelism.zero = zero3 ? 3 : 0;
  p.training.global_batch = p.training.micro_batch * p.parallelism.dp;
  Program program = lower(p);

  Probe out;
  auto play = [&](const RankClass& rc) {
    IdleNetworkEngine engine(p, program, rc, profile_, zero3 ? &dp : nullptr);
    ProgramPlayer(rc.ops).play(engine);
    return std::make_pair(engine.starts(), engine.ends());
  };
  // When each block's forward and backward starts, and where the passes end.
  struct Marks {
    std::map<int, double> fwd, bwd;
    double end_of_forward = 0, end_of_passes = 0;
  };
  auto marks = [&](const RankClass& rc) {
    auto [s, e] = play(rc);
    Marks m;
    for (std::size_t i = 0; i < rc.ops.size(); ++i) {
      const Op& op = rc.ops[i];
      if (!is_pass(op)) continue;
      m.end_of_passes = std::max(m.end_of_passes, e[i]);
      if (op.phase == Phase::forward) m.end_of_forward = std::max(m.end_of_forward, e[i]);
      if (op.layer < 0) continue;
      auto& at = op.phase == Phase::forward ? m.fwd : m.bwd;
      auto it = at.find(op.layer);
      if (it == at.end() || s[i] < it->second) at[op.layer] = s[i];
    }
    return m;
  };
  // A block's period: from its start to the next block's start (waits for its parameters and
  // for communication included).
  Marks first = marks(program.classes.front());
  out.f_layer = first.fwd.at(2) - first.fwd.at(1);
  out.b_layer = first.bwd.at(0) - first.bwd.at(1);
  out.f_first = first.fwd.at(1) - out.f_layer;
  out.b_first = first.end_of_passes - first.bwd.at(0) - out.b_layer;
  Marks last = piped ? marks(program.classes.back()) : first;
  int top = p.model.layers - 1;
  out.f_last = std::max(0.0, last.end_of_forward - last.fwd.at(top) - out.f_layer);
  out.b_last = std::max(0.0, last.bwd.at(top - 1) - out.b_layer - last.end_of_forward);
  for (const auto& op : program.classes.front().ops) {
    if (op.kind == OpKind::p2p && op.collective == Collective::send) out.p2p_bytes = std::max(out.p2p_bytes, op.bytes);
    if (op.kind == OpKind::optimizer) out.optimizer = op;
  }
  // The optimizer op's bytes are per parameter of the shard it steps.
  out.optimizer_params = account_memory(p).stages.front().params_on_gpu / (zero3 ? 1.0 * p.parallelism.dp * p.parallelism.cp : 1.0);
  return probes_.emplace(key, out).first->second;
}

Estimate AnalyticModel::estimate(const Plan& plan, const MemoryReport& memory) {
  const Probe& probe_times = probe(plan);
  const auto& par = plan.parallelism;
  const int pp = par.pp, v = par.virtual_stages;
  const double m = static_cast<double>(plan.micro_batches());
  const int dpn = plan.cluster.devices_per_node;
  const bool measured = plan.cluster.device.measured;
  const double e = element_bytes(plan.training.precision == Precision::fp8 ? Precision::bf16 : plan.training.precision);
  const long long dp_group = 1LL * par.dp * par.cp;

  const cost::GroupShape dp_shape = this->dp_shape(plan);
  // A data-parallel collective of `bytes`, one library call per bucket (a double: no int to overflow).
  auto collective = [&](Collective c, double bytes) {
    if (dp_group <= 1 || bytes <= 0) return 0.0;
    double calls = std::ceil(bytes / par.bucket_bytes - 1e-9);
    return cost::idle_collective_time_s(c, bytes, dp_shape, profile_, calls, measured);
  };

  // One block per micro-batch (under ZeRO-3 with its gathers and reduce-scatters: the probe has them).
  const double f_layer = probe_times.f_layer, b_layer = probe_times.b_layer;

  // Each stage's forward and backward of one micro-batch (all its chunks).
  auto chunk_layers = layers_per_chunk(plan.model.layers, pp * v);
  std::vector<double> fwd(pp), bwd(pp), per_mb(pp), grads(pp);
  for (int s = 0; s < pp; ++s) {
    int layers = 0;
    for (int c = 0; c < v; ++c) layers += chunk_layers[c * pp + s];
    fwd[s] = layers * f_layer + (s == 0 ? probe_times.f_first : 0) + (s == pp - 1 ? probe_times.f_last : 0);
    bwd[s] = layers * b_layer + (s == 0 ? probe_times.b_first : 0) + (s == pp - 1 ? probe_times.b_last : 0);
    grads[s] = memory.stages[s].params_on_gpu * e;
    per_mb[s] = fwd[s] + bwd[s];
    // ZeRO-2 reduce-scatters every micro-batch's gradients: the dp stream must keep up.
    // (On CPU ranks the reduce-scatters of all but the last micro-batch take the core in turn.)
    if (par.zero == 2) {
      double rs = collective(Collective::reduce_scatter, grads[s]);
      per_mb[s] = measured ? per_mb[s] + rs * (m - 1) / m : std::max(per_mb[s], fwd[s] + rs);
    }
  }
  double slowest = *std::max_element(per_mb.begin(), per_mb.end());
  double all = 0;
  for (double t : per_mb) all += t;

  // The schedule: micro-batches through the slowest stage, plus the fill and drain through the
  // others (a 1/v share of them with interleaved chunks), plus the transfers on the way.
  Estimate out;
  double hop = 0;
  if (pp > 1) {
    long long stage_size = 1LL * par.tp * par.cp * par.dp;
    cost::GroupShape pair{2, stage_size < dpn ? 2 : 1};
    hop = cost::collective_time_s(Collective::send, probe_times.p2p_bytes, pair, profile_);
  }
  double pipeline;
  if (pp == 1) pipeline = m * per_mb[0];
  else if (par.schedule == PipelineSchedule::interleaved) pipeline = m * slowest + (all - slowest) / v + 2 * (pp - 1) * hop;
  else pipeline = (m - 1) * slowest + all + 2 * (pp - 1) * hop;
  out.pipeline_s = pipeline;
  out.bubble_s = std::max(0.0, pipeline - m * slowest);

  // Buckets hold whole parameter groups (a block, the embedding, the head): at least one block.
  const double layer_bytes = layer_parameters_per_rank(count_parameters(plan.model), par.tp) * e;
  const double bucket = std::max(par.bucket_bytes, layer_bytes);

  // ZeRO-1/2 with overlapped gathers: the step starts by gathering the first bucket's parameters;
  // each later bucket must be there when the first micro-batch's forward reaches its layers (with
  // interleaved chunks, chunk c's first forward waits for c x pp chunk forwards of the warm-up).
  double front = 0;
  if ((par.zero == 1 || par.zero == 2) && par.overlap_param_gather && dp_group > 1) {
    double window = measured ? 0.0
                    : par.schedule == PipelineSchedule::interleaved ? fwd[0] / v * (1 + (v - 1) * std::min<double>(pp, m))
                                                                     : fwd[0];
    front = std::max(collective(Collective::all_gather, std::min(grads[0], bucket)),
                     collective(Collective::all_gather, grads[0]) - window);
  }

  // After its last backward, each stage reduces what the backward did not hide, then steps the
  // optimizer (then gathers the updated parameters when ZeRO-1/2 does not overlap them). The
  // last backward drains from the last stage to the first, which ends the pipeline.
  double step = 0, drained = 0;
  for (int s = 0; s < pp; ++s) {
    double end = pipeline - drained;
    drained += bwd[s] / v + hop;
    double exposed = 0, tail = 0;
    if (dp_group > 1 && par.zero < 3) {
      Collective c = par.zero == 0 ? Collective::all_reduce : Collective::reduce_scatter;
      double sync = collective(c, grads[s]);
      double last_bucket = collective(c, std::min(grads[s], bucket));
      exposed = par.overlap_grad_reduce && !measured ? std::max(last_bucket, sync - bwd[s]) : sync;
      if (par.zero >= 1 && !par.overlap_param_gather) tail = collective(Collective::all_gather, grads[s]);
    } else if (dp_group > 1) {
      exposed = collective(Collective::reduce_scatter, layer_bytes);
    }
    Op opt = probe_times.optimizer;
    double shard = memory.stages[s].params_on_gpu / (par.zero >= 1 ? static_cast<double>(dp_group) : 1.0);
    double scale = probe_times.optimizer_params > 0 ? shard / probe_times.optimizer_params : 0;
    opt.bytes *= scale;
    opt.flops *= scale;
    double optimizer = cost::compute_time_s(opt, profile_, plan.training.precision, plan.training.flash_attention);
    if (end + exposed + optimizer + tail > step) {
      step = end + exposed + optimizer + tail;
      out.exposed_dp_s = exposed + tail + front;
      out.optimizer_s = optimizer;
    }
  }
  out.step_s = step + front;
  return out;
}

}  // namespace ditwin::search
