// Checkpoint files: shard format, atomic writes, the manifest, verification and the
// synchronous / asynchronous writer. The write order is what makes a crash harmless:
//   shard-R.bin.tmp -> fsync -> rename shard-R.bin -> shard-R.sha256 (same way) -> fsync dir
//   (every rank), then rank 0: manifest.json.tmp -> fsync -> rename manifest.json -> fsync dir.
// A checkpoint without manifest.json does not exist for the loader.
#include "exec/ft/checkpoint.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "model/errors.hpp"

namespace ditwin::exec {

namespace fs = std::filesystem;

std::string sha256_hex(const void* data, std::size_t bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data, bytes, digest, &length, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("OpenSSL EVP_Digest(SHA-256) failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

namespace {

class IdentityCodec : public ShardCodec {
 public:
  std::string name() const override { return "identity"; }
  std::string encode(const std::string& plain, const std::string&) const override { return plain; }
  std::string decode(const std::string& stored, const std::string& context) const override {
    if (stored.compare(0, 4, "DWS1") == 0)  // exec/crypto's sealed-blob magic
      throw CheckpointError(context + ": the checkpoint is encrypted; give its key (--checkpoint-key FILE, "
                            "DITWIN_CHECKPOINT_KEY_FILE or DITWIN_CHECKPOINT_KEY)");
    if (stored.compare(0, 4, "DWA1") == 0)  // an authenticated blob: read it only after checking it
      throw CheckpointError(context + ": the checkpoint is authenticated; give its key (--checkpoint-auth-key FILE, "
                            "DITWIN_CHECKPOINT_AUTH_KEY_FILE or DITWIN_CHECKPOINT_AUTH_KEY)");
    return stored;
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string errno_text() { return std::strerror(errno); }

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) throw std::runtime_error("cannot open directory " + dir + ": " + errno_text());
  ::fsync(fd);
  ::close(fd);
}

// Writes `bytes` to `path` so that `path` holds either its old content or all of the new.
void write_atomic(const std::string& path, const std::string& bytes,
                  const std::function<void(std::size_t, std::size_t)>& during = {}) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + tmp + ": " + errno_text());
  const std::size_t chunk = 1 << 16;
  std::size_t done = 0;
  while (done < bytes.size()) {
    if (during) during(done, bytes.size());
    ssize_t w = ::write(fd, bytes.data() + done, std::min(chunk, bytes.size() - done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      std::string why = errno_text();
      ::close(fd);
      throw std::runtime_error("cannot write " + tmp + ": " + why);
    }
    done += static_cast<std::size_t>(w);
  }
  if (during) during(done, bytes.size());
  if (::fsync(fd) != 0) {
    std::string why = errno_text();
    ::close(fd);
    throw std::runtime_error("fsync " + tmp + ": " + why);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("rename " + tmp + ": " + errno_text());
  fsync_dir(fs::path(path).parent_path().string());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(path + ": cannot open (missing)");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string shard_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05d", rank);
  return buf;
}

const char shard_magic[] = "DITWIN-SHARD/1\n";
constexpr std::size_t magic_bytes = sizeof shard_magic - 1;

}  // namespace

const ShardCodec& identity_codec() {
  static IdentityCodec codec;
  return codec;
}

std::string serialize_shard(const ShardState& state) {
  nlohmann::json header = {{"rank", state.rank}, {"ranks", state.ranks}, {"step", state.step}};
  auto& slices = header["slices"] = nlohmann::json::array();
  std::size_t floats = 0;
  for (const auto& s : state.slices) {
    slices.push_back({{"array", s.array}, {"begin", s.begin}, {"count", s.values.size()}});
    floats += s.values.size();
  }
  std::string h = header.dump();
  std::uint64_t length = h.size();  // little-endian on every machine ditwin builds for
  std::string out;
  out.reserve(magic_bytes + 8 + h.size() + floats * sizeof(float));
  out.append(shard_magic, magic_bytes);
  out.append(reinterpret_cast<const char*>(&length), 8);
  out += h;
  for (const auto& s : state.slices)
    out.append(reinterpret_cast<const char*>(s.values.data()), s.values.size() * sizeof(float));
  return out;
}

ShardState parse_shard(const std::string& bytes, const std::string& where) {
  if (bytes.size() < magic_bytes + 8 || bytes.compare(0, magic_bytes, shard_magic) != 0)
    throw CheckpointError(where + ": not a ditwin shard (bad magic)");
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data() + magic_bytes, 8);
  if (length > bytes.size() - magic_bytes - 8) throw CheckpointError(where + ": truncated header");
  ShardState s;
  std::size_t at = magic_bytes + 8 + length;
  try {
    auto header = nlohmann::json::parse(bytes.substr(magic_bytes + 8, length));
    s.rank = header.at("rank");
    s.ranks = header.at("ranks");
    s.step = header.at("step");
    for (const auto& j : header.at("slices")) {
      StateSlice slice;
      slice.array = j.at("array");
      slice.begin = j.at("begin");
      std::size_t count = j.at("count");
      if (count > (bytes.size() - at) / sizeof(float)) throw CheckpointError(where + ": truncated data");
      slice.values.resize(count);
      // An empty slice has no data() to copy into (memcpy from or to null is undefined even for 0).
      if (count > 0) std::memcpy(slice.values.data(), bytes.data() + at, count * sizeof(float));
      at += count * sizeof(float);
      s.slices.push_back(std::move(slice));
    }
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(where + ": bad shard header (" + e.what() + ")");
  }
  if (at != bytes.size()) throw CheckpointError(where + ": " + std::to_string(bytes.size() - at) + " trailing bytes");
  return s;
}

std::string plan_identity(const nlohmann::json& plan_document, const std::string& data_identity) {
  nlohmann::json core = nlohmann::json::object();
  for (const char* key : {"model", "training"})
    if (plan_document.contains(key)) core[key] = plan_document[key];
  // How the global batch is cut into micro-batches is layout too: the same samples, the same mean.
  if (core.contains("training") && core["training"].is_object()) {
    auto& training = core["training"];
    training.erase("micro_batch");
    if (training.contains("data") && training["data"].is_object()) training["data"].erase("path");
    if (!data_identity.empty()) training["data"]["index_sha256"] = data_identity;
  }
  return sha256_hex(core.dump());
}

CheckpointStore::CheckpointStore(std::string dir, const ShardCodec& codec) : dir_(std::move(dir)), codec_(codec) {
  if (dir_.empty()) throw InputError("reliability.checkpoint.dir: empty");
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_))
    throw InputError("reliability.checkpoint.dir: cannot create " + dir_ + (ec ? ": " + ec.message() : ""));
}

std::string CheckpointStore::step_dir(long long step) const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", step);
  return (fs::path(dir_) / buf).string();
}

std::string CheckpointStore::shard_path(long long step, int rank) const {
  return (fs::path(step_dir(step)) / (shard_name(rank) + ".bin")).string();
}

void CheckpointStore::write_shard(const ShardState& state, const std::function<void(std::size_t, std::size_t)>& during) const {
  std::string dir = step_dir(state.step);
  fs::create_directories(dir);
  // Rewriting a step that was committed before (a resume from an older checkpoint): the old
  // manifest goes first, so the directory is never a committed mix of old and new shards.
  std::string manifest = (fs::path(dir) / "manifest.json").string();
  if (::unlink(manifest.c_str()) == 0) fsync_dir(dir);
  std::string name = shard_name(state.rank);
  std::string stored = codec_.encode(serialize_shard(state), name + ".bin");
  write_atomic((fs::path(dir) / (name + ".bin")).string(), stored, during);
  nlohmann::json side = {{"sha256", sha256_hex(stored)}, {"bytes", stored.size()}, {"rank", state.rank}};
  write_atomic((fs::path(dir) / (name + ".sha256")).string(), side.dump());
}

nlohmann::json CheckpointStore::commit(long long step, int ranks, const CheckpointIdentity& id, const nlohmann::json& extra,
                                       int keep) const {
  std::string dir = step_dir(step);
  nlohmann::json body = extra;
  body["step"] = step;
  body["ranks"] = ranks;
  body["plan_identity"] = id.plan_identity;
  body["plan"] = id.plan_name;
  body["parameters"] = id.parameters;
  body["optimizer"] = id.optimizer;
  body["seed"] = id.seed;
  body["codec"] = codec_.name();
  auto& shards = body["shards"] = nlohmann::json::array();
  for (int r = 0; r < ranks; ++r) {
    std::string name = shard_name(r);
    std::string side_path = (fs::path(dir) / (name + ".sha256")).string();
    nlohmann::json side;
    try {
      side = nlohmann::json::parse(read_file(side_path));
    } catch (const std::exception& e) {
      throw std::runtime_error("checkpoint " + dir + ": rank " + std::to_string(r) + "'s checksum is missing: " + e.what());
    }
    shards.push_back({{"file", name + ".bin"}, {"sha256", side.at("sha256")}, {"bytes", side.at("bytes")}});
  }
  std::string text = body.dump();
  nlohmann::json file = {{"schema", "ditwin.checkpoint/1"}, {"body", text}, {"sha256", sha256_hex(text)}};
  write_atomic((fs::path(dir) / "manifest.json").string(), codec_.encode(file.dump(1), "manifest.json"));
  prune(keep, step);
  return body;
}

std::vector<long long> CheckpointStore::committed() const {
  std::vector<long long> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) != 0 || n.size() != 13) continue;
    if (!fs::exists(e.path() / "manifest.json")) continue;
    try {
      steps.push_back(std::stoll(n.substr(5)));
    } catch (const std::exception&) {
    }
  }
  std::sort(steps.rbegin(), steps.rend());
  return steps;
}

void CheckpointStore::prune(int keep, long long newest) const {
  auto steps = committed();
  steps.erase(std::remove_if(steps.begin(), steps.end(), [&](long long s) { return s > newest; }), steps.end());
  if (steps.empty()) return;
  long long oldest_kept = steps[std::min<std::size_t>(steps.size(), static_cast<std::size_t>(keep)) - 1];
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) != 0 || n.size() != 13) continue;
    long long s = -1;
    try {
      s = std::stoll(n.substr(5));
    } catch (const std::exception&) {
      continue;
    }
    // Older than the oldest kept: committed ones beyond `keep`, and partial writes a crash left.
    if (s >= oldest_kept) continue;
    fs::remove(e.path() / "manifest.json", ec);  // first: a half-removed checkpoint is not committed
    fs::remove_all(e.path(), ec);
  }
}

LoadedCheckpoint CheckpointStore::load(long long step, const CheckpointIdentity& id) const {
  std::string dir = step_dir(step);
  std::string where = dir + "/manifest.json";
  nlohmann::json body;
  try {
    auto file = nlohmann::json::parse(codec_.decode(read_file(where), "manifest.json"));
    if (file.value("schema", "") != "ditwin.checkpoint/1") throw CheckpointError(where + ": not a ditwin checkpoint manifest");
    std::string text = file.at("body");
    if (sha256_hex(text) != file.at("sha256").get<std::string>()) throw CheckpointError(where + ": manifest checksum mismatch (corrupt)");
    body = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(where + ": unreadable manifest (" + e.what() + ")");
  }
  LoadedCheckpoint out;
  try {
    if (body.at("plan_identity").get<std::string>() != id.plan_identity)
      throw CheckpointError(where + ": written for another plan (\"" + body.value("plan", "?") + "\", identity " +
                            body["plan_identity"].get<std::string>().substr(0, 12) + "…; this plan's is " +
                            id.plan_identity.substr(0, 12) + "…): the model or training section, or the dataset's index.json, differs");
    if (body.at("parameters").get<std::size_t>() != id.parameters)
      throw CheckpointError(where + ": holds " + std::to_string(body["parameters"].get<std::size_t>()) +
                            " parameters, the model has " + std::to_string(id.parameters));
    if (body.at("step").get<long long>() != step) throw CheckpointError(where + ": says step " + body["step"].dump());
    out.step = step;
    out.ranks = body.at("ranks");
    std::map<std::string, std::vector<float>*> arrays = {{"params", &out.params}, {"m", &out.m}, {"v", &out.v}};
    std::map<std::string, std::size_t> covered;
    std::map<std::string, std::vector<char>> written;  // per array: which elements a slice has set
    const auto& shards = body.at("shards");
    if (static_cast<int>(shards.size()) != out.ranks)
      throw CheckpointError(where + ": lists " + std::to_string(shards.size()) + " shards for " + std::to_string(out.ranks) + " ranks");
    for (std::size_t r = 0; r < shards.size(); ++r) {
      std::string file = shards[r].at("file");
      std::string path = dir + "/" + file;
      std::string stored = read_file(path);
      if (stored.size() != shards[r].at("bytes").get<std::size_t>())
        throw CheckpointError(path + ": " + std::to_string(stored.size()) + " bytes, the manifest says " +
                              shards[r]["bytes"].dump() + " (partial or corrupt)");
      if (sha256_hex(stored) != shards[r].at("sha256").get<std::string>())
        throw CheckpointError(path + ": SHA-256 differs from the manifest's (corrupt)");
      ShardState s = parse_shard(codec_.decode(stored, file), path);
      if (s.step != step || s.rank != static_cast<int>(r) || s.ranks != out.ranks)
        throw CheckpointError(path + ": header says rank " + std::to_string(s.rank) + " of " + std::to_string(s.ranks) +
                              ", step " + std::to_string(s.step));
      for (auto& slice : s.slices) {
        auto it = arrays.find(slice.array);
        if (it == arrays.end()) throw CheckpointError(path + ": unknown array \"" + slice.array + "\"");
        auto& a = *it->second;
        if (a.empty()) a.assign(id.parameters, 0.f);
        // Checked without forming begin + count, which a hostile offset wraps around 2^64.
        if (slice.begin > a.size() || slice.values.size() > a.size() - slice.begin)
          throw CheckpointError(path + ": slice of " + slice.array + " [" + std::to_string(slice.begin) + ", +" +
                                std::to_string(slice.values.size()) + ") past the end of the " +
                                std::to_string(a.size()) + " parameters");
        auto& seen = written[slice.array];
        if (seen.empty()) seen.assign(id.parameters, 0);
        for (std::size_t k = slice.begin; k < slice.begin + slice.values.size(); ++k) {
          if (seen[k]) throw CheckpointError(path + ": element " + std::to_string(k) + " of " + slice.array + " written twice (overlapping slices)");
          seen[k] = 1;
        }
        std::copy(slice.values.begin(), slice.values.end(), a.begin() + static_cast<std::ptrdiff_t>(slice.begin));
        covered[slice.array] += slice.values.size();
      }
    }
    for (const auto& [name, n] : covered)
      if (n != id.parameters)
        throw CheckpointError(where + ": the shards cover " + std::to_string(n) + " of " + std::to_string(id.parameters) +
                              " values of " + name);
    if (!covered.count("params")) throw CheckpointError(where + ": no parameters in the shards");
    if (id.optimizer == "adamw" && (!covered.count("m") || !covered.count("v")))
      throw CheckpointError(where + ": AdamW's moments (m, v) are missing from the shards");
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(where + ": bad manifest field (" + e.what() + ")");
  }
  out.manifest = std::move(body);
  return out;
}

Checkpointer::Checkpointer(CheckpointStore& store, Communicator& comm, Options options)
    : store_(store), comm_(comm), options_(std::move(options)) {
  if (options_.mode != "sync" && options_.mode != "async")
    throw InputError("reliability.checkpoint.mode: the executor writes \"sync\" or \"async\" checkpoints, not \"" +
                     options_.mode + "\"");
}

Checkpointer::~Checkpointer() {
  if (writer_.joinable()) writer_.join();
}

double Checkpointer::save(ShardState state, nlohmann::json extra) {
  auto t0 = std::chrono::steady_clock::now();
  if (pending_step_ >= 0) finish();  // an async write still running holds the next one back
  long long step = state.step;
  auto during = [this, step](std::size_t written, std::size_t total) {
    if (options_.during_write) options_.during_write(written, total, step);
  };
  pending_step_ = step;
  pending_extra_ = std::move(extra);
  if (options_.mode == "sync") {
    store_.write_shard(state, during);
    if (options_.after_write) options_.after_write(step);
    written_ = true;
    comm_.all_reduce_max(0.0);  // every rank's shard is in place
    commit_pending();
    return seconds_since(t0);
  }
  written_ = false;
  write_error_.clear();
  writer_ = std::thread([this, during, s = std::move(state)]() {
    try {
      store_.write_shard(s, during);
      if (options_.after_write) options_.after_write(s.step);
    } catch (const std::exception& e) {
      write_error_ = e.what();
    }
    written_ = true;
  });
  return seconds_since(t0);
}

double Checkpointer::poll() {
  if (pending_step_ < 0) return 0;
  auto t0 = std::chrono::steady_clock::now();
  bool all_written = comm_.all_reduce_max(written_ ? 0.0 : 1.0) == 0.0;
  if (all_written) commit_pending();
  return seconds_since(t0);
}

double Checkpointer::finish() {
  auto t0 = std::chrono::steady_clock::now();
  if (pending_step_ < 0) return 0;
  if (writer_.joinable()) writer_.join();
  comm_.all_reduce_max(0.0);
  commit_pending();
  return seconds_since(t0);
}

void Checkpointer::commit_pending() {
  if (writer_.joinable()) writer_.join();
  if (!write_error_.empty()) throw std::runtime_error("checkpoint write failed: " + write_error_);
  long long step = pending_step_;
  pending_step_ = -1;
  if (comm_.rank() == 0) {
    if (options_.before_commit) options_.before_commit(step);
    auto body = store_.commit(step, comm_.size(), options_.identity, pending_extra_, options_.keep);
    if (options_.on_commit) options_.on_commit(body);
  }
  last_committed_ = step;
}

bool load_latest(const CheckpointStore& store, Communicator& comm, const CheckpointIdentity& id, LoadedCheckpoint& out,
                 const std::function<void(long long, const std::string&)>& refused, long long before_step) {
  std::vector<long long> mine = store.committed();
  mine.erase(std::remove_if(mine.begin(), mine.end(), [&](long long s) { return s >= before_step; }), mine.end());
  bool other_plan = false, key_problem = false;
  std::string other_plan_why, key_problem_why;
  while (true) {
    double candidate = comm.all_reduce_max(mine.empty() ? -1.0 : static_cast<double>(mine.front()));
    if (candidate < 0) break;
    long long step = static_cast<long long>(candidate);
    std::string why;
    bool ok = false;
    if (std::find(mine.begin(), mine.end(), step) != mine.end()) {
      try {
        out = store.load(step, id);
        ok = true;
      } catch (const CheckpointError& e) {
        why = e.what();
        if (why.find("written for another plan") != std::string::npos) other_plan = true, other_plan_why = why;
        // The key (missing, or not the one they were sealed with) rather than the data.
        if (why.find("the checkpoint is encrypted") != std::string::npos ||
            why.find("the checkpoint is authenticated") != std::string::npos ||
            why.find("sealed with another key") != std::string::npos ||
            why.find("authenticated with another key") != std::string::npos)
          key_problem = true, key_problem_why = why;
      }
    } else {
      why = "not committed as seen from rank " + std::to_string(comm.rank());
    }
    // Every rank must have verified it, or none uses it.
    bool all_ok = comm.all_reduce_sum(ok ? 1.0 : 0.0) == static_cast<double>(comm.size());
    if (all_ok) return true;
    if (refused) refused(step, why.empty() ? "refused by another rank" : why);
    mine.erase(std::remove_if(mine.begin(), mine.end(), [&](long long s) { return s >= step; }), mine.end());
  }
  if (other_plan)
    throw InputError(other_plan_why + "; point reliability.checkpoint.dir (or --checkpoint-dir) elsewhere, or remove " +
                     store.dir());
  // Starting over would overwrite checkpoints that only the right key can open: refuse instead.
  if (key_problem)
    throw InputError(key_problem_why + "; no checkpoint in " + store.dir() +
                     " could be opened, and starting over would overwrite them: give the key they were written with "
                     "(--checkpoint-key or --checkpoint-auth-key, or their DITWIN_CHECKPOINT_KEY* / "
                     "DITWIN_CHECKPOINT_AUTH_KEY* variables), or --no-resume to start over");
  return false;
}

}  // namespace ditwin::exec
