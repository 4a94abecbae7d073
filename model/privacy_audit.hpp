// The statistics of a one-run privacy audit (Steinke, Nasr & Jagielski 2023, "Privacy auditing
// with one (1) training run", Corollary 5.4 / Appendix D): m canaries, each included with
// probability 1/2; the auditor guesses "in" or "out" for r of them and is right v times. If the
// training is (eps, delta)-DP, P[v or more right] <= P[Bin(r, p) >= v] + 2 m delta alpha with
// p = e^eps / (1 + e^eps) and alpha = max_i P[v-i <= Bin(r, p) <= v-1] / i. The empirical lower
// bound on eps at confidence 1 - beta is the largest eps that this p-value still rejects.
#pragma once

namespace ditwin {

// The p-value of "the training is (eps, delta)-DP" after v right of r guesses on m canaries.
double audit_p_value(long long m, long long r, long long v, double eps, double delta);

// The largest eps with audit_p_value < beta (0 when none): with probability at least 1 - beta an
// (eps, delta)-DP training would not have produced this many right guesses. Bisection to 1e-9.
double audit_epsilon_lower_bound(long long m, long long r, long long v, double delta, double beta);

}  // namespace ditwin
