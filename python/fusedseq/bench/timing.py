"""Timing: warm-up, interleaved rounds, median/IQR, and whether to trust it.

CPU: ``perf_counter_ns`` per call, and the process's minor page faults over
the timed calls (first touches of freshly mapped memory: on this VM an
nn.LSTM training step spends ~20 ms of its ~110 in them, which an allocator
that keeps its memory mapped removes; benchmarks/NOTES.md). CUDA: a pair of
events per call, read after one synchronize, L2 flushed before each call
outside the events (as llm.c does). The collector is paused while timing.
Paths take their runs in rounds (A B C, A B C, ...) so a change of load
hits all alike; a timing is *unstable* when its rounds disagree, its runs
spread widely, or other processes took cores it needed (/proc/stat).
"""
from __future__ import annotations

import gc
import math
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional, Sequence

import torch

try:
    import resource
except ImportError:  # no getrusage (Windows): no fault counts
    resource = None

ROUNDS_DISAGREE = 1.3   # slowest / fastest round median above this: unstable
IQR_TOO_WIDE = 0.3      # IQR / median above this: unstable
SPARE_CORES = 0.25      # other processes may use this much more than the cores we leave free


@dataclass(frozen=True)
class Budget:
    """Seconds of timed runs per path, split over ``rounds``; ``retries``: re-measurements when unstable."""
    seconds: float = 0.5
    min_runs: int = 10
    max_runs: int = 10_000
    warmup_s: float = 0.1
    rounds: int = 3
    retries: int = 2
    retry_below_s: float = 10.0  # a measurement that took longer is not repeated


@dataclass
class Timing:
    """Seconds per call of one path, and ``unstable``: why not to trust it ("" if fine);
    ``faults_per_call``: minor page faults per timed call (CPU; None elsewhere)."""
    median: float
    q1: float
    q3: float
    runs: int
    round_medians: list[float] = field(default_factory=list)
    unstable: str = ""
    faults_per_call: Optional[float] = None

    @classmethod
    def of(cls, rounds: Sequence[Sequence[float]]) -> "Timing":
        samples = [s for r in rounds for s in r]
        q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else samples * 3
        t = cls(med, q1, q3, len(samples), [statistics.median(r) for r in rounds if r])
        spread = max(t.round_medians) / max(min(t.round_medians), 1e-12)
        if spread > ROUNDS_DISAGREE:
            t.unstable = f"rounds differ {spread:.1f}x"
        elif t.q3 - t.q1 > IQR_TOO_WIDE * t.median:
            t.unstable = f"IQR {(t.q3 - t.q1) / t.median:.0%} of median"
        return t


@contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def l2_flusher(device: torch.device) -> Callable[[], None]:
    """Overwrites a buffer twice the GPU's L2 size (a no-op on the CPU)."""
    if device.type != "cuda":
        return lambda: None
    size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 << 20
    buf = torch.empty(2 * size, dtype=torch.uint8, device=device)
    return buf.zero_


def sample(fn: Callable[[], object], runs: int, device: torch.device,
           flush: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds per call of ``runs`` calls of the warm ``fn``."""
    with gc_paused():
        if device.type == "cuda":
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(runs)]
            for start, end in events:
                flush()
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(device)
            return [start.elapsed_time(end) * 1e-3 for start, end in events]
        out, clock = [], time.perf_counter_ns
        for _ in range(runs):
            t0 = clock()
            fn()
            out.append((clock() - t0) * 1e-9)
        return out


def warm_up(fn: Callable[[], object], device: torch.device, budget: Budget) -> int:
    """Calls ``fn`` ≥ 3 times and ``warmup_s``; returns the run count that fills the budget."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with gc_paused():
        fn()
        sync()
        runs, start = 0, time.perf_counter()
        while True:
            fn()
            sync()
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= budget.seconds or (runs >= 3 and elapsed >= budget.warmup_s):
                break
    per_call = elapsed / runs
    return max(budget.min_runs, min(budget.max_runs, int(budget.seconds / max(per_call, 1e-9))))


def minor_faults() -> int:
    """Minor page faults of this process so far, all threads (getrusage; 0 without it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


@dataclass
class Contender:
    """One path of an interleaved measurement; ``faults``: minor page faults over its
    timed ``calls`` (CPU)."""
    fn: Callable[[], object]
    runs: int
    context: Callable[[], ContextManager] = nullcontext
    rounds: list[list[float]] = field(default_factory=list)
    failure: Optional[BaseException] = None
    faults: int = 0
    calls: int = 0

    def timing(self, device: torch.device) -> Timing:
        t = Timing.of(self.rounds)
        if device.type == "cpu" and self.calls and resource:
            t.faults_per_call = self.faults / self.calls
        return t


def interleave(contenders: Sequence[Contender], device: torch.device, rounds: int) -> Optional[str]:
    """Times the contenders in turns; returns why all are unstable (other processes took our cores) or None."""
    flush = l2_flusher(device)
    meter = LoadMeter()
    for c in contenders:
        c.rounds, c.failure, c.faults, c.calls = [], None, 0, 0
    for _ in range(max(1, rounds)):
        for c in contenders:
            if c.failure is None:
                try:
                    with c.context():
                        before = minor_faults()
                        c.rounds.append(sample(c.fn, math.ceil(c.runs / rounds), device, flush))
                        c.faults += minor_faults() - before
                        c.calls += len(c.rounds[-1])
                except Exception as exc:  # noqa: BLE001  reported on that path's row
                    c.failure = exc.with_traceback(None)  # frees the failed call's tensors
    return meter.verdict() if device.type == "cpu" else None


class LoadMeter:
    """CPU other processes used since construction: /proc/stat's busy time less our own (os.times)."""
    MIN_WINDOW_S = 0.25  # /proc/stat counts in 10 ms ticks: shorter windows are noise

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat", encoding="ascii") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    def others_cores(self) -> Optional[float]:
        """Cores' worth of CPU that other processes used, or None if unknown."""
        end = self._read()
        if self.start is None or end is None or end[0] - self.start[0] < self.MIN_WINDOW_S:
            return None
        wall = end[0] - self.start[0]
        return max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2])) / wall

    @classmethod
    def measure(cls, seconds: float) -> Optional[float]:
        meter = cls()
        time.sleep(max(seconds, cls.MIN_WINDOW_S))
        return meter.others_cores()

    def verdict(self) -> Optional[str]:
        others = self.others_cores()
        cores = os.cpu_count() or 1
        free = max(0, cores - torch.get_num_threads())
        if others is not None and others > free + SPARE_CORES:
            return f"load: other processes used {others:.1f} of {cores} cores"
        return None


@contextmanager
def busy_cores(count: Optional[int] = None):
    """Runs the block with ``count`` (default: every core) other processes
    spinning, to show how the ops behave on a machine that is not theirs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(count or os.cpu_count() or 1)]
    try:
        time.sleep(0.2)  # let them start spinning
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()
