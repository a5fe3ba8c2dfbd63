// This instruction set's kernel tables (compiled once per ISA, like every
// file in csrc/cpu/; see kernels_cpu.h).
#include "cpu/kernels_cpu.h"

#define FUSEDSEQ_STR2(x) #x
#define FUSEDSEQ_STR(x) FUSEDSEQ_STR2(x)

namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {

const IsaKernels& table() {
#define FUSEDSEQ_F32(name, Params) &name<float>,
#define FUSEDSEQ_F64(name, Params) &name<double>,
  static const IsaKernels t{FUSEDSEQ_STR(FUSEDSEQ_CPU_ISA),
                            {FUSEDSEQ_CPU_KERNELS(FUSEDSEQ_F32)},
                            {FUSEDSEQ_CPU_KERNELS(FUSEDSEQ_F64)}};
#undef FUSEDSEQ_F32
#undef FUSEDSEQ_F64
  return t;
}

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
