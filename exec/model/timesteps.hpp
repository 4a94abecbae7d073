// Rectified-flow timesteps: t in (0, 1) drawn by the plan's strategy (training.objective.timesteps).
// One function, used by every data source, so a sample's t is the same whatever feeds the model.
#pragma once
#include "exec/model/rng.hpp"
#include "model/plan.hpp"

namespace ditwin::exec {

// Throws InputError for a strategy the executor cannot draw from (plan parsing refuses these too;
// this guards an ObjectiveSpec built in code).
void check_timestep_strategy(const ObjectiveSpec& objective);
// α of the resolution-dependent shift: the plan's number, or image_size / base_resolution for "auto".
double timestep_shift(const ObjectiveSpec& objective, const ModelSpec& model);
// One draw from `rng`, shifted, then clamped to [1e-5, 1 - 1e-5] (t = 0 or 1 would make the target
// degenerate). uniform, mode and cosmap take one rng.uniform(), logit_normal one rng.normal().
float draw_timestep(const ObjectiveSpec& objective, const ModelSpec& model, Rng& rng);

}  // namespace ditwin::exec
