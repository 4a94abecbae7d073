// Rectified-flow timesteps: t in (0, 1) drawn by the plan's strategy (training.objective.timesteps).
// One function, used by every data source, so a sample's t is the same whatever feeds the model.
#pragma once
#include "exec/model/rng.hpp"
#include "model/plan.hpp"

namespace ditwin::exec {

// Throws InputError for a strategy the executor does not know.
void check_timestep_strategy(const ObjectiveSpec& objective);
// One draw from `rng`, clamped to [1e-5, 1 - 1e-5] (t = 0 or 1 would make the target degenerate).
float draw_timestep(const ObjectiveSpec& objective, const ModelSpec& model, Rng& rng);

}  // namespace ditwin::exec
