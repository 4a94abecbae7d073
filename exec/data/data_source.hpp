// The training data a plan names: a dataset on disk when training.data is set (read in a
// deterministic order, each rank only its own samples, the next step's read on a thread), else
// synthetic latents. docs/data.md.
#pragma once
#include <cstdint>
#include <memory>

#include "exec/data/dataset.hpp"
#include "exec/model/model.hpp"
#include "model/plan.hpp"

namespace ditwin::exec {

// The plan's source: the dataset at training.data.path (opened and checked now: InputError names
// the file and the field), else make_synthetic_latents. DP-SGD over a dataset needs
// training.privacy.dataset_size to be the dataset's size (the accountant's sampling rate uses it).
std::unique_ptr<DataSource> make_data_source(const Plan& plan);

// The dataset order: position p of the run reads example order(p) = the (p mod n)-th of epoch
// p / n, where an epoch is the identity order or, shuffled, a keyed pseudo-random permutation of
// [0, n) drawn from (seed, epoch). Any position maps to its example in O(1), without a table.
std::int64_t example_at(std::int64_t position, std::int64_t n, bool shuffle, std::uint64_t seed);

// A dataset on disk as a DataSource (make_data_source builds it from a plan).
std::unique_ptr<DataSource> make_disk_source(std::shared_ptr<const Dataset> dataset, const ModelSpec& model,
                                             const ObjectiveSpec& objective, std::uint64_t seed, bool shuffle);

}  // namespace ditwin::exec
