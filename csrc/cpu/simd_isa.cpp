// Reports the ISA chosen at compile time (the kernels' flags, not the
// bindings').
#include "cpu/kernels_cpu.h"
#include "cpu/microkernels.h"

const char* fusedseq::cpu::simd_isa() { return FUSEDSEQ_AVX2 ? "avx2+fma" : "scalar"; }
