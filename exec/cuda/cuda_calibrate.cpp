// `calibrate --backend cuda`'s compute side (no NCCL, no MPI): cuBLASLt GEMMs, flash attention,
// memory-bound kernels, AdamW, the smallest kernel; the cost model's constants fitted to them.
#include <algorithm>
#include <cmath>
#include <vector>

#include "exec/calibrate/calibrate.hpp"
#include "exec/cuda/cuda_util.hpp"
#include "exec/cuda_exec.hpp"
#include "kernels/cuda/adamw.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/matmul.hpp"

namespace ditwin::exec {

namespace kc = ditwin::kernels::cuda;
using kc::bf16;
using namespace cuda_util;

bool cuda_built() { return true; }
int cuda_devices() { return kc::device_count(); }

nlohmann::json calibrate_cuda_compute(const CalibrationOptions&) {
  using nlohmann::json;
  select_device(0);
  Streams st;
  const cudaStream_t s = st.compute;
  kc::Blas blas;
  json points = json::array();
  json gemm_table = json::array();  // the grid the simulator interpolates (cost_models/measured.hpp)
  // GEMMs (bf16, fp32 accumulate, bias epilogue), forward and the two backward products.
  struct Gemm { double m, n, k, flops, seconds; };
  std::vector<Gemm> gemms;
  for (int rows : {256, 1024, 4096, 16384})
    for (int ic : {256, 1152, 4608})
      for (int oc : {256, 1152, 4608}) {
        const std::size_t nx = static_cast<std::size_t>(rows) * ic, nw = static_cast<std::size_t>(oc) * ic;
        bf16* x = random_device_array<bf16>(nx, 1, s);
        bf16* wt = random_device_array<bf16>(nw, 2, s);
        bf16* b = random_device_array<bf16>(oc, 3, s);
        bf16* out = random_device_array<bf16>(static_cast<std::size_t>(rows) * oc, 4, s);
        bf16* dx = random_device_array<bf16>(nx, 5, s);
        float* dw = random_device_array<float>(nw, 6, s);
        const double f = time_device([&] { kc::matmul_forward<bf16>(blas, out, x, wt, b, rows, ic, oc, s); }, s);
        const double g = time_device([&] { kc::matmul_backward<bf16>(blas, dx, dw, nullptr, out, x, wt, rows, ic, oc, s); }, s);
        for (void* p : std::initializer_list<void*>{x, wt, b, out, dx, dw}) cudaFree(p);
        gemms.push_back({static_cast<double>(rows), static_cast<double>(oc), static_cast<double>(ic), 2.0 * rows * ic * oc, f});
        gemms.push_back({static_cast<double>(rows), static_cast<double>(oc), static_cast<double>(ic), 4.0 * rows * ic * oc, g});
        points.push_back({{"kind", "gemm"}, {"rows", rows}, {"in", ic}, {"out", oc}, {"forward_s", f}, {"backward_s", g},
                          {"forward_tflops", 2.0 * rows * ic * oc / f / 1e12}});
      }
  // The smallest kernel: launch and tail.
  float* one = random_device_array<float>(256, 7, s);
  const double overhead = time_device([&] { kc::scale(one, 1.0f, 256, s); }, s, 50);
  cudaFree(one);
  // The Program's GEMM ops name rows m, inner k, outputs n; times net of the per-call overhead.
  for (std::size_t i = 0; i + 1 < gemms.size(); i += 2)
    gemm_table.push_back({{"m", gemms[i].m}, {"k", gemms[i].k}, {"n", gemms[i].n},
                          {"forward_s", std::max(gemms[i].seconds - overhead, 1e-9)},
                          {"backward_s", std::max(gemms[i + 1].seconds - overhead, 1e-9)}});
  // rate = peak · Π d/(d + half), least squares on log time (as the CPU calibration).
  double best_half = 0, best_half_k = 0, best_peak = 0, best_err = 1e300;
  for (double half = 0; half <= 2048; half += 16)
    for (double half_k = 0; half_k <= 2048; half_k += 16) {
      std::vector<double> logs;
      for (const auto& g : gemms)
        logs.push_back(std::log(g.flops / std::max(g.seconds - overhead, 1e-9) /
                                (shape_factor(g.m, half) * shape_factor(g.n, half) * shape_factor(g.k, half_k))));
      double mean = 0, err = 0;
      for (double l : logs) mean += l;
      mean /= logs.size();
      for (double l : logs) err += (l - mean) * (l - mean);
      if (err < best_err) { best_err = err; best_half = half; best_half_k = half_k; best_peak = std::exp(mean); }
    }
  // Flash attention: eff = attention_efficiency · S/(S + half_tokens) · d/(d + half_head_dim),
  // forward; backward (1.25x the forward's FLOPs, recomputing QKᵀ) at attention_backward_ratio.
  struct Attn { double tokens, head, fwd_eff, bwd_eff; };
  std::vector<Attn> attn;
  for (int tokens : {256, 1024, 4096})
    for (int head : {64, 72, 128}) {
      const int heads = 16, ch = heads * head, batch = std::max(1, 16384 / tokens);
      const std::size_t nqkv = static_cast<std::size_t>(batch) * tokens * 3 * ch, nout = nqkv / 3;
      bf16* qkv = random_device_array<bf16>(nqkv, 8, s);
      bf16* out = random_device_array<bf16>(nout, 9, s);
      bf16* dout = random_device_array<bf16>(nout, 10, s);
      bf16* dqkv = random_device_array<bf16>(nqkv, 11, s);
      float* lse = random_device_array<float>(static_cast<std::size_t>(batch) * heads * tokens, 12, s);
      void* work = nullptr;
      DITWIN_CUDA_CHECK(cudaMalloc(&work, kc::attention_backward_workspace_bytes(batch, tokens, ch, heads)));
      const double f = time_device([&] { kc::attention_forward(out, lse, qkv, batch, tokens, ch, heads, s); }, s);
      const double b = time_device(
          [&] { kc::attention_backward(dqkv, dout, qkv, out, lse, work, batch, tokens, ch, heads, s); }, s);
      for (void* p : std::initializer_list<void*>{qkv, out, dout, dqkv, lse, work}) cudaFree(p);
      const double flops = 4.0 * batch * heads * tokens * static_cast<double>(tokens) * head;
      attn.push_back({static_cast<double>(tokens), static_cast<double>(head), flops / f / best_peak,
                      1.25 * flops / b / best_peak});
      points.push_back({{"kind", "attention"}, {"batch", batch}, {"heads", heads}, {"tokens", tokens}, {"head_dim", head},
                        {"forward_s", f}, {"backward_s", b}, {"forward_tflops", flops / f / 1e12},
                        {"backward_tflops", 2.5 * flops / b / 1e12}});
    }
  double best_ht = 0, best_hd = 0, best_ae = 0, best_aerr = 1e300;
  for (double ht = 0; ht <= 4096; ht += 32)
    for (double hd = 0; hd <= 256; hd += 4) {
      std::vector<double> logs;
      for (const auto& a : attn) logs.push_back(std::log(a.fwd_eff / (shape_factor(a.tokens, ht) * shape_factor(a.head, hd))));
      double mean = 0, err = 0;
      for (double l : logs) mean += l;
      mean /= logs.size();
      for (double l : logs) err += (l - mean) * (l - mean);
      if (err < best_aerr) { best_aerr = err; best_ht = ht; best_hd = hd; best_ae = std::exp(mean); }
    }
  double ratio_log = 0;
  for (const auto& a : attn) ratio_log += std::log(a.bwd_eff / a.fwd_eff);
  const double backward_ratio = std::exp(ratio_log / attn.size());
  // Memory-bound kernels at DiT-XL/2 sizes (256 tokens × batch 32, hidden 1152), with the bytes
  // the Program charges them; and a device-to-device copy for the HBM ceiling.
  const int batch = 32, tokens = 256, h = 1152, rows = batch * tokens;
  const std::size_t n = static_cast<std::size_t>(rows) * h;
  bf16* x = random_device_array<bf16>(4 * n, 13, s);
  bf16* y = random_device_array<bf16>(4 * n, 14, s);
  bf16* d = random_device_array<bf16>(4 * n, 15, s);
  bf16* mod = random_device_array<bf16>(static_cast<std::size_t>(batch) * 6 * h, 16, s);
  float* stats = random_device_array<float>(2 * rows, 17, s);
  float* dmod = random_device_array<float>(static_cast<std::size_t>(batch) * 6 * h, 18, s);
  json mem = json::array();
  std::vector<double> bw_logs;
  auto memory_point = [&](const char* kind, double bytes, double seconds) {
    bw_logs.push_back(std::log(bytes / seconds));
    mem.push_back({{"kind", kind}, {"bytes", bytes}, {"seconds", seconds}, {"bytes_per_s", bytes / seconds}});
  };
  memory_point("gelu_forward", 2.0 * 2 * 4 * n, time_device([&] { kc::gelu_forward<bf16>(y, x, 4 * n, s); }, s));
  memory_point("gelu_backward", 3.0 * 2 * 4 * n + 2.0 * 4 * n, time_device([&] { kc::gelu_backward<bf16>(y, x, d, 4 * n, s); }, s));
  memory_point("layernorm_modulate_forward", 2.0 * 2 * n, time_device([&] {
                 kc::layernorm_modulate_forward<bf16>(y, stats, stats + rows, x, mod, mod + h, batch, tokens, h, 6 * h, 1e-6f, s);
               }, s));
  memory_point("layernorm_modulate_backward", 4.0 * 2 * n, time_device([&] {
                 kc::layernorm_modulate_backward<bf16>(y, dmod, dmod + h, d, x, stats, stats + rows, mod + h, batch, tokens,
                                                       h, 6 * h, s);
               }, s));
  memory_point("gated_residual_forward", 3.0 * 2 * n, time_device([&] {
                 kc::gated_residual_forward<bf16>(y, x, d, mod + 2 * h, batch, tokens, h, 6 * h, s);
               }, s));
  memory_point("residual_layernorm_modulate_forward", 4.0 * 2 * n, time_device([&] {
                 kc::residual_layernorm_modulate_forward<bf16>(y, y + n, stats, stats + rows, x, d, mod + 2 * h, mod + 3 * h,
                                                               mod + 4 * h, batch, tokens, h, 6 * h, 1e-6f, s);
               }, s));
  const double copy_s = time_device([&] {
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(y, x, 4 * n * sizeof(bf16), cudaMemcpyDeviceToDevice, s));
  }, s);
  const double copy_bw = 2.0 * 4 * n * sizeof(bf16) / copy_s;
  for (void* p : std::initializer_list<void*>{x, y, d, mod, stats, dmod}) cudaFree(p);
  double kernels_bw = 0;
  for (double l : bw_logs) kernels_bw += l;
  kernels_bw = std::exp(kernels_bw / bw_logs.size());
  // AdamW over 64 M parameters (fp32 p, g, m, v read; p, m, v and the bf16 copy written).
  const std::size_t np = 64u << 20;
  float* pa = random_device_array<float>(np, 19, s);
  float* ga = random_device_array<float>(np, 20, s);
  float* ma = random_device_array<float>(np, 21, s);
  float* va = random_device_array<float>(np, 22, s);
  kc::scale(va, 0.0f, np, s);  // v ≥ 0
  bf16* ha = random_device_array<bf16>(np, 23, s);
  const double adam_s = time_device([&] {
    kc::adamw_update({kc::AdamWTensor{pa, ga, ma, va, ha, np}}, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.f, 1, 1.f, s);
  }, s);
  for (void* p : std::initializer_list<void*>{pa, ga, ma, va, ha}) cudaFree(p);
  const double adam_bw = 30.0 * np / adam_s;
  return {{"device", kc::device_description()},
          {"peak_flops_bf16", best_peak}, {"gemm_half_dim", best_half}, {"gemm_half_k", best_half_k},
          {"attention_efficiency", std::min(best_ae, 1.0)}, {"attention_half_tokens", best_ht},
          {"attention_half_head_dim", best_hd}, {"attention_backward_ratio", backward_ratio},
          {"hbm_bytes_per_s", copy_bw}, {"memory_bytes_per_s", kernels_bw}, {"optimizer_bytes_per_s", adam_bw},
          {"kernel_overhead_s", overhead}, {"gemm_table", gemm_table}, {"points", points}, {"memory", mem}};
}

nlohmann::json make_cuda_profile(const nlohmann::json& c, const nlohmann::json& m) {
  const double hbm = c["hbm_bytes_per_s"].get<double>();
  return finish_measured_profile(
      {{"device", c["device"]},
       {"peak_flops_bf16", c["peak_flops_bf16"]},
       {"peak_flops_fp8", 0.0},
       // The executor's fp32 GEMMs are the conditioning path's tiny ones: not a peak worth fitting.
       {"peak_flops_fp32", c["peak_flops_bf16"].get<double>() / 16},
       {"hbm_bytes_per_s", hbm},
       {"gemm_efficiency", 1.0},
       {"gemm_half_dim", c["gemm_half_dim"]},
       {"gemm_half_k", c["gemm_half_k"]},
       {"attention_efficiency", c["attention_efficiency"]},
       {"attention_half_tokens", c["attention_half_tokens"]},
       {"attention_half_head_dim", c["attention_half_head_dim"]},
       {"attention_backward_ratio", c["attention_backward_ratio"]},
       {"memory_efficiency", std::min(1.0, c["memory_bytes_per_s"].get<double>() / hbm)},
       {"optimizer_efficiency", std::min(1.0, c["optimizer_bytes_per_s"].get<double>() / hbm)},
       {"kernel_overhead_s", c["kernel_overhead_s"]}},
      c, m);
}

}  // namespace ditwin::exec
