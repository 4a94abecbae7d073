// The `search` subcommand (docs/search.md): the best layout for a plan's model on its cluster,
// the candidates split over MPI ranks when launched by mpirun or srun.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>

namespace ditwin::cli {

// Adds the subcommand to `app`; returns a runner that executes it when parsed (or returns -1).
std::function<int()> add_search_command(CLI::App& app);

}  // namespace ditwin::cli
