// The device primitives every fusedseq kernel uses, one source for two
// compilers:
//   nvcc (__CUDA_ARCH__): inline PTX (ldmatrix, mma.sync, cp.async, ...);
//   g++ (-x c++, the emulated build): calls into the host SIMT emulator
//   (csrc/emu/), which also supplies threadIdx, __syncthreads, shuffles,
//   atomics and the other CUDA built-ins.
// Kernels include this header and nothing CUDA-specific, launch through
// launch()/launch_cooperative() (g++ cannot parse <<<>>>), and declare dynamic
// shared memory with FUSEDSEQ_EXTERN_SHARED(T, name) at namespace scope.
// See csrc/emu/README.md for what the emulator checks and what it cannot.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define FUSEDSEQ_EMULATED 0
// Device code has no source locations to report; the emulator does.
#define FUSEDSEQ_WHERE
#define FUSEDSEQ_WHERE_ONLY
#define FUSEDSEQ_EXTERN_SHARED(T, name) extern __shared__ __align__(16) T name[]
#else
#include "emu/cuda_host.h"
#define FUSEDSEQ_EMULATED 1
// Trailing parameter that captures the caller's line for the emulator's reports.
#define FUSEDSEQ_WHERE , ::std::source_location where_ = ::std::source_location::current()
#define FUSEDSEQ_WHERE_ONLY ::std::source_location where_ = ::std::source_location::current()
#endif

namespace fusedseq::cuda {

// ------------------------------------------------------------------ types --
#if FUSEDSEQ_EMULATED
// Host stand-ins for __nv_bfloat16 / __half: storage and conversions only.
struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};
inline float to_float(bf16 x) { return emu::bf16_bits_to_float(x.bits); }
inline float to_float(fp16 x) { return emu::half_bits_to_float(x.bits); }
inline float to_float(float x) { return x; }
template <class T>
T from_float(float f) {
  if constexpr (std::is_same_v<T, bf16>) return bf16{emu::float_to_bf16_bits(f)};
  else if constexpr (std::is_same_v<T, fp16>) return fp16{emu::float_to_half_bits(f)};
  else return f;
}
template <class T>
uint16_t bits_of(T x) {
  return x.bits;
}
#else
using bf16 = __nv_bfloat16;
using fp16 = __half;
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(fp16 x) { return __half2float(x); }
__device__ __forceinline__ float to_float(float x) { return x; }
template <class T>
__device__ __forceinline__ T from_float(float f) {
  if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16_rn(f);
  else if constexpr (std::is_same_v<T, fp16>) return __float2half_rn(f);
  else return f;
}
__device__ __forceinline__ uint16_t bits_of(bf16 x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ uint16_t bits_of(fp16 x) { return __half_as_ushort(x); }
#endif

// Two 16-bit elements in one 32-bit register, `lo` in the low half (the
// element with the smaller column index, as the fragment layouts number them).
template <class T>
__device__ __forceinline__ uint32_t pack2(T lo, T hi) {
  return uint32_t(bits_of(lo)) | (uint32_t(bits_of(hi)) << 16);
}

// --------------------------------------------------------------- ldmatrix --
// ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16: lanes 8m..8m+7 give the
// 16-byte-aligned shared-memory addresses of the 8 rows of matrix m; register
// m of each lane receives 2 elements of matrix m (csrc/emu/fragments.h).
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#endif

__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* row FUSEDSEQ_WHERE) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(smem_addr(row)));
#elif FUSEDSEQ_EMULATED
  emu::ldmatrix<1, false>(r, row, where_);
#endif
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row FUSEDSEQ_WHERE) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
#elif FUSEDSEQ_EMULATED
  emu::ldmatrix<2, false>(r, row, where_);
#endif
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row FUSEDSEQ_WHERE) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
#elif FUSEDSEQ_EMULATED
  emu::ldmatrix<4, false>(r, row, where_);
#endif
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row FUSEDSEQ_WHERE) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(smem_addr(row)));
#elif FUSEDSEQ_EMULATED
  emu::ldmatrix<1, true>(r, row, where_);
#endif
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row FUSEDSEQ_WHERE) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
#elif FUSEDSEQ_EMULATED
  emu::ldmatrix<2, true>(r, row, where_);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row FUSEDSEQ_WHERE) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
#elif FUSEDSEQ_EMULATED
  emu::ldmatrix<4, true>(r, row, where_);
#endif
}

// -------------------------------------------------------------------- mma --
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32:
// D (16x8) = A (16x16) B (16x8) + C, fp32 accumulate; T is bf16 or fp16.
template <class T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                             const float (&c)[4] FUSEDSEQ_WHERE) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, fp16>, "mma_m16n8k16<bf16 | fp16>");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, bf16>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#elif FUSEDSEQ_EMULATED
  emu::mma_m16n8k16<std::is_same_v<T, bf16> ? emu::MmaType::BF16 : emu::MmaType::FP16>(d, a, b, c, where_);
#endif
}

// --------------------------------------------------------------- cp.async --
// cp.async.cg.shared.global, 16 bytes: copies src_bytes (0..16) from global
// memory and zero-fills the rest (tails read nothing past the end). Both
// addresses must be 16-byte aligned. Visible to this thread after
// cp_async_wait, to the block after a following __syncthreads.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes = 16 FUSEDSEQ_WHERE) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
#elif FUSEDSEQ_EMULATED
  emu::Block::current().cp_async(smem, gmem, static_cast<unsigned>(src_bytes), where_);
#endif
}
// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif FUSEDSEQ_EMULATED
  emu::Block::current().cp_async_commit();
#endif
}
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#elif FUSEDSEQ_EMULATED
  emu::Block::current().cp_async_wait(N);
#endif
}

// ----------------------------------------------------------- grid barrier --
// A barrier across all blocks of a cooperative launch (every block resident).
// `counter` is a zeroed unsigned int in global memory, allocated per launch by
// the caller (the binding: a workspace tensor), never by the kernel. Every
// thread of every block calls sync() the same number of times.
struct GridBarrier {
  unsigned* counter;
  unsigned target = 0;

  __device__ __forceinline__ void sync(FUSEDSEQ_WHERE_ONLY) {
    target += gridDim.x * gridDim.y * gridDim.z;
#if defined(__CUDA_ARCH__)
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
      __threadfence();  // this block's writes before its arrival
      atomicAdd(counter, 1u);
      unsigned seen;
      do {
        asm volatile("ld.acquire.gpu.u32 %0, [%1];\n" : "=r"(seen) : "l"(counter) : "memory");
      } while (seen < target);
    }
    __syncthreads();
#elif FUSEDSEQ_EMULATED
    // The counter is kept exactly as on the GPU (so a bad workspace pointer
    // shows); the waiting is the emulator's.
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) atomicAdd(counter, 1u);
    emu::Block::current().grid_sync(where_);
#endif
  }
};

// ---------------------------------------------------------------- launches --
// Captures the launching line (__builtin_FILE/LINE of the caller) so that
// every error names the launch.
struct LaunchConfig {
  dim3 grid, block;
  size_t smem_bytes;
  void* stream;  // cudaStream_t (the binding's current stream); unused when emulated
  const char* file;
  unsigned line;
  LaunchConfig(dim3 g, dim3 b, size_t smem = 0, void* s = nullptr, const char* f = __builtin_FILE(),
               unsigned l = __builtin_LINE())
      : grid(g), block(b), smem_bytes(smem), stream(s), file(f), line(l) {}
  std::string site() const { return std::string(file) + ":" + std::to_string(line); }
};

#if !FUSEDSEQ_EMULATED && defined(__CUDACC__)
inline void check(cudaError_t err, const LaunchConfig& cfg, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fusedseq: ") + what + " of the kernel launched at " + cfg.site() +
                             " failed: " + cudaGetErrorString(err));
}
template <class... P>
void allow_smem(void (*kernel)(P...), const LaunchConfig& cfg) {
  if (cfg.smem_bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(cfg.smem_bytes)), cfg,
          "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}
#endif

// kernel<<<grid, block, smem, stream>>>(args...), checked.
template <class... P, class... A>
void launch(void (*kernel)(P...), const LaunchConfig& cfg, A&&... args) {
#if FUSEDSEQ_EMULATED
  emu::launch(kernel, emu::LaunchShape{cfg.grid, cfg.block, cfg.smem_bytes, cfg.file, cfg.line}, false,
              std::forward<A>(args)...);
#elif defined(__CUDACC__)
  allow_smem(kernel, cfg);
  kernel<<<cfg.grid, cfg.block, cfg.smem_bytes, static_cast<cudaStream_t>(cfg.stream)>>>(std::forward<A>(args)...);
  check(cudaGetLastError(), cfg, "launch");
#endif
}

// A cooperative launch: every block resident at once (needed by GridBarrier).
template <class... P, class... A>
void launch_cooperative(void (*kernel)(P...), const LaunchConfig& cfg, A&&... args) {
#if FUSEDSEQ_EMULATED
  emu::launch(kernel, emu::LaunchShape{cfg.grid, cfg.block, cfg.smem_bytes, cfg.file, cfg.line}, true,
              std::forward<A>(args)...);
#elif defined(__CUDACC__)
  allow_smem(kernel, cfg);
  std::tuple<P...> params(std::forward<A>(args)...);
  std::apply(
      [&](auto&... p) {
        void* ptrs[] = {static_cast<void*>(&p)..., nullptr};
        check(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), cfg.grid, cfg.block, ptrs,
                                          cfg.smem_bytes, static_cast<cudaStream_t>(cfg.stream)),
              cfg, "cooperative launch");
      },
      params);
#endif
}

// How many blocks of `kernel` can be resident at once on the current device
// (the most a cooperative launch may ask for).
template <class... P>
int max_cooperative_blocks(void (*kernel)(P...), int threads, size_t smem_bytes) {
#if FUSEDSEQ_EMULATED
  (void)kernel, (void)threads, (void)smem_bytes;
  return 1024;
#elif defined(__CUDACC__)
  int device = 0, sms = 0, per_sm = 0;
  const LaunchConfig cfg(dim3(1), dim3(threads), smem_bytes);
  check(cudaGetDevice(&device), cfg, "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cfg, "cudaDeviceGetAttribute");
  allow_smem(kernel, cfg);
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem_bytes), cfg,
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  return sms * per_sm;
#endif
}

}  // namespace fusedseq::cuda
