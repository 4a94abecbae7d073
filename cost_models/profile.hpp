// Device and link constants the cost models run on: from a device preset plus ditwin's
// efficiency constants, or from a measured profile (`ditwin calibrate`, `--profile FILE`).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "cost_models/measured.hpp"
#include "model/plan.hpp"

namespace ditwin::cost {

struct DeviceProfile {
  std::string device;
  std::string source;  // "preset" or the profile file
  double peak_flops_bf16 = 0, peak_flops_fp8 = 0, peak_flops_fp32 = 0;
  double hbm_bytes_per_s = 0;
  // Fractions of peak that well-shaped kernels reach, and how shape erodes them.
  double gemm_efficiency = 0;       // large GEMMs
  double gemm_half_dim = 0;         // an output dimension (m or n) this small halves the efficiency
  double gemm_half_k = 0;           // an inner dimension (k) this small halves it
  double attention_efficiency = 0;  // fused (flash) attention forward
  double attention_half_tokens = 0;     // a sequence this short halves the attention efficiency
  double attention_half_head_dim = 0;   // a head this narrow halves it
  double attention_backward_ratio = 0;  // backward efficiency relative to forward
  double memory_efficiency = 0;     // memory-bound kernels, of HBM bandwidth
  double optimizer_efficiency = 0;  // the optimizer update, of HBM bandwidth
  double kernel_overhead_s = 0;     // fixed cost per op (launch, tail)
  // Sustained fraction of the microbenchmark rates above during long training runs (power- and
  // thermally-limited clocks); multiplies every compute op's math rate. Fitted: see profile.cpp.
  double sustained_compute_ratio = 1;
  // Interconnect.
  double nvlink_bytes_per_s = 0;    // per GPU per direction
  double nvlink_latency_s = 0;
  double nvlink_efficiency = 0;     // NCCL bus bandwidth over NVLink / link bandwidth
  double nic_bytes_per_s = 0;       // per NIC per direction
  double network_latency_s = 0;
  double network_efficiency = 0;    // NCCL bus bandwidth over the NIC / NIC bandwidth
  double collective_step_latency_s = 0;  // per algorithm step (NCCL protocol overhead)
  // Calibrated devices: measured GEMM and collective times that take precedence over the
  // curves above where they cover an op (empty for presets).
  MeasuredTables tables;

  double peak_flops(Precision p) const;
  nlohmann::json to_json() const;
};

// The constants for a plan's cluster: device preset figures plus ditwin's default efficiencies
// (docs/validation.md says where each comes from), or throws if the device must be measured.
DeviceProfile profile_for(const ClusterSpec& cluster);
// Reads a profile file; every key is required; errors name the file and key.
DeviceProfile load_profile(const std::string& path);
DeviceProfile profile_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace ditwin::cost
