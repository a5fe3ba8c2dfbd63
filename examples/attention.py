"""Attention as key and lock: a small transformer's attention maps on a sentence.

    python examples/attention.py [--quick] [--corpus FILE] [--steps N] [--out DIR] [--backend fused|reference] [--seed N] [--device cpu|cuda]

The same as ``python -m fusedseq demo attention``; the code is fusedseq/demos/attention.py.
"""
import sys

from fusedseq.demos.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("attention"))
