// The executor's model contract: the flat parameter array and its groups, the training data a
// micro-batch carries, the shard of the model a rank holds, and the Model interface every family
// implements (dit: exec/model/dit_model.cpp, mmdit: mmdit_model.cpp, unified: unified_model.cpp).
// The runtime drives a Model op by op under the Program's names; make_model picks the family.
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
  // Text, for the families that read it (empty otherwise):
  std::vector<int> tokens;     // unified: size x text_tokens token ids in [0, vocab)
  std::vector<float> context;  // mmdit: size x text_tokens x context_dim (the text encoders' output)
  std::vector<float> pooled;   // mmdit: size x pooled_dim (the pooled text vector)
};

// Appends the samples of `more` to `into` (every field the two carry).
void append_samples(Batch& into, const Batch& more);

// One sample of a step's global batch. `slot` is its index in the global batch (rank-major: data-
// parallel rank, micro-batch, sample), so every split over ranks and micro-batches names the same
// samples; `position` counts the samples the run consumed before it, which is where a dataset's
// order stands (the runtime keeps it, a checkpoint saves it). A sample's diffusion noise and
// timestep are drawn from (training.seed, step, slot).
struct SampleRef {
  std::int64_t step = 0, slot = 0, position = 0;
};

// Where samples come from: synthetic latents (make_synthetic_latents), or a dataset on disk
// (exec/data/data_source.hpp; make_data_source picks by the plan).
class DataSource {
 public:
  virtual ~DataSource() = default;
  // One sample (size 1), deterministic.
  virtual Batch sample(const SampleRef& at) = 0;
  // DP-SGD with Poisson sampling: example `example` of the dataset (its latents, label and text are
  // fixed) with the noise and timestep drawn for it at `step`.
  virtual Batch example(std::int64_t example, std::int64_t step) = 0;
  // The samples this rank asks for next (the next step's, in order): a source may read them on a
  // background thread while the current step trains. An error reading them surfaces when one of
  // them is asked for.
  virtual void prefetch(std::vector<SampleRef> next) { (void)next; }
  // What checkpoints and reports record about the source (besides the position, which the runtime keeps).
  virtual nlohmann::json describe() const = 0;
};

// Class-conditional synthetic latents: each class has a fixed random mean pattern; a sample is
// that pattern plus noise; t from the plan's timestep strategy, epsilon ~ N(0, 1). All from `seed`.
// A sample is a function of (seed, step, slot) alone: the position is not used.
class SyntheticData : public DataSource {
 public:
  // `size` samples keyed (step, rank, micro_batch, index): tests and benchmarks draw whole batches.
  // The runtime's sample (step, slot) is batch(step, 0, slot, 1).
  virtual Batch batch(std::int64_t step, int rank, int micro_batch, int size) = 0;
  Batch sample(const SampleRef& at) override { return batch(at.step, 0, static_cast<int>(at.slot), 1); }
  Batch example(std::int64_t example, std::int64_t step) override;
  nlohmann::json describe() const override;
};
std::unique_ptr<SyntheticData> make_synthetic_latents(const ModelSpec& model, const ObjectiveSpec& objective,
                                                      std::uint64_t seed);

// Which part of the model this rank holds and computes (Megatron's layout; the Program's place).
//  - tp: each block's QKV and fc1 are column-parallel (this rank's heads of Q, K and V, its slice of
//    fc1's outputs), attn.proj and fc2 row-parallel (its slice of their inputs, the bias added once
//    after the reduction); adaLN, embedders and the final layer are held whole;
//  - sequence_parallel: outside the TP-split GEMMs the residual stream, norms, embedders' token
//    rows and the final layer hold only this rank's shard of the sequence;
//  - cp: this rank's contiguous slice of the tokens, attention against every rank's K and V;
//  - pp / virtual_stages: the model chunks on this stage (embedding on the first, head on the last).
struct ModelShard {
  int tp = 1, tp_index = 0;
  bool sequence_parallel = false;
  int cp = 1, cp_index = 0;
  int pp = 1, stage = 0, virtual_stages = 1;
  // The parameter groups this rank holds, in flat order (the Program's RankClass::param_groups);
  // empty: the whole model ("embed", "L0" ... "head").
  std::vector<std::string> groups;
};

// The buffers of one of the model's tensor collectives or pipeline transfers: what to send and
// where the result lands (an all-reduce: the same buffer; all-gather: send is this rank's part,
// recv the whole; reduce-scatter: send the whole, recv this rank's part).
struct TensorComm {
  const float* send = nullptr;
  std::size_t send_count = 0;
  float* recv = nullptr;
  std::size_t recv_count = 0;
};

// One family's network, trained op by op: `run("attn.qkv", 3, Phase::forward, 1)` is the op
// "L3.attn.qkv.fwd.mb1" of the Program. Forward and hand-written backward; backward ops add into
// the bound gradients.
class Model {
 public:
  virtual ~Model() = default;
  // This rank's parameter groups and the length of its flat array.
  virtual const std::vector<ParamGroup>& groups() const = 0;
  virtual std::size_t parameter_count() const = 0;
  // For each element of this rank's flat array, its index in the one-rank model's flat array.
  virtual const std::vector<std::size_t>& global_index() const = 0;
  // For each element of this rank's flat array: 1 when every TP rank holds it whole.
  virtual const std::vector<char>& tp_replicated() const = 0;
  // Elements of the one-rank model's flat array.
  virtual std::size_t global_parameter_count() const = 0;
  // The family's published initialisation, deterministic from `seed`, into this rank's flat array
  // (the one-rank model's values at global_index(), so every layout starts from the same weights).
  virtual void init_parameters(float* params, std::uint64_t seed) const = 0;
  // Points a parameter group at its (full, gathered) parameters and its gradient accumulator.
  virtual void bind(const std::string& group, const float* params, float* grads) = 0;
  // Installs the batch micro-batch `mb` trains on (before its first forward op).
  virtual void set_batch(int mb, Batch batch) = 0;
  // Runs one compute op: `part` is the op name without "L<layer>." and ".<phase>.mb<i>".
  virtual void run(const std::string& part, int layer, Phase phase, int mb) = 0;
  // The loss of micro-batch `mb` after its "loss" forward op (this rank's share under a token shard).
  virtual double loss(int mb) const = 0;
  // The Program's tensor collectives and pipeline transfers (models without model parallelism
  // refuse them when constructed, so these are never reached there).
  virtual TensorComm comm_begin(const Op& op) = 0;
  virtual void comm_end(const Op& op) = 0;
  // DP-SGD: per-sample norms, clip and clipped weight gradients as Program ops.
  virtual void enable_privacy(double clip_norm) = 0;
};

// The plan's family: exec::DiT, exec::MMDiT or exec::Unified. Throws InputError for a family the
// executor does not train, or a shard the family cannot hold.
std::unique_ptr<Model> make_model(const Plan& plan, const ModelShard& shard = {});

}  // namespace ditwin::exec
