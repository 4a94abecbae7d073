// How many CPU threads the kernels (and Eigen's GEMMs) use. With one MPI rank per core, set 1.
#pragma once

namespace ditwin::kernels {

void set_num_threads(int threads);
int num_threads();

// OpenMP's workers spin after every parallel region by default, and on a small machine a
// spinning worker holds the core OpenBLAS's GEMM thread needs: tiny-cpu's training step at 2
// threads took 43 ms instead of 18 (docs/performance.md). libgomp reads OMP_WAIT_POLICY once, as
// it loads, so a program that wants the passive policy must be started with it: when the
// variable is unset, this sets it to "passive" and re-executes the program (argv unchanged); it
// returns (doing nothing) when the variable is already set, by the user or by the first start.
void restart_with_passive_openmp(char** argv);

}  // namespace ditwin::kernels
