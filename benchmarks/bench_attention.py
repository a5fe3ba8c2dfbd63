#!/usr/bin/env python
"""fusedseq.attention against scaled_dot_product_attention (its own choice and each
backend forced with sdpa_kernel) and eager softmax(QKᵀ·scale)V.

    python benchmarks/bench_attention.py                                 # B=4 H=8 N=1024 D=64 (CPU)
    python benchmarks/bench_attention.py --shape 'N=1024,4096 D=64,128 causal=yes'
    python benchmarks/bench_attention.py --shape 'B=2 H=16 Hkv=4 N=2048 D=128'        # grouped-query
    python benchmarks/bench_attention.py --device cuda --dtype bf16 --plot attn.png
"""
import sys

from _common import bench

sys.exit(bench("attention", __doc__))
