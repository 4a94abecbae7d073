// One-run audit statistics: a binomial tail plus, for delta > 0, a windowed maximum (see the header).
#include "model/privacy_audit.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace ditwin {

double audit_p_value(long long m, long long r, long long v, double eps, double delta) {
  if (r < 0 || v < 0 || v > r || r > m)
    throw std::invalid_argument("audit_p_value: need 0 <= v <= r <= m, got m " + std::to_string(m) + ", r " +
                                std::to_string(r) + ", v " + std::to_string(v));
  if (v == 0) return 1.0;
  // p = e^eps / (1 + e^eps) in logs: log p = -log1p(e^-eps), log(1 - p) = -log1p(e^eps).
  const double log_p = -std::log1p(std::exp(-eps)), log_1p = -std::log1p(std::exp(eps));
  const double rd = static_cast<double>(r), lg_r = std::lgamma(rd + 1);
  auto pmf = [&](long long k) {
    double kd = static_cast<double>(k);
    return std::exp(lg_r - std::lgamma(kd + 1) - std::lgamma(rd - kd + 1) + kd * log_p + (rd - kd) * log_1p);
  };
  double tail = 0;
  for (long long k = v; k <= r; ++k) tail += pmf(k);
  if (delta <= 0) return std::min(1.0, tail);
  double window = 0, alpha = 0;
  for (long long i = 1; i <= v; ++i) {
    window += pmf(v - i);
    alpha = std::max(alpha, window / static_cast<double>(i));
  }
  return std::min(1.0, tail + 2 * static_cast<double>(m) * delta * alpha);
}

double audit_epsilon_lower_bound(long long m, long long r, long long v, double delta, double beta) {
  if (!(beta > 0 && beta < 1)) throw std::invalid_argument("audit_epsilon_lower_bound: beta must be in (0, 1)");
  auto rejects = [&](double eps) { return audit_p_value(m, r, v, eps, delta) < beta; };
  if (!rejects(0)) return 0;
  double lo = 0, hi = 1;
  while (rejects(hi)) {
    lo = hi;
    hi += 1;
    if (hi > 1000) return lo;  // far beyond any finite figure of interest
  }
  while (hi - lo > 1e-9) {
    double mid = 0.5 * (lo + hi);
    (rejects(mid) ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace ditwin
