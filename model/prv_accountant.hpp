// The PRV accountant (Gopi, Lee & Wutschitz 2021, "Numerical Composition of Differential
// Privacy"): epsilon of T steps of the Poisson-subsampled Gaussian mechanism from the distribution
// of its privacy loss, discretised on a mesh and composed by FFT, with a bound on the
// discretisation error. The construction (domain, mesh, mean-preserving discretisation, the upper
// estimate returned) follows Opacus's PRVAccountant so the two agree; docs/privacy.md has the
// formulas. Plain C++, no dependencies.
#pragma once
#include <cstddef>

namespace ditwin {

struct PrvEpsilon {
  double epsilon = 0;    // upper bound: the true epsilon of the mechanism is at most this
  double estimate = 0;   // the discretised composition's epsilon at delta itself
  double lower = 0;      // lower bound: the true epsilon is at least this
  double eps_error = 0;  // the epsilon error allowed by the mesh (epsilon = estimate-ish + eps_error)
  double delta_error = 0;  // the delta error allowed by truncating the domain
  double domain_half_width = 0;  // L: the privacy loss is followed on [-L, L]
  double mesh = 0;               // the mesh step
  std::size_t points = 0;        // mesh points
};

// Epsilon after `steps` steps at sampling rate q in (0, 1] and noise multiplier sigma, at `delta`.
// eps_error (Opacus's default 0.01) sets the mesh; delta_error defaults (when 0) to delta / 1000.
// sigma 0 gives +inf. Throws InputError when the mesh would need more than max_points points or
// delta is too small for double precision.
PrvEpsilon prv_epsilon(double q, double sigma, double steps, double delta, double eps_error = 0.01,
                       double delta_error = 0, std::size_t max_points = 200'000'000);

// The smallest noise multiplier (to a relative 1e-4, rounded up) whose PRV epsilon (upper bound)
// after `steps` steps is at most target_epsilon. Throws InputError when no noise reaches it.
double prv_noise_for_epsilon(double target_epsilon, double q, double steps, double delta, double eps_error = 0.01);

// The cumulative distribution of the privacy loss log(P(x)/Q(x)) of one step, x ~ P, with
// P = (1-q) N(0, sigma^2) + q N(1, sigma^2) and Q = N(0, sigma^2) (exposed for tests).
double prv_cdf(double q, double sigma, double t);

}  // namespace ditwin
