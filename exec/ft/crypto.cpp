// AES-256-GCM sealed blobs and HMAC-SHA-256 authenticated blobs through OpenSSL's EVP interface,
// and key loading.
#include "exec/ft/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

namespace ditwin::exec {

namespace {

constexpr char magic[4] = {'D', 'W', 'S', '1'};
constexpr std::size_t nonce_bytes = 12, tag_bytes = 16;

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  CipherCtx() {
    if (!ctx) throw std::runtime_error("OpenSSL: cannot allocate a cipher context");
  }
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

void check(int ok, const char* what) {
  if (ok != 1) throw std::runtime_error(std::string("OpenSSL: ") + what + " failed");
}

// GCM's additional authenticated data: the blob's magic, then the caller's.
void add_aad(EVP_CIPHER_CTX* ctx, std::string_view associated_data, bool encrypt) {
  int len = 0;
  auto update = encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate;
  check(update(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(magic), sizeof magic), "AAD");
  if (!associated_data.empty())
    check(update(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(associated_data.data()),
                 static_cast<int>(associated_data.size())),
          "AAD");
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

SecretKey::~SecretKey() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

std::vector<std::uint8_t> seal(const SecretKey& key, std::span<const std::uint8_t> plaintext,
                               std::string_view associated_data) {
  if (plaintext.size() > (1ULL << 36)) throw std::invalid_argument("seal: more than 64 GiB in one blob");
  std::vector<std::uint8_t> blob(sealed_overhead_bytes + plaintext.size());
  std::memcpy(blob.data(), magic, sizeof magic);
  std::uint8_t* nonce = blob.data() + sizeof magic;
  // A fresh random nonce per blob: with 96 random bits, 2^32 blobs under one key keep the chance
  // of a repeat below 2^-32 (NIST SP 800-38D, 8.3).
  check(RAND_bytes(nonce, nonce_bytes), "RAND_bytes");
  CipherCtx c;
  check(EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr), "EncryptInit");
  check(EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_IVLEN, nonce_bytes, nullptr), "set IV length");
  check(EVP_EncryptInit_ex(c.ctx, nullptr, nullptr, key.data(), nonce), "EncryptInit key");
  add_aad(c.ctx, associated_data, true);
  std::uint8_t* out = nonce + nonce_bytes;
  std::size_t done = 0;
  while (done < plaintext.size()) {  // EVP takes int lengths: 1 GiB at a time
    int chunk = static_cast<int>(std::min<std::size_t>(plaintext.size() - done, 1u << 30)), len = 0;
    check(EVP_EncryptUpdate(c.ctx, out + done, &len, plaintext.data() + done, chunk), "EncryptUpdate");
    done += static_cast<std::size_t>(len);
  }
  int len = 0;
  check(EVP_EncryptFinal_ex(c.ctx, out + done, &len), "EncryptFinal");
  check(EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, tag_bytes, out + plaintext.size()), "get tag");
  return blob;
}

std::vector<std::uint8_t> open(const SecretKey& key, std::span<const std::uint8_t> blob, std::string_view associated_data,
                               const std::string& what) {
  if (blob.size() < sealed_overhead_bytes)
    throw CryptoError(what + ": truncated: " + std::to_string(blob.size()) + " bytes, a sealed blob has at least " +
                      std::to_string(sealed_overhead_bytes));
  if (std::memcmp(blob.data(), magic, sizeof magic) != 0)
    throw CryptoError(what + ": not an encrypted ditwin blob (no DWS1 header): corrupted, or written without encryption");
  const std::uint8_t* nonce = blob.data() + sizeof magic;
  const std::uint8_t* cipher = nonce + nonce_bytes;
  std::size_t n = blob.size() - sealed_overhead_bytes;
  std::vector<std::uint8_t> plain(n);
  CipherCtx c;
  check(EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr), "DecryptInit");
  check(EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_IVLEN, nonce_bytes, nullptr), "set IV length");
  check(EVP_DecryptInit_ex(c.ctx, nullptr, nullptr, key.data(), nonce), "DecryptInit key");
  add_aad(c.ctx, associated_data, false);
  std::size_t done = 0;
  while (done < n) {
    int chunk = static_cast<int>(std::min<std::size_t>(n - done, 1u << 30)), len = 0;
    check(EVP_DecryptUpdate(c.ctx, plain.data() + done, &len, cipher + done, chunk), "DecryptUpdate");
    done += static_cast<std::size_t>(len);
  }
  std::array<std::uint8_t, tag_bytes> tag;
  std::memcpy(tag.data(), cipher + n, tag_bytes);
  check(EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, tag_bytes, tag.data()), "set tag");
  int len = 0;
  if (EVP_DecryptFinal_ex(c.ctx, plain.data() + done, &len) != 1) {
    OPENSSL_cleanse(plain.data(), plain.size());  // never hand out unauthenticated plaintext
    throw CryptoError(what + ": authentication failed: the data was modified or truncated, the key is not the one "
                             "it was written with, or it belongs to another shard or step");
  }
  return plain;
}

SecretKey key_from_hex(std::string_view hex, const std::string& source) {
  while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r')) hex.remove_suffix(1);
  if (hex.size() != 2 * SecretKey::size)
    throw CryptoError(source + ": expected 64 hex digits (a 256-bit key), got " + std::to_string(hex.size()) +
                      " characters");
  std::array<std::uint8_t, SecretKey::size> bytes{};
  for (std::size_t i = 0; i < SecretKey::size; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(bytes.data(), bytes.size());
      throw CryptoError(source + ": not hexadecimal (character " + std::to_string(hi < 0 ? 2 * i + 1 : 2 * i + 2) +
                        " is not 0-9 or a-f)");
    }
    bytes[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  SecretKey key(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return key;
}

namespace {
SecretKey key_from_file(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw CryptoError("checkpoint key file " + path + ": cannot read it");
  if (!S_ISREG(st.st_mode)) throw CryptoError("checkpoint key file " + path + ": not a regular file (a directory?)");
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    throw CryptoError("checkpoint key file " + path + ": readable by group or others; chmod 600 it");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CryptoError("checkpoint key file " + path + ": cannot read it");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string source = "checkpoint key file " + path;
  if (content.size() == SecretKey::size) {  // 32 raw bytes
    std::array<std::uint8_t, SecretKey::size> bytes{};
    std::memcpy(bytes.data(), content.data(), bytes.size());
    OPENSSL_cleanse(content.data(), content.size());
    SecretKey key(bytes);
    OPENSSL_cleanse(bytes.data(), bytes.size());
    return key;
  }
  try {
    SecretKey key = key_from_hex(content, source);
    OPENSSL_cleanse(content.data(), content.size());
    return key;
  } catch (const CryptoError&) {
    std::size_t size = content.size();
    OPENSSL_cleanse(content.data(), content.size());
    throw CryptoError(source + ": expected 32 raw bytes or 64 hex digits, got " + std::to_string(size) + " bytes");
  }
}
}  // namespace

SecretKey load_key(const std::string& key_file, const std::string& env) {
  if (!key_file.empty()) return key_from_file(key_file);
  std::string file_env = env + "_FILE";
  if (const char* path = std::getenv(file_env.c_str()); path && *path) return key_from_file(path);
  if (const char* hex = std::getenv(env.c_str()); hex && *hex) return key_from_hex(hex, env);
  throw CryptoError("no checkpoint key: set " + env + " to 64 hex digits, or " + file_env + " to a key "
                    "file (32 raw bytes or 64 hex digits, mode 600)");
}

namespace {

constexpr char auth_magic[4] = {'D', 'W', 'A', '1'};
constexpr std::size_t hmac_bytes = 32;

// HMAC-SHA-256 over the magic, the associated data (length first, so no two splits collide) and
// the payload, through OpenSSL 3's EVP_MAC.
std::array<std::uint8_t, hmac_bytes> hmac(const SecretKey& key, std::string_view associated_data,
                                          std::span<const std::uint8_t> payload) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!mac) throw std::runtime_error("OpenSSL: HMAC is not available");
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);
  if (!ctx) throw std::runtime_error("OpenSSL: cannot allocate an HMAC context");
  std::unique_ptr<EVP_MAC_CTX, void (*)(EVP_MAC_CTX*)> guard(ctx, EVP_MAC_CTX_free);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
  check(EVP_MAC_init(ctx, key.data(), SecretKey::size, params), "HMAC init");
  std::uint64_t length = associated_data.size();
  std::uint8_t length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<std::uint8_t>(length >> (8 * i));
  check(EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(auth_magic), sizeof auth_magic), "HMAC update");
  check(EVP_MAC_update(ctx, length_bytes, sizeof length_bytes), "HMAC update");
  check(EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(associated_data.data()), associated_data.size()), "HMAC update");
  check(EVP_MAC_update(ctx, payload.data(), payload.size()), "HMAC update");
  std::array<std::uint8_t, hmac_bytes> tag{};
  std::size_t written = 0;
  check(EVP_MAC_final(ctx, tag.data(), &written, tag.size()), "HMAC final");
  if (written != hmac_bytes) throw std::runtime_error("OpenSSL: HMAC-SHA-256 gave an unexpected length");
  return tag;
}

}  // namespace

std::vector<std::uint8_t> authenticate(const SecretKey& key, std::span<const std::uint8_t> plaintext,
                                       std::string_view associated_data) {
  std::vector<std::uint8_t> blob(authenticated_overhead_bytes + plaintext.size());
  std::memcpy(blob.data(), auth_magic, sizeof auth_magic);
  if (!plaintext.empty()) std::memcpy(blob.data() + sizeof auth_magic, plaintext.data(), plaintext.size());
  auto tag = hmac(key, associated_data, plaintext);
  std::memcpy(blob.data() + sizeof auth_magic + plaintext.size(), tag.data(), tag.size());
  return blob;
}

std::vector<std::uint8_t> verify(const SecretKey& key, std::span<const std::uint8_t> blob, std::string_view associated_data,
                                 const std::string& what) {
  if (blob.size() < authenticated_overhead_bytes || std::memcmp(blob.data(), auth_magic, sizeof auth_magic) != 0)
    throw CryptoError(what + ": not an authenticated blob (too short or no DWA1 header)");
  auto payload = blob.subspan(sizeof auth_magic, blob.size() - authenticated_overhead_bytes);
  auto tag = hmac(key, associated_data, payload);
  if (CRYPTO_memcmp(tag.data(), blob.data() + blob.size() - hmac_bytes, hmac_bytes) != 0)
    throw CryptoError(what + ": authentication failed: the data was modified or truncated, the key is not the one "
                             "it was written with, or it belongs to another shard or step");
  return std::vector<std::uint8_t>(payload.begin(), payload.end());
}

SecretKey random_key() {
  std::array<std::uint8_t, SecretKey::size> bytes{};
  check(RAND_bytes(bytes.data(), static_cast<int>(bytes.size())), "RAND_bytes");
  SecretKey key(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return key;
}

}  // namespace ditwin::exec
