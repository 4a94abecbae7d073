// A dataset on disk as the executor's DataSource: the order (epochs of a keyed permutation), the
// diffusion noise and timestep of each sample, and a reader thread that fetches the next step's
// samples while the current step trains.
#include "exec/data/data_source.hpp"

#include <exception>
#include <thread>

#include "exec/model/rng.hpp"
#include "exec/model/timesteps.hpp"
#include "model/errors.hpp"

namespace ditwin::exec {

namespace {

// Stream tags, so a dataset sample's draws never coincide with another stream of the same seed.
constexpr std::uint64_t order_tag = 0x6f72646572ULL;      // "order"
constexpr std::uint64_t sample_tag = 0x64617461ULL;       // "data"
constexpr std::uint64_t poisson_tag = 0x706f6973ULL;      // "pois"

// One pass of a 4-round Feistel network on 2h-bit values: a bijection of [0, 4^h) for any key.
std::uint64_t feistel(std::uint64_t x, int h, std::uint64_t key) {
  const std::uint64_t mask = (std::uint64_t{1} << h) - 1;
  std::uint64_t left = x >> h, right = x & mask;
  for (std::uint64_t round = 0; round < 4; ++round) {
    const std::uint64_t f = Rng({key, round, right}).next() & mask;
    const std::uint64_t next = left ^ f;
    left = right;
    right = next;
  }
  return (left << h) | right;
}

class DiskData final : public DataSource {
 public:
  DiskData(std::shared_ptr<const Dataset> dataset, const ModelSpec& model, const ObjectiveSpec& objective,
           std::uint64_t seed, bool shuffle)
      : dataset_(std::move(dataset)), model_(model), objective_(objective), seed_(seed), shuffle_(shuffle) {
    check_timestep_strategy(objective);
  }
  ~DiskData() override {
    if (reader_.joinable()) reader_.join();
  }

  Batch sample(const SampleRef& at) override {
    if (ahead_) {
      if (reader_.joinable()) reader_.join();
      Ahead& a = *ahead_;
      for (std::size_t k = 0; k < a.refs.size(); ++k) {
        const std::size_t i = (a.next + k) % a.refs.size();  // asked for in order: found at once
        const SampleRef& r = a.refs[i];
        if (r.step != at.step || r.slot != at.slot || r.position != at.position) continue;
        if (i >= a.samples.size()) {  // the reader stopped at this sample: its error is the caller's now
          std::exception_ptr error = a.error;
          ahead_.reset();
          std::rethrow_exception(error);
        }
        a.next = i + 1;
        return std::move(a.samples[i]);
      }
    }
    return read(at);
  }

  Batch example(std::int64_t example, std::int64_t step) override {
    Batch b;
    dataset_->read(example % dataset_->samples(), b);
    Rng rng({seed_, poisson_tag, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(example)});
    draw(b, rng);
    return b;
  }

  void prefetch(std::vector<SampleRef> next) override {
    if (reader_.joinable()) reader_.join();
    ahead_ = std::make_unique<Ahead>();
    ahead_->refs = std::move(next);
    Ahead* a = ahead_.get();
    reader_ = std::thread([this, a] {
      try {
        for (const SampleRef& r : a->refs) a->samples.push_back(read(r));
      } catch (...) {
        a->error = std::current_exception();
      }
    });
  }

  nlohmann::json describe() const override {
    return {{"kind", "disk"},
            {"path", dataset_->dir()},
            {"samples", dataset_->samples()},
            {"shards", dataset_->shards()},
            {"shuffle", shuffle_},
            {"index_sha256", dataset_->index_sha256()},
            {"order", shuffle_ ? "position p reads example perm_{seed, p / samples}(p mod samples)"
                               : "position p reads example p mod samples"}};
  }

 private:
  // Samples read ahead by reader_; only the reader touches it until it is joined.
  struct Ahead {
    std::vector<SampleRef> refs;
    std::vector<Batch> samples;  // refs[i]'s, for i below samples.size()
    std::exception_ptr error;    // why the reader stopped early
    std::size_t next = 0;        // where the next lookup starts
  };

  // Called from the caller's thread and from reader_: the dataset's reads are thread-safe and
  // everything else here is read-only.
  Batch read(const SampleRef& at) const {
    Batch b;
    dataset_->read(example_at(at.position, dataset_->samples(), shuffle_, seed_), b);
    Rng rng({seed_, sample_tag, static_cast<std::uint64_t>(at.step), static_cast<std::uint64_t>(at.slot)});
    draw(b, rng);
    return b;
  }

  void draw(Batch& b, Rng& rng) const {
    b.t = {draw_timestep(objective_, model_, rng)};
    b.noise.resize(b.x0.size());
    for (float& e : b.noise) e = static_cast<float>(rng.normal());
  }

  std::shared_ptr<const Dataset> dataset_;
  ModelSpec model_;
  ObjectiveSpec objective_;
  std::uint64_t seed_;
  bool shuffle_;
  std::thread reader_;
  std::unique_ptr<Ahead> ahead_;
};

}  // namespace

std::int64_t example_at(std::int64_t position, std::int64_t n, bool shuffle, std::uint64_t seed) {
  const std::int64_t k = position % n;
  if (!shuffle) return k;
  // Cycle-walking: permute within [0, 4^h) >= n until the value lands in [0, n). The domain is
  // under 4n, so a few passes on average; the walk ends because k's cycle returns to k < n.
  int h = 1;
  while ((std::uint64_t{1} << (2 * h)) < static_cast<std::uint64_t>(n)) ++h;
  const std::uint64_t key = Rng({seed, order_tag, static_cast<std::uint64_t>(position / n)}).next();
  std::uint64_t x = static_cast<std::uint64_t>(k);
  do x = feistel(x, h, key);
  while (x >= static_cast<std::uint64_t>(n));
  return static_cast<std::int64_t>(x);
}

std::unique_ptr<DataSource> make_disk_source(std::shared_ptr<const Dataset> dataset, const ModelSpec& model,
                                             const ObjectiveSpec& objective, std::uint64_t seed, bool shuffle) {
  return std::make_unique<DiskData>(std::move(dataset), model, objective, seed, shuffle);
}

std::unique_ptr<DataSource> make_data_source(const Plan& plan) {
  const TrainingSpec& t = plan.training;
  if (!t.data.on_disk()) return make_synthetic_latents(plan.model, t.objective, t.seed);
  auto dataset = std::make_shared<const Dataset>(t.data.path, plan.model);
  if (t.privacy.enabled && t.privacy.dataset_size != dataset->samples())
    throw InputError("training.privacy.dataset_size: " + std::to_string(t.privacy.dataset_size) + ", but the dataset in " +
                     t.data.path + " has " + std::to_string(dataset->samples()) +
                     " examples; the accountant's sampling rate must use the size Poisson draws from");
  return make_disk_source(std::move(dataset), plan.model, t.objective, t.seed, t.data.shuffle);
}

}  // namespace ditwin::exec
