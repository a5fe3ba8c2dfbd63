"""Benchmark harness: fusedseq's ops against PyTorch's own paths.

Used by ``python -m fusedseq bench`` and the scripts in ``benchmarks/``.
Every case runs all of its implementations on the same inputs in the same
process, times them (:mod:`.timing`), checks each against a float64
reference (:mod:`.accuracy`) and reports median time, useful FLOP rate,
the fused path's speed-up and the errors (:mod:`.report`, :mod:`.plot`).

Layout, one job per module:
    timing       warm-up, adaptive run count, median/IQR (perf_counter / CUDA events)
    accuracy     max-abs and norm-relative error vs the float64 reference
    flops        useful FLOPs per op and mode
    cudnn_rules  which cuDNN RNN algorithm nn.RNN gets for a shape
    sdpa         SDPA backends of a device, priority order, default choice
    case         Case / Impl / Reference / Row data types
    cases/       per op: default shapes and dtypes, the paths compared
    engine       runs one case: check, time, speed-ups
    runner       which cases, in order, with progress
    report       screen table, JSON, CSV
    plot         speed-up bar chart
    env          metadata (device, versions, commit, date)
    cli          command-line options, ``run_bench``
"""
from .case import Case, Row
from .cli import add_all_arguments, add_bench_arguments, main, run_bench
from .runner import OPS, BenchConfig, collect_cases, run_cases
from .timing import Timing, TimingOptions, time_fn

__all__ = ["OPS", "BenchConfig", "Case", "Row", "Timing", "TimingOptions", "add_all_arguments",
           "add_bench_arguments", "collect_cases", "main", "run_bench", "run_cases", "time_fn"]
