// The architecture half of a plan: one description that covers DiT, SD3-style MMDiT, unified
// AR+diffusion transformers and dense GPT/Llama models, plus the named presets.
#pragma once
#include <string>
#include <vector>

namespace ditwin {

enum class ModelFamily { dit, mmdit, unified, gpt, llama };

const char* to_string(ModelFamily f);

struct ModelSpec {
  std::string preset;  // "" when spelled out
  ModelFamily family = ModelFamily::dit;

  // The transformer trunk.
  int layers = 0;
  int hidden = 0;
  int heads = 0;
  int kv_heads = 0;     // == heads unless grouped-query attention
  int ffn_hidden = 0;   // inner width of the MLP
  bool gated_mlp = false;  // SwiGLU (three matrices) instead of GELU (two)
  bool linear_bias = false;  // biases on the linear layers (GPT, DiT) or none (Llama)

  // Diffusion side (dit, mmdit, unified): latent images cut into patches.
  int image_size = 0;        // pixels per side
  int vae_downsample = 8;    // pixels per latent cell per side
  int latent_channels = 4;
  int patch = 2;
  int num_classes = 0;       // class-conditional DiT; 0 = none
  bool learn_sigma = false;  // DiT predicts variance too: 2x output channels
  int frequency_embedding = 256;  // sinusoidal timestep embedding width

  // Text side (mmdit context tokens, unified and LM tokens).
  int text_tokens = 0;       // mmdit: context length; unified: text tokens per sample
  int context_dim = 0;       // mmdit: width of the text encoder output fed to the context embedder
  int pooled_dim = 0;        // mmdit: width of the pooled text vector added to the timestep embedding
  int seq_len = 0;           // gpt/llama: tokens per sample
  int vocab = 0;
  bool tied_embeddings = false;

  int head_dim() const { return hidden / heads; }
  int kv_dim() const { return kv_heads * head_dim(); }
  bool is_diffusion() const { return family == ModelFamily::dit || family == ModelFamily::mmdit; }
  bool has_image() const { return family != ModelFamily::gpt && family != ModelFamily::llama; }
  bool has_text_vocab() const { return vocab > 0; }
  bool causal() const { return family == ModelFamily::gpt || family == ModelFamily::llama; }
  bool adaln() const { return family == ModelFamily::dit || family == ModelFamily::mmdit; }
  int streams() const { return family == ModelFamily::mmdit ? 2 : 1; }

  int latent_size() const { return image_size / vae_downsample; }
  int image_tokens() const {
    if (!has_image()) return 0;
    int side = latent_size() / patch;
    return side * side;
  }
  int out_channels() const { return learn_sigma ? 2 * latent_channels : latent_channels; }
  // Tokens that pass through each layer for one sample (both streams for MMDiT).
  long long tokens_per_sample() const;
};

// A named preset, or throws InputError listing the presets with a did-you-mean.
ModelSpec model_preset(const std::string& name, const std::string& json_path);
std::vector<std::string> model_preset_names();

}  // namespace ditwin
