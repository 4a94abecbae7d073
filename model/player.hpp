// The Program player: what it means to play a rank's Program, in one place. The simulator
// (sim/step_sim.cpp, a SimGrid actor) and the executor (exec/, real kernels and collectives) are
// two engines behind the small interface below; the player decides which op starts when.
//
// The rules:
//  - an op may start once every op it depends on has finished;
//  - the compute, tp, cp and dp streams each run one op at a time, in program order (a stream's
//    next op is its lowest-numbered op not yet started);
//  - the pp stream posts every op as soon as its dependencies allow (batched isend/irecv), so
//    pipeline transfers never wait for each other; a send and its receive meet through the
//    engine (they share Op::match_id);
//  - when several ops can start at once, communication is posted first, in program order, and
//    then the compute op: a real compute op occupies the host thread until it ends, and what it
//    does not post first waits behind it.
// Micro-batch and chunk order are the Program's order (the lowering lays the schedule out).
#pragma once
#include <cstddef>
#include <vector>

#include "model/program.hpp"

namespace ditwin {

class PlayerEngine {
 public:
  virtual ~PlayerEngine() = default;
  // Starts op `i`. The engine may finish it before returning (a synchronous compute op); it
  // then reports it from the next wait_any.
  virtual void start(std::size_t i) = 0;
  // Blocks until some started op has finished and returns it (each started op exactly once).
  virtual std::size_t wait_any() = 0;
  // Op `i`'s dependencies are all done (it may still wait for its stream): what it reads is
  // final now. An executor captures inputs here that later work would overwrite (a gradient
  // bucket the next micro-batch's backward adds into); a simulator has nothing to do.
  virtual void ready(std::size_t i) { (void)i; }
};

class ProgramPlayer {
 public:
  explicit ProgramPlayer(const std::vector<Op>& ops);
  // Plays every op once through `engine`; returns the ops in the order they were started.
  // Throws std::logic_error if the Program cannot finish (a dependency cycle or an op behind it).
  std::vector<std::size_t> play(PlayerEngine& engine);

 private:
  const std::vector<Op>& ops_;
  std::vector<std::vector<std::size_t>> dependents_;
  std::vector<std::vector<std::size_t>> stream_ops_;  // per stream, in program order
};

}  // namespace ditwin
