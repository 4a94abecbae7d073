// Encrypted checkpoints: the checkpoint store's codec sealing every shard and the manifest with
// AES-256-GCM (exec/crypto). Each file gets its own random nonce and is bound to its name (the
// associated data), so a shard cannot be swapped for another; the manifest, which holds every
// shard's checksum and the plan's identity, is sealed too. A tampered, truncated or wrong-key
// file is refused with a CheckpointError naming it, and the store falls back to the previous
// good checkpoint as it does for any damaged one.
#pragma once
#include <memory>

#include "exec/ft/checkpoint.hpp"
#include "exec/ft/crypto.hpp"

namespace ditwin::exec {

class SealedCodec final : public ShardCodec {
 public:
  explicit SealedCodec(SecretKey key) : key_(std::move(key)) {}
  std::string name() const override { return "aes-256-gcm"; }
  std::string encode(const std::string& plain, const std::string& context) const override;
  std::string decode(const std::string& stored, const std::string& context) const override;

 private:
  SecretKey key_;
};

// Authenticated plain checkpoints: every shard and the manifest stay readable but carry an
// HMAC-SHA-256 tag bound to the file's name, so an edit (even with the SHA-256 recomputed), a
// truncation or a swapped file is refused like a corrupt one. Protects integrity, not secrecy.
class AuthenticatedCodec final : public ShardCodec {
 public:
  explicit AuthenticatedCodec(SecretKey key) : key_(std::move(key)) {}
  std::string name() const override { return "hmac-sha256"; }
  std::string encode(const std::string& plain, const std::string& context) const override;
  std::string decode(const std::string& stored, const std::string& context) const override;

 private:
  SecretKey key_;
};

// The codec for this run: sealed when `key_file` is given or DITWIN_CHECKPOINT_KEY_FILE /
// DITWIN_CHECKPOINT_KEY is set; authenticated when `auth_key_file` is given or
// DITWIN_CHECKPOINT_AUTH_KEY_FILE / DITWIN_CHECKPOINT_AUTH_KEY is set (exec/crypto's load_key);
// both is refused (sealing authenticates already); else null (plain checkpoints).
std::unique_ptr<ShardCodec> checkpoint_codec(const std::string& key_file, const std::string& auth_key_file = "");

}  // namespace ditwin::exec
