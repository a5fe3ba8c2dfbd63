// Warp collectives: shuffles, votes, __syncwarp, ldmatrix and mma.sync. Each
// lane arrives with its arguments; the last lane to arrive computes every
// lane's result (block.h), through the fragment maps of fragments.h.
#pragma once
#include <cstring>
#include <source_location>
#include <type_traits>

#include "emu/block.h"
#include "emu/fragments.h"
#include "emu/half.h"

namespace fusedseq::emu {

// ------------------------------------------------------------- shuffles --
enum class ShflMode { Idx, Up, Down, Xor };

template <class T>
struct ShflSlot {
  T value;
  int arg;  // source lane, delta or lane mask
  int width;
  T result;
};

// The lane whose value `lane` receives (its own when the source falls past
// its segment of `width` lanes, as the PTX ISA specifies).
inline int shfl_source(ShflMode m, int lane, int arg, int width) {
  const int base = lane & ~(width - 1);
  switch (m) {
    case ShflMode::Idx: return base + ((arg % width) + width) % width;
    case ShflMode::Up: return lane - arg >= base ? lane - arg : lane;
    case ShflMode::Down: return lane + arg < base + width ? lane + arg : lane;
    case ShflMode::Xor: return (lane ^ arg) < base + width ? (lane ^ arg) : lane;
  }
  return lane;
}

template <class T, ShflMode M>
void shfl_complete(void* const* slots, unsigned mask, Block& b, const std::source_location& at) {
  static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
  auto slot = [&](int l) -> ShflSlot<T>& { return *static_cast<ShflSlot<T>*>(slots[l]); };
  int src[32];
  T values[32];
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const int w = slot(l).width;
    if (w < 1 || w > 32 || (w & (w - 1)))
      b.fail(std::string(names[int(M)]) + " at " + where(at) + ": width " + std::to_string(w) +
             " is not a power of two in [1, 32]");
    src[l] = shfl_source(M, l, slot(l).arg, w);
    if (src[l] < 0 || src[l] > 31 || !(mask >> src[l] & 1))
      b.fail(std::string(names[int(M)]) + " at " + where(at) + ": lane " + std::to_string(l) + " reads lane " +
             std::to_string(src[l]) + ", which is not in the mask " + hex(mask) + " (its value is undefined)");
    values[l] = slot(l).value;
  }
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1) slot(l).result = values[src[l]];
}

template <ShflMode M, class T>
T shfl(unsigned mask, T value, int arg, int width, const char* name, const std::source_location& at) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move 4- or 8-byte values");
  ShflSlot<T> s{value, arg, width, value};
  Block::current().warp_call({name, mask, &shfl_complete<T, M>, &s, false, at});
  return s.result;
}

// ---------------------------------------------------------------- votes --
enum class Vote { Ballot, Any, All };

struct VoteSlot {
  int pred;
  unsigned result;
};

template <Vote V>
void vote_complete(void* const* slots, unsigned mask, Block&, const std::source_location&) {
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask >> l & 1) && static_cast<VoteSlot*>(slots[l])->pred) ballot |= 1u << l;
  const unsigned r = V == Vote::Ballot ? ballot : V == Vote::Any ? unsigned(ballot != 0) : unsigned(ballot == mask);
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1) static_cast<VoteSlot*>(slots[l])->result = r;
}

template <Vote V>
unsigned vote(unsigned mask, int pred, const char* name, const std::source_location& at) {
  VoteSlot s{pred, 0};
  Block::current().warp_call({name, mask, &vote_complete<V>, &s, false, at});
  return s.result;
}

inline void syncwarp_complete(void* const*, unsigned, Block&, const std::source_location&) {}

inline void syncwarp(unsigned mask, const std::source_location& at) {
  Block::current().warp_call({"__syncwarp", mask, &syncwarp_complete, nullptr, /*any_site=*/true, at});
}

// ------------------------------------------------------------- ldmatrix --
struct LdMatrixSlot {
  const void* row;  // this lane's row address in shared memory
  uint32_t* out;    // x1/x2/x4 registers
};

template <int N, bool Trans>
constexpr const char* ldmatrix_name() {
  return N == 1 ? (Trans ? "ldmatrix.x1.trans" : "ldmatrix.x1")
         : N == 2 ? (Trans ? "ldmatrix.x2.trans" : "ldmatrix.x2")
                  : (Trans ? "ldmatrix.x4.trans" : "ldmatrix.x4");
}

template <int N, bool Trans>
void ldmatrix_complete(void* const* slots, unsigned mask, Block& b, const std::source_location& at) {
  const char* name = ldmatrix_name<N, Trans>();
  if (mask != ~0u) b.fail(std::string(name) + " at " + where(at) + ": needs all 32 lanes, mask " + hex(mask));
  uint16_t m[N][8][8];
  for (int k = 0; k < N; ++k)
    for (int r = 0; r < 8; ++r) {
      const int lane = fragments::ldmatrix_address_lane(k, r);
      const void* p = static_cast<LdMatrixSlot*>(slots[lane])->row;
      if (reinterpret_cast<uintptr_t>(p) % 16)
        b.fail(std::string(name) + " at " + where(at) + ": lane " + std::to_string(lane) +
               " gives a row address that is not 16-byte aligned");
      std::memcpy(m[k][r], p, 16);
    }
  for (int l = 0; l < 32; ++l) {
    uint32_t* out = static_cast<LdMatrixSlot*>(slots[l])->out;
    for (int k = 0; k < N; ++k) {
      const auto lo = fragments::ldmatrix(l, 0, Trans), hi = fragments::ldmatrix(l, 1, Trans);
      out[k] = uint32_t(m[k][lo.row][lo.col]) | uint32_t(m[k][hi.row][hi.col]) << 16;
    }
  }
}

template <int N, bool Trans>
void ldmatrix(uint32_t* out, const void* row, const std::source_location& at) {
  LdMatrixSlot s{row, out};
  Block::current().warp_call({ldmatrix_name<N, Trans>(), ~0u, &ldmatrix_complete<N, Trans>, &s, false, at});
}

// ------------------------------------------------------------------ mma --
enum class MmaType { BF16, FP16 };

struct MmaSlot {
  const uint32_t* a;  // 4 registers, 8 elements of A (16 x 16)
  const uint32_t* b;  // 2 registers, 4 elements of B (16 x 8)
  const float* c;     // 4 accumulators of C (16 x 8)
  float* d;           // 4 results (may alias c)
};

inline float element(uint32_t reg, int half, MmaType t) {
  const auto bits = uint16_t(half ? reg >> 16 : reg & 0xffffu);
  return t == MmaType::BF16 ? bf16_bits_to_float(bits) : half_bits_to_float(bits);
}

// D = A B + C with exact products and a double-precision sum rounded once:
// the tensor core's own rounding differs, so tests compare with tolerances.
template <MmaType T>
void mma_complete(void* const* slots, unsigned mask, Block& b, const std::source_location& at) {
  if (mask != ~0u) b.fail("mma.sync.m16n8k16 at " + where(at) + ": needs all 32 lanes, mask " + hex(mask));
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const auto& s = *static_cast<MmaSlot*>(slots[l]);
    for (int e = 0; e < 8; ++e) {
      const auto rc = fragments::mma_a(l, e);
      A[rc.row][rc.col] = element(s.a[e / 2], e % 2, T);
    }
    for (int e = 0; e < 4; ++e) {
      const auto kn = fragments::mma_b(l, e);
      B[kn.row][kn.col] = element(s.b[e / 2], e % 2, T);
      const auto mn = fragments::mma_c(l, e);
      C[mn.row][mn.col] = s.c[e];
    }
  }
  // k outermost, n innermost: independent accumulators, no long chain of
  // dependent adds: half the cost of the k-innermost loop at -O2.
  double D[16][8];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) D[m][n] = C[m][n];
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 16; ++k) {
      const double a = A[m][k];
      for (int n = 0; n < 8; ++n) D[m][n] += a * double(B[k][n]);
    }
  for (int l = 0; l < 32; ++l) {
    auto& s = *static_cast<MmaSlot*>(slots[l]);
    for (int e = 0; e < 4; ++e) {
      const auto mn = fragments::mma_c(l, e);
      s.d[e] = float(D[mn.row][mn.col]);
    }
  }
}

template <MmaType T>
void mma_m16n8k16(float* d, const uint32_t* a, const uint32_t* b, const float* c, const std::source_location& at) {
  MmaSlot s{a, b, c, d};
  Block::current().warp_call({"mma.sync.m16n8k16", ~0u, &mma_complete<T>, &s, false, at});
}

}  // namespace fusedseq::emu
