// The RDP accountant for DP-SGD. Formulas: Mironov, Talwar & Zhang, "Renyi Differential Privacy
// of the Sampled Gaussian Mechanism" (2019), Sections 3.2 (integer orders) and 3.3 (fractional
// orders); conversions: Mironov 2017 Prop. 3 (classic), Balle et al. 2020 Thm. 21 (improved).
// Sums of terms of either sign are kept as two log-space accumulators so nothing overflows.
#include "model/privacy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "model/errors.hpp"
#include "model/prv_accountant.hpp"

namespace ditwin {

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow.
double log_add(double a, double b) {
  if (a == -inf) return b;
  if (b == -inf) return a;
  double hi = std::max(a, b), lo = std::min(a, b);
  return hi + std::log1p(std::exp(lo - hi));
}

// A sum of signed terms given as (sign, log|term|): positive and negative parts apart.
struct SignedLogSum {
  double pos = -inf, neg = -inf;
  void add(bool negative, double log_magnitude) {
    if (negative) neg = log_add(neg, log_magnitude);
    else pos = log_add(pos, log_magnitude);
  }
  double largest() const { return std::max(pos, neg); }
  // log of the sum; the caller knows it is positive.
  double log() const {
    if (neg == -inf) return pos;
    if (!(pos > neg)) throw std::logic_error("RDP accountant: a sum that must be positive came out <= 0");
    return pos + std::log1p(-std::exp(neg - pos));
  }
};

// log(erfc(x)), accurate where erfc underflows (x large): the asymptotic expansion
// erfc(x) = exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6) + ...).
double log_erfc(double x) {
  if (x < 25) return std::log(std::erfc(x));
  double r = 1 / (x * x);
  return -x * x - std::log(x) - 0.5 * std::log(M_PI) + std::log1p(-0.5 * r + 0.75 * r * r - 1.875 * r * r * r);
}

bool is_integer(double a) { return std::floor(a) == a; }

// log A_alpha for integer alpha: sum_k C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2-k)/(2 sigma^2)).
double log_a_integer(double q, double sigma, int alpha) {
  double log_q = std::log(q), log_1q = std::log1p(-q);
  double total = -inf;
  double log_binom = 0;  // log C(alpha, k), updated as k grows
  for (int k = 0; k <= alpha; ++k) {
    if (k > 0) log_binom += std::log(static_cast<double>(alpha - k + 1)) - std::log(static_cast<double>(k));
    double term = log_binom + k * log_q + (alpha - k) * log_1q + (1.0 * k * k - k) / (2 * sigma * sigma);
    total = log_add(total, term);
  }
  return total;
}

// log A_alpha for fractional alpha: the two series of Section 3.3 with z0 = sigma^2 log(1/q - 1) + 1/2,
//   A1 = sum_i C(alpha,i) (1-q)^(alpha-i) q^i     exp((i^2-i)/(2s^2)) erfc((i - z0)/(sqrt2 s)) / 2
//   A2 = sum_i C(alpha,i) (1-q)^i     q^(alpha-i) exp((j^2-j)/(2s^2)) erfc((z0 - j)/(sqrt2 s)) / 2, j = alpha-i
// C(alpha, i) changes sign once i exceeds alpha + 1; both series converge.
double log_a_fractional(double q, double sigma, double alpha) {
  double log_q = std::log(q), log_1q = std::log1p(-q);
  double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  double s2 = 2 * sigma * sigma, root2s = std::sqrt(2.0) * sigma;
  SignedLogSum sum;
  double log_binom = 0;  // log |C(alpha, i)|
  bool negative = false;
  for (long i = 0;; ++i) {
    if (i > 0) {
      double factor = alpha - static_cast<double>(i) + 1;
      if (factor < 0) negative = !negative;
      log_binom += std::log(std::fabs(factor)) - std::log(static_cast<double>(i));
    }
    double di = static_cast<double>(i), j = alpha - di;
    double t1 = log_binom + di * log_q + j * log_1q + (di * di - di) / s2 + std::log(0.5) + log_erfc((di - z0) / root2s);
    double t2 = log_binom + j * log_q + di * log_1q + (j * j - j) / s2 + std::log(0.5) + log_erfc((z0 - j) / root2s);
    sum.add(negative, t1);
    sum.add(negative, t2);
    // Past alpha and z0 the terms only shrink; stop once they no longer touch a double.
    if (di > alpha + 1 && di > z0 && std::max(t1, t2) < sum.largest() - 40) break;
    if (i > 10'000'000) throw std::logic_error("RDP accountant: fractional-order series did not converge");
  }
  return sum.log();
}

}  // namespace

std::vector<double> default_rdp_orders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

double rdp_sampled_gaussian(double q, double sigma, double alpha) {
  if (!(alpha > 1)) throw std::invalid_argument("RDP order must be > 1");
  if (!(q >= 0 && q <= 1)) throw std::invalid_argument("sampling rate must be in [0, 1]");
  if (q == 0) return 0;
  if (!(sigma > 0)) return inf;
  if (q == 1) return alpha / (2 * sigma * sigma);  // the Gaussian mechanism itself
  double log_a = is_integer(alpha) ? log_a_integer(q, sigma, static_cast<int>(alpha)) : log_a_fractional(q, sigma, alpha);
  return std::max(0.0, log_a / (alpha - 1));
}

const char* to_string(EpsilonConversion c) { return c == EpsilonConversion::improved ? "improved" : "classic"; }

PrivacySpent epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                              EpsilonConversion conversion) {
  if (orders.size() != rdp.size()) throw std::invalid_argument("epsilon_from_rdp: one RDP value per order");
  if (!(delta > 0 && delta < 1)) throw std::invalid_argument("delta must be in (0, 1)");
  PrivacySpent best{inf, orders.empty() ? 0 : orders.front()};
  for (std::size_t i = 0; i < orders.size(); ++i) {
    double a = orders[i];
    if (!std::isfinite(rdp[i])) continue;
    double eps = conversion == EpsilonConversion::classic
                     ? rdp[i] - std::log(delta) / (a - 1)
                     : rdp[i] + std::log1p(-1 / a) - (std::log(delta) + std::log(a)) / (a - 1);
    if (std::isnan(eps)) continue;
    if (eps < best.epsilon) best = {eps, a};
  }
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

RdpAccountant::RdpAccountant(double q, double sigma, std::vector<double> orders) : orders_(std::move(orders)) {
  per_step_.reserve(orders_.size());
  for (double a : orders_) per_step_.push_back(rdp_sampled_gaussian(q, sigma, a));
}

PrivacySpent RdpAccountant::spent(double steps, double delta, EpsilonConversion conversion) const {
  if (steps <= 0) return {0, orders_.empty() ? 0 : orders_.front()};
  std::vector<double> total(per_step_.size());
  for (std::size_t i = 0; i < total.size(); ++i) total[i] = per_step_[i] * steps;  // RDP composes additively
  return epsilon_from_rdp(orders_, total, delta, conversion);
}

const char* to_string(Accountant a) { return a == Accountant::prv ? "prv" : "rdp"; }
const char* describe(Accountant a) {
  return a == Accountant::prv ? "prv, privacy random variable composed by FFT (Gopi, Lee & Wutschitz 2021)"
                              : "rdp, Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019)";
}
Accountant accountant_of(const PrivacySpec& spec) { return spec.accountant == "prv" ? Accountant::prv : Accountant::rdp; }

PrivacySpent privacy_spent(Accountant accountant, EpsilonConversion conversion, double q, double sigma, double steps,
                           double delta) {
  if (accountant == Accountant::rdp || steps <= 0) return RdpAccountant(q, sigma).spent(steps, delta, conversion);
  PrvEpsilon e = prv_epsilon(q, sigma, steps, delta);
  PrivacySpent s;
  s.epsilon = e.epsilon;
  s.estimate = e.estimate;
  s.lower = e.lower;
  s.eps_error = e.eps_error;
  s.delta_error = e.delta_error;
  return s;
}

double noise_for_epsilon(double target_epsilon, double q, double steps, double delta, EpsilonConversion conversion,
                         Accountant accountant) {
  if (!(target_epsilon > 0)) throw InputError("training.privacy.target_epsilon: must be > 0");
  if (accountant == Accountant::prv) return prv_noise_for_epsilon(target_epsilon, q, steps, delta);
  auto eps = [&](double sigma) { return RdpAccountant(q, sigma).spent(steps, delta, conversion).epsilon; };
  double lo = 0, hi = 1;
  while (eps(hi) > target_epsilon) {
    lo = hi;
    hi *= 2;
    if (hi > 1e6)
      throw InputError("training.privacy.target_epsilon: " + std::to_string(target_epsilon) +
                       " is out of reach even with noise multiplier 1e6 (raise it, or lower the steps or the sampling rate)");
  }
  while ((hi - lo) > 1e-4 * hi) {
    double mid = 0.5 * (lo + hi);
    (eps(mid) > target_epsilon ? lo : hi) = mid;
  }
  return hi;
}

EpsilonConversion conversion_of(const PrivacySpec& spec) {
  return spec.conversion == "classic" ? EpsilonConversion::classic : EpsilonConversion::improved;
}

namespace {
void require_privacy(const Plan& plan) {
  if (!plan.training.privacy.enabled)
    throw InputError("training.privacy: this plan trains without DP-SGD (add a \"privacy\" section, or set \"enabled\": true)");
}
double sampling_rate(const Plan& plan) { return privacy_sampling_rate(plan); }
}  // namespace

long long privacy_expected_batch(const Plan& plan) {
  const auto& p = plan.training.privacy;
  return p.sampling == "poisson" && p.expected_batch > 0 ? p.expected_batch : plan.training.global_batch;
}
double privacy_sampling_rate(const Plan& plan) {
  return static_cast<double>(privacy_expected_batch(plan)) / static_cast<double>(plan.training.privacy.dataset_size);
}

std::vector<float> clip_factors(const std::vector<double>& sq, double scale, double clip_norm,
                                const std::vector<float>& weights) {
  std::vector<float> c(sq.size());
  for (std::size_t b = 0; b < sq.size(); ++b) {
    const double norm = std::sqrt(sq[b]) * scale;
    if (!std::isfinite(norm))
      throw std::runtime_error("DP-SGD: sample " + std::to_string(b) + " of a micro-batch has a non-finite gradient norm");
    c[b] = norm <= clip_norm ? 1.0f : static_cast<float>(clip_norm / norm);
    if (!weights.empty()) c[b] *= weights.at(b);
  }
  return c;
}

double poisson_overflow_probability(long long examples, double q, long long slots) {
  if (slots >= examples || q <= 0) return 0;
  if (q >= 1) return 1;
  // P(Bin(n, q) > slots): the terms fall geometrically past the mode, so the sum stops early.
  const double n = static_cast<double>(examples), log_q = std::log(q), log_1q = std::log1p(-q);
  auto log_term = [&](double k) {
    return std::lgamma(n + 1) - std::lgamma(k + 1) - std::lgamma(n - k + 1) + k * log_q + (n - k) * log_1q;
  };
  double mode = std::floor((n + 1) * q);
  if (static_cast<double>(slots) < mode) {  // the lower tail is the short side: 1 - P(X <= slots)
    double low = -inf;
    for (double k = static_cast<double>(slots); k >= 0; --k) {
      double t = log_term(k);
      low = log_add(low, t);
      if (t < low - 40) break;
    }
    return -std::expm1(low);
  }
  double total = -inf;
  for (double k = static_cast<double>(slots) + 1; k <= n; ++k) {
    double t = log_term(k);
    total = log_add(total, t);
    if (t < total - 40) break;
  }
  return std::exp(total);
}

int privacy_clip_lag(const Plan& plan, int stage) {
  if (plan.parallelism.pp <= 1) return 0;
  return std::max(0, std::min(stage, plan.parallelism.pp - 1));
}

double resolved_noise_multiplier(const Plan& plan) {
  require_privacy(plan);
  const auto& p = plan.training.privacy;
  if (p.target_epsilon > 0)
    return noise_for_epsilon(p.target_epsilon, sampling_rate(plan), static_cast<double>(plan.run.steps), p.delta,
                             conversion_of(p), accountant_of(p));
  return p.noise_multiplier;
}

PrivacyBudget privacy_budget(const Plan& plan) {
  require_privacy(plan);
  const auto& p = plan.training.privacy;
  PrivacyBudget b;
  b.sampling_rate = sampling_rate(plan);
  b.steps = plan.run.steps;
  b.conversion = conversion_of(p);
  b.noise_multiplier = resolved_noise_multiplier(plan);
  b.solved_for_target = p.target_epsilon > 0;
  // An epoch is the whole batches that fit the dataset, as a loader dropping the last partial one.
  long long per_step = privacy_expected_batch(plan);
  long long steps_per_epoch = std::max<long long>(1, p.dataset_size / std::max<long long>(1, per_step));
  b.epochs = static_cast<double>(b.steps) / static_cast<double>(steps_per_epoch);
  b.accountant = accountant_of(p);
  RdpAccountant accountant(b.sampling_rate, b.noise_multiplier);
  b.rdp = accountant.spent(static_cast<double>(b.steps), p.delta, b.conversion);
  b.spent = b.accountant == Accountant::rdp
                ? b.rdp
                : privacy_spent(b.accountant, b.conversion, b.sampling_rate, b.noise_multiplier, static_cast<double>(b.steps), p.delta);
  b.spent_other_conversion = accountant.spent(
      static_cast<double>(b.steps), p.delta,
      b.conversion == EpsilonConversion::improved ? EpsilonConversion::classic : EpsilonConversion::improved);
  if (p.sampling == "poisson") {
    // Overflow: more examples drawn than the step's slots; the excess is dropped. On a coupling
    // of the truncated and untruncated runs the two differ only when some step overflows, on D or
    // on a neighbour D' (one example more), so each run's delta grows by (1 + e^eps) T p, with p
    // the per-step overflow probability at dataset_size + 1 examples.
    b.slots = plan.training.global_batch;
    b.overflow_probability = poisson_overflow_probability(p.dataset_size + 1, b.sampling_rate, b.slots);
    b.delta_with_overflow =
        p.delta + (1 + std::exp(std::min(b.spent.epsilon, 700.0))) * static_cast<double>(b.steps) * b.overflow_probability;
  } else {
    b.delta_with_overflow = p.delta;
  }
  long long epochs = (b.steps + steps_per_epoch - 1) / steps_per_epoch;
  long long stride = b.accountant == Accountant::rdp || epochs <= 12 ? 1 : (epochs + 10) / 11;
  for (long long e = 1; e <= epochs; ++e) {
    if (e % stride != 0 && e != epochs) continue;
    long long s = std::min(e * steps_per_epoch, b.steps);
    double eps = s == b.steps ? b.spent.epsilon
                 : b.accountant == Accountant::rdp
                     ? accountant.spent(static_cast<double>(s), p.delta, b.conversion).epsilon
                     : privacy_spent(b.accountant, b.conversion, b.sampling_rate, b.noise_multiplier, static_cast<double>(s), p.delta).epsilon;
    b.per_epoch.push_back({static_cast<double>(s) / static_cast<double>(steps_per_epoch), eps});
  }
  return b;
}

bool ghost_norm_is_cheaper(double tokens, double d_in, double d_out) {
  // Gram matrices: T(T+1)(d_in + d_out) (two symmetric rank-k updates) + T^2 (their dot product);
  // materialized: 2 T d_in d_out (the product) + 2 d_in d_out (its squared sum).
  double ghost = tokens * (tokens + 1) * (d_in + d_out) + tokens * tokens;
  double materialized = 2 * tokens * d_in * d_out + 2 * d_in * d_out;
  return ghost < materialized;
}

double per_sample_norm_flops(double tokens, double d_in, double d_out, bool bias) {
  double flops;
  if (tokens <= 1) flops = 2 * (d_in + d_out);  // one row: ||a||^2 ||g||^2
  else if (ghost_norm_is_cheaper(tokens, d_in, d_out)) flops = tokens * (tokens + 1) * (d_in + d_out) + tokens * tokens;
  else flops = 2 * tokens * d_in * d_out + 2 * d_in * d_out;
  if (bias) flops += tokens * d_out + 2 * d_out;  // sum of the rows, then its square
  return flops;
}

}  // namespace ditwin
