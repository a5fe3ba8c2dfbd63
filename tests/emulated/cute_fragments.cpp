// An independent check of the fragment maps (csrc/emu/fragments.h): CuTe's MMA
// and copy traits are another team's reading of the same PTX ISA, written as
// host-computable layouts. Kernel and emulator share fragments.h, so they
// would agree with each other even if both were wrong; CuTe would not.
//
// Built by tests/test_fragments_cute.py with the CuTe headers of the
// nvidia-cutlass wheel and the CUDA toolkit's include folders (host code
// only: no GPU, no nvcc). Prints one line per map and element counts; exits 1
// on any difference.
#include <cute/atom/copy_traits_sm75.hpp>
#include <cute/atom/mma_traits_sm80.hpp>

#include <cstdio>

#include "emu/fragments.h"

namespace fr = fusedseq::fragments;

namespace {

int failures = 0;

void verdict(const char* what, int compared, int wrong, const char* first) {
  if (wrong)
    std::printf("FAIL %s: %d of %d elements differ (first: %s)\n", what, wrong, compared, first);
  else
    std::printf("PASS %s: %d elements\n", what, compared);
  failures += wrong != 0;
}

// mma.m16n8k16: CuTe maps (thread, value) to a column-major index in (M, K)
// for A, (N, K) for B and (M, N) for C.
template <class Op>
void check_mma(const char* name) {
  using Traits = cute::MMA_Traits<Op>;
  const auto A = typename Traits::ALayout{};
  const auto B = typename Traits::BLayout{};
  const auto C = typename Traits::CLayout{};
  char first[160] = "";
  int compared = 0, wrong = 0;
  auto compare = [&](const char* frag, int lane, int e, fr::RowCol cute, fr::RowCol ours) {
    ++compared;
    if (cute == ours) return;
    if (!wrong++)
      std::snprintf(first, sizeof first, "%s lane %d element %d: CuTe (%d, %d), ours (%d, %d)", frag, lane, e,
                    cute.row, cute.col, ours.row, ours.col);
  };
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 8; ++e) {
      const int i = int(A(lane, e));
      compare("A", lane, e, {i % 16, i / 16}, fr::mma_a(lane, e));
    }
    for (int e = 0; e < 4; ++e) {
      const int i = int(B(lane, e));
      compare("B", lane, e, {i / 8, i % 8}, fr::mma_b(lane, e));  // ours: (k, n)
      const int j = int(C(lane, e));
      compare("C", lane, e, {j % 16, j / 16}, fr::mma_c(lane, e));
    }
  }
  verdict(name, compared, wrong, first);
}

// ldmatrix: CuTe numbers the bits of `count` stacked 8x8 b16 matrices row by
// row (128 bits a row). SrcLayout: (thread, bit) -> the bits of the row that
// thread addresses; DstLayout: (thread, value bit) -> where the bit lands.
template <class Op>
void check_ldmatrix(const char* name, int count, bool trans) {
  using Traits = cute::Copy_Traits<Op>;
  const auto src = typename Traits::SrcLayout{};
  const auto dst = typename Traits::DstLayout{};
  char first[160] = "";
  int compared = 0, wrong = 0;
  for (int m = 0; m < count; ++m)
    for (int row = 0; row < 8; ++row) {
      const int lane = fr::ldmatrix_address_lane(m, row), got = int(src(lane, 0)) / 128;
      ++compared;
      if (got != 8 * m + row && !wrong++)
        std::snprintf(first, sizeof first, "address lane %d: CuTe row %d, ours row %d of matrix %d", lane, got, row,
                      m);
    }
  for (int lane = 0; lane < 32; ++lane)
    for (int reg = 0; reg < count; ++reg)
      for (int h = 0; h < 2; ++h) {
        const int bit = int(dst(lane, 16 * h + 32 * reg));
        const int cute_row = bit / 128, cute_col = (bit % 128) / 16;
        const fr::RowCol ours = fr::ldmatrix(lane, h, trans);
        ++compared;
        if ((cute_row != 8 * reg + ours.row || cute_col != ours.col) && !wrong++)
          std::snprintf(first, sizeof first, "lane %d register %d half %d: CuTe matrix %d (%d, %d), ours matrix %d (%d, %d)",
                        lane, reg, h, cute_row / 8, cute_row % 8, cute_col, reg, ours.row, ours.col);
      }
  verdict(name, compared, wrong, first);
}

// The check can fail: the swapped accumulator map of the mutation tests
// (c1 and c2 exchanged) must differ from CuTe's C layout.
void check_control() {
  const auto C = typename cute::MMA_Traits<cute::SM80_16x8x16_F32BF16BF16F32_TN>::CLayout{};
  int differ = 0;
  for (int lane = 0; lane < 32; ++lane)
    for (int e = 0; e < 4; ++e) {
      const int j = int(C(lane, e));
      const fr::RowCol swapped{lane / 4 + 8 * (e % 2), 2 * (lane % 4) + e / 2};
      differ += !(fr::RowCol{j % 16, j / 16} == swapped);
    }
  if (differ == 64)
    std::printf("PASS control: a swapped C map differs from CuTe in %d of 128 elements\n", differ);
  else
    std::printf("FAIL control: a swapped C map differs from CuTe in %d of 128 elements, expected 64\n", differ);
  failures += differ != 64;
}

}  // namespace

int main() {
  check_control();
  check_mma<cute::SM80_16x8x16_F32BF16BF16F32_TN>("mma.m16n8k16 bf16 A/B/C");
  check_mma<cute::SM80_16x8x16_F32F16F16F32_TN>("mma.m16n8k16 fp16 A/B/C");
  check_ldmatrix<cute::SM75_U32x1_LDSM_N>("ldmatrix.x1", 1, false);
  check_ldmatrix<cute::SM75_U32x2_LDSM_N>("ldmatrix.x2", 2, false);
  check_ldmatrix<cute::SM75_U32x4_LDSM_N>("ldmatrix.x4", 4, false);
  check_ldmatrix<cute::SM75_U16x2_LDSM_T>("ldmatrix.x1.trans", 1, true);
  check_ldmatrix<cute::SM75_U16x4_LDSM_T>("ldmatrix.x2.trans", 2, true);
  check_ldmatrix<cute::SM75_U16x8_LDSM_T>("ldmatrix.x4.trans", 4, true);
  return failures ? 1 : 0;
}
