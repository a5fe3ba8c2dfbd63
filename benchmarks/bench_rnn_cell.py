#!/usr/bin/env python
"""Benchmark fusedseq.rnn_cell (one fused step) against nn.RNNCell and a
plain eager implementation (two matmuls, bias adds, activation).

    python benchmarks/bench_rnn_cell.py                    # default shapes (CPU: B=16 I=H=256)
    python benchmarks/bench_rnn_cell.py --shape 1,512,512 --shape 64,256,1024
    python benchmarks/bench_rnn_cell.py --B 1,8,64 --H 256,1024 --nonlinearity relu

--B/--H/--I take comma-separated lists and run every combination (I
defaults to H). See benchmarks/README.md for what the columns mean.
"""
from __future__ import annotations

import argparse
import sys

from _common import ensure_fusedseq_importable, int_list, product

ensure_fusedseq_importable()

from fusedseq.bench import cli  # noqa: E402
from fusedseq.bench.cases.rnn_cell import OP, CellShape  # noqa: E402


def shapes_from(args: argparse.Namespace) -> list[CellShape]:
    shapes = [CellShape.parse(s) for s in args.shape or []]
    if any(v is not None for v in (args.B, args.H, args.I)):
        for p in product(B=args.B or [16], H=args.H or [256], I=args.I or [0]):
            shapes.append(CellShape(p["B"], p["I"] or p["H"], p["H"]))
    return shapes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", metavar="B,I,H", help="a shape (repeatable)")
    parser.add_argument("--B", type=int_list, help="batch sizes to sweep")
    parser.add_argument("--H", type=int_list, help="hidden sizes to sweep")
    parser.add_argument("--I", type=int_list, help="input sizes to sweep (default: I = H)")
    cli.add_bench_arguments(parser, with_ops=False)
    cli.add_recurrent_arguments(parser)
    args = parser.parse_args(argv)
    shapes = shapes_from(args)
    return cli.run_bench(args, ops=[OP], shapes={OP: shapes} if shapes else None)


if __name__ == "__main__":
    sys.exit(main())
