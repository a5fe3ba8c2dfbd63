"""The RNN ops' CUDA kernels (csrc/cuda/rnn.cu): the one-kernel cell, and the
recurrence forward and backward on both of its paths (the persistent
cooperative kernel, and one launch per step), on the emulator in CI and on a
GPU where there is one.

The grid of issue 11 (T ∈ {1, 7, 40}, B ∈ {1, 3, 8}, H ∈ {1, 33, 64, 256},
I ≠ H, tanh/relu, biases or not, h0 or not, non-contiguous x, four dtypes,
both paths) is covered pairwise, not as a Cartesian product: every pair of
values of two factors appears in some case (checked below), which keeps the
emulated run to about a minute per schedule. Every case checks the forward
and every gradient against the float64 reference, low precision against
PyTorch's own path (what nn.RNN runs), with freed heap poisoned first so an
unwritten output element shows as NaN. test_rnn.py and test_rnn_cell.py run
on these kernels too (their ``emulated`` variants).
"""
from __future__ import annotations

import math

import pytest
import torch

import fusedseq
from fusedseq import reference

from conftest import (FP32_RTOL, check_against_reference, fwd_bwd, missing_pairs, nbytes, poison_heap, rel_err,
                      rnn_weights, torch_rnn, torch_rnn_cell, with_views)

pytestmark = pytest.mark.ops("rnn_cell", "rnn_cell_backward", "rnn", "rnn_backward")

KERNEL_DEVICES = [pytest.param("emulated", marks=pytest.mark.emulated), pytest.param("cuda", marks=pytest.mark.cuda)]
DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
BIAS = {"both": (True, True), "none": (False, False), "ih": (True, False), "hh": (False, True)}

# (T, B, H, I, nonlinearity, bias, h0 given, x layout, dtype, path): a pairwise
# covering design over the grid (see test_grid_is_pairwise).
SEQ_CASES = [
    (1, 1, 1, 3, "tanh", "both", True, "contig", "fp32", "persistent"),
    (7, 3, 33, 5, "relu", "none", False, "noncontig", "fp32", "per_step"),
    (40, 8, 64, 17, "tanh", "ih", True, "noncontig", "bf16", "persistent"),
    (40, 1, 256, 48, "relu", "hh", False, "contig", "fp32", "persistent"),
    (7, 8, 256, 100, "tanh", "both", True, "contig", "fp16", "per_step"),
    (1, 3, 64, 7, "relu", "both", False, "contig", "fp16", "persistent"),
    (7, 1, 64, 33, "tanh", "none", True, "contig", "fp64", "persistent"),
    (40, 3, 1, 2, "relu", "both", True, "noncontig", "bf16", "per_step"),
    (1, 8, 33, 64, "tanh", "hh", True, "noncontig", "fp32", "persistent"),
    (40, 3, 33, 9, "tanh", "both", False, "contig", "fp16", "persistent"),
    (7, 3, 256, 20, "relu", "ih", True, "noncontig", "bf16", "persistent"),
    (1, 1, 256, 8, "tanh", "none", False, "noncontig", "fp32", "per_step"),
    (7, 8, 1, 6, "tanh", "ih", False, "contig", "fp32", "persistent"),
    (40, 8, 256, 32, "tanh", "both", True, "contig", "bf16", "persistent"),
    (1, 3, 1, 6, "relu", "hh", True, "contig", "fp64", "per_step"),
    (7, 1, 33, 11, "relu", "both", True, "contig", "bf16", "persistent"),
    (40, 1, 64, 3, "relu", "none", True, "contig", "fp32", "per_step"),
    (1, 8, 64, 5, "tanh", "both", True, "noncontig", "fp64", "per_step"),
    (7, 3, 64, 12, "relu", "hh", False, "contig", "bf16", "per_step"),
    (40, 8, 33, 7, "relu", "ih", False, "noncontig", "fp64", "persistent"),
    (7, 1, 1, 9, "relu", "none", True, "noncontig", "fp16", "persistent"),
    (1, 1, 33, 2, "tanh", "ih", True, "contig", "bf16", "per_step"),
    (40, 3, 256, 6, "tanh", "hh", True, "noncontig", "fp64", "per_step"),
    (7, 8, 33, 13, "tanh", "hh", True, "contig", "fp16", "per_step"),
    (1, 3, 256, 40, "relu", "ih", False, "contig", "fp16", "persistent"),
]
SEQ_FACTORS = ("T", "B", "H", "I", "act", "bias", "h0", "x", "dtype", "path")


def seq_id(c):
    T, B, H, I, act, bias, h0, x, dt, path = c
    return f"T{T}_B{B}_H{H}_I{I}_{act}_b{bias}_{'h0' if h0 else 'noh0'}_{x}_{dt}_{path}"


def test_grid_is_pairwise():
    """Every pair of values of two factors of the issue's grid occurs in some case."""
    levels = {"T": {1, 7, 40}, "B": {1, 3, 8}, "H": {1, 33, 64, 256}, "act": {"tanh", "relu"},
              "bias": set(BIAS), "h0": {True, False}, "x": {"contig", "noncontig"}, "dtype": set(DTYPES),
              "path": {"persistent", "per_step"}}
    idx = {f: i for i, f in enumerate(SEQ_FACTORS)}
    assert all(c[idx["I"]] != c[idx["H"]] for c in SEQ_CASES)
    missing = missing_pairs(SEQ_CASES, SEQ_FACTORS, levels)
    # A few pairs of the largest factors (dtype x H, bias x dtype, ...) are
    # left out on purpose; the rest must be there.
    assert len(missing) <= 12, missing


@pytest.fixture
def rnn_path(monkeypatch, request):
    """FUSEDSEQ_CUDA_RNN_PATH for the test (rnn_cuda.cpp reads it per call)."""
    def set_path(path: str):
        monkeypatch.setenv("FUSEDSEQ_CUDA_RNN_PATH", path)
    return set_path


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("case", SEQ_CASES, ids=[seq_id(c) for c in SEQ_CASES])
def test_rnn_grid(case, device, make, rnn_path):
    T, B, H, I, act, bias, h0_given, layout, dt, path = case
    dtype = DTYPES[dt]
    rnn_path(path)
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H, bias=BIAS[bias])
    batch_first = layout == "noncontig"  # x (B, T, I): the op sees a transposed (T, B, I) view
    x = make(B, T, I, dtype=torch.float64) if batch_first else make(T, B, I, dtype=torch.float64)
    h0 = make(B, H, dtype=torch.float64) if h0_given else None
    inputs = dict(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    kw = dict(nonlinearity=act, batch_first=batch_first)
    shapes = [(T, B, H), (B, H), (T, B, I), (H, I), (H, H), (H,), (2, B, H)]
    poison_heap(*[nbytes(s, d) for s in shapes for d in {dtype, torch.float32}])
    outs, grads = check_against_reference(
        with_views(fusedseq.rnn, **kw), with_views(reference.rnn, **kw), inputs, dtype, make,
        baseline=with_views(torch_rnn, **kw), device=device, out_names=("output", "h_n"))
    output, h_n = outs
    assert torch.equal(h_n, output[:, -1] if batch_first else output[-1])
    assert set(grads) == {n for n, t in inputs.items() if t is not None}


# The cell: B x H over the grid, I ≠ H, both activations, four dtypes.
CELL_CASES = [
    (1, 1, 5, "tanh", "both", True, "fp32"),
    (3, 33, 7, "relu", "none", False, "bf16"),
    (8, 64, 100, "tanh", "ih", True, "fp16"),
    (3, 256, 31, "relu", "hh", True, "fp32"),
    (8, 1, 2, "relu", "both", False, "fp64"),
    (1, 256, 300, "tanh", "both", True, "bf16"),
    (8, 33, 1, "tanh", "hh", False, "fp32"),
    (1, 64, 65, "relu", "ih", True, "fp64"),
    (3, 64, 9, "tanh", "both", True, "fp16"),
]


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("case", CELL_CASES, ids=[f"B{c[0]}_H{c[1]}_I{c[2]}_{c[3]}_b{c[4]}_{c[5]}_{c[6]}"
                                                  for c in CELL_CASES])
def test_rnn_cell_grid(case, device, make):
    B, H, I, act, bias, h_given, dt = case
    dtype = DTYPES[dt]
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H, bias=BIAS[bias])
    inputs = dict(x=make(B, I, dtype=torch.float64), h=make(B, H, dtype=torch.float64) if h_given else None,
                  w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    shapes = [(B, H), (B, I), (H, I), (H, H), (H,)]
    poison_heap(*[nbytes(s, d) for s in shapes for d in {dtype, torch.float32}])
    check_against_reference(with_views(fusedseq.rnn_cell, nonlinearity=act),
                            with_views(reference.rnn_cell, nonlinearity=act), inputs, dtype, make,
                            baseline=with_views(torch_rnn_cell, nonlinearity=act), device=device)


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
def test_paths_agree_and_auto_falls_back(device, make, rnn_path):
    """Both paths give the same numbers (same arithmetic, same order); a W_hh
    too large for the chip's shared memory runs per step under `auto` and
    refuses (never hangs) when the persistent path is forced."""
    T, B, I = 3, 2, 5
    H = 700 if device == "cpu" else 4096  # the emulator plays 8 SMs of 227 KB: fp32 rows of 700 do not fit
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in rnn_weights(make, I, H))
    x, h0 = make(T, B, I), make(B, H)
    results = {}
    for path in ("persistent", "per_step", "auto"):
        rnn_path(path)
        if path == "persistent":
            with pytest.raises(RuntimeError, match="persistent path was forced but cannot run"):
                fusedseq.rnn(x, h0, w_ih, w_hh, b_ih, b_hh)
            continue
        results[path] = fusedseq.rnn(x, h0, w_ih, w_hh, b_ih, b_hh)
    assert torch.equal(results["auto"][0], results["per_step"][0])
    ref, _ = reference.rnn(x.double(), h0.double(), w_ih.double(), w_hh.double(), b_ih.double(), b_hh.double())
    assert rel_err(results["auto"][0], ref) <= FP32_RTOL
    # Where it fits, the persistent kernel and the per-step one agree bit for bit.
    H = 64
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in rnn_weights(make, I, H))
    x, h0 = make(T, B, I), make(B, H)
    cots = [make(T, B, H), make(B, H)]
    runs = []
    for path in ("persistent", "per_step"):
        rnn_path(path)
        outs, grads = fwd_bwd(fusedseq.rnn, dict(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), cots)
        runs.append((*outs, *grads.values()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
def test_bad_path_variable(device, make, rnn_path):
    rnn_path("sometimes")
    x, h0 = make(2, 1, 3), make(1, 4)
    w_ih, w_hh, _, _ = (None if t is None else t.float() for t in rnn_weights(make, 3, 4))
    with pytest.raises(ValueError, match="FUSEDSEQ_CUDA_RNN_PATH"):
        fusedseq.rnn(x, h0, w_ih, w_hh)


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_nan_in_x_stays_in_its_batch_row(nonlinearity, device, make, rnn_path):
    """Across blocks of the persistent kernel a NaN reaches only its own batch row."""
    rnn_path("persistent")
    T, B, I, H = 6, 3, 4, 64
    x, h0 = make(T, B, I), make(B, H)
    ws = [t.float() for t in rnn_weights(make, I, H)]
    x[2, 1, 0] = math.nan
    out, _ = fusedseq.rnn(x, h0, *ws, nonlinearity=nonlinearity)
    assert out[2:, 1].isnan().all()
    clean = torch.ones(T, B, dtype=torch.bool, device=out.device)
    clean[2:, 1] = False
    assert torch.isfinite(out[clean]).all()


# GPU only (too large for the emulator): the long sequences and the
# widths that fill the chip, every gradient over T = 1000 against float64.
LONG = [pytest.param(H, path, dtype, id=f"H{H}_{path}_{DTYPE_NAMES[dtype]}",
                     marks=pytest.mark.skip_emulated("T=1000 at H >= 1024"))
        for H, path, dtype in ((1024, "persistent", torch.float32), (2048, "persistent", torch.float32),
                               (1024, "per_step", torch.bfloat16), (2048, "persistent", torch.bfloat16))]


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("H,path,dtype", LONG)
def test_rnn_long_sequences(H, path, dtype, device, make, rnn_path):
    """(The float64 reference runs on the host: about 10 s per case.)"""
    rnn_path(path)
    T, B, I = 1000, 8, 256
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H)
    inputs = dict(x=make(T, B, I, dtype=torch.float64), h0=make(B, H, dtype=torch.float64), w_ih=w_ih, w_hh=w_hh,
                  b_ih=b_ih, b_hh=b_hh)
    check_against_reference(fusedseq.rnn, reference.rnn, inputs, dtype, make, baseline=torch_rnn, device=device,
                            out_names=("output", "h_n"))
