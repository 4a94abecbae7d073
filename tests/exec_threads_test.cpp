// The executor with its ranks as threads of one process (exec::thread_world): the communicator's
// collectives, point to point and split against their definitions; then tiny-cpu trained under
// DP with ZeRO and an async checkpoint writer, TP with sequence parallelism, a 1F1B pipeline and
// CP as threads — each reaching the one-rank parameters (1e-5 relative L2). The same program,
// built with ThreadSanitizer by tools/tsan.sh, is how CI checks the executor's threads (the
// ranks, the data prefetcher, the checkpoint writer) for data races. Last, the executor's refusals
// of the DP-SGD layouts it cannot run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <thread>

#include "exec/comm/communicator.hpp"
#include "exec/data/data_source.hpp"
#include "exec/runtime.hpp"
#include "model/errors.hpp"
#include "model/plan.hpp"
#include "model/program.hpp"
#include "tests/exec_test_util.hpp"  // defines: on_threads
#include "tests/test_util.hpp"

namespace {

using namespace ditwin;
using exec::Communicator;

using test::on_threads;

TEST(ThreadWorld, CollectivesPointToPointAndSplitMatchTheirDefinitions) {
  auto world = exec::thread_world(3);
  std::vector<std::vector<float>> reduced(3), scattered(3), gathered(3), received(3);
  std::vector<double> sums(3), maxima(3);
  std::vector<int> sub_rank(3), sub_size(3);
  std::vector<float> sub_sum(3);
  std::vector<double> root;
  on_threads(world, [&](int r, Communicator& c) {
    std::vector<float> a = {1.f + r, 10.f * r};
    c.wait(c.all_reduce_sum(a.data(), a.size()));
    reduced[r] = a;
    std::vector<float> in(6);
    std::iota(in.begin(), in.end(), static_cast<float>(r));  // rank r: r, r+1, ..., r+5
    std::vector<int> counts = {1, 2, 3};
    std::vector<float> out(counts[r]);
    auto h = c.reduce_scatter_sum(in.data(), out.data(), counts);
    while (!c.test(h)) std::this_thread::yield();
    scattered[r] = out;
    std::vector<float> mine(counts[r], static_cast<float>(r)), all(6);
    c.wait(c.all_gather(mine.data(), all.data(), counts));
    gathered[r] = all;
    // A ring of sends, posted before the receives.
    std::vector<float> msg = {static_cast<float>(100 + r)}, got(1);
    auto s = c.send(msg.data(), 1, (r + 1) % 3, 7);
    c.wait(c.recv(got.data(), 1, (r + 2) % 3, 7));
    c.wait(s);
    received[r] = got;
    sums[r] = c.all_reduce_sum(0.5 * r);
    maxima[r] = c.all_reduce_max(static_cast<double>(r));
    auto sub = c.split(r == 1 ? 0 : 1, -r);  // {1} and {2, 0} (key -r: rank 2 first)
    sub_rank[r] = sub->rank();
    sub_size[r] = sub->size();
    float v = 1.f + r;
    sub->wait(sub->all_reduce_sum(&v, 1));
    sub_sum[r] = v;
    c.barrier();
    auto g = c.gather_to_root({static_cast<double>(r), static_cast<double>(r) * r});
    if (r == 0) root = g;
    else EXPECT_TRUE(g.empty());
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(reduced[r], (std::vector<float>{6.f, 30.f}));
    EXPECT_EQ(gathered[r], (std::vector<float>{0.f, 1.f, 1.f, 2.f, 2.f, 2.f}));
    EXPECT_EQ(received[r], (std::vector<float>{static_cast<float>(100 + (r + 2) % 3)}));
    EXPECT_DOUBLE_EQ(sums[r], 1.5);
    EXPECT_DOUBLE_EQ(maxima[r], 2.0);
  }
  // Element i of the input sums to 3i + 3; rank 0 gets element 0, rank 1 elements 1-2, rank 2 3-5.
  EXPECT_EQ(scattered[0], (std::vector<float>{3.f}));
  EXPECT_EQ(scattered[1], (std::vector<float>{6.f, 9.f}));
  EXPECT_EQ(scattered[2], (std::vector<float>{12.f, 15.f, 18.f}));
  EXPECT_EQ(sub_size, (std::vector<int>{2, 1, 2}));
  EXPECT_EQ(sub_rank, (std::vector<int>{1, 0, 0}));
  EXPECT_EQ(sub_sum, (std::vector<float>{4.f, 2.f, 4.f}));
  EXPECT_EQ(root, (std::vector<double>{0, 0, 1, 1, 2, 4}));
}

TEST(ThreadWorld, AWaitPastTheTimeoutThrows) {
  auto world = exec::thread_world(2);
  world[0]->set_timeout(0.2);
  float x = 1.f;
  auto h = world[0]->all_reduce_sum(&x, 1);  // rank 1 never joins
  try {
    world[0]->wait(h);
    ADD_FAILURE() << "no timeout";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("collective timeout"), std::string::npos);
  }
}

// tiny-cpu under `parallelism`, 3 SGD steps in fp32, ranks as threads; rank 0's parameters in
// the one-rank layout.
std::vector<float> train(const nlohmann::json& parallelism, const std::string& checkpoint_dir = "") {
  nlohmann::json j = read_json_file(test::scenario("tiny-cpu.json"));
  j["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.05}};
  j["parallelism"] = {{"dp", 1}, {"zero", 0}, {"bucket_mb", 0.25}};
  for (const auto& [k, v] : parallelism.items()) j["parallelism"][k] = v;
  long long world = 1;
  for (const char* k : {"dp", "tp", "pp", "cp"}) world *= j["parallelism"].value(k, 1);
  j["cluster"]["devices_per_node"] = world;
  Plan plan = parse_plan(j);
  Program program = lower(plan);
  auto comms = exec::thread_world(static_cast<int>(world));
  std::vector<float> params;
  on_threads(comms, [&](int r, Communicator& c) {
    auto data = exec::make_data_source(plan);
    exec::ExecOptions o;
    o.steps = 3;
    o.warmup_steps = 1;
    if (!checkpoint_dir.empty()) {
      o.checkpoint.dir = checkpoint_dir;
      o.checkpoint.mode = "async";
      o.checkpoint.interval_steps = 1;
      o.checkpoint.resume = false;
      o.checkpoint.plan_identity = "threads";
    }
    auto result = exec::execute_plan(plan, program, c, *data, o);
    if (r == 0) params = result.parameters;
  });
  return params;
}

const std::vector<float>& one_rank() {
  static const std::vector<float> p = train({{"dp", 1}});
  return p;
}

TEST(ExecThreads, DataParallelZeroWithAsyncCheckpointsTrainsLikeOneRank) {
  std::string dir = ::testing::TempDir() + "/exec_threads_ck";
  std::filesystem::remove_all(dir);
  auto p = train({{"dp", 2}, {"zero", 2}}, dir);
  ASSERT_EQ(p.size(), one_rank().size());
  EXPECT_LT(test::relative_l2(p, one_rank()), 1e-5);
  // Checkpoints after steps 1 and 2, written by the async writer threads (none after the last step).
  EXPECT_TRUE(std::filesystem::exists(dir + "/step-00000002/manifest.json"));
}

TEST(ExecThreads, TensorSequencePipelineAndContextParallelTrainLikeOneRank) {
  for (const char* layout : {R"({"tp": 2, "sequence_parallel": true})", R"({"pp": 2, "schedule": "1f1b"})",
                             R"({"cp": 2})", R"({"dp": 2, "zero": 3})"}) {
    auto p = train(nlohmann::json::parse(layout));
    ASSERT_EQ(p.size(), one_rank().size()) << layout;
    EXPECT_LT(test::relative_l2(p, one_rank()), 1e-5) << layout;
  }
}

// The executor's own refusals of DP-SGD layouts (validation refuses pp and cp first; check_plan
// holds them for plans built in code): each an InputError naming the key. TP alone runs.
TEST(ExecThreads, DpSgdRunsEveryLayoutButSequenceParallelism) {
  Plan base = parse_plan(read_json_file(test::scenario("tiny-cpu-dp.json")));
  base.parallelism.dp = 1;
  base.parallelism.tp = 2;
  EXPECT_NO_THROW(exec::check_plan(base));
  auto refusal = [&](const std::function<void(Plan&)>& change) { return test::check_plan_refusal(base, change); };
  EXPECT_EQ(refusal([](Plan& p) { p.parallelism.pp = 2; }), "(accepted)");
  EXPECT_EQ(refusal([](Plan& p) { p.parallelism.cp = 2; }), "(accepted)");
  EXPECT_EQ(refusal([](Plan& p) { p.parallelism.sequence_parallel = true; }).rfind("parallelism.sequence_parallel: ", 0), 0u);
}

}  // namespace
