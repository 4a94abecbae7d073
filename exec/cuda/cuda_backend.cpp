// The CUDA backend: the DiT of exec/dit_model.cpp, op for op under the same names, on a GPU.
// Token path (patch embedding, norms, attention, MLP, final layer, loss) in bf16 activations
// with fp32 accumulation: cuBLASLt GEMMs on bf16 copies of the weights (refreshed from the fp32
// masters after every update), kernels/cuda for the rest. Conditioning path (timestep MLP, class
// embedding, adaLN modulation GEMMs: B rows, tiny) in fp32 on the master weights, so the
// per-sample shift/scale/gate gradients, summed over every token of every layer, never round to
// bf16. Gradients, optimizer states and master weights are fp32; AdamW is one fused kernel.
// Every op is timed with CUDA events on the stream it runs on.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>

#include "exec/backend.hpp"
#include "exec/cuda/cuda_backend.hpp"
#include "kernels/cuda/adamw.hpp"        // defines: adamw_update, sgd_update
#include "kernels/cuda/attention.hpp"    // defines: attention_forward, attention_backward
#include "kernels/cuda/elementwise.hpp"  // defines: gelu, silu, gated residual, loss, patchify, embeddings
#include "kernels/cuda/layernorm.hpp"    // defines: layernorm_modulate_forward/backward
#include "kernels/cuda/matmul.hpp"       // defines: Blas, matmul_forward/backward
#include "kernels/cuda/privacy.hpp"      // defines: per_sample_sq_norms, scale_sample_rows, add_gaussian_noise
#include "kernels/embedding.hpp"         // defines: pos_embed_2d_sincos (computed once on the host)
#include "model/errors.hpp"
#include "model/privacy.hpp"  // defines: ghost_norm_is_cheaper, clip_factors

namespace ditwin::exec {

namespace kc = ditwin::kernels::cuda;
using kc::bf16;

namespace {

constexpr float layernorm_eps = 1e-6f;
constexpr float max_period = 10000.0f;
constexpr float timestep_scale = 1000.0f;

// A device array of T, freed with its owner; allocated zero-filled.
template <typename T>
class Dev {
 public:
  Dev() = default;
  explicit Dev(std::size_t n) : n_(n) {
    if (n) {
      DITWIN_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
      DITWIN_CUDA_CHECK(cudaMemset(p_, 0, n * sizeof(T)));
      // The backend's streams do not wait for the legacy default stream the memset ran on.
      DITWIN_CUDA_CHECK(cudaDeviceSynchronize());
    }
  }
  Dev(Dev&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  Dev& operator=(Dev&& o) noexcept {
    if (this != &o) { free(); p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0; }
    return *this;
  }
  ~Dev() { free(); }
  T* get() const { return p_; }
  std::size_t size() const { return n_; }
  void zero(cudaStream_t s) { if (n_) DITWIN_CUDA_CHECK(cudaMemsetAsync(p_, 0, n_ * sizeof(T), s)); }

 private:
  void free() { if (p_) cudaFree(p_); p_ = nullptr; }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

struct EmbedLayout { std::size_t patch_w, patch_b, t_w1, t_b1, t_w2, t_b2, y_table, size; };
struct LayerLayout { std::size_t ada_w, ada_b, qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b, size; };
struct HeadLayout { std::size_t ada_w, ada_b, out_w, out_b, size; };

struct LayerActs {
  Dev<float> mod, mean1, rstd1, lse, mean2, rstd2;
  Dev<bf16> mod_bf, ln1, qkv, att, proj, x_mid, ln2, fc1, act, fc2;
};

struct MicroBatch {
  bool ready = false;
  Dev<float> x0, noise, t, t_scaled, t_freq, t_h1, t_a1, t_emb, c, silu_c, fmod, meanf, rstdf;
  Dev<int> y;
  Dev<double> loss;
  Dev<bf16> z, patches, fmod_bf, lnf, out_tok, v_hat;
  std::vector<Dev<bf16>> x;
  std::vector<LayerActs> layer;
  bool loss_done = false;
  // Backward.
  Dev<bf16> dx, d_ln, dqkv, datt, dproj, dfc1, dact, dfc2, dout_tok, dv_hat;
  Dev<float> dmod, dfmod, dsilu_c, dc, dt_a1, dt_h1;
  bool dc_ready = false;
  // DP-SGD: each layer's linears' output gradients, kept from backward to their clipped ".wgrad";
  // per-sample squared norms (in the buffers' 1/(B x micro-batches) scale), clip factors (device
  // and host), sample weights (0 masks an empty Poisson slot), scratch for the norms' Gram
  // matrices or per-sample gradients, and the scaled output gradients.
  struct Kept {
    Dev<float> mod;
    Dev<bf16> qkv, proj, fc1, fc2;
  };
  std::vector<Kept> kept;
  Dev<double> sq;
  Dev<float> clip, scratch, scaled_f;
  Dev<bf16> scaled_bf;
  std::vector<float> clip_host, weight_host;
  bool clipped = false;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Plan& plan, cudaStream_t compute, cudaStream_t comm)
      : m_(plan.model), cpu_(plan.model, static_cast<int>(plan.training.micro_batch), static_cast<int>(plan.micro_batches())),
        compute_(compute), comm_(comm) {
    B = static_cast<int>(plan.training.micro_batch);
    micro_batches_ = static_cast<int>(plan.micro_batches());
    H = m_.hidden; F = m_.ffn_hidden; NH = m_.heads; C = m_.latent_channels; Cout = m_.out_channels();
    S = m_.latent_size(); P = m_.patch; grid = S / P; T = grid * grid; fe = m_.frequency_embedding; L = m_.layers;
    classes = m_.num_classes; pin = P * P * C; pout = P * P * Cout;
    if (!kc::attention_supports_head_dim(H / NH))
      throw InputError("model.heads: the CUDA attention kernels take head dims 32, 64, 72 and 128; this model's is " +
                       std::to_string(H / NH));
    layout();
    const auto& groups = cpu_.groups();
    if (groups.size() != static_cast<std::size_t>(L + 2) || groups[0].size != el_.size || groups[1].size != ll_.size ||
        groups.back().size != hl_.size)
      throw std::logic_error("CUDA DiT: parameter layout differs from exec::DiT's");
    for (std::size_t g = 0; g < groups.size(); ++g) group_index_[groups[g].name] = static_cast<int>(g);
    params_.assign(groups.size(), nullptr);
    grads_.assign(groups.size(), nullptr);
    mirror_.resize(groups.size());
    mirrored_from_.assign(groups.size(), nullptr);
    for (std::size_t g = 0; g < groups.size(); ++g) mirror_[g] = Dev<bf16>(groups[g].size);
    std::vector<float> pe(static_cast<std::size_t>(T) * H);
    kernels::pos_embed_2d_sincos(pe.data(), grid, H);
    pos_embed_ = Dev<bf16>(pe.size());
    upload_as(pos_embed_.get(), pe);
    attn_work_ = Dev<unsigned char>(kc::attention_backward_workspace_bytes(B, T, H, NH));
    mbs_.resize(micro_batches_);
    // Stream-ordered allocations (communication buffers, ZeRO-3 gathers) come back every step:
    // keep freed memory in the pool instead of returning it to the driver at each synchronise.
    int device = 0;
    DITWIN_CUDA_CHECK(cudaGetDevice(&device));
    cudaMemPool_t pool;
    DITWIN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    std::uint64_t keep = UINT64_MAX;
    DITWIN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(compute_);
    for (auto e : events_) cudaEventDestroy(e);
  }

  std::string name() const override { return "cuda"; }

  // DP-SGD (book-keeping, as exec::DiT): backward keeps output gradients and leaves the weight
  // gradients to the clipped ".wgrad" ops; per-sample norms by strided-batched cuBLASLt GEMMs.
  void enable_privacy(double clip_norm) override {
    if (!(clip_norm > 0)) throw std::invalid_argument("CudaBackend::enable_privacy: the clip norm must be > 0");
    for (const auto& mb : mbs_)
      if (mb.ready) throw std::logic_error("CudaBackend::enable_privacy: call it before the first set_batch");
    dp_ = true;
    clip_norm_ = clip_norm;
  }
  void add_gaussian_noise(float* p, std::size_t n, std::uint64_t first, std::uint64_t key, float stddev) override {
    kc::add_gaussian_noise(p, n, first, key, stddev, compute_);
  }
  const std::vector<ParamGroup>& groups() const override { return cpu_.groups(); }
  std::size_t parameter_count() const override { return cpu_.parameter_count(); }
  // Data parallelism only here (check_plan refuses tp, pp and cp > 1 for --backend cuda): the
  // whole model, so the flat array is the one-rank layout.
  const std::vector<std::size_t>& global_index() const override { return cpu_.global_index(); }
  const std::vector<char>& tp_replicated() const override { return cpu_.tp_replicated(); }
  std::size_t global_parameter_count() const override { return cpu_.global_parameter_count(); }
  void init_parameters(float* host, std::uint64_t seed) const override { cpu_.init_parameters(host, seed); }

  void bind(const std::string& group, const float* params, float* grads) override {
    auto it = group_index_.find(group);
    if (it == group_index_.end()) throw std::logic_error("CudaBackend::bind: no parameter group '" + group + "'");
    params_[it->second] = params;
    grads_[it->second] = grads;
  }
  void parameters_changed() override { std::fill(mirrored_from_.begin(), mirrored_from_.end(), nullptr); }

  void set_batch(int mb, Batch batch) override {
    if (mb < 0 || mb >= micro_batches_) throw std::invalid_argument("CudaBackend::set_batch: micro-batch out of range");
    const std::size_t n = static_cast<std::size_t>(B) * C * S * S;
    if (batch.size != B || batch.x0.size() != n || batch.noise.size() != n || batch.t.size() != static_cast<std::size_t>(B) ||
        batch.y.size() != static_cast<std::size_t>(B))
      throw std::invalid_argument("CudaBackend::set_batch: expected " + std::to_string(B) + " samples");
    for (int y : batch.y)
      if (classes > 0 && (y < 0 || y > classes)) throw std::invalid_argument("CudaBackend::set_batch: label out of range");
    if (!batch.weight.empty() && (!dp_ || batch.weight.size() != static_cast<std::size_t>(B)))
      throw std::invalid_argument("CudaBackend::set_batch: sample weights are DP-SGD's, one per sample");
    MicroBatch& a = mbs_[mb];
    if (!a.ready) allocate(a);
    a.weight_host = batch.weight.empty() ? std::vector<float>(B, 1.0f) : batch.weight;
    copy_in(a.x0.get(), batch.x0.data(), n);
    copy_in(a.noise.get(), batch.noise.data(), n);
    copy_in(a.t.get(), batch.t.data(), B);
    copy_in(a.y.get(), batch.y.data(), B);
    a.loss_done = false;
  }

  void run(const std::string& part, int layer, Phase phase, int mb) override {
    if (mb < 0 || mb >= micro_batches_ || !mbs_[mb].ready)
      throw std::logic_error("CUDA DiT: op " + part + " on micro-batch " + std::to_string(mb) + " before set_batch");
    MicroBatch& a = mbs_[mb];
    const bool fwd = phase != Phase::backward;
    auto ends_with = [&](const char* tag) {
      const std::size_t n = std::strlen(tag);
      return part.size() > n && part.compare(part.size() - n, n, tag) == 0;
    };
    if (layer >= L) throw std::logic_error("CUDA DiT: layer out of range in op " + part);
    if (ends_with(".sample_norm")) {
      sample_norm(part.substr(0, part.size() - 12), layer, a);
    } else if (ends_with(".wgrad")) {
      wgrad(part.substr(0, part.size() - 6), layer, a);
    } else if (part == "privacy.clip") {
      clip(a);
    } else if (layer >= 0) {
      fwd ? layer_forward(part, layer, a) : layer_backward(part, layer, a);
    } else if (part.rfind("embed.", 0) == 0) {
      fwd ? embed_forward(part, a) : embed_backward(part, a);
    } else if (part.rfind("head.", 0) == 0 || part == "loss") {
      fwd ? head_forward(part, a) : head_backward(part, a);
    } else {
      unknown(part);
    }
  }

  double loss(int mb) override {
    if (mb < 0 || mb >= micro_batches_ || !mbs_[mb].loss_done)
      throw std::logic_error("CudaBackend::loss: micro-batch " + std::to_string(mb) + " has no loss forward yet");
    double v = 0;
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(&v, mbs_[mb].loss.get(), sizeof v, cudaMemcpyDeviceToHost, compute_));
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(compute_));
    return v;
  }

  // --- arrays: stream-ordered on the compute stream ------------------------------------------
  float* allocate(std::size_t n) override {
    void* p = nullptr;
    DITWIN_CUDA_CHECK(cudaMallocAsync(&p, n * sizeof(float), compute_));
    DITWIN_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(float), compute_));
    return static_cast<float*>(p);
  }
  void release(float* p) override { DITWIN_CUDA_CHECK(cudaFreeAsync(p, compute_)); }
  void zero(float* p, std::size_t n) override { DITWIN_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(float), compute_)); }
  void copy(float* dst, const float* src, std::size_t n) override {
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, compute_));
  }
  void add(float* dst, const float* src, std::size_t n) override { kc::accumulate(dst, src, n, compute_); }
  void scale(float* p, float factor, std::size_t n) override { kc::scale(p, factor, n, compute_); }
  void upload(float* dst, const float* host, std::size_t n) override {
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(dst, host, n * sizeof(float), cudaMemcpyHostToDevice, compute_));
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(compute_));  // the host array may go away
  }
  void download(float* host, const float* src, std::size_t n) override {
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, compute_));
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }
  void update(float* p, const float* g, float* m, float* v, std::size_t n, const OptimizerSpec& opt,
              std::int64_t step) override {
    if (opt.kind == "adamw") {
      kc::adamw_update({kc::AdamWTensor{p, g, m, v, nullptr, n}}, static_cast<float>(opt.lr), static_cast<float>(opt.beta1),
                       static_cast<float>(opt.beta2), static_cast<float>(opt.eps), static_cast<float>(opt.weight_decay),
                       step, 1.0f, compute_);
    } else {
      kc::sgd_update(p, g, m, n, static_cast<float>(opt.lr), static_cast<float>(opt.momentum),
                     static_cast<float>(opt.weight_decay), compute_);
    }
  }

  // --- clocks: CUDA events -----------------------------------------------------------------
  void step_begin(std::size_t ops) override {
    if (events_.size() < 2 * ops + 1) {
      for (std::size_t i = events_.size(); i < 2 * ops + 1; ++i) {
        cudaEvent_t e;
        DITWIN_CUDA_CHECK(cudaEventCreate(&e));
        events_.push_back(e);
      }
    }
    recorded_.assign(2 * ops, false);
    ops_ = ops;
    DITWIN_CUDA_CHECK(cudaEventRecord(events_[2 * ops], compute_));
    // Collectives measure from when their stream can start them: not before the step.
    DITWIN_CUDA_CHECK(cudaStreamWaitEvent(comm_, events_[2 * ops], 0));
  }
  void compute_begin(std::size_t op) override { record(2 * op, compute_); }
  void compute_end(std::size_t op) override { record(2 * op + 1, compute_); }
  void collective_begin(std::size_t op) override {
    // The collective starts once the compute stream has produced its input (what NCCL waits for).
    record(2 * op, compute_);
    DITWIN_CUDA_CHECK(cudaStreamWaitEvent(comm_, events_[2 * op], 0));
  }
  void collective_posted(std::size_t op) override { record(2 * op + 1, comm_); }
  void collective_end(std::size_t op) override {
    if (!recorded_[2 * op + 1]) record(2 * op + 1, comm_);  // nothing was posted: zero length
  }
  void synchronize() override {
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(comm_));
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }
  void step_times(std::vector<double>& start, std::vector<double>& end) override {
    synchronize();
    start.assign(ops_, 0.0);
    end.assign(ops_, 0.0);
    for (std::size_t i = 0; i < ops_; ++i) {
      float ms = 0;
      if (recorded_[2 * i]) {
        DITWIN_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[2 * ops_], events_[2 * i]));
        start[i] = ms * 1e-3;
      }
      if (recorded_[2 * i + 1]) {
        DITWIN_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[2 * ops_], events_[2 * i + 1]));
        end[i] = std::max(start[i], ms * 1e-3);
      }
    }
  }

 private:
  ModelSpec m_;
  DiT cpu_;  // groups, parameter count and initialisation: one source of truth for the layout
  cudaStream_t compute_, comm_;
  kc::Blas blas_;
  int B, micro_batches_, H, F, NH, C, Cout, S, P, grid, T, fe, L, classes, pin, pout;
  EmbedLayout el_{};
  LayerLayout ll_{};
  HeadLayout hl_{};
  std::map<std::string, int> group_index_;
  std::vector<const float*> params_;
  std::vector<float*> grads_;
  std::vector<Dev<bf16>> mirror_;
  std::vector<const float*> mirrored_from_;
  Dev<bf16> pos_embed_;
  Dev<unsigned char> attn_work_;
  std::vector<MicroBatch> mbs_;
  std::vector<cudaEvent_t> events_;
  std::vector<bool> recorded_;
  std::size_t ops_ = 0;
  bool dp_ = false;
  double clip_norm_ = 0;

  void record(std::size_t slot, cudaStream_t s) {
    DITWIN_CUDA_CHECK(cudaEventRecord(events_[slot], s));
    recorded_[slot] = true;
  }

  template <typename T>
  void copy_in(T* dst, const T* src, std::size_t n) {
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, compute_));
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }
  void upload_as(bf16* dst, const std::vector<float>& host) {
    Dev<float> tmp(host.size());
    copy_in(tmp.get(), host.data(), host.size());
    kc::convert<float, bf16>(dst, tmp.get(), host.size(), compute_);
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }

  // The same offsets as exec::DiT (checked against its group sizes at construction).
  void layout() {
    std::size_t o = 0;
    auto take = [&](std::size_t n) { std::size_t at = o; o += n; return at; };
    const std::size_t h = H;
    el_.patch_w = take(h * pin); el_.patch_b = take(h);
    el_.t_w1 = take(h * fe); el_.t_b1 = take(h); el_.t_w2 = take(h * h); el_.t_b2 = take(h);
    el_.y_table = take(classes > 0 ? (classes + 1) * h : 0);
    el_.size = o;
    o = 0;
    ll_.ada_w = take(6 * h * h); ll_.ada_b = take(6 * h);
    ll_.qkv_w = take(3 * h * h); ll_.qkv_b = take(3 * h);
    ll_.proj_w = take(h * h); ll_.proj_b = take(h);
    ll_.fc1_w = take(static_cast<std::size_t>(F) * h); ll_.fc1_b = take(F);
    ll_.fc2_w = take(h * F); ll_.fc2_b = take(h);
    ll_.size = o;
    o = 0;
    hl_.ada_w = take(2 * h * h); hl_.ada_b = take(2 * h);
    hl_.out_w = take(static_cast<std::size_t>(pout) * h); hl_.out_b = take(pout);
    hl_.size = o;
  }

  void allocate(MicroBatch& a) {
    const std::size_t b = B, bt = static_cast<std::size_t>(B) * T, h = H, img = b * C * S * S;
    a.x0 = Dev<float>(img); a.noise = Dev<float>(img); a.t = Dev<float>(b); a.y = Dev<int>(b); a.loss = Dev<double>(1);
    a.t_scaled = Dev<float>(b); a.t_freq = Dev<float>(b * fe); a.t_h1 = Dev<float>(b * h); a.t_a1 = Dev<float>(b * h);
    a.t_emb = Dev<float>(b * h); a.c = Dev<float>(b * h); a.silu_c = Dev<float>(b * h);
    a.z = Dev<bf16>(img); a.patches = Dev<bf16>(bt * pin);
    a.x.clear();
    for (int l = 0; l <= L; ++l) a.x.emplace_back(bt * h);
    a.layer.clear();
    a.layer.resize(L);
    for (auto& s : a.layer) {
      s.mod = Dev<float>(b * 6 * h); s.mod_bf = Dev<bf16>(b * 6 * h);
      s.ln1 = Dev<bf16>(bt * h); s.mean1 = Dev<float>(bt); s.rstd1 = Dev<float>(bt);
      s.qkv = Dev<bf16>(bt * 3 * h); s.att = Dev<bf16>(bt * h); s.lse = Dev<float>(b * NH * T);
      s.proj = Dev<bf16>(bt * h); s.x_mid = Dev<bf16>(bt * h); s.ln2 = Dev<bf16>(bt * h);
      s.mean2 = Dev<float>(bt); s.rstd2 = Dev<float>(bt);
      s.fc1 = Dev<bf16>(bt * F); s.act = Dev<bf16>(bt * F); s.fc2 = Dev<bf16>(bt * h);
    }
    a.fmod = Dev<float>(b * 2 * h); a.fmod_bf = Dev<bf16>(b * 2 * h); a.lnf = Dev<bf16>(bt * h);
    a.meanf = Dev<float>(bt); a.rstdf = Dev<float>(bt);
    a.out_tok = Dev<bf16>(bt * pout); a.v_hat = Dev<bf16>(b * Cout * S * S);
    a.dx = Dev<bf16>(bt * h); a.d_ln = Dev<bf16>(bt * h); a.dqkv = Dev<bf16>(bt * 3 * h); a.datt = Dev<bf16>(bt * h);
    a.dproj = Dev<bf16>(bt * h); a.dfc1 = Dev<bf16>(bt * F); a.dact = Dev<bf16>(bt * F); a.dfc2 = Dev<bf16>(bt * h);
    a.dout_tok = Dev<bf16>(bt * pout); a.dv_hat = Dev<bf16>(b * Cout * S * S);
    a.dmod = Dev<float>(b * 6 * h); a.dfmod = Dev<float>(b * 2 * h); a.dsilu_c = Dev<float>(b * h);
    a.dc = Dev<float>(b * h); a.dt_a1 = Dev<float>(b * h); a.dt_h1 = Dev<float>(b * h);
    if (dp_) {
      a.kept.clear();
      a.kept.resize(L);
      for (auto& k : a.kept) {
        k.mod = Dev<float>(b * 6 * h);
        k.qkv = Dev<bf16>(bt * 3 * h); k.proj = Dev<bf16>(bt * h); k.fc1 = Dev<bf16>(bt * F); k.fc2 = Dev<bf16>(bt * h);
      }
      a.sq = Dev<double>(b);
      a.clip = Dev<float>(b);
      a.clip_host.assign(b, 1.0f);
      // Scratch for the largest linear's norms: a chunk of samples at a time, within 32 M floats
      // (128 MiB), but never less than one sample's need.
      std::size_t need = 0;
      for (const Shape& x : shapes())
        need = std::max(need, kc::per_sample_norm_scratch(1, x.rows, x.d_in, x.d_out, ghost_norm_is_cheaper(x.rows, x.d_in, x.d_out)));
      std::size_t all = 0;
      for (const Shape& x : shapes())
        all = std::max(all, kc::per_sample_norm_scratch(B, x.rows, x.d_in, x.d_out, ghost_norm_is_cheaper(x.rows, x.d_in, x.d_out)));
      a.scratch = Dev<float>(std::max<std::size_t>(need, std::min<std::size_t>(all, std::size_t{32} << 20)));
      a.scaled_bf = Dev<bf16>(bt * std::max({3 * h, h, static_cast<std::size_t>(F), static_cast<std::size_t>(pout)}));
      a.scaled_f = Dev<float>(b * 6 * h);
    }
    a.ready = true;
  }

  // --- parameters -------------------------------------------------------------------------
  const float* p(int g, std::size_t off, const std::string& part) const {
    if (!params_[g]) throw std::logic_error("CUDA DiT: op " + part + " needs its parameter group bound");
    return params_[g] + off;
  }
  float* gr(int g, std::size_t off, const std::string& part) const {
    if (!grads_[g]) throw std::logic_error("CUDA DiT: op " + part + " needs its gradients bound");
    return grads_[g] + off;
  }
  // The bf16 copy of a weight, refreshed from the master when the group's parameters changed.
  const bf16* w(int g, std::size_t off, const std::string& part) {
    const float* master = p(g, 0, part);
    if (mirrored_from_[g] != master) {
      kc::convert<float, bf16>(mirror_[g].get(), master, mirror_[g].size(), compute_);
      mirrored_from_[g] = master;
    }
    return mirror_[g].get() + off;
  }
  // A weight gradient for backward: none under DP-SGD, whose ".wgrad" ops add the clipped ones.
  float* wg(int g, std::size_t off, const std::string& part) const { return dp_ ? nullptr : gr(g, off, part); }
  template <typename T>
  void keep(Dev<T>& dst, const Dev<T>& src) {
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), src.size() * sizeof(T), cudaMemcpyDeviceToDevice, compute_));
  }
  int layer_g(int l) const { return 1 + l; }
  int head_g() const { return L + 1; }

  void ensure_dc(MicroBatch& a) {
    if (a.dc_ready) return;
    a.dc.zero(compute_);
    kc::silu_backward<float>(a.dc.get(), a.c.get(), a.dsilu_c.get(), a.dc.size(), compute_);
    a.dc_ready = true;
  }

  // --- embedding -----------------------------------------------------------------------------
  void embed_forward(const std::string& part, MicroBatch& a) {
    const int g = 0;
    const cudaStream_t s = compute_;
    if (part == "embed.patch") {
      kc::rectified_flow_input<bf16>(a.z.get(), a.x0.get(), a.noise.get(), a.t.get(), B, C * S * S, s);
      kc::patchify_forward<bf16>(a.patches.get(), a.z.get(), B, C, S, P, s);
      kc::matmul_forward<bf16>(blas_, a.x[0].get(), a.patches.get(), w(g, el_.patch_w, part), w(g, el_.patch_b, part),
                               B * T, pin, H, s);
      kc::add_rows_periodic<bf16>(a.x[0].get(), pos_embed_.get(), B * T, T, H, s);
    } else if (part == "embed.timestep") {
      DITWIN_CUDA_CHECK(cudaMemcpyAsync(a.t_scaled.get(), a.t.get(), B * sizeof(float), cudaMemcpyDeviceToDevice, s));
      kc::scale(a.t_scaled.get(), timestep_scale, B, s);
      kc::timestep_embedding_forward<float>(a.t_freq.get(), a.t_scaled.get(), B, fe, max_period, s);
      kc::matmul_forward<float>(blas_, a.t_h1.get(), a.t_freq.get(), p(g, el_.t_w1, part), p(g, el_.t_b1, part), B, fe, H, s);
      kc::silu_forward<float>(a.t_a1.get(), a.t_h1.get(), a.t_a1.size(), s);
      kc::matmul_forward<float>(blas_, a.t_emb.get(), a.t_a1.get(), p(g, el_.t_w2, part), p(g, el_.t_b2, part), B, H, H, s);
      if (classes == 0) {
        DITWIN_CUDA_CHECK(cudaMemcpyAsync(a.c.get(), a.t_emb.get(), a.c.size() * sizeof(float), cudaMemcpyDeviceToDevice, s));
        kc::silu_forward<float>(a.silu_c.get(), a.c.get(), a.c.size(), s);
      }
    } else if (part == "embed.class" && classes > 0) {
      kc::class_embedding_forward<float>(a.c.get(), p(g, el_.y_table, part), a.y.get(), B, H, s);
      kc::accumulate(a.c.get(), a.t_emb.get(), a.c.size(), s);
      kc::silu_forward<float>(a.silu_c.get(), a.c.get(), a.c.size(), s);
    } else {
      unknown(part);
    }
  }

  void embed_backward(const std::string& part, MicroBatch& a) {
    const int g = 0;
    const cudaStream_t s = compute_;
    if (part == "embed.patch") {
      if (!dp_)  // under DP-SGD a.dx is kept as is for the clipped .wgrad
        kc::matmul_backward<bf16>(blas_, nullptr, gr(g, el_.patch_w, part), gr(g, el_.patch_b, part), a.dx.get(),
                                  a.patches.get(), w(g, el_.patch_w, part), B * T, pin, H, s);
    } else if (part == "embed.timestep") {
      ensure_dc(a);
      kc::matmul_backward<float>(blas_, a.dt_a1.get(), wg(g, el_.t_w2, part), wg(g, el_.t_b2, part), a.dc.get(),
                                 a.t_a1.get(), p(g, el_.t_w2, part), B, H, H, s, /*accumulate_dinp=*/false);
      a.dt_h1.zero(s);
      kc::silu_backward<float>(a.dt_h1.get(), a.t_h1.get(), a.dt_a1.get(), a.dt_h1.size(), s);
      if (!dp_)
        kc::matmul_backward<float>(blas_, nullptr, gr(g, el_.t_w1, part), gr(g, el_.t_b1, part), a.dt_h1.get(),
                                   a.t_freq.get(), p(g, el_.t_w1, part), B, fe, H, s);
    } else if (part == "embed.class" && classes > 0) {
      ensure_dc(a);
      if (!dp_) kc::class_embedding_backward<float>(gr(g, el_.y_table, part), a.dc.get(), a.y.get(), B, H, s);
    } else {
      unknown(part);
    }
  }

  // --- transformer block ---------------------------------------------------------------------
  void layer_forward(const std::string& part, int l, MicroBatch& a) {
    const int g = layer_g(l);
    LayerActs& t = a.layer[l];
    const cudaStream_t s = compute_;
    const int bt = B * T, h = H;
    const bf16* mod = t.mod_bf.get();
    if (part == "adaln") {
      kc::matmul_forward<float>(blas_, t.mod.get(), a.silu_c.get(), p(g, ll_.ada_w, part), p(g, ll_.ada_b, part), B, h,
                                6 * h, s);
      kc::convert<float, bf16>(t.mod_bf.get(), t.mod.get(), t.mod.size(), s);
    } else if (part == "norm1") {
      kc::layernorm_modulate_forward<bf16>(t.ln1.get(), t.mean1.get(), t.rstd1.get(), a.x[l].get(), mod, mod + h, B, T,
                                           h, 6 * h, layernorm_eps, s);
    } else if (part == "attn.qkv") {
      kc::matmul_forward<bf16>(blas_, t.qkv.get(), t.ln1.get(), w(g, ll_.qkv_w, part), w(g, ll_.qkv_b, part), bt, h,
                               3 * h, s);
    } else if (part == "attn.core") {
      kc::attention_forward(t.att.get(), t.lse.get(), t.qkv.get(), B, T, h, NH, s);
    } else if (part == "attn.proj") {
      kc::matmul_forward<bf16>(blas_, t.proj.get(), t.att.get(), w(g, ll_.proj_w, part), w(g, ll_.proj_b, part), bt, h,
                               h, s);
    } else if (part == "attn.residual") {
      kc::gated_residual_forward<bf16>(t.x_mid.get(), a.x[l].get(), t.proj.get(), mod + 2 * h, B, T, h, 6 * h, s);
    } else if (part == "norm2") {
      kc::layernorm_modulate_forward<bf16>(t.ln2.get(), t.mean2.get(), t.rstd2.get(), t.x_mid.get(), mod + 3 * h,
                                           mod + 4 * h, B, T, h, 6 * h, layernorm_eps, s);
    } else if (part == "mlp.fc1") {
      kc::matmul_forward<bf16>(blas_, t.fc1.get(), t.ln2.get(), w(g, ll_.fc1_w, part), w(g, ll_.fc1_b, part), bt, h, F, s);
    } else if (part == "mlp.act") {
      kc::gelu_forward<bf16>(t.act.get(), t.fc1.get(), t.act.size(), s);
    } else if (part == "mlp.fc2") {
      kc::matmul_forward<bf16>(blas_, t.fc2.get(), t.act.get(), w(g, ll_.fc2_w, part), w(g, ll_.fc2_b, part), bt, F, h, s);
    } else if (part == "mlp.residual") {
      kc::gated_residual_forward<bf16>(a.x[l + 1].get(), t.x_mid.get(), t.fc2.get(), mod + 5 * h, B, T, h, 6 * h, s);
    } else {
      unknown(part);
    }
  }

  void layer_backward(const std::string& part, int l, MicroBatch& a) {
    const int g = layer_g(l);
    LayerActs& t = a.layer[l];
    const cudaStream_t s = compute_;
    const int bt = B * T, h = H;
    const bf16* mod = t.mod_bf.get();
    float* dmod = a.dmod.get();
    if (part == "mlp.residual") {
      a.dmod.zero(s);
      a.dfc2.zero(s);
      kc::gated_residual_backward<bf16>(nullptr, a.dfc2.get(), dmod + 5 * h, a.dx.get(), t.fc2.get(), mod + 5 * h, B, T,
                                        h, 6 * h, s);
    } else if (part == "mlp.fc2") {
      kc::matmul_backward<bf16>(blas_, a.dact.get(), wg(g, ll_.fc2_w, part), wg(g, ll_.fc2_b, part), a.dfc2.get(),
                                t.act.get(), w(g, ll_.fc2_w, part), bt, F, h, s, /*accumulate_dinp=*/false);
      if (dp_) keep(a.kept[l].fc2, a.dfc2);
    } else if (part == "mlp.act") {
      a.dfc1.zero(s);
      kc::gelu_backward<bf16>(a.dfc1.get(), t.fc1.get(), a.dact.get(), a.dfc1.size(), s);
    } else if (part == "mlp.fc1") {
      kc::matmul_backward<bf16>(blas_, a.d_ln.get(), wg(g, ll_.fc1_w, part), wg(g, ll_.fc1_b, part), a.dfc1.get(),
                                t.ln2.get(), w(g, ll_.fc1_w, part), bt, h, F, s, /*accumulate_dinp=*/false);
      if (dp_) keep(a.kept[l].fc1, a.dfc1);
    } else if (part == "norm2") {
      kc::layernorm_modulate_backward<bf16>(a.dx.get(), dmod + 3 * h, dmod + 4 * h, a.d_ln.get(), t.x_mid.get(),
                                            t.mean2.get(), t.rstd2.get(), mod + 4 * h, B, T, h, 6 * h, s);
    } else if (part == "attn.residual") {
      a.dproj.zero(s);
      kc::gated_residual_backward<bf16>(nullptr, a.dproj.get(), dmod + 2 * h, a.dx.get(), t.proj.get(), mod + 2 * h, B,
                                        T, h, 6 * h, s);
    } else if (part == "attn.proj") {
      kc::matmul_backward<bf16>(blas_, a.datt.get(), wg(g, ll_.proj_w, part), wg(g, ll_.proj_b, part), a.dproj.get(),
                                t.att.get(), w(g, ll_.proj_w, part), bt, h, h, s, /*accumulate_dinp=*/false);
      if (dp_) keep(a.kept[l].proj, a.dproj);
    } else if (part == "attn.core") {
      a.dqkv.zero(s);
      kc::attention_backward(a.dqkv.get(), a.datt.get(), t.qkv.get(), t.att.get(), t.lse.get(), attn_work_.get(), B, T, h,
                             NH, s);
    } else if (part == "attn.qkv") {
      kc::matmul_backward<bf16>(blas_, a.d_ln.get(), wg(g, ll_.qkv_w, part), wg(g, ll_.qkv_b, part), a.dqkv.get(),
                                t.ln1.get(), w(g, ll_.qkv_w, part), bt, h, 3 * h, s, /*accumulate_dinp=*/false);
      if (dp_) keep(a.kept[l].qkv, a.dqkv);
    } else if (part == "norm1") {
      kc::layernorm_modulate_backward<bf16>(a.dx.get(), dmod, dmod + h, a.d_ln.get(), a.x[l].get(), t.mean1.get(),
                                            t.rstd1.get(), mod + h, B, T, h, 6 * h, s);
    } else if (part == "adaln") {
      kc::matmul_backward<float>(blas_, a.dsilu_c.get(), wg(g, ll_.ada_w, part), wg(g, ll_.ada_b, part), dmod,
                                 a.silu_c.get(), p(g, ll_.ada_w, part), B, h, 6 * h, s);
      if (dp_) keep(a.kept[l].mod, a.dmod);
    } else {
      unknown(part);
    }
  }

  // --- final layer and loss -----------------------------------------------------------------
  void head_forward(const std::string& part, MicroBatch& a) {
    const int g = head_g();
    const cudaStream_t s = compute_;
    const int h = H;
    if (part == "head.adaln") {
      kc::matmul_forward<float>(blas_, a.fmod.get(), a.silu_c.get(), p(g, hl_.ada_w, part), p(g, hl_.ada_b, part), B, h,
                                2 * h, s);
      kc::convert<float, bf16>(a.fmod_bf.get(), a.fmod.get(), a.fmod.size(), s);
    } else if (part == "head.norm") {
      kc::layernorm_modulate_forward<bf16>(a.lnf.get(), a.meanf.get(), a.rstdf.get(), a.x[L].get(), a.fmod_bf.get(),
                                           a.fmod_bf.get() + h, B, T, h, 2 * h, layernorm_eps, s);
    } else if (part == "head.image") {
      kc::matmul_forward<bf16>(blas_, a.out_tok.get(), a.lnf.get(), w(g, hl_.out_w, part), w(g, hl_.out_b, part), B * T,
                               h, pout, s);
      kc::unpatchify_forward<bf16>(a.v_hat.get(), a.out_tok.get(), B, Cout, S, P, s);
    } else if (part == "loss") {
      kc::rectified_flow_loss_forward<bf16>(a.loss.get(), a.v_hat.get(), a.x0.get(), a.noise.get(), B, Cout, C, S * S, s);
      a.loss_done = true;
    } else {
      unknown(part);
    }
  }

  void head_backward(const std::string& part, MicroBatch& a) {
    const int g = head_g();
    const cudaStream_t s = compute_;
    const int h = H;
    if (part == "loss") {
      a.dv_hat.zero(s);
      a.dsilu_c.zero(s);
      a.dc_ready = false;
      if (dp_) {  // a new backward: its per-sample norms start from zero
        a.sq.zero(s);
        a.clipped = false;
      }
      kc::rectified_flow_loss_backward<bf16>(a.dv_hat.get(), a.v_hat.get(), a.x0.get(), a.noise.get(),
                                             1.0f / micro_batches_, B, Cout, C, S * S, s);
    } else if (part == "head.image") {
      a.dout_tok.zero(s);
      kc::unpatchify_backward<bf16>(a.dout_tok.get(), a.dv_hat.get(), B, Cout, S, P, s);
      kc::matmul_backward<bf16>(blas_, a.d_ln.get(), wg(g, hl_.out_w, part), wg(g, hl_.out_b, part), a.dout_tok.get(),
                                a.lnf.get(), w(g, hl_.out_w, part), B * T, h, pout, s, /*accumulate_dinp=*/false);
    } else if (part == "head.norm") {
      a.dx.zero(s);
      a.dfmod.zero(s);
      kc::layernorm_modulate_backward<bf16>(a.dx.get(), a.dfmod.get(), a.dfmod.get() + h, a.d_ln.get(), a.x[L].get(),
                                            a.meanf.get(), a.rstdf.get(), a.fmod_bf.get() + h, B, T, h, 2 * h, s);
    } else if (part == "head.adaln") {
      kc::matmul_backward<float>(blas_, a.dsilu_c.get(), wg(g, hl_.ada_w, part), wg(g, hl_.ada_b, part), a.dfmod.get(),
                                 a.silu_c.get(), p(g, hl_.ada_w, part), B, h, 2 * h, s);
    } else {
      unknown(part);
    }
  }

  // --- DP-SGD (book-keeping) -------------------------------------------------------------------
  // The linears an op holds, as exec::DiT's linears(): inputs A and kept output gradients G (bf16
  // on the token path, fp32 on the conditioning path), rows per sample, widths, offsets.
  struct Linear {
    bool bf;  // bf16 operands (else fp32)
    const void* inp;
    const void* dout;
    int rows, d_in, d_out;
    std::size_t w, b;
    int group;
  };
  struct Shape {
    int rows, d_in, d_out;
  };
  std::vector<Shape> shapes() const {
    const int h = H;
    return {{1, h, 6 * h}, {T, h, 3 * h}, {T, h, h}, {T, h, F}, {T, F, h}, {T, pin, h}, {1, h, h}, {1, fe, h},
            {1, h, 2 * h}, {T, h, pout}};
  }
  std::vector<Linear> linears(const std::string& part, int l, MicroBatch& a) {
    const int h = H;
    if (l >= 0) {
      auto& k = a.kept.at(l);
      LayerActs& t = a.layer[l];
      const int g = layer_g(l);
      if (part == "adaln") return {{false, a.silu_c.get(), k.mod.get(), 1, h, 6 * h, ll_.ada_w, ll_.ada_b, g}};
      if (part == "attn.qkv") return {{true, t.ln1.get(), k.qkv.get(), T, h, 3 * h, ll_.qkv_w, ll_.qkv_b, g}};
      if (part == "attn.proj") return {{true, t.att.get(), k.proj.get(), T, h, h, ll_.proj_w, ll_.proj_b, g}};
      if (part == "mlp.fc1") return {{true, t.ln2.get(), k.fc1.get(), T, h, F, ll_.fc1_w, ll_.fc1_b, g}};
      if (part == "mlp.fc2") return {{true, t.act.get(), k.fc2.get(), T, F, h, ll_.fc2_w, ll_.fc2_b, g}};
      unknown(part + " (no weights)");
    }
    if (part == "embed.patch") return {{true, a.patches.get(), a.dx.get(), T, pin, h, el_.patch_w, el_.patch_b, 0}};
    if (part == "embed.timestep")
      return {{false, a.t_a1.get(), a.dc.get(), 1, h, h, el_.t_w2, el_.t_b2, 0},
              {false, a.t_freq.get(), a.dt_h1.get(), 1, fe, h, el_.t_w1, el_.t_b1, 0}};
    if (part == "head.adaln") return {{false, a.silu_c.get(), a.dfmod.get(), 1, h, 2 * h, hl_.ada_w, hl_.ada_b, head_g()}};
    if (part == "head.image") return {{true, a.lnf.get(), a.dout_tok.get(), T, h, pout, hl_.out_w, hl_.out_b, head_g()}};
    unknown(part + " (no weights)");
  }
  void require_dp(const std::string& part) const {
    if (!dp_) throw std::logic_error("CUDA DiT: op " + part + " is a DP-SGD op, but privacy is not enabled");
  }
  void sample_norm(const std::string& part, int l, MicroBatch& a) {
    require_dp(part);
    const cudaStream_t s = compute_;
    if (part == "embed.class") {
      if (classes == 0) return;
      ensure_dc(a);
      kc::per_sample_sq_sum(a.sq.get(), a.dc.get(), B, static_cast<std::size_t>(H), s);
      return;
    }
    for (const Linear& x : linears(part, l, a)) {
      const bool ghost = ghost_norm_is_cheaper(x.rows, x.d_in, x.d_out);
      if (x.bf)
        kc::per_sample_sq_norms<bf16>(blas_, a.sq.get(), static_cast<const bf16*>(x.inp), static_cast<const bf16*>(x.dout), B,
                                      x.rows, x.d_in, x.d_out, true, ghost, a.scratch.get(), a.scratch.size(), s);
      else
        kc::per_sample_sq_norms<float>(blas_, a.sq.get(), static_cast<const float*>(x.inp), static_cast<const float*>(x.dout),
                                       B, x.rows, x.d_in, x.d_out, true, ghost, a.scratch.get(), a.scratch.size(), s);
    }
  }
  // Clip factors on the host, by the rule exec::DiT uses (the norms are B doubles).
  void clip(MicroBatch& a) {
    require_dp("privacy.clip");
    std::vector<double> sq(B);
    DITWIN_CUDA_CHECK(cudaMemcpyAsync(sq.data(), a.sq.get(), B * sizeof(double), cudaMemcpyDeviceToHost, compute_));
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(compute_));
    // The buffers hold g_b / (B x micro_batches); model/privacy.hpp has the rule.
    a.clip_host = ditwin::clip_factors(sq, static_cast<double>(B) * micro_batches_, clip_norm_, a.weight_host);
    copy_in(a.clip.get(), a.clip_host.data(), B);
    a.clipped = true;
  }
  // G with each sample's rows scaled by its clip factor (G itself when every factor is 1).
  template <typename T>
  const T* clipped(MicroBatch& a, const T* g, int rows, int width, Dev<T>& scaled) {
    if (std::all_of(a.clip_host.begin(), a.clip_host.end(), [](float c) { return c == 1.0f; })) return g;
    kc::scale_sample_rows<T>(scaled.get(), g, a.clip.get(), B, rows, width, compute_);
    return scaled.get();
  }
  void wgrad(const std::string& part, int l, MicroBatch& a) {
    require_dp(part);
    if (!a.clipped) throw std::logic_error("CUDA DiT: op " + part + ".wgrad runs before privacy.clip of its micro-batch");
    const cudaStream_t s = compute_;
    if (part == "embed.class") {
      if (classes == 0) return;
      kc::class_embedding_backward<float>(gr(0, el_.y_table, part), clipped<float>(a, a.dc.get(), 1, H, a.scaled_f),
                                          a.y.get(), B, H, s);
      return;
    }
    for (const Linear& x : linears(part, l, a)) {
      if (x.bf)
        kc::matmul_backward<bf16>(blas_, nullptr, gr(x.group, x.w, part), gr(x.group, x.b, part),
                                  clipped<bf16>(a, static_cast<const bf16*>(x.dout), x.rows, x.d_out, a.scaled_bf),
                                  static_cast<const bf16*>(x.inp), nullptr, B * x.rows, x.d_in, x.d_out, s);
      else
        kc::matmul_backward<float>(blas_, nullptr, gr(x.group, x.w, part), gr(x.group, x.b, part),
                                   clipped<float>(a, static_cast<const float*>(x.dout), x.rows, x.d_out, a.scaled_f),
                                   static_cast<const float*>(x.inp), nullptr, B * x.rows, x.d_in, x.d_out, s);
    }
  }

  [[noreturn]] static void unknown(const std::string& part) {
    throw std::logic_error("CUDA DiT: unknown op part '" + part + "' for this model");
  }
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Plan& plan, cudaStream_t compute, cudaStream_t comm) {
  return std::make_unique<CudaBackend>(plan, compute, comm);
}

}  // namespace ditwin::exec
