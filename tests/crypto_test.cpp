// Sealed blobs for encrypted checkpoints: round trips; any flipped byte, any truncation, a wrong
// key or other associated data is refused; nonces never repeat; keys load from the environment
// or a key file, and no error message carries key material.
#include <gtest/gtest.h>

#include <filesystem>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <numeric>

#include "exec/ft/crypto.hpp"

namespace ditwin::exec {
namespace {

const std::string hex_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

// The message of the CryptoError `f` throws, or "" when it throws none.
template <typename F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const CryptoError& e) {
    return e.what();
  }
  return "";
}

TEST(Crypto, RoundTripsAnySize) {
  SecretKey key = random_key();
  for (std::size_t n : {0, 1, 15, 16, 17, 4096, 1 << 20}) {
    std::vector<std::uint8_t> plain(n);
    std::iota(plain.begin(), plain.end(), 7);
    auto blob = seal(key, plain, "shard 3 of step 1200");
    EXPECT_EQ(blob.size(), n + sealed_overhead_bytes);
    EXPECT_EQ(open(key, blob, "shard 3 of step 1200"), plain) << n;
  }
}

TEST(Crypto, EveryFlippedByteIsRefused) {
  SecretKey key = random_key();
  auto plain = bytes_of("weights of layer 7, rank 1");
  auto blob = seal(key, plain, "manifest");
  for (std::size_t i = 0; i < blob.size(); ++i)
    for (std::uint8_t bit : {0x01, 0x80}) {
      auto bad = blob;
      bad[i] ^= bit;
      EXPECT_NE(refusal([&] { open(key, bad, "manifest", "shard-0007.bin"); }), "") << "byte " << i;
    }
  auto bad = blob;
  bad[10] ^= 1;  // in the nonce
  std::string msg = refusal([&] { open(key, bad, "manifest", "shard-0007.bin"); });
  EXPECT_NE(msg.find("shard-0007.bin: authentication failed"), std::string::npos) << msg;
}

TEST(Crypto, TruncationAndAppendingAreRefused) {
  SecretKey key = random_key();
  auto blob = seal(key, bytes_of("optimizer state"), "");
  for (std::size_t n = 0; n < blob.size(); ++n) {
    std::vector<std::uint8_t> cut(blob.begin(), blob.begin() + n);
    EXPECT_NE(refusal([&] { open(key, cut, ""); }), "") << n;
  }
  EXPECT_NE(refusal([&] { open(key, std::vector<std::uint8_t>(blob.begin(), blob.begin() + 8), ""); }).find("truncated"),
            std::string::npos);
  auto longer = blob;
  longer.push_back(0);
  EXPECT_NE(refusal([&] { open(key, longer, ""); }), "");
}

TEST(Crypto, WrongKeyAndOtherAssociatedDataAreRefused) {
  SecretKey key = key_from_hex(hex_key, "test");
  auto blob = seal(key, bytes_of("step 100"), "shard 0");
  EXPECT_NE(refusal([&] { open(random_key(), blob, "shard 0"); }).find("authentication failed"), std::string::npos);
  EXPECT_NE(refusal([&] { open(key, blob, "shard 1"); }).find("authentication failed"), std::string::npos);
  EXPECT_NE(refusal([&] { open(key, blob, ""); }), "");
  EXPECT_EQ(open(key, blob, "shard 0"), bytes_of("step 100"));
  auto plain = bytes_of("not encrypted at all, just a long enough file");
  EXPECT_NE(refusal([&] { open(key, plain, ""); }).find("no DWS1 header"), std::string::npos);
}

TEST(Crypto, EachSealHasItsOwnNonce) {
  SecretKey key = random_key();
  auto plain = bytes_of("same plaintext");
  auto a = seal(key, plain, "x"), b = seal(key, plain, "x");
  EXPECT_NE(std::vector<std::uint8_t>(a.begin() + 4, a.begin() + 16), std::vector<std::uint8_t>(b.begin() + 4, b.begin() + 16));
  EXPECT_NE(a, b);
}

TEST(Crypto, KeysLoadFromEnvironmentAndFilesAndErrorsNeverShowThem) {
  auto blob = seal(key_from_hex(hex_key, "test"), bytes_of("payload"), "");
  unsetenv("DITWIN_CHECKPOINT_KEY_FILE");
  setenv("DITWIN_CHECKPOINT_KEY", hex_key.c_str(), 1);
  EXPECT_EQ(open(load_key(), blob, ""), bytes_of("payload"));
  std::string upper = hex_key;
  for (auto& c : upper) c = static_cast<char>(std::toupper(c));
  setenv("DITWIN_CHECKPOINT_KEY", upper.c_str(), 1);
  EXPECT_EQ(open(load_key(), blob, ""), bytes_of("payload"));
  std::string short_key = hex_key.substr(0, 62);
  setenv("DITWIN_CHECKPOINT_KEY", short_key.c_str(), 1);
  std::string msg = refusal([] { load_key(); });
  EXPECT_NE(msg.find("DITWIN_CHECKPOINT_KEY: expected 64 hex digits"), std::string::npos) << msg;
  EXPECT_EQ(msg.find(short_key.substr(0, 8)), std::string::npos) << msg;
  std::string not_hex = hex_key.substr(0, 63) + "g";
  setenv("DITWIN_CHECKPOINT_KEY", not_hex.c_str(), 1);
  msg = refusal([] { load_key(); });
  EXPECT_NE(msg.find("not hexadecimal (character 64"), std::string::npos) << msg;
  unsetenv("DITWIN_CHECKPOINT_KEY");
  EXPECT_NE(refusal([] { load_key(); }).find("no checkpoint key"), std::string::npos);

  // Files: 32 raw bytes, or hex with a newline; mode 600 only.
  std::string raw = ::testing::TempDir() + "/raw.key", hex = ::testing::TempDir() + "/hex.key";
  {
    std::ofstream r(raw, std::ios::binary);
    for (int i = 0; i < 32; ++i) r.put(static_cast<char>(i));
    std::ofstream(hex) << hex_key << "\n";
  }
  chmod(raw.c_str(), 0600);
  chmod(hex.c_str(), 0644);
  EXPECT_EQ(open(load_key(raw), blob, ""), bytes_of("payload"));
  EXPECT_NE(refusal([&] { load_key(hex); }).find("readable by group or others"), std::string::npos);
  chmod(hex.c_str(), 0600);
  setenv("DITWIN_CHECKPOINT_KEY_FILE", hex.c_str(), 1);
  EXPECT_EQ(open(load_key(), blob, ""), bytes_of("payload"));
  unsetenv("DITWIN_CHECKPOINT_KEY_FILE");
  std::string bad = ::testing::TempDir() + "/bad.key";
  std::ofstream(bad) << "0123";
  chmod(bad.c_str(), 0600);
  EXPECT_NE(refusal([&] { load_key(bad); }).find("expected 32 raw bytes or 64 hex digits, got 4 bytes"), std::string::npos);
  EXPECT_NE(refusal([&] { load_key(::testing::TempDir() + "/missing.key"); }).find("cannot read"), std::string::npos);
}

}  // namespace
}  // namespace ditwin::exec

namespace ditwin::exec {
namespace {
// A directory given as the key file was read as a stream and ended in an internal error.
TEST(Crypto, ADirectoryIsNotAKeyFile) {
  std::string dir = ::testing::TempDir() + "/key-dir";
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
  std::string msg = refusal([&] { load_key(dir); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
}
}  // namespace
}  // namespace ditwin::exec
