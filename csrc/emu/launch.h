// Emulated kernel launches. Independent blocks run on a pool of OS threads
// (FUSEDSEQ_EMU_WORKERS), each block start to end on one of them. A
// cooperative launch gets one OS thread per block, all resident at once, and
// a baton: exactly one block runs at a time and hands the baton on when all of
// its threads reach the grid barrier (or end). Which block runs next follows
// the schedule, so a grid replays exactly; a missing grid barrier shows
// deterministically (block 0 runs every step before block 1 starts).
#pragma once
#include <functional>
#include <string>
#include <tuple>
#include <utility>

#include "emu/block.h"

namespace fusedseq::emu {

struct LaunchShape {
  dim3 grid, block;
  size_t smem_bytes = 0;
  const char* file = "";  // where the kernel was launched, for messages
  unsigned line = 0;
};

inline std::string launch_site(const LaunchShape& s) {
  const char* slash = std::strrchr(s.file, '/');
  return std::string(slash ? slash + 1 : s.file) + ":" + std::to_string(s.line);
}

// Runs `body` (the kernel with its arguments bound) as a grid of blocks.
// Throws Error with the first failure.
void run_grid(const std::function<void()>& body, const LaunchShape& s, bool cooperative);

// launch(kernel, shape, args...): the kernel's parameters are copied, as a
// real launch copies them to the device.
template <class... P, class... A>
void launch(void (*kernel)(P...), const LaunchShape& s, bool cooperative, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  const std::function<void()> body = [kernel, &params] { std::apply(kernel, params); };
  run_grid(body, s, cooperative);
}

}  // namespace fusedseq::emu

#if defined(FUSEDSEQ_EMU_IMPLEMENTATION)
#include <atomic>
#include <latch>
#include <memory>
#include <mutex>
#include <semaphore>
#include <thread>
#include <vector>

namespace fusedseq::emu {

// Long-lived OS threads (their thread_local shared memory and fiber stacks are
// reused from launch to launch). Never destroyed: a pool torn down at exit
// could wait on threads that the runtime already stopped.
class WorkerPool {
 public:
  static WorkerPool& get() {
    static WorkerPool* pool = new WorkerPool;
    return *pool;
  }

  // Runs task(i) for every i in [0, n), each on its own pool thread, and
  // waits for all of them. One launch at a time.
  void run(unsigned n, const std::function<void(unsigned)>& task) {
    std::lock_guard<std::mutex> one_launch(launch_mutex_);
    while (workers_.size() < n) workers_.push_back(std::make_unique<Worker>());
    std::latch done(n);
    for (unsigned i = 0; i < n; ++i) {
      Worker& w = *workers_[i];
      w.task = &task, w.index = i, w.done = &done;
      w.go.release();
    }
    done.wait();
  }

 private:
  struct Worker {
    std::binary_semaphore go{0};
    const std::function<void(unsigned)>* task = nullptr;
    unsigned index = 0;
    std::latch* done = nullptr;
    std::thread thread{[this] {
      for (;;) {
        go.acquire();
        (*task)(index);
        done->count_down();
      }
    }};
    Worker() { thread.detach(); }
  };
  std::mutex launch_mutex_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

// The baton of a cooperative grid. Only the block holding it runs, so its
// state needs no lock: a semaphore hand-over orders every access.
class CooperativeGrid final : public GridBarrierHooks {
 public:
  CooperativeGrid(unsigned blocks, const Config& cfg) : n_(blocks), state_(blocks, State::Ready), cfg_(cfg) {
    rng_.s = cfg.seed ^ 0x5eedull;
    for (unsigned i = 0; i < n_; ++i) turn_.push_back(std::make_unique<std::binary_semaphore>(0));
  }

  void start() { turn_[first()]->release(); }

  // Worker of block b: waits for its first turn; false when the grid failed.
  bool wait_first_turn(unsigned b) {
    turn_[b]->acquire();
    return !aborted_;
  }

  void finished(unsigned b) {
    state_[b] = State::Done;
    hand_over(b);
  }

  void fail(unsigned b, const std::string& msg) {
    state_[b] = State::Done;
    if (error_.empty()) error_ = msg;
    abort_all();
  }

  bool arrive_and_wait(unsigned b, const std::source_location& at) override {
    barrier_at_ = at;
    state_[b] = State::AtBarrier;
    if (++at_barrier_ == n_) {  // the last block releases the grid
      for (auto& s : state_) s = State::Ready;
      at_barrier_ = 0;
    }
    const int next = hand_over(b);
    if (next == int(b)) return true;
    turn_[b]->acquire();
    return !aborted_;
  }

  const std::string& error() const { return error_; }

 private:
  enum class State : uint8_t { Ready, AtBarrier, Done };

  unsigned first() { return cfg_.schedule == Schedule::Random ? unsigned(rng_.next() % n_) : 0; }

  // Gives the baton to the next ready block (possibly b itself); returns it,
  // or -1 when none is ready (finished, or a deadlock, then reported).
  int hand_over(unsigned b) {
    int next = -1;
    if (cfg_.schedule == Schedule::Random) {
      std::vector<unsigned> ready;
      for (unsigned i = 0; i < n_; ++i)
        if (state_[i] == State::Ready) ready.push_back(i);
      if (!ready.empty()) next = int(ready[rng_.next() % ready.size()]);
    } else {
      for (unsigned k = 1; k <= n_ && next < 0; ++k)
        if (state_[(b + k) % n_] == State::Ready) next = int((b + k) % n_);
    }
    if (next >= 0) {
      if (next != int(b)) turn_[next]->release();
      return next;
    }
    if (at_barrier_ > 0) {
      std::vector<unsigned> waiting, done;
      for (unsigned i = 0; i < n_; ++i) (state_[i] == State::AtBarrier ? waiting : done).push_back(i);
      if (error_.empty())
        error_ = "fusedseq emulator: deadlock at the grid barrier at " + where(barrier_at_) + ": blocks " +
                 ranges(waiting) + " wait there, blocks " + ranges(done) + " have exited without reaching it";
      abort_all();
    }
    return -1;
  }

  void abort_all() {
    aborted_ = true;
    for (unsigned i = 0; i < n_; ++i)
      if (state_[i] != State::Done) state_[i] = State::Done, turn_[i]->release();
  }

  unsigned n_;
  std::vector<State> state_;
  std::vector<std::unique_ptr<std::binary_semaphore>> turn_;
  Config cfg_;
  Rng rng_;
  unsigned at_barrier_ = 0;
  std::source_location barrier_at_;
  bool aborted_ = false;
  std::string error_;
};

void check_launch(const LaunchShape& s, bool cooperative) {
  const std::string at = " (kernel launched at " + launch_site(s) + ")";
  const unsigned long long threads = 1ull * s.block.x * s.block.y * s.block.z;
  if (threads == 0 || threads > 1024 || s.block.x > 1024 || s.block.y > 1024 || s.block.z > 64)
    throw Error("fusedseq emulator: invalid block (" + std::to_string(s.block.x) + ", " + std::to_string(s.block.y) +
                ", " + std::to_string(s.block.z) + "): at most 1024 threads, z <= 64" + at);
  if (s.grid.x == 0 || s.grid.y == 0 || s.grid.z == 0 || s.grid.x > 0x7fffffffu || s.grid.y > 65535 ||
      s.grid.z > 65535)
    throw Error("fusedseq emulator: invalid grid (" + std::to_string(s.grid.x) + ", " + std::to_string(s.grid.y) +
                ", " + std::to_string(s.grid.z) + ")" + at);
  if (s.smem_bytes > kMaxDynamicSmem)
    throw Error("fusedseq emulator: " + std::to_string(s.smem_bytes) + " bytes of dynamic shared memory requested, " +
                "at most " + std::to_string(kMaxDynamicSmem) + at);
  if (cooperative && 1ull * s.grid.x * s.grid.y * s.grid.z > 1024)
    throw Error("fusedseq emulator: a cooperative launch of more than 1024 blocks cannot be co-resident" + at);
}

void run_grid(const std::function<void()>& body, const LaunchShape& s, bool cooperative) {
  check_launch(s, cooperative);
  const Config cfg = config();
  const unsigned blocks = s.grid.x * s.grid.y * s.grid.z;
  const std::string site = launch_site(s);
  if (cooperative) {
    CooperativeGrid grid(blocks, cfg);
    grid.start();
    WorkerPool::get().run(blocks, [&](unsigned b) {
      if (!grid.wait_first_turn(b)) return;
      Block block(body, s.grid, s.block, b, s.smem_bytes, cfg, &grid, site);
      const std::string err = block.run();
      if (block.aborted()) return;  // another block failed and reported
      if (!err.empty())
        grid.fail(b, err);
      else
        grid.finished(b);
    });
    if (!grid.error().empty()) throw Error(grid.error());
    return;
  }
  std::atomic<unsigned> next{0};
  std::atomic<bool> stop{false};
  std::mutex m;
  std::string first_error;
  unsigned first_error_block = ~0u;
  auto worker = [&](unsigned) {
    for (unsigned b; !stop.load(std::memory_order_relaxed) && (b = next.fetch_add(1)) < blocks;) {
      Block block(body, s.grid, s.block, b, s.smem_bytes, cfg, nullptr, site);
      const std::string err = block.run();
      if (!err.empty()) {
        std::lock_guard<std::mutex> lock(m);
        if (b < first_error_block) first_error_block = b, first_error = err;
        stop = true;
      }
    }
  };
  const unsigned workers = std::min<unsigned>(blocks, static_cast<unsigned>(cfg.workers));
  if (workers <= 1)
    worker(0);  // on the calling thread
  else
    WorkerPool::get().run(workers, worker);
  if (!first_error.empty()) throw Error(first_error);
}

}  // namespace fusedseq::emu
#endif  // FUSEDSEQ_EMU_IMPLEMENTATION
