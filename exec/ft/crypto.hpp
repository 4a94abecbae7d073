// Sealed blobs for encrypted checkpoints: AES-256-GCM (OpenSSL libcrypto) with a fresh random
// 96-bit nonce per blob, stored in it, and caller-chosen associated data that is authenticated but
// not stored (a shard's name and step, the manifest's identity). A blob that was tampered with,
// truncated, opened with another key or under other associated data is refused with CryptoError.
// Keys come from DITWIN_CHECKPOINT_KEY or a key file, never from the plan; nothing here prints one.
// How the checkpoint writer should use this: docs/privacy.md, "Encrypted checkpoints".
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/errors.hpp"

namespace ditwin::exec {

// Refused blobs and keys. An InputError: the CLI prints it and exits 2.
class CryptoError : public InputError {
 public:
  explicit CryptoError(const std::string& message) : InputError(message) {}
};

// A 256-bit AES key. Not printable; its bytes are wiped when it goes away.
class SecretKey {
 public:
  static constexpr std::size_t size = 32;
  explicit SecretKey(const std::array<std::uint8_t, size>& bytes) : bytes_(bytes) {}
  SecretKey(const SecretKey&) = default;
  SecretKey& operator=(const SecretKey&) = default;
  ~SecretKey();
  const std::uint8_t* data() const { return bytes_.data(); }

 private:
  std::array<std::uint8_t, size> bytes_;
};

// Blob layout: "DWS1" (4 bytes) | nonce (12) | ciphertext (as long as the plaintext) | tag (16).
// The magic and the associated data are both authenticated.
constexpr std::size_t sealed_overhead_bytes = 4 + 12 + 16;

std::vector<std::uint8_t> seal(const SecretKey& key, std::span<const std::uint8_t> plaintext,
                               std::string_view associated_data);
// Throws CryptoError naming `what` (e.g. the shard's file name) when the blob is not authentic.
std::vector<std::uint8_t> open(const SecretKey& key, std::span<const std::uint8_t> blob, std::string_view associated_data,
                               const std::string& what = "sealed blob");

// Authenticated, not encrypted, blobs (plain checkpoints that cannot be edited unnoticed):
// "DWA1" (4 bytes) | plaintext | HMAC-SHA-256 tag (32 bytes) over the magic, the associated
// data's length and bytes, and the plaintext.
constexpr std::size_t authenticated_overhead_bytes = 4 + 32;
std::vector<std::uint8_t> authenticate(const SecretKey& key, std::span<const std::uint8_t> plaintext,
                                       std::string_view associated_data);
// The plaintext of an authentic blob (tag compared in constant time); CryptoError naming `what`
// otherwise.
std::vector<std::uint8_t> verify(const SecretKey& key, std::span<const std::uint8_t> blob, std::string_view associated_data,
                                 const std::string& what = "authenticated blob");

// The key, in this order: `key_file` when given; else the file named by `env`_FILE; else `env`
// (64 hex digits). A key file holds 32 raw bytes or 64 hex digits (a trailing newline is fine),
// must be a regular file and must not be readable by group or others. Errors say which source was
// wrong and how, never what it held. The sealing key's `env` is DITWIN_CHECKPOINT_KEY, the
// authentication key's DITWIN_CHECKPOINT_AUTH_KEY.
SecretKey load_key(const std::string& key_file, const std::string& env);
inline SecretKey load_key(const std::string& key_file = "") { return load_key(key_file, "DITWIN_CHECKPOINT_KEY"); }
// 64 hex digits (either case). `source` names where they came from in errors.
SecretKey key_from_hex(std::string_view hex, const std::string& source);
// A fresh key from OpenSSL's CSPRNG (to generate key files; tests).
SecretKey random_key();

}  // namespace ditwin::exec
