// Reading Chrome-trace JSON into the GUI's trace model, and folding identical ranks.
#include "gui/trace_model.hpp"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

namespace ditwin::gui {

using nlohmann::json;

std::pair<std::size_t, std::size_t> Track::visible(double t0_s, double t1_s) const {
  // First slice whose running max end reaches t0: every earlier one ends before the view.
  auto first = std::lower_bound(max_end_s.begin(), max_end_s.end(), t0_s) - max_end_s.begin();
  auto last = std::upper_bound(slices.begin() + first, slices.end(), t1_s,
                               [](double t, const Slice& s) { return t < s.start_s; }) - slices.begin();
  return {static_cast<std::size_t>(first), static_cast<std::size_t>(std::max(first, last))};
}

std::int32_t Trace::intern_name(const std::string& n) {
  auto [it, fresh] = name_index_.try_emplace(n, static_cast<std::int32_t>(names.size()));
  if (fresh) names.push_back(n);
  return it->second;
}

std::int32_t Trace::intern_category(const std::string& c) {
  auto [it, fresh] = category_index_.try_emplace(c, static_cast<std::int32_t>(categories.size()));
  if (fresh) categories.push_back(c);
  return it->second;
}

namespace {
// Hash of an args object without its "rank" key (copies of one op on many ranks hash alike).
std::size_t args_hash(const json& a) {
  std::size_t h = 1469598103934665603ULL;
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (it.key() == "rank") continue;
    h = (h ^ std::hash<std::string>{}(it.key())) * 1099511628211ULL;
    h = (h ^ std::hash<json>{}(it.value())) * 1099511628211ULL;
  }
  return h;
}
bool same_args(const json& stored, const json& a) {  // `stored` has no "rank"
  std::size_t n = 0;
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (it.key() == "rank") continue;
    ++n;
    auto s = stored.find(it.key());
    if (s == stored.end() || *s != it.value()) return false;
  }
  return n == stored.size();
}
}  // namespace

std::int32_t Trace::intern_args(const json& a) {
  if (!a.is_object() || a.empty() || (a.size() == 1 && a.contains("rank"))) return -1;
  std::size_t h = args_hash(a);
  auto [lo, hi] = args_index_.equal_range(h);
  for (auto it = lo; it != hi; ++it)
    if (same_args(args[static_cast<std::size_t>(it->second)], a)) return it->second;
  json stored = a;
  stored.erase("rank");
  args.push_back(std::move(stored));
  auto id = static_cast<std::int32_t>(args.size() - 1);
  args_index_.emplace(h, id);
  return id;
}

const json& Trace::args_of(const Slice& s) const {
  static const json none = json::object();
  return s.args >= 0 && static_cast<std::size_t>(s.args) < args.size() ? args[static_cast<std::size_t>(s.args)] : none;
}

std::optional<std::int32_t> Trace::find_name(const std::string& n) const {
  auto it = name_index_.find(n);
  if (it != name_index_.end()) return it->second;
  // A Trace built by hand may fill `names` directly.
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == n) return static_cast<std::int32_t>(i);
  return std::nullopt;
}

void Track::assign_sub_rows() {
  depth = 1;
  sub_row.clear();
  sub_rows.clear();
  sub_max_end_s.clear();
  // Below a trace's resolution (1 ns): ends and starts that touch after the microsecond
  // conversion may differ by a rounding error, which is no overlap.
  constexpr double touch_s = 1e-10;
  std::vector<double> free_at;  // per sub-row: when its last slice ends
  std::vector<std::uint16_t> rows(slices.size());
  for (std::size_t i = 0; i < slices.size(); ++i) {
    const Slice& s = slices[i];
    std::size_t k = 0;
    while (k < free_at.size() && free_at[k] > s.start_s + touch_s) ++k;
    if (k == free_at.size()) {
      if (free_at.size() < static_cast<std::size_t>(max_depth)) free_at.push_back(-INFINITY);
      else k = free_at.size() - 1;
    }
    free_at[k] = std::max(free_at[k], s.end_s());
    rows[i] = static_cast<std::uint16_t>(k);
  }
  if (free_at.size() <= 1) return;
  depth = static_cast<int>(free_at.size());
  sub_row = std::move(rows);
  sub_rows.resize(free_at.size());
  sub_max_end_s.resize(free_at.size());
  for (std::size_t i = 0; i < slices.size(); ++i) {
    auto& ends = sub_max_end_s[sub_row[i]];
    sub_rows[sub_row[i]].push_back(static_cast<std::uint32_t>(i));
    ends.push_back(ends.empty() ? slices[i].end_s() : std::max(ends.back(), slices[i].end_s()));
  }
}

std::optional<std::size_t> Trace::process_of(long long pid) const {
  for (std::size_t i = 0; i < processes.size(); ++i)
    if (processes[i].pid == pid) return i;
  return std::nullopt;
}

bool is_productive_category(const std::string& c) { return c == "train" || c == "productive"; }
bool is_lost_category(const std::string& c) { return c == "rollback" || c == "lost"; }
bool is_run_category(const std::string& c) {
  return is_productive_category(c) || is_lost_category(c) || c == "failure" || c == "restart" || c == "recovery";
}

namespace {

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdULL;
}

std::uint64_t bits_of(double d) {
  std::uint64_t u;
  static_assert(sizeof u == sizeof d);
  std::memcpy(&u, &d, sizeof u);
  return u;
}

std::uint64_t signature(const Process& p) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const auto& t : p.tracks) {
    h = mix(h, static_cast<std::uint64_t>(t.tid));
    h = mix(h, t.slices.size());
    for (const auto& s : t.slices) {
      h = mix(h, static_cast<std::uint64_t>(s.name));
      h = mix(h, bits_of(s.start_s));
      h = mix(h, bits_of(s.duration_s));
    }
  }
  return h;
}

bool same_slices(const Process& a, const Process& b) {
  if (a.tracks.size() != b.tracks.size()) return false;
  for (std::size_t i = 0; i < a.tracks.size(); ++i) {
    const auto& x = a.tracks[i];
    const auto& y = b.tracks[i];
    if (x.tid != y.tid || x.slices.size() != y.slices.size()) return false;
    for (std::size_t k = 0; k < x.slices.size(); ++k)
      if (x.slices[k].name != y.slices[k].name || x.slices[k].start_s != y.slices[k].start_s ||
          x.slices[k].duration_s != y.slices[k].duration_s)
        return false;
  }
  return true;
}

}  // namespace

void Trace::finalize() {
  slice_count = 0;
  start_s = 0;
  end_s = 0;
  bool any = false;
  for (auto& p : processes) {
    std::erase_if(p.tracks, [](const Track& t) { return t.slices.empty(); });
    std::sort(p.tracks.begin(), p.tracks.end(), [](const Track& a, const Track& b) { return a.tid < b.tid; });
    for (auto& t : p.tracks) {
      // Longer first among equal starts, so an enclosing slice is drawn under what it holds.
      std::stable_sort(t.slices.begin(), t.slices.end(), [](const Slice& a, const Slice& b) {
        return a.start_s < b.start_s || (a.start_s == b.start_s && a.duration_s > b.duration_s);
      });
      t.max_end_s.resize(t.slices.size());
      double m = -INFINITY;
      for (std::size_t i = 0; i < t.slices.size(); ++i) t.max_end_s[i] = m = std::max(m, t.slices[i].end_s());
      t.assign_sub_rows();
      slice_count += t.slices.size();
      double lo = t.slices.front().start_s, hi = t.max_end_s.back();
      start_s = any ? std::min(start_s, lo) : lo;
      end_s = any ? std::max(end_s, hi) : hi;
      any = true;
    }
  }
  std::erase_if(processes, [](const Process& p) { return p.tracks.empty(); });
  std::stable_sort(processes.begin(), processes.end(), [](const Process& a, const Process& b) {
    return a.sort_index < b.sort_index || (a.sort_index == b.sort_index && a.pid < b.pid);
  });

  classes.clear();
  std::unordered_map<std::uint64_t, std::vector<std::size_t>> by_signature;  // signature -> class indices
  for (std::size_t i = 0; i < processes.size(); ++i) {
    auto& candidates = by_signature[signature(processes[i])];
    bool placed = false;
    for (std::size_t c : candidates)
      if (same_slices(processes[classes[c].representative()], processes[i])) {
        classes[c].members.push_back(i);
        placed = true;
        break;
      }
    if (!placed) {
      candidates.push_back(classes.size());
      classes.push_back(RankClass{{i}});
    }
  }

  is_run = other_data.is_object() &&
           (other_data.value("mode", std::string()) == "run" || other_data.value("kind", std::string()) == "longrun");
  for (const auto& c : categories) is_run = is_run || is_run_category(c);
}

namespace {

[[noreturn]] void fail(const std::string& origin, const std::string& where, const std::string& what) {
  throw TraceError(origin + ": " + where + ": " + what);
}

std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

struct EventReader {
  const json& e;
  std::size_t index;
  const std::string& origin;

  std::string where(const char* key = nullptr) const {
    std::string w = "traceEvents[" + std::to_string(index) + "]";
    if (key) w += std::string(".") + key;
    return w;
  }
  const json& need(const char* key) const {
    auto it = e.find(key);
    if (it == e.end()) fail(origin, where(), std::string("missing \"") + key + "\"");
    return *it;
  }
  long long integer(const char* key) const {
    const json& v = need(key);
    if (v.is_number_integer()) return v.get<long long>();
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<long long>(d);
    }
    fail(origin, where(key), "expected an integer, got " + shown(v));
  }
  double number(const char* key) const {
    const json& v = need(key);
    if (!v.is_number()) fail(origin, where(key), "expected a number, got " + shown(v));
    double d = v.get<double>();
    if (!std::isfinite(d)) fail(origin, where(key), "expected a finite number");
    return d;
  }
  const std::string& string(const char* key) const {
    const json& v = need(key);
    if (!v.is_string()) fail(origin, where(key), "expected a string, got " + shown(v));
    return v.get_ref<const std::string&>();
  }
  const json& args() const {
    auto it = e.find("args");
    if (it == e.end() || it->is_null()) return empty();
    if (!it->is_object()) fail(origin, where("args"), "expected an object, got " + shown(*it));
    return *it;
  }
  static const json& empty() {
    static const json e = json::object();
    return e;
  }
};

double optional_number(const json& args, const char* key) {
  auto it = args.find(key);
  if (it == args.end() || !it->is_number()) return 0;
  double d = it->get<double>();
  return std::isfinite(d) ? d : 0;
}

}  // namespace

namespace {

// Turns events, one at a time, into the trace: shared by the DOM and the streaming reader.
class TraceBuilder {
 public:
  explicit TraceBuilder(const std::string& origin) { t_.origin = origin; }

  void other_data(const json& o) {
    if (!o.is_object()) return;
    t_.other_data = o;
    auto text = [&](const char* k) { auto v = o.find(k); return v != o.end() && v->is_string() ? v->get<std::string>() : std::string(); };
    auto num = [&](const char* k) -> std::optional<double> {
      auto v = o.find(k);
      if (v != o.end() && v->is_number() && std::isfinite(v->get<double>())) return v->get<double>();
      return std::nullopt;
    };
    t_.source = text("source");
    t_.plan = text("plan");
    t_.step_time_s = num("step_time_s");
    t_.mfu = num("mfu");
    t_.ettr = num("ettr");
  }

  void event(const json& e, std::size_t i) {
    const std::string& origin = t_.origin;
    EventReader r{e, i, origin};
    if (!e.is_object()) fail(origin, r.where(), "expected an event object, got " + shown(e));
    const std::string& ph = r.string("ph");
    if (ph == "X" || ph == "i" || ph == "I") {
      Slice s;
      s.instant = ph != "X";
      s.name = t_.intern_name(r.string("name"));
      long long pid = r.integer("pid");
      long long tid = r.integer("tid");
      s.start_s = r.number("ts") * 1e-6;
      double dur = s.instant ? 0 : r.number("dur");
      if (dur < 0) fail(origin, r.where("dur"), "negative duration " + shown(e["dur"]));
      s.duration_s = dur * 1e-6;
      auto cat = e.find("cat");
      s.category = t_.intern_category(cat != e.end() && cat->is_string() ? cat->get<std::string>() : std::string());
      const json& args = r.args();
      s.flops = optional_number(args, "flops");
      s.bytes = optional_number(args, "bytes");
      s.args = t_.intern_args(args);
      track(pid, tid).slices.push_back(s);
    } else if (ph == "M") {
      const std::string& what = r.string("name");
      if (what == "process_name") {
        Process& p = process(r.integer("pid"));
        p.name = EventReader{r.args(), i, origin}.string("name");
        const json& args = r.args();
        if (auto rank = args.find("rank"); rank != args.end() && rank->is_number_integer()) p.rank = rank->get<long long>();
      } else if (what == "process_sort_index") {
        process(r.integer("pid")).sort_index = EventReader{r.args(), i, origin}.integer("sort_index");
      } else if (what == "thread_name") {
        track(r.integer("pid"), r.integer("tid")).name = EventReader{r.args(), i, origin}.string("name");
      }
    }
    // Other phases (counters, flows, async, B/E pairs) are not drawn.
  }

  Trace finish() {
    const char* none = "no events to show (complete \"X\" or instant \"i\")";
    if (t_.processes.empty()) fail(t_.origin, "traceEvents", none);
    t_.finalize();
    if (t_.slice_count == 0) fail(t_.origin, "traceEvents", none);
    return std::move(t_);
  }

 private:
  Process& process(long long pid) {
    auto [it, fresh] = process_index_.try_emplace(pid, t_.processes.size());
    if (fresh) {
      t_.processes.push_back(Process{pid, "rank " + std::to_string(pid), pid, pid, {}});
      track_index_.emplace_back();
    }
    return t_.processes[it->second];
  }
  Track& track(long long pid, long long tid) {
    Process& p = process(pid);
    auto& index = track_index_[process_index_[pid]];
    auto [it, fresh] = index.try_emplace(tid, p.tracks.size());
    if (fresh) p.tracks.push_back(Track{tid, "thread " + std::to_string(tid), {}, {}});
    return p.tracks[it->second];
  }

  Trace t_;
  std::unordered_map<long long, std::size_t> process_index_;
  std::vector<std::unordered_map<long long, std::size_t>> track_index_;
};

// Streams the text: each event is built as a small JSON value, turned into slices and dropped,
// so a million-event trace never exists as a whole document in memory (see docs/performance.md).
class StreamingReader : public nlohmann::json_sax<json> {
 public:
  StreamingReader(TraceBuilder& b, const std::string& origin) : builder_(b), origin_(origin) {}

  bool null() override { return value(json()); }
  bool boolean(bool v) override { return value(json(v)); }
  bool number_integer(number_integer_t v) override { return value(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return value(json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return value(json(v)); }
  bool string(string_t& v) override { return value(json(std::move(v))); }
  bool binary(binary_t&) override { return value(json()); }
  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    if (skip_ > 0) return true;
    if (!stack_.empty()) keys_.back() = k;
    else if (depth_ == 1 && root_is_object_) top_key_ = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw TraceError(origin_ + ": not valid JSON (" + e.what() + ")");
  }

  bool saw_events() const { return saw_events_; }

 private:
  bool at_events() const { return stack_.empty() && in_events_ && depth_ == events_depth_; }
  bool at_other_data() const { return stack_.empty() && depth_ == 1 && root_is_object_ && top_key_ == "otherData"; }
  bool at_trace_events_key() const { return stack_.empty() && depth_ == 1 && root_is_object_ && top_key_ == "traceEvents"; }

  bool value(json v) {
    if (depth_ == 0) fail(origin_, "top level", "expected an object with \"traceEvents\" or an array of events, got " + shown(v));
    if (skip_ > 0) return true;
    if (at_trace_events_key()) fail(origin_, "traceEvents", "expected an array, got " + shown(v));
    if (!stack_.empty()) add(std::move(v));
    else if (at_events()) builder_.event(v, index_++);  // a scalar where an event should be: refused
    else if (at_other_data()) builder_.other_data(v);
    return true;
  }
  bool open(json container) {
    if (depth_ == 0) {
      root_is_object_ = container.is_object();
      if (!root_is_object_) {  // a bare array of events, which the format also allows
        in_events_ = saw_events_ = true;
        events_depth_ = 1;
      }
      ++depth_;
      return true;
    }
    if (skip_ > 0) {
      ++skip_;
      ++depth_;
      return true;
    }
    if (at_trace_events_key()) {
      if (!container.is_array()) fail(origin_, "traceEvents", "expected an array, got an object");
      in_events_ = saw_events_ = true;
      events_depth_ = 2;
      ++depth_;
      return true;
    }
    if (stack_.empty()) {
      if (at_events() || at_other_data()) {
        building_other_ = !at_events();
        root_ = std::move(container);
        stack_.push_back(&root_);
        keys_.emplace_back();
      } else {
        ++skip_;  // a value nobody reads
      }
    } else {
      stack_.push_back(add(std::move(container)));
      keys_.emplace_back();
    }
    ++depth_;
    return true;
  }
  bool close() {
    --depth_;
    if (skip_ > 0) {
      --skip_;
      return true;
    }
    if (stack_.empty()) {
      if (in_events_ && depth_ == events_depth_ - 1) in_events_ = false;  // the end of the events
      return true;
    }
    stack_.pop_back();
    keys_.pop_back();
    if (stack_.empty()) {
      if (building_other_) builder_.other_data(root_);
      else builder_.event(root_, index_++);
      root_ = json();
    }
    return true;
  }
  // Adds to the container being built; containers below are complete before it changes again,
  // so the pointer stays valid while it is open.
  json* add(json v) {
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json& slot = top[keys_.back()];
    slot = std::move(v);
    return &slot;
  }

  TraceBuilder& builder_;
  const std::string& origin_;
  int depth_ = 0, events_depth_ = -1, skip_ = 0;
  bool root_is_object_ = false, in_events_ = false, saw_events_ = false, building_other_ = false;
  std::string top_key_;
  std::vector<json*> stack_;
  std::vector<std::string> keys_;
  json root_;
  std::size_t index_ = 0;
};

}  // namespace

Trace parse_trace(const json& j, const std::string& origin) {
  TraceBuilder b(origin);
  const json* events = nullptr;
  if (j.is_array()) {
    events = &j;  // the format also allows a bare array of events
  } else if (j.is_object()) {
    auto it = j.find("traceEvents");
    if (it == j.end()) fail(origin, "top level", "no \"traceEvents\" (is this a Chrome trace? a report is opened with --report)");
    if (!it->is_array()) fail(origin, "traceEvents", "expected an array, got " + shown(*it));
    events = &*it;
    if (auto o = j.find("otherData"); o != j.end()) b.other_data(*o);
  } else {
    fail(origin, "top level", "expected an object with \"traceEvents\" or an array of events, got " + shown(j));
  }
  for (std::size_t i = 0; i < events->size(); ++i) b.event((*events)[i], i);
  return b.finish();
}

Trace parse_trace(const std::string& text, const std::string& origin) {
  TraceBuilder b(origin);
  StreamingReader reader(b, origin);
  json::sax_parse(text, &reader);
  if (!reader.saw_events()) fail(origin, "top level", "no \"traceEvents\" (is this a Chrome trace? a report is opened with --report)");
  return b.finish();
}

namespace {
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TraceError(path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw TraceError(path + ": read failed");
  return s.str();
}
}  // namespace

Trace load_trace(const std::string& path) { return parse_trace(read_file(path), path); }

json load_report(const std::string& path) {
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::parse_error& e) {
    throw TraceError(path + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw TraceError(path + ": expected a report object, got " + shown(j));
  return j;
}

}  // namespace ditwin::gui
