// Runs a function in a forked child process and brings back the bytes it returns. Each SimGrid
// simulation runs this way: SimGrid keeps global state across engines in one process (a second
// engine starts with the first one's clock), so every simulation gets a pristine one.
#pragma once
#include <sys/types.h>

#include <functional>
#include <string>

namespace ditwin::sim {

class ChildProcess {
 public:
  // Starts the child now; `body` runs there. An exception in `body` becomes one in wait().
  explicit ChildProcess(const std::function<std::string()>& body);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();
  // Everything the child returned; throws std::runtime_error with the child's error message, or
  // saying how it died.
  std::string wait();

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

}  // namespace ditwin::sim
