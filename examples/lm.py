"""A decoder-only transformer learns the grammar's corpus and writes new sentences.

    python examples/lm.py [--quick] [--corpus FILE] [--steps N] [--out DIR] [--backend fused|reference] [--seed N] [--device cpu|cuda]

The same as ``python -m fusedseq demo lm``; the code is fusedseq/demos/lm.py.
"""
import sys

from fusedseq.demos.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("lm"))
