// Invariants of the lowered Program over a spread of plans: acyclic, collectives consistent
// across their groups, p2p sends paired with receives, FLOPs equal to the accounting.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "model/accounting.hpp"
#include "model/privacy.hpp"
#include "model/program.hpp"
#include "tests/test_util.hpp"

using nlohmann::json;

namespace {

struct Case {
  std::string label;
  json plan;
};

json make(json model, json parallelism, json training, int gpus) {
  json j = ditwin::test::base_plan();
  j["name"] = "case";
  j["model"] = model;
  j["parallelism"] = parallelism;
  j["training"] = training;
  j["cluster"]["nodes"] = (gpus + 7) / 8;
  j["cluster"]["devices_per_node"] = gpus < 8 ? gpus : 8;
  return j;
}

std::vector<Case> cases() {
  std::vector<Case> c;
  for (const char* s : {"default.json", "tiny-cpu.json", "tiny-cpu-dp.json", "mmdit-8b-1024xh100.json",
                        "unified-7b-4096xh100.json", "llama3-405b-16384xh100.json"})
    c.push_back({s, ditwin::read_json_file(ditwin::test::scenario(s))});
  c.push_back({"gpt-pp4-interleaved-tied",
               make({{"preset", "Megatron-1.7B"}}, {{"dp", 2}, {"tp", 2}, {"pp", 4}, {"schedule", "interleaved"}, {"virtual_stages", 2}},
                    {{"global_batch", 16}, {"micro_batch", 2}}, 16)});
  c.push_back({"gpt-pp4-gpipe-full-recompute",
               make({{"preset", "Megatron-1.7B"}}, {{"dp", 1}, {"pp", 4}, {"schedule", "gpipe"}},
                    {{"global_batch", 8}, {"micro_batch", 1}, {"recompute", "full"}}, 4)});
  c.push_back({"llama-zero3-cp2",
               make({{"preset", "Llama-3-8B"}}, {{"dp", 4}, {"cp", 2}, {"zero", 3}},
                    {{"global_batch", 8}, {"micro_batch", 1}, {"recompute", "selective"}}, 8)});
  c.push_back({"dit-zero2-tp2-sp-accum",
               make({{"preset", "DiT-L/2"}}, {{"dp", 4}, {"tp", 2}, {"sequence_parallel", true}, {"zero", 2}},
                    {{"global_batch", 32}, {"micro_batch", 2}}, 8)});
  c.push_back({"mmdit-pp2-zero1",
               make({{"preset", "MMDiT-2B"}, {"image_size", 256}}, {{"dp", 4}, {"pp", 2}, {"zero", 1}},
                    {{"global_batch", 16}, {"micro_batch", 2}}, 8)});
  c.push_back({"llama-uneven-pp-interleaved",
               make({{"preset", "Llama-3-8B"}, {"layers", 30}}, {{"dp", 2}, {"pp", 4}, {"schedule", "interleaved"}, {"virtual_stages", 2}},
                    {{"global_batch", 8}, {"micro_batch", 1}}, 8)});
  json dp_sgd = {{"noise_multiplier", 1.0}, {"dataset_size", 100000}};
  c.push_back({"dp-sgd-mmdit-zero3",
               make({{"preset", "MMDiT-2B"}, {"image_size", 256}}, {{"dp", 8}, {"zero", 3}},
                    {{"global_batch", 16}, {"micro_batch", 1}, {"privacy", dp_sgd}}, 8)});
  c.push_back({"dp-sgd-unified-zero1-accum",
               make({{"preset", "Unified-7B"}, {"layers", 4}}, {{"dp", 2}, {"zero", 1}},
                    {{"global_batch", 8}, {"micro_batch", 2}, {"privacy", dp_sgd}}, 2)});
  c.push_back({"dp-sgd-dit-tp2-pp4-interleaved",
               make({{"preset", "DiT-L/2"}, {"layers", 8}}, {{"dp", 2}, {"tp", 2}, {"pp", 4}, {"schedule", "interleaved"}, {"virtual_stages", 2}},
                    {{"global_batch", 16}, {"micro_batch", 1}, {"privacy", dp_sgd}}, 16)});
  c.push_back({"dp-sgd-mmdit-tp2",
               make({{"preset", "MMDiT-2B"}, {"image_size", 256}, {"layers", 4}}, {{"dp", 2}, {"tp", 2}},
                    {{"global_batch", 8}, {"micro_batch", 2}, {"privacy", dp_sgd}}, 4)});
  c.push_back({"dp-sgd-unified-tp2-pp2",
               make({{"preset", "Unified-7B"}, {"layers", 4}}, {{"dp", 1}, {"tp", 2}, {"pp", 2}},
                    {{"global_batch", 8}, {"micro_batch", 2}, {"privacy", dp_sgd}}, 4)});
  // (A GPT: a DiT's per-sample adaLN runs on every CP rank, which the accounting counts once.)
  c.push_back({"dp-sgd-gpt-cp2-tp2-zero3",
               make({{"preset", "Megatron-1.7B"}, {"layers", 4}}, {{"dp", 2}, {"tp", 2}, {"cp", 2}, {"zero", 3}},
                    {{"global_batch", 8}, {"micro_batch", 2}, {"privacy", dp_sgd}}, 8)});
  c.push_back({"dp-sgd-gpt-zero2-recompute",
               make({{"preset", "Megatron-1.7B"}, {"layers", 4}}, {{"dp", 4}, {"zero", 2}},
                    {{"global_batch", 16}, {"micro_batch", 2}, {"recompute", "selective"}, {"privacy", dp_sgd}}, 4)});
  return c;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.label; }

class Lowering : public ::testing::TestWithParam<Case> {};

TEST_P(Lowering, DagIsAcyclicAndNamesAreUnique) {
  auto plan = ditwin::parse_plan(GetParam().plan);
  auto program = ditwin::lower(plan);
  ASSERT_EQ(program.classes.size(), static_cast<size_t>(plan.parallelism.pp));
  for (const auto& rc : program.classes) {
    std::set<std::string> names;
    for (size_t i = 0; i < rc.ops.size(); ++i) {
      for (auto d : rc.ops[i].deps) EXPECT_LT(d, i) << rc.ops[i].name;  // deps point backwards: no cycle
      EXPECT_TRUE(names.insert(rc.ops[i].name).second) << "duplicate op name " << rc.ops[i].name;
    }
  }
}

TEST_P(Lowering, CollectivesAppearOnEveryRankOfTheirGroupWithTheSameSize) {
  auto plan = ditwin::parse_plan(GetParam().plan);
  auto program = ditwin::lower(plan);
  std::vector<std::map<std::string, const ditwin::Op*>> by_name(program.classes.size());
  for (size_t c = 0; c < program.classes.size(); ++c)
    for (const auto& op : program.classes[c].ops) by_name[c][op.name] = &op;
  for (size_t c = 0; c < program.classes.size(); ++c) {
    long long rank = c * program.tp * program.cp * program.dp;  // first rank of the class
    for (const auto& op : program.classes[c].ops) {
      if (op.kind != ditwin::OpKind::collective) continue;
      auto members = program.group_members(op.group, rank);
      ASSERT_EQ(static_cast<int>(members.size()), op.group_size) << op.name;
      for (long long m : members) {
        int stage = program.stage_of(m);
        auto it = by_name[stage].find(op.name);
        ASSERT_NE(it, by_name[stage].end()) << op.name << " missing on rank " << m;
        EXPECT_EQ(it->second->bytes, op.bytes) << op.name;
        EXPECT_EQ(it->second->collective, op.collective) << op.name;
      }
    }
  }
}

TEST_P(Lowering, PipelineSendsPairWithReceives) {
  auto plan = ditwin::parse_plan(GetParam().plan);
  auto program = ditwin::lower(plan);
  std::map<std::string, std::pair<int, double>> sends, recvs;  // match -> (stage, bytes)
  for (const auto& rc : program.classes)
    for (const auto& op : rc.ops) {
      if (op.kind != ditwin::OpKind::p2p) continue;
      auto& table = op.collective == ditwin::Collective::send ? sends : recvs;
      EXPECT_TRUE(table.emplace(op.match, std::make_pair(rc.stage, op.bytes)).second) << op.match;
    }
  EXPECT_EQ(sends.size(), recvs.size());
  for (const auto& rc : program.classes)
    for (const auto& op : rc.ops) {
      if (op.kind != ditwin::OpKind::p2p) continue;
      const auto& other = op.collective == ditwin::Collective::send ? recvs : sends;
      auto it = other.find(op.match);
      ASSERT_NE(it, other.end()) << op.name << " has no partner";
      EXPECT_EQ(it->second.first, op.peer_stage) << op.name;
      EXPECT_EQ(it->second.second, op.bytes) << op.name;
    }
}

TEST_P(Lowering, ProgramFlopsEqualTheAccounting) {
  auto plan = ditwin::parse_plan(GetParam().plan);
  auto program = ditwin::lower(plan);
  double expected = ditwin::count_flops(plan).hardware_flops_per_step;
  EXPECT_NEAR(program.total_flops() / expected, 1.0, 1e-9);
}

TEST_P(Lowering, EveryComputeOpRunsForEveryMicroBatch) {
  auto plan = ditwin::parse_plan(GetParam().plan);
  auto program = ditwin::lower(plan);
  long long m = plan.micro_batches();
  for (const auto& rc : program.classes) {
    std::map<std::string, long long> per_base;
    for (const auto& op : rc.ops)
      // DP-SGD's noise ops (phase gradient_sync) run once per step, on the last micro-batch's sum.
      if (op.kind == ditwin::OpKind::compute && op.phase != ditwin::Phase::optimizer &&
          op.phase != ditwin::Phase::gradient_sync) {
        std::string base = op.name.substr(0, op.name.rfind(".mb"));
        ++per_base[base];
      }
    for (const auto& [base, n] : per_base) EXPECT_EQ(n, m) << base;
    int optimizers = 0;
    for (const auto& op : rc.ops) optimizers += op.kind == ditwin::OpKind::optimizer;
    EXPECT_EQ(optimizers, 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Plans, Lowering, ::testing::ValuesIn(cases()),
                         [](const auto& info) {
                           std::string n = info.param.label;
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(LoweringShape, RankClassesShareOneProgramPerStage) {
  auto plan = ditwin::load_plan(ditwin::test::scenario("llama3-405b-16384xh100.json"));
  auto program = ditwin::lower(plan);
  EXPECT_EQ(program.classes.size(), 16u);
  long long ranks = 0;
  for (const auto& rc : program.classes) ranks += rc.rank_count;
  EXPECT_EQ(ranks, 16384);
  EXPECT_EQ(program.stage_of(16383), 15);
  EXPECT_EQ(program.group_members(ditwin::GroupKind::tp, 9), (std::vector<long long>{8, 9, 10, 11, 12, 13, 14, 15}));
  auto dp = program.group_members(ditwin::GroupKind::dp, 3);
  EXPECT_EQ(dp.size(), 128u);
  EXPECT_EQ(dp[1], 3 + 8);
}

TEST(LoweringShape, DdpBucketsOverlapBackward) {
  auto plan = ditwin::load_plan(ditwin::test::scenario("tiny-cpu.json"));
  auto program = ditwin::lower(plan);
  const auto& ops = program.classes[0].ops;
  // The first gradient bucket must be able to start before the last backward op has run.
  size_t last_backward = 0, first_bucket = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].phase == ditwin::Phase::backward) last_backward = i;
    if (!first_bucket && ops[i].name.rfind("grads.bucket", 0) == 0) {
      first_bucket = i;
    }
  }
  ASSERT_GT(first_bucket, 0u);
  ASSERT_FALSE(ops[first_bucket].deps.empty());
  EXPECT_LT(ops[first_bucket].deps.back(), last_backward);
  plan.parallelism.overlap_grad_reduce = false;
  auto serial = ditwin::lower(plan);
  for (const auto& op : serial.classes[0].ops) {
    if (op.name.rfind("grads.bucket", 0) == 0) {
      EXPECT_EQ(op.deps.back(), last_backward);
    }
  }
}

TEST(LoweringShape, ZeroThreeGathersParametersPerLayer) {
  json j = make({{"preset", "DiT-B/2"}}, {{"dp", 8}, {"zero", 3}}, {{"global_batch", 16}, {"micro_batch", 1}}, 8);
  auto program = ditwin::lower(ditwin::parse_plan(j));
  int gathers = 0, scatters = 0;
  for (const auto& op : program.classes[0].ops) {
    gathers += op.collective == ditwin::Collective::all_gather;
    scatters += op.collective == ditwin::Collective::reduce_scatter;
  }
  // 12 layers + embedding + head, forward and backward, for 2 micro-batches; one reduce-scatter
  // per group per micro-batch.
  EXPECT_EQ(gathers, 14 * 2 * 2);
  EXPECT_EQ(scatters, 14 * 2);
}

}  // namespace

TEST(LoweringShape, DpSgdClipsBeforeWeightGradientsAndNoisesEachBucketOnce) {
  auto plan = ditwin::load_plan(ditwin::test::scenario("tiny-cpu-dp.json"));
  auto program = ditwin::lower(plan);
  const auto& ops = program.classes[0].ops;
  std::map<std::string, size_t> at;
  for (size_t i = 0; i < ops.size(); ++i) at[ops[i].name] = i;
  auto plain_plan = plan;
  plain_plan.training.privacy.enabled = false;
  auto plain = ditwin::lower(plain_plan);
  std::map<std::string, double> plain_flops;
  for (const auto& op : plain.classes[0].ops) plain_flops[op.name] = op.flops;
  int norms = 0, wgrads = 0, noises = 0, buckets = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto& op = ops[i];
    std::string mb = ".mb" + std::to_string(op.microbatch);
    if (op.name.find(".sample_norm.") != std::string::npos) {
      ++norms;
      std::string bwd = op.name.substr(0, op.name.find(".sample_norm.")) + ".bwd" + mb;
      ASSERT_TRUE(at.count(bwd)) << op.name;
      EXPECT_EQ(op.deps, std::vector<uint32_t>{static_cast<uint32_t>(at[bwd])}) << op.name;  // right after its backward
    }
    if (op.name.find(".wgrad.") != std::string::npos) {
      ++wgrads;
      EXPECT_GT(i, at.at("privacy.clip" + mb)) << op.name;
      // Backward's weight half moved here: input half + weight half = the plain backward.
      std::string base = op.name.substr(0, op.name.find(".wgrad."));
      EXPECT_DOUBLE_EQ(op.flops + ops[at.at(base + ".bwd" + mb)].flops, plain_flops.at(base + ".bwd" + mb)) << op.name;
    }
    if (op.name.size() > 6 && op.name.compare(op.name.size() - 6, 6, ".noise") == 0) ++noises;
    if (op.collective == ditwin::Collective::all_reduce && op.name.rfind("grads.bucket", 0) == 0) {
      ++buckets;
      std::string noise = op.name.substr(0, op.name.find(".allreduce")) + ".noise";
      ASSERT_TRUE(at.count(noise)) << op.name;
      EXPECT_NE(std::find(op.deps.begin(), op.deps.end(), at[noise]), op.deps.end()) << op.name << " waits for its noise";
    }
  }
  // Per micro-batch: 5 weighted ops per layer, patch, timestep, class, head adaLN and image.
  long long m = plan.micro_batches();
  EXPECT_EQ(norms, m * (5 * plan.model.layers + 5));
  EXPECT_EQ(wgrads, norms);
  EXPECT_EQ(noises, buckets);
  EXPECT_GT(buckets, 1);
  // The accounting charges the norms' FLOPs and the kept output gradients.
  auto flops = ditwin::count_flops(plan);
  EXPECT_GT(flops.privacy_norm_flops_per_sample, 0);
  EXPECT_GT(ditwin::account_memory(plan).stages[0].privacy_bytes, 0);
  EXPECT_EQ(ditwin::account_memory(plain_plan).stages[0].privacy_bytes, 0);
}

TEST(LoweringShape, DpSgdUnderPipelineSumsNormsOverStagesAndClipsLaggedByTheStage) {
  auto j = ditwin::read_json_file(ditwin::test::scenario("tiny-cpu-dp.json"));
  j["parallelism"] = {{"dp", 1}, {"pp", 2}};
  j["cluster"]["devices_per_node"] = 2;
  auto plan = ditwin::parse_plan(j);
  auto program = ditwin::lower(plan);
  const long long m = plan.micro_batches();
  ASSERT_GT(m, 2);
  for (int s = 0; s < 2; ++s) {
    const auto& ops = program.classes[s].ops;
    std::map<std::string, size_t> at;
    for (size_t i = 0; i < ops.size(); ++i) at[ops[i].name] = i;
    EXPECT_EQ(ditwin::privacy_clip_lag(plan, s), s);
    for (long long mb = 0; mb < m; ++mb) {
      std::string tag = ".mb" + std::to_string(mb);
      ASSERT_TRUE(at.count("privacy.norms.pp_allreduce.bwd" + tag)) << "stage " << s << tag;
      const auto& sum = ops[at["privacy.norms.pp_allreduce.bwd" + tag]];
      EXPECT_EQ(sum.group, ditwin::GroupKind::pp);
      EXPECT_EQ(sum.group_size, 2);
      EXPECT_EQ(sum.stream, ditwin::Stream::pp);  // posted when ready: the compute stream runs on
      const auto& clip = ops[at.at("privacy.clip" + tag)];
      EXPECT_NE(std::find(clip.deps.begin(), clip.deps.end(), at["privacy.norms.pp_allreduce.bwd" + tag]), clip.deps.end())
          << "stage " << s << tag << ": the clip waits for the stages' sum";
      // Stage s clips micro-batch mb after its own backward of mb + s (the last ones at the end).
      long long later = std::min(mb + s, m - 1);
      EXPECT_GT(at["privacy.clip" + tag], at["privacy.norms.pp_allreduce.bwd.mb" + std::to_string(later)]) << "stage " << s << tag;
      if (mb + s + 1 < m)
        EXPECT_LT(at["privacy.clip" + tag], at["privacy.norms.pp_allreduce.bwd.mb" + std::to_string(mb + s + 1)])
            << "stage " << s << tag << ": clipped no later than needed";
    }
  }
  // Stage 1 keeps one micro-batch more of activations and output gradients than without the lag.
  auto mem = ditwin::account_memory(plan);
  auto plain = plan;
  plain.training.privacy.enabled = false;
  auto plain_mem = ditwin::account_memory(plain);
  EXPECT_DOUBLE_EQ(mem.stages[0].activations_bytes, plain_mem.stages[0].activations_bytes);
  EXPECT_GT(mem.stages[1].activations_bytes, plain_mem.stages[1].activations_bytes);
}
