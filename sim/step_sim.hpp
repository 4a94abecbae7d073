// Simulates one training step of a plan on SimGrid and returns the predicted report.
#pragma once
#include "cost_models/profile.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"
#include "model/report.hpp"

namespace ditwin::sim {

// Runs in a child process so that each simulation starts from SimGrid's pristine global state
// (a second engine in one process inherits the first one's clock); deterministic for a plan.
StepReport simulate_step(const Plan& plan, const Program& program, const cost::DeviceProfile& profile);

}  // namespace ditwin::sim
