// The dataset format's reader and writer (docs/data.md): index.json checked with the plan reader's
// path-tracking JsonReader, every shard file's .npy header and size checked against it and against
// the model before training starts, examples read with pread from a bounded set of descriptors.
#include "exec/data/dataset.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "exec/ft/checkpoint.hpp"  // defines: sha256_hex
#include "model/errors.hpp"
#include "model/json_reader.hpp"

namespace ditwin::exec {

static_assert(std::endian::native == std::endian::little, "the dataset reader copies little-endian .npy data as is");

namespace {

namespace fs = std::filesystem;

constexpr const char* format_name = "ditwin-dataset/1";
constexpr std::size_t max_open_files = 64;

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t k = 0; k < shape.size(); ++k) (s += k ? ", " : "") += std::to_string(shape[k]);
  return s + "]";
}

std::int64_t product(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

std::string read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open (is training.data.path the directory that holds index.json?)");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A per-sample shape from the index: an array of non-negative integers.
std::vector<std::int64_t> read_shape(JsonReader& r, const std::string& key) {
  if (!r.has(key)) r.fail(key, "is required (the per-sample shape, e.g. [4, 32, 32]; [] for a label)");
  const auto& v = r.raw(key);
  if (!v.is_array()) r.fail(key, "must be an array of sizes, e.g. [4, 32, 32], got " + v.dump());
  std::vector<std::int64_t> shape;
  for (const auto& d : v) {
    if (!d.is_number_integer() || d.get<long long>() < 1 || d.get<long long>() > (1LL << 31))
      r.fail(key, "must hold sizes in [1, 2^31], got " + v.dump());
    shape.push_back(d.get<long long>());
  }
  return shape;
}

// Marks every key of object[key] as known to `r` (the ones nobody reads are allowed).
void accept_all(JsonReader& r, const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  if (it != object.end() && it->is_object())
    for (const auto& item : it->items()) r.accept(item.key());
}

}  // namespace

std::vector<DatasetField> dataset_fields(const ModelSpec& model) {
  if (!model.has_image())
    throw InputError(std::string("training.data: datasets on disk feed dit, mmdit and unified models, not ") +
                     to_string(model.family));
  const std::int64_t S = model.latent_size(), T = model.text_tokens;
  if (model.latent_channels <= 0 || S <= 0)
    throw InputError("training.data: the model has no latents to read (latent_channels > 0 and image_size >= vae_downsample)");
  std::vector<DatasetField> f;
  f.push_back({"latents", false, {model.latent_channels, S, S}, 0, ""});
  if (model.num_classes > 0) f.push_back({"labels", true, {}, model.num_classes, "model.num_classes"});
  if (model.family == ModelFamily::mmdit) {
    if (T > 0 && model.context_dim > 0) f.push_back({"context", false, {T, model.context_dim}, 0, ""});
    if (model.pooled_dim > 0) f.push_back({"pooled", false, {model.pooled_dim}, 0, ""});
  }
  if (model.family == ModelFamily::unified && T > 0 && model.vocab > 0)
    f.push_back({"tokens", true, {T}, model.vocab, "model.vocab"});
  return f;
}

Dataset::Dataset(const std::string& dir, const ModelSpec& model) : dir_(dir), fields_(dataset_fields(model)) {
  const std::string index_path = (fs::path(dir) / "index.json").string();
  if (!fs::is_directory(dir)) throw InputError("training.data.path: " + dir + " is not a directory");
  const std::string text = read_whole(index_path);
  index_sha256_ = sha256_hex(text);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw InputError(index_path + ": not valid JSON: " + e.what());
  }
  if (!doc.is_object()) throw InputError(index_path + ": must be a JSON object, got " + std::string(doc.type_name()));

  // What each needed field is on disk: the index's dtype, checked against the model's shape.
  std::vector<NpyDtype> dtypes(fields_.size());
  try {
    JsonReader r(doc, "");
    const std::string format = r.string("format");
    if (format != format_name) r.fail("format", "\"" + format + "\": this reader knows \"" + format_name + "\"");
    const long long total = r.integer("samples");
    if (total < 1 || total > (1LL << 62)) r.fail("samples", "must be in [1, 2^62]");
    r.raw("source");  // free-form: who wrote the dataset
    r.string("description", "");
    JsonReader fr = r.object("fields");
    // Fields other than the model's are allowed (a dataset may serve several models) and not read.
    accept_all(fr, doc, "fields");
    for (std::size_t k = 0; k < fields_.size(); ++k) {
      const DatasetField& want = fields_[k];
      if (!fr.has(want.name))
        fr.fail(want.name, "missing: the plan's " + std::string(to_string(model.family)) + " model trains on " + want.name +
                               " (" + (want.integer ? "ids" : "float32") + ", per sample " + shape_text(want.shape) + ")");
      JsonReader fi = fr.object(want.name);
      const std::string dtype = fi.string("dtype");
      if (want.integer ? dtype != "int32" && dtype != "int64" : dtype != "float32")
        fi.fail("dtype", "\"" + dtype + "\": " + want.name + " are stored as " + (want.integer ? "int32 or int64" : "float32"));
      dtypes[k] = dtype == "float32" ? NpyDtype::float32 : dtype == "int32" ? NpyDtype::int32 : NpyDtype::int64;
      const auto shape = read_shape(fi, "shape");
      if (shape != want.shape)
        fi.fail("shape", shape_text(shape) + " per sample, but the plan's model reads " + shape_text(want.shape) +
                             (want.name == "latents" ? " (model.latent_channels x latent size x latent size)"
                              : want.name == "context" ? " (model.text_tokens x model.context_dim)"
                              : want.name == "pooled" ? " (model.pooled_dim)"
                              : want.name == "tokens" ? " (model.text_tokens)" : ""));
      // The index may say how many classes (labels) or tokens (tokens) its ids span: more than the
      // model has is refused now rather than at the first id out of range.
      if (want.integer) {
        const char* key = want.name == "labels" ? "classes" : "vocab";
        const long long range = fi.integer(key, want.bound);
        if (range < 1) fi.fail(key, "must be >= 1");
        if (range > want.bound)
          fi.fail(key, std::to_string(range) + " but " + want.bound_key + " is " + std::to_string(want.bound) +
                           ": ids beyond the model's range");
      }
      fi.finish();
    }
    const auto& shards = r.raw("shards");
    if (!shards.is_array() || shards.empty()) r.fail("shards", "must be a non-empty array of {\"samples\", \"files\"}");
    std::int64_t first = 0;
    for (std::size_t s = 0; s < shards.size(); ++s) {
      JsonReader sr(shards[s], "shards[" + std::to_string(s) + "]");
      Shard shard;
      shard.first = first;
      shard.samples = sr.integer("samples");
      if (shard.samples < 1) sr.fail("samples", "must be >= 1");
      if (shard.samples > total - first) r.fail("samples", std::to_string(total) + " but the shards hold more");
      JsonReader files = sr.object("files");
      accept_all(files, shards[s], "files");
      for (std::size_t k = 0; k < fields_.size(); ++k) {
        const std::string name = files.string(fields_[k].name);
        File f;
        f.path = fs::path(name).is_absolute() ? name : (fs::path(dir) / name).string();
        f.dtype = dtypes[k];
        f.sample_bytes = static_cast<std::size_t>(product(fields_[k].shape)) * dtype_bytes(dtypes[k]);
        shard.files.push_back(f);
      }
      sr.finish();
      first += shard.samples;
      shards_.push_back(std::move(shard));
    }
    if (first != total) r.fail("samples", std::to_string(total) + " but the shards hold " + std::to_string(first));
    samples_ = total;
    r.finish();
  } catch (const InputError& e) {
    throw InputError(index_path + ": " + e.what());
  }

  // Every file now: a header that matches the index, and exactly the bytes it announces.
  for (std::size_t s = 0; s < shards_.size(); ++s)
    for (std::size_t k = 0; k < fields_.size(); ++k) {
      File& f = shards_[s].files[k];
      const std::string field = "field " + fields_[k].name + " (shards[" + std::to_string(s) + "] of index.json)";
      std::error_code ec;
      if (!fs::is_regular_file(f.path, ec)) throw InputError(f.path + ": " + field + ": the file is missing");
      const NpyHeader h = read_npy_header(f.path, f.path + ": " + field);
      if (h.dtype != f.dtype) {
        const bool big_endian = h.descr.size() == 3 && h.descr[0] == '>';
        const std::string why =
            big_endian ? " (big-endian: save it little-endian, e.g. a.astype('<" + h.descr.substr(1) + "'))" : "";
        throw InputError(f.path + ": " + field + ": dtype '" + h.descr + "', but index.json says " + to_string(f.dtype) + why);
      }
      if (h.fortran_order)
        throw InputError(f.path + ": " + field + ": Fortran order; the dataset is read in C order (numpy.ascontiguousarray)");
      std::vector<std::int64_t> want = {shards_[s].samples};
      want.insert(want.end(), fields_[k].shape.begin(), fields_[k].shape.end());
      if (h.shape != want)
        throw InputError(f.path + ": " + field + ": shape " + shape_text(h.shape) + ", but index.json says " + shape_text(want) +
                         " (shards[" + std::to_string(s) + "].samples x the field's shape)");
      f.data_offset = h.data_offset;
      const auto expected = static_cast<std::uintmax_t>(h.data_offset + static_cast<std::size_t>(h.elements()) * dtype_bytes(f.dtype));
      const std::uintmax_t size = fs::file_size(f.path, ec);
      if (ec) throw InputError(f.path + ": " + field + ": " + ec.message());
      if (size != expected)
        throw InputError(f.path + ": " + field + ": " + std::to_string(size) + " bytes, but its header says " +
                         std::to_string(expected) + (size < expected ? ": the file is cut short" : ": bytes after the array"));
    }
}

Dataset::~Dataset() {
  for (const auto& [path, fd] : open_) ::close(fd);
}

int Dataset::descriptor(const std::string& path) const {
  auto it = open_.find(path);
  if (it != open_.end()) return it->second;
  if (open_.size() >= max_open_files) {
    for (const auto& [p, fd] : open_) ::close(fd);
    open_.clear();
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open: " + std::strerror(errno));
  open_[path] = fd;
  return fd;
}

void Dataset::read(std::int64_t e, Batch& into) const {
  if (e < 0 || e >= samples_) throw std::out_of_range("dataset example " + std::to_string(e) + " of " + std::to_string(samples_));
  auto it = std::upper_bound(shards_.begin(), shards_.end(), e, [](std::int64_t v, const Shard& s) { return v < s.first; });
  const Shard& shard = *(it - 1);
  const std::int64_t local = e - shard.first;
  into.size = 1;
  into.y.assign(1, 0);
  std::vector<char> buf;
  for (std::size_t k = 0; k < fields_.size(); ++k) {
    const DatasetField& field = fields_[k];
    const File& f = shard.files[k];
    buf.resize(f.sample_bytes);
    {
      std::lock_guard<std::mutex> lock(io_);
      const int fd = descriptor(f.path);
      std::size_t done = 0;
      const auto at = static_cast<off_t>(f.data_offset + static_cast<std::size_t>(local) * f.sample_bytes);
      while (done < buf.size()) {
        const ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, at + static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
          throw InputError(f.path + ": field " + field.name + ": example " + std::to_string(local) + " cannot be read" +
                           (n < 0 ? std::string(": ") + std::strerror(errno) : std::string(": the file is shorter than when it was opened")));
        done += static_cast<std::size_t>(n);
      }
    }
    const std::string where = f.path + ": field " + field.name + ", example " + std::to_string(local) + " of the shard (" +
                              std::to_string(e) + " of the dataset)";
    const std::size_t n = static_cast<std::size_t>(product(field.shape));
    if (field.integer) {
      std::vector<int> ids(n);
      for (std::size_t j = 0; j < n; ++j) {
        std::int64_t v = 0;
        if (f.dtype == NpyDtype::int32) {
          std::int32_t w;
          std::memcpy(&w, buf.data() + 4 * j, 4);
          v = w;
        } else {
          std::memcpy(&v, buf.data() + 8 * j, 8);
        }
        if (v < 0 || v >= field.bound)
          throw InputError(where + ": id " + std::to_string(v) + " is outside [0, " + std::to_string(field.bound) + ") (" +
                           field.bound_key + ")");
        ids[j] = static_cast<int>(v);
      }
      (field.name == "labels" ? into.y : into.tokens) = std::move(ids);
    } else {
      std::vector<float> values(n);
      std::memcpy(values.data(), buf.data(), 4 * n);
      for (std::size_t j = 0; j < n; ++j)
        if (!std::isfinite(values[j]))
          throw InputError(where + ": element " + std::to_string(j) + " is " + std::to_string(values[j]) + " (not finite)");
      (field.name == "latents" ? into.x0 : field.name == "context" ? into.context : into.pooled) = std::move(values);
    }
  }
}

// --- the writer of `ditwin dataset synth` ---------------------------------------------------

namespace {

void write_file(const std::string& path, const std::string& header, const void* data, std::size_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  out.close();
  if (!out) throw InputError(path + ": write failed");
}

}  // namespace

nlohmann::json write_synthetic_dataset(const Plan& plan, const std::string& dir, std::int64_t samples,
                                       std::int64_t shard_samples, bool force) {
  const ModelSpec& model = plan.model;
  const std::vector<DatasetField> fields = dataset_fields(model);
  if (samples < 1 || samples > std::numeric_limits<int>::max()) throw InputError("--samples: must be in [1, 2^31)");
  if (shard_samples < 1) throw InputError("--shard-samples: must be >= 1");
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) throw InputError("--out " + dir + ": exists and is not a directory");
    if (!force && !fs::is_empty(dir, ec))
      throw InputError("--out " + dir + ": exists and is not empty; choose a new directory or add --force");
  }
  fs::create_directories(dir, ec);
  if (ec) throw InputError("--out " + dir + ": cannot create: " + ec.message());

  // Example i is the synthetic source's example i (what DP-SGD's Poisson draws see there): a hidden
  // class's smooth latent pattern plus per-example spread, and for mmdit and unified a caption of
  // that class; the class is written as the label when the model is class-conditional.
  const std::uint64_t seed = plan.training.seed;
  auto source = make_synthetic_latents(model, plan.training.objective, seed);

  nlohmann::json index = {{"format", format_name},
                          {"samples", samples},
                          {"description", "random values shaped for plan \"" + plan.name + "\" (ditwin dataset synth)"},
                          {"source", {{"generator", "ditwin dataset synth"}, {"plan", plan.name}, {"seed", seed}}},
                          {"fields", nlohmann::json::object()},
                          {"shards", nlohmann::json::array()}};
  for (const auto& f : fields) {
    nlohmann::json j = {{"dtype", !f.integer ? "float32" : f.name == "labels" ? "int64" : "int32"}, {"shape", f.shape}};
    if (f.name == "labels") j["classes"] = f.bound;
    if (f.name == "tokens") j["vocab"] = f.bound;
    index["fields"][f.name] = j;
  }
  for (std::int64_t first = 0, s = 0; first < samples; first += shard_samples, ++s) {
    const std::int64_t n = std::min(shard_samples, samples - first);
    std::vector<float> x0, context, pooled;
    std::vector<std::int64_t> labels;
    std::vector<std::int32_t> tokens;
    for (std::int64_t i = first; i < first + n; ++i) {
      const Batch b = source->batch(0, 0, static_cast<int>(i), 1);
      x0.insert(x0.end(), b.x0.begin(), b.x0.end());
      labels.push_back(b.y[0]);
      context.insert(context.end(), b.context.begin(), b.context.end());
      pooled.insert(pooled.end(), b.pooled.begin(), b.pooled.end());
      tokens.insert(tokens.end(), b.tokens.begin(), b.tokens.end());
    }
    char stem[32];
    std::snprintf(stem, sizeof stem, "shard-%05lld", static_cast<long long>(s));
    nlohmann::json files = nlohmann::json::object();
    for (const auto& f : fields) {
      const std::string name = std::string(stem) + "." + f.name + ".npy";
      std::vector<std::int64_t> shape = {n};
      shape.insert(shape.end(), f.shape.begin(), f.shape.end());
      const std::string path = (fs::path(dir) / name).string();
      if (f.name == "latents") write_file(path, npy_header(NpyDtype::float32, shape), x0.data(), 4 * x0.size());
      else if (f.name == "labels") write_file(path, npy_header(NpyDtype::int64, shape), labels.data(), 8 * labels.size());
      else if (f.name == "tokens") write_file(path, npy_header(NpyDtype::int32, shape), tokens.data(), 4 * tokens.size());
      else if (f.name == "context") write_file(path, npy_header(NpyDtype::float32, shape), context.data(), 4 * context.size());
      else write_file(path, npy_header(NpyDtype::float32, shape), pooled.data(), 4 * pooled.size());
      files[f.name] = name;
    }
    index["shards"].push_back({{"samples", n}, {"files", files}});
  }
  // The index last, renamed into place: a dataset is complete once it has one.
  const std::string index_path = (fs::path(dir) / "index.json").string();
  {
    std::ofstream out(index_path + ".tmp", std::ios::trunc);
    out << index.dump(1) << "\n";
    out.close();
    if (!out) throw InputError(index_path + ": write failed");
  }
  fs::rename(index_path + ".tmp", index_path, ec);
  if (ec) throw InputError(index_path + ": cannot rename into place: " + ec.message());
  return index;
}

}  // namespace ditwin::exec
