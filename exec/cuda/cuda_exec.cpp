// The CUDA executor's entry points that need NCCL and MPI: device, streams, backend and NCCL
// communicator for `execute --backend cuda`; NCCL all-reduce for `calibrate --backend cuda`.
#include "exec/cuda_exec.hpp"

#include <algorithm>
#include <vector>

#include "exec/cuda/cuda_backend.hpp"
#include "exec/cuda/cuda_util.hpp"
#include "exec/cuda/nccl_communicator.hpp"

namespace ditwin::exec {

namespace kc = ditwin::kernels::cuda;
using namespace cuda_util;

CudaRun make_cuda_run(const Plan& plan, std::unique_ptr<Communicator> mpi, int local_rank) {
  select_device(local_rank);
  auto streams = std::make_shared<Streams>();
  CudaRun run;
  run.device = kc::device_description();
  run.backend = make_cuda_backend(plan, streams->compute, streams->comm);
  run.comm = std::make_unique<NcclCommunicator>(std::move(mpi), streams->compute, streams->comm);
  run.streams = streams;
  return run;
}

nlohmann::json calibrate_cuda_communication(std::unique_ptr<Communicator> mpi, int local_rank) {
  using nlohmann::json;
  select_device(local_rank);
  Streams st;
  NcclCommunicator comm(std::move(mpi), st.compute, st.comm);
  const int ranks = comm.size();
  json points = json::array();
  std::vector<double> x, y;
  for (std::size_t count : {std::size_t{1} << 10, std::size_t{1} << 14, std::size_t{1} << 18, std::size_t{1} << 22,
                            std::size_t{1} << 26}) {
    float* buf = random_device_array<float>(count, 24, st.compute);
    comm.wait(comm.all_reduce_sum(buf, count));
    DITWIN_CUDA_CHECK(cudaStreamSynchronize(st.compute));
    std::vector<double> samples;
    for (int i = 0; i < 11; ++i) {
      comm.barrier();
      const double seconds = time_device([&] { comm.wait(comm.all_reduce_sum(buf, count)); }, st.compute, 1);
      samples.push_back(seconds);
    }
    cudaFree(buf);
    std::sort(samples.begin(), samples.end());
    const double seconds = comm.all_reduce_max(samples[samples.size() / 2]);
    x.push_back(2.0 * (ranks - 1) / ranks * count * sizeof(float));
    y.push_back(seconds);
    points.push_back({{"bytes", count * sizeof(float)}, {"seconds", seconds},
                      {"bus_bytes_per_s", x.back() / seconds}});
  }
  double mx = 0, my = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) { mx += x[i]; my += y[i]; }
  mx /= x.size();
  my /= y.size();
  for (std::size_t i = 0; i < x.size(); ++i) { sxx += (x[i] - mx) * (x[i] - mx); sxy += (x[i] - mx) * (y[i] - my); }
  double slope = sxx > 0 ? sxy / sxx : 0;
  if (!(slope > 0)) slope = y.back() / x.back();
  json all_reduce = json::array();
  for (const auto& pnt : points) all_reduce.push_back({{"bytes", pnt["bytes"]}, {"seconds", pnt["seconds"]}});
  return {{"ranks", ranks}, {"rank", comm.rank()}, {"latency_s", std::max(0.0, my - slope * mx)}, {"bus_bytes_per_s", 1.0 / slope},
          {"tables", {{"ranks", ranks}, {"all_reduce", all_reduce}}}, {"points", points}};
}

}  // namespace ditwin::exec
