// Picks, once per process, which instruction-set build of the CPU kernels
// runs (see cpu/kernels_cpu.h). Compiled once, for the baseline ISA: it must
// run on any x86-64 CPU to decide.
#include <cstdlib>
#include <stdexcept>

#include "cpu/kernels_cpu.h"

// CMake defines FUSEDSEQ_HAVE_ISA_<NAME> for each ISA it compiled.
namespace fusedseq::cpu {
#ifdef FUSEDSEQ_HAVE_ISA_BASELINE  // always, but for a sanitizer build of one variant (FUSEDSEQ_CPU_ISA_ONLY)
namespace baseline { const IsaKernels& table(); }
#endif
#ifdef FUSEDSEQ_HAVE_ISA_AVX2
namespace avx2 { const IsaKernels& table(); }
#endif

namespace {

struct Variant {
  const char* name;
  const IsaKernels& (*table)();
  bool (*runs_here)();
};

[[maybe_unused]] bool always() { return true; }

#ifdef FUSEDSEQ_HAVE_ISA_AVX2
bool has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}
#endif

// In order of preference, best last.
const Variant kVariants[] = {
#ifdef FUSEDSEQ_HAVE_ISA_BASELINE
    {"baseline", &baseline::table, &always},
#endif
#ifdef FUSEDSEQ_HAVE_ISA_AVX2
    {"avx2", &avx2::table, &has_avx2_fma},
#endif
};

std::string names(bool runnable_only) {
  std::string s;
  for (const Variant& v : kVariants)
    if (!runnable_only || v.runs_here()) s += (s.empty() ? "" : ", ") + std::string(v.name);
  return s;
}

const IsaKernels& choose() {
  const char* want = std::getenv("FUSEDSEQ_CPU_ISA");
  if (want && *want) {
    for (const Variant& v : kVariants) {
      if (std::string(want) != v.name) continue;
      if (!v.runs_here())
        throw std::invalid_argument(std::string("fusedseq: FUSEDSEQ_CPU_ISA=") + want +
                                    " names a build of the CPU kernels that this CPU cannot run; it can run: " +
                                    names(true));
      return v.table();
    }
    throw std::invalid_argument(std::string("fusedseq: FUSEDSEQ_CPU_ISA=") + want +
                                " is not a build of the CPU kernels in this fusedseq; compiled: " + names(false));
  }
  const Variant* best = &kVariants[0];
  for (const Variant& v : kVariants)
    if (v.runs_here()) best = &v;
  return best->table();
}

}  // namespace

std::vector<std::string> compiled_isas() {
  std::vector<std::string> out;
  for (const Variant& v : kVariants) out.emplace_back(v.name);
  return out;
}

std::vector<std::string> runnable_isas() {
  std::vector<std::string> out;
  for (const Variant& v : kVariants)
    if (v.runs_here()) out.emplace_back(v.name);
  return out;
}

const IsaKernels& chosen() {
  static const IsaKernels& k = choose();
  return k;
}

}  // namespace fusedseq::cpu
