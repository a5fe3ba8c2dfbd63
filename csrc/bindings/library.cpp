// Defines torch.ops.fusedseq.* (from the schema list, declared once) and the
// Python module fusedseq._C, which holds build facts only: the ops reach
// Python through the dispatcher.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/cuda_ops.h"
#include "bindings/schemas.h"
#include "bindings/stable.h"
#include "cpu/kernels_cpu.h"

#ifdef FUSEDSEQ_WITH_CUDA
#include "cuda/kernels_cuda.h"
#endif

STABLE_TORCH_LIBRARY(fusedseq, m) {
#define FUSEDSEQ_DEF(name, schema) m.def(schema);
  FUSEDSEQ_OP_SCHEMAS(FUSEDSEQ_DEF)
#undef FUSEDSEQ_DEF
}

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedseq compiled extension: registers torch.ops.fusedseq.* on import";
  // Choose the CPU kernels' instruction set now, so that a bad
  // FUSEDSEQ_CPU_ISA fails the import with a message, not some later op.
  fusedseq::cpu::chosen();
  m.def("build_info", []() {
    py::dict d;
    d["version"] = FUSEDSEQ_VERSION;
    d["torch_version"] = FUSEDSEQ_TORCH_VERSION;         // the headers it was compiled with
    d["torch_target_version"] = FUSEDSEQ_TORCH_TARGET;  // the oldest torch it runs with
#ifdef FUSEDSEQ_WITH_CUDA
    d["cuda_compiled"] = true;
    d["cuda_archs"] = FUSEDSEQ_CUDA_ARCHS;
    d["cuda_runtime_version"] = fusedseq::cuda::runtime_version();
#else
    d["cuda_compiled"] = false;
    d["cuda_archs"] = "";
    d["cuda_runtime_version"] = py::none();
#endif
    // Ops with a CUDA kernel in this build: the list they are registered from.
#ifdef FUSEDSEQ_WITH_CUDA
    d["cuda_ops"] = fusedseq::cuda_op_names();
#else
    d["cuda_ops"] = py::list();
#endif
    d["cpu_isa"] = std::string(fusedseq::cpu::chosen().isa);
    d["cpu_isas_compiled"] = fusedseq::cpu::compiled_isas();
    d["cpu_isas_runnable"] = fusedseq::cpu::runnable_isas();
    return d;
  });
#ifdef FUSEDSEQ_WITH_CUDA
  // Launches a one-thread kernel on `device`: proves the build holds code the
  // GPU can run. Returns "" or the CUDA error text.
  m.def("cuda_probe", [](int device) { return std::string(fusedseq::cuda::probe_device(device)); });
#endif
}
