#!/usr/bin/env python
"""fusedseq.rnn_cell against nn.RNNCell and eager code (two matmuls, bias adds, activation).

    python benchmarks/bench_rnn_cell.py                                  # B=16 I=H=256 tanh (CPU)
    python benchmarks/bench_rnn_cell.py --shape 'B=1,8,64 I=1024 H=1024 nonlinearity=relu'
"""
import sys

from _common import bench

sys.exit(bench("rnn_cell", __doc__))
