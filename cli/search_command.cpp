// `ditwin search PLAN [--gpus N] [--objective throughput|goodput] [--space SPACE.json] [--top K]
// [--report FILE] [--best-plan FILE] [--pareto FILE.png]`. Under mpirun (or srun) every rank takes
// every R-th candidate; rank 0 gathers the tallies, the ranks share the SimGrid tier, rank 0
// writes the results. One rank alone needs no launcher.
#include "cli/search_command.hpp"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "model/errors.hpp"
#include "model/report.hpp"
#include "search/search.hpp"
#ifdef DITWIN_HAVE_PARETO_PNG
#include "search/pareto_png.hpp"
#endif

namespace ditwin::cli {

namespace {

struct SearchArgs {
  std::string plan, report, best_plan, pareto;
  double max_memory_gb = default_program_memory_bytes / 1e9;
  search::Options options;
};

// The MPI world when a launcher started this process (mpirun, srun with PMI/PMIx); otherwise one
// rank and no MPI at all.
class World {
 public:
  World() {
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
      if (std::getenv(var)) launched_ = true;
    if (!launched_) return;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~World() {
    if (!launched_) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Every rank's string, on rank 0 (empty elsewhere).
  std::vector<std::string> gather(const std::string& mine) const {
    if (size_ == 1) return {mine};
    int n = static_cast<int>(mine.size());
    std::vector<int> sizes(size_), offsets(size_);
    MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    int total = 0;
    for (int r = 0; r < size_; ++r) offsets[r] = total, total += sizes[r];
    std::string all(rank_ == 0 ? total : 0, '\0');
    MPI_Gatherv(mine.data(), n, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
    std::vector<std::string> out;
    if (rank_ == 0)
      for (int r = 0; r < size_; ++r) out.push_back(all.substr(offsets[r], sizes[r]));
    return out;
  }
  // Rank 0's string, on every rank.
  std::string broadcast(std::string s) const {
    if (size_ == 1) return s;
    long long n = static_cast<long long>(s.size());
    MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    s.resize(n);
    MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
    return s;
  }
  // A failure on one rank: the others are waiting in a collective, so the job ends here.
  [[noreturn]] void abort(int code) const {
    if (launched_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

 private:
  bool launched_ = false;
  int rank_ = 0, size_ = 1;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A progress bar on a terminal (rank 0 only); nothing when stderr is a file or a pipe.
class Progress {
 public:
  explicit Progress(bool on) : on_(on && isatty(2)) {}
  void show(const char* what, double done, double total) {
    if (!on_ || total <= 0) return;
    int width = 30, filled = static_cast<int>(width * done / total);
    std::fprintf(stderr, "\r%-14s [%-*s] %3d%%  %.0f/%.0f", what, width, std::string(filled, '#').c_str(),
                 static_cast<int>(100 * done / total), done, total);
    if (done >= total) std::fprintf(stderr, "\r%*s\r", 80, "");
    std::fflush(stderr);
  }

 private:
  bool on_;
};

int run_search(const SearchArgs& a) {
  World world;
  const bool root = world.rank() == 0;
  std::unique_ptr<search::Search> s;
  try {
    if (root) {
      require_writable_output(a.report, "--report");
      require_writable_output(a.best_plan, "--best-plan");
      require_writable_output(a.pareto, "--pareto");
    }
#ifndef DITWIN_HAVE_PARETO_PNG
    if (!a.pareto.empty())
      throw InputError("--pareto: this ditwin was built without Qt 6 (the GUI), which draws the plot; the report's "
                       "\"pareto\" section holds the same points");
#endif
    search::Options options = a.options;
    options.max_memory_bytes = a.max_memory_gb * 1e9;
    s = std::make_unique<search::Search>(a.plan, options);
  } catch (const std::exception&) {
    // Every rank reads the same inputs and fails the same way: rank 0 says why.
    if (root) throw;
    return 2;
  }
  Progress progress(root);
  if (root)
    std::cout << "searching " << s->indices() << " settings of " << s->base().name << " on " << s->base().cluster.gpus()
              << " GPUs" << (world.size() > 1 ? " over " + std::to_string(world.size()) + " MPI ranks" : std::string()) << "\n"
              << std::flush;

  auto t0 = std::chrono::steady_clock::now();
  search::Tally mine = s->analytic(world.rank(), world.size(), [&](std::uint64_t done, std::uint64_t total) {
    progress.show("analytic tier", static_cast<double>(done), static_cast<double>(total));
  });
  auto parts = world.gather(search::to_json(mine).dump());
  std::string merged_text;
  if (root) {
    std::vector<search::Tally> tallies;
    for (const auto& p : parts) tallies.push_back(search::tally_from_json(nlohmann::json::parse(p)));
    merged_text = search::to_json(search::merge(tallies, static_cast<std::size_t>(a.options.top))).dump();
  }
  search::Tally merged = search::tally_from_json(nlohmann::json::parse(world.broadcast(merged_text)));
  double analytic_s = seconds_since(t0);
  if (merged.feasible == 0) {
    if (!root) return 2;
    search::require_feasible(merged, a.plan);
  }

  auto t1 = std::chrono::steady_clock::now();
  std::vector<nlohmann::json> simulated;
  nlohmann::json written;
  try {
    simulated = s->simulate(merged, world.rank(), world.size(), [&](int done, int total) {
      progress.show("SimGrid tier", done, total);
    });
    // The plan as written goes to the rank with the fewest simulations.
    if (world.rank() == world.size() - 1) written = s->as_written();
  } catch (const std::exception& e) {
    std::cerr << "ditwin: error: rank " << world.rank() << ": " << e.what() << "\n";
    world.abort(3);
  }
  nlohmann::json mine_sim = {{"simulated", simulated}, {"as_written", written}};
  auto sims = world.gather(mine_sim.dump());
  if (!root) return 0;
  std::vector<nlohmann::json> all;
  for (const auto& text : sims) {
    auto j = nlohmann::json::parse(text);
    for (auto& x : j["simulated"]) all.push_back(x);
    if (!j["as_written"].is_null()) written = j["as_written"];
  }
  double simgrid_s = seconds_since(t1);
  nlohmann::json report = s->report(merged, all, written, analytic_s, simgrid_s, world.size());
  std::cout << search::format_report(report);
  if (!a.report.empty()) write_json_file(report, a.report, 1);
  if (!a.best_plan.empty()) {
    write_json_file(s->best_plan(report), a.best_plan, 2);
    std::cout << "best plan written to " << a.best_plan << "\n";
  }
#ifdef DITWIN_HAVE_PARETO_PNG
  if (!a.pareto.empty()) {
    search::write_pareto_png(report, a.pareto);
    std::cout << "Pareto plot written to " << a.pareto << "\n";
  }
#endif
  return 0;
}

}  // namespace

std::function<int()> add_search_command(CLI::App& app) {
  auto a = std::make_shared<SearchArgs>();
  auto* cmd = app.add_subcommand("search", "Find the best layout (dp/tp/pp/cp, ZeRO, micro-batch, recompute, schedule) "
                                           "for a plan's model on a cluster; run under mpirun to split a big sweep");
  cmd->add_option("plan", a->plan, "Training plan (JSON): the model, batch, cluster and reliability to search for")->required();
  cmd->add_option("--gpus", a->options.gpus, "Cluster size to search for (a multiple of cluster.devices_per_node; "
                                            "default: the plan's)");
  cmd->add_option("--objective", a->options.objective, "throughput (tokens/s) or goodput (tokens/s x ETTR, with failures)")
      ->check(CLI::IsMember({"throughput", "goodput"}));
  cmd->add_option("--space", a->options.space_path, "JSON file narrowing or widening the space (docs/search.md)");
  cmd->add_option("--top", a->options.top, "Candidates the SimGrid tier simulates and the report lists (default 20)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--profile", a->options.profile_path, "Device profile from `ditwin calibrate` instead of the preset");
  cmd->add_option("--longrun-trials", a->options.longrun_trials,
                  "Trials of the long-run simulation of the best 3 (plans with failures; default 20)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--max-memory", a->max_memory_gb, "GB a candidate's lowered Program may take (default 3)")
      ->check(CLI::Range(1e-6, 1e6));
  cmd->add_option("--report", a->report, "Write the search report (JSON)");
  cmd->add_option("--best-plan", a->best_plan, "Write the best candidate as a ready-to-run plan (JSON)");
  cmd->add_option("--pareto", a->pareto, "Draw the Pareto plot (PNG; needs the Qt GUI build)");
  return [cmd, a]() -> int {
    if (!cmd->parsed()) return -1;
    return run_search(*a);
  };
}

}  // namespace ditwin::cli
