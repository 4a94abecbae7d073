// Heartbeats, events and injected faults on a rank. A kill is SIGKILL to this process (no
// handler, no flush: what a crashed node looks like); a hang is SIGSTOP (every thread frozen, the
// process still there: what a stuck NCCL kernel or a deadlock looks like to the others).
#include "exec/ft/fault_tolerance.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace ditwin::exec {

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

namespace {
void write_all(int fd, const std::string& s) {
  const char* p = s.data();
  std::size_t left = s.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w <= 0) return;  // the report loses a line; training goes on
    p += w;
    left -= static_cast<std::size_t>(w);
  }
}
}  // namespace

FaultTolerance::FaultTolerance(FtOptions options, int rank) : options_(std::move(options)), rank_(rank) {
  if (options_.run_dir.empty()) return;
  std::string events = options_.run_dir + "/events.jsonl";
  events_fd_ = ::open(events.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (events_fd_ < 0) throw std::runtime_error("cannot open " + events + ": " + std::strerror(errno));
  std::string hb = options_.run_dir + "/heartbeat-" + std::to_string(rank_);
  heartbeat_fd_ = ::open(hb.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (heartbeat_fd_ < 0) throw std::runtime_error("cannot open " + hb + ": " + std::strerror(errno));
  beat(starting_step);
}

FaultTolerance::~FaultTolerance() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  if (events_fd_ >= 0) ::close(events_fd_);
  if (heartbeat_fd_ >= 0) ::close(heartbeat_fd_);
}

void FaultTolerance::event(nlohmann::json e) {
  if (events_fd_ < 0) return;
  e["t"] = wall_now();
  e["rank"] = rank_;
  e["attempt"] = options_.attempt;
  // One write() per line on an O_APPEND file: lines of different ranks never interleave.
  write_all(events_fd_, e.dump() + "\n");
}

void FaultTolerance::beat(long long step) {
  if (heartbeat_fd_ < 0) return;
  char line[96];
  int n = std::snprintf(line, sizeof line, "%d %lld %.6f %d %llu\n", static_cast<int>(getpid()), step, wall_now(),
                        options_.attempt, ++beats_);
  std::memset(line + n, ' ', sizeof line - 1 - n);  // fixed size: a reader never sees a shorter tail
  line[sizeof line - 1] = '\n';
  if (::pwrite(heartbeat_fd_, line, sizeof line, 0) < 0) return;
}

bool FaultTolerance::armed(int i, const char* kind) {
  const auto& in = options_.inject[i];
  std::lock_guard<std::mutex> lock(mutex_);  // the async checkpoint writer fires faults too
  return in.rank == rank_ && in.kind == kind && !options_.fired.count(i);
}

void FaultTolerance::record(int i, const std::string& detail) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    options_.fired.insert(i);
  }
  event({{"event", "injected"}, {"index", i}, {"kind", options_.inject[i].kind}, {"spec", options_.inject[i].describe()},
         {"detail", detail}});
}

void FaultTolerance::fire(int i, const std::string& detail) {
  record(i, detail);
  std::fprintf(stderr, "ditwin: rank %d: injected %s (%s)\n", rank_, options_.inject[i].describe().c_str(), detail.c_str());
  std::fflush(stderr);
  if (options_.inject[i].kind == "hang") {
    ::kill(getpid(), SIGSTOP);
    for (;;) pause();  // only a SIGCONT gets here; stay hung
  }
  ::kill(getpid(), SIGKILL);
  for (;;) pause();
}

void FaultTolerance::training_started() {
  std::vector<int> timed;
  for (int i = 0; i < static_cast<int>(options_.inject.size()); ++i)
    if (options_.inject[i].at_s >= 0 && (armed(i, "kill") || armed(i, "hang"))) timed.push_back(i);
  if (timed.empty()) return;
  auto start = std::chrono::steady_clock::now();
  timer_ = std::thread([this, timed, start] {
    std::vector<int> order = timed;
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return options_.inject[a].at_s < options_.inject[b].at_s; });
    for (int i : order) {
      auto when = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(options_.inject[i].at_s));
      std::unique_lock<std::mutex> lock(mutex_);
      if (stop_cv_.wait_until(lock, when, [this] { return stopping_; })) return;
      lock.unlock();
      char detail[64];
      std::snprintf(detail, sizeof detail, "%.3f s into the attempt's training", options_.inject[i].at_s);
      fire(i, detail);
    }
  });
}

void FaultTolerance::before_step(long long step) {
  for (int i = 0; i < static_cast<int>(options_.inject.size()); ++i) {
    const auto& in = options_.inject[i];
    if (in.step == step && in.at_s < 0 && (armed(i, "kill") || armed(i, "hang")))
      fire(i, "at the start of step " + std::to_string(step));
  }
}

void FaultTolerance::during_checkpoint_write(std::size_t written, std::size_t total, long long step) {
  for (int i = 0; i < static_cast<int>(options_.inject.size()); ++i) {
    const auto& in = options_.inject[i];
    if (in.step == step && armed(i, "kill_during_checkpoint") &&
        static_cast<double>(written) >= in.fraction * static_cast<double>(total))
      fire(i, "writing the checkpoint of step " + std::to_string(step) + ", " + std::to_string(written) + " of " +
                  std::to_string(total) + " bytes written");
  }
}

void FaultTolerance::after_checkpoint_write(long long step, const std::string& shard_path) {
  for (int i = 0; i < static_cast<int>(options_.inject.size()); ++i) {
    if (options_.inject[i].step != step || !armed(i, "corrupt_shard")) continue;
    // Flip one byte in the middle of the data, in place: the file keeps its size and name.
    int fd = ::open(shard_path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("corrupt_shard: cannot open " + shard_path);
    off_t size = ::lseek(fd, 0, SEEK_END);
    off_t at = std::min<off_t>(size - 1, size / 2 + i);  // a byte per injection: two never cancel out
    unsigned char b = 0;
    if (::pread(fd, &b, 1, at) == 1) {
      b ^= 0x5a;
      if (::pwrite(fd, &b, 1, at) != 1) throw std::runtime_error("corrupt_shard: cannot write " + shard_path);
    }
    ::fsync(fd);
    ::close(fd);
    record(i, "flipped byte " + std::to_string(at) + " of " + shard_path);
  }
}

// --- numerical faults (issue 18 part 2) ---
FaultTolerance::NumericalInjection FaultTolerance::numerical_at(long long step) {
  NumericalInjection out;
  for (int i = 0; i < static_cast<int>(options_.inject.size()); ++i) {
    const auto& in = options_.inject[i];
    if (in.step != step) continue;
    if (in.kind == "nan" && armed(i, "nan")) {
      out.nan = true;
      record(i, "rank " + std::to_string(rank_) + "'s loss and gradients set to NaN at step " + std::to_string(step));
    } else if (in.kind == "spike") {
      bool fresh;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        fresh = !options_.fired.count(i);
      }
      if (!fresh) continue;
      out.factor *= in.factor;
      if (rank_ == 0) {  // every rank scales; one records it
        record(i, "loss and gradients scaled by " + std::to_string(in.factor) + " at step " + std::to_string(step));
      } else {
        std::lock_guard<std::mutex> lock(mutex_);
        options_.fired.insert(i);
      }
    }
  }
  return out;
}
// --- end numerical faults ---

}  // namespace ditwin::exec
