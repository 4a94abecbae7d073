// Predicted against measured, op by op: ops are matched by rank, name and occurrence (the n-th
// op of that name on that rank), and each matched pair gets the relative error of its duration.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "gui/trace_model.hpp"

namespace ditwin::gui {

struct OpDiff {
  std::string name;
  long long pid = 0;
  long long tid = 0;
  double predicted_start_s = 0, predicted_s = 0;
  double measured_start_s = 0, measured_s = 0;
  long long rank = 0;  // the process's rank (what the table shows)
  double diff_s() const { return measured_s - predicted_s; }
  // (measured - predicted) / predicted; infinite when the prediction is zero and the measurement not.
  double relative_error() const;
};

struct Comparison {
  std::vector<OpDiff> diffs;  // every matched pair, largest |diff_s| first
  // Relative error of each slice, indexed [process][track][slice] like the traces; NaN: unmatched.
  std::vector<std::vector<std::vector<float>>> predicted_error, measured_error;
  std::size_t unmatched_predicted = 0, unmatched_measured = 0;
};

Comparison compare(const Trace& predicted, const Trace& measured);

}  // namespace ditwin::gui
