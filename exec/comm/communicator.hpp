// The collectives the executor needs, behind a small interface: MPI on CPUs, NCCL on GPUs.
// Every call is non-blocking and returns a handle; `wait`/`test` complete it.
#pragma once
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ditwin::exec {

class Communicator {
 public:
  using Handle = int;
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: buffer holds the sum over ranks afterwards.
  virtual Handle all_reduce_sum(float* buffer, std::size_t count) = 0;
  // `input` (sum of `counts`) is summed over ranks; rank r receives its `counts[r]` slice into `output`.
  virtual Handle reduce_scatter_sum(const float* input, float* output, const std::vector<int>& counts) = 0;
  // Rank r contributes `counts[r]` floats from `input`; everyone receives the concatenation in `output`.
  virtual Handle all_gather(const float* input, float* output, const std::vector<int>& counts) = 0;
  // Point to point (pipeline activations and their gradients): `count` floats to or from `peer`
  // (a rank of this communicator); a send and its recv carry the same `tag`.
  virtual Handle send(const float* data, std::size_t count, int peer, int tag) {
    (void)data, (void)count, (void)tag;
    throw std::logic_error("this communicator has no point-to-point transfers (send to rank " + std::to_string(peer) + ")");
  }
  virtual Handle recv(float* data, std::size_t count, int peer, int tag) {
    (void)data, (void)count, (void)tag;
    throw std::logic_error("this communicator has no point-to-point transfers (recv from rank " + std::to_string(peer) + ")");
  }
  // Collective over this communicator: the ranks passing the same `color` form one new
  // communicator, ordered by `key` (MPI_Comm_split's contract).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  virtual void wait(Handle h) = 0;
  virtual bool test(Handle h) = 0;  // true when complete (and the handle is then released)
  virtual double all_reduce_sum(double value) = 0;  // blocking, for losses and timings
  virtual double all_reduce_max(double value) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the world (after an error on this one, so the others do not wait forever).
  [[noreturn]] virtual void abort(int code) = 0;
  // Blocking: every rank's `values` concatenated on rank 0 (empty elsewhere).
  virtual std::vector<double> gather_to_root(const std::vector<double>& values) = 0;
  // A collective not complete after `seconds` throws (the NCCL watchdog's job; 0 = wait forever).
  virtual void set_timeout(double seconds) { (void)seconds; }
};

// The MPI world this process belongs to (a singleton world of 1 when started without mpirun).
// Initialises MPI on first use and finalises it at exit.
std::unique_ptr<Communicator> mpi_world();
// A world of this process alone, without MPI (single-GPU runs on machines without Open MPI).
std::unique_ptr<Communicator> local_world();
// A world of `ranks` ranks that are threads of this process (one communicator per thread, rank r
// at index r): multi-rank runs without mpirun, for ThreadSanitizer (tools/tsan.sh) and tests.
std::vector<std::unique_ptr<Communicator>> thread_world(int ranks);

}  // namespace ditwin::exec
