// Helpers for the executor's tests: seeded random tensors, a central-difference gradient check
// that compares whole gradients by norm (per-coordinate checks are noisy in fp32), and ranks run
// as threads.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <exception>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "exec/comm/communicator.hpp"
#include "exec/runtime.hpp"  // defines: check_plan
#include "model/errors.hpp"
#include "model/plan.hpp"

namespace ditwin::test {

// exec::check_plan's message for `base` changed by `change`, or "(accepted)".
inline std::string check_plan_refusal(const Plan& base, const std::function<void(Plan&)>& change) {
  Plan p = base;
  change(p);
  try {
    exec::check_plan(p);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(accepted)";
}

// Runs f(rank, communicator) on one thread per rank of `world` and joins them; rethrows the first
// failure.
inline void on_threads(std::vector<std::unique_ptr<exec::Communicator>>& world,
                       const std::function<void(int, exec::Communicator&)>& f) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(world.size());
  for (std::size_t r = 0; r < world.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        f(static_cast<int>(r), *world[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

inline std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// ||a − b|| / ||b||, over all entries.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Central differences of `loss` with respect to input[i] for each i in `coords` (all when empty),
// compared with `analytic` by norm-relative error. The analytic gradient must not be all zero, or
// the check would pass for a backward that does nothing.
inline void expect_gradient(std::vector<float>& input, const std::vector<float>& analytic,
                            const std::function<double()>& loss, const std::string& what, double tolerance = 1e-2,
                            float eps = 1e-3f, std::vector<std::size_t> coords = {}) {
  ASSERT_EQ(input.size(), analytic.size()) << what;
  if (coords.empty())
    for (std::size_t i = 0; i < input.size(); ++i) coords.push_back(i);
  std::vector<double> fd, an;
  for (std::size_t i : coords) {
    const float x = input[i];
    input[i] = x + eps;
    const double plus = loss();
    input[i] = x - eps;
    const double minus = loss();
    input[i] = x;
    fd.push_back((plus - minus) / (2.0 * eps));
    an.push_back(analytic[i]);
  }
  double norm = 0;
  for (double g : an) norm += g * g;
  EXPECT_GT(norm, 1e-12) << what << ": the analytic gradient is zero on every checked coordinate";
  EXPECT_LT(relative_error(an, fd), tolerance) << what;
}

}  // namespace ditwin::test
