// The timestep strategies of training.objective.timesteps.
#include "exec/model/timesteps.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "model/errors.hpp"

namespace ditwin::exec {

void check_timestep_strategy(const ObjectiveSpec& objective) {
  if (objective.timesteps != "logit_normal" && objective.timesteps != "uniform")
    throw InputError("training.objective.timesteps: unknown kind '" + objective.timesteps +
                     "' (logit_normal or uniform)");
}

float draw_timestep(const ObjectiveSpec& objective, const ModelSpec& model, Rng& rng) {
  (void)model;
  const double u = objective.timesteps == "uniform" ? rng.uniform()
                                                    : 1.0 / (1.0 + std::exp(-(objective.m + objective.s * rng.normal())));
  return static_cast<float>(std::min(std::max(u, 1e-5), 1.0 - 1e-5));
}

}  // namespace ditwin::exec
