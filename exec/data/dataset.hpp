// A training dataset on disk (docs/data.md): DIR/index.json lists shards of .npy files, one file
// per field per shard. This is the format's one reader and one writer: which fields a model
// needs and their shapes, the checks that refuse a bad dataset naming the file and the field, and
// reading one example.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "exec/data/npy.hpp"
#include "exec/model/model.hpp"
#include "model/plan.hpp"

namespace ditwin::exec {

// One field of the dataset as a model reads it: per-sample shape, element type and, for ids, the
// range their values must fall in.
struct DatasetField {
  std::string name;                 // latents | labels | tokens | context | pooled
  bool integer = false;             // ids (int32 or int64 on disk) or float32
  std::vector<std::int64_t> shape;  // per sample; () for a label
  std::int64_t bound = 0;           // integer fields: values in [0, bound)
  std::string bound_key;            // the plan key bound comes from ("model.num_classes")
};

// The fields `model` trains on, in index order: latents (C x S x S); labels when it is
// class-conditional; context and pooled for mmdit; tokens for unified. Throws InputError for a
// family that reads no dataset.
std::vector<DatasetField> dataset_fields(const ModelSpec& model);

// An opened, checked dataset. Opening reads index.json and every shard file's header and size;
// values are checked as examples are read (ids in range, floats finite), so opening stays cheap
// for a large dataset. Reads are thread-safe.
class Dataset {
 public:
  Dataset(const std::string& dir, const ModelSpec& model);
  ~Dataset();
  Dataset(const Dataset&) = delete;
  Dataset& operator=(const Dataset&) = delete;

  const std::string& dir() const { return dir_; }
  std::int64_t samples() const { return samples_; }
  std::size_t shards() const { return shards_.size(); }
  const std::vector<DatasetField>& fields() const { return fields_; }
  // SHA-256 of index.json: the dataset's identity in checkpoints (the shard files are not hashed:
  // that would read the whole dataset on every start).
  const std::string& index_sha256() const { return index_sha256_; }

  // Example `e` (in [0, samples)) into one sample of `into` (size 1): x0, y (0 without labels) and
  // the text fields the model reads. Throws InputError naming the file, the field and the example
  // for an id out of range or a non-finite value, or a file that changed since it was opened.
  void read(std::int64_t e, Batch& into) const;

 private:
  struct File {
    std::string path;
    NpyDtype dtype = NpyDtype::other;
    std::size_t data_offset = 0;
    std::size_t sample_bytes = 0;
  };
  struct Shard {
    std::int64_t first = 0, samples = 0;
    std::vector<File> files;  // one per field, in fields_ order
  };
  std::string dir_;
  std::vector<DatasetField> fields_;
  std::vector<Shard> shards_;
  std::int64_t samples_ = 0;
  std::string index_sha256_;
  // Open descriptors, a bounded cache (a dataset may have more files than a process may open).
  mutable std::mutex io_;
  mutable std::map<std::string, int> open_;
  int descriptor(const std::string& path) const;  // under io_
};

// `ditwin dataset synth`: writes `samples` examples shaped for the plan's model into `dir`, in
// shards of `shard_samples`: example i is the synthetic source's example i (training.seed; a
// hidden class sets the latents' pattern and the caption, and is the label where the model is
// class-conditional), so the loss falls on it. Refuses a `dir` that exists and is not empty
// unless `force` (then files of the same names are replaced). Returns index.json's content.
nlohmann::json write_synthetic_dataset(const Plan& plan, const std::string& dir, std::int64_t samples,
                                       std::int64_t shard_samples, bool force);

}  // namespace ditwin::exec
