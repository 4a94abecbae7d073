// The timestep strategies of training.objective.timesteps (SD3, Esser et al. 2024, §3.1 and
// §5.3.2), in this code base's convention z_t = (1 - t)·x0 + t·noise.
#include "exec/model/timesteps.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "model/errors.hpp"

namespace ditwin::exec {
namespace {

constexpr double pi = 3.14159265358979323846;
const std::string path = "training.objective.timesteps.";

}  // namespace

void check_timestep_strategy(const ObjectiveSpec& objective) {
  switch (objective.timesteps) {
    case TimestepKind::uniform:
    case TimestepKind::cosmap: break;
    case TimestepKind::logit_normal:
      if (!(objective.s > 0) || !std::isfinite(objective.s) || !std::isfinite(objective.m))
        throw InputError(path + "s: must be > 0 (and m finite)");
      break;
    case TimestepKind::mode:
      if (!(objective.mode_scale >= mode_scale_min && objective.mode_scale <= mode_scale_max))
        throw InputError(path + "scale: must be in [-1, 2/(pi - 2)] (outside it f_mode is not monotone)");
      break;
    default: throw InputError(path + "kind: unknown kind " + std::to_string(static_cast<int>(objective.timesteps)));
  }
  if (!objective.shift_auto && !(objective.shift > 0 && std::isfinite(objective.shift)))
    throw InputError(path + "shift: must be a number > 0 or \"auto\"");
  if (objective.shift_auto && objective.base_resolution < 1)
    throw InputError(path + "base_resolution: must be >= 1");
}

double timestep_shift(const ObjectiveSpec& objective, const ModelSpec& model) {
  if (!objective.shift_auto) return objective.shift;
  if (model.image_size <= 0) throw InputError(path + "shift: \"auto\" needs model.image_size");
  // sqrt(m / n) with m, n the pixel counts of the square image and of the base resolution.
  const double m = static_cast<double>(model.image_size) * model.image_size;
  const double n = static_cast<double>(objective.base_resolution) * objective.base_resolution;
  return std::sqrt(m / n);
}

float draw_timestep(const ObjectiveSpec& objective, const ModelSpec& model, Rng& rng) {
  double t = 0;
  switch (objective.timesteps) {
    case TimestepKind::uniform: t = rng.uniform(); break;
    case TimestepKind::logit_normal:
      t = 1.0 / (1.0 + std::exp(-(objective.m + objective.s * rng.normal())));
      break;
    case TimestepKind::mode: {  // SD3 eq. 20: decreasing from f(0) = 1 to f(1) = 0
      const double u = rng.uniform(), c = std::cos(pi / 2 * u);
      t = 1.0 - u - objective.mode_scale * (c * c - 1.0 + u);
      break;
    }
    case TimestepKind::cosmap: {  // SD3 eq. 21
      const double u = rng.uniform();
      t = 1.0 - 1.0 / (std::tan(pi / 2 * u) + 1.0);
      break;
    }
  }
  // SD3 eq. 23. Skipped at α = 1 so unshifted draws stay exactly what they were.
  const double alpha = timestep_shift(objective, model);
  if (alpha != 1.0) t = alpha * t / (1.0 + (alpha - 1.0) * t);
  return static_cast<float>(std::min(std::max(t, 1e-5), 1.0 - 1e-5));
}

}  // namespace ditwin::exec
