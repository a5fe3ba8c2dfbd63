// How the emulator schedules CUDA threads, chosen by environment variables so
// that one test binary (or one Python process) can be run under several
// schedules without rebuilding:
//
//   FUSEDSEQ_EMU_SCHEDULE  round-robin (default) | warp0-ahead | random
//   FUSEDSEQ_EMU_SEED      seed of the random schedule (default 1)
//   FUSEDSEQ_EMU_CP_ASYNC  wait (default): cp.async data lands at wait_group
//                          issue: it lands when the copy is issued
//   FUSEDSEQ_EMU_WORKERS   OS threads that run independent blocks (default:
//                          the machine's cores; cooperative grids get one per block)
//   FUSEDSEQ_EMU_STACK_KB  stack of each CUDA thread (default 128, 512 under ASan)
//
// Each schedule hides a different class of bug, so CI runs more than one
// (see csrc/emu/README.md for which one catches which planted bug).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

namespace fusedseq::emu {

// Raised (as a C++ exception out of the launch) for every misuse the emulator
// detects: deadlocks, divergent collectives, bad launches, bad addresses.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Schedule {
  RoundRobin,  // next runnable thread after the current one: warps advance in lockstep
  Warp0Ahead,  // warp 0 runs whenever it can: it gets as far ahead as the barriers allow
  Random,      // a seeded uniform choice among the runnable threads
};

enum class CopyLanding {
  AtWait,   // cp.async reads its source at issue, writes shared memory at wait_group
  AtIssue,  // cp.async completes at once (a missing barrier before a refill shows)
};

struct Config {
  Schedule schedule = Schedule::RoundRobin;
  CopyLanding landing = CopyLanding::AtWait;
  uint64_t seed = 1;
  int workers = 1;
  size_t stack_bytes = 128 * 1024;
};

inline const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::RoundRobin: return "round-robin";
    case Schedule::Warp0Ahead: return "warp0-ahead";
    case Schedule::Random: return "random";
  }
  return "?";
}

namespace detail {

inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

inline long env_long(const char* name, long fallback, long lo, long hi) {
  const std::string v = env(name);
  if (v.empty()) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (*end != '\0' || n < lo || n > hi)
    throw Error(std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], got '" + v + "'");
  return n;
}

// A programmatic override (C++ tests set it; Python tests use the environment).
inline std::optional<Config>& config_override() {
  static std::optional<Config> c;
  return c;
}

}  // namespace detail

#if defined(__SANITIZE_ADDRESS__)
inline constexpr size_t kDefaultStackKb = 512;  // ASan's redzones and fake frames need room
#else
inline constexpr size_t kDefaultStackKb = 128;
#endif

// Read at every launch, so a test may change the environment between launches.
Config config();

// Sets the configuration for the lifetime of this object (C++ tests).
class ScopedConfig {
 public:
  explicit ScopedConfig(const Config& c) : saved_(detail::config_override()) { detail::config_override() = c; }
  ~ScopedConfig() { detail::config_override() = saved_; }
  ScopedConfig(const ScopedConfig&) = delete;
  ScopedConfig& operator=(const ScopedConfig&) = delete;

 private:
  std::optional<Config> saved_;
};

}  // namespace fusedseq::emu

#if defined(FUSEDSEQ_EMU_IMPLEMENTATION)
#include <thread>

namespace fusedseq::emu {

Config config() {
  if (detail::config_override()) return *detail::config_override();
  Config c;
  const std::string s = detail::env("FUSEDSEQ_EMU_SCHEDULE");
  if (s.empty() || s == "round-robin")
    c.schedule = Schedule::RoundRobin;
  else if (s == "warp0-ahead")
    c.schedule = Schedule::Warp0Ahead;
  else if (s == "random")
    c.schedule = Schedule::Random;
  else
    throw Error("FUSEDSEQ_EMU_SCHEDULE must be round-robin, warp0-ahead or random, got '" + s + "'");
  const std::string l = detail::env("FUSEDSEQ_EMU_CP_ASYNC");
  if (l.empty() || l == "wait")
    c.landing = CopyLanding::AtWait;
  else if (l == "issue")
    c.landing = CopyLanding::AtIssue;
  else
    throw Error("FUSEDSEQ_EMU_CP_ASYNC must be wait or issue, got '" + l + "'");
  c.seed = static_cast<uint64_t>(detail::env_long("FUSEDSEQ_EMU_SEED", 1, 0, 1L << 62));
  const long cores = std::max(1u, std::thread::hardware_concurrency());
  c.workers = static_cast<int>(detail::env_long("FUSEDSEQ_EMU_WORKERS", cores, 1, 256));
  c.stack_bytes = static_cast<size_t>(detail::env_long("FUSEDSEQ_EMU_STACK_KB", kDefaultStackKb, 16, 1 << 20)) * 1024;
  return c;
}

}  // namespace fusedseq::emu
#endif  // FUSEDSEQ_EMU_IMPLEMENTATION
