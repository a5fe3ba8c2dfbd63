// The torch-free entry points of csrc/cuda/attention/attention.h: checks what
// the kernels need, then picks the head-dim instantiation.
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include <string>

#include "cuda/attention/attention_kernels.cuh"

namespace fusedseq::cuda {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("fusedseq attention (CUDA): " + what);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }
bool rows16(const Strides3& s) { return s.b % 8 == 0 && s.h % 8 == 0 && s.n % 8 == 0; }

void check_tensor(const char* name, const void* ptr, const Strides3& st) {
  require(ptr != nullptr && aligned16(ptr) && rows16(st),
          std::string(name) + " must start 16-byte aligned with strides that are multiples of 8 elements");
}

template <class P>
int check_common(const P& p) {
  require(p.s.B >= 1 && p.s.Hq >= 1 && p.s.Hkv >= 1 && p.s.Nq >= 1 && p.s.Nk >= 1 && p.s.D >= 1, "empty shape");
  require(p.s.Hq % p.s.Hkv == 0, "Hq must be a multiple of Hkv");
  require(p.dropout.p == 0 && p.varlen.cu_seqlens_q == nullptr, "dropout and varlen have no CUDA kernel");
  const int padded = attention_padded_head_dim(p.s.D);
  require(padded != 0, "head dim " + std::to_string(p.s.D) + " > " + std::to_string(kAttnMaxHeadDim));
  check_tensor("q", p.q, p.q_st);
  check_tensor("k", p.k, p.k_st);
  check_tensor("v", p.v, p.v_st);
  return padded;
}

}  // namespace

void attention_forward(const AttnFwdParams<uint16_t>& p, AttnDtype dtype, void* stream) {
  switch (check_common(p)) {
    case 32: return attn::launch_forward<32>(p, dtype, stream);
    case 64: return attn::launch_forward<64>(p, dtype, stream);
    case 96: return attn::launch_forward<96>(p, dtype, stream);
    case 128: return attn::launch_forward<128>(p, dtype, stream);
    default: return attn::launch_forward<256>(p, dtype, stream);
  }
}

void attention_backward(const AttnBwdParams<uint16_t>& p, AttnDtype dtype, void* stream) {
  const int padded = check_common(p);
  check_tensor("out", p.out, p.o_st);
  check_tensor("grad_out", p.grad_out, p.do_st);
  require(p.delta != nullptr, "the delta workspace is missing");
  switch (padded) {
    case 32: return attn::launch_backward<32>(p, dtype, stream);
    case 64: return attn::launch_backward<64>(p, dtype, stream);
    case 96: return attn::launch_backward<96>(p, dtype, stream);
    case 128: return attn::launch_backward<128>(p, dtype, stream);
    default: return attn::launch_backward<256>(p, dtype, stream);
  }
}

}  // namespace fusedseq::cuda
