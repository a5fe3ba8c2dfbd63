// Torch-free entry points of the CUDA fused attention (FlashAttention-2
// structure on mma.sync tensor cores). The binding (csrc/bindings/
// attention_cuda.cpp) checks the tensors and fills the params structs of
// csrc/common/params.h; these launchers check what the kernels themselves
// need (head dim, alignment) and launch on `stream`.
//
// Element type: the params carry 16-bit elements as uint16_t (the binding
// never sees the device's __nv_bfloat16 / __half); `dtype` says which.
// fp32 and fp64 inputs run the *_simt launchers: CUDA cores, exact in the
// input dtype, one thread per query (key) row: correct, not fast.
#pragma once
#include <cstdint>

#include "common/params.h"

namespace fusedseq::cuda {

enum class AttnDtype : int32_t { BF16 = 0, FP16 = 1 };

// The head dims with a kernel instantiation; a smaller D runs in the next
// one up, its columns past D zero-filled on load and never stored.
inline constexpr int kAttnHeadDims[] = {32, 64, 96, 128, 256};
inline constexpr int kAttnMaxHeadDim = 256;

// The instantiation a head dim D (1 <= D <= 256) runs in.
inline int attention_padded_head_dim(int64_t D) {
  for (int d : kAttnHeadDims)
    if (D <= d) return d;
  return 0;
}

// Forward: out (B, Hq, Nq, D) and lse (B, Hq, Nq) float, natural log.
// lse_lo is written as zeros (the kernels round the LSE once, in fp32).
// Requirements (the launcher throws std::invalid_argument otherwise):
//   q, k, v: unit last stride; every other stride a multiple of 8 elements and
//   16-byte aligned bases (cp.async copies whole 16-byte chunks);
//   no mask, no dropout, no varlen (the binding refuses those).
void attention_forward(const AttnFwdParams<uint16_t>& p, AttnDtype dtype, void* stream);

// Backward from out and the LSE: three launches, no atomics (bitwise
// reproducible): delta = rowsum(dO ∘ O) into p.delta; dK, dV by key tiles
// (each block loops over the query tiles of every query head of its
// key/value head); dQ by query tiles (a second pass over the key tiles).
// Same layout requirements as the forward, for grad_out and out too.
void attention_backward(const AttnBwdParams<uint16_t>& p, AttnDtype dtype, void* stream);

// CUDA cores, T = float or double (accumulation in double): any D <= 256,
// any strides with a unit last one. Writes lse and lse_lo as the CPU op does.
template <class T>
void attention_forward_simt(const AttnFwdParams<T>& p, void* stream);
template <class T>
void attention_backward_simt(const AttnBwdParams<T>& p, void* stream);

}  // namespace fusedseq::cuda
