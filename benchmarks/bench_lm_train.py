#!/usr/bin/env python
"""Training throughput of fusedseq.nn.TransformerLM: backend="fused" (fusedseq's
attention) against backend="reference" (scaled_dot_product_attention), tokens/s
of a whole training step (forward, loss, backward, AdamW) on equal models.

    python benchmarks/bench_lm_train.py                          # default models for the device
    python benchmarks/bench_lm_train.py --shape 32,64,128,4,4,128 --shape 8,512,256,4,8,128
    python benchmarks/bench_lm_train.py --device cuda --dtype bf16 --json lm.json

--shape is B,T,d_model,n_layers,n_heads,vocab. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from _common import ensure_fusedseq_importable

ensure_fusedseq_importable()

import torch  # noqa: E402

from fusedseq.bench import cli, env, lm_train  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", metavar="B,T,d,L,h,V", help="a model and batch (repeatable)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", type=cli.parse_dtypes, default=[torch.float32])
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed steps per backend (default 3)")
    parser.add_argument("--quick", action="store_true", help="a tiny model, few steps: a smoke test")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the rows and the environment as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [lm_train.LmShape(*(int(v) for v in s.split(","))) for s in args.shape or []] or None
    timing = cli.QUICK_TIMING if args.quick else replace(cli.FULL_TIMING, budget_s=args.budget)
    device = torch.device(args.device)
    rows = lm_train.run([device], args.dtype, timing, quick=args.quick, seed=args.seed, shapes=shapes)
    print(lm_train.format_rows(rows))
    if args.json:
        meta = env.collect([device], {"budget_s": timing.budget_s, "threads": torch.get_num_threads()})
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"metadata": meta, "lm_train": [r.to_dict() for r in rows]}, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 1 if any(r.note for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
