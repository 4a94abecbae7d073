// The `execute`, `calibrate` and `compare` subcommands: real runs and their comparison with
// predictions. Registered on the CLI app by main.cpp.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>

namespace ditwin::cli {

// Adds the subcommands to `app`; returns a runner that executes whichever was parsed (or -1).
std::function<int()> add_exec_commands(CLI::App& app, int argc, char** argv);

}  // namespace ditwin::cli
