"""Benchmark harness: fusedseq's ops against PyTorch's own paths, on the same
inputs in the same process (``python -m fusedseq bench``, ``benchmarks/``).

    harness   cases (@case, Setup, Path), running one: check, time, speed-ups
    timing    warm-up, interleaved rounds, median/IQR, stability, L2 flush
    cases/    one module per family of ops: where a new case goes
    report    table, summary, JSON, chart
    cli       options, case selection, header, progress
"""
from .harness import REGISTRY, Case, Path, Row, Setup, case, run_case
from .timing import Budget, Timing

__all__ = ["REGISTRY", "Budget", "Case", "Path", "Row", "Setup", "Timing", "case", "run_case"]
