// AES-256-GCM sealed blobs through OpenSSL's EVP interface, and key loading.
#include "exec/ft/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
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

SecretKey load_key(const std::string& key_file) {
  if (!key_file.empty()) return key_from_file(key_file);
  if (const char* path = std::getenv("DITWIN_CHECKPOINT_KEY_FILE"); path && *path) return key_from_file(path);
  if (const char* hex = std::getenv("DITWIN_CHECKPOINT_KEY"); hex && *hex) return key_from_hex(hex, "DITWIN_CHECKPOINT_KEY");
  throw CryptoError("no checkpoint key: set DITWIN_CHECKPOINT_KEY to 64 hex digits, or DITWIN_CHECKPOINT_KEY_FILE to a key "
                    "file (32 raw bytes or 64 hex digits, mode 600)");
}

SecretKey random_key() {
  std::array<std::uint8_t, SecretKey::size> bytes{};
  check(RAND_bytes(bytes.data(), static_cast<int>(bytes.size())), "RAND_bytes");
  SecretKey key(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return key;
}

}  // namespace ditwin::exec
