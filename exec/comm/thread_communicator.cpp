// A world of ranks that are threads of one process (exec/comm/communicator.hpp's thread_world):
// the executor's multi-rank runs without mpirun, which is what ThreadSanitizer needs to see
// every thread of a run (tools/tsan.sh). Collectives meet by sequence number: each member's n-th
// collective on a communicator meets the others' n-th; the last to arrive does the arithmetic
// for everyone under the group's lock and wakes the others, so every buffer a rank reads after
// `wait` was written before the lock it took. Sends are eager (copied at once), so a pipeline
// never waits on a send.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "exec/comm/communicator.hpp"

namespace ditwin::exec {

namespace {

enum class Kind { all_reduce, reduce_scatter, all_gather, sum, max, barrier, gather, split };

struct Group;

struct Meeting {
  Kind kind = Kind::barrier;
  int arrived = 0, left = 0;
  bool done = false;
  std::vector<const float*> in;
  std::vector<float*> out;
  std::vector<std::size_t> count;
  std::vector<int> counts;
  std::vector<double> value;
  std::vector<std::vector<double>> values;
  double result = 0;
  std::vector<double> gathered;
  std::vector<int> color, key;
  std::vector<std::shared_ptr<Group>> groups;  // split: each member's new group
  std::vector<int> new_rank;
};

struct Receive {
  float* data = nullptr;
  std::size_t count = 0;
  bool done = false;
};

// What the members of one communicator share.
struct Group {
  explicit Group(int n) : size(n) {}
  const int size;
  std::mutex mu;
  std::condition_variable cv;
  std::map<long long, Meeting> meetings;
  // Point to point, keyed (from, to, tag): sends not yet received, receives not yet sent to.
  std::map<std::tuple<int, int, int>, std::deque<std::vector<float>>> mail;
  std::map<std::tuple<int, int, int>, std::deque<std::shared_ptr<Receive>>> waiting;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<Group> group, int rank) : group_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size; }

  Handle all_reduce_sum(float* buffer, std::size_t count) override {
    return post(Kind::all_reduce, [&](Meeting& m) {
      m.in[rank_] = buffer;
      m.out[rank_] = buffer;
      m.count[rank_] = count;
    });
  }
  Handle reduce_scatter_sum(const float* input, float* output, const std::vector<int>& counts) override {
    check_counts(counts);
    return post(Kind::reduce_scatter, [&](Meeting& m) {
      m.in[rank_] = input;
      m.out[rank_] = output;
      m.counts = counts;
    });
  }
  Handle all_gather(const float* input, float* output, const std::vector<int>& counts) override {
    check_counts(counts);
    return post(Kind::all_gather, [&](Meeting& m) {
      m.in[rank_] = input;
      m.out[rank_] = output;
      m.counts = counts;
    });
  }
  Handle send(const float* data, std::size_t count, int peer, int tag) override {
    check_peer(peer);
    std::lock_guard<std::mutex> lock(group_->mu);
    auto key = std::make_tuple(rank_, peer, tag);
    auto& receivers = group_->waiting[key];
    if (!receivers.empty()) {
      auto r = receivers.front();
      receivers.pop_front();
      if (r->count != count) throw std::logic_error("thread world: send of " + std::to_string(count) + " floats to a recv of " + std::to_string(r->count));
      if (count) std::memcpy(r->data, data, count * sizeof(float));
      r->done = true;
      group_->cv.notify_all();
    } else {
      group_->mail[key].emplace_back(data, data + count);
    }
    return keep(Pending{});  // eager: complete already
  }
  Handle recv(float* data, std::size_t count, int peer, int tag) override {
    check_peer(peer);
    std::lock_guard<std::mutex> lock(group_->mu);
    auto key = std::make_tuple(peer, rank_, tag);
    auto& mail = group_->mail[key];
    auto r = std::make_shared<Receive>();
    r->data = data;
    r->count = count;
    if (!mail.empty()) {
      if (mail.front().size() != count)
        throw std::logic_error("thread world: recv of " + std::to_string(count) + " floats from a send of " + std::to_string(mail.front().size()));
      if (count) std::memcpy(data, mail.front().data(), count * sizeof(float));
      mail.pop_front();
      r->done = true;
    } else {
      group_->waiting[key].push_back(r);
    }
    Pending p;
    p.receive = r;
    return keep(p);
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    long long seq = 0;
    Handle h = post(Kind::split, [&](Meeting& m) {
      m.color[rank_] = color;
      m.key[rank_] = key;
    }, &seq);
    wait(h, false);
    std::lock_guard<std::mutex> lock(group_->mu);
    Meeting& m = group_->meetings.at(seq);
    auto out = std::make_unique<ThreadCommunicator>(m.groups[rank_], m.new_rank[rank_]);
    leave(seq, m);
    return out;
  }

  void wait(Handle h) override { wait(h, true); }
  bool test(Handle h) override {
    std::lock_guard<std::mutex> lock(group_->mu);
    auto it = pending_.find(h);
    if (it == pending_.end()) throw std::logic_error("thread world: test of an unknown handle");
    if (!complete(it->second)) return false;
    release(it);
    return true;
  }

  double all_reduce_sum(double value) override { return reduce_double(Kind::sum, value); }
  double all_reduce_max(double value) override { return reduce_double(Kind::max, value); }
  void barrier() override {
    Handle h = post(Kind::barrier, [](Meeting&) {});
    wait(h);
  }
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
  std::vector<double> gather_to_root(const std::vector<double>& values) override {
    long long seq = 0;
    Handle h = post(Kind::gather, [&](Meeting& m) { m.values[rank_] = values; }, &seq);
    wait(h, false);
    std::lock_guard<std::mutex> lock(group_->mu);
    Meeting& m = group_->meetings.at(seq);
    std::vector<double> out = rank_ == 0 ? m.gathered : std::vector<double>{};
    leave(seq, m);
    return out;
  }
  void set_timeout(double seconds) override { timeout_s_ = seconds; }

 private:
  struct Pending {
    long long seq = -1;                 // a collective's meeting
    std::shared_ptr<Receive> receive;   // or a receive
  };
  std::shared_ptr<Group> group_;
  int rank_;
  long long seq_ = 0;
  Handle next_ = 0;
  std::map<Handle, Pending> pending_;
  double timeout_s_ = 0;

  void check_peer(int peer) const {
    if (peer < 0 || peer >= group_->size || peer == rank_)
      throw std::logic_error("thread world: rank " + std::to_string(rank_) + " has no peer " + std::to_string(peer));
  }
  void check_counts(const std::vector<int>& counts) const {
    if (static_cast<int>(counts.size()) != group_->size)
      throw std::logic_error("thread world: " + std::to_string(counts.size()) + " counts for " + std::to_string(group_->size) + " ranks");
  }
  Handle keep(Pending p) {
    Handle h = next_++;
    pending_[h] = std::move(p);
    return h;
  }

  // Joins this member's next meeting; the last to arrive does the work. Called without the lock.
  template <class Fill>
  Handle post(Kind kind, Fill fill, long long* seq_out = nullptr) {
    std::lock_guard<std::mutex> lock(group_->mu);
    long long seq = seq_++;
    Meeting& m = group_->meetings[seq];
    if (m.arrived == 0) {
      int n = group_->size;
      m.kind = kind;
      m.in.assign(n, nullptr);
      m.out.assign(n, nullptr);
      m.count.assign(n, 0);
      m.value.assign(n, 0);
      m.values.assign(n, {});
      m.color.assign(n, 0);
      m.key.assign(n, 0);
    } else if (m.kind != kind) {
      throw std::logic_error("thread world: rank " + std::to_string(rank_) + " posted another collective than its peers");
    }
    fill(m);
    if (++m.arrived == group_->size) {
      run(m);
      m.done = true;
      group_->cv.notify_all();
    }
    if (seq_out) *seq_out = seq;
    Pending p;
    p.seq = seq;
    return keep(p);
  }

  void run(Meeting& m) {
    const int n = group_->size;
    switch (m.kind) {
      case Kind::all_reduce: {
        std::size_t count = m.count[0];
        for (int r = 1; r < n; ++r)
          if (m.count[r] != count) throw std::logic_error("thread world: all-reduce of different lengths");
        std::vector<float> sum(count, 0.f);
        for (int r = 0; r < n; ++r)
          for (std::size_t i = 0; i < count; ++i) sum[i] += m.in[r][i];
        for (int r = 0; r < n; ++r)
          if (count) std::memcpy(m.out[r], sum.data(), count * sizeof(float));
        break;
      }
      case Kind::reduce_scatter: {
        std::size_t offset = 0;
        for (int r = 0; r < n; ++r) {
          for (int i = 0; i < m.counts[r]; ++i) {
            float s = 0.f;
            for (int q = 0; q < n; ++q) s += m.in[q][offset + i];
            m.out[r][i] = s;
          }
          offset += static_cast<std::size_t>(m.counts[r]);
        }
        break;
      }
      case Kind::all_gather: {
        std::size_t offset = 0;
        for (int r = 0; r < n; ++r) {
          for (int q = 0; q < n; ++q)
            if (m.counts[r]) std::memcpy(m.out[q] + offset, m.in[r], static_cast<std::size_t>(m.counts[r]) * sizeof(float));
          offset += static_cast<std::size_t>(m.counts[r]);
        }
        break;
      }
      case Kind::sum:
        m.result = 0;
        for (double v : m.value) m.result += v;
        break;
      case Kind::max:
        m.result = m.value[0];
        for (double v : m.value) m.result = std::max(m.result, v);
        break;
      case Kind::barrier: break;
      case Kind::gather:
        for (const auto& v : m.values) m.gathered.insert(m.gathered.end(), v.begin(), v.end());
        break;
      case Kind::split: {
        m.groups.assign(n, nullptr);
        m.new_rank.assign(n, 0);
        std::map<int, std::vector<std::pair<int, int>>> by_color;  // color -> (key, old rank)
        for (int r = 0; r < n; ++r) by_color[m.color[r]].push_back({m.key[r], r});
        for (auto& [color, members] : by_color) {
          std::sort(members.begin(), members.end());
          auto g = std::make_shared<Group>(static_cast<int>(members.size()));
          for (std::size_t i = 0; i < members.size(); ++i) {
            m.groups[members[i].second] = g;
            m.new_rank[members[i].second] = static_cast<int>(i);
          }
        }
        break;
      }
    }
  }

  bool complete(const Pending& p) const {
    if (p.receive) return p.receive->done;
    if (p.seq < 0) return true;
    return group_->meetings.at(p.seq).done;
  }
  // This member is done with the meeting; the last one out erases it. Under the lock.
  void leave(long long seq, Meeting& m) {
    if (++m.left == group_->size) group_->meetings.erase(seq);
  }
  void release(std::map<Handle, Pending>::iterator it) {
    if (!it->second.receive && it->second.seq >= 0) leave(it->second.seq, group_->meetings.at(it->second.seq));
    pending_.erase(it);
  }
  // Blocks until `h` completes; `release_meeting` false keeps the meeting for the caller to read.
  void wait(Handle h, bool release_meeting) {
    std::unique_lock<std::mutex> lock(group_->mu);
    auto it = pending_.find(h);
    if (it == pending_.end()) throw std::logic_error("thread world: wait on an unknown handle");
    auto ready = [&] { return complete(it->second); };
    if (timeout_s_ > 0) {
      if (!group_->cv.wait_for(lock, std::chrono::duration<double>(timeout_s_), ready))
        throw std::runtime_error("collective timeout: rank " + std::to_string(rank_) + " waited " +
                                 std::to_string(timeout_s_) + " s (thread world)");
    } else {
      group_->cv.wait(lock, ready);
    }
    if (release_meeting) release(it);
    else pending_.erase(it);
  }
  double reduce_double(Kind kind, double value) {
    long long seq = 0;
    Handle h = post(kind, [&](Meeting& m) { m.value[rank_] = value; }, &seq);
    wait(h, false);
    std::lock_guard<std::mutex> lock(group_->mu);
    Meeting& m = group_->meetings.at(seq);
    double r = m.result;
    leave(seq, m);
    return r;
  }
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> thread_world(int ranks) {
  if (ranks < 1) throw std::invalid_argument("thread_world: at least one rank");
  auto group = std::make_shared<Group>(ranks);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < ranks; ++r) out.push_back(std::make_unique<ThreadCommunicator>(group, r));
  return out;
}

}  // namespace ditwin::exec
