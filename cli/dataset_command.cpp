// `ditwin dataset synth PLAN --samples N --out DIR` and `ditwin dataset check PLAN [--data DIR]`.
#include "cli/dataset_command.hpp"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "exec/data/data_source.hpp"
#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/report.hpp"

namespace ditwin::cli {

namespace {

struct DatasetArgs {
  std::string plan, out, data;
  long long samples = 0, shard_samples = 1024;
  bool force = false;
};

std::string fields_text(const std::vector<exec::DatasetField>& fields) {
  std::string s;
  for (const auto& f : fields) {
    ((s += s.empty() ? "" : ", ") += f.name) += " [";
    for (std::size_t k = 0; k < f.shape.size(); ++k) (s += k ? "x" : "") += std::to_string(f.shape[k]);
    s += "]";
    if (f.integer) s += " < " + std::to_string(f.bound);
  }
  return s;
}

int run_synth(const DatasetArgs& a) {
  Plan plan = load_plan(a.plan);
  auto t0 = std::chrono::steady_clock::now();
  nlohmann::json index = exec::write_synthetic_dataset(plan, a.out, a.samples, a.shard_samples, a.force);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "wrote " << a.samples << " samples for " << plan.name << " (" << to_string(plan.model.family) << ": "
            << fields_text(exec::dataset_fields(plan.model)) << ") in " << index["shards"].size() << " shard(s) to "
            << a.out << " in " << s << " s\n"
            << "train on it with  \"training\": {\"data\": {\"path\": \"" << a.out << "\"}, ...}\n";
  return 0;
}

int run_check(const DatasetArgs& a) {
  Plan plan = load_plan(a.plan);
  std::string dir = !a.data.empty() ? a.data : plan.training.data.path;
  if (dir.empty()) throw InputError(a.plan + ": training.data.path is not set; give --data DIR");
  exec::Dataset dataset(dir, plan.model);
  auto t0 = std::chrono::steady_clock::now();
  exec::Batch b;
  for (std::int64_t e = 0; e < dataset.samples(); ++e) dataset.read(e, b);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << dir << ": " << dataset.samples() << " examples in " << dataset.shards() << " shard(s) fit "
            << plan.name << " (" << fields_text(dataset.fields()) << "); every example read in " << s << " s\n";
  return 0;
}

}  // namespace

std::function<int()> add_dataset_command(CLI::App& app) {
  auto a = std::make_shared<DatasetArgs>();
  auto* dataset = app.add_subcommand("dataset", "Training data on disk: write a synthetic dataset, check one (docs/data.md)");
  dataset->require_subcommand(1);
  auto* synth = dataset->add_subcommand("synth", "Write a small dataset of random values shaped for the plan's model");
  synth->add_option("plan", a->plan, "Training plan (JSON)")->required();
  synth->add_option("--samples", a->samples, "Examples to write")->required()->check(CLI::Range(1LL, 2147483647LL));
  synth->add_option("--out", a->out, "Directory to write (index.json and the .npy shards)")->required();
  synth->add_option("--shard-samples", a->shard_samples, "Examples per shard (default 1024)")->check(CLI::Range(1LL, 2147483647LL));
  synth->add_flag("--force", a->force, "Write into --out even if it is not empty (files of the same names are replaced)");
  auto* check = dataset->add_subcommand("check", "Open the plan's dataset and read every example once, checking ids and values");
  check->add_option("plan", a->plan, "Training plan (JSON)")->required();
  check->add_option("--data", a->data, "Dataset directory (default training.data.path)");
  return [=]() -> int {
    if (synth->parsed()) return run_synth(*a);
    if (check->parsed()) return run_check(*a);
    return -1;
  };
}

}  // namespace ditwin::cli
