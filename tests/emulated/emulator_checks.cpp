// The emulator's own checks: CUDA semantics it must reproduce (shuffles with
// widths, votes, barriers, cp.async groups and landing modes, dynamic shared
// memory poisoning, schedules) and misuse it must report with the line and the
// counts (deadlocks, divergent barriers and collectives, masks, alignment).
// Kernels here are CUDA source compiled by g++ through csrc/cuda/compat.cuh.
//
//   emulator_checks [--list | NAME... | bench]
// Prints "PASS name" / "FAIL name: why" per check (exit 1 if any failed);
// `bench` prints the emulator's cost per operation ("BENCH name microseconds").
#include "cuda/compat.cuh"

#include <time.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace fc = fusedseq::cuda;
namespace emu = fusedseq::emu;

namespace {

// ---------------------------------------------------------------- kernels --
__global__ void ids_kernel(unsigned* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  out[b * n + t] = b * 1000 + t;
}

__global__ void reverse_kernel(int* out) {
  __shared__ int s[256];
  s[threadIdx.x] = int(threadIdx.x) * 7;
  __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

// out[mode][width][lane]: each shuffle flavour at widths 32, 16, 8.
__global__ void shuffle_kernel(int* out) {
  const int lane = int(threadIdx.x), v = 100 + lane;
  const int widths[3] = {32, 16, 8};
  for (int w = 0; w < 3; ++w) {
    out[(0 * 3 + w) * 32 + lane] = __shfl_sync(0xffffffffu, v, 5, widths[w]);
    out[(1 * 3 + w) * 32 + lane] = __shfl_up_sync(0xffffffffu, v, 3, widths[w]);
    out[(2 * 3 + w) * 32 + lane] = __shfl_down_sync(0xffffffffu, v, 3, widths[w]);
    out[(3 * 3 + w) * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 9, widths[w]);
  }
  out[12 * 32 + lane] = int(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[13 * 32 + lane] = __any_sync(0xffffffffu, lane == 17);
  out[14 * 32 + lane] = __all_sync(0xffffffffu, lane < 31);
  // A sub-warp collective: lanes 0-15 with their own mask.
  if (lane < 16) out[15 * 32 + lane] = __shfl_xor_sync(0x0000ffffu, v, 1);
}

__global__ void half_deadlock_kernel() {
  if (threadIdx.x < 64) __syncthreads();
}

__global__ void two_barriers_kernel() {
  if (threadIdx.x < 32)
    __syncthreads();
  else
    __syncthreads();
}

__global__ void divergent_shuffle_kernel(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x < 16)
    v = __shfl_sync(0xffffffffu, v, 0);
  else
    v = __shfl_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void outside_mask_kernel(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, int(threadIdx.x), 16);
}

__global__ void own_lane_kernel() { __syncwarp(0x1u); }

__global__ void partial_warp_kernel(int* out) {
  // 48 threads: warp 1 has lanes 0-15 only.
  const unsigned mask = threadIdx.x < 32 ? 0xffffffffu : 0x0000ffffu;
  out[threadIdx.x] = __shfl_down_sync(mask, int(threadIdx.x), 1, threadIdx.x < 32 ? 32 : 16);
}

__global__ void partial_warp_full_mask_kernel() { __syncwarp(0xffffffffu); }

__global__ void syncwarp_sites_kernel(int* out) {
  __shared__ int s[32];
  s[threadIdx.x] = int(threadIdx.x);
  if (threadIdx.x % 2)
    __syncwarp();
  else
    __syncwarp();  // another line: allowed for __syncwarp
  out[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

FUSEDSEQ_EXTERN_SHARED(float, check_smem);

// out[0]: smem before the wait; out[1]: after. One thread.
__global__ void cp_async_kernel(const float* src, float* out) {
  fc::cp_async_16(check_smem, src);
  fc::cp_async_commit();
  out[0] = check_smem[0];
  fc::cp_async_wait<0>();
  out[1] = check_smem[0];
}

// Two groups; wait<1> lands the first only. out: [g0 after, g1 after, g1 after wait<0>]
__global__ void cp_async_groups_kernel(const float* src, float* out) {
  fc::cp_async_16(check_smem, src);
  fc::cp_async_commit();
  fc::cp_async_16(check_smem + 4, src + 4);
  fc::cp_async_commit();
  fc::cp_async_wait<1>();
  out[0] = check_smem[0];
  out[1] = check_smem[4];
  fc::cp_async_wait<0>();
  out[2] = check_smem[4];
}

// Zero fill: copies 6 bytes (1.5 floats): out = the 4 floats that landed.
__global__ void cp_async_zfill_kernel(const float* src, float* out) {
  fc::cp_async_16(check_smem, src, 6);
  fc::cp_async_commit();
  fc::cp_async_wait<0>();
  for (int i = 0; i < 4; ++i) out[i] = check_smem[i];
}

__global__ void cp_async_misaligned_kernel(const float* src) {
  fc::cp_async_16(check_smem + 1, src);
  fc::cp_async_commit();
  fc::cp_async_wait<0>();
}

__global__ void smem_poison_kernel(float* out) { out[threadIdx.x] = check_smem[threadIdx.x]; }

__global__ void throw_kernel() {
  if (threadIdx.x == 3) throw std::runtime_error("boom");
}

__global__ void grid_barrier_kernel(unsigned* counter, int* out, int steps) {
  fc::GridBarrier grid{counter};
  for (int t = 0; t < steps; ++t) {
    if (threadIdx.x == 0) out[t * gridDim.x + blockIdx.x] = int(blockIdx.x) + 1;
    grid.sync();
    // after the barrier every block's entry of step t is visible
    if (threadIdx.x == 0) {
      int sum = 0;
      for (unsigned b = 0; b < gridDim.x; ++b) sum += out[t * gridDim.x + b];
      out[1000 + t * gridDim.x + blockIdx.x] = sum;
    }
  }
}

__global__ void grid_barrier_early_exit_kernel(unsigned* counter) {
  fc::GridBarrier grid{counter};
  if (blockIdx.x == 1) return;
  grid.sync();
}

// Each thread records when it first ran (an order number).
__global__ void order_kernel(int* out) {
  __shared__ int next;
  if (threadIdx.x == 0) next = 0;
  __syncthreads();
  out[threadIdx.x] = next++;
  __syncthreads();
  // second phase: order after the barrier
  out[blockDim.x + threadIdx.x] = next++;
}

__global__ void atomic_kernel(int* counter, float* fsum) {
  atomicAdd(counter, 1);
  atomicAdd(fsum, 0.5f);
}

// ------------------------------------------------------------ bench kernels --
__global__ void bench_sync_kernel(int n) {
  for (int i = 0; i < n; ++i) __syncthreads();
}
__global__ void bench_shfl_kernel(int n, float* out) {
  float v = float(threadIdx.x);
  for (int i = 0; i < n; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}
__global__ void bench_mma_kernel(int n, float* out) {
  uint32_t a[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u}, b[2] = {0x3f803f80u, 0x3f803f80u};
  float c[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) fc::mma_m16n8k16<fc::bf16>(c, a, b, c);
  out[threadIdx.x] = c[0];
}
__global__ void bench_grid_kernel(int n, unsigned* counter) {
  fc::GridBarrier grid{counter};
  for (int i = 0; i < n; ++i) grid.sync();
}

// ----------------------------------------------------------------- checks --
struct Result {
  bool ok;
  std::string why;
};
Result pass() { return {true, ""}; }
Result failure(std::string why) { return {false, std::move(why)}; }

// Runs f, expecting an emulator error whose message contains every `needle`.
Result expect_error(const std::function<void()>& f, std::vector<std::string> needles) {
  try {
    f();
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    for (const auto& n : needles)
      if (msg.find(n) == std::string::npos) return failure("message lacks '" + n + "': " + msg);
    return pass();
  }
  return failure("no error reported");
}

template <class... P, class... A>
void run(void (*k)(P...), dim3 grid, dim3 block, size_t smem, A... args) {
  fc::launch(k, {grid, block, smem}, args...);
}

emu::Config with(emu::Schedule s, emu::CopyLanding l = emu::CopyLanding::AtWait, uint64_t seed = 1) {
  emu::Config c = emu::config();
  c.schedule = s, c.landing = l, c.seed = seed;
  return c;
}

std::map<std::string, std::function<Result()>> checks() {
  std::map<std::string, std::function<Result()>> c;
  c["thread_and_block_ids"] = [] {
    std::vector<unsigned> out(2 * 3 * 2 * 64, ~0u);
    run(ids_kernel, dim3(2, 3, 2), dim3(4, 4, 4), 0, out.data());
    for (unsigned b = 0; b < 12; ++b)
      for (unsigned t = 0; t < 64; ++t)
        if (out[b * 64 + t] != b * 1000 + t) return failure("block " + std::to_string(b) + " thread " + std::to_string(t));
    return pass();
  };
  c["syncthreads_orders_shared_memory"] = [] {
    for (auto s : {emu::Schedule::RoundRobin, emu::Schedule::Warp0Ahead, emu::Schedule::Random}) {
      emu::ScopedConfig cfg(with(s));
      std::vector<int> out(200, -1);
      run(reverse_kernel, dim3(1), dim3(200), 0, out.data());
      for (int i = 0; i < 200; ++i)
        if (out[size_t(i)] != (199 - i) * 7)
          return failure(std::string(emu::schedule_name(s)) + ": out[" + std::to_string(i) + "]");
    }
    return pass();
  };
  c["shuffle_vote_semantics"] = [] {
    std::vector<int> out(16 * 32, -1);
    run(shuffle_kernel, dim3(1), dim3(32), 0, out.data());
    const int widths[3] = {32, 16, 8};
    for (int w = 0; w < 3; ++w)
      for (int l = 0; l < 32; ++l) {
        const int W = widths[w], base = l & ~(W - 1);
        const int idx = 100 + base + 5 % W;
        const int up = 100 + (l - 3 >= base ? l - 3 : l);
        const int down = 100 + (l + 3 < base + W ? l + 3 : l);
        const int x = 100 + ((l ^ 9) < base + W ? (l ^ 9) : l);
        const int got[4] = {out[size_t((0 * 3 + w) * 32 + l)], out[size_t((1 * 3 + w) * 32 + l)],
                            out[size_t((2 * 3 + w) * 32 + l)], out[size_t((3 * 3 + w) * 32 + l)]};
        const int want[4] = {idx, up, down, x};
        for (int m = 0; m < 4; ++m)
          if (got[m] != want[m])
            return failure("mode " + std::to_string(m) + " width " + std::to_string(W) + " lane " + std::to_string(l) +
                           ": " + std::to_string(got[m]) + " != " + std::to_string(want[m]));
      }
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
    for (int l = 0; l < 32; ++l) {
      if (unsigned(out[size_t(12 * 32 + l)]) != ballot) return failure("ballot");
      if (out[size_t(13 * 32 + l)] != 1 || out[size_t(14 * 32 + l)] != 0) return failure("any/all");
      if (l < 16 && out[size_t(15 * 32 + l)] != 100 + (l ^ 1)) return failure("sub-warp shuffle");
    }
    return pass();
  };
  c["deadlock_report_names_line_and_counts"] = [] {
    return expect_error([] { run(half_deadlock_kernel, dim3(1), dim3(128), 0); },
                        {"deadlock in block (0,0,0)", "64 threads wait in __syncthreads() at emulator_checks.cpp:",
                         "threads 0-63", "64 threads have exited (threads 64-127)"});
  };
  c["divergent_syncthreads_reports_both_lines"] = [] {
    return expect_error([] { run(two_barriers_kernel, dim3(1), dim3(64), 0); },
                        {"divergent __syncthreads()", "32 threads arrived at emulator_checks.cpp:", "(threads 0-31)",
                         "(threads 32-63)"});
  };
  c["divergent_shuffle_reported"] = [] {
    std::vector<int> out(32);
    return expect_error([&] { run(divergent_shuffle_kernel, dim3(1), dim3(32), 0, out.data()); },
                        {"divergent warp collective in warp 0", "lanes 0-15 wait in __shfl_sync", "lane 16 arrived"});
  };
  c["shuffle_outside_mask_reported"] = [] {
    std::vector<int> out(32);
    return expect_error([&] { run(outside_mask_kernel, dim3(1), dim3(16), 0, out.data()); },
                        {"__shfl_xor_sync at emulator_checks.cpp:", "lane 0 reads lane 16", "not in the mask"});
  };
  c["mask_without_own_lane_reported"] = [] {
    return expect_error([] { run(own_lane_kernel, dim3(1), dim3(32), 0); }, {"leaves out its own lane"});
  };
  c["partial_warp"] = [] {
    std::vector<int> out(48, -1);
    run(partial_warp_kernel, dim3(1), dim3(48), 0, out.data());
    for (int t = 0; t < 48; ++t) {
      const int lane = t % 32, top = t < 32 ? 31 : 15;
      if (out[size_t(t)] != (lane < top ? t + 1 : t)) return failure("thread " + std::to_string(t));
    }
    return expect_error([] { run(partial_warp_full_mask_kernel, dim3(1), dim3(48), 0); },
                        {"names lanes that do not exist"});
  };
  c["syncwarp_from_different_lines"] = [] {
    std::vector<int> out(32, -1);
    run(syncwarp_sites_kernel, dim3(1), dim3(32), 0, out.data());
    for (int l = 0; l < 32; ++l)
      if (out[size_t(l)] != (l + 1) % 32) return failure("lane " + std::to_string(l));
    return pass();
  };
  c["cp_async_lands_at_wait_or_issue"] = [] {
    alignas(16) float src[4] = {1.5f, 2, 3, 4};
    float out[2];
    {
      emu::ScopedConfig cfg(with(emu::Schedule::RoundRobin, emu::CopyLanding::AtWait));
      run(cp_async_kernel, dim3(1), dim3(1), 64, src, out);
      if (!std::isnan(out[0]) || out[1] != 1.5f) return failure("at wait: " + std::to_string(out[0]) + ", " + std::to_string(out[1]));
    }
    {
      emu::ScopedConfig cfg(with(emu::Schedule::RoundRobin, emu::CopyLanding::AtIssue));
      run(cp_async_kernel, dim3(1), dim3(1), 64, src, out);
      if (out[0] != 1.5f || out[1] != 1.5f) return failure("at issue");
    }
    return pass();
  };
  c["cp_async_wait_group_counts_groups"] = [] {
    alignas(16) float src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float out[3];
    emu::ScopedConfig cfg(with(emu::Schedule::RoundRobin, emu::CopyLanding::AtWait));
    run(cp_async_groups_kernel, dim3(1), dim3(1), 64, src, out);
    if (out[0] != 1 || !std::isnan(out[1]) || out[2] != 5)
      return failure(std::to_string(out[0]) + " " + std::to_string(out[1]) + " " + std::to_string(out[2]));
    return pass();
  };
  c["cp_async_zero_fills_the_tail"] = [] {
    alignas(16) float src[4] = {1.5f, -2.5f, 3, 4};
    float out[4];
    run(cp_async_zfill_kernel, dim3(1), dim3(1), 64, src, out);
    float half_of_second;
    const uint32_t bits = uint32_t(std::bit_cast<uint32_t>(-2.5f) & 0xffffu);
    half_of_second = std::bit_cast<float>(bits);
    if (out[0] != 1.5f || std::bit_cast<uint32_t>(out[1]) != std::bit_cast<uint32_t>(half_of_second) || out[2] != 0 ||
        out[3] != 0)
      return failure("zero fill");
    return pass();
  };
  c["cp_async_misaligned_reported"] = [] {
    alignas(16) float src[4] = {};
    return expect_error([&] { run(cp_async_misaligned_kernel, dim3(1), dim3(1), 64, src); },
                        {"cp.async at emulator_checks.cpp:", "16-byte aligned"});
  };
  c["dynamic_shared_memory_is_nan"] = [] {
    std::vector<float> out(64, 0.0f);
    run(smem_poison_kernel, dim3(1), dim3(64), 256, out.data());
    for (float v : out)
      if (!std::isnan(v)) return failure("not NaN");
    return pass();
  };
  c["exception_in_kernel_reported"] = [] {
    return expect_error([] { run(throw_kernel, dim3(2), dim3(8), 0); }, {"thread (3,0,0) of block", "threw: boom"});
  };
  c["grid_barrier_orders_blocks"] = [] {
    for (auto s : {emu::Schedule::RoundRobin, emu::Schedule::Warp0Ahead, emu::Schedule::Random}) {
      emu::ScopedConfig cfg(with(s));
      unsigned counter = 0;
      std::vector<int> out(2000, 0);
      fc::launch_cooperative(grid_barrier_kernel, {dim3(8), dim3(64)}, &counter, out.data(), 5);
      for (int t = 0; t < 5; ++t)
        for (int b = 0; b < 8; ++b)
          if (out[size_t(1000 + t * 8 + b)] != 36)
            return failure(std::string(emu::schedule_name(s)) + ": step " + std::to_string(t) + " block " + std::to_string(b));
      if (counter != 40) return failure("counter " + std::to_string(counter));
    }
    return pass();
  };
  c["grid_barrier_deadlock_reported"] = [] {
    unsigned counter = 0;
    return expect_error(
        [&] { fc::launch_cooperative(grid_barrier_early_exit_kernel, {dim3(4), dim3(32)}, &counter); },
        {"deadlock at the grid barrier", "have exited without reaching it", "blocks 1"});
  };
  c["grid_barrier_needs_cooperative_launch"] = [] {
    unsigned counter = 0;
    std::vector<int> out(2000);
    return expect_error([&] { run(grid_barrier_kernel, dim3(2), dim3(32), 0, &counter, out.data(), 1); },
                        {"not launched cooperatively"});
  };
  c["bad_launch_reported"] = [] {
    return expect_error([] { run(bench_sync_kernel, dim3(1), dim3(2048), 0, 1); }, {"invalid block", "1024"});
  };
  c["random_schedule_replays_from_its_seed"] = [] {
    auto order = [](uint64_t seed) {
      emu::ScopedConfig cfg(with(emu::Schedule::Random, emu::CopyLanding::AtWait, seed));
      std::vector<int> out(128);
      run(order_kernel, dim3(1), dim3(64), 0, out.data());
      return out;
    };
    if (order(7) != order(7)) return failure("same seed, different order");
    if (order(7) == order(8)) return failure("different seeds, same order");
    return pass();
  };
  c["schedules_order_threads_as_documented"] = [] {
    std::vector<int> out(256);
    {
      emu::ScopedConfig cfg(with(emu::Schedule::RoundRobin));
      run(order_kernel, dim3(1), dim3(128), 0, out.data());
      for (int t = 0; t < 128; ++t)
        if (out[size_t(t)] != t || out[size_t(128 + t)] != 128 + t) return failure("round-robin thread " + std::to_string(t));
    }
    {
      // warp 0 reaches the barrier first, and leaves it first
      emu::ScopedConfig cfg(with(emu::Schedule::Warp0Ahead));
      run(order_kernel, dim3(1), dim3(128), 0, out.data());
      for (int t = 0; t < 32; ++t)
        if (out[size_t(128 + t)] >= 128 + 32) return failure("warp0-ahead thread " + std::to_string(t));
    }
    return pass();
  };
  c["atomics_across_concurrent_blocks"] = [] {
    int counter = 0;
    float sum = 0;
    run(atomic_kernel, dim3(64), dim3(64), 0, &counter, &sum);
    if (counter != 4096 || sum != 2048.0f) return failure(std::to_string(counter) + " " + std::to_string(sum));
    return pass();
  };
  return c;
}

// Cost of one operation in microseconds, best of a few runs of f(n) / n:
// process CPU time (what the emulator spends, robust to a busy machine) and
// wall time.
struct Cost {
  double cpu_us, wall_us;
};
Cost per_op(const std::function<void(int)>& f, int n) {
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) * 1e6 + double(ts.tv_nsec) * 1e-3;
  };
  Cost best{1e30, 1e30};
  for (int rep = 0; rep < 5; ++rep) {
    const double c0 = cpu_now();
    const auto t0 = std::chrono::steady_clock::now();
    f(n);
    const auto t1 = std::chrono::steady_clock::now();
    best.cpu_us = std::min(best.cpu_us, (cpu_now() - c0) / n);
    best.wall_us = std::min(best.wall_us, std::chrono::duration<double, std::micro>(t1 - t0).count() / n);
  }
  return best;
}

void report(const char* name, Cost c) { std::printf("BENCH %s cpu_us=%.3f wall_us=%.3f\n", name, c.cpu_us, c.wall_us); }

void bench() {
  std::vector<float> out(128);
  unsigned counter = 0;
  report("syncthreads_128_threads", per_op([](int n) { run(bench_sync_kernel, dim3(1), dim3(128), 0, n); }, 2000));
  report("warp_shuffle", per_op([&](int n) { run(bench_shfl_kernel, dim3(1), dim3(32), 0, n, out.data()); }, 20000));
  report("mma_m16n8k16", per_op([&](int n) { run(bench_mma_kernel, dim3(1), dim3(32), 0, n, out.data()); }, 5000));
  report("grid_barrier_8x128", per_op([&](int n) {
           counter = 0;
           fc::launch_cooperative(bench_grid_kernel, {dim3(8), dim3(128)}, n, &counter);
         }, 300));
}

}  // namespace

int main(int argc, char** argv) {
  const auto all = checks();
  std::vector<std::string> names;
  for (int i = 1; i < argc; ++i) names.push_back(argv[i]);
  if (names.size() == 1 && names[0] == "--list") {
    for (const auto& [n, f] : all) std::printf("%s\n", n.c_str());
    return 0;
  }
  if (names.size() == 1 && names[0] == "bench") {
    bench();
    return 0;
  }
  if (names.empty())
    for (const auto& [n, f] : all) names.push_back(n);
  int failed = 0;
  for (const auto& n : names) {
    const auto it = all.find(n);
    const Result r = it == all.end() ? failure("no such check") : it->second();
    std::printf(r.ok ? "PASS %s\n" : "FAIL %s: %s\n", n.c_str(), r.why.c_str());
    std::fflush(stdout);
    failed += !r.ok;
  }
  return failed ? 1 : 0;
}
