// The `dataset` subcommand: `dataset synth` writes a small dataset shaped for a plan's model (the
// format of docs/data.md), `dataset check` reads every example of a plan's dataset once.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>

namespace ditwin::cli {

// Adds the subcommand to `app`; returns a runner that executes it when parsed (or returns -1).
std::function<int()> add_dataset_command(CLI::App& app);

}  // namespace ditwin::cli
