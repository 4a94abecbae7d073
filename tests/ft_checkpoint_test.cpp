// Checkpoint files without MPI: the shard format round-trips, a committed checkpoint verifies,
// and every way one can be damaged — a flipped byte, a truncated shard, a torn manifest, a crash
// before the manifest, another plan's checkpoint — is refused with a message naming the file.
// Also: injected-fault specs, the plan identity, and the measured-ETTR arithmetic.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include "exec/ft/checkpoint.hpp"
#include "exec/ft/sealed_codec.hpp"
#include "exec/ft/supervisor.hpp"
#include "model/errors.hpp"
#include "tests/test_util.hpp"

namespace {

namespace fs = std::filesystem;
using namespace ditwin;
using namespace ditwin::exec;

std::string fresh_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/ft_ck_" + name;
  fs::remove_all(d);
  return d;
}

CheckpointIdentity identity(std::size_t n) {
  CheckpointIdentity id;
  id.plan_identity = sha256_hex(std::string("plan"));
  id.plan_name.assign(1, 't');  // not = "t": GCC 12 warns falsely (-Wrestrict) on the literal
  id.parameters = n;
  id.optimizer = "adamw";
  return id;
}

// Two ranks, each holding half of params/m/v of a 10-value model.
void write_two_shards(const CheckpointStore& store, long long step, float base) {
  for (int r = 0; r < 2; ++r) {
    ShardState s;
    s.rank = r;
    s.ranks = 2;
    s.step = step;
    for (const char* a : {"params", "m", "v"}) {
      StateSlice slice{a, static_cast<std::size_t>(5 * r), {}};
      for (int i = 0; i < 5; ++i) slice.values.push_back(base + 5 * r + i);
      s.slices.push_back(slice);
    }
    store.write_shard(s);
  }
}

void flip_byte(const std::string& path, std::streamoff at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.get(c);
  f.seekp(at);
  f.put(static_cast<char>(c ^ 0x20));
}

std::string refusal(const CheckpointStore& store, long long step, const CheckpointIdentity& id) {
  try {
    store.load(step, id);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

TEST(FtCheckpoint, Sha256MatchesTheStandardTestVector) {
  EXPECT_EQ(sha256_hex(std::string("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(FtCheckpoint, ShardRoundTripsAndRejectsTruncation) {
  ShardState s{1, 2, 7, {{"params", 3, {1.5f, -2.f}}, {"m", 3, {0.25f, 0.f}}}};
  std::string bytes = serialize_shard(s);
  ShardState back = parse_shard(bytes, "x");
  EXPECT_EQ(back.rank, 1);
  EXPECT_EQ(back.step, 7);
  ASSERT_EQ(back.slices.size(), 2u);
  EXPECT_EQ(back.slices[0].values, s.slices[0].values);
  EXPECT_THROW(parse_shard(bytes.substr(0, bytes.size() - 3), "x"), CheckpointError);
  EXPECT_THROW(parse_shard("garbage", "x"), CheckpointError);
}

// Found by tools/fuzz.sh (fuzz_checkpoint): an empty slice, and a slice whose begin wraps
// begin + count past 2^64 (it was written outside the array: ASan heap-buffer-overflow).
TEST(FtCheckpoint, EmptySlicesParseAndWrappingSlicesAreRefused) {
  ShardState empty{0, 1, 1, {{"m", 0, {}}}};
  EXPECT_TRUE(parse_shard(serialize_shard(empty), "x").slices.at(0).values.empty());

  CheckpointStore store(fresh_dir("wrap"));
  ShardState s{0, 1, 2, {{"params", SIZE_MAX, {1.f}}, {"params", 0, std::vector<float>(9, 2.f)}}};
  store.write_shard(s);
  auto id = identity(10);
  store.commit(2, 1, id, {}, 2);
  EXPECT_NE(refusal(store, 2, id).find("past the end of the"), std::string::npos);
}

TEST(FtCheckpoint, CommittedCheckpointLoadsWholeArraysFromEveryShard) {
  CheckpointStore store(fresh_dir("ok"));
  write_two_shards(store, 4, 100);
  auto id = identity(10);
  store.commit(4, 2, id, {{"losses", {1.0, 0.5}}}, 2);
  LoadedCheckpoint c = store.load(4, id);
  EXPECT_EQ(c.step, 4);
  EXPECT_EQ(c.ranks, 2);
  ASSERT_EQ(c.params.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(c.params[i], 100.f + i);
  EXPECT_EQ(c.manifest["losses"].size(), 2u);
}

TEST(FtCheckpoint, FlippedByteTruncationAndTornManifestAreRefused) {
  auto id = identity(10);
  {
    CheckpointStore store(fresh_dir("flip"));
    write_two_shards(store, 2, 0);
    store.commit(2, 2, id, {}, 2);
    flip_byte(store.shard_path(2, 1), 40);
    std::string why = refusal(store, 2, id);
    EXPECT_NE(why.find("SHA-256"), std::string::npos) << why;
    EXPECT_NE(why.find("shard-00001.bin"), std::string::npos) << why;
  }
  {
    CheckpointStore store(fresh_dir("trunc"));
    write_two_shards(store, 2, 0);
    store.commit(2, 2, id, {}, 2);
    fs::resize_file(store.shard_path(2, 0), 20);
    std::string why = refusal(store, 2, id);
    EXPECT_NE(why.find("partial or corrupt"), std::string::npos) << why;
  }
  {
    CheckpointStore store(fresh_dir("torn"));
    write_two_shards(store, 2, 0);
    store.commit(2, 2, id, {}, 2);
    std::string manifest = store.step_dir(2) + "/manifest.json";
    fs::resize_file(manifest, fs::file_size(manifest) / 2);
    EXPECT_NE(refusal(store, 2, id).find("manifest"), std::string::npos);
  }
  {
    CheckpointStore store(fresh_dir("edited"));
    write_two_shards(store, 2, 0);
    store.commit(2, 2, id, {}, 2);
    std::string manifest = store.step_dir(2) + "/manifest.json";
    std::ifstream in(manifest);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    auto pos = text.find("\\\"step\\\":2");
    ASSERT_NE(pos, std::string::npos) << text;
    text.replace(pos, 10, "\\\"step\\\":3");
    std::ofstream(manifest) << text;
    EXPECT_NE(refusal(store, 2, id).find("manifest checksum mismatch"), std::string::npos);
  }
}

TEST(FtCheckpoint, ACrashBeforeTheManifestLeavesThePreviousCheckpoint) {
  CheckpointStore store(fresh_dir("crash"));
  auto id = identity(10);
  write_two_shards(store, 2, 0);
  store.commit(2, 2, id, {}, 2);
  write_two_shards(store, 4, 1);  // shards in place, manifest never written (the writer died)
  std::ofstream(store.step_dir(4) + "/shard-00000.bin.tmp") << "half";
  EXPECT_EQ(store.committed(), std::vector<long long>{2});
  EXPECT_EQ(store.load(2, id).params[0], 0.f);
}

TEST(FtCheckpoint, AnotherPlansCheckpointIsRefusedNamingBothIdentities) {
  CheckpointStore store(fresh_dir("other"));
  auto id = identity(10);
  write_two_shards(store, 2, 0);
  store.commit(2, 2, id, {}, 2);
  auto other = id;
  other.plan_identity = sha256_hex(std::string("other plan"));
  std::string why = refusal(store, 2, other);
  EXPECT_NE(why.find("written for another plan"), std::string::npos) << why;
  auto bigger = id;
  bigger.parameters = 12;
  EXPECT_NE(refusal(store, 2, bigger).find("parameters"), std::string::npos);
}

TEST(FtCheckpoint, KeepsTheNewestKAndRemovesOlderPartialWrites) {
  CheckpointStore store(fresh_dir("keep"));
  auto id = identity(10);
  write_two_shards(store, 1, 0);  // partial: never committed
  for (long long step : {2, 4, 6}) {
    write_two_shards(store, step, static_cast<float>(step));
    store.commit(step, 2, id, {}, 2);
  }
  EXPECT_EQ(store.committed(), (std::vector<long long>{6, 4}));
  EXPECT_FALSE(fs::exists(store.step_dir(1)));
  EXPECT_FALSE(fs::exists(store.step_dir(2)));
  // A rollback to step 4 (step 6 refused) commits step 5 with keep 1: the kept one is 5, not the
  // refused 6, and 6 is left alone (the directory after the newest may be mid-write on another rank).
  write_two_shards(store, 5, 5);
  store.commit(5, 2, id, {}, 1);
  EXPECT_EQ(store.committed(), (std::vector<long long>{6, 5}));
}

TEST(FtCheckpoint, RewritingACommittedStepUncommitsItFirst) {
  CheckpointStore store(fresh_dir("rewrite"));
  auto id = identity(10);
  write_two_shards(store, 2, 0);
  store.commit(2, 2, id, {}, 2);
  ShardState s{0, 2, 2, {{"params", 0, {9, 9, 9, 9, 9}}}};
  store.write_shard(s);  // a resume from an older checkpoint writes step 2 again
  EXPECT_TRUE(store.committed().empty());
}

TEST(FtCheckpoint, PlanIdentityCoversModelAndTrainingOnly) {
  auto plan = read_json_file(test::scenario("tiny-cpu.json"));
  std::string id = plan_identity(plan);
  auto relaid = plan;
  relaid["parallelism"]["dp"] = 1;
  relaid["cluster"]["devices_per_node"] = 1;
  relaid["run"]["steps"] = 5;
  relaid["reliability"]["checkpoint"]["keep"] = 9;
  relaid["name"] = "renamed";
  EXPECT_EQ(plan_identity(relaid), id);
  auto changed = plan;
  changed["training"]["optimizer"]["lr"] = 2e-3;
  EXPECT_NE(plan_identity(changed), id);
}

// --- numerical faults (issue 18 part 2) ---
TEST(FtNumerical, PlanKeysAndInjectionsAreRefusedNamingTheKey) {
  auto base = read_json_file(test::scenario("tiny-cpu.json"));
  auto refusal = [&](const nlohmann::json& numerical) {
    auto j = base;
    j["reliability"]["numerical"] = numerical;
    try {
      parse_plan(j);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(refusal({{"policy", "rollback"}, {"skip_data_window", 4}, {"lr_factor", 0.5}, {"lr_steps", 10}}), "");
  EXPECT_NE(refusal({{"policy", "retry"}}).find("reliability.numerical.policy"), std::string::npos);
  EXPECT_NE(refusal({{"spike_sigma", -1}}).find("reliability.numerical.spike_sigma"), std::string::npos);
  EXPECT_NE(refusal({{"window", 1}}).find("reliability.numerical.window"), std::string::npos);
  EXPECT_NE(refusal({{"skip_data_window", 2}}).find("reliability.numerical.skip_data_window: applies to \"policy\": \"rollback\""),
            std::string::npos);
  EXPECT_NE(refusal({{"policy", "rollback"}, {"lr_factor", 2}}).find("reliability.numerical.lr_factor"), std::string::npos);
  EXPECT_NE(refusal({{"policy", "rollback"}, {"lr_factor", 0.5}}).find("reliability.numerical.lr_steps"), std::string::npos);
  EXPECT_NE(refusal({{"rate_per_day", -2}}).find("reliability.numerical.rate_per_day"), std::string::npos);
  EXPECT_NE(refusal({{"polcy", "skip"}}).find("polcy"), std::string::npos);
  Plan plan = parse_plan(base);
  EXPECT_EQ(plan.reliability.numerical.policy, "skip");  // the default guard
  InjectSpec n = parse_inject("nan:rank=1,step=5", "--inject");
  EXPECT_EQ(n.kind, "nan");
  EXPECT_TRUE(n.numerical());
  InjectSpec sp = parse_inject("spike:step=30,factor=50", "--inject");
  EXPECT_EQ(sp.factor, 50);
  EXPECT_EQ(sp.describe(), "spike:step=30,factor=50");
  auto error = [&](const std::string& text, long long steps = 40) {
    try {
      std::vector<InjectSpec> in{parse_inject(text, "--inject")};
      check_injections(plan, in, steps, [&](std::size_t) { return "--inject " + text; });
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error("nan:rank=0,at_s=1").find("needs the step"), std::string::npos);
  EXPECT_NE(error("nan:rank=2,step=3").find("rank 2 is not a rank"), std::string::npos);
  EXPECT_NE(error("spike:step=3").find("factor"), std::string::npos);
  EXPECT_NE(error("spike:step=30,factor=0").find("factor"), std::string::npos);
  EXPECT_NE(error("spike:rank=1,step=30,factor=5").find("give no rank"), std::string::npos);
  EXPECT_NE(error("spike:step=3,factor=5").find("reliability.numerical.window"), std::string::npos);
  EXPECT_EQ(error("spike:step=30,factor=5"), "");
}

TEST(FtInject, CliFormParsesAndBadFormsNameTheProblem) {
  InjectSpec k = parse_inject("kill:rank=1,step=7", "--inject");
  EXPECT_EQ(k.kind, "kill");
  EXPECT_EQ(k.rank, 1);
  EXPECT_EQ(k.step, 7);
  InjectSpec r = parse_inject("hang:rank=0,seed=5,within_s=2", "--inject");
  EXPECT_GE(r.at_s, 0);
  EXPECT_LT(r.at_s, 2);
  EXPECT_EQ(parse_inject("hang:rank=0,seed=5,within_s=2", "--inject").at_s, r.at_s);  // the seed decides
  auto error = [](const std::string& text) {
    try {
      parse_inject(text, "--inject");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error("explode:rank=1,step=2").find("kind"), std::string::npos);
  EXPECT_NE(error("kill:rank=1").find("exactly one of step"), std::string::npos);
  EXPECT_NE(error("kill:rank=1,step=x").find("not a number"), std::string::npos);
  EXPECT_NE(error("kill:rank=1,step=2,speed=3").find("speed"), std::string::npos);
  EXPECT_NE(error("kill_during_checkpoint:rank=0,at_s=1").find("needs the step"), std::string::npos);
  EXPECT_NE(error("kill:rank1,step=2").find("key=value"), std::string::npos);
}

TEST(FtInject, PlanInjectionsAreCheckedWithTheirPath) {
  auto plan = read_json_file(test::scenario("tiny-cpu.json"));
  plan["reliability"]["inject"] = {{{"kind", "kill"}, {"rank", 2}, {"step", 3}}};
  EXPECT_NE(test::plan_error(plan).find("reliability.inject[0].rank"), std::string::npos) << test::plan_error(plan);
  plan["reliability"]["inject"] = {{{"kind", "kill"}, {"rank", 1}, {"step", 3}, {"at_s", 1}}};
  EXPECT_NE(test::plan_error(plan).find("reliability.inject[0].step"), std::string::npos) << test::plan_error(plan);
  plan["reliability"]["inject"] = {{{"kind", "hang"}, {"rank", 1}, {"step", 3}}};
  EXPECT_EQ(test::plan_error(plan), "");
}

// The accounting closes: productive + every cause of loss = wall time, and the step rolled back
// is the one a failure made the run compute twice.
TEST(FtReport, MeasuredEttrSplitsWallTimeExactly) {
  using nlohmann::json;
  auto ev = [](double t, const std::string& e, int attempt, int rank, json extra = json::object()) {
    extra["t"] = t;
    extra["event"] = e;
    extra["attempt"] = attempt;
    extra["rank"] = rank;
    return extra;
  };
  json events = json::array({
      ev(0.0, "launch", 1, -1), ev(0.5, "mpi_ready", 1, 0), ev(1.0, "train_start", 1, 0, {{"step", 0}}),
      ev(2.0, "step", 1, 0, {{"step", 1}, {"stall_s", 0.0}}), ev(3.5, "step", 1, 0, {{"step", 2}, {"stall_s", 0.5}}),
      ev(4.0, "step", 1, 0, {{"step", 3}, {"stall_s", 0.0}}),
      ev(4.5, "failure", 1, -1, {{"t_fail", 4.25}, {"t_detect", 4.5}, {"kind", "process_exit"}}),
      ev(4.75, "launch", 2, -1), ev(5.25, "mpi_ready", 2, 0), ev(5.5, "train_start", 2, 0, {{"step", 2}}),
      ev(6.5, "step", 2, 0, {{"step", 3}, {"stall_s", 0.0}}), ev(7.5, "step", 2, 0, {{"step", 4}, {"stall_s", 0.0}}),
  });
  json r = measured_longrun_report("t", events);
  EXPECT_DOUBLE_EQ(r["wall_s"].get<double>(), 6.5);
  EXPECT_DOUBLE_EQ(r["productive_s"].get<double>(), 4.0);  // steps 1, 2 (1 s each, stall apart), 3 and 4 of attempt 2
  const auto& l = r["lost_seconds_by_cause"];
  EXPECT_DOUBLE_EQ(l["rollback"].get<double>(), 0.75);  // step 3 of attempt 1 + 0.25 s in flight
  EXPECT_DOUBLE_EQ(l["detection"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(l["restart"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(l["checkpoint_stall"].get<double>(), 0.5);
  EXPECT_NEAR(r["unaccounted_s"].get<double>(), 0, 1e-12);
  EXPECT_DOUBLE_EQ(r["ettr"]["mean"].get<double>(), 4.0 / 6.5);
  EXPECT_EQ(r["failures"][0]["resumed_at_step"], 2);
}

}  // namespace

namespace ditwin::exec {
namespace {

// Two shards written through `store`'s codec and committed as step 4; checks they load back
// whole; returns rank 1's shard file as stored.
std::string commit_and_read_back(const CheckpointStore& store, const CheckpointIdentity& id) {
  write_two_shards(store, 4, 1.f);
  store.commit(4, 2, id, {}, 2);
  LoadedCheckpoint c = store.load(4, id);
  EXPECT_EQ(c.params.size(), 10u);
  if (c.params.size() == 10u) {
    EXPECT_EQ(c.params[7], 8.f);
  }
  std::ifstream in(store.shard_path(4, 1), std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Encrypted checkpoints (exec/sealed_codec): the shards and the manifest are sealed; the right
// key opens them, and no key, another key, a flipped byte or a shard moved to another name is
// refused naming the file.
TEST(FtCheckpoint, SealedCheckpointsOpenOnlyWithTheirKeyAndIntact) {
  auto id = identity(10);
  std::string dir = fresh_dir("sealed");
  SealedCodec codec(random_key());
  CheckpointStore store(dir, codec);
  // Nothing readable on disk: the float 8.0 of params[7] (0x41000000) is not in the shard file.
  std::string raw = commit_and_read_back(store, id);
  EXPECT_EQ(raw.compare(0, 4, "DWS1"), 0);
  EXPECT_EQ(raw.find(std::string("\x00\x00\x00\x41", 4)), std::string::npos);

  EXPECT_NE(refusal(CheckpointStore(dir), 4, id).find("the checkpoint is encrypted"), std::string::npos);
  SealedCodec other(random_key());
  EXPECT_NE(refusal(CheckpointStore(dir, other), 4, id).find("sealed with another key"), std::string::npos);
  // A shard renamed over its sibling is refused although each file is intact (names are bound).
  fs::copy_file(store.shard_path(4, 0), store.shard_path(4, 1), fs::copy_options::overwrite_existing);
  EXPECT_NE(refusal(store, 4, id), "");
  std::string dir2 = fresh_dir("sealed2");
  CheckpointStore store2(dir2, codec);
  write_two_shards(store2, 4, 1.f);
  store2.commit(4, 2, id, {}, 2);
  flip_byte(store2.shard_path(4, 0), 40);
  EXPECT_NE(refusal(store2, 4, id).find("shard-00000"), std::string::npos) << refusal(store2, 4, id);
}

// Authenticated plain checkpoints (AuthenticatedCodec): the values stay readable on disk, but an
// edited value — even with every SHA-256 recomputed — a missing key, another key, a shard moved
// to another name or a sealed checkpoint are refused naming the file (issue 16).
TEST(FtCheckpoint, AuthenticatedCheckpointsAreReadableButRefuseAnyEdit) {
  auto id = identity(10);
  std::string dir = fresh_dir("authenticated");
  AuthenticatedCodec codec(random_key());
  CheckpointStore store(dir, codec);
  // Plain: the float 8.0 of params[7] (0x41000000) is in the shard file, after the DWA1 header.
  std::string raw = commit_and_read_back(store, id);
  EXPECT_EQ(raw.compare(0, 4, "DWA1"), 0);
  std::size_t at = raw.find(std::string("\x00\x00\x00\x41", 4));
  ASSERT_NE(at, std::string::npos);

  EXPECT_NE(refusal(CheckpointStore(dir), 4, id).find("the checkpoint is authenticated"), std::string::npos);
  AuthenticatedCodec other(random_key());
  EXPECT_NE(refusal(CheckpointStore(dir, other), 4, id).find("authenticated with another key"), std::string::npos);
  SealedCodec sealed(random_key());
  EXPECT_NE(refusal(CheckpointStore(dir, sealed), 4, id), "");

  // The edit of issue 16's finding: 8.0 -> 9.0 (0x41100000) with the shard's SHA-256 recomputed
  // in its sidecar. The manifest's checksum cannot be recomputed without the key (the manifest is
  // authenticated), and the shard's own tag no longer matches either: refused.
  std::string edited = raw;
  edited[at + 2] = '\x10';
  EXPECT_THROW(codec.decode(edited, "shard-00001.bin"), CheckpointError);
  EXPECT_THROW(codec.decode(raw, "shard-00000.bin"), CheckpointError);  // bound to its name
  EXPECT_EQ(codec.decode(raw, "shard-00001.bin").size(), raw.size() - authenticated_overhead_bytes);
  {
    std::ofstream out(store.shard_path(4, 1), std::ios::binary | std::ios::trunc);
    out << edited;
  }
  std::string sidecar = store.shard_path(4, 1);
  sidecar.replace(sidecar.size() - 4, 4, ".sha256");
  if (fs::exists(sidecar)) std::ofstream(sidecar, std::ios::trunc) << sha256_hex(edited) << "\n";
  EXPECT_NE(refusal(store, 4, id).find("shard-00001"), std::string::npos) << refusal(store, 4, id);
  {
    std::ofstream out(store.shard_path(4, 1), std::ios::binary | std::ios::trunc);
    out << raw;
  }
  if (fs::exists(sidecar)) std::ofstream(sidecar, std::ios::trunc) << sha256_hex(raw) << "\n";
  EXPECT_EQ(store.load(4, id).params[7], 8.f);
  // The manifest is authenticated too: one byte of its JSON changed is refused.
  flip_byte((fs::path(store.step_dir(4)) / "manifest.json").string(), 12);
  EXPECT_NE(refusal(store, 4, id).find("manifest.json"), std::string::npos) << refusal(store, 4, id);
  // A shard renamed over its sibling is refused although each file is intact (names are bound).
  std::string dir2 = fresh_dir("authenticated2");
  CheckpointStore store2(dir2, codec);
  write_two_shards(store2, 4, 1.f);
  store2.commit(4, 2, id, {}, 2);
  fs::copy_file(store2.shard_path(4, 0), store2.shard_path(4, 1), fs::copy_options::overwrite_existing);
  EXPECT_NE(refusal(store2, 4, id), "");
}

TEST(FtCheckpoint, EncryptionAndAuthenticationKeysTogetherAreRefused) {
  std::string dir = fresh_dir("keys");
  fs::create_directories(dir);
  std::string key = dir + "/k";
  {
    std::ofstream out(key);
    out << std::string(64, 'a');
  }
  fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write);
  try {
    checkpoint_codec(key, key);
    ADD_FAILURE() << "both keys accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("authenticated already"), std::string::npos) << e.what();
  }
  EXPECT_EQ(checkpoint_codec("", key)->name(), "hmac-sha256");
  EXPECT_EQ(checkpoint_codec(key, "")->name(), "aes-256-gcm");
}

}  // namespace
}  // namespace ditwin::exec

// Shards that hashed correctly but lied about their layout: an offset near 2^64 (begin + count
// wrapped, and the copy corrupted the heap), overlapping slices with a hole, missing moments.
TEST(FtCheckpoint, SlicesOutOfBoundsOverlappingOrMissingAreRefused) {
  auto id = identity(10);
  auto commit = [&](const std::string& name, const std::vector<ShardState>& shards) {
    CheckpointStore store(fresh_dir(name));
    for (const auto& s : shards) store.write_shard(s);
    store.commit(2, static_cast<int>(shards.size()), id, {}, 2);
    return refusal(store, 2, id);
  };
  auto shard = [](int rank, std::vector<StateSlice> slices) { return ShardState{rank, 2, 2, std::move(slices)}; };
  std::vector<float> five(5, 1.f);
  std::string r = commit("wrap", {shard(0, {{"params", ~std::size_t(0) - 1000, five}}), shard(1, {{"params", 5, five}})});
  EXPECT_NE(r.find("past the end"), std::string::npos) << r;
  r = commit("overlap", {shard(0, {{"params", 0, five}, {"m", 0, five}, {"v", 0, five}}),
                         shard(1, {{"params", 4, five}, {"m", 5, five}, {"v", 5, five}})});
  EXPECT_NE(r.find("written twice"), std::string::npos) << r;
  r = commit("no-moments", {shard(0, {{"params", 0, five}}), shard(1, {{"params", 5, five}})});
  EXPECT_NE(r.find("moments (m, v) are missing"), std::string::npos) << r;
}
