// Predicted against measured, op by op, through model/compare (the one matching `ditwin compare`
// uses): the ops of one step of each trace (the measured trace's median steady-state step unless
// another is chosen), matched by rank, name and occurrence; errors are predicted / measured - 1,
// as `ditwin compare` reports them (negative: the run was slower than predicted).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "gui/trace_model.hpp"
#include "model/compare.hpp"

namespace ditwin::gui {

struct OpDiff {
  std::string name;
  long long pid = 0;
  long long tid = 0;
  double predicted_start_s = 0, predicted_s = 0;  // starts: from the start of the compared step
  double measured_start_s = 0, measured_s = 0;
  long long rank = 0;  // the process's rank (what the table shows)
  double diff_s() const { return predicted_s - measured_s; }  // as ditwin compare's difference_s
  // predicted / measured - 1 (model/compare's OpPair::error): negative when the run was slower.
  double error() const;
};

struct Comparison {
  std::vector<OpDiff> diffs;  // every matched pair, largest |diff_s| first
  // Error of each slice, indexed [process][track][slice] like the traces; NaN: not compared (no
  // counterpart, or outside the compared step).
  std::vector<std::vector<std::vector<float>>> predicted_error, measured_error;
  std::size_t unmatched_predicted = 0, unmatched_measured = 0;  // within the compared steps
  long long predicted_step = -1, measured_step = -1;  // -1: whole traces (long runs)
  double predicted_step_s = 0, measured_step_s = 0;
  // Where the compared steps start on the lowest rank: the view shifts the measured trace by
  // predicted_step_start_s - measured_step_start_s so that the two steps line up.
  double predicted_step_start_s = 0, measured_step_start_s = 0;
  std::vector<TraceStep> measured_steps;  // the measured trace's steps on its lowest rank, in order
  long long default_measured_step = -1;
};

// The steps of a trace (its "ProfilerStep#N" slices) and its other slices, as model/compare
// takes them; a slice's tag is its index in `where`.
struct SliceRef {
  std::size_t process, track, slice;
};
void trace_ops(const Trace& t, std::vector<TraceOp>& ops, std::vector<TraceStep>& steps, std::vector<SliceRef>& where);

// `t` with every slice `by` seconds later (the compare view's alignment of the compared steps).
Trace shifted(const Trace& t, double by);

// `measured_step` -1: the median steady-state step (model/compare's default_step). Throws
// InputError when the measured trace has no such step.
Comparison compare(const Trace& predicted, const Trace& measured, long long measured_step = -1);

}  // namespace ditwin::gui
