// libFuzzer target: the plan reader (`ditwin plan|simulate|execute FILE`). Bytes -> JSON ->
// parse_plan -> lower. A refusal with InputError is the right answer to a bad plan; any other
// exception, a crash or a sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "model/errors.hpp"   // defines: InputError
#include "model/plan.hpp"     // defines: parse_plan, Plan
#include "model/program.hpp"  // defines: lower

// Lowering is linear in micro-batches x layers (one op DAG per stage); above this a run would spend
// seconds per input on programs no larger than the seeds' and find nothing new.
constexpr long long max_lowered_layer_microbatches = 4096;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    // the harness's own parse: not JSON (parse_error) or a number beyond double (out_of_range 406)
    return 0;
  }
  try {
    ditwin::Plan plan = ditwin::parse_plan(document);
    long long work = plan.micro_batches() * static_cast<long long>(plan.model.layers);
    if (work >= 0 && work <= max_lowered_layer_microbatches) ditwin::lower(plan);
  } catch (const ditwin::InputError&) {
    // refused with a message: correct
  }
  return 0;
}
