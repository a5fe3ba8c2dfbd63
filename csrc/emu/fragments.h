// Which matrix element each lane holds in each register: the fragment layouts
// of the PTX ISA ("Matrix Fragments for mma.m16n8k16" and "ldmatrix"), written
// once, here, as constexpr functions that host and device code can call (nvcc
// with --expt-relaxed-constexpr). The emulator's warp collectives gather and
// scatter through them, and kernels that address fragments by hand use them; tests/test_fragments_cute.py checks every one of them,
// element by element, against CuTe's MMA and copy traits (an independent
// reading of the same ISA), and tools/gpu_check.sh against the hardware.
//
// Notation: lane in [0, 32); group = lane / 4 ("groupID"), quad = lane % 4
// ("threadID_in_group"). A 16-bit element index e counts the halves of a
// lane's 32-bit registers in order: register e / 2, low half when e is even.
#pragma once

namespace fusedseq::fragments {

struct RowCol {
  int row, col;
  constexpr bool operator==(const RowCol&) const = default;
};

// mma.m16n8k16, A (16 x 16, row-major ".row"), bf16/fp16: 4 registers, 8 elements.
//   e = 0,1: (group,     2 quad + e)       e = 4,5: (group,     2 quad + 8 + e%2)
//   e = 2,3: (group + 8, 2 quad + e%2)     e = 6,7: (group + 8, 2 quad + 8 + e%2)
constexpr RowCol mma_a(int lane, int e) {
  return {lane / 4 + 8 * ((e / 2) % 2), 2 * (lane % 4) + e % 2 + 8 * (e / 4)};
}

// mma.m16n8k16, B (16 x 8 as K x N, ".col"): 2 registers, 4 elements; (k, n).
constexpr RowCol mma_b(int lane, int e) { return {2 * (lane % 4) + e % 2 + 8 * (e / 2), lane / 4}; }

// mma.m16n8k16, C and D (16 x 8, fp32): 4 registers; (m, n).
constexpr RowCol mma_c(int lane, int e) { return {lane / 4 + 8 * (e / 2), 2 * (lane % 4) + e % 2}; }

// ldmatrix .m8n8 .b16: the lane whose address supplies row `row` of matrix
// `m` (x1: lanes 0-7, x2: 0-15, x4: 0-31).
constexpr int ldmatrix_address_lane(int m, int row) { return 8 * m + row; }

// ldmatrix .m8n8 .b16: register m of every lane holds two elements of matrix
// m; element h (0 = low half) of lane `lane` is (row, col) of that 8 x 8
// matrix as stored in shared memory. With .trans the matrix is transposed on
// the way: the lane receives a column pair instead of a row pair.
constexpr RowCol ldmatrix(int lane, int h, bool trans) {
  return trans ? RowCol{2 * (lane % 4) + h, lane / 4} : RowCol{lane / 4, 2 * (lane % 4) + h};
}

}  // namespace fusedseq::fragments
