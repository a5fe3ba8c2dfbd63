// Philox4x32-10: the counter-based random number generator of Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3" (SC 2011), as used by
// cuRAND and by PyTorch's CUDA generator.
//
// A counter-based generator is a pure function of (key, counter): any
// element of the stream can be drawn directly, in any order, on any thread,
// which is what lets attention dropout regenerate its mask in the backward
// instead of storing it. Torch-free and branch-free, so the same header
// serves the CPU kernels and, compiled by nvcc, a CUDA kernel.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FUSEDSEQ_HD __host__ __device__ __forceinline__
#else
#define FUSEDSEQ_HD inline
#endif

namespace fusedseq {

struct Philox4 {
  uint32_t w[4];
};

// Ten rounds of the Philox4x32 bijection of counter c under key (k0, k1).
FUSEDSEQ_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return {{c0, c1, c2, c3}};
}

// The four words of the dropout stream for keys [4g, 4g + 4) of `row`
// (AttnDropout in params.h documents the layout).
FUSEDSEQ_HD Philox4 dropout_words(uint64_t seed, uint64_t offset, uint64_t row, uint64_t group) {
  const uint64_t c = offset + group;
  return philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), static_cast<uint32_t>(row),
                       static_cast<uint32_t>(row >> 32), static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

}  // namespace fusedseq
