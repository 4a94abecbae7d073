// Analytic collective model; the simulator moves the same volumes as flows on its links.
#include "cost_models/comm.hpp"

#include <algorithm>
#include <cmath>

namespace ditwin::cost {

double bus_factor(Collective c, int n) {
  if (n <= 1) return 0;
  switch (c) {
    case Collective::all_reduce: return 2.0 * (n - 1) / n;
    case Collective::all_gather:
    case Collective::reduce_scatter:
    case Collective::all_to_all: return 1.0 * (n - 1) / n;
    case Collective::send:
    case Collective::recv: return 1;
    case Collective::none: return 0;
  }
  return 0;
}

GroupShape group_shape(const Program& program, GroupKind kind, long long rank, int devices_per_node) {
  auto members = program.group_members(kind, rank);
  GroupShape shape;
  shape.n = static_cast<int>(members.size());
  long long node = rank / devices_per_node;
  shape.per_node = static_cast<int>(
      std::count_if(members.begin(), members.end(), [&](long long m) { return m / devices_per_node == node; }));
  shape.per_node = std::max(shape.per_node, 1);
  return shape;
}

double bus_bandwidth(const GroupShape& g, const DeviceProfile& p) {
  double nvlink = p.nvlink_bytes_per_s * p.nvlink_efficiency;
  if (g.nodes() <= 1) return nvlink;
  double nic = p.nic_bytes_per_s * p.network_efficiency;
  // Hierarchical rings: each GPU moves (k-1)/k of its volume over NVLink and 1/k through its
  // NIC at the same time; the slower of the two sets the pace.
  double k = g.per_node;
  double seconds_per_byte = std::max((k - 1) / k / nvlink, 1 / k / nic);
  return 1 / seconds_per_byte;
}

double collective_latency_s(Collective c, const GroupShape& g, const DeviceProfile& p) {
  if (g.n <= 1) return 0;
  double hop = g.nodes() > 1 ? p.network_latency_s : p.nvlink_latency_s;
  double step = hop + p.collective_step_latency_s;
  double ring_steps = c == Collective::all_reduce ? 2.0 * (g.n - 1) : 1.0 * (g.n - 1);
  double tree_steps = c == Collective::all_reduce ? 2.0 * std::ceil(std::log2(g.n)) : std::ceil(std::log2(g.n));
  if (c == Collective::send || c == Collective::recv) ring_steps = tree_steps = 1;
  return step * std::min(ring_steps, tree_steps);
}

double collective_time_s(Collective c, double bytes, const GroupShape& g, const DeviceProfile& p) {
  if (g.n <= 1 && c != Collective::send && c != Collective::recv) return 0;
  double measured = measured_collective_s(p.tables, c, g.n, bytes);
  if (measured >= 0) return measured;
  return collective_latency_s(c, g, p) + bytes * bus_factor(c, std::max(g.n, 2)) / bus_bandwidth(g, p);
}

double idle_collective_time_s(Collective c, double bytes, const GroupShape& g, const DeviceProfile& p, double calls,
                              bool cpu_ranks) {
  if (cpu_ranks) return collective_time_s(c, bytes, g, p);
  if (g.n <= 1 && c != Collective::send && c != Collective::recv) return 0;
  return collective_latency_s(c, g, p) * std::max(1.0, calls) + bytes * bus_factor(c, std::max(g.n, 2)) / bus_bandwidth(g, p);
}

}  // namespace ditwin::cost
