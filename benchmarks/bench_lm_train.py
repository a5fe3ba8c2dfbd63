#!/usr/bin/env python
"""Training tokens/s of fusedseq.nn.TransformerLM, backend="fused" against
backend="reference" (SDPA): a whole step (forward, loss, backward, AdamW).

    python benchmarks/bench_lm_train.py --budget 4
    python benchmarks/bench_lm_train.py --shape 'batch=8 context=512 d_model=256 n_heads=8' --threads 1
"""
import sys

from _common import bench

sys.exit(bench("lm_train", __doc__))
