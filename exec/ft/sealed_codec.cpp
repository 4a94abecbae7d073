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

std::string AuthenticatedCodec::encode(const std::string& plain, const std::string& context) const {
  auto bytes = authenticate(key_, {reinterpret_cast<const std::uint8_t*>(plain.data()), plain.size()}, context);
  return std::string(bytes.begin(), bytes.end());
}

std::string AuthenticatedCodec::decode(const std::string& stored, const std::string& context) const {
  if (stored.compare(0, 4, "DWS1") == 0)
    throw CheckpointError(context + ": the checkpoint is encrypted; give its key (--checkpoint-key FILE, "
                          "DITWIN_CHECKPOINT_KEY_FILE or DITWIN_CHECKPOINT_KEY) instead of an authentication key");
  try {
    auto bytes = verify(key_, {reinterpret_cast<const std::uint8_t*>(stored.data()), stored.size()}, context, context);
    return std::string(bytes.begin(), bytes.end());
  } catch (const CryptoError& e) {
    throw CheckpointError(std::string(e.what()) +
                          " (tampered, truncated, written without authentication, or authenticated with another key)");
  }
}

std::unique_ptr<ShardCodec> checkpoint_codec(const std::string& key_file, const std::string& auth_key_file) {
  auto set = [](const char* v) { return std::getenv(v) != nullptr && *std::getenv(v) != 0; };
  bool seal = !key_file.empty() || set("DITWIN_CHECKPOINT_KEY_FILE") || set("DITWIN_CHECKPOINT_KEY");
  bool auth = !auth_key_file.empty() || set("DITWIN_CHECKPOINT_AUTH_KEY_FILE") || set("DITWIN_CHECKPOINT_AUTH_KEY");
  if (seal && auth)
    throw InputError("--checkpoint-auth-key: not with an encryption key (--checkpoint-key or DITWIN_CHECKPOINT_KEY*): "
                     "sealed checkpoints are authenticated already; give one of the two");
  if (seal) return std::make_unique<SealedCodec>(load_key(key_file));
  if (auth) return std::make_unique<AuthenticatedCodec>(load_key(auth_key_file, "DITWIN_CHECKPOINT_AUTH_KEY"));
  return nullptr;
}

}  // namespace ditwin::exec
