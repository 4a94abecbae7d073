// Thread count for OpenMP loops and Eigen's GEMMs (which use OpenMP underneath).
#include "kernels/threads.hpp"

#include <unistd.h>

#include <cstdlib>

#include <Eigen/Core>
#ifdef DITWIN_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace ditwin::kernels {

void set_num_threads(int threads) {
  if (threads < 1) threads = 1;
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
#ifdef DITWIN_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
}

int num_threads() { return Eigen::nbThreads(); }

void restart_with_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::execv("/proc/self/exe", argv);  // returns only when it failed: run on, spinning
}

}  // namespace ditwin::kernels
