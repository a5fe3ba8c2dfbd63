"""Timing callables: warm-up, then the median of many runs.

CPU runs are timed with ``time.perf_counter_ns`` (monotonic, ns resolution)
around each call. CUDA runs are timed with a pair of ``torch.cuda.Event``s
per call, all recorded without synchronising in between and read after one
final ``synchronize``: that measures device time per call (including any
launch gaps the host causes) without adding a host round trip to each run.

The number of runs adapts to a time budget per measurement so that cheap
calls get thousands of samples and expensive ones at least ``min_runs``.
The median and the inter-quartile range are robust to the occasional
preempted run on a busy machine, which the mean is not.

The runs of the paths being compared are split into ``rounds`` taken in
turn (A B C, A B C, ...; see :func:`time_interleaved`): when something else
on the machine speeds up or slows down during the measurement, every path
sees a share of it, instead of whichever happened to run at that moment.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, ContextManager, Optional, Sequence

import torch


@dataclass(frozen=True)
class TimingOptions:
    """How hard to try. ``budget_s`` is the wall time aimed for per measured
    callable (not counting warm-up); the run count is clamped to
    ``[min_runs, max_runs]`` and spread over ``rounds``."""
    budget_s: float = 1.0
    min_runs: int = 10
    max_runs: int = 10_000
    warmup_runs: int = 3
    warmup_s: float = 0.1  # keep warming up until this much time has passed
    rounds: int = 3


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, first and third quartiles, number of runs."""
    median_s: float
    q1_s: float
    q3_s: float
    runs: int

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def to_dict(self) -> dict:
        return {**asdict(self), "iqr_s": self.iqr_s}


def summarize(samples: Sequence[float]) -> Timing:
    """Median and quartiles of per-call times."""
    if len(samples) < 2:
        return Timing(samples[0], samples[0], samples[0], len(samples))
    q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Timing(median_s=med, q1_s=q1, q3_s=q3, runs=len(samples))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _gc_paused():
    """The garbage collector running inside a timed call is pure noise
    (timeit pauses it too); cycles are collected once afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def warm_up(fn: Callable[[], object], device: torch.device, opts: TimingOptions) -> float:
    """Runs ``fn`` until both the warm-up count and time are reached (the
    first call may compile, allocate or autotune); returns the estimated
    seconds per call from the calls after the first."""
    with _gc_paused():
        fn()  # first call: lazy initialisation, torch.compile, cuDNN plans...
        _sync(device)
        runs, start = 0, time.perf_counter()
        while True:
            fn()
            runs += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            warm = runs >= opts.warmup_runs and elapsed >= min(opts.warmup_s, opts.budget_s)
            if warm or elapsed >= opts.budget_s:  # a call slower than the budget: one is enough
                return elapsed / runs


def run_count(per_call_s: float, opts: TimingOptions) -> int:
    """Runs that fill the budget, clamped to ``[min_runs, max_runs]``."""
    wanted = int(opts.budget_s / max(per_call_s, 1e-9))
    return max(opts.min_runs, min(opts.max_runs, wanted))


def _sample_cpu(fn: Callable[[], object], runs: int) -> list[float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1e-9)
    return samples


def _sample_cuda(fn: Callable[[], object], runs: int, device: torch.device) -> list[float]:
    with torch.cuda.device(device):
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(runs)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
    return [start.elapsed_time(end) * 1e-3 for start, end in events]  # elapsed_time is in ms


def sample(fn: Callable[[], object], device: torch.device, runs: int) -> list[float]:
    """Seconds per call of ``runs`` calls (``fn`` already warm)."""
    with _gc_paused():
        if device.type == "cuda":
            return _sample_cuda(fn, runs, device)
        return _sample_cpu(fn, runs)


def time_fn(fn: Callable[[], object], device: torch.device | str, opts: TimingOptions) -> Timing:
    """Warm ``fn`` up, then time it (adaptive run count); one callable alone."""
    device = torch.device(device)
    runs = run_count(warm_up(fn, device, opts), opts)
    return summarize(sample(fn, device, runs))


@dataclass
class Contender:
    """One callable of an interleaved measurement. ``context`` is entered
    around each of its rounds (e.g. ``sdpa_kernel``); ``runs`` comes from its
    warm-up; ``failure`` is set if a round raised."""
    fn: Callable[[], object]
    runs: int
    context: Callable[[], ContextManager] = nullcontext
    samples: list[float] = field(default_factory=list)
    failure: Optional[BaseException] = None


def time_interleaved(contenders: Sequence[Contender], device: torch.device, rounds: int) -> None:
    """Takes each contender's runs in ``rounds`` chunks, in turn (see module
    doc); fills ``samples``, or ``failure`` for one that raised (the others
    go on)."""
    rounds = max(1, rounds)
    for r in range(rounds):
        for c in contenders:
            if c.failure is not None:
                continue
            n = math.ceil(c.runs / rounds)
            try:
                with c.context():
                    c.samples += sample(c.fn, device, n)
            except Exception as exc:  # noqa: BLE001  reported by the caller
                # Without its traceback the exception no longer pins the failed
                # call's frames, so their tensors (e.g. after OOM) can be freed.
                c.failure = exc.with_traceback(None)
