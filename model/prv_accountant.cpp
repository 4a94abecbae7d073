// The PRV accountant. One step's privacy loss Y = log(P(x)/Q(x)), x ~ P, for the Poisson-subsampled
// Gaussian (P = (1-q) N(0, s^2) + q N(1, s^2), Q = N(0, s^2)) has the closed-form CDF
//   F(t) = (1-q) Phi(s z + 1/(2s)) + q Phi(s z - 1/(2s)),  z = log((e^t - 1 + q) / q),  t > log(1-q).
// Following Gopi et al. 2021 (and Opacus, whose construction this mirrors step for step):
//   1. domain [-L, L] with L = max(eps_T, eps_1, eps_error) + 3, where eps_T is the RDP epsilon of
//      the whole run at delta_error / 4 and eps_1 that of one step at delta_error / (8 T);
//   2. mesh h = eps_error / sqrt(T/2 log(12/delta_error)), grid aligned on multiples of h with an
//      even number of points;
//   3. Y truncated to the domain, each grid point t_i given the mass of [t_i - h/2, t_i + h/2], and
//      the grid shifted so the discrete mean equals the truncated continuous mean;
//   4. the T-fold sum by one FFT (circular convolution; the wrap-around mass is what delta_error
//      covers), the grid re-aligned by the known shift;
//   5. delta(eps) = sum_{t_j > eps} p_j (1 - e^(eps - t_j)) solved for eps at delta -/+ delta_error,
//      +/- eps_error: an upper and a lower bound on the true epsilon.
#include "model/prv_accountant.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "model/errors.hpp"
#include "model/privacy.hpp"

namespace ditwin {

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
using cd = std::complex<double>;

// In-place iterative radix-2 FFT; n a power of two. sign -1 forward, +1 inverse (unscaled).
void fft_pow2(std::vector<cd>& a, int sign) {
  const std::size_t n = a.size();
  for (std::size_t i = 1, j = 0; i < n; ++i) {
    std::size_t bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) std::swap(a[i], a[j]);
  }
  for (std::size_t len = 2; len <= n; len <<= 1) {
    // Twiddles from exact angles (not by repeated multiplication) to keep the error at ~1e-16.
    const std::size_t half = len / 2;
    std::vector<cd> w(half);
    for (std::size_t k = 0; k < half; ++k) {
      double ang = sign * 2 * M_PI * static_cast<double>(k) / static_cast<double>(len);
      w[k] = cd(std::cos(ang), std::sin(ang));
    }
    for (std::size_t i = 0; i < n; i += len)
      for (std::size_t k = 0; k < half; ++k) {
        cd u = a[i + k], v = a[i + k + half] * w[k];
        a[i + k] = u + v;
        a[i + k + half] = u - v;
      }
  }
}

// DFT of any length by Bluestein's chirp-z: a circular convolution of power-of-two length.
// sign -1 forward, +1 inverse (unscaled).
std::vector<cd> dft(const std::vector<cd>& x, int sign) {
  const std::size_t n = x.size();
  if (n == 0) return {};
  if ((n & (n - 1)) == 0) {
    std::vector<cd> a = x;
    fft_pow2(a, sign);
    return a;
  }
  std::size_t m = 1;
  while (m < 2 * n - 1) m <<= 1;
  // chirp_k = exp(sign i pi k^2 / n), with k^2 taken mod 2n in integers so the angle stays exact.
  std::vector<cd> chirp(n);
  const std::uint64_t two_n = 2 * static_cast<std::uint64_t>(n);
  for (std::size_t k = 0; k < n; ++k) {
    std::uint64_t kk = (static_cast<std::uint64_t>(k) * k) % two_n;
    double ang = sign * M_PI * static_cast<double>(kk) / static_cast<double>(n);
    chirp[k] = cd(std::cos(ang), std::sin(ang));
  }
  std::vector<cd> a(m, cd(0, 0)), b(m, cd(0, 0));
  for (std::size_t k = 0; k < n; ++k) a[k] = x[k] * chirp[k];
  b[0] = std::conj(chirp[0]);
  for (std::size_t k = 1; k < n; ++k) b[k] = b[m - k] = std::conj(chirp[k]);
  fft_pow2(a, -1);
  fft_pow2(b, -1);
  for (std::size_t k = 0; k < m; ++k) a[k] *= b[k];
  fft_pow2(a, +1);
  std::vector<cd> out(n);
  const double scale = 1.0 / static_cast<double>(m);
  for (std::size_t k = 0; k < n; ++k) out[k] = a[k] * scale * chirp[k];
  return out;
}

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

// Adaptive Gauss-Kronrod (7-15) integration of f over [a, b] to an absolute tolerance.
double integrate(const std::function<double(double)>& f, double a, double b, double tol, int depth = 0) {
  static const double xk[8] = {0.991455371120812639, 0.949107912342758525, 0.864864423359769073, 0.741531185599394440,
                               0.586087235467691130, 0.405845151377397167, 0.207784955007898468, 0.0};
  static const double wk[8] = {0.022935322010529225, 0.063092092629978553, 0.104790010322250184, 0.140653259715525919,
                               0.169004726639267903, 0.190350578064785410, 0.204432940075298892, 0.209482141084727828};
  static const double wg[4] = {0.129484966168869693, 0.279705391489276668, 0.381830050505118945, 0.417959183673469388};
  double c = 0.5 * (a + b), h = 0.5 * (b - a);
  double fc = f(c), kron = wk[7] * fc, gauss = wg[3] * fc;
  for (int j = 0; j < 7; ++j) {
    double fs = f(c - h * xk[j]) + f(c + h * xk[j]);
    kron += wk[j] * fs;
    if (j % 2 == 1) gauss += wg[j / 2] * fs;
  }
  kron *= h;
  gauss *= h;
  // At least four levels: a wide interval whose nodes all miss where f bends would pass the test.
  // Rounding bounds what any split can reach: a relative 1e-14 of the piece.
  if ((depth >= 4 && std::abs(kron - gauss) <= std::max(tol, 1e-14 * std::abs(kron))) || depth >= 30) return kron;
  return integrate(f, a, c, tol / 2, depth + 1) + integrate(f, c, b, tol / 2, depth + 1);
}

struct Grid {
  double t_min = 0, dt = 0;
  std::size_t size = 0;
  double at(std::size_t i) const { return t_min + static_cast<double>(i) * dt; }
};

// Points on multiples of dt covering [lo, hi], an even number of them (the FFT composition's
// re-alignment assumes it).
Grid aligned_grid(double lo, double hi, double dt) {
  Grid g;
  double t_min = std::floor(lo / dt) * dt, t_max = std::ceil(hi / dt) * dt;
  g.size = static_cast<std::size_t>(std::llround((t_max - t_min) / dt)) + 1;
  if (g.size % 2 == 1) {
    ++g.size;
    t_max += dt;
  }
  g.t_min = t_min;
  g.dt = (t_max - t_min) / static_cast<double>(g.size - 1);
  return g;
}

}  // namespace

double prv_cdf(double q, double sigma, double t) {
  if (q < 1 && t <= std::log1p(-q)) return 0.0;
  double z = std::log1p(std::expm1(t) / q);  // log((e^t - 1 + q) / q)
  return (1 - q) * normal_cdf(sigma * z + 0.5 / sigma) + q * normal_cdf(sigma * z - 0.5 / sigma);
}

PrvEpsilon prv_epsilon(double q, double sigma, double steps, double delta, double eps_error, double delta_error,
                       std::size_t max_points) {
  if (!(q > 0 && q <= 1)) throw InputError("PRV accountant: the sampling rate must be in (0, 1], got " + std::to_string(q));
  if (!(steps >= 1) || std::floor(steps) != steps)
    throw InputError("PRV accountant: the step count must be a whole number >= 1, got " + std::to_string(steps));
  if (!(delta > 0 && delta < 1)) throw InputError("PRV accountant: delta must be in (0, 1), got " + std::to_string(delta));
  if (!(eps_error > 0)) throw InputError("PRV accountant: eps_error must be > 0");
  if (delta_error == 0) delta_error = delta / 1000;
  if (!(delta_error > 0 && delta_error < delta))
    throw InputError("PRV accountant: delta_error must be in (0, delta), got " + std::to_string(delta_error));
  PrvEpsilon out;
  out.eps_error = eps_error;
  out.delta_error = delta_error;
  if (!(sigma > 0)) {
    out.epsilon = out.estimate = out.lower = inf;
    return out;
  }
  // 1. The domain, from RDP bounds on the tails.
  RdpAccountant rdp(q, sigma);
  double L = rdp.spent(steps, delta_error / 4, EpsilonConversion::improved).epsilon;
  L = std::max(L, rdp.spent(1, delta_error / (8 * steps), EpsilonConversion::improved).epsilon);
  L = std::max(L, eps_error) + 3;
  // 2. The mesh.
  double mesh = eps_error / std::sqrt(steps / 2 * std::log(12 / delta_error));
  if (!(L / mesh < static_cast<double>(max_points) / 2))
    throw InputError("PRV accountant: " + std::to_string(static_cast<long long>(steps)) + " steps at eps_error " +
                     std::to_string(eps_error) + " need a mesh of " + std::to_string(2 * L / mesh) +
                     " points (limit " + std::to_string(max_points) + "); raise eps_error or use the RDP accountant");
  Grid grid = aligned_grid(-L, L, mesh);
  const std::size_t n = grid.size;
  out.domain_half_width = L;
  out.mesh = grid.dt;
  out.points = n;
  if (std::numeric_limits<double>::epsilon() * static_cast<double>(n) > delta - delta_error)
    throw InputError("PRV accountant: delta " + std::to_string(delta) + " is too small for a mesh of " + std::to_string(n) +
                     " points in double precision");
  // 3. Truncate, discretise, and keep the mean.
  const double t_lo = grid.at(0), t_hi = grid.at(n - 1);
  const double f_lo = prv_cdf(q, sigma, t_lo), mass = prv_cdf(q, sigma, t_hi) - f_lo;
  auto cdf = [&](double t) {
    if (t <= t_lo) return 0.0;
    if (t >= t_hi) return 1.0;
    return (prv_cdf(q, sigma, t) - f_lo) / mass;
  };
  std::vector<double> pmf(n);
  double prev = cdf(t_lo - grid.dt / 2);
  double mean_discrete = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double next = cdf(grid.at(i) + grid.dt / 2);
    pmf[i] = next - prev;
    prev = next;
    mean_discrete += grid.at(i) * pmf[i];
  }
  // E[Y] = t_hi - integral of F over the domain (by parts), split at +-1e-5 ... 1e-1 where F bends.
  // Also at log(1 - q), below which F is 0.
  std::vector<double> cuts = {t_lo, t_hi};
  for (double e : {-1e-1, -1e-2, -1e-3, -1e-4, -1e-5, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1}) cuts.push_back(e);
  if (q < 1 && std::log1p(-q) > t_lo) cuts.push_back(std::log1p(-q));
  std::sort(cuts.begin(), cuts.end());
  double integral = 0;
  for (std::size_t k = 0; k + 1 < cuts.size(); ++k) integral += integrate(cdf, cuts[k], cuts[k + 1], 1e-14);
  double mean_continuous = t_hi - integral;
  double shift = mean_continuous - mean_discrete;
  if (!(std::abs(shift) < grid.dt / 2))
    throw std::logic_error("PRV accountant: the discretisation moved the mean by " + std::to_string(shift) +
                           ", more than half the mesh");
  // 4. The T-fold composition: pmf^(*T) by FFT, a circular convolution on n points. The sum of T
  // grid indices i_1..i_T sits at T t_min + (sum i) dt + T shift; on the output grid (t_min +
  // T shift + j dt) that is j = sum i + (T - 1) t_min / dt, mod n.
  const long long T = static_cast<long long>(steps);
  std::vector<cd> spectrum(n);
  for (std::size_t i = 0; i < n; ++i) spectrum[i] = cd(pmf[i], 0);
  spectrum = dft(spectrum, -1);
  for (auto& c : spectrum) c = std::pow(c, static_cast<double>(T));
  spectrum = dft(spectrum, +1);
  const long long N = static_cast<long long>(n);
  long long offset = ((T - 1) % N) * (std::llround(grid.t_min / grid.dt) % N) % N;
  offset = ((offset % N) + N) % N;
  std::vector<double> composed(n);
  for (std::size_t c = 0; c < n; ++c) composed[(c + static_cast<std::size_t>(offset)) % n] = spectrum[c].real() / static_cast<double>(n);
  const double t0 = grid.t_min + static_cast<double>(T) * shift;
  // 5. delta(eps) on the grid: d1_i = sum_{j>=i} p_j, d2_i = sum_{j>=i} p_j e^(-t_j); delta at eps = t_i
  // is d1_i - e^(t_i) d2_i, and between t_(i-1) and t_i the equation d1_i - e^eps d2_i = delta is exact.
  std::vector<double> d1(n), d2(n), neg_delta(n);
  double s1 = 0, s2 = 0;
  for (std::size_t k = n; k-- > 0;) {
    double t = t0 + static_cast<double>(k) * grid.dt;
    s1 += composed[k];
    s2 += composed[k] * std::exp(-t);
    d1[k] = s1;
    d2[k] = s2;
    neg_delta[k] = std::exp(t) * s2 - s1;
  }
  auto solve = [&](double target) {
    auto it = std::lower_bound(neg_delta.begin(), neg_delta.end(), -target);
    std::size_t i = static_cast<std::size_t>(it - neg_delta.begin());
    if (i == 0)
      throw InputError("PRV accountant: delta " + std::to_string(target) + " is reached below the domain's lowest epsilon (" +
                       std::to_string(t0) + "): delta is too large");
    if (i == n) throw InputError("PRV accountant: delta " + std::to_string(target) + " is beyond the domain: delta is too small");
    return std::log((d1[i] - target) / d2[i]);
  };
  out.estimate = solve(delta);
  out.epsilon = solve(delta - delta_error) + eps_error;
  out.lower = solve(delta + delta_error) - eps_error;
  return out;
}

double prv_noise_for_epsilon(double target_epsilon, double q, double steps, double delta, double eps_error) {
  if (!(target_epsilon > 0)) throw InputError("PRV accountant: the target epsilon must be > 0");
  auto eps = [&](double s) { return prv_epsilon(q, s, steps, delta, eps_error).epsilon; };
  // Bracket from RDP's answer, which is nearly always the larger noise: small noise makes the
  // privacy loss wide and its mesh long, so the search stays away from it.
  double hi = noise_for_epsilon(target_epsilon, q, steps, delta, EpsilonConversion::improved);
  while (eps(hi) > target_epsilon) {
    hi *= 1.25;
    if (hi > 1e4)
      throw InputError("PRV accountant: no noise multiplier up to 1e4 reaches epsilon " + std::to_string(target_epsilon));
  }
  double lo = hi * 0.8;
  while (eps(lo) <= target_epsilon) {
    hi = lo;
    lo *= 0.8;
  }
  while ((hi - lo) > 1e-4 * hi) {
    double mid = 0.5 * (lo + hi);
    if (eps(mid) > target_epsilon) lo = mid;
    else hi = mid;
  }
  return hi;
}

}  // namespace ditwin
