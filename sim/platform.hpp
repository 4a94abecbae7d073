// Builds the SimGrid platform of a plan's cluster: NVLink inside nodes, NICs on a fat-tree or
// rail-optimized fabric. Only the nodes that carry simulated traffic are instantiated.
#pragma once
#include <simgrid/s4u.hpp>

#include <map>
#include <set>
#include <vector>

#include "cost_models/profile.hpp"
#include "model/plan.hpp"

namespace ditwin::sim {

namespace sg4 = simgrid::s4u;

// Each GPU has two network endpoints: its NVLink port (host "gpu-N-J", which also runs the
// GPU's compute) and its NIC (host "nic-N-K"). Traffic inside a node uses the first, traffic
// between nodes the second, as NCCL does.
class Platform {
 public:
  Platform(const Plan& plan, const cost::DeviceProfile& profile, const std::set<long long>& nodes,
           const std::set<long long>& actor_ranks);

  sg4::Host* gpu(long long rank) const;
  sg4::Host* nic(long long rank) const;
  sg4::Host* control(long long rank) const;  // where rank actors live (an ideal control plane)
  sg4::Host* delay() const { return delay_; }  // runs pure waiting (latencies), never contended
  long long node_of(long long rank) const { return rank / devices_per_node_; }
  int leaf_of(long long rank) const;  // the leaf switch the rank's NIC hangs off
  static constexpr double gpu_speed = 1e12;  // compute ops run for time x this amount

 private:
  int devices_per_node_, nics_per_node_, nodes_per_leaf_;
  Topology topology_;
  std::map<long long, std::vector<sg4::Host*>> gpus_, nics_;
  std::map<long long, sg4::Host*> control_;
  sg4::Host* delay_ = nullptr;
  int nic_index(long long rank) const;
};

}  // namespace ditwin::sim
