// Differential privacy for DP-SGD: the RDP accountant of the Poisson-subsampled Gaussian
// mechanism (Mironov, Talwar & Zhang 2019), its conversion to (epsilon, delta), the noise for a
// target epsilon, and the cost rule for per-sample gradient norms that both the lowering and the
// executor follow. Plain C++, no dependencies; docs/privacy.md explains the choices.
#pragma once
#include <string>
#include <vector>

#include "model/plan.hpp"

namespace ditwin {

// Opacus's and TF-Privacy's default orders: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
std::vector<double> default_rdp_orders();

// Renyi DP of one step of the sampled Gaussian mechanism at order alpha > 1: sampling rate q in
// [0, 1], noise multiplier sigma (noise std / L2 sensitivity). Integer orders by the binomial
// expansion, fractional ones by the two convergent series; everything in log space.
double rdp_sampled_gaussian(double q, double sigma, double alpha);

enum class EpsilonConversion {
  improved,  // Balle et al. 2020, Theorem 21 (what Opacus' get_privacy_spent uses)
  classic,   // Mironov 2017, Proposition 3: eps = rdp + log(1/delta) / (alpha - 1)
};
const char* to_string(EpsilonConversion c);

struct PrivacySpent {
  double epsilon = 0;     // +inf when no order gives a finite bound (sigma 0); PRV: the upper bound
  double best_order = 0;  // RDP: the order that gave it (0 under PRV)
  // PRV only (model/prv_accountant.hpp): the discretised estimate, the lower bound, and the
  // epsilon and delta errors the mesh and domain allow.
  double estimate = 0, lower = 0, eps_error = 0, delta_error = 0;
};

// Which accountant turns (q, sigma, steps, delta) into epsilon: RDP (Mironov et al. 2019) or PRV
// (Gopi et al. 2021, tighter; Opacus's default). training.privacy.accountant, `--accountant`.
enum class Accountant { rdp, prv };
const char* to_string(Accountant a);
const char* describe(Accountant a);  // with its source, for reports
Accountant accountant_of(const PrivacySpec& spec);
// Epsilon after `steps` steps by the given accountant (the conversion matters for RDP only).
PrivacySpent privacy_spent(Accountant accountant, EpsilonConversion conversion, double q, double sigma, double steps,
                           double delta);

// The smallest epsilon over the orders for the composed RDP curve `rdp` (one value per order).
PrivacySpent epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                              EpsilonConversion conversion);

// A fixed (q, sigma) mechanism, whose per-step RDP curve is computed once; epsilon after any
// number of steps is then a pass over the orders (the executor asks after every step).
class RdpAccountant {
 public:
  RdpAccountant(double q, double sigma, std::vector<double> orders = default_rdp_orders());
  PrivacySpent spent(double steps, double delta, EpsilonConversion conversion) const;
  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp_per_step() const { return per_step_; }

 private:
  std::vector<double> orders_, per_step_;
};

// The smallest noise multiplier (to a relative 1e-4, rounded up) whose epsilon after `steps`
// steps is at most target_epsilon. Throws InputError when no noise reaches it.
double noise_for_epsilon(double target_epsilon, double q, double steps, double delta,
                         EpsilonConversion conversion, Accountant accountant = Accountant::rdp);

// A plan's privacy budget: what `ditwin privacy` prints.
struct PrivacyBudget {
  double sampling_rate = 0;     // q = expected batch (poisson; else global_batch) / dataset_size
  long long steps = 0;          // run.steps
  double epochs = 0;            // steps x q
  double noise_multiplier = 0;  // from the plan, or solved for target_epsilon
  bool solved_for_target = false;
  EpsilonConversion conversion = EpsilonConversion::improved;
  Accountant accountant = Accountant::rdp;
  PrivacySpent spent;                    // after all steps, by the plan's accountant
  PrivacySpent rdp;                      // RDP with the plan's conversion (equals spent under RDP)
  PrivacySpent spent_other_conversion;   // RDP with the other conversion, for reference
  struct EpochEpsilon {
    double epoch = 0;  // epochs done (the last one partial if any)
    double epsilon = 0;
  };
  // After epoch 1, 2, ...: every epoch under RDP; under PRV (each point a composition) at most 12,
  // evenly spaced, the last always included.
  std::vector<EpochEpsilon> per_epoch;
  // Poisson sampling into a fixed number of slots (global_batch): the chance a step draws more
  // examples than fit, and the delta that accounts for dropping them (plan's delta when 0).
  long long slots = 0;
  double overflow_probability = 0;
  double delta_with_overflow = 0;
};
// Throws InputError (naming training.privacy) when the plan has no privacy section enabled.
PrivacyBudget privacy_budget(const Plan& plan);
// P(Binomial(examples, q) > slots): the chance a Poisson draw overflows a step's slots.
double poisson_overflow_probability(long long examples, double q, long long slots);
// Examples a step expects (poisson: expected_batch; shuffle: global_batch) and the sampling rate
// q = that / dataset_size: the one rule the accountant, the executor and the audit share.
long long privacy_expected_batch(const Plan& plan);
double privacy_sampling_rate(const Plan& plan);
// Clip factors of a micro-batch from its per-sample squared norms `sq` held in a buffer scale of
// 1/scale: weight_b x min(1, C / ||g_b||), exactly 1 when the norm is within C (so an unbounded C
// changes nothing); `weights` empty means all 1. Throws std::runtime_error on a non-finite norm.
std::vector<float> clip_factors(const std::vector<double>& sq, double scale, double clip_norm,
                                const std::vector<float>& weights);
// DP-SGD under pipeline parallelism: a sample's squared gradient norm is a sum over the stages,
// all-reduced over the PP group once a stage has finished the micro-batch's backward. Stage s clips
// micro-batch mb (and forms its clipped weight gradients) after its own backward of micro-batch
// mb + lag, lag = s: in GPipe and 1F1B, stage 0 finishes mb's backward no later than stage s
// finishes that of mb + s, so the sum is there and the pipeline never waits for it. The price is
// memory: stage s keeps s more micro-batches' activations and output gradients (model/accounting).
// 0 without pipeline parallelism; micro-batches left at the end of the step are clipped then.
int privacy_clip_lag(const Plan& plan, int stage);
// The noise multiplier the plan trains with (solved for target_epsilon when that is set).
double resolved_noise_multiplier(const Plan& plan);
EpsilonConversion conversion_of(const PrivacySpec& spec);

// Per-sample gradient norm of a linear layer whose sample has T rows of d_in inputs and d_out
// outputs, from its inputs A (T x d_in) and output gradients G (T x d_out): the ghost norm
// ||A^T G||^2 = sum_{t,s} (a_t . a_s)(g_t . g_s) from the two T x T Gram matrices (symmetric rank-k
// updates, upper triangles), or the materialized T-row product A^T G and its squared sum, whichever
// costs fewer FLOPs. The executor and the lowering both follow this rule.
bool ghost_norm_is_cheaper(double tokens, double d_in, double d_out);
// FLOPs of one sample's norm by the cheaper method, bias included when `bias`.
double per_sample_norm_flops(double tokens, double d_in, double d_out, bool bias);

}  // namespace ditwin
