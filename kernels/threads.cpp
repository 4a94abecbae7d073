// Thread count for OpenMP loops and Eigen's GEMMs (which use OpenMP underneath).
#include "kernels/threads.hpp"

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

}  // namespace ditwin::kernels
