// One thread block of an emulated launch: its CUDA threads are fibers that run
// on a single OS thread, one at a time, each until it reaches a barrier, a
// warp collective or its end. The schedule (config.h) decides who runs next.
//
// Static __shared__ variables are thread_local (one copy per OS thread, and an
// OS thread runs one block at a time); dynamic shared memory is a per-OS-thread
// buffer filled with NaN (0xFF bytes) at block start, with everything past the
// launched size poisoned for ASan.
//
// Every misuse ends the block with an Error that names the source line and the
// threads involved: deadlocks (no thread can run), __syncthreads reached from
// different lines, warp collectives whose lanes disagree, copies from lanes
// outside the mask, misaligned cp.async/ldmatrix addresses.
#pragma once
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <source_location>
#include <string>
#include <utility>
#include <vector>

#include "emu/config.h"
#include "emu/fiber.h"

namespace fusedseq::emu {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

// What CUDA code sees as threadIdx, blockIdx, blockDim and gridDim: set on
// every switch between fibers.
inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
inline thread_local dim3 block_dim;
inline thread_local dim3 grid_dim;

// Largest dynamic shared memory a block may ask for (an H100 SM: 227 KiB).
inline constexpr size_t kMaxDynamicSmem = 227 * 1024;

// The calling OS thread's dynamic shared memory.
inline unsigned char* dynamic_smem_base() {
  alignas(128) static thread_local unsigned char buf[kMaxDynamicSmem];
  return buf;
}

inline std::string where(const std::source_location& l) {
  const char* f = l.file_name();
  const char* slash = std::strrchr(f, '/');
  return std::string(slash ? slash + 1 : f) + ":" + std::to_string(l.line());
}

inline std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// "0-63, 96, 100-127": a compact list of thread (or lane, or block) numbers.
inline std::string ranges(const std::vector<unsigned>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(ids[i]);
    if (j > i) s += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return s;
}

// Seeded splitmix64: the random schedule must replay exactly from its seed.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

class Block;

// A warp collective in progress: the lanes of `mask` arrive one by one, each
// leaving a pointer to its own arguments (on its own stack, which stays put
// while it waits); the last one computes every lane's result.
using WarpComplete = void (*)(void* const* slots, unsigned mask, Block& block, const std::source_location& at);

struct WarpCall {
  const char* name;       // "__shfl_xor_sync", "ldmatrix.x4.trans", ...
  unsigned mask;
  WarpComplete complete;  // identifies the operation (and its variant)
  void* slot;             // this lane's arguments and result
  bool any_site;          // __syncwarp: lanes may arrive from different lines
  std::source_location at;
};

// Called by a cooperative grid's block when all of its threads reached the
// grid barrier; returns false when another block failed (stop quietly).
struct GridBarrierHooks {
  virtual bool arrive_and_wait(unsigned block, const std::source_location& at) = 0;
  virtual ~GridBarrierHooks() = default;
};

// Fiber stacks of the calling OS thread, reused from launch to launch.
struct StackPool {
  std::vector<Stack> stacks;
  size_t bytes = 0;

  static StackPool& mine() {
    static thread_local StackPool pool;
    return pool;
  }
  void reserve(size_t n, size_t stack_bytes) {
    if (stack_bytes != bytes) stacks.clear(), bytes = stack_bytes;
    while (stacks.size() < n) stacks.emplace_back(bytes);
  }
};

class Block {
 public:
  enum class Wait : uint8_t { Running, SyncThreads, Warp, Grid, Exited };

  struct Thread {
    Context ctx;
    uint3 idx;
    unsigned linear = 0;
    Wait wait = Wait::Running;
    const char* what = "";  // the collective it waits in
    unsigned what_mask = 0;
    std::source_location at;
    // cp.async copies issued and not yet landed; group_end[g] is the end in
    // `copies` of committed group g (uncommitted copies follow the last one).
    struct Copy {
      unsigned char* dst;
      unsigned char bytes[16];
    };
    std::vector<Copy> copies;
    std::vector<size_t> group_end;
  };

  Block(const std::function<void()>& body, dim3 grid, dim3 block, unsigned block_linear, size_t smem_bytes,
        const Config& cfg, GridBarrierHooks* coop, std::string launch_site);
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  // The block the calling fiber belongs to.
  static Block& current() { return *current_block(); }
  static Block*& current_block() {
    static thread_local Block* b = nullptr;
    return b;
  }

  // Runs every thread to its end (or to the first error) on the calling OS
  // thread. Returns "" or the error message.
  std::string run();

  Thread& self() { return threads_[current_]; }
  // Stopped because another block of a cooperative grid failed.
  bool aborted() const { return aborted_; }
  const Config& config() const { return cfg_; }

  // ------------------------------------------------------ block barrier --
  void syncthreads(const std::source_location& at);

  // Every thread of a cooperative grid: whole block first, then the grid.
  void grid_sync(const std::source_location& at);

  // ---------------------------------------------------- warp collectives --
  void warp_call(const WarpCall& c);

  // ----------------------------------------------------------- cp.async --
  void cp_async(void* dst, const void* src, unsigned src_bytes, const std::source_location& at);
  void cp_async_commit();
  // Lands every committed group but the `pending` most recent ones.
  void cp_async_wait(unsigned pending);
  // cp.async.wait_all: every copy, committed or not.
  void cp_async_wait_all();

  // Ends the block with `msg` (the calling fiber never resumes).
  [[noreturn]] void fail(std::string msg);

  std::string block_name() const;
  std::string thread_name(unsigned linear) const;
  const std::string& launch_site() const { return launch_site_; }

 private:
  struct Group {
    const char* name;
    WarpComplete complete;
    unsigned mask, arrived;
    std::source_location at;
    void* slots[32];
  };

  static std::string ptr(const void* p);
  static std::string lanes(unsigned mask);

  // The OS thread's own context; its stack bounds matter to ASan only.
  static void thread_main_context(Context& c);

  static void fiber_entry(void* arg);

  void set_runnable(unsigned i, bool on) {
    if (on)
      runnable_[i / 64] |= uint64_t{1} << (i % 64);
    else
      runnable_[i / 64] &= ~(uint64_t{1} << (i % 64));
  }
  bool is_runnable(unsigned i) const { return runnable_[i / 64] >> (i % 64) & 1; }

  // First runnable thread in [lo, hi), scanning cyclically from `from`.
  int find_cyclic(unsigned from, unsigned lo, unsigned hi) const;

  int pick();

  // The calling fiber gives way (it may be picked again at once).
  void schedule();

  void block_barrier(Wait kind, const char* name, const std::source_location& at);

  [[noreturn]] void exit_current();

  // Back to the OS thread; the calling fiber is never resumed.
  [[noreturn]] void leave_forever();

  // Who waits where, when no thread can run.
  std::string deadlock_report() const;

  struct Barrier {
    unsigned arrived = 0;
    std::source_location first;
    bool mixed = false;  // arrivals from more than one line
  };

  const std::function<void()>& body_;
  dim3 grid_, dim_;
  uint3 idx_;
  unsigned linear_ = 0;
  size_t smem_bytes_;
  Config cfg_;
  GridBarrierHooks* coop_;
  std::string launch_site_;

  unsigned n_ = 0;
  std::vector<Thread> threads_;
  std::vector<uint64_t> runnable_;
  std::vector<std::vector<Group>> warps_;
  Barrier bar_, grid_bar_;
  unsigned current_ = 0, live_ = 0, last_other_ = 31;
  Rng rng_;
  Context main_;
  std::string error_;
  bool aborted_ = false;
};

}  // namespace fusedseq::emu

// ---------------------------------------------------------------------------
// The implementation, compiled in exactly one translation unit of each binary
// (the one that defines FUSEDSEQ_EMU_IMPLEMENTATION before including
// csrc/emu/cuda_host.h, see csrc/emu/README.md), so that every kernel file compiles in a few seconds.
#if defined(FUSEDSEQ_EMU_IMPLEMENTATION)
#include <map>

namespace fusedseq::emu {

Block::Block(const std::function<void()>& body, dim3 grid, dim3 block, unsigned block_linear, size_t smem_bytes,
      const Config& cfg, GridBarrierHooks* coop, std::string launch_site)
    : body_(body), grid_(grid), dim_(block), smem_bytes_(smem_bytes), cfg_(cfg), coop_(coop),
      launch_site_(std::move(launch_site)) {
  idx_.x = block_linear % grid.x;
  idx_.y = block_linear / grid.x % grid.y;
  idx_.z = block_linear / (grid.x * grid.y);
  linear_ = block_linear;
  n_ = block.x * block.y * block.z;
  threads_.resize(n_);
  for (unsigned i = 0; i < n_; ++i) {
    threads_[i].linear = i;
    threads_[i].idx = {i % block.x, i / block.x % block.y, i / (block.x * block.y)};
  }
  runnable_.assign((n_ + 63) / 64, 0);
  warps_.resize((n_ + 31) / 32);
  rng_.s = cfg.seed * 0x100000001b3ull + block_linear;
}

std::string Block::run() {
  thread_main_context(main_);
  block_idx = idx_;
  block_dim = dim_;
  grid_dim = grid_;
  current_block() = this;
  // Dynamic shared memory: NaN where the launch asked for it (and a margin,
  // so an over-read shows as NaN without ASan too); ASan-poisoned past it.
  unsigned char* smem = dynamic_smem_base();
  unpoison(smem, kMaxDynamicSmem);
  std::memset(smem, 0xff, std::min(kMaxDynamicSmem, smem_bytes_ + 4096));
  poison(smem + smem_bytes_, kMaxDynamicSmem - smem_bytes_);

  StackPool& pool = StackPool::mine();
  pool.reserve(n_, cfg_.stack_bytes);
  for (unsigned i = 0; i < n_; ++i) {
    // A fiber never returns from its first frames (it switches away for
    // good), so under ASan a reused stack still carries their shadow.
    forget_stack_frames(pool.stacks[i]);
    make_context(threads_[i].ctx, pool.stacks[i], &Block::fiber_entry, &threads_[i]);
    set_runnable(i, true);
  }
  live_ = n_;
  current_ = n_ - 1;  // so that round-robin starts at thread 0
  const int first = pick();
  current_ = static_cast<unsigned>(first);
  thread_idx = threads_[current_].idx;
  switch_context(main_, threads_[current_].ctx);
  // Back on the OS thread: every fiber exited, or one failed.
  unpoison(smem, kMaxDynamicSmem);
  current_block() = nullptr;
  return error_;
}

void Block::syncthreads(const std::source_location& at) { block_barrier(Wait::SyncThreads, "__syncthreads()", at); }

void Block::grid_sync(const std::source_location& at) {
  if (!coop_)
    fail("grid barrier at " + where(at) + " in a kernel that was not launched cooperatively (kernel launched at " +
         launch_site_ + "; use launch_cooperative)");
  block_barrier(Wait::Grid, "the grid barrier", at);
}

void Block::warp_call(const WarpCall& c) {
  Thread& t = self();
  const unsigned lane = t.linear % 32, w = t.linear / 32, bit = 1u << lane;
  auto site = [&] { return c.name + std::string(" at ") + where(c.at); };
  if (!(c.mask & bit))
    fail(site() + ": thread " + std::to_string(t.linear) + " (lane " + std::to_string(lane) + ") passes mask " +
         hex(c.mask) + ", which leaves out its own lane");
  auto& groups = warps_[w];
  Group* g = nullptr;
  for (auto& x : groups)
    if (x.mask & bit) g = &x;
  if (g) {
    const bool same_site = c.any_site || (g->at.line() == c.at.line() && (g->at.file_name() == c.at.file_name() ||
                                                                          !std::strcmp(g->at.file_name(), c.at.file_name())));
    if (g->complete != c.complete || g->mask != c.mask || !same_site)
      fail("divergent warp collective in warp " + std::to_string(w) + " of block " + block_name() + ": lanes " +
           lanes(g->arrived) + " wait in " + g->name + " (mask " + hex(g->mask) + ") at " + where(g->at) +
           ", lane " + std::to_string(lane) + " arrived in " + c.name + " (mask " + hex(c.mask) + ") at " +
           where(c.at));
  } else {
    for (auto& x : groups)
      if (x.mask & c.mask)
        fail("divergent warp collective in warp " + std::to_string(w) + " of block " + block_name() + ": lane " +
             std::to_string(lane) + " arrived in " + c.name + " with mask " + hex(c.mask) + " at " + where(c.at) +
             " while lanes " + lanes(x.arrived) + " wait in " + x.name + " with mask " + hex(x.mask) + " at " +
             where(x.at));
    // A new collective: every lane it names must exist and still run.
    const unsigned warp_lanes = std::min(32u, n_ - 32 * w);
    const unsigned existing = warp_lanes == 32 ? ~0u : (1u << warp_lanes) - 1;
    if (c.mask & ~existing)
      fail(site() + ": mask " + hex(c.mask) + " names lanes that do not exist (warp " + std::to_string(w) + " has " +
           std::to_string(warp_lanes) + " threads)");
    for (unsigned l = 0; l < 32; ++l)
      if ((c.mask >> l & 1) && threads_[32 * w + l].wait == Wait::Exited)
        fail(site() + ": lane " + std::to_string(l) + " of warp " + std::to_string(w) + ", named in mask " +
             hex(c.mask) + ", has already exited");
    groups.push_back(Group{c.name, c.complete, c.mask, 0, c.at, {}});
    g = &groups.back();
  }
  g->slots[lane] = c.slot;
  g->arrived |= bit;
  if (g->arrived != g->mask) {
    t.wait = Wait::Warp, t.what = c.name, t.what_mask = c.mask, t.at = c.at;
    set_runnable(current_, false);
    schedule();
    return;
  }
  // Last lane in: compute for all, release all.
  const Group done = *g;
  groups.erase(groups.begin() + (g - groups.data()));
  done.complete(done.slots, done.mask, *this, done.at);
  for (unsigned l = 0; l < 32; ++l)
    if ((done.mask >> l & 1) && l != lane) {
      threads_[32 * w + l].wait = Wait::Running;
      set_runnable(32 * w + l, true);
    }
  schedule();
}

void Block::cp_async(void* dst, const void* src, unsigned src_bytes, const std::source_location& at) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (src_bytes && reinterpret_cast<uintptr_t>(src) % 16))
    fail("cp.async at " + where(at) + " (thread " + std::to_string(self().linear) + " of block " + block_name() +
         "): 16-byte copy needs 16-byte aligned addresses, got shared " + ptr(dst) + ", global " + ptr(src));
  if (src_bytes > 16)
    fail("cp.async at " + where(at) + ": src_bytes " + std::to_string(src_bytes) + " > 16");
  Thread::Copy c;
  c.dst = static_cast<unsigned char*>(dst);
  std::memset(c.bytes, 0, 16);
  if (src_bytes) std::memcpy(c.bytes, src, src_bytes);  // the source is read at issue
  if (cfg_.landing == CopyLanding::AtIssue)
    std::memcpy(c.dst, c.bytes, 16);
  else
    self().copies.push_back(c);
}

void Block::cp_async_commit() { self().group_end.push_back(self().copies.size()); }

void Block::cp_async_wait(unsigned pending) {
  Thread& t = self();
  if (t.group_end.size() <= pending) return;
  const size_t groups = t.group_end.size() - pending, end = t.group_end[groups - 1];
  for (size_t i = 0; i < end; ++i) std::memcpy(t.copies[i].dst, t.copies[i].bytes, 16);
  t.copies.erase(t.copies.begin(), t.copies.begin() + static_cast<ptrdiff_t>(end));
  t.group_end.erase(t.group_end.begin(), t.group_end.begin() + static_cast<ptrdiff_t>(groups));
  for (auto& e : t.group_end) e -= end;
}

void Block::cp_async_wait_all() {
  cp_async_commit();
  cp_async_wait(0);
}

[[noreturn]] void Block::fail(std::string msg) {
  if (error_.empty()) error_ = "fusedseq emulator: " + std::move(msg);
  leave_forever();
}

std::string Block::block_name() const {
  return "(" + std::to_string(idx_.x) + "," + std::to_string(idx_.y) + "," + std::to_string(idx_.z) + ")";
}

std::string Block::thread_name(unsigned linear) const {
  const auto& i = threads_[linear].idx;
  return "thread (" + std::to_string(i.x) + "," + std::to_string(i.y) + "," + std::to_string(i.z) + ") of block " +
         block_name();
}

std::string Block::ptr(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

std::string Block::lanes(unsigned mask) {
  std::vector<unsigned> v;
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1) v.push_back(l);
  return ranges(v);
}

void Block::thread_main_context(Context& c) {
  static thread_local bool known = false;
  static thread_local Context me;
  if (!known) init_thread_context(me), known = true;
  c.stack_bottom = me.stack_bottom;
  c.stack_size = me.stack_size;
}

void Block::fiber_entry(void* arg) {
  fiber_started();
  Block& b = current();
  (void)arg;
  try {
    b.body_();
  } catch (const std::exception& e) {
    b.fail(b.thread_name(b.current_) + " threw: " + e.what());
  }
  b.exit_current();
}

int Block::find_cyclic(unsigned from, unsigned lo, unsigned hi) const {
  if (lo >= hi) return -1;
  if (from < lo || from >= hi) from = lo;
  // First set bit of the runnable mask in [a, b), a word at a time.
  auto scan = [&](unsigned a, unsigned b) -> int {
    while (a < b) {
      const uint64_t bits = runnable_[a / 64] >> (a % 64);
      if (bits) {
        const unsigned i = a + static_cast<unsigned>(__builtin_ctzll(bits));
        return i < b ? static_cast<int>(i) : -1;
      }
      a = (a / 64 + 1) * 64;
    }
    return -1;
  };
  const int i = scan(from, hi);
  return i >= 0 ? i : scan(lo, from);
}

int Block::pick() {
  switch (cfg_.schedule) {
    case Schedule::RoundRobin:
      return find_cyclic(current_ + 1, 0, n_);
    case Schedule::Warp0Ahead: {
      const unsigned w0 = std::min(32u, n_);
      int i = find_cyclic(current_ < w0 ? current_ + 1 : 0, 0, w0);
      if (i >= 0) return i;
      i = find_cyclic(current_ >= w0 ? current_ + 1 : last_other_ + 1, w0, n_);
      if (i >= 0) last_other_ = static_cast<unsigned>(i);
      return i;
    }
    case Schedule::Random: {
      unsigned count = 0;
      for (auto w : runnable_) count += static_cast<unsigned>(__builtin_popcountll(w));
      if (!count) return -1;
      unsigned k = static_cast<unsigned>(rng_.next() % count);
      for (unsigned i = 0; i < n_; ++i)
        if (is_runnable(i) && k-- == 0) return static_cast<int>(i);
      return -1;
    }
  }
  return -1;
}

void Block::schedule() {
  const int next = pick();
  if (next < 0) fail(deadlock_report());
  if (static_cast<unsigned>(next) == current_) return;
  Thread& from = threads_[current_];
  current_ = static_cast<unsigned>(next);
  thread_idx = threads_[current_].idx;
  switch_context(from.ctx, threads_[current_].ctx);
}

void Block::block_barrier(Block::Wait kind, const char* name, const std::source_location& at) {
  Thread& t = self();
  Barrier& bar = kind == Wait::Grid ? grid_bar_ : bar_;
  t.what = name, t.at = at;
  if (bar.arrived == 0)
    bar.first = at;
  else if (bar.first.line() != at.line() ||
           (bar.first.file_name() != at.file_name() && std::strcmp(bar.first.file_name(), at.file_name())))
    bar.mixed = true;
  if (++bar.arrived < n_) {
    t.wait = kind;
    set_runnable(current_, false);
    schedule();
    return;
  }
  if (bar.mixed) {
    std::map<std::string, std::vector<unsigned>> by_site;
    for (const auto& th : threads_)
      if (th.wait == kind || th.linear == t.linear) by_site[where(th.at)].push_back(th.linear);
    std::string s = std::string("divergent ") + name + " in block " + block_name() + " of the kernel launched at " +
                    launch_site_ + ":";
    for (auto& [site, ids] : by_site)
      s += "\n  " + std::to_string(ids.size()) + " threads arrived at " + site + " (threads " + ranges(ids) + ")";
    fail(s);
  }
  bar = Barrier{};
  if (kind == Wait::Grid && !coop_->arrive_and_wait(linear_, at)) {
    aborted_ = true;  // another block failed: stop without an error of our own
    leave_forever();
  }
  for (unsigned i = 0; i < n_; ++i)
    if (threads_[i].wait == kind) threads_[i].wait = Wait::Running, set_runnable(i, true);
  schedule();
}

[[noreturn]] void Block::exit_current() {
  Thread& t = self();
  t.wait = Wait::Exited;
  t.copies.clear();
  set_runnable(current_, false);
  --live_;
  if (live_ == 0) leave_forever();
  const int next = pick();
  if (next < 0) fail(deadlock_report());
  current_ = static_cast<unsigned>(next);
  thread_idx = threads_[current_].idx;
  switch_context(t.ctx, threads_[current_].ctx, /*from_dies=*/true);
  __builtin_unreachable();
}

[[noreturn]] void Block::leave_forever() {
  switch_context(threads_[current_].ctx, main_, /*from_dies=*/true);
  __builtin_unreachable();
}

std::string Block::deadlock_report() const {
  std::map<std::string, std::vector<unsigned>> by_site;
  std::vector<unsigned> exited;
  for (const auto& t : threads_) {
    switch (t.wait) {
      case Wait::Exited: exited.push_back(t.linear); break;
      case Wait::Warp:
        by_site[std::string(t.what) + " (mask " + hex(t.what_mask) + ") at " + where(t.at)].push_back(t.linear);
        break;
      case Wait::SyncThreads:
      case Wait::Grid: by_site[std::string(t.what) + " at " + where(t.at)].push_back(t.linear); break;
      case Wait::Running: by_site["(running)"].push_back(t.linear); break;
    }
  }
  std::string s = "deadlock in block " + block_name() + " of the kernel launched at " + launch_site_ + " (" +
                  std::to_string(n_) + " threads): no thread can run.";
  for (auto& [site, ids] : by_site)
    s += "\n  " + std::to_string(ids.size()) + " threads wait in " + site + " (threads " + ranges(ids) + ")";
  if (!exited.empty())
    s += "\n  " + std::to_string(exited.size()) + " threads have exited (threads " + ranges(exited) + ")";
  return s;
}

}  // namespace fusedseq::emu
#endif  // FUSEDSEQ_EMU_IMPLEMENTATION
