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
//   backward  dx_t = dz_t W_ih of chunk k, behind the steps (in reverse time)
//             that produced dz_t.
// The threads meet only at chunk boundaries, through the counters below.
//
// No thread ever waits for work that nobody is doing. In the forward the
// recurrence claims a chunk it needs that is still unclaimed and computes it
// itself; it waits only for a chunk the other thread has claimed, i.e. is
// computing. In the backward the worker waits for the recurrence only while
// the recurrence is running; otherwise it leaves and the recurrence thread
// takes what is left after its last step. So the pair is correct whether the
// two tasks run at once, one after the other, or on one thread.
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

namespace fusedseq::cpu {

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
// order it releases them (item i of the queue is the i-th released chunk).
class DrainQueue {
 public:
  explicit DrainQueue(int64_t n) : n_(n) {}
  int64_t size() const { return n_; }

  void start() { running_.store(true, std::memory_order_release); }
  // The recurrence has produced everything the first `count` items need.
  void release(int64_t count) { released_.store(count, std::memory_order_release); }
  void stop() { running_.store(false, std::memory_order_release); }

  // The worker's loop: work(i) on released items; waits for more only while
  // the recurrence runs (or may still start: a short grace period).
  template <typename Work>
  void drain(Work&& work) {
    for (int spins = 0;;) {
      int64_t i = next_.load(std::memory_order_relaxed);
      if (i >= n_) return;
      if (i < released_.load(std::memory_order_acquire)) {
        if (next_.compare_exchange_weak(i, i + 1, std::memory_order_relaxed)) work(i);
        continue;
      }
      if (!running_.load(std::memory_order_acquire) && (started_once() || spins > 20000)) return;
      if (++spins < 4096)
        FUSEDSEQ_PAUSE();
      else
        std::this_thread::yield();
    }
  }
  // The recurrence thread, after its last step: everything still unclaimed.
  template <typename Work>
  void finish_all(Work&& work) {
    for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) work(i);
  }

 private:
  bool started_once() const { return released_.load(std::memory_order_acquire) > 0; }
  int64_t n_;
  std::atomic<int64_t> next_{0}, released_{0};
  std::atomic<bool> running_{false};
};

}  // namespace fusedseq::cpu
