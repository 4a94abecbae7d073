// Plan parsing and validation. Every rule lives here, once, and its message names the path.
#include "model/plan.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/errors.hpp"
#include "model/json_reader.hpp"

namespace ditwin {

const char* to_string(Recompute r) {
  switch (r) {
    case Recompute::none: return "none";
    case Recompute::selective: return "selective";
    case Recompute::full: return "full";
  }
  return "?";
}
const char* to_string(PipelineSchedule s) {
  switch (s) {
    case PipelineSchedule::gpipe: return "gpipe";
    case PipelineSchedule::one_f_one_b: return "1f1b";
    case PipelineSchedule::interleaved: return "interleaved";
  }
  return "?";
}
const char* to_string(Topology t) { return t == Topology::fat_tree ? "fat_tree" : "rail_optimized"; }
const char* to_string(TimestepKind k) {
  switch (k) {
    case TimestepKind::uniform: return "uniform";
    case TimestepKind::logit_normal: return "logit_normal";
    case TimestepKind::mode: return "mode";
    case TimestepKind::cosmap: return "cosmap";
  }
  return "?";
}

double OptimizerSpec::state_bytes_per_param() const {
  if (kind == "adamw") return 8;                  // m and v in fp32
  return momentum > 0 ? 4 : 0;                    // sgd: momentum buffer in fp32
}

double ClusterSpec::nic_bytes_per_s() const {
  double gbps = network.nic_gbps > 0 ? network.nic_gbps : device.default_nic_gbps;
  return gbps * 1e9 / 8;
}

long long Plan::micro_batches() const {
  return training.global_batch / (training.micro_batch * parallelism.dp);
}

long long Plan::tokens_per_step() const { return training.global_batch * model.tokens_per_sample(); }

namespace {

// Bounds that keep every product of the plan's sizes (tokens, FLOPs, bytes, op counts) far from
// 64-bit overflow; each is orders of magnitude beyond any real training job.
constexpr long long max_token_side = 1LL << 12;   // 16.7 M image tokens a sample
constexpr long long max_global_batch = 1LL << 31;  // samples a step

void require(bool ok, JsonReader& r, const std::string& key, const std::string& rule) {
  if (!ok) r.fail(key, rule);
}

int positive_int(JsonReader& r, const std::string& key, long long fallback, bool required = false) {
  long long v = required ? r.integer(key) : r.integer(key, fallback);
  if (v < 1) r.fail(key, "must be >= 1, got " + std::to_string(v));
  if (v > (1LL << 30)) r.fail(key, "is implausibly large (" + std::to_string(v) + ")");
  return static_cast<int>(v);
}

// A count that may be 0 (absent features) but not negative or absurd.
int count(JsonReader& r, const std::string& key, long long fallback) {
  long long v = r.integer(key, fallback);
  if (v < 0) r.fail(key, "must be >= 0, got " + std::to_string(v));
  if (v > (1LL << 30)) r.fail(key, "is implausibly large (" + std::to_string(v) + ")");
  return static_cast<int>(v);
}

double positive_number(JsonReader& r, const std::string& key, double fallback) {
  double v = r.number(key, fallback);
  if (!(v > 0)) r.fail(key, "must be > 0");
  return v;
}

double non_negative(JsonReader& r, const std::string& key, double fallback) {
  double v = r.number(key, fallback);
  if (v < 0) r.fail(key, "must be >= 0");
  return v;
}

ModelSpec parse_model(JsonReader r) {
  ModelSpec m;
  std::string preset = r.string("preset", "");
  static const std::vector<std::string> families = {"dit", "mmdit", "unified", "gpt", "llama"};
  if (!preset.empty()) {
    m = model_preset(preset, r.path_of("preset"));
  } else {
    if (!r.has("family")) r.fail("preset", "is required unless \"family\" and the sizes are spelled out");
    std::string family = r.choice("family", families, "");
    m.family = static_cast<ModelFamily>(std::find(families.begin(), families.end(), family) -
                                        families.begin());
    m.preset = "";
    if (m.family == ModelFamily::llama || m.family == ModelFamily::unified) m.gated_mlp = true;
    if (m.family == ModelFamily::dit || m.family == ModelFamily::mmdit ||
        m.family == ModelFamily::gpt)
      m.linear_bias = true;
    if (m.family == ModelFamily::gpt) m.tied_embeddings = true;
  }
  if (!preset.empty() && r.has("family")) {
    std::string family = r.choice("family", families, to_string(m.family));
    if (family != to_string(m.family))
      r.fail("family", "\"" + family + "\" contradicts preset " + preset + " (family " +
                           to_string(m.family) + ")");
  }
  bool spelled = preset.empty();
  // Overriding a preset's width or heads carries its ratios along unless those are set too.
  bool mha = m.kv_heads == m.heads, mlp4 = m.ffn_hidden == 4 * m.hidden;
  m.layers = positive_int(r, "layers", m.layers, spelled);
  m.hidden = positive_int(r, "hidden", m.hidden, spelled);
  m.heads = positive_int(r, "heads", m.heads, spelled);
  m.kv_heads = positive_int(r, "kv_heads", m.kv_heads && !mha ? m.kv_heads : m.heads);
  m.ffn_hidden = positive_int(r, "ffn_hidden", m.ffn_hidden && !mlp4 ? m.ffn_hidden : 4LL * m.hidden);
  m.gated_mlp = r.boolean("gated_mlp", m.gated_mlp);
  m.linear_bias = r.boolean("linear_bias", m.linear_bias);
  require(m.hidden % m.heads == 0, r, "heads",
          std::to_string(m.heads) + " does not divide model.hidden " + std::to_string(m.hidden));
  require(m.heads % m.kv_heads == 0, r, "kv_heads",
          std::to_string(m.kv_heads) + " does not divide model.heads " + std::to_string(m.heads));

  bool image = m.family != ModelFamily::gpt && m.family != ModelFamily::llama;
  m.image_size = count(r, "image_size", m.image_size);
  m.vae_downsample = positive_int(r, "vae_downsample", m.vae_downsample);
  m.latent_channels = positive_int(r, "latent_channels", m.latent_channels);
  m.patch = positive_int(r, "patch", m.patch);
  m.num_classes = count(r, "num_classes", m.num_classes);
  m.learn_sigma = r.boolean("learn_sigma", m.learn_sigma);
  m.frequency_embedding = positive_int(r, "frequency_embedding", m.frequency_embedding);
  m.text_tokens = count(r, "text_tokens", m.text_tokens);
  m.context_dim = count(r, "context_dim", m.context_dim);
  m.pooled_dim = count(r, "pooled_dim", m.pooled_dim);
  m.seq_len = count(r, "seq_len", m.seq_len);
  m.vocab = count(r, "vocab", m.vocab);
  m.tied_embeddings = r.boolean("tied_embeddings", m.tied_embeddings);
  if (image) {
    require(m.image_size > 0, r, "image_size", "must be > 0 for a " + std::string(to_string(m.family)) + " model");
    long long cell = 1LL * m.vae_downsample * m.patch;  // both <= 2^30: no overflow in 64 bits
    require(cell <= m.image_size, r, "patch",
            std::to_string(m.patch) + " x vae_downsample " + std::to_string(m.vae_downsample) +
                " exceeds image_size " + std::to_string(m.image_size));
    require(m.image_size % cell == 0, r, "image_size",
            std::to_string(m.image_size) + " is not a multiple of vae_downsample x patch = " +
                std::to_string(cell));
    long long side = m.image_size / cell;  // tokens per side of the latent grid
    require(side <= max_token_side, r, "image_size",
            std::to_string(m.image_size) + " / (vae_downsample x patch) = " + std::to_string(side) +
                " tokens a side (" + std::to_string(side * side) + " a sample) exceeds the " +
                std::to_string(max_token_side) + " a side this build models");
  } else {
    require(m.seq_len > 0, r, "seq_len", "must be > 0 for a " + std::string(to_string(m.family)) + " model");
    require(m.vocab > 0, r, "vocab", "must be > 0 for a " + std::string(to_string(m.family)) + " model");
  }
  if (m.family == ModelFamily::mmdit) {
    require(m.text_tokens > 0, r, "text_tokens", "must be > 0 for an mmdit model (the context length)");
    require(m.context_dim > 0, r, "context_dim", "must be > 0 for an mmdit model");
  }
  if (m.family == ModelFamily::unified) {
    require(m.vocab > 0, r, "vocab", "must be > 0 for a unified model (its text tokens)");
    require(m.text_tokens > 0, r, "text_tokens", "must be > 0 for a unified model");
  }
  r.finish();
  return m;
}

// training.objective.timesteps. A key that belongs to another kind is refused, not ignored: a
// plan that says {"kind": "mode", "s": 1.29} would otherwise train with the default scale.
void parse_timesteps(JsonReader ts, const ModelSpec& model, ObjectiveSpec& o) {
  static const std::vector<TimestepKind> kinds = {TimestepKind::uniform, TimestepKind::logit_normal,
                                                  TimestepKind::mode, TimestepKind::cosmap};
  std::vector<std::string> names;
  for (TimestepKind k : kinds) names.push_back(to_string(k));
  const std::string kind = ts.choice("kind", names, to_string(o.timesteps));
  o.timesteps = kinds[std::find(names.begin(), names.end(), kind) - names.begin()];
  for (const char* key : {"m", "s", "scale", "shift", "base_resolution"}) ts.accept(key);  // for did-you-mean
  auto only_for = [&](const std::string& key, TimestepKind owner, const std::string& hint) {
    if (ts.has(key) && o.timesteps != owner)
      ts.fail(key, "belongs to kind \"" + std::string(to_string(owner)) + "\", not \"" + kind + "\"" + hint);
  };
  only_for("m", TimestepKind::logit_normal, "");
  only_for("s", TimestepKind::logit_normal, o.timesteps == TimestepKind::mode ? " (the mode kind's s is \"scale\")" : "");
  only_for("scale", TimestepKind::mode, "");
  if (o.timesteps == TimestepKind::logit_normal) {
    o.m = ts.number("m", o.m);
    o.s = positive_number(ts, "s", o.s);
  }
  if (o.timesteps == TimestepKind::mode) {
    o.mode_scale = ts.number("scale", o.mode_scale);
    if (o.mode_scale < mode_scale_min || o.mode_scale > mode_scale_max) {
      std::ostringstream rule;
      rule << "must be in [-1, 2/(pi - 2) = " << mode_scale_max << "] (outside it f_mode is not monotone), got "
           << o.mode_scale;
      ts.fail("scale", rule.str());
    }
  }
  if (ts.has("shift")) {
    const nlohmann::json& v = ts.raw("shift");
    const std::string rule = "must be a number > 0 or \"auto\", got " + v.dump();
    if (v.is_string()) {
      if (v.get<std::string>() != "auto") ts.fail("shift", rule);
      if (model.image_size <= 0)
        ts.fail("shift", "\"auto\" scales with model.image_size, which a " + std::string(to_string(model.family)) +
                             " model does not have");
      o.shift_auto = true;
    } else {
      if (!v.is_number()) ts.fail("shift", rule);
      o.shift = ts.number("shift");
      if (!(o.shift > 0)) ts.fail("shift", rule);
    }
  }
  if (ts.has("base_resolution") && !o.shift_auto)
    ts.fail("base_resolution", "is used only with \"shift\": \"auto\"");
  o.base_resolution = positive_int(ts, "base_resolution", o.base_resolution);
  ts.finish();
}

TrainingSpec parse_training(JsonReader r, const ModelSpec& model) {
  TrainingSpec t;
  t.global_batch = r.integer("global_batch");
  if (t.global_batch < 1) r.fail("global_batch", "must be >= 1");
  if (t.global_batch > max_global_batch)
    r.fail("global_batch", std::to_string(t.global_batch) + " samples a step exceeds the " +
                               std::to_string(max_global_batch) + " this build models");
  t.micro_batch = r.integer("micro_batch", 1);
  if (t.micro_batch < 1) r.fail("micro_batch", "must be >= 1");
  if (t.micro_batch > t.global_batch)
    r.fail("micro_batch", std::to_string(t.micro_batch) + " exceeds global_batch " + std::to_string(t.global_batch));
  std::string precision = r.choice("precision", {"fp32", "bf16", "fp16", "fp8"}, "bf16");
  t.precision = precision == "fp32" ? Precision::fp32
                : precision == "bf16" ? Precision::bf16
                : precision == "fp16" ? Precision::fp16
                                      : Precision::fp8;
  {
    JsonReader o = r.object("optimizer");
    t.optimizer.kind = o.choice("kind", {"adamw", "sgd"}, "adamw");
    t.optimizer.lr = positive_number(o, "lr", 1e-4);
    t.optimizer.beta1 = o.number("beta1", 0.9);
    t.optimizer.beta2 = o.number("beta2", 0.999);
    t.optimizer.eps = positive_number(o, "eps", 1e-8);
    t.optimizer.weight_decay = non_negative(o, "weight_decay", 0.0);
    t.optimizer.momentum = non_negative(o, "momentum", 0.0);
    if (t.optimizer.beta1 < 0 || t.optimizer.beta1 >= 1) o.fail("beta1", "must be in [0, 1)");
    if (t.optimizer.beta2 < 0 || t.optimizer.beta2 >= 1) o.fail("beta2", "must be in [0, 1)");
    if (t.optimizer.momentum >= 1) o.fail("momentum", "must be in [0, 1)");
    o.finish();
  }
  {
    JsonReader o = r.object("objective");
    std::string fallback = model.is_diffusion() || model.family == ModelFamily::unified
                               ? "rectified_flow" : "next_token";
    t.objective.kind = o.choice("kind", {"rectified_flow", "ddpm", "next_token"}, fallback);
    bool lm = model.family == ModelFamily::gpt || model.family == ModelFamily::llama;
    if (lm && t.objective.kind != "next_token")
      o.fail("kind", "\"" + t.objective.kind + "\" needs images; a " + to_string(model.family) +
                         " model trains with \"next_token\"");
    if (!lm && t.objective.kind == "next_token" && model.family != ModelFamily::unified)
      o.fail("kind", "\"next_token\" needs a text model; a " + std::string(to_string(model.family)) +
                         " model trains with \"rectified_flow\" or \"ddpm\"");
    t.objective.image_weight = non_negative(o, "image_weight", 5.0);
    if (o.has("image_weight") && model.family != ModelFamily::unified)
      o.fail("image_weight", "weighs the image loss against the text loss of a unified model; a " +
                                 std::string(to_string(model.family)) + " model has one loss");
    parse_timesteps(o.object("timesteps"), model, t.objective);
    o.finish();
  }
  std::string recompute = r.choice("recompute", {"none", "selective", "full"}, "none");
  t.recompute = recompute == "none" ? Recompute::none
                : recompute == "selective" ? Recompute::selective
                                           : Recompute::full;
  t.flash_attention = r.boolean("flash_attention", true);
  {
    JsonReader p = r.object("privacy");
    // A privacy section turns DP-SGD on unless it says "enabled": false.
    t.privacy.enabled = p.boolean("enabled", r.has("privacy"));
    t.privacy.clip_norm = positive_number(p, "clip_norm", 1.0);
    t.privacy.noise_multiplier = non_negative(p, "noise_multiplier", 0.0);
    t.privacy.target_epsilon = non_negative(p, "target_epsilon", 0.0);
    t.privacy.delta = p.number("delta", 1e-5);
    if (!(t.privacy.delta > 0 && t.privacy.delta < 1)) p.fail("delta", "must be in (0, 1)");
    t.privacy.sampling = p.choice("sampling", {"poisson", "shuffle"}, "poisson");
    t.privacy.dataset_size = p.integer("dataset_size", 0);
    t.privacy.conversion = p.choice("conversion", {"improved", "classic"}, "improved");
    t.privacy.accountant = p.choice("accountant", {"rdp", "prv"}, "rdp");
    t.privacy.expected_batch = p.integer("expected_batch", t.global_batch);
    if (t.privacy.expected_batch < 1 || t.privacy.expected_batch > t.global_batch)
      p.fail("expected_batch", "must be in [1, training.global_batch = " + std::to_string(t.global_batch) + "], got " +
                                   std::to_string(t.privacy.expected_batch));
    if (p.has("expected_batch") && t.privacy.sampling != "poisson")
      p.fail("expected_batch", "applies to poisson sampling only (shuffled batches are global_batch examples)");
    if (t.privacy.enabled) {
      bool has_noise = p.has("noise_multiplier") && !p.raw("noise_multiplier").is_null();
      bool has_target = t.privacy.target_epsilon > 0;
      if (!has_noise && !has_target)
        p.fail("noise_multiplier", "or target_epsilon must be set when privacy is enabled");
      if (has_noise && has_target)
        p.fail("target_epsilon", "and noise_multiplier are both set: give one (the noise is solved for the target)");
      if (p.has("target_epsilon") && !has_target) p.fail("target_epsilon", "must be > 0");
      if (!p.has("dataset_size"))
        p.fail("dataset_size", "is required when privacy is enabled (the examples sampled from; q = global_batch / dataset_size)");
      if (t.privacy.dataset_size < t.global_batch)
        p.fail("dataset_size", "must be >= training.global_batch (" +
                                   std::to_string(t.global_batch) + ") when privacy is enabled");
    }
    p.finish();
  }
  r.accept("data");  // "data": null is absent
  if (r.has("data")) {
    JsonReader d = r.object("data");
    t.data.path = d.string("path");
    if (t.data.path.empty()) d.fail("path", "must name the dataset directory (the one holding index.json)");
    t.data.shuffle = d.boolean("shuffle", true);
    d.finish();
    if (model.family == ModelFamily::gpt || model.family == ModelFamily::llama)
      d.fail("path", std::string("datasets on disk feed dit, mmdit and unified models, not ") + to_string(model.family));
  }
  long long seed = r.integer("seed", 0);
  if (seed < 0) r.fail("seed", "must be >= 0");
  t.seed = static_cast<std::uint64_t>(seed);
  r.finish();
  return t;
}

ParallelismSpec parse_parallelism(JsonReader r) {
  ParallelismSpec p;
  p.dp = positive_int(r, "dp", 1);
  p.tp = positive_int(r, "tp", 1);
  p.pp = positive_int(r, "pp", 1);
  p.cp = positive_int(r, "cp", 1);
  p.sequence_parallel = r.boolean("sequence_parallel", false);
  long long zero = r.integer("zero", 0);
  if (zero < 0 || zero > 3) r.fail("zero", std::to_string(zero) + " is not a ZeRO stage (0, 1, 2 or 3)");
  p.zero = static_cast<int>(zero);
  if (r.boolean("fsdp", false)) {
    if (r.has("zero") && !r.raw("zero").is_null() && p.zero != 3)
      r.fail("fsdp", "true contradicts zero " + std::to_string(p.zero) + " (FSDP full shard is zero 3)");
    p.zero = 3;
  }
  std::string schedule = r.choice("schedule", {"1f1b", "interleaved", "gpipe"}, "1f1b");
  p.schedule = schedule == "1f1b" ? PipelineSchedule::one_f_one_b
               : schedule == "interleaved" ? PipelineSchedule::interleaved
                                           : PipelineSchedule::gpipe;
  p.virtual_stages = positive_int(r, "virtual_stages", p.schedule == PipelineSchedule::interleaved ? 2 : 1);
  if (p.virtual_stages > 1 && p.schedule != PipelineSchedule::interleaved)
    r.fail("virtual_stages", "> 1 needs schedule \"interleaved\"");
  p.bucket_bytes = positive_number(r, "bucket_mb", 25) * 1e6;
  if (p.bucket_bytes < 1e4) r.fail("bucket_mb", "must be >= 0.01 (10 kB): smaller buckets mean millions of collectives");
  p.overlap_grad_reduce = r.boolean("overlap_grad_reduce", true);
  p.overlap_param_gather = r.boolean("overlap_param_gather", true);
  r.finish();
  return p;
}

ClusterSpec parse_cluster(JsonReader r) {
  ClusterSpec c;
  c.device = device_preset(r.string("device"), r.path_of("device"));
  c.nodes = positive_int(r, "nodes", 1);
  c.devices_per_node = positive_int(r, "devices_per_node", 8);
  c.nvlink_bytes_per_s = positive_number(r, "nvlink_gbps", c.device.nvlink_bytes_per_s > 0 ? c.device.nvlink_bytes_per_s * 8 / 1e9 : 1) * 1e9 / 8;
  c.nvlink_latency_s = non_negative(r, "nvlink_latency_us", 1.0) * 1e-6;
  JsonReader n = r.object("network");
  std::string topology = n.choice("topology", {"fat_tree", "rail_optimized"}, "fat_tree");
  c.network.topology = topology == "fat_tree" ? Topology::fat_tree : Topology::rail_optimized;
  c.network.nic_gbps = positive_number(n, "nic_gbps", c.device.default_nic_gbps > 0 ? c.device.default_nic_gbps : 100);
  c.network.nics_per_node = positive_int(n, "nics_per_node", c.devices_per_node);
  c.network.oversubscription = n.number("oversubscription", 1);
  if (c.network.oversubscription < 1) n.fail("oversubscription", "must be >= 1 (1 = full bisection)");
  long long levels = n.integer("levels", 2);
  if (levels < 1 || levels > 2) n.fail("levels", "must be 1 (one switch) or 2 (leaf and spine)");
  c.network.levels = static_cast<int>(levels);
  c.network.nodes_per_leaf = positive_int(n, "nodes_per_leaf", 16);
  c.network.latency_s = non_negative(n, "latency_us", 5.0) * 1e-6;
  n.finish();
  r.finish();
  return c;
}

const std::vector<std::string> inject_kinds = {"kill", "hang", "kill_during_checkpoint", "corrupt_shard", "nan", "spike"};

// A random injection time: uniform in [0, within_s), from the seed alone (SplitMix64), so the
// executor and the simulator agree on it.
double random_time(std::uint64_t seed, double within_s) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return within_s * static_cast<double>(z >> 11) * 0x1.0p-53;
}

// The rules one injection obeys, however it was written; `fail(key, rule)` reports.
template <typename Fail>
void check_inject(const InjectSpec& in, bool has_step, bool has_time, Fail fail) {
  bool at_checkpoint = in.kind == "kill_during_checkpoint" || in.kind == "corrupt_shard";
  if (has_step == has_time) fail("step", "give exactly one of step, at_s, or seed + within_s");
  if (at_checkpoint && !has_step) fail("step", in.kind + " needs the step of the checkpoint it hits");
  if (at_checkpoint && in.step < 1) fail("step", in.kind + " hits the checkpoint taken after that many steps: must be >= 1");
  if (!(in.fraction > 0 && in.fraction < 1)) fail("fraction", "must be in (0, 1)");
  if (in.numerical() && !has_step) fail("step", in.kind + " needs the step whose loss it hits (step=S)");
  if (in.kind == "spike" && !(in.factor > 0 && std::isfinite(in.factor))) fail("factor", "must be a finite number > 0");
}

InjectSpec parse_inject_object(JsonReader& c) {
  InjectSpec in;
  in.kind = c.choice("kind", inject_kinds, "");
  if (in.kind.empty()) c.fail("kind", "is required (one of kill hang kill_during_checkpoint corrupt_shard)");
  in.rank = count(c, "rank", 0);
  bool has_step = c.has("step"), random = c.has("seed") || c.has("within_s");
  if (has_step) in.step = count(c, "step", 0);
  if (c.has("at_s")) in.at_s = non_negative(c, "at_s", 0);
  if (random) {
    if (c.has("at_s")) c.fail("seed", "give at_s or seed + within_s, not both");
    if (!c.has("seed") || !c.has("within_s")) c.fail(c.has("seed") ? "within_s" : "seed", "a random time needs both seed and within_s");
    long long seed = c.integer("seed");
    in.at_s = random_time(static_cast<std::uint64_t>(seed), positive_number(c, "within_s", 1));
  }
  in.fraction = c.number("fraction", 0.5);
  if (in.kind == "spike") {  // every rank's loss: no rank; the factor is required
    if (c.has("rank")) c.fail("rank", "spike scales every rank's loss and gradients: give no rank");
    if (!c.has("factor")) c.fail("factor", "is required (spike:step=S,factor=F)");
    in.factor = c.number("factor");
  }
  check_inject(in, has_step, in.at_s >= 0, [&](const std::string& key, const std::string& rule) { c.fail(key, rule); });
  c.finish();
  return in;
}

// --- numerical faults (issue 18 part 2) ---
NumericalSpec parse_numerical(JsonReader n) {
  NumericalSpec s;
  s.policy = n.choice("policy", {"skip", "rollback"}, "skip");
  s.spike_sigma = non_negative(n, "spike_sigma", 6);
  long long window = n.integer("window", 20);
  if (window < 2 || window > 100000) n.fail("window", "must be in [2, 100000] (losses the spike guard looks back over)");
  s.window = static_cast<int>(window);
  bool rollback = s.policy == "rollback";
  for (const char* key : {"skip_data_window", "lr_factor", "lr_steps", "max_rollbacks"})
    if (!rollback && n.has(key)) n.fail(key, "applies to \"policy\": \"rollback\" only (this plan's policy is skip)");
  s.skip_data_window = n.integer("skip_data_window", 1);
  if (s.skip_data_window < 0 || s.skip_data_window > 1000000000) n.fail("skip_data_window", "must be in [0, 1e9] (steps of data)");
  s.lr_factor = n.number("lr_factor", 1);
  if (!(s.lr_factor > 0 && s.lr_factor <= 1)) n.fail("lr_factor", "must be in (0, 1]");
  s.lr_steps = n.integer("lr_steps", 0);
  if (s.lr_steps < 0 || s.lr_steps > 1000000000) n.fail("lr_steps", "must be in [0, 1e9]");
  if (s.lr_factor != 1 && s.lr_steps == 0) n.fail("lr_steps", "must be >= 1 with lr_factor " + std::to_string(s.lr_factor) + " (the steps it lasts)");
  long long maxr = n.integer("max_rollbacks", 3);
  if (maxr < 1 || maxr > 1000) n.fail("max_rollbacks", "must be in [1, 1000]");
  s.max_rollbacks = static_cast<int>(maxr);
  s.rate_per_day = non_negative(n, "rate_per_day", 0);
  if (s.rate_per_day > 1e6) n.fail("rate_per_day", "must be <= 1e6");
  n.finish();
  return s;
}
// --- end numerical faults ---

ReliabilitySpec parse_reliability(JsonReader r) {
  ReliabilitySpec s;
  static const std::vector<std::string> presets = {"none", "llama3", "meta-rsc"};
  if (r.has("failures") && r.raw("failures").is_object()) {
    // Spelled out: a preset to start from (optional), the distribution, categories, planned maintenance.
    JsonReader f = r.object("failures");
    s.failures = f.choice("preset", presets, "none");
    s.distribution = f.choice("distribution", {"exponential", "weibull"}, "exponential");
    s.weibull_shape = positive_number(f, "weibull_shape", 1.0);
    if (s.distribution == "exponential" && s.weibull_shape != 1.0)
      f.fail("weibull_shape", "needs \"distribution\": \"weibull\"");
    s.planned_per_node_day = f.has("planned_per_node_day") ? non_negative(f, "planned_per_node_day", 0) : -1;
    if (f.has("categories")) {
      const auto& list = f.raw("categories");
      if (!list.is_array()) f.fail("categories", "must be an array of objects");
      for (size_t i = 0; i < list.size(); ++i) {
        std::string at = f.path_of("categories") + "[" + std::to_string(i) + "]";
        if (!list[i].is_object()) throw InputError(at + ": must be an object");
        JsonReader c(list[i], at);
        FailureCategorySpec cat;
        cat.name = c.string("name");
        if (cat.name.empty()) c.fail("name", "must not be empty");
        cat.per_node_day = non_negative(c, "per_node_day", 0);
        cat.per_device_hour = non_negative(c, "per_device_hour", 0);
        if (c.has("per_node_day") == c.has("per_device_hour"))
          c.fail("per_node_day", "give exactly one of per_node_day and per_device_hour");
        cat.detection = c.choice("detection", {"heartbeat", "timeout"}, "heartbeat");
        cat.node_lost = c.boolean("node_lost", true);
        c.finish();
        s.categories.push_back(cat);
      }
    }
    f.finish();
  } else {
    s.failures = r.choice("failures", presets, "none");
  }
  s.failure_rate_scale = non_negative(r, "failure_rate_scale", 1.0);
  {
    JsonReader c = r.object("checkpoint");
    if (c.has("interval_min") && c.raw("interval_min").is_string()) {
      std::string v = c.string("interval_min");
      if (v != "optimal") c.fail("interval_min", "must be a number of minutes or \"optimal\", got \"" + v + "\"");
      s.checkpoint.interval_s = -1;
    } else {
      s.checkpoint.interval_s = positive_number(c, "interval_min", 30) * 60;
    }
    s.checkpoint.mode = c.choice("mode", {"sync", "async", "in_memory"}, "async");
    s.checkpoint.write_bytes_per_s = positive_number(c, "write_gbps", 16) * 1e9 / 8;
    s.checkpoint.read_bytes_per_s = positive_number(c, "read_gbps", 32) * 1e9 / 8;
    s.checkpoint.snapshot_bytes_per_s = positive_number(c, "snapshot_gbps", 200) * 1e9 / 8;
    s.checkpoint.write_s = c.has("write_s") ? non_negative(c, "write_s", 0) : -1;
    s.checkpoint.load_s = c.has("load_s") ? non_negative(c, "load_s", 0) : -1;
    s.checkpoint.keep = positive_int(c, "keep", 2);
    s.checkpoint.dir = c.string("dir", "");
    s.checkpoint.interval_steps = count(c, "interval_steps", 0);
    c.finish();
  }
  s.heartbeat_s = positive_number(r, "heartbeat_s", 30);
  s.nccl_timeout_s = positive_number(r, "nccl_timeout_s", 600);
  s.reschedule_s = non_negative(r, "reschedule_s", 120);
  s.process_start_s = non_negative(r, "process_start_s", 60);
  s.comm_init_s = non_negative(r, "comm_init_s", 30);
  s.spare_nodes = count(r, "spare_nodes", 0);
  s.straggler_fraction = non_negative(r, "straggler_fraction", 0);
  if (s.straggler_fraction > 1) r.fail("straggler_fraction", "must be in [0, 1]");
  s.spare_swap_s = non_negative(r, "spare_swap_s", 60);
  s.spare_repair_s = non_negative(r, "spare_repair_hours", 48) * 3600;
  s.straggler_slowdown = r.number("straggler_slowdown", 1.0);
  if (s.straggler_slowdown < 1) r.fail("straggler_slowdown", "must be >= 1 (1 = no slowdown)");
  s.exit_detection_s = non_negative(r, "exit_detection_s", 0.5);
  {
    JsonReader p = r.object("restart");
    s.restart.max_restarts = count(p, "max_restarts", 3);
    s.restart.backoff_s = non_negative(p, "backoff_s", 0);
    s.restart.backoff_factor = p.number("backoff_factor", 2);
    if (s.restart.backoff_factor < 1) p.fail("backoff_factor", "must be >= 1");
    s.restart.backoff_max_s = non_negative(p, "backoff_max_s", 60);
    p.finish();
  }
  if (r.has("numerical")) s.numerical = parse_numerical(r.object("numerical"));
  r.accept("rollouts");  // controlled rollouts: resolve_rollouts, once the whole plan is known
  if (r.has("inject")) {
    const auto& list = r.raw("inject");
    if (!list.is_array()) r.fail("inject", "must be an array of objects");
    for (size_t i = 0; i < list.size(); ++i) {
      std::string at = r.path_of("inject") + "[" + std::to_string(i) + "]";
      if (!list[i].is_object()) throw InputError(at + ": must be an object");
      JsonReader c(list[i], at);
      s.inject.push_back(parse_inject_object(c));
    }
  }
  r.finish();
  return s;
}

RunSpec parse_run(JsonReader r) {
  RunSpec run;
  run.steps = r.integer("steps", 1000);
  if (run.steps < 1) r.fail("steps", "must be >= 1");
  run.duration_s = non_negative(r, "duration_days", 0) * 86400;
  r.finish();
  return run;
}

std::string str(long long v) { return std::to_string(v); }

}  // namespace

// Rules that tie sections together. Each names the field a user would change.
void validate_plan(Plan& p) {
  p.warnings.clear();
  const auto& m = p.model;
  const auto& par = p.parallelism;
  auto fail = [](const std::string& path, const std::string& rule) { throw InputError(path + ": " + rule); };
  if (p.parallelism.world() != p.cluster.gpus())
    fail("parallelism", "dp x tp x pp x cp = " + str(par.dp) + " x " + str(par.tp) + " x " + str(par.pp) +
                            " x " + str(par.cp) + " = " + str(par.world()) + " ranks, but the cluster has " +
                            str(p.cluster.nodes) + " x " + str(p.cluster.devices_per_node) + " = " +
                            str(p.cluster.gpus()) + " devices");
  for (size_t i = 0; i < p.reliability.inject.size(); ++i)
    if (p.reliability.inject[i].rank >= par.world())
      fail("reliability.inject[" + std::to_string(i) + "].rank", str(p.reliability.inject[i].rank) +
                                                                   " is not a rank of this plan (it has " + str(par.world()) + ")");
  if (m.heads % par.tp != 0)
    fail("parallelism.tp", str(par.tp) + " does not divide model.heads " + str(m.heads));
  if (m.kv_heads % par.tp != 0 && par.tp % m.kv_heads != 0)
    fail("parallelism.tp", str(par.tp) + " and model.kv_heads " + str(m.kv_heads) +
                               " must divide one another (KV heads are split or replicated across TP)");
  if (m.ffn_hidden % par.tp != 0)
    fail("parallelism.tp", str(par.tp) + " does not divide model.ffn_hidden " + str(m.ffn_hidden));
  if (m.vocab > 0 && m.vocab % par.tp != 0)
    fail("parallelism.tp", str(par.tp) + " does not divide model.vocab " + str(m.vocab) +
                               " (pad the vocabulary to a multiple of tp)");
  int chunks = par.pp * par.virtual_stages;
  if (m.layers < chunks)
    fail("parallelism.pp", "pp x virtual_stages = " + str(chunks) + " exceeds model.layers " + str(m.layers));
  if (m.layers % chunks != 0 && m.layers / chunks < 2)
    fail("parallelism.pp", "pp x virtual_stages = " + str(chunks) + " does not divide model.layers " + str(m.layers) +
                               " and leaves under two layers per stage to rebalance");
  if (m.tokens_per_sample() % par.cp != 0)
    fail("parallelism.cp", str(par.cp) + " does not divide the " + str(m.tokens_per_sample()) + " tokens of a sample");
  if (m.family == ModelFamily::mmdit && (m.image_tokens() % par.cp != 0 || m.text_tokens % par.cp != 0))
    fail("parallelism.cp", str(par.cp) + " must divide both MMDiT streams: " + str(m.image_tokens()) + " image and " +
                               str(m.text_tokens) + " text tokens");
  if (m.tied_embeddings && m.vocab == 0)
    fail("model.tied_embeddings", "true needs a vocabulary (model.vocab > 0)");
  if (par.schedule == PipelineSchedule::interleaved && par.virtual_stages < 2)
    fail("parallelism.virtual_stages", "must be >= 2 with schedule \"interleaved\" (1 is plain 1f1b)");
  if (par.sequence_parallel && (m.tokens_per_sample() / par.cp) % par.tp != 0)
    fail("parallelism.sequence_parallel", "tokens per CP rank " + str(m.tokens_per_sample() / par.cp) +
                                              " are not divisible by tp " + str(par.tp));
  const auto& t = p.training;
  if (t.global_batch % (t.micro_batch * par.dp) != 0)
    fail("training.global_batch", str(t.global_batch) + " is not a multiple of micro_batch x dp = " +
                                      str(t.micro_batch) + " x " + str(par.dp) + " = " + str(t.micro_batch * par.dp));
  long long mb = p.micro_batches();
  if (par.schedule == PipelineSchedule::interleaved && par.pp > 1 && mb % par.pp != 0)
    fail("parallelism.schedule", "interleaved 1F1B needs micro-batches per step (" + str(mb) +
                                     ") to be a multiple of pp (" + str(par.pp) + ")");
  if (t.precision == Precision::fp8 && p.cluster.device.peak_flops_fp8 <= 0 && !p.cluster.device.measured)
    fail("training.precision", "fp8 is not supported by " + p.cluster.device.name);
  if (p.model.family != ModelFamily::mmdit && p.model.context_dim > 0)
    fail("model.context_dim", "only mmdit models take a text context");
  if (p.model.family != ModelFamily::mmdit && p.model.pooled_dim > 0)
    fail("model.pooled_dim", "only mmdit models take a pooled text vector");
  if (p.model.is_diffusion() && p.model.vocab > 0)
    fail("model.vocab", "a " + std::string(to_string(p.model.family)) + " model has no text vocabulary (use unified)");
  if (par.schedule == PipelineSchedule::interleaved && par.pp == 1)
    fail("parallelism.schedule", "\"interleaved\" needs pp > 1");
  if (p.model.family == ModelFamily::dit && p.model.text_tokens > 0)
    fail("model.text_tokens", "a dit model has no text tokens (use mmdit or unified)");

  // Legal, but a user should hear about it.
  auto warn = [&](const std::string& w) { p.warnings.push_back(w); };
  if (m.layers % chunks != 0)
    warn("model.layers " + str(m.layers) + " is not a multiple of pp x virtual_stages " + str(chunks) +
         ": the first and last stages get fewer layers");
  if (par.tp > p.cluster.devices_per_node)
    warn("parallelism.tp " + str(par.tp) + " spans nodes: tensor-parallel traffic leaves NVLink");
  if (par.sequence_parallel && par.tp == 1) warn("parallelism.sequence_parallel has no effect with tp 1");
  if (t.privacy.enabled && t.privacy.target_epsilon == 0 && t.privacy.noise_multiplier == 0)
    warn("training.privacy.noise_multiplier 0 adds no noise: gradients are clipped but nothing is private (epsilon is infinite)");
  if (t.privacy.enabled && t.privacy.sampling == "shuffle")
    warn("training.privacy.sampling shuffle is accounted as if Poisson-sampled, as Opacus and TF-Privacy do; only poisson carries the formal guarantee");
  if (par.pp > 1 && mb < par.pp)
    warn("only " + str(mb) + " micro-batches for " + str(par.pp) + " pipeline stages: most of the step is bubble");
  if (par.pp > 1 && par.schedule == PipelineSchedule::gpipe)
    warn("parallelism.schedule gpipe keeps every micro-batch's activations alive; 1f1b keeps pp of them");
  if (par.zero == 3 && par.dp * par.cp == 1) warn("parallelism.zero 3 with dp x cp = 1 shards nothing");
  if (t.precision == Precision::fp32 && !p.cluster.device.measured)
    warn("training.precision fp32 runs on TF32 tensor cores at half the bf16 peak");
}

Plan parse_plan(const nlohmann::json& document) {
  JsonReader root(document, "");
  // Unknown top-level keys first: a misspelt section would otherwise look like a missing one.
  for (const char* key : {"name", "description", "model", "training", "parallelism", "cluster",
                          "reliability", "run", "stages"})
    root.accept(key);
  root.finish();
  Plan p;
  p.name = root.string("name", "unnamed");
  p.description = root.string("description", "");
  JsonReader model = root.object("model");
  if (!root.has("model")) root.fail("model", "is required");
  p.model = parse_model(model);
  if (!root.has("training")) root.fail("training", "is required");
  p.training = parse_training(root.object("training"), p.model);
  p.parallelism = parse_parallelism(root.object("parallelism"));
  if (!root.has("cluster")) root.fail("cluster", "is required");
  p.cluster = parse_cluster(root.object("cluster"));
  p.reliability = parse_reliability(root.object("reliability"));
  p.run = parse_run(root.object("run"));
  validate_plan(p);
  if (document.contains("reliability") && document["reliability"].is_object() && document["reliability"].contains("rollouts"))
    resolve_rollouts(document, p);  // controlled rollouts (model/rollouts.cpp)
  if (root.has("stages")) p.stages = resolve_stages(document, p);  // multi-stage campaigns (model/stages.cpp)
  return p;
}

double RestartPolicySpec::backoff_before(int restart) const {
  if (restart < 1 || backoff_s <= 0) return 0;
  return std::min(backoff_max_s, backoff_s * std::pow(backoff_factor, restart - 1));
}

std::string InjectSpec::describe() const {
  std::ostringstream os;
  if (kind == "spike") {
    os << kind << ":step=" << step << ",factor=" << factor;
    return os.str();
  }
  os << kind << ":rank=" << rank;
  if (step >= 0) os << ",step=" << step;
  if (at_s >= 0) os << ",at_s=" << at_s;
  if (kind == "kill_during_checkpoint") os << ",fraction=" << fraction;
  return os.str();
}

void check_injections(const Plan& plan, const std::vector<InjectSpec>& inject, long long steps,
                      const std::function<std::string(std::size_t)>& where) {
  long long world = plan.parallelism.world();
  const auto& ck = plan.reliability.checkpoint;
  for (std::size_t i = 0; i < inject.size(); ++i) {
    const auto& in = inject[i];
    if (in.rank >= world)
      throw InputError(where(i) + ": rank " + std::to_string(in.rank) + " is not a rank of this plan (it has " +
                       std::to_string(world) + ")");
    if (in.step >= steps)
      throw InputError(where(i) + ": step " + std::to_string(in.step) + " is never reached in a run of " +
                       std::to_string(steps) + " steps");
    if (in.kind == "spike") {  // a spike the guard cannot see would only be a bad update
      const auto& num = plan.reliability.numerical;
      if (num.spike_sigma <= 0)
        throw InputError(where(i) + ": the spike guard is off (reliability.numerical.spike_sigma is 0)");
      if (in.step < num.window)
        throw InputError(where(i) + ": the spike guard needs " + std::to_string(num.window) +
                         " losses first (reliability.numerical.window): inject at step >= " + std::to_string(num.window));
    }
    if (in.kind == "kill_during_checkpoint" || in.kind == "corrupt_shard") {
      if (ck.interval_steps < 1)
        throw InputError(where(i) + ": needs checkpoints every N steps (reliability.checkpoint.interval_steps)");
      if (in.step % ck.interval_steps != 0)
        throw InputError(where(i) + ": no checkpoint is taken after step " + std::to_string(in.step) +
                         " (reliability.checkpoint.interval_steps is " + std::to_string(ck.interval_steps) + ")");
    }
  }
}

InjectSpec parse_inject(const std::string& text, const std::string& where) {
  auto colon = text.find(':');
  nlohmann::json j = nlohmann::json::object();
  j["kind"] = text.substr(0, colon);
  std::string rest = colon == std::string::npos ? "" : text.substr(colon + 1);
  std::stringstream parts(rest);
  std::string item;
  while (std::getline(parts, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw InputError(where + " \"" + text + "\": \"" + item + "\" is not key=value (e.g. kill:rank=1,step=7)");
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    try {
      std::size_t used = 0;
      double v = std::stod(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
      j[key] = v;
    } catch (const std::exception&) {
      throw InputError(where + " \"" + text + "\": " + key + "=" + value + " is not a number");
    }
  }
  JsonReader r(j, where + " \"" + text + "\": ");
  try {
    return parse_inject_object(r);
  } catch (const InputError& e) {
    // JsonReader paths read "prefix.key": keep the message, drop the join's stray dot.
    std::string m = e.what();
    auto pos = m.find(": .");
    if (pos != std::string::npos) m.erase(pos + 2, 1);
    throw InputError(m);
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw InputError(path + ": cannot read file: it is a directory");
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  // Nesting is refused before parsing, so no deep value ever exists: printing or destroying one
  // ~70,000 levels deep overflowed the stack. A linear scan outside strings (a parser callback
  // did the same at a third of the parse speed on a 126 MB trace).
  constexpr int max_depth = 64;
  const std::string text = buffer.str();
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > max_depth) throw InputError(path + ": values nested deeper than " + std::to_string(max_depth) + " levels");
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(path + ": not valid JSON (byte " + std::to_string(e.byte) + "): " + e.what());
  } catch (const nlohmann::json::out_of_range& e) {  // e.g. 1e999: a number no double holds
    throw InputError(path + ": a number out of range: " + e.what());
  }
}

Plan load_plan(const std::string& path) {
  auto document = read_json_file(path);
  try {
    Plan plan = parse_plan(document);
    resolve_rollout_files(plan, path);  // controlled rollouts: a second plan named by its file
    return plan;
  } catch (const InputError& e) {
    throw InputError(path + ": " + e.what());
  }
}

}  // namespace ditwin
