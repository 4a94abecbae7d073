// Roofline with efficiency curves per op class.
#include "cost_models/compute.hpp"

#include <algorithm>

namespace ditwin::cost {

double gemm_efficiency(const DeviceProfile& p, double m, double n, double k) {
  auto s = [](double d, double half) { return d / (d + half); };
  return p.gemm_efficiency * s(m, p.gemm_half_dim) * s(n, p.gemm_half_dim) * s(k, p.gemm_half_k);
}

double compute_time_s(const Op& op, const DeviceProfile& p, Precision precision, bool flash_attention) {
  if (op.kind != OpKind::compute && op.kind != OpKind::optimizer) return 0;
  double peak = p.peak_flops(precision) * p.sustained_compute_ratio;
  double efficiency = op.kind == OpKind::optimizer ? p.optimizer_efficiency : p.memory_efficiency;
  double memory_s = op.bytes / (p.hbm_bytes_per_s * efficiency);
  double math_s = 0;
  switch (op.compute) {
    case ComputeClass::gemm:
      if (op.flops <= 0) break;
      if (p.tables.has_gemm()) {  // measured on this device: interpolate, no curve
        math_s = measured_gemm_s(p.tables, op.m, op.k, op.n, op.phase == Phase::backward, op.flops);
        return math_s + p.kernel_overhead_s;
      }
      math_s = op.flops / (peak * gemm_efficiency(p, op.m, op.n, op.k));
      break;
    case ComputeClass::attention: {
      bool backward = op.phase == Phase::backward;
      double flops = op.flops;
      if (flash_attention) {
        // Causal kernels skip the masked half; flash backward recomputes QK^T (5 matmuls, not 4).
        if (op.causal) flops *= 0.5;
        if (backward) flops *= 1.25;
        double head = static_cast<double>(op.k), keys = static_cast<double>(op.n);
        // Short sequences and narrow heads leave the tensor cores idle (few tiles, short loops).
        double eff = p.attention_efficiency * keys / (keys + p.attention_half_tokens) *
                     head / (head + p.attention_half_head_dim);
        if (backward) eff *= p.attention_backward_ratio;
        math_s = flops / (peak * std::min(eff, 0.95));
      } else {
        // Unfused: batched QK^T and AV GEMMs plus softmax (and its backward) through HBM.
        double eff = gemm_efficiency(p, op.m, op.n, op.k);
        math_s = flops / (peak * eff);
        double scores = static_cast<double>(op.batch) * op.m * op.n;
        double elem = precision == Precision::fp32 ? 4 : 2;
        double softmax_bytes = scores * (4 * elem + 2);  // write scores, read, write probs+mask, read in AV
        memory_s += (backward ? 2 : 1) * softmax_bytes / (p.hbm_bytes_per_s * p.memory_efficiency);
        return math_s + memory_s + 4 * p.kernel_overhead_s;
      }
      break;
    }
    default: break;  // norms, elementwise, embeddings, loss, optimizer: memory-bound
  }
  return std::max(math_s, memory_s) + p.kernel_overhead_s;
}

}  // namespace ditwin::cost
