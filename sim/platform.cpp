// The simulated cluster.
//
//   fabric (star) ──uplink──┬── leaf 0 (star) ── nic-0-0 … nic-15-7      levels = 2
//                           ├── leaf 1 (star) ── nic-16-0 …
//                           └── …
//   node N (star, NVSwitch) ── nvlink-N-J ── gpu-N-J                     one zone per node
//   control (star, ideal)   ── ctl-R                                     rank actors
//
// Fat-tree: a leaf holds every NIC of `nodes_per_leaf` nodes. Rail-optimized: NIC k of those
// nodes hangs off leaf k of their group, so same-rail traffic never leaves its leaf. A leaf's
// uplink carries (NICs under it x NIC bandwidth) / oversubscription; the spine is not a limit.
#include "sim/platform.hpp"

#include <stdexcept>

#include "model/errors.hpp"

namespace ditwin::sim {

Platform::Platform(const Plan& plan, const cost::DeviceProfile& p, const std::set<long long>& nodes,
                   const std::set<long long>& actor_ranks)
    : devices_per_node_(plan.cluster.devices_per_node),
      nics_per_node_(plan.cluster.nics()),
      nodes_per_leaf_(plan.cluster.network.nodes_per_leaf),
      topology_(plan.cluster.network.topology) {
  const auto& net = plan.cluster.network;
  auto* root = sg4::create_star_zone("cluster");
  delay_ = root->create_host("delay", 1.0);
  delay_->set_core_count(1 << 30);

  // NVLink: every GPU's port into the NVSwitch, per direction.
  for (long long n : nodes) {
    auto* zone = sg4::create_star_zone("node-" + std::to_string(n));
    zone->set_parent(root);
    for (int j = 0; j < devices_per_node_; ++j) {
      std::string id = std::to_string(n) + "-" + std::to_string(j);
      auto* host = zone->create_host("gpu-" + id, gpu_speed);
      auto* link = zone->create_split_duplex_link("nvlink-" + id, p.nvlink_bytes_per_s * p.nvlink_efficiency)
                       ->set_latency(p.nvlink_latency_s)
                       ->seal();
      zone->add_route(host->get_netpoint(), nullptr, nullptr, nullptr,
                      {{link, sg4::LinkInRoute::Direction::UP}}, true);
      gpus_[n].push_back(host->seal());
    }
    zone->seal();
  }

  // The fabric.
  auto* fabric = sg4::create_star_zone("fabric");
  fabric->set_parent(root);
  double nic_bw = p.nic_bytes_per_s * p.network_efficiency;
  std::map<int, sg4::NetZone*> leaves;
  auto leaf_zone = [&](int leaf) -> sg4::NetZone* {
    if (net.levels == 1) return fabric;
    auto it = leaves.find(leaf);
    if (it != leaves.end()) return it->second;
    auto* zone = sg4::create_star_zone("leaf-" + std::to_string(leaf));
    zone->set_parent(fabric);
    auto* gw = zone->create_router("leaf-" + std::to_string(leaf) + "-switch");
    double nics_under = topology_ == Topology::fat_tree ? 1.0 * nodes_per_leaf_ * nics_per_node_ : nodes_per_leaf_;
    auto* uplink = fabric->create_split_duplex_link("uplink-" + std::to_string(leaf), nics_under * nic_bw / net.oversubscription)
                       ->set_latency(0)
                       ->seal();
    fabric->add_route(zone->get_netpoint(), nullptr, gw, nullptr, {{uplink, sg4::LinkInRoute::Direction::UP}}, true);
    leaves[leaf] = zone;
    return zone;
  };
  for (long long n : nodes) {
    for (int k = 0; k < nics_per_node_; ++k) {
      int leaf = topology_ == Topology::fat_tree ? static_cast<int>(n / nodes_per_leaf_)
                                                 : static_cast<int>((n / nodes_per_leaf_) * nics_per_node_ + k);
      auto* zone = leaf_zone(leaf);
      std::string id = std::to_string(n) + "-" + std::to_string(k);
      auto* host = zone->create_host("nic-" + id, 1.0);
      auto* link = zone->create_split_duplex_link("niclink-" + id, nic_bw)->set_latency(p.network_latency_s / 2)->seal();
      zone->add_route(host->get_netpoint(), nullptr, nullptr, nullptr, {{link, sg4::LinkInRoute::Direction::UP}}, true);
      nics_[n].push_back(host->seal());
    }
  }
  for (auto& [leaf, zone] : leaves) zone->seal();
  fabric->seal();

  // The control plane: rank actors signal each other here at no cost.
  auto* ctl = sg4::create_star_zone("control");
  ctl->set_parent(root);
  for (long long r : actor_ranks) {
    auto* host = ctl->create_host("ctl-" + std::to_string(r), 1.0);
    auto* link = ctl->create_link("ctl-" + std::to_string(r), 1e18)->set_latency(0)->seal();
    ctl->add_route(host->get_netpoint(), nullptr, nullptr, nullptr, {sg4::LinkInRoute(link)}, true);
    control_[r] = host->seal();
  }
  ctl->seal();
  root->seal();
}

int Platform::nic_index(long long rank) const {
  int local = static_cast<int>(rank % devices_per_node_);
  return static_cast<int>(1LL * local * nics_per_node_ / devices_per_node_);
}

int Platform::leaf_of(long long rank) const {
  long long n = node_of(rank);
  return topology_ == Topology::fat_tree ? static_cast<int>(n / nodes_per_leaf_)
                                         : static_cast<int>((n / nodes_per_leaf_) * nics_per_node_ + nic_index(rank));
}

sg4::Host* Platform::gpu(long long rank) const {
  auto it = gpus_.find(node_of(rank));
  if (it == gpus_.end()) throw std::logic_error("node of rank " + std::to_string(rank) + " was not instantiated");
  return it->second[rank % devices_per_node_];
}

sg4::Host* Platform::nic(long long rank) const {
  auto it = nics_.find(node_of(rank));
  if (it == nics_.end()) throw std::logic_error("node of rank " + std::to_string(rank) + " was not instantiated");
  return it->second[nic_index(rank)];
}

sg4::Host* Platform::control(long long rank) const { return control_.at(rank); }

}  // namespace ditwin::sim
