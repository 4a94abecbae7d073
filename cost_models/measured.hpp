// Measured kernel and collective times from `ditwin calibrate`, carried in a profile and used by
// the cost models wherever they cover an op: GEMM rates interpolated over a grid of shapes,
// collective times over message sizes. Devices calibrated this way need no shape curves for
// the ops the tables cover; the fitted curves remain for everything else.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/program.hpp"

namespace ditwin::cost {

// One GEMM shape, (m x k) * (k x n) as the Program names them, timed net of the per-call
// overhead: forward 2mkn FLOPs, backward (input and weight gradients) 4mkn.
struct GemmSample {
  double m = 0, k = 0, n = 0, forward_s = 0, backward_s = 0;
};
// One collective call on `ranks` ranks: `bytes` is the full buffer (the Program's op.bytes).
struct CollectiveSample {
  double bytes = 0, seconds = 0;
};

struct MeasuredTables {
  std::vector<double> ms, ks, ns;   // the GEMM grid's axes, ascending
  std::vector<GemmSample> gemm;     // every (m, k, n) of the grid, m slowest
  int collective_ranks = 0;
  std::map<Collective, std::vector<CollectiveSample>> collectives;  // ascending bytes
  std::vector<CollectiveSample> p2p;  // one pipeline transfer (send to completed recv), ascending bytes
  bool has_gemm() const { return !gemm.empty(); }
  bool empty() const { return gemm.empty() && collectives.empty() && p2p.empty(); }
};

// Seconds of a GEMM of `flops` with this shape: the rate interpolated linearly in log(rate)
// over log(m), log(k), log(n), clamped to the grid's edges (larger shapes run at the edge's rate).
double measured_gemm_s(const MeasuredTables& t, double m, double k, double n, bool backward, double flops);
// Seconds of one collective call of `bytes` on `ranks` ranks, or a negative number when the
// tables do not cover this collective and rank count. Log-log interpolation between sizes;
// beyond the ends, the end's rate.
double measured_collective_s(const MeasuredTables& t, Collective c, int ranks, double bytes);

// Seconds of one point-to-point transfer of `bytes`, or a negative number without a p2p table.
double measured_p2p_s(const MeasuredTables& t, double bytes);

// JSON: {"gemm": [{"m","k","n","forward_s","backward_s"}...],
//        "collectives": {"ranks": R, "all_reduce": [{"bytes","seconds"}...], ...},
//        "p2p": [{"bytes","seconds"}...]}.
// Throws InputError naming `where` and the entry when the data is malformed or the grid incomplete.
MeasuredTables measured_tables_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json to_json(const MeasuredTables& t);

}  // namespace ditwin::cost
