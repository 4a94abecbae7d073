// Times every CUDA kernel family at DiT shapes (DiT-B/2 and DiT-XL/2 at 256 px: 256 tokens) and
// the long-sequence attention goal (sequence 4,096, head dim 128) with CUDA events: the median
// of 20 runs after 3 warm-ups, random inputs (never zeros), memory-bound kernels on arrays far
// larger than L2. Prints a table of TFLOP/s or GB/s against the device's measured peaks and
// writes the figures as JSON. Correctness is the gpu tests' job (ditwin_cuda_tests); this only
// times. Usage: cuda_kernels_bench [--json FILE] [--peak-tflops 745] [--peak-gbps 3014]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/adamw.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/matmul.hpp"

namespace kc = ditwin::kernels::cuda;
using kc::bf16;

namespace {

cudaStream_t stream;

double time_ms(const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t a, b;
  DITWIN_CUDA_CHECK(cudaEventCreate(&a));
  DITWIN_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < 20; ++i) {
    DITWIN_CUDA_CHECK(cudaEventRecord(a, stream));
    fn();
    DITWIN_CUDA_CHECK(cudaEventRecord(b, stream));
    DITWIN_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DITWIN_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Random values in ±[0.1, 1) (never zero), as T, generated on the device; freed at exit.
std::vector<void*> allocations;
template <typename T>
T* random_array(std::size_t n, unsigned seed) {
  T* p = nullptr;
  DITWIN_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  kc::fill_random<T>(p, n, seed, 0.1f, 1.0f, stream);
  DITWIN_CUDA_CHECK(cudaStreamSynchronize(stream));
  allocations.push_back(p);
  return p;
}

struct Row {
  std::string kernel, shape, unit;
  double ms, rate, peak_fraction;
};
std::vector<Row> rows;
double peak_tflops = 745, peak_gbps = 3014;  // H100 SXM measured here (docs/measurements)

void flops_row(const std::string& kernel, const std::string& shape, double flops, double ms) {
  const double tf = flops / (ms * 1e-3) / 1e12;
  rows.push_back({kernel, shape, "TFLOP/s", ms, tf, tf / peak_tflops});
  std::printf("%-40s %-34s %9.3f ms %8.1f TFLOP/s %5.0f%% of peak\n", kernel.c_str(), shape.c_str(), ms, tf,
              100 * tf / peak_tflops);
  std::fflush(stdout);
}
void bytes_row(const std::string& kernel, const std::string& shape, double bytes, double ms) {
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  rows.push_back({kernel, shape, "GB/s", ms, gbps, gbps / peak_gbps});
  std::printf("%-40s %-34s %9.3f ms %8.0f GB/s    %5.0f%% of peak\n", kernel.c_str(), shape.c_str(), ms, gbps,
              100 * gbps / peak_gbps);
  std::fflush(stdout);
}

void bench_attention(int batch, int heads, int tokens, int d) {
  const int ch = heads * d;
  const std::size_t nqkv = static_cast<std::size_t>(batch) * tokens * 3 * ch, nout = nqkv / 3;
  bf16* qkv = random_array<bf16>(nqkv, 1);
  bf16* out = random_array<bf16>(nout, 2);
  bf16* dout = random_array<bf16>(nout, 3);
  bf16* dqkv = random_array<bf16>(nqkv, 4);
  float* lse = random_array<float>(static_cast<std::size_t>(batch) * heads * tokens, 5);
  void* work = nullptr;
  DITWIN_CUDA_CHECK(cudaMalloc(&work, kc::attention_backward_workspace_bytes(batch, tokens, ch, heads)));
  allocations.push_back(work);
  const double flops = 4.0 * batch * heads * static_cast<double>(tokens) * tokens * d;
  char shape[96];
  std::snprintf(shape, sizeof shape, "b%d h%d s%d d%d", batch, heads, tokens, d);
  const double f = time_ms([&] { kc::attention_forward(out, lse, qkv, batch, tokens, ch, heads, stream); });
  const double b = time_ms([&] { kc::attention_backward(dqkv, dout, qkv, out, lse, work, batch, tokens, ch, heads, stream); });
  flops_row("attention_forward", shape, flops, f);
  flops_row("attention_backward (2.5x fwd FLOPs)", shape, 2.5 * flops, b);
  flops_row("attention fwd+bwd", shape, 3.5 * flops, f + b);
}

void bench_gemm(kc::Blas& blas, int n, int ic, int oc) {
  bf16* x = random_array<bf16>(static_cast<std::size_t>(n) * ic, 6);
  bf16* w = random_array<bf16>(static_cast<std::size_t>(oc) * ic, 7);
  bf16* b = random_array<bf16>(oc, 8);
  bf16* out = random_array<bf16>(static_cast<std::size_t>(n) * oc, 9);
  bf16* dx = random_array<bf16>(static_cast<std::size_t>(n) * ic, 10);
  float* dw = random_array<float>(static_cast<std::size_t>(oc) * ic, 11);
  float* db = random_array<float>(oc, 12);
  char shape[96];
  std::snprintf(shape, sizeof shape, "%dx%dx%d", n, ic, oc);
  const double flops = 2.0 * n * ic * oc;
  flops_row("matmul_forward (cuBLASLt, bias)", shape, flops,
            time_ms([&] { kc::matmul_forward<bf16>(blas, out, x, w, b, n, ic, oc, stream); }));
  flops_row("matmul_backward (dinp, dW fp32, dbias)", shape, 2 * flops,
            time_ms([&] { kc::matmul_backward<bf16>(blas, dx, dw, db, out, x, w, n, ic, oc, stream); }));
}

void bench_memory(int batch, int tokens, int h) {
  const int rows_n = batch * tokens;
  const std::size_t n = static_cast<std::size_t>(rows_n) * h;
  bf16* x = random_array<bf16>(n, 13);
  bf16* y = random_array<bf16>(n, 14);
  bf16* z = random_array<bf16>(n, 15);
  bf16* d = random_array<bf16>(n, 16);
  bf16* mod = random_array<bf16>(static_cast<std::size_t>(batch) * 6 * h, 17);
  float* stats = random_array<float>(2 * static_cast<std::size_t>(rows_n), 18);
  float* dmod = random_array<float>(static_cast<std::size_t>(batch) * 6 * h, 19);
  char shape[96];
  std::snprintf(shape, sizeof shape, "%d rows x %d", rows_n, h);
  const double e = 2.0 * n;  // bytes of one bf16 activation tensor
  bytes_row("layernorm_modulate_forward", shape, 2 * e, time_ms([&] {
              kc::layernorm_modulate_forward<bf16>(y, stats, stats + rows_n, x, mod, mod + h, batch, tokens, h, 6 * h,
                                                   1e-6f, stream);
            }));
  bytes_row("residual_layernorm_modulate_forward", shape, 4 * e, time_ms([&] {
              kc::residual_layernorm_modulate_forward<bf16>(z, y, stats, stats + rows_n, x, d, mod + 2 * h, mod + 3 * h,
                                                            mod + 4 * h, batch, tokens, h, 6 * h, 1e-6f, stream);
            }));
  bytes_row("layernorm_modulate_backward", shape, 4 * e, time_ms([&] {
              kc::layernorm_modulate_backward<bf16>(y, dmod, dmod + h, d, x, stats, stats + rows_n, mod + h, batch,
                                                    tokens, h, 6 * h, stream);
            }));
  bytes_row("gated_residual_forward", shape, 3 * e, time_ms([&] {
              kc::gated_residual_forward<bf16>(y, x, d, mod + 2 * h, batch, tokens, h, 6 * h, stream);
            }));
  bytes_row("gated_residual_backward", shape, 4 * e, time_ms([&] {
              kc::gated_residual_backward<bf16>(nullptr, y, dmod + 2 * h, d, x, mod + 2 * h, batch, tokens, h, 6 * h, stream);
            }));
  bytes_row("gelu_forward", shape, 2 * e, time_ms([&] { kc::gelu_forward<bf16>(y, x, n, stream); }));
  bytes_row("gelu_backward", shape, 4 * e, time_ms([&] { kc::gelu_backward<bf16>(y, x, d, n, stream); }));
  bytes_row("device copy (cudaMemcpyAsync)", shape, 2 * e, time_ms([&] {
              DITWIN_CUDA_CHECK(cudaMemcpyAsync(y, x, e, cudaMemcpyDeviceToDevice, stream));
            }));
}

void bench_adamw(std::size_t params) {
  float* p = random_array<float>(params, 20);
  float* g = random_array<float>(params, 21);
  float* m = random_array<float>(params, 22);
  float* v = random_array<float>(params, 23);
  kc::scale(v, 0.f, params, stream);  // second moments are non-negative
  bf16* h = random_array<bf16>(params, 24);
  // Four tensors of one launch, as a parameter group split in shards.
  const std::size_t q = params / 4;
  std::vector<kc::AdamWTensor> list;
  for (int i = 0; i < 4; ++i) list.push_back({p + i * q, g + i * q, m + i * q, v + i * q, h + i * q, i == 3 ? params - 3 * q : q});
  char shape[96];
  std::snprintf(shape, sizeof shape, "%zu params, 4 tensors", params);
  // Reads p, g, m, v (16 B), writes p, m, v (12 B) and the bf16 copy (2 B).
  bytes_row("adamw_update (multi-tensor)", shape, 30.0 * params, time_ms([&] {
              kc::adamw_update(list, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, 10, 1.0f, stream);
            }));
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--peak-tflops" && i + 1 < argc) peak_tflops = std::atof(argv[++i]);
    else if (a == "--peak-gbps" && i + 1 < argc) peak_gbps = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--json FILE] [--peak-tflops 745] [--peak-gbps 3014]\n", argv[0]);
      return 2;
    }
  }
  if (kc::device_count() == 0) {
    std::fprintf(stderr, "cuda_kernels_bench: no CUDA device here\n");
    return 1;
  }
  try {
    DITWIN_CUDA_CHECK(cudaStreamCreate(&stream));
    std::printf("%s; peaks: %.0f TFLOP/s bf16, %.0f GB/s\n", kc::device_description().c_str(), peak_tflops, peak_gbps);
    // Attention: the goal shape (seq 4096, head dim 128), DiT-B/2 (d 64) and DiT-XL/2 (d 72).
    bench_attention(4, 16, 4096, 128);
    bench_attention(32, 12, 256, 64);
    bench_attention(32, 16, 256, 72);
    bench_attention(8, 16, 1024, 72);
    kc::Blas blas;
    // DiT-B/2 at batch 32 (8192 tokens, hidden 768) and DiT-XL/2 (hidden 1152).
    for (auto [ic, oc] : {std::pair{768, 2304}, std::pair{768, 3072}, std::pair{3072, 768}, std::pair{1152, 3456},
                          std::pair{1152, 4608}, std::pair{4608, 1152}})
      bench_gemm(blas, 8192, ic, oc);
    // Memory-bound kernels far beyond L2: 256 samples x 256 tokens at DiT-XL/2's width.
    bench_memory(256, 256, 1152);
    bench_adamw(std::size_t{675} << 20 >> 4);  // ~44 M parameters per launch
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(stream));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_kernels_bench: %s\n", e.what());
    return 1;
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\"device\": \"" << kc::device_description() << "\", \"peak_tflops\": " << peak_tflops
        << ", \"peak_gbps\": " << peak_gbps << ", \"rows\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i)
      out << "  {\"kernel\": \"" << rows[i].kernel << "\", \"shape\": \"" << rows[i].shape << "\", \"ms\": " << rows[i].ms
          << ", \"rate\": " << rows[i].rate << ", \"unit\": \"" << rows[i].unit
          << "\", \"peak_fraction\": " << rows[i].peak_fraction << "}" << (i + 1 < rows.size() ? ",\n" : "\n");
    out << "]}\n";
  }
  for (void* p : allocations) cudaFree(p);
  return 0;
}
