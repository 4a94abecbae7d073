// libFuzzer target: reading checkpoints back (exec/ft/checkpoint). An input is
//   4 bytes little-endian n | n bytes: the manifest body (JSON) | the rest: shard 0's bytes
// The shard bytes go to parse_shard on their own; then the harness lays out a checkpoint
// directory in /dev/shm (step-00000001/manifest.json + shard-00000.bin) and loads it through
// CheckpointStore::load. It fills in the two SHA-256s (the manifest's and the shard's) itself, as
// a fuzzer cannot forge them, so the inputs reach the parsers behind the checksums: damaged
// content that carries valid checksums is what a buggy or hostile writer produces. CheckpointError
// is the loader's correct refusal; any other exception, a crash or a sanitizer report is a finding.
// The shard bytes also go through the authenticated and the sealed codecs' decode (fixed keys).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "exec/ft/checkpoint.hpp"  // defines: parse_shard, CheckpointStore, CheckpointError, sha256_hex
#include "exec/ft/sealed_codec.hpp"  // AuthenticatedCodec, SealedCodec (exec/ft/crypto)

namespace fs = std::filesystem;

namespace {

// What the harness's "plan" is: a manifest must name it to get past the identity checks.
constexpr const char* fuzz_plan_identity = "fuzz-plan";
constexpr std::size_t fuzz_parameters = 16;

const std::string& store_dir() {
  static const std::string dir = [] {
    std::string d = "/dev/shm/ditwin-fuzz-checkpoint-" + std::to_string(getpid());
    fs::remove_all(d);
    fs::create_directories(d + "/step-00000001");
    return d;
  }();
  return dir;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();  // /dev/shm full: the harness's fault, not the input's
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  std::uint32_t n = 0;
  std::memcpy(&n, data, 4);
  std::size_t body_bytes = std::min<std::size_t>(n, size - 4);
  std::string body_text(reinterpret_cast<const char*>(data) + 4, body_bytes);
  std::string shard(reinterpret_cast<const char*>(data) + 4 + body_bytes, size - 4 - body_bytes);

  try {
    ditwin::exec::parse_shard(shard, "fuzz-shard.bin");
  } catch (const ditwin::exec::CheckpointError&) {
  }
  // The same bytes as a stored file of an authenticated or a sealed checkpoint: refused (or, by
  // chance, accepted) by the codecs, never read out of bounds.
  static const ditwin::exec::AuthenticatedCodec authenticated(ditwin::exec::key_from_hex(std::string(64, 'a'), "fuzz"));
  static const ditwin::exec::SealedCodec sealed(ditwin::exec::key_from_hex(std::string(64, 'b'), "fuzz"));
  for (const ditwin::exec::ShardCodec* codec : {static_cast<const ditwin::exec::ShardCodec*>(&authenticated),
                                                static_cast<const ditwin::exec::ShardCodec*>(&sealed)}) {
    try {
      codec->decode(shard, "shard-00000.bin");
    } catch (const ditwin::exec::CheckpointError&) {
    }
  }

  nlohmann::json body;
  try {
    body = nlohmann::json::parse(body_text);
  } catch (const nlohmann::json::exception&) {  // the harness's own parse (parse_error, out_of_range 406)
    return 0;
  }
  if (body.is_object() && body.contains("shards") && body["shards"].is_array())
    for (auto& s : body["shards"])
      if (s.is_object()) {
        s["sha256"] = ditwin::exec::sha256_hex(shard);
        s["bytes"] = shard.size();
      }
  std::string text = body.dump();
  nlohmann::json manifest = {{"schema", "ditwin.checkpoint/1"}, {"body", text}, {"sha256", ditwin::exec::sha256_hex(text)}};
  const std::string step_dir = store_dir() + "/step-00000001";
  write_file(step_dir + "/shard-00000.bin", shard);
  write_file(step_dir + "/manifest.json", manifest.dump());

  ditwin::exec::CheckpointStore store(store_dir());
  ditwin::exec::CheckpointIdentity id;
  id.plan_identity = fuzz_plan_identity;
  id.plan_name = "fuzz";
  id.parameters = fuzz_parameters;
  id.optimizer = "adamw";
  try {
    for (long long step : store.committed()) store.load(step, id);
  } catch (const ditwin::exec::CheckpointError&) {
    // refused with a message: correct
  }
  return 0;
}
