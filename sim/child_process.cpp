// fork + pipe, with the child's exit status telling success (0) from a reported error (1).
#include "sim/child_process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace ditwin::sim {

namespace {
void write_all(int fd, const std::string& bytes) {
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w <= 0) _exit(3);
    p += w;
    left -= static_cast<std::size_t>(w);
  }
}
}  // namespace

ChildProcess::ChildProcess(const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("cannot create a pipe for the simulation process");
  std::fflush(nullptr);
  pid_ = fork();
  if (pid_ < 0) {
    close(fds[0]);
    close(fds[1]);
    throw std::runtime_error("cannot fork the simulation process");
  }
  if (pid_ == 0) {
    close(fds[0]);
    int code = 0;
    std::string out;
    try {
      out = body();
    } catch (const std::exception& e) {
      out = e.what();
      code = 1;
    }
    write_all(fds[1], out);
    close(fds[1]);
    _exit(code);
  }
  close(fds[1]);
  fd_ = fds[0];
}

ChildProcess::~ChildProcess() {
  if (fd_ >= 0) close(fd_);
  if (pid_ > 0) waitpid(pid_, nullptr, 0);
}

std::string ChildProcess::wait() {
  std::string out;
  char buf[1 << 16];
  ssize_t got;
  while ((got = read(fd_, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(got));
  close(fd_);
  fd_ = -1;
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return out;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 1) throw std::runtime_error(out);
  throw std::runtime_error("the simulation process died (" +
                           (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                                : "exit status " + std::to_string(WEXITSTATUS(status))) + ")");
}

}  // namespace ditwin::sim
