// The training plan: everything a user decides, parsed and validated from JSON
// (schema and defaults: docs/plan.md). Both the simulator and the executor start from it.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/device.hpp"
#include "model/model_spec.hpp"

namespace ditwin {

enum class Recompute { none, selective, full };
enum class PipelineSchedule { gpipe, one_f_one_b, interleaved };
enum class Topology { fat_tree, rail_optimized };
const char* to_string(Recompute r);
const char* to_string(PipelineSchedule s);
const char* to_string(Topology t);

struct OptimizerSpec {
  std::string kind = "adamw";  // adamw | sgd
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  // Bytes of optimizer state per parameter, on top of the master weights (Adam: m and v in fp32).
  double state_bytes_per_param() const;
};

// Rectified-flow timestep sampling (SD3, Esser et al. 2024, §3.1), t = 1 being pure noise.
enum class TimestepKind { uniform, logit_normal, mode, cosmap };
const char* to_string(TimestepKind k);
// The mode kind's f(u) = 1 - u - s·(cos²(πu/2) - 1 + u) is monotone only for s in these bounds.
inline constexpr double mode_scale_min = -1.0;
inline constexpr double mode_scale_max = 2.0 / (3.14159265358979323846 - 2.0);

struct ObjectiveSpec {
  std::string kind;             // rectified_flow | ddpm | next_token
  TimestepKind timesteps = TimestepKind::logit_normal;
  double m = 0.0, s = 1.0;      // logit_normal: t = sigmoid(m + s·N(0, 1))
  double mode_scale = 1.29;     // mode: the heavy-tail scale s of f(u), in [mode_scale_min, mode_scale_max]
  // Resolution-dependent shift t' = α·t / (1 + (α - 1)·t) after any kind (SD3 §5.3.2); 1 = none.
  double shift = 1.0;
  bool shift_auto = false;      // α = sqrt(image pixels / base pixels) = image_size / base_resolution
  int base_resolution = 256;    // pixels a side of the resolution an automatic shift is relative to
  // unified: the weight of the image's rectified-flow loss against the text's cross-entropy
  // (Transfusion's lambda, 5 in Zhou et al. 2024).
  double image_weight = 5.0;
};

// DP-SGD (docs/privacy.md): per-sample clipping, Gaussian noise, an RDP accountant.
struct PrivacySpec {
  bool enabled = false;           // true when the plan has a privacy section (unless it says false)
  double clip_norm = 1.0;         // per-sample gradient L2 bound C
  double noise_multiplier = 0.0;  // noise std / C; solved for when target_epsilon is set
  double target_epsilon = 0.0;    // > 0: solve the noise multiplier for this epsilon over run.steps
  double delta = 1e-5;
  std::string sampling = "poisson";  // poisson | shuffle
  long long dataset_size = 0;        // examples; sampling rate q = expected batch / dataset_size
  long long expected_batch = 0;      // poisson: expected examples per step (default global_batch); the
                                     // step has global_batch slots, so a margin makes overflow rare
  std::string conversion = "improved";  // RDP -> (eps, delta): improved (Balle et al. 2020) | classic (Mironov 2017)
  std::string accountant = "rdp";       // rdp | prv (Gopi et al. 2021: tighter, by FFT composition)
};

// Training data on disk (docs/data.md): a directory of .npy shards and an index.json. Absent: the
// executor trains on synthetic class-conditional latents.
struct DataSpec {
  std::string path;     // the dataset directory, as given (relative paths: to the working directory)
  bool shuffle = true;  // a fresh pseudo-random order each epoch (seeded by training.seed)
  bool on_disk() const { return !path.empty(); }
};

struct TrainingSpec {
  long long global_batch = 0;
  long long micro_batch = 1;
  Precision precision = Precision::bf16;
  OptimizerSpec optimizer;
  ObjectiveSpec objective;
  Recompute recompute = Recompute::none;
  bool flash_attention = true;
  PrivacySpec privacy;
  DataSpec data;
  std::uint64_t seed = 0;
};

struct ParallelismSpec {
  int dp = 1, tp = 1, pp = 1, cp = 1;
  bool sequence_parallel = false;
  int zero = 0;  // 0 = DDP, 1/2/3 = ZeRO stages (3 = FSDP full shard)
  PipelineSchedule schedule = PipelineSchedule::one_f_one_b;
  int virtual_stages = 1;          // model chunks per pipeline rank (interleaved schedule)
  double bucket_bytes = 25e6;      // gradient bucket size
  bool overlap_grad_reduce = true;  // launch bucket collectives while backward continues
  bool overlap_param_gather = true;  // ZeRO-3: prefetch the next layer's parameters

  long long world() const { return 1LL * dp * tp * pp * cp; }
};

struct NetworkSpec {
  Topology topology = Topology::fat_tree;
  double nic_gbps = 0;         // per NIC; 0 = the device's usual NIC
  int nics_per_node = 0;       // 0 = one per GPU
  double oversubscription = 1;  // leaf uplink : downlink bandwidth ratio is 1 : this
  int levels = 2;              // 1 = one switch, 2 = leaf and spine
  int nodes_per_leaf = 16;     // nodes (or, rail-optimized, rail GPUs) under one leaf switch
  double latency_s = 5e-6;     // one-way, NIC to NIC through the fabric
};

struct ClusterSpec {
  DeviceSpec device;
  int nodes = 1;
  int devices_per_node = 8;
  double nvlink_bytes_per_s = 0;  // per direction per GPU (the device's unless the plan sets it)
  double nvlink_latency_s = 1e-6;
  NetworkSpec network;

  long long gpus() const { return 1LL * nodes * devices_per_node; }
  double nic_bytes_per_s() const;  // per NIC, per direction
  int nics() const { return network.nics_per_node > 0 ? network.nics_per_node : devices_per_node; }
};

struct CheckpointSpec {
  double interval_s = 1800;   // < 0: optimal (Young/Daly) interval
  std::string mode = "async";  // sync | async | in_memory
  double write_bytes_per_s = 2e9;  // per node, to the checkpoint store
  double read_bytes_per_s = 4e9;   // per node, from the checkpoint store
  double snapshot_bytes_per_s = 25e9;  // per GPU, device to host memory (async and in_memory)
  double write_s = -1;  // >= 0: time to write one checkpoint, instead of size / write bandwidth
  double load_s = -1;   // >= 0: time to load one checkpoint, instead of size / read bandwidth
  int keep = 2;
  // The executor (ditwin execute): where shards and manifests go, and a step interval that
  // replaces interval_s when > 0 (the simulator then uses interval_steps x its step time).
  std::string dir;
  long long interval_steps = 0;
};

// How the supervisor (ditwin execute --supervise) restarts a failed run.
struct RestartPolicySpec {
  int max_restarts = 3;
  double backoff_s = 0;  // wait before restart n: backoff_s x backoff_factor^(n-1), at most backoff_max_s
  double backoff_factor = 2;
  double backoff_max_s = 60;
  double backoff_before(int restart) const;  // restart counts from 1
};

// One injected fault (reliability.inject, or `ditwin execute --inject`). Each fires once per run.
struct InjectSpec {
  std::string kind;    // kill | hang | kill_during_checkpoint | corrupt_shard | nan | spike
  int rank = 0;
  long long step = -1;  // >= 0: at the start of this step (0-based: after `step` steps); for the
                        // checkpoint kinds, the checkpoint taken after `step` steps
  double at_s = -1;     // >= 0 (kill, hang): this long after the training of an attempt starts
  double fraction = 0.5;  // kill_during_checkpoint: how far through its shard file the rank dies
  double factor = 1;      // spike: the loss and gradients of that step are scaled by this (every rank)
  bool numerical() const { return kind == "nan" || kind == "spike"; }  // caught by the step guard, not a crash
  std::string describe() const;  // "kill:rank=1,step=7", the CLI form
};
// Parses the CLI form "KIND:key=value,..." (keys rank, step, at_s, seed + within_s, fraction);
// throws InputError naming `where` and the problem.
InjectSpec parse_inject(const std::string& text, const std::string& where);

// One failure category of the long-run model (docs/plan.md, reliability.failures).
struct FailureCategorySpec {
  std::string name;
  double per_node_day = 0;     // rate per node per day, or
  double per_device_hour = 0;  // rate per device (GPU) per hour; exactly one is > 0
  std::string detection = "heartbeat";  // heartbeat (process dies) | timeout (collective hangs)
  bool node_lost = true;                // the node must be replaced before the job restarts
};

// --- numerical faults (issue 18 part 2) ---------------------------------------------------------
// The step guard (reliability.numerical, docs/plan.md and docs/reliability.md): a non-finite loss or
// gradient norm, or a loss above mean + spike_sigma x stddev of the last `window` accepted losses,
// is caught on every rank alike and handled by `policy`.
struct NumericalSpec {
  std::string policy = "skip";  // skip: drop the step's update | rollback: last good checkpoint, skip the data window
  double spike_sigma = 6;       // 0 = no spike guard
  int window = 20;              // accepted losses the spike guard needs (and looks back over)
  long long skip_data_window = 1;  // rollback: steps of data skipped from the bad step on
  double lr_factor = 1;         // rollback: the learning rate is multiplied by this ...
  long long lr_steps = 0;       // ... for this many steps from the bad step on
  int max_rollbacks = 3;        // per attempt; one more is an error (the supervisor restarts)
  double rate_per_day = 0;      // the simulator: numerical faults per day of training (per job)
};
// --- end numerical faults ------------------------------------------------------------------------

// --- controlled rollouts (issue 18 part 3) -------------------------------------------------------
// A change rolled into the running job (reliability.rollouts, docs/plan.md and docs/reliability.md):
// at a step or an hour, the job restarts from a checkpoint on a second plan, is watched for a
// window, and is rolled back to the checkpoint taken before the change when its step time or
// loss regresses past the thresholds.
struct RolloutSpec {
  long long at_step = -1;       // >= 1: after this many steps, or
  double at_s = -1;             // >= 0: this long after the job's start (at_hours)
  std::string change;           // what it is, for people
  std::string plan_path;        // the second plan: a file (resolved relative to the plan by load_plan) ...
  nlohmann::json plan_document; // ... or, once resolved, the second plan's whole document (null: none)
  double watch_s = -1;          // the watched window: watch_minutes, or
  long long watch_steps = -1;   // watch_steps
  double step_time_regression = 0.1;  // regressed: the window's median step time > (1 + this) x before's
  double loss_regression = 0;         // > 0: the window's mean loss > (1 + this) x before's
  double loss_sigma = 0;              // > 0: the window's mean loss > before's mean + this x its stddev
  double regress_probability = 0;     // the simulator: the chance that this rollout regresses
  bool restart = true;                // applying it restarts the job from a checkpoint
};
// --- end controlled rollouts ---------------------------------------------------------------------

struct ReliabilitySpec {
  std::string failures = "none";  // preset: none | llama3 | meta-rsc
  double failure_rate_scale = 1.0;
  std::string distribution = "exponential";  // exponential | weibull (job-level inter-arrival times)
  double weibull_shape = 1.0;
  std::vector<FailureCategorySpec> categories;  // added to the preset's, or replacing those of the same name
  double planned_per_node_day = -1;             // planned maintenance; < 0: the preset's
  double spare_swap_s = 60;                     // bringing a hot spare into the job
  double spare_repair_s = 2 * 86400;            // until a failed node returns to the spare pool
  CheckpointSpec checkpoint;
  double heartbeat_s = 30, nccl_timeout_s = 600;
  double reschedule_s = 120, process_start_s = 60, comm_init_s = 30;
  int spare_nodes = 0;
  double straggler_fraction = 0.0, straggler_slowdown = 1.0;
  RestartPolicySpec restart;
  std::vector<InjectSpec> inject;
  NumericalSpec numerical;  // issue 18 part 2
  std::vector<RolloutSpec> rollouts;  // issue 18 part 3 (resolve_rollouts)
  double exit_detection_s = 0.5;  // a process that exits (node alive) is noticed by its launcher
};

struct RunSpec {
  long long steps = 1000;
  double duration_s = 0;  // wall-clock length of the job for long-run simulation
};

struct Plan {
  std::string name;
  std::string description;
  ModelSpec model;
  TrainingSpec training;
  ParallelismSpec parallelism;
  ClusterSpec cluster;
  ReliabilitySpec reliability;
  RunSpec run;
  std::vector<std::string> warnings;  // legal but probably unintended choices

  // Multi-stage campaigns (plan key `stages`, docs/plan.md): each stage is the base plan with the
  // stage's object merged over it (RFC 7386), parsed and validated as a whole plan. Empty for a
  // one-stage plan and inside a stage. Every consumer (plan, simulate, execute) reads these.
  std::vector<Plan> stages;
  std::string stage_name;             // a stage: its `name`, else "stage N" (1-based)
  nlohmann::json stage_document;      // a stage: the merged plan document it was parsed from

  long long micro_batches() const;  // per step, per pipeline (gradient accumulation steps)
  long long tokens_per_step() const;
};

// Checks injections against a run of `steps` steps of `plan`: ranks exist, steps are reached, the
// checkpoint kinds hit a checkpoint (`where(i)` names injection i in messages).
void check_injections(const Plan& plan, const std::vector<InjectSpec>& inject, long long steps,
                      const std::function<std::string(std::size_t)>& where);

// The rules that tie a plan's sections together (parallelism against the model, the cluster and
// the batch, ...): throws InputError naming the JSON path and the rule on the first one broken,
// and fills plan.warnings. parse_plan runs it; so does the search on every candidate it builds.
void validate_plan(Plan& plan);

// Parses and validates; throws InputError naming the JSON path and the rule on the first problem.
Plan parse_plan(const nlohmann::json& document);

// Multi-stage campaigns: the stages of `document` (its `stages` array) resolved over `base`, the
// plan parsed from the rest of it. Errors name `stages[i].<path>` (model/stages.cpp).
std::vector<Plan> resolve_stages(const nlohmann::json& document, const Plan& base);
// Controlled rollouts: parses `reliability.rollouts` of `document` into base.reliability.rollouts; an
// inline `plan` override is merged over the base document under the stage rule (model/stages.cpp)
// and validated as a whole plan. Errors name `reliability.rollouts[i].<path>`. A `plan` path is
// read by load_plan, relative to the plan's file (resolve_rollout_files).
void resolve_rollouts(const nlohmann::json& document, Plan& base);
// A stage's rule for one override: only the keys a stage may change (else an error naming `at`),
// merged over `base_document` (RFC 7386). The caller parses and validates the result.
nlohmann::json merge_override(const nlohmann::json& base_document, const nlohmann::json& patch, const std::string& at);
void resolve_rollout_files(Plan& plan, const std::string& plan_path);
// Whether two stages shard the training state differently (dp, tp, pp, cp, ZeRO stage, virtual
// stages): moving from one to the other is a resharding checkpoint save and load.
bool layout_changes(const Plan& from, const Plan& to);
// "dp 256 x tp 1 x pp 1 x cp 1, zero 1"
std::string describe_layout(const Plan& plan);
// Reads a file (errors name the file and, for bad JSON, the byte offset).
nlohmann::json read_json_file(const std::string& path);
Plan load_plan(const std::string& path);

}  // namespace ditwin
