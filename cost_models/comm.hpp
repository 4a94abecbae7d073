// NCCL-style collective costs: bus-bandwidth factors as nccl-tests defines them, ring and tree
// latency terms, and a hierarchical (NVLink inside a node, NICs between nodes) bandwidth.
#pragma once
#include "cost_models/profile.hpp"
#include "model/program.hpp"

namespace ditwin::cost {

// busbw = algbw x this factor: all-reduce 2(n-1)/n; all-gather, reduce-scatter, all-to-all (n-1)/n;
// send/recv and broadcast 1.
double bus_factor(Collective c, int n);

// Where a group's ranks sit: n ranks, `per_node` of them on each node they span.
struct GroupShape {
  int n = 1;
  int per_node = 1;
  int nodes() const { return (n + per_node - 1) / per_node; }
};

// The shape of `rank`'s group of this kind in `program`, ranks numbered node by node
// (`devices_per_node` to a node): the simulator and the search's analytic tier both ask here.
GroupShape group_shape(const Program& program, GroupKind kind, long long rank, int devices_per_node);

// Bus bandwidth NCCL reaches for this group (bytes/s): NVLink inside one node; across nodes, each
// of the group's k GPUs on a node sends (k-1)/k of its ring volume over NVLink and 1/k through
// its own NIC (rings leave a node through every NIC), and the slower path sets the pace.
double bus_bandwidth(const GroupShape& g, const DeviceProfile& p);
// Latency part: the cheaper of ring (steps grow with n) and tree (with log n) algorithms.
double collective_latency_s(Collective c, const GroupShape& g, const DeviceProfile& p);
// Whole collective on an idle network: latency + bytes x bus_factor / bus bandwidth, or the
// profile's measured time where its tables cover this collective on this many ranks.
double collective_time_s(Collective c, double bytes, const GroupShape& g, const DeviceProfile& p);

// One collective op as the step simulator plays it when nothing else shares the links: on CPU
// ranks (`cpu_ranks`, a measured device) the collective's whole time, once; elsewhere the latency
// once per library call the op stands for (`calls`), then the bytes at the group's bus bandwidth
// (sim/step_sim.cpp: a latency delay, then the flows). The search's analytic tier times ops by it.
double idle_collective_time_s(Collective c, double bytes, const GroupShape& g, const DeviceProfile& p, double calls,
                              bool cpu_ranks);

}  // namespace ditwin::cost
