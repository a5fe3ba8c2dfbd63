#!/usr/bin/env python
"""Benchmark fusedseq.rnn (whole sequence) against nn.RNN, a Python loop of
nn.RNNCell and (CUDA, or --compile) that loop with a torch.compile'd step.

    python benchmarks/bench_rnn.py                         # default shapes (CPU: T=200 B=16 I=H=256)
    python benchmarks/bench_rnn.py --shape 200,16,256,256 --shape 1000,8,512,512
    python benchmarks/bench_rnn.py --T 40,1000 --B 8,64 --H 256,1024 --dtype bf16
    python benchmarks/bench_rnn.py --device cuda --json results.json --plot rnn.png

--T/--B/--H/--I take comma-separated lists and run every combination (I
defaults to H). See benchmarks/README.md for what the columns mean.
"""
from __future__ import annotations

import argparse
import sys

from _common import ensure_fusedseq_importable, int_list, product

ensure_fusedseq_importable()

from fusedseq.bench import cli  # noqa: E402
from fusedseq.bench.cases.rnn import OP, RnnShape  # noqa: E402


def shapes_from(args: argparse.Namespace) -> list[RnnShape]:
    shapes = [RnnShape.parse(s) for s in args.shape or []]
    if any(v is not None for v in (args.T, args.B, args.H, args.I)):
        d = RnnShape(200, 16, 256, 256)  # the CPU default fills what is not given
        for p in product(T=args.T or [d.T], B=args.B or [d.B], H=args.H or [d.H], I=args.I or [0]):
            shapes.append(RnnShape(p["T"], p["B"], p["I"] or p["H"], p["H"]))
    return shapes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", metavar="T,B,I,H", help="a shape (repeatable)")
    parser.add_argument("--T", type=int_list, help="sequence lengths to sweep")
    parser.add_argument("--B", type=int_list, help="batch sizes to sweep")
    parser.add_argument("--H", type=int_list, help="hidden sizes to sweep")
    parser.add_argument("--I", type=int_list, help="input sizes to sweep (default: I = H)")
    cli.add_bench_arguments(parser, with_ops=False)
    cli.add_recurrent_arguments(parser)
    cli.add_rnn_compile_arguments(parser)
    args = parser.parse_args(argv)
    shapes = shapes_from(args)
    return cli.run_bench(args, ops=[OP], shapes={OP: shapes} if shapes else None)


if __name__ == "__main__":
    sys.exit(main())
