// Training data on disk (docs/data.md): the .npy header parser refuses malformed input without
// crashing; `dataset synth` writes what the reader (and numpy) read back; every bad shard is
// refused naming its file and field; the order is a permutation per epoch; the prefetching reader
// returns what a direct read does and hands its errors to the caller. End to end through
// `ditwin execute`: one rank and two train the same from a dataset, and a run resumed from a
// checkpoint — on another rank count, with the dataset moved — continues the same sample sequence.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "exec/data/data_source.hpp"
#include "exec/data/dataset.hpp"
#include "exec/data/npy.hpp"
#include "exec/ft/checkpoint.hpp"
#include "model/errors.hpp"
#include "tests/test_util.hpp"

namespace {

namespace fs = std::filesystem;
using namespace ditwin;
using namespace ditwin::exec;

const std::string ditwin_bin = DITWIN_BINARY;

std::string fresh_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/data_" + name;
  fs::remove_all(d);
  return d;
}

Plan tiny_plan() { return load_plan(test::scenario("tiny-cpu.json")); }

Plan family_plan(ModelFamily family) {
  return load_plan(test::scenario(family == ModelFamily::dit ? "tiny-cpu.json"
                                  : family == ModelFamily::mmdit ? "tiny-mmdit-cpu.json" : "tiny-unified-cpu.json"));
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spill(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; }

// A file with a hand-written header dictionary (for what npy_header never writes).
void write_raw_npy(const std::string& path, const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  spill(path, bytes + header + data);
}

nlohmann::json read_index(const std::string& dir) { return nlohmann::json::parse(slurp(dir + "/index.json")); }
void write_index(const std::string& dir, const nlohmann::json& j) { spill(dir + "/index.json", j.dump(1)); }

// `samples` examples of tiny-cpu in shards of 100: 0-99, 100-199, 200-...
std::string synth_tiny(const std::string& name, std::int64_t samples = 256) {
  std::string dir = fresh_dir(name);
  write_synthetic_dataset(tiny_plan(), dir, samples, 100, false);
  return dir;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// --- .npy ----------------------------------------------------------------------------------

TEST(DataNpy, WrittenHeadersParseBackAlignedTo64Bytes) {
  for (auto shape : std::vector<std::vector<std::int64_t>>{{}, {7}, {256, 4, 16, 16}, {3, 0, 2}}) {
    for (NpyDtype d : {NpyDtype::float32, NpyDtype::int32, NpyDtype::int64}) {
      std::string h = npy_header(d, shape);
      NpyHeader back = parse_npy_header(h, "x.npy");
      EXPECT_EQ(back.dtype, d);
      EXPECT_EQ(back.shape, shape);
      EXPECT_FALSE(back.fortran_order);
      EXPECT_EQ(back.data_offset, h.size());
      EXPECT_EQ(h.size() % 64, 0u);
    }
  }
}

TEST(DataNpy, MalformedHeadersAreRefusedNamingTheFile) {
  const std::string good = npy_header(NpyDtype::float32, {2, 3});
  auto with_dict = [](const std::string& dict, std::uint16_t len = 0) {
    std::string b = std::string("\x93NUMPY\x01\x00", 8);
    const std::uint16_t n = len ? len : static_cast<std::uint16_t>(dict.size());
    b += static_cast<char>(n & 0xff);
    b += static_cast<char>(n >> 8);
    return b + dict;
  };
  std::string many_dims = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < 33; ++i) many_dims += "1,";
  many_dims += "), }";
  const std::vector<std::string> bad = {
      "",
      "\x93NUMP",
      "PK\x03\x04 a zip file, not an array",
      good.substr(0, 9),                   // cut inside the length
      good.substr(0, 40),                  // cut inside the dictionary
      std::string("\x93NUMPY\x04\x00\x10\x00", 10) + std::string(16, ' '),  // version 4
      with_dict("{'descr': '<f4'}", 60000),  // a length past the bytes
      std::string("\x93NUMPY\x02\x00\xff\xff\xff\x7f", 12),  // a 2 GiB header
      with_dict("{'descr': '<f4', 'fortran_order': False}"),
      with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}"),
      with_dict("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}"),
      with_dict("{'descr': '<f4, 'fortran_order': False, 'shape': ()}"),
      with_dict("{'descr': '<f4', 'fortran_order': Maybe, 'shape': ()}"),
      with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}"),
      with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000000000, 1000000000)}"),
      with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (1234567890123456789,)}"),
      with_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} trailing"),
      with_dict("{'descr': '<\\f4', 'fortran_order': False, 'shape': ()}"),
      with_dict(many_dims),
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    std::string why = error_of([&] { parse_npy_header(bad[i], "shard.npy"); });
    EXPECT_TRUE(contains(why, "shard.npy: ")) << "case " << i << ": " << why;
  }
  // Legal headers this reader does not train on parse, with the descr kept for the message.
  auto other = parse_npy_header(with_dict("{\"descr\": \">f4\", \"fortran_order\": True, \"shape\": (2L, 3L), }"), "x");
  EXPECT_EQ(other.dtype, NpyDtype::other);
  EXPECT_EQ(other.descr, ">f4");
  EXPECT_TRUE(other.fortran_order);
  EXPECT_EQ(other.shape, (std::vector<std::int64_t>{2, 3}));
}

// --- the dataset: written, read back, refused -----------------------------------------------

TEST(DataDataset, SynthWritesTheSyntheticExamplesAndTheReaderReadsThemForEachFamily) {
  for (ModelFamily family : {ModelFamily::dit, ModelFamily::mmdit, ModelFamily::unified}) {
    Plan plan = family_plan(family);
    std::string dir = fresh_dir(std::string("synth_") + to_string(family));
    nlohmann::json index = write_synthetic_dataset(plan, dir, 25, 10, false);
    EXPECT_EQ(index["shards"].size(), 3u);
    Dataset d(dir, plan.model);
    EXPECT_EQ(d.samples(), 25);
    EXPECT_EQ(d.shards(), 3u);
    auto synthetic = make_synthetic_latents(plan.model, plan.training.objective, plan.training.seed);
    const std::size_t S = static_cast<std::size_t>(plan.model.latent_size());
    const std::size_t T = static_cast<std::size_t>(plan.model.text_tokens);
    for (std::int64_t e : {0, 9, 10, 24}) {
      Batch b;
      d.read(e, b);
      EXPECT_EQ(b.size, 1);
      EXPECT_EQ(b.x0.size(), 4 * S * S);
      ASSERT_EQ(b.y.size(), 1u);
      EXPECT_EQ(b.context.size(), family == ModelFamily::mmdit ? T * 64 : 0u);
      EXPECT_EQ(b.pooled.size(), family == ModelFamily::mmdit ? 32u : 0u);
      EXPECT_EQ(b.tokens.size(), family == ModelFamily::unified ? T : 0u);
      // Example e is the synthetic source's example e, bit for bit (labels only where the model has classes).
      Batch want = synthetic->example(e, 0);
      EXPECT_EQ(b.x0, want.x0);
      EXPECT_EQ(b.context, want.context);
      EXPECT_EQ(b.pooled, want.pooled);
      EXPECT_EQ(b.tokens, want.tokens);
      EXPECT_EQ(b.y[0], family == ModelFamily::dit ? want.y[0] : 0);
    }
    // The same plan and seed write the same bytes.
    std::string again = fresh_dir(std::string("synth_again_") + to_string(family));
    write_synthetic_dataset(plan, again, 25, 10, false);
    EXPECT_EQ(slurp(dir + "/shard-00002.latents.npy"), slurp(again + "/shard-00002.latents.npy"));
  }
}

TEST(DataDataset, SynthRefusesANonEmptyDirectoryUnlessForced) {
  std::string dir = synth_tiny("force", 20);
  EXPECT_TRUE(contains(error_of([&] { write_synthetic_dataset(tiny_plan(), dir, 20, 100, false); }), "--force"));
  EXPECT_NO_THROW(write_synthetic_dataset(tiny_plan(), dir, 30, 100, true));
  EXPECT_EQ(Dataset(dir, tiny_plan().model).samples(), 30);
}

// numpy reads what we write and we read what numpy writes (skipped where Debian's numpy is absent).
TEST(DataDataset, NumpyReadsOurShardsAndWeReadNumpys) {
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no numpy in /usr/bin/python3";
  std::string ours = synth_tiny("numpy_ours", 30);
  std::string theirs = fresh_dir("numpy_theirs");
  fs::create_directories(theirs);
  std::string script = theirs + "/make.py";
  spill(script, R"(import json, sys, numpy as np
src, dst = sys.argv[1], sys.argv[2]
x = np.load(src + '/shard-00000.latents.npy', mmap_mode='r')
y = np.load(src + '/shard-00000.labels.npy')
assert x.shape == (30, 4, 16, 16) and x.dtype == np.float32 and y.dtype == np.int64 and (y < 10).all()
np.save(dst + '/a.npy', np.ascontiguousarray(x[::-1]))
np.save(dst + '/b.npy', y[::-1].astype(np.int32))
json.dump({'format': 'ditwin-dataset/1', 'samples': 30,
           'fields': {'latents': {'dtype': 'float32', 'shape': [4, 16, 16]}, 'labels': {'dtype': 'int32', 'shape': []}},
           'shards': [{'samples': 30, 'files': {'latents': 'a.npy', 'labels': 'b.npy'}}]}, open(dst + '/index.json', 'w'))
)");
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + ours + " " + theirs).c_str()), 0);
  Dataset a(ours, tiny_plan().model), b(theirs, tiny_plan().model);
  for (std::int64_t e = 0; e < 30; ++e) {
    Batch x, y;
    a.read(e, x);
    b.read(29 - e, y);
    EXPECT_EQ(x.x0, y.x0) << e;
    EXPECT_EQ(x.y, y.y) << e;
  }
}

TEST(DataDataset, BadIndexesAreRefusedNamingIndexJsonAndTheKey) {
  const ModelSpec model = tiny_plan().model;
  std::string dir = synth_tiny("bad_index", 120);
  const nlohmann::json good = read_index(dir);
  auto refusal = [&](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json j = good;
    change(j);
    write_index(dir, j);
    return error_of([&] { (void)Dataset(dir, model); });
  };
  auto expect = [&](const std::string& why, std::initializer_list<const char*> parts) {
    EXPECT_TRUE(contains(why, dir + "/index.json: ")) << why;
    for (const char* p : parts) EXPECT_TRUE(contains(why, p)) << why;
  };
  expect(refusal([](auto& j) { j["format"] = "webdataset"; }), {"format"});
  expect(refusal([](auto& j) { j["samples"] = 121; }), {"samples", "121", "120"});
  expect(refusal([](auto& j) { j["fields"].erase("labels"); }), {"fields.labels: missing", "model trains on labels"});
  expect(refusal([](auto& j) { j["fields"]["latents"]["shape"] = {4, 32, 32}; }),
         {"fields.latents.shape", "[4, 32, 32]", "[4, 16, 16]"});
  expect(refusal([](auto& j) { j["fields"]["latents"]["dtype"] = "float16"; }), {"fields.latents.dtype", "float16"});
  expect(refusal([](auto& j) { j["fields"]["labels"]["classes"] = 1000; }), {"fields.labels.classes", "model.num_classes"});
  expect(refusal([](auto& j) { j["shards"][1]["files"].erase("latents"); }), {"shards[1].files.latents: is required"});
  expect(refusal([](auto& j) { j["shards"][0]["sample"] = 3; }), {"shards[0].sample: unknown key", "samples"});
  expect(refusal([](auto& j) { j["shards"] = nlohmann::json::array(); }), {"shards"});
  spill(dir + "/index.json", "{\"format\": ");
  expect(error_of([&] { (void)Dataset(dir, model); }), {"not valid JSON"});
  fs::remove(dir + "/index.json");
  EXPECT_TRUE(contains(error_of([&] { (void)Dataset(dir, model); }), dir + "/index.json: cannot open"));
  // Fields the model does not read are allowed and not opened.
  nlohmann::json extra = good;
  extra["fields"]["captions"] = {{"dtype", "utf8"}};
  extra["shards"][0]["files"]["captions"] = "nowhere.txt";
  write_index(dir, extra);
  EXPECT_NO_THROW(Dataset(dir, model));
}

TEST(DataDataset, BadShardsAreRefusedNamingTheFileAndTheField) {
  const ModelSpec model = tiny_plan().model;
  std::string dir = synth_tiny("bad_shards", 120);
  const std::string latents = dir + "/shard-00001.latents.npy", labels = dir + "/shard-00001.labels.npy";
  const std::string good_latents = slurp(latents), good_labels = slurp(labels);
  auto refusal = [&] { return error_of([&] { (void)Dataset(dir, model); }); };
  auto expect = [&](const std::string& why, const std::string& file, const std::string& field, const std::string& what) {
    EXPECT_TRUE(contains(why, file + ": field " + field)) << why;
    EXPECT_TRUE(contains(why, what)) << why;
  };
  auto restore = [&] {
    spill(latents, good_latents);
    spill(labels, good_labels);
    ASSERT_NO_THROW(Dataset(dir, model));
  };
  // 20 samples in shard 1 (100 + 20): latents [20, 4, 16, 16], labels [20].
  fs::remove(latents);
  expect(refusal(), latents, "latents", "missing");
  restore();
  fs::resize_file(latents, good_latents.size() - 100);
  expect(refusal(), latents, "latents", "cut short");
  restore();
  spill(latents, good_latents + "xx");
  expect(refusal(), latents, "latents", "bytes after the array");
  restore();
  spill(labels, npy_header(NpyDtype::float32, {20}) + std::string(80, '\0'));
  expect(refusal(), labels, "labels", "dtype '<f4', but index.json says int64");
  restore();
  spill(latents, npy_header(NpyDtype::float32, {20, 4, 8, 32}) + good_latents.substr(128));
  expect(refusal(), latents, "latents", "shape [20, 4, 8, 32], but index.json says [20, 4, 16, 16]");
  restore();
  spill(latents, npy_header(NpyDtype::float32, {19, 4, 16, 16}) + good_latents.substr(128, 19 * 4096));
  expect(refusal(), latents, "latents", "shape [19, 4, 16, 16]");
  restore();
  write_raw_npy(labels, "{'descr': '>i8', 'fortran_order': False, 'shape': (20,), }", std::string(160, '\0'));
  expect(refusal(), labels, "labels", "big-endian");
  restore();
  write_raw_npy(latents, "{'descr': '<f4', 'fortran_order': True, 'shape': (20, 4, 16, 16), }", good_latents.substr(128));
  expect(refusal(), latents, "latents", "Fortran order");
  restore();
  spill(latents, "garbage");
  expect(refusal(), latents, "latents", "not a .npy file");
  restore();
}

TEST(DataDataset, BadValuesAreRefusedWhenReadNamingFileFieldAndExample) {
  const ModelSpec model = tiny_plan().model;
  std::string dir = synth_tiny("bad_values", 120);
  const std::string latents = dir + "/shard-00001.latents.npy", labels = dir + "/shard-00001.labels.npy";
  {
    std::string bytes = slurp(labels);
    const std::int64_t ten = 10;
    std::memcpy(bytes.data() + 128 + 8 * 3, &ten, 8);  // example 3 of shard 1: label 10 of 10 classes
    spill(labels, bytes);
  }
  {
    std::string bytes = slurp(latents);
    const float nan = std::nanf("");
    std::memcpy(bytes.data() + 128 + 4096 * 5 + 4 * 7, &nan, 4);  // example 5, element 7
    spill(latents, bytes);
  }
  Dataset d(dir, model);
  Batch b;
  EXPECT_NO_THROW(d.read(102, b));
  std::string why = error_of([&] { d.read(103, b); });
  EXPECT_TRUE(contains(why, labels + ": field labels, example 3 of the shard (103 of the dataset): id 10 is outside [0, 10)")) << why;
  why = error_of([&] { d.read(105, b); });
  EXPECT_TRUE(contains(why, latents + ": field latents, example 5 of the shard (105 of the dataset): element 7")) << why;
}

// --- the order and the source ---------------------------------------------------------------

TEST(DataOrder, EachEpochIsAPermutationAndEpochsDiffer) {
  for (std::int64_t n : {1, 2, 7, 64, 100, 1000}) {
    std::vector<std::int64_t> first, second;
    for (std::int64_t p = 0; p < 2 * n; ++p) (p < n ? first : second).push_back(example_at(p, n, true, 42));
    for (const auto* epoch : {&first, &second}) {
      std::set<std::int64_t> seen(epoch->begin(), epoch->end());
      EXPECT_EQ(static_cast<std::int64_t>(seen.size()), n);
      EXPECT_EQ(*seen.begin(), 0);
      EXPECT_EQ(*seen.rbegin(), n - 1);
    }
    if (n >= 7) {
      EXPECT_NE(first, second) << n;
      std::vector<std::int64_t> identity(static_cast<std::size_t>(n));
      for (std::int64_t k = 0; k < n; ++k) identity[static_cast<std::size_t>(k)] = k;
      EXPECT_NE(first, identity) << n;
    }
    EXPECT_EQ(example_at(n + n / 2, n, true, 42), second[static_cast<std::size_t>(n / 2)]);
    EXPECT_EQ(example_at(5 * n + n / 2, n, false, 42), n / 2);
  }
  EXPECT_NE(example_at(3, 1000, true, 1), example_at(3, 1000, true, 2));
}

Batch read_slots(DataSource& source, std::int64_t step, std::int64_t first, std::int64_t count, std::int64_t base) {
  Batch b;
  for (std::int64_t s = first; s < first + count; ++s) append_samples(b, source.sample({step, s, base + s}));
  return b;
}

void expect_same(const Batch& a, const Batch& b, const std::string& what) {
  EXPECT_EQ(a.size, b.size) << what;
  EXPECT_EQ(a.context, b.context) << what;
  EXPECT_EQ(a.pooled, b.pooled) << what;
  EXPECT_EQ(a.x0, b.x0) << what;
  EXPECT_EQ(a.noise, b.noise) << what;
  EXPECT_EQ(a.t, b.t) << what;
  EXPECT_EQ(a.y, b.y) << what;
}

TEST(DataSource, TwoRanksReadTheSamplesOneRankReadsWhateverIsPrefetched) {
  Plan plan = family_plan(ModelFamily::mmdit);
  plan.training.data.path = fresh_dir("ranks");
  write_synthetic_dataset(plan, plan.training.data.path, 40, 100, false);
  auto one = make_data_source(plan), r0 = make_data_source(plan), r1 = make_data_source(plan);
  for (std::int64_t step = 0; step < 4; ++step) {  // 16 a step: step 2 crosses into the second epoch
    Batch whole = read_slots(*one, step, 0, 16, step * 16);
    Batch halves = read_slots(*r0, step, 0, 8, step * 16);
    append_samples(halves, read_slots(*r1, step, 8, 8, step * 16));
    expect_same(whole, halves, "step " + std::to_string(step));
    // Prefetching the next step on each rank changes nothing.
    std::vector<SampleRef> n0, n1;
    for (std::int64_t s = 0; s < 8; ++s) n0.push_back({step + 1, s, (step + 1) * 16 + s});
    for (std::int64_t s = 8; s < 16; ++s) n1.push_back({step + 1, s, (step + 1) * 16 + s});
    r0->prefetch(n0);
    r1->prefetch(n1);
  }
  // The noise and timestep follow (step, slot); the example follows the position.
  Batch a = one->sample({7, 3, 11}), b = one->sample({7, 3, 12}), c = one->sample({8, 3, 11});
  EXPECT_EQ(a.noise, b.noise);
  EXPECT_NE(a.x0, b.x0);
  EXPECT_EQ(a.x0, c.x0);
  EXPECT_NE(a.noise, c.noise);
  EXPECT_EQ(one->describe()["kind"], "disk");
}

TEST(DataSource, AReadErrorOnTheReaderThreadReachesTheCallerAtItsSample) {
  Plan plan = tiny_plan();
  plan.training.data.path = synth_tiny("prefetch_error", 120);
  plan.training.data.shuffle = false;  // position p reads example p
  std::string labels = plan.training.data.path + "/shard-00001.labels.npy";
  std::string bytes = slurp(labels);
  const std::int64_t bad = -1;
  std::memcpy(bytes.data() + 128 + 8 * 4, &bad, 8);  // example 104
  spill(labels, bytes);
  auto source = make_data_source(plan);
  std::vector<SampleRef> next;
  for (std::int64_t s = 0; s < 8; ++s) next.push_back({1, s, 100 + s});
  source->prefetch(next);
  for (std::int64_t s = 0; s < 4; ++s) EXPECT_NO_THROW(source->sample(next[static_cast<std::size_t>(s)]));
  std::string why = error_of([&] { source->sample(next[4]); });
  EXPECT_TRUE(contains(why, labels + ": field labels, example 4 of the shard (104 of the dataset): id -1")) << why;
  // The samples after it are read directly (and the good ones served).
  EXPECT_NO_THROW(source->sample(next[5]));
}

TEST(DataSource, PrivacyDatasetSizeMustBeTheDatasetsSize) {
  Plan plan = tiny_plan();
  plan.training.data.path = synth_tiny("privacy", 100);
  plan.training.privacy.enabled = true;
  plan.training.privacy.dataset_size = 50000;
  EXPECT_TRUE(contains(error_of([&] { make_data_source(plan); }), "training.privacy.dataset_size: 50000, but the dataset"));
  plan.training.privacy.dataset_size = 100;
  auto source = make_data_source(plan);
  Batch a = source->example(7, 3), b = source->example(7, 4);
  EXPECT_EQ(a.x0, b.x0);
  EXPECT_NE(a.noise, b.noise);
}

TEST(DataPlan, TrainingDataIsParsedAndCheckedWithPaths) {
  auto j = read_json_file(test::scenario("tiny-cpu.json"));
  j["training"]["data"] = {{"path", "some/dir"}};
  Plan p = parse_plan(j);
  EXPECT_EQ(p.training.data.path, "some/dir");
  EXPECT_TRUE(p.training.data.shuffle);
  j["training"]["data"]["shuffle"] = false;
  EXPECT_FALSE(parse_plan(j).training.data.shuffle);
  j["training"]["data"] = {{"path", "d"}, {"shufle", false}};
  EXPECT_TRUE(contains(test::plan_error(j), "training.data.shufle: unknown key (did you mean \"shuffle\"?)"));
  j["training"]["data"] = {{"path", ""}};
  EXPECT_TRUE(contains(test::plan_error(j), "training.data.path: must name the dataset directory"));
  j["training"]["data"] = nlohmann::json::object();
  EXPECT_TRUE(contains(test::plan_error(j), "training.data.path: is required"));
  j["training"]["data"] = nullptr;
  EXPECT_FALSE(parse_plan(j).training.data.on_disk());
}

TEST(DataCheckpoint, PlanIdentityIgnoresWhereTheDatasetLivesButNotWhatItIs) {
  auto j = read_json_file(test::scenario("tiny-cpu.json"));
  j["training"]["data"] = {{"path", "/a"}};
  const std::string id = plan_identity(j, "index-1");
  j["training"]["data"]["path"] = "/b";
  EXPECT_EQ(plan_identity(j, "index-1"), id);
  EXPECT_NE(plan_identity(j, "index-2"), id);
  j["training"]["data"]["shuffle"] = false;
  EXPECT_NE(plan_identity(j, "index-1"), id);
}

// --- end to end: ditwin execute -------------------------------------------------------------

struct Outcome {
  int rc = 0;
  std::string log;
  std::vector<float> parameters;
  nlohmann::json report;
};

// tiny-cpu (16 samples a step, micro-batch 4) with plain SGD on dp ranks, reading `data`.
std::string data_plan(const std::string& name, int dp, const std::string& data, int interval_steps = 0) {
  auto j = read_json_file(test::scenario("tiny-cpu.json"));
  j["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.05}};
  j["training"]["data"] = {{"path", data}};
  j["parallelism"] = {{"dp", dp}, {"zero", 0}, {"bucket_mb", 0.25}};
  j["cluster"]["devices_per_node"] = dp;
  if (interval_steps > 0) j["reliability"]["checkpoint"]["interval_steps"] = interval_steps;
  std::string path = ::testing::TempDir() + "/data_" + name + ".json";
  std::ofstream(path) << j.dump();
  return path;
}

Outcome execute(const std::string& plan, int ranks, int steps, const std::string& extra = "") {
  std::string base = plan.substr(0, plan.size() - 5);
  std::string cmd = ditwin_bin + " execute " + plan + " --steps " + std::to_string(steps) + " --ranks " +
                    std::to_string(ranks) + " --report " + base + ".report.json --save-parameters " + base + ".params " +
                    extra + " > " + base + ".log 2>&1 </dev/null";
  Outcome r;
  r.rc = std::system(cmd.c_str());
  r.rc = WIFEXITED(r.rc) ? WEXITSTATUS(r.rc) : -1;
  r.log = slurp(base + ".log");
  if (r.rc != 0) return r;
  std::string bytes = slurp(base + ".params");
  r.parameters.resize(bytes.size() / sizeof(float));
  std::memcpy(r.parameters.data(), bytes.data(), r.parameters.size() * sizeof(float));
  r.report = read_json_file(base + ".report.json");
  return r;
}


TEST(DataExecute, OneRankAndTwoTrainTheSameFromADataset) {
  std::string ds = synth_tiny("exec_ranks", 40);  // 16 a step: the third step is in the second epoch
  Outcome one = execute(data_plan("one", 1, ds), 1, 3), two = execute(data_plan("two", 2, ds), 2, 3);
  ASSERT_EQ(one.rc, 0) << one.log;
  ASSERT_EQ(two.rc, 0) << two.log;
  EXPECT_LT(ditwin::test::relative_l2(two.parameters, one.parameters), 1e-5);
  EXPECT_EQ(two.report["extra"]["data"]["samples_seen"], 48);
  EXPECT_EQ(two.report["extra"]["data"]["source"]["kind"], "disk");
  // A dataset is not the synthetic stream: the same plan without it trains otherwise.
  auto j = read_json_file(data_plan("synthetic", 1, ds));
  j["training"].erase("data");
  std::ofstream(::testing::TempDir() + "/data_synthetic.json") << j.dump();
  Outcome synthetic = execute(::testing::TempDir() + "/data_synthetic.json", 1, 3);
  ASSERT_EQ(synthetic.rc, 0) << synthetic.log;
  EXPECT_GT(ditwin::test::relative_l2(synthetic.parameters, one.parameters), 1e-4);
}

// The text fields travel too: MMDiT's context and pooled vectors, the unified model's tokens.
TEST(DataExecute, MmditAndUnifiedTrainTheSameOnOneRankAndTwoFromADataset) {
  for (const char* family : {"mmdit", "unified"}) {
    const std::string scenario = test::scenario(std::string("tiny-") + family + "-cpu.json");
    std::string ds = fresh_dir(std::string("exec_") + family);
    write_synthetic_dataset(load_plan(scenario), ds, 40, 100, false);
    std::vector<float> params[2];
    for (int dp : {1, 2}) {
      auto j = read_json_file(scenario);
      j["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.05}};
      j["training"]["data"] = {{"path", ds}};
      j["parallelism"] = {{"dp", dp}, {"zero", 0}, {"bucket_mb", 0.25}};
      j["cluster"]["devices_per_node"] = dp;
      std::string plan = ::testing::TempDir() + "/data_" + family + std::to_string(dp) + ".json";
      std::ofstream(plan) << j.dump();
      Outcome r = execute(plan, dp, 3);
      ASSERT_EQ(r.rc, 0) << r.log;
      params[dp - 1] = r.parameters;
    }
    EXPECT_LT(ditwin::test::relative_l2(params[1], params[0]), 1e-5) << family;
  }
}

TEST(DataExecute, AResumedRunContinuesTheSampleSequenceOnAnotherRankCountWithTheDatasetMoved) {
  std::string ds = synth_tiny("exec_resume", 40);
  std::string ck = fresh_dir("exec_resume.ck");
  Outcome whole = execute(data_plan("whole", 2, ds), 2, 4);
  ASSERT_EQ(whole.rc, 0) << whole.log;
  // Two steps on two ranks (a checkpoint after step 2), then the rest on one rank from a copy.
  Outcome first = execute(data_plan("first", 2, ds, 2), 2, 3, "--checkpoint-dir " + ck);
  ASSERT_EQ(first.rc, 0) << first.log;
  std::string moved = fresh_dir("exec_resume_moved");
  fs::copy(ds, moved);
  Outcome rest = execute(data_plan("rest", 1, moved, 2), 1, 4, "--checkpoint-dir " + ck);
  ASSERT_EQ(rest.rc, 0) << rest.log;
  EXPECT_TRUE(contains(rest.log, "resumed from the checkpoint of step 2")) << rest.log;
  EXPECT_TRUE(contains(rest.log, "resharded")) << rest.log;
  EXPECT_TRUE(contains(rest.log, "the data continues at sample 32")) << rest.log;
  EXPECT_LT(ditwin::test::relative_l2(rest.parameters, whole.parameters), 1e-5);

  // The position comes from the checkpoint: one that says 0 samples were seen replays them.
  std::string manifest = ck + "/step-00000002/manifest.json";
  auto file = nlohmann::json::parse(slurp(manifest));
  auto body = nlohmann::json::parse(file["body"].get<std::string>());
  EXPECT_EQ(body["data"]["samples_seen"], 32);
  EXPECT_EQ(body["data"]["source"]["kind"], "disk");
  body["data"]["samples_seen"] = 0;
  file["body"] = body.dump();
  file["sha256"] = sha256_hex(file["body"].get<std::string>());
  spill(manifest, file.dump(1));
  Outcome replay = execute(data_plan("replay", 1, moved, 2), 1, 4, "--checkpoint-dir " + ck);
  ASSERT_EQ(replay.rc, 0) << replay.log;
  EXPECT_TRUE(contains(replay.log, "the data continues at sample 0")) << replay.log;
  EXPECT_EQ(replay.report["extra"]["data"]["first_sample"], 0);
  EXPECT_EQ(replay.report["extra"]["data"]["samples_seen"], 32);
  EXPECT_GT(ditwin::test::relative_l2(replay.parameters, whole.parameters), 1e-6);

  // Another dataset is another trajectory: its checkpoints are refused.
  std::string other = fresh_dir("exec_resume_other");
  Plan reseeded = tiny_plan();
  reseeded.training.seed = 9;
  write_synthetic_dataset(reseeded, other, 40, 100, false);
  Outcome refused = execute(data_plan("refused", 1, other, 2), 1, 4, "--checkpoint-dir " + ck);
  EXPECT_EQ(refused.rc, 2) << refused.log;
  EXPECT_TRUE(contains(refused.log, "written for another plan")) << refused.log;
}

TEST(DataExecute, ABadDatasetIsRefusedBeforeTheRanksStart) {
  std::string ds = synth_tiny("exec_bad", 40);
  fs::remove(ds + "/shard-00000.labels.npy");
  Outcome r = execute(data_plan("bad", 2, ds), 2, 3);
  EXPECT_EQ(r.rc, 2) << r.log;
  EXPECT_TRUE(contains(r.log, ds + "/shard-00000.labels.npy: field labels (shards[0] of index.json): the file is missing")) << r.log;
  EXPECT_FALSE(contains(r.log, "rank 1")) << r.log;
}

}  // namespace
