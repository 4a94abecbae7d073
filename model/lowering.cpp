// Lowers a plan to the Program: for each pipeline stage, the ops of one training step in
// the order the schedule runs them, with their data dependencies, FLOPs and bytes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "model/accounting.hpp"
#include "model/errors.hpp"
#include "model/privacy.hpp"
#include "model/program.hpp"

namespace ditwin {

const char* to_string(OpKind k) {
  static const char* n[] = {"compute", "collective", "p2p", "copy", "optimizer"};
  return n[static_cast<int>(k)];
}
const char* to_string(Stream s) {
  static const char* n[] = {"compute", "tp", "cp", "dp", "pp"};
  return n[static_cast<int>(s)];
}
const char* to_string(ComputeClass c) {
  static const char* n[] = {"none", "gemm", "attention", "norm", "elementwise", "embedding", "loss", "optimizer"};
  return n[static_cast<int>(c)];
}
const char* to_string(Collective c) {
  static const char* n[] = {"none", "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send", "recv"};
  return n[static_cast<int>(c)];
}
const char* to_string(GroupKind g) {
  static const char* n[] = {"none", "tp", "cp", "dp", "dp_cp", "pp", "embedding"};
  return n[static_cast<int>(g)];
}
const char* to_string(Phase p) {
  static const char* n[] = {"forward", "backward", "recompute", "gradient_sync", "optimizer"};
  return n[static_cast<int>(p)];
}

std::vector<long long> Program::group_members(GroupKind kind, long long rank) const {
  long long tp_i = rank % tp, cp_i = (rank / tp) % cp, dp_i = (rank / (1LL * tp * cp)) % dp;
  long long pp_i = rank / (1LL * tp * cp * dp);
  auto at = [&](long long t, long long c, long long d, long long p) { return t + tp * (c + cp * (d + 1LL * dp * p)); };
  std::vector<long long> out;
  switch (kind) {
    case GroupKind::none: out.push_back(rank); break;
    case GroupKind::tp: for (long long t = 0; t < tp; ++t) out.push_back(at(t, cp_i, dp_i, pp_i)); break;
    case GroupKind::cp: for (long long c = 0; c < cp; ++c) out.push_back(at(tp_i, c, dp_i, pp_i)); break;
    case GroupKind::dp: for (long long d = 0; d < dp; ++d) out.push_back(at(tp_i, cp_i, d, pp_i)); break;
    case GroupKind::dp_cp:
      for (long long d = 0; d < dp; ++d)
        for (long long c = 0; c < cp; ++c) out.push_back(at(tp_i, c, d, pp_i));
      std::sort(out.begin(), out.end());
      break;
    case GroupKind::pp: for (long long p = 0; p < pp; ++p) out.push_back(at(tp_i, cp_i, dp_i, p)); break;
    case GroupKind::embedding:
      out.push_back(at(tp_i, cp_i, dp_i, 0));
      if (pp > 1) out.push_back(at(tp_i, cp_i, dp_i, pp - 1));
      break;
  }
  return out;
}

Program::Place Program::place_of(long long rank) const {
  Place p;
  p.tp = static_cast<int>(rank % tp);
  p.cp = static_cast<int>((rank / tp) % cp);
  p.dp = static_cast<int>((rank / (1LL * tp * cp)) % dp);
  p.pp = static_cast<int>(rank / (1LL * tp * cp * dp));
  return p;
}

std::size_t Program::op_count() const {
  std::size_t n = 0;
  for (const auto& c : classes) n += c.ops.size();
  return n;
}

double Program::total_flops() const {
  double total = 0;
  for (const auto& c : classes) {
    double per_rank = 0;
    for (const auto& op : c.ops) per_rank += op.flops / op.replicas;
    total += per_rank * c.rank_count;
  }
  return total;
}

namespace {

using Index = std::uint32_t;
constexpr Index none = ~Index(0);

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The part of an op's identity its name adds to (layer, phase, micro-batch, chunk): the lowering
// built the name from these fields a moment ago, so taking them off again is exact.
std::string part_of(const Op& op) {
  std::string s = op.name;
  if (op.layer >= 0) {
    std::string head = "L" + std::to_string(op.layer) + ".";
    if (s.rfind(head, 0) == 0) s = s.substr(head.size());
  }
  if (op.microbatch >= 0 && ends_with(s, ".mb" + std::to_string(op.microbatch)))
    s.resize(s.size() - (3 + std::to_string(op.microbatch).size()));
  if (op.chunk >= 0 && op.kind == OpKind::p2p && ends_with(s, ".c" + std::to_string(op.chunk)))
    s.resize(s.size() - (2 + std::to_string(op.chunk).size()));
  for (const char* tag : {".fwd", ".bwd", ".recompute"})
    if (ends_with(s, tag) && s.size() > std::string(tag).size()) {
      s.resize(s.size() - std::string(tag).size());
      break;
    }
  return s;
}

// One stream of tokens through a block (MMDiT has an image and a text stream).
struct TokenStream {
  std::string prefix;  // "" or "img." / "txt."
  double tokens;       // per sample, on this CP rank
};

class StageLowering {
 public:
  StageLowering(const Plan& plan, int stage, RankClass& out)
      : plan_(plan), m_(plan.model), par_(plan.parallelism), stage_(stage), out_(out) {
    tp_ = par_.tp;
    cp_ = par_.cp;
    sp_ = par_.sequence_parallel && tp_ > 1;
    b_ = plan.training.micro_batch;
    e_ = element_bytes(plan.training.precision == Precision::fp8 ? Precision::bf16 : plan.training.precision);
    chunk_first_ = chunk_first_layers(m_.layers, par_.pp * par_.virtual_stages);
    if (m_.family == ModelFamily::mmdit) {
      streams_ = {{"img.", 1.0 * m_.image_tokens() / cp_}, {"txt.", 1.0 * m_.text_tokens / cp_}};
    } else {
      streams_ = {{"", 1.0 * m_.tokens_per_sample() / cp_}};
    }
    params_ = count_parameters(m_);
    dp_group_ = par_.dp * par_.cp;
    private_ = plan.training.privacy.enabled;
  }

  void run() {
    plan_buckets();
    early_parameter_gathers();
    schedule();
    gradient_sync_and_optimizer();
  }

  // Gradient buckets: whole parameter groups in the order backward completes them (head, the
  // last layer, ..., the first layer, embed), cut when a bucket reaches bucket_bytes.
  std::vector<std::pair<std::vector<std::string>, double>> bucket_plan_;
  void plan_buckets() {
    std::vector<std::pair<std::string, double>> groups;  // flat order
    int chunks = par_.pp * par_.virtual_stages;
    for (int c = 0; c < par_.virtual_stages; ++c) {
      int mc = c * par_.pp + stage_;
      if (mc == 0) groups.push_back({"embed", params_.embedding / tp_});
      for (int l = chunk_first_[mc]; l < chunk_first_[mc + 1]; ++l) {
        std::string name = "L";
        name += std::to_string(l);
        groups.push_back({name, layer_params()});
      }
      if (mc == chunks - 1) groups.push_back({"head", head_params()});
    }
    std::vector<std::string> members;
    double bytes = 0;
    for (auto it = groups.rbegin(); it != groups.rend(); ++it) {
      members.push_back(it->first);
      bytes += it->second;
      if (bytes * e_ >= par_.bucket_bytes) {
        std::reverse(members.begin(), members.end());
        bucket_plan_.push_back({members, bytes});
        members.clear();
        bytes = 0;
      }
    }
    if (!members.empty()) {
      std::reverse(members.begin(), members.end());
      bucket_plan_.push_back({members, bytes});
    }
  }

  // ZeRO-1/2 with overlap_param_gather: the parameters the previous step's optimizer updated are
  // gathered at the start of this step, and each group's first forward waits only for its own
  // bucket, so the gathers overlap the forward (Megatron's distributed optimizer does this).
  std::map<std::string, Index> early_gather_of_;
  bool early_gathers() const { return dp_group_ > 1 && (par_.zero == 1 || par_.zero == 2) && par_.overlap_param_gather; }
  void early_parameter_gathers() {
    if (!early_gathers()) return;
    // In forward order: the bucket holding the first layers is needed first.
    for (std::size_t k = bucket_plan_.size(); k-- > 0;) {
      double params = bucket_plan_[k].second;
      Op op = collective("params.bucket" + std::to_string(k) + ".all_gather", Phase::optimizer, -1, -1, Stream::dp,
                         Collective::all_gather, GroupKind::dp_cp, dp_group_, params * e_);
      op.param_groups = bucket_plan_[k].first;
      op.bucket = static_cast<int>(k);
      op.calls = std::max(1, static_cast<int>(params * e_ / par_.bucket_bytes + 0.999));
      Index saved = cursor_;
      cursor_ = none;
      Index g = add(std::move(op));
      cursor_ = saved;
      for (const auto& name : bucket_plan_[k].first) early_gather_of_[name] = g;
    }
  }
  // The first forward of a group waits for its early gather.
  void wait_for_early_gather(const std::string& group, Phase p) {
    if (p != Phase::forward) return;
    auto it = early_gather_of_.find(group);
    if (it == early_gather_of_.end()) return;
    extra_dep_ = it->second;
    early_gather_of_.erase(it);
  }

 private:
  const Plan& plan_;
  const ModelSpec& m_;
  const ParallelismSpec& par_;
  int stage_;
  RankClass& out_;
  int tp_, cp_;
  bool sp_;
  long long b_;
  double e_;
  std::vector<int> chunk_first_;  // first layer of each model chunk
  std::vector<TokenStream> streams_;
  ParameterCounts params_;
  int dp_group_;
  bool private_ = false;           // DP-SGD (training.privacy)
  Index cursor_ = none;            // last op of the current data chain
  int chunk_ = -1;                 // the virtual chunk being lowered (pass())
  std::vector<Index> compute_ops_;  // every compute op, for "end of backward"
  // Last backward op touching each parameter group, per micro-batch: "L12", "embed", "head".
  std::map<std::string, std::map<int, Index>> grads_ready_;
  std::map<std::string, double> group_params_;  // parameters per group on this rank
  Index last_layer_start_ = none, last_layer_end_ = none;

  double total_tokens() const { return static_cast<double>(m_.tokens_per_sample()); }
  double stream_rows(const TokenStream& s) const { return b_ * s.tokens; }

  Index add(Op op) {
    if (cursor_ != none && op.kind != OpKind::p2p) op.deps.push_back(cursor_);
    if (extra_dep_ != none && op.kind != OpKind::p2p) {
      op.deps.push_back(extra_dep_);
      extra_dep_ = none;
    }
    std::sort(op.deps.begin(), op.deps.end());
    op.deps.erase(std::unique(op.deps.begin(), op.deps.end()), op.deps.end());
    if (op.chunk < 0 && op.phase != Phase::gradient_sync && op.phase != Phase::optimizer) op.chunk = chunk_;
    op.part = part_of(op);
    out_.ops.push_back(std::move(op));
    Index i = static_cast<Index>(out_.ops.size() - 1);
    if (out_.ops[i].stream == Stream::compute) compute_ops_.push_back(i);
    return i;
  }
  // Adds an op on the data chain: it waits for the chain and becomes its new end.
  Index chain(Op op) {
    Index i = add(std::move(op));
    cursor_ = i;
    return i;
  }

  static std::string phase_tag(Phase p) {
    return p == Phase::forward ? "fwd" : p == Phase::backward ? "bwd" : "recompute";
  }
  std::string name(const std::string& base, Phase p, int mb) const {
    return base + "." + phase_tag(p) + ".mb" + std::to_string(mb);
  }

  Op gemm(const std::string& base, Phase p, int mb, int layer, double rows, double k, double n) {
    Op op;
    op.name = name(base, p, mb);
    op.kind = OpKind::compute;
    op.compute = ComputeClass::gemm;
    op.phase = p;
    op.layer = layer;
    op.microbatch = mb;
    op.m = static_cast<std::int64_t>(rows);
    op.k = static_cast<std::int64_t>(k);
    op.n = static_cast<std::int64_t>(n);
    double fwd = 2 * rows * k * n;
    op.flops = p == Phase::backward ? 2 * fwd : fwd;
    double traffic = e_ * (rows * k + k * n + rows * n);
    op.bytes = p == Phase::backward ? 2 * traffic : traffic;
    return op;
  }

  Op memory_op(const std::string& base, ComputeClass cls, Phase p, int mb, int layer, double bytes) {
    Op op;
    op.name = name(base, p, mb);
    op.kind = OpKind::compute;
    op.compute = cls;
    op.phase = p;
    op.layer = layer;
    op.microbatch = mb;
    op.bytes = p == Phase::backward ? 2 * bytes : bytes;
    return op;
  }

  Op collective(const std::string& base, Phase p, int mb, int layer, Stream stream, Collective c,
                GroupKind g, int size, double bytes) {
    Op op;
    op.name = p == Phase::gradient_sync || p == Phase::optimizer ? base : name(base, p, mb);
    op.kind = OpKind::collective;
    op.stream = stream;
    op.collective = c;
    op.group = g;
    op.group_size = size;
    op.phase = p;
    op.layer = layer;
    op.microbatch = mb;
    op.bytes = bytes;
    return op;
  }

  // Megatron's tensor-parallel boundary: `enter` before a column-parallel GEMM (identity forward,
  // all-reduce backward; all-gather with sequence parallel) and `exit` after a row-parallel one.
  void tp_enter(const std::string& base, Phase p, int mb, int layer, double rows) {
    if (tp_ == 1) return;
    double bytes = rows * m_.hidden * e_;
    if (sp_) chain(collective(base + ".sp_allgather", p, mb, layer, Stream::tp,
                              p == Phase::backward ? Collective::reduce_scatter : Collective::all_gather,
                              GroupKind::tp, tp_, bytes));
    else if (p == Phase::backward)
      chain(collective(base + ".tp_allreduce", p, mb, layer, Stream::tp, Collective::all_reduce, GroupKind::tp, tp_, bytes));
  }
  void tp_exit(const std::string& base, Phase p, int mb, int layer, double rows) {
    if (tp_ == 1) return;
    double bytes = rows * m_.hidden * e_;
    if (sp_) chain(collective(base + ".sp_reducescatter", p, mb, layer, Stream::tp,
                              p == Phase::backward ? Collective::all_gather : Collective::reduce_scatter,
                              GroupKind::tp, tp_, bytes));
    else if (p != Phase::backward)
      chain(collective(base + ".tp_allreduce", p, mb, layer, Stream::tp, Collective::all_reduce, GroupKind::tp, tp_, bytes));
  }

  // One transformer block, forward (or its recompute) or backward.
  void block(int layer, int mb, Phase p) {
    std::string L = "L" + std::to_string(layer) + ".";
    const std::string group = "L" + std::to_string(layer);
    double h = m_.hidden, kv = m_.kv_dim(), f = m_.ffn_hidden;
    double sp_div = sp_ ? tp_ : 1;
    double fc1_out = (m_.gated_mlp ? 2 : 1) * f / tp_;
    auto attention_core = [&](Phase ph) {
      double q_rows = 0;
      for (const auto& s : streams_) q_rows += s.tokens;
      Op op;
      op.name = name(L + "attn.core", ph, mb);
      op.kind = OpKind::compute;
      op.compute = ComputeClass::attention;
      op.phase = ph;
      op.layer = layer;
      op.microbatch = mb;
      op.m = static_cast<std::int64_t>(q_rows);
      op.n = static_cast<std::int64_t>(total_tokens());
      op.k = m_.head_dim();
      op.batch = b_ * m_.heads / tp_;
      op.causal = m_.causal();
      double fwd = 4.0 * b_ * q_rows * total_tokens() * h / tp_;
      op.flops = ph == Phase::backward ? 2 * fwd : fwd;
      double io = e_ * b_ * (2 * q_rows * h + 2 * total_tokens() * kv) / tp_;
      op.bytes = ph == Phase::backward ? 2.5 * io : io;
      chain(std::move(op));
    };
    auto cp_kv = [&](Phase ph) {
      if (cp_ == 1) return;
      double bytes = e_ * b_ * total_tokens() * 2 * kv / tp_;
      chain(collective(L + "attn.cp_kv", ph, mb, layer, Stream::cp,
                       ph == Phase::backward ? Collective::reduce_scatter : Collective::all_gather,
                       GroupKind::cp, cp_, bytes));
    };
    if (p != Phase::backward) {
      if (p == Phase::recompute && plan_.training.recompute == Recompute::selective) {
        attention_core(p);
        return;
      }
      for (const auto& s : streams_) {
        std::string P = L + s.prefix;
        double rows = stream_rows(s);
        if (m_.adaln()) {
          chain(replicated(gemm(P + "adaln", p, mb, layer, static_cast<double>(b_), h, 6 * h)));
        }
        chain(memory_op(P + "norm1", ComputeClass::norm, p, mb, layer, 2 * e_ * rows * h / sp_div));
        tp_enter(P + "attn", p, mb, layer, rows);
        chain(gemm(P + "attn.qkv", p, mb, layer, rows, h, (h + 2 * kv) / tp_));
      }
      cp_kv(p);
      attention_core(p);
      for (const auto& s : streams_) {
        std::string P = L + s.prefix;
        double rows = stream_rows(s);
        chain(gemm(P + "attn.proj", p, mb, layer, rows, h / tp_, h));
        tp_exit(P + "attn", p, mb, layer, rows);
        chain(memory_op(P + "attn.residual", ComputeClass::elementwise, p, mb, layer, 3 * e_ * rows * h / sp_div));
        chain(memory_op(P + "norm2", ComputeClass::norm, p, mb, layer, 2 * e_ * rows * h / sp_div));
        tp_enter(P + "mlp", p, mb, layer, rows);
        chain(gemm(P + "mlp.fc1", p, mb, layer, rows, h, fc1_out));
        chain(memory_op(P + "mlp.act", ComputeClass::elementwise, p, mb, layer,
                        e_ * rows * (fc1_out + f / tp_)));
        chain(gemm(P + "mlp.fc2", p, mb, layer, rows, f / tp_, h));
        tp_exit(P + "mlp", p, mb, layer, rows);
        chain(memory_op(P + "mlp.residual", ComputeClass::elementwise, p, mb, layer, 3 * e_ * rows * h / sp_div));
      }
      return;
    }
    // Backward: the same ops in reverse, per stream, then the joint attention, then the inputs.
    for (auto it = streams_.rbegin(); it != streams_.rend(); ++it) {
      std::string P = L + it->prefix;
      double rows = stream_rows(*it);
      chain(memory_op(P + "mlp.residual", ComputeClass::elementwise, p, mb, layer, 3 * e_ * rows * h / sp_div));
      tp_exit(P + "mlp", p, mb, layer, rows);
      chain_weighted(gemm(P + "mlp.fc2", p, mb, layer, rows, f / tp_, h), group);
      chain(memory_op(P + "mlp.act", ComputeClass::elementwise, p, mb, layer, e_ * rows * (fc1_out + f / tp_)));
      chain_weighted(gemm(P + "mlp.fc1", p, mb, layer, rows, h, fc1_out), group);
      tp_enter(P + "mlp", p, mb, layer, rows);
      chain(memory_op(P + "norm2", ComputeClass::norm, p, mb, layer, 2 * e_ * rows * h / sp_div));
      chain(memory_op(P + "attn.residual", ComputeClass::elementwise, p, mb, layer, 3 * e_ * rows * h / sp_div));
      tp_exit(P + "attn", p, mb, layer, rows);
      chain_weighted(gemm(P + "attn.proj", p, mb, layer, rows, h / tp_, h), group);
    }
    attention_core(p);
    cp_kv(p);
    for (auto it = streams_.rbegin(); it != streams_.rend(); ++it) {
      std::string P = L + it->prefix;
      double rows = stream_rows(*it);
      chain_weighted(gemm(P + "attn.qkv", p, mb, layer, rows, h, (h + 2 * kv) / tp_), group);
      tp_enter(P + "attn", p, mb, layer, rows);
      chain(memory_op(P + "norm1", ComputeClass::norm, p, mb, layer, 2 * e_ * rows * h / sp_div));
      if (m_.adaln()) chain_weighted(replicated(gemm(P + "adaln", p, mb, layer, static_cast<double>(b_), h, 6 * h)), group);
    }
  }

  // --- DP-SGD (book-keeping, Bu et al. 2023) --------------------------------------------------
  // Each weighted op's backward computes only its input gradient and keeps its output gradient;
  // "<op>.sample_norm" adds each sample's squared gradient norm (ghost or materialized, whichever
  // is cheaper: model/privacy.hpp); after the micro-batch's whole backward, "privacy.clip" sets the
  // clip factors and "<op>.wgrad" forms the clipped weight gradient. The last micro-batch's
  // gradients get Gaussian noise once per step: each DP rank adds its slice of every bucket
  // ("grads.bucketK.noise") before the bucket's reduction, so the sum carries it exactly once.
  struct PendingWgrad {
    Op op;
    std::string group;
  };
  std::map<int, std::vector<PendingWgrad>> pending_wgrads_;  // by micro-batch, in backward order
  // Pipeline parallelism: micro-batches whose norms are reduced and whose clip waits (model/privacy.hpp's
  // privacy_clip_lag), each with the op that completes its norms.
  std::vector<std::pair<int, Index>> awaiting_clip_;
  bool emitting_wgrads_ = false;
  std::map<std::size_t, Index> noise_of_bucket_;

  void chain_weighted(Op op, const std::string& group) {
    if (!private_ || op.phase != Phase::backward) {
      chain(std::move(op));
      return;
    }
    std::string base = op.name.substr(0, op.name.rfind(".bwd."));
    std::string mbs = ".mb" + std::to_string(op.microbatch);
    Op wgrad = op;
    wgrad.name = base + ".wgrad" + mbs;
    wgrad.chunk = chunk_;  // its own chunk, though it may be emitted after a later one (pipeline lag)
    // Backward was input plus weight gradient; each half now runs on its own.
    op.flops /= 2;
    op.bytes /= 2;
    wgrad.flops /= 2;
    wgrad.bytes /= 2;
    Op norm = op;
    norm.name = base + ".sample_norm" + mbs;
    // Under CP a sample's rows are split over the CP ranks: its norm needs them all, so they are
    // all-gathered first (a per-sample linear's or table's partial G likewise), and each CP rank
    // computes the norms of the samples it owns, b / cp of them (exec/model/cp_sample_norms.hpp).
    Op gather;
    double samples = b_;
    if (cp_ > 1) {
      double rows = op.compute == ComputeClass::gemm ? static_cast<double>(op.m) / b_ : 1;
      // A table's G: the class row of a sample, or the embedding rows of its text tokens here.
      double table = (op.name.rfind("embed.tokens.", 0) == 0 ? m_.text_tokens / static_cast<double>(cp_) : 1) * m_.hidden;
      double sent = op.compute != ComputeClass::gemm ? table
                    : rows <= 1                      ? static_cast<double>(op.n)
                                                     : rows * static_cast<double>(op.k + op.n);
      gather = collective(base + ".norm_gather", Phase::backward, op.microbatch, op.layer, Stream::cp,
                          Collective::all_gather, GroupKind::cp, cp_, e_ * b_ * sent * cp_);
      samples = b_ / cp_;
    }
    if (op.compute == ComputeClass::gemm) {
      double rows = static_cast<double>(op.m) / b_, d_in = static_cast<double>(op.k), d_out = static_cast<double>(op.n);
      if (cp_ > 1 && rows > 1) rows *= cp_;  // the sample's whole rows
      norm.flops = samples * per_sample_norm_flops(rows, d_in, d_out, m_.linear_bias);
      norm.bytes = e_ * samples * rows * (d_in + d_out);
      if (rows <= 1) {
        norm.compute = ComputeClass::elementwise;
        norm.m = norm.n = norm.k = 0;
      } else if (ghost_norm_is_cheaper(rows, d_in, d_out)) {  // Gram matrices: rows x rows, inner d
        norm.m = norm.n = static_cast<std::int64_t>(rows);
        norm.k = static_cast<std::int64_t>(0.5 * (d_in + d_out));
        norm.batch = static_cast<std::int64_t>(std::ceil(samples));
      } else {  // the sample's d_out x d_in gradient over its rows
        norm.m = static_cast<std::int64_t>(d_out);
        norm.n = static_cast<std::int64_t>(d_in);
        norm.k = static_cast<std::int64_t>(rows);
        norm.batch = static_cast<std::int64_t>(std::ceil(samples));
      }
      wgrad.bytes += 2 * e_ * static_cast<double>(op.m) * d_out;  // scaling G's rows by the clip factors
    } else {  // an embedding: each sample's rows of the table
      norm.bytes = op.bytes;
    }
    int mb = op.microbatch;
    chain(std::move(op));
    if (cp_ > 1) chain(std::move(gather));
    chain(std::move(norm));
    pending_wgrads_[mb].push_back({std::move(wgrad), group});
  }

  Op noise_op(const std::string& nm, double params, std::vector<std::string> groups) {
    Op op;
    op.name = nm;
    op.kind = OpKind::compute;
    op.compute = ComputeClass::elementwise;
    op.phase = Phase::gradient_sync;
    // Read and write this rank's gradient slice, plus the fp32 Gaussian draws themselves.
    op.bytes = params * (2 * e_ + 4);
    op.param_groups = std::move(groups);
    return op;
  }

  // After the stage's whole backward of a micro-batch: its per-sample squared norms are partial
  // sums over the TP ranks (split weights), the CP ranks (each owns some samples) and the pipeline
  // stages (each holds some layers), reduced in that order. Without pipeline parallelism the clip follows at once; with it, stage s
  // clips micro-batch mb after its own backward of mb + privacy_clip_lag (model/privacy.hpp), when
  // the earlier stages have finished mb's backward too, and the pipeline never waits for the sum.
  void finish_sample_norms(int mb) {
    if (!private_) return;
    if (tp_ > 1)  // per-sample norms of TP-split weights are partial sums
      chain(collective("privacy.norms.tp_allreduce", Phase::backward, mb, -1, Stream::tp, Collective::all_reduce,
                       GroupKind::tp, tp_, 8.0 * b_));
    if (cp_ > 1) {  // each CP rank holds the norms of the samples it owns
      // The unified model's RMSNorm gains (two a layer, one in the head) have no ops of their
      // own: their per-sample gradients, partial over the CP ranks, are summed here too.
      double gains = 0;
      if (m_.family == ModelFamily::unified)
        for (int c = 0; c < par_.virtual_stages; ++c) {
          int mc = c * par_.pp + stage_;
          gains += 2.0 * (chunk_first_[mc + 1] - chunk_first_[mc]) + (mc == par_.pp * par_.virtual_stages - 1 ? 1 : 0);
        }
      chain(collective("privacy.norms.cp_allreduce", Phase::backward, mb, -1, Stream::cp, Collective::all_reduce,
                       GroupKind::cp, cp_, 8.0 * b_ + 4.0 * b_ * m_.hidden * gains));
    }
    if (par_.pp == 1) {
      clip_and_weight_gradients(mb, none);
      return;
    }
    // On the pp stream, posted as soon as this stage's norms are complete: the compute and tp
    // streams run on meanwhile (the 8-byte-a-sample sum is latency, not bandwidth).
    Index saved = cursor_;
    Op sum = collective("privacy.norms.pp_allreduce", Phase::backward, mb, -1, Stream::pp, Collective::all_reduce,
                        GroupKind::pp, par_.pp, 8.0 * b_);
    if (cursor_ != none) sum.deps.push_back(cursor_);
    cursor_ = none;
    awaiting_clip_.push_back({mb, add(std::move(sum))});
    cursor_ = saved;
  }
  // The clips whose lag has passed after micro-batch `done`'s backward (all when done < 0: the
  // step's backward is over), each waiting for its norms' sum, then its weight gradients.
  void clip_awaiting(int done) {
    const int lag = privacy_clip_lag(plan_, stage_);
    while (!awaiting_clip_.empty() && (done < 0 || awaiting_clip_.front().first + lag <= done)) {
      auto [mb, sum] = awaiting_clip_.front();
      awaiting_clip_.erase(awaiting_clip_.begin());
      clip_and_weight_gradients(mb, sum);
    }
  }

  // Clip, then the clipped weight gradients, group by group in backward order, each group's
  // gradients complete after its last .wgrad. `after`: the op that completes the norms (or none).
  void clip_and_weight_gradients(int mb, Index after) {
    Op clip;
    clip.name = "privacy.clip.mb" + std::to_string(mb);
    clip.kind = OpKind::compute;
    clip.compute = ComputeClass::elementwise;
    clip.phase = Phase::backward;
    clip.microbatch = mb;
    clip.bytes = 12.0 * b_;
    clip.chunk = 0;
    if (after != none) clip.deps.push_back(after);
    chain(std::move(clip));
    bool last_mb = mb == static_cast<int>(plan_.micro_batches()) - 1;
    emitting_wgrads_ = true;
    std::vector<PendingWgrad> pending = std::move(pending_wgrads_[mb]);
    pending_wgrads_.erase(mb);
    for (std::size_t i = 0; i < pending.size(); ++i) {
      chain(std::move(pending[i].op));
      const std::string& group = pending[i].group;
      if (i + 1 < pending.size() && pending[i + 1].group == group) continue;
      double params = group == "embed" ? params_.embedding / tp_ : group == "head" ? head_params() : layer_params();
      grads_done(group, mb, params);
      if (!last_mb || (par_.zero == 3 && dp_group_ > 1)) continue;  // ZeRO-3 noise goes per group
      for (std::size_t k = 0; k < bucket_plan_.size(); ++k)  // a bucket completes with its first group
        if (bucket_plan_[k].first.front() == group)
          noise_of_bucket_[k] =
              chain(noise_op("grads.bucket" + std::to_string(k) + ".noise", bucket_plan_[k].second / dp_group_,
                             bucket_plan_[k].first));
    }
    emitting_wgrads_ = false;
  }

  // ZeRO-3 / FSDP: gather a parameter group before use; with overlap, the gather of one group
  // may start as soon as the previous group starts computing (one group of prefetch).
  void gather_params(const std::string& group, double params, Phase p, int mb) {
    if (par_.zero != 3 || dp_group_ == 1) return;
    Index saved = cursor_;
    cursor_ = none;
    Op op = collective(group + ".params.all_gather", p, mb, -1, Stream::dp, Collective::all_gather,
                       GroupKind::dp_cp, dp_group_, params * e_);
    op.param_groups = {group};
    Index after = par_.overlap_param_gather ? last_layer_start_ : last_layer_end_;
    if (after != none) op.deps.push_back(after);
    Index g = add(std::move(op));
    cursor_ = saved;
    flush_reduce_scatters();
    extra_dep_ = g;  // the next op on the chain waits for the parameters too
  }
  Index extra_dep_ = none;

  void grads_done(const std::string& group, int mb, double params) {
    if (private_ && !emitting_wgrads_) return;  // DP-SGD: the group's gradients exist after its .wgrad ops
    if (private_ && mb == static_cast<int>(plan_.micro_batches()) - 1 && par_.zero == 3 && dp_group_ > 1)
      chain(noise_op(group + ".grads.noise", params / dp_group_, {group}));
    Index last = cursor_;
    grads_ready_[group][mb] = last;
    group_params_[group] = params;
    // Sequence parallelism: the parameters every TP rank holds whole (adaLN, norms, row-parallel
    // biases, image embedders and head) saw only this rank's sequence shard, so their gradients
    // are partial sums over the TP group (Megatron all-reduces them the same way). Once per step,
    // or per micro-batch where the DP reduction runs per micro-batch.
    double replicated = replicated_params(group);
    bool last_mb = mb == static_cast<int>(plan_.micro_batches()) - 1;
    if (sp_ && replicated > 0 && (last_mb || par_.zero >= 2)) {
      std::string nm = group + ".grads.sp_allreduce";
      if (par_.zero >= 2) nm += ".mb" + std::to_string(mb);
      Op op = collective(nm, Phase::gradient_sync, mb, -1, Stream::tp, Collective::all_reduce, GroupKind::tp, tp_,
                         replicated * e_);
      op.param_groups = {group};
      op.deps.push_back(last);
      Index saved = cursor_;
      cursor_ = none;
      Index a = add(std::move(op));
      cursor_ = saved;
      grads_ready_[group][mb] = a;
      last = a;
    }
    if (par_.zero == 3 && dp_group_ > 1) {
      Op op = collective(group + ".grads.reduce_scatter.mb" + std::to_string(mb), Phase::gradient_sync, mb, -1,
                         Stream::dp, Collective::reduce_scatter, GroupKind::dp_cp, dp_group_,
                         params * e_);
      op.param_groups = {group};
      op.deps.push_back(last);
      // Held back until the next group's gather is issued: the dp stream runs in order, and the
      // prefetch of the next layer's parameters must not queue behind this layer's gradients.
      pending_reduce_scatter_.push_back(std::move(op));
    }
  }
  std::vector<Op> pending_reduce_scatter_;
  void flush_reduce_scatters() {
    Index saved = cursor_;
    Index extra = extra_dep_;
    extra_dep_ = none;
    cursor_ = none;
    for (auto& op : pending_reduce_scatter_) add(std::move(op));
    pending_reduce_scatter_.clear();
    cursor_ = saved;
    extra_dep_ = extra;
  }

  // Parameters of a group that every TP rank holds whole.
  double replicated_params(const std::string& group) const {
    double h = m_.hidden;
    if (group == "embed") return m_.has_image() ? params_.embedding - (m_.has_text_vocab() ? 1.0 * m_.vocab * h : 0) : 0;
    if (group == "head") return params_.head - (m_.has_text_vocab() ? 1.0 * m_.vocab * h : 0);
    return params_.per_layer_replicated;
  }

  // With tied embeddings split over stages the last stage holds its own copy of the matrix.
  double head_params() const {
    double extra = m_.tied_embeddings && par_.pp > 1 ? 1.0 * m_.vocab * m_.hidden : 0;
    return (params_.head + extra) / tp_;
  }
  double layer_params() const { return layer_parameters_per_rank(params_, tp_); }

  void run_layer(int layer, int mb, Phase p) {
    std::string group = "L" + std::to_string(layer);
    gather_params(group, layer_params(), p, mb);
    wait_for_early_gather(group, p);
    Index start_before = static_cast<Index>(out_.ops.size());
    if (p == Phase::backward && plan_.training.recompute != Recompute::none) block(layer, mb, Phase::recompute);
    block(layer, mb, p);
    last_layer_start_ = start_before;
    last_layer_end_ = cursor_;
    if (p == Phase::backward) grads_done(group, mb, layer_params());
  }
  // Embedding (first model chunk) and head + loss (last model chunk).
  void embed(int mb, Phase p) {
    // Under sequence parallelism each TP rank embeds only its own sequence shard of the image.
    double rows_img = b_ * (m_.has_image() ? m_.image_tokens() / static_cast<double>(cp_) : 0) / (sp_ ? tp_ : 1);
    auto image_side = [&](Op op) { return sp_ ? op : replicated(std::move(op)); };
    double rows_txt = b_ * (m_.family == ModelFamily::mmdit || m_.family == ModelFamily::unified
                                ? m_.text_tokens / static_cast<double>(cp_)
                                : (m_.has_image() ? 0 : m_.seq_len / static_cast<double>(cp_)));
    double h = m_.hidden;
    double patch_in = 1.0 * m_.patch * m_.patch * m_.latent_channels;
    gather_params("embed", params_.embedding / tp_, p, mb);
    wait_for_early_gather("embed", p);
    // Forward: patches, timestep, class (which sums the conditioning), then context/tokens.
    // Backward runs the same ops in reverse, so each gets its output gradient first.
    std::vector<std::function<void()>> ops;
    if (m_.has_image()) {
      ops.push_back([&] { chain_weighted(image_side(gemm("embed.patch", p, mb, -1, rows_img, patch_in, h)), "embed"); });
      ops.push_back([&] {
        chain_weighted(replicated(gemm("embed.timestep", p, mb, -1, static_cast<double>(b_), m_.frequency_embedding + h, h)),
                       "embed");
      });
    }
    if (m_.family == ModelFamily::dit && m_.num_classes > 0)
      ops.push_back([&] { chain_weighted(memory_op("embed.class", ComputeClass::embedding, p, mb, -1, 2 * e_ * b_ * h), "embed"); });
    if (m_.family == ModelFamily::mmdit) {
      // Under sequence parallelism each TP rank embeds only its shard of the context, as of the image.
      ops.push_back([&] {
        chain_weighted(image_side(gemm("embed.context", p, mb, -1, rows_txt / (sp_ ? tp_ : 1), m_.context_dim, h)), "embed");
      });
      ops.push_back([&] {
        chain_weighted(replicated(gemm("embed.pooled", p, mb, -1, static_cast<double>(b_), m_.pooled_dim + h, h)), "embed");
      });
    }
    if (m_.has_text_vocab()) {
      ops.push_back([&] {
        chain_weighted(memory_op("embed.tokens", ComputeClass::embedding, p, mb, -1, 2 * e_ * rows_txt * h), "embed");
        if (tp_ > 1 && p == Phase::forward)  // vocabulary-parallel lookup: partial rows summed
          chain(collective("embed.tp_allreduce", p, mb, -1, Stream::tp, Collective::all_reduce, GroupKind::tp, tp_,
                           e_ * rows_txt * h));
      });
    }
    if (p == Phase::backward) std::reverse(ops.begin(), ops.end());
    for (auto& op : ops) op();
    if (p == Phase::backward) grads_done("embed", mb, params_.embedding / tp_);
  }

  void head(int mb, Phase p) {
    double h = m_.hidden;
    // Under sequence parallelism the final layer runs on this rank's sequence shard.
    double rows_img = b_ * (m_.has_image() ? m_.image_tokens() / static_cast<double>(cp_) : 0) / (sp_ ? tp_ : 1);
    auto image_side = [&](Op op) { return sp_ ? op : replicated(std::move(op)); };
    double rows_txt = b_ * (m_.family == ModelFamily::unified ? m_.text_tokens / static_cast<double>(cp_)
                            : m_.has_image() ? 0 : m_.seq_len / static_cast<double>(cp_));
    double patch_out = 1.0 * m_.patch * m_.patch * m_.out_channels();
    gather_params("head", head_params(), p, mb);
    wait_for_early_gather("head", p);
    auto body = [&](Phase ph) {
      if (m_.adaln()) chain(replicated(gemm("head.adaln", ph, mb, -1, static_cast<double>(b_), h, 2 * h)));
      chain(memory_op("head.norm", ComputeClass::norm, ph, mb, -1, 2 * e_ * (rows_img + rows_txt) * h));
      if (m_.has_image()) chain(image_side(gemm("head.image", ph, mb, -1, rows_img, h, patch_out)));
      if (m_.has_text_vocab()) chain(gemm("head.lm", ph, mb, -1, rows_txt, h, 1.0 * m_.vocab / tp_));
      double loss_bytes = m_.has_text_vocab() ? 4.0 * rows_txt * m_.vocab / tp_ : 0;
      loss_bytes += 3 * e_ * rows_img * patch_out;
      chain(memory_op("loss", ComputeClass::loss, ph, mb, -1, loss_bytes));
      if (m_.has_text_vocab() && tp_ > 1 && ph == Phase::forward)  // max and sum of the split softmax
        chain(collective("loss.tp_allreduce", ph, mb, -1, Stream::tp, Collective::all_reduce, GroupKind::tp, tp_,
                         2 * 4.0 * rows_txt));
    };
    if (p == Phase::forward) {
      body(p);
      return;
    }
    // Backward: loss gradient, then the head GEMMs in reverse.
    chain(memory_op("loss", ComputeClass::loss, p, mb, -1,
                    (m_.has_text_vocab() ? 4.0 * rows_txt * m_.vocab / tp_ : 0) + 3 * e_ * rows_img * patch_out));
    if (m_.has_text_vocab()) {
      chain_weighted(gemm("head.lm", p, mb, -1, rows_txt, h, 1.0 * m_.vocab / tp_), "head");
      // The vocabulary-parallel head's input gradient is a partial sum over the TP ranks.
      if (tp_ > 1)
        chain(collective("head.lm.tp_allreduce", p, mb, -1, Stream::tp, Collective::all_reduce, GroupKind::tp, tp_,
                         e_ * rows_txt * h));
    }
    if (m_.has_image()) chain_weighted(image_side(gemm("head.image", p, mb, -1, rows_img, h, patch_out)), "head");
    chain(memory_op("head.norm", ComputeClass::norm, p, mb, -1, 2 * e_ * (rows_img + rows_txt) * h));
    if (m_.adaln()) chain_weighted(replicated(gemm("head.adaln", p, mb, -1, static_cast<double>(b_), h, 2 * h)), "head");
    grads_done("head", mb, head_params());
  }

  // Small input/output ops whose work every TP rank repeats: counted once in the model FLOPs.
  Op replicated(Op op) {
    op.replicas = tp_;
    return op;
  }

  // Pipeline p2p.
  double p2p_bytes() const {
    double tokens = 0;
    for (const auto& s : streams_) tokens += s.tokens;
    // The residual stream (its sequence shard under sequence parallelism) and, for adaLN models,
    // the conditioning vector every stage's modulation reads (and its gradient backward).
    double conditioning = m_.adaln() ? e_ * b_ * m_.hidden : 0;
    return e_ * b_ * tokens * m_.hidden / (sp_ ? tp_ : 1) + conditioning;
  }
  Op p2p(const std::string& nm, Collective c, int peer, const std::string& match, Phase p, int mb) {
    Op op;
    op.name = nm;
    op.kind = OpKind::p2p;
    op.stream = Stream::pp;
    op.collective = c;
    op.group = GroupKind::pp;
    op.group_size = 2;
    op.peer_stage = peer;
    op.match = match;
    op.phase = p;
    op.microbatch = mb;
    op.bytes = p2p_bytes();
    return op;
  }

  std::string chunk_tag(int chunk) const {
    return par_.virtual_stages > 1 ? ".c" + std::to_string(chunk) : "";
  }

  // Forward or backward of one model chunk for one micro-batch on this stage.
  void pass(int chunk, int mb, Phase p) {
    int p_count = par_.pp;
    int model_chunk = chunk * p_count + stage_;
    int last_chunk = p_count * par_.virtual_stages - 1;
    int first_layer = chunk_first_[model_chunk], end_layer = chunk_first_[model_chunk + 1];
    std::string mbs = ".mb" + std::to_string(mb);
    std::string dir = p == Phase::forward ? "fwd" : "bwd";
    cursor_ = none;
    chunk_ = chunk;
    // Receive the input (activations forward, their gradient backward).
    bool receives = p == Phase::forward ? model_chunk > 0 : model_chunk < last_chunk;
    if (receives) {
      int from = p == Phase::forward ? model_chunk - 1 : model_chunk + 1;
      std::string match = (p == Phase::forward ? "act." : "grad.") + std::to_string(from) + mbs;
      Op recv = p2p("pp." + dir + ".recv" + chunk_tag(chunk) + mbs, Collective::recv, from % p_count, match, p, mb);
      // Posted when the previous pass on this stage ends, as Megatron's schedules do.
      if (previous_pass_end_ != none) recv.deps.push_back(previous_pass_end_);
      Index r = add(std::move(recv));
      cursor_ = r;
    } else if (p == Phase::backward) {
      // The last chunk starts its backward from its own forward's loss.
      auto it = forward_end_.find({chunk, mb});
      if (it != forward_end_.end()) cursor_ = it->second;
    }
    if (p == Phase::forward) {
      if (model_chunk == 0) embed(mb, p);
      for (int l = first_layer; l < end_layer; ++l) run_layer(l, mb, p);
      if (model_chunk == last_chunk) head(mb, p);
      forward_end_[{chunk, mb}] = cursor_;
    } else {
      if (model_chunk == last_chunk) head(mb, p);
      for (int l = end_layer - 1; l >= first_layer; --l) run_layer(l, mb, p);
      if (model_chunk == 0) embed(mb, p);
      if (chunk == 0) finish_sample_norms(mb);  // the stage's last chunk of the micro-batch's backward
    }
    bool sends = p == Phase::forward ? model_chunk < last_chunk : model_chunk > 0;
    if (sends) {
      int to = p == Phase::forward ? model_chunk + 1 : model_chunk - 1;
      std::string match = (p == Phase::forward ? "act." : "grad.") + std::to_string(model_chunk) + mbs;
      Op op = p2p("pp." + dir + ".send" + chunk_tag(chunk) + mbs, Collective::send, to % p_count, match, p, mb);
      op.deps.push_back(cursor_);
      add(std::move(op));
    }
    previous_pass_end_ = cursor_;
    if (p == Phase::backward && chunk == 0 && !awaiting_clip_.empty()) {  // DP-SGD under PP: after the send
      chunk_ = -1;
      clip_awaiting(mb);
    }
    flush_reduce_scatters();
    chunk_ = -1;
  }
  std::map<std::pair<int, int>, Index> forward_end_;
  Index previous_pass_end_ = none;

  // The order of forward and backward passes on this stage.
  void schedule() {
    int p = par_.pp, s = stage_, v = par_.virtual_stages;
    int m = static_cast<int>(plan_.micro_batches());
    struct Work { int chunk, mb; bool forward; };
    std::vector<Work> order;
    if (par_.schedule == PipelineSchedule::gpipe || p == 1) {
      for (int c = 0; c < v; ++c)
        for (int i = 0; i < m; ++i) order.push_back({c, i, true});
      for (int c = v - 1; c >= 0; --c)
        for (int i = 0; i < m; ++i) order.push_back({c, i, false});
      if (p == 1) {  // no pipeline: one forward and one backward per micro-batch, back to back
        order.clear();
        for (int i = 0; i < m; ++i) {
          order.push_back({0, i, true});
          order.push_back({0, i, false});
        }
      }
    } else if (v == 1) {
      int warmup = std::min(p - s - 1, m);
      for (int i = 0; i < warmup; ++i) order.push_back({0, i, true});
      for (int i = 0; i < m - warmup; ++i) {
        order.push_back({0, warmup + i, true});
        order.push_back({0, i, false});
      }
      for (int i = m - warmup; i < m; ++i) order.push_back({0, i, false});
    } else {
      // Megatron's interleaved 1F1B: virtual micro-batch k maps to a chunk and a micro-batch.
      int total = m * v;
      auto fwd_of = [&](int k) { return Work{(k / p) % v, (k / (p * v)) * p + k % p, true}; };
      auto bwd_of = [&](int k) { return Work{v - 1 - (k / p) % v, (k / (p * v)) * p + k % p, false}; };
      int warmup = std::min((p - s - 1) * 2 + (v - 1) * p, total);
      for (int k = 0; k < warmup; ++k) order.push_back(fwd_of(k));
      for (int k = 0; k < total - warmup; ++k) {
        order.push_back(fwd_of(warmup + k));
        order.push_back(bwd_of(k));
      }
      for (int k = total - warmup; k < total; ++k) order.push_back(bwd_of(k));
    }
    for (const auto& w : order) pass(w.chunk, w.mb, w.forward ? Phase::forward : Phase::backward);
    clip_awaiting(-1);
    flush_reduce_scatters();
  }

  void gradient_sync_and_optimizer() {
    int m = static_cast<int>(plan_.micro_batches());
    Index end_of_backward = compute_ops_.empty() ? none : compute_ops_.back();
    std::vector<Index> sync_ops;
    if (dp_group_ > 1 && par_.zero < 3) {
      // Buckets of whole parameter groups (bucket_plan_), each launched when its last group's
      // gradients are complete; ZeRO-2 reduce-scatters every micro-batch.
      bool per_microbatch = par_.zero == 2;
      for (int mb = per_microbatch ? 0 : m - 1; mb < m; ++mb) {
        for (std::size_t k = 0; k < bucket_plan_.size(); ++k) {
          const auto& [members, params] = bucket_plan_[k];
          Index ready = 0;
          for (const auto& g : members) ready = std::max(ready, grads_ready_.at(g).at(mb));
          bool rs = par_.zero >= 1;
          std::string nm = "grads.bucket" + std::to_string(k) + (rs ? ".reduce_scatter" : ".allreduce");
          if (per_microbatch) nm += ".mb" + std::to_string(mb);
          Op op = collective(nm, Phase::gradient_sync, mb, -1, Stream::dp,
                             rs ? Collective::reduce_scatter : Collective::all_reduce, GroupKind::dp_cp, dp_group_,
                             params * e_);
          op.calls = std::max(1, static_cast<int>(params * e_ / par_.bucket_bytes + 0.999));
          op.deps.push_back(par_.overlap_grad_reduce ? ready : end_of_backward);
          if (mb == m - 1 && noise_of_bucket_.count(k)) op.deps.push_back(noise_of_bucket_.at(k));
          op.param_groups = members;
          op.bucket = static_cast<int>(k);
          Index saved = cursor_;
          cursor_ = none;
          sync_ops.push_back(add(std::move(op)));
          cursor_ = saved;
        }
      }
    }
    // Tied input/output embeddings live on the first and last stage: their gradients are summed.
    if (m_.tied_embeddings && par_.pp > 1 && (stage_ == 0 || stage_ == par_.pp - 1)) {
      Op op = collective("grads.embedding.allreduce", Phase::gradient_sync, -1, -1, Stream::dp,
                         Collective::all_reduce, GroupKind::embedding, 2, 1.0 * m_.vocab * m_.hidden / tp_ * e_);
      op.deps.push_back(end_of_backward);
      cursor_ = none;
      sync_ops.push_back(add(std::move(op)));
    }
    // ZeRO-3 reduce-scatters were issued per layer; the optimizer waits for all of them.
    for (Index i = 0; i < out_.ops.size(); ++i)
      if (out_.ops[i].phase == Phase::gradient_sync && out_.ops[i].kind == OpKind::collective) sync_ops.push_back(i);
    std::sort(sync_ops.begin(), sync_ops.end());
    sync_ops.erase(std::unique(sync_ops.begin(), sync_ops.end()), sync_ops.end());

    double local = 0;
    for (const auto& [g, p] : group_params_) local += p;
    double shard = par_.zero >= 1 ? local / dp_group_ : local;
    double master = plan_.training.precision == Precision::fp32 ? 0 : 4;
    double states = plan_.training.optimizer.state_bytes_per_param();
    Op opt;
    opt.name = "optimizer.step";
    opt.kind = OpKind::optimizer;
    opt.compute = ComputeClass::optimizer;
    opt.phase = Phase::optimizer;
    // The memory passes of a mixed-precision step over this rank's shard, as Megatron/Apex run
    // them: unscale and inf-check the fp32 gradients (read + write), the global gradient norm
    // (read), the update (read gradient, master and states; write master and states), the cast of
    // the master weights to the working copy, and zeroing the gradients. fp32 training has no
    // unscale and no cast.
    double grad = master > 0 ? 4 : e_;
    double unscale = master > 0 ? 2 * grad : 0, cast = master > 0 ? master + e_ : 0;
    double weights = master > 0 ? master : e_;
    opt.bytes = shard * (unscale + grad + (grad + 2 * (weights + states)) + cast + grad);
    opt.deps = sync_ops;
    if (end_of_backward != none) opt.deps.push_back(end_of_backward);
    cursor_ = none;
    Index step = add(std::move(opt));
    if (dp_group_ > 1 && (par_.zero == 1 || par_.zero == 2) && !early_gathers()) {
      // Each rank updated its shard: gather the updated parameters, bucket by bucket.
      for (std::size_t k = 0; k < bucket_plan_.size(); ++k) {
        double per_bucket = bucket_plan_[k].second;
        Op op = collective("params.bucket" + std::to_string(k) + ".all_gather", Phase::optimizer, -1, -1, Stream::dp,
                           Collective::all_gather, GroupKind::dp_cp, dp_group_, per_bucket * e_);
        op.param_groups = bucket_plan_[k].first;
        op.bucket = static_cast<int>(k);
        op.calls = std::max(1, static_cast<int>(per_bucket * e_ / par_.bucket_bytes + 0.999));
        op.deps.push_back(step);
        cursor_ = none;
        add(std::move(op));
      }
    }
  }
};

}  // namespace

std::vector<std::string> stage_parameter_groups(const Plan& plan, int stage) {
  const auto& par = plan.parallelism;
  int chunks = par.pp * par.virtual_stages;
  std::vector<int> first = chunk_first_layers(plan.model.layers, chunks);
  std::vector<std::string> out;
  if (stage == 0) out.push_back("embed");
  for (int c = 0; c < par.virtual_stages; ++c) {
    int mc = c * par.pp + stage;
    for (int l = first[mc]; l < first[mc + 1]; ++l) out.push_back(std::string("L").append(std::to_string(l)));  // not "L" + ...: GCC 12 -Wrestrict
  }
  // Interleaved chunks hold layers out of order; the flat array keeps the model's order.
  std::sort(out.begin() + (stage == 0 ? 1 : 0), out.end(), [](const std::string& a, const std::string& b) {
    return std::stoi(a.substr(1)) < std::stoi(b.substr(1));
  });
  if (stage == (chunks - 1) % par.pp) out.push_back("head");
  return out;
}

std::size_t estimated_program_ops(const Plan& plan) {
  const auto& par = plan.parallelism;
  // Per layer and micro-batch a stage holds at most ~60 ops a stream (forward, backward,
  // recompute, communication), plus its embedding and head; pp stages the size of the fullest.
  long double layers = static_cast<long double>(plan.model.layers) / par.pp + 2;
  long double ops = (layers * static_cast<long double>(plan.micro_batches()) * 60 * plan.model.streams() + 64) * par.pp;
  return ops > 1e18L ? static_cast<std::size_t>(1e18) : static_cast<std::size_t>(ops);
}

Program lower(const Plan& plan, double memory_bytes) {
  // Refused before anything is built: a Program is ~300 bytes an op, per stage.
  std::size_t estimate = estimated_program_ops(plan);
  if (estimate > max_program_ops(memory_bytes)) {
    char budget[64];
    std::snprintf(budget, sizeof budget, "%.3g GB", memory_bytes / 1e9);
    char need[64];
    std::snprintf(need, sizeof need, "%.3g GB", estimate * program_bytes_per_op / 1e9);
    throw InputError(std::string(plan.model.layers / plan.parallelism.pp > plan.micro_batches() ? "model.layers"
                                                                                                : "training.global_batch") +
                     ": the step's Program would hold ~" +
                     (estimate >= 1000000 ? std::to_string(estimate / 1000000) + " M" : std::to_string(estimate)) +
                     " ops (" + std::to_string(plan.model.layers) + " layers / pp " +
                     std::to_string(plan.parallelism.pp) + " x " + std::to_string(plan.micro_batches()) +
                     " micro-batches), ~" + need + " of memory, over the budget of " + budget +
                     " (--max-memory): raise training.micro_batch or parallelism.pp, lower global_batch or "
                     "model.layers, or give --max-memory more");
  }
  Program program;
  const auto& par = plan.parallelism;
  program.dp = par.dp;
  program.tp = par.tp;
  program.pp = par.pp;
  program.cp = par.cp;
  program.virtual_stages = par.virtual_stages;
  program.sequence_parallel = par.sequence_parallel && par.tp > 1;
  program.classes.resize(par.pp);
  for (int s = 0; s < par.pp; ++s) {
    RankClass& rc = program.classes[s];
    rc.stage = s;
    rc.rank_count = 1LL * par.dp * par.tp * par.cp;
    StageLowering(plan, s, rc).run();
    rc.param_groups = stage_parameter_groups(plan, s);
  }
  // p2p match keys as small integers (MPI tags), numbered the same way in every rank class.
  std::map<std::string, int> ids;
  for (const auto& rc : program.classes)
    for (const auto& op : rc.ops)
      if (!op.match.empty()) ids.emplace(op.match, 0);
  int next = 0;
  for (auto& [key, id] : ids) id = next++;
  for (auto& rc : program.classes)
    for (auto& op : rc.ops)
      if (!op.match.empty()) op.match_id = ids.at(op.match);
  return program;
}

}  // namespace ditwin
