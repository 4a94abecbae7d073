// How many CPU threads the kernels (and Eigen's GEMMs) use. With one MPI rank per core, set 1.
#pragma once

namespace ditwin::kernels {

void set_num_threads(int threads);
int num_threads();

}  // namespace ditwin::kernels
