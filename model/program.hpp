// The Program: one training step lowered to an ordered DAG of ops per rank class. Both the
// simulator (sim/) and the executor (exec/) consume it and report under its op names.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/plan.hpp"

namespace ditwin {

enum class OpKind : std::uint8_t { compute, collective, p2p, copy, optimizer };
// Streams run their ops in program order, one at a time, except `pp`: point-to-point transfers
// are posted as soon as their dependencies allow (as batched isend/irecv do), so they never
// block each other.
enum class Stream : std::uint8_t { compute, tp, cp, dp, pp };
enum class ComputeClass : std::uint8_t { none, gemm, attention, norm, elementwise, embedding, loss, optimizer };
enum class Collective : std::uint8_t { none, all_reduce, all_gather, reduce_scatter, all_to_all, send, recv };
// Which ranks an op's communication spans. dp_cp: every rank holding the same parameters
// (gradients are reduced over data and context parallel ranks together). embedding: the
// first and last pipeline stage (tied embeddings).
enum class GroupKind : std::uint8_t { none, tp, cp, dp, dp_cp, pp, embedding };
enum class Phase : std::uint8_t { forward, backward, recompute, gradient_sync, optimizer };

const char* to_string(OpKind k);
const char* to_string(Stream s);
const char* to_string(ComputeClass c);
const char* to_string(Collective c);
const char* to_string(GroupKind g);
const char* to_string(Phase p);
constexpr int stream_count = 5;

// An op's typed identity is (layer, part, phase, microbatch, chunk, bucket, group); its name is
// derived from it by the lowering and is only ever read by people and by compare. Engines act on
// the typed fields, never on the name.
struct Op {
  std::string name;  // stable across runs and backends: "L3.attn.qkv.fwd.mb2"
  std::string part;  // what the op does, without layer, phase and micro-batch: "attn.qkv", "loss",
                     // "attn.tp_allreduce", "pp.fwd.send", "grads.bucket", "optimizer.step"
  OpKind kind = OpKind::compute;
  Stream stream = Stream::compute;
  ComputeClass compute = ComputeClass::none;
  Collective collective = Collective::none;
  GroupKind group = GroupKind::none;
  Phase phase = Phase::forward;
  int group_size = 1;
  int peer_stage = -1;       // p2p: the other pipeline stage
  int layer = -1;            // transformer block, -1 for embedding/head/optimizer
  int microbatch = -1;
  int chunk = -1;            // the virtual pipeline chunk (interleaved 1F1B) this op belongs to
  int bucket = -1;           // gradient / parameter buckets: the bucket's index
  int calls = 1;             // collectives: how many library calls this op stands for
  int replicas = 1;          // ranks of the TP group that repeat this same work (adaLN, embedders)
  double flops = 0;          // model-convention FLOPs this op performs (recompute included)
  double bytes = 0;          // compute: memory traffic; communication: the buffer's full size
                             // (nccl-tests' "size": all-gather output, reduce-scatter input)
  // GEMM shape (m x k) * (k x n), for the efficiency curve; attention: m = queries,
  // n = keys, k = head dim, batch = micro-batch x heads on this rank.
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  bool causal = false;
  std::string match;         // p2p: the key a send and its recv share
  int match_id = -1;         // p2p: a small integer for `match`, the same in every rank class
  // Gradient and parameter collectives: the parameter groups they move ("embed", "L3", "head"),
  // in the flat order an executor lays parameters out.
  std::vector<std::string> param_groups;
  std::vector<std::uint32_t> deps;  // indices of earlier ops in the same RankClass
};

// All ranks of one pipeline stage run the same program (their TP/CP/DP peers are symmetric).
struct RankClass {
  int stage = 0;
  long long rank_count = 0;
  std::vector<Op> ops;
  // The parameter groups this stage holds ("embed", "L0", ..., "head"), in the flat order of its
  // local parameter array. Within a group, TP ranks hold the slices model/parameters.hpp gives.
  std::vector<std::string> param_groups;
};

struct Program {
  int dp = 1, tp = 1, pp = 1, cp = 1;
  int virtual_stages = 1;
  bool sequence_parallel = false;
  std::vector<RankClass> classes;  // indexed by pipeline stage

  long long world() const { return 1LL * dp * tp * pp * cp; }
  // Rank layout (Megatron's order): tp fastest, then cp, then dp, then pp.
  int stage_of(long long rank) const { return static_cast<int>(rank / (1LL * tp * cp * dp)); }
  const RankClass& class_of(long long rank) const { return classes[stage_of(rank)]; }
  // Where `rank` sits on each axis.
  struct Place {
    int tp = 0, cp = 0, dp = 0, pp = 0;
  };
  Place place_of(long long rank) const;
  // The ranks of `rank`'s group of this kind, in ascending order.
  std::vector<long long> group_members(GroupKind kind, long long rank) const;
  std::size_t op_count() const;
  // Model FLOPs of one step: summed over every rank, work repeated across TP ranks counted once.
  double total_flops() const;
};

// The parameter groups pipeline stage `stage` holds, in the model's order.
std::vector<std::string> stage_parameter_groups(const Plan& plan, int stage);

// An upper bound on the ops of the whole Program (every stage's class), without building it.
std::size_t estimated_program_ops(const Plan& plan);
// What a Program costs in memory per op (the Op, its name, dependencies and parameter groups), and
// the budget a Program may take unless `--max-memory` says otherwise (3 GB: 10 million ops).
constexpr double program_bytes_per_op = 300;
constexpr double default_program_memory_bytes = 3e9;
// The most ops a Program may hold within `memory_bytes`.
inline std::size_t max_program_ops(double memory_bytes = default_program_memory_bytes) {
  return static_cast<std::size_t>(memory_bytes / program_bytes_per_op);
}

// Lowers a validated plan. Throws InputError only for plans the lowering cannot express, and,
// before building anything, for plans whose Program would exceed `memory_bytes` (naming the keys
// to change and --max-memory).
Program lower(const Plan& plan, double memory_bytes = default_program_memory_bytes);

}  // namespace ditwin
