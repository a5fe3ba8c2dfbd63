// The CUDA dialect for a host compiler: what a .cu file needs so that g++
// (`-x c++ -std=c++20`) compiles it against the emulator. Included only by
// csrc/cuda/compat.cuh outside nvcc; never together with cuda_runtime.h.
//
// Two concessions in kernel source: launches go through compat.cuh's launch()
// (g++ cannot parse <<<>>>), and dynamic shared memory is declared with
// FUSEDSEQ_EXTERN_SHARED(T, name) instead of `extern __shared__ T name[]`.
#pragma once
#if defined(__CUDACC__)
#error "csrc/emu/cuda_host.h is for host compilers; nvcc compiles the real thing"
#endif

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>

#include "emu/block.h"
#include "emu/launch.h"
#include "emu/warp_ops.h"

// ------------------------------------------------------- keywords ------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __grid_constant__
// One copy per OS thread, and an OS thread runs one block at a time: one copy
// per resident block, as on the GPU.
#define __shared__ static thread_local

using dim3 = ::fusedseq::emu::dim3;
using uint3 = ::fusedseq::emu::uint3;

#define threadIdx (::fusedseq::emu::thread_idx)
#define blockIdx (::fusedseq::emu::block_idx)
#define blockDim (::fusedseq::emu::block_dim)
#define gridDim (::fusedseq::emu::grid_dim)
inline constexpr int warpSize = 32;

// ------------------------------------------------- synchronisation ----------
inline void __syncthreads(std::source_location at = std::source_location::current()) {
  ::fusedseq::emu::Block::current().syncthreads(at);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location at = std::source_location::current()) {
  ::fusedseq::emu::syncwarp(mask, at);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) {}

// ------------------------------------------------------------- warp ---------
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = warpSize,
              std::source_location at = std::source_location::current()) {
  return ::fusedseq::emu::shfl<::fusedseq::emu::ShflMode::Idx>(mask, v, src, width, "__shfl_sync", at);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                 std::source_location at = std::source_location::current()) {
  return ::fusedseq::emu::shfl<::fusedseq::emu::ShflMode::Up>(mask, v, int(delta), width, "__shfl_up_sync", at);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                   std::source_location at = std::source_location::current()) {
  return ::fusedseq::emu::shfl<::fusedseq::emu::ShflMode::Down>(mask, v, int(delta), width, "__shfl_down_sync", at);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize,
                  std::source_location at = std::source_location::current()) {
  return ::fusedseq::emu::shfl<::fusedseq::emu::ShflMode::Xor>(mask, v, lane_mask, width, "__shfl_xor_sync", at);
}
inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return ::fusedseq::emu::vote<::fusedseq::emu::Vote::Ballot>(mask, pred, "__ballot_sync", at);
}
inline int __any_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return int(::fusedseq::emu::vote<::fusedseq::emu::Vote::Any>(mask, pred, "__any_sync", at));
}
inline int __all_sync(unsigned mask, int pred, std::source_location at = std::source_location::current()) {
  return int(::fusedseq::emu::vote<::fusedseq::emu::Vote::All>(mask, pred, "__all_sync", at));
}

// ---------------------------------------------------------- atomics ---------
// Blocks of a plain launch run on several OS threads at once: real atomics.
template <class T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
template <class T>
T atomicSub(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_sub(v);
}
template <class T>
T atomicExch(T* p, T v) {
  return std::atomic_ref<T>(*p).exchange(v);
}
template <class T>
T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
  return expected;
}
namespace fusedseq::emu {
// Replaces *p by v while `better(v, *p)`; returns the old value.
template <class T, class Better>
T atomic_update_if(T* p, T v, Better better) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (better(v, old) && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
}  // namespace fusedseq::emu
template <class T>
T atomicMax(T* p, T v) {
  return ::fusedseq::emu::atomic_update_if(p, v, [](T a, T b) { return b < a; });
}
template <class T>
T atomicMin(T* p, T v) {
  return ::fusedseq::emu::atomic_update_if(p, v, [](T a, T b) { return a < b; });
}
template <class T>
T atomicAnd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_and(v);
}
template <class T>
T atomicOr(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_or(v);
}

// ---------------------------------------------------- math and bits ---------
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(unsigned x) { return std::countl_zero(x); }
inline int __ffs(unsigned x) { return x ? std::countr_zero(x) + 1 : 0; }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
// CUDA's device code has overloaded min/max in the global namespace.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// Dynamic shared memory: every such array starts at the block's dynamic
// shared memory, as `extern __shared__` arrays do.
#define FUSEDSEQ_EXTERN_SHARED(T, name) \
  static thread_local T* const name = reinterpret_cast<T*>(::fusedseq::emu::dynamic_smem_base())
