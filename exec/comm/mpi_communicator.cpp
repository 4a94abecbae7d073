// MPI implementation of the Communicator: non-blocking collectives and point-to-point transfers on
// MPI_COMM_WORLD or a communicator split from it (one per TP, CP, DP or PP group).
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <thread>

#include "exec/comm/communicator.hpp"

namespace ditwin::exec {

namespace {

void check(int code, const char* what) {
  if (code != MPI_SUCCESS) {
    char message[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, message, &length);
    throw std::runtime_error(std::string("MPI ") + what + " failed: " + std::string(message, length));
  }
}

std::vector<int> displacements(const std::vector<int>& counts) {
  std::vector<int> d(counts.size(), 0);
  for (size_t i = 1; i < counts.size(); ++i) d[i] = d[i - 1] + counts[i - 1];
  return d;
}

// MPI moves a non-blocking collective forward only inside MPI calls: the executor tests the
// outstanding requests between ops, and an optional progress thread (DITWIN_MPI_PROGRESS_THREAD=1)
// tests them every ~100 us while any is in flight, for machines with a spare core per rank.
class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    int provided = MPI_THREAD_SINGLE;
    if (!initialized) {
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "init");
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    else MPI_Query_thread(&provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Off by default: with one core per rank the thread's wake-ups cost the compute more than
    // the progress gains (measured on 2 cores, 2 ranks: +14 ms compute, -12 ms exposed DP).
    // DITWIN_MPI_PROGRESS_THREAD=1 turns it on where ranks have a spare core.
    const char* want = std::getenv("DITWIN_MPI_PROGRESS_THREAD");
    bool thread = want && std::string(want) == "1";
    if (thread && provided == MPI_THREAD_MULTIPLE && size_ > 1) progress_ = std::thread([this] { progress_loop(); });
  }
  // A sub-communicator (split from another): no progress thread of its own.
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    running_ = false;
    if (progress_.joinable()) progress_.join();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_WORLD && !finalized) MPI_Comm_free(&comm_);
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm sub;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      check(MPI_Comm_split(comm_, color, key, &sub), "Comm_split");
    }
    auto out = std::make_unique<MpiCommunicator>(sub);
    out->timeout_s_ = timeout_s_;
    return out;
  }
  Handle send(const float* data, std::size_t count, int peer, int tag) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Request r;
    check(MPI_Isend(data, static_cast<int>(count), MPI_FLOAT, peer, tag, comm_, &r), "Isend");
    return keep(r);
  }
  Handle recv(float* data, std::size_t count, int peer, int tag) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Request r;
    check(MPI_Irecv(data, static_cast<int>(count), MPI_FLOAT, peer, tag, comm_, &r), "Irecv");
    return keep(r);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Handle all_reduce_sum(float* buffer, std::size_t count) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Request r;
    check(MPI_Iallreduce(MPI_IN_PLACE, buffer, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm_, &r), "Iallreduce");
    return keep(r);
  }
  Handle reduce_scatter_sum(const float* input, float* output, const std::vector<int>& counts) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Request r;
    auto& c = counts_[next_];  // MPI reads the counts until the request completes
    c = counts;
    check(MPI_Ireduce_scatter(input, output, c.data(), MPI_FLOAT, MPI_SUM, comm_, &r), "Ireduce_scatter");
    return keep(r);
  }
  Handle all_gather(const float* input, float* output, const std::vector<int>& counts) override {
    std::lock_guard<std::mutex> lock(mutex_);
    MPI_Request r;
    auto& d = displs_[next_];
    d = displacements(counts);
    auto& c = counts_[next_];
    c = counts;
    check(MPI_Iallgatherv(input, counts[rank_], MPI_FLOAT, output, c.data(), d.data(), MPI_FLOAT, comm_, &r),
          "Iallgatherv");
    return keep(r);
  }
  void wait(Handle h) override {
    auto t0 = std::chrono::steady_clock::now();
    for (unsigned spins = 0; !test(h); ++spins) {
      std::this_thread::yield();
      if (timeout_s_ > 0 && (spins & 255) == 0) check_deadline(t0, "a non-blocking collective");
    }
  }
  void set_timeout(double seconds) override { timeout_s_ = seconds; }
  bool test(Handle h) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (completed_.erase(h)) {
      release(h);
      return true;
    }
    auto it = requests_.find(h);
    if (it == requests_.end()) return true;
    int done = 0;
    check(MPI_Test(&it->second, &done, MPI_STATUS_IGNORE), "Test");
    if (done) release(h);
    return done != 0;
  }
  double all_reduce_sum(double value) override { return all_reduce_scalar(value, MPI_SUM); }
  double all_reduce_max(double value) override { return all_reduce_scalar(value, MPI_MAX); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }
  void barrier() override {
    std::lock_guard<std::mutex> lock(mutex_);
    check(MPI_Barrier(comm_), "Barrier");
  }
  std::vector<double> gather_to_root(const std::vector<double>& values) override {
    std::lock_guard<std::mutex> lock(mutex_);
    int n = static_cast<int>(values.size());
    std::vector<int> counts(size_);
    check(MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm_), "Gather");
    std::vector<int> d = displacements(counts);
    std::vector<double> out(rank_ == 0 ? std::accumulate(counts.begin(), counts.end(), 0) : 0);
    check(MPI_Gatherv(values.data(), n, MPI_DOUBLE, out.data(), counts.data(), d.data(), MPI_DOUBLE, 0, comm_),
          "Gatherv");
    return out;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_WORLD;
  int rank_ = 0, size_ = 1;
  Handle next_ = 0;
  std::map<Handle, MPI_Request> requests_;
  std::map<Handle, std::vector<int>> displs_, counts_;  // must outlive the non-blocking call

  std::mutex mutex_;  // one MPI call at a time: the compute thread's or the progress thread's
  std::set<Handle> completed_;  // finished under the progress thread, not yet seen by test()
  std::atomic<bool> running_{true};
  std::thread progress_;

  void progress_loop() {
    while (running_) {
      bool pending = false;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [h, r] : requests_) {
          if (completed_.count(h)) continue;
          int done = 0;
          MPI_Test(&r, &done, MPI_STATUS_IGNORE);
          if (done) completed_.insert(h);
          else pending = true;
        }
      }
      // Poll often only while something is in flight: the thread shares the rank's core.
      std::this_thread::sleep_for(std::chrono::microseconds(pending ? 100 : 1000));
    }
  }

  double timeout_s_ = 0;

  // Blocking scalar reductions go through a non-blocking call, so that a peer that never
  // arrives trips the timeout instead of blocking this rank forever.
  double all_reduce_scalar(double value, MPI_Op op) {
    double out = 0;
    Handle h;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      MPI_Request r;
      check(MPI_Iallreduce(&value, &out, 1, MPI_DOUBLE, op, comm_, &r), "Iallreduce");
      h = keep(r);
    }
    wait(h);
    return out;
  }

  void check_deadline(std::chrono::steady_clock::time_point t0, const char* what) const {
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (waited > timeout_s_)
      throw std::runtime_error(std::string("collective timeout: ") + what + " on rank " + std::to_string(rank_) +
                               " has not completed after " + std::to_string(waited) +
                               " s (reliability.nccl_timeout_s); a peer is hung or dead");
  }

  Handle keep(MPI_Request r) {
    requests_[next_] = r;
    return next_++;
  }
  void release(Handle h) {
    completed_.erase(h);
    requests_.erase(h);
    displs_.erase(h);
    counts_.erase(h);
  }
};

}  // namespace

std::unique_ptr<Communicator> mpi_world() {
  // Open MPI refuses to run as root unless told; these only matter for singleton starts.
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  return std::make_unique<MpiCommunicator>();
}

}  // namespace ditwin::exec
