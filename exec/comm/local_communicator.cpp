// A world of one process without MPI: what a single-GPU run needs where Open MPI is not
// installed (tools/device/check.sh's device build). The runtime posts no collective on one rank.
#include <stdexcept>

#include "exec/comm/communicator.hpp"

namespace ditwin::exec {

namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Handle all_reduce_sum(float*, std::size_t) override { return 0; }
  Handle reduce_scatter_sum(const float*, float*, const std::vector<int>&) override {
    throw std::logic_error("a world of one process has nothing to reduce-scatter");
  }
  Handle all_gather(const float*, float*, const std::vector<int>&) override {
    throw std::logic_error("a world of one process has nothing to all-gather");
  }
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<LocalCommunicator>(); }
  void wait(Handle) override {}
  bool test(Handle) override { return true; }
  double all_reduce_sum(double value) override { return value; }
  double all_reduce_max(double value) override { return value; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
  std::vector<double> gather_to_root(const std::vector<double>& values) override { return values; }
};

}  // namespace

std::unique_ptr<Communicator> local_world() { return std::make_unique<LocalCommunicator>(); }

}  // namespace ditwin::exec
