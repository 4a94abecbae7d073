// The DiT step against an independent PyTorch implementation (tools/dit_reference.py, float64):
// same weights, same batch, same t and ε → same loss and gradients within 1e-4 relative per
// tensor. Needs /usr/bin/python3 with torch (Debian's python3-torch); fails, never skips, without.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "exec/model/dit_model.hpp"
#include "tests/exec_step_util.hpp"
#include "tests/exec_test_util.hpp"
#include "tests/test_util.hpp"

namespace ditwin {
namespace {
namespace fs = std::filesystem;

template <typename T>
void write_raw(const fs::path& path, const std::vector<T>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<double> read_f64(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<double> v(in ? static_cast<std::size_t>(in.tellg()) / sizeof(double) : 0);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(double)));
  return v;
}

// One micro-batch on one rank, so the gradient is that of the micro-batch's loss.
Plan single_micro_batch(nlohmann::json j) {
  j["training"]["global_batch"] = j["training"]["micro_batch"];
  j["parallelism"] = {{"dp", 1}};
  j["cluster"]["devices_per_node"] = 1;
  return parse_plan(j);
}

void expect_parity(const Plan& plan, const std::string& label) {
  test::ModelStepper s(plan);
  ASSERT_EQ(s.micro_batches(), 1);
  // adaLN-Zero leaves most gradients zero at initialisation: perturb every weight.
  auto noise = test::random_vector(s.params.size(), 41, 0.02f);
  for (std::size_t i = 0; i < s.params.size(); ++i) s.params[i] += noise[i];
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 17);
  const int b = static_cast<int>(plan.training.micro_batch);
  exec::Batch batch = data->batch(3, 0, 0, b);
  s.dit().set_batch(0, batch);
  const double loss = s.run();

  const fs::path dir = fs::temp_directory_path() / ("ditwin-parity-" + std::to_string(::getpid()) + "-" + label);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const ModelSpec& m = plan.model;
  nlohmann::json cfg = {{"layers", m.layers},         {"hidden", m.hidden},
                        {"heads", m.heads},           {"ffn_hidden", m.ffn_hidden},
                        {"latent_channels", m.latent_channels}, {"latent_size", m.latent_size()},
                        {"patch", m.patch},           {"num_classes", m.num_classes},
                        {"learn_sigma", m.learn_sigma}, {"frequency_embedding", m.frequency_embedding},
                        {"micro_batch", b}};
  std::ofstream(dir / "config.json") << cfg.dump();
  write_raw(dir / "params.f32", s.params);
  write_raw(dir / "x0.f32", batch.x0);
  write_raw(dir / "noise.f32", batch.noise);
  write_raw(dir / "t.f32", batch.t);
  write_raw(dir / "y.i32", batch.y);

  const std::string cmd = "/usr/bin/python3 " + std::string(DITWIN_SOURCE_DIR) + "/tools/dit_reference.py " +
                          dir.string() + " --threads 1";
  const int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << "the PyTorch reference failed (is python3-torch installed for /usr/bin/python3?): " << cmd;
  nlohmann::json result;
  std::ifstream(dir / "result.json") >> result;
  const std::vector<double> ref = read_f64(dir / "grads.f64");
  ASSERT_EQ(ref.size(), s.grads.size());

  const double ref_loss = result["loss"].get<double>();
  EXPECT_LT(std::abs(loss - ref_loss) / ref_loss, 1e-4) << label << ": loss " << loss << " vs PyTorch " << ref_loss;
  double worst = 0;
  for (const auto& t : result["tensors"]) {
    const std::size_t offset = t["offset"], size = t["size"];
    std::vector<double> ours(s.grads.begin() + offset, s.grads.begin() + offset + size);
    std::vector<double> theirs(ref.begin() + offset, ref.begin() + offset + size);
    double norm = 0;
    for (double g : theirs) norm += g * g;
    // The embedding table's unused rows aside, every tensor takes part: a zero reference would
    // make the comparison vacuous.
    EXPECT_GT(norm, 0) << label << ": " << t["name"] << " has no gradient in the reference";
    const double err = test::relative_error(ours, theirs);
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-4) << label << ": " << t["name"];
  }
  std::printf("%s: loss %.9g vs PyTorch %.9g; worst per-tensor gradient error %.3g (torch %s)\n", label.c_str(),
              loss, ref_loss, worst, result["torch"].get<std::string>().c_str());
  fs::remove_all(dir);
}

TEST(ExecParity, TinyCpuDitMatchesPyTorch) {
  expect_parity(single_micro_batch(read_json_file(test::scenario("tiny-cpu.json"))), "tiny-cpu");
}

TEST(ExecParity, LearnSigmaDitMatchesPyTorch) {
  expect_parity(single_micro_batch(test::small_dit_plan()), "small-learn-sigma");
}

}  // namespace
}  // namespace ditwin
