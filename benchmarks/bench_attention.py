#!/usr/bin/env python
"""Benchmark fusedseq.attention against scaled_dot_product_attention (its
default choice and each backend the device has, forced with sdpa_kernel)
and a plain eager softmax(QKᵀ·scale)V.

    python benchmarks/bench_attention.py                   # default shapes (CPU: B=4 H=8 N=1024 D=64)
    python benchmarks/bench_attention.py --shape 4,8,1024,64 --shape 2,16,2048,128,4   # 4 kv heads (GQA)
    python benchmarks/bench_attention.py --N 1024,4096 --D 64,128 --causal yes
    python benchmarks/bench_attention.py --device cuda --dtype bf16 --json attn.json --plot attn.png

--shape is B,H,N,D with optional ,Hkv (grouped-query) and ,Nk (keys ≠ queries).
--N/--D sweep at a fixed token count and model width: B = tokens / N and
H = width / D (defaults 16384 and 2048, as in the CUDA sweep).
See benchmarks/README.md for what the columns mean.
"""
from __future__ import annotations

import argparse
import sys

from _common import ensure_fusedseq_importable, int_list, product

ensure_fusedseq_importable()

from fusedseq.bench import cli  # noqa: E402
from fusedseq.bench.cases.attention import OP, AttnShape  # noqa: E402


def shapes_from(args: argparse.Namespace) -> list[AttnShape]:
    shapes = [AttnShape.parse(s) for s in args.shape or []]
    if args.N or args.D:
        for p in product(D=args.D or [64], N=args.N or [1024]):
            B, H = max(1, args.tokens // p["N"]), max(1, args.width // p["D"])
            shapes.append(AttnShape(B, H, p["N"], p["D"]))
    return shapes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", metavar="B,H,N,D[,Hkv[,Nk]]", help="a shape (repeatable)")
    parser.add_argument("--N", type=int_list, help="sequence lengths to sweep (B = tokens / N)")
    parser.add_argument("--D", type=int_list, help="head dims to sweep (H = width / D)")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per batch for --N (default: 16384)")
    parser.add_argument("--width", type=int, default=2048, help="H·D for --D (default: 2048)")
    cli.add_bench_arguments(parser, with_ops=False)
    cli.add_attention_arguments(parser)
    args = parser.parse_args(argv)
    shapes = shapes_from(args)
    return cli.run_bench(args, ops=[OP], shapes={OP: shapes} if shapes else None)


if __name__ == "__main__":
    sys.exit(main())
