// Fused attention on CUDA cores for fp32 and fp64 inputs: one thread per
// query row (forward, dQ) or key row (dK, dV), everything accumulated in
// double (fp32 inputs too: with logits of 1e4, an fp32 dot product's
// rounding alone moves P by 1e-3 relative), the row's accumulators in local
// memory. The tensor-core
// kernels (attention_kernels.cuh) are the fast path; this one is the correct
// path for inputs tensor cores would round (its error is the dtype's own).
#include "cuda/compat.cuh"  // first: the emulated build precompiles it

#include <cmath>

#include "cuda/attention/attention_kernels.cuh"

namespace fusedseq::cuda::attn {
namespace {

constexpr int kRowsPerBlock = 128;

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }

using A = double;  // accumulation type

template <class T>
__device__ __forceinline__ A dot(const T* a, const T* b, int D) {
  A s = 0;
  for (int d = 0; d < D; ++d) s += A(a[d]) * A(b[d]);
  return s;
}

template <class T>
__global__ void __launch_bounds__(kRowsPerBlock) simt_fwd_kernel(AttnFwdParams<T> p) {
  const int64_t i = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  if (i >= p.s.Nq) return;
  const int D = int(p.s.D);
  const int64_t b = blockIdx.y / p.s.Hq, h = blockIdx.y % p.s.Hq, hk = h / (p.s.Hq / p.s.Hkv);
  const T* q = p.q + b * p.q_st.b + h * p.q_st.h + i * p.q_st.n;
  const T* k = p.k + b * p.k_st.b + hk * p.k_st.h;
  const T* v = p.v + b * p.v_st.b + hk * p.v_st.h;
  const KeyRange r(p.s);
  const MaskRef<AttnAcc<T>> mask(p.mask, b, h);
  const A scale = p.s.scale;
  A acc[kAttnMaxHeadDim];
  for (int d = 0; d < D; ++d) acc[d] = 0;
  A m = -INFINITY, l = 0;
  for (int64_t j = r.lo(i), hi = r.hi(i); j < hi; ++j) {
    // A masked-out key is never read (a NaN in it reaches nothing); a logit
    // of -inf adds nothing (and exp(-inf - -inf) would be NaN).
    const A term = mask.term(i, j);
    if (term == -INFINITY) continue;
    const A x = dot(q, k + j * p.k_st.n, D) * scale + term;
    if (x == -INFINITY) continue;
    if (x > m) {  // rescale what was summed under the old max (0 when nothing was)
      const A corr = exp_(m - x);
      l *= corr;
      for (int d = 0; d < D; ++d) acc[d] *= corr;
      m = x;
    }
    const A pj = exp_(x - m);  // NaN logits propagate through pj
    l += pj;
    const T* vj = v + j * p.v_st.n;
    for (int d = 0; d < D; ++d) acc[d] += pj * vj[d];
  }
  const A inv = l > 0 ? 1 / l : 0;
  T* out = p.out + b * p.o_st.b + h * p.o_st.h + i * p.o_st.n;
  for (int d = 0; d < D; ++d) out[d] = T(acc[d] * inv);
  // The LSE as lse + lse_lo (csrc/common/params.h): what rounding it to T lost
  // goes to lse_lo, so the backward recomputes P from the double value.
  const A lse = l > 0 ? m + log_(l) : A(-INFINITY);
  const int64_t at = b * p.lse_st.b + h * p.lse_st.h + i * p.lse_st.n;
  p.lse[at] = T(lse);
  p.lse_lo[at] = l > 0 ? T(lse - A(T(lse))) : T(0);
}

// dQ row by row; also writes delta = rowsum(dO ∘ O), which the dK/dV kernel reads.
template <class T>
__global__ void __launch_bounds__(kRowsPerBlock) simt_dq_kernel(AttnBwdParams<T> p) {
  const int64_t i = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  if (i >= p.s.Nq) return;
  const int D = int(p.s.D);
  const int64_t b = blockIdx.y / p.s.Hq, h = blockIdx.y % p.s.Hq, hk = h / (p.s.Hq / p.s.Hkv);
  const T* q = p.q + b * p.q_st.b + h * p.q_st.h + i * p.q_st.n;
  const T* g = p.grad_out + b * p.do_st.b + h * p.do_st.h + i * p.do_st.n;
  const T* o = p.out + b * p.o_st.b + h * p.o_st.h + i * p.o_st.n;
  const T* k = p.k + b * p.k_st.b + hk * p.k_st.h;
  const T* v = p.v + b * p.v_st.b + hk * p.v_st.h;
  const KeyRange r(p.s);
  const MaskRef<AttnAcc<T>> mask(p.mask, b, h);
  const A scale = p.s.scale;
  const int64_t at = b * p.lse_st.b + h * p.lse_st.h + i * p.lse_st.n;
  const A lse = A(p.lse[at]) + A(p.lse_lo[at]);
  const A delta = dot(g, o, D);
  p.delta[(b * p.s.Hq + h) * p.s.Nq + i] = T(delta);
  A acc[kAttnMaxHeadDim];
  for (int d = 0; d < D; ++d) acc[d] = 0;
  if (lse != -INFINITY)
    for (int64_t j = r.lo(i), hi = r.hi(i); j < hi; ++j) {
      const A term = mask.term(i, j);
      if (term == -INFINITY) continue;
      const A pj = exp_(dot(q, k + j * p.k_st.n, D) * scale + term - lse);
      const A ds = pj * (dot(g, v + j * p.v_st.n, D) - delta);
      const T* kj = k + j * p.k_st.n;
      for (int d = 0; d < D; ++d) acc[d] += ds * kj[d];
    }
  T* dq = p.grad_q + b * p.dq_st.b + h * p.dq_st.h + i * p.dq_st.n;
  for (int d = 0; d < D; ++d) dq[d] = T(acc[d] * scale);
}

// dK, dV key by key, summing over the query heads of the key's group.
template <class T>
__global__ void __launch_bounds__(kRowsPerBlock) simt_dkdv_kernel(AttnBwdParams<T> p) {
  const int64_t j = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  if (j >= p.s.Nk) return;
  const int D = int(p.s.D);
  const int64_t b = blockIdx.y / p.s.Hkv, hk = blockIdx.y % p.s.Hkv, group = p.s.Hq / p.s.Hkv;
  const T* kj = p.k + b * p.k_st.b + hk * p.k_st.h + j * p.k_st.n;
  const T* vj = p.v + b * p.v_st.b + hk * p.v_st.h + j * p.v_st.n;
  const KeyRange r(p.s);
  const A scale = p.s.scale;
  int64_t qlo, qhi;
  r.queries_of(j, j + 1, p.s.Nq, qlo, qhi);
  A dk[kAttnMaxHeadDim], dv[kAttnMaxHeadDim];
  for (int d = 0; d < D; ++d) dk[d] = dv[d] = 0;
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
    for (int64_t i = qlo; i < qhi; ++i) {
      if (!r.sees(i, j)) continue;
      const int64_t at = b * p.lse_st.b + h * p.lse_st.h + i * p.lse_st.n;
      const A lse = A(p.lse[at]) + A(p.lse_lo[at]);
      if (lse == -INFINITY) continue;
      const T* q = p.q + b * p.q_st.b + h * p.q_st.h + i * p.q_st.n;
      const T* g = p.grad_out + b * p.do_st.b + h * p.do_st.h + i * p.do_st.n;
      const A term = MaskRef<AttnAcc<T>>(p.mask, b, h).term(i, j);
      if (term == -INFINITY) continue;
      const A pij = exp_(dot(q, kj, D) * scale + term - lse);
      const A ds = pij * (dot(g, vj, D) - p.delta[(b * p.s.Hq + h) * p.s.Nq + i]);
      for (int d = 0; d < D; ++d) dv[d] += pij * g[d], dk[d] += ds * q[d];
    }
  T* gk = p.grad_k + b * p.dk_st.b + hk * p.dk_st.h + j * p.dk_st.n;
  T* gv = p.grad_v + b * p.dv_st.b + hk * p.dv_st.h + j * p.dv_st.n;
  for (int d = 0; d < D; ++d) gk[d] = T(dk[d] * scale), gv[d] = T(dv[d]);
}

void require_simt(const AttnShape& s) {
  if (s.D < 1 || s.D > kAttnMaxHeadDim || s.Nq < 1 || s.Nk < 1 || s.Hkv < 1 || s.Hq % s.Hkv != 0)
    throw std::invalid_argument("fusedseq attention (CUDA, fp32/fp64): bad shape (D must be in [1, 256])");
}

}  // namespace
}  // namespace fusedseq::cuda::attn

namespace fusedseq::cuda {

template <class T>
void attention_forward_simt(const AttnFwdParams<T>& p, void* stream) {
  using namespace attn;
  require_simt(p.s);
  const dim3 grid(grid_dim((p.s.Nq + kRowsPerBlock - 1) / kRowsPerBlock, "query blocks"), grid_y(p.s.B * p.s.Hq));
  launch(simt_fwd_kernel<T>, {grid, dim3(kRowsPerBlock), 0, stream}, p);
}

template <class T>
void attention_backward_simt(const AttnBwdParams<T>& p, void* stream) {
  using namespace attn;
  require_simt(p.s);
  const dim3 gq(grid_dim((p.s.Nq + kRowsPerBlock - 1) / kRowsPerBlock, "query blocks"), grid_y(p.s.B * p.s.Hq));
  launch(simt_dq_kernel<T>, {gq, dim3(kRowsPerBlock), 0, stream}, p);  // also writes delta
  const dim3 gk(grid_dim((p.s.Nk + kRowsPerBlock - 1) / kRowsPerBlock, "key blocks"), grid_y(p.s.B * p.s.Hkv));
  launch(simt_dkdv_kernel<T>, {gk, dim3(kRowsPerBlock), 0, stream}, p);
}

template void attention_forward_simt<float>(const AttnFwdParams<float>&, void*);
template void attention_forward_simt<double>(const AttnFwdParams<double>&, void*);
template void attention_backward_simt<float>(const AttnBwdParams<float>&, void*);
template void attention_backward_simt<double>(const AttnBwdParams<double>&, void*);

}  // namespace fusedseq::cuda
