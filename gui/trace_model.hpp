// The GUI's in-memory form of a ditwin trace (Chrome Trace Event Format, as model/report.cpp
// writes it): processes (ranks) of tracks (streams) of slices sorted by start, identical ranks
// folded into rank classes. Parsing refuses bad input with a message naming the event and key.
#pragma once
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ditwin::gui {

class TraceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Slice {
  double start_s = 0;
  double duration_s = 0;
  double flops = 0;
  double bytes = 0;
  std::int32_t name = 0;      // index into Trace::names
  std::int32_t category = 0;  // index into Trace::categories
  bool instant = false;       // a "ph": "i" event (a failure in a run trace): drawn as a marker
  std::int32_t args = -1;     // index into Trace::args (the event's args less "rank"); -1: none
  double end_s() const { return start_s + duration_s; }
};

struct Track {
  long long tid = 0;
  std::string name;
  std::vector<Slice> slices;   // sorted by start
  std::vector<double> max_end_s;  // max_end_s[i]: latest end among slices[0..i]; nondecreasing
  // Index range [first, last) of the slices that may overlap [t0, t1]: binary searches, no scan.
  std::pair<std::size_t, std::size_t> visible(double t0_s, double t1_s) const;

  // Slices that overlap in time are stacked in sub-rows, each on the first sub-row free at its
  // start (greedy, in start order); the lane is `depth` sub-rows high. With depth 1 (ditwin's own
  // traces: the writer puts concurrent work on extra tids) the two vectors below stay empty.
  static constexpr int max_depth = 64;  // beyond it the rest share the last sub-row
  int depth = 1;
  std::vector<std::uint16_t> sub_row;               // per slice
  std::vector<std::vector<std::uint32_t>> sub_rows;  // per sub-row: its slices' indices, by start
  std::vector<std::vector<double>> sub_max_end_s;    // per sub-row: running max of their ends
  int sub_row_of(std::size_t slice) const { return sub_row.empty() ? 0 : sub_row[slice]; }
  void assign_sub_rows();  // finalize() calls it
};

struct Process {
  long long pid = 0;
  std::string name;
  long long sort_index = 0;
  long long rank = 0;  // process_name's args.rank when the trace gives it (ditwin's: pid - 1), else pid
  std::vector<Track> tracks;  // sorted by tid; only tracks holding slices
};

// Ranks whose tracks hold the same slices (names, starts, durations) bit for bit.
struct RankClass {
  std::vector<std::size_t> members;  // indices into Trace::processes, sorted; members[0] represents
  std::size_t representative() const { return members.front(); }
};

struct Trace {
  std::string origin;  // file name, for messages
  std::string source;  // otherData.source: "predicted", "measured", ...
  std::string plan;
  nlohmann::json other_data = nlohmann::json::object();
  std::optional<double> step_time_s, mfu, ettr;
  std::vector<std::string> names, categories;
  std::vector<nlohmann::json> args;  // distinct args objects (less "rank"), shared by the slices
  std::vector<Process> processes;  // sorted by (sort_index, pid)
  std::vector<RankClass> classes;  // in the order of their representatives
  double start_s = 0, end_s = 0;
  std::size_t slice_count = 0;
  bool is_run = false;  // a long-run trace: productive / checkpoint / failure / restart / lost time

  const std::string& name_of(const Slice& s) const { return names[static_cast<std::size_t>(s.name)]; }
  const std::string& category_of(const Slice& s) const { return categories[static_cast<std::size_t>(s.category)]; }
  std::int32_t intern_name(const std::string& n);
  std::int32_t intern_category(const std::string& c);
  // Stores an event's args once per distinct value ("rank" left out: the process says it), so
  // the copies of one op across thousands of ranks share one object. -1 for none.
  std::int32_t intern_args(const nlohmann::json& args);
  const nlohmann::json& args_of(const Slice& s) const;  // an empty object when none
  std::optional<std::int32_t> find_name(const std::string& n) const;
  // Sorts tracks and slices, drops empty tracks, computes the time range and folds rank classes.
  // Parsing calls it; code that builds a Trace by hand (tests, benchmarks) calls it once too.
  void finalize();
  std::optional<std::size_t> process_of(long long pid) const;

 private:
  std::unordered_map<std::string, std::int32_t> name_index_, category_index_;
  std::unordered_multimap<std::size_t, std::int32_t> args_index_;  // hash -> index into args
};

// Categories that mark a long-run trace (sim/longrun.cpp writes train, checkpoint, failure,
// recovery and rollback lanes); the run view gives each a fixed colour.
bool is_run_category(const std::string& category);
// Time that counts as training (train, productive) and time whose work was lost (rollback, lost).
bool is_productive_category(const std::string& category);
bool is_lost_category(const std::string& category);

Trace parse_trace(const std::string& text, const std::string& origin);
Trace parse_trace(const nlohmann::json& j, const std::string& origin);
Trace load_trace(const std::string& path);

// Metrics of a step report (ditwin simulate --report), for the side panel.
nlohmann::json load_report(const std::string& path);

}  // namespace ditwin::gui
