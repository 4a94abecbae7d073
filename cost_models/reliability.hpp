// Failure, checkpoint and ETTR cost models: failure presets with their sources, the checkpoint
// sizes and times a plan implies, and the closed forms (Young, Daly, Meta's ETTR model, an exact
// renewal model) that the long-run simulator (sim/longrun) is checked against.
#pragma once
#include <string>
#include <vector>

#include "model/plan.hpp"

namespace ditwin::cost {

// One failure category with its rate resolved to failures per node per second.
struct FailureCategory {
  std::string name;
  double per_node_s = 0;
  bool hang = false;       // detected by the collective timeout, not by a missed heartbeat
  bool node_lost = true;   // needs a replacement node (hot spare or requeue)
};

struct FailureModel {
  std::string source;                      // where the figures come from
  std::vector<FailureCategory> categories;  // unexpected interruptions
  double planned_per_node_s = 0;           // planned maintenance
  double weibull_shape = 1;                // 1 = exponential inter-arrival times
  double unexpected_per_node_s() const;
};

// A preset by name (none | llama3 | meta-rsc), rates per node for nodes of `devices_per_node`.
FailureModel failure_preset(const std::string& name, int devices_per_node);
// The plan's failure model: its preset, with the plan's categories added or replacing those of the
// same name, its planned rate, distribution, and failure_rate_scale applied to every rate.
FailureModel failure_model(const ReliabilitySpec& spec, int devices_per_node);

// Checkpoint sizes and times a plan implies. The checkpoint holds the fp32 master weights and the
// optimizer states of every parameter once (replicas write disjoint shares, as distributed
// checkpointing does), spread evenly over the nodes.
struct CheckpointCosts {
  double bytes = 0;           // whole checkpoint
  double bytes_per_node = 0;
  double write_s = 0;         // one node's share to the store
  double load_s = 0;          // what a restart reads: from the store, or from a peer (in_memory)
  double stall_s = 0;         // training blocked per checkpoint
  double persist_s = 0;       // after the stall, until the checkpoint survives a failure
};
CheckpointCosts checkpoint_costs(const Plan& plan);

// Young (1974): tau = sqrt(2 delta M), delta = checkpoint cost, M = mean time between failures.
double young_interval_s(double delta_s, double mtbf_s);
// Daly (2006), first-order-corrected optimum: sqrt(2dM)[1 + sqrt(d/2M)/3 + (d/2M)/9] - d for d < 2M, else M.
double daly_interval_s(double delta_s, double mtbf_s);

// Meta's analytical ETTR (Kokolis et al. 2024): [1 - N r (u0 + interval/2)] / [1 + w / interval],
// N nodes failing at r per node per second, u0 = time to restart, w = checkpoint stall. First order
// in N r (u0 + interval): it assumes failures are rare within one interval and one restart.
double meta_ettr(double nodes, double rate_per_node_s, double u0_s, double interval_s, double stall_s);

// The exact expected ETTR of the same policy when failures are a Poisson process of rate lambda in
// wall-clock time (renewal argument): work in intervals of `interval_s`, each followed by a stall
// `stall_s`, a checkpoint survives once `persist_s` after its stall; a failure costs `restart_s`
// (detection included) and a failure during a restart starts it over. Exact for an infinite run.
double renewal_ettr(double lambda_per_s, double interval_s, double stall_s, double persist_s, double restart_s);

}  // namespace ditwin::cost
