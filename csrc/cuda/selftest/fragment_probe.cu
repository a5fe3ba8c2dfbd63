// Self-test: fragment probes, one warp each. Run on the emulator they show
// the emulator's maps (checked against CuTe by tests/test_fragments_cute.py);
// run on a GPU (tools/gpu_check.sh) they show the hardware's, and the two runs
// must agree element for element.
#include "cuda/compat.cuh"
#include "cuda/selftest/selftest.h"
#include "emu/fragments.h"

namespace fusedseq::cuda::selftest {
namespace {

// Matrix m, row r, column c holds the code m * 64 + r * 8 + c.
template <int N, bool Trans>
__global__ void ldmatrix_probe_kernel(int32_t* out) {
  __shared__ __align__(16) uint16_t tiles[4 * 64];
  const int lane = threadIdx.x;
  for (int i = lane; i < 4 * 64; i += 32) tiles[i] = uint16_t(i);
  __syncthreads();
  uint32_t r[N];
  const int m = (lane / 8) % N, row = lane % 8;  // lanes past 8N repeat valid addresses (ignored by x1/x2)
  const uint16_t* addr = tiles + m * 64 + row * 8;
  if constexpr (N == 1) {
    if constexpr (Trans) ldmatrix_x1_trans(r, addr); else ldmatrix_x1(r, addr);
  } else if constexpr (N == 2) {
    if constexpr (Trans) ldmatrix_x2_trans(r, addr); else ldmatrix_x2(r, addr);
  } else {
    if constexpr (Trans) ldmatrix_x4_trans(r, addr); else ldmatrix_x4(r, addr);
  }
  for (int reg = 0; reg < 4; ++reg)
    for (int h = 0; h < 2; ++h)
      out[lane * 8 + reg * 2 + h] = reg < N ? int32_t((r[reg] >> (16 * h)) & 0xffffu) : -1;
}

template <class T>
__global__ void mma_probe_kernel(MmaProbeParams p) {
  const int lane = threadIdx.x;
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int reg = 0; reg < 4; ++reg) {
    const auto lo = fragments::mma_a(lane, 2 * reg), hi = fragments::mma_a(lane, 2 * reg + 1);
    a[reg] = pack2(A[lo.row * 16 + lo.col], A[hi.row * 16 + hi.col]);
  }
  for (int reg = 0; reg < 2; ++reg) {
    const auto lo = fragments::mma_b(lane, 2 * reg), hi = fragments::mma_b(lane, 2 * reg + 1);
    b[reg] = pack2(B[lo.row * 8 + lo.col], B[hi.row * 8 + hi.col]);
  }
  for (int e = 0; e < 4; ++e) {
    const auto mn = fragments::mma_c(lane, e);
    c[e] = p.c[mn.row * 8 + mn.col];
  }
  mma_m16n8k16<T>(d, a, b, c);
  for (int e = 0; e < 4; ++e) {
    const auto mn = fragments::mma_c(lane, e);
    p.d[mn.row * 8 + mn.col] = d[e];
  }
}

}  // namespace

void ldmatrix_probe(const LdmatrixProbeParams& p) {
  const LaunchConfig cfg(dim3(1), dim3(32), 0, p.stream);
  switch (p.count * 2 + int(p.trans)) {
    case 2: launch(ldmatrix_probe_kernel<1, false>, cfg, p.out); break;
    case 3: launch(ldmatrix_probe_kernel<1, true>, cfg, p.out); break;
    case 4: launch(ldmatrix_probe_kernel<2, false>, cfg, p.out); break;
    case 5: launch(ldmatrix_probe_kernel<2, true>, cfg, p.out); break;
    case 8: launch(ldmatrix_probe_kernel<4, false>, cfg, p.out); break;
    case 9: launch(ldmatrix_probe_kernel<4, true>, cfg, p.out); break;
    default: throw std::invalid_argument("fusedseq selftest ldmatrix_probe: count must be 1, 2 or 4");
  }
}

void mma_probe(const MmaProbeParams& p) {
  const LaunchConfig cfg(dim3(1), dim3(32), 0, p.stream);
  if (p.dtype == Half16::BF16)
    launch(mma_probe_kernel<bf16>, cfg, p);
  else
    launch(mma_probe_kernel<fp16>, cfg, p);
}

}  // namespace fusedseq::cuda::selftest
