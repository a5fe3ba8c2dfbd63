// Registers the CUDA kernels listed in cuda_ops.h, compiled into one of two
// libraries:
//   - the CUDA extension (fusedseq._C, FUSEDSEQ_WITH_CUDA): each op's binding
//     for CUDA tensors under torch.ops.fusedseq.<op>;
//   - the emulated library (fusedseq._emulated, FUSEDSEQ_EMULATED_LIBRARY):
//     torch.ops.fusedseq_emulated.* with exactly fusedseq's schemas (from
//     schemas.h), the same bindings taking CPU tensors, and the kernels
//     compiled by g++ against the host SIMT emulator (csrc/emu/).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/cuda_ops.h"
#include "bindings/schemas.h"
#include "bindings/stable.h"

namespace fusedseq {

#define FUSEDSEQ_IMPL(op, fn) m.impl(#op, TORCH_BOX(&cuda_bindings::fn));

#if FUSEDSEQ_EMULATED_LIBRARY

STABLE_TORCH_LIBRARY(fusedseq_emulated, m) {
#define FUSEDSEQ_DEF(name, schema) m.def(schema);
  FUSEDSEQ_OP_SCHEMAS(FUSEDSEQ_DEF)
#undef FUSEDSEQ_DEF
}

STABLE_TORCH_LIBRARY_IMPL(fusedseq_emulated, CPU, m) {
  (void)m;
  FUSEDSEQ_CUDA_OPS(FUSEDSEQ_IMPL)
}

#else

STABLE_TORCH_LIBRARY_IMPL(fusedseq, CUDA, m) {
  (void)m;
  FUSEDSEQ_CUDA_OPS(FUSEDSEQ_IMPL)
}

#endif

#undef FUSEDSEQ_IMPL

}  // namespace fusedseq

#if FUSEDSEQ_EMULATED_LIBRARY
// fusedseq._emulated: importing it registers the ops above. It carries no
// functions of its own beyond the list of ops it emulates.
PYBIND11_MODULE(_emulated, m) {
  m.doc() = "fusedseq's CUDA kernels run by the host SIMT emulator: registers torch.ops.fusedseq_emulated.* and "
            "torch.ops.fusedseq_selftest_emulated.* on import";
  m.def("cuda_ops", &fusedseq::cuda_op_names, "ops with an emulated CUDA kernel (cuda_ops.h)");
}
#endif
