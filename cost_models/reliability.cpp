// Failure presets (with sources), checkpoint costs, and the closed-form reliability models.
#include "cost_models/reliability.hpp"

#include <cmath>

#include "model/accounting.hpp"
#include "model/errors.hpp"

namespace ditwin::cost {

double FailureModel::unexpected_per_node_s() const {
  double sum = 0;
  for (const auto& c : categories) sum += c.per_node_s;
  return sum;
}

namespace {

constexpr double day_s = 86400;

struct Count {
  const char* name;
  int count;
  bool hang;
  bool node_lost;
};

}  // namespace

FailureModel failure_preset(const std::string& name, int devices_per_node) {
  FailureModel m;
  if (name == "none") {
    m.source = "no failures";
    return m;
  }
  if (name == "llama3") {
    // Llama 3 herd paper (Dubey et al. 2024), section 3.3.4 and Table 5: 419 unexpected
    // interruptions in a 54-day snapshot of Llama 3 405B pre-training on 16,384 H100s, plus 47
    // planned ones. Counts are turned into rates per GPU-hour (every category scales with GPUs),
    // then per node. Detection and node replacement per category are ditwin's reading of the
    // category: hardware faults take the node out; software, NCCL watchdog and dependency
    // failures restart in place; network and NIC faults show up as hung collectives.
    static const Count counts[] = {
        {"faulty_gpu", 148, false, true},          {"gpu_hbm3", 72, false, true},
        {"software_bug", 54, false, false},        {"network_switch_cable", 35, true, true},
        {"host_maintenance", 32, false, true},     {"gpu_sram", 19, false, true},
        {"gpu_system_processor", 17, false, true}, {"nic", 7, true, true},
        {"nccl_watchdog", 7, true, false},         {"silent_data_corruption", 6, false, true},
        {"gpu_thermal", 6, false, true},           {"ssd", 3, false, true},
        {"power_supply", 3, false, true},          {"server_chassis", 2, false, true},
        {"io_expansion_board", 2, false, true},    {"dependency", 2, false, false},
        {"cpu", 2, false, true},                   {"system_memory", 2, false, true},
    };
    const double gpu_hours = 16384.0 * 54 * 24;
    m.source = "Llama 3 (Dubey et al. 2024, sec. 3.3.4, Table 5): 419 unexpected + 47 planned interruptions "
               "in 54 days on 16,384 H100";
    for (const auto& c : counts)
      m.categories.push_back({c.name, c.count / gpu_hours * devices_per_node / 3600.0, c.hang, c.node_lost});
    m.planned_per_node_s = 47 / gpu_hours * devices_per_node / 3600.0;
    return m;
  }
  if (name == "meta-rsc") {
    // Kokolis et al. 2024, "Revisiting Reliability in Large-Scale Machine Learning Research
    // Clusters": RSC-1 sees 6.50 failures per 1,000 node-days (8-GPU A100 nodes). Only the
    // aggregate rate is used; every failure is a node failure found by a missed heartbeat.
    m.source = "Kokolis et al. 2024: RSC-1, 6.5 failures per 1,000 node-days";
    m.categories.push_back({"node_failure", 6.5e-3 / day_s, false, true});
    return m;
  }
  throw InputError("reliability.failures: unknown preset \"" + name + "\"");
}

FailureModel failure_model(const ReliabilitySpec& spec, int devices_per_node) {
  FailureModel m = failure_preset(spec.failures, devices_per_node);
  for (const auto& c : spec.categories) {
    FailureCategory cat{c.name, c.per_node_day / day_s + c.per_device_hour * devices_per_node / 3600.0,
                        c.detection == "timeout", c.node_lost};
    bool replaced = false;
    for (auto& existing : m.categories)
      if (existing.name == c.name) existing = cat, replaced = true;
    if (!replaced) m.categories.push_back(cat);
  }
  if (!spec.categories.empty()) m.source += (m.source == "no failures" ? "" : "; ") + std::string("plan categories");
  if (spec.planned_per_node_day >= 0) m.planned_per_node_s = spec.planned_per_node_day / day_s;
  for (auto& c : m.categories) c.per_node_s *= spec.failure_rate_scale;
  m.planned_per_node_s *= spec.failure_rate_scale;
  m.weibull_shape = spec.distribution == "weibull" ? spec.weibull_shape : 1.0;
  return m;
}

CheckpointCosts checkpoint_costs(const Plan& plan) {
  const auto& ck = plan.reliability.checkpoint;
  CheckpointCosts c;
  double params = count_parameters(plan.model).total;
  c.bytes = params * (4 + plan.training.optimizer.state_bytes_per_param());
  c.bytes_per_node = c.bytes / plan.cluster.nodes;
  double per_gpu = c.bytes / static_cast<double>(plan.cluster.gpus());
  c.write_s = ck.write_s >= 0 ? ck.write_s : c.bytes_per_node / ck.write_bytes_per_s;
  double snapshot_s = per_gpu / ck.snapshot_bytes_per_s;  // GPUs copy to host memory in parallel
  double node_network = plan.cluster.nic_bytes_per_s() * plan.cluster.nics();
  if (ck.mode == "sync") {
    c.stall_s = c.write_s;
    c.persist_s = 0;
    c.load_s = c.bytes_per_node / ck.read_bytes_per_s;
  } else if (ck.mode == "async") {
    c.stall_s = snapshot_s;
    c.persist_s = c.write_s;
    c.load_s = c.bytes_per_node / ck.read_bytes_per_s;
  } else {  // in_memory: a copy in a peer node's host memory (Gemini-style); restarts read it back
    c.stall_s = snapshot_s;
    c.persist_s = c.bytes_per_node / node_network;
    c.load_s = c.bytes_per_node / node_network;
  }
  if (ck.load_s >= 0) c.load_s = ck.load_s;
  return c;
}

double young_interval_s(double delta_s, double mtbf_s) { return std::sqrt(2 * delta_s * mtbf_s); }

double daly_interval_s(double delta_s, double mtbf_s) {
  if (delta_s >= 2 * mtbf_s) return mtbf_s;
  double x = delta_s / (2 * mtbf_s);
  return std::sqrt(2 * delta_s * mtbf_s) * (1 + std::sqrt(x) / 3 + x / 9) - delta_s;
}

double meta_ettr(double nodes, double rate_per_node_s, double u0_s, double interval_s, double stall_s) {
  return (1 - nodes * rate_per_node_s * (u0_s + interval_s / 2)) / (1 + stall_s / interval_s);
}

double renewal_ettr(double lambda, double interval_s, double stall_s, double persist_s, double restart_s) {
  if (lambda <= 0) return interval_s / (interval_s + stall_s);
  // A checkpoint still being written when the next one is due holds training back (as the simulator does).
  double cycle = interval_s + stall_s + std::max(0.0, persist_s - interval_s);
  double q = std::exp(-lambda * cycle);
  // Expected work kept per failure: interval x P(a checkpoint j survives) summed over j.
  double kept = interval_s * std::exp(-lambda * persist_s) * q / (1 - q);
  // Expected wall time per failure: time to the failure, then a restart that failures start over.
  double wall = std::exp(lambda * restart_s) / lambda;
  return kept / wall;
}

}  // namespace ditwin::cost
