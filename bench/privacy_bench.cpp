// DP-SGD's extra kernels on the CPU, at tiny-cpu's shapes (micro-batch 4, 64 tokens, hidden 128,
// MLP 512): per-sample norms by Gram matrices (ghost) and by materialized per-sample gradients,
// the Gaussian noise over tiny-cpu's 1.28 M parameters, and the PRV accountant. Run: ./bench/privacy_bench.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/gaussian_noise.hpp"
#include "kernels/matmul.hpp"
#include "kernels/per_sample_norm.hpp"
#include "kernels/threads.hpp"
#include "model/prv_accountant.hpp"

namespace {

void per_sample_norm(benchmark::State& state, bool ghost) {
  ditwin::kernels::set_num_threads(1);
  const int batch = 4, rows = 64, d_in = static_cast<int>(state.range(0)), d_out = static_cast<int>(state.range(1));
  std::mt19937 gen(1);
  std::normal_distribution<float> n;
  std::vector<float> a(static_cast<std::size_t>(batch) * rows * d_in), g(static_cast<std::size_t>(batch) * rows * d_out);
  for (auto& x : a) x = n(gen);
  for (auto& x : g) x = n(gen);
  std::vector<float> scratch(ditwin::kernels::per_sample_norm_scratch(rows, d_in, d_out, ghost));
  std::vector<double> sq(batch);
  for (auto _ : state) {
    ditwin::kernels::linear_per_sample_sq_norms(sq.data(), a.data(), g.data(), batch, rows, d_in, d_out, true, ghost,
                                                scratch.data());
    benchmark::DoNotOptimize(sq.data());
  }
  double flops = ghost ? 1.0 * rows * (rows + 1) * (d_in + d_out) : 2.0 * rows * d_in * d_out;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * batch, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
void BM_GhostNorm(benchmark::State& s) { per_sample_norm(s, true); }
void BM_MaterializedNorm(benchmark::State& s) { per_sample_norm(s, false); }
// qkv, proj, fc1, fc2 of tiny-cpu.
BENCHMARK(BM_GhostNorm)->Args({128, 384})->Args({128, 128})->Args({128, 512})->Args({512, 128});
BENCHMARK(BM_MaterializedNorm)->Args({128, 384})->Args({128, 128})->Args({128, 512})->Args({512, 128});

// The weight gradient the non-private backward forms for the same shape, for scale.
void BM_WeightGradient(benchmark::State& state) {
  ditwin::kernels::set_num_threads(1);
  const int rows = 4 * 64, d_in = static_cast<int>(state.range(0)), d_out = static_cast<int>(state.range(1));
  std::vector<float> a(static_cast<std::size_t>(rows) * d_in, 0.5f), g(static_cast<std::size_t>(rows) * d_out, 0.25f),
      w(static_cast<std::size_t>(d_in) * d_out, 0.0f), dw(w.size()), db(d_out);
  for (auto _ : state) {
    ditwin::kernels::matmul_backward(nullptr, dw.data(), db.data(), g.data(), a.data(), w.data(), rows, d_in, d_out);
    benchmark::DoNotOptimize(dw.data());
  }
}
BENCHMARK(BM_WeightGradient)->Args({128, 384})->Args({128, 128})->Args({128, 512})->Args({512, 128});

void BM_GaussianNoise(benchmark::State& state) {
  std::vector<float> x(static_cast<std::size_t>(state.range(0)), 0.0f);
  std::uint64_t step = 0;
  for (auto _ : state) {
    ditwin::kernels::add_gaussian_noise(x.data(), x.size(), 0, ++step, 0.01f);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_GaussianNoise)->Arg(640000);

// The PRV accountant (model/prv_accountant.cpp) for a run of `steps` steps: the mesh grows with
// sqrt(steps), so this is the cost of one epsilon (Opacus's reference case at 2,250 steps).
void BM_PrvEpsilon(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(ditwin::prv_epsilon(0.04, 1.5, static_cast<double>(state.range(0)), 1e-5));
  state.counters["mesh_points"] = static_cast<double>(ditwin::prv_epsilon(0.04, 1.5, static_cast<double>(state.range(0)), 1e-5).points);
}
BENCHMARK(BM_PrvEpsilon)->Arg(20)->Arg(2250)->Arg(20000)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
