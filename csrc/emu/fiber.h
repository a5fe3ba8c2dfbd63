// User-space context switching: each emulated CUDA thread is a fiber with its
// own stack, and a switch costs a handful of instructions.
//
// Why our own switch: ucontext pays a signal-mask system call per switch (10x
// slower; csrc/emu/README.md has both measured), and Boost.Context, though it
// installs from PyPI (cmeel-boost, a 36 MB wheel of all of Boost), supports
// ASan only in its ucontext flavour, and the ASan build is what catches
// out-of-bounds reads. On x86-64 we save the six
// callee-saved registers and swap stack pointers; elsewhere we fall back to
// ucontext (correct, slow). Under ASan every switch is announced with
// __sanitizer_start/finish_switch_fiber so that ASan knows which stack is live.
//
// The switch does not save MXCSR or the x87 control word: emulated kernels
// never change the floating-point environment.
#pragma once
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "emu/config.h"

#if defined(__SANITIZE_ADDRESS__)
#define FUSEDSEQ_EMU_ASAN 1
#else
#define FUSEDSEQ_EMU_ASAN 0
#endif

#if defined(__x86_64__) && !defined(FUSEDSEQ_EMU_UCONTEXT)
#define FUSEDSEQ_EMU_ASM_SWITCH 1
#else
#define FUSEDSEQ_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

#if FUSEDSEQ_EMU_ASAN
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_poison_memory_region(void const volatile* addr, size_t size);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
}
#endif

#if FUSEDSEQ_EMU_ASM_SWITCH
extern "C" {
// Saves rbp, rbx, r12-r15 on the current stack, stores the stack pointer in
// *save_sp, loads load_sp and pops the same registers from there.
void fusedseq_emu_switch(void** save_sp, void* load_sp);
// First code a new fiber runs: calls r13(r12) and never returns.
void fusedseq_emu_fiber_start();
}
// Emitted in every translation unit that includes this header, in a COMDAT
// group so that the linker keeps one copy (the emulator stays header-only).
__asm__(
    ".pushsection .text.fusedseq_emu_switch,\"axG\",@progbits,fusedseq_emu_switch,comdat\n"
    ".weak fusedseq_emu_switch\n"
    ".hidden fusedseq_emu_switch\n"
    ".type fusedseq_emu_switch,@function\n"
    "fusedseq_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size fusedseq_emu_switch, .-fusedseq_emu_switch\n"
    ".weak fusedseq_emu_fiber_start\n"
    ".hidden fusedseq_emu_fiber_start\n"
    ".type fusedseq_emu_fiber_start,@function\n"
    "fusedseq_emu_fiber_start:\n"
    "  movq %r12, %rdi\n"
    "  callq *%r13\n"
    "  ud2\n"
    ".size fusedseq_emu_fiber_start, .-fusedseq_emu_fiber_start\n"
    ".popsection\n");
#endif

namespace fusedseq::emu {

// An mmap'ed stack with an inaccessible guard page below it, so that a CUDA
// thread overflowing its stack faults instead of corrupting a neighbour.
class Stack {
 public:
  Stack() = default;
  explicit Stack(size_t usable) {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    usable_ = (usable + page_ - 1) / page_ * page_;
    void* p = mmap(nullptr, usable_ + page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw Error("fusedseq emulator: cannot map a " + std::to_string(usable_) + "-byte fiber stack");
    mprotect(p, page_, PROT_NONE);
    base_ = p;
  }
  Stack(Stack&& o) noexcept { *this = static_cast<Stack&&>(o); }
  Stack& operator=(Stack&& o) noexcept {
    release();
    base_ = o.base_, usable_ = o.usable_, page_ = o.page_;
    o.base_ = nullptr;
    return *this;
  }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  ~Stack() { release(); }

  void* bottom() const { return static_cast<char*>(base_) + page_; }  // lowest usable byte
  size_t size() const { return usable_; }
  char* top() const { return static_cast<char*>(bottom()) + usable_; }

 private:
  void release() {
    if (base_) munmap(base_, usable_ + page_);
    base_ = nullptr;
  }
  void* base_ = nullptr;
  size_t usable_ = 0, page_ = 0;
};

// A suspended execution context: a fiber, or the OS thread that runs fibers.
struct Context {
#if FUSEDSEQ_EMU_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  const void* stack_bottom = nullptr;  // for ASan
  size_t stack_size = 0;
};

// The context of the calling OS thread (the one that will run fibers).
inline void init_thread_context(Context& c) {
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr = nullptr;
    size_t size = 0;
    pthread_attr_getstack(&attr, &addr, &size);
    c.stack_bottom = addr;
    c.stack_size = size;
    pthread_attr_destroy(&attr);
  }
}

#if !FUSEDSEQ_EMU_ASM_SWITCH
inline void ucontext_trampoline(unsigned e_lo, unsigned e_hi, unsigned a_lo, unsigned a_hi) {
  auto entry = reinterpret_cast<void (*)(void*)>((uintptr_t(e_hi) << 32) | e_lo);
  entry(reinterpret_cast<void*>((uintptr_t(a_hi) << 32) | a_lo));
}
#endif

// Prepares `c` to run entry(arg) on `stack` when first switched to.
inline void make_context(Context& c, const Stack& stack, void (*entry)(void*), void* arg) {
  c.stack_bottom = stack.bottom();
  c.stack_size = stack.size();
#if FUSEDSEQ_EMU_ASM_SWITCH
  // Popped by fusedseq_emu_switch: r15 r14 r13 r12 rbx rbp, then `ret` into
  // fusedseq_emu_fiber_start with rsp 16-byte aligned, as `call` expects.
  auto top = reinterpret_cast<uintptr_t>(stack.top()) & ~uintptr_t{15};
  auto* sp = reinterpret_cast<void**>(top - 72);
  sp[0] = nullptr;                                           // r15
  sp[1] = nullptr;                                           // r14
  sp[2] = reinterpret_cast<void*>(entry);                    // r13
  sp[3] = arg;                                               // r12
  sp[4] = nullptr;                                           // rbx
  sp[5] = nullptr;                                           // rbp
  sp[6] = reinterpret_cast<void*>(&fusedseq_emu_fiber_start);  // return address
  sp[7] = nullptr;
  sp[8] = nullptr;
  c.sp = sp;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack.bottom();
  c.uc.uc_stack.ss_size = stack.size();
  c.uc.uc_link = nullptr;
  // makecontext passes ints; split the pointer in two.
  const auto a = reinterpret_cast<uintptr_t>(arg), e = reinterpret_cast<uintptr_t>(entry);
  makecontext(&c.uc, reinterpret_cast<void (*)()>(&ucontext_trampoline), 4, unsigned(e), unsigned(e >> 32),
              unsigned(a), unsigned(a >> 32));
#endif
}

// First thing a new fiber does (ASan must learn that the switch completed).
inline void fiber_started() {
#if FUSEDSEQ_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}

// Suspends `from` and resumes `to`. `from_dies`: `from` is never resumed
// again (lets ASan drop its fake stack).
inline void switch_context(Context& from, Context& to, bool from_dies = false) {
#if FUSEDSEQ_EMU_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(from_dies ? nullptr : &fake_stack, to.stack_bottom, to.stack_size);
#else
  (void)from_dies;
#endif
#if FUSEDSEQ_EMU_ASM_SWITCH
  fusedseq_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
#if FUSEDSEQ_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

// ASan keeps the shadow of frames that never returned (a fiber's first frames,
// a block stopped by an error): clear it before a stack is reused.
inline void forget_stack_frames(const Stack& s) {
#if FUSEDSEQ_EMU_ASAN
  __asan_unpoison_memory_region(s.bottom(), s.size());
#else
  (void)s;
#endif
}

inline void poison(const void* p, size_t n) {
#if FUSEDSEQ_EMU_ASAN
  __asan_poison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}

inline void unpoison(const void* p, size_t n) {
#if FUSEDSEQ_EMU_ASAN
  __asan_unpoison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}

}  // namespace fusedseq::emu
