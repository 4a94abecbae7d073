// The CPU backend: the plan's family of exec/model (make_model), host arrays (64-byte aligned, as the model's own
// activations are), the optimizers on the host, host clocks.
#include <cstring>
#include <new>

#include "exec/backend.hpp"
#include "kernels/gaussian_noise.hpp"  // defines: add_gaussian_noise

namespace ditwin::exec {

namespace {

constexpr std::align_val_t alignment{64};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Plan& plan, const ModelShard& shard)
      : owned_(make_model(plan, shard)), model_(*owned_) {}

  std::string name() const override { return "cpu"; }
  const std::vector<ParamGroup>& groups() const override { return model_.groups(); }
  std::size_t parameter_count() const override { return model_.parameter_count(); }
  void init_parameters(float* host, std::uint64_t seed) const override { model_.init_parameters(host, seed); }
  void bind(const std::string& group, const float* params, float* grads) override { model_.bind(group, params, grads); }
  void set_batch(int mb, Batch batch) override { model_.set_batch(mb, std::move(batch)); }
  void run(const std::string& part, int layer, Phase phase, int mb) override { model_.run(part, layer, phase, mb); }
  double loss(int mb) override { return model_.loss(mb); }
  const std::vector<std::size_t>& global_index() const override { return model_.global_index(); }
  const std::vector<char>& tp_replicated() const override { return model_.tp_replicated(); }
  std::size_t global_parameter_count() const override { return model_.global_parameter_count(); }
  TensorComm comm_begin(const Op& op) override { return model_.comm_begin(op); }
  void comm_end(const Op& op) override { model_.comm_end(op); }
  void enable_privacy(double clip_norm) override { model_.enable_privacy(clip_norm); }

  float* allocate(std::size_t n) override {
    auto* p = static_cast<float*>(::operator new(n * sizeof(float), alignment));
    std::memset(p, 0, n * sizeof(float));
    return p;
  }
  void release(float* p) override { ::operator delete(p, alignment); }
  void zero(float* p, std::size_t n) override { std::memset(p, 0, n * sizeof(float)); }
  void copy(float* dst, const float* src, std::size_t n) override { std::memcpy(dst, src, n * sizeof(float)); }
  void add(float* dst, const float* src, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) dst[i] += src[i];
  }
  void scale(float* p, float factor, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) p[i] *= factor;
  }
  void add_gaussian_noise(float* p, std::size_t n, std::uint64_t first, std::uint64_t key, float stddev) override {
    kernels::add_gaussian_noise(p, n, first, key, stddev);
  }
  void upload(float* dst, const float* host, std::size_t n) override { copy(dst, host, n); }
  void download(float* host, const float* src, std::size_t n) override { copy(host, src, n); }

  void update(float* p, const float* g, float* m, float* v, std::size_t n, const OptimizerSpec& opt,
              std::int64_t step) override {
    if (opt.kind == "adamw") {
      adamw_update(p, g, m, v, n, opt, step);
      return;
    }
    // SGD with optional momentum and decoupled weight decay.
    const float lr = static_cast<float>(opt.lr), mu = static_cast<float>(opt.momentum),
                wd = static_cast<float>(opt.weight_decay);
    for (std::size_t i = 0; i < n; ++i) {
      float d = g[i];
      if (mu > 0) d = m[i] = mu * m[i] + d;
      p[i] -= lr * (d + wd * p[i]);
    }
  }

  void step_begin(std::size_t ops) override { clock_.step_begin(ops); }
  void compute_begin(std::size_t op) override { clock_.begin(op); }
  void compute_end(std::size_t op) override { clock_.end(op); }
  void collective_begin(std::size_t op) override { clock_.begin(op); }
  void collective_posted(std::size_t) override {}
  void collective_end(std::size_t op) override { clock_.end(op); }
  void step_times(std::vector<double>& start, std::vector<double>& end) override { clock_.times(start, end); }

 private:
  std::unique_ptr<Model> owned_;
  Model& model_;
  HostClock clock_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const Plan& plan, const ModelShard& shard) {
  return std::make_unique<CpuBackend>(plan, shard);
}

}  // namespace ditwin::exec
