// Fused attention, forward, head dim 32 (and every smaller D that pads up to it), bf16 and fp16.
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include "cuda/attention/attention_kernels.cuh"

namespace fusedseq::cuda::attn {
FUSEDSEQ_ATTENTION_FWD_INSTANCE(32)
}  // namespace fusedseq::cuda::attn
