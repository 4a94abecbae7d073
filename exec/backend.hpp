// Where the executor's model runs and its arrays live: the CPU (host memory, kernels/ CPU
// functions) or a GPU (device memory, kernels/cuda). The scheduler in runtime.cpp walks the
// Program the same way for both; it reaches the model, the flat parameter / gradient / optimizer
// arrays and the per-op clocks only through this interface.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "model/errors.hpp"
#include <vector>

#include "exec/model/dit_model.hpp"
#include "model/plan.hpp"

namespace ditwin::exec {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda"

  // --- the model (as exec::DiT: groups, bind, set_batch, run, loss) ---------------------------
  virtual const std::vector<ParamGroup>& groups() const = 0;
  virtual std::size_t parameter_count() const = 0;
  // The DiT paper's initialisation of the full flat array, on the host (exec::DiT's).
  virtual void init_parameters(float* host_params, std::uint64_t seed) const = 0;
  // `params` and `grads` point into arrays this backend allocated.
  virtual void bind(const std::string& group, const float* params, float* grads) = 0;
  virtual void set_batch(int mb, Batch batch) = 0;
  virtual void run(const std::string& part, int layer, Phase phase, int mb) = 0;
  virtual double loss(int mb) = 0;
  // Model parallelism (exec::DiT's contract): this rank's elements of the one-rank flat array, and
  // the tensor collectives and pipeline transfers of the Program.
  virtual const std::vector<std::size_t>& global_index() const = 0;
  virtual const std::vector<char>& tp_replicated() const = 0;
  virtual std::size_t global_parameter_count() const = 0;
  virtual TensorComm comm_begin(const Op& op) {
    throw InputError("parallelism: the " + name() + " backend runs data parallelism only (op " + op.name + ")");
  }
  virtual void comm_end(const Op& op) { (void)op; }
  // DP-SGD (training.privacy): the model runs the per-sample norm, clip and clipped-gradient ops
  // and the runtime adds noise to host-resident gradients. Backends without it refuse the plan.
  virtual void enable_privacy(double clip_norm) {
    (void)clip_norm;
    throw InputError("training.privacy: the " + name() + " backend does not run DP-SGD (the cpu and cuda backends do)");
  }
  // Parameters were rewritten in place (optimizer step, parameter all-gather): a backend that
  // keeps derived copies (the GPU's bf16 weights) refreshes them before their next use.
  virtual void parameters_changed() {}

  // --- flat float arrays in this backend's memory (ordered after earlier work) ----------------
  virtual float* allocate(std::size_t n) = 0;  // zero-filled
  virtual void release(float* p) = 0;
  virtual void zero(float* p, std::size_t n) = 0;
  virtual void copy(float* dst, const float* src, std::size_t n) = 0;
  virtual void add(float* dst, const float* src, std::size_t n) = 0;  // dst += src
  virtual void scale(float* p, float factor, std::size_t n) = 0;
  // DP-SGD noise: p[k] += stddev * N_{first + k}(key), kernels/gaussian_noise's counter-based stream.
  virtual void add_gaussian_noise(float* p, std::size_t n, std::uint64_t first, std::uint64_t key, float stddev) = 0;
  virtual void upload(float* dst, const float* host, std::size_t n) = 0;
  virtual void download(float* host, const float* src, std::size_t n) = 0;
  // One optimizer update (AdamW, or SGD with momentum and decoupled weight decay) of n parameters;
  // `step` counts from 1.
  virtual void update(float* params, const float* grads, float* m, float* v, std::size_t n, const OptimizerSpec& opt,
                      std::int64_t step) = 0;

  // --- clocks ----------------------------------------------------------------------------------
  // Op i of the step: a compute op, or a collective (begin just before it is posted, posted just
  // after, end when the scheduler sees it complete). step_times gives every op's start and end
  // in seconds from step_begin, once the step's work is done.
  virtual void step_begin(std::size_t ops) = 0;
  virtual void compute_begin(std::size_t op) = 0;
  virtual void compute_end(std::size_t op) = 0;
  virtual void collective_begin(std::size_t op) = 0;
  virtual void collective_posted(std::size_t op) = 0;
  virtual void collective_end(std::size_t op) = 0;
  // Waits until all work enqueued so far has finished (a GPU's streams; nothing on the CPU).
  virtual void synchronize() {}
  virtual void step_times(std::vector<double>& start, std::vector<double>& end) = 0;
};

// An array in a backend's memory, freed with it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& backend, std::size_t n) : backend_(&backend), data_(n ? backend.allocate(n) : nullptr), size_(n) {}
  Buffer(Buffer&& o) noexcept : backend_(o.backend_), data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_;
      data_ = o.data_;
      size_ = o.size_;
      o.data_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }
  float* data() { return data_; }
  const float* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void reset() {
    if (data_) backend_->release(data_);
    data_ = nullptr;
  }
  Backend* backend_ = nullptr;
  float* data_ = nullptr;
  std::size_t size_ = 0;
};

// Host clocks for the compute and collective ops (what the CPU backend uses).
class HostClock {
 public:
  void step_begin(std::size_t ops) {
    t0_ = std::chrono::steady_clock::now();
    start_.assign(ops, 0.0);
    end_.assign(ops, 0.0);
  }
  void begin(std::size_t op) { start_[op] = now(); }
  void end(std::size_t op) { end_[op] = now(); }
  void times(std::vector<double>& start, std::vector<double>& end) const {
    start = start_;
    end = end_;
  }

 private:
  double now() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }
  std::chrono::steady_clock::time_point t0_;
  std::vector<double> start_, end_;
};

// The CPU backend: exec::DiT over kernels/ CPU functions, arrays in host memory, holding the part
// of the model `shard` gives this rank.
std::unique_ptr<Backend> make_cpu_backend(const Plan& plan, const ModelShard& shard = {});

}  // namespace ditwin::exec
