// The `privacy` subcommand: a plan's DP-SGD budget from the RDP accountant (epsilon for the
// planned run and per epoch, or the noise multiplier solved for a target epsilon).
#pragma once
#include <CLI/CLI.hpp>

#include <functional>

namespace ditwin::cli {

// Adds the subcommand to `app`; returns a runner that executes it when parsed (or returns -1).
std::function<int()> add_privacy_command(CLI::App& app);

}  // namespace ditwin::cli
