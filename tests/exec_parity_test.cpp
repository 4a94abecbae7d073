// A training step of each model family against an independent PyTorch implementation in float64
// (tools/dit_reference.py for the DiT, tools/joint_reference.py for MMDiT and unified): same
// weights, same batch, same t and ε → same loss and gradients within 1e-4 relative per tensor.
// Needs /usr/bin/python3 with torch (Debian's python3-torch); fails, never skips, without.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <unistd.h>

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

// Tensors that take no part in the loss, so both implementations must give them exactly zero:
// an MMDiT block computes its text stream's outputs, but after the last block only the image
// stream reaches the head (SD3 makes that block's text half "pre_only" for this reason), so the
// last block's text projection and MLP feed nothing. Its adaLN weights still get a gradient through
// the shift and scale of the attention input, whose q, k, v the image tokens attend to.
std::set<std::string> tensors_without_gradient(const ModelSpec& m) {
  std::set<std::string> dead;
  if (m.family != ModelFamily::mmdit) return dead;
  const std::string last = "L" + std::to_string(m.layers - 1) + ".txt.";
  for (const char* name : {"proj", "fc1", "fc2"}) {
    dead.insert(last + name + ".w");
    if (m.linear_bias) dead.insert(last + name + ".b");
  }
  return dead;
}

// One step of the plan's model (dit, mmdit or unified) against its PyTorch reference
// (tools/dit_reference.py or tools/joint_reference.py): the loss, and every tensor's gradient
// within 1e-4 relative.
void expect_parity(const Plan& plan, const std::string& label) {
  test::ModelStepper s(plan);
  ASSERT_EQ(s.micro_batches(), 1);
  // adaLN-Zero leaves most gradients zero at initialisation: perturb every weight.
  auto noise = test::random_vector(s.params.size(), 41, 0.02f);
  for (std::size_t i = 0; i < s.params.size(); ++i) s.params[i] += noise[i];
  auto data = exec::make_synthetic_latents(plan.model, plan.training.objective, 17);
  const int b = static_cast<int>(plan.training.micro_batch);
  exec::Batch batch = data->batch(3, 0, 0, b);
  s.model().set_batch(0, batch);
  const double loss = s.run();

  const fs::path dir = fs::temp_directory_path() / ("ditwin-parity-" + std::to_string(::getpid()) + "-" + label);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const ModelSpec& m = plan.model;
  const bool dit = m.family == ModelFamily::dit;
  nlohmann::json cfg = {{"family", to_string(m.family)},
                        {"layers", m.layers},         {"hidden", m.hidden},
                        {"heads", m.heads},           {"ffn_hidden", m.ffn_hidden},
                        {"latent_channels", m.latent_channels}, {"latent_size", m.latent_size()},
                        {"patch", m.patch},           {"num_classes", m.num_classes},
                        {"learn_sigma", m.learn_sigma}, {"frequency_embedding", m.frequency_embedding},
                        {"micro_batch", b},           {"text_tokens", m.text_tokens},
                        {"context_dim", m.context_dim}, {"pooled_dim", m.pooled_dim},
                        {"vocab", m.vocab},           {"gated_mlp", m.gated_mlp},
                        {"linear_bias", m.linear_bias}, {"image_weight", plan.training.objective.image_weight}};
  std::ofstream(dir / "config.json") << cfg.dump();
  write_raw(dir / "params.f32", s.params);
  write_raw(dir / "x0.f32", batch.x0);
  write_raw(dir / "noise.f32", batch.noise);
  write_raw(dir / "t.f32", batch.t);
  if (dit) write_raw(dir / "y.i32", batch.y);
  if (m.family == ModelFamily::mmdit) {
    write_raw(dir / "context.f32", batch.context);
    write_raw(dir / "pooled.f32", batch.pooled);
  }
  if (m.family == ModelFamily::unified) write_raw(dir / "tokens.i32", batch.tokens);

  const std::string script = dit ? "dit_reference.py" : "joint_reference.py";
  const std::string cmd = "/usr/bin/python3 " + std::string(DITWIN_SOURCE_DIR) + "/tools/" + script + " " +
                          dir.string() + " --threads 1";
  const int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << "the PyTorch reference failed (is python3-torch installed for /usr/bin/python3?): " << cmd;
  nlohmann::json result;
  std::ifstream(dir / "result.json") >> result;
  const std::vector<double> ref = read_f64(dir / "grads.f64");
  ASSERT_EQ(ref.size(), s.grads.size());

  const double ref_loss = result["loss"].get<double>();
  EXPECT_LT(std::abs(loss - ref_loss) / ref_loss, 1e-4) << label << ": loss " << loss << " vs PyTorch " << ref_loss;
  std::string parts;
  if (!dit) {  // the two terms of the loss on their own, so that a swapped weight cannot hide
    const double image = s.joint().image_loss(0), ref_image = result["image_loss"].get<double>();
    EXPECT_LT(std::abs(image - ref_image) / ref_image, 1e-4) << label << ": image loss " << image << " vs " << ref_image;
    const double text = s.joint().text_loss(0), ref_text = result["text_loss"].get<double>();
    if (m.family == ModelFamily::unified)
      EXPECT_LT(std::abs(text - ref_text) / ref_text, 1e-4) << label << ": text loss " << text << " vs " << ref_text;
    else
      EXPECT_EQ(text, 0.0);
    char buf[160];
    std::snprintf(buf, sizeof buf, "; text %.9g vs %.9g, image %.9g vs %.9g", text, ref_text, image, ref_image);
    parts = buf;
  }
  const std::set<std::string> dead = tensors_without_gradient(m);
  std::size_t dead_seen = 0;
  double worst = 0;
  for (const auto& t : result["tensors"]) {
    const std::size_t offset = t["offset"], size = t["size"];
    const std::string name = t["name"];
    std::vector<double> ours(s.grads.begin() + offset, s.grads.begin() + offset + size);
    std::vector<double> theirs(ref.begin() + offset, ref.begin() + offset + size);
    double norm = 0, ours_norm = 0;
    for (double g : theirs) norm += g * g;
    for (double g : ours) ours_norm += g * g;
    if (dead.count(name)) {
      ++dead_seen;
      EXPECT_EQ(norm, 0) << label << ": " << name << " feeds nothing, yet PyTorch gives it a gradient";
      EXPECT_EQ(ours_norm, 0) << label << ": " << name << " feeds nothing, yet ditwin gives it a gradient";
      continue;
    }
    // The embedding tables' unused rows aside, every tensor takes part: a zero reference would
    // make the comparison vacuous.
    EXPECT_GT(norm, 0) << label << ": " << name << " has no gradient in the reference";
    const double err = test::relative_error(ours, theirs);
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-4) << label << ": " << name;
  }
  EXPECT_EQ(dead_seen, dead.size()) << label << ": the reference's layout lacks a tensor expected to have no gradient";
  std::printf("%s: loss %.9g vs PyTorch %.9g (relative error %.2g)%s; worst per-tensor gradient error %.3g over %zu "
              "tensors (torch %s)\n",
              label.c_str(), loss, ref_loss, std::abs(loss - ref_loss) / ref_loss, parts.c_str(), worst,
              result["tensors"].size() - dead_seen, result["torch"].get<std::string>().c_str());
  fs::remove_all(dir);
}

TEST(ExecParity, TinyCpuDitMatchesPyTorch) {
  expect_parity(single_micro_batch(read_json_file(test::scenario("tiny-cpu.json"))), "tiny-cpu");
}

TEST(ExecParity, LearnSigmaDitMatchesPyTorch) {
  expect_parity(single_micro_batch(test::small_dit_plan()), "small-learn-sigma");
}

TEST(ExecParity, TinyMmditMatchesPyTorch) {
  expect_parity(single_micro_batch(read_json_file(test::scenario("tiny-mmdit-cpu.json"))), "tiny-mmdit");
}

TEST(ExecParity, TinyUnifiedMatchesPyTorch) {
  expect_parity(single_micro_batch(read_json_file(test::scenario("tiny-unified-cpu.json"))), "tiny-unified");
}

// No biases in the blocks' linears, learn_sigma (the loss reads half the output), an odd text
// length and widths unlike the image's.
TEST(ExecParity, MmditWithoutBiasesMatchesPyTorch) {
  nlohmann::json j = read_json_file(test::scenario("tiny-mmdit-cpu.json"));
  j["model"].update({{"layers", 2}, {"hidden", 64}, {"heads", 2}, {"ffn_hidden", 96}, {"text_tokens", 7},
                     {"context_dim", 24}, {"pooled_dim", 10}, {"frequency_embedding", 64}, {"linear_bias", false},
                     {"learn_sigma", true}});
  j["training"]["micro_batch"] = 2;
  expect_parity(single_micro_batch(j), "mmdit-no-bias");
}

// The GELU MLP instead of SwiGLU, biases in every linear, a small image weight and a vocabulary
// larger than the tokens a sample holds.
TEST(ExecParity, UngatedUnifiedWithBiasesMatchesPyTorch) {
  nlohmann::json j = read_json_file(test::scenario("tiny-unified-cpu.json"));
  j["model"].update({{"layers", 2}, {"hidden", 64}, {"heads", 2}, {"ffn_hidden", 160}, {"text_tokens", 9},
                     {"vocab", 48}, {"gated_mlp", false}, {"linear_bias", true}});
  j["training"]["micro_batch"] = 2;
  j["training"]["objective"]["image_weight"] = 0.5;
  expect_parity(single_micro_batch(j), "unified-gelu-bias");
}

}  // namespace
}  // namespace ditwin
