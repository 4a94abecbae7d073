// The DiT that the CPU executor trains: Peebles & Xie's architecture (patchify, sinusoidal
// timestep embedding + MLP, class embedding, adaLN-Zero blocks, final adaLN layer, unpatchify)
// with a rectified-flow objective, forward and hand-written backward in fp32. The executor drives
// it op by op under the Program's names: `run("attn.qkv", 3, Phase::forward, 1)` is the op
// "L3.attn.qkv.fwd.mb1". GEMMs use Eigen; every other op is a kernels/ CPU function.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/plan.hpp"
#include "model/program.hpp"

namespace ditwin::exec {

// Parameters live in one flat fp32 array, one contiguous range per parameter group, in the
// order "embed", "L0" … "L{layers-1}", "head" (the Program's group names).
struct ParamGroup {
  std::string name;
  std::size_t offset = 0;  // in floats, into the flat parameter array
  std::size_t size = 0;
};

// One micro-batch of training data: clean latents, the noise, the timestep, the class.
struct Batch {
  int size = 0;              // samples
  std::vector<float> x0;     // size x C x H x W (latent_channels, latent_size, latent_size)
  std::vector<float> noise;  // same shape: epsilon
  std::vector<float> t;      // size, in (0, 1)
  std::vector<int> y;        // size, class labels in [0, num_classes)
  std::vector<float> weight; // DP-SGD: per-sample weight (0 masks an empty Poisson slot); empty = all 1
};

// Where batches come from. Synthetic class-conditional latents need no download; a real
// dataset plugs in by implementing this.
class DataSource {
 public:
  virtual ~DataSource() = default;
  // The micro-batch `micro_batch` of data-parallel rank `rank` at `step`, deterministic.
  virtual Batch batch(std::int64_t step, int rank, int micro_batch, int size) = 0;
};

// Class-conditional synthetic latents: each class has a fixed random mean pattern; a sample is
// that pattern plus noise; t ~ sigmoid(N(m, s)) (logit-normal), epsilon ~ N(0, 1). All from `seed`.
std::unique_ptr<DataSource> make_synthetic_latents(const ModelSpec& model, const ObjectiveSpec& objective,
                                                   std::uint64_t seed);

class DiT {
 public:
  // Throws InputError unless the model is a dit family model.
  DiT(const ModelSpec& model, int micro_batch, int micro_batches);
  ~DiT();
  DiT(const DiT&) = delete;
  DiT& operator=(const DiT&) = delete;

  const std::vector<ParamGroup>& groups() const;
  std::size_t parameter_count() const;
  // The DiT paper's initialisation (Xavier-uniform linears, N(0, 0.02) embeddings, zeroed adaLN
  // modulation and final layer), deterministic from `seed`, into a full flat array.
  void init_parameters(float* params, std::uint64_t seed) const;

  // Points a parameter group at its (full, gathered) parameters and its gradient accumulator.
  // Backward ops add into the gradients; the caller zeroes them at the start of a step.
  void bind(const std::string& group, const float* params, float* grads);

  // Installs the batch micro-batch `mb` trains on (before its first forward op).
  void set_batch(int mb, Batch batch);
  // Runs one op of the Program. `part` is the op name without its "L<layer>." prefix and its
  // ".<phase>.mb<i>" suffix ("attn.qkv", "embed.patch", "head.image", "loss", …); `layer` is -1
  // for embedding, head and loss. Recompute re-runs the forward of that op.
  void run(const std::string& part, int layer, Phase phase, int mb);
  // The loss of micro-batch `mb` (mean over its samples), after its "loss" forward op.
  double loss(int mb) const;

  // DP-SGD (call before the first set_batch). Backward ops then compute input gradients only and
  // keep each linear's output gradient; the Program's DP ops do the rest:
  //   "<op>.sample_norm"  adds each sample's squared weight-gradient norm (ghost or materialized),
  //   "privacy.clip"      sets clip factors min(1, C / ||g_b||) x the sample's weight,
  //   "<op>.wgrad"        adds the clipped weight gradients sum_b c_b g_b into the bound gradients.
  void enable_privacy(double clip_norm);
  // Per-sample gradient norms of micro-batch `mb` (of each sample's own loss), after its norms.
  std::vector<double> sample_gradient_norms(int mb) const;
  // The clip factors of micro-batch `mb`, after its "privacy.clip".
  std::vector<float> clip_factors(int mb) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decoupled-weight-decay Adam (Loshchilov & Hutter) on n parameters; `step` counts from 1.
void adamw_update(float* params, const float* grads, float* m, float* v, std::size_t n, const OptimizerSpec& opt,
                  std::int64_t step);

// Splits an op name into its part, layer and micro-batch ("L3.attn.qkv.bwd.mb1" -> "attn.qkv", 3, 1).
struct OpAddress {
  std::string part;
  int layer = -1;
  int microbatch = -1;
};
OpAddress parse_op_name(const std::string& name);

}  // namespace ditwin::exec
