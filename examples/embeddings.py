"""Word embeddings learned by next-word prediction: nearest words and a 2-D map.

    python examples/embeddings.py [--quick] [--corpus FILE] [--steps N] [--out DIR] [--backend fused|reference] [--seed N] [--device cpu|cuda]

The same as ``python -m fusedseq demo embeddings``; the code is fusedseq/demos/embeddings.py.
"""
import sys

from fusedseq.demos.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("embeddings"))
