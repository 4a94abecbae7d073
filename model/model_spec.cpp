// Model presets. Every figure carries its source; where a preset fills a gap the source leaves
// open (sequence lengths, context sizes) the comment says it is ditwin's default.
#include "model/model_spec.hpp"

#include <functional>
#include <map>

#include "model/errors.hpp"
#include "model/json_reader.hpp"

namespace ditwin {

const char* to_string(ModelFamily f) {
  switch (f) {
    case ModelFamily::dit: return "dit";
    case ModelFamily::mmdit: return "mmdit";
    case ModelFamily::unified: return "unified";
    case ModelFamily::gpt: return "gpt";
    case ModelFamily::llama: return "llama";
  }
  return "?";
}

long long ModelSpec::tokens_per_sample() const {
  switch (family) {
    case ModelFamily::dit: return image_tokens();
    case ModelFamily::mmdit:
    case ModelFamily::unified: return image_tokens() + text_tokens;
    case ModelFamily::gpt:
    case ModelFamily::llama: return seq_len;
  }
  return 0;
}

namespace {

// DiT (Peebles & Xie 2023, Table 1): S 12/384/6, B 12/768/12, L 24/1024/16, XL 28/1152/16;
// MLP ratio 4, ImageNet 256x256 through the SD VAE (8x, 4 channels), 1000 classes, learned sigma.
ModelSpec dit(int layers, int hidden, int heads, int patch) {
  ModelSpec m;
  m.family = ModelFamily::dit;
  m.layers = layers;
  m.hidden = hidden;
  m.heads = m.kv_heads = heads;
  m.ffn_hidden = 4 * hidden;
  m.linear_bias = true;
  m.image_size = 256;
  m.latent_channels = 4;
  m.patch = patch;
  m.num_classes = 1000;
  m.learn_sigma = true;
  return m;
}

// SD3 MMDiT (Esser et al. 2024, §5.2): depth d gives hidden 64d, d heads, d layers, MLP ratio 4;
// 16-channel latents, patch 2; context = 77 CLIP + 77 T5 tokens of width 4096 (T5-XXL), pooled
// CLIP-L + CLIP-G vector of width 2048. d = 24 is ~2B, d = 38 is ~8B (the paper's largest).
// The default resolution (1024 px) is ditwin's choice: the paper trains at 256 then 1024.
ModelSpec mmdit(int depth) {
  ModelSpec m;
  m.family = ModelFamily::mmdit;
  m.layers = depth;
  m.hidden = 64 * depth;
  m.heads = m.kv_heads = depth;
  m.ffn_hidden = 4 * m.hidden;
  m.linear_bias = true;
  m.image_size = 1024;
  m.latent_channels = 16;
  m.patch = 2;
  m.text_tokens = 154;
  m.context_dim = 4096;
  m.pooled_dim = 2048;
  return m;
}

// Unified AR + diffusion transformer in the style of Transfusion (Zhou et al. 2024): one
// Llama-2-7B-shaped trunk (32 layers, 4096 hidden, 32 heads, SwiGLU 11008, Llama 2 tokenizer with
// 32,000 tokens), causal attention over text, bidirectional within each image; images 256 px
// through an 8x VAE with 8 latent channels, patch 2 (256 image tokens). Text tokens per sample
// (3,840, so a sample is 4,096 tokens) are ditwin's default.
ModelSpec unified_7b() {
  ModelSpec m;
  m.family = ModelFamily::unified;
  m.layers = 32;
  m.hidden = 4096;
  m.heads = m.kv_heads = 32;
  m.ffn_hidden = 11008;
  m.gated_mlp = true;
  m.image_size = 256;
  m.latent_channels = 8;
  m.patch = 2;
  m.text_tokens = 3840;
  m.vocab = 32000;
  return m;
}

// GPT-style dense decoder as Megatron-LM trains it: learned positions, GELU MLP 4h, biases,
// tied input/output embeddings, vocabulary padded to 51,200, sequence 2,048.
ModelSpec gpt(int layers, int hidden, int heads) {
  ModelSpec m;
  m.family = ModelFamily::gpt;
  m.layers = layers;
  m.hidden = hidden;
  m.heads = m.kv_heads = heads;
  m.ffn_hidden = 4 * hidden;
  m.linear_bias = true;
  m.seq_len = 2048;
  m.vocab = 51200;
  m.tied_embeddings = true;
  return m;
}

// Llama 3 (Dubey et al. 2024, Table 3): GQA with 8 KV heads, SwiGLU, RMSNorm, vocabulary 128,256,
// untied embeddings; 8,192-token sequences in pre-training.
ModelSpec llama3(int layers, int hidden, int heads, int ffn) {
  ModelSpec m;
  m.family = ModelFamily::llama;
  m.layers = layers;
  m.hidden = hidden;
  m.heads = heads;
  m.kv_heads = 8;
  m.ffn_hidden = ffn;
  m.gated_mlp = true;
  m.seq_len = 8192;
  m.vocab = 128256;
  return m;
}

const std::map<std::string, std::function<ModelSpec()>>& presets() {
  static const std::map<std::string, std::function<ModelSpec()>> table = [] {
    std::map<std::string, std::function<ModelSpec()>> t;
    struct Size { const char* name; int layers, hidden, heads; };
    for (Size s : {Size{"S", 12, 384, 6}, Size{"B", 12, 768, 12}, Size{"L", 24, 1024, 16},
                   Size{"XL", 28, 1152, 16}}) {
      for (int p : {2, 4, 8}) {
        t[std::string("DiT-") + s.name + "/" + std::to_string(p)] = [s, p] {
          return dit(s.layers, s.hidden, s.heads, p);
        };
      }
    }
    t["MMDiT-2B"] = [] { return mmdit(24); };
    t["MMDiT-8B"] = [] { return mmdit(38); };
    t["Unified-7B"] = [] { return unified_7b(); };
    // GPT-3 175B (Brown et al. 2020, Table 2.1): 96 layers, 12,288 hidden, 96 heads.
    t["GPT-3-175B"] = [] { return gpt(96, 12288, 96); };
    // Megatron-LM (Narayanan et al. SC'21, Table 1): layers, hidden, heads per size.
    struct Meg { const char* name; int layers, hidden, heads; };
    for (Meg g : {Meg{"1.7B", 24, 2304, 24}, Meg{"3.6B", 30, 3072, 32}, Meg{"7.5B", 36, 4096, 32},
                  Meg{"18.4B", 40, 6144, 48}, Meg{"39.1B", 48, 8192, 64},
                  Meg{"76.1B", 60, 10240, 80}, Meg{"145.6B", 80, 12288, 96},
                  Meg{"310.1B", 96, 16384, 128}, Meg{"529.6B", 105, 20480, 128},
                  Meg{"1008B", 128, 25600, 160},
                  // Korthikanti et al. 2022, Table 3: the 22B model (48 layers, 6,144, 64 heads).
                  Meg{"22B", 48, 6144, 64}}) {
      t[std::string("Megatron-") + g.name] = [g] { return gpt(g.layers, g.hidden, g.heads); };
    }
    t["Llama-3-8B"] = [] { return llama3(32, 4096, 32, 14336); };
    t["Llama-3-70B"] = [] { return llama3(80, 8192, 64, 28672); };
    t["Llama-3-405B"] = [] { return llama3(126, 16384, 128, 53248); };
    for (auto& [name, make] : t) {
      auto inner = make;
      make = [inner, name = name] {
        ModelSpec m = inner();
        m.preset = name;
        return m;
      };
    }
    return t;
  }();
  return table;
}

}  // namespace

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, make] : presets()) names.push_back(name);
  return names;
}

ModelSpec model_preset(const std::string& name, const std::string& json_path) {
  auto it = presets().find(name);
  if (it != presets().end()) return it->second();
  std::string message = json_path + ": unknown model preset \"" + name + "\"";
  std::string hint = closest_word(name, model_preset_names());
  if (!hint.empty()) message += " (did you mean \"" + hint + "\"?)";
  message += "; presets:";
  for (const auto& n : model_preset_names()) message += " " + n;
  throw InputError(message);
}

}  // namespace ditwin
