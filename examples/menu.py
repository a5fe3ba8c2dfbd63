"""Menu of the day: a rule, a cycle and an RNN, with hand-set then learned weights.

    python examples/menu.py [--quick] [--out DIR] [--backend fused|reference] [--seed N] [--device cpu|cuda]
                            [--days N] [--steps N] ... (--help lists them all)

The same as ``python -m fusedseq demo menu``; the code is fusedseq/demos/menu.py.
"""
import sys

from fusedseq.demos.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("menu"))
