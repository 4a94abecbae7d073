// The Program player (model/player.hpp): dependency counts, per-stream order, and the order in
// which simultaneously ready ops are handed to the engine.
#include "model/player.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace ditwin {

ProgramPlayer::ProgramPlayer(const std::vector<Op>& ops) : ops_(ops), dependents_(ops.size()), stream_ops_(stream_count) {
  for (std::size_t i = 0; i < ops.size(); ++i) {
    for (auto d : ops[i].deps) {
      if (d >= i) throw std::logic_error("Program op " + ops[i].name + " depends on a later op");
      dependents_[d].push_back(i);
    }
    stream_ops_[static_cast<int>(ops[i].stream)].push_back(i);
  }
}

std::vector<std::size_t> ProgramPlayer::play(PlayerEngine& engine) {
  const std::size_t n = ops_.size();
  std::vector<std::size_t> waiting(n);
  std::vector<char> started(n, 0);
  for (std::size_t i = 0; i < n; ++i) waiting[i] = ops_[i].deps.size();
  std::vector<std::size_t> next(stream_count, 0);  // per serial stream: position of its next op
  std::vector<char> busy(stream_count, 0);
  std::vector<std::size_t> pp_ready;              // pp ops whose dependencies are done, not started
  const int pp = static_cast<int>(Stream::pp), compute = static_cast<int>(Stream::compute);
  for (std::size_t i : stream_ops_[pp])
    if (waiting[i] == 0) pp_ready.push_back(i);
  for (std::size_t i = 0; i < n; ++i)
    if (waiting[i] == 0) engine.ready(i);
  std::vector<std::size_t> order;
  order.reserve(n);
  std::size_t running = 0, finished = 0;

  auto start = [&](std::size_t i) {
    started[i] = 1;
    ++running;
    order.push_back(i);
    engine.start(i);
  };
  while (finished < n) {
    // Communication first, in program order: the serial comm streams' heads, then pp.
    for (int s = 0; s < stream_count; ++s) {
      if (s == pp || s == compute || busy[s] || next[s] >= stream_ops_[s].size()) continue;
      std::size_t i = stream_ops_[s][next[s]];
      if (waiting[i] != 0) continue;
      busy[s] = 1;
      ++next[s];
      start(i);
    }
    if (!pp_ready.empty()) {
      std::vector<std::size_t> now;
      now.swap(pp_ready);
      std::sort(now.begin(), now.end());
      for (std::size_t i : now) start(i);
    }
    if (!busy[compute] && next[compute] < stream_ops_[compute].size()) {
      std::size_t i = stream_ops_[compute][next[compute]];
      if (waiting[i] == 0) {
        busy[compute] = 1;
        ++next[compute];
        start(i);
      }
    }
    if (running == 0) {
      for (std::size_t i = 0; i < n; ++i)
        if (!started[i]) throw std::logic_error("Program op " + ops_[i].name + " can never start");
      break;
    }
    std::size_t done = engine.wait_any();
    if (done >= n || !started[done]) throw std::logic_error("player: the engine finished an op it was not given");
    --running;
    ++finished;
    int s = static_cast<int>(ops_[done].stream);
    if (s != pp) busy[s] = 0;
    for (std::size_t d : dependents_[done]) {
      if (--waiting[d] != 0) continue;
      engine.ready(d);
      if (static_cast<int>(ops_[d].stream) == pp) pp_ready.push_back(d);
    }
  }
  return order;
}

}  // namespace ditwin
