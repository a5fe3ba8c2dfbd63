#!/usr/bin/env python
"""fusedseq.rnn (whole sequence) against nn.RNN, a Python loop of nn.RNNCell and,
with compile=yes (the CUDA default), that loop with a torch.compile'd step.

    python benchmarks/bench_rnn.py                                       # T=200 B=16 I=H=256 (CPU)
    python benchmarks/bench_rnn.py --shape 'T=40,1000 B=8,64 I=512 H=512'
    python benchmarks/bench_rnn.py --device cuda --shape 'T=1000' --dtype bf16 --json rnn.json
"""
import sys

from _common import bench

sys.exit(bench("rnn", __doc__))
