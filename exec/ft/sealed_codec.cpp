#include "exec/ft/sealed_codec.hpp"

#include <cstdlib>

namespace ditwin::exec {

std::string SealedCodec::encode(const std::string& plain, const std::string& context) const {
  auto bytes = seal(key_, {reinterpret_cast<const std::uint8_t*>(plain.data()), plain.size()}, context);
  return std::string(bytes.begin(), bytes.end());
}

std::string SealedCodec::decode(const std::string& stored, const std::string& context) const {
  try {
    auto bytes = open(key_, {reinterpret_cast<const std::uint8_t*>(stored.data()), stored.size()}, context, context);
    return std::string(bytes.begin(), bytes.end());
  } catch (const CryptoError& e) {
    throw CheckpointError(std::string(e.what()) + " (tampered, truncated, written without encryption, or sealed with another key)");
  }
}

std::unique_ptr<ShardCodec> checkpoint_codec(const std::string& key_file) {
  bool from_env = std::getenv("DITWIN_CHECKPOINT_KEY_FILE") || std::getenv("DITWIN_CHECKPOINT_KEY");
  if (key_file.empty() && !from_env) return nullptr;
  return std::make_unique<SealedCodec>(load_key(key_file));
}

}  // namespace ditwin::exec
