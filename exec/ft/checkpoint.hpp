// Sharded, atomic, verified checkpoints for the executor. Each rank writes its shard of the
// training state (its slices of the flat parameter and optimizer arrays, plus the step); rank 0
// writes the manifest last, holding a SHA-256 per shard and the plan's identity. A crash at any
// instant leaves the previous checkpoint complete: files are written under a temporary name,
// fsync'd and renamed, and a checkpoint exists only once its manifest does (docs/reliability.md).
#pragma once
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "exec/comm/communicator.hpp"

namespace ditwin::exec {

// Bad or unusable checkpoint content (corrupt, partial, another plan's): the message says which
// file and why. The loader skips such a checkpoint and falls back to an older one.
class CheckpointError : public std::runtime_error {
 public:
  explicit CheckpointError(const std::string& message) : std::runtime_error(message) {}
};

std::string sha256_hex(const void* data, std::size_t bytes);
inline std::string sha256_hex(const std::string& bytes) { return sha256_hex(bytes.data(), bytes.size()); }

// A byte-level transform between the serialized form and the file: encode after serialize,
// decode before parse. Encryption (AES-256-GCM) plugs in here; `context` names the file
// ("manifest.json", "shard-00001.bin") and a codec that authenticates binds it, so a shard cannot
// be swapped for another. Checksums are taken over the stored (encoded) bytes.
class ShardCodec {
 public:
  virtual ~ShardCodec() = default;
  virtual std::string name() const = 0;
  virtual std::string encode(const std::string& plain, const std::string& context) const = 0;
  virtual std::string decode(const std::string& stored, const std::string& context) const = 0;  // throws CheckpointError
};
const ShardCodec& identity_codec();

// Training state in the flat parameter layout: `array` ("params", "m", "v") values for
// [begin, begin + values.size()). A shard holds a rank's slices; a loaded checkpoint the union.
struct StateSlice {
  std::string array;
  std::size_t begin = 0;
  std::vector<float> values;
};
struct ShardState {
  int rank = 0, ranks = 1;
  long long step = 0;  // steps completed
  std::vector<StateSlice> slices;
};
std::string serialize_shard(const ShardState& state);
ShardState parse_shard(const std::string& bytes, const std::string& where);  // throws CheckpointError

// What a checkpoint must match to be loaded, and what it carries besides the arrays.
struct CheckpointIdentity {
  std::string plan_identity;  // plan_identity() of the plan document
  std::string plan_name;
  std::size_t parameters = 0;
  std::string optimizer;
  std::uint64_t seed = 0;
};
// SHA-256 of the canonical JSON (sorted keys, compact) of the plan's `model` and `training`
// sections but training.micro_batch: what decides the trajectory. `name`, `description`, `run`
// and `reliability` are run settings; `parallelism`, `cluster` and the micro-batch size are the
// layout, which a resume may change (resharding). training.data.path is where the data lives, not
// what it is: `data_identity` (the dataset's index SHA-256, "" for synthetic data) stands for it,
// so a moved dataset resumes and another one is refused.
std::string plan_identity(const nlohmann::json& plan_document, const std::string& data_identity = "");

struct LoadedCheckpoint {
  long long step = 0;
  int ranks = 0;               // the layout it was written with
  nlohmann::json manifest;     // the verified manifest body
  std::vector<float> params, m, v;  // full flat arrays (m, v empty when not saved)
};

// The checkpoint directory: DIR/step-00000012/{shard-00000.bin, shard-00000.sha256, …, manifest.json}.
class CheckpointStore {
 public:
  explicit CheckpointStore(std::string dir, const ShardCodec& codec = identity_codec());
  const std::string& dir() const { return dir_; }
  std::string step_dir(long long step) const;
  std::string shard_path(long long step, int rank) const;  // the shard file as stored

  // Rank side: writes one shard atomically, then its checksum sidecar. `during(written, total)`
  // is called between chunks (failure injection kills the process there).
  void write_shard(const ShardState& state, const std::function<void(std::size_t, std::size_t)>& during = {}) const;
  // Rank 0, once every rank's write_shard returned: the manifest, atomically, then keeps the
  // newest `keep` checkpoints. Returns the manifest body written.
  nlohmann::json commit(long long step, int ranks, const CheckpointIdentity& id, const nlohmann::json& extra, int keep) const;
  // Steps with a manifest, newest first.
  std::vector<long long> committed() const;
  // Reads and verifies one checkpoint (manifest checksum, plan identity, every shard's SHA-256,
  // coverage of every array); throws CheckpointError saying what is wrong.
  LoadedCheckpoint load(long long step, const CheckpointIdentity& id) const;
  // Keeps the newest `keep` checkpoints at or before `newest` (the one just committed) and deletes
  // older ones and older partial writes. Later directories are left alone: another rank may be
  // writing the next checkpoint into one right now (async), and a later committed one can only be
  // a refused one or a longer run's, which the loader handles.
  void prune(int keep, long long newest) const;

 private:
  std::string dir_;
  const ShardCodec& codec_;
};

// Writes checkpoints for one rank during training: synchronous (the rank writes before it goes
// on) or asynchronous (the rank copies its state to host memory — the measured stall — and a
// background thread writes it while training continues; the checkpoint is committed at the first
// step boundary after every rank's write has finished).
class Checkpointer {
 public:
  struct Options {
    std::string mode = "sync";  // sync | async
    int keep = 2;
    CheckpointIdentity identity;
    std::function<void(std::size_t, std::size_t, long long)> during_write;  // (written, total, step)
    std::function<void(long long)> after_write;                              // shard file in place (step)
    std::function<void(long long)> before_commit;                            // rank 0: every shard written (step)
    std::function<void(const nlohmann::json&)> on_commit;                    // rank 0: the manifest body
  };
  Checkpointer(CheckpointStore& store, Communicator& comm, Options options);
  ~Checkpointer();
  // Starts a checkpoint of `state` (moved in); blocks for the whole write (sync) or only until an
  // earlier write has finished (async). `extra` goes into the manifest (rank 0's counts).
  // Returns the seconds training was blocked.
  double save(ShardState state, nlohmann::json extra);
  // At a step boundary (collective: every rank calls it): commits a finished async write.
  // Returns the seconds spent.
  double poll();
  // Waits for and commits whatever is in flight (collective). Returns the seconds spent.
  double finish();
  long long last_committed() const { return last_committed_; }

 private:
  CheckpointStore& store_;
  Communicator& comm_;
  Options options_;
  std::thread writer_;
  std::atomic<bool> written_{false};
  std::string write_error_;
  long long pending_step_ = -1;
  nlohmann::json pending_extra_;
  long long last_committed_ = -1;
  void commit_pending();
};

// Reads the newest checkpoint every rank can verify (collective: the ranks agree on it). Each
// refused checkpoint is reported through `refused(step, why)`. Returns false when there is none.
// Only checkpoints before `before_step` are candidates (a resume must leave a step to run).
bool load_latest(const CheckpointStore& store, Communicator& comm, const CheckpointIdentity& id, LoadedCheckpoint& out,
                 const std::function<void(long long, const std::string&)>& refused, long long before_step);

}  // namespace ditwin::exec
