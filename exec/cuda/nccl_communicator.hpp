// NCCL implementation of the Communicator for the CUDA executor: buffers are device pointers;
// collectives run on one communication stream, each after an event recorded on the compute
// stream when it is posted (so it sees the gradients backward has produced so far) and followed
// by its own completion event. test() polls that event; wait() makes the compute stream wait on
// it (the host does not block), so buckets reduce while backward keeps the GPU busy. Host-side
// scalars, barriers and the bootstrap (ncclGetUniqueId on rank 0, MPI_Bcast) go through MPI.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <map>
#include <memory>
#include <vector>

#include "exec/comm/communicator.hpp"

namespace ditwin::exec {

class NcclCommunicator final : public Communicator {
 public:
  // `mpi` is the MPI world (already initialised); the current CUDA device is this rank's.
  NcclCommunicator(std::unique_ptr<Communicator> mpi, cudaStream_t compute, cudaStream_t comm);
  ~NcclCommunicator() override;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  Handle all_reduce_sum(float* buffer, std::size_t count) override;
  Handle reduce_scatter_sum(const float* input, float* output, const std::vector<int>& counts) override;
  Handle all_gather(const float* input, float* output, const std::vector<int>& counts) override;
  // Point to point (ncclSend / ncclRecv) on the communication stream, for the pipeline.
  Handle send(const float* data, std::size_t count, int peer, int tag) override;
  Handle recv(float* data, std::size_t count, int peer, int tag) override;
  // ncclCommSplit beside the MPI split: one NCCL communicator per TP, CP, DP or PP group.
  std::unique_ptr<Communicator> split(int color, int key) override;
  void wait(Handle h) override;
  bool test(Handle h) override;
  double all_reduce_sum(double value) override { return mpi_->all_reduce_sum(value); }
  double all_reduce_max(double value) override { return mpi_->all_reduce_max(value); }
  void barrier() override { mpi_->barrier(); }
  [[noreturn]] void abort(int code) override;
  std::vector<double> gather_to_root(const std::vector<double>& values) override { return mpi_->gather_to_root(values); }

 private:
  NcclCommunicator(std::unique_ptr<Communicator> mpi, ncclComm_t comm, cudaStream_t compute, cudaStream_t stream);
  void begin();       // the comm stream waits for the compute stream's work so far
  Handle finish();    // records the completion event
  cudaEvent_t take_event();

  std::unique_ptr<Communicator> mpi_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t compute_, stream_;
  cudaEvent_t ready_ = nullptr;
  std::vector<cudaEvent_t> free_events_;
  std::map<Handle, cudaEvent_t> pending_;
  Handle next_ = 1;
};

}  // namespace ditwin::exec
