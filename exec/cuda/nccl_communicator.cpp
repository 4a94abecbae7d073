// NCCL collectives on device buffers; bootstrap and host scalars over MPI.
#include "exec/cuda/nccl_communicator.hpp"

#include <mpi.h>

#include <numeric>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.hpp"

namespace ditwin::exec {

namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress)
    throw std::runtime_error(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(r));
}

bool equal(const std::vector<int>& counts) {
  for (int c : counts)
    if (c != counts[0]) return false;
  return true;
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> mpi, cudaStream_t compute, cudaStream_t comm)
    : mpi_(std::move(mpi)), compute_(compute), stream_(comm) {
  ncclUniqueId id{};
  if (mpi_->rank() == 0) check_nccl(ncclGetUniqueId(&id), "get unique id");
  // The executor's MPI communicator has no byte broadcast: MPI is initialised, so call it here.
  if (MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
    throw std::runtime_error("MPI_Bcast of the NCCL unique id failed");
  check_nccl(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()), "communicator init");
  DITWIN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> mpi, ncclComm_t comm, cudaStream_t compute,
                                   cudaStream_t stream)
    : mpi_(std::move(mpi)), comm_(comm), compute_(compute), stream_(stream) {
  DITWIN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  auto mpi = mpi_->split(color, key);
  ncclComm_t sub = nullptr;
  check_nccl(ncclCommSplit(comm_, color, key, &sub, nullptr), "communicator split");
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(mpi), sub, compute_, stream_));
}

// NCCL pairs a send with the receive its peer posts in the same order; the tag is the
// Program's match key, kept for MPI's sake (the player posts both sides in the same order).
Communicator::Handle NcclCommunicator::send(const float* data, std::size_t count, int peer, int tag) {
  (void)tag;
  begin();
  check_nccl(ncclSend(data, count, ncclFloat32, peer, comm_, stream_), "send");
  return finish();
}

Communicator::Handle NcclCommunicator::recv(float* data, std::size_t count, int peer, int tag) {
  (void)tag;
  begin();
  check_nccl(ncclRecv(data, count, ncclFloat32, peer, comm_, stream_), "recv");
  return finish();
}

NcclCommunicator::~NcclCommunicator() {
  cudaStreamSynchronize(stream_);
  for (auto& [h, e] : pending_) cudaEventDestroy(e);
  for (auto e : free_events_) cudaEventDestroy(e);
  if (ready_) cudaEventDestroy(ready_);
  if (comm_) ncclCommDestroy(comm_);
}

cudaEvent_t NcclCommunicator::take_event() {
  if (free_events_.empty()) {
    cudaEvent_t e;
    DITWIN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  cudaEvent_t e = free_events_.back();
  free_events_.pop_back();
  return e;
}

void NcclCommunicator::begin() {
  DITWIN_CUDA_CHECK(cudaEventRecord(ready_, compute_));
  DITWIN_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
}

Communicator::Handle NcclCommunicator::finish() {
  cudaEvent_t done = take_event();
  DITWIN_CUDA_CHECK(cudaEventRecord(done, stream_));
  Handle h = next_++;
  pending_[h] = done;
  return h;
}

Communicator::Handle NcclCommunicator::all_reduce_sum(float* buffer, std::size_t count) {
  begin();
  check_nccl(ncclAllReduce(buffer, buffer, count, ncclFloat32, ncclSum, comm_, stream_), "all-reduce");
  return finish();
}

Communicator::Handle NcclCommunicator::reduce_scatter_sum(const float* input, float* output,
                                                          const std::vector<int>& counts) {
  if (static_cast<int>(counts.size()) != size()) throw std::logic_error("reduce_scatter_sum: one count per rank");
  begin();
  if (equal(counts)) {
    check_nccl(ncclReduceScatter(input, output, counts[0], ncclFloat32, ncclSum, comm_, stream_), "reduce-scatter");
  } else {
    // Slices differ by one element: a reduce to each slice's owner, fused into one group.
    check_nccl(ncclGroupStart(), "group start");
    std::size_t offset = 0;
    for (int r = 0; r < size(); ++r) {
      check_nccl(ncclReduce(input + offset, output, counts[r], ncclFloat32, ncclSum, r, comm_, stream_), "reduce");
      offset += counts[r];
    }
    check_nccl(ncclGroupEnd(), "group end");
  }
  return finish();
}

Communicator::Handle NcclCommunicator::all_gather(const float* input, float* output, const std::vector<int>& counts) {
  if (static_cast<int>(counts.size()) != size()) throw std::logic_error("all_gather: one count per rank");
  begin();
  if (equal(counts)) {
    check_nccl(ncclAllGather(input, output, counts[0], ncclFloat32, comm_, stream_), "all-gather");
  } else {
    check_nccl(ncclGroupStart(), "group start");
    std::size_t offset = 0;
    for (int r = 0; r < size(); ++r) {
      check_nccl(ncclBroadcast(input, output + offset, counts[r], ncclFloat32, r, comm_, stream_), "broadcast");
      offset += counts[r];
    }
    check_nccl(ncclGroupEnd(), "group end");
  }
  return finish();
}

void NcclCommunicator::wait(Handle h) {
  auto it = pending_.find(h);
  if (it == pending_.end()) throw std::logic_error("NcclCommunicator::wait: unknown handle");
  // Work the caller enqueues on the compute stream from now on sees the collective's result.
  DITWIN_CUDA_CHECK(cudaStreamWaitEvent(compute_, it->second, 0));
  free_events_.push_back(it->second);
  pending_.erase(it);
}

bool NcclCommunicator::test(Handle h) {
  auto it = pending_.find(h);
  if (it == pending_.end()) throw std::logic_error("NcclCommunicator::test: unknown handle");
  cudaError_t e = cudaEventQuery(it->second);
  if (e == cudaErrorNotReady) return false;
  DITWIN_CUDA_CHECK(e);
  free_events_.push_back(it->second);
  pending_.erase(it);
  return true;
}

void NcclCommunicator::abort(int code) {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
  mpi_->abort(code);
  __builtin_unreachable();  // MPI's abort ends the process
}

}  // namespace ditwin::exec
