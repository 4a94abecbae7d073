// Class-conditional synthetic latents for training without a dataset: class k's samples are a
// fixed random smooth pattern plus per-sample noise, so the loss has something to learn.
#include <algorithm>
#include <cmath>
#include <string>

#include "exec/model/dit_model.hpp"
#include "exec/model/rng.hpp"
#include "exec/model/timesteps.hpp"
#include "model/errors.hpp"

namespace ditwin::exec {
namespace {

class SyntheticLatents final : public SyntheticData {
 public:
  SyntheticLatents(const ModelSpec& model, const ObjectiveSpec& objective, std::uint64_t seed)
      : model_(model), channels_(model.latent_channels), size_(model.latent_size()),
        classes_(model.num_classes > 0 || model.family == ModelFamily::dit ? model.num_classes : caption_classes),
        objective_(objective), seed_(seed) {
    check_timestep_strategy(objective);
    if (channels_ <= 0 || size_ <= 0)
      throw InputError("model: synthetic latents need latent_channels > 0 and image_size >= vae_downsample");
    // Each class's mean is smooth: per channel a sum of a few random low-frequency 2-D waves,
    // which a patch transformer with sin-cos positions can learn in tens of steps (white-noise
    // means would have to be memorised pixel by pixel).
    const std::size_t n = plane();
    means_.resize(static_cast<std::size_t>(std::max(classes_, 1)) * n);
    for (int k = 0; k < std::max(classes_, 1); ++k) {
      Rng rng({seed_, 0x636c617373ULL /* "class" */, static_cast<std::uint64_t>(k)});
      for (int c = 0; c < channels_; ++c) {
        float* mean = means_.data() + static_cast<std::size_t>(k) * n + static_cast<std::size_t>(c) * size_ * size_;
        std::fill(mean, mean + size_ * size_, 0.0f);
        for (int wave = 0; wave < waves; ++wave) {
          const double fx = static_cast<double>(rng.next() % 3), fy = static_cast<double>(rng.next() % 3);
          const double phase = 6.283185307179586 * rng.uniform(), amplitude = rng.normal();
          for (int i = 0; i < size_; ++i)
            for (int j = 0; j < size_; ++j)
              mean[i * size_ + j] += static_cast<float>(
                  amplitude * std::sqrt(2.0 / waves) * std::cos(6.283185307179586 * (fx * i + fy * j) / size_ + phase));
        }
      }
    }
  }

  // A caption for class y, drawn after the image so the DiT's data are the same with or without:
  // mmdit: the class's fixed context and pooled vectors plus noise; unified: the class's fixed
  // token sequence with a tenth of its tokens replaced at random.
  void add_text(Batch& b, int y, Rng& rng) const {
    const ModelSpec& m = model_;
    if (m.family == ModelFamily::mmdit) {
      const std::size_t nc = static_cast<std::size_t>(m.text_tokens) * m.context_dim;
      Rng cls({seed_, 0x63617074ULL /* "capt" */, static_cast<std::uint64_t>(y)});
      for (std::size_t j = 0; j < nc; ++j) b.context.push_back(static_cast<float>(cls.normal() + text_noise * rng.normal()));
      for (int j = 0; j < m.pooled_dim; ++j) b.pooled.push_back(static_cast<float>(cls.normal() + text_noise * rng.normal()));
    } else if (m.family == ModelFamily::unified) {
      Rng cls({seed_, 0x63617074ULL, static_cast<std::uint64_t>(y)});
      for (int j = 0; j < m.text_tokens; ++j) {
        int token = static_cast<int>(cls.next() % static_cast<std::uint64_t>(m.vocab));
        if (rng.uniform() < 0.1) token = static_cast<int>(rng.next() % static_cast<std::uint64_t>(m.vocab));
        b.tokens.push_back(token);
      }
    }
  }

  Batch batch(std::int64_t step, int rank, int micro_batch, int size) override {
    Batch b;
    b.size = size;
    const std::size_t n = plane();
    b.x0.resize(size * n);
    b.noise.resize(size * n);
    b.t.resize(size);
    b.y.resize(size);
    // One stream per sample: the first k samples of a larger batch are the same samples.
    for (int i = 0; i < size; ++i) {
      Rng rng({seed_, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(rank),
               static_cast<std::uint64_t>(micro_batch), static_cast<std::uint64_t>(i)});
      const int y = classes_ > 0 ? static_cast<int>(rng.next() % static_cast<std::uint64_t>(classes_)) : 0;
      b.y[i] = y;
      b.t[i] = draw_timestep(objective_, model_, rng);
      const float* mean = means_.data() + static_cast<std::size_t>(y) * n;
      for (std::size_t j = 0; j < n; ++j) b.x0[i * n + j] = mean[j] + sample_noise * static_cast<float>(rng.normal());
      for (std::size_t j = 0; j < n; ++j) b.noise[i * n + j] = static_cast<float>(rng.normal());
      add_text(b, y, rng);
    }
    return b;
  }

 private:
  static constexpr int waves = 3;
  // mmdit and unified plans have no class labels: their captions come in this many kinds, each
  // with its own image pattern, so the text carries what the image should be.
  static constexpr int caption_classes = 10;
  static constexpr float sample_noise = 0.3f;  // per-sample spread around the class mean
  static constexpr double text_noise = 0.3;    // per-sample spread of the caption's encoder outputs
  std::size_t plane() const { return static_cast<std::size_t>(channels_) * size_ * size_; }
  ModelSpec model_;
  int channels_, size_, classes_;
  ObjectiveSpec objective_;
  std::uint64_t seed_;
  std::vector<float> means_;
};

}  // namespace

Batch SyntheticData::example(std::int64_t example, std::int64_t step) {
  // The example's latent and class are its draw at step 0; its noise and timestep the step's.
  Batch item = batch(0, 0, static_cast<int>(example), 1);
  Batch draw = batch(step, 1, static_cast<int>(example), 1);
  item.noise = std::move(draw.noise);
  item.t = std::move(draw.t);
  return item;
}

nlohmann::json SyntheticData::describe() const {
  return {{"kind", "synthetic"}, {"sample", "a function of (training.seed, step, index in the global batch)"}};
}

std::unique_ptr<SyntheticData> make_synthetic_latents(const ModelSpec& model, const ObjectiveSpec& objective,
                                                      std::uint64_t seed) {
  return std::make_unique<SyntheticLatents>(model, objective, seed);
}

}  // namespace ditwin::exec
