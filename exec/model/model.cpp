// The family switch of the executor (one place) and the batch helpers every family shares.
#include "exec/model/model.hpp"

#include "exec/model/dit_model.hpp"
#include "exec/model/joint_model.hpp"
#include "model/errors.hpp"

namespace ditwin::exec {

void append_samples(Batch& into, const Batch& more) {
  auto cat = [](auto& a, const auto& b) { a.insert(a.end(), b.begin(), b.end()); };
  into.size += more.size;
  cat(into.x0, more.x0);
  cat(into.noise, more.noise);
  cat(into.t, more.t);
  cat(into.y, more.y);
  cat(into.weight, more.weight);
  cat(into.tokens, more.tokens);
  cat(into.context, more.context);
  cat(into.pooled, more.pooled);
}

std::unique_ptr<Model> make_model(const Plan& plan, const ModelShard& shard) {
  const int b = static_cast<int>(plan.training.micro_batch), n = static_cast<int>(plan.micro_batches());
  switch (plan.model.family) {
    case ModelFamily::dit: return std::make_unique<DiT>(plan.model, b, n, shard);
    case ModelFamily::mmdit:
    case ModelFamily::unified: return std::make_unique<JointModel>(plan.model, plan.training.objective, b, n, shard);
    case ModelFamily::gpt:
    case ModelFamily::llama: break;
  }
  throw InputError(std::string("model.family: the executor trains dit, mmdit and unified models, not ") +
                   to_string(plan.model.family));
}

}  // namespace ditwin::exec
