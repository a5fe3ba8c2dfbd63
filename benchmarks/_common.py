"""Shared by the bench_*.py scripts: make ``fusedseq`` importable from a
source checkout, and parse shape sweeps."""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path


def ensure_fusedseq_importable() -> None:
    """Installed fusedseq first; else the in-tree package (``python/``, built
    with tools/dev_build.sh), so ``python benchmarks/bench_rnn.py`` works
    from a checkout without PYTHONPATH."""
    try:
        import fusedseq  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))


def int_list(text: str) -> list[int]:
    """``"40,200,1000"`` → ``[40, 200, 1000]``."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def product(**lists: list[int]) -> list[dict[str, int]]:
    """Every combination of the given value lists, as dicts."""
    keys = list(lists)
    return [dict(zip(keys, values)) for values in itertools.product(*(lists[k] for k in keys))]
