"""Dynamics: an RNN forecasting the Lorenz system recreates its attractor.

    python examples/dynamics.py [--quick] [--out DIR] [--backend fused|reference] [--seed N] [--device cpu|cuda]
                                [--samples N] [--epochs N] ... (--help lists them all)

The same as ``python -m fusedseq demo dynamics``; the code is fusedseq/demos/dynamics.py.
"""
import sys

from fusedseq.demos.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("dynamics"))
