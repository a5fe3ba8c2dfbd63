// Grain sizes for ParallelFor: work too small to share stays on the calling
// thread, as ATen's kernels keep theirs. A parallel region costs a fork and a
// join (a few µs on a quiet machine), and on a machine whose cores are busy
// the join waits for a descheduled thread: whole scheduler slices, ms. So a
// loop is split only when its work is well above that cost.
#pragma once
#include <algorithm>
#include <cstdint>

namespace fusedseq::cpu {

// Multiply-adds below which a loop stays on one thread. Measured on the 2-core
// EPYC (benchmarks/NOTES.md, "Grain sizes"): two threads break even at 1-2M
// multiply-adds in all and gain 1.3x from about 2.5M.
constexpr int64_t kMinParallelWork = int64_t(1) << 21;

// The grain (fewest items per thread, at::parallel_for's meaning) of a loop
// whose items cost `work_per_item` multiply-adds (or element copies) each:
// the loop splits only once its total work exceeds kMinParallelWork.
inline int64_t grain_for(int64_t work_per_item) {
  const int64_t w = std::max<int64_t>(1, work_per_item);
  return std::max<int64_t>(1, (kMinParallelWork + w - 1) / w);
}

}  // namespace fusedseq::cpu
