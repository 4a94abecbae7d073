// Time of one compute op on one device: a roofline whose compute side bends with shape
// (skinny GEMMs, short or narrow attention) and whose memory side runs at a fraction of HBM.
#pragma once
#include "cost_models/profile.hpp"
#include "model/program.hpp"

namespace ditwin::cost {

// Efficiency of a GEMM of this shape as a fraction of peak.
double gemm_efficiency(const DeviceProfile& p, double m, double n, double k);
// Seconds for one op of kind compute or optimizer; 0 for communication ops.
double compute_time_s(const Op& op, const DeviceProfile& p, Precision precision, bool flash_attention);

}  // namespace ditwin::cost
