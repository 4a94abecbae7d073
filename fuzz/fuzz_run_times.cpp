// libFuzzer target: the report/trace reader of `ditwin compare` (read_run_times takes a path).
// Each input goes into an anonymous in-memory file (memfd) read back through /proc/self/fd, so
// nothing touches the disk and production code is unchanged; then the comparison itself runs on
// it (against itself) and, for long-run reports, the long-run comparison. InputError is a correct
// refusal; anything else is a finding.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "model/compare.hpp"  // defines: read_run_times, compare_runs, compare_longruns
#include "model/errors.hpp"   // defines: InputError

namespace {

// One memfd for the whole run, rewritten per input: a file per input would cost a syscall storm.
int input_fd() {
  static int fd = [] {
    int f = memfd_create("ditwin-fuzz-run", 0);
    if (f < 0) std::abort();  // the harness cannot run at all: not an input's fault
    return f;
  }();
  return fd;
}

void write_input(const std::uint8_t* data, std::size_t size) {
  int fd = input_fd();
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) std::abort();
  for (std::size_t done = 0; done < size;) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  write_input(data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(input_fd());
  try {
    ditwin::RunTimes t = ditwin::read_run_times(path);
    ditwin::format_comparison(ditwin::compare_runs(t, t));
  } catch (const ditwin::InputError&) {
    // refused with a message: correct
  }
  // `ditwin compare` sends long-run reports to their own comparison.
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {  // the harness's own parse (parse_error, out_of_range 406)
    return 0;
  }
  try {
    if (ditwin::is_longrun_report(document))
      ditwin::format_longrun_comparison(ditwin::compare_longruns(document, document, "predicted.json", "measured.json"));
  } catch (const ditwin::InputError&) {
  }
  return 0;
}
