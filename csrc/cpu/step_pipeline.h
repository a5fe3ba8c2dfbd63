// One thread runs a recurrence step after step while another works through
// the large product that feeds it or that it feeds.
//
// Why. A step of the LSTM at B = 16, H = 256 is 4.2M multiply-adds: split
// over two cores, each half is ~45 µs of work behind a fork and a join, and
// any delay of either thread (an interrupt, a busy neighbour) stalls both,
// 200 times per sequence. The input projection of all steps (as much work as
// the recurrence at I = H) has no such chain. So on two threads the pair is
// cut the other way: thread 0 runs every step of the recurrence on its own,
// thread 1 runs the product, chunk of steps by chunk of steps:
//   forward   the projection x_t W_ihᵀ of chunk k, ahead of the steps that
//             read it;
//   backward  dx_t = dz_t W_ih and the chunk's share of the weight gradients
//             (dz_tᵀ x_t, dz_tᵀ h_{t-1}), behind the steps (in reverse time)
//             that produced dz_t.
// The threads meet only at chunk boundaries, through the counters below.
//
// No thread ever waits for work that nobody is doing. In the forward the
// recurrence claims a chunk it needs that is still unclaimed and computes it
// itself; it waits only for a chunk the other thread has claimed, i.e. is
// computing. In the backward the recurrence thread, after its last step,
// works through whatever is left beside the worker; a worker that finds the
// recurrence not started leaves after a grace period. So the pair is correct
// whether the two tasks run at once, one after the other, or on one thread.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FUSEDSEQ_PAUSE() _mm_pause()
#else
#define FUSEDSEQ_PAUSE() ((void)0)
#endif

// In the ISA namespace like the kernels that use it: an inline function of a
// header compiled into both the baseline and the AVX2 objects may be kept by
// the linker in its AVX2 copy, which the baseline code would then call (the
// SideWork constructor's loop was vectorised, tests/test_build.py).
namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA {

// Spins briefly, then yields: the awaited thread may have been descheduled.
template <typename Ready>
inline void spin_until(Ready&& ready) {
  for (int i = 0; !ready(); ++i) {
    if (i < 4096)
      FUSEDSEQ_PAUSE();
    else
      std::this_thread::yield();
  }
}

// Chunks 0..n-1 of side work, claimed in order by whichever thread asks.
class ChunkQueue {
 public:
  explicit ChunkQueue(int64_t n) : n_(n), done_(std::make_unique<std::atomic<int>[]>(n)) {
    for (int64_t k = 0; k < n; ++k) done_[k].store(0, std::memory_order_relaxed);
  }
  int64_t size() const { return n_; }

  // The next unclaimed chunk, or -1 when all are claimed.
  int64_t claim() {
    const int64_t k = next_.fetch_add(1, std::memory_order_relaxed);
    return k < n_ ? k : -1;
  }
  // Claims chunk k only if it is the next unclaimed one and k < limit.
  int64_t claim_below(int64_t limit) {
    int64_t k = next_.load(std::memory_order_relaxed);
    while (k < limit && k < n_)
      if (next_.compare_exchange_weak(k, k + 1, std::memory_order_relaxed)) return k;
    return -1;
  }
  void finish(int64_t k) { done_[k].store(1, std::memory_order_release); }
  bool is_done(int64_t k) const { return done_[k].load(std::memory_order_acquire) != 0; }

  // Forward: returns once chunk k is done, computing with `work(c)` every
  // unclaimed chunk c <= k itself and waiting only for claimed ones.
  template <typename Work>
  void ensure(int64_t k, Work&& work) {
    while (!is_done(k)) {
      const int64_t c = claim_below(k + 1);
      if (c >= 0) {
        work(c);
        finish(c);
      } else {
        spin_until([&] { return is_done(k); });
      }
    }
  }

 private:
  int64_t n_;
  std::unique_ptr<std::atomic<int>[]> done_;
  std::atomic<int64_t> next_{0};
};

// Backward: side work on chunks as the recurrence releases them, in the
// order it releases them (i = 0, 1, ...: the i-th released chunk). Two kinds
// of item per released chunk:
//   free     one per chunk (dx of the chunk): any thread, any order;
//   ordered  one per chunk and stream (a block of columns of the weight
//            gradients, accumulated chunk after chunk): a stream's items run
//            one at a time and in release order, whichever thread runs them,
//            so every element of dW is summed in the same order on every run
//            and every thread count (bit-for-bit repeatable).
// The worker thread runs items while the recurrence steps; the recurrence
// thread joins after its last step, and both share what is left.
class SideWork {
 public:
  SideWork(int64_t n, int64_t streams)
      : n_(n), streams_(streams), progress_(std::make_unique<std::atomic<int64_t>[]>(streams)),
        busy_(std::make_unique<std::atomic<bool>[]>(streams)) {
    for (int64_t s = 0; s < streams; ++s) {
      progress_[s].store(0, std::memory_order_relaxed);
      busy_[s].store(false, std::memory_order_relaxed);
    }
  }

  void start() { running_.store(true, std::memory_order_release); }
  // The recurrence has produced everything the first `count` chunks need.
  void release(int64_t count) { released_.store(count, std::memory_order_release); }
  void stop() { running_.store(false, std::memory_order_release); }

  // Runs free(i) and ordered(i, stream) items until none is left for this
  // thread. Ordered items go first: they are the constrained ones (at most
  // one thread per stream), so the tail the two threads share at the end is
  // mostly free items. The worker (recurrence_thread false) waits for
  // releases while the recurrence runs, and leaves if it never starts (a
  // short grace period: then the recurrence thread does everything).
  template <typename Free, typename Ordered>
  void run(Free&& free, Ordered&& ordered, bool recurrence_thread) {
    for (int64_t spins = 0, s0 = recurrence_thread ? streams_ / 2 : 0;;) {
      const int64_t released = released_.load(std::memory_order_acquire);
      if (run_ordered(released, s0, ordered) || run_free(released, free)) {
        spins = 0;
        continue;
      }
      if (all_done()) return;
      // Otherwise the rest is not released yet or another thread is on it.
      const bool never_started = released == 0 && !running_.load(std::memory_order_acquire);
      if (!recurrence_thread && never_started && spins > 20000) return;
      if (++spins < 4096)
        FUSEDSEQ_PAUSE();
      else
        std::this_thread::yield();
    }
  }

 private:
  // One ordered item from the first stream (from s0 on) that has a released
  // chunk left and no thread on it.
  template <typename Ordered>
  bool run_ordered(int64_t released, int64_t s0, Ordered& ordered) {
    for (int64_t k = 0; k < streams_; ++k) {
      const int64_t s = (s0 + k) % streams_;
      if (progress_[s].load(std::memory_order_acquire) >= released) continue;
      if (busy_[s].exchange(true, std::memory_order_acquire)) continue;
      const int64_t i = progress_[s].load(std::memory_order_relaxed);
      const bool ran = i < released;
      if (ran) {
        ordered(i, s);
        progress_[s].store(i + 1, std::memory_order_release);
      }
      busy_[s].store(false, std::memory_order_release);
      if (ran) return true;
    }
    return false;
  }
  template <typename Free>
  bool run_free(int64_t released, Free& free) {
    int64_t i = next_free_.load(std::memory_order_relaxed);
    while (i < released)
      if (next_free_.compare_exchange_weak(i, i + 1, std::memory_order_relaxed)) {
        free(i);
        return true;
      }
    return false;
  }
  bool all_done() const {
    if (next_free_.load(std::memory_order_relaxed) < n_) return false;
    for (int64_t s = 0; s < streams_; ++s)
      if (progress_[s].load(std::memory_order_acquire) < n_) return false;
    return true;
  }

  int64_t n_, streams_;
  std::unique_ptr<std::atomic<int64_t>[]> progress_;  // items done per stream
  std::unique_ptr<std::atomic<bool>[]> busy_;         // a thread is running the stream's next item
  std::atomic<int64_t> next_free_{0}, released_{0};
  std::atomic<bool> running_{false};
};

}  // namespace fusedseq::cpu::FUSEDSEQ_CPU_ISA
