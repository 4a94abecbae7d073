// Builds and formats the `ditwin plan` summary.
#include "model/plan_summary.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "model/accounting.hpp"

namespace ditwin {

std::string human_count(double v) {
  const char* units[] = {"", " K", " M", " B", " T", " P", " E"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 6) {
    v /= 1000;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u ? "%.2f%s" : "%.0f%s", v, units[u]);
  return buf;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %s", bytes, units[u]);
  return buf;
}

nlohmann::json plan_summary(const Plan& plan, const Program& program) {
  using nlohmann::json;
  ParameterCounts params = count_parameters(plan.model);
  FlopCounts flops = count_flops(plan);
  MemoryReport memory = account_memory(plan);
  json j;
  j["plan"] = plan.name;
  j["description"] = plan.description;
  j["model"] = {{"preset", plan.model.preset}, {"family", to_string(plan.model.family)},
                {"layers", plan.model.layers}, {"hidden", plan.model.hidden}, {"heads", plan.model.heads},
                {"kv_heads", plan.model.kv_heads}, {"ffn_hidden", plan.model.ffn_hidden},
                {"tokens_per_sample", plan.model.tokens_per_sample()}};
  j["parameters"] = {{"total", params.total}, {"per_layer", params.per_layer},
                     {"embedding", params.embedding}, {"head", params.head}};
  j["flops"] = {{"forward_per_sample", flops.forward_per_sample},
                {"model_flops_per_step", flops.model_flops_per_step},
                {"hardware_flops_per_step", flops.hardware_flops_per_step},
                {"program_flops_per_step", program.total_flops()}};
  if (flops.privacy_norm_flops_per_sample > 0)  // DP-SGD plans only
    j["flops"]["privacy_norm_flops_per_step"] = flops.privacy_norm_flops_per_sample * plan.training.global_batch;
  j["batch"] = {{"global_batch", plan.training.global_batch}, {"micro_batch", plan.training.micro_batch},
                {"micro_batches", plan.micro_batches()}, {"tokens_per_step", plan.tokens_per_step()}};
  json stages = json::array();
  for (const auto& s : memory.stages)
    stages.push_back({{"stage", s.stage}, {"params_on_gpu", s.params_on_gpu}, {"weights_bytes", s.weights_bytes},
                      {"gradients_bytes", s.gradients_bytes}, {"optimizer_bytes", s.optimizer_bytes},
                      {"activations_bytes", s.activations_bytes}, {"total_bytes", s.total_bytes()}});
  for (std::size_t i = 0; i < memory.stages.size(); ++i)  // DP-SGD plans only
    if (memory.stages[i].privacy_bytes > 0) stages[i]["privacy_bytes"] = memory.stages[i].privacy_bytes;
  j["memory"] = {{"device", plan.cluster.device.name},
                 {"capacity_bytes", memory.capacity_bytes},
                 {"peak_bytes", memory.peak_bytes()},
                 {"worst_stage", memory.worst_stage},
                 {"fits", memory.fits()},
                 {"stages", stages}};
  std::map<std::string, long long> by_kind, by_stream;
  std::map<std::string, std::pair<long long, double>> collectives;
  long long total = 0;
  for (const auto& rc : program.classes) {
    for (const auto& op : rc.ops) {
      ++by_kind[to_string(op.kind)];
      ++by_stream[to_string(op.stream)];
      if (op.collective != Collective::none) {
        auto& c = collectives[std::string(to_string(op.group)) + "." + to_string(op.collective)];
        ++c.first;
        c.second += op.bytes;
      }
      ++total;
    }
  }
  json coll = json::object();
  for (const auto& [k, v] : collectives) coll[k] = {{"count", v.first}, {"bytes", v.second}};
  j["program"] = {{"rank_classes", program.classes.size()}, {"ranks", program.world()}, {"ops", total},
                  {"ops_by_kind", by_kind}, {"ops_by_stream", by_stream}, {"communication", coll}};
  j["parallelism"] = {{"dp", plan.parallelism.dp}, {"tp", plan.parallelism.tp}, {"pp", plan.parallelism.pp},
                      {"cp", plan.parallelism.cp}, {"zero", plan.parallelism.zero},
                      {"sequence_parallel", plan.parallelism.sequence_parallel},
                      {"schedule", to_string(plan.parallelism.schedule)},
                      {"virtual_stages", plan.parallelism.virtual_stages},
                      {"bubble_fraction", pipeline_bubble_fraction(plan)}};
  j["cluster"] = {{"device", plan.cluster.device.name}, {"nodes", plan.cluster.nodes},
                  {"devices_per_node", plan.cluster.devices_per_node}, {"gpus", plan.cluster.gpus()}};
  json warnings = plan.warnings;
  if (!memory.fits())
    warnings.push_back("does not fit: stage " + std::to_string(memory.worst_stage) + " needs " +
                       human_bytes(memory.peak_bytes()) + " of " + human_bytes(memory.capacity_bytes));
  else if (memory.capacity_bytes > 0 && memory.peak_bytes() > 0.9 * memory.capacity_bytes)
    warnings.push_back("memory is above 90% of the device: allocator fragmentation and communication buffers may not fit");
  j["warnings"] = warnings;
  return j;
}

std::string format_plan_summary(const nlohmann::json& j) {
  std::ostringstream os;
  auto d = [&](const char* a, const char* b) { return j[a][b].get<double>(); };
  os << "plan " << j["plan"].get<std::string>();
  if (!j["description"].get<std::string>().empty()) os << ": " << j["description"].get<std::string>();
  os << "\n\nmodel        " << (j["model"]["preset"].get<std::string>().empty() ? std::string("(spelled out)") : j["model"]["preset"].get<std::string>())
     << " [" << j["model"]["family"].get<std::string>() << "], " << j["model"]["layers"] << " layers, hidden "
     << j["model"]["hidden"] << ", " << j["model"]["heads"] << " heads, " << j["model"]["tokens_per_sample"]
     << " tokens/sample\n";
  os << "parameters   " << human_count(d("parameters", "total")) << " (per layer " << human_count(d("parameters", "per_layer"))
     << ", embedding " << human_count(d("parameters", "embedding")) << ", head " << human_count(d("parameters", "head")) << ")\n";
  os << "batch        " << j["batch"]["global_batch"] << " samples = " << j["batch"]["micro_batches"]
     << " micro-batches of " << j["batch"]["micro_batch"] << " per DP rank; " << human_count(d("batch", "tokens_per_step"))
     << " tokens/step\n";
  os << "FLOPs/step   model " << human_count(d("flops", "model_flops_per_step"))
     << (j["flops"].contains("privacy_norm_flops_per_step") ? "FLOP, with recompute and DP-SGD's per-sample norms " : "FLOP, with recompute ")
     << human_count(d("flops", "hardware_flops_per_step")) << "FLOP (forward " << human_count(d("flops", "forward_per_sample"))
     << "FLOP per sample)\n";
  const auto& p = j["parallelism"];
  os << "parallelism  dp " << p["dp"] << " x tp " << p["tp"] << " x pp " << p["pp"] << " x cp " << p["cp"]
     << " on " << j["cluster"]["gpus"] << " x " << j["cluster"]["device"].get<std::string>() << ", ZeRO " << p["zero"]
     << (p["sequence_parallel"].get<bool>() ? ", sequence parallel" : "") << ", schedule "
     << p["schedule"].get<std::string>();
  char bubble[64];
  std::snprintf(bubble, sizeof bubble, "%.1f%%", 100 * p["bubble_fraction"].get<double>());
  os << ", pipeline bubble " << bubble << "\n\n";
  const auto& mem = j["memory"];
  os << "memory per GPU (stage " << mem["worst_stage"] << ", the fullest)\n";
  const auto& s = mem["stages"][mem["worst_stage"].get<int>()];
  for (const char* k : {"weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "privacy_bytes"}) {
    if (!s.contains(k)) continue;
    std::string label = k;
    label = label.substr(0, label.size() - 6);
    char line[128];
    std::snprintf(line, sizeof line, "  %-12s %12s\n", label.c_str(), human_bytes(s[k].get<double>()).c_str());
    os << line;
  }
  char line[256];
  std::snprintf(line, sizeof line, "  %-12s %12s of %s: %s\n", "total", human_bytes(s["total_bytes"].get<double>()).c_str(),
                human_bytes(mem["capacity_bytes"].get<double>()).c_str(),
                mem["fits"].get<bool>() ? "fits" : "DOES NOT FIT");
  os << line;
  const auto& prog = j["program"];
  os << "\nprogram      " << prog["ops"] << " ops in " << prog["rank_classes"] << " rank classes for "
     << prog["ranks"] << " ranks\n  by kind:";
  for (const auto& [k, v] : prog["ops_by_kind"].items()) os << " " << k << " " << v;
  os << "\n  communication per step (one rank of each class):\n";
  for (const auto& [k, v] : prog["communication"].items()) {
    std::snprintf(line, sizeof line, "    %-28s %7lld ops %12s\n", k.c_str(), v["count"].get<long long>(),
                  human_bytes(v["bytes"].get<double>()).c_str());
    os << line;
  }
  if (!j["warnings"].empty()) {
    os << "\nwarnings\n";
    for (const auto& w : j["warnings"]) os << "  - " << w.get<std::string>() << "\n";
  }
  return os.str();
}

}  // namespace ditwin
