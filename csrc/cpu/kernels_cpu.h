// Entry points of the torch-free CPU kernels, and how one of several
// instruction-set builds of them is chosen at run time.
//
// Every csrc/cpu/*.cpp is compiled once per instruction set the build
// targets (CMakeLists.txt: FUSEDSEQ_CPU_ISAS), each time with
// FUSEDSEQ_CPU_ISA set to that set's name and its compiler flags:
//
//   baseline   plain x86-64 (SSE2): runs on any x86-64 CPU
//   avx2       -mavx2 -mfma: the register-tiled kernels of microkernels.h
//
// Each compile lands in its own namespace, fusedseq::cpu::<isa>, so the
// copies never meet at link time, and fills one KernelTable per compute type.
// The bindings call through kernels<T>(), which picks a table once, from what
// the CPU reports (or FUSEDSEQ_CPU_ISA=baseline|avx2 in the environment).
//
// Adding a kernel: write it in csrc/cpu/ inside
// `namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA`, instantiate it for float and
// double, and add one X(...) line below; the tables pick it up.
#pragma once
#include <string>
#include <vector>

#include "common/params.h"

// X(kernel name, parameter struct template); every kernel is
// `template <typename T> void name(const Params<T>&, const ParallelFor&)`.
#define FUSEDSEQ_CPU_KERNELS(X)           \
  X(rnn_cell_forward, RnnCellFwdParams)   \
  X(rnn_cell_backward, RnnCellBwdParams)  \
  X(rnn_seq_forward, RnnSeqFwdParams)     \
  X(rnn_seq_backward, RnnSeqBwdParams)    \
  X(lstm_cell_forward, LstmCellFwdParams) \
  X(lstm_cell_backward, LstmCellBwdParams)\
  X(lstm_seq_forward, LstmSeqFwdParams)   \
  X(lstm_seq_backward, LstmSeqBwdParams)  \
  X(gru_cell_forward, GruCellFwdParams)   \
  X(gru_cell_backward, GruCellBwdParams)  \
  X(gru_seq_forward, GruSeqFwdParams)     \
  X(gru_seq_backward, GruSeqBwdParams)    \
  X(attention_forward, AttnFwdParams)     \
  X(attention_backward, AttnBwdParams)    \
  X(attention_dropout_mask, AttnDropoutMaskParams)

namespace fusedseq::cpu {

// One instruction set's kernels for one compute type T (float or double).
template <typename T>
struct KernelTable {
#define FUSEDSEQ_TABLE_ENTRY(name, Params) void (*name)(const Params<T>&, const ParallelFor&);
  FUSEDSEQ_CPU_KERNELS(FUSEDSEQ_TABLE_ENTRY)
#undef FUSEDSEQ_TABLE_ENTRY
};

struct IsaKernels {
  const char* isa;  // "baseline", "avx2"
  KernelTable<float> f32;
  KernelTable<double> f64;
};

// The instruction sets compiled into this build, in order of preference
// (best last), and which of them this CPU can run.
std::vector<std::string> compiled_isas();
std::vector<std::string> runnable_isas();

// The kernels chosen for this process: FUSEDSEQ_CPU_ISA if set (an unknown
// or unrunnable name throws std::invalid_argument naming the choices), else
// the best compiled set this CPU supports. Chosen once, on first use.
const IsaKernels& chosen();

template <typename T>
inline const KernelTable<T>& kernels() {
  if constexpr (std::is_same_v<T, double>)
    return chosen().f64;
  else
    return chosen().f32;
}

}  // namespace fusedseq::cpu

// Inside a kernel translation unit: declarations of this ISA's kernels.
#ifdef FUSEDSEQ_CPU_ISA
namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {
#define FUSEDSEQ_DECLARE_KERNEL(name, Params) \
  template <typename T>                       \
  void name(const Params<T>& p, const ParallelFor& pf);
FUSEDSEQ_CPU_KERNELS(FUSEDSEQ_DECLARE_KERNEL)
#undef FUSEDSEQ_DECLARE_KERNEL

// This ISA's tables (defined in isa_table.cpp).
const IsaKernels& table();
}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
#endif
